//! An apply stopped by SIGINT or SIGTERM while it writes (issue #32, "every write on
//! record"): the group of writes in flight is answered and recorded before the process
//! exits, no further group is sent, and `writeback_results` holds exactly one row per
//! operation the API applied, counted in the emulator's own data.

use std::time::Duration;

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, FaultSpec};

use crate::{PipelineSpec, google_only, write_pipeline};

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
}
