//! The `google_directory` provider (People API) against the emulator's directory: the
//! Google emulator's shared contacts plus profiles, landed field by field.

use std::path::{Path, PathBuf};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig, MutationSummary};

use crate::{assert_ok, sync};

/// A pipeline with one `google_directory` source over `emu`, pages of 7 people.
fn pipeline(dir: &Path, emu: &Emulator) -> PathBuf {
    pipeline_paged(dir, emu, 7)
}

/// A pipeline in `dir` with one `google_directory` source named `directory` over `emu`
/// (a bearer token in a file), pages of `page_size` people, retries quick.
pub fn pipeline_paged(dir: &Path, emu: &Emulator, page_size: u32) -> PathBuf {
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/people.token"), &emu.config().token).unwrap();
    let text = format!(
        "[lake]\nurl = \"lake\"\n\n{}",
        directory_source(emu, page_size)
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The `[[sources]]` entry of a `google_directory` source named `directory` over `emu`,
/// its token in `secrets/people.token`.
pub fn directory_source(emu: &Emulator, page_size: u32) -> String {
    format!(
        "[[sources]]\nname = \"directory\"\nprovider = \"google_directory\"\ndomain = \"{}\"\nbase_url = \"{}\"\nauth = {{ kind = \"bearer\", token_file = \"secrets/people.token\" }}\npage_size = {page_size}\nretry_base_ms = 5\nmax_retries = 12\n",
        emu.config().google_domain,
        emu.url()
    )
}

/// Inserts, updates and deletes split between the domain's shared contacts (the Google
/// emulator's, listed as `c<id>`) and its profiles, with the ids as the directory lists
/// them.
pub fn mutate_both(
    emu: &Emulator,
    inserts: usize,
    updates: usize,
    deletes: usize,
) -> MutationSummary {
    let half = |n: usize| n / 2;
    let g = emu.mutate_google(
        inserts - half(inserts),
        updates - half(updates),
        deletes - half(deletes),
    );
    let mut m = emu.mutate_directory(half(inserts), half(updates), half(deletes));
    let c = |ids: Vec<String>| ids.into_iter().map(|id| format!("c{id}"));
    m.inserted.extend(c(g.inserted));
    m.updated.extend(c(g.updated));
    m.deleted.extend(c(g.deleted));
    m
}

/// The directory's rows in the lake equal what the emulator lists, field by field.
async fn assert_directory_matches(p: &Path, emu: &Emulator, when: &str) {
    let pipeline = Pipeline::load(p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let landed = lake
        .contacts_of("directory", &emu.config().google_domain)
        .await
        .unwrap();
    let truth = emu.directory_truth();
    let d = contacts_etl::verify::diff(&landed, &truth);
    assert!(
        d.is_empty(),
        "{when}: {} differences, first 5: {:#?}",
        d.len(),
        &d[..d.len().min(5)]
    );
    assert_eq!(landed.len(), truth.len(), "{when}");
}

/// A full run, an incremental one after adds, edits and deletes of both kinds, and a
/// run whose sync token expired land exactly what the directory holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_lands_exactly_through_full_incremental_and_expired_runs() {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 40,
        aurinko_accounts: 0,
        directory_profiles: 25,
        people_token_ttl_secs: Some(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &emu);
    let first = sync(&p, false).await;
    assert_ok(&first);
    assert_eq!(emu.directory_truth().len(), 65);
    assert_directory_matches(&p, &emu, "after the full run").await;

    emu.mutate_google(3, 4, 2);
    let m = emu.mutate_directory(2, 3, 2);
    assert_eq!(
        (m.inserted.len(), m.updated.len(), m.deleted.len()),
        (2, 3, 2)
    );
    let second = sync(&p, false).await;
    assert_ok(&second);
    assert!(
        second.accounts.iter().all(|a| a.mode == "incremental"),
        "{:?}",
        second.accounts.iter().map(|a| &a.mode).collect::<Vec<_>>()
    );
    assert_directory_matches(&p, &emu, "after the incremental run").await;

    // Two hours on: the stored token is past its hour; the run reads in full and
    // reconciles what was deleted meanwhile.
    emu.advance_clock(7200);
    emu.mutate_directory(0, 0, 3);
    let third = sync(&p, false).await;
    assert_ok(&third);
    assert!(
        third.accounts.iter().all(|a| a.mode == "resync"),
        "{:?}",
        third.accounts.iter().map(|a| &a.mode).collect::<Vec<_>>()
    );
    assert_directory_matches(&p, &emu, "after the expired token").await;
}

/// `plan` and `apply` refuse a read-only source at once (exit 2), saying where shared
/// contacts are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_apply_refuse_the_read_only_directory() {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 5,
        aurinko_accounts: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &emu);
    let pipeline = Pipeline::load(&p).unwrap();
    let desired = "SELECT * FROM contacts WHERE source = 'directory'";
    let e = contacts_etl::plan::apply::plan(
        &pipeline,
        "directory",
        desired,
        contacts_etl::plan::Mode::Update,
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.to_string().contains("read-only") && e.to_string().contains("provider = \"google\""),
        "{e}"
    );
    let e = contacts_etl::plan::apply::Apply::desired(&pipeline, "directory", desired)
        .with_mode(contacts_etl::plan::Mode::Update)
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(emu.stats().get("people.list"), None, "nothing was read");
}
