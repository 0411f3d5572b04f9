//! Table kinds, their schemas and the Delta column conversion.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::StructField;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;

use super::RunFigures;
use crate::error::{Context, Kind, Result};
use crate::model::schema::contacts_schema;

/// The lake's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Current state.
    Contacts,
    /// Append-only change log.
    ContactChanges,
    /// One row per source/account per run.
    SyncRuns,
    /// One row per reverse-sink operation.
    WritebackResults,
    /// Contact photos (sources with `photos = true`).
    ContactPhotos,
}

impl TableKind {
    /// Every table.
    pub const ALL: [TableKind; 5] = [
        TableKind::Contacts,
        TableKind::ContactChanges,
        TableKind::SyncRuns,
        TableKind::WritebackResults,
        TableKind::ContactPhotos,
    ];

    /// The table's name (and folder under the lake URL).
    pub fn name(&self) -> &'static str {
        match self {
            TableKind::Contacts => "contacts",
            TableKind::ContactChanges => "contact_changes",
            TableKind::SyncRuns => "sync_runs",
            TableKind::WritebackResults => "writeback_results",
            TableKind::ContactPhotos => "contact_photos",
        }
    }

    /// The table's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            TableKind::Contacts | TableKind::ContactChanges => contacts_schema(),
            TableKind::SyncRuns => sync_runs_schema(),
            TableKind::WritebackResults => writeback_results_schema(),
            TableKind::ContactPhotos => contact_photos_schema(),
        }
    }

    /// The columns whose statistics the Delta log keeps for each file, where not every
    /// column's. The append-only tables gain one file per account and run, and each file's
    /// statistics are held in memory by every snapshot and written into every checkpoint:
    /// they keep only what is read by them (`seq` finds a run's cursor in `sync_runs`;
    /// `_run_id` a replayed run's rows in `contact_changes`, `_synced_at` a reader's window).
    pub fn stats_columns(&self) -> Option<&'static str> {
        match self {
            TableKind::ContactChanges => Some("_run_id,_synced_at"),
            TableKind::SyncRuns => Some("seq"),
            _ => None,
        }
    }

    /// Partition columns.
    pub fn partitions(&self) -> &'static [&'static str] {
        &["source", "account"]
    }

    /// Looks a table up by name.
    pub fn from_name(name: &str) -> Option<TableKind> {
        TableKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of `sync_runs`.
pub fn sync_runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("account", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, true),
        Field::new("mode", DataType::Utf8, false),
        Field::new("started_at", ts(), false),
        Field::new("finished_at", ts(), false),
        Field::new("upserted", DataType::Int64, false),
        Field::new("deleted", DataType::Int64, false),
        Field::new("pages", DataType::Int64, false),
        Field::new("requests", DataType::Int64, false),
        Field::new("retries", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("cursor", DataType::Utf8, true),
    ]))
}

/// Schema of `writeback_results`.
pub fn writeback_results_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("apply_id", DataType::Utf8, false),
        Field::new("op_index", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("account", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("id", DataType::Utf8, true),
        Field::new("http_status", DataType::Int64, true),
        Field::new("result", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("new_etag", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("applied_at", ts(), false),
    ]))
}

/// Schema of `contact_photos`: one row per contact that has a photo.
pub fn contact_photos_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("account", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("etag", DataType::Utf8, true),
        Field::new("content_type", DataType::Utf8, true),
        Field::new("bytes", DataType::Binary, false),
        Field::new("size", DataType::Int64, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("fetched_run_id", DataType::Utf8, false),
        Field::new("fetched_at", ts(), false),
    ]))
}

/// Arrow fields → Delta columns.
pub fn delta_fields(schema: &Schema) -> Result<Vec<StructField>> {
    let st = deltalake::kernel::StructType::try_from_arrow(schema)
        .context(Kind::Lake, "schema conversion")?;
    Ok(st.fields().cloned().collect())
}

/// One `sync_runs` row.
pub fn run_batch(
    source: &str,
    account: &str,
    seq: Option<i64>,
    f: &RunFigures,
    cursor: Option<&str>,
) -> Result<RecordBatch> {
    let s = |v: &str| Arc::new(StringArray::from(vec![v.to_string()])) as arrow::array::ArrayRef;
    let i = |v: i64| Arc::new(Int64Array::from(vec![v])) as arrow::array::ArrayRef;
    let t = |v: i64| {
        Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"))
            as arrow::array::ArrayRef
    };
    Ok(RecordBatch::try_new(
        sync_runs_schema(),
        vec![
            s(&f.run_id),
            s(source),
            s(account),
            Arc::new(Int64Array::from(vec![seq])),
            s(&f.mode),
            t(f.started_at_us),
            t(f.finished_at_us),
            i(f.upserted),
            i(f.deleted),
            i(f.pages),
            i(f.requests),
            i(f.retries),
            i(f.bytes),
            s(&f.status),
            Arc::new(StringArray::from(vec![f.error.clone()])),
            Arc::new(StringArray::from(vec![cursor.map(str::to_string)])),
        ],
    )?)
}
