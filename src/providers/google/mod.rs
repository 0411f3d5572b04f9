//! The Google Domain Shared Contacts source (GData v3).
//!
//! Full extract: pages of `page_size`, ordered by `lastmodified` **descending** with
//! `showdeleted=true`, fetched in parallel by `start-index` once `totalResults` is known,
//! then `next` links to the end; then a catch-up pass from the first page's feed
//! `<updated>`. Why descending: with offset paging, a change made while the extract runs
//! moves the entry to the front, which can only re-deliver entries (deduplicated here); in
//! ascending order it would move to the end and shift unread entries back, skipping one.
//! If the catch-up finds changes, parallel pages may have missed a shifted entry, so the
//! extract is redone sequentially (where shifts can only cause re-delivery).
//!
//! Incremental: `updated-min=<cursor>&showdeleted=true&requirealldeleted=true&orderby=lastmodified`
//! (descending, for the same reason); `gd:deleted` placeholders become deletes; 410 Gone
//! means the cursor expired.

pub mod auth;
pub mod config;
pub mod decode;
pub mod photos;
pub mod rules;
pub mod writeback;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::config::SourceConfig;
use crate::error::{Context, Error, Kind, Result};
use crate::http::HttpClient;
use crate::http::paging::{PageGuard, PagingFault};
use crate::model::spill::Collected;
use crate::providers::{Extract, RunContext, SyncMode};
use auth::GoogleAuth;
use decode::{RecordContext, decode_feed};

/// Largest page body accepted: Google truncates responses above 10 MB.
pub const MAX_PAGE_BYTES: usize = 10 << 20;
/// Default entries per page: the API's default is 25 (too many requests), and
/// `max-results=1000` has timed out (504) on very large domains.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// The largest `totalResults` believed. The API keeps at most 200,000 entries per domain
/// (troubleshooting page, 2024-12); `showdeleted=true` adds the deletion placeholders of
/// the last weeks, which cannot honestly be four times that. A larger figure is a broken
/// or hostile server, and planning pages for it would flood it (or exhaust memory).
pub const MAX_TOTAL_RESULTS: usize = 1_000_000;

/// The registry's entry for `provider = "google"`.
pub const PROVIDER: crate::providers::Registration = crate::providers::Registration {
    name: "google",
    check: |cfg, _| config::GoogleConfig::read(cfg).map(drop),
    build: |cfg, http, dir| Ok(Box::new(GoogleSource::try_new(cfg, http, dir)?)),
    profile: |cfg, _| {
        let c = config::GoogleConfig::read(cfg)?;
        Ok(crate::providers::Profile {
            accounts: vec![c.domain.clone()],
            rules: &rules::GoogleRules,
            default_account: Some(c.domain),
            photos: true,
            photos_landed: c.photos,
            read_only: None,
        })
    },
};

/// A GData error document (`<errors><error><code>…</code><internalReason>…`) as one
/// line, `code: reason`; `None` for any other body. The source's [`crate::http::Describer`].
pub fn gdata_reason(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    let reason = crate::http::between(t, "<internalReason>", "</internalReason>")?;
    Some(match crate::http::between(t, "<code>", "</code>") {
        Some(code) => format!("{code}: {reason}"),
        None => reason,
    })
}

/// An error body of the Google API as one line (GData's reason first, see
/// [`gdata_reason`]).
pub fn describe(body: &[u8]) -> String {
    crate::http::describe_body_with(Some(gdata_reason), body)
}

/// A configured Google source.
pub struct GoogleSource {
    name: String,
    domain: String,
    base_url: String,
    /// `base_url` parsed: the one origin that gets the credentials.
    origin: url::Url,
    projection: String,
    page_size: u32,
    concurrency: usize,
    photos: bool,
    photo_concurrency: usize,
    http: HttpClient,
    auth: Arc<GoogleAuth>,
}

/// The cursor stored in the lake.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The feed `<updated>` to send as the next `updated-min`.
    updated_min: String,
}

impl GoogleSource {
    /// Builds the source from its pipeline entry.
    pub fn try_new(
        cfg: &SourceConfig,
        http: HttpClient,
        pipeline_dir: &std::path::Path,
    ) -> Result<GoogleSource> {
        let settings = config::GoogleConfig::read(cfg)?;
        // Credential errors name the account too: "source S (account D): …".
        let owner = format!("{} (account {})", cfg.name, settings.domain);
        let auth = GoogleAuth::from_config(&settings.auth, &owner, pipeline_dir)?;
        let origin = url::Url::parse(&cfg.base_url).with_context(Kind::Config, || {
            format!("source {}: base_url is not a URL", cfg.name)
        })?;
        Ok(GoogleSource {
            name: cfg.name.clone(),
            domain: settings.domain,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            origin,
            projection: settings.projection,
            page_size: settings.page_size,
            concurrency: cfg.concurrency.unwrap_or(4).max(1),
            photos: settings.photos,
            photo_concurrency: settings.photo_concurrency,
            http: http.with_describer(gdata_reason),
            auth: Arc::new(auth),
        })
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one account: the domain.
    pub fn accounts(&self) -> Vec<String> {
        vec![self.domain.clone()]
    }

    fn feed_url(&self) -> String {
        format!(
            "{}/m8/feeds/contacts/{}/{}",
            self.base_url, self.domain, self.projection
        )
    }

    fn record_ctx(&self, ctx: &RunContext) -> RecordContext {
        RecordContext {
            source: self.name.clone(),
            account: self.domain.clone(),
            run_id: ctx.run_id.clone(),
            synced_at_us: ctx.synced_at_us,
        }
    }

    /// Sends a request with the auth and version headers. On a 401 that a token refresh
    /// can cure (service accounts), it refreshes once and sends again; the last response
    /// is returned whatever its status.
    async fn send_authorized<F>(
        &self,
        what: &str,
        metrics: &crate::http::Metrics,
        max_bytes: usize,
        build: F,
    ) -> Result<crate::http::HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.send_authorized_as(false, what, metrics, max_bytes, build)
            .await
    }

    /// [`GoogleSource::send_authorized`] for a write that must not be applied twice
    /// (see [`crate::http::HttpClient::send_write`]).
    async fn send_write_authorized<F>(
        &self,
        what: &str,
        metrics: &crate::http::Metrics,
        max_bytes: usize,
        build: F,
    ) -> Result<crate::http::HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.send_authorized_as(true, what, metrics, max_bytes, build)
            .await
    }

    /// Sends through [`GoogleAuth::send`] with the GData version header.
    async fn send_authorized_as<F>(
        &self,
        write: bool,
        what: &str,
        metrics: &crate::http::Metrics,
        max_bytes: usize,
        build: F,
    ) -> Result<crate::http::HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.auth
            .send(&self.http, write, what, metrics, max_bytes, |c| {
                build(c).header("GData-Version", "3.0")
            })
            .await
    }

    /// The error for a 401 that stands after a refresh.
    fn refused(&self, what: &str, resp: &crate::http::HttpResponse) -> Error {
        Error::auth(format!(
            "{what}: the API refused the credentials (401: {}); {}",
            resp.describe(),
            self.auth.hint()
        ))
    }

    /// GETs one feed page with auth (refreshed once on 401) and decodes it.
    async fn page(&self, url: &str, what: &str, ctx: &RunContext) -> Result<decode::FeedPage> {
        let resp = self
            .send_authorized(what, &ctx.metrics, MAX_PAGE_BYTES, |c| c.get(url))
            .await?;
        match resp.status {
            200 => {
                ctx.metrics
                    .pages
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let page = decode_feed(&resp.body, &self.record_ctx(ctx), what)?;
                if let Some(pb) = &ctx.progress {
                    pb.inc(page.batch.num_rows() as u64);
                }
                Ok(page)
            }
            401 => Err(self.refused(what, &resp)),
            403 => Err(Error::auth(format!(
                "{what}: access denied (403: {}); the token must belong to an administrator of {}",
                resp.describe(),
                self.domain
            ))),
            410 => Err(Error::cursor_expired(format!(
                "{what}: the API answered 410 Gone ({}): deletions since the stored cursor are no longer kept",
                resp.describe()
            ))),
            s => Err(Error::http(
                Some(s),
                format!("{what}: HTTP {s}: {}", resp.describe()),
            )),
        }
    }

    fn url_with(&self, params: &[(&str, String)]) -> String {
        // base_url parsed in `try_new`; a path added to it parses too.
        let mut u = url::Url::parse(&self.feed_url()).expect("feed URL");
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        u.to_string()
    }

    /// Reads every page of a query into `collected`; pages after the first go in
    /// parallel by `start-index` when `parallel` (added in order as they arrive), then
    /// `next` links are followed to the end. Returns the first page's feed `<updated>`.
    ///
    /// A server cannot make this run away: `totalResults` past [`MAX_TOTAL_RESULTS`] is
    /// an error, the pages read are bounded by what `totalResults` needs (plus room for
    /// contacts added meanwhile), an empty page ends the read, a `next` link seen before
    /// is a loop, and one leading off the origin of `base_url` is refused before any
    /// credential goes there. Each of these fails the extract, so nothing of it lands.
    async fn scan(
        &self,
        base: &[(&str, String)],
        parallel: bool,
        label: &str,
        ctx: &RunContext,
        collected: &mut Collected,
    ) -> Result<String> {
        let ps = self.page_size as usize;
        let mut params = base.to_vec();
        params.push(("max-results", ps.to_string()));
        let first_url = self.url_with(&params);
        let what = |n: usize| format!("{label} of {} ({}), page {n}", self.domain, self.name);
        let first = self.page(&first_url, &what(1), ctx).await?;
        let updated = first
            .updated
            .clone()
            .ok_or_else(|| Error::decode(format!("{}: the feed has no <updated>", what(1))))?;
        let total = first.total_results;
        if let Some(t) = total
            && t > MAX_TOTAL_RESULTS
        {
            return Err(Error::decode(format!(
                "{}: the feed claims totalResults {t}, more than the API can hold (200,000 entries per domain; {MAX_TOTAL_RESULTS} is the limit believed, deletion placeholders included); the server is broken or not the Google API",
                what(1)
            )));
        }
        if let (Some(pb), Some(t)) = (&ctx.progress, total) {
            pb.set_length(t as u64);
        }
        // What a correct server can need, plus a tenth for contacts added during the read.
        let needed = total.unwrap_or(MAX_TOTAL_RESULTS).div_ceil(ps).max(1);
        let mut guard = PageGuard::new(needed + needed / 10 + 10);
        // The first page cannot be over the bound nor a repeat.
        let _ = (guard.page(), guard.follow(&first_url));
        // An empty page is the end, whatever link it carries.
        let mut next = first.next.clone().filter(|_| first.batch.num_rows() > 0);
        collected.add(&first.batch, None)?;
        if parallel
            && next.is_some()
            && let Some(total) = total
        {
            let pages = total.div_ceil(ps);
            // Built as they are needed: the list is never held whole.
            let urls = (1..pages).map(|k| {
                let mut p = params.clone();
                p.push(("start-index", (1 + k * ps).to_string()));
                (k + 1, self.url_with(&p))
            });
            // `buffered` yields pages in order while `concurrency` are in flight, so each
            // page is spilled as soon as it and its predecessors are in.
            let mut pages = futures::stream::iter(urls)
                .map(|(n, url)| async move { self.page(&url, &what(n), ctx).await })
                .buffered(self.concurrency);
            while let Some(p) = pages.try_next().await? {
                // Within the bound: these pages are what totalResults needs.
                let _ = guard.page();
                collected.add(&p.batch, None)?;
                if p.batch.num_rows() == 0 {
                    // Fewer entries than totalResults said: the rest is not there.
                    next = None;
                    break;
                }
                // The set may have grown while reading: follow `next` from the last page.
                next = p.next.clone();
            }
        }
        while let Some(link) = next {
            let n = guard.pages() + 1;
            let url = crate::http::check_link(&self.origin, &link, &what(n))?;
            let stop = match guard.follow(url.as_str()).and_then(|()| guard.page()) {
                Ok(_) => None,
                Err(PagingFault::Repeated) => Some(format!(
                    "the server sent the next link {url} a second time; a paging loop, stopped"
                )),
                Err(_) => Some(format!(
                    "more pages than totalResults ({}) can need at {ps} per page; a paging loop or a broken server, stopped",
                    total.map_or("absent".to_string(), |t| t.to_string())
                )),
            };
            if let Some(stop) = stop {
                return Err(Error::decode(format!("{}: {stop}", what(n))));
            }
            let p = self.page(url.as_str(), &what(n), ctx).await?;
            next = p.next.clone().filter(|_| p.batch.num_rows() > 0);
            collected.add(&p.batch, None)?;
        }
        Ok(updated)
    }

    /// Extracts the domain (see the module docs for the strategy).
    pub async fn extract(
        &self,
        account: &str,
        cursor: Option<&str>,
        ctx: &RunContext,
    ) -> Result<Extract> {
        if account != self.domain {
            return Err(Error::config(format!(
                "source {} syncs domain {}, not {account}",
                self.name, self.domain
            )));
        }
        let desc = |extra: Vec<(&'static str, String)>| {
            let mut p = vec![
                ("orderby", "lastmodified".to_string()),
                ("sortorder", "descending".to_string()),
                ("showdeleted", "true".to_string()),
            ];
            p.extend(extra);
            p
        };
        if let Some(c) = cursor {
            let c: Cursor = serde_json::from_str(c).with_context(Kind::Decode, || {
                format!(
                    "stored cursor of {} is unreadable (run with --full-refresh)",
                    self.name
                )
            })?;
            let mut collected = Collected::try_new()?;
            let updated = self
                .scan(
                    &desc(vec![
                        ("updated-min", c.updated_min.clone()),
                        ("requirealldeleted", "true".into()),
                    ]),
                    false,
                    "incremental read",
                    ctx,
                    &mut collected,
                )
                .await?;
            let (upserts, deletes) = collected.finish(&Default::default())?;
            return Ok(Extract {
                mode: SyncMode::Incremental,
                upserts,
                deletes,
                cursor: serde_json::to_string(&Cursor {
                    updated_min: updated,
                })
                .unwrap(),
            });
        }
        let mut parallel = true;
        for round in 0..3 {
            let mut main = Collected::try_new()?;
            let t1 = self
                .scan(&desc(vec![]), parallel, "full read", ctx, &mut main)
                .await?;
            let t1_us = chrono::DateTime::parse_from_rfc3339(&t1)
                .map(|d| d.timestamp_micros())
                .unwrap_or(i64::MAX);
            main.count_recent(t1_us);
            let t2 = self
                .scan(
                    &desc(vec![("updated-min", t1.clone())]),
                    false,
                    "catch-up read",
                    ctx,
                    &mut main,
                )
                .await?;
            let changed = main.recent();
            if changed == 0 || !parallel || round == 2 {
                let (upserts, deletes) = main.finish(&Default::default())?;
                return Ok(Extract {
                    mode: SyncMode::Full,
                    upserts,
                    deletes,
                    cursor: serde_json::to_string(&Cursor { updated_min: t2 }).unwrap(),
                });
            }
            // The domain changed during a parallel read: redo it sequentially.
            tracing::info!(source = %self.name, changed, "contacts changed during the parallel read; re-reading sequentially");
            parallel = false;
        }
        unreachable!("the loop returns on its last round")
    }
}

impl crate::providers::Source for GoogleSource {
    fn name(&self) -> &str {
        GoogleSource::name(self)
    }
    fn accounts(&self) -> Vec<String> {
        GoogleSource::accounts(self)
    }
    fn default_account(&self) -> Option<&str> {
        Some(&self.domain)
    }
    fn extract<'a>(
        &'a self,
        account: &'a str,
        cursor: Option<&'a str>,
        ctx: &'a RunContext,
    ) -> futures::future::BoxFuture<'a, Result<Extract>> {
        Box::pin(GoogleSource::extract(self, account, cursor, ctx))
    }
    fn write_back(&self) -> Option<&dyn crate::providers::WriteBack> {
        Some(self)
    }
    fn photos(&self) -> Option<&dyn crate::providers::Photos> {
        Some(self)
    }
}

impl crate::providers::WriteBack for GoogleSource {
    fn rules(&self) -> &dyn crate::providers::Rules {
        &rules::GoogleRules
    }
    fn apply<'a>(
        &'a self,
        ops: &'a [crate::model::write::Op],
        managed: &'a [String],
        force: bool,
        metrics: &'a crate::http::Metrics,
    ) -> futures::future::BoxFuture<'a, Result<Vec<crate::model::write::OpResult>>> {
        Box::pin(GoogleSource::apply(self, ops, managed, force, metrics))
    }
}

impl crate::providers::Photos for GoogleSource {
    fn enabled(&self) -> bool {
        self.photos_enabled()
    }
    fn fetch<'a>(
        &'a self,
        wants: &'a [crate::model::photo::PhotoWant],
        metrics: &'a crate::http::Metrics,
        progress: Option<&'a indicatif::ProgressBar>,
    ) -> futures::future::BoxFuture<'a, crate::providers::PhotoFetch> {
        Box::pin(self.fetch_photos(wants, metrics, progress))
    }
    fn apply<'a>(
        &'a self,
        ops: &'a [crate::model::photo::PhotoOp],
        force: bool,
        metrics: &'a crate::http::Metrics,
    ) -> futures::future::BoxFuture<'a, Vec<crate::model::write::OpResult>> {
        Box::pin(self.apply_photos(ops, force, metrics))
    }
}

#[cfg(test)]
mod tests {
    /// GData's error document is read by the Google source, not by the HTTP layer.
    #[test]
    fn gdata_error_bodies_read_as_one_line() {
        assert_eq!(super::describe(b"<errors xmlns='http://schemas.google.com/g/2005'><error><domain>GData</domain><code>etagsMismatch</code><internalReason>Etags mismatch</internalReason></error></errors>"), "etagsMismatch: Etags mismatch");
        assert_eq!(
            super::describe(
                b"<errors><error><internalReason>No code</internalReason></error></errors>"
            ),
            "No code"
        );
        assert_eq!(
            super::describe(b"<HTML><TITLE>Not Found</TITLE></HTML>"),
            "Not Found"
        );
    }
}
