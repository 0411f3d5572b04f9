//! Many small accounts in one run: runs land in grouped commits (one per table per group,
//! not one per account), with every account's exactly-once guarantee kept under kill -9,
//! concurrent syncs and shards.

use std::process::{Command, Stdio};

use arrow::array::AsArray;
use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::lake::TableKind;

use crate::lake::{CrashSetup, KillAt, crash_trials_with};
use crate::{PipelineSpec, assert_lake_matches, assert_ok, aurinko_only, sync, write_pipeline};

/// The number of commits a table has (its newest version + 1).
async fn commits(p: &std::path::Path, kind: TableKind) -> i64 {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    lake.open(kind).await.unwrap().unwrap().version().unwrap() as i64 + 1
}

/// `SELECT count(*) …` as a number.
async fn count(p: &std::path::Path, sql: &str) -> i64 {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let r = contacts_etl::sql::query(&lake, sql).await.unwrap();
    let c = arrow::compute::cast(r[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
    c.as_primitive::<arrow::datatypes::Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_small_accounts_land_in_a_few_commits_per_table() {
    let emu = Emulator::start(aurinko_only(300, 6)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: emu.aurinko_accounts(),
            ..Default::default()
        },
    );
    let before: Vec<i64> = futures_versions(&p).await;
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!(r.accounts.len(), 300);
    assert!(
        r.accounts
            .iter()
            .all(|a| a.seq == Some(1) && a.upserted == 6)
    );
    assert_lake_matches(&p, &emu).await;
    // 300 accounts, each with its own transaction, in a handful of commits per table
    // (one per group; a group holds at most 256 accounts), not 300.
    let after = futures_versions(&p).await;
    for (i, kind) in [
        TableKind::ContactChanges,
        TableKind::Contacts,
        TableKind::SyncRuns,
    ]
    .iter()
    .enumerate()
    {
        let n = after[i] - before[i];
        assert!(
            (2..=40).contains(&n),
            "{}: {n} commits for 300 accounts",
            kind.name()
        );
    }
    assert_eq!(
        count(
            &p,
            "SELECT count(DISTINCT account) FROM sync_runs WHERE status = 'ok' AND seq = 1"
        )
        .await,
        300
    );
    // Every account's transaction is its own, in the grouped commits.
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let changes = lake.open(TableKind::ContactChanges).await.unwrap().unwrap();
    for a in emu.aurinko_accounts().iter().step_by(37) {
        let v = changes
            .snapshot()
            .unwrap()
            .transaction_version(changes.log_store().as_ref(), format!("crm/{a}"))
            .await
            .unwrap();
        assert_eq!(v, Some(1), "crm/{a}");
    }
    // Changes in 1 % of the accounts: incremental, only those change.
    let changed: Vec<String> = emu.aurinko_accounts().into_iter().step_by(100).collect();
    for a in &changed {
        emu.mutate_aurinko(Some(a), 1, 1, 1);
    }
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(
        r.accounts
            .iter()
            .all(|a| a.mode == "incremental" && a.seq == Some(2))
    );
    for a in &r.accounts {
        let moved = a.upserted + a.deleted > 0;
        assert_eq!(
            moved,
            changed.contains(&a.account),
            "{}: {}",
            a.account,
            r.summary()
        );
    }
    assert_lake_matches(&p, &emu).await;
    // Nothing changed: nothing written but the runs.
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(
        r.accounts
            .iter()
            .all(|a| a.upserted == 0 && a.deleted == 0 && a.seq == Some(3))
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM (SELECT run_id, account FROM sync_runs GROUP BY 1, 2 HAVING count(*) > 1)").await,
        0,
        "one status per run and account"
    );
    // A full refresh over the same accounts finds nothing to change either.
    let r = sync(&p, true).await;
    assert!(
        r.accounts.iter().all(|a| a.upserted == 0 && a.deleted == 0),
        "{}",
        r.summary()
    );
    assert_lake_matches(&p, &emu).await;
}

async fn futures_versions(p: &std::path::Path) -> Vec<i64> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    lake.ensure_tables().await.unwrap();
    let mut v = Vec::new();
    for kind in [
        TableKind::ContactChanges,
        TableKind::Contacts,
        TableKind::SyncRuns,
    ] {
        v.push(commits(p, kind).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_account_among_many_fails_alone() {
    let emu = Emulator::start(aurinko_only(40, 5)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts = emu.aurinko_accounts();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: accounts.clone(),
            bad_token_for: Some(accounts[7].as_str()),
            ..Default::default()
        },
    );
    let r = sync(&p, false).await;
    let failed = r.failed();
    assert_eq!(failed.len(), 1, "{}", r.summary());
    assert_eq!(failed[0].account, accounts[7]);
    assert_eq!(r.accounts.iter().filter(|a| a.seq == Some(1)).count(), 39);
    // Its failure is recorded with the group, once.
    assert_eq!(
        count(
            &p,
            &format!(
                "SELECT count(*) FROM sync_runs WHERE status = 'failed' AND account = '{}'",
                accounts[7]
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM sync_runs WHERE status = 'ok'").await,
        39
    );
}

fn many_small() -> EmulatorConfig {
    EmulatorConfig {
        aurinko_page_size: 50,
        ..aurinko_only(120, 8)
    }
}

/// Kill -9 at random moments, while a group's change files are written (the group is being
/// built), right after a group's changes landed (between its tables), and while its keyed
/// step on `contacts` is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_many_small_accounts_loses_and_duplicates_nothing() {
    let trials: usize = std::env::var("CONTACTS_ETL_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let setup = CrashSetup {
        emulator: many_small(),
        google: false,
        directory: false,
        accounts: None,
        kills: &[
            KillAt::Line("a group's changes landed"),
            KillAt::Line("wrote the change files"),
            KillAt::Random,
            KillAt::Line("keyed step: wrote the new rows"),
        ],
        fresh_every: 2,
    };
    crash_trials_with("lake", trials, &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_many_small_accounts_on_the_s3_lake() {
    if crate::require_s3("kill_9_with_many_small_accounts_on_the_s3_lake").is_none() {
        return;
    }
    let setup = CrashSetup {
        emulator: many_small(),
        google: false,
        directory: false,
        accounts: None,
        kills: &[
            KillAt::Line("a group's changes landed"),
            KillAt::Line("wrote the change files"),
        ],
        fresh_every: 2,
    };
    crash_trials_with(&crate::s3_lake_url("crash-many"), 4, &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_syncs_of_many_small_accounts_never_corrupt_the_lake() {
    let emu = Emulator::start(many_small()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: emu.aurinko_accounts(),
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    for _ in 0..2 {
        emu.mutate_aurinko(None, 2, 2, 1);
        let spawn = || {
            Command::new(crate::bin())
                .args(["sync", p.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
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
    assert_eq!(
        count(&p, "SELECT count(*) FROM (SELECT source, account, seq FROM sync_runs WHERE status = 'ok' GROUP BY 1, 2, 3 HAVING count(*) > 1)").await,
        0,
        "a seq recorded twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_over_400_small_accounts_land_every_account_exactly_once() {
    let s3 = crate::require_s3("four_shards_over_400_small_accounts").is_some();
    let emu = Emulator::start(aurinko_only(400, 4)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = if s3 {
        crate::s3_lake_url("shards-many")
    } else {
        "lake".into()
    };
    let accounts = emu.aurinko_accounts();
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
    contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap())
        .unwrap()
        .ensure_tables()
        .await
        .unwrap();
    for round in 0..2 {
        if round == 1 {
            emu.mutate_aurinko(None, 1, 1, 1);
        }
        crate::sync_four_shards(&p);
        assert_lake_matches(&p, &emu).await;
        assert_eq!(
            count(
                &p,
                &format!(
                    "SELECT count(*) FROM sync_runs WHERE status = 'ok' AND seq = {}",
                    round + 1
                )
            )
            .await,
            400,
            "each account synced by exactly one shard"
        );
    }
    assert_eq!(
        count(&p, "SELECT count(DISTINCT account) FROM sync_runs").await,
        400
    );
}

/// Kill -9 while a compaction of the append-only tables is built and right after it
/// landed, on a lake whose runs go on (every fourth run of an account is due), and at
/// random moments: nothing lost or duplicated, the seqs stay contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_compaction_loses_and_duplicates_nothing() {
    let setup = CrashSetup {
        emulator: EmulatorConfig {
            aurinko_page_size: 50,
            ..aurinko_only(40, 4)
        },
        google: false,
        directory: false,
        accounts: None,
        kills: &[
            KillAt::Line("compaction: wrote the merged files"),
            KillAt::Line("compacted a table"),
            KillAt::Random,
        ],
        fresh_every: usize::MAX,
    };
    crash_trials_with("lake", 12, &setup).await;
}

/// The live files of each partition of `kind`.
async fn files_per_partition(p: &std::path::Path, kind: TableKind) -> Vec<usize> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let t = lake.open(kind).await.unwrap().unwrap();
    let mut by: std::collections::HashMap<String, usize> = Default::default();
    for f in t.snapshot().unwrap().log_data().iter() {
        let pv = f.partition_values_map();
        *by.entry(format!("{:?}", (pv.get("source"), pv.get("account"))))
            .or_default() += 1;
    }
    by.into_values().collect()
}

/// Many runs of the same accounts: the append-only tables keep a few files per account
/// (their small files are merged), every row stays exactly once, and readers see the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_append_only_tables_keep_a_few_files_per_account_over_many_runs() {
    let emu = Emulator::start(aurinko_only(12, 4)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: emu.aurinko_accounts(),
            ..Default::default()
        },
    );
    let runs = 17;
    let mut changes = 0i64;
    for run in 1..=runs {
        if run % 3 == 0 {
            emu.mutate_aurinko(None, 1, 1, 0);
        }
        let r = sync(&p, false).await;
        assert_ok(&r);
        changes += r
            .accounts
            .iter()
            .map(|a| a.upserted + a.deleted)
            .sum::<i64>();
        assert!(r.accounts.iter().all(|a| a.seq == Some(run)));
    }
    assert_lake_matches(&p, &emu).await;
    // 17 runs: one file per run and account unmerged; merged, 16 rows make one file
    // and the 17th its own.
    let runs_files = files_per_partition(&p, TableKind::SyncRuns).await;
    assert_eq!(runs_files.len(), 12);
    assert!(runs_files.iter().all(|n| *n <= 3), "{runs_files:?}");
    let change_files = files_per_partition(&p, TableKind::ContactChanges).await;
    assert!(change_files.iter().all(|n| *n <= 4), "{change_files:?}");
    // Every row is there exactly once.
    assert_eq!(
        count(&p, "SELECT count(*) FROM sync_runs WHERE status = 'ok'").await,
        12 * runs
    );
    assert_eq!(
        count(
            &p,
            "SELECT count(DISTINCT account || '/' || CAST(seq AS VARCHAR)) FROM sync_runs"
        )
        .await,
        12 * runs
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM contact_changes").await,
        changes
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM (SELECT account, id, _run_id FROM contact_changes GROUP BY 1, 2, 3 HAVING count(*) > 1)").await,
        0
    );
    // The merges changed no data: the log says so, for readers of the table's changes.
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let t = lake.open(TableKind::SyncRuns).await.unwrap().unwrap();
    let mut optimize = 0;
    let mut history = t.history(None);
    use futures::TryStreamExt;
    while let Some(ci) = history.try_next().await.unwrap() {
        if ci.operation.as_deref() == Some("OPTIMIZE") {
            optimize += 1;
        }
    }
    assert!(optimize >= 4, "{optimize} compactions of sync_runs");
    // The next run goes on from the cursors the merged files hold.
    emu.mutate_aurinko(None, 1, 0, 0);
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(
        r.accounts
            .iter()
            .all(|a| a.mode == "incremental" && a.seq == Some(runs + 1) && a.upserted == 1),
        "{}",
        r.summary()
    );
    assert_lake_matches(&p, &emu).await;
}
