//! `sync`: runs a pipeline's sources into its lake, account by account.
//!
//! Each account is independent: one failing (bad token, API down) is recorded in
//! `sync_runs` with its error, and the others go on. An expired cursor turns into a full
//! extract (mode `resync`) whose absent contacts are deleted and logged.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::config::Pipeline;
use crate::error::{Error, Kind, Result};
use crate::http::Metrics;
use crate::lake::committer::{Committer, GroupLimits, RunResult};
use crate::lake::lease::{Lease, Leased};
use crate::lake::{CommitOutcome, FailedRun, Lake, PreparedRun, RunFigures, RunStates};
use crate::providers::{Photos, RunContext, Source, SyncMode};

/// Which accounts a `sync` covers and how.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only these sources (all when empty).
    pub sources: Vec<String>,
    /// Only these accounts (all when empty).
    pub accounts: Vec<String>,
    /// Ignore stored cursors: full extract, absent contacts deleted.
    pub full_refresh: bool,
    /// `(i, n)`: only accounts whose stable hash falls in shard `i` of `n` (0-based).
    pub shard: Option<(u32, u32)>,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

/// One account's outcome.
#[derive(Debug, Clone)]
pub struct AccountReport {
    pub source: String,
    pub account: String,
    pub mode: String,
    pub upserted: i64,
    pub deleted: i64,
    pub pages: u64,
    pub requests: u64,
    pub retries: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub seq: Option<i64>,
    /// Photos downloaded and removed (sources with `photos = true`).
    pub photos: Option<PhotoCounts>,
    pub error: Option<String>,
}

/// What one account's photo step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhotoCounts {
    /// Photos downloaded (new or changed etag).
    pub fetched: i64,
    /// Photos removed from `contact_photos`.
    pub removed: i64,
    /// Photos already landed with their current etag.
    pub unchanged: i64,
}

/// A whole run's outcome.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub run_id: String,
    pub accounts: Vec<AccountReport>,
}

impl SyncReport {
    /// Accounts that failed.
    pub fn failed(&self) -> Vec<&AccountReport> {
        self.accounts.iter().filter(|a| a.error.is_some()).collect()
    }

    /// The one-screen summary of a run: [`SyncReport::table`], then
    /// [`SyncReport::problems`].
    pub fn summary(&self) -> String {
        format!("{}{}", self.table(), self.problems())
    }

    /// The run's report, what `sync` prints on stdout: a line per account with its
    /// figures, the photos, and a last line that counts what synced, failed or was skipped.
    pub fn table(&self) -> String {
        let mut s = format!("sync run {}\n", self.run_id);
        s.push_str(&format!(
            "{:<20} {:<24} {:<12} {:>9} {:>8} {:>6} {:>8} {:>7} {:>8}\n",
            "source",
            "account",
            "mode",
            "upserted",
            "deleted",
            "pages",
            "requests",
            "retries",
            "seconds"
        ));
        for a in &self.accounts {
            s.push_str(&format!(
                "{:<20} {:<24} {:<12} {:>9} {:>8} {:>6} {:>8} {:>7} {:>8.2}\n",
                a.source,
                a.account,
                a.mode,
                a.upserted,
                a.deleted,
                a.pages,
                a.requests,
                a.retries,
                a.seconds
            ));
        }
        for a in &self.accounts {
            if let Some(p) = a.photos {
                s.push_str(&format!(
                    "photos {}/{}: {} fetched, {} removed, {} unchanged\n",
                    a.source, a.account, p.fetched, p.removed, p.unchanged
                ));
            }
        }
        let (failed, skipped) = self.problem_accounts();
        let n = self.accounts.len();
        s.push_str(&match (failed.len(), skipped.len()) {
            (0, 0) => format!("all {n} account(s) synced\n"),
            (f, 0) => format!("{f} of {n} account(s) FAILED\n"),
            (0, k) => format!("{k} of {n} account(s) skipped\n"),
            (f, k) => format!("{f} of {n} account(s) FAILED, {k} skipped\n"),
        });
        s
    }

    /// Why each account failed or was skipped, one line each, as `sync` prints them on
    /// stderr: `error: SOURCE/ACCOUNT: what happened`, `skipped: SOURCE/ACCOUNT: why`.
    pub fn problems(&self) -> String {
        let (failed, skipped) = self.problem_accounts();
        let mut s = String::new();
        for (list, what) in [(failed, "error"), (skipped, "skipped")] {
            for f in list {
                s.push_str(&format!("{what}: {}\n", named_once(f)));
            }
        }
        s
    }

    /// The accounts that failed, and those left to another sync.
    fn problem_accounts(&self) -> (Vec<&AccountReport>, Vec<&AccountReport>) {
        self.failed().into_iter().partition(|a| a.mode != SKIPPED)
    }
}

impl SyncReport {
    /// The run's one summary event for `--log-format json`, in the shape of the log's
    /// other lines: counts per account and in total.
    pub fn summary_event(&self) -> serde_json::Value {
        let accounts: Vec<serde_json::Value> = self
            .accounts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "source": a.source, "account": a.account, "mode": a.mode,
                    "status": match (&a.error, a.mode.as_str()) {
                        (None, _) => "ok",
                        (Some(_), SKIPPED) => "skipped",
                        (Some(_), _) => "failed",
                    },
                    "seq": a.seq, "upserted": a.upserted, "deleted": a.deleted,
                    "pages": a.pages, "requests": a.requests, "retries": a.retries,
                    "bytes": a.bytes, "seconds": a.seconds,
                    "photos_fetched": a.photos.map(|p| p.fetched),
                    "photos_removed": a.photos.map(|p| p.removed),
                    "error": a.error,
                })
            })
            .collect();
        let sum = |f: fn(&AccountReport) -> i64| self.accounts.iter().map(f).sum::<i64>();
        let skipped = self.accounts.iter().filter(|a| a.mode == SKIPPED).count();
        let failed = self.failed().len() - skipped;
        serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": match (failed, skipped) {
                (0, 0) => "INFO",
                (0, _) => "WARN",
                _ => "ERROR",
            },
            "fields": {
                "message": "sync finished",
                "run_id": self.run_id,
                "accounts": accounts,
                "totals": {
                    "accounts": self.accounts.len(), "failed": failed, "skipped": skipped,
                    "upserted": sum(|a| a.upserted), "deleted": sum(|a| a.deleted),
                    "requests": sum(|a| a.requests as i64), "bytes": sum(|a| a.bytes as i64),
                },
            },
            "target": "contacts_etl::sync",
        })
    }
}

/// An account's error with the account named once: `SOURCE/ACCOUNT: error`, unless the
/// error's first part names it already (`crm account 102: page 1: …`).
fn named_once(a: &AccountReport) -> String {
    let name = format!("{}/{}", a.source, a.account);
    let error = a.error.as_deref().unwrap_or("");
    let error = error
        .strip_prefix(name.as_str())
        .and_then(|e| e.strip_prefix(": "))
        .unwrap_or(error);
    let first = error.split(": ").next().unwrap_or("");
    let words: Vec<&str> = first
        .split(|c: char| c.is_whitespace() || c == '/')
        .collect();
    if words.contains(&a.source.as_str()) && words.contains(&a.account.as_str()) {
        error.to_string()
    } else {
        format!("{name}: {error}")
    }
}

/// The target of the per-account result events, which text logs leave to the summary
/// table unless the level is `debug` or finer.
pub const ACCOUNT_TARGET: &str = "contacts_etl::account";

/// The mode of an account a run left to another sync holding its lease.
pub const SKIPPED: &str = "skipped";

/// A stable hash for sharding (FNV-1a), the same on every machine and build.
pub fn shard_of(source: &str, account: &str, n: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.bytes().chain([b'/']).chain(account.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(n.max(1))) as u32
}

/// A new run id: UTC time plus a random suffix, sortable and unique.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Opens the pipeline's lake; an `s3://` lake with no way to get credentials is a
/// configuration error (see [`crate::lake::check_storage_credentials`]).
pub fn lake_of(p: &Pipeline) -> Result<Lake> {
    let lake = Lake::new(
        p.lake_url()?,
        p.lake.storage_options.clone().into_iter().collect(),
    )
    .with_deletion_vectors(p.lake.deletion_vectors);
    crate::lake::check_storage_credentials(lake.url(), lake.storage_options())?;
    Ok(lake)
}

/// Runs the pipeline's sources into its lake.
pub async fn run_sync(p: &Pipeline, opts: &SyncOptions) -> Result<SyncReport> {
    check_options(p, opts)?;
    let selected = select_sources(p, opts).await?;
    let lake = Arc::new(lake_of(p)?);
    // Spill folders of runs killed without a chance to clean up (once per process: the
    // folders of this process's own runs are alive and locked anyway).
    static STALE_SPILLS: std::sync::Once = std::sync::Once::new();
    STALE_SPILLS.call_once(|| {
        crate::model::spill::remove_stale_spills();
    });
    lake.ensure_tables().await?;
    let run_id = new_run_id();
    let work = accounts_to_run(selected, opts);
    let mut accounts = run_accounts(lake, work, &run_id, opts).await?;
    accounts.sort_by(|a, b| (&a.source, &a.account).cmp(&(&b.source, &b.account)));
    Ok(SyncReport { run_id, accounts })
}

/// Refuses a `--source` the pipeline does not have, and a shard outside its count.
fn check_options(p: &Pipeline, opts: &SyncOptions) -> Result<()> {
    for s in &opts.sources {
        p.source(s)?;
    }
    if let Some((i, n)) = opts.shard
        && (n == 0 || i >= n)
    {
        return Err(Error::config(format!(
            "--shard {i}/{n}: the shard must be below the count (e.g. 0/4 … 3/4)"
        )));
    }
    Ok(())
}

/// The selected sources, built (their credentials read) before the first request and
/// their accounts discovered where the server says them; every `--account` must name an
/// account of one of them.
async fn select_sources(p: &Pipeline, opts: &SyncOptions) -> Result<Vec<Arc<dyn Source>>> {
    let dir = p.dir();
    let mut selected: Vec<Arc<dyn Source>> = Vec::new();
    for cfg in &p.sources {
        if !opts.sources.is_empty() && !opts.sources.contains(&cfg.name) {
            continue;
        }
        selected.push(Arc::from(crate::providers::build(cfg, &dir)?));
    }
    // Sources that find their accounts on the server (CardDAV discovery) do it now, so
    // `--account` can be checked against them.
    for s in &selected {
        s.discover(&crate::http::Metrics::default()).await?;
    }
    let unknown: Vec<&String> = opts
        .accounts
        .iter()
        .filter(|a| !selected.iter().any(|s| s.accounts().contains(a)))
        .collect();
    if unknown.is_empty() {
        return Ok(selected);
    }
    let have: Vec<String> = selected
        .iter()
        .map(|s| format!("{}: {}", s.name(), s.accounts().join(", ")))
        .collect();
    Err(Error::config(format!(
        "--account {}: no such account in {} of {}; accounts: {}",
        unknown
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        if opts.sources.is_empty() {
            "any source".to_string()
        } else {
            format!("the source(s) {}", opts.sources.join(", "))
        },
        p.path.display(),
        have.join("; ")
    )))
}

/// Each selected source with the accounts this run syncs: those `--account` names (all
/// without it) and, with `--shard`, only the shard's.
fn accounts_to_run(
    selected: Vec<Arc<dyn Source>>,
    opts: &SyncOptions,
) -> Vec<(Arc<dyn Source>, Vec<String>)> {
    selected
        .into_iter()
        .map(|source| {
            let accounts: Vec<String> = source
                .accounts()
                .into_iter()
                .filter(|a| opts.accounts.is_empty() || opts.accounts.contains(a))
                .filter(|a| {
                    opts.shard
                        .is_none_or(|(i, n)| shard_of(source.name(), a, n) == i)
                })
                .collect();
            (source, accounts)
        })
        .collect()
}

/// Runs the accounts of `work`: interrupted runs recovered first, in one pass; then each
/// source extracts its accounts `concurrency` at a time, all sources at once, and the
/// finished runs go to the one committer (an account waits for its group to land without
/// holding an extraction slot). Returns each account's report.
async fn run_accounts(
    lake: Arc<Lake>,
    work: Vec<(Arc<dyn Source>, Vec<String>)>,
    run_id: &str,
    opts: &SyncOptions,
) -> Result<Vec<AccountReport>> {
    // Every event of the run carries its id (a span field in JSON logs).
    let span = tracing::info_span!("run", run_id = %run_id);
    let multi = opts.progress.then(|| progress_bars().clone());
    let pairs: Vec<(String, String)> = work
        .iter()
        .flat_map(|(s, accounts)| accounts.iter().map(|a| (s.name().to_string(), a.clone())))
        .collect();
    let states = Arc::new(lake.recover_runs(&pairs).await?);
    let limits = GroupLimits::default();
    let (committer, landing) = Committer::new(lake.clone(), pairs.len(), limits);
    drop(pairs);
    let committer = Arc::new(committer);
    let run_id = run_id.to_string();
    let accounts = async move {
        let extracted = futures::stream::select_all(work.into_iter().map(|(source, accounts)| {
            let concurrency = source.account_concurrency();
            let (lake, states, committer, run_id, multi) = (
                lake.clone(),
                states.clone(),
                committer.clone(),
                run_id.clone(),
                multi.clone(),
            );
            let full = opts.full_refresh;
            futures::stream::iter(accounts)
                .map(move |account| {
                    let (source, lake, states, committer, run_id, multi) = (
                        source.clone(),
                        lake.clone(),
                        states.clone(),
                        committer.clone(),
                        run_id.clone(),
                        multi.clone(),
                    );
                    async move {
                        let at = AccountRun {
                            source,
                            lake,
                            account,
                            run_id,
                            full_refresh: full,
                        };
                        at.extract(&states, &committer, multi.as_ref()).await
                    }
                })
                .buffer_unordered(concurrency)
                .boxed_local()
        }));
        // Dropped once every account has handed its run over: the committer then ends.
        drop(committer);
        extracted
            .map(|pending| pending.finish())
            .buffer_unordered(limits.accounts * 2)
            .collect::<Vec<AccountReport>>()
            .await
    };
    let (results, stats) =
        tracing::Instrument::instrument(async { tokio::join!(accounts, landing) }, span).await;
    tracing::debug!(
        groups = stats.groups,
        landed = stats.landed,
        largest_group = stats.largest_group,
        commit_ms = stats.commit_ms,
        "the committer is done"
    );
    Ok(results)
}

/// A progress bar for one account's run, on a terminal.
fn account_progress(
    multi: Option<&indicatif::MultiProgress>,
    source: &str,
    account: &str,
) -> Option<indicatif::ProgressBar> {
    multi.map(|m| {
        // No length until the provider learns the total (Google's feed says it; Aurinko's
        // does not): a spinner with a count and a rate until then, a bar after.
        let pb = m.add(indicatif::ProgressBar::no_length());
        pb.set_style(progress_style("contacts"));
        pb.set_prefix(format!("{source}/{account}"));
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    })
}

/// The progress bars of this process's syncs: one set, so that log lines can be written
/// between its redraws ([`suspend_progress`]) instead of through them.
static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();

/// The process's progress bars (drawn on stderr), made when first needed.
pub fn progress_bars() -> &'static indicatif::MultiProgress {
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// Runs `f` (a write to stderr) with the progress bars cleared, and draws them again
/// after: a log line lands above the bars, whole, and no old bar is left behind it.
pub fn suspend_progress<R>(f: impl FnOnce() -> R) -> R {
    match BARS.get() {
        Some(bars) => bars.suspend(f),
        None => f(),
    }
}

/// A progress line that draws a bar and `pos/len` when the total is known, and only the
/// count when it is not (never `8400/0`), with the rate either way.
pub fn progress_style(unit: &'static str) -> indicatif::ProgressStyle {
    const BAR: usize = 30;
    let gauge = move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = match s.len() {
            Some(len) if len > 0 => {
                let filled = ((s.pos().min(len) as f64 / len as f64) * BAR as f64) as usize;
                write!(
                    w,
                    "{}{} {}/{} {unit}",
                    "█".repeat(filled),
                    "░".repeat(BAR - filled),
                    s.pos(),
                    len
                )
            }
            _ => write!(w, "{} {unit}", s.pos()),
        };
        let _ = write!(w, " {}", crate::human::rate(s.per_sec()));
    };
    indicatif::ProgressStyle::with_template("{spinner} {prefix:>28} {gauge} {elapsed}")
        .expect("a valid template")
        .with_key("gauge", gauge)
}

/// The figures of a run as `sync_runs` records them, ended now: `failure` for a run that
/// failed.
fn run_figures(
    run_id: &str,
    mode: SyncMode,
    started_us: i64,
    metrics: &Metrics,
    failure: Option<&Error>,
) -> RunFigures {
    let (requests, retries, bytes, pages) = metrics.snapshot();
    RunFigures {
        run_id: run_id.to_string(),
        mode: mode.as_str().into(),
        started_at_us: started_us,
        finished_at_us: chrono::Utc::now().timestamp_micros(),
        pages: pages as i64,
        requests: requests as i64,
        retries: retries as i64,
        bytes: bytes as i64,
        status: if failure.is_some() { "failed" } else { "ok" }.into(),
        error: failure.map(|e| e.to_string()),
        ..Default::default()
    }
}

/// One account of a run.
struct AccountRun {
    source: Arc<dyn Source>,
    lake: Arc<Lake>,
    account: String,
    run_id: String,
    full_refresh: bool,
}

/// An account whose extract is done: its run is with the committer (or failed before).
struct PendingAccount {
    at: AccountRun,
    ctx: RunContext,
    started: Instant,
    mode: SyncMode,
    /// Left to another sync that holds the account's lease: nothing extracted or recorded.
    skipped: bool,
    /// The committer's answer to come, or the error that stopped the run before it
    /// (already handed to the committer to record).
    commit: std::result::Result<tokio::sync::oneshot::Receiver<RunResult>, Error>,
    /// The account's lease, given up once its run has landed (none for a skipped one).
    lease: Option<Lease>,
}

impl AccountRun {
    /// The run up to the committer: state, extract, change files. A failure is handed to
    /// the committer to record in `sync_runs`.
    async fn extract(
        self,
        states: &RunStates,
        committer: &Committer,
        multi: Option<&indicatif::MultiProgress>,
    ) -> PendingAccount {
        let metrics = Arc::new(Metrics::default());
        let progress = account_progress(multi, self.source.name(), &self.account);
        let ctx = RunContext {
            run_id: self.run_id.clone(),
            synced_at_us: chrono::Utc::now().timestamp_micros(),
            metrics,
            progress,
        };
        let mut mode = if self.full_refresh {
            SyncMode::Full
        } else {
            SyncMode::Incremental
        };
        let started = Instant::now();
        // One sync of an account at a time: one that another sync holds is left to it
        // at once, before anything is extracted.
        let lease = match self.lease(committer).await {
            Ok(l) => l,
            Err((skipped, e)) => {
                return PendingAccount {
                    at: self,
                    ctx,
                    started,
                    mode,
                    skipped,
                    commit: Err(e),
                    lease: None,
                };
            }
        };
        let commit = match self.prepare(states, &ctx, &mut mode).await {
            Ok(run) => Ok(committer.submit(run).await),
            Err(e) => {
                let figures =
                    run_figures(&self.run_id, mode, ctx.synced_at_us, &ctx.metrics, Some(&e));
                committer
                    .record_failure(FailedRun {
                        source: self.source.name().to_string(),
                        account: self.account.clone(),
                        figures,
                    })
                    .await;
                Err(e)
            }
        };
        PendingAccount {
            at: self,
            ctx,
            started,
            mode,
            skipped: false,
            commit,
            lease: Some(lease),
        }
    }

    /// The account's lease. Without it the account is over for this run, and the
    /// committer is told: `(true, why)` when another sync holds it (a skip), `(false,
    /// error)` when the lease could not be asked for.
    async fn lease(&self, committer: &Committer) -> std::result::Result<Lease, (bool, Error)> {
        let leased = self
            .lake
            .take_lease(self.source.name(), &self.account, &self.run_id)
            .await;
        let refused = match leased {
            Ok(Leased::Held(l)) => return Ok(l),
            Ok(Leased::Busy(holder)) => (
                true,
                Error::concurrent(format!(
                    "another sync holds this account: {}; left to it (a lease ends with its run, or {} s after its last renewal)",
                    holder.describe(),
                    crate::lake::lease::STALE_AFTER.as_secs()
                )),
            ),
            Err(e) => (false, e),
        };
        committer.skip().await;
        Err(refused)
    }

    /// The lake's state, the extract (full when there is no cursor, or again in full when
    /// the API says the cursor expired), and its change files. `mode` says how far it
    /// got, for the record of a failure.
    async fn prepare(
        &self,
        states: &RunStates,
        ctx: &RunContext,
        mode: &mut SyncMode,
    ) -> Result<PreparedRun> {
        let (source, account) = (self.source.as_ref(), self.account.as_str());
        let started = Instant::now();
        let state = states.state(source.name(), account).await?;
        let cursor = if self.full_refresh {
            None
        } else {
            state.cursor.clone()
        };
        if cursor.is_none() {
            *mode = SyncMode::Full;
        }
        let extract = match source.extract(account, cursor.as_deref(), ctx).await {
            Err(why @ Error::CursorExpired { .. }) => {
                tracing::warn!(source = source.name(), account, reason = %why, "cursor expired: running a full extract and reconciling deletes");
                *mode = SyncMode::Resync;
                let mut e = source.extract(account, None, ctx).await?;
                e.mode = SyncMode::Resync;
                e
            }
            other => other?,
        };
        *mode = extract.mode;
        tracing::debug!(
            source = source.name(),
            account,
            ms = started.elapsed().as_millis() as u64,
            "extracted"
        );
        let figures = run_figures(&ctx.run_id, *mode, ctx.synced_at_us, &ctx.metrics, None);
        self.lake
            .prepare_run(source.name(), account, &state, extract, figures)
            .await
    }
}

impl PendingAccount {
    /// Waits for the account's group to land, then fetches photos, and reports.
    async fn finish(self) -> AccountReport {
        let PendingAccount {
            at,
            ctx,
            started,
            mode,
            skipped,
            commit,
            lease,
        } = self;
        let (source, lake, account) = (at.source.as_ref(), at.lake.as_ref(), at.account.as_str());
        let committed: Result<CommitOutcome> = match commit {
            Ok(rx) => match rx.await {
                Ok(Ok(o)) => Ok(o),
                Ok(Err(f)) => Err(f.error),
                Err(_) => Err(Error::other(format!(
                    "{}/{account}: the run's commit was interrupted; the next sync completes or redoes it",
                    source.name()
                ))),
            },
            Err(e) => Err(e),
        };
        // A failure so far is recorded already (or, when the run's changes landed, is
        // completed by the next run's replay, which records its one final status).
        let recorded = committed.is_err();
        // Photos come after the run's commit: they are reconciled from the landed tables, so a
        // failure here loses nothing and the next sync picks up exactly what is missing.
        let photos: Option<Result<PhotoCounts>> = match (source.photos(), &committed) {
            (Some(photos), Ok(_)) if photos.enabled() => {
                Some(sync_photos(source.name(), photos, lake, account, &at.run_id, &ctx).await)
            }
            _ => None,
        };
        if let Some(l) = lease {
            l.release().await;
        }
        if let Some(pb) = &ctx.progress {
            pb.finish_and_clear();
        }
        let metrics = &ctx.metrics;
        let (requests, retries, bytes, pages) = metrics.snapshot();
        let mut rep = AccountReport {
            source: source.name().into(),
            account: account.into(),
            mode: if skipped { SKIPPED } else { mode.as_str() }.into(),
            upserted: 0,
            deleted: 0,
            pages,
            requests,
            retries,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            seq: None,
            photos: None,
            error: None,
        };
        if let Ok(o) = &committed {
            rep.upserted = o.upserted;
            rep.deleted = o.deleted;
            rep.seq = Some(o.seq);
        }
        let outcome = match (committed, photos) {
            (Ok(_), Some(Err(e))) => Err(e),
            (Ok(o), Some(Ok(p))) => {
                rep.photos = Some(p);
                Ok(o)
            }
            (o, _) => o,
        };
        match outcome {
            Ok(o) => {
                // For JSON logs and --log-level debug: on a terminal the summary table
                // says it.
                tracing::info!(
                    target: ACCOUNT_TARGET,
                    run_id = at.run_id,
                    source = source.name(),
                    account,
                    mode = mode.as_str(),
                    upserted = o.upserted,
                    deleted = o.deleted,
                    pages,
                    requests,
                    retries,
                    photos_fetched = rep.photos.map(|p| p.fetched),
                    photos_removed = rep.photos.map(|p| p.removed),
                    seconds = rep.seconds,
                    "account synced"
                );
            }
            Err(e) if skipped => {
                tracing::warn!(target: ACCOUNT_TARGET, run_id = at.run_id, source = source.name(), account, reason = %e, "account skipped");
                rep.error = Some(e.to_string());
            }
            Err(e) => {
                tracing::error!(target: ACCOUNT_TARGET, run_id = at.run_id, source = source.name(), account, error = %e, "account failed");
                rep.error = Some(e.to_string());
                if !recorded {
                    let f = run_figures(&at.run_id, mode, ctx.synced_at_us, metrics, Some(&e));
                    if let Err(e2) = lake.record_failure(source.name(), account, &f).await {
                        tracing::error!(error = %e2, "could not record the failure in sync_runs");
                    }
                }
            }
        }
        rep
    }
}

/// About how many bytes of photos a photo sync fetches before it writes them into the
/// table's data files, so its memory follows this bound, not the account's photos.
const PHOTO_PART_BYTES: usize = 32 << 20;

/// Downloads the account's new and changed photos and removes gone ones (see
/// [`crate::lake::PhotoWork`]), writing them into data files part by part as they come
/// (about [`PHOTO_PART_BYTES`] at a time), then commits them to `contact_photos` in one
/// commit. Photos that fail to download are left for the next sync, and reported as
/// this run's error.
async fn sync_photos(
    name: &str,
    source: &dyn Photos,
    lake: &Lake,
    account: &str,
    run_id: &str,
    ctx: &RunContext,
) -> Result<PhotoCounts> {
    let work = lake.photo_work(name, account).await?;
    if let Some(pb) = &ctx.progress {
        // Count and length first: a draw between these calls shows the new style's figures.
        pb.set_position(0);
        pb.set_length(work.fetch.len() as u64);
        pb.set_style(progress_style("photos"));
    }
    if work.fetch.is_empty() && work.remove.is_empty() {
        return Ok(PhotoCounts {
            fetched: 0,
            removed: 0,
            unchanged: work.unchanged as i64,
        });
    }
    let mut landing = lake.land_photos(name, account, run_id).await?;
    let mut removed = work.remove.clone();
    let (mut failed, mut fetched, mut next, mut part) = (Vec::new(), 0usize, 0usize, 16usize);
    while next < work.fetch.len() {
        let wants = &work.fetch[next..(next + part).min(work.fetch.len())];
        next += wants.len();
        let (photos, gone, fails) = source
            .fetch(wants, &ctx.metrics, ctx.progress.as_ref())
            .await;
        removed.extend(gone);
        failed.extend(fails);
        // The next part asks for about as many photos as fit the part's bytes, going by
        // this part's sizes: many small photos per round of requests, few large ones.
        if !photos.is_empty() {
            let bytes: usize = photos.iter().map(|p| p.bytes.len()).sum();
            part = (PHOTO_PART_BYTES / (bytes / photos.len()).max(1)).clamp(4, 256);
        }
        fetched += photos.len();
        landing.add(&photos).await?;
    }
    removed.sort();
    landing.commit(&removed).await?;
    let counts = PhotoCounts {
        fetched: fetched as i64,
        removed: removed.len() as i64,
        unchanged: work.unchanged as i64,
    };
    let failures = failed.len();
    if let Some((id, e)) = failed.into_iter().next() {
        return Err(Error::with_source(
            Kind::Other,
            format!(
                "{name}/{account}: {failures} of {} photo(s) could not be downloaded and will be tried on the next sync (the rest landed); first, contact {id}",
                work.fetch.len()
            ),
            e,
        ));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: &str) -> AccountReport {
        AccountReport {
            source: "crm".into(),
            account: "102".into(),
            mode: "incremental".into(),
            upserted: 0,
            deleted: 0,
            pages: 0,
            requests: 0,
            retries: 0,
            bytes: 0,
            seconds: 0.0,
            seq: None,
            photos: None,
            error: Some(error.into()),
        }
    }

    #[test]
    fn a_failure_names_its_account_once() {
        for (error, said) in [
            (
                "crm/102: another sync committed first",
                "crm/102: another sync committed first",
            ),
            (
                "crm account 102: page 1: HTTP 401",
                "crm account 102: page 1: HTTP 401",
            ),
            ("the lake is gone", "crm/102: the lake is gone"),
        ] {
            assert_eq!(named_once(&failed(error)), said);
        }
        let report = SyncReport {
            run_id: "r".into(),
            accounts: vec![failed("crm account 102: page 1: HTTP 401")],
        };
        assert!(report.table().ends_with("1 of 1 account(s) FAILED\n"));
        assert_eq!(
            report.problems(),
            "error: crm account 102: page 1: HTTP 401\n"
        );
    }
}
