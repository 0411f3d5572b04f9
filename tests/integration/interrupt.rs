//! An apply stopped by SIGINT or SIGTERM while it writes (issue #32, "every write on
//! record"): the group of writes in flight is answered and recorded before the process
//! exits, no further group is sent, and `writeback_results` holds exactly one row per
//! operation the API applied, counted in the emulator's own data. An apply killed
//! outright leaves its group in flight as `sent` rows, which the next apply or sync
//! resolves against the API; the emulator's write log says what the API received.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, FaultSpec};
use contacts_etl::lake::TableKind;

use crate::{PipelineSpec, google_only, write_pipeline};

/// Every `writeback_results` row: (op, id, result).
async fn rows(p: &std::path::Path) -> Vec<(String, String, String)> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let mut out = Vec::new();
    for b in lake
        .read_all(TableKind::WritebackResults, None)
        .await
        .unwrap()
    {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (ops, ids, results) = (s("op"), s("id"), s("result"));
        for i in 0..b.num_rows() {
            let id = if ids.is_valid(i) { ids.value(i) } else { "" };
            out.push((ops.value(i).into(), id.into(), results.value(i).into()));
        }
    }
    out.sort();
    out
}

/// Rows by result.
fn by_result(rows: &[(String, String, String)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, _, r) in rows {
        *out.entry(r.clone()).or_default() += 1;
    }
    out
}

/// Checks that `writeback_results` holds exactly one `ok` row per write of `op` the
/// emulator's log says the API received (all of them applied), and no other row;
/// returns how many.
async fn one_row_per_write_received(p: &std::path::Path, emu: &Emulator, op: &str) -> usize {
    let log = emu.google_writes();
    assert!(
        log.iter().all(|w| w.applied()),
        "a write was refused: {log:?}"
    );
    let mut received: Vec<String> = log
        .iter()
        .filter(|w| w.op == op)
        .map(|w| w.id.clone().unwrap_or_default())
        .collect();
    received.sort();
    let rows = rows(p).await;
    assert_eq!(
        by_result(&rows),
        BTreeMap::from([("ok".to_string(), received.len())]),
        "one ok row per write received, none sent or unknown"
    );
    let recorded: Vec<String> = rows.into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(recorded, received, "the rows are of the writes received");
    received.len()
}

/// `writeback_results` rows of the source, by result.
async fn recorded(p: &std::path::Path) -> (usize, usize) {
    let pipeline = Pipeline::load(p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let b = contacts_etl::sql::query(
        &lake,
        "SELECT count(*) AS n, count(CASE WHEN result = 'ok' THEN 1 END) AS ok FROM writeback_results",
    )
    .await
    .unwrap();
    let csv = contacts_etl::sql::render(&b, "csv").unwrap();
    let line = csv.lines().nth(1).unwrap().to_string();
    let (n, ok) = line.split_once(',').unwrap();
    (n.trim().parse().unwrap(), ok.trim().parse().unwrap())
}

/// A slow Google emulator of 3,000 contacts (every request answers after 100 ms, so a
/// group of 1,000 updates is in flight long enough to be stopped) and its pipeline.
async fn slow_domain(dir: &std::path::Path) -> (Emulator, std::path::PathBuf) {
    let mut cfg = google_only(3000);
    cfg.faults = FaultSpec {
        slow: 1.0,
        slow_ms: 100,
        ..Default::default()
    };
    let emu = Emulator::start(cfg).await.unwrap();
    let p = write_pipeline(
        dir,
        &emu,
        &PipelineSpec {
            page_size: 1000,
            ..Default::default()
        },
    );
    emu.reset_stats();
    (emu, p)
}

/// `apply` of `notes` to every contact, as a child process with its output piped.
fn apply_notes(p: &std::path::Path, notes: &str) -> tokio::process::Command {
    let desired = format!(
        "SELECT account, id, etag, '{notes}' AS notes FROM contacts WHERE source = 'shared'"
    );
    let mut c = tokio::process::Command::new(crate::bin());
    c.args([
        "apply",
        p.to_str().unwrap(),
        "--source",
        "shared",
        "--mode",
        "update",
    ])
    .args(["--desired", &desired, "-y"])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    c
}

/// Waits until the emulator has answered `n` batch requests.
async fn batches(emu: &Emulator, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while emu.stats().get("google.batch").copied().unwrap_or(0) < n {
        assert!(std::time::Instant::now() < deadline, "no batch was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Contacts holding `notes` at the API.
fn holding(emu: &Emulator, notes: &str) -> usize {
    emu.google_truth()
        .contacts
        .iter()
        .filter(|c| c.notes.as_deref() == Some(notes))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_apply_records_every_write_the_api_received() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let dir = tempfile::tempdir().unwrap();
        let (emu, p) = slow_domain(dir.path()).await;
        let child = apply_notes(&p, "stopped-test").spawn().unwrap();
        let pid = child.id().unwrap() as i32;
        batches(&emu, 1).await;
        // SAFETY: signals a child this test started.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
            .await
            .expect("the apply did not stop")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("were not sent"), "{stderr}");
        let applied = holding(&emu, "stopped-test");
        let (rows, ok) = recorded(&p).await;
        assert!(
            applied > 0 && applied < 3000,
            "stopped in the middle: {applied}"
        );
        assert_eq!(
            (rows, ok),
            (applied, applied),
            "one ok row per update the API applied; {stderr}"
        );
    }
}

/// An apply killed outright (SIGKILL) while a group of writes is in flight leaves that
/// group's `sent` rows; the next apply resolves each against the API (applied: an `ok`
/// row; not applied: no row) and then writes the rest. In the end every contact holds
/// the change and `writeback_results` holds exactly one `ok` row per update the API
/// applied, none `sent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apply_is_resolved_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p) = slow_domain(dir.path()).await;
    let mut child = apply_notes(&p, "killed-test").spawn().unwrap();
    batches(&emu, 3).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let applied_first = holding(&emu, "killed-test");
    assert!(applied_first > 0 && applied_first < 3000, "{applied_first}");

    let out = apply_notes(&p, "killed-test").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("found applied at the API"), "{stderr}");
    assert_eq!(holding(&emu, "killed-test"), 3000);
    let (rows, ok) = recorded(&p).await;
    assert_eq!((rows, ok), (3000, 3000), "{stderr}");
    assert_eq!(one_row_per_write_received(&p, &emu, "update").await, 3000);
}

/// `sync`, as a child process: (exit code, stderr).
async fn run_cli(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(crate::bin())
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// A `sync` (not an apply) after a kill resolves the writes in flight. While the API
/// refuses the sync, the `sent` rows stay as they are, `status` shows them, and the sync
/// exits 1; once it answers, each write the API received has exactly one `ok` row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apply_is_resolved_by_the_next_sync_once_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p) = slow_domain(dir.path()).await;
    let mut child = apply_notes(&p, "sync-resolves").spawn().unwrap();
    batches(&emu, 3).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let received = emu.google_writes().len();
    assert!(received > 0 && received < 3000, "{received}");
    let left = by_result(&rows(&p).await);
    assert!(left.get("sent").copied().unwrap_or(0) > 0, "{left:?}");

    // The API refuses (a revoked token): nothing can be told, nothing is dropped.
    let token = dir.path().join("secrets/google.token");
    std::fs::write(&token, "revoked").unwrap();
    let pipeline = p.to_str().unwrap();
    let (code, out) = run_cli(&["sync", pipeline]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(by_result(&rows(&p).await), left, "{out}");
    let (code, status) = run_cli(&["status", pipeline]).await;
    assert_eq!(code, Some(0), "{status}");
    let sent = left["sent"];
    assert!(
        status.contains(&format!("shared/example.com: {sent} sent, 0 unknown")),
        "{status}"
    );

    std::fs::write(&token, &emu.config().token).unwrap();
    let (code, out) = run_cli(&["sync", pipeline]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("found applied at the API"), "{out}");
    assert_eq!(
        one_row_per_write_received(&p, &emu, "update").await,
        holding(&emu, "sync-resolves")
    );
    let (_, status) = run_cli(&["status", pipeline]).await;
    assert!(!status.contains("not on record"), "{status}");
}

/// A photo apply killed outright while a group of uploads is in flight: its `sent` rows
/// are resolved by the next sync (an upload whose bytes the API now holds: `ok`), and
/// the next photo apply sends the rest. In the end every upload the API received has
/// exactly one `ok` row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_photo_apply_is_resolved_by_the_next_sync() {
    let mut cfg = google_only(300);
    cfg.faults = FaultSpec {
        slow: 1.0,
        slow_ms: 40,
        ..Default::default()
    };
    let emu = Emulator::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            extra_google: "photos = true\nphoto_concurrency = 4\n",
            ..Default::default()
        },
    );
    let pipeline = p.to_str().unwrap();
    assert_eq!(run_cli(&["sync", pipeline]).await.0, Some(0));
    emu.reset_stats();
    let desired = dir.path().join("photos.parquet");
    write_photos(&emu, &desired, "killed");
    let photo_apply = || {
        let mut c = tokio::process::Command::new(crate::bin());
        c.args(["apply", pipeline, "--source", "shared", "--photos"])
            .arg(&desired)
            .arg("-y")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    };
    let mut child = photo_apply().spawn().unwrap();
    // In the middle of the second group of 100.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while emu.google_writes().len() < 150 {
        assert!(std::time::Instant::now() < deadline, "no photo was sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let received = emu.google_writes().len();
    assert!(received < 300, "{received}");
    assert!(by_result(&rows(&p).await).contains_key("sent"));

    let (code, out) = run_cli(&["sync", pipeline]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("found applied at the API"), "{out}");
    assert_eq!(
        one_row_per_write_received(&p, &emu, "photo_put").await,
        received
    );

    let out = photo_apply().output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(one_row_per_write_received(&p, &emu, "photo_put").await, 300);
}

/// Writes a desired photo Parquet file: a distinct small PNG for each of the emulator's
/// contacts (`tag` makes them differ from an earlier run's).
fn write_photos(emu: &Emulator, path: &std::path::Path, tag: &str) {
    use arrow::array::{BinaryArray, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let ids: Vec<String> = emu
        .google_truth()
        .contacts
        .into_iter()
        .map(|c| c.id)
        .collect();
    let bytes: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| [&b"\x89PNG "[..], tag.as_bytes(), id.as_bytes()].concat())
        .collect();
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("bytes", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(StringArray::from(ids)),
            std::sync::Arc::new(BinaryArray::from(
                bytes.iter().map(|b| Some(b.as_slice())).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// `sent` rows edited by hand (another Delta tool): a lost `etag_before`, an op nobody
/// knows, an upload without the hash of what was sent, a negative op_index. The sync's
/// resolution counts none of them applied: each becomes `unknown`, is named (source,
/// account, id) and the sync exits 1. The intact rows beside them are resolved as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_rows_edited_by_hand_are_named_and_never_counted_applied() {
    use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    let emu = Emulator::start(google_only(20)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    let pipeline = p.to_str().unwrap();
    assert_eq!(run_cli(&["sync", pipeline]).await.0, Some(0));
    let truth = emu.google_truth().contacts;
    let id = |i: usize| truth[i].id.clone();
    let etag = |i: usize| truth[i].etag.clone().unwrap();
    let before = |e: &str| serde_json::json!({ "etag_before": e }).to_string();
    // (op_index, op, id, reason)
    type Edited<'a> = (i64, &'a str, String, Option<String>);
    let edited: Vec<Edited> = vec![
        (0, "update", id(0), Some("{}".into())),
        (1, "rename", id(1), Some(before(&etag(1)))),
        (
            2,
            "photo_put",
            id(2),
            Some(r#"{"sha256":"not-a-hash"}"#.into()),
        ),
        (-5, "delete", id(3), None),
        // Intact: not applied (the contact still has the etag it was sent against)…
        (4, "update", id(4), Some(before(&etag(4)))),
        // … and applied (its etag moved since).
        (5, "update", id(5), Some(before("an-older-etag"))),
    ];
    let n = edited.len();
    let text = |f: &dyn Fn(&Edited) -> Option<String>| {
        std::sync::Arc::new(StringArray::from(edited.iter().map(f).collect::<Vec<_>>()))
            as arrow::array::ArrayRef
    };
    let batch = RecordBatch::try_new(
        contacts_etl::lake::writeback_results_schema(),
        vec![
            std::sync::Arc::new(StringArray::from(vec!["20261206T000000Z-edited"; n])),
            std::sync::Arc::new(Int64Array::from(
                edited.iter().map(|e| e.0).collect::<Vec<_>>(),
            )),
            std::sync::Arc::new(StringArray::from(vec!["shared"; n])),
            std::sync::Arc::new(StringArray::from(vec!["example.com"; n])),
            text(&|e| Some(e.1.to_string())),
            text(&|_| None),
            text(&|e| Some(e.2.clone())),
            std::sync::Arc::new(Int64Array::from(vec![None::<i64>; n])),
            std::sync::Arc::new(StringArray::from(vec!["sent"; n])),
            text(&|e| e.3.clone()),
            text(&|_| None),
            text(&|_| None),
            std::sync::Arc::new(TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let t = lake
        .open_or_create(TableKind::WritebackResults)
        .await
        .unwrap();
    t.write(vec![batch]).await.unwrap();

    let (code, out) = run_cli(&["sync", pipeline]).await;
    assert_eq!(code, Some(1), "{out}");
    for i in 0..4 {
        assert!(
            out.contains(&format!("shared/example.com/{}", id(i))),
            "row {i} named: {out}"
        );
    }
    assert!(
        out.contains("etag_before") && out.contains("\"rename\""),
        "{out}"
    );
    let mut got: Vec<(String, String)> = rows(&p)
        .await
        .into_iter()
        .map(|(_, id, result)| (id, result))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = vec![
        (id(0), "unknown".into()),
        (id(1), "unknown".into()),
        (id(2), "unknown".into()),
        (id(3), "unknown".into()),
        (id(5), "ok".into()),
    ];
    want.sort();
    assert_eq!(got, want, "{out}");
    let (_, status) = run_cli(&["status", pipeline]).await;
    assert!(
        status.contains("shared/example.com: 0 sent, 4 unknown"),
        "{status}"
    );
}

/// A pseudo-random number below `n`, from the clock (the seed is printed with the
/// figures, so a run can be told apart).
fn random_below(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (contacts_etl::emulator::hash64(nanos, "point") % n as u64) as usize
}

/// Issue #32's "done when", for real: a 13,000-update apply (and a photo apply of
/// `RECORD_PHOTOS`, default 3,000) stopped by SIGKILL or SIGINT when the API has received
/// a random number of writes, resolved by a `sync` (after SIGKILL), then finished by a
/// second apply. After each step, `writeback_results` holds exactly one `ok` row per
/// write the emulator's log says it received. Prints the figures of every round.
///
/// Minutes long: `cargo test --test integration -- --ignored --nocapture
/// every_write_on_record_at_random_points` (`RECORD_ROUNDS` rounds of each signal,
/// default 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn every_write_on_record_at_random_points() {
    let rounds: usize = std::env::var("RECORD_ROUNDS").map_or(2, |v| v.parse().unwrap());
    let photos: usize = std::env::var("RECORD_PHOTOS").map_or(3000, |v| v.parse().unwrap());
    for (what, n) in [("update", 13_000), ("photo_put", photos)] {
        let emu = Emulator::start(google_only(n)).await.unwrap();
        for round in 0..rounds * 2 {
            let signal = if round % 2 == 0 {
                libc::SIGKILL
            } else {
                libc::SIGINT
            };
            let dir = tempfile::tempdir().unwrap();
            let p = write_pipeline(
                dir.path(),
                &emu,
                &PipelineSpec {
                    page_size: 1000,
                    extra_google: "photos = true\nphoto_concurrency = 8\n",
                    ..Default::default()
                },
            );
            let pipeline = p.to_str().unwrap();
            assert_eq!(run_cli(&["sync", pipeline]).await.0, Some(0));
            emu.reset_stats();
            let tag = format!("round-{round}");
            let desired = dir.path().join("photos.parquet");
            let apply = || match what {
                "update" => apply_notes(&p, &tag),
                _ => {
                    let mut c = tokio::process::Command::new(crate::bin());
                    c.args(["apply", pipeline, "--source", "shared", "--photos"])
                        .arg(&desired)
                        .arg("-y")
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .kill_on_drop(true);
                    c
                }
            };
            if what == "photo_put" {
                write_photos(&emu, &desired, &tag);
            }
            let point = 1 + random_below(n - 1);
            let started = std::time::Instant::now();
            let child = apply().spawn().unwrap();
            let pid = child.id().unwrap() as i32;
            while emu.google_writes().len() < point {
                assert!(started.elapsed() < Duration::from_secs(600), "stuck");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // SAFETY: signals a child this test started.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
            let stopped = child.wait_with_output().await.unwrap();
            let at_stop = emu.google_writes().len();
            let left = by_result(&rows(&p).await);
            if signal == libc::SIGINT {
                // Stopped cleanly: every write received is on record before the exit.
                assert_eq!(stopped.status.code(), Some(130));
                assert_eq!(one_row_per_write_received(&p, &emu, what).await, at_stop);
            }
            let (code, sync_out) = run_cli(&["sync", pipeline]).await;
            assert_eq!(code, Some(0), "{sync_out}");
            let recorded = one_row_per_write_received(&p, &emu, what).await;
            let out = apply().output().await.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            let total = one_row_per_write_received(&p, &emu, what).await;
            assert_eq!(total, n);
            eprintln!(
                "FIGURE {what} round {round}: {} after {point} writes received (exit {:?}); the API had received {at_stop}; rows then {left:?}; after the sync {recorded} ok rows for {at_stop} writes received; after the second apply {total} ok rows for {} writes received",
                if signal == libc::SIGKILL {
                    "SIGKILL"
                } else {
                    "SIGINT"
                },
                stopped.status.code(),
                emu.google_writes().len()
            );
        }
    }
}

/// Inserts too: an apply of 3,000 new contacts killed while a group is in flight; the
/// next sync finds each insert the API received by the key it carries and records it
/// (`ok`, with the new contact's id), and an apply of the same rows then creates only
/// the rest. One row per insert the API received, none created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_insert_apply_is_resolved_by_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p) = slow_domain(dir.path()).await;
    let pipeline = p.to_str().unwrap();
    let desired = "SELECT CAST(NULL AS VARCHAR) AS id, concat('Inserted ', CAST(value AS VARCHAR)) AS given_name FROM range(3000)";
    let insert = || {
        let mut c = tokio::process::Command::new(crate::bin());
        c.args([
            "apply",
            pipeline,
            "--source",
            "shared",
            "--desired",
            desired,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        c
    };
    let mut child = insert().spawn().unwrap();
    batches(&emu, 3).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let received = emu.google_writes().len();
    assert!(received > 0 && received < 3000, "{received}");

    let (code, out) = run_cli(&["sync", pipeline]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        one_row_per_write_received(&p, &emu, "insert").await,
        received
    );

    let out = insert().output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(one_row_per_write_received(&p, &emu, "insert").await, 3000);
    let inserted = emu
        .google_truth()
        .contacts
        .iter()
        .filter(|c| {
            c.given_name
                .as_deref()
                .is_some_and(|n| n.starts_with("Inserted "))
        })
        .count();
    assert_eq!(inserted, 3000, "each new row created once");
}
