//! The CardDAV source (RFC 6352 address books, RFC 6578 sync): Apple iCloud, Fastmail,
//! Nextcloud, Google Contacts over CardDAV, SOGo, Baïkal, Radicale, Xandikos.
//!
//! - **Accounts** are address books: the `account` column is the address book's path on
//!   the server written as an account id, which names a folder of the lake and so cannot
//!   hold `/`: `/alice/contacts/` → `alice.contacts` (segments joined by `.`, other bytes
//!   than letters, digits and `-` as `_XX`; see [`config::account_of`], reversed by
//!   [`config::book_of`]). They are `address_books` when configured; otherwise
//!   discovered (RFC 6352 §7): `current-user-principal` on `base_url` (then on
//!   `/.well-known/carddav`), its `addressbook-home-set`, and the collections there whose
//!   `resourcetype` is `CARDDAV:addressbook`.
//! - **Ids** are resource names: the last segment of the vCard's href without `.vcf`,
//!   left percent-encoded as the server wrote it (so `id` goes back into a URL unchanged
//!   and two names never decode to one). The href itself is in `native` as
//!   `{"href": "/alice/contacts/x.vcf"}`, for a write-back to address the resource exactly.
//! - **The cursor** is the collection's `DAV:sync-token`, read *before* a full listing, so
//!   what changes during a full extract is seen again by the next run, never lost.
//! - **Full extract:** PROPFIND depth 1 (hrefs and ETags), then `addressbook-multiget`
//!   REPORTs of `multiget_size` hrefs, `concurrency` at a time.
//! - **Incremental:** `sync-collection` REPORTs (level 1) from the stored token: 2xx
//!   members changed (their vCards come by multiget, or from the report when the server
//!   puts `address-data` in it), 404 members deleted, and a 507 on the collection itself
//!   means the answer was truncated: the next page starts from the new token. A token the
//!   server no longer knows (`DAV:valid-sync-token`, 403/409, or a bare 400/410/412 about
//!   the token) is [`crate::Error::CursorExpired`]: the shared code extracts in full and
//!   deletes what is gone.
//! - Credentials go only to `base_url`'s origin: an href or redirect elsewhere is refused.

pub mod config;
pub mod dav;
pub mod decode;
pub mod rules;
pub mod writeback;

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use base64::Engine;
use futures::StreamExt;

use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::http::{HttpClient, HttpResponse, Metrics};
use crate::model::extract::RecordContext;
use crate::model::spill::Collected;
use crate::providers::{Extract, RunContext, SyncMode};
use crate::secret::Secret;

use crate::http::paging::PageGuard;
use config::{AuthConfig, CardDavConfig};
use dav::{DavClient, Multistatus};

/// Pages of one sync report read before the paging is called a loop.
pub const MAX_SYNC_PAGES: usize = 10_000;

/// The registry's entry for `provider = "carddav"`.
pub const PROVIDER: crate::providers::Registration = crate::providers::Registration {
    name: "carddav",
    check: |cfg, dir| CardDavConfig::read(cfg, dir).map(drop),
    build: |cfg, http, dir| Ok(Box::new(CardDavSource::try_new(cfg, http, dir)?)),
    profile: |cfg, dir| {
        Ok(crate::providers::Profile {
            accounts: CardDavConfig::read(cfg, dir)?
                .address_books
                .unwrap_or_default()
                .iter()
                .map(|b| config::account_of(b))
                .collect(),
            rules: &rules::CardDavRules,
            default_account: None,
            photos: false,
            photos_landed: false,
            read_only: None,
        })
    },
};

/// A configured CardDAV source.
pub struct CardDavSource {
    name: String,
    dav: DavClient,
    /// Configured address books; `None` until discovered.
    configured: Option<Vec<String>>,
    discovered: OnceLock<Vec<String>>,
    concurrency: usize,
    multiget_size: usize,
}

/// The `Authorization` header a configuration asks for; reads the credential.
fn authorization(
    cfg: &SourceConfig,
    auth: &AuthConfig,
    dir: &std::path::Path,
) -> Result<Option<Secret>> {
    let what = format!("source {}", cfg.name);
    Ok(match auth {
        AuthConfig::Basic {
            username,
            password_env,
            password_file,
        } => {
            let password = crate::config::load_secret(
                password_env.as_deref(),
                password_file.as_deref(),
                dir,
                &what,
            )?;
            Some(Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )))
        }
        AuthConfig::Bearer {
            token_env,
            token_file,
        } => {
            let token = crate::config::load_secret(
                token_env.as_deref(),
                token_file.as_deref(),
                dir,
                &what,
            )?;
            Some(Secret::new(format!("Bearer {}", token.expose())))
        }
        AuthConfig::None {} => None,
    })
}

impl CardDavSource {
    /// Builds the source from its pipeline entry: reads its credential, makes no request.
    pub fn try_new(
        cfg: &SourceConfig,
        http: HttpClient,
        dir: &std::path::Path,
    ) -> Result<CardDavSource> {
        let settings = CardDavConfig::read(cfg, dir)?;
        let authorization = authorization(cfg, &settings.auth, dir)?;
        Ok(CardDavSource {
            name: cfg.name.clone(),
            dav: DavClient::new(&cfg.name, settings.base_url, authorization, http),
            configured: settings.address_books,
            discovered: OnceLock::new(),
            concurrency: cfg.concurrency.unwrap_or(4).max(1),
            multiget_size: settings.multiget_size,
        })
    }

    /// The client (for the write-back).
    pub fn dav(&self) -> &DavClient {
        &self.dav
    }

    /// The address books: configured, or found by [`CardDavSource::discover`] (empty
    /// before it ran).
    pub fn books(&self) -> Vec<String> {
        match &self.configured {
            Some(b) => b.clone(),
            None => self.discovered.get().cloned().unwrap_or_default(),
        }
    }

    /// Finds the user's address books when none are configured (RFC 6352 §7).
    pub async fn discover(&self, metrics: &Metrics) -> Result<()> {
        if self.configured.is_some() || self.discovered.get().is_some() {
            return Ok(());
        }
        let books = self.find_books(metrics).await?;
        let _ = self.discovered.set(books);
        Ok(())
    }

    async fn propfind(
        &self,
        url: &url::Url,
        depth: &str,
        body: &str,
        what: &str,
        metrics: &Metrics,
    ) -> Result<Multistatus> {
        let resp = self
            .dav
            .read("PROPFIND", url, depth, body, what, metrics)
            .await?;
        multistatus(resp, what)
    }

    async fn find_books(&self, metrics: &Metrics) -> Result<Vec<String>> {
        let base = self.dav.base.clone();
        let what = format!(
            "source {}: discovery, current-user-principal of {base}",
            self.name
        );
        let mut principal = self
            .propfind(&base, "0", dav::PROPFIND_PRINCIPAL, &what, metrics)
            .await
            .ok()
            .and_then(|m| first(&m, |p| p.principal.clone()));
        if principal.is_none() {
            let wk = self.dav.url("/.well-known/carddav", &what)?;
            let what = format!(
                "source {}: discovery, current-user-principal of {wk}",
                self.name
            );
            let m = self
                .propfind(&wk, "0", dav::PROPFIND_PRINCIPAL, &what, metrics)
                .await?;
            principal = first(&m, |p| p.principal.clone());
        }
        let principal = principal.ok_or_else(|| {
            Error::config(format!(
                "source {}: the server at {base} names no current-user-principal, so its address books cannot be discovered; list them with address_books = [\"/path/of/book/\"]",
                self.name
            ))
        })?;
        let what = format!(
            "source {}: discovery, addressbook-home-set of {principal}",
            self.name
        );
        let url = self.dav.url(&principal, &what)?;
        let m = self
            .propfind(&url, "0", dav::PROPFIND_HOME, &what, metrics)
            .await?;
        let homes: Vec<String> = m
            .responses
            .iter()
            .flat_map(|r| r.props.home_sets.iter().cloned())
            .collect();
        if homes.is_empty() {
            return Err(Error::config(format!(
                "{what}: the principal has no addressbook-home-set; list the books with address_books = [\"/path/of/book/\"]"
            )));
        }
        let mut books = Vec::new();
        for home in homes {
            let what = format!("source {}: discovery, address books in {home}", self.name);
            let url = self.dav.url(&home, &what)?;
            let m = self
                .propfind(&url, "1", dav::PROPFIND_COLLECTIONS, &what, metrics)
                .await?;
            for r in m.responses.iter().filter(|r| r.props.addressbook) {
                let path = self.dav.url(&r.href, &what)?.path().to_string();
                config::check_book_path(&path).map_err(|why| {
                    Error::decode(format!(
                        "{what}: the address book {path} cannot be an account: it {why}; list the books to sync with address_books"
                    ))
                })?;
                if !books.contains(&path) {
                    books.push(path);
                }
            }
        }
        if books.is_empty() {
            return Err(Error::config(format!(
                "source {}: discovery found no address book for this user on {base}; create one, or list them with address_books",
                self.name
            )));
        }
        Ok(books)
    }

    /// The account ids of the address books.
    pub fn accounts(&self) -> Vec<String> {
        self.books().iter().map(|b| config::account_of(b)).collect()
    }

    /// Extracts one address book, named by its account id.
    pub async fn extract(
        &self,
        account: &str,
        cursor: Option<&str>,
        ctx: &RunContext,
    ) -> Result<Extract> {
        let book = config::book_of(account)
            .filter(|b| self.books().contains(b))
            .ok_or_else(|| {
                Error::config(format!(
                    "source {}: {account} is not one of its address books",
                    self.name
                ))
            })?;
        let book = book.as_str();
        let rctx = RecordContext {
            source: self.name.clone(),
            account: account.to_string(),
            run_id: ctx.run_id.clone(),
            synced_at_us: ctx.synced_at_us,
        };
        match cursor {
            Some(token) if !token.is_empty() => self.incremental(book, token, &rctx, ctx).await,
            _ => self.full(book, &rctx, ctx).await,
        }
    }

    fn book_url(&self, book: &str) -> Result<url::Url> {
        self.dav
            .url(book, &format!("source {} book {book}", self.name))
    }

    async fn full(&self, book: &str, rctx: &RecordContext, ctx: &RunContext) -> Result<Extract> {
        let url = self.book_url(book)?;
        // The token first: a change made while the book is read is then also after it.
        let what = format!("source {} book {book}: PROPFIND sync-token", self.name);
        let m = self
            .propfind(&url, "0", dav::PROPFIND_SYNC_TOKEN, &what, &ctx.metrics)
            .await?;
        let token = first(&m, |p| p.sync_token.clone()).unwrap_or_default();
        let what = format!("source {} book {book}: PROPFIND members", self.name);
        let m = self
            .propfind(&url, "1", dav::PROPFIND_MEMBERS, &what, &ctx.metrics)
            .await?;
        let mut hrefs = Vec::with_capacity(m.responses.len());
        for r in m.responses {
            if r.status.is_some_and(|s| s >= 300) {
                continue;
            }
            if let Some(path) = self.member_path(book, &r.href, &what)?
                && !r.props.collection
            {
                hrefs.push(path);
            }
        }
        unique_ids(hrefs.iter(), &what)?;
        ctx.metrics
            .pages
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut collected = Collected::try_new()?;
        // A member deleted between the listing and its multiget (404) is simply not
        // there: a full extract lands what exists.
        self.multiget_into(book, &hrefs, rctx, ctx, &mut collected, 0)
            .await?;
        let (upserts, deletes) = collected.finish(&Default::default())?;
        Ok(Extract {
            mode: SyncMode::Full,
            upserts,
            deletes,
            cursor: token,
        })
    }

    /// The path of a member href of `book`; `None` for the book itself and for a
    /// collection inside it (not a vCard). An href on another origin, or outside the
    /// book, is refused.
    fn member_path(&self, book: &str, href: &str, what: &str) -> Result<Option<String>> {
        let path = self.dav.url(href, what)?.path().to_string();
        if path.trim_end_matches('/') == book.trim_end_matches('/') {
            return Ok(None);
        }
        if path.starts_with(book) && path.ends_with('/') {
            return Ok(None);
        }
        // A member is directly inside the book: `/b/sub/x.vcf` belongs to another
        // collection, and its id would clash with `/b/x.vcf`'s.
        let direct = path
            .strip_prefix(book)
            .is_some_and(|rest| !rest.trim_start_matches('/').contains('/'));
        if !direct || dav::resource_id(&path).is_none() {
            return Err(Error::decode(format!(
                "{what}: the server answered for {path}, which is not a vCard in the address book {book}"
            )));
        }
        Ok(Some(path))
    }

    /// Fetches `hrefs` by `addressbook-multiget`, `multiget_size` at a time and
    /// `concurrency` at once, decoding each answer into `collected` (ranked from `rank`).
    /// Returns the ids of the members the server answered 404 for (gone since listed).
    /// Every href asked must be answered, and nothing else: otherwise the extract fails.
    async fn multiget_into(
        &self,
        book: &str,
        hrefs: &[String],
        rctx: &RecordContext,
        ctx: &RunContext,
        collected: &mut Collected,
        rank: i64,
    ) -> Result<Vec<String>> {
        let url = self.book_url(book)?;
        // Owned chunks: a closure taking borrowed slices is not general enough for the
        // boxed future of `Source::extract`.
        let chunks: Vec<Vec<String>> = hrefs
            .chunks(self.multiget_size)
            .map(<[String]>::to_vec)
            .collect();
        let n = chunks.len();
        let url = &url;
        // In the newest version the book offers: a server that converts (Cyrus) renders
        // a 4.0 card as 3.0 when no version is asked, and drops its inline photo.
        let format = match n {
            0 => None,
            _ => self.dav.address_data_for(book, &ctx.metrics).await?,
        };
        let format = format.as_ref();
        let mut answers = futures::stream::iter(chunks.into_iter().enumerate())
            .map(|(i, chunk)| async move {
                let what = format!(
                    "source {} book {book}: addressbook-multiget {}/{n} ({} hrefs from {})",
                    self.name,
                    i + 1,
                    chunk.len(),
                    chunk[0]
                );
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let body = dav::multiget_body_as(&refs, format);
                let resp = self
                    .dav
                    .read("REPORT", url, "1", &body, &what, &ctx.metrics)
                    .await?;
                let m = multistatus(resp, &what)?;
                self.decode_members(book, &chunk, m, rctx, &what)
            })
            .buffered(self.concurrency);
        let mut i = 0;
        let mut gone = Vec::new();
        while let Some(answer) = answers.next().await {
            let mut answer = answer?;
            if let Some(pb) = &ctx.progress {
                pb.inc((answer.records.len() + answer.gone.len()) as u64);
            }
            ctx.metrics
                .pages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let batch = crate::model::schema::records_to_batch(&answer.records)?;
            collected.add(&batch, Some(rank + i))?;
            gone.append(&mut answer.gone);
            i += 1;
        }
        Ok(gone)
    }

    /// The vCards of a multiget answer as records, and the ids answered 404 (gone since
    /// they were listed). RFC 6352 §8.7: the answer holds a response for every href
    /// asked. One not answered, answered twice, answered without its vCard, or an href
    /// that was not asked fails the answer: landing less would delete contacts (or lose
    /// changes) in silence, landing more would take what the book does not list.
    fn decode_members(
        &self,
        book: &str,
        asked: &[String],
        m: Multistatus,
        rctx: &RecordContext,
        what: &str,
    ) -> Result<Answered> {
        let mut pending: HashMap<String, &str> =
            asked.iter().map(|p| (href_key(p), p.as_str())).collect();
        let mut out = Answered {
            records: Vec::with_capacity(asked.len()),
            gone: Vec::new(),
        };
        for r in m.responses {
            let Some(path) = self.member_path(book, &r.href, what)? else {
                continue;
            };
            if pending.remove(&href_key(&path)).is_none() {
                return Err(Error::decode(format!(
                    "{what}: the server answered for {path}, which was not asked for in this multiget or was answered twice; nothing of the book lands"
                )));
            }
            let gone = r.status == Some(404)
                || (r.props.address_data.is_none() && r.props.etag.is_none() && r.propstat_404);
            if gone {
                out.gone
                    .push(dav::resource_id(&path).unwrap_or_default().to_string());
                continue;
            }
            if let Some(s) = r.status.filter(|s| !(200..300).contains(s)) {
                return Err(Error::decode(format!(
                    "{what}: the server answered {path} with status {s}; nothing of the book lands"
                )));
            }
            let Some(data) = r.props.address_data else {
                return Err(Error::decode(format!(
                    "{what}: the server answered {path} without its address-data; nothing of the book lands"
                )));
            };
            let at = format!("{what}, {path}");
            out.records.push(decode::decode_vcard(
                data,
                &path,
                r.props.etag.as_deref(),
                rctx,
                &at,
            )?);
        }
        if !pending.is_empty() {
            let mut missing: Vec<&str> = pending.into_values().collect();
            missing.sort_unstable();
            let n = missing.len();
            missing.truncate(3);
            return Err(Error::decode(format!(
                "{what}: the server answered {} of the {} hrefs asked (RFC 6352 requires an answer for each); not answered: {}{}; nothing of the book lands",
                asked.len() - n,
                asked.len(),
                missing.join(", "),
                if n > 3 { ", …" } else { "" }
            )));
        }
        Ok(out)
    }

    async fn incremental(
        &self,
        book: &str,
        token: &str,
        rctx: &RecordContext,
        ctx: &RunContext,
    ) -> Result<Extract> {
        let url = self.book_url(book)?;
        let mut token = token.to_string();
        let mut guard = PageGuard::new(MAX_SYNC_PAGES);
        // The request's own token: a page leading back to it is a loop too.
        let _ = guard.follow(&token);
        // path → what the latest page said of it. A later page beats an earlier one:
        // names can be reused. vCards a report carries are decoded and spilled with their
        // page as rank as each page is read, so memory holds paths, not pages.
        let mut changes: HashMap<String, Change> = HashMap::new();
        let mut collected = Collected::try_new()?;
        let mut pages: i64;
        loop {
            let Ok(page) = guard.page() else {
                return Err(Error::decode(format!(
                    "source {} book {book}: more than {MAX_SYNC_PAGES} truncated sync-collection pages; a paging loop or a broken server, stopped",
                    self.name
                )));
            };
            pages = page as i64;
            let what = format!(
                "source {} book {book}: sync-collection page {page}",
                self.name
            );
            let body = dav::sync_collection_body(&token);
            let resp = self
                .dav
                .read("REPORT", &url, "0", &body, &what, &ctx.metrics)
                .await?;
            if dav::is_invalid_sync_token(resp.status, &resp.body) {
                return Err(Error::cursor_expired(format!(
                    "{what}: the server no longer knows the sync-token (HTTP {} {})",
                    resp.status,
                    resp.describe()
                )));
            }
            let m = multistatus(resp, &what)?;
            ctx.metrics
                .pages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let next = m.sync_token.clone().ok_or_else(|| {
                Error::decode(format!(
                    "{what}: the answer has no sync-token; the server does not do RFC 6578 sync"
                ))
            })?;
            let (inline, truncated) =
                self.page_changes(book, m.responses, &what, rctx, &mut changes)?;
            if !inline.is_empty() {
                let batch = crate::model::schema::records_to_batch(&inline)?;
                collected.add(&batch, Some(pages))?;
            }
            if !truncated {
                token = next;
                break;
            }
            // A token seen before (the request's own, or one of an earlier page) means
            // the pages go round: stopped at once, not after the page bound.
            if guard.follow(&next).is_err() {
                return Err(Error::decode(format!(
                    "{what}: a truncated answer (507) whose sync-token was already used in this run; a paging loop, stopped"
                )));
            }
            token = next;
        }
        let what = format!("source {} book {book}: sync-collection", self.name);
        unique_ids(changes.keys(), &what)?;
        let mut deleted: HashSet<String> = HashSet::new();
        let mut fetch = Vec::new();
        for (path, change) in changes {
            match change {
                Change::Deleted => {
                    deleted.insert(dav::resource_id(&path).unwrap_or_default().to_string());
                }
                Change::Fetch => fetch.push(path),
                Change::Read => {}
            }
        }
        fetch.sort_unstable();
        // Fetched versions are newer than any a report carried: ranked after the pages.
        let gone = self
            .multiget_into(book, &fetch, rctx, ctx, &mut collected, pages + 1)
            .await?;
        // A member changed, then deleted before its multiget: the change is a delete.
        deleted.extend(gone);
        let (upserts, deletes) = collected.finish(&deleted)?;
        Ok(Extract {
            mode: SyncMode::Incremental,
            upserts,
            deletes,
            cursor: token,
        })
    }

    /// What one page of a sync report says of each member, into `changes` (a later page
    /// beats an earlier one); the vCards it carries, decoded; and whether the page is
    /// truncated (RFC 6578 §3.6: a 507 on the request-URI).
    fn page_changes(
        &self,
        book: &str,
        responses: Vec<dav::Response>,
        what: &str,
        rctx: &RecordContext,
        changes: &mut HashMap<String, Change>,
    ) -> Result<(Vec<crate::model::schema::ContactRecord>, bool)> {
        let mut truncated = false;
        let mut inline = Vec::new();
        for r in responses {
            let Some(path) = self.member_path(book, &r.href, what)? else {
                let on_book = self.dav.url(&r.href, what)?.path().trim_end_matches('/')
                    == book.trim_end_matches('/');
                truncated |= on_book && r.status == Some(507);
                continue;
            };
            let change = match r.status {
                Some(404) => Change::Deleted,
                Some(s) if !(200..300).contains(&s) => {
                    return Err(Error::decode(format!(
                        "{what}: the member {path} has status {s}"
                    )));
                }
                _ if r.props.collection => continue,
                _ => match r.props.address_data {
                    Some(data) => {
                        let at = format!("{what}, {path}");
                        inline.push(decode::decode_vcard(
                            data,
                            &path,
                            r.props.etag.as_deref(),
                            rctx,
                            &at,
                        )?);
                        Change::Read
                    }
                    None => Change::Fetch,
                },
            };
            changes.insert(path, change);
        }
        Ok((inline, truncated))
    }
}

/// What a sync report said last of a member.
enum Change {
    /// Changed, and the report carried its vCard (decoded and collected already).
    Read,
    /// Changed; its vCard comes by multiget.
    Fetch,
    Deleted,
}

/// One multiget answer: the vCards, and the ids the server said are gone (404).
struct Answered {
    records: Vec<crate::model::schema::ContactRecord>,
    gone: Vec<String>,
}

/// An href's path compared as the resource it names: percent-decoded, so `/b/a%40b.vcf`
/// in the request and `/b/a@b.vcf` in the answer are one resource.
fn href_key(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Refuses two member paths of one book that make one id (`/b/x.vcf` and `/b/x`): one
/// row would land for two contacts and the other would vanish in silence.
fn unique_ids<'a>(paths: impl Iterator<Item = &'a String>, what: &str) -> Result<()> {
    let mut by_id: HashMap<String, &str> = HashMap::new();
    for p in paths {
        let id = href_key(dav::resource_id(p).unwrap_or_default());
        if let Some(other) = by_id.insert(id, p) {
            let (a, b) = if other < p.as_str() {
                (other, p.as_str())
            } else {
                (p.as_str(), other)
            };
            return Err(Error::decode(format!(
                "{what}: the members {a} and {b} have the same resource name, which is the contact id; rename one on the server"
            )));
        }
    }
    Ok(())
}

/// The first value `f` finds in the responses.
fn first<T>(m: &Multistatus, f: impl Fn(&dav::Props) -> Option<T>) -> Option<T> {
    m.responses.iter().find_map(|r| f(&r.props))
}

/// A 207 answer's multistatus; any other status is an error naming the request.
fn multistatus(resp: HttpResponse, what: &str) -> Result<Multistatus> {
    match resp.status {
        207 => dav::parse_multistatus(&resp.body, what),
        403 => Err(Error::auth(format!(
            "{what}: access denied (403 {}); the user may not read this collection",
            resp.describe()
        ))),
        404 => Err(Error::config(format!(
            "{what}: no such collection on the server (404 {}); check base_url and address_books",
            resp.describe()
        ))),
        s => Err(Error::http(
            Some(s),
            format!(
                "{what}: HTTP {s} where a 207 Multi-Status was expected: {}",
                resp.describe()
            ),
        )),
    }
}

impl crate::providers::Source for CardDavSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn accounts(&self) -> Vec<String> {
        CardDavSource::accounts(self)
    }
    fn discover<'a>(&'a self, metrics: &'a Metrics) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(CardDavSource::discover(self, metrics))
    }
    fn account_concurrency(&self) -> usize {
        self.concurrency
    }
    fn extract<'a>(
        &'a self,
        account: &'a str,
        cursor: Option<&'a str>,
        ctx: &'a RunContext,
    ) -> futures::future::BoxFuture<'a, Result<Extract>> {
        Box::pin(CardDavSource::extract(self, account, cursor, ctx))
    }
    fn write_back(&self) -> Option<&dyn crate::providers::WriteBack> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    //! The extract against a scripted server on loopback: the paths real Radicale and
    //! Xandikos never take (a 507-truncated sync report, hrefs to another host, an HTML
    //! answer, an expired token), request by request.

    use super::*;
    use std::sync::{Arc, Mutex};

    /// What the server saw: method, path, Depth, body.
    type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

    /// Serves `answer(method, path, body) -> (status, body)` on loopback.
    async fn serve(
        answer: impl Fn(&str, &str, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> (String, Seen) {
        let seen: Seen = Default::default();
        let log = seen.clone();
        let answer = Arc::new(answer);
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let (log, answer) = (log.clone(), answer.clone());
                async move {
                    let depth = headers
                        .get("depth")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    log.lock().unwrap().push((
                        method.to_string(),
                        uri.path().to_string(),
                        depth,
                        body.clone(),
                    ));
                    let (status, text) = answer(method.as_str(), uri.path(), &body);
                    (axum::http::StatusCode::from_u16(status).unwrap(), text)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    fn source(base: &str, settings: &str) -> CardDavSource {
        let t = format!(
            "[lake]\nurl = \"/tmp/lake\"\n[[sources]]\nname = \"s\"\nprovider = \"carddav\"\nbase_url = \"{base}\"\nmax_retries = 0\nauth = {{ kind = \"bearer\", token_file = \"tok\" }}\n{settings}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "sekrit-token-123\n").unwrap();
        let p = crate::config::Pipeline::parse(&t, &dir.path().join("p.toml")).unwrap();
        let http = HttpClient::try_new(
            std::time::Duration::from_secs(5),
            crate::http::RetryPolicy {
                max_retries: 0,
                ..Default::default()
            },
        )
        .unwrap();
        CardDavSource::try_new(&p.sources[0], http, dir.path()).unwrap()
    }

    fn ctx() -> RunContext {
        RunContext {
            run_id: "r".into(),
            synced_at_us: 1,
            metrics: Default::default(),
            progress: None,
        }
    }

    fn ms(inner: &str) -> String {
        format!(
            r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav">{inner}</d:multistatus>"#
        )
    }

    fn member(href: &str, etag: &str) -> String {
        format!(
            "<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:getetag>\"{etag}\"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        )
    }

    fn card(href: &str, name: &str) -> String {
        format!(
            "<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:getetag>\"e-{name}\"</d:getetag><c:address-data>BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nEND:VCARD\r\n</c:address-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        )
    }

    /// The multiget answer for whatever hrefs were asked, each named after its id.
    fn multiget(body: &str) -> String {
        let mut out = String::new();
        for part in body.split("<d:href>").skip(1) {
            let href = part.split("</d:href>").next().unwrap();
            let id = dav::resource_id(href).unwrap();
            out.push_str(&card(href, id));
        }
        ms(&out)
    }

    fn ids(e: Extract) -> Vec<String> {
        use arrow::array::AsArray;
        let mut ids: Vec<String> = e
            .upserts
            .into_batches()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        ids
    }

    /// A full extract reads the token before the listing, then fetches the members in
    /// multiget chunks of `multiget_size`, each REPORT on the book with Depth 1, and
    /// sends the bearer token.
    #[tokio::test]
    async fn full_reads_the_token_first_then_multigets_in_chunks() {
        let (base, seen) = serve(|m, _, body| match m {
            "PROPFIND" if body.contains("sync-token") => (
                207,
                ms("<d:response><d:href>/b/</d:href><d:propstat><d:prop><d:sync-token>tok-1</d:sync-token></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"),
            ),
            "PROPFIND" => (
                207,
                ms(&format!(
                    "<d:response><d:href>/b/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>{}{}{}",
                    member("/b/a.vcf", "1"),
                    member("/b/c.vcf", "2"),
                    member("/b/d%C3%A9.vcf", "3")
                )),
            ),
            "REPORT" => (207, multiget(body)),
            _ => (400, String::new()),
        })
        .await;
        let s = source(
            &base,
            "address_books = [\"/b/\"]\nmultiget_size = 2\nconcurrency = 2",
        );
        let e = s.extract("b", None, &ctx()).await.unwrap();
        assert_eq!(e.mode, SyncMode::Full);
        assert_eq!(e.cursor, "tok-1");
        let log = seen.lock().unwrap().clone();
        assert_eq!(log[0].0, "PROPFIND");
        assert!(log[0].3.contains("sync-token") && log[0].2 == "0");
        assert_eq!((log[1].0.as_str(), log[1].2.as_str()), ("PROPFIND", "1"));
        let reports: Vec<_> = log.iter().filter(|l| l.0 == "REPORT").collect();
        assert_eq!(reports.len(), 2, "3 members in chunks of 2");
        assert!(
            reports
                .iter()
                .all(|r| r.1 == "/b/" && r.3.contains("addressbook-multiget"))
        );
        assert_eq!(ids(e), vec!["a", "c", "d%C3%A9"]);
    }

    /// A sync report truncated with 507 on the collection is read again from the new
    /// token until an untruncated page; a later page's word on a member wins (deleted,
    /// then created again under the same name); 404 members are deletes; the changed ones
    /// come by multiget; the cursor is the last page's token.
    #[tokio::test]
    async fn incremental_pages_through_507_and_reads_deletes() {
        let (base, seen) = serve(|m, _, body| match m {
            "REPORT" if body.contains("<d:sync-token>tok-1<") => (
                207,
                ms(&format!(
                    "{}<d:response><d:href>/b/gone.vcf</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response><d:response><d:href>/b/back.vcf</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response><d:response><d:href>/b/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response><d:sync-token>tok-2</d:sync-token>",
                    member("/b/new.vcf", "1")
                )),
            ),
            "REPORT" if body.contains("<d:sync-token>tok-2<") => (
                207,
                ms(&format!("{}<d:sync-token>tok-3</d:sync-token>", member("/b/back.vcf", "2"))),
            ),
            "REPORT" if body.contains("addressbook-multiget") => (207, multiget(body)),
            _ => (400, String::new()),
        })
        .await;
        let s = source(&base, "address_books = [\"/b/\"]");
        let e = s.extract("b", Some("tok-1"), &ctx()).await.unwrap();
        assert_eq!(e.mode, SyncMode::Incremental);
        assert_eq!(e.cursor, "tok-3");
        assert_eq!(e.deletes, vec!["gone".to_string()]);
        assert_eq!(ids(e), vec!["back", "new"]);
        let n = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.0 == "REPORT")
            .count();
        assert_eq!(n, 3, "two sync pages and one multiget");
    }

    /// A 507 that hands back the same token would page forever: stopped.
    #[tokio::test]
    async fn a_507_without_progress_is_a_loop() {
        let (base, _) = serve(|_, _, _| {
            (
                207,
                ms("<d:response><d:href>/b/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response><d:sync-token>tok-1</d:sync-token>"),
            )
        })
        .await;
        let s = source(&base, "address_books = [\"/b/\"]");
        let e = s.extract("b", Some("tok-1"), &ctx()).await.unwrap_err();
        assert!(e.to_string().contains("paging loop"), "{e}");
    }

    /// The token's end, as Radicale (403) and Xandikos (412) say it, is CursorExpired;
    /// an unrelated 403 is not.
    #[tokio::test]
    async fn an_unknown_token_is_an_expired_cursor() {
        for (status, body) in [
            (
                403,
                "<?xml version='1.0'?><error xmlns=\"DAV:\"><valid-sync-token /></error>",
            ),
            (
                412,
                "<ns0:error xmlns:ns0=\"DAV:\"><ns0:valid-sync-token /><ns0:responsedescription>Requested sync token x is invalid</ns0:responsedescription></ns0:error>",
            ),
            (
                409,
                "<D:error xmlns:D=\"DAV:\"><D:valid-sync-token/></D:error>",
            ),
        ] {
            let (base, _) = serve(move |_, _, _| (status, body.to_string())).await;
            let s = source(&base, "address_books = [\"/b/\"]");
            let e = s.extract("b", Some("old"), &ctx()).await.unwrap_err();
            assert!(matches!(e, Error::CursorExpired { .. }), "{status}: {e}");
            assert!(e.to_string().contains("source s book /b/"), "{e}");
        }
        let (base, _) = serve(|_, _, _| (403, "Forbidden".into())).await;
        let s = source(&base, "address_books = [\"/b/\"]");
        let e = s.extract("b", Some("old"), &ctx()).await.unwrap_err();
        assert!(matches!(e, Error::Auth { .. }), "{e}");
    }

    /// An href on another host is refused before any request goes there, naming the
    /// source, the book and the href; so is one outside the book; and an HTML page
    /// where a multistatus belongs.
    #[tokio::test]
    async fn hostile_answers_stop_the_extract() {
        for (listing, words) in [
            (
                member("http://evil.example/b/x.vcf", "1"),
                vec![
                    "source s book /b/",
                    "http://evil.example/b/x.vcf",
                    "outside",
                ],
            ),
            (
                member("/other/x.vcf", "1"),
                vec!["/other/x.vcf", "not a vCard in the address book /b/"],
            ),
        ] {
            let listing = ms(&listing);
            let (base, seen) = serve(move |m, _, body| match m {
                "PROPFIND" if body.contains("sync-token") => (207, ms("")),
                "PROPFIND" => (207, listing.clone()),
                _ => (207, multiget(body)),
            })
            .await;
            let s = source(&base, "address_books = [\"/b/\"]");
            let e = s.extract("b", None, &ctx()).await.unwrap_err().to_string();
            for w in words {
                assert!(e.contains(w), "{w} not in {e}");
            }
            assert!(!e.contains("sekrit"), "{e}");
            assert!(seen.lock().unwrap().iter().all(|l| l.0 != "REPORT"));
        }
        let (base, _) = serve(|_, _, _| {
            (
                200,
                "<html><head><title>Sign in</title></head></html>".into(),
            )
        })
        .await;
        let s = source(&base, "address_books = [\"/b/\"]");
        let e = s.extract("b", None, &ctx()).await.unwrap_err().to_string();
        assert!(
            e.contains("HTTP 200 where a 207") && e.contains("Sign in"),
            "{e}"
        );
    }

    /// Discovery: principal on base_url, its home set, the address books there (not the
    /// other collections).
    #[tokio::test]
    async fn discovery_finds_the_address_books() {
        let (base, _) = serve(|_, path, body| {
            let r = |href: &str, prop: &str| {
                format!("<d:response><d:href>{href}</d:href><d:propstat><d:prop>{prop}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>")
            };
            match path {
                "/" if body.contains("current-user-principal") => (
                    207,
                    ms(&r("/", "<d:current-user-principal><d:href>/p/alice/</d:href></d:current-user-principal>")),
                ),
                "/p/alice/" => (
                    207,
                    ms(&r("/p/alice/", "<c:addressbook-home-set><d:href>/h/alice/</d:href></c:addressbook-home-set>")),
                ),
                "/h/alice/" => (
                    207,
                    ms(&format!(
                        "{}{}{}",
                        r("/h/alice/", "<d:resourcetype><d:collection/></d:resourcetype>"),
                        r("/h/alice/work/", "<d:resourcetype><d:collection/><c:addressbook/></d:resourcetype>"),
                        r("/h/alice/cal/", "<d:resourcetype><d:collection/></d:resourcetype>"),
                    )),
                ),
                _ => (404, String::new()),
            }
        })
        .await;
        let s = source(&base, "");
        assert!(crate::providers::Source::accounts(&s).is_empty());
        crate::providers::Source::discover(&s, &Metrics::default())
            .await
            .unwrap();
        assert_eq!(crate::providers::Source::accounts(&s), vec!["h.alice.work"]);
        assert_eq!(s.books(), vec!["/h/alice/work/"]);
    }
}
