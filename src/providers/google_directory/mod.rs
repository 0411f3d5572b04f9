//! Google's directory through the People API (`people.listDirectoryPeople`): a read-only
//! source of a domain's shared contacts (`DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT`) and its
//! users' directory profiles (`DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE`). The account is the
//! domain.
//!
//! What the API reference says (facts) and what this client assumes where it is silent:
//! - `GET {base_url}/v1/people:listDirectoryPeople` with `readMask` and `sources[]`
//!   (required), `pageSize` (1-1000, default 100), `pageToken`, `requestSyncToken`,
//!   `syncToken`. A page token or sync token goes only with every other parameter of
//!   the call that made it (fact), so the cursor holds those parameters too
//!   ([`cursor`]).
//! - A full read asks `requestSyncToken=true`; the last page (no `nextPageToken`) carries
//!   `nextSyncToken` (fact). A last page without one is refused: no cursor could be
//!   stored, and the next run could not be incremental.
//! - With `syncToken`, deleted people come back with `metadata.deleted = true` (fact) and
//!   become deletes.
//! - An expired or invalid sync token: the reference documents seven days for other lists
//!   and gives no status for this one. Assumed: 400 `FAILED_PRECONDITION` or 410, with
//!   the reason `EXPIRED_SYNC_TOKEN` in `error.details`; either is
//!   [`crate::Error::CursorExpired`], a full extract that reconciles deletes.
//! - 429 `RESOURCE_EXHAUSTED` is retried with backoff by the HTTP layer.
//! - Writes may take minutes to show in a sync (fact): a sync is not read-after-write.

pub mod config;
pub mod cursor;
pub mod decode;

use std::sync::Arc;

use crate::config::SourceConfig;
use crate::error::{Context, Error, Kind, Result};
use crate::http::HttpClient;
use crate::http::paging::{PageGuard, PagingFault};
use crate::model::extract::RecordContext;
use crate::model::schema::{ContactRecord, records_to_batch};
use crate::model::spill::Collected;
use crate::providers::google::auth::GoogleAuth;
use crate::providers::{Extract, RunContext, SyncMode};
use cursor::{Cursor, READ_MASK};

/// Largest page body accepted: 1,000 people with every field read.
pub const MAX_PAGE_BYTES: usize = 64 << 20;
/// Pages of one read before it is called a loop: 10 million people at the smallest page
/// size the configuration allows would take more.
pub const MAX_PAGES: usize = 100_000;
/// Empty pages in a row (each with a further `nextPageToken`) tolerated.
pub const MAX_EMPTY_PAGES_IN_A_ROW: usize = 100;

/// Why the People API refuses to write: what `plan` and `apply` say.
pub const READ_ONLY: &str = "the People API's directory is read-only: write the domain's shared contacts through a source with provider = \"google\"";

/// The registry's entry for `provider = "google_directory"`.
pub const PROVIDER: crate::providers::Registration = crate::providers::Registration {
    name: "google_directory",
    check: |cfg, _| config::DirectoryConfig::read(cfg).map(drop),
    build: |cfg, http, dir| Ok(Box::new(DirectorySource::try_new(cfg, http, dir)?)),
    profile: |cfg, _| {
        let c = config::DirectoryConfig::read(cfg)?;
        Ok(crate::providers::Profile {
            accounts: vec![c.domain.clone()],
            rules: &NoRules,
            default_account: Some(c.domain),
            photos: false,
            photos_landed: false,
            read_only: Some(READ_ONLY),
        })
    },
};

/// The rules of a provider nothing is written to.
struct NoRules;

impl crate::providers::Rules for NoRules {
    fn fields(&self, _: &ContactRecord) -> Vec<String> {
        vec![]
    }
    fn limits(&self, _: &ContactRecord, _: Option<&ContactRecord>, _: &[String]) -> Vec<String> {
        vec![]
    }
}

/// A Google API error document (`{"error": {"code", "message", "status", "details":
/// [{"reason"}]}}`) as one line, `STATUS: message (REASON)`; `None` for any other body.
/// The source's [`crate::http::Describer`].
pub fn google_error(body: &[u8]) -> Option<String> {
    let e = ApiError::of(body)?;
    let mut line = match (&e.status, &e.message) {
        (Some(s), Some(m)) => format!("{s}: {m}"),
        (Some(s), None) => s.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => return None,
    };
    if let Some(r) = e.reasons.first() {
        line.push_str(&format!(" ({r})"));
    }
    Some(line)
}

/// The parts of a Google API error this client reads.
#[derive(Debug, Default)]
struct ApiError {
    status: Option<String>,
    message: Option<String>,
    reasons: Vec<String>,
}

impl ApiError {
    fn of(body: &[u8]) -> Option<ApiError> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let e = v.get("error")?;
        let text = |k: &str| e.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let reasons = e
            .get("details")
            .and_then(|d| d.as_array())
            .map(|d| {
                d.iter()
                    .filter_map(|x| x.get("reason").and_then(|r| r.as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Some(ApiError {
            status: text("status"),
            message: text("message"),
            reasons,
        })
    }

    /// Whether the error says a sync token is no longer accepted.
    fn expired_token(&self) -> bool {
        self.reasons.iter().any(|r| r == "EXPIRED_SYNC_TOKEN")
            || self.status.as_deref() == Some("FAILED_PRECONDITION")
    }
}

/// A configured `google_directory` source.
pub struct DirectorySource {
    name: String,
    domain: String,
    /// `base_url` parsed: the one origin that gets the credentials.
    origin: url::Url,
    sources: Vec<String>,
    page_size: u32,
    http: HttpClient,
    auth: Arc<GoogleAuth>,
}

impl DirectorySource {
    /// Builds the source from its pipeline entry (the credential is read here).
    pub fn try_new(
        cfg: &SourceConfig,
        http: HttpClient,
        pipeline_dir: &std::path::Path,
    ) -> Result<DirectorySource> {
        let settings = config::DirectoryConfig::read(cfg)?;
        let owner = format!("{} (account {})", cfg.name, settings.domain);
        let auth =
            GoogleAuth::from_config_scoped(&settings.auth, &owner, pipeline_dir, config::SCOPE)?;
        let origin = url::Url::parse(&cfg.base_url).with_context(Kind::Config, || {
            format!("source {}: base_url is not a URL", cfg.name)
        })?;
        Ok(DirectorySource {
            name: cfg.name.clone(),
            domain: settings.domain,
            origin,
            sources: settings.directory_sources,
            page_size: settings.page_size,
            http: http.with_describer(google_error),
            auth: Arc::new(auth),
        })
    }

    /// The request every page of a read repeats (its sync token left empty).
    fn request(&self) -> Cursor {
        Cursor {
            read_mask: READ_MASK.into(),
            sources: self.sources.clone(),
            merge_sources: vec![],
            sync_token: String::new(),
        }
    }

    /// The URL of one page.
    fn page_url(&self, sync_token: Option<&str>, page_token: Option<&str>) -> String {
        let mut u = self.origin.clone();
        u.set_path(&format!(
            "{}/v1/people:listDirectoryPeople",
            self.origin.path().trim_end_matches('/')
        ));
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("readMask", READ_MASK);
            for s in &self.sources {
                q.append_pair("sources", s);
            }
            q.append_pair("pageSize", &self.page_size.to_string());
            match sync_token {
                Some(t) => {
                    q.append_pair("syncToken", t);
                }
                None => {
                    q.append_pair("requestSyncToken", "true");
                }
            }
            if let Some(t) = page_token {
                q.append_pair("pageToken", t);
            }
        }
        u.to_string()
    }

    fn record_ctx(&self, ctx: &RunContext) -> RecordContext {
        RecordContext {
            source: self.name.clone(),
            account: self.domain.clone(),
            run_id: ctx.run_id.clone(),
            synced_at_us: ctx.synced_at_us,
        }
    }

    /// GETs one page with auth (a service account's token refreshed once on 401) and
    /// decodes it; `incremental` says whether a sync token was sent.
    async fn page(
        &self,
        url: &str,
        what: &str,
        incremental: bool,
        ctx: &RunContext,
    ) -> Result<decode::DirectoryPage> {
        let resp = self
            .auth
            .send(&self.http, false, what, &ctx.metrics, MAX_PAGE_BYTES, |c| {
                c.get(url)
            })
            .await?;
        let api = || ApiError::of(&resp.body).unwrap_or_default();
        match resp.status {
            200 => {
                ctx.metrics
                    .pages
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let page = decode::decode_page(&resp.body, &self.record_ctx(ctx), what)?;
                if let Some(pb) = &ctx.progress {
                    pb.inc((page.upserts.len() + page.deletes.len()) as u64);
                }
                Ok(page)
            }
            400 | 410 if incremental && (resp.status == 410 || api().expired_token()) => {
                Err(Error::cursor_expired(format!(
                    "{what}: the API no longer accepts the stored sync token ({}: {})",
                    resp.status,
                    resp.describe()
                )))
            }
            401 => Err(Error::auth(format!(
                "{what}: the API refused the credentials (401: {}); {}",
                resp.describe(),
                self.auth.hint()
            ))),
            403 => Err(Error::auth(format!(
                "{what}: access denied (403: {}); the service account needs domain-wide delegation for {} and its subject must be a user of {}",
                resp.describe(),
                config::SCOPE,
                self.domain
            ))),
            s => Err(Error::http(
                Some(s),
                format!("{what}: HTTP {s}: {}", resp.describe()),
            )),
        }
    }

    /// Reads every page of a list (from `sync_token`, or in full) into `collected`, a
    /// later page's version of a person winning; returns the last page's sync token.
    async fn read(
        &self,
        sync_token: Option<&str>,
        ctx: &RunContext,
        collected: &mut Collected,
    ) -> Result<String> {
        let label = if sync_token.is_some() {
            "incremental read"
        } else {
            "full read"
        };
        let what = |n: usize| format!("{label} of {} ({}), page {n}", self.domain, self.name);
        let mut guard = PageGuard::new(MAX_PAGES).with_max_empty_in_a_row(MAX_EMPTY_PAGES_IN_A_ROW);
        let rctx = self.record_ctx(ctx);
        let mut page_token: Option<String> = None;
        loop {
            let n = guard.page().map_err(|f| stop(&what(guard.pages()), f))?;
            let url = self.page_url(sync_token, page_token.as_deref());
            let page = self.page(&url, &what(n), sync_token.is_some(), ctx).await?;
            let rows = page.upserts.len() + page.deletes.len();
            // (The crash tests kill a sync at this line: in the middle of an extract.)
            tracing::debug!(source = %self.name, page = n, rows, "read a directory page");
            let mut records = page.upserts;
            records.extend(page.deletes.into_iter().map(|id| ContactRecord {
                source: rctx.source.clone(),
                account: rctx.account.clone(),
                id,
                deleted: true,
                _run_id: rctx.run_id.clone(),
                _synced_at: rctx.synced_at_us,
                ..Default::default()
            }));
            collected.add(&records_to_batch(&records)?, Some(n as i64))?;
            match page.next_page_token {
                Some(t) => {
                    guard
                        .follow(&t)
                        .and_then(|()| guard.records(rows))
                        .map_err(|f| stop(&what(n), f))?;
                    page_token = Some(t);
                }
                None => {
                    return page.next_sync_token.ok_or_else(|| {
                        Error::decode(format!(
                            "{}: the last page carries no nextSyncToken, though the read asked for one; no cursor could be kept",
                            what(n)
                        ))
                    });
                }
            }
        }
    }

    /// Extracts the domain's directory: incremental from a stored cursor made by the
    /// same request, else in full.
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
        let request = self.request();
        let token = cursor.and_then(|c| Cursor::token_for(c, &request));
        let mode = match (cursor, &token) {
            (None, _) => SyncMode::Full,
            (Some(_), Some(_)) => SyncMode::Incremental,
            (Some(_), None) => {
                tracing::info!(source = %self.name, "the stored cursor was made by another request (directory_sources or the fields read changed): reading in full");
                SyncMode::Resync
            }
        };
        let mut collected = Collected::try_new()?;
        let sync_token = self.read(token.as_deref(), ctx, &mut collected).await?;
        let (upserts, deletes) = collected.finish(&Default::default())?;
        Ok(Extract {
            mode,
            upserts,
            deletes,
            cursor: Cursor {
                sync_token,
                ..request
            }
            .encode(),
        })
    }
}

/// The error for a paged read stopped by its guard.
fn stop(what: &str, f: PagingFault) -> Error {
    let why = match f {
        PagingFault::Repeated => {
            "the server sent a page token a second time; a paging loop, stopped".to_string()
        }
        other => format!("{other}; a paging loop or a broken server, stopped"),
    };
    Error::with_source(Kind::Decode, format!("{what}: {why}"), f)
}

impl crate::providers::Source for DirectorySource {
    fn name(&self) -> &str {
        &self.name
    }
    fn accounts(&self) -> Vec<String> {
        vec![self.domain.clone()]
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
        Box::pin(DirectorySource::extract(self, account, cursor, ctx))
    }
    fn write_back(&self) -> Option<&dyn crate::providers::WriteBack> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schemas/google_directory.mapping.json` has one line per column of the unified
    /// schema, in its order: a column added to the schema without saying where it comes
    /// from in a Person fails here. Each column the README's directory table names is
    /// one of them.
    #[test]
    fn the_mapping_in_schemas_covers_every_column() {
        let mapping: serde_json::Value = serde_json::from_str(include_str!(
            "../../../schemas/google_directory.mapping.json"
        ))
        .unwrap();
        let mapped: Vec<&str> = mapping["columns"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let schema = crate::model::schema::contacts_schema();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(mapped, columns);
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Google's directory (People API)")
            .nth(1)
            .unwrap()
            .split("\n## ")
            .next()
            .unwrap();
        let table: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| l.split('|').nth(1).unwrap().split('`').skip(1).step_by(2))
            .collect();
        assert!(table.len() > 10, "{table:?}");
        for c in table {
            assert!(columns.contains(&c), "the README maps {c}, not a column");
        }
    }

    /// Google's JSON errors read as one line, with the reason a token expiry carries.
    #[test]
    fn google_errors_read_as_one_line_and_tell_an_expired_token() {
        let body = br#"{"error":{"code":400,"message":"Sync token is expired.","status":"FAILED_PRECONDITION","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"EXPIRED_SYNC_TOKEN"}]}}"#;
        assert_eq!(
            google_error(body).as_deref(),
            Some("FAILED_PRECONDITION: Sync token is expired. (EXPIRED_SYNC_TOKEN)")
        );
        assert!(ApiError::of(body).unwrap().expired_token());
        let quota =
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
        assert!(!ApiError::of(quota).unwrap().expired_token());
        assert_eq!(google_error(b"<html>no</html>"), None);
        assert_eq!(google_error(br#"{"error":{}}"#), None);
    }
}
