//! Plan and apply a clean-up back to the Google emulator: set "File As" to
//! "Family, Given" for every contact, then check the API has it.
//!
//! Run: `cargo run --example writeback`.

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::plan::apply::{Apply, plan};
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

    let report = Apply::desired(&p, "shared", desired)
        .with_mode(Mode::Update)
        .await?;
    eprint!("{}", report.summary());
    // A contact the API holds over its 2 KB limit may not grow: the API refuses such
    // an update (`invalid`, with its reason), and the contact is left as it was. The
    // plan only warns with the local estimate; only the API knows how it counts.
    let refused: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.outcome == contacts_etl::model::write::Outcome::Invalid)
        .map(|r| {
            assert!(
                r.reason.as_deref().is_some_and(|m| m.contains("2048")),
                "{r:?}"
            );
            r.id.as_deref().unwrap_or_default()
        })
        .collect();
    assert!(planned.invalid.is_empty());
    assert_eq!(report.failures(), refused.len());
    assert_eq!(emu.stats()["google.batch"] as usize, updates.div_ceil(100));

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
