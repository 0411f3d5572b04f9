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

/// `query … | head -2` and `plan … | head` end without a panic: exit 0 (or 141, the
/// shell's number for SIGPIPE), nothing on stderr but what the command says anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_ends_the_command_quietly() {
    let emu = Emulator::start(crate::google_only(300)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let p = p.to_str().unwrap();
    let bin = crate::bin();
    // The table of 300 contacts is far larger than a pipe's buffer, so the write after
    // head has gone fails; `head -n 0` reads nothing and is gone before the plan prints.
    for (name, cmd) in [
        (
            "query",
            format!("'{bin}' query '{p}' 'SELECT * FROM contacts' | head -2"),
        ),
        (
            "plan",
            format!(
                "'{bin}' plan '{p}' --source shared --desired \"SELECT account, id, etag, 'x' AS notes FROM contacts\" --sample 300 | head -n 0"
            ),
        ),
    ] {
        let script = format!("{cmd} >/dev/null 2>\"$ERR\"; echo \"status=${{PIPESTATUS[0]}}\"");
        let err_file = dir.path().join(format!("{name}.err"));
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("ERR", &err_file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        let err = std::fs::read_to_string(&err_file).unwrap_or_default();
        assert!(
            said.contains("status=0") || said.contains("status=141"),
            "{name}: {said}\n{err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{name}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_takes_its_format_from_the_extension_and_makes_its_folder() {
    let emu = Emulator::start(crate::google_only(25)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let p = p.to_str().unwrap();
    let sql = "SELECT id, display_name FROM contacts ORDER BY id";
    let out = dir.path().join("exports/2026/12");

    let parquet = out.join("c.parquet");
    let o = run(&["query", p, sql, "--output", parquet.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&parquet).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));

    let csv = out.join("c.csv");
    let o = run(&["query", p, sql, "--output", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("id,display_name\n"), "{text}");
    assert_eq!(text.lines().count(), 26);

    let json = out.join("c.json");
    let o = run(&["query", p, sql, "--output", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&json).unwrap();
    assert_eq!(text.lines().count(), 25);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v.get("id").is_some(), "{l}");
    }

    // An explicit --format that agrees is fine; one that contradicts is refused, and so is
    // an extension that names no format, before anything is written.
    let o = run(&[
        "query",
        p,
        sql,
        "--format",
        "csv",
        "--output",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = dir.path().join("x/x.parquet");
    let o = run(&[
        "query",
        p,
        sql,
        "--output",
        bad.to_str().unwrap(),
        "--format",
        "table",
    ]);
    assert_usage_error(&o, &["x.parquet", "--format is table"]);
    assert!(!bad.exists() && !dir.path().join("x").exists());
    let o = run(&[
        "query",
        p,
        sql,
        "--output",
        dir.path().join("x.dat").to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["x.dat", "--format"]);
}

/// The examples of a command's `--help`: each line that starts with `contacts-etl `, with
/// the lines a trailing `\` continues.
fn help_examples(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = help.lines();
    while let Some(l) = lines.next() {
        if !l.trim_start().starts_with("contacts-etl ") {
            continue;
        }
        let mut ex = l.trim_start().to_string();
        while ex.ends_with('\\') {
            ex.push('\n');
            ex.push_str(lines.next().unwrap_or_default());
        }
        out.push(ex);
    }
    out
}

/// The subcommands `contacts-etl --help` lists.
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A description that wraps continues on lines indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Kills the emulator a test started, also when the test fails.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every example of every `--help` runs as written: the emulator's from a folder laid out
/// like the repository, whose exports the others then use, as the README's tour does.
#[test]
fn every_help_example_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    std::fs::copy(
        root.join("pipelines/emulator.toml"),
        dir.path().join("pipelines/emulator.toml"),
    )
    .unwrap();
    let bin_dir = Path::new(crate::bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let commands = subcommands();
    assert!(commands.len() >= 8, "{commands:?}");
    let mut examples: Vec<(String, Vec<String>)> = Vec::new();
    for c in &commands {
        let o = run(&[c, "--help"]);
        let ex = help_examples(&String::from_utf8(o.stdout).unwrap());
        assert!(!ex.is_empty(), "`{c} --help` shows no example");
        examples.push((c.clone(), ex));
    }
    // The emulator's example first: it stays up for the rest.
    let emulator = examples.iter().position(|(c, _)| c == "emulator").unwrap();
    let (_, emu_examples) = examples.remove(emulator);
    assert_eq!(emu_examples.len(), 1, "{emu_examples:?}");
    let child = Command::new("bash")
        .args(["-c", &format!("exec {}", emu_examples[0])])
        .current_dir(dir.path())
        .env("PATH", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _emulator = Kill(child);
    let env_file = dir.path().join("emulator.env");
    let t = std::time::Instant::now();
    while std::fs::metadata(&env_file).map_or(true, |m| m.len() == 0) {
        assert!(
            t.elapsed().as_secs() < 30,
            "{}: no emulator.env",
            emu_examples[0]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let exports = std::fs::read_to_string(&env_file).unwrap();
    assert!(exports.contains("EMULATOR_URL="), "{exports}");
    for (c, exs) in &examples {
        for ex in exs {
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &format!(". ./emulator.env\n{ex}")])
                .current_dir(dir.path())
                .env("PATH", &path)
                .env_remove("EMULATOR_URL")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let said = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
            assert!(
                out.status.success() && !said.contains("FAILED") && !err.contains("panicked"),
                "`{c} --help` example failed ({:?}):\n{ex}\nstdout:\n{}\nstderr:\n{err}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // What the examples promise to leave behind.
    let parquet = std::fs::read(dir.path().join("contacts.parquet")).unwrap();
    assert!(parquet.starts_with(b"PAR1"));
    assert!(dir.path().join("contacts.v1.json").exists());
    assert!(dir.path().join("contacts-lake/writeback_results").is_dir());
}

/// Two syncs of one pipeline at once (issue #37, item 7): the second finds every account
/// leased by the first and leaves it at once, one line each, extracting nothing; the
/// first lands everything, gives its leases up, and the lake equals the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_of_the_same_accounts_skips_them_at_once() {
    use contacts_etl::emulator::FaultSpec;
    // Every request waits 1.5 s, so the first sync holds its accounts for several
    // seconds: 6 Google pages of 5 (4 at a time), 10 Aurinko pages of 3 per account.
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 30,
        aurinko_accounts: 2,
        aurinko_contacts: 30,
        aurinko_page_size: 3,
        faults: FaultSpec::parse("slow=1,slow_ms=1500").unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into(), "102".into()],
            page_size: 5,
            ..Default::default()
        },
    );
    let ps = p.to_str().unwrap();
    let mut first = Command::new(crate::bin())
        .args(["sync", ps])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let leases = [
        "lake/_leases/shared/example.com.json",
        "lake/_leases/crm/101.json",
        "lake/_leases/crm/102.json",
    ];
    let t0 = std::time::Instant::now();
    while !leases.iter().all(|l| dir.path().join(l).exists()) {
        assert!(t0.elapsed().as_secs() < 60, "the first sync took no lease");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = run(&["sync", ps]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&second.stdout),
        stderr(&second)
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the second sync waited for the first:\n{text}"
    );
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(text.contains("3 of 3 account(s) skipped"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    for name in ["shared/example.com", "crm/101", "crm/102"] {
        // Said once, naming the holder: no log line besides the table's, no name twice.
        assert_eq!(text.matches(name).count(), 1, "{name}:\n{text}");
        let line = text.lines().find(|l| l.contains(name)).unwrap();
        assert!(
            line.contains("another sync holds this account") && line.contains("pid "),
            "{line}"
        );
    }
    // Its table: each account skipped, with no page read and no request sent.
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.get(2) == Some(&"skipped"))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for w in rows {
        assert_eq!((w[5], w[6]), ("0", "0"), "pages and requests:\n{text}");
    }
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("lake/_leases/crm/101.json").exists(),
        "a finished sync left its lease"
    );
    crate::assert_lake_matches(&p, &emu).await;
}

/// `query` tables fit the width they are given (the terminal's, or COLUMNS): cells cut
/// with `…`, `--wide` for whole values; an empty result says `(0 rows)`; SHOW TABLES and
/// DESCRIBE list the tables and a table's columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tables_fit_and_say_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p, _) = two_runs(dir.path()).await;
    let query = |sql: &str, extra: &[&str], columns: Option<&str>| {
        let mut c = Command::new(crate::bin());
        c.args(["query", p.as_str(), sql]).args(extra);
        match columns {
            Some(n) => c.env("COLUMNS", n),
            None => c.env_remove("COLUMNS"),
        };
        let o = c.output().unwrap();
        assert!(o.status.success(), "{sql}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    // `raw` holds whole Atom entries, hundreds of characters each.
    let sql = "SELECT id, raw FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 3";
    let fitted = query(sql, &[], Some("80"));
    assert!(
        fitted.lines().all(|l| l.chars().count() == 80),
        "not 80 columns:\n{fitted}"
    );
    assert_eq!(fitted.lines().count(), 7, "{fitted}");
    assert!(fitted.contains("…"), "{fitted}");
    // Whole with --wide, and through a pipe without COLUMNS (a program reads it).
    for whole in [query(sql, &["--wide"], Some("80")), query(sql, &[], None)] {
        assert!(whole.contains("</entry>"), "{whole}");
        assert!(!whole.contains("…"), "{whole}");
    }
    let empty = query("SELECT id FROM contacts WHERE false", &[], Some("80"));
    assert_eq!(empty, "(0 rows)\n");
    let tables = query("SHOW TABLES", &[], Some("120"));
    for t in ["contacts", "contact_changes", "sync_runs", "contact_emails"] {
        assert!(tables.contains(&format!(" {t} ")), "{tables}");
    }
    let columns = query("DESCRIBE contacts", &[], Some("120"));
    for c in ["display_name", "emails", "_run_id"] {
        assert!(columns.contains(&format!("| {c} ")), "{columns}");
    }
    assert!(
        columns.lines().all(|l| l.chars().count() <= 120),
        "{columns}"
    );
}
