//! The trail an apply leaves in `writeback_results`: one row per operation and per
//! invalid desired row, written as `sent` before a group goes out and replaced by the
//! group's results when its answers are in.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::protocol::SaveMode;

use super::resolve::SENT;
use super::{Invalid, Plan};
use crate::error::{Error, Result};
use crate::lake::{Lake, TableKind, writeback_results_schema};
use crate::model::write::OpResult;

/// One `writeback_results` row.
#[derive(Debug, Clone)]
pub(crate) struct ResultRow {
    pub(crate) op_index: i64,
    pub(crate) account: String,
    pub(crate) op: String,
    pub(crate) key: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) http_status: Option<i64>,
    pub(crate) result: String,
    pub(crate) reason: Option<String>,
    pub(crate) new_etag: Option<String>,
    pub(crate) error: Option<String>,
}

impl ResultRow {
    /// The row recorded for a desired row that was not sent.
    pub(crate) fn invalid(op_index: usize, inv: &Invalid) -> ResultRow {
        ResultRow {
            op_index: op_index as i64,
            account: inv.account.clone(),
            op: "invalid".into(),
            key: None,
            id: inv.id.clone(),
            http_status: None,
            result: "invalid".into(),
            reason: Some(inv.reason.clone()),
            new_etag: None,
            error: Some(format!("desired row {}: {}", inv.row + 1, inv.reason)),
        }
    }
}

/// The rows of a plan's invalid desired rows, numbered after its operations.
pub(crate) fn invalid_rows(ops: usize, invalid: &[Invalid]) -> Vec<ResultRow> {
    invalid
        .iter()
        .enumerate()
        .map(|(i, inv)| ResultRow::invalid(ops + i, inv))
        .collect()
}

/// The rows of contact operations' `results`. A result for an operation the plan does
/// not hold is a provider's bug, said as an error rather than a panic.
pub(super) fn contact_rows(plan: &Plan, results: &[OpResult]) -> Result<Vec<ResultRow>> {
    results
        .iter()
        .map(|r| {
            let op = plan.ops.get(r.index).ok_or_else(|| {
                Error::other(format!(
                    "a write-back result names operation {} of a plan of {}",
                    r.index,
                    plan.ops.len()
                ))
            })?;
            Ok(ResultRow {
                op_index: r.index as i64,
                account: op.account.clone(),
                op: op.kind().as_str().into(),
                key: Some(op.key.clone()),
                id: r.id.clone().or(op.id().map(str::to_string)),
                http_status: r.http_status.map(i64::from),
                result: r.outcome.as_str().into(),
                reason: r.reason.clone(),
                new_etag: r.new_etag.clone(),
                error: r.error.clone(),
            })
        })
        .collect()
}

/// Replaces the `sent` rows of the operations `first..first + n` of one apply with their
/// results `rows`, in one commit.
pub(crate) async fn replace_group(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
    first: usize,
    n: usize,
) -> Result<()> {
    let predicate = format!(
        "apply_id = '{}' AND op_index >= {first} AND op_index < {}",
        apply_id.replace('\'', "''"),
        first + n
    );
    replace_rows(lake, apply_id, source, rows, &predicate).await
}

/// The `sent` rows of a group of operations: what each is, and (in `reason`) the etag
/// its contact had when it was sent, which tells afterwards whether it was applied.
pub(super) fn sent_rows(group: &[crate::model::write::Op]) -> Vec<ResultRow> {
    use crate::model::write::Action;
    group
        .iter()
        .map(|op| {
            let before = match &op.action {
                Action::Update { landed, .. } | Action::Delete { landed, .. } => {
                    landed.etag.clone()
                }
                Action::Insert { .. } => None,
            };
            ResultRow {
                op_index: op.index as i64,
                account: op.account.clone(),
                op: op.kind().as_str().into(),
                key: Some(op.key.clone()),
                id: op.id().map(str::to_string),
                http_status: None,
                result: SENT.into(),
                reason: Some(serde_json::json!({ "etag_before": before }).to_string()),
                new_etag: None,
                error: None,
            }
        })
        .collect()
}

/// Appends `writeback_results` rows of one apply.
pub(crate) async fn record_rows(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    commit_rows(lake, apply_id, source, rows, None).await
}

/// Replaces the `writeback_results` rows `predicate` selects (rows of one apply) with
/// `rows`, in one commit: the `sent` rows of a group become its results.
pub(crate) async fn replace_rows(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
    predicate: &str,
) -> Result<()> {
    commit_rows(lake, apply_id, source, rows, Some(predicate)).await
}

/// One commit to `writeback_results`: `rows` appended, or replacing what `replacing`
/// selects.
async fn commit_rows(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
    replacing: Option<&str>,
) -> Result<()> {
    let batch = result_batch(apply_id, source, rows)?;
    // Results have no txn to fence them, and neither an append nor a replace of one
    // apply's own rows conflicts with another writer's: any error is tried again.
    crate::lake::retry::retry(
        "writeback_results",
        |_: &Error| true,
        async |_| {
            let t = lake.open_or_create(TableKind::WritebackResults).await?;
            write_rows(t, apply_id, batch.clone(), replacing).await
        },
    )
    .await
    .map_err(|e| e.context("recording results in writeback_results"))
}

/// One attempt at a commit of `batch` (rows of one apply) to `writeback_results` as `t`
/// holds it: appended, or replacing what `replacing` selects. A commit on a table that
/// changed since `t` fails as a conflict.
pub(crate) async fn write_rows(
    t: deltalake::DeltaTable,
    apply_id: &str,
    batch: RecordBatch,
    replacing: Option<&str>,
) -> Result<()> {
    let props = deltalake::kernel::transaction::CommitProperties::default()
        .with_metadata([("app.run_id".to_string(), serde_json::json!(apply_id))]);
    let write = t.write(vec![batch]).with_commit_properties(props);
    let write = match replacing {
        Some(p) => write
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(p.to_string()),
        None => write.with_save_mode(SaveMode::Append),
    };
    write.await.map(|_| ()).map_err(Error::from)
}

/// `rows` of one apply as a batch of `writeback_results`.
pub(crate) fn result_batch(
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
) -> Result<RecordBatch> {
    let now = chrono::Utc::now().timestamp_micros();
    let n = rows.len();
    let s = |f: fn(&ResultRow) -> Option<String>| {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
            as arrow::array::ArrayRef
    };
    let batch = RecordBatch::try_new(
        writeback_results_schema(),
        vec![
            Arc::new(StringArray::from(vec![apply_id; n])),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.op_index).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(vec![source; n])),
            s(|r| Some(r.account.clone())),
            s(|r| Some(r.op.clone())),
            s(|r| r.key.clone()),
            s(|r| r.id.clone()),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.http_status).collect::<Vec<_>>(),
            )),
            s(|r| Some(r.result.clone())),
            s(|r| r.reason.clone()),
            s(|r| r.new_etag.clone()),
            s(|r| r.error.clone()),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )?;
    Ok(batch)
}
