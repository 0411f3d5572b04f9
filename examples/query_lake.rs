//! Query a lake with SQL from the library: open it by URL, get a DataFusion session with
//! every table and view registered, and run queries (including a join of changes to runs).
//!
//! Run: `cargo run --example query_lake`.

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::lake::Lake;
use contacts_etl::sync::{SyncOptions, run_sync};

#[tokio::main]
async fn main() -> contacts_etl::Result<()> {
    // Land something to query: 300 Google contacts from the in-process emulator.
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 300,
        aurinko_accounts: 0,
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("t"), &emu.config().token)?;
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[lake]\nurl = \"lake\"\n[[sources]]\nname = \"shared\"\nprovider = \"google\"\ndomain = \"example.com\"\nbase_url = \"{}\"\nauth = {{ kind = \"bearer\", token_file = \"t\" }}\n",
            emu.url()
        ),
    )?;
    run_sync(&Pipeline::load(&path)?, &SyncOptions::default()).await?;

    // The library API: a lake from a URL, a SessionContext with everything registered.
    let url = url::Url::from_directory_path(dir.path().join("lake")).unwrap();
    let lake = Lake::new(url, Default::default());
    let ctx = contacts_etl::sql::session(&lake).await?;

    let df = ctx.sql("SELECT count(*) AS n FROM contacts").await?;
    let batches = df.collect().await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    let n = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Int64)?;
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&n).value(0),
        emu.google_truth().contacts.len() as i64
    );

    let emails = ctx.sql("SELECT lower(split_part(address, '@', 2)) AS domain, count(*) AS n FROM contact_emails GROUP BY 1 ORDER BY 2 DESC").await?.collect().await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&emails)?);

    let joined = ctx.sql("SELECT r.mode, count(*) AS changes FROM contact_changes c JOIN sync_runs r ON c._run_id = r.run_id AND c.account = r.account GROUP BY r.mode").await?.collect().await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&joined)?);
    assert_eq!(
        joined.iter().map(|b| b.num_rows()).sum::<usize>(),
        1,
        "one full run"
    );
    Ok(())
}
