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
