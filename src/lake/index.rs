//! Per-table lookups that a run with thousands of accounts makes once, not once per account:
//! every application transaction of a table (`txn` actions: `app id → version`) and the live
//! files of each partition.
//!
//! delta-rs answers one app id at a time, each a replay of the log from its checkpoint, and
//! lists a partition's files by walking every file of the table: at 10,000 accounts both
//! become quadratic. Here each table's transactions are read once from its checkpoint and
//! then advanced commit by commit (a run reads only the commits made since it last looked),
//! and a table version's files are grouped by partition once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use deltalake::DeltaTable;
use deltalake::kernel::LogicalFileView;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
#[allow(deprecated)] // still the object-store reader of parquet 59; its successor is not out
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};

use super::TableKind;
use crate::error::{Context, Error, Kind, Result};

/// Past this many commits since the cached version, the transactions are read again from
/// the newest checkpoint rather than commit by commit.
const MAX_COMMITS_TO_ADVANCE: u64 = 40;

/// `(source, account)` → that partition's live files.
pub(super) type PartitionFiles = HashMap<(String, String), Vec<LogicalFileView>>;

/// The transactions of one table as of a version.
#[derive(Debug, Clone, Default)]
struct Txns {
    version: u64,
    apps: Arc<HashMap<String, i64>>,
}

/// What the lake remembers between lookups (shared by the clones of one [`super::Lake`]).
#[derive(Default)]
pub(super) struct Indexes {
    // (Not Debug: delta-rs's file views are not.)
    txns: Mutex<HashMap<TableKind, Arc<Txns>>>,
    partitions: Mutex<HashMap<TableKind, (u64, Arc<PartitionFiles>)>>,
}

impl Indexes {
    /// Every `app id → version` of `table` as of its loaded version.
    pub(super) async fn txns(
        &self,
        kind: TableKind,
        table: &DeltaTable,
    ) -> Result<Arc<HashMap<String, i64>>> {
        let version = table.version().unwrap_or(0);
        let cached = self.txns.lock().unwrap().get(&kind).cloned();
        let txns = match cached {
            Some(t) if t.version == version => t,
            Some(t) if t.version < version && version - t.version <= MAX_COMMITS_TO_ADVANCE => {
                let mut t = (*t).clone();
                advance(table, &mut t, version).await?;
                Arc::new(t)
            }
            _ => Arc::new(load(table, version).await?),
        };
        let mut all = self.txns.lock().unwrap();
        if all.get(&kind).is_none_or(|old| old.version <= txns.version) {
            all.insert(kind, txns.clone());
        }
        // The map is shared, not copied, by the accounts that look into it.
        Ok(txns.apps.clone())
    }

    /// The live files of `table` grouped by partition (`source`, `account`), built once per
    /// table version.
    pub(super) fn partitions(
        &self,
        kind: TableKind,
        table: &DeltaTable,
    ) -> Result<Arc<PartitionFiles>> {
        let version = table.version().unwrap_or(0);
        if let Some((v, p)) = self.partitions.lock().unwrap().get(&kind)
            && *v == version
        {
            return Ok(p.clone());
        }
        let mut by: PartitionFiles = HashMap::new();
        for f in table.snapshot()?.log_data().iter() {
            let pv = f.partition_values_map();
            let get = |k: &str| pv.get(k).cloned().flatten().unwrap_or_default();
            by.entry((get("source"), get("account")))
                .or_default()
                .push(f);
        }
        let by = Arc::new(by);
        let mut all = self.partitions.lock().unwrap();
        if all.get(&kind).is_none_or(|(v, _)| *v <= version) {
            all.insert(kind, (version, by.clone()));
        }
        Ok(by)
    }
}

/// Reads the transactions from the newest checkpoint at or below `version`, then the
/// commits after it.
async fn load(table: &DeltaTable, version: u64) -> Result<Txns> {
    let store = table.log_store().object_store(None);
    let hint = match store.get(&Path::from("_delta_log/_last_checkpoint")).await {
        Ok(r) => serde_json::from_slice::<serde_json::Value>(&r.bytes().await?)
            .ok()
            .and_then(|v| v.get("version").and_then(|v| v.as_u64())),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let mut apps = HashMap::new();
    let from = match hint.filter(|c| *c <= version) {
        Some(c) => {
            read_checkpoint(table, c, &mut apps).await?;
            c
        }
        // No checkpoint yet (or only a newer one than this snapshot): from the first commit.
        None => {
            read_commit(table, 0, &mut apps).await?;
            0
        }
    };
    let mut t = Txns {
        version: from,
        apps: Arc::new(apps),
    };
    advance(table, &mut t, version).await?;
    Ok(t)
}

/// Applies the `txn` actions of the commits after `t.version` up to `version`.
async fn advance(table: &DeltaTable, t: &mut Txns, version: u64) -> Result<()> {
    if t.version >= version {
        return Ok(());
    }
    let apps = Arc::make_mut(&mut t.apps);
    for v in t.version + 1..=version {
        read_commit(table, v, apps).await?;
    }
    t.version = version;
    Ok(())
}

async fn read_commit(table: &DeltaTable, v: u64, apps: &mut HashMap<String, i64>) -> Result<()> {
    let Some(bytes) = table.log_store().read_commit_entry(v as _).await? else {
        return Err(Error::lake(format!(
            "{}: commit {v} is missing from the log",
            table.table_url()
        )));
    };
    for line in bytes.split(|b| *b == b'\n') {
        // Only the few `txn` lines are parsed.
        if !line.starts_with(b"{\"txn\"") {
            continue;
        }
        let a: serde_json::Value =
            serde_json::from_slice(line).with_context(Kind::CorruptLake, || {
                format!(
                    "{}: _delta_log/{v:020}.json: unreadable txn action",
                    table.table_url()
                )
            })?;
        if let (Some(app), Some(ver)) = (
            a.pointer("/txn/appId").and_then(|x| x.as_str()),
            a.pointer("/txn/version").and_then(|x| x.as_i64()),
        ) {
            apps.insert(app.to_string(), ver);
        }
    }
    Ok(())
}

/// The `txn` rows of a (single-file) checkpoint.
#[allow(deprecated)]
async fn read_checkpoint(
    table: &DeltaTable,
    c: u64,
    apps: &mut HashMap<String, i64>,
) -> Result<()> {
    let store = table.log_store().object_store(None);
    let path = Path::from(format!("_delta_log/{c:020}.checkpoint.parquet"));
    let builder =
        ParquetRecordBatchStreamBuilder::new(ParquetObjectReader::new(store, path.clone()))
            .await
            .with_context(Kind::Lake, || {
                format!("{}: checkpoint {path}", table.table_url())
            })?;
    let leaves: Vec<Option<usize>> = ["appId", "version"]
        .iter()
        .map(|name| {
            builder
                .parquet_schema()
                .columns()
                .iter()
                .position(|col| col.path().parts() == ["txn", name])
        })
        .collect();
    let [Some(a), Some(v)] = leaves[..] else {
        // A checkpoint of a table that never had a transaction has no txn column.
        return Ok(());
    };
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [a, v]);
    let mut stream = builder.with_projection(mask).build()?;
    while let Some(b) = stream.try_next().await.with_context(Kind::Lake, || {
        format!("{}: checkpoint {path}", table.table_url())
    })? {
        let bad = |what: &str| {
            Error::corrupt(format!("{}: checkpoint {path}: {what}", table.table_url()))
        };
        let txn = b
            .column(0)
            .as_struct_opt()
            .ok_or_else(|| bad("txn is not a struct"))?;
        let field = |name: &str, to: &DataType| -> Result<arrow::array::ArrayRef> {
            let c = txn
                .column_by_name(name)
                .ok_or_else(|| bad(&format!("txn has no {name}")))?;
            arrow::compute::cast(c, to).with_context(Kind::CorruptLake, || {
                format!("{}: checkpoint {path}: txn.{name}", table.table_url())
            })
        };
        let ids = field("appId", &DataType::Utf8)?;
        let vers = field("version", &DataType::Int64)?;
        let (ids, vers) = (ids.as_string::<i32>(), vers.as_primitive::<Int64Type>());
        for i in 0..b.num_rows() {
            if txn.is_valid(i) && ids.is_valid(i) && vers.is_valid(i) {
                apps.insert(ids.value(i).to_string(), vers.value(i));
            }
        }
    }
    Ok(())
}

impl std::fmt::Debug for Indexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexes").finish_non_exhaustive()
    }
}
