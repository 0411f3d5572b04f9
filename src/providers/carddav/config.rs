//! A CardDAV source's own settings in the pipeline file, and their checks:
//!
//! ```toml
//! [[sources]]
//! name = "addressbook"
//! provider = "carddav"
//! base_url = "http://127.0.0.1:5232"
//! auth = { kind = "basic", username = "alice", password_env = "CARDDAV_PASSWORD" }
//! # or auth = { kind = "bearer", token_env = "CARDDAV_TOKEN" }   (or token_file)
//! # or auth = { kind = "none" }                                   (a server without login)
//! # address_books = ["/alice/contacts/"]   # optional; discovered when absent
//! # multiget_size = 200                    # hrefs per addressbook-multiget REPORT
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::config::SourceConfig;
use crate::error::Result;

/// Default hrefs per `addressbook-multiget` REPORT: large enough that a 10,000-contact
/// book takes 50 requests, small enough that one answer (about 1 KiB a vCard, more with
/// photos) stays far below the body limit.
pub const DEFAULT_MULTIGET_SIZE: usize = 200;
/// Most hrefs one REPORT may name (servers cap their request bodies).
pub const MAX_MULTIGET_SIZE: usize = 1000;

/// How a CardDAV source authenticates.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// HTTP Basic: a user name and a password (an app-specific password for iCloud and
    /// Fastmail) from the environment or a file.
    Basic {
        /// The user name.
        username: String,
        /// The environment variable holding the password.
        password_env: Option<String>,
        /// A file holding the password, relative to the pipeline file.
        password_file: Option<String>,
    },
    /// `Authorization: Bearer` with a token from the environment or a file.
    Bearer {
        /// The environment variable holding the token.
        token_env: Option<String>,
        /// A file holding the token, relative to the pipeline file.
        token_file: Option<String>,
    },
    /// No credentials: a server on a trusted network that asks for none.
    None {},
}

/// The keys as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    address_books: Option<Vec<String>>,
    auth: Option<toml::Value>,
    multiget_size: Option<usize>,
}

/// A CardDAV source's checked settings.
#[derive(Debug, Clone)]
pub struct CardDavConfig {
    /// The server's URL (scheme, host, port, and a path where discovery starts).
    pub base_url: url::Url,
    /// The address-book paths configured (each ending in `/`), or `None` to discover them.
    pub address_books: Option<Vec<String>>,
    /// How requests authenticate.
    pub auth: AuthConfig,
    /// Hrefs per `addressbook-multiget` REPORT.
    pub multiget_size: usize,
}

impl CardDavConfig {
    /// Reads and checks the settings of a `provider = "carddav"` entry. Reads no
    /// credential.
    pub fn read(cfg: &SourceConfig, _dir: &Path) -> Result<CardDavConfig> {
        let raw: Raw = cfg.settings_as()?;
        let base_url = url::Url::parse(&cfg.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                cfg.error(format!(
                    "base_url {:?} is not an http(s) URL; write the server's address, e.g. \"https://carddav.fastmail.com\"",
                    cfg.base_url
                ))
            })?;
        if !base_url.username().is_empty() || base_url.password().is_some() {
            return Err(cfg.error(
                "base_url carries a user name or password; put them in auth = { kind = \"basic\", username = \"…\", password_env = \"…\" }",
            ));
        }
        let auth = read_auth(cfg, raw.auth)?;
        let address_books = match raw.address_books {
            None => None,
            Some(books) => Some(check_books(cfg, &base_url, books)?),
        };
        let multiget_size = raw.multiget_size.unwrap_or(DEFAULT_MULTIGET_SIZE);
        if !(1..=MAX_MULTIGET_SIZE).contains(&multiget_size) {
            return Err(cfg.error(format!(
                "multiget_size = {multiget_size}: use 1 to {MAX_MULTIGET_SIZE}"
            )));
        }
        Ok(CardDavConfig {
            base_url,
            address_books,
            auth,
            multiget_size,
        })
    }
}

fn read_auth(cfg: &SourceConfig, auth: Option<toml::Value>) -> Result<AuthConfig> {
    let v = auth.ok_or_else(|| {
        cfg.error(
            "a carddav source needs auth = { kind = \"basic\", username = \"…\", password_env = \"…\" } (or kind = \"bearer\" with token_env, or kind = \"none\")",
        )
    })?;
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    if matches!(kind, "service_account" | "client_login" | "app") {
        return Err(cfg.error(format!(
            "auth kind {kind:?} is for another provider; carddav sources use kind = \"basic\", \"bearer\" or \"none\""
        )));
    }
    let auth: AuthConfig = v
        .try_into()
        .map_err(|e: toml::de::Error| cfg.error(format!("auth: {}", e.message().trim())))?;
    match &auth {
        AuthConfig::Basic {
            username,
            password_env,
            password_file,
        } => {
            if username.is_empty() || username.contains(':') {
                return Err(cfg.error(
                    "auth.username must be non-empty and hold no ':' (HTTP Basic cannot carry one)",
                ));
            }
            if password_env.is_none() == password_file.is_none() {
                return Err(cfg.error("auth needs exactly one of password_env or password_file"));
            }
        }
        AuthConfig::Bearer {
            token_env,
            token_file,
        } => {
            if token_env.is_none() == token_file.is_none() {
                return Err(cfg.error("auth needs exactly one of token_env or token_file"));
            }
        }
        AuthConfig::None {} => {}
    }
    Ok(auth)
}

/// Checks the configured address books: each a path (or a URL on `base`'s origin,
/// reduced to its path) ending in `/`, listed once.
fn check_books(cfg: &SourceConfig, base: &url::Url, books: Vec<String>) -> Result<Vec<String>> {
    if books.is_empty() {
        return Err(cfg.error(
            "address_books is empty; list paths such as \"/alice/contacts/\", or remove the key to discover them",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(books.len());
    for (i, b) in books.iter().enumerate() {
        let at = cfg.key(&format!("address_books[{i}]"));
        let path = book_path(base, b).map_err(|why| {
            crate::error::Error::config(format!("{at}: the address book {b:?} {why}"))
        })?;
        if let Some(j) = out.iter().position(|p| *p == path) {
            return Err(crate::error::Error::config(format!(
                "{at}: the address book {path} is listed twice in source {} (first at address_books[{j}]); remove one",
                cfg.name
            )));
        }
        out.push(path);
    }
    Ok(out)
}

/// The path of a configured address book: a path, or a URL on `base`'s origin. A
/// trailing `/` is added (a collection's canonical href ends in one). Returns what is
/// wrong otherwise.
pub fn book_path(base: &url::Url, book: &str) -> std::result::Result<String, String> {
    let url = base
        .join(book)
        .map_err(|e| format!("is neither a path nor a URL ({e})"))?;
    if !crate::http::same_origin(base, &url) {
        return Err(format!(
            "is outside {} (the origin of base_url); credentials go only to base_url's server",
            crate::http::origin_of(base)
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("has a query or fragment; write the collection's path".into());
    }
    let mut path = url.path().to_string();
    if !path.ends_with('/') {
        path.push('/');
    }
    check_book_path(&path)?;
    Ok(path)
}

/// Checks an address-book path: printable ASCII (non-ASCII arrives percent-encoded),
/// free of `.` and `..` segments, not the server's root, and short enough that its
/// account id (see [`account_of`]) is a valid one.
pub fn check_book_path(path: &str) -> std::result::Result<(), String> {
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("has the character {c:?}"));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err("has a '.' or '..' segment".into());
    }
    if path.trim_matches('/').is_empty() {
        return Err("is the server's root, not an address book".into());
    }
    let id = account_of(path);
    crate::config::check_account_id(&id)
        .map_err(|why| format!("gives the account id {id:?}, which {why}"))
}

/// The account id of an address-book path. Account ids name a partition folder of every
/// table, so they hold only letters, digits, `.`, `_` and `-` (see
/// [`crate::config::check_account_id`]); a path's `/` cannot be one. The id is the path
/// without its outer slashes, segments joined by `.`, every byte other than a letter,
/// digit or `-` written `_XX` (hex): `/alice/contacts/` → `alice.contacts`,
/// `/remote.php/dav/addressbooks/users/alice/contacts/` →
/// `remote_2Ephp.dav.addressbooks.users.alice.contacts`. [`book_of`] reverses it.
pub fn account_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.trim_matches('/').split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' {
                out.push(b as char);
            } else {
                out.push_str(&format!("_{b:02X}"));
            }
        }
    }
    out
}

/// The address-book path of an account id made by [`account_of`]; `None` for any other.
pub fn book_of(account: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(account.len() + 2);
    bytes.push(b'/');
    let mut it = account.bytes();
    while let Some(b) = it.next() {
        match b {
            b'.' => bytes.push(b'/'),
            b'_' => {
                let hex = [it.next()?, it.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b if b.is_ascii_alphanumeric() || b == b'-' => bytes.push(b),
            _ => return None,
        }
    }
    bytes.push(b'/');
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pipeline;

    /// Paths of real servers become valid account ids and come back unchanged.
    #[test]
    fn book_paths_round_trip_through_account_ids() {
        for (path, id) in [
            ("/alice/contacts/", "alice.contacts"),
            ("/user/contacts/addressbook/", "user.contacts.addressbook"),
            (
                "/remote.php/dav/addressbooks/users/alice/contacts/",
                "remote_2Ephp.dav.addressbooks.users.alice.contacts",
            ),
            (
                "/dav/addressbooks/user/alice@fastmail.com/Default/",
                "dav.addressbooks.user.alice_40fastmail_2Ecom.Default",
            ),
            ("/1234567/carddavhome/card/", "1234567.carddavhome.card"),
            ("/a_b/%C3%A9t%C3%A9/", "a_5Fb._25C3_25A9t_25C3_25A9"),
        ] {
            assert_eq!(account_of(path), id);
            assert_eq!(crate::config::check_account_id(id), Ok(()), "{id}");
            assert_eq!(book_of(id).as_deref(), Some(path));
        }
        for bad in ["a/b", "a_4", "a_ZZ", "a b"] {
            assert_eq!(book_of(bad), None, "{bad}");
        }
    }

    const AUTH: &str = "auth = { kind = \"basic\", username = \"alice\", password_env = \"P\" }";

    fn read(settings: &str) -> Result<CardDavConfig> {
        let t = format!(
            "[lake]\nurl = \"/tmp/lake\"\n[[sources]]\nname = \"c\"\nprovider = \"carddav\"\nbase_url = \"http://127.0.0.1:5232\"\n{settings}\n"
        );
        let p = Pipeline::parse(&t, Path::new("p.toml"))?;
        CardDavConfig::read(&p.sources[0], Path::new(""))
    }

    #[test]
    fn good_settings_read() {
        let c = read(AUTH).unwrap();
        assert!(c.address_books.is_none());
        assert_eq!(c.multiget_size, DEFAULT_MULTIGET_SIZE);
        let c = read(&format!(
            "{AUTH}\naddress_books = [\"/alice/contacts\", \"http://127.0.0.1:5232/alice/work/\"]"
        ))
        .unwrap();
        assert_eq!(
            c.address_books.unwrap(),
            vec!["/alice/contacts/".to_string(), "/alice/work/".to_string()]
        );
        assert!(matches!(
            read("auth = { kind = \"bearer\", token_file = \"t\" }")
                .unwrap()
                .auth,
            AuthConfig::Bearer { .. }
        ));
        assert!(matches!(
            read("auth = { kind = \"none\" }").unwrap().auth,
            AuthConfig::None {}
        ));
    }

    #[test]
    fn refusals_name_the_entry_and_the_key() {
        for (settings, words) in [
            ("", vec!["needs auth"]),
            (&format!("{AUTH}\ndomain = \"x\"") as &str, vec!["domain"]),
            (
                "auth = { kind = \"basic\", username = \"a\" }",
                vec!["exactly one of password_env"],
            ),
            (
                "auth = { kind = \"basic\", username = \"a\", password_env = \"P\", pasword_file = \"f\" }",
                vec!["auth", "pasword_file"],
            ),
            (
                "auth = { kind = \"bearer\", token_env = \"A\", token_file = \"B\" }",
                vec!["exactly one of token_env"],
            ),
            (
                "auth = { kind = \"service_account\", key_file = \"k\", subject = \"s\" }",
                vec!["another provider"],
            ),
            (&format!("{AUTH}\naddress_books = []"), vec!["empty"]),
            (&format!("{AUTH}\nmultiget_size = 0"), vec!["multiget_size"]),
        ] {
            let e = read(settings).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let e = e.to_string();
            assert!(e.starts_with("p.toml: sources[0] (c): "), "{settings}: {e}");
            for w in words {
                assert!(e.contains(w), "{settings}: {w} not in {e}");
            }
        }
        for (books, words) in [
            (
                "[\"http://evil.example/alice/\"]",
                vec!["address_books[0]", "outside http://127.0.0.1:5232"],
            ),
            (
                "[\"/a/\", \"/b/\", \"/a\"]",
                vec!["address_books[2]", "twice", "address_books[0]"],
            ),
            ("[\"/a/#x\"]", vec!["address_books[0]", "fragment"]),
            ("[\"/a/?x=1\"]", vec!["query"]),
            ("[\"/\"]", vec!["root"]),
            (
                &format!("[\"/{}/\"]", "a".repeat(129)),
                vec!["129 characters"],
            ),
        ] {
            let e = read(&format!("{AUTH}\naddress_books = {books}"))
                .unwrap_err()
                .to_string();
            for w in words {
                assert!(e.contains(w), "{books}: {w} not in {e}");
            }
        }
    }
}
