//! `state show|reset|drop` (issue #22): one account's state seen, reset and dropped
//! through the real binary, checked against what the lake holds (our reader, and DuckDB's
//! Delta extension for a drop), against the emulator's truth after the next sync, and in
//! `sync_runs` and `contact_changes`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::lake::{Lake, TableKind};
use contacts_etl::schema::ContactRecord;

use crate::{PipelineSpec, assert_lake_matches, assert_ok, sync, write_pipeline};

/// The binary with `args`, stdin closed (not a terminal).
fn run(args: &[&str]) -> Output {
    Command::new(crate::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The binary with `args` on a terminal (util-linux `script` gives it one), answering
/// `answer` to its question.
fn run_on_terminal(args: &[&str], answer: &str) -> Output {
    let line = std::iter::once(crate::bin())
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    // The question is asked once the lake is read; the answer waits in the terminal.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{answer}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A lake with Google (example.com, 40) and Aurinko 101 and 102 (15 each), synced twice
/// with changes between.
async fn synced(dir: &Path) -> (Emulator, std::path::PathBuf, Lake) {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 40,
        aurinko_accounts: 2,
        aurinko_contacts: 15,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = write_pipeline(
        dir,
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into(), "102".into()],
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    emu.mutate_google(3, 2, 1);
    emu.mutate_aurinko(None, 2, 2, 1);
    assert_ok(&sync(&p, false).await);
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    (emu, p, lake)
}

/// The `sync_runs` rows of one account, oldest first, as JSON objects.
async fn runs_of(lake: &Lake, source: &str, account: &str) -> Vec<serde_json::Value> {
    let batches = lake
        .read_all(
            TableKind::SyncRuns,
            Some(&format!("source = '{source}' AND account = '{account}'")),
        )
        .await
        .unwrap();
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let bytes = w.into_inner();
    let mut rows: Vec<serde_json::Value> = if bytes.is_empty() {
        vec![]
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    rows.sort_by_key(|r| r["seq"].as_i64().unwrap_or(i64::MAX));
    rows
}

fn show_json(p: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let o = run(&[&["state", "show", p, "--format", "json"][..], extra].concat());
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_show_is_what_the_lake_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p, lake) = synced(dir.path()).await;
    let ps = p.to_str().unwrap();
    let shown = show_json(ps, &[]);
    let accounts = [("crm", "101"), ("crm", "102"), ("shared", "example.com")];
    assert_eq!(shown.len(), accounts.len(), "{shown:#?}");
    for (a, (source, account)) in shown.iter().zip(accounts) {
        assert_eq!(
            (a["source"].as_str(), a["account"].as_str()),
            (Some(source), Some(account))
        );
        // The state the next sync continues from is the one state show prints.
        let state = lake.recover(source, account).await.unwrap();
        assert_eq!(a["seq"].as_i64(), Some(state.seq));
        assert_eq!(a["cursor"].as_str(), state.cursor.as_deref());
        assert_eq!(state.seq, 2);
        let held = lake.contacts_of(source, account).await.unwrap().len() as i64;
        assert_eq!(a["held"].as_i64(), Some(held));
        // The last run is the newest sync_runs row, with its status.
        let runs = runs_of(&lake, source, account).await;
        let last = runs.last().unwrap();
        assert_eq!(a["last"]["run_id"], last["run_id"]);
        assert_eq!(a["last"]["status"], "ok");
        assert_eq!(a["last"]["mode"], last["mode"]);
        assert_eq!(a["last"]["mode"], "incremental");
        // Times as `status --format json` gives them: RFC 3339 at the second, UTC.
        for t in ["started_at", "finished_at"] {
            let at = a["last"][t]
                .as_str()
                .unwrap_or_else(|| panic!("{t}: {a:#}"));
            assert!(
                chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'),
                "{t}: {at}"
            );
            assert_eq!(at.len(), "2026-12-01T23:10:05Z".len(), "{t}: {at}");
        }
    }
    // Filtered, and as a table that names every account with its seq and run.
    let crm = show_json(ps, &["--source", "crm"]);
    assert_eq!(crm.len(), 2);
    let o = run(&["state", "show", ps, "--account", "102"]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success());
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains("crm/102") && table.contains(shown[1]["last"]["run_id"].as_str().unwrap())
    );
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_makes_the_next_sync_a_full_extract_that_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p, lake) = synced(dir.path()).await;
    let ps = p.to_str().unwrap();
    let before = lake.contacts_of("crm", "101").await.unwrap();
    // Changes the next sync must land, deletes among them.
    let m = emu.mutate_aurinko(Some("101"), 2, 3, 4);

    // stdin is not a terminal: a reset needs no --yes.
    let o = run(&["state", "reset", ps, "--source", "crm", "--account", "101"]);
    assert!(o.status.success(), "{}", text(&o));
    let runs = runs_of(&lake, "crm", "101").await;
    let reset = runs.last().unwrap();
    assert_eq!(reset["mode"], "reset");
    assert_eq!(reset["status"], "ok");
    assert_eq!(reset["seq"], 3);
    assert!(reset.get("cursor").is_none_or(|c| c.is_null()), "{reset}");
    // Its contacts stay; the state says the cursor is gone.
    assert_eq!(lake.contacts_of("crm", "101").await.unwrap(), before);
    let state = lake.recover("crm", "101").await.unwrap();
    assert_eq!((state.seq, state.cursor), (3, None));
    let shown = show_json(ps, &["--source", "crm", "--account", "101"]);
    assert!(
        shown[0]["cursor"].is_null() && shown[0]["seq"] == 3,
        "{shown:#?}"
    );

    let r = sync(&p, false).await;
    assert_ok(&r);
    let mode_of = |acct: &str| {
        r.accounts
            .iter()
            .find(|a| a.account == acct)
            .unwrap()
            .clone()
    };
    let a = mode_of("101");
    assert_eq!(a.mode, "full", "the reset account extracts in full");
    assert_eq!(mode_of("102").mode, "incremental", "the others do not");
    let (_, deletes) = crate::expected_counts(&m);
    assert_eq!(
        a.deleted, deletes,
        "the full extract reconciles the deletes"
    );
    let runs = runs_of(&lake, "crm", "101").await;
    let full = runs.last().unwrap();
    assert_eq!(
        (full["mode"].as_str(), full["seq"].as_i64()),
        (Some("full"), Some(4))
    );
    assert!(full["cursor"].is_string());
    assert_lake_matches(&p, &emu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_removes_one_account_logs_each_delete_and_readers_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p, lake) = synced(dir.path()).await;
    let ps = p.to_str().unwrap();
    let gone: Vec<String> = lake
        .contacts_of("crm", "101")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(!gone.is_empty());
    let others = [
        lake.contacts_of("crm", "102").await.unwrap(),
        lake.contacts_of("shared", "example.com").await.unwrap(),
    ];
    let args = ["state", "drop", ps, "--source", "crm", "--account", "101"];

    // Without a terminal to ask on, a drop needs --yes, and changes nothing.
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--yes"), "{}", text(&o));
    // On a terminal, "n" changes nothing either, and exits as a declined apply does.
    let o = run_on_terminal(&args, "n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("15 contacts leave") || text(&o).contains("contacts leave"),
        "{}",
        text(&o)
    );
    assert_eq!(
        lake.contacts_of("crm", "101").await.unwrap().len(),
        gone.len()
    );
    assert_eq!(runs_of(&lake, "crm", "101").await.len(), 2);

    // "y" on a terminal drops it.
    let o = run_on_terminal(&args, "y");
    assert!(o.status.success(), "{}", text(&o));
    assert!(lake.contacts_of("crm", "101").await.unwrap().is_empty());
    assert_eq!(lake.contacts_of("crm", "102").await.unwrap(), others[0]);
    assert_eq!(
        lake.contacts_of("shared", "example.com").await.unwrap(),
        others[1]
    );

    // One sync_runs row for the drop, and each removal in contact_changes under its id.
    let runs = runs_of(&lake, "crm", "101").await;
    let dropped = runs.last().unwrap();
    assert_eq!(
        (dropped["mode"].as_str(), dropped["seq"].as_i64()),
        (Some("drop"), Some(3))
    );
    assert_eq!(dropped["deleted"].as_i64(), Some(gone.len() as i64));
    let run_id = dropped["run_id"].as_str().unwrap();
    let changes = lake
        .read_all(
            TableKind::ContactChanges,
            Some(&format!(
                "source = 'crm' AND account = '101' AND _run_id = '{run_id}'"
            )),
        )
        .await
        .unwrap();
    let mut logged: Vec<ContactRecord> =
        contacts_etl::schema::batches_to_records(&changes).unwrap();
    logged.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(logged.iter().all(|r| r.deleted));
    assert_eq!(
        logged.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        gone
    );
    let shown = show_json(ps, &["--account", "101"]);
    assert_eq!(
        (shown[0]["held"].as_i64(), shown[0]["seq"].as_i64()),
        (Some(0), Some(3))
    );
    assert!(shown[0]["cursor"].is_null());

    // An independent reader (DuckDB's Delta extension) sees only the other accounts.
    if let Some(py) = crate::require_python("a_drop_removes_one_account") {
        crate::lake::duckdb_reads_the_truth(
            &py,
            &dir.path().join("lake/contacts"),
            &emu,
            &[("crm", "102"), ("shared", "example.com")],
        )
        .await;
    }
    // Still in the pipeline: the next sync brings it back in full, exactly.
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!(
        r.accounts.iter().find(|a| a.account == "101").unwrap().mode,
        "full"
    );
    assert_lake_matches(&p, &emu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sources_and_accounts_are_usage_errors_that_name_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p, lake) = synced(dir.path()).await;
    let ps = p.to_str().unwrap();
    let usage = |args: &[&str], says: &[&str]| {
        let o = run(args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        for s in says {
            assert!(t.contains(s), "{args:?}: lacks {s:?}: {t}");
        }
    };
    usage(
        &["state", "show", ps, "--source", "nope"],
        &["\"nope\"", "crm", "shared"],
    );
    usage(
        &["state", "show", ps, "--account", "999"],
        &["\"999\"", "crm/101", "crm/102", "shared/example.com"],
    );
    usage(
        &[
            "state",
            "reset",
            ps,
            "--source",
            "crm",
            "--account",
            "example.com",
        ],
        &["\"example.com\"", "of source \"crm\"", "crm/101"],
    );
    usage(
        &[
            "state",
            "drop",
            ps,
            "--source",
            "nope",
            "--account",
            "101",
            "--yes",
        ],
        &["\"nope\"", "crm, shared"],
    );
    // Nothing was recorded.
    assert_eq!(runs_of(&lake, "crm", "101").await.len(), 2);
    // A lake with no account yet says so.
    let empty = dir.path().join("empty.toml");
    std::fs::write(
        &empty,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("url = \"lake\"", "url = \"empty-lake\""),
    )
    .unwrap();
    usage(
        &["state", "show", empty.to_str().unwrap()],
        &["no account yet", "sync"],
    );
}

/// Counts `(delete rows of state-drop runs, distinct ids among them)` of one account in
/// `contact_changes`.
async fn drop_deletes(lake: &Lake, source: &str, account: &str) -> (i64, i64) {
    let sql = format!(
        "SELECT count(*), count(DISTINCT c.id) FROM contact_changes c JOIN sync_runs r \
         ON c._run_id = r.run_id AND c.source = r.source AND c.account = r.account \
         WHERE r.mode = 'drop' AND c.deleted AND c.source = '{source}' AND c.account = '{account}'"
    );
    let b = contacts_etl::sql::query(lake, &sql).await.unwrap();
    let n = |i: usize| {
        let c = arrow::compute::cast(b[0].column(i), &arrow::datatypes::DataType::Int64).unwrap();
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&c).value(0)
    };
    (n(0), n(1))
}

/// A drop killed (SIGKILL) at a random moment is completed by the next run of the
/// account: no contact of it is left, each is logged as deleted exactly once, the other
/// accounts are untouched, and the run numbers stay contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_killed_at_random_moments_is_completed_by_the_next_run() {
    use rand::Rng as _;
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 2000,
        aurinko_accounts: 1,
        aurinko_contacts: 30,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut span = std::time::Duration::ZERO;
    let mut killed = 0;
    for trial in 0..4 {
        let p = write_pipeline(
            dir.path(),
            &emu,
            &PipelineSpec {
                lake_url: &format!("lake-{trial}"),
                aurinko_accounts: vec!["101".into()],
                ..Default::default()
            },
        );
        assert_ok(&sync(&p, false).await);
        let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
        let held = lake
            .contacts_of("shared", "example.com")
            .await
            .unwrap()
            .len() as i64;
        let crm = lake.contacts_of("crm", "101").await.unwrap();
        let args = [
            "state",
            "drop",
            p.to_str().unwrap(),
            "--source",
            "shared",
            "--account",
            "example.com",
            "--yes",
        ];
        let t = std::time::Instant::now();
        let mut child = Command::new(crate::bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first trial runs whole and times a drop; the others are killed within that.
        if trial > 0 {
            let at = rand::rng().random_range(0..span.as_millis().max(1) as u64);
            tokio::time::sleep(std::time::Duration::from_millis(at)).await;
            if child.try_wait().unwrap().is_none() {
                killed += 1;
            }
            let _ = child.kill();
        }
        let _ = child.wait();
        if trial == 0 {
            span = t.elapsed();
        }
        // The next run of the account: a drop again, which finishes what was begun.
        let o = run(&args);
        assert!(o.status.success(), "trial {trial}: {}", text(&o));
        assert!(
            lake.contacts_of("shared", "example.com")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(lake.contacts_of("crm", "101").await.unwrap(), crm);
        assert_eq!(
            drop_deletes(&lake, "shared", "example.com").await,
            (held, held),
            "trial {trial}: each contact logged as deleted once"
        );
        let seqs: Vec<i64> = runs_of(&lake, "shared", "example.com")
            .await
            .iter()
            .filter(|r| r["status"] == "ok")
            .map(|r| r["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "trial {trial}"
        );
        // Still configured: the next sync lands it again, exactly.
        assert_ok(&sync(&p, false).await);
        assert_lake_matches(&p, &emu).await;
    }
    eprintln!("{killed} of 3 drops killed mid-run (span {span:?})");
}

/// Reset and drop on the S3 server: the same runs, the same results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_on_the_s3_server() {
    if crate::require_s3("state_changes_on_the_s3_server").is_none() {
        return;
    }
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 40,
        aurinko_accounts: 2,
        aurinko_contacts: 15,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = crate::s3_lake_url("state");
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            lake_url: &url,
            aurinko_accounts: vec!["101".into(), "102".into()],
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let ps = p.to_str().unwrap();
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let other = lake.contacts_of("crm", "102").await.unwrap();
    let o = run(&[
        "state",
        "drop",
        ps,
        "--source",
        "crm",
        "--account",
        "101",
        "--yes",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(lake.contacts_of("crm", "101").await.unwrap().is_empty());
    assert_eq!(lake.contacts_of("crm", "102").await.unwrap(), other);
    assert_eq!(drop_deletes(&lake, "crm", "101").await, (15, 15));
    let o = run(&[
        "state",
        "reset",
        ps,
        "--source",
        "shared",
        "--account",
        "example.com",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    emu.mutate_google(2, 2, 2);
    let r = sync(&p, false).await;
    assert_ok(&r);
    let modes: Vec<(&str, &str)> = r
        .accounts
        .iter()
        .map(|a| (a.account.as_str(), a.mode.as_str()))
        .collect();
    assert_eq!(
        modes,
        [
            ("101", "full"),
            ("102", "incremental"),
            ("example.com", "full")
        ]
    );
    assert_lake_matches(&p, &emu).await;
}

/// A reset or drop while a sync holds the account (its lease in the lake, renewed just
/// now by a process elsewhere) changes nothing and says who holds it (exit 1); once the
/// lease is gone, it goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_under_a_running_sync_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p, lake) = synced(dir.path()).await;
    let ps = p.to_str().unwrap();
    let lease = dir.path().join("lake/_leases/crm/101.json");
    std::fs::create_dir_all(lease.parent().unwrap()).unwrap();
    let holder = contacts_etl::lake::lease::Holder {
        run_id: "20261207T000000.000Z-0123abcd".into(),
        host: "another-host".into(),
        pid: 4242,
        renewed_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    std::fs::write(&lease, serde_json::to_vec(&holder).unwrap()).unwrap();
    let before = runs_of(&lake, "crm", "101").await;
    for change in ["reset", "drop"] {
        let o = run(&[
            "state",
            change,
            ps,
            "--source",
            "crm",
            "--account",
            "101",
            "--yes",
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains("another sync holds this account")
                && text(&o).contains("pid 4242 on another-host"),
            "{}",
            text(&o)
        );
        assert_eq!(
            runs_of(&lake, "crm", "101").await,
            before,
            "{change} changed the lake"
        );
    }
    assert!(lease.exists(), "the other sync's lease was taken");
    std::fs::remove_file(&lease).unwrap();
    let o = run(&[
        "state",
        "reset",
        ps,
        "--source",
        "crm",
        "--account",
        "101",
        "--yes",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(runs_of(&lake, "crm", "101").await.len(), before.len() + 1);
    assert!(!lease.exists(), "the reset left its lease");
}
