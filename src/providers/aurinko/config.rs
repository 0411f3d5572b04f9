//! An Aurinko source's own settings in the pipeline file, and their checks:
//!
//! ```toml
//! [[sources]]
//! name = "crm"
//! provider = "aurinko"
//! base_url = "https://api.aurinko.io"
//! accounts = [{ id = "101", token_env = "AURINKO_TOKEN_101" }]
//! # or accounts_file = "accounts.csv"   (id,token_env,token_file)
//! # or auth = { kind = "app", client_id_env = "…", client_secret_env = "…" } and ids only
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::config::{SourceConfig, check_account_id};
use crate::error::{Error, Result};

/// How an Aurinko source authenticates, when not with each account's bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// Each account's own bearer token (`token_env`/`token_file` on the account): the
    /// default, written out.
    Bearer {},
    /// Aurinko app credentials: Basic client id/secret plus `X-Aurinko-Account-Id`.
    App {
        /// The environment variable holding the client id.
        client_id_env: String,
        /// The environment variable holding the client secret.
        client_secret_env: String,
    },
}

/// One Aurinko account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The Aurinko account id.
    pub id: String,
    /// The environment variable holding the account's bearer token (not needed with
    /// `auth = { kind = "app", … }`).
    pub token_env: Option<String>,
    /// A file holding the account's bearer token, relative to the pipeline file.
    pub token_file: Option<String>,
}

/// The keys as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    accounts: Vec<AccountConfig>,
    accounts_file: Option<String>,
    auth: Option<toml::Value>,
}

/// An Aurinko source's checked settings.
#[derive(Debug, Clone)]
pub struct AurinkoConfig {
    /// The accounts: those of `accounts`, then those of `accounts_file`.
    pub accounts: Vec<AccountConfig>,
    /// App credentials, when the accounts do not carry tokens.
    pub app: Option<(String, String)>,
}

impl AurinkoConfig {
    /// Reads and checks the settings of a `provider = "aurinko"` entry, with its
    /// accounts file (relative to `dir`, the pipeline file's folder). Reads no credential.
    pub fn read(cfg: &SourceConfig, dir: &Path) -> Result<AurinkoConfig> {
        let raw: Raw = cfg.settings_as()?;
        let app = match raw.auth {
            None => None,
            Some(v) => {
                let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
                if matches!(kind, "service_account" | "client_login") {
                    return Err(cfg.error(format!(
                        "auth kind {kind:?} is for google sources; aurinko sources use per-account token_env or auth = {{ kind = \"app\", … }}"
                    )));
                }
                match v
                    .try_into::<AuthConfig>()
                    .map_err(|e| cfg.error(format!("auth: {}", e.message().trim())))?
                {
                    AuthConfig::Bearer {} => None,
                    AuthConfig::App {
                        client_id_env,
                        client_secret_env,
                    } => Some((client_id_env, client_secret_env)),
                }
            }
        };
        // Where each account is configured, for errors.
        let mut places: Vec<String> = (0..raw.accounts.len())
            .map(|j| cfg.key(&format!("accounts[{j}].id")))
            .collect();
        let mut accounts = raw.accounts;
        if let Some(file_name) = raw.accounts_file {
            let path = dir.join(&file_name);
            for (line, a) in read_accounts_file(&path)? {
                places.push(format!("{}:{line}", path.display()));
                accounts.push(a);
            }
        }
        let mut first_at: std::collections::HashMap<&str, &str> = Default::default();
        for (a, at) in accounts.iter().zip(&places) {
            if let Err(why) = check_account_id(&a.id) {
                return Err(Error::config(format!(
                    "{at}: the account id {:?} {why}",
                    a.id
                )));
            }
            if let Some(before) = first_at.insert(&a.id, at) {
                return Err(Error::config(format!(
                    "{at}: the account {} is listed twice in source {} (first at {before}); remove one",
                    a.id, cfg.name
                )));
            }
        }
        if accounts.is_empty() {
            return Err(cfg.error(
                "an aurinko source needs accounts = [{ id = \"101\", token_env = \"AURINKO_TOKEN_101\" }] or accounts_file",
            ));
        }
        if app.is_none()
            && let Some(a) = accounts
                .iter()
                .find(|a| a.token_env.is_none() == a.token_file.is_none())
        {
            return Err(cfg.error(format!(
                "account {} needs exactly one of token_env or token_file (or use auth = {{ kind = \"app\", … }})",
                a.id
            )));
        }
        Ok(AurinkoConfig { accounts, app })
    }
}

/// Reads an accounts file: CSV records `id,token_env,token_file` (RFC 4180: fields may be
/// quoted, `""` is a quote inside one), an optional header whose first field is `id`,
/// blank lines and `#` comments. Returns each account with its line number.
fn read_accounts_file(path: &Path) -> Result<Vec<(usize, AccountConfig)>> {
    let text =
        crate::config::read_input_file(path, crate::config::MAX_INPUT_FILE, "accounts_file")?;
    let mut out = Vec::new();
    let mut header_allowed = true;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields = csv_fields(line).map_err(|why| Error::config(format!("{}: {why}", at())))?;
        if std::mem::take(&mut header_allowed) && fields[0] == "id" {
            continue;
        }
        if fields.len() > 3 {
            return Err(Error::config(format!(
                "{}: {} fields; an account line is id,token_env,token_file",
                at(),
                fields.len()
            )));
        }
        let mut fields = fields.into_iter();
        let id = fields.next().unwrap_or_default();
        let token_env = fields.next().filter(|s| !s.is_empty());
        let token_file = fields.next().filter(|s| !s.is_empty());
        if id.is_empty() {
            return Err(Error::config(format!("{}: empty account id", at())));
        }
        out.push((
            n + 1,
            AccountConfig {
                id,
                token_env,
                token_file,
            },
        ));
    }
    Ok(out)
}

/// Splits one CSV line into fields, unquoting quoted ones; spaces around a field are
/// dropped. A record spanning lines is refused: no account field needs a line break.
fn csv_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed on its line".into()),
                }
            }
            while chars
                .next_if(|c| *c == ' ' || *c == '\t' || *c == '\r')
                .is_some()
            {}
            if chars.peek().is_some_and(|c| *c != ',') {
                return Err("text after a closing quote; quote the whole field".into());
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if c == '"' {
                    return Err("a quote inside an unquoted field; quote the whole field".into());
                }
                field.push(c);
            }
            field = field.trim().to_string();
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MAX_ACCOUNT_ID_LEN, Pipeline};

    const GOOD: &str = "accounts = [{ id = \"101\", token_env = \"A101\" }]";

    fn read_in(dir: &Path, settings: &str) -> Result<AurinkoConfig> {
        let t = format!(
            "[lake]\nurl = \"/tmp/lake\"\n[[sources]]\nname = \"a\"\nprovider = \"aurinko\"\nbase_url = \"http://127.0.0.1:1\"\n{settings}\n"
        );
        let p = Pipeline::parse(&t, &dir.join("p.toml"))?;
        AurinkoConfig::read(&p.sources[0], dir)
    }

    fn read(settings: &str) -> Result<AurinkoConfig> {
        read_in(Path::new(""), settings)
    }

    #[test]
    fn account_ids_are_checked_where_they_are_configured() {
        assert_eq!(read(GOOD).unwrap().accounts[0].id, "101");
        for (id, why) in [
            ("a/b", "'/'"),
            ("10%2F", "'%'"),
            ("a\\nb", "'\\n'"),
            ("..", "'.'"),
            ("", "empty"),
        ] {
            let e = read(&GOOD.replace("\"101\"", &format!("\"{id}\"")))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("p.toml: sources[0].accounts[0].id") && e.contains(why),
                "{id}: {e}"
            );
        }
        let long = "1".repeat(MAX_ACCOUNT_ID_LEN + 1);
        let e = read(&GOOD.replace("\"101\"", &format!("\"{long}\"")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("129 characters"), "{e}");
        let e = read(&GOOD.replace(
            "{ id = \"101\", token_env = \"A101\" }",
            "{ id = \"101\", token_env = \"A\" }, { id = \"101\", token_env = \"B\" }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sources[0].accounts[1].id")
                && e.contains("twice")
                && e.contains("accounts[0]"),
            "{e}"
        );
    }

    #[test]
    fn refusals_name_the_entry_and_the_key() {
        for (settings, words) in [
            ("", vec!["needs accounts"]),
            (
                "accounts = [{ id = \"101\" }]",
                vec!["101", "exactly one of"],
            ),
            (&format!("{GOOD}\ndomain = \"x\""), vec!["domain"]),
            (&format!("{GOOD}\nphotos = true"), vec!["photos"]),
            (
                &format!(
                    "{GOOD}\nauth = {{ kind = \"service_account\", key_file = \"k\", subject = \"s\" }}"
                ),
                vec!["google"],
            ),
        ] {
            let e = read(settings).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let e = e.to_string();
            assert!(e.starts_with("p.toml: sources[0] (a): "), "{settings}: {e}");
            for w in words {
                assert!(e.contains(w), "{settings}: {w} not in {e}");
            }
        }
        let app = read(
            "auth = { kind = \"app\", client_id_env = \"I\", client_secret_env = \"S\" }\naccounts = [{ id = \"101\" }]",
        )
        .unwrap();
        assert_eq!(app.app, Some(("I".into(), "S".into())));
    }

    #[test]
    fn accounts_files_are_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("accounts.csv");
        std::fs::write(
            &csv,
            "id,token_env,token_file\n# a comment\n\n\"101\", \"AURINKO_TOKEN_101\"\n102,,\"tokens/a,b\"\"c\"\n",
        )
        .unwrap();
        let a = read_in(dir.path(), "accounts_file = \"accounts.csv\"")
            .unwrap()
            .accounts;
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].id.as_str(), a[0].token_env.as_deref()),
            ("101", Some("AURINKO_TOKEN_101"))
        );
        assert_eq!(
            (a[1].id.as_str(), a[1].token_file.as_deref()),
            ("102", Some("tokens/a,b\"c"))
        );
        for (body, line, why) in [
            ("101,A\n\"102,B\n", 2, "not closed"),
            ("101,A\n102,B\n101,C\n", 3, "twice"),
            ("101,A\n1 0,B\n", 2, "' '"),
            ("101,A,f,x\n", 1, "4 fields"),
        ] {
            std::fs::write(&csv, body).unwrap();
            let e = read_in(dir.path(), "accounts_file = \"accounts.csv\"").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let e = e.to_string();
            assert!(
                e.contains(&format!("accounts.csv:{line}")) && e.contains(why),
                "{body}: {e}"
            );
        }
    }
}
