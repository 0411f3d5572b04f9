//! WebDAV and CardDAV on the wire: the request bodies (PROPFIND, `addressbook-multiget`,
//! `sync-collection`), a reader of `207 Multi-Status` answers, and [`DavClient`], which
//! sends requests with the source's credentials, only ever to `base_url`'s origin.
//!
//! The reader is namespace-aware (servers pick their own prefixes: Radicale writes `D:`/`C:`
//! or `ns0:`, Xandikos `ns0:`/`ns1:`), keeps only the properties the provider uses, and
//! refuses what is not a multistatus (an HTML login page, a truncated body) with an error
//! naming the request.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::error::{Context, Error, Kind, Result};
use crate::http::{HttpClient, HttpResponse, Metrics};
use crate::secret::Secret;

/// The WebDAV namespace.
pub const NS_DAV: &[u8] = b"DAV:";
/// The CardDAV namespace (RFC 6352).
pub const NS_CARDDAV: &[u8] = b"urn:ietf:params:xml:ns:carddav";
/// Largest answer read: a PROPFIND of a 100,000-contact book is about 25 MiB, a multiget
/// of `multiget_size` vCards with photos far less than this.
pub const MAX_BODY: usize = 128 << 20;

/// PROPFIND (depth 0) for the principal of the authenticated user.
pub const PROPFIND_PRINCIPAL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>"#;

/// PROPFIND (depth 0) for a principal's address-book home set.
pub const PROPFIND_HOME: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><c:addressbook-home-set/></d:prop></d:propfind>"#;

/// PROPFIND (depth 1) for the collections of a home set.
pub const PROPFIND_COLLECTIONS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop><d:resourcetype/><d:displayname/></d:prop></d:propfind>"#;

/// PROPFIND (depth 0) for a collection's sync-token.
pub const PROPFIND_SYNC_TOKEN: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop><d:sync-token/><d:resourcetype/></d:prop></d:propfind>"#;

/// PROPFIND (depth 1) for the members of an address book and their ETags.
pub const PROPFIND_MEMBERS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/><d:resourcetype/></d:prop></d:propfind>"#;

/// An `addressbook-multiget` REPORT for `hrefs` (as the server sent them).
pub fn multiget_body(hrefs: &[&str]) -> String {
    let mut b = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?>
<c:addressbook-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><c:address-data/></d:prop>"#,
    );
    for h in hrefs {
        b.push_str("<d:href>");
        b.push_str(&quick_xml::escape::escape(*h));
        b.push_str("</d:href>");
    }
    b.push_str("</c:addressbook-multiget>");
    b
}

/// PROPFIND (depth 0) for the vCard formats an address book offers (RFC 6352 §6.2.2).
pub const PROPFIND_ADDRESS_DATA: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><c:supported-address-data/></d:prop></d:propfind>"#;

/// A vCard format a server offers in `supported-address-data`: an `address-data-type`'s
/// content type and version (RFC 6352's defaults when absent: `text/vcard`, 3.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressDataType {
    /// The media type, as advertised (`text/vcard`).
    pub content_type: String,
    /// The vCard version (`3.0`, `4.0`).
    pub version: String,
}

impl AddressDataType {
    /// The `Accept` header value that asks a GET for this format.
    pub fn accept(&self) -> String {
        format!("{}; version={}", self.content_type, self.version)
    }

    /// The `address-data` element that asks a REPORT for this format.
    fn element(&self) -> String {
        format!(
            r#"<c:address-data content-type="{}" version="{}"/>"#,
            quick_xml::escape::escape(self.content_type.as_str()),
            quick_xml::escape::escape(self.version.as_str())
        )
    }
}

/// An answer that is not a readable multistatus: `why` (where the XML reader stopped),
/// what the body says, and the reader's error as the source.
fn unreadable(
    what: &str,
    body: &[u8],
    why: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::with_source(
        Kind::Decode,
        format!(
            "{what}: the answer is not a readable WebDAV multistatus ({why}): {}",
            crate::http::describe_body(body)
        ),
        e,
    )
}

/// The formats of a PROPFIND answer's `supported-address-data`, in order. Each child
/// element counts, whatever its name: RFC 6352 names it `address-data-type`; Xandikos
/// 0.4 writes `content-type`.
pub fn supported_address_data(body: &[u8], what: &str) -> Result<Vec<AddressDataType>> {
    let bad_xml = |why: String, e: quick_xml::Error| unreadable(what, body, &why, e);
    let mut r = NsReader::from_reader(body);
    let mut depth_in = None::<usize>;
    let mut depth = 0usize;
    let mut out = Vec::new();
    loop {
        let ev = r
            .read_event()
            .map_err(|e| bad_xml(format!("XML error at byte {}", r.buffer_position()), e))?;
        match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let (ns, local) = r.resolve_element(e.name());
                let supported = matches!(&ns, ResolveResult::Bound(n) if n.as_ref() == NS_CARDDAV)
                    && local.as_ref() == b"supported-address-data";
                if depth_in.is_some_and(|d| depth == d + 1) {
                    let mut t = AddressDataType {
                        content_type: "text/vcard".into(),
                        version: "3.0".into(),
                    };
                    for a in e.attributes().flatten() {
                        let v = a
                            .unescape_value()
                            .map_err(|e| bad_xml("an attribute".into(), e))?
                            .trim()
                            .to_string();
                        match a.key.local_name().as_ref() {
                            b"content-type" => t.content_type = v,
                            b"version" => t.version = v,
                            _ => {}
                        }
                    }
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
                if matches!(ev, Event::Start(_)) {
                    if supported && depth_in.is_none() {
                        depth_in = Some(depth);
                    }
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Error::decode(format!(
                            "{what}: the answer is not a readable WebDAV multistatus (elements nested deeper than {MAX_DEPTH})"
                        )));
                    }
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth_in == Some(depth) {
                    depth_in = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The format to ask an address book for: vCard 4.0 when it is offered (a server that
/// converts, as Cyrus does, loses data converting 4.0 down to 3.0, never the other way),
/// else the newest `text/vcard` offered; `None` when the server advertises none (the
/// request then names no version, as before).
pub fn preferred_address_data(offered: &[AddressDataType]) -> Option<AddressDataType> {
    vcard_versions(offered).pop()
}

/// The `text/vcard` formats of `offered`, oldest version first, each version once.
pub fn vcard_versions(offered: &[AddressDataType]) -> Vec<AddressDataType> {
    let number = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').unwrap_or((v, "0"));
        (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
    };
    let mut out: Vec<AddressDataType> = offered
        .iter()
        .filter(|t| {
            let ct = t.content_type.to_ascii_lowercase();
            ct == "text/vcard" || ct.starts_with("text/vcard;")
        })
        .cloned()
        .collect();
    out.sort_by_key(|t| number(&t.version));
    out.dedup_by_key(|t| number(&t.version));
    out
}

/// An `addressbook-multiget` REPORT for `hrefs` that asks for the vCards in `format`
/// (`None`: as [`multiget_body`], no format named).
pub fn multiget_body_as(hrefs: &[&str], format: Option<&AddressDataType>) -> String {
    let b = multiget_body(hrefs);
    match format {
        Some(f) => b.replacen("<c:address-data/>", &f.element(), 1),
        None => b,
    }
}

/// A `sync-collection` REPORT (RFC 6578) from `token` (empty: the initial sync), level 1,
/// asking for ETags only (the vCards come by multiget: not every server sends
/// `address-data` in a sync report, and those that do are read as well).
pub fn sync_collection_body(token: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<d:sync-collection xmlns:d="DAV:"><d:sync-token>{}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#,
        quick_xml::escape::escape(token)
    )
}

/// The properties of one `<response>` found in its 2xx `<propstat>`s.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Props {
    /// `DAV:getetag`, as sent (with its quotes).
    pub etag: Option<String>,
    /// `CARDDAV:address-data`: the vCard text.
    pub address_data: Option<String>,
    /// `DAV:sync-token`.
    pub sync_token: Option<String>,
    /// `DAV:resourcetype` has `DAV:collection`.
    pub collection: bool,
    /// `DAV:resourcetype` has `CARDDAV:addressbook`.
    pub addressbook: bool,
    /// `DAV:current-user-principal`'s href.
    pub principal: Option<String>,
    /// `CARDDAV:addressbook-home-set`'s hrefs.
    pub home_sets: Vec<String>,
    /// `DAV:displayname`.
    pub displayname: Option<String>,
}

/// One `<response>` of a multistatus.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Response {
    /// Its `<href>` (the first, as sent).
    pub href: String,
    /// Its own `<status>` (a sync report's 404 for a deleted member, 507 for truncation).
    pub status: Option<u16>,
    /// A `<propstat>` said 404: the properties asked are not there (some servers answer a
    /// multiget for a resource that is gone this way instead of with a `<status>`).
    pub propstat_404: bool,
    /// The properties found.
    pub props: Props,
}

/// A `207 Multi-Status` answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Multistatus {
    /// The responses, in order.
    pub responses: Vec<Response>,
    /// The top-level `<sync-token>` of a sync report.
    pub sync_token: Option<String>,
}

/// The elements the reader acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Multistatus,
    Response,
    Href,
    Status,
    Propstat,
    Prop,
    Getetag,
    AddressData,
    SyncToken,
    Resourcetype,
    Collection,
    Addressbook,
    Principal,
    HomeSet,
    Displayname,
    Other,
}

fn tag(ns: &ResolveResult, local: &[u8]) -> Tag {
    let ns = match ns {
        ResolveResult::Bound(n) => n.as_ref(),
        _ => b"",
    };
    match (ns, local) {
        (NS_DAV, b"multistatus") => Tag::Multistatus,
        (NS_DAV, b"response") => Tag::Response,
        (NS_DAV, b"href") => Tag::Href,
        (NS_DAV, b"status") => Tag::Status,
        (NS_DAV, b"propstat") => Tag::Propstat,
        (NS_DAV, b"prop") => Tag::Prop,
        (NS_DAV, b"getetag") => Tag::Getetag,
        (NS_DAV, b"sync-token") => Tag::SyncToken,
        (NS_DAV, b"resourcetype") => Tag::Resourcetype,
        (NS_DAV, b"collection") => Tag::Collection,
        (NS_DAV, b"current-user-principal") => Tag::Principal,
        (NS_DAV, b"displayname") => Tag::Displayname,
        (NS_CARDDAV, b"address-data") => Tag::AddressData,
        (NS_CARDDAV, b"addressbook") => Tag::Addressbook,
        (NS_CARDDAV, b"addressbook-home-set") => Tag::HomeSet,
        _ => Tag::Other,
    }
}

/// The code of a `<status>` line (`HTTP/1.1 404 Not Found` → 404).
fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How deep elements may nest in an answer: a multistatus is 6 levels deep; the limit
/// stops a hostile answer long before quick-xml's 16-bit nesting counter overflows.
const MAX_DEPTH: usize = 256;

/// Reads a `207 Multi-Status` body. `what` names the request in errors.
pub fn parse_multistatus(body: &[u8], what: &str) -> Result<Multistatus> {
    let bad = |why: String| {
        Error::decode(format!(
            "{what}: the answer is not a readable WebDAV multistatus ({why}): {}",
            crate::http::describe_body(body)
        ))
    };
    let bad_xml = |why: String, e: quick_xml::Error| unreadable(what, body, &why, e);
    let mut r = NsReader::from_reader(body);
    let mut stack: Vec<Tag> = Vec::new();
    let mut text = String::new();
    let mut out = Multistatus::default();
    let mut response = Response::default();
    let mut propstat = (Props::default(), None::<u16>);
    let mut root_seen = false;
    let mut done = false;
    loop {
        let ev = r
            .read_event()
            .map_err(|e| bad_xml(format!("XML error at byte {}", r.buffer_position()), e))?;
        let (start, end) = match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let (ns, local) = r.resolve_element(e.name());
                let t = tag(&ns, local.as_ref());
                (Some(t), matches!(ev, Event::Empty(_)))
            }
            Event::End(_) => (None, true),
            Event::Text(t) => {
                text.push_str(&t.decode().map_err(|e| bad_xml("a text".into(), e.into()))?);
                continue;
            }
            Event::CData(t) => {
                text.push_str(&t.decode().map_err(|e| bad_xml("a text".into(), e.into()))?);
                continue;
            }
            Event::GeneralRef(g) => {
                text.push(crate::xml::reference_char(g).map_err(bad)?);
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        if let Some(t) = start {
            if !root_seen {
                if t != Tag::Multistatus {
                    return Err(bad("its root element is not DAV:multistatus".into()));
                }
                root_seen = true;
            }
            if done {
                return Err(bad("content after the root element".into()));
            }
            stack.push(t);
            text.clear();
            if stack.len() > MAX_DEPTH {
                return Err(bad(format!("elements nested deeper than {MAX_DEPTH}")));
            }
        }
        if !end {
            continue;
        }
        let Some(t) = stack.pop() else {
            return Err(bad("an end tag without a start".into()));
        };
        let parent = stack.last().copied();
        let value = std::mem::take(&mut text);
        match (t, parent) {
            (Tag::Href, Some(Tag::Response)) if response.href.is_empty() => {
                response.href = value.trim().to_string()
            }
            (Tag::Href, Some(Tag::Principal)) => propstat.0.principal = Some(value.trim().into()),
            (Tag::Href, Some(Tag::HomeSet)) => propstat.0.home_sets.push(value.trim().into()),
            (Tag::Status, Some(Tag::Response)) => response.status = status_code(&value),
            (Tag::Status, Some(Tag::Propstat)) => propstat.1 = status_code(&value),
            (Tag::Getetag, Some(Tag::Prop)) => propstat.0.etag = Some(value.trim().into()),
            (Tag::AddressData, Some(Tag::Prop)) => propstat.0.address_data = Some(value),
            (Tag::SyncToken, Some(Tag::Prop)) => propstat.0.sync_token = Some(value.trim().into()),
            (Tag::SyncToken, Some(Tag::Multistatus)) => out.sync_token = Some(value.trim().into()),
            (Tag::Displayname, Some(Tag::Prop)) => propstat.0.displayname = Some(value),
            (Tag::Collection, Some(Tag::Resourcetype)) => propstat.0.collection = true,
            (Tag::Addressbook, Some(Tag::Resourcetype)) => propstat.0.addressbook = true,
            (Tag::Propstat, _) => {
                let (props, status) = std::mem::take(&mut propstat);
                // Properties of a 404 propstat are ones the server does not have.
                if status.is_none_or(|s| (200..300).contains(&s)) {
                    merge(&mut response.props, props);
                }
                response.propstat_404 |= status == Some(404);
            }
            (Tag::Response, _) => {
                if response.href.is_empty() {
                    return Err(bad("a response without an href".into()));
                }
                out.responses.push(std::mem::take(&mut response));
            }
            (Tag::Multistatus, None) => done = true,
            _ => {}
        }
    }
    if !root_seen {
        return Err(bad("it is empty or has no XML element".into()));
    }
    if !done {
        return Err(bad("it ends before </multistatus>: truncated".into()));
    }
    Ok(out)
}

fn merge(into: &mut Props, from: Props) {
    into.etag = from.etag.or(into.etag.take());
    into.address_data = from.address_data.or(into.address_data.take());
    into.sync_token = from.sync_token.or(into.sync_token.take());
    into.collection |= from.collection;
    into.addressbook |= from.addressbook;
    into.principal = from.principal.or(into.principal.take());
    into.home_sets.extend(from.home_sets);
    into.displayname = from.displayname.or(into.displayname.take());
}

/// Whether an error answer to a `sync-collection` REPORT says the token is no longer
/// valid: RFC 6578's `DAV:valid-sync-token` precondition (403 or 409), or what servers
/// send instead for a token they do not know (Radicale: 403 or 409 with the element;
/// others a bare 400, 403, 409, 410 or 412 naming the token).
pub fn is_invalid_sync_token(status: u16, body: &[u8]) -> bool {
    if !matches!(status, 400 | 403 | 409 | 410 | 412) {
        return false;
    }
    let t = String::from_utf8_lossy(body).to_ascii_lowercase();
    t.contains("valid-sync-token")
        || t.contains("sync-token")
        || t.contains("sync token")
        || status == 410
}

/// The path of an href (a path, or an absolute URL on the origin of `base`), with the
/// origin checked: an href elsewhere is refused, as credentials go only to `base_url`.
pub fn href_url(base: &url::Url, href: &str, what: &str) -> Result<url::Url> {
    crate::http::check_link(base, href, what)
}

/// The resource name of a member href (its last path segment, percent-encoded as sent),
/// without a `.vcf` ending. `None` for a collection href (ending in `/`), and for a member
/// named `.vcf` alone, whose id would be empty.
pub fn resource_id(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
    Some(name.strip_suffix(".vcf").unwrap_or(name)).filter(|id| !id.is_empty())
}

/// How a CardDAV server is asked: its origin, the credentials, and the shared HTTP
/// client (retries, timeouts, body cap). Every URL it sends to is checked against
/// `base_url`'s origin first. The write-back uses it for PUT and DELETE.
#[derive(Clone)]
pub struct DavClient {
    /// The source's name, for errors.
    pub source: String,
    /// `base_url`.
    pub base: url::Url,
    /// The `Authorization` header value, when the server wants one.
    authorization: Option<Secret>,
    http: HttpClient,
    /// The vCard formats each address book (by path) offers, learnt once.
    formats: Formats,
}

/// What each address book was found to offer: [`vcard_versions`] of its
/// `supported-address-data`, asked once per book and client.
type Formats = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<
            String,
            std::sync::Arc<tokio::sync::OnceCell<Vec<AddressDataType>>>,
        >,
    >,
>;

/// A precondition of a write.
#[derive(Debug, Clone, Copy)]
pub enum Precondition<'a> {
    /// `If-None-Match: *`: only create.
    Create,
    /// `If-Match: <etag>`: only replace or delete this version.
    Match(&'a str),
    /// No condition (`--force`).
    None,
}

impl DavClient {
    /// A client for `base`, sending `authorization` (a whole header value) if given.
    pub fn new(
        source: &str,
        base: url::Url,
        authorization: Option<Secret>,
        http: HttpClient,
    ) -> DavClient {
        DavClient {
            source: source.to_string(),
            base,
            authorization,
            http,
            formats: Default::default(),
        }
    }

    /// The URL of an href the server sent (or a configured path), refused when it leaves
    /// `base_url`'s origin.
    pub fn url(&self, href: &str, what: &str) -> Result<url::Url> {
        href_url(&self.base, href, what)
    }

    fn build(
        &self,
        c: &reqwest::Client,
        method: &reqwest::Method,
        url: &url::Url,
        headers: &[(&'static str, String)],
        body: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut rb = c.request(method.clone(), url.clone());
        if let Some(a) = &self.authorization {
            rb = rb.header(reqwest::header::AUTHORIZATION, a.expose());
        }
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        rb
    }

    /// Sends a read (PROPFIND, REPORT), retried on transient failures. `401` is an
    /// authentication error; every other status is the caller's.
    pub async fn read(
        &self,
        method: &str,
        url: &url::Url,
        depth: &str,
        body: &str,
        what: &str,
        metrics: &Metrics,
    ) -> Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .with_context(Kind::Other, || format!("{what}: bad method {method}"))?;
        let headers = [
            ("Depth", depth.to_string()),
            ("Content-Type", "application/xml; charset=utf-8".to_string()),
        ];
        let resp = self
            .http
            .send(what, metrics, MAX_BODY, |c| {
                self.build(c, &method, url, &headers, Some(body))
            })
            .await?;
        self.check_auth(resp, what)
    }

    fn check_auth(&self, resp: HttpResponse, what: &str) -> Result<HttpResponse> {
        if resp.status == 401 {
            return Err(Error::auth(format!(
                "{what}: the server refused the credentials (401 {}); check auth's username and password (an app-specific password for iCloud and Fastmail) or token",
                resp.describe()
            )));
        }
        Ok(resp)
    }

    /// PUTs a vCard to `href` under `cond`. Sent once unless the server certainly did not
    /// act on it (see [`HttpClient::send_write`]); the status is the caller's (412: the
    /// precondition failed).
    pub async fn put(
        &self,
        href: &str,
        vcard: &str,
        cond: Precondition<'_>,
        what: &str,
        metrics: &Metrics,
    ) -> Result<HttpResponse> {
        let url = self.url(href, what)?;
        let mut headers = vec![("Content-Type", "text/vcard; charset=utf-8".to_string())];
        headers.extend(precondition(cond));
        let resp = self
            .http
            .send_write(what, metrics, MAX_BODY, |c| {
                self.build(c, &reqwest::Method::PUT, &url, &headers, Some(vcard))
            })
            .await?;
        self.check_auth(resp, what)
    }

    /// DELETEs `href` under `cond`; the status is the caller's.
    pub async fn delete(
        &self,
        href: &str,
        cond: Precondition<'_>,
        what: &str,
        metrics: &Metrics,
    ) -> Result<HttpResponse> {
        let url = self.url(href, what)?;
        let headers: Vec<_> = precondition(cond).into_iter().collect();
        let resp = self
            .http
            .send_write(what, metrics, MAX_BODY, |c| {
                self.build(c, &reqwest::Method::DELETE, &url, &headers, None)
            })
            .await?;
        self.check_auth(resp, what)
    }

    /// GETs one vCard (a write-back reads the landed version before a merge); the
    /// status is the caller's.
    pub async fn get(&self, href: &str, what: &str, metrics: &Metrics) -> Result<HttpResponse> {
        let url = self.url(href, what)?;
        let resp = self
            .http
            .send(what, metrics, MAX_BODY, |c| {
                self.build(c, &reqwest::Method::GET, &url, &[], None)
            })
            .await?;
        self.check_auth(resp, what)
    }
}

impl DavClient {
    /// The vCard format to ask the address book `book` (a path) for (see
    /// [`preferred_address_data`]). `None` when the server advertises none, or answers
    /// the PROPFIND with anything but a multistatus: the requests then name no format,
    /// as they always did.
    pub async fn address_data_for(
        &self,
        book: &str,
        metrics: &Metrics,
    ) -> Result<Option<AddressDataType>> {
        Ok(self.address_data_offered(book, metrics).await?.pop())
    }

    /// The `text/vcard` formats the address book `book` (a path) offers, oldest version
    /// first ([`vcard_versions`]), by a PROPFIND of its `supported-address-data` the
    /// first time; empty when it advertises none or answers with no multistatus.
    pub async fn address_data_offered(
        &self,
        book: &str,
        metrics: &Metrics,
    ) -> Result<Vec<AddressDataType>> {
        let cell = self
            .formats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(book.to_string())
            .or_default()
            .clone();
        let found = cell
            .get_or_try_init(|| async {
                let what = format!(
                    "source {}: address book {book}: PROPFIND supported-address-data",
                    self.source
                );
                let url = self.url(book, &what)?;
                let resp = self
                    .read("PROPFIND", &url, "0", PROPFIND_ADDRESS_DATA, &what, metrics)
                    .await?;
                if resp.status != 207 {
                    return Ok::<_, Error>(Vec::new());
                }
                Ok(vcard_versions(&supported_address_data(&resp.body, &what)?))
            })
            .await?;
        Ok(found.clone())
    }

    /// GETs one vCard in `format` (`Accept: text/vcard; version=…`; `None`: no `Accept`,
    /// as [`DavClient::get`]); the status is the caller's.
    pub async fn get_as(
        &self,
        href: &str,
        format: Option<&AddressDataType>,
        what: &str,
        metrics: &Metrics,
    ) -> Result<HttpResponse> {
        let url = self.url(href, what)?;
        let headers: Vec<(&'static str, String)> =
            format.map(|f| ("Accept", f.accept())).into_iter().collect();
        let resp = self
            .http
            .send(what, metrics, MAX_BODY, |c| {
                self.build(c, &reqwest::Method::GET, &url, &headers, None)
            })
            .await?;
        self.check_auth(resp, what)
    }
}

fn precondition(cond: Precondition<'_>) -> Option<(&'static str, String)> {
    match cond {
        Precondition::Create => Some(("If-None-Match", "*".to_string())),
        Precondition::Match(etag) => Some(("If-Match", etag.to_string())),
        Precondition::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/carddav/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Prefixes are the server's choice; 404 propstats carry no properties; a 404
    /// response and the top-level sync-token of a sync report are kept; entities and
    /// CDATA are text.
    #[test]
    fn multistatus_reads_namespaces_not_prefixes() {
        let body = br#"<?xml version="1.0"?>
<x:multistatus xmlns:x="DAV:" xmlns:y="urn:ietf:params:xml:ns:carddav">
 <x:response><x:href>/a/b/1.vcf</x:href>
  <x:propstat><x:prop><x:getetag>"e&amp;1"</x:getetag><y:address-data><![CDATA[BEGIN:VCARD
END:VCARD
]]></y:address-data></x:prop><x:status>HTTP/1.1 200 OK</x:status></x:propstat>
  <x:propstat><x:prop><x:displayname>not here</x:displayname></x:prop><x:status>HTTP/1.1 404 Not Found</x:status></x:propstat>
 </x:response>
 <x:response><x:href>/a/b/2.vcf</x:href><x:status>HTTP/1.1 404 Not Found</x:status></x:response>
 <x:sync-token>tok-2</x:sync-token>
</x:multistatus>"#;
        let m = parse_multistatus(body, "t").unwrap();
        assert_eq!(m.sync_token.as_deref(), Some("tok-2"));
        assert_eq!(m.responses.len(), 2);
        let r = &m.responses[0];
        assert_eq!(r.props.etag.as_deref(), Some("\"e&1\""));
        assert_eq!(
            r.props.address_data.as_deref(),
            Some("BEGIN:VCARD\nEND:VCARD\n")
        );
        assert_eq!(r.props.displayname, None);
        assert_eq!(
            (m.responses[1].href.as_str(), m.responses[1].status),
            ("/a/b/2.vcf", Some(404))
        );
    }

    /// An HTML page, a truncated body, an empty one, another root and garbage after the
    /// root are refused naming the request.
    #[test]
    fn hostile_answers_are_refused() {
        for (body, why) in [
            (
                &b"<html><head><title>Login required</title></head><body>x</body></html>"[..],
                "not DAV:multistatus",
            ),
            (
                &b"<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/a</d:href>"[..],
                "truncated",
            ),
            (&b""[..], "empty"),
            (&b"   "[..], "empty"),
            (
                &b"<d:multistatus xmlns:d=\"DAV:\"><d:response></d:response></d:multistatus>"[..],
                "without an href",
            ),
            (
                &b"<d:multistatus xmlns:d=\"DAV:\"></d:multistatus><d:x xmlns:d=\"DAV:\"/>"[..],
                "after the root",
            ),
            (
                &b"<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>&bogus;</d:href></d:response></d:multistatus>"[..],
                "entity",
            ),
            (&b"<d:multistatus xmlns:d=\"DAV:\"><d:a></d:b></d:multistatus>"[..], "XML error"),
        ] {
            let e = parse_multistatus(body, "src book /a/: PROPFIND").unwrap_err();
            let e = e.to_string();
            assert!(
                e.starts_with("src book /a/: PROPFIND: the answer is not a readable WebDAV multistatus")
                    && e.contains(why),
                "{why}: {e}"
            );
        }
    }

    /// Real answers of Radicale 3.9 and Xandikos 0.4.10 (our own test data), kept as
    /// fixtures: discovery, a member listing, a multiget and a sync report.
    #[test]
    fn real_server_answers_read() {
        for server in ["radicale", "xandikos"] {
            let p = parse_multistatus(&fixture(&format!("{server}-principal.xml")), "p").unwrap();
            assert!(p.responses[0].props.principal.is_some(), "{server}");
            let h = parse_multistatus(&fixture(&format!("{server}-home.xml")), "h").unwrap();
            assert_eq!(h.responses[0].props.home_sets.len(), 1, "{server}");
            let c = parse_multistatus(&fixture(&format!("{server}-collections.xml")), "c").unwrap();
            assert!(
                c.responses
                    .iter()
                    .any(|r| r.props.addressbook && r.props.collection),
                "{server}: {c:?}"
            );
            let m = parse_multistatus(&fixture(&format!("{server}-multiget.xml")), "m").unwrap();
            // Two vCards asked for and found, one gone (404, no data).
            assert_eq!(m.responses.len(), 3, "{server}");
            for r in &m.responses {
                match r.status {
                    Some(404) => {
                        assert!(r.href.ends_with("/gone.vcf") && r.props == Props::default())
                    }
                    _ => {
                        let v = r.props.address_data.as_deref().unwrap();
                        assert!(
                            v.starts_with("BEGIN:VCARD") && r.props.etag.is_some(),
                            "{server}: {v}"
                        );
                    }
                }
            }
            let s = parse_multistatus(&fixture(&format!("{server}-sync.xml")), "s").unwrap();
            assert!(s.sync_token.is_some(), "{server}");
        }
    }

    /// Radicale answers an unknown token with 403, Xandikos with 412, both with the
    /// `valid-sync-token` element (their real answers, kept as fixtures).
    #[test]
    fn real_invalid_token_answers_are_recognised() {
        for (server, status) in [("radicale", 403), ("xandikos", 412)] {
            let text = String::from_utf8(fixture(&format!("{server}-sync-invalid.txt"))).unwrap();
            let (body, code) = text.trim_end().rsplit_once('\n').unwrap();
            assert_eq!(code.parse::<u16>().unwrap(), status, "{server}");
            assert!(is_invalid_sync_token(status, body.as_bytes()), "{server}");
        }
    }

    #[test]
    fn invalid_tokens_are_recognised() {
        let rfc =
            b"<?xml version=\"1.0\"?><D:error xmlns:D=\"DAV:\"><D:valid-sync-token/></D:error>";
        assert!(is_invalid_sync_token(403, rfc));
        assert!(is_invalid_sync_token(409, rfc));
        assert!(is_invalid_sync_token(400, b"Invalid sync token"));
        assert!(!is_invalid_sync_token(403, b"Forbidden"));
        assert!(!is_invalid_sync_token(500, rfc));
    }

    #[test]
    fn hrefs_stay_on_the_origin_and_name_resources() {
        let base = url::Url::parse("http://127.0.0.1:5232/").unwrap();
        assert_eq!(
            href_url(&base, "/alice/c/x.vcf", "w").unwrap().path(),
            "/alice/c/x.vcf"
        );
        for bad in [
            "http://evil.example/alice/c/x.vcf",
            "https://127.0.0.1:5232/alice/c/x.vcf",
            "//evil.example/x.vcf",
        ] {
            let e = href_url(&base, bad, "book /alice/c/: multiget")
                .unwrap_err()
                .to_string();
            assert!(e.contains("outside http://127.0.0.1:5232"), "{e}");
        }
        assert_eq!(resource_id("/alice/c/x%20y.vcf"), Some("x%20y"));
        assert_eq!(resource_id("/alice/c/abc"), Some("abc"));
        assert_eq!(resource_id("/alice/c/"), None);
    }

    /// What Cyrus 3.6, Radicale 3.9 and Xandikos 0.4.10 answer for
    /// `supported-address-data` (their real answers): Cyrus offers 4.0 and is asked for
    /// it; the others offer 3.0 only (Xandikos under the element name `content-type`).
    #[test]
    fn supported_address_data_of_real_servers() {
        let cyrus = br#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
<D:response><D:href>/dav/addressbooks/user/alice/Default/</D:href><D:propstat><D:prop><C:supported-address-data><C:address-data-type content-type="text/vcard" version="3.0"/><C:address-data-type content-type="text/directory" version="3.0"/><C:address-data-type content-type="text/vcard" version="4.0"/></C:supported-address-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let radicale = br#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><response><href>/alice/contacts/</href><propstat><prop><CR:supported-address-data><CR:address-data-type content-type="text/vcard" version="3.0" /></CR:supported-address-data></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let xandikos = br#"<ns0:multistatus xmlns:ns0="DAV:" xmlns:ns1="urn:ietf:params:xml:ns:carddav"><ns0:response><ns0:href>/alice/contacts/addressbook/</ns0:href><ns0:propstat><ns0:status>HTTP/1.1 200 OK</ns0:status><ns0:prop><ns1:supported-address-data><ns1:content-type content-type="text/vcard" version="3.0" /></ns1:supported-address-data></ns0:prop></ns0:propstat></ns0:response></ns0:multistatus>"#;
        let t = |ct: &str, v: &str| AddressDataType {
            content_type: ct.into(),
            version: v.into(),
        };
        let c = supported_address_data(cyrus, "c").unwrap();
        assert_eq!(
            c,
            [
                t("text/vcard", "3.0"),
                t("text/directory", "3.0"),
                t("text/vcard", "4.0")
            ]
        );
        assert_eq!(preferred_address_data(&c), Some(t("text/vcard", "4.0")));
        for body in [&radicale[..], &xandikos[..]] {
            let o = supported_address_data(body, "o").unwrap();
            assert_eq!(o, [t("text/vcard", "3.0")]);
            assert_eq!(preferred_address_data(&o), Some(t("text/vcard", "3.0")));
        }
        // Nothing advertised (a 404 propstat, an empty property): no format is named.
        let none = br#"<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:response><d:href>/b/</d:href><d:propstat><d:prop><c:supported-address-data/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response></d:multistatus>"#;
        assert_eq!(supported_address_data(none, "n").unwrap(), []);
        assert_eq!(preferred_address_data(&[]), None);
        // RFC 6352's defaults for a bare element; only text/vcard is ever asked for.
        let bare = br#"<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:response><d:href>/b/</d:href><d:propstat><d:prop><c:supported-address-data><c:address-data-type/><c:address-data-type content-type="application/vcard+json" version="4.0"/></c:supported-address-data></d:prop></d:propstat></d:response></d:multistatus>"#;
        let b = supported_address_data(bare, "b").unwrap();
        assert_eq!(preferred_address_data(&b), Some(t("text/vcard", "3.0")));
        let e = supported_address_data(
            b"<d:multistatus xmlns:d=\"DAV:\"><d:a></d:b>",
            "src book /b/: PROPFIND",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("src book /b/: PROPFIND: the answer is not a readable"),
            "{e}"
        );
    }

    /// The multiget names the format when there is one, and is today's body when not;
    /// the GET's `Accept` says the same.
    #[test]
    fn multiget_asks_the_preferred_format() {
        let v4 = AddressDataType {
            content_type: "text/vcard".into(),
            version: "4.0".into(),
        };
        let b = multiget_body_as(&["/a/x.vcf"], Some(&v4));
        assert!(
            b.contains(r#"<c:address-data content-type="text/vcard" version="4.0"/>"#)
                && b.contains("<d:href>/a/x.vcf</d:href>"),
            "{b}"
        );
        assert_eq!(
            multiget_body_as(&["/a/x.vcf"], None),
            multiget_body(&["/a/x.vcf"])
        );
        assert_eq!(v4.accept(), "text/vcard; version=4.0");
    }

    #[test]
    fn bodies_escape_hrefs_and_tokens() {
        let b = multiget_body(&["/a/<x>&.vcf"]);
        assert!(b.contains("<d:href>/a/&lt;x&gt;&amp;.vcf</d:href>"), "{b}");
        let s = sync_collection_body("http://radicale.org/ns/sync/a&b");
        assert!(s.contains("<d:sync-token>http://radicale.org/ns/sync/a&amp;b</d:sync-token>"));
    }
}
