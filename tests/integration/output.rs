//! What the operator reads (issue #22): JSON logs that are JSON only, each event of a run
//! with its id and one summary at the end; text logs without colour when redirected and
//! without a line per account; spinners and bars on a terminal; `status` in 100 columns
//! and as JSON; the demo's steps. The real binary against an emulator over loopback.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::lake::TableKind;

use crate::{PipelineSpec, write_pipeline};

fn run(args: &[&str]) -> Output {
    Command::new(crate::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A pipeline over Google (example.com, 30) and Aurinko 101 and 102 (20 each), whose
/// account 102 has a wrong token: one account fails on every sync.
async fn with_a_failing_account(dir: &Path) -> (Emulator, std::path::PathBuf) {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 30,
        aurinko_accounts: 2,
        aurinko_contacts: 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = write_pipeline(
        dir,
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into(), "102".into()],
            bad_token_for: Some("102"),
            ..Default::default()
        },
    );
    (emu, p)
}

/// A run's id on a JSON log line: a field of the event or of the span it happened in.
fn run_id_of(line: &serde_json::Value) -> Option<&str> {
    line["fields"]["run_id"]
        .as_str()
        .or_else(|| line["span"]["run_id"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_lines_each_with_the_run_id_and_one_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p) = with_a_failing_account(dir.path()).await;
    let ps = p.to_str().unwrap();
    let o = run(&["sync", ps, "--log-format", "json"]);
    assert_eq!(o.status.code(), Some(1), "an account failed");
    let err = String::from_utf8(o.stderr).unwrap();
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{err}"))
        })
        .collect();
    assert!(lines.len() >= 3, "{err}");
    // The run's id, from the lake.
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let runs = lake.read_all(TableKind::SyncRuns, None).await.unwrap();
    let runs = contacts_etl::arrow_util::concat(&runs[0].schema(), &runs).unwrap();
    let ids = arrow::compute::cast(runs.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    let run_id = arrow::array::AsArray::as_string::<i32>(&ids)
        .value(0)
        .to_string();
    for l in &lines {
        assert_eq!(
            run_id_of(l),
            Some(run_id.as_str()),
            "an event without the run id: {l}"
        );
    }
    // Each account's result is an event; the failure is one too.
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "account failed")
        .collect();
    assert_eq!(failed.len(), 1, "{err}");
    assert_eq!(failed[0]["fields"]["account"], "102");
    // One summary event, with counts per account and totals that add up.
    let summaries: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "sync finished")
        .collect();
    assert_eq!(summaries.len(), 1, "{err}");
    let s = &summaries[0]["fields"];
    let accounts = s["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    let up: i64 = accounts
        .iter()
        .map(|a| a["upserted"].as_i64().unwrap())
        .sum();
    assert_eq!(up, 30 + 20);
    assert_eq!(s["totals"]["upserted"].as_i64(), Some(up));
    assert_eq!(s["totals"]["failed"].as_i64(), Some(1));
    assert_eq!(s["totals"]["accounts"].as_i64(), Some(3));
    let bad = accounts.iter().find(|a| a["account"] == "102").unwrap();
    assert_eq!(bad["status"], "failed");
    assert!(bad["error"].as_str().unwrap().contains("401"), "{bad}");
    assert_eq!(summaries[0]["level"], "ERROR");

    // An error that ends a command is a JSON event too.
    let o = run(&[
        "state",
        "show",
        ps,
        "--source",
        "nope",
        "--log-format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 1, "{err}");
    assert_eq!(events[0]["level"], "ERROR");
    assert!(
        events[0]["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("\"nope\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_off_a_terminal_have_no_colour_and_leave_accounts_to_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p) = with_a_failing_account(dir.path()).await;
    let ps = p.to_str().unwrap();
    let o = run(&["sync", ps]);
    let err = String::from_utf8(o.stderr).unwrap();
    let table = String::from_utf8(o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in redirected stderr:\n{err:?}"
    );
    assert!(
        !err.contains("account synced"),
        "a line per account:\n{err}"
    );
    // The run's report is its output, on stdout; stderr keeps diagnostics.
    assert!(table.contains("1 of 3 account(s) FAILED"), "{table}");
    assert!(!err.contains("FAILED"), "{err}");
    // The failure is said once, on stderr, naming its account once.
    assert!(!err.contains("account failed"), "said twice:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("102")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("401"),
        "{err}"
    );
    assert_eq!(lines[0].matches("102").count(), 1, "{err}");
    // Asked for, the lines per account are there, still without colour.
    let o = run(&["sync", ps, "--log-level", "debug"]);
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert_eq!(err.matches("account synced").count(), 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_sync_draws_counts_and_bars_then_only_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 3000,
        aurinko_accounts: 1,
        aurinko_contacts: 3000,
        aurinko_page_size: 50,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into()],
            page_size: 100,
            ..Default::default()
        },
    );
    let screen = sync_on_a_terminal(&p);
    // Aurinko announces no total: a count and a rate, never `N/0`.
    assert!(!screen.contains("/0 contacts"), "{screen}");
    let counts = regex_free_find(&screen, "crm/101 ", " contacts ");
    assert!(counts, "no count for crm/101:\n{screen}");
    // Google does: a bar out of its total.
    assert!(screen.contains("/3000 contacts"), "{screen}");
    assert!(screen.contains("/s"), "no rate:\n{screen}");
    // Then the table, and no line per account.
    assert!(screen.contains("all 2 account(s) synced"), "{screen}");
    assert!(!screen.contains("account synced"), "{screen}");

    // A warning in the middle of a run is written with the bars cleared, so it is whole
    // and no bar is left half-drawn before it: what precedes it ends a clearing sequence
    // (or a line), never a bar's text.
    emu.expire_aurinko_tokens();
    let screen = sync_on_a_terminal(&p);
    let warns: Vec<usize> = screen.match_indices(" WARN").map(|(i, _)| i).collect();
    assert!(!warns.is_empty(), "no warning to look at:\n{screen}");
    for w in warns {
        // The line starts at its (dimmed) timestamp.
        let start = screen[..w].rfind("\u{1b}[2m").expect("a timestamp");
        let before = &screen[..start];
        assert!(
            before.ends_with('K') || before.ends_with('A') || before.ends_with('\n'),
            "a log line written over the bars: {:?}",
            &before[before.len().saturating_sub(120)..]
        );
    }
    assert!(screen.contains("resync"), "{screen}");
}

/// Runs `sync` on a terminal of 120 columns (util-linux `script` makes one) and returns
/// what it drew.
fn sync_on_a_terminal(p: &Path) -> String {
    let line = format!("stty cols 120; '{}' sync '{}'", crate::bin(), p.display());
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script");
    let screen = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{screen}");
    screen
}

/// Whether some `start … end` stretch of `text` (on one line) has only digits between.
fn regex_free_find(text: &str, start: &str, end: &str) -> bool {
    text.match_indices(start).any(|(i, _)| {
        let rest = &text[i + start.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        !digits.is_empty() && rest[digits.len()..].starts_with(end)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fits_100_columns_in_human_units_and_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p) = with_a_failing_account(dir.path()).await;
    let ps = p.to_str().unwrap();
    for _ in 0..2 {
        assert_eq!(run(&["sync", ps]).status.code(), Some(1));
    }
    let o = run(&["status", ps]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success(), "{table}");
    for l in table.lines() {
        assert!(
            l.chars().count() <= 100,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    assert!(
        table.contains("s ago") || table.contains("m ago"),
        "{table}"
    );
    assert!(
        table.contains("crm/102") && table.contains("never"),
        "{table}"
    );
    assert!(table.contains(" KB"), "sizes in units:\n{table}");

    let o = run(&["status", ps, "--format", "json"]);
    assert!(o.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let (s, a) = (
            r["source"].as_str().unwrap(),
            r["account"].as_str().unwrap(),
        );
        let held = lake.contacts_of(s, a).await.unwrap().len() as i64;
        assert_eq!(r["held"].as_i64(), Some(held), "{r}");
        for t in ["last_success", "last_failure"] {
            if let Some(t) = r[t].as_str() {
                // Second precision, UTC: 2026-12-01T23:10:05Z.
                assert_eq!(t.len(), 20, "{t}");
                assert!(t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok());
            }
        }
    }
    let bad = rows.iter().find(|r| r["account"] == "102").unwrap();
    assert_eq!(bad["failures_since"].as_i64(), Some(2));
    assert_eq!(bad["held"].as_i64(), Some(0));
    assert!(bad["last_success"].is_null());
    // The whole error, as sync_runs holds it; the table holds its start.
    let errors = lake
        .read_all(TableKind::SyncRuns, Some("account = '102'"))
        .await
        .unwrap();
    let e = errors[0].column_by_name("error").unwrap();
    let e = arrow::compute::cast(e, &arrow::datatypes::DataType::Utf8).unwrap();
    let whole = arrow::array::AsArray::as_string::<i32>(&e)
        .value(0)
        .to_string();
    assert_eq!(bad["last_error"].as_str(), Some(whole.as_str()));
    // The table's line shows what happened first (the 401), where after it.
    let line = table
        .lines()
        .find(|l| l.starts_with("  crm/102 at "))
        .unwrap_or_else(|| panic!("no failure line:\n{table}"));
    let what = line.split_once(": ").unwrap().1;
    assert!(what.contains("401"), "{line}");
    let shown: String = contacts_etl::human::cause_first(&whole)
        .chars()
        .take(30)
        .collect();
    assert!(what.starts_with(&shown), "{line}\n{whole}");
    let good = rows.iter().find(|r| r["account"] == "101").unwrap();
    assert_eq!(
        (good["runs"].as_i64(), good["last_mode"].as_str()),
        (Some(2), Some("incremental"))
    );
    assert!(good["cursor_age_s"].as_i64().unwrap() < 600);
}

#[test]
fn the_demo_numbers_each_step_once_and_ends_quietly_into_head() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    let o = run(&["demo", "--dir", d.to_str().unwrap(), "--contacts", "90"]);
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success(), "{stdout}");
    let steps: Vec<u32> = stdout
        .lines()
        .filter_map(|l| l.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert_eq!(steps, (1..=10).collect::<Vec<_>>(), "{stdout}");
    // A reader that stops early: no panic, a quiet end.
    let script = format!(
        "set -o pipefail; '{}' demo --dir '{}' --contacts 90 | head -2",
        crate::bin(),
        d.display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
}

/// With `--log-format json`, a command line clap refuses is a JSON line too (exit 2),
/// wherever the flag stands; `--help` still prints its text on stdout.
#[test]
fn json_logs_hold_argument_errors_too() {
    for args in [
        vec!["--log-format", "json", "sync", "p.toml", "--shard", "5"],
        vec!["sync", "p.toml", "--log-format=json", "--no-such-flag"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        let line: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
        assert_eq!(line["level"], "ERROR");
        assert!(
            line["fields"]["error"].as_str().unwrap().contains("error:"),
            "{line}"
        );
    }
    let o = run(&["--log-format", "json", "sync", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
}

/// Runs the binary on a terminal of 120 columns with `env` set, and returns the screen.
fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let quoted: Vec<String> = std::iter::once(crate::bin())
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let line = format!("stty cols 120; {}", quoted.join(" "));
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// Whether `text` holds a colour (SGR) sequence: ESC `[`, digits and `;`, then `m`.
/// The bars' own sequences (cursor moves, line clears) end in other letters.
fn has_colour(text: &str) -> bool {
    text.match_indices("\u{1b}[").any(|(i, _)| {
        let rest = &text[i + 2..];
        let params: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .collect();
        rest[params.len()..].starts_with('m')
    })
}

/// Every rate on the screen (`…/s`) is a whole number with separators: `2,487/s`.
fn rates_are_whole(screen: &str) -> bool {
    screen.match_indices("/s").all(|(i, _)| {
        let before: String = screen[..i]
            .chars()
            .rev()
            .take_while(|c| !c.is_whitespace() && *c != '(')
            .collect();
        before.chars().all(|c| c.is_ascii_digit() || c == ',')
    })
}

/// NO_COLOR (any non-empty value, https://no-color.org) turns colour off on a terminal;
/// an empty NO_COLOR does not. A warning on a terminal is the coloured line to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_color_turns_colour_off_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 50,
        aurinko_accounts: 1,
        aurinko_contacts: 50,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into()],
            ..Default::default()
        },
    );
    let ps = p.to_str().unwrap();
    crate::assert_ok(&crate::sync(&p, false).await);
    for (no_color, coloured) in [("1", false), ("", true)] {
        // An expired cursor is a warning: a log line on the terminal.
        emu.expire_aurinko_tokens();
        let (ok, screen) = on_a_terminal(&["sync", ps], &[("NO_COLOR", no_color)]);
        assert!(ok, "{screen}");
        assert!(screen.contains("WARN"), "no warning to look at:\n{screen}");
        assert_eq!(
            has_colour(&screen),
            coloured,
            "NO_COLOR={no_color:?}:\n{screen:?}"
        );
    }
}

/// An emulator of 2,000 Google contacts and a pipeline reading it in pages of 100 (so a
/// sync draws progress for a while), with `extra_google` in its source.
async fn two_thousand_contacts(
    dir: &Path,
    extra_google: &'static str,
) -> (Emulator, std::path::PathBuf) {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 2000,
        aurinko_accounts: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = write_pipeline(
        dir,
        &emu,
        &PipelineSpec {
            page_size: 100,
            extra_google,
            ..Default::default()
        },
    );
    (emu, p)
}

/// Runs `args` through pipes: it succeeds and draws no progress on stderr.
fn draws_nothing_through_a_pipe(args: &[&str]) {
    let o = Command::new(crate::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains('\u{1b}') && !err.contains("contacts ") && !err.contains("writing"),
        "progress through a pipe:\n{err}"
    );
}

/// `apply` on a terminal draws its sync's progress before the plan (a large source is
/// not silent for the seconds its sync takes) and its write bar, every rate a whole
/// number; through a pipe it draws nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_draws_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p) = two_thousand_contacts(dir.path(), "").await;
    let ps = p.to_str().unwrap();
    let apply = |notes: &str| {
        vec![
            "apply".to_string(),
            ps.to_string(),
            "--source".into(),
            "shared".into(),
            "--mode".into(),
            "update".into(),
            "--desired".into(),
            format!("SELECT account, id, etag, '{notes}' AS notes FROM contacts"),
        ]
    };
    // The first apply's sync is a full extract of 2,000 contacts, 20 pages.
    let args = apply("first");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, screen) = on_a_terminal(&args, &[]);
    assert!(ok, "{screen}");
    let plan_at = screen.find("~ update").expect("the plan");
    assert!(
        screen[..plan_at].contains("/2000 contacts"),
        "no sync progress before the plan:\n{screen}"
    );
    assert!(screen.contains("writing"), "no write bar:\n{screen}");
    assert!(rates_are_whole(&screen), "{screen}");

    let args = apply("second");
    draws_nothing_through_a_pipe(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A photo apply, as a contact apply: its sync's bars and its write bar on a terminal,
/// nothing through a pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_apply_draws_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p) = two_thousand_contacts(dir.path(), "photos = true\n").await;
    let folder = dir.path().join("headshots");
    std::fs::create_dir_all(&folder).unwrap();
    let ids: Vec<String> = emu
        .google_truth()
        .contacts
        .into_iter()
        .map(|c| c.id)
        .collect();
    let write_photos = |tag: &str| {
        for id in ids.iter().take(30) {
            std::fs::write(
                folder.join(format!("{id}.png")),
                [&b"\x89PNG\r\n\x1a\n"[..], tag.as_bytes()].concat(),
            )
            .unwrap();
        }
    };
    let (ps, fs) = (p.to_str().unwrap(), folder.to_str().unwrap());
    let args = ["apply", ps, "--source", "shared", "--photos", fs];
    write_photos("first");
    let (ok, screen) = on_a_terminal(&args, &[]);
    assert!(ok, "{screen}");
    assert!(
        screen.contains("/2000 contacts"),
        "no sync progress:\n{screen}"
    );
    assert!(screen.contains("writing"), "no write bar:\n{screen}");

    write_photos("second");
    draws_nothing_through_a_pipe(&args);
}
