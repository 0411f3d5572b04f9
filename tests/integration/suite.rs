//! The provider conformance suite: what every provider must do, written once, as plain
//! async functions that take a [`Harness`] (the way object_store's `integration.rs` holds
//! every store to the same functions).
//!
//! | check | what it holds |
//! |---|---|
//! | [`full_extract_equals_truth`] | a first sync is `full` in every account, lands the truth field by field, and a second one changes nothing |
//! | [`incremental_after_mutations_equals_truth`] | after inserts, updates and deletes a sync is `incremental`, counts what changed ([`crate::expected_counts`]) and lands the truth; the change log holds each change once |
//! | [`expired_cursor_resyncs_and_reconciles_deletes`] | a cursor the API no longer honours gives a `resync` that finds the deletions it could not be told about, logs them, and leaves a cursor that works |
//! | [`faults_still_land_exactly`] | 429/503/500, resets and truncated bodies do not change what lands |
//! | [`writeback_round_trip`] | an update applied, then synced: the API holds the written values, the lake equals the API, a new plan is empty |
//! | [`query_output_round_trips`] | what `query --output` writes as CSV, JSON and Parquet, read back as the desired state, plans no change |
//! | [`conflicts`] | a desired state computed before someone else's edit: those rows are `conflict` rows in `writeback_results`, the other writer's values stay, `--force` then overwrites |
//! | [`idempotent_inserts`] | the same insert applied twice, and once more from a lake that never saw it: one contact per account |
//! | [`writes_survive_lost_responses`] | inserts and updates while responses are lost after the server did the work: no insert twice, reruns converge |
//! | [`crash`] | `kill -9` of a `contacts-etl sync` at a random moment, then a rerun: the lake equals the truth, no change row twice, run numbers without gaps |
//!
//! # What the checks run against
//!
//! | provider | backend | accounts × contacts | faults |
//! |---|---|---|---|
//! | `google` | the built-in emulator | 1 × 300, pages of 50 | the emulator's fault layer |
//! | `aurinko` | the built-in emulator | 2 × 150, pages of 50 | the emulator's fault layer |
//! | `google_directory` | the built-in emulator | 1 × (150 domain contacts + 150 profiles), pages of 50 | the emulator's fault layer |
//! | `carddav_radicale` | Radicale 3.9, a real server (tests/python/carddav_server.py) | 2 address books × 40, multigets of 8 | the same fault layer as a reverse proxy in front of it (`emulator::proxy::FaultProxy`) |
//! | `carddav_xandikos` | Xandikos 0.4, a real server | 2 × 40, multigets of 8 | the fault proxy |
//! | `carddav_cyrus` | Cyrus IMAP 3.6's httpd, a real server (scripts/cyrus.sh) | 2 × 40, multigets of 8 | the fault proxy |
//!
//! A real server's truth is what it lists (PROPFIND, then a GET of each member), its
//! mutations plain HTTP PUTs and DELETEs on it (past the proxy), its expired cursor the
//! server's own state behind its sync tokens removed (see
//! [`crate::carddav::CardDavBackend`]). Every check runs for every provider, and each
//! test prints its [`Outcome`]: `passed`, or for the write checks ([`WRITE_CHECKS`]) of a
//! read-only provider (`google_directory`) `not applicable`, which those checks return
//! only after verifying that `plan` and `apply` refuse it at once and send nothing.
//! [`report`] asserts that a check is not applicable exactly there, so a write check
//! cannot quietly stop applying to a provider that writes.
//!
//! # How a provider joins the suite
//!
//! 1. Give the checks a [`Backend`]: a running server with the test's ways to write a
//!    pipeline pointing at it, list its accounts, read its truth, mutate it, expire its
//!    cursor, and inject the shared [`FaultSpec`] faults and count them. For a provider
//!    of the built-in emulator that is an [`Emulated`] (`fn` pointers on the
//!    [`Emulator`]: `<provider>_truth`, `mutate_<provider>`, …); for a real server a
//!    type of its own, with the server behind a `FaultProxy` (as
//!    [`crate::carddav::CardDavBackend`]).
//! 2. Write a `fn <provider>_harness() -> Harness` below: plain data and `fn` pointers
//!    that say how to start that backend, which faults to inject, and one update and one
//!    insert in SQL, each with a predicate that recognises the written values in the
//!    truth. The checks compare the lake with that truth themselves (through
//!    `contacts_etl::verify::diff`), so nothing else in the tests needs to know the
//!    provider.
//! 3. Add one line at the bottom: `conformance!(<provider>, <provider>_harness());`. It
//!    generates one `#[tokio::test]` per check, named `suite::<provider>::<check>`, so
//!    `cargo test suite::<provider>` runs all of them.
//!
//! A new check is one more `pub async fn check(h: &Harness) -> Outcome` here and its name in the list
//! inside `conformance!`; every provider then runs it.
//!
//! Sizes are small (a few hundred contacts, small pages so there are several of them) and
//! every loop is bounded: the emulated providers' checks stay well under a minute of wall
//! time in a debug build on two cores; the real servers' add about two (a server start
//! and a seeding per check, Python serving every request).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig, FaultSpec, MutationSummary, Stats};
use contacts_etl::plan::Mode;
use contacts_etl::plan::apply::{Apply, FromDesired, plan};
use futures::future::BoxFuture;
use rand::Rng;

use crate::{PipelineSpec, assert_ok, expected_counts, sync, write_pipeline};

/// A contact in the unified schema, as the lake and the emulators' truth hold it.
pub type Record = contacts_etl::schema::ContactRecord;

/// What the checks run against: a running server (an emulator, or a real server behind
/// a fault-injecting proxy) and the test's own ways of reading and changing it.
pub trait Backend: Send + Sync {
    /// Writes a pipeline into `dir` whose one source is the provider on this server; the
    /// lake is `dir/lake`.
    fn pipeline(&self, dir: &Path) -> PathBuf;
    /// The accounts the pipeline syncs.
    fn accounts(&self) -> Vec<String>;
    /// The live contacts of one account, as a perfect sync would land them.
    fn truth<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Vec<Record>>;
    /// Random inserts, updates and deletes (in every account).
    fn mutate(
        &self,
        inserts: usize,
        updates: usize,
        deletes: usize,
    ) -> BoxFuture<'_, MutationSummary>;
    /// Makes every cursor the source holds unusable: the next sync must resync, and the
    /// deletions made before this call must not be visible to an incremental read.
    fn expire_cursor(&self) -> BoxFuture<'_, ()>;
    /// Replaces the faults injected into the pipeline's requests (the default: none).
    fn set_faults(&self, faults: FaultSpec);
    /// Counts of the requests the pipeline made, with `fault.<kind>` per injected fault.
    fn stats(&self) -> Stats;
}

/// A backend being started; `None` when it cannot run here.
pub type Starting = BoxFuture<'static, Option<Box<dyn Backend>>>;

/// A provider under test: plain data and `fn` pointers, nothing else.
pub struct Harness {
    /// The provider's name, in messages.
    pub name: &'static str,
    /// The `[[sources]]` name [`Backend::pipeline`] gives it.
    pub source: &'static str,
    /// Contacts per account the checks start from (a few hundred at most).
    pub contacts: usize,
    /// Starts a server holding `contacts` contacts per account, without faults; `None`
    /// when it cannot run here (a real server outside scripts/test.sh: the test skips).
    pub start: fn(contacts: usize) -> Starting,
    /// The faults injected by [`faults_still_land_exactly`], in `--faults` syntax.
    pub faults: &'static str,
    /// How the write-back checks write; `None` for a read-only provider, whose write
    /// checks then assert that `plan` and `apply` refuse at once and report
    /// [`Outcome::NotApplicable`].
    pub writes: Option<Writes>,
}

/// How the write-back checks write to a provider.
pub struct Writes {
    /// A desired state (SQL over the lake) that updates every landed contact of the source.
    pub update_sql: &'static str,
    /// Whether a contact in the truth carries what `update_sql` wrote.
    pub updated: fn(&Record) -> bool,
    /// One desired row (a `SELECT` without `id`) that inserts a contact into `account`,
    /// told apart from other inserts by `tag` (letters and digits).
    pub insert_sql: fn(account: &str, tag: &str) -> String,
    /// Whether a contact in the truth is the one `insert_sql` created with `tag`.
    pub inserted: fn(c: &Record, tag: &str) -> bool,
}

/// What one check concluded; the generated test prints it and asserts the expected one.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// The check is about something the provider does not do (write-back, for a
    /// read-only provider); what it verified instead, in words.
    NotApplicable(String),
    /// The backend cannot run here (a real server outside scripts/test.sh).
    Skipped,
}

/// The checks of write-back: [`Outcome::NotApplicable`] for a provider without
/// [`Harness::writes`], and only for those.
pub const WRITE_CHECKS: [&str; 5] = [
    "writeback_round_trip",
    "query_output_round_trips",
    "conflicts",
    "idempotent_inserts",
    "writes_survive_lost_responses",
];

// ---------------------------------------------------------------------------------------
// The built-in emulator as a backend
// ---------------------------------------------------------------------------------------

/// How a provider of the built-in emulator is set up and driven: `fn` pointers on the
/// running [`Emulator`].
pub struct Emulated {
    /// The emulator's configuration for `contacts` contacts per account, without faults.
    pub emulator: fn(contacts: usize) -> EmulatorConfig,
    /// See [`Backend::pipeline`].
    pub pipeline: fn(dir: &Path, emu: &Emulator) -> PathBuf,
    /// See [`Backend::accounts`].
    pub accounts: fn(emu: &Emulator) -> Vec<String>,
    /// See [`Backend::truth`].
    pub truth: fn(emu: &Emulator, account: &str) -> Vec<Record>,
    /// See [`Backend::mutate`].
    pub mutate:
        fn(emu: &Emulator, inserts: usize, updates: usize, deletes: usize) -> MutationSummary,
    /// See [`Backend::expire_cursor`].
    pub expire_cursor: fn(emu: &Emulator),
}

struct EmulatorBackend {
    emu: Emulator,
    how: Emulated,
}

impl Emulated {
    /// Starts the emulator for `contacts` contacts per account.
    pub fn start(self, contacts: usize) -> Starting {
        Box::pin(async move {
            let emu = Emulator::start((self.emulator)(contacts)).await.unwrap();
            Some(Box::new(EmulatorBackend { emu, how: self }) as Box<dyn Backend>)
        })
    }
}

impl Backend for EmulatorBackend {
    fn pipeline(&self, dir: &Path) -> PathBuf {
        (self.how.pipeline)(dir, &self.emu)
    }
    fn accounts(&self) -> Vec<String> {
        (self.how.accounts)(&self.emu)
    }
    fn truth<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Vec<Record>> {
        Box::pin(std::future::ready((self.how.truth)(&self.emu, account)))
    }
    fn mutate(
        &self,
        inserts: usize,
        updates: usize,
        deletes: usize,
    ) -> BoxFuture<'_, MutationSummary> {
        Box::pin(std::future::ready((self.how.mutate)(
            &self.emu, inserts, updates, deletes,
        )))
    }
    fn expire_cursor(&self) -> BoxFuture<'_, ()> {
        (self.how.expire_cursor)(&self.emu);
        Box::pin(std::future::ready(()))
    }
    fn set_faults(&self, faults: FaultSpec) {
        self.emu.set_faults(faults);
    }
    fn stats(&self) -> Stats {
        self.emu.stats()
    }
}

// ---------------------------------------------------------------------------------------
// The providers. A new one: a harness function and one `conformance!` line at the bottom.
// ---------------------------------------------------------------------------------------

/// Google Domain Shared Contacts: one account (the domain), paged at 50.
pub fn google_harness() -> Harness {
    Harness {
        name: "google",
        source: "shared",
        contacts: 300,
        start: |n| {
            Emulated {
                emulator: crate::google_only,
                pipeline: |dir, emu| {
                    write_pipeline(
                        dir,
                        emu,
                        &PipelineSpec {
                            page_size: 50,
                            ..Default::default()
                        },
                    )
                },
                accounts: |emu| vec![emu.config().google_domain.clone()],
                truth: |emu, _| emu.google_truth().contacts,
                mutate: |emu, i, u, d| emu.mutate_google(i, u, d),
                // Past the 30-day window Google keeps deletion placeholders for: an incremental
                // read could no longer see the deletions, so the source must resync.
                expire_cursor: |emu| emu.advance_clock(31 * 24 * 3600),
            }
            .start(n)
        },
        faults: "429=0.06,503=0.06,500=0.03,reset=0.03,truncate=0.05,retry_after=0",
        writes: Some(Writes {
            update_sql: "SELECT account, id, etag, concat('[suite] ', id) AS notes FROM contacts WHERE source = 'shared'",
            updated: |c| c.notes.as_deref() == Some(format!("[suite] {}", c.id).as_str()),
            insert_sql: insert_with_email,
            inserted: inserted_with_email,
        }),
    }
}

/// Aurinko: two accounts, paged at 50 by the emulator.
pub fn aurinko_harness() -> Harness {
    Harness {
        name: "aurinko",
        source: "crm",
        contacts: 150,
        start: |n| {
            Emulated {
                emulator: |n| EmulatorConfig {
                    aurinko_page_size: 50,
                    ..crate::aurinko_only(2, n)
                },
                pipeline: |dir, emu| {
                    write_pipeline(
                        dir,
                        emu,
                        &PipelineSpec {
                            google: false,
                            aurinko_accounts: emu.aurinko_accounts(),
                            ..Default::default()
                        },
                    )
                },
                accounts: |emu| emu.aurinko_accounts(),
                truth: |emu, account| {
                    emu.aurinko_truth(account)
                        .unwrap_or_else(|| panic!("no Aurinko account {account}"))
                        .contacts
                },
                mutate: |emu, i, u, d| emu.mutate_aurinko(None, i, u, d),
                // Every delta and page token issued so far answers 410 syncToken.expired.
                expire_cursor: |emu| emu.expire_aurinko_tokens(),
            }
            .start(n)
        },
        faults: "429=0.06,503=0.06,500=0.03,reset=0.03,truncate=0.05,retry_after=0",
        writes: Some(Writes {
            update_sql: "SELECT account, id, etag, concat('Suite ', id) AS display_name, concat('[suite] ', id) AS notes FROM contacts WHERE source = 'crm'",
            updated: |c| {
                c.display_name.as_deref() == Some(format!("Suite {}", c.id).as_str())
                    && c.notes.as_deref() == Some(format!("[suite] {}", c.id).as_str())
            },
            insert_sql: |account, tag| {
                format!(
                    "SELECT '{account}' AS account, CAST(NULL AS VARCHAR) AS id, CAST(NULL AS VARCHAR) AS etag, \
                     'Suite Inserted {tag}' AS display_name, 'inserted by the conformance suite' AS notes"
                )
            },
            inserted: |c, tag| {
                c.display_name.as_deref() == Some(format!("Suite Inserted {tag}").as_str())
                    && c.notes.as_deref() == Some("inserted by the conformance suite")
            },
        }),
    }
}

/// Google's directory through the People API (read-only): the emulator's domain
/// contacts and as many profiles, one account (the domain), pages of 50.
pub fn google_directory_harness() -> Harness {
    Harness {
        name: "google_directory",
        source: "directory",
        contacts: 150,
        start: |n| {
            Emulated {
                emulator: |n| EmulatorConfig {
                    directory_profiles: n,
                    people_token_ttl_secs: Some(3600),
                    ..crate::google_only(n)
                },
                pipeline: |dir, emu| crate::directory::pipeline_paged(dir, emu, 50),
                accounts: |emu| vec![emu.config().google_domain.clone()],
                truth: |emu, _| emu.directory_truth(),
                mutate: crate::directory::mutate_both,
                // Past the sync tokens' hour.
                expire_cursor: |emu| emu.advance_clock(7200),
            }
            .start(n)
        },
        faults: "429=0.06,503=0.06,500=0.03,reset=0.03,truncate=0.05,retry_after=0",
        writes: None,
    }
}

/// A real CardDAV server (Radicale or Xandikos, started by tests/python/carddav_server.py)
/// with two address books of `contacts` vCards each, behind the fault proxy.
pub fn carddav_harness(kind: crate::carddav::Kind) -> Harness {
    Harness {
        name: kind.name(),
        source: "addressbook",
        // Each check seeds its own server by plain PUTs (about 30 ms each in Python).
        contacts: 40,
        start: match kind {
            crate::carddav::Kind::Radicale => |n| {
                Box::pin(async move {
                    let b =
                        crate::carddav::CardDavBackend::start(crate::carddav::Kind::Radicale, n)
                            .await?;
                    Some(Box::new(b) as Box<dyn Backend>)
                })
            },
            crate::carddav::Kind::Xandikos => |n| {
                Box::pin(async move {
                    let b =
                        crate::carddav::CardDavBackend::start(crate::carddav::Kind::Xandikos, n)
                            .await?;
                    Some(Box::new(b) as Box<dyn Backend>)
                })
            },
            crate::carddav::Kind::Cyrus => |n| {
                Box::pin(async move {
                    let b = crate::carddav::CardDavBackend::start(crate::carddav::Kind::Cyrus, n)
                        .await?;
                    Some(Box::new(b) as Box<dyn Backend>)
                })
            },
        },
        faults: "429=0.06,503=0.06,500=0.03,reset=0.03,truncate=0.05,retry_after=0",
        writes: Some(Writes {
            update_sql: "SELECT account, id, etag, concat('[suite] ', id) AS notes FROM contacts WHERE source = 'addressbook'",
            updated: |c| c.notes.as_deref() == Some(format!("[suite] {}", c.id).as_str()),
            insert_sql: insert_with_email,
            inserted: inserted_with_email,
        }),
    }
}

/// An insert with a name, a note and one work e-mail (the providers whose inserts carry
/// e-mails).
fn insert_with_email(account: &str, tag: &str) -> String {
    format!(
        "SELECT '{account}' AS account, CAST(NULL AS VARCHAR) AS id, CAST(NULL AS VARCHAR) AS etag, \
         'Suite Inserted {tag}' AS display_name, 'inserted by the conformance suite' AS notes, \
         [named_struct('address', 'suite.{tag}@example.org', 'type', 'work', 'label', CAST(NULL AS VARCHAR), 'primary', true, 'display_name', CAST(NULL AS VARCHAR))] AS emails"
    )
}

/// Whether `c` is the contact [`insert_with_email`] made with `tag`.
fn inserted_with_email(c: &Record, tag: &str) -> bool {
    c.display_name.as_deref() == Some(format!("Suite Inserted {tag}").as_str())
        && c.notes.as_deref() == Some("inserted by the conformance suite")
        && c.emails.len() == 1
        && c.emails[0].address.as_deref() == Some(format!("suite.{tag}@example.org").as_str())
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A server for `h` (with `faults` in `--faults` syntax) and a pipeline in a fresh
/// directory pointing at it; `None` when the server cannot run here.
async fn start(
    h: &Harness,
    faults: Option<&str>,
) -> Option<(Box<dyn Backend>, tempfile::TempDir, PathBuf)> {
    let srv = (h.start)(h.contacts).await?;
    if let Some(f) = faults {
        srv.set_faults(FaultSpec::parse(f).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let p = srv.pipeline(dir.path());
    Some((srv, dir, p))
}

/// Every account's truth.
async fn truth(srv: &dyn Backend) -> BTreeMap<String, Vec<Record>> {
    let mut out = BTreeMap::new();
    for a in srv.accounts() {
        let t = srv.truth(&a).await;
        out.insert(a, t);
    }
    out
}

fn total(t: &BTreeMap<String, Vec<Record>>) -> usize {
    t.values().map(Vec::len).sum()
}

/// The lake of the pipeline at `p` equals the truth of every account, field by field, and
/// holds no contact of the source outside those accounts.
async fn assert_lake_equals_truth(h: &Harness, p: &Path, srv: &dyn Backend, context: &str) {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let t = truth(srv).await;
    for (account, truth) in &t {
        let landed = lake.contacts_of(h.source, account).await.unwrap();
        let d = contacts_etl::verify::diff(&landed, truth);
        assert!(
            d.is_empty(),
            "{} {context}: account {account}: {} differences, first 5: {:#?}",
            h.name,
            d.len(),
            &d[..d.len().min(5)]
        );
        assert_eq!(landed.len(), truth.len(), "{} {context}: {account}", h.name);
    }
    let all = count(
        p,
        &format!(
            "SELECT count(*) FROM contacts WHERE source = '{}'",
            h.source
        ),
    )
    .await;
    assert_eq!(
        all as usize,
        total(&t),
        "{} {context}: contacts landed outside the source's accounts",
        h.name
    );
}

/// The single integer a query returns.
async fn count(p: &Path, sql: &str) -> i64 {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let b = contacts_etl::sql::query(&lake, sql).await.unwrap();
    let n = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
    n.as_primitive::<arrow::datatypes::Int64Type>().value(0)
}

/// Every row of a query, each column as text ("" for null).
async fn rows(p: &Path, sql: &str) -> Vec<Vec<String>> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let mut out = Vec::new();
    for b in contacts_etl::sql::query(&lake, sql).await.unwrap() {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        if s.is_null(i) {
                            String::new()
                        } else {
                            s.value(i).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// (upserted, deleted) summed over the report's accounts, after asserting every account
/// of the source ran in `mode`.
fn sums(
    h: &Harness,
    srv: &dyn Backend,
    r: &contacts_etl::sync::SyncReport,
    mode: &str,
) -> (i64, i64) {
    assert_ok(r);
    let mut reported: Vec<&str> = r.accounts.iter().map(|a| a.account.as_str()).collect();
    reported.sort();
    let mut want = srv.accounts();
    want.sort();
    assert_eq!(
        reported,
        want,
        "{}: accounts reported\n{}",
        h.name,
        r.summary()
    );
    assert!(
        r.accounts.iter().all(|a| a.mode == mode),
        "{}: every account should run {mode}\n{}",
        h.name,
        r.summary()
    );
    (
        r.accounts.iter().map(|a| a.upserted).sum(),
        r.accounts.iter().map(|a| a.deleted).sum(),
    )
}

/// Rows of `contact_changes` for the source.
async fn change_rows(h: &Harness, p: &Path, filter: &str) -> i64 {
    count(
        p,
        &format!(
            "SELECT count(*) FROM contact_changes WHERE source = '{}'{filter}",
            h.source
        ),
    )
    .await
}

/// The desired state that inserts one contact per account and tag.
fn inserts_sql(h: &Harness, accounts: &[String], tags: &[String]) -> String {
    let w = h.writes.as_ref().expect("a provider that writes");
    let mut rows = Vec::new();
    for a in accounts {
        for t in tags {
            rows.push((w.insert_sql)(a, t));
        }
    }
    rows.join(" UNION ALL ")
}

/// Asserts every (account, tag) insert exists exactly once in the truth.
async fn assert_inserted_once(
    h: &Harness,
    srv: &dyn Backend,
    accounts: &[String],
    tags: &[String],
    context: &str,
) {
    let w = h.writes.as_ref().expect("a provider that writes");
    let mut wrong = Vec::new();
    for a in accounts {
        let contacts = srv.truth(a).await;
        for t in tags {
            let n = contacts.iter().filter(|c| (w.inserted)(c, t)).count();
            if n != 1 {
                wrong.push(format!("{a}/{t}: {n} times"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} {context}: inserts not present exactly once: {}",
        h.name,
        wrong.join(", ")
    );
}

fn apply_opts<'a>(
    p: &'a Pipeline,
    h: &Harness,
    desired: &str,
    mode: Mode,
) -> Apply<'a, FromDesired> {
    Apply::desired(p, h.source, desired).with_mode(mode)
}

/// How the write checks write to `h`; for a read-only provider the
/// [`Outcome::NotApplicable`] they report, once it is verified that the provider says so
/// itself: after a sync, `plan` and `apply` of a desired state over its rows fail at once
/// with exit 2 and a line saying it is read-only, and the server receives no request.
async fn writes(h: &Harness) -> Result<&Writes, Outcome> {
    if let Some(w) = &h.writes {
        return Ok(w);
    }
    let Some((srv, _dir, p)) = start(h, None).await else {
        return Err(Outcome::Skipped);
    };
    assert_ok(&sync(&p, false).await);
    let before = srv.stats();
    let pipeline = Pipeline::load(&p).unwrap();
    let desired = format!("SELECT * FROM contacts WHERE source = '{}'", h.source);
    let planned = plan(&pipeline, h.source, &desired, Mode::Update).await;
    let applied = Apply::desired(&pipeline, h.source, &desired)
        .with_mode(Mode::Upsert)
        .await
        .map(|r| r.summary());
    let mut said = Vec::new();
    for (what, e) in [
        ("plan", planned.map(|p| p.render(3)).err()),
        ("apply", applied.err()),
    ] {
        let e = e.unwrap_or_else(|| panic!("{}: {what} of a read-only provider ran", h.name));
        assert_eq!(e.exit_code(), 2, "{}: {what}: {e}", h.name);
        assert!(
            e.to_string().contains("read-only"),
            "{}: {what}: {e}",
            h.name
        );
        said.push(e.to_string());
    }
    assert_eq!(
        srv.stats(),
        before,
        "{}: plan or apply of a read-only provider sent a request",
        h.name
    );
    Err(Outcome::NotApplicable(format!(
        "read-only provider; plan and apply refuse with exit 2: {}",
        said[0]
    )))
}

/// The same sync through the binary, as a user (or a scheduler that gets killed) runs it.
fn sync_command(p: &Path) -> Command {
    let mut c = Command::new(crate::bin());
    c.args(["sync", p.to_str().unwrap()]);
    c
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

/// A first sync reads everything (`full` in every account) and lands exactly the truth;
/// a second one, with nothing changed, changes nothing.
pub async fn full_extract_equals_truth(h: &Harness) -> Outcome {
    let Some((srv, _dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    let t = truth(srv).await;
    assert!(total(&t) > 0, "{}: the emulator holds no contacts", h.name);
    let r = sync(&p, false).await;
    let (upserted, deleted) = sums(h, srv, &r, "full");
    assert_eq!(
        (upserted, deleted),
        (total(&t) as i64, 0),
        "{}\n{}",
        h.name,
        r.summary()
    );
    for a in &r.accounts {
        assert_eq!(a.upserted as usize, t[&a.account].len(), "{}", r.summary());
    }
    assert_lake_equals_truth(h, &p, srv, "after the full extract").await;
    assert_eq!(change_rows(h, &p, "").await, total(&t) as i64);

    let r = sync(&p, false).await;
    assert_eq!(sums(h, srv, &r, "incremental"), (0, 0), "{}", r.summary());
    assert_lake_equals_truth(h, &p, srv, "after an idle sync").await;
    assert_eq!(change_rows(h, &p, "").await, total(&t) as i64);
    Outcome::Passed
}

/// Inserts, updates and deletes reach the lake through an incremental read, counted
/// exactly, twice in a row (the second round also touches what the first inserted).
pub async fn incremental_after_mutations_equals_truth(h: &Harness) -> Outcome {
    let Some((srv, _dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    let r = sync(&p, false).await;
    let (full, _) = sums(h, srv, &r, "full");
    let mut logged = full;
    for (round, (i, u, d)) in [(20, 20, 10), (5, 15, 15)].into_iter().enumerate() {
        let m = srv.mutate(i, u, d).await;
        let want = expected_counts(&m);
        assert!(
            want.0 > 0 && want.1 > 0,
            "{}: the mutation did nothing",
            h.name
        );
        let r = sync(&p, false).await;
        assert_eq!(
            sums(h, srv, &r, "incremental"),
            want,
            "{} round {round}: (upserted, deleted)\n{}",
            h.name,
            r.summary()
        );
        assert_lake_equals_truth(h, &p, srv, &format!("after mutation round {round}")).await;
        logged += want.0 + want.1;
        assert_eq!(
            change_rows(h, &p, "").await,
            logged,
            "{} round {round}: the change log holds each change once",
            h.name
        );
        let deleted: BTreeSet<&String> = m.deleted.iter().collect();
        let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
        for a in srv.accounts() {
            for c in lake.contacts_of(h.source, &a).await.unwrap() {
                assert!(
                    !deleted.contains(&c.id),
                    "{}: deleted {} still landed",
                    h.name,
                    c.id
                );
            }
        }
    }
    let r = sync(&p, false).await;
    assert_eq!(sums(h, srv, &r, "incremental"), (0, 0), "{}", r.summary());
    Outcome::Passed
}

/// A cursor the API no longer honours: the source resyncs, reconciles the deletions no
/// incremental read could report, logs each once, and the next run is incremental again.
pub async fn expired_cursor_resyncs_and_reconciles_deletes(h: &Harness) -> Outcome {
    let Some((srv, _dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    assert_ok(&sync(&p, false).await);
    let m = srv.mutate(10, 10, 20).await;
    let want = expected_counts(&m);
    srv.expire_cursor().await;
    let r = sync(&p, false).await;
    let (_, deleted) = sums(h, srv, &r, "resync");
    assert_eq!(
        deleted,
        want.1,
        "{}: deletions reconciled\n{}",
        h.name,
        r.summary()
    );
    assert_lake_equals_truth(h, &p, srv, "after the resync").await;
    assert_eq!(
        change_rows(h, &p, " AND deleted = true").await,
        want.1,
        "{}: each reconciled deletion logged once",
        h.name
    );
    let resyncs = count(
        &p,
        &format!(
            "SELECT count(*) FROM sync_runs WHERE source = '{}' AND mode = 'resync' AND status = 'ok'",
            h.source
        ),
    )
    .await;
    assert_eq!(resyncs as usize, srv.accounts().len(), "{}", h.name);

    // The cursor the resync left behind works.
    let m = srv.mutate(5, 5, 5).await;
    let r = sync(&p, false).await;
    assert_eq!(
        sums(h, srv, &r, "incremental"),
        expected_counts(&m),
        "{}\n{}",
        h.name,
        r.summary()
    );
    assert_lake_equals_truth(h, &p, srv, "after the resync's next run").await;
    Outcome::Passed
}

/// Throttling, server errors, connection resets and truncated bodies on every route: the
/// full and the incremental read still land exactly the truth.
pub async fn faults_still_land_exactly(h: &Harness) -> Outcome {
    let Some((srv, _dir, p)) = start(h, Some(h.faults)).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    let r = sync(&p, false).await;
    sums(h, srv, &r, "full");
    assert_lake_equals_truth(h, &p, srv, "after a full extract under faults").await;
    let m = srv.mutate(20, 20, 10).await;
    let r = sync(&p, false).await;
    assert_eq!(
        sums(h, srv, &r, "incremental"),
        expected_counts(&m),
        "{}\n{}",
        h.name,
        r.summary()
    );
    assert_lake_equals_truth(h, &p, srv, "after an incremental read under faults").await;
    let stats = srv.stats();
    let injected: u64 = stats
        .iter()
        .filter(|(k, _)| k.starts_with("fault."))
        .map(|(_, v)| v)
        .sum();
    assert!(
        injected >= 3,
        "{}: too few faults injected: {stats:?}",
        h.name
    );
    eprintln!("{} faults: {injected} injected", h.name);
    Outcome::Passed
}

/// An update of every contact, applied and then synced: the API holds what was written,
/// `writeback_results` says so, the lake equals the API, and a new plan has nothing to do.
pub async fn writeback_round_trip(h: &Harness) -> Outcome {
    let w = match writes(h).await {
        Ok(w) => w,
        Err(not_applicable) => return not_applicable,
    };
    let Some((srv, _dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let n = total(&truth(srv).await);
    assert!(
        truth(srv).await.values().flatten().all(|c| !(w.updated)(c)),
        "{}: the update must change every contact",
        h.name
    );
    let report = apply_opts(&pipeline, h, w.update_sql, Mode::Update)
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}: {}", h.name, report.summary());
    assert_eq!(report.results.len(), n, "{}: {}", h.name, report.summary());
    let t = truth(srv).await;
    assert_eq!(
        total(&t),
        n,
        "{}: an update changed the number of contacts",
        h.name
    );
    let missing: Vec<&str> = t
        .values()
        .flatten()
        .filter(|c| !(w.updated)(c))
        .map(|c| c.id.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{}: {} contact(s) do not hold the written values, e.g. {:?}",
        h.name,
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_lake_equals_truth(h, &p, srv, "after write-back and a sync").await;
    let ok = count(
        &p,
        &format!(
            "SELECT count(*) FROM writeback_results WHERE apply_id = '{}' AND op = 'update' AND result = 'ok'",
            report.apply_id
        ),
    )
    .await;
    assert_eq!(ok as usize, n, "{}: writeback_results rows", h.name);
    let again = plan(&pipeline, h.source, w.update_sql, Mode::Update)
        .await
        .unwrap();
    assert!(
        again.ops.is_empty(),
        "{}: a second plan should be empty:\n{}",
        h.name,
        again.render(5)
    );
    Outcome::Passed
}

/// The landed contacts of the source, written by `query --output` as CSV (lists and
/// structs as JSON text), JSON lines and Parquet, and each read back by `plan --desired`:
/// every contact unchanged, no operation, no invalid row.
pub async fn query_output_round_trips(h: &Harness) -> Outcome {
    if let Err(not_applicable) = writes(h).await {
        return not_applicable;
    }
    let Some((srv, dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    assert_ok(&sync(&p, false).await);
    let n = total(&truth(&*srv).await);
    let pipeline = Pipeline::load(&p).unwrap();
    for ext in ["csv", "json", "parquet"] {
        let file = dir.path().join(format!("round-trip.{ext}"));
        let out = Command::new(crate::bin())
            .args(["query", p.to_str().unwrap()])
            .arg(format!(
                "SELECT * FROM contacts WHERE source = '{}'",
                h.source
            ))
            .arg("--output")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {ext}: {}",
            h.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let pl = plan(&pipeline, h.source, file.to_str().unwrap(), Mode::Update)
            .await
            .unwrap_or_else(|e| panic!("{} {ext}: {e}", h.name));
        assert!(
            pl.ops.is_empty() && pl.invalid.is_empty(),
            "{} {ext}: {}",
            h.name,
            pl.render(3)
        );
        assert_eq!(pl.unchanged, n, "{} {ext}", h.name);
    }
    Outcome::Passed
}

/// Faults for [`writes_survive_lost_responses`]: besides throttling and server errors, a
/// tenth of responses are cut off after the server did the work (a lost response).
pub const LOST_RESPONSES: &str = "429=0.05,503=0.05,reset=0.03,truncate=0.1,retry_after=0";

/// Write-back while responses get lost after the write happened ([`LOST_RESPONSES`]):
/// inserts (eight per account) and updates of every contact. However the client retries,
/// no insert may land twice; reruns of the same apply (at most six: a write whose reply
/// was lost is not sent again in the same run) converge on every
/// contact updated, and the lake then equals the API.
pub async fn writes_survive_lost_responses(h: &Harness) -> Outcome {
    let w = match writes(h).await {
        Ok(w) => w,
        Err(not_applicable) => return not_applicable,
    };
    let Some((srv, _dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    assert_ok(&sync(&p, false).await);
    let accounts = srv.accounts();
    let tags: Vec<String> = (0..8).map(|i| format!("lost{i}")).collect();
    let n = total(&truth(srv).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let inserts = inserts_sql(h, &accounts, &tags);
    srv.set_faults(FaultSpec::parse(LOST_RESPONSES).unwrap());
    // Each desired state is applied until nothing is left to do, at most six times.
    let mut reruns = Vec::new();
    for (desired, mode) in [
        (inserts.as_str(), Mode::Upsert),
        (w.update_sql, Mode::Update),
    ] {
        for attempt in 0.. {
            match apply_opts(&pipeline, h, desired, mode).await {
                Ok(r) if r.failures() == 0 => break,
                Ok(r) => reruns.push(r.summary()),
                Err(e) => reruns.push(e.to_string()),
            }
            assert!(
                attempt < 5,
                "{}: apply did not converge in six runs:\n{}",
                h.name,
                reruns.join("\n")
            );
        }
        if mode == Mode::Upsert {
            srv.set_faults(FaultSpec::default());
            assert_inserted_once(
                h,
                srv,
                &accounts,
                &tags,
                "after inserts under lost responses",
            )
            .await;
            srv.set_faults(FaultSpec::parse(LOST_RESPONSES).unwrap());
        }
    }
    let stats = srv.stats();
    srv.set_faults(FaultSpec::default());
    assert!(
        stats.get("fault.truncate").copied().unwrap_or(0) > 0,
        "{}: no response was lost: {stats:?}",
        h.name
    );
    let t = truth(srv).await;
    assert_eq!(total(&t), n + accounts.len() * tags.len(), "{}", h.name);
    let missing = t
        .values()
        .flatten()
        .filter(|c| !tags.iter().any(|tag| (w.inserted)(c, tag)) && !(w.updated)(c))
        .count();
    assert_eq!(
        missing, 0,
        "{}: contacts without the written values",
        h.name
    );
    assert_ok(&sync(&p, false).await);
    assert_lake_equals_truth(h, &p, srv, "after write-back under lost responses").await;
    Outcome::Passed
}

/// A desired state saved before someone else edits some contacts: those are conflicts
/// (one `conflict` row each in `writeback_results`), the other writer's values stay, the
/// rest applies; `--force` then overwrites only the conflicts.
pub async fn conflicts(h: &Harness) -> Outcome {
    if let Err(not_applicable) = writes(h).await {
        return not_applicable;
    }
    let Some((srv, dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    let file = dir.path().join("desired.parquet");
    let batches = contacts_etl::sql::query(
        &lake,
        &format!(
            "SELECT account, id, etag, 'mine' AS notes FROM contacts WHERE source = '{}'",
            h.source
        ),
    )
    .await
    .unwrap();
    contacts_etl::sql::write_parquet(&lake, &batches, file.to_str().unwrap())
        .await
        .unwrap();
    let m = srv.mutate(0, 12, 0).await;
    let edited: BTreeSet<String> = m.updated.iter().cloned().collect();
    assert!(!edited.is_empty());
    let before: BTreeMap<String, Record> = truth(srv)
        .await
        .into_values()
        .flatten()
        .filter(|c| edited.contains(&c.id))
        .map(|c| (c.id.clone(), c))
        .collect();
    let n = total(&truth(srv).await);

    let report = apply_opts(&pipeline, h, file.to_str().unwrap(), Mode::Update)
        .await
        .unwrap();
    assert_eq!(report.results.len(), n, "{}: {}", h.name, report.summary());
    assert_eq!(
        report.failures(),
        edited.len(),
        "{}: {}",
        h.name,
        report.summary()
    );
    let conflicted: BTreeSet<String> = rows(
        &p,
        &format!(
            "SELECT id FROM writeback_results WHERE apply_id = '{}' AND result = 'conflict'",
            report.apply_id
        ),
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(conflicted, edited, "{}: conflict rows", h.name);
    let ok = count(
        &p,
        &format!(
            "SELECT count(*) FROM writeback_results WHERE apply_id = '{}' AND result = 'ok'",
            report.apply_id
        ),
    )
    .await;
    assert_eq!(ok as usize, n - edited.len(), "{}", h.name);
    for c in truth(srv).await.values().flatten() {
        match before.get(&c.id) {
            Some(b) => assert!(
                contacts_etl::verify::diff(std::slice::from_ref(c), std::slice::from_ref(b))
                    .is_empty(),
                "{}: {} was overwritten despite its stale etag",
                h.name,
                c.id
            ),
            None => assert_eq!(c.notes.as_deref(), Some("mine"), "{}: {}", h.name, c.id),
        }
    }

    // --force overwrites exactly the conflicts.
    let report = apply_opts(&pipeline, h, file.to_str().unwrap(), Mode::Update)
        .with_force(true)
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}: {}", h.name, report.summary());
    assert_eq!(
        report.results.len(),
        edited.len(),
        "{}: {}",
        h.name,
        report.summary()
    );
    assert!(
        truth(srv)
            .await
            .values()
            .flatten()
            .all(|c| c.notes.as_deref() == Some("mine")),
        "{}: --force left a contact unwritten",
        h.name
    );
    assert_ok(&sync(&p, false).await);
    assert_lake_equals_truth(h, &p, srv, "after the forced apply").await;
    Outcome::Passed
}

/// One insert per account applied twice, then once more from a new lake that has never
/// seen the created contacts: each exists exactly once.
pub async fn idempotent_inserts(h: &Harness) -> Outcome {
    if let Err(not_applicable) = writes(h).await {
        return not_applicable;
    }
    let Some((srv, _dir, p)) = start(h, None).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    assert_ok(&sync(&p, false).await);
    let accounts = srv.accounts();
    let tags = vec!["once".to_string()];
    let desired = inserts_sql(h, &accounts, &tags);
    let n = total(&truth(srv).await);
    let report = apply_opts(&Pipeline::load(&p).unwrap(), h, &desired, Mode::Upsert)
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}: {}", h.name, report.summary());
    assert_eq!(
        report.plan.count(contacts_etl::plan::OpKind::Insert),
        accounts.len(),
        "{}",
        report.plan.render(5)
    );
    assert_inserted_once(h, srv, &accounts, &tags, "after the first apply").await;
    assert_eq!(total(&truth(srv).await), n + accounts.len());

    let report = apply_opts(&Pipeline::load(&p).unwrap(), h, &desired, Mode::Upsert)
        .await
        .unwrap();
    assert_eq!(
        report.results.len(),
        0,
        "{}: {}",
        h.name,
        report.plan.render(5)
    );
    assert_eq!(report.plan.already_applied, accounts.len(), "{}", h.name);
    assert_inserted_once(h, srv, &accounts, &tags, "after the second apply").await;

    // A lake that never saw the inserts (as after a crash before the sync that follows an
    // apply): apply reads the source first and finds the stamped keys.
    let other = tempfile::tempdir().unwrap();
    let q = srv.pipeline(other.path());
    let report = apply_opts(&Pipeline::load(&q).unwrap(), h, &desired, Mode::Upsert)
        .await
        .unwrap();
    assert_eq!(
        report.results.len(),
        0,
        "{}: {}",
        h.name,
        report.plan.render(5)
    );
    assert_inserted_once(h, srv, &accounts, &tags, "after an apply from a fresh lake").await;
    assert_eq!(total(&truth(srv).await), n + accounts.len());
    assert_ok(&sync(&p, false).await);
    assert_lake_equals_truth(h, &p, srv, "after the inserts").await;
    Outcome::Passed
}

/// `kill -9` of a `sync` process at a random moment (in a full extract of an empty lake,
/// then in incremental runs), then a rerun: the lake equals the truth, the change log has
/// no row twice for one run, and completed runs are numbered 1, 2, … without a gap.
pub async fn crash(h: &Harness) -> Outcome {
    let Some(srv) = (h.start)(h.contacts).await else {
        return Outcome::Skipped;
    };
    let srv = &*srv;
    // How long an uninterrupted full run takes, to spread the kills over it.
    let calib = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = sync_command(&srv.pipeline(calib.path())).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut span = t.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let p = srv.pipeline(dir.path());
    let mut killed_mid_run = 0;
    let mut trials = 0;
    // At most four trials; stop after two kills that landed inside a run.
    while trials < 4 && killed_mid_run < 2 {
        if trials > 0 {
            srv.mutate(15, 15, 10).await;
        }
        let mut child = sync_command(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at = rand::rng().random_range(0..span.as_millis().max(1) as u64);
        tokio::time::sleep(Duration::from_millis(at)).await;
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        } else {
            // The run ended first: the calibration was slow (other tests beside it).
            span = (span * 2 / 3).max(Duration::from_millis(50));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let out = sync_command(&p).output().unwrap();
        assert!(
            out.status.success(),
            "{} trial {trials} (killed after {at} ms): the rerun failed: {}",
            h.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let context = format!("trial {trials}, killed after {at} ms, then rerun");
        assert_lake_equals_truth(h, &p, srv, &context).await;
        let dupes = count(
            &p,
            "SELECT count(*) FROM (SELECT source, account, id, _run_id FROM contact_changes GROUP BY 1, 2, 3, 4 HAVING count(*) > 1)",
        )
        .await;
        assert_eq!(dupes, 0, "{} {context}: duplicate change rows", h.name);
        for r in rows(
            &p,
            "SELECT account, count(*), count(DISTINCT seq), max(seq) FROM sync_runs WHERE status = 'ok' GROUP BY account",
        )
        .await
        {
            assert!(
                r[1] == r[2] && r[2] == r[3],
                "{} {context}: account {}: sync_runs seqs not contiguous: {} rows, {} distinct, max {}",
                h.name,
                r[0],
                r[1],
                r[2],
                r[3]
            );
        }
        trials += 1;
    }
    eprintln!(
        "{} crash: {trials} trial(s), {killed_mid_run} killed mid-run",
        h.name
    );
    assert!(
        killed_mid_run > 0,
        "{}: no kill landed inside a run in {trials} trials",
        h.name
    );
    Outcome::Passed
}

// ---------------------------------------------------------------------------------------
// Registration: one line per provider.
// ---------------------------------------------------------------------------------------

/// `conformance!(name, harness_expr);` runs every check against one provider, as
/// `suite::name::<check>`.
macro_rules! conformance {
    ($provider:ident, $harness:expr) => {
        mod $provider {
            #[allow(unused_imports)]
            use super::*;
            conformance!(@checks $provider, $harness;
                full_extract_equals_truth,
                incremental_after_mutations_equals_truth,
                expired_cursor_resyncs_and_reconciles_deletes,
                faults_still_land_exactly,
                writeback_round_trip,
                query_output_round_trips,
                conflicts,
                idempotent_inserts,
                crash,
                writes_survive_lost_responses,
            );
        }
    };
    (@checks $provider:ident, $harness:expr; $($(#[$attr:meta])* $check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn $check() {
                let t = std::time::Instant::now();
                let h = $harness;
                let outcome = super::$check(&h).await;
                super::report(&h, stringify!($provider), stringify!($check), &outcome, t.elapsed());
            }
        )+
    };
}

/// Prints what a check concluded (a line for each, whatever it was) and asserts that it
/// is what `h` expects: not applicable exactly for the write checks of a read-only
/// provider.
pub fn report(h: &Harness, provider: &str, check: &str, outcome: &Outcome, took: Duration) {
    let line = match outcome {
        Outcome::Passed => "passed".to_string(),
        Outcome::NotApplicable(why) => format!("not applicable: {why}"),
        Outcome::Skipped => "skipped: the backend cannot run here".to_string(),
    };
    eprintln!("conformance {provider}::{check} {line} in {took:.2?}");
    if *outcome != Outcome::Skipped {
        let read_only_write = h.writes.is_none() && WRITE_CHECKS.contains(&check);
        assert_eq!(
            matches!(outcome, Outcome::NotApplicable(_)),
            read_only_write,
            "{provider}::{check}: {line}"
        );
    }
}

conformance!(google, google_harness());
conformance!(aurinko, aurinko_harness());
conformance!(google_directory, google_directory_harness());
conformance!(
    carddav_radicale,
    carddav_harness(crate::carddav::Kind::Radicale)
);
conformance!(
    carddav_xandikos,
    carddav_harness(crate::carddav::Kind::Xandikos)
);
conformance!(carddav_cyrus, carddav_harness(crate::carddav::Kind::Cyrus));
