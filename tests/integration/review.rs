//! Plans people can review and applies that cannot surprise them (issue #22): values
//! before → after, names, a stable sample of every kind; `--account` scopes; saved plans
//! applied exactly or refused; `--detailed-exitcode`; deletes wait for a yes; JSON events;
//! exit codes that tell "rows failed" from "refused to start"; credentials checked before
//! the first request. The real binary against the emulators over loopback.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::plan::Mode;
use contacts_etl::plan::apply::Apply;

use crate::{PipelineSpec, assert_ok, sync, write_pipeline};

fn run(args: &[&str]) -> Output {
    Command::new(crate::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts an exit code; the message shows stdout and stderr.
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
}

/// The landed contacts of a source and account, sorted by id.
async fn landed(p: &Path, source: &str, account: &str) -> Vec<contacts_etl::schema::ContactRecord> {
    let pipeline = Pipeline::load(p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    lake.contacts_of(source, account).await.unwrap()
}

fn quoted(ids: &[&str]) -> String {
    ids.iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `plan` prints each changed field's value before → after, the names of inserted and
/// deleted contacts, and a sample of every kind (`--sample` of each, invalid rows too)
/// that is the same whatever order the desired rows come in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_show_values_names_and_a_stable_sample_of_every_kind() {
    let emu = Emulator::start(crate::google_only(40)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let contacts = landed(&p, "shared", "example.com").await;
    // Contacts with a short one-line name: three get new notes, two are left out (deleted).
    let plain: Vec<&contacts_etl::schema::ContactRecord> = contacts
        .iter()
        .filter(|c| {
            c.display_name
                .as_deref()
                .is_some_and(|n| n.chars().count() < 40 && !n.chars().any(char::is_control))
        })
        .collect();
    assert!(plain.len() >= 5, "{} plain names", plain.len());
    let updated: Vec<&str> = plain[..3].iter().map(|c| c.id.as_str()).collect();
    let deleted: Vec<&str> = plain[3..5].iter().map(|c| c.id.as_str()).collect();
    let desired = |order: &str| {
        format!(
            "SELECT * FROM (\
               SELECT account, id, etag, display_name, \
                 CASE WHEN id IN ({}) THEN concat('changed: ', coalesce(notes, '')) ELSE notes END AS notes \
               FROM contacts WHERE source = 'shared' AND id NOT IN ({}) \
               UNION ALL SELECT 'example.com', NULL, NULL, 'Zed New', 'hello' \
               UNION ALL SELECT 'example.com', NULL, NULL, 'Amy New', 'hi' \
               UNION ALL SELECT 'example.com', NULL, NULL, NULL, 'nameless one' \
               UNION ALL SELECT 'example.com', NULL, NULL, NULL, 'nameless two') ORDER BY {order}",
            quoted(&updated),
            quoted(&deleted)
        )
    };
    let p = p.to_str().unwrap();
    let plan = |order: &str, sample: &str| {
        let o = run(&[
            "plan",
            p,
            "--source",
            "shared",
            "--mode",
            "mirror",
            "--sample",
            sample,
            "--desired",
            &desired(order),
        ]);
        assert_exit(&o, 0);
        text(&o.stdout)
    };
    let shown = plan("id, notes", "2");
    assert!(
        shown.starts_with(
            "plan for source shared: 2 insert(s), 3 update(s), 2 delete(s), 35 unchanged, 2 invalid"
        ),
        "{shown}"
    );
    // The same text whatever the order of the desired rows (invalid rows are named by
    // their row number, which the order decides).
    let ops = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.contains("INVALID"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ops(&shown), ops(&plan("notes DESC, id DESC", "2")));
    assert_eq!(shown, plan("id, notes", "2"));
    assert_each_kind_shown(&shown, &contacts, &updated, &deleted);
    // --sample 1: one of each kind, one invalid row; 0: counts only.
    let one = plan("id", "1");
    assert_eq!(
        one.lines().filter(|l| l.contains("INVALID")).count(),
        1,
        "{one}"
    );
    assert!(one.contains("… and 1 more invalid row(s)"), "{one}");
    assert_eq!(
        one.lines().filter(|l| l.contains("- delete")).count(),
        1,
        "{one}"
    );
    let none = plan("id", "0");
    assert!(
        !none.contains("INVALID")
            && !none.contains("+ insert")
            && none.contains("… and 2 more delete(s)"),
        "{none}"
    );
}

/// The plan text shows each kind: two of each (updates cut at the sample), inserts by
/// name in order with their values, updates by id with each field before → after,
/// deletes by id and name, and why a row is invalid.
fn assert_each_kind_shown(
    shown: &str,
    contacts: &[contacts_etl::schema::ContactRecord],
    updated: &[&str],
    deleted: &[&str],
) {
    let lines = |what: &str| shown.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        (
            lines("+ insert"),
            lines("~ update"),
            lines("- delete"),
            lines("INVALID")
        ),
        (2, 2, 2, 2),
        "{shown}"
    );
    assert!(shown.contains("… and 1 more update(s)"), "{shown}");
    // Inserts by name, with their values; updates by id, each field before → after.
    let amy = shown
        .find("+ insert example.com/(new)  Amy New")
        .expect(shown);
    let zed = shown
        .find("+ insert example.com/(new)  Zed New")
        .expect(shown);
    assert!(amy < zed, "{shown}");
    assert!(shown.contains("      notes: \"hi\""), "{shown}");
    let mut sorted = updated.to_vec();
    sorted.sort();
    let first = contacts.iter().find(|c| c.id == sorted[0]).unwrap();
    let before = serde_json::to_string(&first.notes).unwrap();
    let after = serde_json::to_string(&format!(
        "changed: {}",
        first.notes.as_deref().unwrap_or("")
    ))
    .unwrap();
    let cut = |s: &str| contacts_etl::plan::review::truncate(s, 60);
    assert!(
        shown.contains(&format!(
            "~ update example.com/{}  {}",
            first.id,
            first.display_name.as_deref().unwrap()
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("      notes: {} → {}", cut(&before), cut(&after))),
        "{shown}"
    );
    for id in deleted {
        let c = contacts.iter().find(|c| c.id == *id).unwrap();
        assert!(
            shown.contains(&format!(
                "- delete example.com/{id}  {}",
                c.display_name.as_deref().unwrap()
            )),
            "{shown}"
        );
    }
    assert!(
        shown.contains("needs a name or an e-mail address"),
        "{shown}"
    );
}

/// `plan --out` saves the plan as Parquet (queryable); `apply --plan` applies exactly it,
/// and refuses (exit 2, naming them) when contacts it touches moved. `--detailed-exitcode`
/// says whether there are changes; an apply whose rows conflict exits 1, not 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_is_applied_exactly_or_refused_when_contacts_moved() {
    let emu = Emulator::start(crate::google_only(60)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipeline_path = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&pipeline_path, false).await);
    let file = dir.path().join("plans/first.parquet");
    let desired = save_a_plan(&pipeline_path, &file);
    let (old, moved) = conflict_on_three(&emu, dir.path(), &pipeline_path, desired).await;
    refuse_the_stale_plan(&emu, &pipeline_path, &file, &old, &moved);
    apply_a_fresh_plan_exactly(&emu, dir.path(), &pipeline_path);
}

/// Saves a plan of twenty note updates with `plan --out` and reads it back with SQL;
/// returns its desired query.
fn save_a_plan(pipeline_path: &Path, file: &Path) -> &'static str {
    let p = pipeline_path.to_str().unwrap();
    let f = file.to_str().unwrap();
    let desired: &'static str = "SELECT account, id, etag, concat('[saved] ', coalesce(substr(notes, 1, 30), '')) AS notes FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 20";
    let o = run(&[
        "plan",
        p,
        "--source",
        "shared",
        "--mode",
        "update",
        "--desired",
        desired,
        "--out",
        f,
        "--detailed-exitcode",
    ]);
    assert_exit(&o, 2);
    assert!(
        text(&o.stderr).contains("apply it with"),
        "{}",
        text(&o.stderr)
    );
    // The plan file answers SQL like any table.
    let o = run(&[
        "query",
        p,
        &format!("SELECT kind, count(*) AS n, count(DISTINCT id) AS ids FROM '{f}' GROUP BY kind"),
        "--format",
        "csv",
    ]);
    assert_exit(&o, 0);
    assert_eq!(text(&o.stdout), "kind,n,ids\nupdate,20,20\n");
    let o = run(&[
        "query",
        p,
        &format!("SELECT before, after, changed FROM '{f}' ORDER BY id LIMIT 1"),
        "--format",
        "json",
    ]);
    assert_exit(&o, 0);
    let row: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    let after: serde_json::Value = serde_json::from_str(row["after"].as_str().unwrap()).unwrap();
    assert!(
        after["notes"].as_str().unwrap().starts_with("[saved] "),
        "{row}"
    );
    assert_eq!(row["changed"], serde_json::json!(["notes"]));

    desired
}

/// Someone changes three of the twenty; an apply of the old desired state (old etags)
/// conflicts on them: rows failed, exit 1. Returns the old desired state's file and the
/// three ids.
async fn conflict_on_three(
    emu: &Emulator,
    dir: &Path,
    pipeline_path: &Path,
    desired: &str,
) -> (std::path::PathBuf, Vec<String>) {
    let p = pipeline_path.to_str().unwrap();
    let pipeline = Pipeline::load(pipeline_path).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let old = dir.join("old.parquet");
    let batches = contacts_etl::sql::query(&lake, desired).await.unwrap();
    contacts_etl::sql::write_parquet(&lake, &batches, old.to_str().unwrap())
        .await
        .unwrap();
    let ids: Vec<String> = landed(pipeline_path, "shared", "example.com")
        .await
        .into_iter()
        .map(|c| c.id)
        .take(20)
        .collect();
    let moved = [ids[2].as_str(), ids[7].as_str(), ids[19].as_str()];
    let other = format!(
        "SELECT account, id, etag, 'someone else' AS notes FROM contacts WHERE id IN ({})",
        quoted(&moved)
    );
    let r = Apply::desired(&pipeline, "shared", other)
        .with_mode(Mode::Update)
        .await
        .unwrap();
    assert_eq!(r.failures(), 0, "{}", r.summary());
    let o = run(&[
        "apply",
        p,
        "--source",
        "shared",
        "--mode",
        "update",
        "--desired",
        old.to_str().unwrap(),
    ]);
    assert_exit(&o, 1);
    // The result is the run's report: on stdout.
    assert!(
        text(&o.stdout).contains("3 conflict(s)"),
        "{}",
        text(&o.stdout)
    );
    let notes_of = |id: &str| {
        emu.google_truth()
            .contacts
            .into_iter()
            .find(|c| c.id == id)
            .and_then(|c| c.notes)
    };
    assert_eq!(notes_of(moved[0]).as_deref(), Some("someone else"));

    (old, moved.iter().map(|m| m.to_string()).collect())
}

/// The saved plan is stale now: refused whole, the moved contacts named, nothing sent.
fn refuse_the_stale_plan(
    emu: &Emulator,
    pipeline_path: &Path,
    file: &Path,
    old: &Path,
    moved: &[String],
) {
    let (p, f) = (pipeline_path.to_str().unwrap(), file.to_str().unwrap());
    emu.reset_stats();
    let o = run(&["apply", p, "--plan", f]);
    assert_exit(&o, 2);
    let err = text(&o.stderr);
    for id in moved {
        assert!(
            err.contains(&format!("update example.com/{id}: etag")),
            "{err}"
        );
    }
    assert!(err.contains("changed since it was made"), "{err}");
    assert!(
        !emu.stats().contains_key("google.batch"),
        "{:?}",
        emu.stats()
    );
    // A plan for another source, or a file that is no plan, is refused too.
    let o = run(&["apply", p, "--plan", f, "--source", "crm"]);
    assert_exit(&o, 2);
    assert!(
        text(&o.stderr).contains("for source \"shared\""),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["apply", p, "--plan", old.to_str().unwrap()]);
    assert_exit(&o, 2);
    assert!(
        text(&o.stderr).contains("not a plan"),
        "{}",
        text(&o.stderr)
    );
}

/// A fresh plan, saved, then applied exactly: its operations and nothing else.
fn apply_a_fresh_plan_exactly(emu: &Emulator, dir: &Path, pipeline_path: &Path) {
    let p = pipeline_path.to_str().unwrap();
    let fresh = dir.join("fresh.parquet");
    let fresh_desired = "SELECT account, id, etag, 'from the saved plan' AS notes FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 10";
    let o = run(&[
        "plan",
        p,
        "--source",
        "shared",
        "--mode",
        "update",
        "--desired",
        fresh_desired,
        "--out",
        fresh.to_str().unwrap(),
    ]);
    assert_exit(&o, 0);
    let planned = text(&o.stdout);
    // Contacts that change after the plan but that it does not touch do not matter.
    emu.mutate_google(5, 0, 0);
    let o = run(&["apply", p, "--plan", fresh.to_str().unwrap()]);
    assert_exit(&o, 0);
    let shown = text(&o.stdout);
    assert_eq!(
        shown.lines().next(),
        planned.lines().next(),
        "apply --plan shows the saved plan"
    );
    let truth = emu.google_truth();
    let from_plan = truth
        .contacts
        .iter()
        .filter(|c| c.notes.as_deref() == Some("from the saved plan"))
        .count();
    assert_eq!(from_plan, 10);
    // Applied: nothing left to change.
    let o = run(&[
        "plan",
        p,
        "--source",
        "shared",
        "--mode",
        "update",
        "--desired",
        fresh_desired,
        "--detailed-exitcode",
    ]);
    assert_exit(&o, 0);
    // An error under --detailed-exitcode is 1 (2 means changes).
    let o = run(&[
        "plan",
        p,
        "--source",
        "shared",
        "--desired",
        "SELECT fileas FROM contacts",
        "--detailed-exitcode",
    ]);
    assert_exit(&o, 1);
}

/// A pipeline with Aurinko accounts 101, 102 and 103 of 10 contacts each.
async fn three_accounts(dir: &Path) -> (Emulator, std::path::PathBuf) {
    let emu = Emulator::start(crate::aurinko_only(3, 10)).await.unwrap();
    let p = write_pipeline(
        dir,
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: vec!["101".into(), "102".into(), "103".into()],
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    (emu, p)
}

fn counts(emu: &Emulator) -> [usize; 3] {
    ["101", "102", "103"].map(|a| emu.aurinko_truth(a).unwrap().contacts.len())
}

/// `--account` scopes plan and apply; in mirror mode an account absent from the desired
/// state is deleted from only when named; an unknown account is exit 2 naming the
/// configured ones; without a terminal, deletes need `--yes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_scope_plans_and_applies_and_deletes_need_a_yes() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p) = three_accounts(dir.path()).await;
    let p = p.to_str().unwrap();
    an_unknown_account_is_refused(p);

    // Account 101's contacts but one, in mirror mode: only 101 loses one; 102 and 103
    // have no desired rows and are left alone.
    let keep = "SELECT account, id, etag, notes FROM contacts WHERE source = 'crm' AND account = '101' ORDER BY id LIMIT 9";
    let mirror = |extra: &[&str]| {
        let mut args = vec![
            "apply",
            p,
            "--source",
            "crm",
            "--mode",
            "mirror",
            "--desired",
            keep,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = run(&[
        "plan",
        p,
        "--source",
        "crm",
        "--mode",
        "mirror",
        "--desired",
        keep,
    ]);
    assert_exit(&o, 0);
    let shown = text(&o.stdout);
    assert!(shown.contains("1 delete(s)"), "{shown}");
    assert!(
        shown
            .contains("not mirrored (name them with --account to delete their contacts): 102, 103"),
        "{shown}"
    );
    // No terminal, no --yes: refused before anything is written.
    let o = mirror(&[]);
    assert_exit(&o, 2);
    assert!(text(&o.stderr).contains("--yes"), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("1 delete(s)"),
        "the plan is shown first"
    );
    assert_eq!(counts(&emu), [10, 10, 10]);
    let o = mirror(&["--yes"]);
    assert_exit(&o, 0);
    assert_eq!(counts(&emu), [9, 10, 10]);

    // Named, 102 is mirrored too: its contacts are all absent, so all would go, past the
    // default 10 %; with --max-delete 100% and --yes they go. 101's rows are out of scope.
    let o = mirror(&["--account", "102", "--yes"]);
    assert_exit(&o, 2);
    assert!(
        text(&o.stderr).contains("more than --max-delete allows"),
        "{}",
        text(&o.stderr)
    );
    let o = mirror(&["--account", "102", "--yes", "--max-delete", "100%"]);
    assert_exit(&o, 0);
    let shown = text(&o.stdout);
    assert!(
        shown.contains("10 delete(s)") && shown.contains("accounts: 102"),
        "{shown}"
    );
    assert!(
        shown.contains("desired rows of other accounts, left out: 9"),
        "{shown}"
    );
    assert_eq!(counts(&emu), [9, 0, 10]);

    update_only_the_named_account(&emu, p);
}

/// `plan` and `apply` refuse an `--account` the source does not have, naming those it has.
fn an_unknown_account_is_refused(p: &str) {
    let o = run(&[
        "plan",
        p,
        "--source",
        "crm",
        "--account",
        "999",
        "--desired",
        "x.csv",
    ]);
    assert_exit(&o, 2);
    let err = text(&o.stderr);
    assert!(
        err.contains("\"999\"") && err.contains("101, 102, 103"),
        "{err}"
    );
    let o = run(&[
        "apply",
        p,
        "--source",
        "crm",
        "--account",
        "999",
        "--desired",
        "x.csv",
    ]);
    assert_exit(&o, 2);
}

/// Update mode, scoped: every account's rows are desired, only 103's are written.
fn update_only_the_named_account(emu: &Emulator, p: &str) {
    let all = "SELECT account, id, etag, 'scoped' AS notes FROM contacts WHERE source = 'crm'";
    let o = run(&[
        "apply",
        p,
        "--source",
        "crm",
        "--mode",
        "update",
        "--account",
        "103",
        "--desired",
        all,
    ]);
    assert_exit(&o, 0);
    assert!(
        text(&o.stdout).contains("10 update(s)"),
        "{}",
        text(&o.stdout)
    );
    let scoped = |a: &str| {
        emu.aurinko_truth(a)
            .unwrap()
            .contacts
            .iter()
            .filter(|c| c.notes.as_deref() == Some("scoped"))
            .count()
    };
    assert_eq!((scoped("101"), scoped("103")), (0, 10));
}

/// At a terminal (a pseudo-terminal from `script`), apply asks before deleting: "n"
/// cancels with nothing written (exit 2), "y" deletes, and a progress bar is drawn; Ctrl-C
/// at the question stops the run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_apply_asks_before_deleting() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no `script` to make a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (emu, p) = three_accounts(dir.path()).await;
    // Mirror 101 with its first `keep` contacts: the rest are deleted.
    let cmd = |keep: usize| {
        format!(
            "'{}' apply '{}' --source crm --mode mirror --max-delete 50% --desired \"SELECT account, id, etag, notes FROM contacts WHERE source = 'crm' AND account = '101' ORDER BY id LIMIT {keep}\"",
            crate::bin(),
            p.display()
        )
    };
    let at_terminal = |answer: &str| {
        let mut child = Command::new("script")
            .args(["-qec", &cmd(9), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The answer waits in the terminal's input until apply reads it.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = at_terminal("n\n");
    let said = text(&o.stdout);
    assert!(said.contains("Delete 1 contact(s) of source crm"), "{said}");
    assert!(said.contains("cancelled"), "{said}");
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert_eq!(counts(&emu), [10, 10, 10]);
    let o = at_terminal("y\n");
    let said = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{said}");
    assert_eq!(counts(&emu), [9, 10, 10]);
    assert!(said.contains("/1 operations"), "no progress bar:\n{said}");

    // Ctrl-C while the question waits: the run stops at once (130), nothing deleted.
    let mut child = Command::new("script")
        .args(["-qec", &cmd(8), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 {
            seen.push(byte[0]);
            if seen.ends_with(b"[y/N] ") {
                let _ = tx.send(Ok(()));
            }
        }
        let _ = tx.send(Err(String::from_utf8_lossy(&seen).into_owned()));
    });
    if let Err(said) = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap() {
        panic!("no question:\n{said}");
    }
    let asked = std::time::Instant::now();
    let mut stdin = child.stdin.take().unwrap();
    // The terminal's interrupt character, as a person's Ctrl-C.
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if asked.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("Ctrl-C did not stop apply at the question");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(stdin);
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(counts(&emu), [9, 10, 10]);
}

/// With `--log-format json`, stderr is JSON only: the plan as one event before the
/// writes (counts and a sample with values), the result as one summary event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_plan_and_the_result_as_events() {
    let emu = Emulator::start(crate::google_only(30)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let o = run(&[
        "--log-format",
        "json",
        "apply",
        p.to_str().unwrap(),
        "--source",
        "shared",
        "--mode",
        "update",
        "--desired",
        "SELECT account, id, etag, 'json' AS notes FROM contacts WHERE source = 'shared' ORDER BY id LIMIT 12",
    ]);
    assert_exit(&o, 0);
    let events: Vec<serde_json::Value> = text(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |m: &str| {
        events
            .iter()
            .position(|e| e["fields"]["message"] == m)
            .unwrap_or_else(|| panic!("no {m:?} event: {events:?}"))
    };
    let (planned, finished) = (find("plan to apply"), find("apply finished"));
    assert!(planned < finished);
    let plan = &events[planned]["fields"];
    assert_eq!(plan["updates"], 12);
    let sample: serde_json::Value = serde_json::from_str(plan["plan"].as_str().unwrap()).unwrap();
    assert_eq!(sample["updates"], 12);
    let ops = sample["sample"].as_array().unwrap();
    assert_eq!(ops.len(), 10);
    assert_eq!(ops[0]["changes"]["notes"]["after"], "\"json\"");
    let done = &events[finished]["fields"];
    assert_eq!(
        (done["ok"].as_u64(), done["failures"].as_u64()),
        (Some(12), Some(0))
    );
    assert_eq!(done["apply_id"], plan["apply_id"]);
    let pipeline = Pipeline::load(&p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let b = contacts_etl::sql::query(
        &lake,
        &format!(
            "SELECT count(*) FROM writeback_results WHERE apply_id = '{}'",
            done["apply_id"].as_str().unwrap()
        ),
    )
    .await
    .unwrap();
    assert!(
        contacts_etl::sql::render(&b, "csv")
            .unwrap()
            .ends_with("\n12\n")
    );
}

/// A missing credential of a source the command uses is exit 2, naming the source, the
/// account and the variable or file, before any request and before the lake is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_stops_the_command_before_the_first_request() {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 10,
        aurinko_accounts: 2,
        aurinko_contacts: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("google.token"), &emu.config().token).unwrap();
    let pipeline = |google_auth: &str| {
        let text = format!(
            "[lake]\nurl = \"lake\"\n\n[[sources]]\nname = \"shared\"\nprovider = \"google\"\ndomain = \"example.com\"\nbase_url = \"{url}\"\nauth = {google_auth}\n\n[[sources]]\nname = \"crm\"\nprovider = \"aurinko\"\nbase_url = \"{url}\"\naccounts = [{{ id = \"101\", token_env = \"CETL_TEST_TOKEN_101\" }}, {{ id = \"102\", token_env = \"CETL_TEST_UNSET_TOKEN_102\" }}]\n",
            url = emu.url()
        );
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let p = pipeline("{ kind = \"bearer\", token_file = \"google.token\" }");
    let p = p.to_str().unwrap();
    let with_env = |args: &[&str]| {
        Command::new(crate::bin())
            .args(args)
            .env("CETL_TEST_TOKEN_101", emu.aurinko_token("101"))
            .env_remove("CETL_TEST_UNSET_TOKEN_102")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    emu.reset_stats();
    for args in [
        vec!["sync", p],
        vec!["sync", p, "--source", "crm", "--account", "101"],
        vec!["apply", p, "--source", "crm", "--desired", "x.csv"],
    ] {
        let o = with_env(&args);
        assert_exit(&o, 2);
        let err = text(&o.stderr);
        assert!(
            err.contains("source crm, account 102") && err.contains("CETL_TEST_UNSET_TOKEN_102"),
            "{args:?}: {err}"
        );
        assert!(emu.stats().is_empty(), "{args:?}: {:?}", emu.stats());
        assert!(!dir.path().join("lake").exists(), "{args:?}");
    }
    // A source the command does not use needs no credential.
    let o = with_env(&["sync", p, "--source", "shared"]);
    assert_exit(&o, 0);
    // A token file that is not there: named with its source, account and path.
    let p = pipeline("{ kind = \"bearer\", token_file = \"secrets/missing.token\" }");
    emu.reset_stats();
    let o = with_env(&[
        "apply",
        p.to_str().unwrap(),
        "--source",
        "shared",
        "--desired",
        "x.csv",
    ]);
    assert_exit(&o, 2);
    let err = text(&o.stderr);
    assert!(
        err.contains("source shared (account example.com)") && err.contains("missing.token"),
        "{err}"
    );
    assert!(emu.stats().is_empty(), "{:?}", emu.stats());
}

/// Rewrites a saved plan: `edit` changes its one batch and its description (the
/// key-value metadata as JSON).
fn edit_plan(
    from: &Path,
    to: &Path,
    edit: impl FnOnce(arrow::array::RecordBatch, &mut serde_json::Value) -> arrow::array::RecordBatch,
) {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(from).unwrap(),
    )
    .unwrap();
    let meta_text = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .find(|k| k.key == contacts_etl::plan::saved::META_KEY)
        .unwrap()
        .value
        .clone()
        .unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&meta_text).unwrap();
    let batches: Vec<_> = reader.build().unwrap().map(|b| b.unwrap()).collect();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let batch = edit(batch, &mut meta);
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            contacts_etl::plan::saved::META_KEY.to_string(),
            meta.to_string(),
        )]))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(to).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// `batch` with its column `name` replaced by `col` (the field takes the column's type).
fn with_column(
    batch: arrow::array::RecordBatch,
    name: &str,
    col: arrow::array::ArrayRef,
) -> arrow::array::RecordBatch {
    let schema = batch.schema();
    let i = schema.index_of(name).unwrap();
    let mut fields: Vec<arrow::datatypes::Field> =
        schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = arrow::datatypes::Field::new(name, col.data_type().clone(), true);
    let mut cols = batch.columns().to_vec();
    cols[i] = col;
    arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
    )
    .unwrap()
}

/// A saved plan edited after `plan --out` wrote it is refused (exit 2, a clear message,
/// never a panic) and nothing is sent: edited desired JSON, an insert key made a path, an
/// account swapped, a `changed` column of another type, a description without its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_saved_plan_is_refused_and_nothing_is_sent() {
    use arrow::array::{Array, AsArray, StringArray};
    let emu = Emulator::start(crate::google_only(20)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipeline_path = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&pipeline_path, false).await);
    let p = pipeline_path.to_str().unwrap();
    let csv = dir.path().join("desired.csv");
    std::fs::write(
        &csv,
        "id,account,display_name,notes\n,example.com,New One,made here\n",
    )
    .unwrap();
    let saved = dir.path().join("plan.parquet");
    let o = run(&[
        "plan",
        p,
        "--source",
        "shared",
        "--desired",
        csv.to_str().unwrap(),
        "--out",
        saved.to_str().unwrap(),
    ]);
    assert_exit(&o, 0);
    let strings = |b: &arrow::array::RecordBatch, n: &str| -> Vec<Option<String>> {
        let c = b.column_by_name(n).unwrap().as_string::<i32>();
        (0..c.len())
            .map(|i| c.is_valid(i).then(|| c.value(i).to_string()))
            .collect()
    };
    let replace = |name: &'static str, f: fn(Option<String>) -> Option<String>| {
        move |b: arrow::array::RecordBatch, _: &mut serde_json::Value| {
            let v: Vec<Option<String>> = strings(&b, name).into_iter().map(f).collect();
            with_column(b, name, std::sync::Arc::new(StringArray::from(v)))
        }
    };
    type Edit = Box<
        dyn FnOnce(arrow::array::RecordBatch, &mut serde_json::Value) -> arrow::array::RecordBatch,
    >;
    let edits: Vec<(&str, Edit, &str)> = vec![
        (
            "desired",
            Box::new(replace("desired", |d| {
                d.map(|d| d.replace("made here", "edited after review"))
            })),
            "digest",
        ),
        (
            "key",
            Box::new(replace("key", |k| {
                k.map(|_| "../../../victim/contacts/owned".to_string())
            })),
            "digest",
        ),
        (
            "account",
            Box::new(replace("account", |_| Some("victim.example".to_string()))),
            "digest",
        ),
        (
            "changed",
            Box::new(|b, _| {
                let n = b.num_rows();
                let mut l = arrow::array::ListBuilder::new(arrow::array::Int64Builder::new());
                for _ in 0..n {
                    l.values().append_value(7);
                    l.append(true);
                }
                with_column(b, "changed", std::sync::Arc::new(l.finish()))
            }),
            "column changed",
        ),
        (
            "no digest",
            Box::new(|b, m| {
                m.as_object_mut().unwrap().remove("digest");
                b
            }),
            "no digest",
        ),
    ];
    emu.reset_stats();
    for (what, edit, says) in edits {
        let edited = dir
            .path()
            .join(format!("{}.parquet", what.replace(' ', "-")));
        edit_plan(&saved, &edited, edit);
        let o = run(&["apply", p, "--plan", edited.to_str().unwrap()]);
        assert_exit(&o, 2);
        let err = text(&o.stderr);
        assert!(
            err.contains(says) && err.contains("--plan"),
            "{what}: {err}"
        );
    }
    assert!(
        !emu.stats().contains_key("google.batch"),
        "{:?}",
        emu.stats()
    );
    assert_eq!(emu.google_truth().contacts.len(), 20);
    // The plan as written applies.
    let o = run(&["apply", p, "--plan", saved.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(emu.google_truth().contacts.len(), 21);
}

/// `apply` takes `--sample` as `plan` does: the plan it shows first lists that many
/// operations of each kind and counts the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_takes_the_sample_size_plan_takes() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, p) = three_accounts(dir.path()).await;
    let ps = p.to_str().unwrap();
    let desired = "SELECT account, id, etag, 'sampled' AS notes FROM contacts WHERE source = 'crm' AND account = '101'";
    let o = run(&[
        "apply",
        ps,
        "--source",
        "crm",
        "--mode",
        "update",
        "--desired",
        desired,
        "--sample",
        "2",
    ]);
    assert_exit(&o, 0);
    let out = text(&o.stdout);
    assert_eq!(out.matches("  ~ update ").count(), 2, "{out}");
    assert!(out.contains("… and 8 more update(s)"), "{out}");
}

/// `args` run with a plan bound (`CONTACTS_ETL_MAX_PLAN_ROWS`) of `max` rows.
fn run_bounded(max: usize, args: &[&str]) -> Output {
    Command::new(crate::bin())
        .args(args)
        .env("CONTACTS_ETL_MAX_PLAN_ROWS", max.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A plan is held whole, so it is bounded (`MAX_PLAN_ROWS`, here lowered to 15): a
/// desired state (CSV, JSON lines or SQL) with more rows in scope, a mirror over more
/// landed contacts, or a saved plan with more rows, is refused with exit 2 and how to
/// plan in parts, with nothing sent; the same desired state planned an account at a time
/// (`--account`) is within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_past_the_row_bound_is_refused_and_can_be_planned_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, p) = three_accounts(dir.path()).await;
    let p = p.to_str().unwrap();
    let accounts = ["101", "102", "103"];
    let mut csv = String::from("id,account,display_name\n");
    let mut json = String::new();
    for a in accounts {
        for i in 0..10 {
            csv.push_str(&format!(",{a},Bound {a}-{i}\n"));
            json.push_str(&format!(
                "{{\"id\":null,\"account\":\"{a}\",\"display_name\":\"Bound {a}-{i}\"}}\n"
            ));
        }
    }
    let (csv_path, json_path) = (dir.path().join("big.csv"), dir.path().join("big.json"));
    std::fs::write(&csv_path, csv).unwrap();
    std::fs::write(&json_path, json).unwrap();
    let says = |o: &Output, what: &str| {
        assert_exit(o, 2);
        let e = text(&o.stderr);
        for w in [what, "more than 15 rows", "WHERE", "--account"] {
            assert!(e.contains(w), "{w:?} missing:\n{e}");
        }
    };
    let before = counts(&emu);
    let requests = emu.stats();
    for desired in [
        csv_path.to_str().unwrap(),
        json_path.to_str().unwrap(),
        "SELECT id, account, display_name FROM contacts WHERE source = 'crm'",
    ] {
        let o = run_bounded(15, &["plan", p, "--source", "crm", "--desired", desired]);
        says(&o, "the desired state holds");
        let o = run_bounded(
            15,
            &["apply", p, "--source", "crm", "--desired", desired, "--yes"],
        );
        says(&o, "the desired state holds");
    }
    // An account at a time, each plan is within the bound.
    let o = run_bounded(
        15,
        &[
            "plan",
            p,
            "--source",
            "crm",
            "--desired",
            csv_path.to_str().unwrap(),
            "--account",
            "102",
        ],
    );
    assert_exit(&o, 0);
    assert!(text(&o.stdout).contains("10 insert"), "{}", text(&o.stdout));
    // A mirror holds every landed contact of its accounts (10 here).
    let o = run_bounded(
        5,
        &[
            "plan",
            p,
            "--source",
            "crm",
            "--desired",
            "SELECT id, account, display_name FROM contacts WHERE source = 'crm' AND account = '101' LIMIT 1",
            "--mode",
            "mirror",
        ],
    );
    assert_exit(&o, 2);
    assert!(
        text(&o.stderr).contains("a mirror compares with every contact"),
        "{}",
        text(&o.stderr)
    );
    // A saved plan of 30 rows, made under a larger bound, is refused under this one.
    let saved = dir.path().join("plan.parquet");
    let o = run_bounded(
        100,
        &[
            "plan",
            p,
            "--source",
            "crm",
            "--desired",
            csv_path.to_str().unwrap(),
            "--out",
            saved.to_str().unwrap(),
        ],
    );
    assert_exit(&o, 0);
    let o = run_bounded(
        15,
        &["apply", p, "--plan", saved.to_str().unwrap(), "--yes"],
    );
    says(&o, "the plan holds");
    assert_eq!(counts(&emu), before, "nothing was written");
    let writes = |s: &std::collections::BTreeMap<String, u64>| {
        s.iter()
            .filter(|(k, _)| ["create", "patch", "delete"].iter().any(|w| k.ends_with(w)))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    assert_eq!(writes(&emu.stats()), writes(&requests), "nothing was sent");
}
