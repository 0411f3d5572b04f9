//! An apply's writes, group by group: each group on record as `sent` before it goes out,
//! its rows replaced by its results in one commit when the answers are in; and the stop
//! a signal asks for, which lets the group in flight finish and be recorded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::future::BoxFuture;

use super::super::photos::PhotoPlan;
use super::super::record::{self, ResultRow};
use super::super::resolve::{self, Resolution};
use super::super::{Invalid, Plan};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::http::Metrics;
use crate::lake::Lake;
use crate::model::photo::PhotoOp;
use crate::model::write::{Op, OpResult};
use crate::providers::Source;
use crate::sync::lake_of;

/// What the write loop needs of a kind of plan: contacts ([`Plan`]) or photos
/// ([`PhotoPlan`]).
pub(crate) trait Writable: Send + Sync {
    /// One operation of the plan.
    type Op: Send + Sync;
    /// Operations sent, and their results recorded in one commit, at a time.
    const GROUP: usize;
    /// Whether the sync after the writes runs when the plan had nothing to write.
    const SYNC_WHEN_EMPTY: bool;
    /// The source the plan writes to.
    fn source(&self) -> &str;
    /// The operations, in order (an operation's index is its position).
    fn ops(&self) -> &[Self::Op];
    /// The desired rows that are not sent.
    fn invalid(&self) -> &[Invalid];
    /// The index of an operation.
    fn index(op: &Self::Op) -> usize;
    /// The `sent` rows of a group: what tells afterwards whether each write landed.
    fn sent_rows(group: &[Self::Op]) -> Vec<ResultRow>;
    /// The rows of a group's results.
    fn result_rows(&self, done: &[OpResult]) -> Result<Vec<ResultRow>>;
    /// Sends a group through the source's writer.
    fn send<'a>(
        &'a self,
        source: &'a dyn Source,
        group: &'a [Self::Op],
        force: bool,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<OpResult>>>;
}

/// Operations written, and their results recorded in one commit, at a time: a group
/// costs one small `writeback_results` commit and holds ten Google batches.
const CONTACT_GROUP: usize = 1000;

/// Photo writes sent, and their results recorded in one commit, at a time: a photo is a
/// request of its own (up to megabytes), so a group is smaller than a contact apply's.
const PHOTO_GROUP: usize = 100;

impl Writable for Plan {
    type Op = Op;
    const GROUP: usize = CONTACT_GROUP;
    const SYNC_WHEN_EMPTY: bool = true;
    fn source(&self) -> &str {
        &self.source
    }
    fn ops(&self) -> &[Op] {
        &self.ops
    }
    fn invalid(&self) -> &[Invalid] {
        &self.invalid
    }
    fn index(op: &Op) -> usize {
        op.index
    }
    fn sent_rows(group: &[Op]) -> Vec<ResultRow> {
        record::sent_rows(group)
    }
    fn result_rows(&self, done: &[OpResult]) -> Result<Vec<ResultRow>> {
        record::contact_rows(self, done)
    }
    fn send<'a>(
        &'a self,
        source: &'a dyn Source,
        group: &'a [Op],
        force: bool,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<OpResult>>> {
        match source.write_back() {
            Some(w) => w.apply(group, &self.managed, force, metrics),
            None => Box::pin(async { Err(Error::config("this provider cannot write back")) }),
        }
    }
}

impl Writable for PhotoPlan {
    type Op = PhotoOp;
    const GROUP: usize = PHOTO_GROUP;
    const SYNC_WHEN_EMPTY: bool = false;
    fn source(&self) -> &str {
        &self.source
    }
    fn ops(&self) -> &[PhotoOp] {
        &self.ops
    }
    fn invalid(&self) -> &[Invalid] {
        &self.invalid
    }
    fn index(op: &PhotoOp) -> usize {
        op.index
    }
    fn sent_rows(group: &[PhotoOp]) -> Vec<ResultRow> {
        resolve::photo_sent_rows(group)
    }
    fn result_rows(&self, done: &[OpResult]) -> Result<Vec<ResultRow>> {
        super::super::photos::result_rows(self, done)
    }
    fn send<'a>(
        &'a self,
        source: &'a dyn Source,
        group: &'a [PhotoOp],
        force: bool,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<OpResult>>> {
        match source.photos() {
            Some(photos) => {
                let sent = photos.apply(group, force, metrics);
                Box::pin(async move { Ok(sent.await) })
            }
            None => Box::pin(async {
                Err(Error::config(
                    "this provider has no contact photos to write back",
                ))
            }),
        }
    }
}

/// What the writes of one apply need besides the plan.
pub(super) struct Run<'a> {
    /// The pipeline (its lake, and the sync after).
    pub pipeline: &'a Pipeline,
    /// The source built, whose writer sends the groups.
    pub source: &'a dyn Source,
    /// The apply's id in `writeback_results`.
    pub apply_id: &'a str,
    /// The accounts the apply is limited to; empty: every one.
    pub accounts: &'a [String],
    /// Overwrite what changed since it was read.
    pub force: bool,
    /// Draw the write bar and the sync's bars.
    pub progress: bool,
}

/// Resolves what earlier applies left unrecorded, records the invalid rows, writes the
/// plan group by group on record, and syncs the source again: the results, and what was
/// resolved.
pub(super) async fn write<P: Writable>(
    run: &Run<'_>,
    plan: &P,
) -> Result<(Vec<OpResult>, Resolution)> {
    let name = plan.source();
    let lake = lake_of(run.pipeline)?;
    // Writes an earlier apply sent and never recorded (it was killed) are resolved
    // against what the sync before this apply read: the accounts it synced.
    let scope: Option<HashSet<String>> =
        (!run.accounts.is_empty()).then(|| run.accounts.iter().cloned().collect());
    let resolved = resolve::resolve_unrecorded(&lake, name, scope.as_ref()).await?;
    resolved.log(name);
    // Invalid rows first, then each group of writes as it ends: an apply stopped halfway
    // (Ctrl-C, a scheduler's SIGTERM, a crash) leaves the trail of what it did.
    let invalid = record::invalid_rows(plan.ops().len(), plan.invalid());
    record::record_rows(&lake, run.apply_id, name, &invalid).await?;
    let results = send_groups(run, &lake, plan).await?;
    if P::SYNC_WHEN_EMPTY || !plan.ops().is_empty() {
        let t = std::time::Instant::now();
        super::sync_after(run.pipeline, name, run.accounts, run.progress).await?;
        super::phase(name, "synced after writing", t);
    }
    Ok((results, resolved))
}

/// Sends the plan's groups in order, each on record as `sent` first and its rows replaced
/// by its results after; stops before a group when [`request_stop`] was called.
async fn send_groups<P: Writable>(run: &Run<'_>, lake: &Lake, plan: &P) -> Result<Vec<OpResult>> {
    let (name, ops) = (plan.source(), plan.ops());
    let metrics = Metrics::default();
    let mut results = Vec::with_capacity(ops.len());
    let bar = (run.progress && !ops.is_empty()).then(|| super::write_bar(ops.len()));
    // The two phases interleave; each is timed on its own.
    let (mut writing, mut recording) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let _writing = Writing::start();
    for group in ops.chunks(P::GROUP) {
        if stop_requested() {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(stopped(name, results.len(), ops.len()));
        }
        // On record before it is sent: a process killed while the group is in flight
        // leaves these `sent` rows for the next apply or sync to resolve.
        let r = std::time::Instant::now();
        record::record_rows(lake, run.apply_id, name, &P::sent_rows(group)).await?;
        recording += r.elapsed();
        let w = std::time::Instant::now();
        let done = plan.send(run.source, group, run.force, &metrics).await?;
        writing += w.elapsed();
        let r = std::time::Instant::now();
        let first = group.first().map_or(0, P::index);
        let rows = plan.result_rows(&done)?;
        record::replace_group(lake, run.apply_id, name, &rows, first, group.len()).await?;
        recording += r.elapsed();
        if let Some(b) = &bar {
            b.inc(group.len() as u64);
        }
        results.extend(done);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    tracing::debug!(source = %name, ms = writing.as_millis() as u64, "wrote to the API");
    tracing::debug!(source = %name, ms = recording.as_millis() as u64, "recorded the results");
    Ok(results)
}

/// Applies of this process that are sending writes now.
static WRITING: AtomicUsize = AtomicUsize::new(0);
/// Set by [`request_stop`]: applies send no further group.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks this process's applies to stop at the end of the group of writes in flight: the
/// API's answers to it are awaited and recorded, and no further group is sent, so that
/// every write the API received has its `writeback_results` row. Returns whether an
/// apply was writing (the caller then awaits it, with a bound, before it exits).
pub fn request_stop() -> bool {
    STOP.store(true, Ordering::SeqCst);
    WRITING.load(Ordering::SeqCst) > 0
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Marks an apply as writing while it lives (see [`request_stop`]).
struct Writing;

impl Writing {
    fn start() -> Writing {
        WRITING.fetch_add(1, Ordering::SeqCst);
        Writing
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The error of an apply stopped by [`request_stop`] after `done` of `total` operations.
fn stopped(source: &str, done: usize, total: usize) -> Error {
    Error::other(format!(
        "source {source}: the apply was stopped after {done} of {total} operations; each of them is recorded in writeback_results, the rest were not sent. Run the apply again to finish"
    ))
}
