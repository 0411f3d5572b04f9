//! The reverse sink against the emulators: plan, apply, conflicts, mirror, crash safety.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig, FaultSpec};
use contacts_etl::plan::Mode;
use contacts_etl::plan::apply::{Apply, FromDesired, MaxDelete, plan};
use rand::Rng;

use crate::{PipelineSpec, assert_lake_matches, assert_ok, google_only, sync, write_pipeline};

/// An apply of `desired` to `source` of `p` in `mode`, to set further and await.
fn opts<'a>(p: &'a Pipeline, source: &str, desired: &str, mode: Mode) -> Apply<'a, FromDesired> {
    Apply::desired(p, source, desired).with_mode(mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_google_updates_take_exactly_100_batches_and_keep_unknown_xml() {
    let emu = Emulator::start(google_only(10_000)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 1000,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let unknown_before =
        emu.google_count_elements("http://schemas.google.com/contact/2008", "userDefinedField");
    assert!(unknown_before > 100);
    // Short notes keep every contact within Google's 2 KB, so all 10,000 are valid updates.
    let desired = "SELECT account, id, etag, concat('[cleaned] ', coalesce(substr(notes, 1, 40), '')) AS notes FROM contacts WHERE source = 'shared'";
    // plan writes nothing and advances nothing.
    let before = emu.stats();
    let pl = plan(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert_eq!(pl.ops.len(), 10_000);
    assert_eq!(emu.stats(), before, "plan must not call the API");
    emu.reset_stats();
    let report = opts(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.results.len(), 10_000);
    assert_eq!(
        emu.stats()["google.batch"],
        100,
        "exactly 100 batch requests: {:?}",
        emu.stats()
    );
    let truth = emu.google_truth();
    assert!(truth.contacts.iter().all(|c| {
        c.notes
            .as_deref()
            .is_some_and(|n| n.starts_with("[cleaned] "))
    }));
    assert_eq!(
        emu.google_count_elements("http://schemas.google.com/contact/2008", "userDefinedField"),
        unknown_before,
        "unknown XML must survive updates"
    );
    // apply synced afterwards: the lake equals the API, and a new plan is empty.
    assert_lake_matches(&p, &emu).await;
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let rows = contacts_etl::sql::query(
        &lake,
        "SELECT count(*) FROM writeback_results WHERE result = 'ok' AND op = 'update'",
    )
    .await
    .unwrap();
    let n = arrow::compute::cast(rows[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&n).value(0),
        10_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_etag_is_a_conflict_and_force_overwrites() {
    let emu = Emulator::start(google_only(200)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    // The desired state is computed now and saved; someone else then edits 30 contacts.
    let file = dir.path().join("desired.parquet");
    let batches = contacts_etl::sql::query(
        &lake,
        "SELECT account, id, etag, 'mine' AS notes FROM contacts",
    )
    .await
    .unwrap();
    contacts_etl::sql::write_parquet(&lake, &batches, file.to_str().unwrap())
        .await
        .unwrap();
    let m = emu.mutate_google(0, 30, 0);
    let report = opts(&pipeline, "shared", file.to_str().unwrap(), Mode::Update)
        .await
        .unwrap();
    let conflicts: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.outcome.as_str() == "conflict")
        .collect();
    assert_eq!(conflicts.len(), m.updated.len(), "{}", report.summary());
    assert_eq!(
        report
            .results
            .iter()
            .filter(|r| r.outcome.as_str() == "ok")
            .count(),
        200 - m.updated.len()
    );
    assert!(report.summary().contains("--force"));
    // The other writer's changes were not overwritten.
    let truth = emu.google_truth();
    for id in &m.updated {
        assert_ne!(
            truth
                .contacts
                .iter()
                .find(|c| &c.id == id)
                .unwrap()
                .notes
                .as_deref(),
            Some("mine")
        );
    }
    // Rerunning apply retries only what did not apply; --force overwrites.
    emu.reset_stats();
    let report = opts(&pipeline, "shared", file.to_str().unwrap(), Mode::Update)
        .with_force(true)
        .await
        .unwrap();
    assert_eq!(report.results.len(), m.updated.len());
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert!(
        emu.google_truth()
            .contacts
            .iter()
            .all(|c| c.notes.as_deref() == Some("mine"))
    );
    assert_eq!(emu.stats()["google.batch"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_deletes_what_is_absent_and_max_delete_guards_it() {
    let emu = Emulator::start(google_only(100)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let desired = "SELECT account, id, etag, notes FROM contacts ORDER BY id LIMIT 80";
    for guard in [MaxDelete::Count(10), MaxDelete::Percent(5.0)] {
        let err = opts(&pipeline, "shared", desired, Mode::Mirror)
            .with_max_delete(Some(guard))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to start") && err.contains("deletes 20"),
            "{err}"
        );
        assert_eq!(
            emu.google_truth().contacts.len(),
            100,
            "nothing may be deleted past the guard"
        );
    }
    let report = opts(&pipeline, "shared", desired, Mode::Mirror)
        .with_max_delete(Some(MaxDelete::Percent(25.0)))
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.plan.count(contacts_etl::plan::OpKind::Delete), 20);
    assert_eq!(emu.google_truth().contacts.len(), 80);
    assert_lake_matches(&p, &emu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_batches_resubmit_their_tail_and_invalid_rows_are_not_sent() {
    let faults = FaultSpec::parse("batch_interrupt=0.5,503=0.05,retry_after=0").unwrap();
    let emu = Emulator::start(EmulatorConfig {
        faults,
        ..google_only(300)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 100,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    // Every row gets a new e-mail with both a type and a label for one in ten: invalid.
    let desired = "SELECT account, id, etag, [named_struct('address', concat(id, '@clean.example'), 'type', CASE WHEN substr(id, 1, 1) = 'a' THEN NULL ELSE 'work' END, 'label', CASE WHEN substr(id, 1, 1) = 'a' THEN NULL ELSE NULL END, 'primary', true, 'display_name', CAST(NULL AS VARCHAR))] AS emails FROM contacts";
    let report = opts(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    let invalid = report.plan.invalid.len();
    assert!(
        invalid > 0,
        "ids starting with 'a' have neither type nor label"
    );
    // A contact the server holds over 2 KB may not grow: the API's 400 decides that (the
    // local count is only an estimate), and says why.
    let truth = emu.google_truth();
    let refused: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.outcome.as_str() == "invalid")
        .collect();
    for r in &refused {
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|m| m.contains("Contact data")),
            "{r:?}"
        );
        let held = truth
            .contacts
            .iter()
            .find(|c| Some(&c.id) == r.id.as_ref())
            .unwrap();
        assert!(
            held.notes.as_deref().is_some_and(|n| n.len() > 2048),
            "{r:?}"
        );
    }
    assert_eq!(
        report
            .results
            .iter()
            .filter(|r| r.outcome.as_str() == "ok")
            .count(),
        300 - invalid - refused.len(),
        "{}",
        report.summary()
    );
    assert!(
        emu.stats()["google.batch"] > 3,
        "interruptions force resubmissions: {:?}",
        emu.stats()
    );
    let cleaned = truth
        .contacts
        .iter()
        .filter(|c| {
            c.emails.len() == 1
                && c.emails[0]
                    .address
                    .as_deref()
                    .is_some_and(|a| a.ends_with("@clean.example"))
        })
        .count();
    assert_eq!(cleaned, 300 - invalid - refused.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurinko_inserts_updates_deletes_and_conflicts() {
    let emu = Emulator::start(crate::aurinko_only(2, 60)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: vec!["101".into(), "102".into()],
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let desired = "SELECT account, id, etag, upper(display_name) AS display_name, notes FROM contacts WHERE account = '101' \
                   UNION ALL SELECT '102' AS account, CAST(NULL AS VARCHAR) AS id, CAST(NULL AS VARCHAR) AS etag, 'Brand New' AS display_name, 'hello' AS notes";
    emu.reset_stats();
    let report = opts(&pipeline, "crm", desired, Mode::Upsert).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.plan.count(contacts_etl::plan::OpKind::Insert), 1);
    assert!(emu.stats()["aurinko.patch"] > 0 && emu.stats()["aurinko.create"] == 1);
    let t101 = emu.aurinko_truth("101").unwrap();
    assert!(t101.contacts.iter().all(|c| {
        c.display_name
            .as_deref()
            .is_none_or(|n| n == n.to_uppercase())
    }));
    assert_eq!(
        emu.aurinko_truth("102")
            .unwrap()
            .contacts
            .iter()
            .filter(|c| c.display_name.as_deref() == Some("Brand New"))
            .count(),
        1
    );
    assert_lake_matches(&p, &emu).await;
    // Applying again inserts nothing twice and updates nothing.
    let report = opts(&pipeline, "crm", desired, Mode::Upsert).await.unwrap();
    assert_eq!(report.results.len(), 0, "{}", report.plan.render(5));
    assert_eq!(report.plan.already_applied, 1);
}

/// kill -9 during apply, then rerun: no insert lands twice, no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_apply_then_rerun_duplicates_and_loses_nothing() {
    let emu = Emulator::start(google_only(400)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 100,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    for trial in 0..3 {
        // 150 new contacts in a CSV file, plus an update of every landed contact's notes.
        let csv = dir.path().join(format!("new-{trial}.csv"));
        let mut text = String::from("id,account,display_name,notes\n");
        for i in 0..150 {
            text.push_str(&format!(
                ",example.com,New {trial}-{i},created by trial {trial}\n"
            ));
        }
        std::fs::write(&csv, text).unwrap();
        let t = Instant::now();
        let mut child = Command::new(crate::bin())
            .args([
                "apply",
                p.to_str().unwrap(),
                "--source",
                "shared",
                "--desired",
                csv.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..2500))).await;
        let _ = child.kill();
        let _ = child.wait();
        let out = Command::new(crate::bin())
            .args([
                "apply",
                p.to_str().unwrap(),
                "--source",
                "shared",
                "--desired",
                csv.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "trial {trial}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let truth = emu.google_truth();
        for i in 0..150 {
            let name = format!("New {trial}-{i}");
            let n = truth
                .contacts
                .iter()
                .filter(|c| c.display_name.as_deref() == Some(name.as_str()))
                .count();
            assert_eq!(
                n,
                1,
                "trial {trial}: {name} landed {n} times (killed after {:?})",
                t.elapsed()
            );
        }
        assert_lake_matches(&p, &emu).await;
    }
}

/// Mirror mode cannot surprise: an empty desired state is refused outright, more than 10 %
/// of deletes are refused without `--max-delete`, and typos (an unknown column, rows of
/// another source with or without their `source` column, ids of no contact, a value of
/// another type) are errors (exit 2) before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_refuses_empty_or_mistaken_desired_states() {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 60,
        aurinko_accounts: 1,
        aurinko_contacts: 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into()],
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let (cases, empty) = mistaken_desired_states(dir.path());
    emu.reset_stats();
    for (desired, mode, want) in cases {
        let err = opts(&pipeline, "shared", &desired, mode)
            .await
            .map(|r| r.summary())
            .expect_err(&desired);
        assert!(err.to_string().contains(want), "{desired}: {err}");
        assert_eq!(err.exit_code(), 2, "{desired}: {err}");
    }
    assert!(
        !emu.stats().contains_key("google.batch"),
        "nothing may be written: {:?}",
        emu.stats()
    );
    assert_eq!(emu.google_truth().contacts.len(), 60);
    // 10 % of 60 may go without --max-delete.
    let report = opts(
        &pipeline,
        "shared",
        "SELECT account, id, etag FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 54",
        Mode::Mirror,
    )
    .await
    .unwrap();
    assert_eq!(report.plan.count(contacts_etl::plan::OpKind::Delete), 6);
    assert_eq!(emu.google_truth().contacts.len(), 54);
    // The command line says exit 2 for an empty mirror file.
    let out = Command::new(crate::bin())
        .args([
            "apply",
            p.to_str().unwrap(),
            "--source",
            "shared",
            "--mode",
            "mirror",
            "--desired",
        ])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(emu.google_truth().contacts.len(), 54);
}

/// Desired states a mirror or update must refuse, each with its mode and the words of its
/// refusal: empty ones (a file, a header, a query), a typo, rows of another source, ids
/// of no contact, values of the wrong type, too many deletes. Also the empty file's path.
fn mistaken_desired_states(
    dir: &std::path::Path,
) -> (Vec<(String, Mode, &'static str)>, std::path::PathBuf) {
    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let header_only = dir.join("header.csv");
    std::fs::write(&header_only, "account,id,notes\n").unwrap();
    let typo = dir.join("typo.csv");
    std::fs::write(&typo, "id,fileas\nx,Doe\n").unwrap();
    let nowhere = dir.join("nowhere.csv");
    std::fs::write(&nowhere, "id,notes\nno-such-1,x\nno-such-2,y\n").unwrap();
    let cases = vec![
        (empty.to_str().unwrap().to_string(), Mode::Mirror, "empty"),
        (
            header_only.to_str().unwrap().to_string(),
            Mode::Mirror,
            "empty",
        ),
        (
            "SELECT account, id, etag FROM contacts WHERE false".to_string(),
            Mode::Mirror,
            "empty",
        ),
        (
            typo.to_str().unwrap().to_string(),
            Mode::Update,
            "unknown column(s) fileas",
        ),
        (
            "SELECT source, account, id, etag, notes FROM contacts".to_string(),
            Mode::Update,
            "of source \"crm\"",
        ),
        // Without the source column, the rows of another source are found by their ids.
        (
            "SELECT account, id, etag, notes FROM contacts".to_string(),
            Mode::Update,
            "WHERE source = 'shared'",
        ),
        (
            "SELECT id, etag, notes FROM contacts".to_string(),
            Mode::Update,
            "20 of source \"crm\"",
        ),
        (
            "SELECT account, id, etag, notes FROM contacts WHERE source = 'crm'".to_string(),
            Mode::Update,
            "contacts of other sources: 20 of source \"crm\"",
        ),
        (
            nowhere.to_str().unwrap().to_string(),
            Mode::Update,
            "none of the desired state's 2 row(s) with an id",
        ),
        // A value of another type is refused, never converted.
        (
            "SELECT account, id, etag, 42 AS given_name FROM contacts WHERE source = 'shared'"
                .to_string(),
            Mode::Update,
            "`given_name` (row 1): found a whole number (e.g. 42), wanted text. CAST it if you mean it",
        ),
        (
            "SELECT account, id, etag, true AS family_name FROM contacts WHERE source = 'shared'"
                .to_string(),
            Mode::Update,
            "`family_name` (row 1): found true/false (e.g. true), wanted text",
        ),
        (
            "SELECT account, id, etag FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 50"
                .to_string(),
            Mode::Mirror,
            "more than --max-delete allows",
        ),
    ];
    (cases, empty)
}

/// A synced domain of 3,000 Google contacts and a running `apply` (30 batches) that
/// prefixes every note with `[tag]`, its stdout sent to `stdout`.
async fn big_apply(tag: &str, stdout: Stdio) -> (Emulator, tempfile::TempDir, std::process::Child) {
    let emu = Emulator::start(google_only(3000)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 1000,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let desired = format!(
        "SELECT account, id, etag, concat('[{tag}] ', coalesce(substr(notes, 1, 30), '')) AS notes FROM contacts WHERE source = 'shared'"
    );
    emu.reset_stats();
    let child = Command::new(crate::bin())
        .args([
            "apply",
            p.to_str().unwrap(),
            "--source",
            "shared",
            "--mode",
            "update",
            "--desired",
        ])
        .arg(&desired)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (emu, dir, child)
}

/// An apply stopped halfway leaves the trail of what it did: results are committed to
/// `writeback_results` group by group, so the writes done before a kill -9 are recorded,
/// each matching what the API now holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_killed_halfway_leaves_its_audit_trail() {
    let (emu, dir, mut child) = big_apply("trail", Stdio::null()).await;
    let p = dir.path().join("pipeline.toml");
    // Past the first group of 1,000 (ten batches) and its commit, before the last.
    let t = Instant::now();
    while emu.stats().get("google.batch").copied().unwrap_or(0) < 13 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the apply did not get going"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the apply ended too early"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let sent = emu.stats()["google.batch"];
    assert!(
        sent < 30,
        "the apply finished before the kill ({sent} batches)"
    );
    let pipeline = Pipeline::load(&p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let rows = contacts_etl::sql::query(
        &lake,
        "SELECT id, result FROM writeback_results WHERE op = 'update'",
    )
    .await
    .unwrap();
    let truth = emu.google_truth();
    let (mut recorded, mut in_flight) = (0, 0);
    for b in &rows {
        use arrow::array::AsArray;
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let res = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        for (id, r) in ids
            .as_string::<i32>()
            .iter()
            .zip(res.as_string::<i32>().iter())
        {
            let (id, r) = (id.unwrap(), r.unwrap());
            // The group in flight at the kill is on record as sent (the next apply
            // resolves it against the API); every other row is a result.
            if r == contacts_etl::plan::apply::SENT {
                in_flight += 1;
                continue;
            }
            assert_eq!(r, "ok", "{id}");
            let c = truth.contacts.iter().find(|c| c.id == id).unwrap();
            assert!(
                c.notes
                    .as_deref()
                    .is_some_and(|n| n.starts_with("[trail] ")),
                "{id} is recorded as updated but the API does not hold the update"
            );
            recorded += 1;
        }
    }
    assert!(
        recorded >= 1000,
        "{recorded} result rows after {sent} batches"
    );
    assert!(in_flight <= 1000, "{in_flight} rows of one group in flight");
}

/// `apply` shows its plan before it writes: the plan reaches stdout while the batches are
/// still to come (before, it was printed after the last one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_prints_its_plan_before_it_writes() {
    use std::io::BufRead;
    let (emu, _dir, mut child) = big_apply("early", Stdio::piped()).await;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let batches = emu.stats().get("google.batch").copied().unwrap_or(0);
    assert!(
        first.starts_with("plan for source shared: 0 insert(s), 3000 update(s)"),
        "{first}"
    );
    assert!(batches < 30, "the plan came after all {batches} batches");
    for _ in lines {}
    assert!(child.wait().unwrap().success());
    assert_eq!(emu.stats()["google.batch"], 30);
}

/// A website and a note holding CR/LF, quotes and markup, written back to the Google
/// emulator, land as exactly those values and add no element: every contact keeps the
/// e-mail addresses it had, and no address the payload names appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_with_line_breaks_and_markup_land_as_themselves_and_add_nothing() {
    let emu = Emulator::start(google_only(5)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let before: std::collections::BTreeMap<String, Vec<Option<String>>> = emu
        .google_truth()
        .contacts
        .into_iter()
        .map(|c| (c.id, c.emails.into_iter().map(|e| e.address).collect()))
        .collect();
    let href = "https://x.example/a\r\nEMAIL:injected@evil.example\r\nX-CONTACTS-ETL-KEY:forged\"/><gd:email address=\"injected@evil.example\"/>'<x y='";
    let note = "line one\r\nEND:VCARD\r\n</content><gd:email address=\"injected@evil.example\"/>\ttabbed & done";
    let sql = |s: &str| {
        s.replace('\'', "''")
            .replace('\r', "', chr(13), '")
            .replace('\n', "', chr(10), '")
            .replace('\t', "', chr(9), '")
    };
    let desired = format!(
        "SELECT account, id, etag, [named_struct('href', concat('{}'), 'type', 'home', 'label', CAST(NULL AS VARCHAR), 'primary', CAST(NULL AS BOOLEAN))] AS websites, concat('{}') AS notes FROM contacts WHERE source = 'shared'",
        sql(href),
        sql(note)
    );
    let report = opts(&pipeline, "shared", &desired, Mode::Update)
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.results.len(), 5, "{}", report.summary());
    let truth = emu.google_truth();
    assert_eq!(truth.contacts.len(), 5);
    for c in &truth.contacts {
        let emails: Vec<Option<String>> = c.emails.iter().map(|e| e.address.clone()).collect();
        assert_eq!(Some(&emails), before.get(&c.id), "{}", c.id);
        assert_eq!(c.websites.len(), 1, "{}: {:?}", c.id, c.websites);
        assert_eq!(c.websites[0].href.as_deref(), Some(href), "{}", c.id);
        assert_eq!(c.notes.as_deref(), Some(note), "{}", c.id);
    }
    assert_eq!(
        emu.google_count_elements("http://schemas.google.com/g/2005", "email"),
        before.values().filter(|v| !v.is_empty()).count()
    );
}

/// A domain whose contacts sit a few units under Google's 2 KB, as the server counts it
/// (which the client can only estimate): note edits that keep each contact's size (the
/// last 4 characters swapped for 4 others) all apply, the plan only warns with its
/// estimate, and an edit the server does count as too big lands `invalid` with the
/// server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_neutral_edits_near_2kb_all_apply_and_the_api_decides_the_size() {
    let emu = Emulator::start(EmulatorConfig {
        google_near_limit: true,
        ..google_only(40)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let domain = emu.config().google_domain.clone();
    let landed = lake.contacts_of("shared", &domain).await.unwrap();
    let estimated_over = landed
        .iter()
        .filter(|c| {
            contacts_etl::providers::google::writeback::data_bytes(c)
                > contacts_etl::providers::google::rules::MAX_CONTACT_BYTES
        })
        .count();
    assert!(
        estimated_over > 20,
        "the local estimate puts most contacts over 2 KB ({estimated_over} of 40)"
    );
    let desired = "SELECT account, id, etag, concat(substr(notes, 1, char_length(notes) - 4), '李李李李') AS notes FROM contacts WHERE source = 'shared'";
    let report = opts(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert!(report.plan.invalid.is_empty(), "{}", report.plan.render(5));
    assert_eq!(report.plan.ops.len(), 40);
    assert!(
        report
            .plan
            .warnings
            .iter()
            .any(|w| w.reason.contains("estimate") && w.reason.contains("2048")),
        "{}",
        report.plan.render(5)
    );
    assert!(report.plan.render(5).contains("WARNING"));
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(
        report
            .results
            .iter()
            .filter(|r| r.outcome.as_str() == "ok")
            .count(),
        40
    );
    assert!(
        emu.google_truth()
            .contacts
            .iter()
            .all(|c| c.notes.as_deref().is_some_and(|n| n.ends_with("李李李李")))
    );
    // 100 more characters are over the server's count: its 400 lands as `invalid`, with
    // its reason, in the report and in writeback_results.
    let desired = "SELECT account, id, etag, concat(notes, repeat('+', 100)) AS notes FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 3";
    let report = opts(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert!(report.plan.invalid.is_empty(), "{}", report.plan.render(5));
    assert_eq!(report.results.len(), 3);
    for r in &report.results {
        assert_eq!(r.outcome.as_str(), "invalid", "{}", report.summary());
        assert_eq!(r.http_status, Some(400));
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|m| m.contains("Contact data")),
            "{r:?}"
        );
    }
    assert!(
        report.summary().contains("Contact data"),
        "{}",
        report.summary()
    );
    let rows = contacts_etl::sql::query(
        &lake,
        &format!(
            "SELECT reason FROM writeback_results WHERE apply_id = '{}' AND result = 'invalid'",
            report.apply_id
        ),
    )
    .await
    .unwrap();
    let reasons: Vec<String> = rows
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            arrow::array::AsArray::as_string::<i32>(&c)
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("Contact data")),
        "{reasons:?}"
    );
}

/// A desired row whose etag is not the landed one is a `conflict`, whatever a local rule
/// would say of it: with a value the size estimate puts over 2 KB, and with an e-mail
/// that has both a type and a label. Neither is `invalid`; the other writer's version
/// stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_row_is_a_conflict_not_invalid() {
    let emu = Emulator::start(google_only(10)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let desired = "SELECT account, id, '\"stale.\"' AS etag, repeat('x', 3000) AS notes, \
        [named_struct('address', 'a@b.example', 'type', 'work', 'label', 'both', 'primary', true, 'display_name', CAST(NULL AS VARCHAR))] AS emails \
        FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 2";
    let pl = plan(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert!(pl.invalid.is_empty(), "{}", pl.render(5));
    assert_eq!(pl.ops.len(), 2);
    assert!(
        pl.warnings.iter().all(|w| w.reason.contains("412")) && pl.warnings.len() == 2,
        "{}",
        pl.render(5)
    );
    let before = emu.google_truth().contacts;
    let report = opts(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert!(report.plan.invalid.is_empty(), "{}", report.summary());
    assert_eq!(report.results.len(), 2);
    for r in &report.results {
        assert_eq!(r.outcome.as_str(), "conflict", "{}", report.summary());
        assert_eq!(r.http_status, Some(412));
    }
    let after = emu.google_truth().contacts;
    assert_eq!(
        before.iter().map(|c| &c.notes).collect::<Vec<_>>(),
        after.iter().map(|c| &c.notes).collect::<Vec<_>>()
    );
}

/// In SQL a list item names some of its struct's fields, in any order (the rest null);
/// a value of another kind is refused by the command line with exit 2, in words. (What
/// `query --output` writes reading back as the desired state is the conformance suite's
/// `query_output_round_trips`, for every provider.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn struct_items_may_name_some_fields_and_wrong_types_are_refused_in_words() {
    let emu = Emulator::start(google_only(60)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    // In SQL a list item names some of its fields, in any order; the rest are null.
    let pl = plan(
        &pipeline,
        "shared",
        "SELECT account, id, etag, [named_struct('type', 'work', 'address', concat(id, '@subset.example'))] AS emails FROM contacts WHERE source = 'shared'",
        Mode::Update,
    )
    .await
    .unwrap();
    assert!(pl.invalid.is_empty(), "{}", pl.render(3));
    assert_eq!(pl.ops.len(), 60);
    let Some(contacts_etl::plan::Action::Update { desired, .. }) =
        pl.ops.first().map(|o| &o.action)
    else {
        panic!("updates planned")
    };
    assert_eq!(desired.emails.len(), 1);
    assert_eq!(desired.emails[0].kind.as_deref(), Some("work"));
    assert!(desired.emails[0].label.is_none() && desired.emails[0].primary.is_none());
    // The command line refuses a value of another type with exit 2, naming it in words.
    let out = Command::new(crate::bin())
        .args(["plan", p.to_str().unwrap(), "--source", "shared", "--desired"])
        .arg("SELECT account, id, etag, 'x@y.example' AS emails FROM contacts WHERE source = 'shared'")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("wanted a list of {address, type, label, primary, display_name}")
            && err.contains("CAST it if you mean it")
            && !err.contains("metadata"),
        "{err}"
    );
}
