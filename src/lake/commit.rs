//! Landing finished runs, many accounts at a time (see the module docs of [`super`]).
//!
//! A run of one account goes through two steps:
//! - [`Lake::prepare_run`] (in the account's own task, beside the HTTP work of others):
//!   compares the extract with the landed rows and writes the changed rows into Parquet
//!   files of `contact_changes`. Nothing is committed; an interrupted run leaves only
//!   unreferenced files.
//! - [`Lake::commit_runs`] (one at a time, in the [`super::committer`]): lands a group of
//!   prepared runs in one commit per table, each account with its own application
//!   transaction and cursor inside. It is a builder that returns the new table state and
//!   its metrics, as delta-rs operations do.
//!
//! Recovery of interrupted runs ([`Lake::recover_runs`]) is one pass over every account
//! of the run: one walk of the log for the cursors, one query for the rows, and one
//! commit each to `contacts` and `sync_runs`.

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Add, Transaction};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::future::LocalBoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde_json::json;

use super::checksum;
use super::index::PartitionFiles;
use super::keyed::{self, Keyed, KeyedOutcome, Located, NewRows, Replace};
use super::{
    AccountState, COMMIT_RETRIES, CommitOutcome, Lake, PhotoEtags, RunFigures, TableKind, app_id,
    commit_files, compact, contacts_mark, retry, sql_str, tables, text_column,
};
use crate::error::{Context, Error, Kind, Result};
use crate::model::extract::Extract;
use crate::model::schema::{ContactRecord, records_to_batch};

/// Files copied from `contact_changes` to `contacts` at once.
const COPIES: usize = 8;

/// One account's finished run: its change rows written to files of `contact_changes`,
/// not yet committed. Small: file references and the ids it changes, never rows.
#[derive(Debug)]
pub struct PreparedRun {
    source: String,
    account: String,
    /// The run's number for this account.
    seq: i64,
    cursor: String,
    figures: RunFigures,
    /// The account has no rows in `contacts` yet: its upserts are appended as they are.
    first_load: bool,
    /// Files holding exactly the rows `contacts` gets.
    upsert_files: Vec<Add>,
    /// Every file of the run (upserts and delete markers).
    change_files: Vec<Add>,
    /// Ids whose row in `contacts` is replaced or removed (not on a first load).
    changed: HashSet<String>,
    located: Option<Located>,
}

impl PreparedRun {
    /// The source's name.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The account.
    pub fn account(&self) -> &str {
        &self.account
    }
    /// Bytes of the run's change files (what a group of runs is bounded by).
    pub fn bytes(&self) -> u64 {
        self.change_files.iter().map(|a| a.size.max(0) as u64).sum()
    }
    /// The run's figures (for the record of a failure).
    pub fn figures(&self) -> &RunFigures {
        &self.figures
    }
}

/// An account of a grouped commit whose run did not land in full.
#[derive(Debug)]
pub struct RunFailure {
    pub source: String,
    pub account: String,
    pub error: Error,
    /// The run's changes, cursor and transaction landed in `contact_changes`, and only
    /// `contacts` or `sync_runs` are behind: the next sync replays the run (and records
    /// its one final status then). Otherwise nothing of the run landed.
    pub changes_landed: bool,
}

/// What [`Lake::commit_runs`] did.
#[derive(Debug, Default)]
pub struct CommitMetrics {
    /// Accounts whose run landed in every table, with what it did.
    pub landed: Vec<(String, String, CommitOutcome)>,
    /// Accounts whose run did not land in full.
    pub failed: Vec<RunFailure>,
    /// Failed runs recorded in `sync_runs` (as `failed`, without a seq).
    pub failures_recorded: usize,
    /// Data files the group added to `contact_changes`.
    pub change_files: usize,
    /// What the group's keyed step did to `contacts`.
    pub contacts: KeyedOutcome,
    /// Milliseconds spent on each table's commit.
    pub changes_ms: u64,
    pub contacts_ms: u64,
    pub runs_ms: u64,
    /// Files of `contact_changes` and `sync_runs` merged away (see [`super::compact`]),
    /// and the milliseconds that took.
    pub compacted: usize,
    pub compact_ms: u64,
}

/// A failed run to record in `sync_runs` (status `failed`, no seq, no cursor).
#[derive(Debug, Clone)]
pub struct FailedRun {
    pub source: String,
    pub account: String,
    pub figures: RunFigures,
}

/// Lands prepared runs (and failure records) of many accounts: one commit per table.
/// Created by [`Lake::commit_runs`]; `.await` it.
#[must_use = "a commit does nothing until it is awaited"]
pub struct CommitRuns<'a> {
    lake: &'a Lake,
    runs: Vec<PreparedRun>,
    failures: Vec<FailedRun>,
}

impl CommitRuns<'_> {
    /// Also records these failed runs in the group's `sync_runs` commit.
    pub fn with_failures(mut self, failures: Vec<FailedRun>) -> Self {
        self.failures.extend(failures);
        self
    }
}

impl<'a> IntoFuture for CommitRuns<'a> {
    type Output = Result<CommitMetrics>;
    type IntoFuture = LocalBoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        async move { self.lake.land(self.runs, self.failures).await }.boxed_local()
    }
}

/// One `sync_runs` row to append: a completed run (with seq, cursor and txn) or a failure.
pub(super) struct RunRow<'a> {
    pub(super) source: &'a str,
    pub(super) account: &'a str,
    pub(super) seq: Option<i64>,
    pub(super) figures: RunFigures,
    pub(super) cursor: Option<&'a str>,
}

/// A completed run as its `contact_changes` commit records it (for a replay).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RunMeta {
    id: String,
    seq: i64,
    cursor: Option<String>,
    figures: RunFigures,
}

/// The accounts' states at the start of a run, after interrupted runs were replayed.
pub struct RunStates {
    runs: DeltaTable,
    txns: Arc<HashMap<String, i64>>,
    files: Arc<PartitionFiles>,
    /// Accounts whose interrupted run cannot be replayed, and why.
    broken: HashMap<String, String>,
}

impl RunStates {
    /// One account's completed state: the last run's seq and the cursor to go on from.
    pub async fn state(&self, source: &str, account: &str) -> Result<AccountState> {
        let app = app_id(source, account);
        if let Some(why) = self.broken.get(&app) {
            return Err(Error::lake(why));
        }
        let seq = self.txns.get(&app).copied().unwrap_or(0);
        if seq == 0 {
            return Ok(AccountState::default());
        }
        let files = self
            .files
            .get(&(source.to_string(), account.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let cursor = keyed::run_cursor(&self.runs, files, seq).await?;
        Ok(AccountState { seq, cursor })
    }
}

impl Lake {
    /// Compares one account's extract with its landed rows and writes the changes (see
    /// the module docs); `figures` carries the run's counters, upserted/deleted are
    /// filled in here.
    ///
    /// Rows stream from the extract (spilled on local disk) through the change filter
    /// into Parquet files as they come, so memory does not grow with the account.
    pub async fn prepare_run(
        &self,
        source: &str,
        account: &str,
        state: &AccountState,
        extract: Extract,
        mut figures: RunFigures,
    ) -> Result<PreparedRun> {
        let app = app_id(source, account);
        let t0 = std::time::Instant::now();
        let wanted = ids_to_compare(&extract, &app)?;
        let landed = self
            .landed_for_run(source, account, wanted.as_ref())
            .await?;
        drop(wanted);
        tracing::debug!(
            app,
            ms = t0.elapsed().as_millis() as u64,
            rows = landed.etags.len(),
            "read the landed etags"
        );
        let changes_table = match self.seen(TableKind::ContactChanges) {
            Some(t) => t,
            None => self.open_or_create(TableKind::ContactChanges).await?,
        };
        // The writer is made at the first changed row: making one parses the table's
        // schema, a fixed cost that thousands of unchanged accounts paid for nothing.
        let mut changes_writer = None;
        let partition = super::partition_values(source, account);
        let upserts = write_upserts(
            &extract,
            &landed,
            &app,
            (&mut changes_writer, &|| {
                self.streaming_writer(&changes_table)
            }),
            &partition,
        )
        .await?;
        let deletes = deletes_of(&extract, &landed.etags, &upserts.seen);
        let Upserts {
            count: upserted,
            mut changed,
            ..
        } = upserts;
        figures.upserted = upserted;
        figures.deleted = deletes.len() as i64;
        // The upserts' files hold exactly the rows contacts gets: they are copied there.
        let upsert_files = match changes_writer.as_mut() {
            Some(w) => checksum::sealed(w.flush().await?),
            None => vec![],
        };
        let mut change_files = upsert_files.clone();
        if !deletes.is_empty() {
            let rows: Vec<ContactRecord> = deletes
                .iter()
                .map(|id| ContactRecord {
                    source: source.into(),
                    account: account.into(),
                    id: id.clone(),
                    deleted: true,
                    _run_id: figures.run_id.clone(),
                    _synced_at: figures.started_at_us,
                    ..Default::default()
                })
                .collect();
            changed.extend(deletes);
            // Delete rows go to their own file, written only when there are some.
            let mut w = self.streaming_writer(&changes_table)?;
            w.write(records_to_batch(&rows)?).await?;
            change_files.extend(checksum::sealed(w.flush().await?));
        }
        tracing::debug!(
            app,
            ms = t0.elapsed().as_millis() as u64,
            "wrote the change files"
        );
        figures.status = "ok".into();
        Ok(PreparedRun {
            source: source.into(),
            account: account.into(),
            seq: state.seq + 1,
            cursor: extract.cursor,
            figures,
            first_load: landed.first_load,
            upsert_files,
            change_files,
            changed,
            located: landed.located,
        })
    }

    /// The account's landed rows a run compares with: all of them (`wanted` is `None`),
    /// or those of the ids in `wanted`.
    async fn landed_for_run(
        &self,
        source: &str,
        account: &str,
        wanted: Option<&HashSet<String>>,
    ) -> Result<Landed> {
        // The tables as this process last saw them: nothing but this account's own runs
        // changes its partition (another sync of it loses the transaction check), and the
        // recovery pass at the start of the run brought them up to date.
        let contacts = match self.seen(TableKind::Contacts) {
            Some(t) => Some(t),
            None => self.open(TableKind::Contacts).await?,
        };
        let files = match &contacts {
            Some(t) => self
                .indexes
                .partitions(TableKind::Contacts, t)?
                .get(&(source.to_string(), account.to_string()))
                .cloned()
                .unwrap_or_default(),
            None => vec![],
        };
        // Whether the account has rows comes from the log, not the data.
        let first_load = files.is_empty();
        // An incremental run that saw no change compares nothing: its files' footers are
        // not read (most accounts of a large fleet, most runs). Their deletion vectors
        // still are, where a file has one: a damaged vector fails every run that touches
        // the account, as it fails every read, rather than a run saying all is well.
        let nothing_to_compare = wanted.is_some_and(HashSet::is_empty);
        let (etags, located) = match (&contacts, first_load) {
            _ if nothing_to_compare => {
                if let Some(t) = &contacts {
                    keyed::check_vectors(t, &files)
                        .await
                        .map_err(|e| e.context("contacts"))?;
                }
                (HashMap::new(), None)
            }
            (Some(t), false) => {
                let (l, at) = keyed::landed_of_ids(t, files, wanted)
                    .await
                    .map_err(|e| e.context("contacts"))?;
                (l, Some(at))
            }
            _ => (HashMap::new(), None),
        };
        Ok(Landed {
            etags,
            located,
            first_load,
        })
    }

    /// Lands prepared runs of any number of accounts: one commit to `contact_changes`
    /// with every account's files, transaction `("<source>/<account>", seq)` and cursor;
    /// then one to `contacts` and one to `sync_runs`. Returns what was
    /// done; an account that lost its transaction to another sync, or whose run did not
    /// land in full, is in [`CommitMetrics::failed`].
    pub fn commit_runs(&self, runs: Vec<PreparedRun>) -> CommitRuns<'_> {
        CommitRuns {
            lake: self,
            runs,
            failures: vec![],
        }
    }

    async fn land(
        &self,
        runs: Vec<PreparedRun>,
        failures: Vec<FailedRun>,
    ) -> Result<CommitMetrics> {
        let mut m = CommitMetrics::default();
        let t0 = std::time::Instant::now();
        let (runs, lost) = self.commit_changes(runs, &mut m).await;
        m.changes_ms = t0.elapsed().as_millis() as u64;
        if !runs.is_empty() {
            // (The crash tests kill a sync at this line: between the tables of a group.)
            tracing::debug!(accounts = runs.len(), "a group's changes landed");
        }
        // Runs that lost before landing anything are recorded as failed.
        let mut failed_rows: Vec<FailedRun> = failures;
        for (run, error) in lost {
            failed_rows.push(FailedRun::of(&run, &error));
            m.failed.push(RunFailure {
                source: run.source,
                account: run.account,
                error,
                changes_landed: false,
            });
        }
        let t1 = std::time::Instant::now();
        let runs = match self.update_contacts(&runs, &mut m).await {
            Ok(()) => runs,
            Err(e) => {
                // The changes landed: the next sync replays them. Nothing goes to
                // sync_runs for these runs now, so that each keeps one final status.
                m.failed.extend(failed_after_landing(
                    runs,
                    e,
                    "the next sync completes it, but updating contacts failed",
                ));
                vec![]
            }
        };
        m.contacts_ms = t1.elapsed().as_millis() as u64;
        let t2 = std::time::Instant::now();
        let mut rows: Vec<RunRow> = runs
            .iter()
            .map(|r| RunRow {
                source: &r.source,
                account: &r.account,
                seq: Some(r.seq),
                figures: r.figures.clone(),
                cursor: Some(&r.cursor),
            })
            .collect();
        rows.extend(failed_rows.iter().map(|f| RunRow {
            source: &f.source,
            account: &f.account,
            seq: None,
            figures: f.figures.clone(),
            cursor: None,
        }));
        let recorded = self.append_runs(&rows).await;
        m.runs_ms = t2.elapsed().as_millis() as u64;
        drop(rows);
        if recorded.is_ok() {
            self.compact_group(&runs, &mut m).await;
        }
        match recorded {
            Ok(()) => {
                m.failures_recorded = failed_rows.len();
                m.landed.extend(runs.into_iter().map(|r| {
                    let o = CommitOutcome {
                        seq: r.seq,
                        upserted: r.figures.upserted,
                        deleted: r.figures.deleted,
                    };
                    (r.source, r.account, o)
                }));
            }
            Err(e) => {
                m.failed.extend(failed_after_landing(
                    runs,
                    e,
                    "the next sync records it, but appending to sync_runs failed",
                ));
            }
        }
        tracing::debug!(
            landed = m.landed.len(),
            failed = m.failed.len(),
            files = m.change_files,
            changes_ms = m.changes_ms,
            contacts_ms = m.contacts_ms,
            runs_ms = m.runs_ms,
            compacted = m.compacted,
            compact_ms = m.compact_ms,
            "committed a group of runs"
        );
        // The tables are not looked at again here: each commit above kept the state it
        // made (`remember`), and the next group's work brings a table up to date where it
        // needs to.
        Ok(m)
    }

    /// Merges the small files of the landed accounts' partitions of `contact_changes` and
    /// `sync_runs` whose run is due (see [`super::compact`]): one commit per table. The
    /// runs have landed already; a compaction that fails is only logged.
    async fn compact_group(&self, runs: &[PreparedRun], m: &mut CommitMetrics) {
        let due: Vec<(&str, &str)> = runs
            .iter()
            .filter(|r| compact::due(r.seq))
            .map(|r| (r.source.as_str(), r.account.as_str()))
            .collect();
        if due.is_empty() {
            return;
        }
        let t0 = std::time::Instant::now();
        for kind in [TableKind::ContactChanges, TableKind::SyncRuns] {
            match self.compact(kind, &due).await {
                Ok(n) => m.compacted += n,
                Err(e) => {
                    tracing::warn!(table = kind.name(), error = %e, "compaction failed; the next due run tries again")
                }
            }
        }
        m.compact_ms = t0.elapsed().as_millis() as u64;
    }

    /// The group's one commit to `contact_changes`. Returns the runs that landed and the
    /// ones that did not (another sync of the account took its seq, or the commit failed).
    async fn commit_changes(
        &self,
        runs: Vec<PreparedRun>,
        m: &mut CommitMetrics,
    ) -> (Vec<PreparedRun>, Vec<(PreparedRun, Error)>) {
        if runs.is_empty() {
            return (vec![], vec![]);
        }
        let mut runs = runs;
        let mut lost: Vec<(PreparedRun, Error)> = Vec::new();
        // Many writers append to contact_changes at once (groups of other shards); any
        // failure of the commit is tried again: the transaction check before it tells a
        // lost race (another sync of an account took its seq: that account stops) from a
        // transient one.
        let outcome = retry::retry(
            "committing a group of runs to contact_changes",
            |_: &Error| true,
            async |_| {
                let changes = self.open_or_create(TableKind::ContactChanges).await?;
                let txns = self.indexes.txns(TableKind::ContactChanges, &changes).await?;
                let (fresh, taken): (Vec<_>, Vec<_>) = std::mem::take(&mut runs)
                    .into_iter()
                    .partition(|r| {
                        txns.get(&app_id(&r.source, &r.account)).copied().unwrap_or(0) == r.seq - 1
                    });
                lost.extend(taken.into_iter().map(|r| {
                    let e = Error::concurrent(format!(
                        "{}: another sync of this account committed run {} first; nothing of this run was kept. Rerun to continue from where it stopped",
                        app_id(&r.source, &r.account),
                        r.seq
                    ));
                    (r, e)
                }));
                runs = fresh;
                if runs.is_empty() {
                    return Ok(0);
                }
                let files: Vec<Add> = runs
                    .iter()
                    .flat_map(|r| r.change_files.iter().cloned())
                    .collect();
                let metas: Vec<RunMeta> = runs
                    .iter()
                    .map(|r| RunMeta {
                        id: app_id(&r.source, &r.account),
                        seq: r.seq,
                        cursor: Some(r.cursor.clone()),
                        figures: r.figures.clone(),
                    })
                    .collect();
                let run_id = runs.iter().map(|r| r.figures.run_id.as_str()).max().unwrap_or("");
                let props = CommitProperties::default()
                    .with_metadata([
                        ("app.runs".to_string(), json!(metas)),
                        ("app.run_id".to_string(), json!(run_id)),
                    ])
                    .with_application_transactions(
                        runs.iter()
                            .map(|r| Transaction::new(app_id(&r.source, &r.account), r.seq))
                            .chain(runs.iter().filter(|r| !r.change_files.is_empty()).map(
                                |r| {
                                    let app = app_id(&r.source, &r.account);
                                    Transaction::new(contacts_mark(&app), r.seq)
                                },
                            ))
                            .collect(),
                    )
                    .with_max_retries(COMMIT_RETRIES);
                let t0 = std::time::Instant::now();
                let t = commit_files(&changes, &files, props)
                    .await
                    .map_err(Error::from)?;
                self.remember(TableKind::ContactChanges, t, t0, "committed to a table");
                Ok(files.len())
            },
        )
        .await;
        match outcome {
            Ok(n) => {
                m.change_files = n;
                (runs, lost)
            }
            Err(e) => {
                let e = Arc::new(e);
                lost.extend(runs.into_iter().map(|r| {
                    let err = Error::with_source(
                        Kind::Lake,
                        format!(
                            "{}: committing run {} to contact_changes",
                            app_id(&r.source, &r.account),
                            r.seq
                        ),
                        e.clone(),
                    );
                    (r, err)
                }));
                (vec![], lost)
            }
        }
    }

    /// The group's one commit to `contacts`: first loads append their files, later runs
    /// replace their changed ids (see [`keyed`]). The upserts' files are copied from
    /// `contact_changes` rather than encoded a second time.
    async fn update_contacts(&self, runs: &[PreparedRun], m: &mut CommitMetrics) -> Result<()> {
        let touched: Vec<&PreparedRun> = runs
            .iter()
            .filter(|r| r.first_load || !r.changed.is_empty())
            .collect();
        if touched.is_empty() {
            return Ok(());
        }
        if touched.iter().any(|r| !r.first_load) {
            self.prepare_contacts().await?;
        }
        futures::stream::iter(touched.iter().filter(|r| !r.upsert_files.is_empty()))
            .map(|r| async move {
                self.copy_files(
                    TableKind::ContactChanges,
                    TableKind::Contacts,
                    &r.upsert_files,
                )
                .await
                .map_err(|e| e.context(format!("{}, run {}", app_id(&r.source, &r.account), r.seq)))
            })
            .buffer_unordered(COPIES)
            .try_collect::<Vec<()>>()
            .await?;
        let replaces: Vec<Option<Replace>> = touched
            .iter()
            .map(|r| {
                (!r.first_load).then(|| Replace {
                    keys: &r.changed,
                    new: NewRows::Files(&r.upsert_files),
                    located: r.located.as_ref(),
                })
            })
            .collect();
        let steps: Vec<Keyed> = touched
            .iter()
            .zip(&replaces)
            .map(|(r, step)| Keyed {
                source: &r.source,
                account: &r.account,
                step: step.as_ref(),
                appended: if r.first_load { &r.upsert_files } else { &[] },
                seq: Some(r.seq),
            })
            .collect();
        let run_id = runs
            .iter()
            .map(|r| r.figures.run_id.as_str())
            .max()
            .unwrap_or("");
        m.contacts = self
            .apply_group(TableKind::Contacts, &steps, run_id)
            .await?;
        Ok(())
    }

    /// Appends rows to `sync_runs` in one commit, with the transaction of each completed
    /// run; a run whose seq is recorded already (a replay, a retry) is skipped.
    pub(super) async fn append_runs(&self, rows: &[RunRow<'_>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let run_id = rows
            .iter()
            .map(|r| r.figures.run_id.as_str())
            .max()
            .unwrap_or("");
        retry::retry("sync_runs", Error::is_commit_conflict, async |_| {
            let table = self.open_or_create(TableKind::SyncRuns).await?;
            let txns = self.indexes.txns(TableKind::SyncRuns, &table).await?;
            let todo: Vec<&RunRow> = rows
                .iter()
                .filter(|r| {
                    r.seq.is_none_or(|seq| {
                        txns.get(&app_id(r.source, r.account)).copied().unwrap_or(0) < seq
                    })
                })
                .collect();
            if todo.is_empty() {
                return Ok(());
            }
            let batches = todo
                .iter()
                .map(|r| tables::run_batch(r.source, r.account, r.seq, &r.figures, r.cursor))
                .collect::<Result<Vec<_>>>()?;
            let props = CommitProperties::default()
                .with_application_transactions(
                    todo.iter()
                        .filter_map(|r| {
                            r.seq
                                .map(|s| Transaction::new(app_id(r.source, r.account), s))
                        })
                        .collect(),
                )
                .with_metadata([("app.run_id".to_string(), json!(run_id))]);
            // One batch per account, so one open file at a time.
            self.append_batches(TableKind::SyncRuns, &table, &batches, props)
                .await
                .map_err(Error::from)
        })
        .await
        .map_err(|e| e.context("appending to sync_runs"))
    }

    /// Brings every given account to a completed state, in one pass: runs whose changes
    /// committed but whose `contacts` update or `sync_runs` row did not are replayed
    /// together (one query for their rows, one commit to each table). `contacts` is held
    /// against `contact_changes` too (see [`contacts_mark`]): a `contacts` that lost a
    /// commit (a half-copied lake, a log entry gone) gets the runs it lacks replayed, and
    /// a table that records a run `contact_changes` does not makes the account fail,
    /// naming the tables. Then returns the states to start from.
    pub async fn recover_runs(&self, accounts: &[(String, String)]) -> Result<RunStates> {
        let changes = self.open_or_create(TableKind::ContactChanges).await?;
        let runs = self.open_or_create(TableKind::SyncRuns).await?;
        let contacts = self.open_or_create(TableKind::Contacts).await?;
        let c = self
            .indexes
            .txns(TableKind::ContactChanges, &changes)
            .await?;
        let r = self.indexes.txns(TableKind::SyncRuns, &runs).await?;
        let k = self.indexes.txns(TableKind::Contacts, &contacts).await?;
        let mut broken = HashMap::new();
        let mut pending: HashMap<String, Pending> = HashMap::new();
        for (s, a) in accounts {
            let app = app_id(s, a);
            let c_seq = c.get(&app).copied().unwrap_or(0);
            let r_seq = r.get(&app).copied().unwrap_or(0);
            let k_seq = k.get(&app).copied();
            let ahead = [("sync_runs", r_seq), ("contacts", k_seq.unwrap_or(0))]
                .into_iter()
                .find(|(_, seq)| *seq > c_seq);
            if let Some((table, seq)) = ahead {
                broken.insert(app.clone(), format!(
                    "{app}: the {table} table records run {seq} but contact_changes only run {c_seq}: contact_changes lost commits (a log entry deleted or not copied); restore the lake's tables together, or drop the account (`state drop`) and sync it again"
                ));
                continue;
            }
            // The runs contacts lacks: those after the one it records, up to the newest
            // with change rows. (A table written before contacts recorded runs has none:
            // only the newest run is replayed, as before.)
            let mut seqs: Vec<i64> = match c.get(&contacts_mark(&app)).copied() {
                Some(mark) if k_seq.is_none_or(|done| done < mark) => {
                    (k_seq.map_or(mark, |done| done + 1)..=mark).collect()
                }
                _ => vec![],
            };
            if c_seq > r_seq && !seqs.contains(&c_seq) {
                seqs.push(c_seq);
            }
            if seqs.is_empty() {
                continue;
            }
            pending.insert(
                app,
                Pending {
                    source: s.as_str(),
                    account: a.as_str(),
                    contacts: seqs,
                    runs: (c_seq > r_seq).then_some(c_seq),
                },
            );
        }
        let (runs, r) = if pending.is_empty() {
            (runs, r)
        } else {
            tracing::warn!(
                accounts = pending.len(),
                "runs were interrupted, or a table lost commits, after their changes committed; replaying them into contacts and sync_runs"
            );
            self.replay(changes, &pending, &mut broken).await?;
            let runs = self.open_or_create(TableKind::SyncRuns).await?;
            let r = self.indexes.txns(TableKind::SyncRuns, &runs).await?;
            (runs, r)
        };
        // Opened after sync_runs: every run recorded there is in this state of contacts.
        self.open(TableKind::Contacts).await?;
        let files = self.indexes.partitions(TableKind::SyncRuns, &runs)?;
        Ok(RunStates {
            runs,
            txns: r,
            files,
            broken,
        })
    }

    /// Replays the `pending` runs: into `contacts` in order of seq (one commit per round),
    /// then the missing `sync_runs` rows.
    async fn replay(
        &self,
        changes: DeltaTable,
        pending: &HashMap<String, Pending<'_>>,
        broken: &mut HashMap<String, String>,
    ) -> Result<()> {
        let wanted: HashSet<(String, i64)> = pending
            .iter()
            .flat_map(|(app, p)| p.contacts.iter().chain(&p.runs).map(|s| (app.clone(), *s)))
            .collect();
        let metas = run_metadata(&changes, &wanted).await?;
        let mut missing: Vec<&(String, i64)> =
            wanted.iter().filter(|w| !metas.contains_key(*w)).collect();
        missing.sort();
        for (app, seq) in missing {
            broken.entry(app.clone()).or_insert_with(|| format!("{app}: run {seq} committed changes but its commit metadata in contact_changes is gone (log cleanup?); run with --full-refresh"));
        }
        let pending: HashMap<&String, &Pending> = pending
            .iter()
            .filter(|(app, _)| !broken.contains_key(*app))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let rows = self.replayed_rows(changes, &pending, &metas).await?;
        self.prepare_contacts().await?;
        let rounds = pending
            .values()
            .map(|p| p.contacts.len())
            .max()
            .unwrap_or(0);
        for round in 0..rounds {
            self.replay_round(round, &pending, &metas, &rows).await?;
        }
        let rows: Vec<RunRow> = pending
            .iter()
            .filter_map(|(app, p)| {
                let meta = &metas[&((*app).clone(), p.runs?)];
                Some(RunRow {
                    source: p.source,
                    account: p.account,
                    seq: Some(meta.seq),
                    figures: meta.figures.clone(),
                    cursor: meta.cursor.as_deref(),
                })
            })
            .collect();
        self.append_runs(&rows).await
    }

    /// Every replayed run's rows of `contact_changes`, in one query.
    async fn replayed_rows(
        &self,
        changes: DeltaTable,
        pending: &HashMap<&String, &Pending<'_>>,
        metas: &HashMap<(String, i64), RunMeta>,
    ) -> Result<ReplayRows> {
        let parts = keyed::partitions_predicate(pending.values().map(|p| (p.source, p.account)));
        let run_ids: HashSet<&str> = metas.values().map(|m| m.figures.run_id.as_str()).collect();
        let run_ids: Vec<String> = run_ids
            .iter()
            .map(|r| format!("'{}'", sql_str(r)))
            .collect();
        let batches = self
            .query_table(
                changes,
                &format!(
                    "SELECT * FROM t WHERE ({parts}) AND _run_id IN ({})",
                    run_ids.join(", ")
                ),
            )
            .await
            .map_err(|e| e.context("contact_changes: reading the runs to replay"))?;
        let schema = TableKind::ContactChanges.schema();
        let batches = batches
            .iter()
            .map(|b| crate::arrow_util::normalize_batch(b, &schema))
            .collect::<Result<Vec<_>>>()?;
        let all = crate::arrow_util::concat(&schema, &batches)?;
        Ok(ReplayRows {
            sources: text_column(&all, "source", "contact_changes")?,
            accounts: text_column(&all, "account", "contact_changes")?,
            runs: text_column(&all, "_run_id", "contact_changes")?,
            all,
        })
    }

    /// Replays the `round`-th pending run of each account into `contacts`, all accounts
    /// in one keyed commit.
    async fn replay_round(
        &self,
        round: usize,
        pending: &HashMap<&String, &Pending<'_>>,
        metas: &HashMap<(String, i64), RunMeta>,
        rows: &ReplayRows,
    ) -> Result<()> {
        let mut replaces: Vec<(&Pending, i64, HashSet<String>, Option<RecordBatch>)> = Vec::new();
        for (app, p) in pending {
            let Some(&seq) = p.contacts.get(round) else {
                continue;
            };
            let meta = &metas[&((*app).clone(), seq)];
            let (keys, upserts) = rows.step_of(p, meta)?;
            // A run without change rows changed nothing in contacts.
            if !keys.is_empty() {
                replaces.push((*p, seq, keys, upserts));
            }
        }
        let steps: Vec<Replace> = replaces
            .iter()
            .map(|(_, _, keys, upserts)| Replace {
                keys,
                new: NewRows::Batch(upserts.clone()),
                located: None,
            })
            .collect();
        let keyed: Vec<Keyed> = replaces
            .iter()
            .zip(&steps)
            .map(|((p, seq, _, _), step)| Keyed {
                source: p.source,
                account: p.account,
                step: Some(step),
                appended: &[],
                seq: Some(*seq),
            })
            .collect();
        let run_id = replaces
            .iter()
            .map(|(p, seq, _, _)| {
                let app = app_id(p.source, p.account);
                metas[&(app, *seq)].figures.run_id.as_str()
            })
            .max()
            .unwrap_or("");
        self.apply_group(TableKind::Contacts, &keyed, run_id)
            .await
            .map(|_| ())
    }
}

/// The rows of `contact_changes` a recovery replays, with the columns that say whose
/// run each row is.
struct ReplayRows {
    all: RecordBatch,
    sources: arrow::array::StringArray,
    accounts: arrow::array::StringArray,
    runs: arrow::array::StringArray,
}

impl ReplayRows {
    /// The keyed step of one run of one account: the ids it replaces, and its upserts.
    fn step_of(
        &self,
        p: &Pending,
        meta: &RunMeta,
    ) -> Result<(HashSet<String>, Option<RecordBatch>)> {
        let mask: BooleanArray = (0..self.all.num_rows())
            .map(|i| {
                Some(
                    self.sources.value(i) == p.source
                        && self.accounts.value(i) == p.account
                        && self.runs.value(i) == meta.figures.run_id,
                )
            })
            .collect();
        let rows = arrow::compute::filter_record_batch(&self.all, &mask)?;
        if rows.num_rows() == 0 {
            return Ok((HashSet::new(), None));
        }
        keyed::split_rows(TableKind::Contacts, &rows, "deleted")
    }
}

/// Every run of `runs` as failed after its changes landed (so the next sync finishes
/// it: `then` says how), the cause `e` shared by all.
fn failed_after_landing(runs: Vec<PreparedRun>, e: Error, then: &str) -> Vec<RunFailure> {
    let e = Arc::new(e);
    runs.into_iter()
        .map(|r| RunFailure {
            error: Error::with_source(
                Kind::Lake,
                format!(
                    "{}: the run's changes landed and {then}",
                    app_id(&r.source, &r.account)
                ),
                e.clone(),
            ),
            source: r.source,
            account: r.account,
            changes_landed: true,
        })
        .collect()
}

impl FailedRun {
    /// The `sync_runs` row of a run that failed with `error` before landing anything.
    fn of(run: &PreparedRun, error: &Error) -> FailedRun {
        let mut figures = run.figures.clone();
        figures.status = "failed".into();
        figures.error = Some(error.to_string());
        figures.finished_at_us = chrono::Utc::now().timestamp_micros();
        FailedRun {
            source: run.source.clone(),
            account: run.account.clone(),
            figures,
        }
    }
}

/// An account's landed rows, as a run compares with them.
struct Landed {
    /// Etag and photo etag by id.
    etags: HashMap<String, (Option<String>, Option<String>)>,
    /// Where each row lies, for the keyed update of `contacts`.
    located: Option<Located>,
    /// The account has no rows in `contacts` yet.
    first_load: bool,
}

/// What [`write_upserts`] wrote.
struct Upserts {
    /// Rows written.
    count: i64,
    /// Ids whose row in `contacts` changes (none on a first load, which appends).
    changed: HashSet<String>,
    /// Every id of the extract (none on a first load, where nothing is compared).
    seen: HashSet<String>,
}

/// The ids a run compares with the landed rows: `None` for a full extract (every landed
/// id; the missing ones are deletes), else the ids the incremental extract carries.
fn ids_to_compare(extract: &Extract, app: &str) -> Result<Option<HashSet<String>>> {
    if extract.mode.is_full() {
        return Ok(None);
    }
    let mut ids: HashSet<String> = extract.deletes.iter().cloned().collect();
    if extract.upserts.num_rows() == 0 {
        return Ok(Some(ids));
    }
    for b in extract.upserts.batches()? {
        let b = b?;
        let col = text_column(&b, "id", &format!("{app}: the extract"))?;
        ids.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(Some(ids))
}

/// Streams the extract's changed rows (new ids, a different etag, or a different photo
/// etag: a server may change a photo without touching the contact's etag) into
/// `writer` as the account's partition, the writer made by `make` at the first such row.
/// A first load writes every row and compares none.
async fn write_upserts(
    extract: &Extract,
    landed: &Landed,
    app: &str,
    (writer, make): (
        &mut Option<RecordBatchWriter>,
        &dyn Fn() -> Result<RecordBatchWriter>,
    ),
    partition: &indexmap::IndexMap<String, delta_kernel::expressions::Scalar>,
) -> Result<Upserts> {
    let what = format!("{app}: the extract");
    let mut out = Upserts {
        count: 0,
        changed: HashSet::new(),
        seen: HashSet::new(),
    };
    if extract.upserts.num_rows() == 0 {
        // Nothing to read back from the spill (opening it is a file and a schema read).
        return Ok(out);
    }
    for b in extract.upserts.batches()? {
        let b = b?;
        let f = if landed.first_load {
            b
        } else {
            let mask = changed_rows(&b, &landed.etags, &mut out.seen, &what)?;
            arrow::compute::filter_record_batch(&b, &mask)?
        };
        if f.num_rows() == 0 {
            continue;
        }
        out.count += f.num_rows() as i64;
        if !landed.first_load {
            let ids = text_column(&f, "id", &what)?;
            out.changed.extend(ids.iter().flatten().map(str::to_string));
        }
        // Every row of a run is one partition: writing it as that partition spares
        // delta-rs's split by partition values, which copies each batch.
        let w = match writer {
            Some(w) => w,
            None => writer.insert(make()?),
        };
        w.write_partition(f, partition, deltalake::writer::WriteMode::Default)
            .await?;
    }
    Ok(out)
}

/// Which rows of `b` differ from what landed (each id is added to `seen`).
fn changed_rows(
    b: &RecordBatch,
    landed: &HashMap<String, (Option<String>, Option<String>)>,
    seen: &mut HashSet<String>,
    what: &str,
) -> Result<BooleanArray> {
    let ids = text_column(b, "id", what)?;
    let etags = text_column(b, "etag", what)?;
    let photo_etags = PhotoEtags::of(b).map_err(|e| e.context(what))?;
    Ok((0..b.num_rows())
        .map(|i| {
            let id = ids.value(i);
            seen.insert(id.to_string());
            let etag = (!etags.is_null(i)).then(|| etags.value(i));
            let photo = photo_etags.get(i);
            Some(landed.get(id).is_none_or(|(e, p)| {
                e.as_deref() != etag || etag.is_none() || p.as_deref() != photo
            }))
        })
        .collect())
}

/// The ids a run deletes: of a full extract, every landed id it did not carry; of an
/// incremental one, the deletes it names that have landed and that it did not also carry.
fn deletes_of(
    extract: &Extract,
    landed: &HashMap<String, (Option<String>, Option<String>)>,
    seen: &HashSet<String>,
) -> Vec<String> {
    if extract.mode.is_full() {
        let mut d: Vec<String> = landed
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        d.sort();
        d
    } else {
        extract
            .deletes
            .iter()
            .filter(|id| landed.contains_key(*id) && !seen.contains(*id))
            .cloned()
            .collect()
    }
}

/// One account's runs to replay.
struct Pending<'a> {
    source: &'a str,
    account: &'a str,
    /// Runs to bring into `contacts`, oldest first.
    contacts: Vec<i64>,
    /// The run whose `sync_runs` row is missing.
    runs: Option<i64>,
}

/// The metadata of the `wanted` runs (`(app, seq)`) from their `contact_changes` commits,
/// in one walk of the log from the newest commit back. Commits of one run (before runs were
/// grouped) carry `app.id`, `app.seq`, `app.cursor` and `app.figures`; grouped ones
/// `app.runs`, a list of them.
async fn run_metadata(
    changes: &DeltaTable,
    wanted: &HashSet<(String, i64)>,
) -> Result<HashMap<(String, i64), RunMeta>> {
    let mut found: HashMap<(String, i64), RunMeta> = HashMap::new();
    let mut history = changes.history(None);
    while found.len() < wanted.len()
        && let Some(ci) = history
            .try_next()
            .await
            .context(Kind::Lake, "contact_changes: reading its log")?
    {
        let mut take = |meta: RunMeta| {
            let key = (meta.id.clone(), meta.seq);
            if wanted.contains(&key) {
                found.entry(key).or_insert(meta);
            }
        };
        if let Some(list) = ci.info.get("app.runs") {
            let metas: Vec<RunMeta> = serde_json::from_value(list.clone()).context(
                Kind::CorruptLake,
                "contact_changes: unreadable run metadata",
            )?;
            metas.into_iter().for_each(&mut take);
        } else if let (Some(id), Some(seq)) = (
            ci.info.get("app.id").and_then(|v| v.as_str()),
            ci.info.get("app.seq").and_then(|v| v.as_i64()),
        ) {
            let figures: RunFigures =
                serde_json::from_value(ci.info.get("app.figures").cloned().unwrap_or_default())
                    .with_context(Kind::CorruptLake, || {
                        format!("contact_changes: {id}: unreadable run figures")
                    })?;
            take(RunMeta {
                id: id.to_string(),
                seq,
                cursor: ci
                    .info
                    .get("app.cursor")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                figures,
            });
        }
    }
    Ok(found)
}
