//! The lake's guarantees with real processes and real servers: the same suite on S3 as on
//! local disk, kill -9 at random moments, concurrent runs, shards, an independent reader.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::lake::TableKind;
use rand::Rng;

use crate::{PipelineSpec, assert_lake_matches, assert_ok, sync, write_pipeline};

fn mixed() -> EmulatorConfig {
    EmulatorConfig {
        google_contacts: 600,
        aurinko_accounts: 2,
        aurinko_contacts: 300,
        aurinko_page_size: 50,
        ..Default::default()
    }
}

async fn suite(lake_url: &str) {
    let emu = Emulator::start(mixed()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            lake_url,
            aurinko_accounts: vec!["101".into(), "102".into()],
            page_size: 100,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    emu.mutate_google(20, 20, 10);
    emu.mutate_aurinko(None, 5, 5, 5);
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(r.accounts.iter().all(|a| a.mode == "incremental"));
    assert_lake_matches(&p, &emu).await;
    // Idempotent, and a full refresh of an unchanged API changes nothing either.
    let r = sync(&p, false).await;
    assert!(
        r.accounts.iter().all(|a| a.upserted == 0 && a.deleted == 0),
        "{}",
        r.summary()
    );
    let r = sync(&p, true).await;
    assert!(
        r.accounts
            .iter()
            .all(|a| a.mode == "full" && a.upserted == 0 && a.deleted == 0),
        "{}",
        r.summary()
    );
    assert_lake_matches(&p, &emu).await;
    // `status` reads the lake back.
    let status = contacts_etl::status::status(&Pipeline::load(&p).unwrap())
        .await
        .unwrap()
        .render();
    assert!(
        status.contains("example.com") && status.contains("101") && status.contains("full"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_suite_on_local_disk() {
    suite("lake").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_suite_on_the_s3_server() {
    if crate::require_s3("lake_suite_on_the_s3_server").is_none() {
        return;
    }
    suite(&crate::s3_lake_url("suite")).await;
}

/// Kills `contacts-etl sync` with SIGKILL at random moments, reruns to completion, and
/// checks the lake against the truth each time. `CONTACTS_ETL_CRASH_TRIALS` sets the
/// number of trials (default 6 here; the long run uses 25).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let trials: usize = std::env::var("CONTACTS_ETL_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    crash_trials("lake", trials).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_the_s3_lake_loses_and_duplicates_nothing() {
    if crate::require_s3("kill_9_on_the_s3_lake_loses_and_duplicates_nothing").is_none() {
        return;
    }
    let trials: usize = std::env::var("CONTACTS_ETL_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|n: usize| n / 2)
        .unwrap_or(3);
    crash_trials(&crate::s3_lake_url("crash"), trials).await;
}

async fn crash_trials(lake_url: &str, trials: usize) {
    let setup = CrashSetup {
        emulator: EmulatorConfig {
            google_contacts: 1500,
            aurinko_accounts: 2,
            aurinko_contacts: 400,
            aurinko_page_size: 50,
            ..Default::default()
        },
        google: true,
        directory: false,
        accounts: Some(vec!["101".into(), "102".into()]),
        kills: &[KillAt::Random],
        fresh_every: 2,
    };
    crash_trials_with(lake_url, trials, &setup).await;
}

/// When a crash trial kills the sync.
#[derive(Debug, Clone, Copy)]
pub enum KillAt {
    /// At a random moment of a run.
    Random,
    /// As soon as the sync logs (at debug level) a line containing this, after a random
    /// 1 to 3 such lines.
    Line(&'static str),
}

/// What the crash trials run against.
pub struct CrashSetup {
    pub emulator: EmulatorConfig,
    pub google: bool,
    /// A `google_directory` source over the same emulator (its domain contacts and
    /// profiles are mutated before each trial).
    pub directory: bool,
    /// The Aurinko accounts (all of the emulator's when `None`).
    pub accounts: Option<Vec<String>>,
    /// The kinds of kill, taken in turn.
    pub kills: &'static [KillAt],
    /// Every this many trials start over with an empty lake (so kills land in full
    /// extracts too); a larger number lets the runs of one lake go on longer.
    pub fresh_every: usize,
}

/// Starts `contacts-etl sync` and kills it (SIGKILL) as `kill` says, within `span` for a
/// random kill. Returns whether it was killed before it ended.
fn sync_and_kill(p: &std::path::Path, kill: KillAt, span: Duration) -> bool {
    use std::io::BufRead;
    match kill {
        KillAt::Random => {
            let mut child = Command::new(crate::bin())
                .args(["sync", p.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let at =
                Duration::from_millis(rand::rng().random_range(0..span.as_millis().max(1) as u64));
            std::thread::sleep(at);
            let alive = child.try_wait().unwrap().is_none();
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            alive
        }
        KillAt::Line(marker) => {
            let mut child = Command::new(crate::bin())
                .args(["--log-level", "debug", "sync", p.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let after = rand::rng().random_range(1..=3);
            let mut seen = 0;
            let mut killed = false;
            for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
                let Ok(line) = line else { break };
                if !killed && line.contains(marker) {
                    seen += 1;
                    if seen == after {
                        killed = child.try_wait().unwrap().is_none();
                        let _ = child.kill();
                    }
                }
            }
            if !killed && seen > 0 {
                // Fewer such lines than drawn: kill at the last one's moment is gone; the
                // run ended.
            }
            let _ = child.wait();
            killed
        }
    }
}

/// Kills syncs (see [`KillAt`]), reruns to completion, and checks the lake against the
/// truth each time: rows, contiguous seqs, no duplicate change, one final status per run
/// and account.
pub async fn crash_trials_with(lake_url: &str, trials: usize, setup: &CrashSetup) {
    let emu = Emulator::start(setup.emulator.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts = setup
        .accounts
        .clone()
        .unwrap_or_else(|| emu.aurinko_accounts());
    let spec = |url: &str| {
        write_pipeline(
            dir.path(),
            &emu,
            &PipelineSpec {
                lake_url: url,
                google: setup.google,
                directory: setup.directory,
                aurinko_accounts: accounts.clone(),
                page_size: 100,
                ..Default::default()
            },
        )
    };
    let p = spec(lake_url);
    // How long an uninterrupted full run takes, to spread the kills over it.
    let t = Instant::now();
    let full = Command::new(crate::bin())
        .args(["sync", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        full.status.success(),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    // The window kills are drawn from; it shrinks when a run ends before its kill (the
    // calibration run may have been slowed by other tests running beside it).
    let mut span = t.elapsed();
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        if trial % setup.fresh_every == 0 {
            let fresh = if lake_url.starts_with("s3://") {
                crate::s3_lake_url("crash")
            } else {
                format!("lake-{trial}")
            };
            spec(&fresh);
        }
        if setup.google || setup.directory {
            emu.mutate_google(30, 30, 15);
        }
        if setup.directory {
            emu.mutate_directory(10, 10, 5);
        }
        emu.mutate_aurinko(None, 10, 10, 5);
        let kill = setup.kills[trial % setup.kills.len()];
        let p2 = p.clone();
        let killed = tokio::task::spawn_blocking(move || sync_and_kill(&p2, kill, span))
            .await
            .unwrap();
        if killed {
            killed_mid_run += 1;
        } else if matches!(kill, KillAt::Random) {
            span = (span * 2 / 3).max(Duration::from_millis(50));
        }
        let out = Command::new(crate::bin())
            .args(["sync", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "trial {trial} ({kill:?}): the rerun failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_lake_matches(&p, &emu).await;
        // The cursor is consistent: completed runs are numbered 1, 2, … with no gap or repeat.
        let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
        let runs = contacts_etl::sql::query(&lake, "SELECT source, account, count(*) AS n, count(DISTINCT seq) AS d, max(seq) AS m FROM sync_runs WHERE status = 'ok' GROUP BY 1, 2").await.unwrap();
        for b in &runs {
            let n = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Int64).unwrap();
            let d = arrow::compute::cast(b.column(3), &arrow::datatypes::DataType::Int64).unwrap();
            let m = arrow::compute::cast(b.column(4), &arrow::datatypes::DataType::Int64).unwrap();
            use arrow::array::AsArray;
            for i in 0..b.num_rows() {
                let (n, d, m) = (
                    n.as_primitive::<arrow::datatypes::Int64Type>().value(i),
                    d.as_primitive::<arrow::datatypes::Int64Type>().value(i),
                    m.as_primitive::<arrow::datatypes::Int64Type>().value(i),
                );
                assert!(
                    n == d && d == m,
                    "trial {trial}: sync_runs seqs not contiguous: {n} rows, {d} distinct, max {m}"
                );
            }
        }
        let count = async |sql: &str| {
            let r = contacts_etl::sql::query(&lake, sql).await.unwrap();
            let c =
                arrow::compute::cast(r[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
            use arrow::array::AsArray;
            c.as_primitive::<arrow::datatypes::Int64Type>().value(0)
        };
        // The change log holds no row twice for one run.
        assert_eq!(
            count("SELECT count(*) FROM (SELECT source, account, id, _run_id, count(*) AS c FROM contact_changes GROUP BY 1, 2, 3, 4 HAVING count(*) > 1)").await,
            0,
            "trial {trial}: duplicate change rows"
        );
        // One final status per run and account (a replayed run is not also `failed`).
        assert_eq!(
            count("SELECT count(*) FROM (SELECT run_id, source, account FROM sync_runs GROUP BY 1, 2, 3 HAVING count(*) > 1)").await,
            0,
            "trial {trial}: a run has two statuses for one account"
        );
    }
    eprintln!("{trials} trials, {killed_mid_run} killed mid-run");
    assert!(killed_mid_run > 0, "no kill landed inside a run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_syncs_never_corrupt_the_lake() {
    let emu = Emulator::start(mixed()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into(), "102".into()],
            page_size: 100,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    for _ in 0..2 {
        emu.mutate_google(20, 20, 10);
        emu.mutate_aurinko(None, 5, 5, 5);
        let a = Command::new(crate::bin())
            .args(["sync", p.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let b = Command::new(crate::bin())
            .args(["sync", p.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            // The report (stdout) and the diagnostics (stderr).
            let err = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Either it won, or it says another sync holds an account or got there
            // first; never anything else.
            assert!(
                out.status.success() || err.contains("another sync"),
                "{err}"
            );
        }
        assert_lake_matches(&p, &emu).await;
    }
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_over_40_accounts_land_every_account_exactly_once() {
    let s3 =
        crate::require_s3("four_shards_over_40_accounts_land_every_account_exactly_once").is_some();
    let emu = Emulator::start(EmulatorConfig {
        aurinko_page_size: 50,
        ..crate::aurinko_only(40, 20)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = if s3 {
        crate::s3_lake_url("shards")
    } else {
        "lake".into()
    };
    let accounts: Vec<String> = emu.aurinko_accounts();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            lake_url: &url,
            google: false,
            aurinko_accounts: accounts.clone(),
            ..Default::default()
        },
    );
    // Create the tables once, as a deployment would, before the workers start.
    contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap())
        .unwrap()
        .ensure_tables()
        .await
        .unwrap();
    crate::sync_four_shards(&p);
    assert_lake_matches(&p, &emu).await;
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let runs = lake
        .read_all(TableKind::SyncRuns, Some("status = 'ok'"))
        .await
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    for b in &runs {
        use arrow::array::AsArray;
        let a = b.column_by_name("account").unwrap().as_string::<i32>();
        seen.extend((0..b.num_rows()).map(|i| a.value(i).to_string()));
    }
    seen.sort();
    let mut want = accounts.clone();
    want.sort();
    assert_eq!(seen, want, "each account synced by exactly one shard");
    // The shards partition the accounts deterministically.
    let per: Vec<usize> = (0..4)
        .map(|i| {
            accounts
                .iter()
                .filter(|a| contacts_etl::sync::shard_of("crm", a, 4) == i)
                .count()
        })
        .collect();
    assert_eq!(per.iter().sum::<usize>(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_reader_sees_the_same_rows() {
    let Some(py) = crate::require_python("an_independent_reader_sees_the_same_rows") else {
        return;
    };
    let emu = Emulator::start(mixed()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into()],
            // `to_pyarrow_table()` cannot apply deletion vectors: the setting for it.
            lake_extra: "deletion_vectors = false",
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    emu.mutate_google(10, 10, 10);
    assert_ok(&sync(&p, false).await);
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let accounts = [("shared", "example.com"), ("crm", "101")];
    python_reader_agrees(
        &py,
        &dir.path().join("lake/contacts"),
        false,
        &lake,
        &accounts,
    )
    .await;
}

/// Reads `contacts` with the `deltalake` Python package (through pyarrow datasets, or
/// `scan` through delta-rs's engine) and compares ids, names and e-mail counts with ours.
async fn python_reader_agrees(
    py: &std::path::Path,
    table: &std::path::Path,
    scan: bool,
    lake: &contacts_etl::lake::Lake,
    accounts: &[(&str, &str)],
) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_lake.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(table);
    if scan {
        cmd.arg("scan");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for &(source, account) in accounts {
        let ours = lake.contacts_of(source, account).await.unwrap();
        let theirs = &got[format!("{source}/{account}")];
        let ids: Vec<String> = ours.iter().map(|r| r.id.clone()).collect();
        assert_eq!(
            theirs["ids"],
            serde_json::json!(ids),
            "{source}/{account}: ids differ"
        );
        let emails: usize = ours.iter().map(|r| r.emails.len()).sum();
        assert_eq!(theirs["emails"], serde_json::json!(emails));
        let names: Vec<Option<String>> = ours.iter().map(|r| r.display_name.clone()).collect();
        assert_eq!(theirs["display_names"], serde_json::json!(names));
    }
}

/// Reads `contacts` with DuckDB's `delta` extension (upstream delta-kernel-rs, which
/// applies the deletion vectors; no code shared with delta-rs or this project) and
/// compares every row, field by field, with the emulator's truth for each account.
pub async fn duckdb_reads_the_truth(
    py: &std::path::Path,
    table: &std::path::Path,
    emu: &Emulator,
    accounts: &[(&str, &str)],
) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_lake_duckdb.py");
    let out = Command::new(py).arg(script).arg(table).output().unwrap();
    assert!(
        out.status.success(),
        "DuckDB: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<contacts_etl::schema::ContactRecord> =
        serde_json::from_slice(&out.stdout).expect("DuckDB's rows in the shape of ContactRecord");
    let mut seen = 0;
    for &(source, account) in accounts {
        let theirs: Vec<_> = rows
            .iter()
            .filter(|r| r.source == source && r.account == account)
            .cloned()
            .collect();
        let truth = if source == "shared" {
            emu.google_truth().contacts
        } else {
            emu.aurinko_truth(account).unwrap().contacts
        };
        let d = contacts_etl::verify::diff(&theirs, &truth);
        assert!(
            d.is_empty(),
            "DuckDB reads {source}/{account} with {} differences, first 5: {:#?}",
            d.len(),
            &d[..d.len().min(5)]
        );
        seen += theirs.len();
    }
    assert_eq!(seen, rows.len(), "DuckDB read rows of no listed account");
}

/// `(path, deletion vector cardinality, physical rows)` of each live file of contacts.
async fn contact_files(lake: &contacts_etl::lake::Lake) -> Vec<(String, i64, usize)> {
    let t = lake.open(TableKind::Contacts).await.unwrap().unwrap();
    t.snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| {
            (
                f.path().to_string(),
                f.deletion_vector_descriptor().map_or(0, |d| d.cardinality),
                f.num_records().unwrap(),
            )
        })
        .collect()
}

/// An existing copy-on-write lake stays so by default, then is switched to deletion
/// vectors: incremental runs mark replaced rows
/// instead of rewriting the files loaded first, every run equals the truth, a change that
/// touches most rows rewrites instead, and independent readers agree.
async fn deletion_vector_suite(lake_url: &str, py: Option<std::path::PathBuf>) {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 2000,
        aurinko_accounts: 1,
        aurinko_contacts: 300,
        aurinko_page_size: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = |lake_extra| PipelineSpec {
        lake_url,
        aurinko_accounts: vec!["101".into()],
        lake_extra,
        ..Default::default()
    };
    // A lake made copy-on-write (as versions before deletion vectors became the default
    // made them) stays so while the setting is unset: readers without vector support
    // keep working.
    let p = write_pipeline(dir.path(), &emu, &spec("deletion_vectors = false"));
    assert_ok(&sync(&p, false).await);
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let p = write_pipeline(dir.path(), &emu, &spec(""));
    emu.mutate_google(5, 10, 5);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    let loaded = contact_files(&lake).await;
    assert!(loaded.iter().all(|f| f.1 == 0), "{loaded:?}");
    if let Some(py) = &py {
        let accounts = [("shared", "example.com"), ("crm", "101")];
        python_reader_agrees(
            py,
            &dir.path().join("lake/contacts"),
            false,
            &lake,
            &accounts,
        )
        .await;
    }

    let p = write_pipeline(dir.path(), &emu, &spec("deletion_vectors = true"));
    for _ in 0..3 {
        emu.mutate_google(20, 40, 15);
        emu.mutate_aurinko(None, 5, 10, 5);
        let r = sync(&p, false).await;
        assert_ok(&r);
        assert!(r.accounts.iter().all(|a| a.mode == "incremental"));
        assert_lake_matches(&p, &emu).await;
    }
    let files = contact_files(&lake).await;
    // Every file of the first load is still live, with its replaced rows marked.
    for (path, _, rows) in &loaded {
        let now = files.iter().find(|f| &f.0 == path);
        assert!(now.is_some(), "{path} was rewritten");
        assert_eq!(now.unwrap().2, *rows);
    }
    assert!(
        files.iter().any(|f| f.1 > 0),
        "no deletion vector was written: {files:?}"
    );
    if let Some(py) = &py {
        let accounts = [("shared", "example.com"), ("crm", "101")];
        python_reader_agrees(
            py,
            &dir.path().join("lake/contacts"),
            true,
            &lake,
            &accounts,
        )
        .await;
        duckdb_reads_the_truth(py, &dir.path().join("lake/contacts"), &emu, &accounts).await;
    }

    // Idempotent with vectors too.
    let r = sync(&p, true).await;
    assert!(
        r.accounts.iter().all(|a| a.upserted == 0 && a.deleted == 0),
        "{}",
        r.summary()
    );
    // A change to most rows rewrites the files instead of marking most of them.
    emu.mutate_google(0, 1500, 0);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    let files = contact_files(&lake).await;
    assert!(
        files.iter().all(|f| f.1 as usize * 2 <= f.2),
        "a file is more than half deleted: {files:?}"
    );
    let google_loaded: Vec<_> = loaded
        .iter()
        .filter(|f| f.0.contains("source=shared"))
        .collect();
    assert!(!google_loaded.is_empty());
    assert!(
        google_loaded
            .iter()
            .all(|(p, _, _)| files.iter().all(|f| &f.0 != p)),
        "the first load's Google files should have been rewritten: {files:?}"
    );
    // The SQL engine applies the vectors as well.
    let truth = emu.google_truth().contacts.len() as i64;
    assert_eq!(google_rows(&lake).await, (truth, truth));
}

/// `(rows, distinct ids)` of the Google source's contacts, by SQL.
async fn google_rows(lake: &contacts_etl::lake::Lake) -> (i64, i64) {
    let b = contacts_etl::sql::query(
        lake,
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM contacts WHERE source = 'shared'",
    )
    .await
    .unwrap();
    let col = |i: usize| {
        use arrow::array::AsArray;
        b[0].column(i)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    (col(0), col(1))
}

/// A new lake uses deletion vectors without being asked: the first incremental run marks
/// the replaced rows of the first load's files instead of rewriting them, and DuckDB's
/// `delta` extension (delta-kernel-rs) reads exactly the API's contacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lake_uses_deletion_vectors_by_default() {
    let py = crate::require_python("a_new_lake_uses_deletion_vectors_by_default");
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 600,
        aurinko_accounts: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let loaded = contact_files(&lake).await;
    let m = emu.mutate_google(3, 12, 4);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    let files = contact_files(&lake).await;
    // Rows of the first load that changed (a contact inserted just now was not loaded).
    let replaced = m
        .updated
        .iter()
        .chain(&m.deleted)
        .filter(|id| !m.inserted.contains(id))
        .count() as i64;
    for (path, _, rows) in &loaded {
        let now = files.iter().find(|f| &f.0 == path);
        assert_eq!(
            now.map(|f| f.2),
            Some(*rows),
            "{path} was rewritten: {files:?}"
        );
    }
    let marked: i64 = files.iter().map(|f| f.1).sum();
    assert!(replaced > 0);
    assert_eq!(
        marked, replaced,
        "updated and deleted rows are marked: {files:?}"
    );
    if let Some(py) = &py {
        duckdb_reads_the_truth(
            py,
            &dir.path().join("lake/contacts"),
            &emu,
            &[("shared", "example.com")],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_vectors_on_local_disk() {
    let py = crate::require_python("deletion_vectors_on_local_disk");
    deletion_vector_suite("lake", py).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_vectors_on_the_s3_server() {
    if crate::require_s3("deletion_vectors_on_the_s3_server").is_none() {
        return;
    }
    deletion_vector_suite(&crate::s3_lake_url("dv"), None).await;
}

/// Every incremental run appends a small file to each account it changes. Left alone,
/// they pile up and every later run reads them all; a keyed step folds them into one once
/// there are enough. Every run still equals the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_of_many_runs_are_folded_together() {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 400,
        aurinko_accounts: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            lake_extra: "deletion_vectors = true",
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let mut most = 0;
    let runs = 14;
    for _ in 0..runs {
        emu.mutate_google(1, 3, 1);
        assert_ok(&sync(&p, false).await);
        assert_lake_matches(&p, &emu).await;
        most = most.max(contact_files(&lake).await.len());
    }
    // The first load's file, at most 8 small ones left alone, and what the step writes.
    assert!(most <= 11, "{most} files at most");
    let now = contact_files(&lake).await.len();
    assert!(now < runs, "{now} files after {runs} runs");
    let truth = emu.google_truth().contacts.len() as i64;
    assert_eq!(google_rows(&lake).await, (truth, truth));
}
