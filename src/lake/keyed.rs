//! Applying rows keyed by `id` to one partition (`source`, `account`) of a table in one
//! commit, without a join.
//!
//! The rows of a run are few next to the partition, so the work is driven by them: read
//! only the `id` column of the partition's files, find the rows whose id is changed or
//! deleted, and then, per file that holds such rows, either
//! - mark them in a **deletion vector** (when the table has deletion vectors enabled and
//!   the file stays more than half live): only the `id` column is read and a few bytes
//!   written, whatever the partition's size; or
//! - **rewrite** the file's live rows (copy-on-write, the only way for tables read by
//!   engines without deletion-vector support), or drop it when nothing in it is live.
//!
//! The new versions of the changed rows are appended, and everything lands in one commit
//! whose conflict check covers the partition, so a concurrent writer to the same
//! partition makes the commit fail and the whole step is redone from the new snapshot.
//! The step is idempotent: replaying it removes the rows it appended the first time and
//! appends them again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{
    Action, Add, DeletionVectorDescriptor, LogicalFileView, TableFeatures, Transaction,
};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::DeltaWriter;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
#[allow(deprecated)] // still the object-store reader of parquet 59; its successor is not out
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use roaring::RoaringTreemap;
use serde_json::json;

use super::dv::{deleted_rows, write_dvs};
use super::{Lake, TableKind, app_id, retry, sql_str};
use crate::arrow_util::normalize_batch;
use crate::error::{Error, Kind, Result};

/// The Delta table property that lets writers mark rows deleted instead of rewriting.
pub(super) const ENABLE_DV: &str = "delta.enableDeletionVectors";

/// Files whose `id` column is read at once.
const ID_READS: usize = 8;

/// An account's files below this size count as small: the appends of incremental runs.
const SMALL_FILE_BYTES: i64 = 8 << 20;
/// Once an account has this many small files that a keyed step does not touch, the step
/// folds them into the file it writes. Every run adds one, and every later run reads them
/// all: after 60 runs an incremental sync took 213 ms instead of 80.
const COMPACT_AT: usize = 8;

/// Whether `table` may carry deletion vectors: the property is on and the protocol has
/// the feature (a table whose protocol lacks it must not get one, whatever the property).
pub(super) fn dv_enabled(table: &DeltaTable) -> bool {
    let Ok(snapshot) = table.snapshot() else {
        return false;
    };
    let on = snapshot
        .metadata()
        .configuration()
        .get(ENABLE_DV)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let protocol = snapshot.protocol();
    // The kernel's feature type is not public here; its name is the protocol's string.
    on && has_dv(protocol.writer_features()) && has_dv(protocol.reader_features())
}

fn has_dv<T: std::fmt::Display>(features: Option<&[T]>) -> bool {
    features.is_some_and(|f| f.iter().any(|x| x.to_string() == "deletionVectors"))
}

/// What one keyed step changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyedOutcome {
    /// Files whose matching rows were marked in a deletion vector.
    pub marked_files: usize,
    /// Small files folded into the new file (see [`COMPACT_AT`]); those keyed rows were
    /// found in count as rewritten too.
    pub compacted_files: usize,
    /// Files rewritten without their matching rows (or dropped).
    pub rewritten_files: usize,
    /// Rows appended.
    pub appended: usize,
}

/// One account's part of a grouped keyed commit.
pub(super) struct Keyed<'a> {
    pub source: &'a str,
    pub account: &'a str,
    /// Rows replaced by id (none for a first load).
    pub step: Option<&'a Replace<'a>>,
    /// Files appended as they are (a first load's rows).
    pub appended: &'a [Add],
    /// The account's run this step lands, recorded in the commit as the application
    /// transaction `("<source>/<account>", seq)` of the table: recovery holds it against
    /// `contact_changes` to find a commit the table lost. A step of a run the table
    /// records already is skipped. `None` for steps outside the numbered runs.
    pub seq: Option<i64>,
}

impl KeyedOutcome {
    fn add(&mut self, o: KeyedOutcome) {
        self.marked_files += o.marked_files;
        self.compacted_files += o.compacted_files;
        self.rewritten_files += o.rewritten_files;
        self.appended += o.appended;
    }
}

/// What one keyed step does to an account.
pub(super) struct Replace<'a> {
    /// Ids whose live rows go.
    pub keys: &'a HashSet<String>,
    /// Rows that come.
    pub new: NewRows<'a>,
    /// Where the keys' rows are, when [`landed_of_ids`] read them already.
    pub located: Option<&'a Located>,
}

/// The rows a keyed step adds.
pub(super) enum NewRows<'a> {
    /// Rows to write (none, when the step only removes).
    Batch(Option<RecordBatch>),
    /// Files of the table's schema already under the table's location, not yet committed.
    Files(&'a [Add]),
}

impl Lake {
    /// Removes every live row of `step.keys` from one account of `kind` and adds
    /// `step.new`, in one commit (as the account's run `seq`, see [`Keyed::seq`]); redone
    /// from a fresh snapshot when another writer changed the partition.
    pub(super) async fn apply_keys(
        &self,
        kind: TableKind,
        source: &str,
        account: &str,
        step: &Replace<'_>,
        seq: Option<i64>,
        run_id: &str,
    ) -> Result<KeyedOutcome> {
        let steps = [Keyed {
            source,
            account,
            step: Some(step),
            appended: &[],
            seq,
        }];
        self.apply_group(kind, &steps, run_id).await
    }

    /// Applies the keyed steps of many accounts (and the appended files of first loads)
    /// to `kind` in **one** commit whose conflict check covers exactly their partitions;
    /// redone from a fresh snapshot when another writer changed one of them.
    pub(super) async fn apply_group(
        &self,
        kind: TableKind,
        steps: &[Keyed<'_>],
        run_id: &str,
    ) -> Result<KeyedOutcome> {
        if steps.is_empty() {
            return Ok(KeyedOutcome::default());
        }
        let what = match steps {
            [one] => app_id(one.source, one.account),
            many => format!("{} accounts", many.len()),
        };
        let outcome = retry::retry(&what, Error::is_commit_conflict, async |_| {
            let table = self.open_or_create(kind).await?;
            self.apply_group_once(&table, kind, steps, run_id).await
        })
        .await
        .map_err(|e| e.context(format!("{what}: applying changed rows to {}", kind.name())))?;
        tracing::debug!(what, table = kind.name(), ?outcome, "keyed rows applied");
        Ok(outcome)
    }

    async fn apply_group_once(
        &self,
        table: &DeltaTable,
        kind: TableKind,
        steps: &[Keyed<'_>],
        run_id: &str,
    ) -> Result<KeyedOutcome> {
        let t0 = std::time::Instant::now();
        // Runs the table records already (a replay after this step landed) are not
        // applied again.
        let done = if steps.iter().any(|k| k.seq.is_some()) {
            self.indexes.txns(kind, table).await?
        } else {
            Default::default()
        };
        let steps: Vec<&Keyed> = steps
            .iter()
            .filter(|k| {
                k.seq.is_none_or(|seq| {
                    done.get(&app_id(k.source, k.account)).copied().unwrap_or(0) < seq
                })
            })
            .collect();
        let txns: Vec<Transaction> = steps
            .iter()
            .filter_map(|k| {
                k.seq
                    .map(|s| Transaction::new(app_id(k.source, k.account), s))
            })
            .collect();
        let snapshot = table.snapshot()?;
        // `deletion_vectors = false` stops writing vectors to a table that allows them.
        let use_dv = dv_enabled(table) && self.deletion_vectors != Some(false);
        let store = table.log_store().object_store(None);
        let index = self.indexes.partitions(kind, table)?;
        let mut writer = self.streaming_writer(table)?;
        let mut actions: Vec<Action> = Vec::new();
        let mut outcome = KeyedOutcome::default();
        for k in &steps {
            let files = index
                .get(&(k.source.to_string(), k.account.to_string()))
                .cloned()
                .unwrap_or_default();
            if let Some(step) = k.step {
                let o = partition_step(
                    store.clone(),
                    use_dv,
                    files,
                    kind,
                    (k.source, k.account),
                    step,
                    &mut writer,
                    &mut actions,
                )
                .await?;
                outcome.add(o);
                // Closes this partition's file before the next account's (the writer
                // keeps one open per partition): memory of one file, not of the group.
                actions.extend(
                    super::checksum::sealed(writer.flush().await?)
                        .into_iter()
                        .map(Action::Add),
                );
            }
            outcome.appended += appended_rows(k.appended);
            actions.extend(k.appended.iter().cloned().map(Action::Add));
        }
        actions.extend(
            super::checksum::sealed(writer.flush().await?)
                .into_iter()
                .map(Action::Add),
        );
        tracing::debug!(
            table = kind.name(),
            accounts = steps.len(),
            us = t0.elapsed().as_micros() as u64,
            "keyed step: wrote the new rows"
        );
        // A run that changes nothing here still records its transaction.
        if actions.is_empty() && txns.is_empty() {
            return Ok(outcome);
        }
        let partitions = partitions_predicate(steps.iter().map(|k| (k.source, k.account)));
        let operation = DeltaOperation::Merge {
            predicate: Some(partitions.clone()),
            merge_predicate: Some(format!("({partitions}) AND target.id = source.id")),
            matched_predicates: vec![],
            not_matched_predicates: vec![],
            not_matched_by_source_predicates: vec![],
        };
        let props = CommitProperties::default()
            .with_metadata([("app.run_id".to_string(), json!(run_id))])
            .with_application_transactions(txns)
            // delta-rs's conflict check lets commits to other partitions through (shards and
            // accounts commit at once); a real conflict in these partitions fails here and
            // the caller redoes the step from a new snapshot.
            .with_max_retries(super::COMMIT_RETRIES);
        let t1 = std::time::Instant::now();
        let done = CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(snapshot), table.log_store(), operation)
            .await?;
        self.remember(
            kind,
            super::after_commit(table, done),
            t1,
            "committed to a table",
        );
        Ok(outcome)
    }

    /// Turns deletion vectors on for `kind` when they are not (a protocol upgrade to
    /// reader 3 / writer 7 with the `deletionVectors` feature, and the table property).
    pub(super) async fn enable_dv(&self, table: DeltaTable) -> Result<DeltaTable> {
        if dv_enabled(&table) {
            return Ok(table);
        }
        let table = table
            .add_feature()
            .with_feature(TableFeatures::DeletionVectors)
            .with_allow_protocol_versions_increase(true)
            .await?;
        Ok(table
            .set_tbl_properties()
            .with_properties(HashMap::from([(ENABLE_DV.to_string(), "true".to_string())]))
            .await?)
    }
}

/// One account's part of a keyed step: the removes, deletion vectors and rewritten rows
/// that take `step.keys` out of its `files`, and `step.new`. Rewritten rows go to `writer`
/// (shared by the accounts of one commit), actions to `actions`.
#[allow(clippy::too_many_arguments)]
async fn partition_step(
    store: Arc<dyn ObjectStore>,
    use_dv: bool,
    files: Vec<LogicalFileView>,
    kind: TableKind,
    (source, account): (&str, &str),
    step: &Replace<'_>,
    writer: &mut deltalake::writer::RecordBatchWriter,
    actions: &mut Vec<Action>,
) -> Result<KeyedOutcome> {
    let Replace { keys, new, located } = step;
    let all = files.clone();
    // Row positions of the keyed ids, per file: known already when the files are the
    // ones the landed etags were read from, else read.
    let known = located.and_then(|l| l.positions(&files, keys));
    let hits: Vec<(LogicalFileView, Vec<u64>)> = if let Some(mut known) = known {
        files
            .into_iter()
            .filter_map(|f| known.remove(f.path().as_ref()).map(|pos| (f, pos)))
            .collect()
    } else {
        futures::stream::iter(files)
            .map(|f| {
                let store = store.clone();
                async move {
                    let pos = id_positions(store, &f, keys).await?;
                    Ok::<_, Error>((f, pos))
                }
            })
            .buffer_unordered(ID_READS)
            .try_filter(|(_, pos)| futures::future::ready(!pos.is_empty()))
            .try_collect()
            .await?
    };
    let mut marks: Vec<(LogicalFileView, RoaringTreemap)> = Vec::new();
    let mut outcome = KeyedOutcome::default();
    // Once there are enough small files, every one of them is rewritten (without its
    // deleted rows) into the file this step writes.
    let mut small: HashMap<String, &LogicalFileView> = all
        .iter()
        .filter(|f| f.size() < SMALL_FILE_BYTES)
        .map(|f| (f.path().to_string(), f))
        .collect();
    if small.len() < COMPACT_AT {
        small.clear();
    }
    for (f, pos) in hits {
        let old = deleted_rows(store.as_ref(), &f).await?;
        let new: RoaringTreemap = pos.into_iter().collect();
        if new.is_subset(&old) {
            continue;
        }
        let gone = &old | &new;
        let physical = f.num_records().map(|n| n as u64);
        let compact = small.remove(f.path().as_ref()).is_some();
        outcome.compacted_files += compact as usize;
        if use_dv && !compact && physical.is_some_and(|n| gone.len() * 2 <= n) {
            marks.push((f, gone));
            continue;
        }
        // A file is dropped whole only when the file itself holds no other row: the log's
        // count may be wrong (an edited log), and then dropping it would lose live rows.
        if physical != Some(gone.len()) || file_rows(store.clone(), &f).await? != gone.len() {
            rewrite_live_rows(store.clone(), &f, &gone, kind, source, account, writer).await?;
        }
        actions.push(Action::Remove(f.remove_action(true)));
        outcome.rewritten_files += 1;
    }
    if !marks.is_empty() {
        outcome.marked_files = marks.len();
        actions.extend(write_dvs(store.as_ref(), marks).await?);
    }
    // The small files that lose no row in this step.
    for f in small.into_values() {
        let gone = deleted_rows(store.as_ref(), f).await?;
        rewrite_live_rows(store.clone(), f, &gone, kind, source, account, writer).await?;
        actions.push(Action::Remove(f.remove_action(true)));
        outcome.compacted_files += 1;
    }
    match new {
        NewRows::Batch(Some(u)) => {
            outcome.appended = u.num_rows();
            writer.write(u.clone()).await?;
        }
        NewRows::Batch(None) => {}
        NewRows::Files(adds) => {
            outcome.appended = appended_rows(adds);
            actions.extend(adds.iter().cloned().map(Action::Add));
        }
    }
    Ok(outcome)
}

/// Rows in `adds`, from their statistics.
fn appended_rows(adds: &[Add]) -> usize {
    adds.iter()
        .map(|a| {
            a.get_stats()
                .ok()
                .flatten()
                .map_or(0, |s| s.num_records as usize)
        })
        .sum()
}

/// A predicate that holds exactly in the given partitions, as delta-rs's conflict check
/// reads it: per source, `account IN (…)` (a flat list: a chain of hundreds of ORs would
/// pass the SQL parser's depth limit).
pub(super) fn partitions_predicate<'a>(parts: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut by: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (s, a) in parts {
        by.entry(s).or_default().push(a);
    }
    by.into_iter()
        .map(|(s, accounts)| {
            let list: Vec<String> = accounts
                .iter()
                .map(|a| format!("'{}'", sql_str(a)))
                .collect();
            if list.len() == 1 {
                format!("source = '{}' AND account = {}", sql_str(s), list[0])
            } else {
                format!(
                    "source = '{}' AND account IN ({})",
                    sql_str(s),
                    list.join(", ")
                )
            }
        })
        .map(|p| format!("({p})"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The ids of every row, and the rows to write (not flagged, the last of each id, in the
/// table's schema with the flag column, if the table has one, false).
pub(super) fn split_rows(
    kind: TableKind,
    batch: &RecordBatch,
    flag: &str,
) -> Result<(HashSet<String>, Option<RecordBatch>)> {
    let ids = arrow::compute::cast(
        batch
            .column_by_name("id")
            .ok_or_else(|| Error::lake("keyed rows lack the id column"))?,
        &DataType::Utf8,
    )?;
    let ids = ids.as_string::<i32>();
    let flags = batch
        .column_by_name(flag)
        .ok_or_else(|| Error::lake(format!("keyed rows lack the {flag} column")))?
        .as_boolean();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for i in 0..batch.num_rows() {
        last.insert(ids.value(i), i);
    }
    let keys: HashSet<String> = last.keys().map(|s| s.to_string()).collect();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| Some(last.get(ids.value(i)) == Some(&i) && !(flags.is_valid(i) && flags.value(i))))
        .collect();
    let kept = arrow::compute::filter_record_batch(batch, &keep)?;
    if kept.num_rows() == 0 {
        return Ok((keys, None));
    }
    let schema = kind.schema();
    let mut out = normalize_batch(&kept, &schema)?;
    if let Ok(i) = schema.index_of(flag) {
        let mut cols = out.columns().to_vec();
        cols[i] = Arc::new(BooleanArray::from(vec![false; out.num_rows()]));
        out = RecordBatch::try_new(schema.clone(), cols)?;
    }
    Ok((keys, Some(out)))
}

/// A read error of data file `f`, naming it (the Parquet layer's own errors do not).
fn in_file(f: &LogicalFileView, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(Kind::Lake, format!("data file {}", f.path()), e)
}

#[allow(deprecated)]
fn reader(store: Arc<dyn ObjectStore>, f: &LogicalFileView) -> ParquetObjectReader {
    super::checksum::expect(f);
    // The footer in one read: without a hint, its 8-byte tail is read first and the
    // metadata (24-80 KB for this schema) second, and each read of a checked file
    // fetches and checks a whole block, so the same block was read twice.
    ParquetObjectReader::new(store, f.object_store_path())
        .with_file_size(f.size() as u64)
        .with_footer_size_hint(super::checksum::BLOCK as usize)
}

/// A stream of the given leaf columns (paths of names) of `f`, in physical row order.
#[allow(deprecated)]
pub(super) async fn read_leaves(
    store: Arc<dyn ObjectStore>,
    f: &LogicalFileView,
    paths: &[&[&str]],
) -> Result<parquet::arrow::async_reader::ParquetRecordBatchStream<ParquetObjectReader>> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader(store, f))
        .await
        .map_err(|e| in_file(f, e))?;
    let leaves = paths
        .iter()
        .map(|path| {
            builder
                .parquet_schema()
                .columns()
                .iter()
                .position(|c| c.path().parts() == *path)
                .ok_or_else(|| {
                    Error::lake(format!("{} has no {} column", f.path(), path.join(".")))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mask = ProjectionMask::leaves(builder.parquet_schema(), leaves);
    Ok(builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()?)
}

/// The rows `f` holds, from its Parquet footer.
async fn file_rows(store: Arc<dyn ObjectStore>, f: &LogicalFileView) -> Result<u64> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader(store, f))
        .await
        .map_err(|e| in_file(f, e))?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

/// The physical row positions of `f` whose id is in `keys` (reading only that column).
async fn id_positions(
    store: Arc<dyn ObjectStore>,
    f: &LogicalFileView,
    keys: &HashSet<String>,
) -> Result<Vec<u64>> {
    let mut stream = read_leaves(store, f, &[&["id"]]).await?;
    let mut pos = Vec::new();
    let mut offset = 0u64;
    while let Some(b) = stream.try_next().await.map_err(|e| in_file(f, e))? {
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        for i in 0..ids.len() {
            if ids.is_valid(i) && keys.contains(ids.value(i)) {
                pos.push(offset + i as u64);
            }
        }
        offset += b.num_rows() as u64;
    }
    Ok(pos)
}

/// The cursor of run `seq` of one account, read from `sync_runs` (`seq` and `cursor`
/// only) without a query engine. The files' statistics say which one holds the run: each
/// run appends one file, so this reads one file however many runs there were.
pub(super) async fn run_cursor(
    runs: &DeltaTable,
    files: &[LogicalFileView],
    seq: i64,
) -> Result<Option<String>> {
    let store = runs.log_store().object_store(None);
    let may_hold = |f: &LogicalFileView| {
        let Some(stats) = f.stats() else {
            return true;
        };
        let Ok(stats) = serde_json::from_str::<serde_json::Value>(&stats) else {
            return true;
        };
        let bound = |k: &str| {
            stats
                .get(k)
                .and_then(|v| v.get("seq"))
                .and_then(|v| v.as_i64())
        };
        bound("minValues").is_none_or(|lo| lo <= seq)
            && bound("maxValues").is_none_or(|hi| seq <= hi)
    };
    for f in files.iter().filter(|f| may_hold(f)) {
        let mut stream = read_leaves(store.clone(), f, &[&["seq"], &["cursor"]]).await?;
        while let Some(b) = stream.try_next().await.map_err(|e| in_file(f, e))? {
            let seqs = arrow::compute::cast(b.column(0), &DataType::Int64)?;
            let seqs = seqs.as_primitive::<arrow::datatypes::Int64Type>();
            let cursors = arrow::compute::cast(b.column(1), &DataType::Utf8)?;
            let cursors = cursors.as_string::<i32>();
            for i in 0..b.num_rows() {
                if seqs.is_valid(i) && seqs.value(i) == seq {
                    return Ok(cursors.is_valid(i).then(|| cursors.value(i).to_string()));
                }
            }
        }
    }
    Ok(None)
}

/// One landed row's `(id, (etag, photo etag))` and its physical position in its file.
type LandedRow = (String, (Option<String>, Option<String>), u64);

/// Where the live rows of some ids of one account are, as read by [`landed_of_ids`]. The
/// positions hold for as long as the account's files and their deletion vectors are
/// the ones read, which a keyed step checks before using them instead of reading again.
#[derive(Debug, Default)]
pub(super) struct Located {
    files: Vec<(String, Option<DeletionVectorDescriptor>)>,
    /// Every live row of each id (one, unless something landed an id twice).
    at: HashMap<String, Vec<(String, u64)>>,
}

impl Located {
    fn files_of(files: &[LogicalFileView]) -> Vec<(String, Option<DeletionVectorDescriptor>)> {
        let mut v: Vec<_> = files
            .iter()
            .map(|f| (f.path().to_string(), f.deletion_vector_descriptor()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The positions of `keys` per file path, when `files` are still the files read.
    fn positions(
        &self,
        files: &[LogicalFileView],
        keys: &HashSet<String>,
    ) -> Option<HashMap<&str, Vec<u64>>> {
        if Self::files_of(files) != self.files {
            return None;
        }
        let mut by_file: HashMap<&str, Vec<u64>> = HashMap::new();
        for k in keys {
            for (path, pos) in self.at.get(k).into_iter().flatten() {
                by_file.entry(path.as_str()).or_default().push(*pos);
            }
        }
        Some(by_file)
    }
}

/// Reads the deletion vector of each of `files` that has one, checking it as a read
/// would (see [`deleted_rows`]); files without a vector cost nothing.
pub(super) async fn check_vectors(table: &DeltaTable, files: &[LogicalFileView]) -> Result<()> {
    let store = table.log_store().object_store(None);
    for f in files
        .iter()
        .filter(|f| f.deletion_vector_descriptor().is_some())
    {
        deleted_rows(store.as_ref(), f).await?;
    }
    Ok(())
}

/// `(id → (etag, photo etag))` of the live rows of one account (its `files`) whose id is
/// in `only` (every row without it), read straight from the files (only the three
/// columns, deletion vectors applied): a run looks up its ids without a query engine.
/// Also where those rows are, for the keyed step that replaces them.
pub(super) async fn landed_of_ids(
    table: &DeltaTable,
    files: Vec<LogicalFileView>,
    only: Option<&HashSet<String>>,
) -> Result<(HashMap<String, (Option<String>, Option<String>)>, Located)> {
    let store = table.log_store().object_store(None);
    let mut located = Located {
        files: Located::files_of(&files),
        at: HashMap::new(),
    };
    let parts: Vec<(String, Vec<LandedRow>)> = futures::stream::iter(files)
        .map(|f| {
            let store = store.clone();
            async move {
                let rows = landed_in_file(store, &f, only).await?;
                Ok::<_, Error>((f.path().to_string(), rows))
            }
        })
        .buffer_unordered(ID_READS)
        .try_collect()
        .await?;
    let mut landed = HashMap::new();
    for (path, rows) in parts {
        for (id, etags, pos) in rows {
            located
                .at
                .entry(id.clone())
                .or_default()
                .push((path.clone(), pos));
            landed.insert(id, etags);
        }
    }
    Ok((landed, located))
}

async fn landed_in_file(
    store: Arc<dyn ObjectStore>,
    f: &LogicalFileView,
    only: Option<&HashSet<String>>,
) -> Result<Vec<LandedRow>> {
    let gone = deleted_rows(store.as_ref(), f).await?;
    let mut stream = read_leaves(store, f, &[&["id"], &["etag"], &["photo", "etag"]]).await?;
    let mut out = Vec::new();
    let mut offset = 0u64;
    while let Some(b) = stream.try_next().await.map_err(|e| in_file(f, e))? {
        let what = format!("data file {}", f.path());
        let (ids, etags) = (
            super::text_column(&b, "id", &what)?,
            super::text_column(&b, "etag", &what)?,
        );
        let photo = b
            .column_by_name("photo")
            .and_then(|c| c.as_struct_opt())
            .ok_or_else(|| Error::corrupt(format!("{what}: no photo column of photo fields")))?;
        let photo_etags = photo
            .column_by_name("etag")
            .ok_or_else(|| Error::corrupt(format!("{what}: no photo.etag column")))?;
        let photo_etags = super::as_text(photo_etags, &format!("{what}: photo.etag"))?;
        for i in 0..b.num_rows() {
            if ids.is_null(i)
                || gone.contains(offset + i as u64)
                || only.is_some_and(|o| !o.contains(ids.value(i)))
            {
                continue;
            }
            let value =
                |a: &arrow::array::StringArray| a.is_valid(i).then(|| a.value(i).to_string());
            let photo_etag = if photo.is_valid(i) {
                value(&photo_etags)
            } else {
                None
            };
            out.push((
                ids.value(i).to_string(),
                (value(&etags), photo_etag),
                offset + i as u64,
            ));
        }
        offset += b.num_rows() as u64;
    }
    Ok(out)
}

/// Streams the rows of `f` not in `gone` into `writer`, with the partition values put
/// back (Delta keeps them out of the files).
pub(super) async fn rewrite_live_rows(
    store: Arc<dyn ObjectStore>,
    f: &LogicalFileView,
    gone: &RoaringTreemap,
    kind: TableKind,
    source: &str,
    account: &str,
    writer: &mut deltalake::writer::RecordBatchWriter,
) -> Result<()> {
    let schema = kind.schema();
    let mut stream = ParquetRecordBatchStreamBuilder::new(reader(store, f))
        .await
        .map_err(|e| in_file(f, e))?
        .with_batch_size(8192)
        .build()?;
    let mut offset = 0u64;
    while let Some(b) = stream.try_next().await.map_err(|e| in_file(f, e))? {
        let n = b.num_rows() as u64;
        let keep: BooleanArray = (offset..offset + n)
            .map(|i| Some(!gone.contains(i)))
            .collect();
        offset += n;
        let b = arrow::compute::filter_record_batch(&b, &keep)?;
        if b.num_rows() == 0 {
            continue;
        }
        let n = b.num_rows();
        let (mut fields, mut cols): (Vec<_>, Vec<ArrayRef>) = b
            .schema()
            .fields()
            .iter()
            .cloned()
            .zip(b.columns().iter().cloned())
            .collect();
        for (name, value) in [("source", source), ("account", account)] {
            fields.push(Arc::new(arrow::datatypes::Field::new(
                name,
                DataType::Utf8,
                false,
            )));
            cols.push(Arc::new(StringArray::from(vec![value; n])));
        }
        let b = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols)?;
        writer.write(normalize_batch(&b, &schema)?).await?;
    }
    Ok(())
}
