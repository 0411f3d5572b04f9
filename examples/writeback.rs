//! Plan and apply a clean-up back to the Google emulator: set "File As" to
//! "Family, Given" for every contact, then check the API has it.
//!
//! Run: `cargo run --example writeback`.

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::plan::apply::{ApplyOptions, apply, plan};
use contacts_etl::plan::{Mode, OpKind};
use contacts_etl::sync::{SyncOptions, run_sync};

#[tokio::main]
async fn main() -> contacts_etl::Result<()> {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 250,
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
    let p = Pipeline::load(&path)?;
    run_sync(&p, &SyncOptions::default()).await?;

    let desired = "SELECT account, id, etag, concat(family_name, ', ', given_name) AS file_as FROM contacts WHERE family_name IS NOT NULL AND given_name IS NOT NULL";
    let planned = plan(&p, "shared", desired, Mode::Update).await?;
    print!("{}", planned.render(5));
    let updates = planned.count(OpKind::Update);
    assert!(updates > 0);

    let report = apply(
        &p,
        &ApplyOptions {
            source: "shared".into(),
            desired: desired.into(),
            mode: Mode::Update,
            max_delete: None,
            force: false,
        },
    )
    .await?;
    eprint!("{}", report.summary());
    // A contact the API holds over its 2 KB limit may not grow: such rows are refused
    // before anything is sent, named in the plan, and left as they are.
    assert!(planned.invalid.iter().all(|i| i.reason.contains("2048")));
    assert_eq!(report.failures(), planned.invalid.len());
    assert_eq!(emu.stats()["google.batch"] as usize, updates.div_ceil(100));
    let refused: Vec<&str> = planned
        .invalid
        .iter()
        .filter_map(|i| i.id.as_deref())
        .collect();

    for c in emu.google_truth().contacts {
        if refused.contains(&c.id.as_str()) {
            continue;
        }
        if let (Some(f), Some(g)) = (&c.family_name, &c.given_name) {
            assert_eq!(
                c.file_as.as_deref(),
                Some(format!("{f}, {g}").as_str()),
                "{}",
                c.id
            );
        }
    }
    println!(
        "{updates} contacts cleaned through {} batch request(s)",
        updates.div_ceil(100)
    );
    Ok(())
}
