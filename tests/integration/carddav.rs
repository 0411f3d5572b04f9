//! The CardDAV provider against three real CardDAV servers nobody here wrote: Radicale 3.9
//! and Xandikos 0.4 (from PyPI), and Cyrus IMAP 3.6's httpd (Debian's packages, the server
//! software Fastmail runs), all installed by scripts/test.sh, each started per test on a
//! random loopback port with a fresh storage directory and HTTP Basic authentication
//! (Radicale's own htpasswd; Xandikos behind a Basic-auth WSGI middleware,
//! tests/python/carddav_server.py; Cyrus with its own SASL database in a private instance,
//! scripts/cyrus.sh). Cyrus converts: it renders a card in the vCard version asked (3.0
//! unless told, which loses a 4.0 card's inline photo), so its cards are read and listed
//! in 4.0, the version its books offer. Contacts are seeded with plain HTTP PUTs of vCards
//! we wrote by hand (3.0 and 4.0, X- properties, unknown parameters, groups, non-ASCII,
//! photos) and read back two independent ways: the server's holdings by
//! tests/python/carddav_list.py (PROPFIND + GET + `vobject`), the lake by DuckDB's Delta
//! reader; the two must agree row by row.
//!
//! Every check runs against every server (`carddav::radicale::<check>`,
//! `carddav::xandikos::<check>`, `carddav::cyrus::<check>`). The shared conformance suite
//! (tests/integration/suite.rs) runs against the same servers through [`CardDavBackend`]
//! (`suite::carddav_radicale::*`, `suite::carddav_xandikos::*`, `suite::carddav_cyrus::*`):
//! full, incremental, expired-token, faults, `kill -9` and write-back round trips. What
//! stays here is what only CardDAV has: discovery, a wrong password, the write-back's care
//! for the lines it does not manage (every line but the note of every card, after a notes
//! update), and the read-back of the lake by DuckDB against `vobject`'s reading of the
//! server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use contacts_etl::config::Pipeline;
use contacts_etl::plan::Mode;
use contacts_etl::plan::apply::{Apply, FromDesired, plan};
use rand::Rng;
use serde_json::Value;

use contacts_etl::emulator::proxy::FaultProxy;
use contacts_etl::emulator::{FaultSpec, MutationSummary, Stats};
use contacts_etl::model::extract::RecordContext;
use contacts_etl::providers::carddav::config::account_of;
use contacts_etl::providers::carddav::decode::decode_vcard;
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::suite::Record;

use crate::{assert_ok, sync};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pässword";
const SOURCE: &str = "addressbook";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Radicale,
    Xandikos,
    /// Cyrus IMAP 3.6's httpd (Debian's cyrus-imapd with cyrus-caldav), one private
    /// instance per test started by scripts/cyrus.sh.
    Cyrus,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Radicale => "radicale",
            Kind::Xandikos => "xandikos",
            Kind::Cyrus => "cyrus",
        }
    }

    /// The `Accept` of a GET that reads a card as the provider reads it: Cyrus renders a
    /// card in the version asked (3.0 unless told), losing a 4.0 card's inline photo; the
    /// others serve what they store whatever is asked.
    pub fn accept(self) -> Option<&'static str> {
        match self {
            Kind::Cyrus => Some("text/vcard; version=4.0"),
            _ => None,
        }
    }
}

/// Whether a Cyrus IMAP can be started here (root, Debian's packages, which
/// scripts/test.sh installs); under scripts/test.sh (`CONTACTS_ETL_REQUIRE_CYRUS=1`) a
/// test that needs it fails when it cannot.
pub fn require_cyrus(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let installed = Path::new("/usr/sbin/cyrmaster").exists()
        && Path::new("/usr/lib/cyrus/bin/httpd").exists()
        && Path::new("/usr/sbin/saslpasswd2").exists();
    match (
        root && installed,
        std::env::var("CONTACTS_ETL_REQUIRE_CYRUS").is_ok(),
    ) {
        (true, _) => true,
        (false, true) => panic!(
            "{test}: needs Cyrus IMAP (Debian's cyrus-imapd, cyrus-caldav, sasl2-bin; run as root), which scripts/test.sh installs: root {root}, installed {installed}"
        ),
        (false, false) => {
            eprintln!("SKIPPED {test}: no Cyrus IMAP (run scripts/test.sh)");
            false
        }
    }
}

fn cyrus_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cyrus.sh")
}

/// A running CardDAV server, killed (and its storage removed) on drop.
pub struct Server {
    pub kind: Kind,
    /// The Python server; `None` for Cyrus, which runs as a daemon of its own.
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    py: PathBuf,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.kind == Kind::Cyrus {
            let _ = Command::new(cyrus_script())
                .arg("stop")
                .arg(self.dir.path().join("store"))
                .status();
        }
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `kind` and waits until it answers an authenticated PROPFIND; `None` (skip)
    /// outside scripts/test.sh, a failure under it.
    pub async fn start(kind: Kind, test: &str) -> Option<Server> {
        let py = crate::require_python(test)?;
        if kind == Kind::Cyrus && !require_cyrus(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let store = dir.path().join("store");
        let child = match kind {
            Kind::Cyrus => {
                std::fs::create_dir_all(&store).unwrap();
                let out = Command::new(cyrus_script())
                    .arg("start")
                    .arg(&store)
                    .args([&port.to_string(), &free_port().to_string(), USER])
                    .env("CYRUS_PASSWORD", PASSWORD)
                    .env("CYRUS_OWNER_PID", std::process::id().to_string())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "scripts/cyrus.sh start: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            }
            _ => Some(
                Command::new(&py)
                    .arg(script("carddav_server.py"))
                    .args([
                        kind.name(),
                        store.to_str().unwrap(),
                        &port.to_string(),
                        USER,
                    ])
                    .env("CARDDAV_PASSWORD", PASSWORD)
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            ),
        };
        let mut s = Server {
            kind,
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            py,
            http: reqwest::Client::new(),
        };
        s.wait_ready().await;
        Some(s)
    }

    /// The user's home: where the server answers once it is ready.
    fn home(&self) -> String {
        match self.kind {
            Kind::Cyrus => format!("/dav/addressbooks/user/{USER}/"),
            _ => format!("/{USER}/"),
        }
    }

    async fn wait_ready(&mut self) {
        let t = Instant::now();
        loop {
            if let Ok(r) = self
                .request(
                    "PROPFIND",
                    &self.home(),
                    Some(PROPFIND_RT),
                    &[
                        ("Depth", "0"),
                        ("Content-Type", "application/xml; charset=utf-8"),
                    ],
                )
                .await
                && r.status().as_u16() == 207
            {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited ({st}) before it was ready: {}",
                    self.kind.name(),
                    self.log()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} not ready in 60 s: {}",
                self.kind.name(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// One authenticated request.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let mut rb = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.url),
            )
            .basic_auth(USER, Some(PASSWORD));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        rb.send().await
    }

    /// The address book the server makes for a user: Xandikos' default one, or (Radicale
    /// has none) one made with an extended MKCOL.
    pub async fn default_book(&self) -> String {
        match self.kind {
            Kind::Xandikos => format!("/{USER}/contacts/addressbook/"),
            Kind::Radicale => self.make_book("contacts").await,
            // Made by the first authenticated request after the user's first login.
            Kind::Cyrus => format!("/dav/addressbooks/user/{USER}/Default/"),
        }
    }

    /// A new address book `name` in the user's address-book home (RFC 5689 MKCOL).
    pub async fn make_book(&self, name: &str) -> String {
        let path = match self.kind {
            Kind::Radicale => format!("/{USER}/{name}/"),
            Kind::Xandikos => format!("/{USER}/contacts/{name}/"),
            Kind::Cyrus => format!("/dav/addressbooks/user/{USER}/{name}/"),
        };
        let r = self
            .request(
                "MKCOL",
                &path,
                Some(MKCOL_BOOK),
                &[("Content-Type", "application/xml; charset=utf-8")],
            )
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            201,
            "MKCOL {path}: {}",
            r.text().await.unwrap()
        );
        path
    }

    /// PUTs a vCard as `<book><name>.vcf`; returns its ETag.
    pub async fn put(&self, book: &str, name: &str, vcard: &str) -> String {
        let path = format!("{book}{name}.vcf");
        let r = self
            .request(
                "PUT",
                &path,
                Some(vcard),
                &[("Content-Type", "text/vcard; charset=utf-8")],
            )
            .await
            .unwrap();
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .map(|e| e.to_str().unwrap().to_string());
        assert!(
            matches!(status, 201 | 204),
            "PUT {path}: {status} {}",
            r.text().await.unwrap()
        );
        etag.unwrap_or_default()
    }

    /// DELETEs `<book><name>.vcf`.
    pub async fn delete(&self, book: &str, name: &str) {
        let path = format!("{book}{name}.vcf");
        let r = self.request("DELETE", &path, None, &[]).await.unwrap();
        assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
    }

    /// What the server holds in `book`, by its own listing (PROPFIND + GET, parsed with
    /// vobject), sorted by id; the GETs ask what the provider asks ([`Kind::accept`]).
    pub fn list(&self, book: &str) -> Vec<Value> {
        self.list_as(book, self.kind.accept())
    }

    /// [`Server::list`] with the GETs' `Accept` given (`None`: none sent).
    pub fn list_as(&self, book: &str, accept: Option<&str>) -> Vec<Value> {
        let out = Command::new(&self.py)
            .arg(script("carddav_list.py"))
            .args([&format!("{}{book}", self.url), USER])
            .env("CARDDAV_PASSWORD", PASSWORD)
            .env("CARDDAV_ACCEPT", accept.unwrap_or(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "carddav_list.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }

    /// Makes every sync token the server gave for `book` unknown to it, the server's own
    /// way: Radicale keeps the state behind each token in the collection's
    /// `.Radicale.cache/sync-token/` (and drops old ones itself after
    /// `max_sync_token_age`); Xandikos' tokens name git trees of the collection's history,
    /// so its history is rewritten to one fresh commit of the same files and the old
    /// objects pruned; Cyrus refuses a token older than what `cyr_expire` purged of the
    /// deletions (its `deletedmodseq`), so they are purged.
    pub fn expire_tokens(&self, book: &str) {
        let store = self.dir.path().join("store");
        match self.kind {
            Kind::Radicale => {
                let dir = store
                    .join("collections/collection-root")
                    .join(book.trim_matches('/'))
                    .join(".Radicale.cache/sync-token");
                assert!(dir.is_dir(), "{} holds no sync tokens", dir.display());
                std::fs::remove_dir_all(&dir).unwrap();
            }
            Kind::Xandikos => {
                let out = Command::new(&self.py)
                    .arg(script("carddav_server.py"))
                    .args([
                        "xandikos-forget-history",
                        store.join(book.trim_matches('/')).to_str().unwrap(),
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "forgetting history: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Kind::Cyrus => {
                let out = Command::new(cyrus_script())
                    .arg("expire")
                    .arg(&store)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "cyr_expire: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Writes a pipeline into `dir` (lake `dir/lake`, the password in a file) whose one
    /// source is this server; `books` lists the address books, or `None` to discover them.
    pub fn pipeline(&self, dir: &Path, books: Option<&[&str]>, extra: &str) -> PathBuf {
        pipeline_at(&self.url, dir, books, extra)
    }
}

/// [`Server::pipeline`] for a server at `url` (a proxy in front of it).
pub fn pipeline_at(url: &str, dir: &Path, books: Option<&[&str]>, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/carddav.password"), PASSWORD).unwrap();
    let books = books
        .map(|b| {
            format!(
                "address_books = [{}]\n",
                b.iter()
                    .map(|b| format!("\"{b}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .unwrap_or_default();
    let text = format!(
        "[lake]\nurl = \"lake\"\n\n[[sources]]\nname = \"{SOURCE}\"\nprovider = \"carddav\"\nbase_url = \"{}\"\n\
         auth = {{ kind = \"basic\", username = \"{USER}\", password_file = \"secrets/carddav.password\" }}\n\
         {books}concurrency = 4\nretry_base_ms = 5\nmax_retries = 6\n{extra}\n",
        url
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const PROPFIND_RT: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>"#;
const MKCOL_BOOK: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><C:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"#;

/// A vCard we wrote, varied by `i` and `rev`: 3.0 and 4.0, X- properties with parameters,
/// unknown parameters, an Apple-style group with its label, non-ASCII text, escaped
/// separators, a photo on some, several e-mails and phones on others.
pub fn vcard(i: usize, rev: usize) -> String {
    let v4 = i % 2 == 1;
    let mut c = String::from("BEGIN:VCARD\r\n");
    c.push_str(if v4 {
        "VERSION:4.0\r\n"
    } else {
        "VERSION:3.0\r\n"
    });
    c.push_str(&format!("UID:urn:uuid:00000000-0000-4000-8000-{i:012}\r\n"));
    c.push_str(&format!("FN:Zoë Contact {i} r{rev}\r\n"));
    c.push_str(&format!("N:Ünïcode-{i};Zoë;Q.;Dr.;r{rev}\r\n"));
    c.push_str(&format!(
        "item1.EMAIL;TYPE=INTERNET,WORK;X-ODD=yes:zoe.{i}@example.org\r\n"
    ));
    c.push_str("item1.X-ABLabel:Büro\r\n");
    if i.is_multiple_of(3) {
        c.push_str(&format!("EMAIL;TYPE=HOME:home.{i}.r{rev}@example.net\r\n"));
        c.push_str(&format!("TEL;TYPE=CELL:+49 30 {i:06}\r\n"));
    }
    c.push_str(&format!(
        "TEL;TYPE=WORK;X-EXT=77:+1 555 {:04}\r\n",
        i % 10000
    ));
    c.push_str(&format!(
        "ORG:Ölwerk {i}\\, AG;Forschung\r\nTITLE:Ingénieure\r\n"
    ));
    c.push_str(&format!("NOTE:Rev {rev}\\; line one\\nline two – ✓\r\n"));
    c.push_str("CATEGORIES:friends,Straße\r\n");
    c.push_str(&format!("X-CUSTOM-THING;X-P=1:keep {i}\r\n"));
    if i.is_multiple_of(4) {
        if v4 {
            c.push_str("PHOTO:data:image/png;base64,iVBORw0KGgo=\r\n");
        } else {
            c.push_str("PHOTO;ENCODING=b;TYPE=PNG:iVBORw0KGgo=\r\n");
        }
    }
    c.push_str("END:VCARD\r\n");
    c
}

fn name_of(i: usize) -> String {
    format!("contact-{i:04}")
}

/// The lake's contacts as DuckDB's Delta reader (delta-kernel-rs) reads them.
fn lake_rows(py: &Path, p: &Path) -> Vec<contacts_etl::schema::ContactRecord> {
    let table = p.parent().unwrap().join("lake/contacts");
    let out = Command::new(py)
        .arg(script("read_lake_duckdb.py"))
        .arg(&table)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "DuckDB: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The lake, read by DuckDB, equals what the server lists in each book, row by row:
/// id, ETag, names, e-mails, phones, organization, note, categories, and the vCard text.
pub fn assert_lake_equals_server(s: &Server, p: &Path, books: &[&str], context: &str) {
    let rows = lake_rows(&s.py, p);
    let mut seen = 0;
    for book in books {
        let listed = s.list(book);
        let mut landed: Vec<_> = rows
            .iter()
            .filter(|r| r.source == SOURCE && r.account == account_of(book))
            .collect();
        landed.sort_by(|a, b| a.id.cmp(&b.id));
        seen += landed.len();
        let ids = |v: &[&contacts_etl::schema::ContactRecord]| {
            v.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
        };
        let listed_ids: Vec<String> = listed
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            ids(&landed),
            listed_ids,
            "{} {context}: {book}: ids",
            s.kind.name()
        );
        for (r, l) in landed.iter().zip(&listed) {
            let what = format!("{} {context}: {book}{}", s.kind.name(), r.id);
            let strs = |v: &Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect()
            };
            assert_eq!(r.etag.as_deref(), l["etag"].as_str(), "{what}: etag");
            assert_eq!(
                r.display_name.as_deref(),
                l["display_name"].as_str(),
                "{what}: FN"
            );
            assert_eq!(
                r.given_name.as_deref(),
                l["given_name"].as_str(),
                "{what}: given name"
            );
            assert_eq!(
                r.family_name.as_deref(),
                l["family_name"].as_str(),
                "{what}: family name"
            );
            let emails: Vec<String> = r.emails.iter().filter_map(|e| e.address.clone()).collect();
            assert_eq!(emails, strs(&l["emails"]), "{what}: emails");
            let phones: Vec<String> = r.phones.iter().filter_map(|e| e.number.clone()).collect();
            assert_eq!(phones, strs(&l["phones"]), "{what}: phones");
            assert_eq!(r.notes.as_deref(), l["notes"].as_str(), "{what}: note");
            assert_eq!(r.groups, strs(&l["groups"]), "{what}: categories");
            assert_eq!(
                r.organizations.first().and_then(|o| o.name.as_deref()),
                l["organization"].as_str(),
                "{what}: organization"
            );
            assert_eq!(
                r.raw.as_deref().map(unfolded),
                l["raw"].as_str().map(unfolded),
                "{what}: the vCard text"
            );
        }
    }
    let of_source = rows.iter().filter(|r| r.source == SOURCE).count();
    assert_eq!(
        seen,
        of_source,
        "{} {context}: contacts landed outside the listed books",
        s.kind.name()
    );
}

/// A vCard with its line folding and line breaks undone: servers may fold a multiget's
/// `address-data` and a GET's body differently; the content is what must agree.
fn unfolded(v: &str) -> String {
    v.replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\r\n", "\n")
}

/// Seeds `n` contacts into `book`.
async fn seed(s: &Server, book: &str, range: std::ops::Range<usize>) {
    for i in range {
        s.put(book, &name_of(i), &vcard(i, 0)).await;
    }
}

/// (mode of every account, upserted, deleted) of a sync report.
fn modes(r: &contacts_etl::sync::SyncReport) -> (Vec<String>, i64, i64) {
    assert_ok(r);
    let mut m: Vec<String> = r.accounts.iter().map(|a| a.mode.clone()).collect();
    m.sort();
    m.dedup();
    (
        m,
        r.accounts.iter().map(|a| a.upserted).sum(),
        r.accounts.iter().map(|a| a.deleted).sum(),
    )
}

// ---------------------------------------------------------------------------------------
// The server as a backend of the conformance suite (tests/integration/suite.rs)
// ---------------------------------------------------------------------------------------

/// Address books the suite syncs: two, so the checks meet more than one account.
const SUITE_BOOKS: usize = 2;
/// Contacts of book `k` are numbered from `k * BOOK_SPAN`; inserts from `INSERTED_FROM`:
/// resource names stay unique across books (the checks key contacts by id).
const BOOK_SPAN: usize = 1000;
const INSERTED_FROM: usize = 5000;

/// A real CardDAV server for the conformance suite: two address books seeded over plain
/// HTTP, the pipeline pointed at a fault-injecting proxy in front of the server (the
/// emulator's own fault layer, [`FaultProxy`]), and the truth read straight from the
/// server.
pub struct CardDavBackend {
    server: Server,
    proxy: FaultProxy,
    books: Vec<String>,
    next_id: AtomicUsize,
    next_rev: AtomicUsize,
    /// `multiget_size` of the pipeline: small, so a full extract takes several chunks.
    multiget_size: usize,
}

impl CardDavBackend {
    /// Starts `kind` with [`SUITE_BOOKS`] books of `contacts` contacts each; `None` outside
    /// scripts/test.sh.
    pub async fn start(kind: Kind, contacts: usize) -> Option<CardDavBackend> {
        let server = Server::start(kind, &format!("suite::carddav_{}", kind.name())).await?;
        let mut books = vec![server.default_book().await];
        for k in 1..SUITE_BOOKS {
            books.push(server.make_book(&format!("book{k}")).await);
        }
        let puts: Vec<(String, usize)> = books
            .iter()
            .enumerate()
            .flat_map(|(k, b)| (0..contacts).map(move |i| (b.clone(), k * BOOK_SPAN + i)))
            .collect();
        futures::stream::iter(puts)
            .map(|(b, i)| {
                let server = &server;
                async move { server.put(&b, &name_of(i), &vcard(i, 0)).await }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        let proxy = FaultProxy::start(&server.url, FaultSpec::default(), 7)
            .await
            .unwrap();
        Some(CardDavBackend {
            server,
            proxy,
            books,
            next_id: AtomicUsize::new(INSERTED_FROM),
            next_rev: AtomicUsize::new(1),
            multiget_size: 8,
        })
    }

    /// (path, ETag) of every vCard in `book`, by the server's own PROPFIND.
    async fn members(&self, book: &str) -> Vec<(String, Option<String>)> {
        let r = self
            .server
            .request(
                "PROPFIND",
                book,
                Some(PROPFIND_MEMBERS),
                &[
                    ("Depth", "1"),
                    ("Content-Type", "application/xml; charset=utf-8"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 207, "PROPFIND {book}");
        let body = r.text().await.unwrap();
        members_of(&body)
            .into_iter()
            .map(|(href, etag)| {
                let path = url::Url::parse(&self.server.url)
                    .unwrap()
                    .join(&href)
                    .unwrap()
                    .path()
                    .to_string();
                (path, etag)
            })
            .filter(|(path, _)| path.starts_with(book) && path.as_str() != book)
            .collect()
    }

    fn book(&self, account: &str) -> &str {
        self.books
            .iter()
            .find(|b| account_of(b) == account)
            .unwrap_or_else(|| panic!("no address book for account {account}"))
    }
}

const PROPFIND_MEMBERS: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>"#;

/// (href, ETag) of each non-collection `response` of a multistatus: a reader of its own
/// (quick-xml events, local names), not the provider's.
fn members_of(xml: &str) -> Vec<(String, Option<String>)> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let (mut href, mut etag, mut collection) = (None::<String>, None::<String>, false);
    let mut text = String::new();
    loop {
        match r.read_event().unwrap() {
            Event::Start(e) => {
                let current = e.local_name().as_ref().to_vec();
                text.clear();
                if current == b"response" {
                    (href, etag, collection) = (None, None, false);
                }
                collection |= current == b"collection";
            }
            Event::Empty(e) => collection |= e.local_name().as_ref() == b"collection",
            Event::Text(t) => text.push_str(&t.decode().unwrap()),
            Event::GeneralRef(g) => {
                let name = g.decode().unwrap();
                text.push_str(match name.as_ref() {
                    "quot" => "\"",
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "apos" => "'",
                    other => panic!("entity {other} in a multistatus"),
                });
            }
            Event::End(e) => {
                match e.local_name().as_ref() {
                    b"href" if href.is_none() => href = Some(text.trim().to_string()),
                    b"getetag" => etag = Some(text.trim().to_string()),
                    b"response" if !collection => out.push((href.take().unwrap(), etag.take())),
                    _ => {}
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

impl crate::suite::Backend for CardDavBackend {
    fn pipeline(&self, dir: &Path) -> PathBuf {
        let books: Vec<&str> = self.books.iter().map(String::as_str).collect();
        pipeline_at(
            self.proxy.url(),
            dir,
            Some(&books),
            &format!("multiget_size = {}", self.multiget_size),
        )
    }

    fn accounts(&self) -> Vec<String> {
        self.books.iter().map(|b| account_of(b)).collect()
    }

    /// The server's own listing (PROPFIND, then a plain GET of each vCard), decoded with
    /// the provider's vCard decoder: the suite compares whole records, and a second
    /// vCard-to-schema mapping would only restate the first. What is independent of the
    /// provider is everything around it — which contacts exist, their ETags, their text
    /// as a GET returns it — and the row-by-row check of the lake against `vobject`'s
    /// reading in this file ([`assert_lake_equals_server`]) covers the mapping itself.
    fn truth<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Vec<Record>> {
        Box::pin(async move {
            let book = self.book(account);
            let ctx = RecordContext {
                source: SOURCE.into(),
                account: account.into(),
                run_id: String::new(),
                synced_at_us: 0,
            };
            let members = self.members(book).await;
            let mut out: Vec<Record> = futures::stream::iter(members)
                .map(|(path, etag)| {
                    let ctx = &ctx;
                    async move {
                        let accept: Vec<(&str, &str)> = self
                            .server
                            .kind
                            .accept()
                            .map(|a| ("Accept", a))
                            .into_iter()
                            .collect();
                        let r = self
                            .server
                            .request("GET", &path, None, &accept)
                            .await
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 200, "GET {path}");
                        let text = r.text().await.unwrap();
                        decode_vcard(text, &path, etag.as_deref(), ctx, &path).unwrap()
                    }
                })
                .buffer_unordered(4)
                .collect()
                .await;
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out
        })
    }

    /// In every book: `inserts` new vCards, `updates` of others to a new revision and
    /// `deletes` of yet others, all by plain HTTP on the server (not through the proxy).
    fn mutate(
        &self,
        inserts: usize,
        updates: usize,
        deletes: usize,
    ) -> BoxFuture<'_, MutationSummary> {
        Box::pin(async move {
            let mut m = MutationSummary::default();
            for book in &self.books {
                let mut live: Vec<String> = self
                    .members(book)
                    .await
                    .iter()
                    .filter_map(|(p, _)| {
                        p.rsplit('/')
                            .next()
                            .and_then(|n| n.strip_suffix(".vcf"))
                            .map(str::to_string)
                    })
                    .collect();
                live.sort();
                let (updated, deleted) = {
                    let mut rng = rand::rng();
                    let mut pick = |n: usize| -> Vec<String> {
                        (0..n.min(live.len()))
                            .map(|_| live.swap_remove(rng.random_range(0..live.len())))
                            .collect()
                    };
                    (pick(updates), pick(deletes))
                };
                for id in &updated {
                    let i: usize = id["contact-".len()..].parse().unwrap();
                    let rev = self.next_rev.fetch_add(1, Ordering::SeqCst);
                    self.server.put(book, id, &vcard(i, rev)).await;
                }
                for id in &deleted {
                    self.server.delete(book, id).await;
                }
                for _ in 0..inserts {
                    let i = self.next_id.fetch_add(1, Ordering::SeqCst);
                    self.server.put(book, &name_of(i), &vcard(i, 0)).await;
                    m.inserted.push(name_of(i));
                }
                m.updated.extend(updated);
                m.deleted.extend(deleted);
            }
            m
        })
    }

    /// The server's own way to forget every sync token it gave ([`Server::expire_tokens`]).
    fn expire_cursor(&self) -> BoxFuture<'_, ()> {
        for book in &self.books {
            self.server.expire_tokens(book);
        }
        Box::pin(std::future::ready(()))
    }

    fn set_faults(&self, faults: FaultSpec) {
        self.proxy.set_faults(faults);
    }

    fn stats(&self) -> Stats {
        self.proxy.stats()
    }
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

/// The lake, read by DuckDB, against the server's listing read by `vobject` — neither of
/// them our code — after each kind of run: a full extract (several multiget chunks), an
/// incremental one after adds, edits and deletes, and a resync after the server forgot
/// its tokens. (What each run must land and count, with faults and crashes, is the
/// conformance suite's: `suite::carddav_radicale::*`, `suite::carddav_xandikos::*`.)
pub async fn lake_equals_server_listing(kind: Kind) {
    let Some(s) = Server::start(kind, "carddav lake_equals_server_listing").await else {
        return;
    };
    let book = s.default_book().await;
    seed(&s, &book, 0..30).await;
    let dir = tempfile::tempdir().unwrap();
    let p = s.pipeline(dir.path(), Some(&[&book]), "multiget_size = 7");
    let (m, up, del) = modes(&sync(&p, false).await);
    assert_eq!((m, up, del), (vec!["full".to_string()], 30, 0));
    assert_lake_equals_server(&s, &p, &[&book], "after a full sync");

    for i in 100..103 {
        s.put(&book, &name_of(i), &vcard(i, 1)).await;
    }
    for i in [1, 4, 9, 16] {
        s.put(&book, &name_of(i), &vcard(i, 2)).await;
    }
    for i in [2, 5, 11] {
        s.delete(&book, &name_of(i)).await;
    }
    let (m, up, del) = modes(&sync(&p, false).await);
    assert_eq!((m, up, del), (vec!["incremental".to_string()], 7, 3));
    assert_lake_equals_server(&s, &p, &[&book], "after an incremental sync");

    for i in [3, 7] {
        s.delete(&book, &name_of(i)).await;
    }
    s.put(&book, &name_of(6), &vcard(6, 9)).await;
    s.expire_tokens(&book);
    let (m, _, del) = modes(&sync(&p, false).await);
    assert_eq!((m, del), (vec!["resync".to_string()], 2));
    assert_lake_equals_server(&s, &p, &[&book], "after a resync");
}

/// Discovery finds every address book of the user (two here, from the principal's
/// address-book home), and each lands as its own account.
pub async fn discovery(kind: Kind) {
    let Some(s) = Server::start(kind, "carddav discovery").await else {
        return;
    };
    let first = s.default_book().await;
    let second = s.make_book("work").await;
    seed(&s, &first, 0..8).await;
    seed(&s, &second, 20..25).await;
    let dir = tempfile::tempdir().unwrap();
    let p = s.pipeline(dir.path(), None, "");
    let r = sync(&p, false).await;
    assert_ok(&r);
    let mut accounts: Vec<&str> = r.accounts.iter().map(|a| a.account.as_str()).collect();
    accounts.sort();
    let (a, b) = (account_of(&first), account_of(&second));
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(accounts, want, "{}", r.summary());
    assert_lake_equals_server(&s, &p, &[&first, &second], "after discovery");
    // `plan`/`apply --account` know a discovered book by what the lake holds of it, and
    // refuse one it does not (exit 2), naming those it does.
    use contacts_etl::plan::apply::check_accounts;
    let pipeline = Pipeline::load(&p).unwrap();
    check_accounts(&pipeline, SOURCE, &[a.clone(), b.clone()])
        .await
        .unwrap();
    let e = check_accounts(&pipeline, SOURCE, &["nobody.contacts".into()])
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.to_string().contains(&a) && e.to_string().contains(&b),
        "{e}"
    );
}

/// The single integer a query over the lake returns.
async fn count(p: &Path, sql: &str) -> i64 {
    use arrow::array::AsArray;
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let b = contacts_etl::sql::query(&lake, sql).await.unwrap();
    let n = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
    n.as_primitive::<arrow::datatypes::Int64Type>().value(0)
}

/// An apply of a desired state to the source, to await.
fn opts<'a>(p: &'a Pipeline, desired: &str, mode: Mode, force: bool) -> Apply<'a, FromDesired> {
    Apply::desired(p, SOURCE, desired)
        .with_mode(mode)
        .with_force(force)
}

/// Write-back round trip: an update of every contact's note and a second e-mail, inserts
/// (twice: idempotent), a delete; the server's listing holds exactly the written values,
/// every line we did not manage survives in the vCard, a sync lands the server's state,
/// and a new plan is empty. Then a conflict: a contact edited on the server after the
/// sync is a `conflict`, and `--force` writes over it.
pub async fn write_back(kind: Kind) {
    let Some(s) = Server::start(kind, "carddav write_back").await else {
        return;
    };
    let book = s.default_book().await;
    seed(&s, &book, 0..12).await;
    let dir = tempfile::tempdir().unwrap();
    let p = s.pipeline(dir.path(), Some(&[&book]), "");
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let before: BTreeMap<String, Value> = s
        .list(&book)
        .into_iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l))
        .collect();

    let update = write_back_update(&s, &book, &pipeline, &before).await;
    let insert = write_back_inserts(&s, &book, &pipeline).await;
    write_back_delete(&s, &book, &p, &pipeline).await;
    write_back_settles(&s, &book, &p, &pipeline, &update, &insert).await;
    write_back_conflict(&s, &book, dir.path(), &p, &pipeline).await;
}

/// The update of [`write_back`]: every contact's note and e-mails written, and every
/// line it did not manage as the server held it. Returns the desired state's query.
async fn write_back_update(
    s: &Server,
    book: &str,
    pipeline: &Pipeline,
    before: &BTreeMap<String, Value>,
) -> String {
    // Update: the note, and the e-mails: the first (the grouped one with its label and an
    // unknown parameter) kept, a second one (some contacts have it) dropped, one added.
    // (The first is rebuilt field by field: make_array of a landed struct and a literal one
    // panics in DataFusion 55 over their differing field metadata. The new one leaves
    // `primary` null: the plan after the write must still be empty.)
    let update = format!(
        "SELECT account, id, etag, concat('[wb] ', id) AS notes, \
         make_array(named_struct('address', get_field(emails[1], 'address'), 'type', get_field(emails[1], 'type'), 'label', get_field(emails[1], 'label'), 'primary', get_field(emails[1], 'primary'), 'display_name', get_field(emails[1], 'display_name')), named_struct('address', concat(id, '@wb.example'), 'type', 'work', 'label', CAST(NULL AS VARCHAR), 'primary', CAST(NULL AS BOOLEAN), 'display_name', CAST(NULL AS VARCHAR))) AS emails \
         FROM contacts WHERE source = '{SOURCE}' AND id LIKE 'contact-%'"
    );
    let report = opts(pipeline, &update, Mode::Update, false).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.results.len(), 12, "{}", report.summary());
    for l in s.list(book) {
        let id = l["id"].as_str().unwrap();
        assert_eq!(
            l["notes"].as_str(),
            Some(format!("[wb] {id}").as_str()),
            "{id}"
        );
        let emails = l["emails"].as_array().unwrap();
        assert_eq!(
            emails.last().unwrap().as_str(),
            Some(format!("{id}@wb.example").as_str()),
            "{id}"
        );
        let held = &before[id];
        assert_eq!(emails.len(), 2, "{id}");
        assert_eq!(emails[0], held["emails"][0], "{id}");
        // What the update did not manage is as it was: the X- property, the label, the photo.
        assert_eq!(l["x_properties"], held["x_properties"], "{id}");
        assert_eq!(l["photo"], held["photo"], "{id}");
        assert_eq!(l["phones"], held["phones"], "{id}");
        // The unmanaged lines, and the unchanged grouped e-mail with its label and unknown
        // parameter, are as the server held them.
        let now = unfolded(l["raw"].as_str().unwrap());
        for line in unfolded(held["raw"].as_str().unwrap()).lines() {
            let upper = line.to_ascii_uppercase();
            if [
                "ITEM1.",
                "X-CUSTOM-THING",
                "PHOTO",
                "TEL",
                "ORG",
                "TITLE",
                "CATEGORIES",
                "UID",
            ]
            .iter()
            .any(|p| upper.starts_with(p))
            {
                assert!(
                    now.lines().any(|x| x == line),
                    "{id}: {line:?} lost:\n{now}"
                );
            }
        }
    }

    update
}

/// The inserts of [`write_back`], applied twice: one contact each. Returns the desired
/// state's query.
async fn write_back_inserts(s: &Server, book: &str, pipeline: &Pipeline) -> String {
    // Inserts, applied twice: one contact each.
    let insert = (0..3)
        .map(|x| {
            format!(
                "SELECT '{}' AS account, CAST(NULL AS VARCHAR) AS id, CAST(NULL AS VARCHAR) AS etag, \
                 'Neu Eingefügt {x}' AS display_name, 'inserted' AS notes",
                account_of(book)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    for _ in 0..2 {
        let r = opts(pipeline, &insert, Mode::Upsert, false).await.unwrap();
        assert_eq!(r.failures(), 0, "{}", r.summary());
    }
    let listed = s.list(book);
    let inserted: Vec<&Value> = listed
        .iter()
        .filter(|l| l["notes"].as_str() == Some("inserted"))
        .collect();
    assert_eq!(inserted.len(), 3, "{listed:#?}");

    insert
}

/// The delete of [`write_back`]: a mirror without one contact deletes it.
async fn write_back_delete(s: &Server, book: &str, p: &Path, pipeline: &Pipeline) {
    // A delete.
    let victim = name_of(4);
    let delete = format!(
        "SELECT account, id, etag, display_name FROM contacts WHERE source = '{SOURCE}' AND id <> '{victim}'"
    );
    assert_ok(&sync(p, false).await);
    let r = opts(pipeline, &delete, Mode::Mirror, false).await.unwrap();
    assert_eq!(r.failures(), 0, "{}", r.summary());
    assert!(s.list(book).iter().all(|l| l["id"] != victim.as_str()));
}

/// After [`write_back`]'s writes, a sync lands the server's state, and the same plans
/// again are empty.
async fn write_back_settles(
    s: &Server,
    book: &str,
    p: &Path,
    pipeline: &Pipeline,
    update: &str,
    insert: &str,
) {
    let r = sync(p, false).await;
    assert_ok(&r);
    assert_lake_equals_server(s, p, &[book], "after write-back and a sync");
    let again = plan(pipeline, SOURCE, update, Mode::Update).await.unwrap();
    assert!(
        again.ops.is_empty(),
        "a second plan should be empty:\n{}",
        again.render(5)
    );
    let again = plan(pipeline, SOURCE, insert, Mode::Upsert).await.unwrap();
    assert!(
        again.ops.is_empty(),
        "a second insert plan should be empty:\n{}",
        again.render(5)
    );
}

/// [`write_back`]'s conflict: a contact edited on the server after the desired state
/// was saved is a `conflict`, and `--force` writes over it, keeping the other fields.
async fn write_back_conflict(s: &Server, book: &str, dir: &Path, p: &Path, pipeline: &Pipeline) {
    // Conflict: a desired state (with the etag it was based on) saved, then someone edits
    // contact 1 on the server.
    let other = name_of(1);
    let lake = contacts_etl::sync::lake_of(pipeline).unwrap();
    let batches = contacts_etl::sql::query(
        &lake,
        &format!("SELECT account, id, etag, 'mine' AS notes FROM contacts WHERE source = '{SOURCE}' AND id = '{other}'"),
    )
    .await
    .unwrap();
    let file = dir.join("desired.parquet");
    contacts_etl::sql::write_parquet(&lake, &batches, file.to_str().unwrap())
        .await
        .unwrap();
    let set_note = file.to_str().unwrap().to_string();
    s.put(book, &other, &vcard(1, 77)).await;
    let r = opts(pipeline, &set_note, Mode::Update, false)
        .await
        .unwrap();
    assert_eq!(r.results.len(), 1);
    assert_eq!(
        r.results[0].outcome,
        contacts_etl::providers::Outcome::Conflict,
        "{}",
        r.summary()
    );
    let held = s
        .list(book)
        .into_iter()
        .find(|l| l["id"] == other.as_str())
        .unwrap();
    assert!(
        held["display_name"].as_str().unwrap().ends_with("r77"),
        "the other writer's version stays"
    );
    let r = opts(pipeline, &set_note, Mode::Update, true).await.unwrap();
    assert_eq!(r.failures(), 0, "{}", r.summary());
    let held = s
        .list(book)
        .into_iter()
        .find(|l| l["id"] == other.as_str())
        .unwrap();
    assert_eq!(held["notes"].as_str(), Some("mine"));
    assert!(
        held["display_name"].as_str().unwrap().ends_with("r77"),
        "--force keeps the other writer's other fields"
    );
    let conflicts = count(
        p,
        "SELECT count(*) FROM writeback_results WHERE result = 'conflict'",
    )
    .await;
    assert_eq!(conflicts, 1);
}

/// An inline JPEG long enough to be folded (the kind of photo Cyrus' 3.0 rendering of a
/// 4.0 card cut down to `PHOTO:data:image/jpeg`).
const JPEG: &str = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAACf/EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AKp//2Q==";

/// vCards with everything a notes update must leave alone: inline photos (4.0 `data:`
/// URIs, 3.0 `ENCODING=b`), Apple-style groups with labels, X- properties with
/// parameters, addresses, relations, anniversaries, a group card of each version.
fn rich_vcards() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, v4) in [(0, true), (1, false), (2, true), (3, false)] {
        let mut c = format!(
            "BEGIN:VCARD\r\nVERSION:{}\r\nUID:rich-{i}\r\nFN:Rïch Kärtchen {i}\r\nN:Kärtchen;Rïch;;;\r\n",
            if v4 { "4.0" } else { "3.0" }
        );
        c.push_str(&format!(
            "item1.EMAIL;TYPE=INTERNET,WORK;X-ODD=yes:rich.{i}@example.org\r\nitem1.X-ABLabel:Büro\r\n\
             item2.TEL;TYPE=CELL:+49 30 1234 {i}\r\nitem2.X-ABLabel:_$!<Mobile>!$_\r\n\
             ADR;TYPE=HOME:;;Straße 1;Berlin;;10115;Deutschland\r\nORG:Ölwerk\\, AG;Forschung\r\n\
             CATEGORIES:friends,Straße\r\nX-CUSTOM-THING;X-P=1:keep {i}\r\nX-SOCIALPROFILE;TYPE=twitter:https://example.org/r{i}\r\n\
             NOTE:before\r\n"
        ));
        if v4 {
            c.push_str(&format!(
                "RELATED;TYPE=friend;VALUE=text:Jemand {i}\r\nANNIVERSARY:20010203\r\nPHOTO:data:image/jpeg;base64,{JPEG}\r\n"
            ));
        } else {
            c.push_str(&format!(
                "X-ABRELATEDNAMES;TYPE=friend:Jemand {i}\r\nBDAY:1970-01-02\r\nPHOTO;ENCODING=b;TYPE=JPEG:{JPEG}\r\n"
            ));
        }
        c.push_str("END:VCARD\r\n");
        out.push((format!("rich-{i}"), c));
    }
    out.push((
        "group-3".into(),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:group-3\r\nFN:Team Drei\r\nN:Team Drei;;;;\r\n\
         X-ADDRESSBOOKSERVER-KIND:group\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:rich-1\r\n\
         NOTE:before\r\nEND:VCARD\r\n"
            .into(),
    ));
    out.push((
        "group-4".into(),
        "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:group-4\r\nKIND:group\r\nFN:Team Vier\r\n\
         MEMBER:urn:uuid:rich-0\r\nNOTE:before\r\nEND:VCARD\r\n"
            .into(),
    ));
    out
}

/// The unfolded lines of a listed vCard other than `NOTE`, sorted, each with its group
/// and property name in upper case (names are case-blind: Cyrus' 3.0 rendering of a card
/// written as 4.0 spells Apple's `X-ADDRESSBOOKSERVER-KIND` in lower case).
fn lines_but_note(l: &Value) -> Vec<String> {
    let mut v: Vec<String> = unfolded(l["raw"].as_str().unwrap())
        .lines()
        .filter(|x| !x.to_ascii_uppercase().starts_with("NOTE"))
        .map(|x| {
            let at = x.find([';', ':']).unwrap_or(x.len());
            format!("{}{}", x[..at].to_ascii_uppercase(), &x[at..])
        })
        .collect();
    v.sort();
    v
}

/// A notes-only update of every card keeps every other line of every card as the server
/// held it — photos, groups and labels, X- properties, group cards — read back the
/// server's own way; on Cyrus both in the version the book is read in (4.0) and in its
/// default 3.0 rendering, so a card rewritten from a converted rendering is seen.
pub async fn notes_update_keeps_every_other_line(kind: Kind) {
    let Some(s) = Server::start(kind, "carddav notes_update_keeps_every_other_line").await else {
        return;
    };
    let book = s.default_book().await;
    for (name, card) in rich_vcards() {
        s.put(&book, &name, &card).await;
    }
    seed(&s, &book, 0..8).await;
    let dir = tempfile::tempdir().unwrap();
    let p = s.pipeline(dir.path(), Some(&[&book]), "multiget_size = 5");
    assert_ok(&sync(&p, false).await);
    let renderings: Vec<Option<&str>> = match kind.accept() {
        Some(a) => vec![Some(a), None],
        None => vec![None],
    };
    let before: Vec<Vec<Value>> = renderings.iter().map(|a| s.list_as(&book, *a)).collect();
    let photos = before[0].iter().filter(|l| l["photo"] == true).count();
    assert!(photos >= 6, "{} cards with a photo", photos);

    let update = format!(
        "SELECT account, id, etag, concat('[notes] ', id) AS notes FROM contacts WHERE source = '{SOURCE}'"
    );
    let pipeline = Pipeline::load(&p).unwrap();
    let report = opts(&pipeline, &update, Mode::Update, false).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(
        report.results.len(),
        before[0].len(),
        "{}",
        report.summary()
    );
    for (accept, before) in renderings.iter().zip(&before) {
        let after = s.list_as(&book, *accept);
        assert_eq!(after.len(), before.len());
        for (b, a) in before.iter().zip(&after) {
            let id = a["id"].as_str().unwrap();
            assert_eq!(b["id"], a["id"]);
            assert_eq!(
                a["notes"].as_str(),
                Some(format!("[notes] {id}").as_str()),
                "{} {id} ({accept:?})",
                kind.name()
            );
            assert_eq!(
                lines_but_note(a),
                lines_but_note(b),
                "{} {id} ({accept:?}): lines other than NOTE changed:\nbefore:\n{}\nafter:\n{}",
                kind.name(),
                b["raw"].as_str().unwrap(),
                a["raw"].as_str().unwrap()
            );
        }
    }
    // What the lake lands from the written cards is what the server holds.
    assert_ok(&sync(&p, false).await);
    assert_lake_equals_server(&s, &p, &[&book], "after a notes update");
}

/// A wrong password is an authentication failure that names what to fix, and lands nothing.
pub async fn wrong_password(kind: Kind) {
    let Some(s) = Server::start(kind, "carddav wrong_password").await else {
        return;
    };
    let book = s.default_book().await;
    seed(&s, &book, 0..2).await;
    let dir = tempfile::tempdir().unwrap();
    let p = s.pipeline(dir.path(), Some(&[&book]), "");
    std::fs::write(dir.path().join("secrets/carddav.password"), "wrong").unwrap();
    let out = Command::new(crate::bin())
        .args(["sync", p.to_str().unwrap()])
        .output()
        .unwrap();
    // The failure is in the run's report (stdout); nothing shows the password anywhere.
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong") && !err.contains(PASSWORD),
        "the password is in the error: {err}"
    );
}

macro_rules! against {
    ($server:ident, $kind:expr) => {
        mod $server {
            against!(@checks $kind; lake_equals_server_listing, discovery, write_back, notes_update_keeps_every_other_line, wrong_password);
        }
    };
    (@checks $kind:expr; $($check:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let t = std::time::Instant::now();
                super::$check($kind).await;
                eprintln!("carddav {:?}::{} passed in {:.2?}", $kind, stringify!($check), t.elapsed());
            }
        )+
    };
}

against!(radicale, super::Kind::Radicale);
against!(xandikos, super::Kind::Xandikos);
against!(cyrus, super::Kind::Cyrus);

/// Values meant to leave their line, written back to a real server: a note holding CRLF,
/// an `EMAIL:` line, a forged key line and a second vCard lands as that note (escaped)
/// and adds no property; a website holding CRLF and a birthday that is not a date are
/// refused by the plan (invalid, never sent). The server's listing (vobject) shows every
/// card with its e-mails and X- properties as they were.
pub async fn property_injection(kind: Kind) {
    let Some(s) = Server::start(kind, "carddav property_injection").await else {
        return;
    };
    let book = s.default_book().await;
    seed(&s, &book, 0..4).await;
    let dir = tempfile::tempdir().unwrap();
    let p = s.pipeline(dir.path(), Some(&[&book]), "");
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let before: BTreeMap<String, Value> = s
        .list(&book)
        .into_iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l))
        .collect();
    let crlf = "', chr(13), chr(10), '";
    let note = format!(
        "concat('a; b, c \\ d{crlf}EMAIL:injected@evil.example{crlf}X-CONTACTS-ETL-KEY:cetl-forged', chr(10), 'END:VCARD', chr(13), 'BEGIN:VCARD')"
    );
    let update = format!(
        "SELECT account, id, etag, {note} AS notes FROM contacts WHERE source = '{SOURCE}'"
    );
    let report = opts(&pipeline, &update, Mode::Update, false).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.results.len(), 4, "{}", report.summary());
    let want_note = "a; b, c \\ d\nEMAIL:injected@evil.example\nX-CONTACTS-ETL-KEY:cetl-forged\nEND:VCARD\nBEGIN:VCARD";
    let check = |when: &str| {
        let listed = s.list(&book);
        assert_eq!(listed.len(), 4, "{when}: {listed:#?}");
        for l in &listed {
            let id = l["id"].as_str().unwrap();
            assert_eq!(l["notes"].as_str(), Some(want_note), "{when} {id}");
            assert_eq!(l["emails"], before[id]["emails"], "{when} {id}");
            assert_eq!(l["x_properties"], before[id]["x_properties"], "{when} {id}");
            let raw = unfolded(l["raw"].as_str().unwrap());
            let starting = |w: &str| raw.lines().filter(|x| x.starts_with(w)).count();
            assert_eq!(starting("BEGIN:VCARD"), 1, "{when} {id}: {raw}");
            assert_eq!(starting("END:VCARD"), 1, "{when} {id}: {raw}");
            assert!(
                !raw.lines().any(|x| x.starts_with("EMAIL:injected")
                    || x.starts_with("X-CONTACTS-ETL-KEY")),
                "{when} {id}: {raw}"
            );
        }
    };
    check("after the note");

    // A website and a birthday that would leave their line: refused, nothing sent.
    assert_ok(&sync(&p, false).await);
    for bad in [
        format!(
            "[named_struct('href', concat('https://x.example/{crlf}EMAIL:injected@evil.example'), 'type', 'home', 'label', CAST(NULL AS VARCHAR), 'primary', CAST(NULL AS BOOLEAN))] AS websites"
        ),
        format!("concat('1980-01-01{crlf}EMAIL:injected@evil.example') AS birthday"),
    ] {
        let desired =
            format!("SELECT account, id, etag, {bad} FROM contacts WHERE source = '{SOURCE}'");
        let report = opts(&pipeline, &desired, Mode::Update, false)
            .await
            .unwrap();
        assert!(report.results.is_empty(), "{}", report.summary());
        assert_eq!(report.plan.invalid.len(), 4, "{}", report.summary());
        check(&bad);
    }
}

mod injection {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn radicale() {
        super::property_injection(super::Kind::Radicale).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn xandikos() {
        super::property_injection(super::Kind::Xandikos).await;
    }
}
