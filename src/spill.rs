//! An extract's rows on local disk instead of in memory.
//!
//! A full extract cannot know which version of a contact wins until it has read every
//! page (a contact changed mid-read is delivered twice). Holding every page in memory
//! makes memory grow with the domain; instead each decoded page is appended to an Arrow
//! IPC file in a private temporary folder, only `(id → batch, row)` stays in memory, and
//! the winners are read back one batch at a time when the run is written to the lake.

use std::fs::File;
use std::io::{BufReader, BufWriter};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
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
