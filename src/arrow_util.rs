//! Small Arrow helpers: bring batches read back from Delta (Utf8View strings, dictionary
//! partition columns, `element` list children) to a declared schema.

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;

use crate::error::{Context, Kind, Result};

/// Casts every column of `batch` to the type of the same-named field of `schema`
/// (missing columns become nulls) and returns a batch with exactly `schema`.
pub fn normalize_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    let cols = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(col) if col.data_type() == f.data_type() => Ok(col.clone()),
            Some(col) => cast_with_options(col, f.data_type(), &opts)
                .with_context(Kind::Other, || format!("column {}", f.name())),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .context(Kind::Other, "normalizing a batch")
}

/// Concatenates batches (normalized to `schema`) into one.
pub fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let normalized = batches
        .iter()
        .map(|b| normalize_batch(b, schema))
        .collect::<Result<Vec<_>>>()?;
    Ok(arrow::compute::concat_batches(schema, &normalized)?)
}

thread_local! {
    /// Set while [`caught`] runs a call into the Parquet reader on this thread.
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a call into the Parquet reader on a file this process did not write (a saved
/// plan, a desired state), turning a panic of the reader into `err(what it said)`. The
/// reader (parquet 59) still asserts on some damaged files instead of returning an error
/// (a dictionary index bit width over 32 is one: apache/arrow-rs#10722), and a damaged
/// input must be refused in words. While `f` runs, the process's panic hook stays quiet:
/// the panic is the file's fault, answered by the error, not a bug to report.
pub fn caught<T, E>(
    f: impl FnOnce() -> std::result::Result<T, E>,
    err: impl FnOnce(String) -> E,
) -> std::result::Result<T, E> {
    quiet_hook_in_guards();
    let was = IN_GUARD.with(|g| g.replace(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(was));
    out.unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(err(format!(
            "damaged Parquet data (the reader stopped: {what})"
        )))
    })
}

/// Wraps the panic hook in place at the first guarded call (the CLI's, set at start) so
/// that it says nothing for a panic inside [`caught`].
fn quiet_hook_in_guards() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_GUARD.with(|g| g.get()) {
                hook(info);
            }
        }));
    });
}

/// The batches of a Parquet reader over a file from outside, each read through
/// [`caught`]: a panic of the reader is an error, and the last item.
pub struct CaughtBatches<I>(Option<I>);

impl<I> CaughtBatches<I> {
    /// Guards the batches of `reader`.
    pub fn new(reader: I) -> Self {
        CaughtBatches(Some(reader))
    }
}

impl<I> Iterator for CaughtBatches<I>
where
    I: Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>,
{
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let reader = self.0.as_mut()?;
        match caught(|| Ok(reader.next()), arrow::error::ArrowError::ParquetError) {
            Ok(item) => item,
            Err(e) => {
                // A reader that panicked mid-batch is in no state to go on.
                self.0 = None;
                Some(Err(e))
            }
        }
    }
}
