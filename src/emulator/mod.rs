//! Local emulators of the Google Domain Shared Contacts API (GData v3) and the Aurinko
//! Contacts API, in one HTTP server.
//!
//! ```no_run
//! # async fn demo() -> contacts_etl::Result<()> {
//! use contacts_etl::emulator::{Emulator, EmulatorConfig};
//! let emu = Emulator::start(EmulatorConfig { google_contacts: 100, ..Default::default() }).await?;
//! println!("Google feed: {}/m8/feeds/contacts/{}/full", emu.url(), emu.config().google_domain);
//! let truth = emu.google_truth();            // what a perfect sync would land
//! emu.mutate_google(5, 5, 5);                // 5 inserts, 5 updates, 5 deletes
//! # Ok(()) }
//! ```
//!
//! Admin endpoints (outside the API paths) serve the same from another process:
//! `GET /_emulator/truth/google`, `GET /_emulator/truth/aurinko/{account}`,
//! `POST /_emulator/mutate` (`{"google":{"inserts":1,"updates":2,"deletes":3},"aurinko":{…}}`),
//! `GET /_emulator/stats` (request counts; `google.batch.us` is the time spent handling
//! batch requests, in microseconds), `GET /_emulator/writes` (every write operation the
//! Google API received and answered, in order: see [`WriteLog`]), `POST /_emulator/clock`
//! (`{"advance_secs":N}`),
//! `POST /_emulator/aurinko/expire-tokens`, `POST /_emulator/faults` (`{"spec":"429=0.1"}`).
//!
//! The emulator shares no protocol code with the clients in `providers/`: it has its own
//! XML tree and JSON mapping, so a misreading in one is caught by the other.

pub mod aurinko;
pub mod data;
pub mod google;
pub mod people;
pub mod proxy;
pub mod xml;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Kind, Result};
use crate::model::schema::ContactRecord;

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The Google domain served under `/m8/feeds/contacts/{domain}/…`.
    pub google_domain: String,
    /// Shared contacts generated at start.
    pub google_contacts: usize,
    /// Aurinko accounts, with ids 101, 102, ….
    pub aurinko_accounts: usize,
    /// Contacts generated per Aurinko account.
    pub aurinko_contacts: usize,
    /// Seed of the synthetic data and of fault decisions.
    pub seed: u64,
    /// Fault rates.
    pub faults: FaultSpec,
    /// The test token. Google accepts `Bearer <token>` and `GoogleLogin auth=<token>`;
    /// Aurinko account A accepts `Bearer <token>-A`, or Basic `emulator:<token>` with
    /// `X-Aurinko-Account-Id: A`.
    pub token: String,
    /// Largest Google `max-results` honoured (larger values are clamped).
    pub google_max_results: usize,
    /// Records per Aurinko sync page.
    pub aurinko_page_size: usize,
    /// How many `POST /v1/contacts/sync` calls per account answer `ready:false` first.
    pub aurinko_ready_after: u32,
    /// Aurinko delta/page tokens older than this answer 410 `syncToken.expired`.
    pub aurinko_token_ttl_secs: Option<u64>,
    /// Whether Aurinko PATCH without `If-Match` is refused with 400 (else it is applied).
    pub aurinko_require_if_match: bool,
    /// Google deletion placeholders are kept this long.
    pub tombstone_retention_secs: i64,
    /// PEM public key that verifies service-account JWTs at `POST /token`.
    pub service_account_public_key: Option<String>,
    /// Lifetime of access tokens issued by `POST /token`.
    pub oauth_token_ttl_secs: i64,
    /// Whether a photo PUT or DELETE also bumps the contact's `updated` and etag (the
    /// real behaviour is a gap in the notes; with `false` only the photo link's etag
    /// changes, so an incremental read does not see it and a full refresh must).
    pub photo_touches_contact: bool,
    /// Whether every generated Google contact gets notes that bring it a few units
    /// under the 2 KB limit, as the emulator counts it (none is seeded over it).
    pub google_near_limit: bool,
    /// Whether generated people have the density of real domains: foreign-namespace
    /// elements, XML blobs in extended properties, long multilingual notes, many items
    /// (see `data::densify`). Off by default; the benchmarks turn it on.
    pub dense: bool,
    /// Directory profiles (the domain's users) the People API lists beside the Google
    /// domain's shared contacts.
    pub directory_profiles: usize,
    /// People API sync tokens older than this are expired.
    pub people_token_ttl_secs: Option<u64>,
    /// The status of an expired People API sync token: 400 `FAILED_PRECONDITION` (the
    /// default) or 410; the reference names neither for this list.
    pub people_expired_status: u16,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            google_domain: "example.com".into(),
            google_contacts: 1000,
            aurinko_accounts: 3,
            aurinko_contacts: 1000,
            seed: 42,
            faults: FaultSpec::default(),
            token: "emulator-token".into(),
            google_max_results: 10_000,
            aurinko_page_size: 200,
            aurinko_ready_after: 1,
            aurinko_token_ttl_secs: None,
            aurinko_require_if_match: true,
            tombstone_retention_secs: 30 * 24 * 3600,
            service_account_public_key: None,
            oauth_token_ttl_secs: 3600,
            photo_touches_contact: true,
            google_near_limit: false,
            dense: false,
            directory_profiles: 0,
            people_token_ttl_secs: None,
            people_expired_status: 400,
        }
    }
}

/// Fault rates, parsed from `429=0.05,503=0.05,500=0.01,reset=0.01,truncate=0.01,slow=0.02`
/// plus `retry_after=SECS` and `slow_ms=MS`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub too_many: f64,
    pub unavailable: f64,
    pub internal: f64,
    pub reset: f64,
    pub truncate: f64,
    pub slow: f64,
    /// Share of Google batches that stop half-way with `batch:interrupted`, spread evenly
    /// (0.5 interrupts every second batch), so tests are deterministic.
    pub batch_interrupt: f64,
    pub retry_after_secs: u64,
    pub slow_ms: u64,
}

impl FaultSpec {
    /// Parses the `--faults` syntax.
    pub fn parse(spec: &str) -> Result<FaultSpec> {
        let mut f = FaultSpec {
            retry_after_secs: 1,
            slow_ms: 300,
            ..Default::default()
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| Error::config(format!("fault {part:?} must look like 429=0.05")))?;
            let num: f64 = v
                .parse()
                .map_err(|_| Error::config(format!("fault {k}: {v:?} is not a number")))?;
            let rate = || -> Result<f64> {
                if (0.0..=1.0).contains(&num) {
                    Ok(num)
                } else {
                    Err(Error::config(format!(
                        "fault {k}: rate {num} must be between 0 and 1"
                    )))
                }
            };
            match k {
                "429" => f.too_many = rate()?,
                "503" => f.unavailable = rate()?,
                "500" => f.internal = rate()?,
                "reset" => f.reset = rate()?,
                "truncate" => f.truncate = rate()?,
                "slow" => f.slow = rate()?,
                "batch_interrupt" => f.batch_interrupt = rate()?,
                "retry_after" => f.retry_after_secs = num as u64,
                "slow_ms" => f.slow_ms = num as u64,
                other => {
                    return Err(Error::config(format!(
                        "unknown fault {other:?}; known: 429, 503, 500, reset, truncate, slow, batch_interrupt, retry_after, slow_ms"
                    )));
                }
            }
        }
        Ok(f)
    }
}

/// What a perfect sync of one account lands: live contacts (sorted by id) and the ids
/// deleted so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Truth {
    pub contacts: Vec<ContactRecord>,
    pub deleted: Vec<String>,
}

/// The emulator clock: real time plus an adjustable offset.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Milliseconds since the epoch, emulator time.
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::SeqCst)
    }
    /// Moves the clock forward.
    pub fn advance(&self, secs: i64) {
        self.offset_ms.fetch_add(secs * 1000, Ordering::SeqCst);
    }
}

/// One write operation the Google emulator received and answered: a contact insert,
/// update or delete (alone or inside a batch) or a photo PUT or DELETE. Tests count them
/// to check that a client recorded one result per operation the API received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteLog {
    /// `insert`, `update`, `delete`, `photo_put` or `photo_delete`.
    pub op: String,
    /// The contact's id, where the request named one (a single insert names none).
    pub id: Option<String>,
    /// The status the operation was answered with (200, 201, 412, …).
    pub status: u16,
}

impl WriteLog {
    /// Whether the operation changed what the API holds (a 2xx answer).
    pub fn applied(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// State shared by both emulators.
pub struct Shared {
    pub config: EmulatorConfig,
    pub clock: Clock,
    pub base_url: String,
    pub google: Mutex<google::GoogleStore>,
    pub aurinko: Mutex<aurinko::AurinkoStore>,
    pub directory: Mutex<people::DirectoryStore>,
    faults: FaultInjector,
    stats: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    /// Counts one request under `key`.
    pub fn count(&self, key: &str) {
        self.add(key, 1);
    }

    /// Adds `n` to the counter `key` (used for the microseconds spent handling a kind of
    /// request, so benchmarks can compare a client's wall time with the server's own work).
    pub fn add(&self, key: &str, n: u64) {
        *self
            .stats
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default() += n;
    }
}

/// Serves `app` on `listener` in a task until the returned sender is sent to or dropped;
/// in-flight requests finish first. The emulator and the fault proxy stop this way.
fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    app: Router,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    (tx, task)
}

/// A running emulator.
pub struct Emulator {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Counts per route and per fault kind.
pub type Stats = BTreeMap<String, u64>;

impl Emulator {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts on the given address (`127.0.0.1:0` picks a free port).
    pub async fn start_on(config: EmulatorConfig, addr: &str) -> Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(Kind::Config, || format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let base_url = format!("http://{local}");
        let clock = Clock::default();
        let google = google::GoogleStore::generate(&config, &base_url, clock.now_ms());
        let aurinko = aurinko::AurinkoStore::generate(&config, clock.now_ms());
        let directory = people::DirectoryStore::generate(&config, clock.now_ms());
        let shared = Arc::new(Shared {
            faults: FaultInjector::new(config.faults.clone(), config.seed),
            config,
            clock,
            base_url,
            google: Mutex::new(google),
            aurinko: Mutex::new(aurinko),
            directory: Mutex::new(directory),
            stats: Mutex::new(BTreeMap::new()),
        });
        let api = Router::new()
            .merge(google::routes())
            .merge(aurinko::routes())
            .merge(people::routes())
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                inject_faults,
            ));
        let admin = Router::new()
            .route("/_emulator/truth/google", get(admin_google_truth))
            .route(
                "/_emulator/truth/aurinko/{account}",
                get(admin_aurinko_truth),
            )
            .route("/_emulator/mutate", post(admin_mutate))
            .route("/_emulator/stats", get(admin_stats))
            .route("/_emulator/writes", get(admin_writes))
            .route("/_emulator/clock", post(admin_clock))
            .route("/_emulator/faults", post(admin_faults))
            .route("/_emulator/aurinko/expire-tokens", post(admin_expire));
        let app = api.merge(admin).with_state(shared.clone());
        let (tx, task) = serve_until_stopped(listener, app);
        Ok(Emulator {
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// What the People API's directory lists now (see [`people::truth`]).
    pub fn directory_truth(&self) -> Vec<ContactRecord> {
        people::truth(&self.shared)
    }

    /// Adds, edits and deletes directory profiles now.
    pub fn mutate_directory(
        &self,
        inserts: usize,
        updates: usize,
        deletes: usize,
    ) -> MutationSummary {
        let now = self.shared.clock.now_ms();
        self.shared
            .directory
            .lock()
            .unwrap()
            .mutate(inserts, updates, deletes, now)
    }

    /// From the call after the next `after` calls of the directory's list on, answers
    /// each with `fault` (`None`: no fault).
    pub fn set_directory_fault(&self, after: u64, fault: Option<people::PermanentFault>) {
        self.shared
            .directory
            .lock()
            .unwrap()
            .set_fault(after, fault);
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.shared.base_url
    }
    /// The configuration it runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }
    /// The shared state (for advanced tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    /// Every write operation the Google API received and answered since the start (or
    /// the last [`Emulator::reset_stats`]), in order.
    pub fn google_writes(&self) -> Vec<WriteLog> {
        self.shared.google.lock().unwrap().writes.clone()
    }
    /// The Google domain's truth.
    pub fn google_truth(&self) -> Truth {
        self.shared
            .google
            .lock()
            .unwrap()
            .truth(&self.shared.base_url)
    }
    /// The photos of live Google contacts: id → (photo etag, bytes, content type).
    pub fn google_photos(&self) -> std::collections::BTreeMap<String, (String, Vec<u8>, String)> {
        let g = self.shared.google.lock().unwrap();
        g.contacts
            .values()
            .filter(|c| c.deleted_ms.is_none())
            .filter_map(|c| c.photo.clone().map(|p| (c.id.clone(), p)))
            .collect()
    }
    /// How many live Google contacts hold an element `ns`:`local` (e.g. unknown XML that
    /// must survive updates).
    pub fn google_count_elements(&self, ns: &str, local: &str) -> usize {
        let g = self.shared.google.lock().unwrap();
        g.contacts
            .values()
            .filter(|c| c.deleted_ms.is_none() && c.content.iter().any(|e| e.is(ns, local)))
            .count()
    }
    /// One Aurinko account's truth (`None` for an unknown account).
    pub fn aurinko_truth(&self, account: &str) -> Option<Truth> {
        self.shared.aurinko.lock().unwrap().truth(account)
    }
    /// How the Google side would read `entry` (an entry a client writes) once stored, in
    /// the unified schema; or the API's reason for refusing it.
    pub fn google_read_written(
        &self,
        entry: &str,
    ) -> Result<crate::model::schema::ContactRecord, String> {
        self.shared.google.lock().unwrap().read_written_entry(entry)
    }
    /// How the Aurinko side would read `body` (a contact a client creates) once stored,
    /// in the unified schema; or the API's reason for refusing it.
    pub fn aurinko_read_written(
        &self,
        account: &str,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<crate::model::schema::ContactRecord, String> {
        aurinko::read_written_body(account, body)
    }
    /// The Aurinko account ids.
    pub fn aurinko_accounts(&self) -> Vec<String> {
        self.shared.aurinko.lock().unwrap().account_ids()
    }
    /// The bearer token of an Aurinko account.
    pub fn aurinko_token(&self, account: &str) -> String {
        format!("{}-{account}", self.shared.config.token)
    }
    /// Applies random inserts, updates and deletes to the Google domain.
    pub fn mutate_google(&self, inserts: usize, updates: usize, deletes: usize) -> MutationSummary {
        let now = self.shared.clock.now_ms();
        self.shared
            .google
            .lock()
            .unwrap()
            .mutate(inserts, updates, deletes, now)
    }
    /// Applies random inserts, updates and deletes to every Aurinko account (or one).
    pub fn mutate_aurinko(
        &self,
        account: Option<&str>,
        inserts: usize,
        updates: usize,
        deletes: usize,
    ) -> MutationSummary {
        let now = self.shared.clock.now_ms();
        self.shared
            .aurinko
            .lock()
            .unwrap()
            .mutate(account, inserts, updates, deletes, now)
    }
    /// Request counts per route, plus `fault.*` counts.
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }
    /// Resets the request counts and the write log.
    pub fn reset_stats(&self) {
        self.shared.stats.lock().unwrap().clear();
        self.shared.google.lock().unwrap().writes.clear();
    }
    /// Moves the emulator clock forward (tombstone retention, token lifetimes).
    pub fn advance_clock(&self, secs: i64) {
        self.shared.clock.advance(secs);
    }
    /// Makes every Aurinko token issued so far answer 410 `syncToken.expired`.
    pub fn expire_aurinko_tokens(&self) {
        self.shared.aurinko.lock().unwrap().bump_epoch();
    }
    /// Replaces the fault rates.
    pub fn set_faults(&self, faults: FaultSpec) {
        self.shared.faults.set(faults);
    }
    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What a mutation did, by id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MutationSummary {
    pub inserted: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable pseudo-random hash (orders, ids, etags).
pub fn hash64(seed: u64, s: &str) -> u64 {
    s.bytes()
        .fold(splitmix(seed), |h, b| splitmix(h ^ u64::from(b)))
}

async fn inject_faults(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/people") {
        // The People API answers in Google's JSON errors, not Aurinko's under the same `/v1/`.
        return shared
            .faults
            .inject(req, next, |key| shared.count(key), people::fault_response)
            .await;
    }
    let aurinko = req.uri().path().starts_with("/v1/");
    // The two APIs' own error bodies for the injected statuses.
    let error = |status: StatusCode| {
        match (status, aurinko) {
        (StatusCode::TOO_MANY_REQUESTS, true) => aurinko::error_response(
            status,
            "rateLimitExceeded",
            "Rate limit exceeded by the remote provider",
        ),
        (StatusCode::TOO_MANY_REQUESTS, false) => (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            "Too Many Requests",
        )
            .into_response(),
        (StatusCode::SERVICE_UNAVAILABLE, true) => {
            aurinko::error_response(status, "serviceUnavailable", "Service unavailable")
        }
        (StatusCode::SERVICE_UNAVAILABLE, false) => (status, [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], "Temporary problem - please try again later and consider using batch operations. The user is over quota.").into_response(),
        (_, true) => aurinko::error_response(status, "internalError", "Internal error"),
        (_, false) => google::gdata_error(status, "internalError", "Internal Error"),
    }
    };
    shared
        .faults
        .inject(req, next, |key| shared.count(key), error)
        .await
}

/// Fault decisions: the rates in force and a seeded sequence of draws, one per request,
/// so a run with the same requests meets the same faults. Shared by the emulator's own
/// routes and [`proxy::FaultProxy`] (the same faults in front of a real server).
pub struct FaultInjector {
    spec: RwLock<FaultSpec>,
    counter: AtomicU64,
    seed: u64,
}

impl FaultInjector {
    /// Faults at `spec`'s rates, drawn from `seed`.
    pub fn new(spec: FaultSpec, seed: u64) -> FaultInjector {
        FaultInjector {
            spec: RwLock::new(spec),
            counter: AtomicU64::new(0),
            seed,
        }
    }

    /// The rates in force.
    pub fn spec(&self) -> FaultSpec {
        self.spec.read().unwrap().clone()
    }

    /// Replaces the rates.
    pub fn set(&self, spec: FaultSpec) {
        *self.spec.write().unwrap() = spec;
    }

    /// Runs `req` through `next` unless a fault is drawn: 429 (with `Retry-After`), 503
    /// and 500 (bodies by `error`) and a reset answer without passing the request on; a
    /// slow one waits first; a truncated one passes it on (the server does the work) and
    /// cuts the answer off half-way, a lost response. Each fault is counted by `count`
    /// as `fault.<kind>`.
    pub async fn inject(
        &self,
        req: Request,
        next: Next,
        count: impl Fn(&str),
        error: impl Fn(StatusCode) -> Response,
    ) -> Response {
        let spec = self.spec.read().unwrap().clone();
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let r = (splitmix(self.seed ^ splitmix(n)) >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        let mut hit = |p: f64| {
            acc += p;
            r < acc
        };
        if hit(spec.too_many) {
            count("fault.429");
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS);
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(spec.retry_after_secs),
            );
            return resp;
        }
        if hit(spec.unavailable) {
            count("fault.503");
            return error(StatusCode::SERVICE_UNAVAILABLE);
        }
        if hit(spec.internal) {
            count("fault.500");
            return error(StatusCode::INTERNAL_SERVER_ERROR);
        }
        if hit(spec.reset) {
            count("fault.reset");
            return broken_body(Vec::new(), 1024);
        }
        let truncate = hit(spec.truncate);
        let slow = hit(spec.slow);
        if slow {
            count("fault.slow");
            tokio::time::sleep(Duration::from_millis(spec.slow_ms)).await;
        }
        let resp = next.run(req).await;
        if truncate {
            count("fault.truncate");
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let mut broken =
                broken_body(bytes[..bytes.len() / 2].to_vec(), bytes.len().max(1) as u64);
            *broken.status_mut() = parts.status;
            if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                broken
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, ct.clone());
            }
            return broken;
        }
        resp
    }
}

/// A response that promises `len` bytes, sends `prefix`, then breaks the connection.
fn broken_body(prefix: Vec<u8>, len: u64) -> Response {
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(prefix)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated connection reset",
        )),
    ]);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

async fn admin_google_truth(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.google.lock().unwrap().truth(&s.base_url)).into_response()
}

async fn admin_aurinko_truth(
    State(s): State<Arc<Shared>>,
    Path(account): Path<String>,
) -> Response {
    match s.aurinko.lock().unwrap().truth(&account) {
        Some(t) => axum::Json(t).into_response(),
        None => (StatusCode::NOT_FOUND, "unknown account").into_response(),
    }
}

#[derive(Deserialize, Default)]
struct MutateCounts {
    #[serde(default)]
    inserts: usize,
    #[serde(default)]
    updates: usize,
    #[serde(default)]
    deletes: usize,
    account: Option<String>,
}

#[derive(Deserialize)]
struct MutateRequest {
    google: Option<MutateCounts>,
    aurinko: Option<MutateCounts>,
}

/// Most changes of each kind one `mutate` request may ask: more would hold the store's
/// lock (and the emulator's memory) for as long as a client likes.
pub const MAX_MUTATIONS: usize = 1_000_000;

async fn admin_mutate(
    State(s): State<Arc<Shared>>,
    axum::Json(req): axum::Json<MutateRequest>,
) -> Response {
    for m in [&req.google, &req.aurinko].into_iter().flatten() {
        if m.inserts.max(m.updates).max(m.deletes) > MAX_MUTATIONS {
            return (
                StatusCode::BAD_REQUEST,
                format!("at most {MAX_MUTATIONS} inserts, updates or deletes per request\n"),
            )
                .into_response();
        }
    }
    let now = s.clock.now_ms();
    let g = req.google.map(|m| {
        s.google
            .lock()
            .unwrap()
            .mutate(m.inserts, m.updates, m.deletes, now)
    });
    let a = req.aurinko.map(|m| {
        s.aurinko
            .lock()
            .unwrap()
            .mutate(m.account.as_deref(), m.inserts, m.updates, m.deletes, now)
    });
    // A line of its own, so that the answer `curl` prints ends before the next prompt.
    let body = format!("{}\n", serde_json::json!({ "google": g, "aurinko": a }));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn admin_stats(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.stats.lock().unwrap().clone()).into_response()
}

async fn admin_writes(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.google.lock().unwrap().writes.clone()).into_response()
}

#[derive(Deserialize)]
struct ClockRequest {
    advance_secs: i64,
}

async fn admin_clock(
    State(s): State<Arc<Shared>>,
    axum::Json(req): axum::Json<ClockRequest>,
) -> Response {
    s.clock.advance(req.advance_secs);
    axum::Json(serde_json::json!({ "now_ms": s.clock.now_ms() })).into_response()
}

#[derive(Deserialize)]
struct FaultsRequest {
    spec: String,
}

async fn admin_faults(
    State(s): State<Arc<Shared>>,
    axum::Json(req): axum::Json<FaultsRequest>,
) -> Response {
    match FaultSpec::parse(&req.spec) {
        Ok(f) => {
            s.faults.set(f);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn admin_expire(State(s): State<Arc<Shared>>) -> Response {
    s.aurinko.lock().unwrap().bump_epoch();
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_spec_parses_and_rejects() {
        let f =
            FaultSpec::parse("429=0.05,503=0.1,reset=0.01,truncate=0.01,slow=0.02,retry_after=0")
                .unwrap();
        assert_eq!(f.too_many, 0.05);
        assert_eq!(f.retry_after_secs, 0);
        assert!(
            FaultSpec::parse("418=0.1")
                .unwrap_err()
                .to_string()
                .contains("unknown fault")
        );
        assert!(FaultSpec::parse("429=2").is_err());
    }
}
