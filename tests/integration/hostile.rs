//! A hostile or broken server, file or folder (issue #20): a small HTTP server on
//! 127.0.0.1 that impersonates either API and answers each scenario, a second one on
//! another port that records any request reaching it, and the real binary run against
//! them. Each test checks the exit code, the message, what landed in the lake, that no
//! request went to the other origin, and that the token appears in no output: not on
//! stdout, not on stderr at trace level, not in any file of the lake.
//!
//! The server is raw HTTP/1.1 over a tokio `TcpListener` (one request per connection), so
//! a scenario can send anything: cut bodies, false lengths, gzip bombs. Every request loop
//! is bounded: the server answers 503 past [`MAX_HITS`] requests, and each run of the
//! binary is killed after [`RUN_LIMIT`].
//!
//! Add a scenario here for every defect of this kind found later.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contacts_etl::config::Pipeline;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The token every hostile pipeline uses; no output may contain it.
const SECRET: &str = "hostile-secret-5f0c2e91d7";
/// Requests a fixture answers before it answers only 503s.
const MAX_HITS: usize = 3000;
/// Longest run of the binary before the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// The fixture server.

/// One request as the fixture read it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The request's number on this server, from 1.
    pub n: usize,
    /// The body (its first MiB), as text.
    pub body: String,
}

impl Req {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    /// A query parameter, percent-decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fixture answers.
pub enum Reply {
    /// These bytes, status line and headers included, then the connection closes.
    Raw(Vec<u8>),
    /// Nothing, for a minute (a server that hangs).
    Hang,
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// A running fixture server.
pub struct Server {
    pub url: String,
    hits: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    /// Starts a server on 127.0.0.1 that answers every request with `handler`.
    pub async fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<Vec<Req>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (h, count, handler) = (h.clone(), count.clone(), handler.clone());
                tokio::spawn(async move {
                    let _ = serve_one(sock, &h, &count, &handler).await;
                });
            }
        });
        Server { url, hits }
    }

    /// A server that answers 200 to anything and records it: the "other origin".
    pub async fn other() -> Server {
        Server::start(|_| Reply::Raw(http(200, "text/plain", b"the other origin's data"))).await
    }

    /// The requests received so far.
    pub fn hits(&self) -> Vec<Req> {
        self.hits.lock().unwrap().clone()
    }
}

async fn serve_one(
    mut sock: tokio::net::TcpStream,
    hits: &Mutex<Vec<Req>>,
    count: &AtomicUsize,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 64 << 10 {
            return Ok(());
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // Read the request body (its first MiB), so the client sees its request taken whole.
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len.min(1 << 20) {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    let req = Req {
        method,
        target,
        headers,
        n,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    hits.lock().unwrap().push(req.clone());
    let reply = if n > MAX_HITS {
        Reply::Raw(http(503, "text/plain", b"fixture request cap reached"))
    } else {
        handler(&req)
    };
    match reply {
        Reply::Raw(bytes) => {
            sock.write_all(&bytes).await?;
            sock.shutdown().await?;
        }
        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
    }
    Ok(())
}

/// A complete response.
pub fn http(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    response(status, &[("Content-Type", content_type)], body)
}

/// A complete response with these headers (Content-Length is added).
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A redirect.
pub fn redirect(to: &str) -> Reply {
    Reply::Raw(response(302, &[("Location", to)], b""))
}

/// `n` zero bytes, gzip-compressed by hand (one fixed-Huffman deflate block of
/// length-258 back-references): a few KB on the wire that inflate to `n` bytes.
pub fn gzip_zeros(n: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        len: u32,
    }
    impl Bits {
        fn put(&mut self, v: u64, n: u32) {
            self.acc |= v << self.len;
            self.len += n;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, code: u64, n: u32) {
            let rev = (0..n).fold(0, |r, i| r | (((code >> i) & 1) << (n - 1 - i)));
            self.put(rev, n);
        }
    }
    assert!(n >= 1 && (n - 1).is_multiple_of(258), "1 + k·258 bytes");
    let mut b = Bits {
        out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255],
        acc: 0,
        len: 0,
    };
    b.put(1, 1); // last block
    b.put(1, 2); // fixed Huffman
    b.code(0x30, 8); // literal 0
    for _ in 0..(n - 1) / 258 {
        b.code(0b1100_0101, 8); // length 258 (code 285)
        b.code(0, 5); // distance 1
    }
    b.code(0, 7); // end of block
    b.put(0, 7); // flush to a byte
    let mut crc = crc32fast::Hasher::new();
    crc.update(&vec![0u8; n]);
    let mut out = b.out;
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------
// Google feeds and Aurinko pages.

const DOMAIN: &str = "example.com";

/// One Atom entry.
pub fn entry(id: &str) -> String {
    format!(
        "<entry gd:etag='\"e-{id}\"'><id>http://www.google.com/m8/feeds/contacts/{DOMAIN}/base/{id}</id><updated>2024-05-01T10:00:00.000Z</updated><title>Name {id}</title><gd:name><gd:fullName>Name {id}</gd:fullName></gd:name></entry>"
    )
}

/// A feed of these entries (raw XML each), with `totalResults` and a `next` link.
pub fn feed(entries: &[String], total: Option<u64>, next: Option<&str>) -> String {
    let mut s = String::from(
        "<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom' xmlns:openSearch='http://a9.com/-/spec/opensearch/1.1/' xmlns:gContact='http://schemas.google.com/contact/2008' xmlns:gd='http://schemas.google.com/g/2005'><id>example.com</id><updated>2024-05-01T12:00:00.000Z</updated>",
    );
    if let Some(n) = next {
        s.push_str(&format!(
            "<link rel='next' type='application/atom+xml' href='{}'/>",
            n.replace('&', "&amp;")
        ));
    }
    if let Some(t) = total {
        s.push_str(&format!(
            "<openSearch:totalResults>{t}</openSearch:totalResults>"
        ));
    }
    for e in entries {
        s.push_str(e);
    }
    s.push_str("</feed>");
    s
}

/// An Atom response.
pub fn atom(body: impl AsRef<[u8]>) -> Reply {
    Reply::Raw(http(
        200,
        "application/atom+xml; charset=UTF-8",
        body.as_ref(),
    ))
}

/// A JSON response.
pub fn json(v: serde_json::Value) -> Reply {
    Reply::Raw(http(200, "application/json", v.to_string().as_bytes()))
}

/// The feed URL of the domain on `base`, with a query.
pub fn feed_url(base: &str, query: &str) -> String {
    format!("{base}/m8/feeds/contacts/{DOMAIN}/full?{query}")
}

/// The Aurinko answers around the `/sync/updated` stream: sync start, an empty
/// `/sync/deleted`; `updated` answers the rest.
pub fn aurinko(
    updated: impl Fn(&Req) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    move |r: &Req| match r.path() {
        "/v1/contacts/sync" if r.method == "POST" => json(serde_json::json!({
            "ready": true, "syncUpdatedToken": "u0", "syncDeletedToken": "d0"
        })),
        "/v1/contacts/sync/deleted" => json(serde_json::json!({
            "records": [], "nextDeltaToken": "d1"
        })),
        "/v1/contacts/sync/updated" => updated(r),
        _ => Reply::Raw(http(404, "text/plain", b"not found")),
    }
}

/// One Aurinko contact.
pub fn contact(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "etag": format!("e-{id}"),
        "lastModifiedTime": "2024-05-01T10:00:00Z",
        "name": { "displayName": format!("Name {id}") }
    })
}

// ---------------------------------------------------------------------------------------
// Pipelines, runs and checks.

/// A test folder with the token in a file.
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/token"), SECRET).unwrap();
    dir
}

/// A Google pipeline against `base` (few retries, short delays); `extra` goes into the
/// source.
pub fn google_pipeline(dir: &Path, base: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[lake]\nurl = \"lake\"\n\n[[sources]]\nname = \"shared\"\nprovider = \"google\"\ndomain = \"{DOMAIN}\"\nbase_url = \"{base}\"\nauth = {{ kind = \"bearer\", token_file = \"secrets/token\" }}\nconcurrency = 4\nmax_retries = 1\nretry_base_ms = 5\ntimeout_secs = 20\n{extra}\n"
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An Aurinko pipeline against `base` with account 101.
pub fn aurinko_pipeline(dir: &Path, base: &str) -> PathBuf {
    let text = format!(
        "[lake]\nurl = \"lake\"\n\n[[sources]]\nname = \"crm\"\nprovider = \"aurinko\"\nbase_url = \"{base}\"\naccounts = [{{ id = \"101\", token_file = \"secrets/token\" }}]\nmax_retries = 1\nretry_base_ms = 5\ntimeout_secs = 20\n"
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What a run of the binary left.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with trace logging (so a secret in any log line would show), killed
/// after [`RUN_LIMIT`].
pub async fn cli(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(crate::bin());
    cmd.args(args)
        .args(["--log-level", "trace"])
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} ran longer than {RUN_LIMIT:?}"))
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `sync PIPELINE` plus `args`.
pub async fn sync_cli(pipeline: &Path, args: &[&str]) -> Run {
    let mut a = vec!["sync", pipeline.to_str().unwrap()];
    a.extend_from_slice(args);
    cli(&a, &[]).await
}

/// The secret is in no output of `run` and in no file under `dir` (the lake, the spill).
pub fn assert_no_secret(run: &Run, dir: &Path) {
    assert!(
        !run.stdout.contains(SECRET),
        "the token is on stdout:\n{}",
        run.stdout
    );
    assert!(!run.stderr.contains(SECRET), "the token is on stderr");
    let mut stack = vec![dir.join("lake")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "the token is in {}",
                    p.display()
                );
            }
        }
    }
}

/// The ids landed in `contacts` for a source and account, sorted.
pub async fn landed(pipeline: &Path, source: &str, account: &str) -> Vec<String> {
    let p = Pipeline::load(pipeline).unwrap();
    let lake = contacts_etl::sync::lake_of(&p).unwrap();
    let mut ids: Vec<String> = lake
        .contacts_of(source, account)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

/// The error of the last failed run of the account in `sync_runs` (it is recorded).
pub async fn recorded_error(pipeline: &Path) -> String {
    let p = Pipeline::load(pipeline).unwrap();
    let lake = contacts_etl::sync::lake_of(&p).unwrap();
    let b = contacts_etl::sql::query(
        &lake,
        "SELECT error FROM sync_runs WHERE status = 'failed' ORDER BY finished_at DESC LIMIT 1",
    )
    .await
    .unwrap();
    contacts_etl::sql::render(&b, "csv").unwrap()
}

/// A failed sync: exit 1, the message on stderr holds every one of `words`, nothing
/// landed, the failure is recorded, no secret anywhere, nothing sent to `other`.
pub async fn assert_failed_cleanly(
    run: &Run,
    dir: &Path,
    pipeline: &Path,
    (source, account): (&str, &str),
    words: &[&str],
    other: Option<&Server>,
) {
    assert_eq!(run.code, Some(1), "exit code; stderr:\n{}", run.stderr);
    for w in words {
        assert!(
            run.stderr.contains(w),
            "stderr lacks {w:?}:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stdout.contains("FAILED"),
        "the summary reports it:\n{}",
        run.stdout
    );
    assert_eq!(
        landed(pipeline, source, account).await,
        Vec::<String>::new(),
        "nothing lands"
    );
    let recorded = recorded_error(pipeline).await;
    assert!(recorded.contains(words[0]), "sync_runs: {recorded}");
    if let Some(o) = other {
        assert_eq!(
            o.hits().len(),
            0,
            "a request reached the other origin: {:?}",
            o.hits()
        );
    }
    assert_no_secret(run, dir);
}

/// `cli` with a cleared environment plus `env` (for the storage checks).
pub async fn cli_clean_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(crate::bin());
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Credentials go only to the origin of base_url.

/// Page 1's `next` link points at another port: the link is named, never requested, and
/// a full refresh that meets it leaves the lake as the last good run left it (no
/// contact is deleted for being "absent").
#[tokio::test]
async fn hostile_next_link_to_another_origin_is_refused_and_the_lake_kept() {
    let other = Server::other().await;
    let next = format!(
        "{}/m8/feeds/contacts/{DOMAIN}/full?start-index=2",
        other.url
    );
    let hostile = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = hostile.clone();
    let server = Server::start(move |_| {
        if h.load(Ordering::SeqCst) {
            atom(feed(&[entry("a")], Some(2), Some(&next)))
        } else {
            atom(feed(&[entry("a"), entry("b")], Some(2), None))
        }
    })
    .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let good = sync_cli(&p, &[]).await;
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    hostile.store(true, Ordering::SeqCst);
    let run = sync_cli(&p, &["--full-refresh"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    for w in ["leads outside", &other.url, "page 2"] {
        assert!(
            run.stderr.contains(w),
            "stderr lacks {w:?}:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        landed(&p, "shared", DOMAIN).await,
        ["a", "b"],
        "the lake is unchanged"
    );
    assert!(recorded_error(&p).await.contains("leads outside"));
    assert_eq!(other.hits().len(), 0, "a request reached the other origin");
    assert_no_secret(&run, dir.path());
}

/// The feed URL redirects to another origin: the redirect is refused at once (no
/// retries), named, and nothing of the other origin lands.
#[tokio::test]
async fn hostile_redirect_to_another_origin_is_refused() {
    let other = Server::other().await;
    let to = feed_url(&other.url, "x=1");
    let server = Server::start(move |_| redirect(&to)).await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("shared", DOMAIN),
        &["redirected to", &other.url],
        Some(&other),
    )
    .await;
    assert_eq!(server.hits().len(), 1, "a refused redirect is not retried");
}

/// The same for Aurinko: the sync start redirects elsewhere.
#[tokio::test]
async fn hostile_aurinko_redirect_to_another_origin_is_refused() {
    let other = Server::other().await;
    let to = format!("{}/v1/contacts/sync", other.url);
    let server = Server::start(move |_| redirect(&to)).await;
    let dir = workdir();
    let p = aurinko_pipeline(dir.path(), &server.url);
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("crm", "101"),
        &["redirected to", &other.url],
        Some(&other),
    )
    .await;
}

/// A photo link on another origin is not requested: the photo is read from the
/// documented URL on base_url, with the credentials, and lands.
#[tokio::test]
async fn hostile_photo_link_to_another_origin_is_not_followed() {
    let other = Server::other().await;
    let link = format!("{}/photos/a", other.url);
    let server = Server::start(move |r| {
        if r.path().starts_with("/m8/feeds/photos/media/") {
            return Reply::Raw(response(
                200,
                &[("Content-Type", "image/jpeg"), ("ETag", "\"ph2\"")],
                b"\xFF\xD8\xFF\xE0 photo of a",
            ));
        }
        let e = entry("a").replace(
            "</title>",
            &format!("</title><link rel='http://schemas.google.com/contacts/2008/rel#photo' type='image/*' href='{link}' gd:etag='\"ph\"'/>"),
        );
        atom(feed(&[e], Some(1), None))
    })
    .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "photos = true");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(other.hits().len(), 0, "the photo link's origin was asked");
    let photo = server
        .hits()
        .into_iter()
        .find(|r| r.path() == format!("/m8/feeds/photos/media/{DOMAIN}/a"))
        .expect("the photo is read from base_url");
    assert_eq!(
        photo.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let b = contacts_etl::sql::query(&lake, "SELECT id FROM contact_photos")
        .await
        .unwrap();
    assert!(contacts_etl::sql::render(&b, "csv").unwrap().contains('a'));
    assert_no_secret(&run, dir.path());
}

/// Credentials inside base_url are refused like any secret in the file: exit 2, the
/// secret not echoed, no request sent.
#[tokio::test]
async fn hostile_credentials_in_base_url_are_refused() {
    let server = Server::other().await;
    let dir = workdir();
    let with_creds = server
        .url
        .replace("http://", &format!("http://user:{SECRET}@"));
    let p = google_pipeline(dir.path(), &with_creds, "");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("sources[0].base_url carries a user name or password"),
        "{}",
        run.stderr
    );
    assert_eq!(server.hits().len(), 0);
    assert_no_secret(&run, dir.path());
}

// ---------------------------------------------------------------------------------------
// 2. totalResults and page bounds.

/// `totalResults` of 10^12 is an error on page 1: no page list is planned, the process
/// does not abort, and the failure is recorded.
#[tokio::test]
async fn hostile_huge_total_results_fail_on_page_one() {
    let server = Server::start(|r| {
        let next = format!(
            "http://{}{}&start-index=2",
            r.header("host").unwrap(),
            r.target
        );
        atom(feed(&[entry("a")], Some(1_000_000_000_000), Some(&next)))
    })
    .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("shared", DOMAIN),
        &["totalResults 1000000000000", "page 1"],
        None,
    )
    .await;
    assert_eq!(server.hits().len(), 1, "only page 1 was asked for");
}

/// `totalResults` overstated (within the bound) with an empty page 2: the read ends at
/// the empty page, whatever `next` link it carries, and the lake holds exactly page 1.
#[tokio::test]
async fn hostile_empty_page_ends_the_read() {
    let server = Server::start(|r| {
        let host = r.header("host").unwrap().to_string();
        let start: u64 = r
            .param("start-index")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let next = feed_url(
            &format!("http://{host}"),
            &format!("start-index={}", start + 500),
        );
        if r.param("updated-min").is_some() {
            atom(feed(&[], Some(0), None))
        } else if start == 1 {
            atom(feed(
                &[entry("a"), entry("b")],
                Some(1_000_000),
                Some(&next),
            ))
        } else {
            atom(feed(&[], Some(1_000_000), Some(&next)))
        }
    })
    .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(landed(&p, "shared", DOMAIN).await, ["a", "b"]);
    let hits = server.hits().len();
    assert!(hits <= 10, "{hits} requests for 2 contacts");
    assert_no_secret(&run, dir.path());
}

/// Ever new `next` links past what `totalResults` (3, one per page) can need: stopped at
/// the bound, nothing lands.
#[tokio::test]
async fn hostile_endless_next_links_stop_at_the_page_bound() {
    let server = Server::start(|r| {
        let host = r.header("host").unwrap().to_string();
        let start: u64 = r
            .param("start-index")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let next = feed_url(
            &format!("http://{host}"),
            &format!("max-results=1&start-index={}", start + 1),
        );
        atom(feed(&[entry(&format!("c{start}"))], Some(3), Some(&next)))
    })
    .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "page_size = 1");
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("shared", DOMAIN),
        &["more pages than totalResults (3)"],
        None,
    )
    .await;
    let hits = server.hits().len();
    assert!((10..=14).contains(&hits), "{hits} requests");
}

// ---------------------------------------------------------------------------------------
// 3. Paging loops.

/// A `next` link equal to the page itself: a loop, stopped before the second request.
#[tokio::test]
async fn hostile_next_link_to_itself_is_a_loop() {
    let server = Server::start(|r| {
        let me = format!("http://{}{}", r.header("host").unwrap(), r.target);
        atom(feed(&[entry("a")], None, Some(&me)))
    })
    .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("shared", DOMAIN),
        &["a second time", "paging loop"],
        None,
    )
    .await;
    assert_eq!(server.hits().len(), 1);
}

/// An Aurinko `nextPageToken` that repeats: a loop, stopped at the repeat.
#[tokio::test]
async fn hostile_aurinko_repeated_page_token_is_a_loop() {
    let server = Server::start(aurinko(|_| {
        json(serde_json::json!({ "records": [contact("c1")], "nextPageToken": "again" }))
    }))
    .await;
    let dir = workdir();
    let p = aurinko_pipeline(dir.path(), &server.url);
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("crm", "101"),
        &["nextPageToken it had sent before", "/sync/updated page 2"],
        None,
    )
    .await;
    let updated = server
        .hits()
        .iter()
        .filter(|r| r.path().ends_with("/updated"))
        .count();
    assert_eq!(updated, 2);
}

/// Empty Aurinko pages, each with a new token, forever: stopped after a bounded number.
#[tokio::test]
async fn hostile_aurinko_endless_empty_pages_stop() {
    let server = Server::start(aurinko(|r| {
        json(serde_json::json!({ "records": [], "nextPageToken": format!("p{}", r.n) }))
    }))
    .await;
    let dir = workdir();
    let p = aurinko_pipeline(dir.path(), &server.url);
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("crm", "101"),
        &["empty pages in a row"],
        None,
    )
    .await;
    let updated = server
        .hits()
        .iter()
        .filter(|r| r.path().ends_with("/updated"))
        .count();
    assert!(updated <= 101, "{updated} pages");
}

// ---------------------------------------------------------------------------------------
// What already held: hostile bodies fail the page with a clear message.

/// Runs one Google sync against a server that answers every request with `reply` and
/// checks the clean failure with these words.
async fn google_body_fails(
    reply: impl Fn() -> Reply + Send + Sync + 'static,
    words: &[&str],
) -> Run {
    let server = Server::start(move |_| reply()).await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(&run, dir.path(), &p, ("shared", DOMAIN), words, None).await;
    run
}

#[tokio::test]
async fn hostile_entity_bomb_is_refused() {
    let mut doctype = String::from("<!DOCTYPE feed [<!ENTITY e0 \"ha\">");
    for i in 1..10 {
        let prev = format!("&e{};", i - 1).repeat(10);
        doctype.push_str(&format!("<!ENTITY e{i} \"{prev}\">"));
    }
    doctype.push_str("]>");
    let body = feed(&[entry("a").replace("Name a", "&e9;")], Some(1), None).replacen(
        "<feed",
        &format!("{doctype}<feed"),
        1,
    );
    google_body_fails(move || atom(&body), &["DOCTYPE"]).await;
}

#[tokio::test]
async fn hostile_external_entity_is_refused() {
    let body = feed(&[entry("a").replace("Name a", "&x;")], Some(1), None).replacen(
        "<feed",
        "<!DOCTYPE feed [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><feed",
        1,
    );
    let run = google_body_fails(move || atom(&body), &["DOCTYPE"]).await;
    assert!(!run.stderr.contains("root:"), "a local file was read");
}

#[tokio::test]
async fn hostile_page_over_10_mib_is_refused() {
    let body = feed(&[entry("a")], Some(1), None).replace(
        "</feed>",
        &format!("<!--{}--></feed>", "x".repeat(11 << 20)),
    );
    google_body_fails(move || atom(&body), &["10485760-byte limit"]).await;
}

/// 11 MiB of zeros in a few KB of gzip: the limit holds on the inflated size.
#[tokio::test]
async fn hostile_gzip_bomb_is_refused() {
    let gz = gzip_zeros(1 + 258 * ((11 << 20) / 258 + 1));
    assert!(gz.len() < 200 << 10, "{} bytes on the wire", gz.len());
    google_body_fails(
        move || {
            Reply::Raw(response(
                200,
                &[
                    ("Content-Type", "application/atom+xml"),
                    ("Content-Encoding", "gzip"),
                ],
                &gz,
            ))
        },
        &["10485760-byte limit"],
    )
    .await;
}

#[tokio::test]
async fn hostile_invalid_utf8_is_refused() {
    let mut body = feed(&[entry("a")], Some(1), None).into_bytes();
    let at = body.windows(6).position(|w| w == b"Name a").unwrap();
    body[at] = 0xFF;
    google_body_fails(move || atom(&body), &["UTF-8"]).await;
}

#[tokio::test]
async fn hostile_entry_without_id_is_refused() {
    let e = entry("b").replace(
        &format!("<id>http://www.google.com/m8/feeds/contacts/{DOMAIN}/base/b</id>"),
        "",
    );
    let body = feed(&[entry("a"), e], Some(2), None);
    google_body_fails(move || atom(&body), &["<id>"]).await;
}

/// A body shorter than its Content-Length, every time: retried, then a clear failure.
#[tokio::test]
async fn hostile_cut_body_is_refused() {
    let body = feed(&[entry("a")], Some(1), None);
    google_body_fails(
        move || {
            let mut r = response(
                200,
                &[("Content-Type", "application/atom+xml")],
                body.as_bytes(),
            );
            let cut = r.len() - body.len() / 2;
            r.truncate(cut);
            // Announce the whole length, send half.
            Reply::Raw(r)
        },
        &["cut off"],
    )
    .await;
}

/// Aurinko records whose fields have the wrong JSON types.
#[tokio::test]
async fn hostile_aurinko_wrong_json_types_are_refused() {
    let server = Server::start(aurinko(|_| {
        json(serde_json::json!({
            "records": [{ "id": 5, "name": "not an object" }],
            "nextDeltaToken": "u1"
        }))
    }))
    .await;
    let dir = workdir();
    let p = aurinko_pipeline(dir.path(), &server.url);
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("crm", "101"),
        &["/sync/updated page 1"],
        None,
    )
    .await;
}

/// 4. Deep nesting inside an entry must fail the page, never drop the next entry.
#[tokio::test]
async fn hostile_deep_nesting_fails_the_page() {
    let deep = format!("{}{}", "<x>".repeat(100_000), "</x>".repeat(100_000));
    let body = feed(
        &[
            entry("a").replace("</title>", &format!("</title>{deep}")),
            entry("b"),
        ],
        Some(2),
        None,
    );
    google_body_fails(move || atom(&body), &["page 1"]).await;
}

/// 8d. An HTML page where a feed was expected says so (not "entity expansion").
#[tokio::test]
async fn hostile_html_page_is_named_as_such() {
    let run = google_body_fails(
        || atom("<!DOCTYPE html><html><head><title>Hi</title></head><body>proxy</body></html>"),
        &["HTML"],
    )
    .await;
    assert!(!run.stderr.contains("entity expansion"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// 5. Hostile photo folders.

/// A `--photos` folder with a link to /etc/passwd, a 2 GiB sparse file, a FIFO and text
/// named .jpg: each is an invalid row with its reason, quickly, with no read of the big
/// file and no wait on the FIFO; only the real image is planned.
#[tokio::test]
async fn hostile_photo_folder_reads_regular_images_only() {
    use contacts_etl::plan::Mode;
    use contacts_etl::plan::photos::{PhotoAction, PhotoOpKind, plan_photos};
    let emu = contacts_etl::emulator::Emulator::start(crate::google_only(6))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write_pipeline(
        dir.path(),
        &emu,
        &crate::PipelineSpec {
            extra_google: "photos = true\n",
            ..Default::default()
        },
    );
    crate::assert_ok(&crate::sync(&p, false).await);
    let ids: Vec<String> = emu
        .google_truth()
        .contacts
        .into_iter()
        .map(|c| c.id)
        .collect();
    let folder = dir.path().join("photos");
    std::fs::create_dir(&folder).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", folder.join(format!("{}.jpg", ids[0]))).unwrap();
    let big = std::fs::File::create(folder.join(format!("{}.png", ids[1]))).unwrap();
    big.set_len(2 << 30).unwrap();
    let fifo = folder.join(format!("{}.gif", ids[2]));
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::write(folder.join(format!("{}.jpg", ids[3])), b"just text").unwrap();
    // A PNG named .jpg goes up as what its bytes are.
    std::fs::write(
        folder.join(format!("{}.jpg", ids[4])),
        b"\x89PNG\r\n\x1a\n real",
    )
    .unwrap();
    let pipeline = Pipeline::load(&p).unwrap();
    let started = std::time::Instant::now();
    let plan = tokio::time::timeout(
        Duration::from_secs(20),
        plan_photos(&pipeline, "shared", folder.to_str().unwrap(), Mode::Upsert),
    )
    .await
    .expect("the plan waited on the FIFO")
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = plan.render(10);
    let reason = |id: &str| {
        plan.invalid
            .iter()
            .find(|i| i.id.as_deref() == Some(id))
            .map(|i| i.reason.clone())
            .unwrap_or_else(|| panic!("{id} is not invalid:\n{text}"))
    };
    assert!(reason(&ids[0]).contains("not a regular file"), "{text}");
    assert!(reason(&ids[1]).contains("2147483648 bytes"), "{text}");
    assert!(reason(&ids[2]).contains("not a regular file"), "{text}");
    assert!(reason(&ids[3]).contains("not a JPEG, PNG"), "{text}");
    assert_eq!(plan.count(PhotoOpKind::Put), 1, "{text}");
    assert_eq!(plan.ops[0].id, ids[4]);
    assert!(
        matches!(&plan.ops[0].action, PhotoAction::Put { content_type, .. } if content_type == "image/png"),
        "{:?}",
        plan.ops[0].id
    );
    assert!(!text.contains("root:"), "{text}");
}

// ---------------------------------------------------------------------------------------
// 6. Account ids and accounts files.

fn accounts_pipeline(dir: &Path, base: &str, csv: &str) -> PathBuf {
    std::fs::write(dir.join("accounts.csv"), csv).unwrap();
    let text = format!(
        "[lake]\nurl = \"lake\"\n\n[[sources]]\nname = \"crm\"\nprovider = \"aurinko\"\nbase_url = \"{base}\"\naccounts_file = \"accounts.csv\"\nmax_retries = 1\nretry_base_ms = 5\n"
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Quoted CSV fields are unquoted (the token file is found and sent); bad, long and
/// duplicated ids are refused where they are configured, naming file and line, before
/// any request.
#[tokio::test]
async fn hostile_accounts_files_are_csv_and_ids_are_checked() {
    let server = Server::start(aurinko(|_| {
        json(serde_json::json!({ "records": [contact("c1")], "nextDeltaToken": "u1" }))
    }))
    .await;
    let dir = workdir();
    let p = accounts_pipeline(
        dir.path(),
        &server.url,
        "id,token_env,token_file\n\"101\",\"\",\"secrets/token\"\n",
    );
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(landed(&p, "crm", "101").await, ["c1"]);
    let bearer = format!("Bearer {SECRET}");
    assert!(
        server
            .hits()
            .iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str()))
    );
    assert_no_secret(&run, dir.path());
    let hits = server.hits().len();
    let long = "7".repeat(300);
    for (csv, line, words) in [
        ("101,,secrets/token\n../x,,secrets/token\n", 2, vec!["'/'"]),
        (
            "101,,secrets/token\n10%2F1,,secrets/token\n",
            2,
            vec!["'%'"],
        ),
        (
            "101,,secrets/token\n102,,secrets/token\n101,,secrets/token\n",
            3,
            vec!["twice", "accounts.csv:1"],
        ),
        (
            &*format!("{long},,secrets/token\n"),
            1,
            vec!["300 characters"],
        ),
        ("\"101,,secrets/token\n", 1, vec!["not closed"]),
    ] {
        accounts_pipeline(dir.path(), &server.url, csv);
        let run = sync_cli(&p, &[]).await;
        assert_eq!(run.code, Some(2), "{csv}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("accounts.csv:{line}")),
            "{csv}: {}",
            run.stderr
        );
        for w in words {
            assert!(run.stderr.contains(w), "{csv}: {}", run.stderr);
        }
        assert_no_secret(&run, dir.path());
    }
    assert_eq!(
        server.hits().len(),
        hits,
        "a refused configuration sends nothing"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Temporary files of stopped and dead runs.

fn spills(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("contacts-etl-extract-"))
        .collect()
}

/// SIGTERM and SIGINT in the middle of an extract: the run exits 143 / 130 with a
/// message, and its spill folder is gone. A folder left by a run that died (its lock
/// free) is removed by the next run; nothing of the stopped runs landed.
#[tokio::test]
async fn hostile_stopped_runs_leave_no_spill_and_dead_ones_are_swept() {
    let good = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g = good.clone();
    let server = Server::start(move |r| {
        let host = r.header("host").unwrap().to_string();
        if g.load(Ordering::SeqCst) || r.param("updated-min").is_some() {
            return atom(feed(&[entry("a")], Some(1), None));
        }
        if r.param("start-index").is_some() {
            return Reply::Hang;
        }
        let next = feed_url(&format!("http://{host}"), "start-index=2");
        // Notes alone more than an extract holds in memory (`HOLD_BYTES`), so the run
        // spills; the page stays under the client's limit (`MAX_PAGE_BYTES`).
        let notes = "n".repeat(contacts_etl::model::spill::HOLD_BYTES / 3 + 1);
        let big: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                entry(id).replace(
                    "</entry>",
                    &format!("<content type='text'>{notes}</content></entry>"),
                )
            })
            .collect();
        atom(feed(&big, Some(1000), Some(&next)))
    })
    .await;
    let dir = workdir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let p = google_pipeline(dir.path(), &server.url, "");
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let child = tokio::process::Command::new(crate::bin())
            .args(["sync", p.to_str().unwrap(), "--log-level", "trace"])
            .env("TMPDIR", &tmp)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while spills(&tmp).is_empty()
            || !server
                .hits()
                .iter()
                .any(|r| r.param("start-index").is_some())
        {
            assert!(std::time::Instant::now() < deadline, "no spill appeared");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: signals a child this test started.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("the run did not stop")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(&format!("stopped by {name}")), "{stderr}");
        assert!(!stderr.contains(SECRET));
        assert_eq!(spills(&tmp), Vec::<String>::new(), "{name} left a spill");
    }
    assert_eq!(landed(&p, "shared", DOMAIN).await, Vec::<String>::new());
    // A run killed outright leaves its folder with a free lock; the next run sweeps it.
    let dead = tmp.join(format!("{}dead", "contacts-etl-extract-"));
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("lock"), b"").unwrap();
    std::fs::write(dead.join("rows.arrow"), vec![0u8; 4096]).unwrap();
    good.store(true, Ordering::SeqCst);
    let out = tokio::process::Command::new(crate::bin())
        .args(["sync", p.to_str().unwrap()])
        .env("TMPDIR", &tmp)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dead.exists(), "the dead run's spill was not swept");
    assert_eq!(spills(&tmp), Vec::<String>::new());
    assert_eq!(landed(&p, "shared", DOMAIN).await, ["a"]);
}

// ---------------------------------------------------------------------------------------
// 8c. Storage configuration.

/// An s3:// lake with no way to get credentials: exit 2 within seconds, naming the
/// settings to provide, with no request anywhere but 127.0.0.1 (the metadata service is
/// pointed at a closed local port, at one that answers 403 to everything, at one that
/// answers an HTML page to everything, or switched off). One clean message: no AWS SDK
/// warning, no "Kernel error".
#[tokio::test]
async fn hostile_s3_lake_without_credentials_exits_2_quickly() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let forbidden = Server::start(|_| Reply::Raw(http(403, "text/plain", b"Forbidden"))).await;
    let portal = Server::start(|_| {
        Reply::Raw(http(
            200,
            "text/html",
            b"<html><body>Sign in to the Wi-Fi</body></html>",
        ))
    })
    .await;
    let server = Server::other().await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("url = \"lake\"", "url = \"s3://etl-test/hostile\"");
    std::fs::write(&p, text).unwrap();
    let home = dir.path().to_str().unwrap();
    let imds = format!("http://127.0.0.1:{closed}");
    // object_store reads AWS_METADATA_ENDPOINT, the AWS SDK AWS_EC2_METADATA_SERVICE_ENDPOINT.
    let answering = |url| {
        vec![
            ("HOME", home),
            ("AWS_METADATA_ENDPOINT", url),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url),
        ]
    };
    for env in [
        vec![("HOME", home), ("AWS_METADATA_ENDPOINT", imds.as_str())],
        vec![("HOME", home), ("AWS_EC2_METADATA_DISABLED", "true")],
        answering(forbidden.url.as_str()),
        answering(portal.url.as_str()),
    ] {
        for cmd in ["sync", "status"] {
            let started = std::time::Instant::now();
            let run = cli_clean_env(&[cmd, p.to_str().unwrap()], &env).await;
            assert_eq!(run.code, Some(2), "{cmd} {env:?}: {}", run.stderr);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
            for w in [
                "no S3 credentials",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_PROFILE",
            ] {
                assert!(run.stderr.contains(w), "{cmd}: {}", run.stderr);
            }
            assert_eq!(
                run.stderr.lines().count(),
                1,
                "{cmd} {env:?}: {}",
                run.stderr
            );
            assert!(
                !run.stderr.contains("WARN") && !run.stderr.contains("Kernel"),
                "{cmd} {env:?}: {}",
                run.stderr
            );
        }
    }
    // The metadata services were asked (a session token first), and refused or failed.
    assert!(!forbidden.hits().is_empty() && !portal.hits().is_empty());
    assert_eq!(server.hits().len(), 0);
}

/// An S3 endpoint that takes the connection and never answers, or never takes it (a
/// listening socket nobody accepts on): `status`, `query` and `sync` fail (exit 1) with
/// one error naming the endpoint's host and port, never the secret key, instead of
/// object_store's three minutes of retries (the lake's default `timeout` and
/// `retry_timeout`, [``contacts_etl::lake::S3_DEFAULTS``]).
#[tokio::test]
async fn hostile_s3_endpoint_that_never_answers_fails_naming_it() {
    // Accepts each connection and holds it, reading nothing and answering nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // Listens (the kernel completes the handshake) but never accepts.
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let deaf_port = deaf.local_addr().unwrap().port();
    let server = Server::other().await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("url = \"lake\"", "url = \"s3://etl-test/hostile\"");
    std::fs::write(&p, text).unwrap();
    let home = dir.path().to_str().unwrap();
    let secret = "s3cr3t-never-shown-0123";
    let pipeline = p.to_str().unwrap();
    let runs = [
        (silent_port, vec!["status", pipeline]),
        (
            silent_port,
            vec!["query", pipeline, "SELECT count(*) FROM contacts"],
        ),
        (silent_port, vec!["sync", pipeline]),
        (deaf_port, vec!["status", pipeline]),
    ];
    // Side by side: each waits out its timeouts, which need not add up.
    let done = futures::future::join_all(runs.iter().map(|(port, args)| async move {
        let endpoint = format!("http://127.0.0.1:{port}");
        let env = [
            ("HOME", home),
            ("AWS_ACCESS_KEY_ID", "hostile-key"),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ];
        // RUN_LIMIT (90 s) stops a hang; without the defaults it took ~180 s.
        cli_clean_env(args, &env).await
    }))
    .await;
    for ((port, args), run) in runs.iter().zip(done) {
        assert_eq!(run.code, Some(1), "{args:?} on port {port}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "the object store at http://127.0.0.1:{port} did not answer"
            )),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        assert!(
            !run.stderr.contains(secret) && !run.stderr.contains("list-type"),
            "{}",
            run.stderr
        );
    }
    drop(deaf);
}

// ---------------------------------------------------------------------------------------
// Reflected secrets.

/// A server that echoes the credentials it received into its error answers (here an
/// HTML title; below a redirect target and a value that fails to decode): the token
/// still reaches no output and no file of the lake; the message says `***` where it stood.
#[tokio::test]
async fn hostile_reflected_token_in_an_error_page_is_redacted() {
    let auth = |r: &Req| r.header("authorization").unwrap_or("").to_string();
    // Google: a 400 whose HTML title carries the header.
    let server = Server::start(move |r| {
        let body = format!(
            "<HTML><HEAD><TITLE>Bad request: {}</TITLE></HEAD></HTML>",
            auth(r)
        );
        Reply::Raw(http(400, "text/html", body.as_bytes()))
    })
    .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("shared", DOMAIN),
        &["Bad request: ***"],
        None,
    )
    .await;
}

/// A redirect (refused: another origin) whose target carries the token.
#[tokio::test]
async fn hostile_reflected_token_in_a_redirect_is_redacted() {
    let auth = |r: &Req| r.header("authorization").unwrap_or("").to_string();
    let other = Server::other().await;
    let other_url = other.url.clone();
    let server =
        Server::start(move |r| redirect(&format!("{other_url}/?t={}", auth(r).replace(' ', "+"))))
            .await;
    let dir = workdir();
    let p = google_pipeline(dir.path(), &server.url, "");
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("shared", DOMAIN),
        &["redirected to", "?t=Bearer+***"],
        Some(&other),
    )
    .await;
}

/// Aurinko: the token as a value of the wrong type in a record (serde quotes it).
#[tokio::test]
async fn hostile_reflected_token_in_a_bad_value_is_redacted() {
    let auth = |r: &Req| r.header("authorization").unwrap_or("").to_string();
    let server = Server::start(aurinko(move |r| {
        json(serde_json::json!({
            "records": [{ "id": "c1", "name": auth(r) }],
            "nextDeltaToken": "u1"
        }))
    }))
    .await;
    let dir = workdir();
    let p = aurinko_pipeline(dir.path(), &server.url);
    let run = sync_cli(&p, &[]).await;
    assert_failed_cleanly(
        &run,
        dir.path(),
        &p,
        ("crm", "101"),
        &["/sync/updated page 1", "***"],
        None,
    )
    .await;
}

/// The emulator's `mutate` refuses counts it could not make in bounded time and memory
/// (2^64-1 inserts ate memory and blocked every other request); `stats` still answers.
#[tokio::test]
async fn hostile_emulator_mutate_counts_are_bounded() {
    let emu = contacts_etl::emulator::Emulator::start(crate::aurinko_only(1, 5))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let resp = c
        .post(format!("{}/_emulator/mutate", emu.url()))
        .json(&serde_json::json!({ "aurinko": { "inserts": u64::MAX } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("at most"));
    let stats = c
        .get(format!("{}/_emulator/stats", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
}
