//! The `google_directory` provider (People API) against the emulator's directory: the
//! Google emulator's shared contacts plus profiles, landed field by field.

use std::path::{Path, PathBuf};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig, FaultSpec, MutationSummary};
use contacts_etl::providers::google_directory::config;

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
    crate::assert_same_rows(when, &landed, &emu.directory_truth());
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

/// The directory's rows in the lake, as landed now.
async fn landed(p: &Path, emu: &Emulator) -> Vec<contacts_etl::schema::ContactRecord> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    lake.contacts_of("directory", &emu.config().google_domain)
        .await
        .unwrap()
}

/// `contacts-etl sync` as a child process: (exit code, stderr).
async fn sync_cli(p: &Path) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(crate::bin())
        .args(["sync", p.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The transient faults on the directory route: 429 `RESOURCE_EXHAUSTED` with
/// `Retry-After`, 503 and 500 in Google's JSON, resets, connections cut mid-body and slow
/// answers. A full and an incremental run are retried through them and land exactly the
/// directory; the emulator answers them in the People API's own error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_the_directory_route_are_retried_and_land_exactly() {
    let faults =
        "429=0.1,503=0.06,500=0.1,reset=0.05,truncate=0.08,slow=0.1,slow_ms=40,retry_after=1";
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 60,
        aurinko_accounts: 0,
        directory_profiles: 40,
        faults: FaultSpec::parse(faults).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &emu);
    let first = sync(&p, false).await;
    assert_ok(&first);
    assert_directory_matches(&p, &emu, "after a full run under faults").await;
    mutate_both(&emu, 10, 10, 6);
    let second = sync(&p, false).await;
    assert_ok(&second);
    assert!(second.accounts.iter().all(|a| a.mode == "incremental"));
    assert_directory_matches(&p, &emu, "after an incremental run under faults").await;
    let stats = emu.stats();
    for kind in ["429", "503", "500", "reset", "truncate", "slow"] {
        assert!(
            stats.get(&format!("fault.{kind}")).copied().unwrap_or(0) > 0,
            "no {kind} injected: {stats:?}"
        );
    }

    // What a throttled client reads: Google's error document and a Retry-After.
    emu.set_faults(FaultSpec::parse("429=1,retry_after=7").unwrap());
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/people:listDirectoryPeople?readMask=names&sources=DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE",
            emu.url()
        ))
        .bearer_auth(&emu.config().token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    assert_eq!(body["error"]["code"], 429, "{body}");
}

/// Faults no retry cures, on the second page of an incremental run: an HTML page, JSON
/// cut short with a length that says it is whole, and a 401 that stands after the service
/// account's token is refreshed. Each fails the run with exit 1 and an error naming the
/// source, the domain and the page; nothing is committed (the lake holds what it held,
/// the cursor too: once the API answers again the next run is incremental and exact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_faults_fail_the_run_naming_the_page_and_commit_nothing() {
    use contacts_etl::emulator::people::PermanentFault;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/google");
    let public = std::fs::read_to_string(fixtures.join("sa-test-key.pub.pem")).unwrap();
    let private = std::fs::read_to_string(fixtures.join("sa-test-key.pem")).unwrap();
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 40,
        aurinko_accounts: 0,
        directory_profiles: 30,
        service_account_public_key: Some(public),
        ..Default::default()
    })
    .await
    .unwrap();
    for (fault, words) in [
        (PermanentFault::HtmlPage, &["text/html"][..]),
        (
            PermanentFault::TruncatedJson,
            &["JSON answer ends early"][..],
        ),
        (PermanentFault::Unauthorized, &["401", config::SCOPE][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), &emu);
        if fault == PermanentFault::Unauthorized {
            let key = serde_json::json!({"type": "service_account", "client_email": "etl@project.iam.gserviceaccount.com", "private_key": private, "token_uri": format!("{}/token", emu.url())});
            std::fs::write(dir.path().join("key.json"), key.to_string()).unwrap();
            let text = std::fs::read_to_string(&p).unwrap().replace(
                "auth = { kind = \"bearer\", token_file = \"secrets/people.token\" }",
                "auth = { kind = \"service_account\", key_file = \"key.json\", subject = \"admin@example.com\" }",
            );
            std::fs::write(&p, text).unwrap();
        }
        assert_ok(&sync(&p, false).await);
        let before = landed(&p, &emu).await;
        mutate_both(&emu, 10, 10, 6);
        emu.reset_stats();
        emu.set_directory_fault(1, Some(fault));
        let (code, stderr) = sync_cli(&p).await;
        assert_eq!(code, Some(1), "{fault:?}: {stderr}");
        for w in ["incremental read of example.com (directory), page 2"]
            .iter()
            .chain(words)
        {
            assert!(
                stderr.contains(w),
                "{fault:?}: stderr lacks {w:?}:\n{stderr}"
            );
        }
        let stats = emu.stats();
        if fault == PermanentFault::Unauthorized {
            // One token for the run, one refresh after the first 401, then no more.
            assert_eq!(stats.get("google.token"), Some(&2), "{stats:?}");
            assert_eq!(stats.get("people.unauthorized"), Some(&2), "{stats:?}");
        }
        let now = landed(&p, &emu).await;
        let d = contacts_etl::verify::diff(&now, &before);
        assert!(
            d.is_empty(),
            "{fault:?}: the failed run changed the lake: {d:#?}"
        );

        emu.set_directory_fault(0, None);
        let r = sync(&p, false).await;
        assert_ok(&r);
        assert!(
            r.accounts.iter().all(|a| a.mode == "incremental"),
            "{}",
            r.summary()
        );
        assert_directory_matches(&p, &emu, &format!("after {fault:?} cleared")).await;
    }
}

/// `kill -9` of a sync of a `google_directory` source: in the middle of an extract (at a
/// page read), after the change files are written but before the commit that holds them
/// and the cursor, right after that commit (before `contacts`), and at random moments,
/// in full runs of an empty lake and in incremental ones. Each rerun lands exactly what
/// the directory lists, field by field; no change row twice; completed runs numbered
/// without a gap or a repeat (the cursor went forward with its data, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_directory_sync_loses_and_duplicates_nothing() {
    use crate::lake::{CrashSetup, KillAt, crash_trials_with};
    let trials: usize = std::env::var("CONTACTS_ETL_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let setup = CrashSetup {
        emulator: EmulatorConfig {
            google_contacts: 400,
            aurinko_accounts: 0,
            directory_profiles: 400,
            ..Default::default()
        },
        google: false,
        directory: true,
        accounts: Some(vec![]),
        kills: &[
            KillAt::Line("read a directory page"),
            KillAt::Line("wrote the change files"),
            KillAt::Line("a group's changes landed"),
            KillAt::Random,
        ],
        fresh_every: 2,
    };
    crash_trials_with("lake", trials, &setup).await;
}

/// The README's join of a `google` source and a `google_directory` one on e-mail, read
/// from README.md (so the README cannot drift) and run over a lake holding both: its
/// rows are exactly the pairs of the two emulators' truths whose addresses match, and
/// every domain contact with an e-mail finds itself (`c<id>` ↔ `<id>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_join_on_email_matches_the_truth() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Google's directory (People API)")
        .nth(1)
        .unwrap();
    let query = section
        .split("joins on e-mail:\n\n```sql\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the README's directory section shows the join in a sql block");
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 60,
        aurinko_accounts: 0,
        directory_profiles: 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write_pipeline(
        dir.path(),
        &emu,
        &crate::PipelineSpec {
            directory: true,
            page_size: 25,
            ..Default::default()
        },
    );
    // The source names the README's query uses.
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("name = \"shared\"", "name = \"shared_contacts\"");
    std::fs::write(&p, text).unwrap();
    assert_ok(&sync(&p, false).await);

    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let batches = contacts_etl::sql::query(&lake, query).await.unwrap();
    let csv = contacts_etl::sql::render(&batches, "csv").unwrap();
    let mut got: Vec<String> = csv.lines().skip(1).map(str::to_string).collect();
    got.sort();

    let google = emu.google_truth().contacts;
    let mut want = Vec::new();
    let directory = emu.directory_truth();
    for d in &directory {
        for de in d.emails.iter().filter_map(|e| e.address.as_deref()) {
            for g in &google {
                for ge in g.emails.iter().filter_map(|e| e.address.as_deref()) {
                    if de.to_lowercase() == ge.to_lowercase() {
                        want.push((d.display_name.clone().unwrap_or_default(), de, &g.id, &d.id));
                    }
                }
            }
        }
    }
    let mut want: Vec<String> = want
        .into_iter()
        .map(|(name, address, g, d)| {
            let name = if name.contains(',') || name.contains('"') {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                name
            };
            format!("{name},{address},{g},{d}")
        })
        .collect();
    want.sort();
    assert_eq!(got, want, "{query}");
    let with_email = google.iter().filter(|g| !g.emails.is_empty()).count();
    assert!(with_email > 30, "{with_email}");
    for g in google.iter().filter(|g| !g.emails.is_empty()) {
        assert!(
            got.iter()
                .any(|r| r.ends_with(&format!(",{},c{}", g.id, g.id))),
            "domain contact {} not joined to its directory row",
            g.id
        );
    }
}
