//! Sources: one folder per provider with the same files (`mod.rs` = the source, `decode.rs`
//! = pure bytes → records). Every provider is registered in [`AnySource::try_new`]'s one
//! `match`; adding a provider takes one folder and one line there.

pub mod aurinko;
pub mod google;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Provider, SourceConfig};
use crate::error::Result;
use crate::http::{HttpClient, Metrics, RetryPolicy};

/// How an extract ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Everything, first time or on request.
    Full,
    /// Changes since the stored cursor.
    Incremental,
    /// Everything again, because the API said the cursor expired.
    Resync,
}

impl SyncMode {
    /// The name stored in `sync_runs.mode`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Incremental => "incremental",
            SyncMode::Resync => "resync",
        }
    }
    /// Whether the extract holds every live contact (so absent ones are deleted).
    pub fn is_full(&self) -> bool {
        !matches!(self, SyncMode::Incremental)
    }
}

/// What one account's extract produced.
#[derive(Debug)]
pub struct Extract {
    /// Full or incremental.
    pub mode: SyncMode,
    /// Upserted contacts (schema of [`crate::schema::contacts_schema`]), deduplicated by id.
    pub upserts: crate::spill::Rows,
    /// Ids seen deleted.
    pub deletes: Vec<String>,
    /// The cursor to store with this data (opaque to the lake).
    pub cursor: String,
}

/// Per-run context given to an extract.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The run id (`_run_id`).
    pub run_id: String,
    /// When the run started, µs since the epoch (`_synced_at`).
    pub synced_at_us: i64,
    /// Counters for this account.
    pub metrics: Arc<Metrics>,
    /// Progress bar, when on a terminal.
    pub progress: Option<indicatif::ProgressBar>,
}

/// The outcome of one write operation.
#[derive(Debug, Clone, Default)]
pub struct OpResult {
    /// The operation's index in the plan.
    pub index: usize,
    /// HTTP (or batch) status.
    pub http_status: Option<u16>,
    /// `ok`, `conflict` or `failed`.
    pub result: String,
    /// The status reason.
    pub reason: Option<String>,
    /// The contact id (new for inserts).
    pub id: Option<String>,
    /// The contact's etag after the write.
    pub new_etag: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

impl OpResult {
    /// A failed operation.
    pub fn failed(index: usize, status: Option<u16>, error: String) -> OpResult {
        OpResult {
            index,
            http_status: status,
            result: "failed".into(),
            error: Some(error),
            ..Default::default()
        }
    }
}

/// A configured source of any provider.
pub enum AnySource {
    /// Google Domain Shared Contacts.
    Google(google::GoogleSource),
    /// Aurinko Contacts.
    Aurinko(aurinko::AurinkoSource),
}

impl AnySource {
    /// Builds the source a pipeline entry describes.
    pub fn try_new(cfg: &SourceConfig, pipeline_dir: &std::path::Path) -> Result<AnySource> {
        let http = http_client(cfg)?;
        Ok(match cfg.provider {
            Provider::Google => {
                AnySource::Google(google::GoogleSource::try_new(cfg, http, pipeline_dir)?)
            }
            Provider::Aurinko => {
                AnySource::Aurinko(aurinko::AurinkoSource::try_new(cfg, http, pipeline_dir)?)
            }
        })
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            AnySource::Google(s) => s.name(),
            AnySource::Aurinko(s) => s.name(),
        }
    }

    /// The accounts it syncs (Google: the domain).
    pub fn accounts(&self) -> Vec<String> {
        match self {
            AnySource::Google(s) => s.accounts(),
            AnySource::Aurinko(s) => s.accounts(),
        }
    }

    /// How many accounts to sync at once.
    pub fn account_concurrency(&self) -> usize {
        match self {
            AnySource::Google(_) => 1,
            AnySource::Aurinko(s) => s.concurrency(),
        }
    }

    /// Extracts one account: full when `cursor` is `None` or `full` is set, else
    /// incremental. An expired cursor yields [`crate::Error::CursorExpired`].
    pub async fn extract(
        &self,
        account: &str,
        cursor: Option<&str>,
        ctx: &RunContext,
    ) -> Result<Extract> {
        match self {
            AnySource::Google(s) => s.extract(account, cursor, ctx).await,
            AnySource::Aurinko(s) => s.extract(account, cursor, ctx).await,
        }
    }
}

impl AnySource {
    /// Applies planned operations; one result per operation.
    pub async fn apply(
        &self,
        ops: &[crate::plan::Op],
        managed: &[String],
        force: bool,
        metrics: &Metrics,
    ) -> Result<Vec<OpResult>> {
        match self {
            AnySource::Google(s) => s.apply(ops, managed, force, metrics).await,
            AnySource::Aurinko(s) => s.apply(ops, managed, force, metrics).await,
        }
    }

    /// The provider.
    pub fn provider(&self) -> crate::config::Provider {
        match self {
            AnySource::Google(_) => crate::config::Provider::Google,
            AnySource::Aurinko(_) => crate::config::Provider::Aurinko,
        }
    }
}

fn http_client(cfg: &SourceConfig) -> Result<HttpClient> {
    let mut policy = RetryPolicy::default();
    if let Some(n) = cfg.max_retries {
        policy.max_retries = n;
    }
    if let Some(ms) = cfg.retry_base_ms {
        policy.base = Duration::from_millis(ms);
    }
    HttpClient::try_new(Duration::from_secs(cfg.timeout_secs.unwrap_or(60)), policy)
}
