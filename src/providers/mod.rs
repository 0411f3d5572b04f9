//! Providers: one folder each with the same files (`mod.rs` = the source, `decode.rs` =
//! pure bytes → records, `writeback.rs`, `rules.rs`), behind the traits [`Source`],
//! [`WriteBack`], [`Rules`] and [`Photos`], and a `config.rs` that reads the provider's own
//! settings of a pipeline entry. Every provider is one line of [`PROVIDERS`]; adding one
//! takes its folder and that line (see DESIGN.md).

pub mod aurinko;
pub mod carddav;
pub mod google;
pub mod google_directory;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{Pipeline, SourceConfig};
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
    /// The accounts it syncs (Google: the domain). For a source that discovers them
    /// (CardDAV without `address_books`), those [`Source::discover`] found.
    fn accounts(&self) -> Vec<String>;
    /// Finds the accounts of a source that discovers them from the server (a request
    /// with its credentials); called once after [`build`], before [`Source::accounts`] is
    /// read. Most providers list their accounts in the pipeline file and do nothing.
    fn discover<'a>(&'a self, _metrics: &'a Metrics) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
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
    /// What the API may refuse but the client cannot know for certain (an estimate of
    /// an undocumented count): said in the plan, never a reason not to send. Same
    /// arguments as [`Rules::limits`].
    fn warnings(
        &self,
        _r: &ContactRecord,
        _held: Option<&ContactRecord>,
        _managed: &[String],
    ) -> Vec<String> {
        Vec::new()
    }
}

/// Applies operations that go out one request each (Aurinko's and CardDAV's writes),
/// `concurrency` at a time: an operation that fails with an error comes back as that
/// operation's failed result, and the results come back in the operations' order.
///
/// The futures are made first and streamed from a vector: behind [`WriteBack`] the whole
/// future must be Send, which the compiler cannot prove for a stream that holds a closure
/// over borrowed items (rust-lang/rust#102211).
pub fn apply_each<'a>(
    ops: &'a [Op],
    concurrency: usize,
    apply_one: impl Fn(&'a Op) -> BoxFuture<'a, Result<OpResult>>,
) -> BoxFuture<'a, Vec<OpResult>> {
    use futures::StreamExt;
    let writes: Vec<BoxFuture<'a, OpResult>> = ops
        .iter()
        .map(|op| -> BoxFuture<'a, OpResult> {
            let write = apply_one(op);
            Box::pin(async move {
                write
                    .await
                    .unwrap_or_else(|e| OpResult::failed(op.index, None, e.to_string()))
            })
        })
        .collect();
    Box::pin(async move {
        let mut results: Vec<OpResult> = futures::stream::iter(writes)
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        results.sort_by_key(|r| r.index);
        results
    })
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

/// One provider this build knows, as the registry lists it.
pub struct Registration {
    /// Its name in pipeline files (`provider = "google"`).
    pub name: &'static str,
    /// Checks an entry's own settings, and the files they name (such as an accounts
    /// file, relative to the pipeline's folder), without reading a credential.
    pub check: fn(&SourceConfig, &std::path::Path) -> Result<()>,
    /// Builds the source: reads its credentials, makes no request.
    pub build: fn(&SourceConfig, HttpClient, &std::path::Path) -> Result<Box<dyn Source>>,
    /// What planning needs to know of an entry (reads no credential; may read files
    /// the entry names, relative to the pipeline's folder).
    pub profile: fn(&SourceConfig, &std::path::Path) -> Result<Profile>,
}

/// The registry: every provider of this build, one line each.
pub const PROVIDERS: &[Registration] = &[
    google::PROVIDER,
    aurinko::PROVIDER,
    carddav::PROVIDER,
    google_directory::PROVIDER,
];

/// The registration of an entry's provider; an unknown name says which exist.
pub fn registration(cfg: &SourceConfig) -> Result<&'static Registration> {
    PROVIDERS
        .iter()
        .find(|r| r.name == cfg.provider)
        .ok_or_else(|| {
            let known: Vec<&str> = PROVIDERS.iter().map(|r| r.name).collect();
            cfg.error(format!(
                "provider {:?} is not one this build knows; use one of: {}",
                cfg.provider,
                known.join(", ")
            ))
        })
}

/// Checks every source of a pipeline with its provider: what `Pipeline::load` cannot
/// know (it sits below the providers). Reads no credential and makes no request.
pub fn check(p: &Pipeline) -> Result<()> {
    let dir = p.dir();
    // An entry with unset variables is checked when it is used (see `SourceConfig::unresolved`).
    for s in p.sources.iter().filter(|s| s.unresolved.is_none()) {
        (registration(s)?.check)(s, &dir)?;
    }
    Ok(())
}

/// Reads a pipeline file and checks every source with its provider: the pipeline
/// loader the command line uses, so that a wrong key fails before anything runs.
pub fn load_pipeline(path: impl AsRef<std::path::Path>) -> Result<Pipeline> {
    let p = Pipeline::load(path)?;
    check(&p)?;
    Ok(p)
}

/// Builds the source a pipeline entry describes (reading its credentials).
pub fn build(cfg: &SourceConfig, pipeline_dir: &std::path::Path) -> Result<Box<dyn Source>> {
    cfg.check_resolved()?;
    let provider = registration(cfg)?;
    (provider.build)(cfg, http_client(cfg)?, pipeline_dir)
}

/// What planning needs to know of a configured provider, without building its source
/// (so no credential is read and no request made).
pub struct Profile {
    /// Every account the entry configures (Google: the domain).
    pub accounts: Vec<String>,
    /// The provider's write rules.
    pub rules: &'static dyn Rules,
    /// The account a desired row without one belongs to (Google: the domain).
    pub default_account: Option<String>,
    /// Whether the provider has contact photos (they can be written back).
    pub photos: bool,
    /// Whether this entry's syncs land them (`photos = true`).
    pub photos_landed: bool,
    /// Why nothing can be written through this provider, for one that only reads
    /// (`plan` and `apply` refuse at once with these words); `None` for the others.
    pub read_only: Option<&'static str>,
}

/// The [`Profile`] of a pipeline entry; `pipeline_dir` anchors the files it names.
pub fn profile(cfg: &SourceConfig, pipeline_dir: &std::path::Path) -> Result<Profile> {
    cfg.check_resolved()?;
    (registration(cfg)?.profile)(cfg, pipeline_dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(provider: &str) -> Pipeline {
        let t = format!(
            "[lake]\nurl = \"/tmp/lake\"\n[[sources]]\nname = \"s\"\nprovider = \"{provider}\"\nbase_url = \"http://127.0.0.1:1\"\n"
        );
        Pipeline::parse(&t, std::path::Path::new("p.toml")).unwrap()
    }

    /// An unknown provider is refused naming those that exist; a known one with missing
    /// settings is refused by that provider, at load time, before any credential.
    #[test]
    fn the_registry_checks_every_source() {
        let e = check(&pipeline("gogle")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.contains("\"gogle\"") && e.contains("google, aurinko, carddav"),
            "{e}"
        );
        for r in PROVIDERS {
            let e = check(&pipeline(r.name)).unwrap_err().to_string();
            assert!(e.starts_with("p.toml: sources[0] (s): "), "{}: {e}", r.name);
        }
    }
}
