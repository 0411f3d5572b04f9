//! Compaction of the append-only tables (`contact_changes`, `sync_runs`).
//!
//! Every run adds a file to each partition (`source`, `account`) it writes of these
//! tables: a `sync_runs` row, and its change rows when it has any. Left alone, a table of
//! N accounts holds N files per run of its history, and delta-rs pays for every one of
//! them on each commit, checkpoint and snapshot update, and in memory. So an account's
//! small files are merged, tier by tier as a log-structured merge does: files are ranked
//! by their rows in powers of [`FANOUT`], and once a rank holds [`FANOUT`] files they
//! become one file of the next rank. A partition then keeps fewer than
//! `FANOUT × log_FANOUT(runs)` files, each row is rewritten about `log_FANOUT(runs)` times
//! in all, and a large file (a first load) is not rewritten for the small ones beside it.
//!
//! The merge is one commit of `remove`s and `add`s with `dataChange = false` (readers of
//! the table's changes skip it; every version reads the same rows). It lands only on the
//! exact version whose files it read: delta-rs's conflict check lets a compaction through
//! beside another one that removed the same files (it ignores removes without data
//! change), which would duplicate their rows, so any commit in between makes it give up
//! instead; the next due run tries again. A kill at any moment leaves either the commit or
//! only unreferenced files.

use std::collections::HashSet;

use deltalake::kernel::Action;
use deltalake::kernel::LogicalFileView;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::DeltaWriter;
use roaring::RoaringTreemap;
use serde_json::json;

use super::{Lake, TARGET_FILE_BYTES, TableKind, keyed};
use crate::error::Result;

/// Files of one rank merged at once, and the ratio of rows between ranks.
pub(super) const FANOUT: usize = 4;

/// Whether an account's run `seq` is one after which its partitions are looked at: every
/// [`FANOUT`] runs, when the lowest rank can have filled up.
pub(super) fn due(seq: i64) -> bool {
    seq > 0 && seq % FANOUT as i64 == 0
}

/// A file's rank: `⌊log_FANOUT(rows)⌋`.
fn rank(rows: usize) -> u32 {
    rows.max(1).ilog(FANOUT)
}

/// The files of one partition to merge into one (empty when no rank is full): the lowest
/// full rank, then each next rank that the merged file fills up in turn.
pub(super) fn to_merge(rows: &[usize]) -> Vec<usize> {
    let mut by_rank: Vec<(u32, usize)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (rank(*r), i))
        .collect();
    by_rank.sort_unstable();
    let count = |rk: u32, taken: &HashSet<usize>| -> usize {
        by_rank
            .iter()
            .filter(|(r, i)| *r == rk && !taken.contains(i))
            .count()
    };
    let Some(&(first, _)) = by_rank
        .iter()
        .find(|(rk, _)| by_rank.iter().filter(|(r, _)| r == rk).count() >= FANOUT)
    else {
        return vec![];
    };
    let mut taken: HashSet<usize> = by_rank
        .iter()
        .filter(|(r, _)| *r == first)
        .map(|(_, i)| *i)
        .collect();
    let mut merged: usize = taken.iter().map(|i| rows[*i]).sum();
    // The merged file joins the next rank; if that fills it, that rank is merged too.
    loop {
        let rk = rank(merged);
        if count(rk, &taken) + 1 < FANOUT {
            break;
        }
        for (_, i) in by_rank.iter().filter(|(r, _)| *r == rk) {
            if taken.insert(*i) {
                merged += rows[*i];
            }
        }
    }
    let mut out: Vec<usize> = taken.into_iter().collect();
    out.sort_unstable();
    out
}

impl Lake {
    /// Merges the full ranks of the given partitions of `kind` (see the module docs), in
    /// one commit for them all. Returns the files merged away: 0 when there was nothing to
    /// merge, or when another commit came first (nothing was changed then).
    pub(super) async fn compact(&self, kind: TableKind, parts: &[(&str, &str)]) -> Result<usize> {
        let Some(table) = self.open(kind).await? else {
            return Ok(0);
        };
        let index = self.indexes.partitions(kind, &table)?;
        let store = table.log_store().object_store(None);
        let mut writer = self.streaming_writer(&table)?;
        let mut removes: Vec<Action> = Vec::new();
        let mut adds: Vec<Action> = Vec::new();
        let none = RoaringTreemap::new();
        for (source, account) in parts {
            let Some(files) = index.get(&(source.to_string(), account.to_string())) else {
                continue;
            };
            // Only plain files: these tables never have deletion vectors, and a file
            // without a row count cannot be ranked.
            let rows: Option<Vec<usize>> = files
                .iter()
                .map(|f| {
                    f.deletion_vector_descriptor()
                        .is_none()
                        .then(|| f.num_records())
                        .flatten()
                })
                .collect();
            let Some(rows) = rows else { continue };
            let picked: Vec<&LogicalFileView> =
                to_merge(&rows).into_iter().map(|i| &files[i]).collect();
            for f in picked {
                keyed::rewrite_live_rows(
                    store.clone(),
                    f,
                    &none,
                    kind,
                    source,
                    account,
                    &mut writer,
                )
                .await?;
                removes.push(Action::Remove(f.remove_action(false)));
            }
            // Each partition's file is closed before the next (the writer keeps one open
            // per partition), so memory is that of one file, not of the group.
            adds.extend(
                super::checksum::sealed(writer.flush().await?)
                    .into_iter()
                    .map(|mut a| {
                        a.data_change = false;
                        Action::Add(a)
                    }),
            );
        }
        if removes.is_empty() {
            return Ok(0);
        }
        let merged = removes.len();
        // (The crash tests kill a sync at this line: a compaction built, not landed.)
        tracing::debug!(
            table = kind.name(),
            files = merged,
            "compaction: wrote the merged files"
        );
        let mut actions = removes;
        actions.extend(adds);
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: TARGET_FILE_BYTES as i64,
        };
        // No retry: the commit lands on the version it read, or not at all.
        let props = CommitProperties::default()
            .with_metadata([("app.compacted".to_string(), json!(merged))])
            .with_max_retries(0);
        let t0 = std::time::Instant::now();
        match CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(table.snapshot()?), table.log_store(), operation)
            .await
        {
            Ok(done) => {
                self.remember(
                    kind,
                    super::after_commit(&table, done),
                    t0,
                    "compacted a table",
                );
                Ok(merged)
            }
            Err(e) => {
                tracing::debug!(table = kind.name(), error = %e, "compaction given up: another commit came first");
                Ok(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_merge_when_full_and_cascade() {
        // Three single-row files: nothing yet.
        assert!(to_merge(&[1, 1, 1]).is_empty());
        // Four: one file of four rows.
        assert_eq!(to_merge(&[1, 1, 1, 1]), vec![0, 1, 2, 3]);
        // A large file stays out of a merge of small ones.
        assert_eq!(to_merge(&[50_000, 1, 1, 1, 1]), vec![1, 2, 3, 4]);
        // Four small files beside three of the next rank: all seven become one (4 + 3
        // files of rank 1 fill it).
        assert_eq!(to_merge(&[4, 5, 6, 1, 1, 1, 1]), vec![0, 1, 2, 3, 4, 5, 6]);
        // Two of the next rank only: just the small ones.
        assert_eq!(to_merge(&[4, 5, 1, 1, 1, 1]), vec![2, 3, 4, 5]);
    }

    #[test]
    fn a_partition_keeps_few_files_over_many_runs() {
        // One row per run, merged after every FANOUT-th run, for 4,096 runs.
        let mut files: Vec<usize> = vec![];
        let mut rewritten = 0usize;
        let mut most = 0usize;
        for seq in 1..=4096i64 {
            files.push(1);
            if due(seq) {
                let picked = to_merge(&files);
                let rows: usize = picked.iter().map(|i| files[*i]).sum();
                rewritten += rows;
                let mut kept: Vec<usize> = files
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !picked.contains(i))
                    .map(|(_, r)| *r)
                    .collect();
                if rows > 0 {
                    kept.push(rows);
                }
                files = kept;
            }
            most = most.max(files.len());
        }
        assert_eq!(files.iter().sum::<usize>(), 4096, "no row lost or doubled");
        // log_4(4096) = 6 ranks, fewer than FANOUT files each.
        assert!(most <= 6 * FANOUT, "{most} files at most");
        // Each row rewritten about once per rank.
        assert!(rewritten <= 4096 * 6, "{rewritten} rows rewritten");
    }
}
