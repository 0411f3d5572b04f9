//! A hostile or broken CardDAV server (issue #33): a scripted address book on loopback
//! (the raw fixture of `hostile.rs`) that answers multigets with less, more or other than
//! what was asked, echoes the password, names two members with one id, serves a vCard
//! without its end, or pages sync reports in a circle; the real binary is run against it.
//! Each test checks the exit code, the message, what landed (nothing of a failed run),
//! that a failed incremental run does not advance the cursor, and that no form of the
//! password appears in any output or file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::hostile::{Reply, Req, Server, cli, http, landed, sync_cli};

/// How the scripted server misbehaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    /// A multiget answers only the first half of the hrefs asked.
    Half,
    /// A multiget answers what was asked plus this many hrefs nobody asked for.
    Extra(usize),
}

/// The book `/b/`: members by href (etag, vCard), its sync token, and what each old
/// token's report lists as changed.
struct Book {
    members: BTreeMap<String, (String, String)>,
    token: String,
    changed_since: BTreeMap<String, Vec<String>>,
    fault: Fault,
}

fn vcard(id: &str, note: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{id}\r\nFN:Name {id}\r\nNOTE:{note}\r\nEND:VCARD\r\n"
    )
}

fn ms(inner: &str, token: Option<&str>) -> Reply {
    let t = token
        .map(|t| format!("<d:sync-token>{t}</d:sync-token>"))
        .unwrap_or_default();
    let body = format!(
        r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav">{inner}{t}</d:multistatus>"#
    );
    Reply::Raw(http(207, "application/xml; charset=utf-8", body.as_bytes()))
}

fn propstat(href: &str, prop: &str) -> String {
    format!(
        "<d:response><d:href>{href}</d:href><d:propstat><d:prop>{prop}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
    )
}

fn card_response(href: &str, etag: &str, card: &str) -> String {
    propstat(
        href,
        &format!(
            "<d:getetag>\"{etag}\"</d:getetag><c:address-data>{}</c:address-data>",
            card.replace('&', "&amp;").replace('<', "&lt;")
        ),
    )
}

/// The hrefs a multiget body asks for.
fn asked(body: &str) -> Vec<String> {
    body.split("<d:href>")
        .skip(1)
        .filter_map(|p| p.split("</d:href>").next())
        .map(str::to_string)
        .collect()
}

/// Answers the book's PROPFINDs, multigets and sync reports.
fn answer(book: &Mutex<Book>, r: &Req) -> Reply {
    let b = book.lock().unwrap();
    match r.method.as_str() {
        "PROPFIND" if r.body.contains("sync-token") => ms(
            &propstat("/b/", &format!("<d:sync-token>{}</d:sync-token>", b.token)),
            None,
        ),
        "PROPFIND" => {
            let mut inner = propstat(
                "/b/",
                "<d:resourcetype><d:collection/><c:addressbook/></d:resourcetype>",
            );
            for (href, (etag, _)) in &b.members {
                inner.push_str(&propstat(
                    href,
                    &format!("<d:getetag>\"{etag}\"</d:getetag>"),
                ));
            }
            ms(&inner, None)
        }
        "REPORT" if r.body.contains("addressbook-multiget") => {
            let hrefs = asked(&r.body);
            let n = match b.fault {
                Fault::Half => hrefs.len() / 2,
                _ => hrefs.len(),
            };
            let mut inner = String::new();
            for h in &hrefs[..n] {
                match b.members.get(h) {
                    Some((etag, card)) => inner.push_str(&card_response(h, etag, card)),
                    None => inner.push_str(&format!(
                        "<d:response><d:href>{h}</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>"
                    )),
                }
            }
            if let Fault::Extra(k) = b.fault {
                for i in 0..k {
                    let id = format!("extra{i}");
                    inner.push_str(&card_response(
                        &format!("/b/{id}.vcf"),
                        "x",
                        &vcard(&id, "x"),
                    ));
                }
            }
            ms(&inner, None)
        }
        "REPORT" => {
            let from = r
                .body
                .split("<d:sync-token>")
                .nth(1)
                .and_then(|t| t.split("</d:sync-token>").next())
                .unwrap_or("");
            let Some(changed) = b.changed_since.get(from) else {
                return Reply::Raw(http(
                    403,
                    "application/xml",
                    b"<d:error xmlns:d=\"DAV:\"><d:valid-sync-token/></d:error>",
                ));
            };
            let mut inner = String::new();
            for h in changed {
                match b.members.get(h) {
                    Some((etag, _)) => {
                        inner.push_str(&propstat(h, &format!("<d:getetag>\"{etag}\"</d:getetag>")))
                    }
                    None => inner.push_str(&format!(
                        "<d:response><d:href>{h}</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>"
                    )),
                }
            }
            ms(&inner, Some(&b.token))
        }
        _ => Reply::Raw(http(405, "text/plain", b"no")),
    }
}

/// A book of `n` members `c0..c{n-1}` at token `t1`.
fn book(n: usize) -> Arc<Mutex<Book>> {
    let members = (0..n)
        .map(|i| {
            let id = format!("c{i}");
            (
                format!("/b/{id}.vcf"),
                (format!("e1-{id}"), vcard(&id, "v1")),
            )
        })
        .collect();
    Arc::new(Mutex::new(Book {
        members,
        token: "t1".into(),
        changed_since: BTreeMap::new(),
        fault: Fault::None,
    }))
}

async fn serve(book: &Arc<Mutex<Book>>) -> Server {
    let b = book.clone();
    Server::start(move |r| answer(&b, r)).await
}

/// A CardDAV pipeline on `base` with Basic auth: user alice, `password` in a file.
fn pipeline(dir: &Path, base: &str, password: &str) -> PathBuf {
    std::fs::write(dir.join("password"), password).unwrap();
    let text = format!(
        "[lake]\nurl = \"lake\"\n\n[[sources]]\nname = \"dav\"\nprovider = \"carddav\"\nbase_url = \"{base}\"\naddress_books = [\"/b/\"]\nmultiget_size = 4\nauth = {{ kind = \"basic\", username = \"alice\", password_file = \"password\" }}\nmax_retries = 1\nretry_base_ms = 5\ntimeout_secs = 20\n"
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The notes landed per id.
async fn notes(p: &Path) -> BTreeMap<String, String> {
    let pipeline = contacts_etl::config::Pipeline::load(p).unwrap();
    let lake = contacts_etl::sync::lake_of(&pipeline).unwrap();
    lake.contacts_of("dav", "b")
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.notes.unwrap_or_default()))
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    v.sort();
    v
}

/// A multiget that answers half of what it was asked: a first sync lands nothing (exit
/// 1, naming the hrefs not answered), and a full refresh over a good lake deletes
/// nothing.
#[tokio::test]
async fn hostile_dav_half_answered_multiget_lands_nothing_and_deletes_nothing() {
    let b = book(10);
    b.lock().unwrap().fault = Fault::Half;
    let server = serve(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &server.url, "a-long-dav-password");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("answered 2 of the 4 hrefs asked"),
        "{}",
        run.stderr
    );
    assert!(landed(&p, "dav", "b").await.is_empty());

    b.lock().unwrap().fault = Fault::None;
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(landed(&p, "dav", "b").await, ids(10));

    b.lock().unwrap().fault = Fault::Half;
    let run = sync_cli(&p, &["--full-refresh"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(landed(&p, "dav", "b").await, ids(10), "nothing deleted");
}

/// An incremental sync whose multiget answers half of the changes fails and keeps the
/// cursor, so the next good run lands all ten changes (none lost); a change whose
/// member is gone by the time of its multiget (404) is a delete.
#[tokio::test]
async fn hostile_dav_half_answered_changes_keep_the_cursor() {
    let b = book(10);
    let server = serve(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &server.url, "a-long-dav-password");
    assert_eq!(sync_cli(&p, &[]).await.code, Some(0));
    {
        let mut bk = b.lock().unwrap();
        let changed: Vec<String> = bk.members.keys().cloned().collect();
        for (i, (etag, card)) in bk.members.values_mut().enumerate() {
            *etag = format!("e2-{i}");
            *card = vcard(&format!("c{i}"), "v2");
        }
        bk.changed_since.insert("t1".into(), changed);
        bk.token = "t2".into();
        bk.fault = Fault::Half;
    }
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        notes(&p).await.values().all(|n| n == "v1"),
        "nothing applied"
    );

    {
        let mut bk = b.lock().unwrap();
        bk.fault = Fault::None;
        // c0 goes between the report and the multiget: the report still lists it.
        bk.members.remove("/b/c0.vcf");
    }
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let landed = notes(&p).await;
    assert!(
        !landed.contains_key("c0"),
        "the 404 at multiget is a delete"
    );
    assert_eq!(landed.len(), 9);
    assert!(landed.values().all(|n| n == "v2"), "{landed:?}");
}

/// A multiget answered with vCards at hrefs nobody asked for fails the account; none of
/// them lands.
#[tokio::test]
async fn hostile_dav_unasked_hrefs_are_refused() {
    let b = book(3);
    b.lock().unwrap().fault = Fault::Extra(50);
    let server = serve(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &server.url, "a-long-dav-password");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("/b/extra0.vcf") && run.stderr.contains("not asked"));
    assert!(landed(&p, "dav", "b").await.is_empty());
}

/// Two members whose names make one id (`/b/x.vcf`, `/b/x`), or a member of a nested
/// collection: the account fails naming both hrefs, rather than landing one row for two.
#[tokio::test]
async fn hostile_dav_colliding_resource_names_fail_the_account() {
    let b = book(1);
    b.lock()
        .unwrap()
        .members
        .insert("/b/c0".into(), ("e".into(), vcard("c0", "other")));
    let server = serve(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &server.url, "a-long-dav-password");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("/b/c0 and /b/c0.vcf") && run.stderr.contains("same resource name"),
        "{}",
        run.stderr
    );

    let b = book(1);
    b.lock()
        .unwrap()
        .members
        .insert("/b/sub/c0.vcf".into(), ("e".into(), vcard("c0", "other")));
    let server = serve(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &server.url, "a-long-dav-password");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("/b/sub/c0.vcf"), "{}", run.stderr);
    assert!(landed(&p, "dav", "b").await.is_empty());
}

/// A vCard without `END:VCARD`, one whose quoted-printable NOTE runs on into its END
/// line, and two vCards in one resource each fail the account naming the href.
#[tokio::test]
async fn hostile_dav_unterminated_vcards_are_refused() {
    for (card, words) in [
        (
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cut\r\nNOTE:half".to_string(),
            "no END:VCARD",
        ),
        (
            "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:QP\r\nNOTE;ENCODING=QUOTED-PRINTABLE:a=\r\nEND:VCARD\r\n"
                .to_string(),
            "no END:VCARD",
        ),
        (format!("{}{}", vcard("c0", "a"), vcard("c9", "b")), "more than one vCard"),
    ] {
        let b = book(1);
        b.lock().unwrap().members.get_mut("/b/c0.vcf").unwrap().1 = card.clone();
        let server = serve(&b).await;
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), &server.url, "a-long-dav-password");
        let run = sync_cli(&p, &[]).await;
        assert_eq!(run.code, Some(1), "{card:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(words) && run.stderr.contains("/b/c0.vcf"),
            "{card:?}: {}",
            run.stderr
        );
        assert!(landed(&p, "dav", "b").await.is_empty());
    }
}

/// A server that echoes the Basic credential (as base64, as `user:password`, and a short
/// password as a word) and terminal escape sequences in its error page: neither the
/// password in any form nor an escape reaches stderr, `sync_runs` or `status`.
#[tokio::test]
async fn hostile_dav_echoed_password_and_escapes_are_not_shown() {
    let server = Server::start(|r: &Req| {
        let auth = r.header("authorization").unwrap_or("").to_string();
        let b64 = auth.strip_prefix("Basic ").unwrap_or("").to_string();
        let body = format!(
            "bad login {b64} for alice:hunter2; Wrong password hunter2\x1b]0;owned\x07\x1b[2J\rsynced ok"
        );
        Reply::Raw(http(500, "text/plain", body.as_bytes()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &server.url, "hunter2");
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let status = cli(&["status", p.to_str().unwrap(), "--format", "json"], &[]).await;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode("alice:hunter2");
    for (what, text) in [
        ("stderr", &run.stderr),
        ("stdout", &run.stdout),
        ("status", &status.stdout),
        ("sync_runs", &crate::hostile::recorded_error(&p).await),
    ] {
        assert!(!text.contains(&b64), "{what}: {text}");
        assert!(!text.contains("hunter2"), "{what}: {text}");
        assert!(
            !text.contains('\x1b') && !text.contains('\x07'),
            "{what}: {text:?}"
        );
    }
    assert!(run.stderr.contains("bad login ***"), "{}", run.stderr);
}

/// A 507-truncated sync report whose pages hand back two tokens in turn goes round
/// forever: stopped at the first token seen again, after a few requests, not 10,000.
#[tokio::test]
async fn hostile_dav_alternating_507_tokens_stop_at_once() {
    let server = Server::start(|r: &Req| {
        if r.method == "PROPFIND" {
            return ms(
                &propstat("/b/", "<d:sync-token>a</d:sync-token>"),
                None,
            );
        }
        let next = if r.body.contains("<d:sync-token>a<") { "b" } else { "a" };
        ms(
            "<d:response><d:href>/b/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>",
            Some(next),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &server.url, "a-long-dav-password");
    // The first run reads the (empty) book in full and keeps token `a`; the next one
    // pages from it and meets the circle.
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let before = server.hits().len();
    let run = sync_cli(&p, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("paging loop"), "{}", run.stderr);
    assert!(
        server.hits().len() - before < 10,
        "{} requests",
        server.hits().len() - before
    );
}
