//! The operator's experience at the command line (issue #22): names that exist nowhere are
//! loud, output to a closed pipe ends quietly, `--output` means what its extension says.
//! The real binary against an emulator over loopback.

use std::path::Path;
use std::process::{Command, Output};

use contacts_etl::emulator::{Emulator, EmulatorConfig};

use crate::{PipelineSpec, assert_ok, sync, write_pipeline};

fn run(args: &[&str]) -> Output {
    Command::new(crate::bin()).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a usage error: exit 2, and a message holding every one of `says`.
fn assert_usage_error(o: &Output, says: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2:\n{err}");
    for s in says {
        assert!(err.contains(s), "the message lacks {s:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// The count of contacts a query sees (CSV output, one value).
fn count(args: &[&str]) -> i64 {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// A lake with two sync runs: 40 Google contacts (example.com) and Aurinko 101 and 102,
/// then 7 Google inserts.
async fn two_runs(dir: &Path) -> (Emulator, String, [String; 2]) {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 40,
        aurinko_accounts: 2,
        aurinko_contacts: 10,
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
    let r1 = sync(&p, false).await;
    assert_ok(&r1);
    emu.mutate_google(7, 0, 0);
    let r2 = sync(&p, false).await;
    assert_ok(&r2);
    (
        emu,
        p.to_str().unwrap().to_string(),
        [r1.run_id.clone(), r2.run_id.clone()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_accounts_sources_and_runs_are_usage_errors_that_name_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p, [run1, run2]) = two_runs(dir.path()).await;
    let p = p.as_str();

    // sync: an account or source the pipeline does not have.
    let o = run(&["sync", p, "--account", "999"]);
    assert_usage_error(&o, &["\"999\"", "example.com", "101", "102"]);
    let o = run(&["sync", p, "--source", "crm", "--account", "example.com"]);
    assert_usage_error(&o, &["\"example.com\"", "crm: 101, 102"]);
    let o = run(&["sync", p, "--source", "nope"]);
    assert_usage_error(&o, &["nope", "shared", "crm"]);
    // A known one syncs.
    let o = run(&["sync", p, "--source", "crm", "--account", "102"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // query: as of a run, whole id or unique prefix; 40 contacts + 20 after run 1.
    let sql = "SELECT count(*) FROM contacts";
    let csv = ["--format", "csv"];
    assert_eq!(
        count(&[&["query", p, sql, "--as-of-run", &run1][..], &csv].concat()),
        60
    );
    assert_eq!(
        count(&[&["query", p, sql, "--as-of-run", &run2][..], &csv].concat()),
        67
    );
    let unique = &run1[..run1.len() - 2];
    assert_eq!(
        count(&[&["query", p, sql, "--as-of-run", unique][..], &csv].concat()),
        60
    );
    let at_run1 = format!("SELECT count(*) FROM \"contacts@{run1}\"");
    assert_eq!(count(&[&["query", p, &at_run1][..], &csv].concat()), 60);

    // No such run: a word, and an id one character off (it sorts between real runs).
    let o = run(&["query", p, sql, "--as-of-run", "nope"]);
    assert_usage_error(&o, &["no run \"nope\"", &run2]);
    let o = run(&[
        "query",
        p,
        "SELECT count(*) FROM \"contacts@nope\"",
        "--format",
        "csv",
    ]);
    assert_usage_error(&o, &["\"contacts@nope\"", "no run \"nope\"", &run1]);
    let mut off = run1.clone();
    let last = off.pop().unwrap();
    off.push(if last == '0' { '1' } else { '0' });
    let o = run(&["query", p, sql, "--as-of-run", &off]);
    assert_usage_error(&o, &[&format!("no run \"{off}\"")]);
    // A prefix of several runs: the runs, not one of them.
    let common: String = run1
        .chars()
        .zip(run2.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    assert!(!common.is_empty());
    let o = run(&["query", p, sql, "--as-of-run", &common]);
    assert_usage_error(&o, &["runs' ids", &run1, &run2, "whole run id"]);
    let o = run(&[
        "query",
        p,
        &format!("SELECT count(*) FROM \"contacts@{common}\""),
    ]);
    assert_usage_error(&o, &["runs' ids", &run1]);
}
