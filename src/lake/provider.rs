//! What SQL over the lake reads: the data, not the log's statistics about it.
//!
//! delta-rs answers a scan that needs no data column (`count(*)`, a `GROUP BY` of the
//! partition columns) from each file's `numRecords` in the log, without opening the
//! files, and DataFusion answers `count(*)` from the same figures. A data file deleted
//! from the store, or a log entry edited, then gives a count the data does not have. So
//! every table a session sees is checked against a listing of the store first (a file
//! missing or of another size is an error naming it), such scans also read one data
//! column, and the session does not answer aggregates from statistics.
//!
//! Not covered: a bit flipped inside a data file of the right size. Parquet page checksums
//! would catch it, but parquet-rs 59 writes none (its page writer leaves the header's
//! `crc` unset) and verifies them only with its `crc` feature, which is off here.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use futures::TryStreamExt;

use super::{Lake, TableKind};
use crate::error::{Context, Error, Kind, Result};

/// A DataFusion session for SQL over the lake: the defaults, less the rule that answers
/// aggregates from statistics (the log's, which a damaged lake gets wrong), reading local
/// data files through their checksums ([`super::checksum`]).
pub fn session_context() -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(datafusion::prelude::SessionConfig::new().with_information_schema(true))
        .with_default_features()
        .build();
    let rules: Vec<_> = state
        .physical_optimizers()
        .iter()
        .filter(|r| r.name() != "aggregate_statistics")
        .cloned()
        .collect();
    let state = SessionStateBuilder::new_from_existing(state)
        .with_physical_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    // DataFusion has a local store of its own, which delta-rs then uses for a local lake:
    // it is replaced by one that checks the data files' checksums.
    super::checksum::register_local(&ctx);
    ctx
}

impl Lake {
    /// The provider of `table` (a version of `kind`) for SQL: its data files checked
    /// against the store, scans that read them (see the module docs).
    pub async fn provider(
        &self,
        kind: TableKind,
        table: &DeltaTable,
    ) -> Result<Arc<dyn TableProvider>> {
        check_files(kind, table).await?;
        super::checksum::expect_table(table);
        let inner = table.table_provider().await?;
        let schema = inner.schema();
        let data = schema
            .fields()
            .iter()
            .position(|f| !kind.partitions().contains(&f.name().as_str()));
        Ok(match data {
            Some(data) => Arc::new(ReadsData {
                inner,
                data,
                partitions: kind.partitions(),
            }) as Arc<dyn TableProvider>,
            None => inner,
        })
    }
}

/// Every data file the log of `table` lists is in the store, at the size the log gives:
/// one listing of the table.
async fn check_files(kind: TableKind, table: &DeltaTable) -> Result<()> {
    let store = table.log_store().object_store(None);
    let mut listed: HashMap<object_store::path::Path, u64> = HashMap::new();
    let mut list = store.list(None);
    while let Some(m) = list
        .try_next()
        .await
        .with_context(Kind::Lake, || format!("{}: listing its files", kind.name()))?
    {
        if !m.location.as_ref().starts_with("_delta_log/") {
            listed.insert(m.location, m.size);
        }
    }
    for f in table.snapshot()?.log_data().iter() {
        let path = f.object_store_path();
        match listed.get(&path) {
            None => {
                return Err(Error::lake(format!(
                    "{}: data file {} is missing from the store (the table's log lists it); restore it from a copy of the lake",
                    kind.name(),
                    f.path()
                )));
            }
            Some(&size) if size != f.size() as u64 => {
                return Err(Error::lake(format!(
                    "{}: data file {} is {size} bytes, the table's log says {}: it was cut short or replaced",
                    kind.name(),
                    f.path(),
                    f.size()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// delta-rs's provider, made to read a data column where a scan needs none (which it
/// would answer from the log).
#[derive(Debug)]
struct ReadsData {
    inner: Arc<dyn TableProvider>,
    /// A column stored in the data files.
    data: usize,
    partitions: &'static [&'static str],
}

#[async_trait::async_trait]
impl TableProvider for ReadsData {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let only_partitions = projection.is_some_and(|p| {
            p.iter()
                .all(|i| self.partitions.contains(&schema.field(*i).name().as_str()))
        });
        let Some(projection) = projection.filter(|_| only_partitions) else {
            return self.inner.scan(state, projection, filters, limit).await;
        };
        let mut with_data = projection.clone();
        with_data.push(self.data);
        let plan = self
            .inner
            .scan(state, Some(&with_data), filters, limit)
            .await?;
        let out = plan.schema();
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = (0..projection.len())
            .map(|i| {
                let name = out.field(i).name().clone();
                (
                    Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                    name,
                )
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}
