//! The integration test binary: real HTTP over loopback against the emulators, real Delta
//! tables on local disk and on a real S3 server (SeaweedFS, started by scripts/test.sh),
//! read back by a real reader.
//!
//! Under `scripts/test.sh` (`CONTACTS_ETL_REQUIRE_S3=1`, `CONTACTS_ETL_REQUIRE_PY=1`) a
//! test that needs S3 or the Python helpers fails when they are missing; under a plain
//! `cargo test` it says so and skips.

mod accounts;
mod aurinko;
mod carddav;
mod cli;
mod conformance;
mod damage;
mod directory;
mod exact;
mod google;
mod hostile;
mod hostile_dav;
mod interrupt;
mod lake;
mod operator;
mod output;
mod photos;
mod review;
mod sql;
mod state;
mod storage;
mod suite;
mod writeback;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::schema::ContactRecord;
use contacts_etl::sync::{SyncOptions, SyncReport, run_sync};

/// The S3 settings exported by scripts/test.sh, or `None` (skip) outside it.
pub fn require_s3(test: &str) -> Option<HashMap<String, String>> {
    match std::env::var("AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect(),
        ),
        _ if std::env::var("CONTACTS_ETL_REQUIRE_S3").is_ok() => panic!(
            "{test}: needs the S3 server (AWS_ENDPOINT), which scripts/test.sh starts; it is not reachable"
        ),
        _ => {
            eprintln!("SKIPPED {test}: no S3 server (run scripts/test.sh)");
            None
        }
    }
}

/// The Python with the helper packages, or `None` (skip) outside scripts/test.sh.
pub fn require_python(test: &str) -> Option<PathBuf> {
    match std::env::var("CONTACTS_ETL_PYTHON") {
        Ok(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ if std::env::var("CONTACTS_ETL_REQUIRE_PY").is_ok() => panic!(
            "{test}: needs the Python helpers (CONTACTS_ETL_PYTHON), which scripts/test.sh installs"
        ),
        _ => {
            eprintln!("SKIPPED {test}: no Python helpers (run scripts/test.sh)");
            None
        }
    }
}

/// A unique S3 lake URL in the test bucket.
pub fn s3_lake_url(name: &str) -> String {
    let bucket = std::env::var("AWS_BUCKET").unwrap_or_else(|_| "etl-test".into());
    format!("s3://{bucket}/{name}-{}/", uuid::Uuid::new_v4().simple())
}

/// The built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_contacts-etl")
}

/// What a test pipeline contains.
pub struct PipelineSpec<'a> {
    pub lake_url: &'a str,
    pub google: bool,
    pub aurinko_accounts: Vec<String>,
    pub page_size: u32,
    pub extra_google: &'a str,
    pub bad_token_for: Option<&'a str>,
    /// Lines added to the `[lake]` table.
    pub lake_extra: &'a str,
    /// A `google_directory` source named `directory` (pages of `page_size`).
    pub directory: bool,
}

impl Default for PipelineSpec<'_> {
    fn default() -> Self {
        PipelineSpec {
            lake_url: "lake",
            google: true,
            aurinko_accounts: vec![],
            page_size: 500,
            extra_google: "",
            bad_token_for: None,
            lake_extra: "",
            directory: false,
        }
    }
}

/// Writes a pipeline for an emulator into `dir`, with the emulator's tokens in files.
pub fn write_pipeline(dir: &Path, emu: &Emulator, spec: &PipelineSpec) -> PathBuf {
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/google.token"), &emu.config().token).unwrap();
    let mut text = format!("[lake]\nurl = \"{}\"\n{}\n", spec.lake_url, spec.lake_extra);
    if spec.google {
        text.push_str(&format!(
            "\n[[sources]]\nname = \"shared\"\nprovider = \"google\"\ndomain = \"{}\"\nbase_url = \"{}\"\npage_size = {}\nconcurrency = 4\nretry_base_ms = 5\nmax_retries = 12\n{}\n",
            emu.config().google_domain,
            emu.url(),
            spec.page_size,
            if spec.extra_google.contains("auth") { spec.extra_google.to_string() } else { format!("auth = {{ kind = \"bearer\", token_file = \"secrets/google.token\" }}\n{}", spec.extra_google) }
        ));
    }
    if !spec.aurinko_accounts.is_empty() {
        let mut accts = Vec::new();
        for a in &spec.aurinko_accounts {
            let tok = if spec.bad_token_for == Some(a.as_str()) {
                "wrong-token".to_string()
            } else {
                emu.aurinko_token(a)
            };
            std::fs::write(dir.join(format!("secrets/aurinko-{a}.token")), tok).unwrap();
            accts.push(format!(
                "{{ id = \"{a}\", token_file = \"secrets/aurinko-{a}.token\" }}"
            ));
        }
        text.push_str(&format!(
            "\n[[sources]]\nname = \"crm\"\nprovider = \"aurinko\"\nbase_url = \"{}\"\naccounts = [{}]\nconcurrency = 4\nretry_base_ms = 5\nmax_retries = 12\n",
            emu.url(),
            accts.join(", ")
        ));
    }
    if spec.directory {
        std::fs::write(dir.join("secrets/people.token"), &emu.config().token).unwrap();
        text.push('\n');
        text.push_str(&directory::directory_source(emu, spec.page_size));
    }
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a sync and returns its report.
pub async fn sync(path: &Path, full_refresh: bool) -> SyncReport {
    let p = Pipeline::load(path).unwrap();
    run_sync(
        &p,
        &SyncOptions {
            full_refresh,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Asserts `landed` equals `truth` row by row and field by field, naming `what` and the
/// first differences.
pub fn assert_same_rows(what: &str, landed: &[ContactRecord], truth: &[ContactRecord]) {
    let d = contacts_etl::verify::diff(landed, truth);
    assert!(
        d.is_empty(),
        "{what}: {} differences, first 5: {:#?}",
        d.len(),
        &d[..d.len().min(5)]
    );
    assert_eq!(landed.len(), truth.len(), "{what}");
}

/// Asserts the lake equals the emulator's truth for every account of the pipeline.
pub async fn assert_lake_matches(path: &Path, emu: &Emulator) {
    let p = Pipeline::load(path).unwrap();
    let lake = contacts_etl::sync::lake_of(&p).unwrap();
    let domain = &emu.config().google_domain;
    for s in &p.sources {
        match s.provider.as_str() {
            "google" => {
                let landed = lake.contacts_of(&s.name, domain).await.unwrap();
                assert_same_rows("google", &landed, &emu.google_truth().contacts);
            }
            "aurinko" => {
                let source = contacts_etl::providers::build(s, &p.dir()).unwrap();
                for a in source.accounts() {
                    let landed = lake.contacts_of(&s.name, &a).await.unwrap();
                    let truth = emu.aurinko_truth(&a).unwrap().contacts;
                    assert_same_rows(&format!("aurinko {a}"), &landed, &truth);
                }
            }
            "google_directory" => {
                let landed = lake.contacts_of(&s.name, domain).await.unwrap();
                assert_same_rows("google_directory", &landed, &emu.directory_truth());
            }
            other => panic!("no truth for provider {other}"),
        }
    }
}

/// An emulator with only Google contacts.
pub fn google_only(n: usize) -> EmulatorConfig {
    EmulatorConfig {
        google_contacts: n,
        aurinko_accounts: 0,
        aurinko_contacts: 0,
        ..Default::default()
    }
}

/// An emulator with only Aurinko accounts.
pub fn aurinko_only(accounts: usize, n: usize) -> EmulatorConfig {
    EmulatorConfig {
        google_contacts: 0,
        aurinko_accounts: accounts,
        aurinko_contacts: n,
        aurinko_page_size: 100,
        ..Default::default()
    }
}

/// Asserts the report has no failures.
pub fn assert_ok(r: &SyncReport) {
    assert!(r.failed().is_empty(), "{}", r.summary());
}

/// What a sync should report after a mutation: (upserts, deletes). A mutation may update
/// or delete a contact it inserted itself, so count distinct ids.
pub fn expected_counts(m: &contacts_etl::emulator::MutationSummary) -> (i64, i64) {
    use std::collections::HashSet;
    let deleted: HashSet<&String> = m.deleted.iter().collect();
    let inserted: HashSet<&String> = m.inserted.iter().collect();
    let upserts: HashSet<&String> = m
        .inserted
        .iter()
        .chain(&m.updated)
        .filter(|id| !deleted.contains(id))
        .collect();
    (
        upserts.len() as i64,
        deleted.iter().filter(|id| !inserted.contains(*id)).count() as i64,
    )
}

/// Runs `sync --shard i/4` for i in 0..4 as four processes at once and asserts each
/// succeeded.
pub fn sync_four_shards(p: &Path) {
    let children: Vec<_> = (0..4)
        .map(|i| {
            std::process::Command::new(bin())
                .args(["sync", p.to_str().unwrap(), "--shard", &format!("{i}/4")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
