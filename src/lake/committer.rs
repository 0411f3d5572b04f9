//! The committer of a run: every account's finished run goes through it, and it lands them
//! in groups (one commit per table per group, see [`Lake::commit_runs`]).
//!
//! Accounts extract in parallel; their commits are funnelled through this one task, so
//! more accounts in flight do not mean more commit conflicts, and the commits per run grow
//! with the number of groups, not of accounts. A group closes when it holds
//! [`GroupLimits::accounts`] runs or [`GroupLimits::bytes`] of change files, when
//! [`GroupLimits::wait`] has passed since its first run arrived, or when every account of
//! the run has arrived. The channel in front of it holds at most one group, so a slow
//! lake slows the extraction down instead of piling finished runs up in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{CommitOutcome, FailedRun, Lake, PreparedRun, RunFailure, app_id};
use crate::error::{Error, Kind};

/// When a group of finished runs is committed.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// At most this many accounts per group.
    pub accounts: usize,
    /// At most about this many bytes of change files per group.
    pub bytes: u64,
    /// At most this long from a group's first run to its commit.
    pub wait: Duration,
}

impl Default for GroupLimits {
    /// 1,024 accounts, 256 MiB, 1 s. A commit costs delta-rs time in the size of the
    /// table (it brings its snapshot of every file up to date, and writes a checkpoint of
    /// them all every tenth commit), so a run of many accounts costs about its number of
    /// groups times that: fewer, larger groups are cheaper, and a commit of 1,024
    /// accounts' files and transactions is still only about a megabyte of log. The wait
    /// bounds the groups of a run whose accounts finish slowly (few in flight, or a
    /// server that makes each wait): at 200 ms, 400 accounts at concurrency 8 cost 3.4
    /// times the CPU of the same accounts at concurrency 64, in more, smaller groups. A group
    /// still closes at once when every account of the run has arrived.
    fn default() -> Self {
        GroupLimits {
            accounts: 1024,
            bytes: 256 << 20,
            wait: Duration::from_secs(1),
        }
    }
}

/// The outcome of one account's run as the committer lands it.
pub type RunResult = std::result::Result<CommitOutcome, RunFailure>;

enum Job {
    Run(Box<PreparedRun>, oneshot::Sender<RunResult>),
    Failed(FailedRun),
    /// An account that left this run to another sync: nothing to land, only counted.
    Skipped,
}

impl Job {
    fn bytes(&self) -> u64 {
        match self {
            Job::Run(r, _) => r.bytes(),
            Job::Failed(_) | Job::Skipped => 0,
        }
    }
}

/// What the committer did in a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitterStats {
    /// Groups committed.
    pub groups: usize,
    /// Runs landed in full.
    pub landed: usize,
    /// The largest group.
    pub largest_group: usize,
    /// Time spent committing.
    pub commit_ms: u64,
}

/// The handle through which accounts hand their runs to the committer.
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// A committer for a run of `expected` accounts, and the future that lands their runs
    /// (poll it beside the accounts, e.g. with `tokio::join!`; it ends when every handle
    /// is dropped). Each account sends exactly one of [`Committer::submit`],
    /// [`Committer::record_failure`] or [`Committer::skip`]; once all have, the last group
    /// is committed at once.
    pub fn new(
        lake: Arc<Lake>,
        expected: usize,
        limits: GroupLimits,
    ) -> (Committer, impl std::future::Future<Output = CommitterStats>) {
        let limits = GroupLimits {
            accounts: limits.accounts.max(1),
            ..limits
        };
        let (tx, rx) = mpsc::channel(limits.accounts);
        (Committer { tx }, run(lake, rx, expected, limits))
    }

    /// Hands a prepared run over; the receiver gets its outcome once its group landed.
    pub async fn submit(&self, run: PreparedRun) -> oneshot::Receiver<RunResult> {
        let (tx, rx) = oneshot::channel();
        // A send fails only when the committer is gone; the dropped sender then tells
        // the receiver.
        let _ = self.tx.send(Job::Run(Box::new(run), tx)).await;
        rx
    }

    /// Records an account's failed run in `sync_runs`, with the next group.
    pub async fn record_failure(&self, failed: FailedRun) {
        let _ = self.tx.send(Job::Failed(failed)).await;
    }

    /// Says an account has nothing to land in this run (another sync holds it), so the
    /// last group need not wait for it.
    pub async fn skip(&self) {
        let _ = self.tx.send(Job::Skipped).await;
    }
}

async fn run(
    lake: Arc<Lake>,
    mut rx: mpsc::Receiver<Job>,
    expected: usize,
    limits: GroupLimits,
) -> CommitterStats {
    let mut stats = CommitterStats::default();
    let mut received = 0usize;
    while let Some(first) = rx.recv().await {
        received += 1;
        if matches!(first, Job::Skipped) {
            continue;
        }
        let deadline = tokio::time::Instant::now() + limits.wait;
        let mut bytes = first.bytes();
        let mut group = vec![first];
        while group.len() < limits.accounts && bytes < limits.bytes && received < expected {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(Job::Skipped) => received += 1,
                    Some(job) => {
                        received += 1;
                        bytes += job.bytes();
                        group.push(job);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let t0 = std::time::Instant::now();
        stats.groups += 1;
        stats.largest_group = stats.largest_group.max(group.len());
        stats.landed += commit_group(&lake, group).await;
        stats.commit_ms += t0.elapsed().as_millis() as u64;
    }
    stats
}

/// Lands one group and tells each account its outcome; returns how many landed.
async fn commit_group(lake: &Lake, group: Vec<Job>) -> usize {
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    let mut waiting: HashMap<String, oneshot::Sender<RunResult>> = HashMap::new();
    for job in group {
        match job {
            Job::Run(r, tx) => {
                waiting.insert(app_id(r.source(), r.account()), tx);
                runs.push(*r);
            }
            Job::Failed(f) => failures.push(f),
            Job::Skipped => {}
        }
    }
    let accounts = runs.len();
    match lake.commit_runs(runs).with_failures(failures).await {
        Ok(m) => {
            tracing::debug!(
                accounts,
                landed = m.landed.len(),
                failed = m.failed.len(),
                changes_ms = m.changes_ms,
                contacts_ms = m.contacts_ms,
                runs_ms = m.runs_ms,
                compacted = m.compacted,
                compact_ms = m.compact_ms,
                "committed a group"
            );
            let landed = m.landed.len();
            for (s, a, o) in m.landed {
                if let Some(tx) = waiting.remove(&app_id(&s, &a)) {
                    let _ = tx.send(Ok(o));
                }
            }
            for f in m.failed {
                if let Some(tx) = waiting.remove(&app_id(&f.source, &f.account)) {
                    let _ = tx.send(Err(f));
                }
            }
            landed
        }
        Err(e) => {
            // Whatever landed is found and completed by the next run's recovery.
            let e = Arc::new(e);
            for (app, tx) in waiting {
                let (source, account) = app.split_once('/').unwrap_or((&app, ""));
                let _ = tx.send(Err(RunFailure {
                    source: source.to_string(),
                    account: account.to_string(),
                    error: Error::with_source(Kind::Lake, &app, e.clone()),
                    changes_landed: true,
                }));
            }
            0
        }
    }
}
