//! The Aurinko Contacts source: `POST /v1/contacts/sync` (polled while `ready:false`), then
//! the updated and deleted streams concurrently: the first call with `deltaToken`, later
//! pages with `pageToken` alone, until a page carries `nextDeltaToken`. The two delta
//! tokens are the cursor. 410 `syncToken.expired`, or 400 `token.notValid` on a delta
//! token, means the cursor expired; a bad page token is retried once from the delta token.

pub mod config;
pub mod decode;
pub mod rules;
pub mod writeback;

use std::collections::{HashMap, HashSet};

use base64::Engine;

use crate::config::SourceConfig;
use crate::error::{Context, Error, Kind, Result};
use crate::http::paging::{PageGuard, PagingFault};
use crate::http::{HttpClient, HttpResponse};
use crate::model::extract::RecordContext;
use crate::model::spill::Collected;
use crate::providers::{Extract, RunContext, SyncMode};
use crate::secret::Secret;

const MAX_PAGE_BYTES: usize = 64 << 20;
/// `ready:false` answers tolerated before giving up.
const MAX_READY_POLLS: u32 = 20;
/// The wait before polling a `ready:false` sync start again; it doubles each time.
const FIRST_READY_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// Accounts in flight by default: one per [`ACCOUNTS_PER_SLOT`] accounts configured,
/// within these bounds.
const DEFAULT_CONCURRENCY: std::ops::RangeInclusive<usize> = 4..=64;
/// Configured accounts per account in flight, by default.
const ACCOUNTS_PER_SLOT: usize = 8;

/// Accounts synced at once when the pipeline sets no `concurrency`. An account's run is
/// mostly waiting (the sync start answers `ready:false` first, then a few pages), so a
/// fleet of hundreds of small mailboxes is bound by that latency, not by work: with 4 in
/// flight, 400 accounts took 25 times as long as one account of the same contacts. Many
/// accounts get many in flight; the cap bounds what the accounts in flight hold at once
/// (each its pages, id index and change file), so memory stays flat however many accounts
/// there are, and a few large accounts keep 4.
pub fn default_concurrency(accounts: usize) -> usize {
    (accounts / ACCOUNTS_PER_SLOT).clamp(*DEFAULT_CONCURRENCY.start(), *DEFAULT_CONCURRENCY.end())
}

/// Pages of one stream read before the stream is called a loop. Aurinko documents no
/// page size; at the 100-200 records a page it sends, this is millions of contacts,
/// far past any mailbox.
pub const MAX_STREAM_PAGES: usize = 50_000;
/// Empty pages in a row (each with a further `nextPageToken`) tolerated before the
/// stream is called a loop: a provider scan may yield a few, never this many.
pub const MAX_EMPTY_PAGES_IN_A_ROW: usize = 100;

/// How one account authenticates.
enum AccountAuth {
    Bearer(Secret),
    App { basic: Secret },
}

/// The registry's entry for `provider = "aurinko"`.
pub const PROVIDER: crate::providers::Registration = crate::providers::Registration {
    name: "aurinko",
    check: |cfg, dir| config::AurinkoConfig::read(cfg, dir).map(drop),
    build: |cfg, http, dir| Ok(Box::new(AurinkoSource::try_new(cfg, http, dir)?)),
    profile: |cfg, dir| {
        Ok(crate::providers::Profile {
            accounts: config::AurinkoConfig::read(cfg, dir)?
                .accounts
                .into_iter()
                .map(|a| a.id)
                .collect(),
            rules: &rules::AurinkoRules,
            default_account: None,
            photos: false,
            photos_landed: false,
            read_only: None,
        })
    },
};

/// A configured Aurinko source.
pub struct AurinkoSource {
    name: String,
    base_url: String,
    accounts: Vec<String>,
    auth: HashMap<String, AccountAuth>,
    concurrency: usize,
    http: HttpClient,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    updated: String,
    deleted: String,
}

#[derive(serde::Deserialize)]
struct SyncStatus {
    #[serde(rename = "syncUpdatedToken")]
    updated: Option<String>,
    #[serde(rename = "syncDeletedToken")]
    deleted: Option<String>,
    ready: Option<bool>,
}

/// An Aurinko error that carries the upstream API's own (`/originalError/error/message`)
/// with its `code` and `message` as one line, `code: message (upstream message)`; `None`
/// for any other body, which the base reading takes. The source's [`crate::http::Describer`].
pub fn original_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let orig = v.pointer("/originalError/error/message")?.as_str()?;
    let code = v.get("code")?.as_str()?;
    let msg = v.get("message")?.as_str()?;
    Some(format!("{code}: {msg} ({orig})"))
}

/// An error body of the Aurinko API as one line (the upstream error first, see
/// [`original_error`]).
pub fn describe(body: &[u8]) -> String {
    crate::http::describe_body_with(Some(original_error), body)
}

fn env(var: &str, source: &str, account: Option<&str>) -> Result<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(Error::config(format!(
            "source {source}{}: the environment variable {var} is not set; export it with the credential",
            account
                .map(|a| format!(", account {a}"))
                .unwrap_or_default()
        ))),
    }
}

/// Whether an error body says the token is not valid (Aurinko's Java client reads these
/// as a bad token too).
fn bad_token(resp: &HttpResponse) -> bool {
    // The status first: every page goes through here, and a page is not an error body
    // (reading each page as text again would be one more pass over every body).
    resp.status == 400 && {
        let t = String::from_utf8_lossy(&resp.body);
        t.contains("token.notValid") || t.contains("Page token is invalid")
    }
}

impl AurinkoSource {
    /// Builds the source from its pipeline entry; every token must be in the environment.
    pub fn try_new(
        cfg: &SourceConfig,
        http: HttpClient,
        base: &std::path::Path,
    ) -> Result<AurinkoSource> {
        let settings = config::AurinkoConfig::read(cfg, base)?;
        let mut auth = HashMap::new();
        let app = match &settings.app {
            Some((client_id_env, client_secret_env)) => {
                let id = env(client_id_env, &cfg.name, None)?;
                let secret = env(client_secret_env, &cfg.name, None)?;
                Some(Secret::new(
                    base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        id.expose(),
                        secret.expose()
                    )),
                ))
            }
            None => None,
        };
        for a in &settings.accounts {
            let v = match (&app, &a.token_env) {
                (Some(b), _) => AccountAuth::App { basic: b.clone() },
                (None, _) => AccountAuth::Bearer(crate::config::load_secret(
                    a.token_env.as_deref(),
                    a.token_file.as_deref(),
                    base,
                    &format!("source {}, account {}", cfg.name, a.id),
                )?),
            };
            auth.insert(a.id.clone(), v);
        }
        Ok(AurinkoSource {
            name: cfg.name.clone(),
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            accounts: settings.accounts.iter().map(|a| a.id.clone()).collect(),
            auth,
            concurrency: cfg
                .concurrency
                .unwrap_or_else(|| default_concurrency(settings.accounts.len()))
                .max(1),
            http: http.with_describer(original_error),
        })
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The account ids.
    pub fn accounts(&self) -> Vec<String> {
        self.accounts.clone()
    }
    /// Accounts synced at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn authorize(
        &self,
        account: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder> {
        Ok(match self.auth.get(account) {
            Some(AccountAuth::Bearer(t)) => rb.header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", t.expose()),
            ),
            Some(AccountAuth::App { basic }) => rb
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", basic.expose()),
                )
                .header("X-Aurinko-Account-Id", account),
            None => {
                return Err(Error::config(format!(
                    "source {}: account {account} is not configured",
                    self.name
                )));
            }
        })
    }

    async fn request(
        &self,
        account: &str,
        what: &str,
        ctx: &RunContext,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        // Build once to surface configuration errors before the retry loop.
        let _ = self.authorize(account, self.http.client().get(url))?;
        let resp = self
            .http
            .send(what, &ctx.metrics, MAX_PAGE_BYTES, |c| {
                self.authorize(account, c.request(method.clone(), url).query(query))
                    .expect("checked above")
            })
            .await?;
        match resp.status {
            401 => Err(Error::auth(format!(
                "{what}: the API refused the account's credentials (401 {}); refresh the account token",
                resp.describe()
            ))),
            403 => Err(Error::auth(format!(
                "{what}: access denied (403 {}); the token needs the Contacts.Read scope",
                resp.describe()
            ))),
            _ => Ok(resp),
        }
    }

    async fn start_sync(&self, account: &str, ctx: &RunContext) -> Result<(String, String)> {
        let url = format!("{}/v1/contacts/sync", self.base_url);
        // The first re-poll comes soon: a sync start that answers `ready:false` usually
        // is ready a moment later, and with hundreds of accounts a retry-sized wait
        // (500 ms each) dominated the whole run. It doubles from there.
        let mut delay = self.http.policy().base.min(FIRST_READY_POLL);
        for attempt in 1..=MAX_READY_POLLS {
            let what = format!(
                "{} account {account}: sync start (attempt {attempt})",
                self.name
            );
            let resp = self
                .request(
                    account,
                    &what,
                    ctx,
                    reqwest::Method::POST,
                    &url,
                    &[("awaitReady", "true")],
                )
                .await?;
            if !resp.ok() {
                return Err(Error::http(
                    Some(resp.status),
                    format!("{what}: HTTP {}: {}", resp.status, resp.describe()),
                ));
            }
            let s: SyncStatus = serde_json::from_slice(&resp.body)
                .with_context(Kind::Decode, || format!("{what}: unreadable SyncStatus"))?;
            if s.ready == Some(true)
                && let (Some(u), Some(d)) = (s.updated, s.deleted)
            {
                return Ok((u, d));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
        }
        Err(Error::http(
            None,
            format!(
                "{} account {account}: the sync was still not ready after {MAX_READY_POLLS} polls of POST /v1/contacts/sync; try again later",
                self.name
            ),
        ))
    }

    /// Reads one stream to its `nextDeltaToken`, handing each page to `sink` as it
    /// arrives. Returns the next delta token.
    async fn stream(
        &self,
        account: &str,
        stream: &str,
        delta: &str,
        ctx: &RunContext,
        sink: &mut impl PageSink,
    ) -> Result<String> {
        let url = format!("{}/v1/contacts/sync/{stream}", self.base_url);
        let mut page_token: Option<String> = None;
        let mut page_retry_used = false;
        let mut guard =
            PageGuard::new(MAX_STREAM_PAGES).with_max_empty_in_a_row(MAX_EMPTY_PAGES_IN_A_ROW);
        loop {
            let Ok(n) = guard.page() else {
                return Err(Error::decode(format!(
                    "{} account {account}: /sync/{stream} sent more than {MAX_STREAM_PAGES} pages without a nextDeltaToken; a paging loop or a broken server, stopped",
                    self.name
                )));
            };
            let what = format!("{} account {account}: /sync/{stream} page {n}", self.name);
            let query: Vec<(&str, &str)> = match &page_token {
                Some(p) => vec![("pageToken", p.as_str())],
                None => vec![("deltaToken", delta)],
            };
            let resp = self
                .request(account, &what, ctx, reqwest::Method::GET, &url, &query)
                .await?;
            if resp.status == 410 || bad_token(&resp) {
                if page_token.is_some() && !page_retry_used && resp.status != 410 {
                    // A bad page token: start the stream again from the delta token, once.
                    page_retry_used = true;
                    page_token = None;
                    guard.restart();
                    sink.restart();
                    continue;
                }
                return Err(Error::cursor_expired(format!(
                    "{what}: the sync token is no longer valid (HTTP {} {})",
                    resp.status,
                    resp.describe()
                )));
            }
            if !resp.ok() {
                return Err(Error::http(
                    Some(resp.status),
                    format!("{what}: HTTP {}: {}", resp.status, resp.describe()),
                ));
            }
            ctx.metrics
                .pages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tokens = sink.page(&resp.body, &what)?;
            if let Some(pb) = &ctx.progress {
                pb.inc(tokens.records as u64);
            }
            match (tokens.next_page, tokens.next_delta) {
                (Some(p), _) => {
                    let stop = match guard.follow(&p).and_then(|()| guard.records(tokens.records)) {
                        Ok(()) => None,
                        Err(PagingFault::Repeated) => Some(
                            "the server sent a nextPageToken it had sent before; a paging loop, stopped".to_string(),
                        ),
                        Err(_) => Some(format!(
                            "{MAX_EMPTY_PAGES_IN_A_ROW} empty pages in a row, each with a new nextPageToken; a paging loop or a broken server, stopped"
                        )),
                    };
                    if let Some(stop) = stop {
                        return Err(Error::decode(format!("{what}: {stop}")));
                    }
                    page_token = Some(p)
                }
                (None, Some(d)) => return Ok(d),
                (None, None) => {
                    return Err(Error::decode(format!(
                        "{what}: the page has neither nextPageToken nor nextDeltaToken"
                    )));
                }
            }
        }
    }

    /// Extracts one account.
    pub async fn extract(
        &self,
        account: &str,
        cursor: Option<&str>,
        ctx: &RunContext,
    ) -> Result<Extract> {
        let (mode, up_tok, del_tok) = match cursor {
            Some(c) => {
                let c: Cursor = serde_json::from_str(c).with_context(Kind::Decode, || {
                    format!(
                        "{} account {account}: stored cursor is unreadable (run with --full-refresh)",
                        self.name
                    )
                })?;
                (SyncMode::Incremental, c.updated, c.deleted)
            }
            None => {
                let (u, d) = self.start_sync(account, ctx).await?;
                (SyncMode::Full, u, d)
            }
        };
        let rctx = RecordContext {
            source: self.name.clone(),
            account: account.to_string(),
            run_id: ctx.run_id.clone(),
            synced_at_us: ctx.synced_at_us,
        };
        // Pages are decoded as they arrive and spilled to local disk: each body is read
        // once, and memory holds one page and an index of ids, whatever the account's size.
        let mut updated = UpdatedSink {
            collected: Collected::try_new()?,
            ctx: &rctx,
            pages: 0,
            deleted: Vec::new(),
        };
        let mut deleted = DeletedSink::default();
        let (next_up, next_del) = tokio::join!(
            self.stream(account, "updated", &up_tok, ctx, &mut updated),
            self.stream(account, "deleted", &del_tok, ctx, &mut deleted),
        );
        let (next_up, next_del) = (next_up?, next_del?);
        // A deleted id never comes back (ids are not reused), so it beats any version.
        let gone: HashSet<String> = deleted.ids.into_iter().chain(updated.deleted).collect();
        let (upserts, deletes) = updated.collected.finish(&gone)?;
        Ok(Extract {
            mode,
            upserts,
            deletes,
            cursor: serde_json::to_string(&Cursor {
                updated: next_up,
                deleted: next_del,
            })
            .unwrap(),
        })
    }
}

/// Where the pages of one stream go.
trait PageSink {
    /// Takes a page body; `what` names account, stream and page in errors.
    fn page(&mut self, body: &[u8], what: &str) -> Result<PageTokens>;
    /// The stream is being read again from its delta token: what came so far is void.
    fn restart(&mut self);
}

/// `/sync/updated`: pages to Arrow, spilled; later pages beat earlier ones.
struct UpdatedSink<'a> {
    collected: Collected,
    ctx: &'a RecordContext,
    /// Pages taken so far, the rank of the next one.
    pages: i64,
    /// Records flagged `deleted:true`.
    deleted: Vec<String>,
}

impl PageSink for UpdatedSink<'_> {
    fn page(&mut self, body: &[u8], what: &str) -> Result<PageTokens> {
        let page = decode::parse_page::<decode::ContactJ>(body, what)?;
        let tokens = PageTokens::of(&page);
        let out = decode::decode_contacts(page.records, self.ctx, what)?;
        self.collected.add(&out.batch, Some(self.pages))?;
        self.deleted.extend(out.deleted);
        self.pages += 1;
        Ok(tokens)
    }

    fn restart(&mut self) {
        self.collected.forget_before(self.pages);
        self.deleted.clear();
    }
}

/// `/sync/deleted`: ids.
#[derive(Default)]
struct DeletedSink {
    ids: Vec<String>,
}

impl PageSink for DeletedSink {
    fn page(&mut self, body: &[u8], what: &str) -> Result<PageTokens> {
        let page = decode::parse_page::<decode::DeletedJ>(body, what)?;
        let tokens = PageTokens::of(&page);
        self.ids.extend(decode::decode_deleted(page.records, what)?);
        Ok(tokens)
    }

    fn restart(&mut self) {
        self.ids.clear();
    }
}

/// What the page loop needs from a page: where to go next, and how many records it had.
struct PageTokens {
    next_page: Option<String>,
    next_delta: Option<String>,
    records: usize,
}

impl PageTokens {
    fn of<T>(page: &decode::Page<'_, T>) -> PageTokens {
        PageTokens {
            next_page: page.next_page_token.clone(),
            next_delta: page.next_delta_token.clone(),
            records: page.records.len(),
        }
    }
}

impl crate::providers::Source for AurinkoSource {
    fn name(&self) -> &str {
        AurinkoSource::name(self)
    }
    fn accounts(&self) -> Vec<String> {
        AurinkoSource::accounts(self)
    }
    fn account_concurrency(&self) -> usize {
        self.concurrency()
    }
    fn extract<'a>(
        &'a self,
        account: &'a str,
        cursor: Option<&'a str>,
        ctx: &'a RunContext,
    ) -> futures::future::BoxFuture<'a, Result<Extract>> {
        Box::pin(AurinkoSource::extract(self, account, cursor, ctx))
    }
    fn write_back(&self) -> Option<&dyn crate::providers::WriteBack> {
        Some(self)
    }
}

impl crate::providers::WriteBack for AurinkoSource {
    fn rules(&self) -> &dyn crate::providers::Rules {
        &rules::AurinkoRules
    }
    fn apply<'a>(
        &'a self,
        ops: &'a [crate::model::write::Op],
        managed: &'a [String],
        force: bool,
        metrics: &'a crate::http::Metrics,
    ) -> futures::future::BoxFuture<'a, Result<Vec<crate::model::write::OpResult>>> {
        Box::pin(AurinkoSource::apply(self, ops, managed, force, metrics))
    }
}

#[cfg(test)]
mod tests {
    /// A source of `n` accounts as a pipeline file declares it, `extra` its other keys.
    fn source_of(n: usize, extra: &str) -> Box<dyn crate::providers::Source> {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("id,token_env,token_file\n");
        for i in 0..n {
            std::fs::write(dir.path().join(format!("{i}.token")), "t").unwrap();
            csv.push_str(&format!("{i},,{i}.token\n"));
        }
        std::fs::write(dir.path().join("accounts.csv"), csv).unwrap();
        let text = format!(
            "[lake]\nurl = \"lake\"\n[[sources]]\nname = \"crm\"\nprovider = \"aurinko\"\nbase_url = \"http://127.0.0.1:9\"\naccounts_file = \"accounts.csv\"\n{extra}\n"
        );
        let p = crate::config::Pipeline::parse(&text, &dir.path().join("p.toml")).unwrap();
        crate::providers::build(&p.sources[0], dir.path()).unwrap()
    }

    /// Without `concurrency`, the accounts in flight grow with the accounts (hundreds of
    /// small mailboxes are latency, not work) up to a cap that bounds memory; a pipeline's
    /// own figure wins. (The old default was 4 whatever the fleet.)
    #[test]
    fn accounts_in_flight_scale_with_the_accounts_up_to_a_cap() {
        for (accounts, in_flight) in [(1, 4), (20, 4), (40, 5), (400, 50), (512, 64), (10_000, 64)]
        {
            assert_eq!(
                super::default_concurrency(accounts),
                in_flight,
                "{accounts} accounts"
            );
        }
        assert_eq!(source_of(400, "").account_concurrency(), 50);
        assert_eq!(source_of(3, "").account_concurrency(), 4);
        assert_eq!(source_of(2_000, "").account_concurrency(), 64);
        assert_eq!(source_of(400, "concurrency = 2").account_concurrency(), 2);
    }

    /// Aurinko's upstream error is read by the Aurinko source, not by the HTTP layer.
    #[test]
    fn upstream_errors_are_named() {
        assert_eq!(
            super::describe(
                br#"{"code":"api.error","message":"Upstream failed","originalError":{"error":{"message":"Quota exceeded"}}}"#
            ),
            "api.error: Upstream failed (Quota exceeded)"
        );
        assert_eq!(
            super::describe(br#"{"code":"syncToken.expired","message":"syncToken expired."}"#),
            "syncToken.expired: syncToken expired."
        );
        assert!(!crate::http::describe_body(
            br#"{"code":"c","message":"m","originalError":{"error":{"message":"Quota exceeded"}}}"#
        )
        .contains("Quota"));
    }
}
