//! Sync both emulated APIs into a local Delta lake, change them, sync again, and check
//! the lake against the APIs' truth.
//!
//! Run: `cargo run --example sync_to_lake` (offline: the emulators run in-process).

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::sync::{SyncOptions, lake_of, run_sync};

#[tokio::main]
async fn main() -> contacts_etl::Result<()> {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 500,
        aurinko_accounts: 2,
        aurinko_contacts: 200,
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("google.token"), &emu.config().token)?;
    std::fs::write(dir.path().join("101.token"), emu.aurinko_token("101"))?;
    std::fs::write(dir.path().join("102.token"), emu.aurinko_token("102"))?;
    let pipeline = format!(
        r#"[lake]
url = "lake"

[[sources]]
name = "shared"
provider = "google"
domain = "{domain}"
base_url = "{url}"
auth = {{ kind = "bearer", token_file = "google.token" }}

[[sources]]
name = "crm"
provider = "aurinko"
base_url = "{url}"
accounts = [{{ id = "101", token_file = "101.token" }}, {{ id = "102", token_file = "102.token" }}]
"#,
        domain = emu.config().google_domain,
        url = emu.url()
    );
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, pipeline)?;
    let p = Pipeline::load(&path)?;

    let full = run_sync(&p, &SyncOptions::default()).await?;
    print!("{}", full.summary());
    assert!(full.failed().is_empty());
    assert_eq!(full.accounts.iter().map(|a| a.upserted).sum::<i64>(), 900);

    emu.mutate_google(10, 10, 5);
    emu.mutate_aurinko(None, 3, 3, 2);
    let inc = run_sync(&p, &SyncOptions::default()).await?;
    print!("{}", inc.summary());
    assert!(inc.accounts.iter().all(|a| a.mode == "incremental"));

    let lake = lake_of(&p)?;
    let mut diffs = contacts_etl::verify::diff(
        &lake.contacts_of("shared", "example.com").await?,
        &emu.google_truth().contacts,
    );
    for a in ["101", "102"] {
        diffs.extend(contacts_etl::verify::diff(
            &lake.contacts_of("crm", a).await?,
            &emu.aurinko_truth(a).unwrap().contacts,
        ));
    }
    assert!(diffs.is_empty(), "{diffs:?}");
    println!("the lake equals both APIs, field by field");
    Ok(())
}
