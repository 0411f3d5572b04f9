//! An extract's rows on local disk instead of in memory.
//!
//! A full extract cannot know which version of a contact wins until it has read every
//! page (a contact changed mid-read is delivered twice). Holding every page in memory
//! makes memory grow with the domain; instead each decoded page is appended to an Arrow
//! IPC file in a private temporary folder, only `(id → batch, row)` stays in memory, and
//! the winners are read back one batch at a time when the run is written to the lake.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use crate::error::{Error, Result};

/// Batches appended to a temporary Arrow IPC file.
pub struct Spill {
    dir: tempfile::TempDir,
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

fn io(e: impl std::fmt::Display) -> Error {
    Error::other(format!(
        "spilling the extract to a temporary file failed ({e}); check free space in the temporary folder (TMPDIR)"
    ))
}

impl Spill {
    /// An empty spill for batches of `schema`.
    pub fn try_new(schema: &SchemaRef) -> Result<Spill> {
        let dir = tempfile::Builder::new()
            .prefix("contacts-etl-extract-")
            .tempdir()
            .map_err(io)?;
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
        dir: tempfile::TempDir,
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
    /// The id's bytes in the arena.
    off: u32,
    len: u32,
    updated: i64,
    batch: u32,
    /// Row in the batch; the high bit marks a deletion placeholder.
    row: u32,
}

const DELETED: u32 = 1 << 31;

/// id → newest version, with the ids packed into one arena: a `HashMap<String, …>` costs
/// about 100 bytes per contact, this about 45, which is most of what a full extract of a
/// large domain keeps in memory.
#[derive(Default)]
struct Latest {
    arena: Vec<u8>,
    table: hashbrown::HashTable<Slot>,
    hasher: std::collections::hash_map::RandomState,
}

impl Latest {
    fn id<'a>(arena: &'a [u8], s: &Slot) -> &'a [u8] {
        &arena[s.off as usize..(s.off + s.len) as usize]
    }

    /// Records a version; the newest `updated` wins, and on a tie the later one. Returns
    /// whether the version is new: an id not seen, or seen with another `updated`.
    fn offer(&mut self, id: &str, updated: i64, batch: usize, row: usize, deleted: bool) -> bool {
        use std::hash::BuildHasher;
        let Latest {
            arena,
            table,
            hasher,
        } = self;
        let h = hasher.hash_one(id.as_bytes());
        let row = row as u32 | if deleted { DELETED } else { 0 };
        match table.entry(
            h,
            |s| Self::id(arena, s) == id.as_bytes(),
            |s| hasher.hash_one(Self::id(arena, s)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let s = o.get_mut();
                let new = s.updated != updated;
                if s.updated <= updated {
                    s.updated = updated;
                    s.batch = batch as u32;
                    s.row = row;
                }
                new
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let off = arena.len() as u32;
                arena.extend_from_slice(id.as_bytes());
                v.insert(Slot {
                    off,
                    len: id.len() as u32,
                    updated,
                    batch: batch as u32,
                    row,
                });
                true
            }
        }
    }
}

/// The newest version seen of each id across pages. Pages go to a [`Spill`] on local
/// disk as they are decoded; only the winners' positions stay in memory.
pub struct Collected {
    spill: Spill,
    latest: Latest,
    /// Rows per spilled batch.
    rows: Vec<usize>,
    /// New versions (see [`Latest::offer`]) with `updated` at or after this instant are
    /// counted in `recent`.
    recent_since: i64,
    recent: usize,
    /// Versions ranked below this are dropped at the end (see [`Collected::forget_before`]).
    floor: i64,
}

impl Collected {
    /// An empty collection, spilling to a new temporary folder.
    pub fn try_new() -> Result<Collected> {
        Ok(Collected {
            spill: Spill::try_new(&crate::schema::contacts_schema())?,
            latest: Latest::default(),
            rows: Vec::new(),
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
        let bi = self.spill.len();
        for row in 0..batch.num_rows() {
            let upd = updated.is_valid(row).then(|| updated.value(row));
            let upd = upd.unwrap_or(i64::MIN);
            let gone = deleted.is_valid(row) && deleted.value(row);
            let new = self
                .latest
                .offer(ids.value(row), rank.unwrap_or(upd), bi, row, gone);
            // `updated-min` is inclusive: a version read again at the boundary is no change.
            if new && upd >= self.recent_since {
                self.recent += 1;
            }
        }
        self.rows.push(batch.num_rows());
        self.spill.push(batch)?;
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
        for s in self.latest.table.iter() {
            if s.updated < self.floor {
                continue;
            }
            let id = Latest::id(&self.latest.arena, s);
            if s.row & DELETED != 0 {
                deletes.push(String::from_utf8_lossy(id).into_owned());
            } else if !std::str::from_utf8(id).is_ok_and(|id| deleted.contains(id)) {
                keep[s.batch as usize][(s.row & !DELETED) as usize] = true;
            }
        }
        deletes.sort();
        deletes.dedup();
        Ok((self.spill.finish(keep)?, deletes))
    }
}
