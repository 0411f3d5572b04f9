//! An extract's rows on local disk instead of in memory.
//!
//! A full extract cannot know which version of a contact wins until it has read every
//! page (a contact changed mid-read is delivered twice). Holding every page in memory
//! makes memory grow with the domain; instead each decoded page is appended to an Arrow
//! IPC file in a private temporary folder, only `(id → batch, row)` stays in memory, and
//! the winners are read back one batch at a time when the run is written to the lake.
//!
//! A spill folder never outlives its run: it is removed when dropped (success or
//! failure), by [`remove_live_spills`] when the binary is stopped by SIGTERM or SIGINT,
//! and, when a run died without either (SIGKILL, a crash, a power cut), by the next run
//! on the machine ([`remove_stale_spills`]): each folder holds a `lock` file locked for as
//! long as its run lives, and the kernel drops that lock when the process dies.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use crate::error::{Error, Result};

/// The prefix of spill folders in the temporary folder (TMPDIR).
pub const SPILL_PREFIX: &str = "contacts-etl-extract-";

/// The spill folders of this process, for [`remove_live_spills`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A spill's private folder, removed when dropped. It holds a `lock` file that stays
/// locked while the folder is in use, which tells [`remove_stale_spills`] it is alive.
pub struct SpillDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl SpillDir {
    fn try_new() -> Result<SpillDir> {
        let dir = tempfile::Builder::new()
            .prefix(SPILL_PREFIX)
            .tempdir()
            .map_err(io)?;
        // Locked under another name, then renamed: a `lock` that another process's
        // `remove_stale_spills` can open is always already locked. Created and locked in
        // place, it could be found unlocked in between and the live folder taken for a
        // dead run's (seen with shards sharing a machine).
        let pending = dir.path().join("lock.pending");
        let lock = File::create(&pending).map_err(io)?;
        lock.try_lock().map_err(io)?;
        std::fs::rename(&pending, dir.path().join("lock")).map_err(io)?;
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dir.path().to_path_buf());
        Ok(SpillDir { dir, _lock: lock })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p != self.dir.path());
        // The TempDir, dropped next, removes the folder.
    }
}

impl std::fmt::Debug for SpillDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpillDir({})", self.dir.path().display())
    }
}

/// Removes this process's spill folders now, for a process about to exit on a signal
/// (destructors will not run). Returns how many were removed.
pub fn remove_live_spills() -> usize {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
    live.iter()
        .filter(|d| std::fs::remove_dir_all(d).is_ok())
        .count()
}

/// Removes the spill folders in the temporary folder whose run is dead: their `lock`
/// file can be locked. A folder without one (an older version, or one being created) is
/// removed only when it is more than a day old. Returns how many were removed; a folder
/// that cannot be inspected is left alone.
pub fn remove_stale_spills() -> usize {
    remove_stale_spills_in(&std::env::temp_dir())
}

fn remove_stale_spills_in(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(SPILL_PREFIX)) {
            continue;
        }
        // Not followed if it is a link: only real folders of ours are removed.
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let dead = match File::open(e.path().join("lock")) {
            // Locked: the run that made it is alive. The lock, if taken, is dropped at
            // the end of this block, after the folder is gone.
            Ok(f) => f.try_lock().is_ok(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600)),
            Err(_) => false,
        };
        if dead && std::fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!(folder = %e.path().display(), "removed the spill folder of a run that died");
            removed += 1;
        }
    }
    removed
}

/// Batches appended to a temporary Arrow IPC file.
pub struct Spill {
    dir: SpillDir,
    writer: FileWriter<BufWriter<File>>,
    count: usize,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Spill({} batches in {})",
            self.count,
            self.dir.path().display()
        )
    }
}

fn io(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(
        crate::error::Kind::Other,
        "spilling the extract to a temporary file failed (check free space in the temporary folder, TMPDIR)",
        e,
    )
}

impl Spill {
    /// An empty spill for batches of `schema`.
    pub fn try_new(schema: &SchemaRef) -> Result<Spill> {
        let dir = SpillDir::try_new()?;
        let file = File::create(dir.path().join("rows.arrow")).map_err(io)?;
        let writer = FileWriter::try_new(BufWriter::new(file), schema).map_err(io)?;
        Ok(Spill {
            dir,
            writer,
            count: 0,
        })
    }

    /// Appends a batch; returns its index.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<usize> {
        self.writer.write(batch).map_err(io)?;
        self.count += 1;
        Ok(self.count - 1)
    }

    /// Batches appended so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Closes the file; `keep[i]` says which rows of batch `i` are read back.
    pub fn finish(mut self, keep: Vec<Vec<bool>>) -> Result<Rows> {
        self.writer.finish().map_err(io)?;
        Ok(Rows::Spilled {
            dir: self.dir,
            keep,
        })
    }
}

/// The upserted rows of an extract: in memory, or spilled with a row mask per batch.
#[derive(Debug)]
pub enum Rows {
    /// Batches held in memory.
    Memory(Vec<RecordBatch>),
    /// Batches on local disk; only the rows marked `true` belong to the extract.
    Spilled {
        /// The folder holding `rows.arrow` (removed when dropped).
        dir: SpillDir,
        /// Per batch, per row: kept or not.
        keep: Vec<Vec<bool>>,
    },
}

impl Default for Rows {
    fn default() -> Self {
        Rows::Memory(vec![])
    }
}

impl Rows {
    /// Rows in the extract.
    pub fn num_rows(&self) -> usize {
        match self {
            Rows::Memory(b) => b.iter().map(|b| b.num_rows()).sum(),
            Rows::Spilled { keep, .. } => keep.iter().flatten().filter(|k| **k).count(),
        }
    }

    /// The batches, one at a time (spilled ones read from disk as they are asked for).
    pub fn batches(&self) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send + '_>> {
        match self {
            Rows::Memory(b) => Ok(Box::new(b.iter().cloned().map(Ok))),
            Rows::Spilled { dir, keep } => {
                let file = File::open(dir.path().join("rows.arrow")).map_err(io)?;
                let reader = FileReader::try_new(BufReader::new(file), None).map_err(io)?;
                Ok(Box::new(reader.zip(keep.iter()).filter_map(|(b, mask)| {
                    let filtered = b.map_err(io).and_then(|b| {
                        Ok(arrow::compute::filter_record_batch(
                            &b,
                            &BooleanArray::from(mask.clone()),
                        )?)
                    });
                    match filtered {
                        Ok(b) if b.num_rows() == 0 => None,
                        other => Some(other),
                    }
                })))
            }
        }
    }

    /// Every batch in memory (tests and small extracts).
    pub fn into_batches(self) -> Result<Vec<RecordBatch>> {
        match self {
            Rows::Memory(b) => Ok(b),
            spilled => spilled.batches()?.collect(),
        }
    }
}

/// The newest version seen of one id: where its row is in the spill.
#[derive(Clone, Copy)]
struct Slot {
    /// Where the id is in the arena: its length (LEB128), then its bytes.
    off: u32,
    /// Row number counted across all batches; the high bit marks a deletion placeholder.
    row: u32,
    updated: i64,
}

const DELETED: u32 = 1 << 31;

/// id → newest version: most of what a full extract of a large domain keeps in memory,
/// so it is packed. The ids are in one arena behind a length prefix, the slots (16 bytes)
/// in a vector in the order ids were first seen, and the hash table holds only each
/// slot's index (4 bytes). With Aurinko's 30-byte ids that is about 55 bytes per
/// contact, against 60-90 for a table of 24-byte slots and over 100 for a
/// `HashMap<String, …>`; and when the table grows, old and new side by side (the heap's
/// peak in a 500,000-contact extract) are 8 MiB instead of 39.
#[derive(Default)]
struct Latest {
    arena: Vec<u8>,
    slots: Vec<Slot>,
    table: hashbrown::HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl Latest {
    fn id<'a>(arena: &'a [u8], s: &Slot) -> &'a [u8] {
        let (mut len, mut shift, mut at) = (0usize, 0, s.off as usize);
        loop {
            let b = arena[at];
            at += 1;
            len |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        &arena[at..at + len]
    }

    /// Records a version found at row `row` (counted across all batches); the newest
    /// `updated` wins, and on a tie the later one. Returns whether the version is new: an
    /// id not seen, or seen with another `updated`.
    fn offer(&mut self, id: &str, updated: i64, row: u32, deleted: bool) -> Result<bool> {
        use std::hash::BuildHasher;
        let Latest {
            arena,
            slots,
            table,
            hasher,
        } = self;
        let h = hasher.hash_one(id.as_bytes());
        let row = row | if deleted { DELETED } else { 0 };
        match table.entry(
            h,
            |&i| Self::id(arena, &slots[i as usize]) == id.as_bytes(),
            |&i| hasher.hash_one(Self::id(arena, &slots[i as usize])),
        ) {
            hashbrown::hash_table::Entry::Occupied(o) => {
                let s = &mut slots[*o.get() as usize];
                let new = s.updated != updated;
                if s.updated <= updated {
                    s.updated = updated;
                    s.row = row;
                }
                Ok(new)
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let off = u32::try_from(arena.len())
                    .ok()
                    .filter(|_| slots.len() < u32::MAX as usize)
                    .ok_or_else(|| {
                        Error::other(
                            "an extract holds more ids than one run can track (4 GiB of ids); split the accounts over several sources",
                        )
                    })?;
                let mut len = id.len();
                while len >= 0x80 {
                    arena.push((len as u8) | 0x80);
                    len >>= 7;
                }
                arena.push(len as u8);
                arena.extend_from_slice(id.as_bytes());
                v.insert(slots.len() as u32);
                slots.push(Slot { off, row, updated });
                Ok(true)
            }
        }
    }
}

/// The newest version seen of each id across pages. Pages are held in memory up to
/// [`HOLD_BYTES`], then go to a [`Spill`] on local disk as they are decoded; only the
/// winners' positions stay in memory.
pub struct Collected {
    /// Made once the rows outgrow [`HOLD_BYTES`]: an incremental run's few hundred
    /// changes, and an account with nothing to say (most accounts of a fleet's no-change
    /// run), make no folder, lock or file.
    spill: Option<Spill>,
    /// The slices not spilled (all of them while `spill` is `None`), and their size.
    held: Vec<RecordBatch>,
    held_bytes: usize,
    /// [`HOLD_BYTES`], but for tests.
    hold: usize,
    latest: Latest,
    /// Rows per spilled batch.
    rows: Vec<usize>,
    /// Rows in all batches so far.
    spilled_rows: usize,
    /// New versions (see [`Latest::offer`]) with `updated` at or after this instant are
    /// counted in `recent`.
    recent_since: i64,
    recent: usize,
    /// Versions ranked below this are dropped at the end (see [`Collected::forget_before`]).
    floor: i64,
}

/// About how many bytes of rows one spilled batch holds (see [`Collected::add`]).
const SPILL_SLICE_BYTES: usize = 1 << 20;

/// About how many bytes of rows an extract holds in memory before it spills. An
/// incremental run's changes fit (1,000 dense contacts are 4-6 MB): writing them to a
/// temporary file and reading them back was 2 of its 58 ms (B4). Memory still stays
/// flat: past this, every held slice goes to the spill and so does each page after.
pub const HOLD_BYTES: usize = 8 << 20;

impl Collected {
    /// An empty collection, spilling to a new temporary folder once its rows outgrow
    /// [`HOLD_BYTES`].
    pub fn try_new() -> Result<Collected> {
        Ok(Collected {
            spill: None,
            held: Vec::new(),
            held_bytes: 0,
            hold: HOLD_BYTES,
            latest: Latest::default(),
            rows: Vec::new(),
            spilled_rows: 0,
            recent_since: i64::MAX,
            recent: 0,
            floor: i64::MIN,
        })
    }

    /// Adds a batch of the contacts schema. Each row ranks by its `updated`, or every row
    /// by `rank` when given; the highest rank wins, and on a tie the later one.
    pub fn add(&mut self, batch: &RecordBatch, rank: Option<i64>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::other(format!("an extracted batch has no {name} column")))
        };
        let ids = column("id")?.as_string::<i32>();
        let updated = column("updated")?.as_primitive::<TimestampMicrosecondType>();
        let deleted = column("deleted")?.as_boolean();
        let first = self.spilled_rows;
        if first + batch.num_rows() >= DELETED as usize {
            return Err(Error::other(
                "an extract holds more rows than one run can track (2^31); split the accounts over several sources",
            ));
        }
        for row in 0..batch.num_rows() {
            let upd = updated.is_valid(row).then(|| updated.value(row));
            let upd = upd.unwrap_or(i64::MIN);
            let gone = deleted.is_valid(row) && deleted.value(row);
            let new = self.latest.offer(
                ids.value(row),
                rank.unwrap_or(upd),
                (first + row) as u32,
                gone,
            )?;
            // `updated-min` is inclusive: a version read again at the boundary is no change.
            if new && upd >= self.recent_since {
                self.recent += 1;
            }
        }
        // Spilled in slices of about a mebibyte: each slice is one buffer when read back,
        // and a page of long rows read back whole (a 1,000-entry page of dense contacts is
        // 3-6 MB) crossed the allocator's mapping threshold, each batch a fresh mapping
        // whose every page faulted in.
        let per_row = batch.get_array_memory_size() / batch.num_rows();
        let step = (SPILL_SLICE_BYTES / per_row.max(1)).clamp(1, batch.num_rows());
        for at in (0..batch.num_rows()).step_by(step) {
            let len = step.min(batch.num_rows() - at);
            self.rows.push(len);
            let slice = batch.slice(at, len);
            // A slice's own size is its parent's buffers: estimated from the page's.
            let bytes = per_row * len;
            if self.spill.is_none() && self.held_bytes + bytes <= self.hold {
                self.held.push(slice);
                self.held_bytes += bytes;
                continue;
            }
            let spill = match &mut self.spill {
                Some(s) => s,
                None => {
                    let mut spill = Spill::try_new(&crate::model::schema::contacts_schema())?;
                    // In order: the spill's batch `i` is `rows[i]`, held or not.
                    for held in self.held.drain(..) {
                        spill.push(&held)?;
                    }
                    self.held_bytes = 0;
                    self.spill.insert(spill)
                }
            };
            spill.push(&slice)?;
        }
        self.spilled_rows += batch.num_rows();
        Ok(())
    }

    /// Starts counting new versions whose `updated` is at or after `min_us`.
    pub fn count_recent(&mut self, min_us: i64) {
        self.recent_since = min_us;
        self.recent = 0;
    }

    /// Records counted since [`Collected::count_recent`].
    pub fn recent(&self) -> usize {
        self.recent
    }

    /// Drops, at the end, every id whose newest version ranks below `rank`: for a stream
    /// read again from its start, where what the first reading saw no longer counts
    /// unless the second sees it again.
    pub fn forget_before(&mut self, rank: i64) {
        self.floor = rank;
    }

    /// Live winners as rows, and as ids the deleted winners plus `deleted` (ids a separate
    /// stream said are gone, which beat any version here).
    pub fn finish(self, deleted: &HashSet<String>) -> Result<(Rows, Vec<String>)> {
        let mut keep: Vec<Vec<bool>> = self.rows.iter().map(|n| vec![false; *n]).collect();
        let mut deletes: Vec<String> = deleted.iter().cloned().collect();
        // Where each batch's rows start in the count across batches.
        let starts: Vec<usize> = self
            .rows
            .iter()
            .scan(0, |at, n| {
                *at += n;
                Some(*at - n)
            })
            .collect();
        for s in &self.latest.slots {
            if s.updated < self.floor {
                continue;
            }
            let id = Latest::id(&self.latest.arena, s);
            if s.row & DELETED != 0 {
                deletes.push(String::from_utf8_lossy(id).into_owned());
            } else if !std::str::from_utf8(id).is_ok_and(|id| deleted.contains(id)) {
                let row = (s.row & !DELETED) as usize;
                let batch = starts.partition_point(|&start| start <= row) - 1;
                keep[batch][row - starts[batch]] = true;
            }
        }
        deletes.sort();
        deletes.dedup();
        let rows = match self.spill {
            Some(spill) => spill.finish(keep)?,
            None => Rows::Memory(
                self.held
                    .iter()
                    .zip(keep)
                    .filter(|(_, mask)| mask.contains(&true))
                    .map(|(b, mask)| {
                        arrow::compute::filter_record_batch(b, &BooleanArray::from(mask))
                    })
                    .collect::<std::result::Result<_, _>>()?,
            ),
        };
        Ok((rows, deletes))
    }
}

#[cfg(test)]
mod tests {

    /// A folder whose lock can be taken is a dead run's and goes; a locked one, a fresh
    /// one whose lock is still being made, a file and a link to a folder stay.
    #[test]
    fn stale_spills_of_dead_runs_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let d = tmp.path().join(format!("{SPILL_PREFIX}{name}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("rows.arrow"), b"x").unwrap();
            d
        };
        let dead = mk("dead");
        std::fs::write(dead.join("lock"), b"").unwrap();
        let live = mk("live");
        let held = File::create(live.join("lock")).unwrap();
        held.try_lock().unwrap();
        // One being made: its lock is still under the name it is locked with.
        let fresh = mk("fresh");
        std::fs::write(fresh.join("lock.pending"), b"").unwrap();
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("lock"), b"").unwrap();
        let link = tmp.path().join(format!("{SPILL_PREFIX}link"));
        std::os::unix::fs::symlink(target.path(), &link).unwrap();
        assert_eq!(remove_stale_spills_in(tmp.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && fresh.exists() && link.exists());
        assert!(target.path().join("lock").exists());
        drop(held);
        assert_eq!(remove_stale_spills_in(tmp.path()), 1);
        assert!(!live.exists());
    }

    /// A live spill is registered (for the signal handler) until dropped, and it is not
    /// stale to a run that looks for dead ones.
    #[test]
    fn live_spills_are_registered_and_kept() {
        let d = SpillDir::try_new().unwrap();
        let path = d.path().to_path_buf();
        assert!(LIVE.lock().unwrap().contains(&path));
        // Its `lock` is locked from the moment it has that name.
        assert!(!path.join("lock.pending").exists());
        assert!(File::open(path.join("lock")).unwrap().try_lock().is_err());
        remove_stale_spills();
        assert!(path.exists(), "a live spill is not stale");
        drop(d);
        assert!(!path.exists() && !LIVE.lock().unwrap().contains(&path));
    }

    use super::*;
    use crate::model::schema::{ContactRecord, batches_to_records, records_to_batch};

    fn rec(id: &str, updated: i64, deleted: bool, note: &str) -> ContactRecord {
        ContactRecord {
            id: id.into(),
            updated: Some(updated),
            deleted,
            notes: Some(note.into()),
            ..Default::default()
        }
    }

    /// A collection that gets no row makes no spill: a fleet's no-change run made a
    /// folder, a lock and an Arrow file for each of its 10,000 accounts. One that gets a
    /// few rows holds them; one that outgrows the limit spills.
    #[test]
    fn an_empty_collection_spills_nothing() {
        let c = Collected::try_new().unwrap();
        assert!(c.spill.is_none());
        let (rows, deletes) = c.finish(&HashSet::from(["gone".to_string()])).unwrap();
        assert!(matches!(rows, Rows::Memory(b) if b.is_empty()));
        assert_eq!(deletes, vec!["gone".to_string()]);
        let mut c = Collected::try_new().unwrap();
        c.add(&records_to_batch(&[rec("a", 1, false, "n")]).unwrap(), None)
            .unwrap();
        assert!(c.spill.is_none() && c.held.len() == 1);
        let big = "x".repeat(HOLD_BYTES / 4);
        for i in 0..4 {
            let id = format!("b{i}");
            c.add(
                &records_to_batch(&[rec(&id, 1, false, &big)]).unwrap(),
                None,
            )
            .unwrap();
        }
        assert!(c.spill.is_some() && c.held.is_empty());
        let (rows, _) = c.finish(&HashSet::new()).unwrap();
        assert!(matches!(rows, Rows::Spilled { .. }));
        assert_eq!(rows.num_rows(), 5);
    }

    /// The same winners whether every batch is held, every batch spilled, or the
    /// first held and then spilled when the second comes (the spill's batches must keep
    /// the order of `rows`, which the row numbers count in).
    #[test]
    fn the_newest_version_of_each_id_wins_across_batches() {
        for case in ["held", "spilled", "held, then spilled"] {
            newest_version_wins(case);
        }
    }

    fn newest_version_wins(case: &str) {
        // An id longer than 127 bytes takes a two-byte length in the arena.
        let long = "L".repeat(300);
        let first = records_to_batch(&[
            rec("a", 10, false, "a1"),
            rec("b", 10, false, "b1"),
            rec("c", 5, true, "c1"),
            rec(&long, 7, false, "long1"),
        ])
        .unwrap();
        let second = records_to_batch(&[
            rec("a", 20, false, "a2"),
            // A tie: the later version wins, and it is not a new one.
            rec("b", 10, false, "b2"),
            rec("d", 1, false, "d1"),
            rec(&long, 3, false, "long-older"),
        ])
        .unwrap();
        let mut c = Collected::try_new().unwrap();
        c.hold = match case {
            "held" => usize::MAX,
            "spilled" => 0,
            _ => first.get_array_memory_size(),
        };
        c.add(&first, None).unwrap();
        assert_eq!(c.spill.is_some(), case == "spilled", "{case}");
        c.count_recent(15);
        c.add(&second, None).unwrap();
        // Only a2 is new and at or after the mark.
        assert_eq!(c.recent(), 1);
        assert_eq!(c.spill.is_some(), case != "held", "{case}");
        let (rows, deletes) = c.finish(&HashSet::from(["d".to_string()])).unwrap();
        assert_eq!(deletes, vec!["c".to_string(), "d".to_string()]);
        let mut kept: Vec<(String, String)> = batches_to_records(&rows.into_batches().unwrap())
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.notes.unwrap()))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            vec![
                (long.clone(), "long1".to_string()),
                ("a".to_string(), "a2".to_string()),
                ("b".to_string(), "b2".to_string()),
            ]
        );
    }
}
