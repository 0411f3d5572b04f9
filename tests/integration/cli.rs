//! The command line: schema, help, exit codes, shipped pipelines, and the demo.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use contacts_etl::config::Pipeline;

#[test]
fn schema_command_prints_the_schema_file() {
    let out = Command::new(crate::bin()).arg("schema").output().unwrap();
    assert!(out.status.success());
    let file = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/contacts.v1.json"),
    )
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), file);
}

#[test]
fn help_teaches() {
    let out = Command::new(crate::bin()).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "demo",
        "sync",
        "status",
        "query",
        "plan",
        "apply",
        "emulator",
        "schema",
        "--log-format",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
    let out = Command::new(crate::bin())
        .args(["sync", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("--full-refresh") && text.contains("--shard") && text.contains("Examples"),
        "{text}"
    );
}

#[test]
fn bad_usage_and_bad_pipelines_exit_2_with_a_clear_message() {
    let out = Command::new(crate::bin())
        .args(["sync", "--shard", "4/4", "x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[lake]\nurl = \"lake\"\n[[sources]]\nname = \"g\"\nprovider = \"google\"\nbase_url = \"http://127.0.0.1:1\"\ndomain = \"example.com\"\nauth = { kind = \"bearer\", token = \"sekrit-value\" }\n").unwrap();
    let out = Command::new(crate::bin())
        .args(["sync", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml")
            && err.contains("sources[0].auth.token")
            && err.contains("token_env"),
        "{err}"
    );
    assert!(!err.contains("sekrit-value"), "the secret leaked: {err}");
    std::fs::write(
        &p,
        "[lake]\nurl = \"lake\"\n[[sources]]\nname = \"g\"\nprovider = \"gogle\"\nbase_url = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    // Every command that reads the pipeline refuses it, naming what exists.
    for cmd in ["sync", "status"] {
        let out = Command::new(crate::bin())
            .args([cmd, p.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("\"gogle\"") && err.contains("google, aurinko"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn every_shipped_pipeline_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let p = Pipeline::parse_with_env(&text, &path, &|v| {
                Some(if v.ends_with("_URL") {
                    "http://127.0.0.1:8080".to_string()
                } else {
                    format!("/run/secrets/{v}")
                })
            })
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!p.sources.is_empty());
            p.lake_url().unwrap();
            n += 1;
        }
    }
    assert!(n >= 3, "expected the shipped examples, found {n}");
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(crate::bin())
        .args([
            "demo",
            "--dir",
            dir.path().to_str().unwrap(),
            "--contacts",
            "150",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Full sync: 4 accounts, 300 upserted"),
        "{stdout}"
    );
    assert!(stdout.contains("(0 differences)"), "{stdout}");
    assert!(
        stdout.contains("Rerun (idempotent): 4 accounts, 0 upserted, 0 deleted"),
        "{stdout}"
    );
    assert!(dir.path().join("lake/contacts/_delta_log").exists());
}

/// The examples in examples/ run offline and assert their own results.
#[test]
fn the_examples_run_and_pass() {
    // cargo test builds the examples next to the test binary's folder.
    let deps = std::env::current_exe().unwrap();
    let examples = deps.parent().unwrap().parent().unwrap().join("examples");
    for name in ["sync_to_lake", "query_lake", "writeback"] {
        let exe = examples.join(name);
        assert!(exe.exists(), "{} is not built", exe.display());
        let out = Command::new(&exe).output().unwrap();
        assert!(
            out.status.success(),
            "example {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The README's tour, run as a newcomer would: its command block exactly as written, in a
/// folder laid out like the repository, twice (the lake of the first run is there for the
/// second), with the tour's own mutation between its two syncs.
#[test]
fn the_readme_tour_runs_as_written_twice() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let tour = readme
        .split("```bash\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("contacts-etl emulator --port 0"))
        .expect("the README's tour block");
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
    for round in 1..=2 {
        // The block as written, pasted again into the same folder; the shell stops the
        // emulator it started (SIGTERM, as `kill %1`) when it ends, and the emulator
        // takes its env file with it.
        let script = format!("trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{tour}");
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("EMULATOR_URL")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "round {round}: the tour failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        assert!(
            !stderr.contains("FAILED") && !stdout.contains("FAILED"),
            "round {round}:\n{stdout}\n{stderr}"
        );
        assert!(dir.path().join("contacts-lake/contacts").is_dir());
        let parquet = std::fs::read(dir.path().join("contacts.parquet")).unwrap();
        assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"));
        assert!(
            !dir.path().join("emulator.env").exists(),
            "round {round}: the stopped emulator left its env file"
        );
    }
}

/// The lake-only commands run with none of the API's variables set (an analyst with the
/// lake and no API access); `sync` still needs them and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_commands_need_no_api_variables() {
    let emu = contacts_etl::emulator::Emulator::start(contacts_etl::emulator::EmulatorConfig {
        google_contacts: 20,
        aurinko_accounts: 2,
        aurinko_contacts: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    let p = dir.path().join("pipelines/emulator.toml");
    std::fs::copy(root.join("pipelines/emulator.toml"), &p).unwrap();
    let p = p.to_str().unwrap();
    let vars = [
        ("EMULATOR_URL", emu.url().to_string()),
        ("EMULATOR_TOKEN", emu.config().token.clone()),
        ("AURINKO_TOKEN_101", emu.aurinko_token("101")),
        ("AURINKO_TOKEN_102", emu.aurinko_token("102")),
    ];
    let run = |args: &[&str], with_vars: bool| {
        let mut c = Command::new(crate::bin());
        c.args(args);
        for (k, v) in &vars {
            if with_vars {
                c.env(k, v);
            } else {
                c.env_remove(k);
            }
        }
        c.output().unwrap()
    };
    let o = run(&["sync", p], true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for args in [
        vec!["query", p, "SELECT count(*) FROM contacts"],
        vec!["status", p],
        vec!["state", "show", p],
    ] {
        let o = run(&args, false);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = run(&["sync", p], false);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("EMULATOR_URL"));
}

/// Every command that asks before it changes something takes `-y` as well as `--yes`.
#[test]
fn every_confirmation_takes_dash_y() {
    for cmd in [&["apply"][..], &["state", "reset"], &["state", "drop"]] {
        let out = Command::new(crate::bin())
            .args(cmd)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("-y, --yes"), "{cmd:?}:\n{text}");
    }
}

/// The help says what the tool does today: CardDAV in the top-level and `apply` help,
/// every table in `query --help`, and a description for every option of every command.
#[test]
fn help_names_every_provider_and_table_and_describes_every_option() {
    let help = |args: &[&str]| {
        let o = Command::new(crate::bin()).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    assert!(
        help(&["--help"]).contains("CardDAV"),
        "{}",
        help(&["--help"])
    );
    assert!(help(&["apply", "--help"]).contains("CardDAV"));
    let query = help(&["query", "--help"]);
    for t in [
        "contacts",
        "contact_changes",
        "sync_runs",
        "writeback_results",
        "contact_photos",
        "contact_emails",
        "contact_phones",
    ] {
        assert!(query.contains(t), "query --help lacks {t}:\n{query}");
    }
    // An option's description stands after it on its line (the short layout) or on the
    // next line (the long one); an option without one has only `[default: …]` there.
    for cmd in [
        "demo",
        "sync",
        "status",
        "query",
        "plan",
        "apply",
        "emulator",
        "schema",
        "state show",
        "state reset",
        "state drop",
    ] {
        let args: Vec<&str> = cmd.split(' ').chain(["--help"]).collect();
        let text = help(&args);
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            // Options stand 2 or 6 columns in; deeper lines continue a description.
            if !(2..=6).contains(&(l.len() - t.len())) || !t.starts_with('-') {
                continue;
            }
            let same_line = t.split_once("  ").map(|(_, d)| d.trim()).unwrap_or("");
            let next = lines.get(i + 1).map(|n| n.trim()).unwrap_or("");
            let described = if same_line.is_empty() {
                next
            } else {
                same_line
            };
            assert!(
                !described.is_empty() && !described.starts_with('[') && !described.starts_with('-'),
                "`{cmd} --help`: {t} has no description:\n{text}"
            );
        }
    }
}

/// The dev-dependencies turn on no feature of a normal dependency that the normal build
/// lacks, so `cargo run --release --example …` after `cargo build --release` compiles the
/// examples only, not the dependency tree again (a changed feature set of `serde` rebuilt
/// 68 crates above it).
#[test]
fn the_dev_dependencies_change_no_feature_of_the_build() {
    let tree = |edges: &str| {
        let o = Command::new(env!("CARGO"))
            .args(["tree", "--offline", "--target", "all", "--prefix", "none"])
            .args(["-e", edges, "-f", "{p} {f}"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // A package built for the host and the target can have two sets: each is kept.
        let mut features = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        for line in String::from_utf8(o.stdout).unwrap().lines() {
            let line = line.trim_end_matches(" (*)");
            // "name vX.Y.Z[ (proc-macro)] feature,feature": one line per package.
            let mut parts = line.splitn(3, ' ');
            let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
                continue;
            };
            if version.starts_with('v') && !line.contains(" feature \"") {
                let rest = parts.next().unwrap_or("").replace("(proc-macro)", "");
                features
                    .entry(format!("{name} {version}"))
                    .or_default()
                    .insert(rest.trim().to_string());
            }
        }
        features
    };
    let build = tree("features,normal,build");
    let with_dev = tree("features,normal,build,dev");
    assert!(build.keys().any(|k| k.starts_with("serde ")), "{build:?}");
    let changed: Vec<String> = build
        .iter()
        .filter(|(p, f)| with_dev.get(*p).is_some_and(|d| d != *f))
        .map(|(p, f)| {
            format!(
                "{p}: {f:?} in the build, {:?} with the dev-dependencies",
                with_dev[p]
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "give the normal dependency these features:\n{}",
        changed.join("\n")
    );
}

/// A bug reaches the user as one line, not an executor's backtrace: a panic inside a
/// runtime task (`debug-panic`, hidden from --help) prints one `internal error` line
/// naming where, the version and where to report it, and the process exits 101.
#[test]
fn a_panic_is_one_bug_report_line_and_exit_101() {
    let out = Command::new(crate::bin())
        .arg("debug-panic")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(101), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let line = lines[0];
    assert!(
        line.starts_with("error: internal error at src/cli/debug.rs:"),
        "{line}"
    );
    assert!(line.contains("index out of bounds"), "{line}");
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    assert!(line.contains("issue tracker"), "{line}");
    assert!(
        !line.contains("stack backtrace") && !line.contains("tokio"),
        "{line}"
    );
    // Not a command for users.
    let help = Command::new(crate::bin()).arg("--help").output().unwrap();
    assert!(
        !String::from_utf8(help.stdout)
            .unwrap()
            .contains("debug-panic")
    );
}
