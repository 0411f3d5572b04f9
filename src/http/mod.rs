//! The HTTP pull loop's shared half, written once for every provider: one pooled client
//! (rustls, gzip), timeouts, retries with exponential backoff and jitter on 408, 429, 5xx,
//! connection resets and truncated bodies, `Retry-After` honoured, a cap on body size, and
//! counters for the run summary. Providers supply the requests and decode the bodies, and
//! hand the client a [`Describer`] for their API's error bodies; every paged read asks the
//! one [`paging::PageGuard`].

pub mod paging;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::HeaderMap;

use crate::error::{Context, Error, Kind, Result};

/// When and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles per retry, with full jitter.
    pub base: Duration,
    /// Longest single backoff.
    pub cap: Duration,
    /// Longest `Retry-After` obeyed.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// Counters of one extract or apply, for `sync_runs` and the summary.
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP requests sent, retries included.
    pub requests: AtomicU64,
    /// Retries.
    pub retries: AtomicU64,
    /// Response bytes received.
    pub bytes: AtomicU64,
    /// Pages decoded.
    pub pages: AtomicU64,
}

impl Metrics {
    /// A snapshot: (requests, retries, bytes, pages).
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.pages.load(Ordering::Relaxed),
        )
    }
}

/// A response whose body was read completely.
#[derive(Debug)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The provider's reading of its error bodies, from the client that got this.
    describer: Option<Describer>,
}

impl HttpResponse {
    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// A one-line reading of an error body: the provider's [`Describer`] first, then
    /// the base reading ([`describe_body`]).
    pub fn describe(&self) -> String {
        describe_body_with(self.describer, &self.body)
    }
}

/// A provider's reading of its API's error bodies: one line from a body it recognises
/// (a GData `<errors>` document, an Aurinko JSON error), or `None` to leave the body to
/// the base reading ([`describe_body`]). The base layer knows no provider's format, so
/// each provider hands its own to the client ([`HttpClient::with_describer`]).
pub type Describer = fn(&[u8]) -> Option<String>;

/// One pooled client plus a retry policy.
///
/// Plain `http://` requests go through a client without certificate roots; the client
/// for `https://` is built at its first use. Loading the system's roots takes 3-6 ms,
/// which a run against a local emulator, or a short incremental run, should not pay.
#[derive(Debug, Clone)]
pub struct HttpClient {
    plain: reqwest::Client,
    tls: Arc<std::sync::OnceLock<reqwest::Client>>,
    timeout: Duration,
    policy: RetryPolicy,
    describer: Option<Describer>,
}

/// Whether a status is worth retrying.
pub fn retriable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

impl HttpClient {
    /// A client with the given per-request timeout and retry policy.
    pub fn try_new(timeout: Duration, policy: RetryPolicy) -> Result<HttpClient> {
        let plain = Self::builder(timeout)
            // No roots: nothing is verified because nothing over TLS goes through it.
            .tls_certs_only([])
            // A redirect to https is answered, not followed; `attempt` resends it by TLS.
            .redirect(redirect_policy(true))
            .build()
            .context(Kind::Other, "cannot build the HTTP client")?;
        Ok(HttpClient {
            plain,
            tls: Default::default(),
            timeout,
            policy,
            describer: None,
        })
    }

    /// This client, reading error bodies with the provider's `describer` before the
    /// base reading.
    pub fn with_describer(mut self, describer: Describer) -> HttpClient {
        self.describer = Some(describer);
        self
    }

    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(redirect_policy(false))
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .gzip(true)
            .user_agent(concat!("contacts-etl/", env!("CARGO_PKG_VERSION")))
    }

    /// The client for `https://`, with the platform's certificate roots.
    fn tls(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.tls.get() {
            return Ok(c);
        }
        let c = Self::builder(self.timeout).build().context(
            Kind::Other,
            "cannot build the HTTPS client (loading the system's certificate roots)",
        )?;
        Ok(self.tls.get_or_init(|| c))
    }

    /// A reqwest client to build requests with (any request it builds is sent by
    /// [`HttpClient::send`] through the right one).
    pub fn client(&self) -> &reqwest::Client {
        &self.plain
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Sends the request that `build` makes (called again for every attempt), retrying
    /// transport failures, truncated bodies and retriable statuses. Returns the first
    /// response with a non-retriable status (2xx or not), or an error naming `what`.
    /// Bodies larger than `max_body` bytes are refused. For reads and idempotent writes;
    /// see [`HttpClient::send_write`] for the others.
    pub async fn send<F>(
        &self,
        what: &str,
        metrics: &Metrics,
        max_body: usize,
        build: F,
    ) -> Result<HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.send_replay(what, metrics, max_body, Replay::Always, build)
            .await
    }

    /// Sends a write that must not be applied twice (a create, a batch, a conditional
    /// update). It is sent again only when the server certainly did not act on it: the
    /// connection was never made, or the answer was 429 or 503. A reply lost after the
    /// request went out (a reset, a timeout, a body cut off) is an error, not a retry: the
    /// write may have been applied, and sending it again would create a contact twice, or
    /// report the first attempt's own change as a conflict. `apply` syncs before it plans,
    /// so a rerun finds what did apply (inserts by their key) and sends only the rest.
    pub async fn send_write<F>(
        &self,
        what: &str,
        metrics: &Metrics,
        max_body: usize,
        build: F,
    ) -> Result<HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.send_replay(what, metrics, max_body, Replay::UnlessMaybeApplied, build)
            .await
    }

    async fn send_replay<F>(
        &self,
        what: &str,
        metrics: &Metrics,
        max_body: usize,
        replay: Replay,
        build: F,
    ) -> Result<HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut attempt = 0u32;
        let unsafe_write = replay == Replay::UnlessMaybeApplied;
        loop {
            metrics.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = self.attempt(&build, metrics, max_body).await;
            let (retry_after, failure) = match outcome {
                Ok(resp) if !retriable_status(resp.status) => return Ok(resp),
                // A write the server may have acted on (500, 502, 504): its answer stands.
                Ok(resp) if unsafe_write && !matches!(resp.status, 429 | 503) => {
                    return Ok(resp);
                }
                Ok(resp) => {
                    let ra = resp
                        .headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (
                        ra,
                        Error::http(
                            Some(resp.status),
                            format!("{what}: HTTP {}: {}", resp.status, resp.describe()),
                        ),
                    )
                }
                Err(AttemptError::Fatal(e)) => return Err(e.context(what)),
                Err(AttemptError::Transient { cause, sent: true }) if unsafe_write => {
                    return Err(Error::with_source(
                        Kind::Http,
                        format!(
                            "{what}: the reply was lost after the request went out, so the write may have been applied. It was not sent again (that could apply it twice): rerun apply, which syncs first and sends only what did not apply"
                        ),
                        cause,
                    ));
                }
                // No connection at all (refused, no such host, TLS refused): the server
                // is down or the address wrong, which waiting rarely mends. A few quick
                // tries, then one line naming the host.
                Err(AttemptError::Transient { cause, sent: false })
                    if attempt >= CONNECT_RETRIES =>
                {
                    return Err(Error::with_source(
                        Kind::Http,
                        format!(
                            "{what} (gave up after {} attempts; is the server up, and base_url right?)",
                            attempt + 1
                        ),
                        cause,
                    ));
                }
                Err(AttemptError::Transient { cause, sent }) => (
                    (!sent).then_some(CONNECT_RETRY_DELAY),
                    Error::with_source(Kind::Http, what, cause),
                ),
            };
            if attempt >= self.policy.max_retries {
                return Err(match failure {
                    Error::Http {
                        status,
                        context,
                        source,
                    } => Error::Http {
                        status,
                        context: format!("{context} (gave up after {} attempts)", attempt + 1),
                        source,
                    },
                    e => e,
                });
            }
            let delay = match retry_after {
                Some(ra) => ra.min(self.policy.max_retry_after),
                None => {
                    let exp = self
                        .policy
                        .base
                        .saturating_mul(1u32 << attempt.min(16))
                        .min(self.policy.cap);
                    // Full jitter: spread retries of many workers apart.
                    Duration::from_millis(
                        rand::rng()
                            .random_range(exp.as_millis() as u64 / 2..=exp.as_millis() as u64),
                    )
                }
            };
            tracing::debug!(what, attempt, delay_ms = delay.as_millis() as u64, error = %failure, "retrying");
            metrics.retries.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<F>(
        &self,
        build: &F,
        metrics: &Metrics,
        max_body: usize,
    ) -> std::result::Result<HttpResponse, AttemptError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let failed = |e: reqwest::Error| {
            if e.is_builder() {
                AttemptError::Fatal(Error::with_source(Kind::Config, "bad request", e))
            } else if e.is_redirect() {
                // Refused by `redirect_policy` (whose reason is in the error's causes):
                // the same answer would come on every retry.
                AttemptError::Fatal(Error::with_source(Kind::Http, "", e.without_url()))
            } else {
                AttemptError::Transient {
                    // Only a connection that was never made certainly carried nothing.
                    sent: !e.is_connect(),
                    cause: Transport::new(e, false),
                }
            }
        };
        let request = build(&self.plain).build().map_err(failed)?;
        let mut resp = if request.url().scheme() == "https" {
            let tls = self.tls().map_err(AttemptError::Fatal)?;
            tls.execute(request).await.map_err(failed)?
        } else {
            let resp = self.plain.execute(request).await.map_err(failed)?;
            let to_tls = resp.status().is_redirection()
                && resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .is_some_and(|l| l.starts_with("https:"));
            if to_tls {
                // The plain client stopped at a redirect to https: the TLS client starts
                // over and follows it.
                let tls = self.tls().map_err(AttemptError::Fatal)?;
                tls.execute(build(tls).build().map_err(failed)?)
                    .await
                    .map_err(failed)?
            } else {
                resp
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if let Some(len) = resp.content_length()
            && len as usize > max_body
        {
            return Err(AttemptError::Fatal(Error::decode(format!(
                "the response is {len} bytes, more than the {max_body}-byte limit; lower page_size"
            ))));
        }
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(16 * 1024) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    metrics
                        .bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if body.len() + chunk.len() > max_body {
                        return Err(AttemptError::Fatal(Error::decode(format!(
                            "the response is more than the {max_body}-byte limit; lower page_size"
                        ))));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(AttemptError::Transient {
                        cause: Transport::new(e, true),
                        sent: true,
                    });
                }
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body: Bytes::from(body),
            describer: self.describer,
        })
    }
}

/// The origin of a URL (scheme, host, port) as written in messages: `https://host:443`.
pub fn origin_of(url: &url::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => url.scheme().to_string(),
    }
}

/// Whether two URLs share an origin: scheme, host and port (the default port counts).
pub fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Checks that a link a server handed out (a `next` page, a photo) stays on the origin
/// of `base`, the configured API, before any credential is sent to it; a relative link
/// is read against `base`. The error names the link, and says why it is not followed.
pub fn check_link(base: &url::Url, link: &str, what: &str) -> Result<url::Url> {
    let url = base.join(link).with_context(Kind::Decode, || {
        format!("{what}: the server sent the link {link:?}, which is not a URL")
    })?;
    if !same_origin(base, &url) {
        return Err(Error::decode(format!(
            "{what}: the server sent the link {url}, which leads outside {} (the origin of base_url); it is not followed, because the credentials go only to the configured API. If that host really is the API, set base_url to it",
            origin_of(base)
        )));
    }
    Ok(url)
}

/// Whether a redirect from the request's first URL to `next` may be followed: only on
/// the same origin, or from `http` to `https` on the same host and the default ports.
/// Anywhere else would take the request's credentials (or hand back another origin's
/// data as if the API had sent it), so such a redirect fails the request.
fn may_redirect(first: &url::Url, next: &url::Url) -> bool {
    same_origin(first, next)
        || (first.scheme() == "http"
            && next.scheme() == "https"
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == Some(80)
            && next.port_or_known_default() == Some(443))
}

/// The redirect policy of both clients: at most 10 hops, none leaving the origin (see
/// [`may_redirect`]); `stop_at_https` answers a redirect to https instead of following it.
fn redirect_policy(stop_at_https: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |a| {
        // `previous` starts with the request's own URL.
        let refused = a
            .previous()
            .first()
            .filter(|first| !may_redirect(first, a.url()))
            .map(origin_of);
        if let Some(origin) = refused {
            let msg = format!(
                "the server redirected to {}, outside {origin} (the origin of the request); the redirect is not followed, because the credentials go only to the configured API",
                a.url()
            );
            a.error(msg)
        } else if stop_at_https && a.url().scheme() == "https" {
            a.stop()
        } else if a.previous().len() >= 10 {
            a.error("too many redirects")
        } else {
            a.follow()
        }
    })
}

enum AttemptError {
    /// Worth another attempt, for a request that may be repeated; `sent` when the request
    /// may have reached the server.
    Transient {
        cause: Transport,
        sent: bool,
    },
    Fatal(Error),
}

/// Whether a request may be sent again after a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Reads and idempotent writes.
    Always,
    /// Only when the server certainly did not act on it.
    UnlessMaybeApplied,
}

/// Retries of a request that reached no server (connection refused, no such host, TLS
/// handshake refused) before the request fails.
const CONNECT_RETRIES: u32 = 2;
/// The wait before each of them.
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(500);

/// A request that got no whole answer: the host and port it went to (not the URL, whose
/// query may carry cursors and tokens) and reqwest's error, whose causes are this
/// error's [`source`](std::error::Error::source) chain (reqwest's Display hides them).
#[derive(Debug)]
pub struct Transport {
    host: String,
    /// The body was cut off after the answer began.
    cut: bool,
    /// reqwest's error, its URL removed.
    error: reqwest::Error,
}

/// The most characters of reqwest's own words a [`Transport`] error shows.
const TRANSPORT_WORDS: usize = 400;

impl Transport {
    fn new(e: reqwest::Error, cut: bool) -> Transport {
        let host = e
            .url()
            .map(|u| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or("?"),
                    u.port_or_known_default().unwrap_or(0)
                )
            })
            .unwrap_or_else(|| "the server".into());
        Transport {
            host,
            cut,
            error: e.without_url(),
        }
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        self.error.is_timeout()
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words = self.error.to_string();
        let words = bounded(&words, TRANSPORT_WORDS);
        if self.cut {
            write!(f, "the response body was cut off ({}): {words}", self.host)
        } else {
            write!(f, "{words} ({})", self.host)
        }
    }
}

impl std::error::Error for Transport {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // reqwest's own words are in this error's Display; its causes follow.
        std::error::Error::source(&self.error)
    }
}

/// `text` cut to at most `max` characters (never inside one), with `…` where cut.
fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]).into(),
        None => text.into(),
    }
}

/// A response body as text, checked as UTF-8 once for a whole page.
///
/// The check is a pass over every byte of every page, a large part of a decode with the
/// standard library's check on names with accents, so on x86-64 CPUs with AVX2 it
/// runs simdutf8's vectorised validator, detected at run time. simdutf8 is already built
/// for arrow-json without its `std` feature (which would pick the validator itself), so
/// its per-CPU entry point is called here. An invalid body is checked again by the
/// standard library, whose error says where.
pub fn body_text(body: &[u8]) -> std::result::Result<&str, std::str::Utf8Error> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the AVX2 validator runs only on a CPU that was just found to have AVX2.
        if unsafe { simdutf8::basic::imp::x86::avx2::validate_utf8(body) }.is_ok() {
            // SAFETY: validated as UTF-8 just above.
            return Ok(unsafe { std::str::from_utf8_unchecked(body) });
        }
    }
    std::str::from_utf8(body)
}

/// Reads an error body as one line, knowing no provider's format: an HTML `<TITLE>`, a
/// JSON `message` (with its `code`), or the start of the text. A provider's own formats
/// are read first by its [`Describer`] ([`describe_body_with`]).
pub fn describe_body(body: &[u8]) -> String {
    describe_body_with(None, body)
}

/// An error body as one line, read by the provider's `describer` if it recognises it,
/// else as [`describe_body`] reads it; never with a secret of this process in it.
pub fn describe_body_with(describer: Option<Describer>, body: &[u8]) -> String {
    let line = describer
        .and_then(|d| d(body))
        .unwrap_or_else(|| describe_body_as_sent(body));
    crate::secret::printable(&line).into_owned()
}

/// The text between the first `open` and the next `close` in `t`, matched without
/// regard to ASCII case, trimmed.
pub fn between(t: &str, open: &str, close: &str) -> Option<String> {
    let lower = t.to_ascii_lowercase();
    let s = lower.find(&open.to_ascii_lowercase())? + open.len();
    let e = lower[s..].find(&close.to_ascii_lowercase())? + s;
    Some(t.get(s..e)?.trim().to_string())
}

fn describe_body_as_sent(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.starts_with('{')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(t)
    {
        let code = v
            .get("code")
            .and_then(|c| c.as_str())
            .or_else(|| v.pointer("/error/code").and_then(|c| c.as_str()));
        let msg = v
            .get("message")
            .and_then(|c| c.as_str())
            .or_else(|| v.pointer("/error/message").and_then(|c| c.as_str()))
            .or_else(|| v.get("error_description").and_then(|c| c.as_str()));
        return match (code, msg) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (None, Some(m)) => m.to_string(),
            (Some(c), None) => c.to_string(),
            _ => truncate(t),
        };
    }
    if let Some(title) = between(t, "<title>", "</title>") {
        return title;
    }
    if t.is_empty() {
        "(empty body)".into()
    } else {
        truncate(t)
    }
}

fn truncate(t: &str) -> String {
    let one_line: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 300 {
        format!("{}…", one_line.chars().take(300).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised check agrees with the standard library's on every body: text with
    /// one- to four-byte characters, and the same text broken at every position (a stray
    /// continuation byte, a lead byte cut short, an overlong form, a surrogate), which
    /// puts the fault on every side of the validator's 32- and 64-byte blocks.
    #[test]
    fn body_text_agrees_with_the_standard_check() {
        let good = "Zoë Ångström <zoe@exämple.com> 日本語 🦀 plain ascii, ".repeat(9);
        assert_eq!(body_text(good.as_bytes()), Ok(good.as_str()));
        assert_eq!(body_text(b""), Ok(""));
        for bad in [
            &[0x80u8][..],
            &[0xE6, 0x97],
            &[0xC0, 0xAF],
            &[0xED, 0xA0, 0x80],
        ] {
            for at in 0..good.len() {
                let mut body = good.as_bytes()[..at].to_vec();
                body.extend_from_slice(bad);
                body.extend_from_slice(&good.as_bytes()[at..]);
                let want = std::str::from_utf8(&body);
                let got = body_text(&body);
                assert_eq!(got.is_ok(), want.is_ok(), "fault {bad:x?} at byte {at}");
                if let (Err(g), Err(w)) = (got, want) {
                    assert_eq!(g.valid_up_to(), w.valid_up_to());
                }
            }
        }
    }

    /// Plain requests go out without certificate roots, redirects on the same origin are
    /// followed, and a redirect to another origin (another port, or https elsewhere than
    /// the default ports of the same host) fails the request at once, naming the target,
    /// without a request to it and without retries.
    /// A server that is not there fails the request within seconds (three quick
    /// attempts, whatever max_retries says), naming host and port, never the URL's query.
    #[tokio::test]
    async fn connection_refused_fails_quickly_naming_the_host() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = HttpClient::try_new(
            Duration::from_secs(5),
            RetryPolicy {
                max_retries: 6,
                ..Default::default()
            },
        )
        .unwrap();
        let url =
            format!("http://127.0.0.1:{port}/v1/contacts/sync/updated?deltaToken=secret-cursor");
        let metrics = Metrics::default();
        let t = std::time::Instant::now();
        let err = c
            .send("page 1", &metrics, 1 << 20, |c| c.get(&url))
            .await
            .unwrap_err();
        let e = err.to_string();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // The transport's error stays the source, its own causes behind it.
        let transport = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<Transport>())
            .expect("the transport error is the source");
        assert!(std::error::Error::source(transport).is_some(), "{e}");
        assert!(!transport.is_timeout());
        assert_eq!(err.status(), None);
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(e.contains("gave up after 3 attempts"), "{e}");
        assert!(
            !e.contains("deltaToken") && !e.contains("secret-cursor"),
            "{e}"
        );
        assert_eq!(metrics.requests.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn redirects_stay_on_the_origin() {
        use axum::response::Redirect;
        use std::sync::atomic::AtomicUsize;
        let other_hits = Arc::new(AtomicUsize::new(0));
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_url = format!("http://{}", other.local_addr().unwrap());
        let hits = other_hits.clone();
        let other_app = axum::Router::new().fallback(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "other origin's data" }
        });
        tokio::spawn(async move { axum::serve(other, other_app).await });
        let to_other = format!("{other_url}/x");
        let app = axum::Router::new()
            .route(
                "/a",
                axum::routing::get(|| async { Redirect::temporary("/b") }),
            )
            .route("/b", axum::routing::get(|| async { "plain" }))
            .route(
                "/s",
                axum::routing::get(|| async { Redirect::temporary("https://127.0.0.1:1/x") }),
            )
            .route(
                "/o",
                axum::routing::get(move || async move { Redirect::temporary(&to_other) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let policy = RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(1),
            ..Default::default()
        };
        let http = HttpClient::try_new(Duration::from_secs(5), policy).unwrap();
        let m = Metrics::default();
        let r = http
            .send("a", &m, 1024, |c| c.get(format!("{base}/a")))
            .await
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"plain"[..]));
        for path in ["s", "o"] {
            let before = m.requests.load(Ordering::Relaxed);
            let e = http
                .send(path, &m, 1024, |c| c.get(format!("{base}/{path}")))
                .await
                .unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, Error::Http { status: None, .. })
                    && msg.contains("redirected to")
                    && msg.contains(&format!(
                        "outside {}",
                        base.replace("localhost", "127.0.0.1")
                    )),
                "{msg}"
            );
            assert_eq!(m.requests.load(Ordering::Relaxed), before + 1, "no retries");
        }
        assert_eq!(
            other_hits.load(Ordering::SeqCst),
            0,
            "no request left the origin"
        );
        assert!(
            http.tls.get().is_none(),
            "a refused redirect to https never loads the roots"
        );
    }

    #[test]
    fn links_must_stay_on_the_origin() {
        let base = url::Url::parse("https://www.google.com").unwrap();
        assert!(check_link(&base, "https://www.google.com:443/m8/feeds/x", "p").is_ok());
        for bad in [
            "http://www.google.com/m8",
            "https://www.google.com:8443/m8",
            "https://www.google.com.evil.example/m8",
            "https://user@169.254.169.254/latest",
        ] {
            let e = check_link(&base, bad, "page 2").unwrap_err().to_string();
            assert!(
                e.starts_with("page 2: ") && e.contains("outside https://www.google.com:443"),
                "{e}"
            );
        }
        assert_eq!(
            check_link(&base, "/m8/feeds?a=1", "p").unwrap().as_str(),
            "https://www.google.com/m8/feeds?a=1"
        );
        assert!(check_link(&base, "http://[bad", "p").is_err());
    }

    /// Text cut at a character limit is never cut inside a character, even where the
    /// byte at the limit falls inside one.
    #[test]
    fn bounded_text_cuts_between_characters() {
        let text = format!("{}é{}", "a".repeat(399), "b".repeat(50));
        assert!(!text.is_char_boundary(400), "é straddles byte 400");
        let cut = bounded(&text, 400);
        assert_eq!(cut, format!("{}é…", "a".repeat(399)));
        let text = "日本語".repeat(200);
        assert_eq!(bounded(&text, 400).chars().count(), 401);
        assert_eq!(bounded("short", 400), "short");
    }

    /// The base reading knows no provider: a GData error document is read as text, and
    /// a provider's describer is asked first, the base reading taking what it leaves.
    #[test]
    fn a_providers_describer_reads_its_bodies_first() {
        let gdata = b"<errors><error><code>etagsMismatch</code><internalReason>Etags mismatch</internalReason></error></errors>";
        assert!(!describe_body(gdata).starts_with("etagsMismatch:"));
        let mine: Describer = |b| b.starts_with(b"<errors>").then(|| "mine".to_string());
        assert_eq!(describe_body_with(Some(mine), gdata), "mine");
        assert_eq!(describe_body_with(Some(mine), b""), "(empty body)");
    }

    #[test]
    fn error_bodies_read_as_one_line() {
        assert_eq!(describe_body(b"<HTML><HEAD><TITLE>Token invalid - Invalid token: Token not found</TITLE></HEAD><BODY><H2>Error 401</H2></BODY></HTML>"), "Token invalid - Invalid token: Token not found");
        assert_eq!(
            describe_body(
                br#"{"code":"syncToken.expired","message":"syncToken expired.","requestId":"x"}"#
            ),
            "syncToken.expired: syncToken expired."
        );
        assert_eq!(
            describe_body(b"Temporary problem - please try again later"),
            "Temporary problem - please try again later"
        );
        assert_eq!(describe_body(b""), "(empty body)");
    }
}
