//! The emulator's faults in front of a server it does not emulate: a reverse proxy on
//! loopback that passes every request on to `upstream` unchanged and answers with what
//! came back, except when the shared [`FaultInjector`] draws a fault (429/503/500 with
//! `Retry-After`, a reset, a slow answer, or a truncated one: passed on, so the server
//! did the work, and then cut off — a lost response).
//!
//! ```no_run
//! # async fn demo() -> contacts_etl::Result<()> {
//! use contacts_etl::emulator::{FaultSpec, proxy::FaultProxy};
//! let proxy = FaultProxy::start("http://127.0.0.1:5232", FaultSpec::default(), 42).await?;
//! proxy.set_faults(FaultSpec::parse("429=0.1,truncate=0.05,retry_after=0")?);
//! println!("point the client at {}", proxy.url());
//! println!("{:?}", proxy.stats()); // `fault.*` counts and `proxy.requests`
//! # Ok(()) }
//! ```
//!
//! The proxy is transparent: method, path, query, headers (but the hop-by-hop ones and
//! `Host`) and body go up as they came, status, headers and body come back as they were
//! sent (no decompression, no redirect followed), so the client meets the server's own
//! answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{FaultInjector, FaultSpec, Stats};
use crate::error::{Context, Kind, Result};

/// Headers that describe one connection, not the message: never passed on.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    faults: FaultInjector,
    stats: Mutex<Stats>,
}

impl ProxyState {
    fn count(&self, key: &str) {
        *self
            .stats
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default() += 1;
    }
}

/// A running fault-injecting reverse proxy; stopped on drop.
pub struct FaultProxy {
    url: String,
    state: Arc<ProxyState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// Starts on a free loopback port in front of `upstream` (`http://host:port`, no
    /// path), injecting `faults` drawn from `seed`.
    pub async fn start(upstream: &str, faults: FaultSpec, seed: u64) -> Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context(Kind::Config, "cannot listen on 127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .timeout(Duration::from_secs(120))
            .build()
            .context(Kind::Other, "proxy client")?;
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client,
            faults: FaultInjector::new(faults, seed),
            stats: Mutex::new(Stats::new()),
        });
        let app = Router::new()
            .fallback(forward)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                faults_layer,
            ))
            .with_state(state.clone());
        let (tx, _task) = super::serve_until_stopped(listener, app);
        Ok(FaultProxy {
            url,
            state,
            shutdown: Some(tx),
        })
    }

    /// The proxy's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the fault rates (`FaultSpec::default()` passes everything through).
    pub fn set_faults(&self, faults: FaultSpec) {
        self.state.faults.set(faults);
    }

    /// `proxy.requests` (every request received) and `fault.<kind>` counts.
    pub fn stats(&self) -> Stats {
        self.state.stats.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn faults_layer(State(s): State<Arc<ProxyState>>, req: Request, next: Next) -> Response {
    s.count("proxy.requests");
    let error = |status: StatusCode| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("injected by the fault proxy: {status}"),
        )
            .into_response()
    };
    s.faults.inject(req, next, |k| s.count(k), error).await
}

/// Passes `req` on to the upstream server and its answer back; a failure to reach the
/// server is a 502 that says so.
async fn forward(State(s): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bad_gateway = |what: String| {
        (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("fault proxy: {what}"),
        )
            .into_response()
    };
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("reading the request body: {e}")),
    };
    let target = format!(
        "{}{}",
        s.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut rb = s.client.request(parts.method, target).body(body);
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(k) {
            rb = rb.header(k, v);
        }
    }
    let up = match rb.send().await {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("the upstream server: {e}")),
    };
    let status = up.status();
    let headers = up.headers().clone();
    let bytes = match up.bytes().await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("the upstream body: {e}")),
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    for (k, v) in &headers {
        if !HOP_BY_HOP.contains(k) {
            resp.headers_mut().append(k, v.clone());
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An upstream that counts its requests and echoes method, path, a header and the body.
    async fn upstream() -> (String, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let n = seen.clone();
        let app = Router::new().fallback(move |req: Request| {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let echo = format!(
                    "{} {} {} {}",
                    parts.method,
                    parts.uri,
                    parts
                        .headers
                        .get("if-match")
                        .map(|v| v.to_str().unwrap())
                        .unwrap_or("-"),
                    String::from_utf8_lossy(&body)
                );
                (
                    StatusCode::MULTI_STATUS,
                    [("etag", "\"e1\"")],
                    echo.repeat(20),
                )
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (url, seen)
    }

    /// Whether the answer to `rb` breaks (at the headers or in the body).
    async fn breaks(rb: reqwest::RequestBuilder) -> bool {
        match rb.send().await {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        }
    }

    fn request(url: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(b"REPORT").unwrap(),
                format!("{url}/alice/book/?x=1"),
            )
            .header("If-Match", "\"e0\"")
            .body("<sync/>")
    }

    #[tokio::test]
    async fn passes_requests_and_answers_through_unchanged() {
        let (up, seen) = upstream().await;
        let proxy = FaultProxy::start(&up, FaultSpec::default(), 1)
            .await
            .unwrap();
        let r = request(proxy.url()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 207);
        assert_eq!(r.headers()["etag"], "\"e1\"");
        assert_eq!(
            r.text().await.unwrap(),
            "REPORT /alice/book/?x=1 \"e0\" <sync/>".repeat(20)
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.stats().get("proxy.requests"), Some(&1));
    }

    #[tokio::test]
    async fn injected_statuses_never_reach_the_server() {
        let (up, seen) = upstream().await;
        for (spec, status, key) in [
            ("429=1,retry_after=0", 429, "fault.429"),
            ("503=1", 503, "fault.503"),
            ("500=1", 500, "fault.500"),
        ] {
            let proxy = FaultProxy::start(&up, FaultSpec::parse(spec).unwrap(), 1)
                .await
                .unwrap();
            let r = request(proxy.url()).send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{spec}");
            if status == 429 {
                assert_eq!(r.headers()["retry-after"], "0");
            }
            assert_eq!(proxy.stats().get(key), Some(&1), "{spec}");
        }
        let proxy = FaultProxy::start(&up, FaultSpec::parse("reset=1").unwrap(), 1)
            .await
            .unwrap();
        assert!(
            breaks(request(proxy.url())).await,
            "a reset must break the answer"
        );
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "the server saw a faulted request"
        );
    }

    /// A truncated answer is a lost response: the server got the request (and acted on
    /// it), the client gets a broken body; with the faults off, everything passes again.
    #[tokio::test]
    async fn a_truncated_answer_is_a_request_the_server_did_handle() {
        let (up, seen) = upstream().await;
        let proxy = FaultProxy::start(&up, FaultSpec::parse("truncate=1").unwrap(), 1)
            .await
            .unwrap();
        assert!(breaks(request(proxy.url())).await);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.stats().get("fault.truncate"), Some(&1));
        proxy.set_faults(FaultSpec::default());
        let r = request(proxy.url()).send().await.unwrap();
        assert!(r.bytes().await.is_ok());
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }
}
