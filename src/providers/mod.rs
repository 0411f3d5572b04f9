//! Providers: one folder each with the same files (`mod.rs` = the source, `decode.rs` =
//! pure bytes → records, `writeback.rs`, `rules.rs`), behind the traits [`Source`],
//! [`WriteBack`], [`Rules`] and [`Photos`]. Every provider is registered in [`build`] and
//! [`profile`]; adding one takes a folder and a line in each (see DESIGN.md).

pub mod aurinko;
pub mod google;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{Provider, SourceConfig};
use crate::error::Result;
use crate::http::{HttpClient, Metrics, RetryPolicy};
use crate::model::photo::{FetchedPhoto, PhotoOp, PhotoWant};
use crate::model::schema::ContactRecord;
use crate::model::write::Op;

pub use crate::model::extract::{Extract, SyncMode};
pub use crate::model::write::{OpResult, Outcome};

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

/// What a provider does: extract an account's contacts. A source of any provider is a
/// `Box<dyn Source>` built by [`build`]; the rest of the crate speaks to it through this
/// trait and the ones it hands out.
pub trait Source: Send + Sync {
    /// The source's name (the `source` column).
    fn name(&self) -> &str;
    /// The accounts it syncs (Google: the domain).
    fn accounts(&self) -> Vec<String>;
    /// How many accounts to sync at once.
    fn account_concurrency(&self) -> usize {
        1
    }
    /// The account a desired row without one belongs to (Google: the domain).
    fn default_account(&self) -> Option<&str> {
        None
    }
    /// Extracts one account: full when `cursor` is `None`, else incremental. An expired
    /// cursor yields [`crate::Error::CursorExpired`].
    fn extract<'a>(
        &'a self,
        account: &'a str,
        cursor: Option<&'a str>,
        ctx: &'a RunContext,
    ) -> BoxFuture<'a, Result<Extract>>;
    /// Writing back, for providers that can.
    fn write_back(&self) -> Option<&dyn WriteBack>;
    /// Contact photos, for providers that have them.
    fn photos(&self) -> Option<&dyn Photos> {
        None
    }
}

/// What a provider refuses before anything is sent. Only what is certainly invalid: the
/// API's own 400 decides the rest.
pub trait Rules: Send + Sync {
    /// Per-field rules (a contact the API already holds may break them; such a break does
    /// not block an update).
    fn fields(&self, r: &ContactRecord) -> Vec<String>;
    /// Count and size limits of `r`; with `held` (the contact as the API holds it) a limit
    /// it already exceeds is only enforced against a change that makes it worse.
    fn limits(
        &self,
        r: &ContactRecord,
        held: Option<&ContactRecord>,
        managed: &[String],
    ) -> Vec<String>;
}

/// Writing planned operations back to the API.
pub trait WriteBack: Send + Sync {
    /// The provider's rules.
    fn rules(&self) -> &dyn Rules;
    /// Applies planned operations; one result per operation, in plan order.
    fn apply<'a>(
        &'a self,
        ops: &'a [Op],
        managed: &'a [String],
        force: bool,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<OpResult>>>;
}

/// What a photo download brings: the photos read, the ids found gone (404), and the
/// failures (id, error); one failure does not stop the others.
pub type PhotoFetch = (Vec<FetchedPhoto>, Vec<String>, Vec<(String, crate::Error)>);

/// Downloading and writing contact photos.
pub trait Photos: Send + Sync {
    /// Whether a sync lands photos (`photos = true`).
    fn enabled(&self) -> bool;
    /// Downloads photos: those read, the ids found gone, and the failures (id, error).
    fn fetch<'a>(
        &'a self,
        wants: &'a [PhotoWant],
        metrics: &'a Metrics,
        progress: Option<&'a indicatif::ProgressBar>,
    ) -> BoxFuture<'a, PhotoFetch>;
    /// Writes planned photo operations; one result per operation, in plan order.
    fn apply<'a>(
        &'a self,
        ops: &'a [PhotoOp],
        force: bool,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Vec<OpResult>>;
}

/// The registry: builds the source a pipeline entry describes. Adding a provider adds
/// one line here and one in [`profile`].
pub fn build(cfg: &SourceConfig, pipeline_dir: &std::path::Path) -> Result<Box<dyn Source>> {
    let http = http_client(cfg)?;
    Ok(match cfg.provider {
        Provider::Google => Box::new(google::GoogleSource::try_new(cfg, http, pipeline_dir)?),
        Provider::Aurinko => Box::new(aurinko::AurinkoSource::try_new(cfg, http, pipeline_dir)?),
    })
}

/// What planning needs to know of a configured provider, without building its source
/// (so no credential is read and no request made).
pub struct Profile {
    /// The provider's write rules.
    pub rules: &'static dyn Rules,
    /// The account a desired row without one belongs to (Google: the domain).
    pub default_account: Option<String>,
    /// Whether the provider has contact photos (and `photos = true` lands them).
    pub photos: bool,
}

/// The registry's second half: the [`Profile`] of a pipeline entry.
pub fn profile(cfg: &SourceConfig) -> Profile {
    match cfg.provider {
        Provider::Google => Profile {
            rules: &google::rules::GoogleRules,
            default_account: cfg.domain.clone(),
            photos: true,
        },
        Provider::Aurinko => Profile {
            rules: &aurinko::rules::AurinkoRules,
            default_account: None,
            photos: false,
        },
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
