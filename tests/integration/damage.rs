//! Damaged lakes: a lake synced twice from the emulator, then one thing broken in a copy
//! of it (a deletion vector cut short, its size or checksum wrong in the log or the file,
//! a commit lost, a data file gone or changed), and every command run on it as a process.
//! Each ends with the right data or exit 1 naming the file, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use contacts_etl::emulator::Emulator;

use crate::{PipelineSpec, assert_lake_matches, assert_ok, google_only, sync, write_pipeline};

/// A pipeline folder (pipeline, secrets, lake) whose `contacts` has a deletion vector:
/// loaded, then an incremental run that replaced a few rows.
async fn lake_with_a_vector() -> (Emulator, tempfile::TempDir, PathBuf) {
    let emu = Emulator::start(google_only(400)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    emu.mutate_google(2, 6, 1);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    assert!(
        dv_file(dir.path()).is_some(),
        "the incremental run wrote no deletion vector"
    );
    (emu, dir, p)
}

/// The one deletion vector file of `contacts` under the pipeline folder `dir`.
fn dv_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("lake/contacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("deletion_vector_")
        })
}

/// The commit files of a table's log, oldest first.
fn log_entries(table: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// A copy of the pipeline folder `from` (its paths are relative: the copy is a lake of
/// its own).
fn copy_of(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(from, dir.path());
    dir
}

/// Runs the tool with `args` and the pipeline of `dir` (off the runtime's threads: the
/// emulator answers on them). Returns exit code, stdout and stderr.
async fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let pipeline = dir.join("pipeline.toml");
    let mut all: Vec<String> = vec![args[0].to_string(), pipeline.to_str().unwrap().to_string()];
    all.extend(args[1..].iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        // With backtraces on, as a scheduler may run it: an error must still be one line.
        let out = Command::new(crate::bin())
            .args(&all)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `sync`, `query` and `status` on the lake of `dir` each exit 1 with an error that names
/// `file`, and none panics.
async fn every_command_fails_naming(dir: &Path, file: &str, what: &str) {
    for args in [
        &["sync"][..],
        &["query", "SELECT id, display_name FROM contacts"][..],
        &["status"][..],
    ] {
        let (code, _, err) = run(dir, args).await;
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{what}: `{}` panicked: {err}",
            args[0]
        );
        assert_eq!(
            code,
            Some(1),
            "{what}: `{}` exit code; stderr: {err}",
            args[0]
        );
        assert!(
            err.contains(file),
            "{what}: `{}` does not name {file}: {err}",
            args[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_deletion_vector_fails_every_command_naming_the_file() {
    let (_emu, base, _) = lake_with_a_vector().await;
    let name = dv_file(base.path())
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // Cut short: its last bytes (part of the bitmap and the checksum) are gone.
    let dir = copy_of(base.path());
    let dv = dv_file(dir.path()).unwrap();
    let len = std::fs::metadata(&dv).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dv)
        .unwrap()
        .set_len(len - 6)
        .unwrap();
    every_command_fails_naming(dir.path(), &name, "a truncated vector").await;

    // A byte of the bitmap changed: its checksum no longer matches.
    let dir = copy_of(base.path());
    let dv = dv_file(dir.path()).unwrap();
    let mut bytes = std::fs::read(&dv).unwrap();
    bytes[12] ^= 0x40;
    std::fs::write(&dv, bytes).unwrap();
    every_command_fails_naming(dir.path(), &name, "a changed vector").await;

    // The log gives a negative size.
    let dir = copy_of(base.path());
    let newest = log_entries(&dir.path().join("lake/contacts"))
        .pop()
        .unwrap();
    let text = std::fs::read_to_string(&newest).unwrap();
    assert!(
        text.contains(r#""sizeInBytes":"#),
        "no deletion vector in {newest:?}: {text}"
    );
    let edited = text.replace(r#""sizeInBytes":"#, r#""sizeInBytes":-"#);
    std::fs::write(&newest, edited).unwrap();
    every_command_fails_naming(dir.path(), &name, "a negative vector size").await;
}

/// The lake of the pipeline `p`.
fn lake_of(p: &Path) -> contacts_etl::lake::Lake {
    contacts_etl::sync::lake_of(&contacts_etl::config::Pipeline::load(p).unwrap()).unwrap()
}

/// A `contacts` that lost its newest commit (a log entry deleted, or not copied with the
/// rest) holds the rows of the run before; the next sync finds it behind
/// `contact_changes`, replays the run, and the lake equals the API again, for us and for
/// an independent reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_contacts_commit_is_replayed_by_the_next_sync() {
    let emu = Emulator::start(google_only(400)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    emu.mutate_google(3, 5, 4);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    let lost = log_entries(&dir.path().join("lake/contacts"))
        .pop()
        .unwrap();
    std::fs::remove_file(&lost).unwrap();
    let truth = emu.google_truth().contacts;
    let held = lake_of(&p)
        .contacts_of("shared", &emu.config().google_domain)
        .await
        .unwrap();
    assert!(
        !contacts_etl::verify::diff(&held, &truth).is_empty(),
        "removing {lost:?} changed nothing"
    );

    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_lake_matches(&p, &emu).await;
    // Later runs go on from there.
    emu.mutate_google(2, 3, 2);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    if let Some(py) = crate::require_python("a_lost_contacts_commit_is_replayed_by_the_next_sync") {
        let domain = emu.config().google_domain.clone();
        crate::lake::duckdb_reads_the_truth(
            &py,
            &dir.path().join("lake/contacts"),
            &emu,
            &[("shared", domain.as_str())],
        )
        .await;
    }
}

/// A `contact_changes` that lost its newest commit is behind the other tables: the sync
/// fails, naming it, instead of numbering runs from the wrong place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_contact_changes_commit_fails_the_sync_naming_the_table() {
    let emu = Emulator::start(google_only(200)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    emu.mutate_google(3, 5, 4);
    assert_ok(&sync(&p, false).await);
    let lost = log_entries(&dir.path().join("lake/contact_changes"))
        .pop()
        .unwrap();
    std::fs::remove_file(&lost).unwrap();
    let (code, _, err) = run(dir.path(), &["sync"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("contact_changes lost commits") && !err.contains("panicked"),
        "{err}"
    );
}

/// The data files of a table, in no order.
pub(crate) fn data_files(table: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with("_delta_log") {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(table, &mut out);
    out
}

/// `count(*)` and `status` count the rows in the data files, not the log's `numRecords`;
/// a data file deleted or cut short makes both fail, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_come_from_the_data_and_a_missing_data_file_is_named() {
    let emu = Emulator::start(google_only(300)).await.unwrap();
    let base = tempfile::tempdir().unwrap();
    let p = write_pipeline(base.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let count = [
        "query",
        "SELECT count(*) AS n FROM contacts",
        "--format",
        "csv",
    ];

    // The log's row counts edited (300 becomes 9300).
    let dir = copy_of(base.path());
    let mut edited = 0;
    for entry in log_entries(&dir.path().join("lake/contacts")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        let changed = text.replace(r#"\"numRecords\":"#, r#"\"numRecords\":9"#);
        if changed != text {
            edited += 1;
            std::fs::write(&entry, changed).unwrap();
        }
    }
    assert!(edited > 0, "no numRecords in the contacts log");
    let (code, out, err) = run(dir.path(), &count).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().last(), Some("300"), "{out}");
    let (code, out, err) = run(dir.path(), &["status", "--format", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.replace(' ', "").contains(r#""held":300"#), "{out}");

    // A data file deleted, or cut short.
    for cut in [false, true] {
        let dir = copy_of(base.path());
        let files = data_files(&dir.path().join("lake/contacts"));
        let victim = &files[0];
        if cut {
            let len = std::fs::metadata(victim).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(victim)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        } else {
            std::fs::remove_file(victim).unwrap();
        }
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        for args in [&count[..], &["status"][..]] {
            let (code, _, err) = run(dir.path(), args).await;
            assert_eq!(code, Some(1), "cut {cut}: `{}`: {err}", args[0]);
            assert!(
                err.contains(&name) && !err.contains("panicked"),
                "cut {cut}: `{}` does not name {name}: {err}",
                args[0]
            );
        }
    }
}

/// A bit flipped anywhere in a data file (a Snappy page carries no checksum of its own,
/// and most flips read back as other values) fails a query naming the file: never a
/// changed value with exit 0. The file put back, the same query answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flipped_in_a_data_file_fails_the_read_naming_the_file() {
    let emu = Emulator::start(google_only(300)).await.unwrap();
    let base = tempfile::tempdir().unwrap();
    let p = write_pipeline(base.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let dir = copy_of(base.path());
    let files = data_files(&dir.path().join("lake/contacts"));
    let victim = files
        .iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let original = std::fs::read(victim).unwrap();
    let all = ["query", "SELECT * FROM contacts", "--format", "csv"];
    let (code, before, err) = run(dir.path(), &all).await;
    assert_eq!(code, Some(0), "{err}");
    // Spread over the file: its first and last bytes, pages, and the footer.
    let n = original.len();
    let mut at: Vec<usize> = (0..20).map(|i| i * (n - 1) / 19).collect();
    at.extend([4, n / 2 + 1, n - 9, n - 5]);
    for (i, &at) in at.iter().enumerate() {
        let mut bad = original.clone();
        bad[at] ^= 1 << (i % 8);
        std::fs::write(victim, &bad).unwrap();
        let (code, out, err) = run(dir.path(), &all).await;
        assert!(
            code == Some(1) && err.contains(&name) && err.contains("damaged"),
            "a flip at byte {at} of {n}: exit {code:?}, {} bytes out; stderr: {err}",
            out.len()
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::write(victim, &original).unwrap();
    let (code, after, err) = run(dir.path(), &all).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(after, before);
}

/// A garbled line in a table's log is one error line naming the log file: no panic, no
/// backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_log_line_is_one_error_naming_the_file() {
    let emu = Emulator::start(google_only(100)).await.unwrap();
    let base = tempfile::tempdir().unwrap();
    let p = write_pipeline(base.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    for table in ["contacts", "sync_runs"] {
        let dir = copy_of(base.path());
        let newest = log_entries(&dir.path().join("lake").join(table))
            .pop()
            .unwrap();
        let text = std::fs::read_to_string(&newest).unwrap();
        assert!(text.contains(r#"{"add":"#), "{newest:?}: {text}");
        let garbled = text.replacen(r#"{"add":"#, r#"{"add":]["#, 1);
        std::fs::write(&newest, garbled).unwrap();
        let name = newest.file_name().unwrap().to_string_lossy().into_owned();
        for args in [
            &["sync"][..],
            &["query", "SELECT count(id) FROM contacts"][..],
            &["status"][..],
        ] {
            let (code, _, err) = run(dir.path(), args).await;
            assert_eq!(code, Some(1), "{table}: `{}`: {err}", args[0]);
            assert!(
                err.contains(&name) && !err.contains("panicked") && !err.contains("crashed"),
                "{table}: `{}` does not name {name}, or panics: {err}",
                args[0]
            );
            assert!(
                err.lines().count() <= 8,
                "{table}: `{}` prints {} lines: {err}",
                args[0],
                err.lines().count()
            );
        }
    }
}

/// A log whose `numRecords` understates a file (an edited or damaged log) does not make
/// a keyed step drop the file's other rows: it looks at the file before dropping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_row_count_in_the_log_loses_no_rows() {
    let emu = Emulator::start(google_only(10)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let mut edited = 0;
    for entry in log_entries(&dir.path().join("lake/contacts")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        let changed = text.replace(r#"\"numRecords\":10,"#, r#"\"numRecords\":1,"#);
        if changed != text {
            edited += 1;
            std::fs::write(&entry, changed).unwrap();
        }
    }
    assert_eq!(edited, 1, "the first load's file count is not 10");
    emu.mutate_google(0, 1, 0);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
}
