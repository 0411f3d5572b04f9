//! Pipeline files (`pipelines/*.toml`): one lake, one or more sources.
//!
//! ```toml
//! [lake]
//! url = "file:///var/lib/contacts-lake"     # or s3://bucket/prefix, or a path
//!
//! [[sources]]
//! name = "shared_contacts"
//! provider = "google"
//! domain = "example.com"
//! base_url = "https://www.google.com"
//! auth = { kind = "service_account", key_file = "${GOOGLE_SA_KEY_FILE}", subject = "admin@example.com" }
//!
//! [[sources]]
//! name = "crm_contacts"
//! provider = "aurinko"
//! base_url = "https://api.aurinko.io"
//! accounts = [{ id = "101", token_env = "AURINKO_TOKEN_101" }]
//! ```
//!
//! String values may use `${VAR}` to read an environment variable (`$${` is a literal
//! `${`). Secrets never stand in the file: tokens are named by the environment variable
//! that holds them (`token_env`), keys by the file that holds them (`key_file`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// A parsed, validated, interpolated pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Where the Delta tables live.
    pub lake: LakeConfig,
    /// The sources to sync, each with a unique `name`.
    pub sources: Vec<SourceConfig>,
    /// The file it was read from (set by [`Pipeline::load`]).
    #[serde(skip)]
    pub path: PathBuf,
}

/// The `[lake]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `file:///abs/path`, `s3://bucket/prefix`, `memory://`, or a path (relative to the
    /// pipeline file's folder).
    pub url: String,
    /// Extra object-store options (e.g. `AWS_ENDPOINT_URL`); the `AWS_*` environment is
    /// read as well. Values may use `${VAR}`; put secrets in the environment, not here.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Keep `contacts` up to date with Delta deletion vectors: a run marks the replaced
    /// and deleted rows in a small vector file and appends the new rows, instead of
    /// rewriting every data file that holds a changed contact. Incremental runs then cost
    /// what their changes cost, not what the account weighs. Off by default because the
    /// table then needs readers with deletion-vector support (Spark 3.4+, Trino, DuckDB,
    /// delta-rs `DeltaTable.scan()`/DataFusion; not `to_pyarrow_table()`/`to_pandas()`).
    /// Turning it on upgrades the table's protocol (reader 3, writer 7) at the next run;
    /// turning it off again leaves the upgrade in place but stops writing vectors.
    #[serde(default)]
    pub deletion_vectors: bool,
}

/// One `[[sources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source's name: the `source` column and the `--source` selector.
    pub name: String,
    /// Which API this source reads.
    pub provider: Provider,
    /// The API's base URL (the emulator's URL in tests).
    pub base_url: String,
    /// Google: the domain whose shared contacts are read.
    pub domain: Option<String>,
    /// Google: how to authenticate.
    pub auth: Option<AuthConfig>,
    /// Google: `full` (default), `thin` or `property-KEY`.
    pub projection: Option<String>,
    /// Google: entries per page (default 500; the API's own default is 25, and
    /// `max-results=1000` has timed out on very large domains).
    pub page_size: Option<u32>,
    /// Aurinko: the accounts, each with the variable holding its token.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// Aurinko: a CSV file (`id,token_env,token_file`, header optional) listing accounts,
    /// relative to the pipeline file.
    pub accounts_file: Option<String>,
    /// How many requests (Google pages, Aurinko accounts) run at once (default 4).
    pub concurrency: Option<usize>,
    /// Per-request timeout in seconds (default 60).
    pub timeout_secs: Option<u64>,
    /// Retries of a failing request before giving up (default 6).
    pub max_retries: Option<u32>,
    /// Google: also land contact photos in `contact_photos` (default false). Only photos
    /// whose etag is new or changed since the lake last saw them are fetched.
    #[serde(default)]
    pub photos: bool,
    /// Google: photo downloads at once (default 8).
    pub photo_concurrency: Option<usize>,
    /// First retry delay in milliseconds; doubles each time, with jitter (default 500).
    pub retry_base_ms: Option<u64>,
}

/// The providers this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Google Domain Shared Contacts API (GData v3).
    Google,
    /// Aurinko Contacts API.
    Aurinko,
}

/// How a source authenticates.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>`, the token read from `token_env` or `token_file`.
    Bearer {
        /// The environment variable holding the token.
        token_env: Option<String>,
        /// A file holding the token (e.g. a mounted Kubernetes secret), relative to the
        /// pipeline file.
        token_file: Option<String>,
    },
    /// A Google service account key file with domain-wide delegation.
    ServiceAccount {
        /// Path to the JSON key file.
        key_file: String,
        /// The admin to impersonate (`sub`).
        subject: String,
        /// OAuth scope (default `https://www.google.com/m8/feeds`).
        scope: Option<String>,
    },
    /// Legacy ClientLogin: `Authorization: GoogleLogin auth=<token>`.
    ClientLogin {
        /// The environment variable holding the auth token.
        token_env: Option<String>,
        /// A file holding the auth token.
        token_file: Option<String>,
    },
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

/// Longest source name. It is a partition value (a folder name) of every table.
pub const MAX_SOURCE_NAME_LEN: usize = 64;
/// Longest account id. It is a partition folder name beside the source's, with Parquet
/// file names below; 128 keeps every name far under the 255-byte limit of file systems
/// and object stores.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// Checks an account id: 1 to [`MAX_ACCOUNT_ID_LEN`] ASCII letters, digits, `.`, `_`
/// and `-`, not starting with `.`. Ids name folders of the lake and appear in URLs and
/// logs, so `/`, `%`, `..`, spaces and control characters are refused where the id is
/// configured rather than failing (or landing somewhere else) at the first run.
/// Returns what is wrong.
pub fn check_account_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() {
        return Err("is empty".into());
    }
    if id.len() > MAX_ACCOUNT_ID_LEN {
        return Err(format!(
            "is {} characters long, more than {MAX_ACCOUNT_ID_LEN}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "has the character {c:?}; use only letters, digits, '.', '_' and '-'"
        ));
    }
    if id.starts_with('.') {
        return Err("starts with '.'".into());
    }
    Ok(())
}

/// Keys that would put a secret in the file.
const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "private_key",
    "client_secret",
    "access_token",
    "api_key",
];

impl Pipeline {
    /// Reads, validates and interpolates a pipeline file.
    pub fn load(path: impl AsRef<Path>) -> Result<Pipeline> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read pipeline file {}: {e}", path.display()))
        })?;
        Self::parse(&text, path)
    }

    /// Parses pipeline text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Pipeline> {
        Self::parse_with_env(text, path, &|var| std::env::var(var).ok())
    }

    /// Like [`Pipeline::parse`], reading `${VAR}` values through `lookup`.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Pipeline> {
        let file = path.display();
        let raw: toml::Value = toml::from_str(text)
            .map_err(|e| Error::config(format!("{file}: {}", e.to_string().trim())))?;
        check_no_inline_secrets(&raw, "", &file.to_string())?;
        let mut p: Pipeline = toml::from_str(text)
            .map_err(|e| Error::config(format!("{file}: {}", e.to_string().trim())))?;
        p.path = path.to_path_buf();
        p.interpolate(lookup)?;
        p.validate()?;
        Ok(p)
    }

    fn interpolate(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        let file = self.path.display().to_string();
        let f = |key: &str, v: &mut String| -> Result<()> {
            *v = interpolate_with(v, lookup).map_err(|var| {
                Error::config(format!(
                    "{file}: {key} uses ${{{var}}}, but the environment variable {var} is not set; export it or edit the file"
                ))
            })?;
            Ok(())
        };
        f("lake.url", &mut self.lake.url)?;
        for (k, v) in self.lake.storage_options.iter_mut() {
            f(&format!("lake.storage_options.{k}"), v)?;
        }
        for (i, s) in self.sources.iter_mut().enumerate() {
            let at = |k: &str| format!("sources[{i}].{k}");
            f(&at("base_url"), &mut s.base_url)?;
            if let Some(d) = s.domain.as_mut() {
                f(&at("domain"), d)?;
            }
            if let Some(a) = s.accounts_file.as_mut() {
                f(&at("accounts_file"), a)?;
            }
            match s.auth.as_mut() {
                Some(AuthConfig::ServiceAccount {
                    key_file, subject, ..
                }) => {
                    f(&at("auth.key_file"), key_file)?;
                    f(&at("auth.subject"), subject)?;
                }
                Some(
                    AuthConfig::Bearer {
                        token_file: Some(t),
                        ..
                    }
                    | AuthConfig::ClientLogin {
                        token_file: Some(t),
                        ..
                    },
                ) => f(&at("auth.token_file"), t)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<()> {
        let file = self.path.display().to_string();
        let err = |m: String| Err(Error::config(format!("{file}: {m}")));
        if self.sources.is_empty() {
            return err("no [[sources]]: add at least one source".into());
        }
        if let Ok(u) = url::Url::parse(&self.lake.url)
            && (!u.username().is_empty() || u.password().is_some())
        {
            return err("lake.url carries a user name or password (user:password@); secrets are refused in the pipeline file. Remove them and export the store's credentials (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".into());
        }
        let mut seen = std::collections::HashSet::new();
        let dir = self.dir();
        for (i, s) in self.sources.iter_mut().enumerate() {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return err(format!(
                    "sources[{i}].name {:?} must be non-empty and use only letters, digits, _ and -",
                    s.name
                ));
            }
            if s.name.len() > MAX_SOURCE_NAME_LEN {
                return err(format!(
                    "sources[{i}].name is {} characters long; at most {MAX_SOURCE_NAME_LEN}",
                    s.name.len()
                ));
            }
            if !seen.insert(s.name.clone()) {
                return err(format!(
                    "sources[{i}].name {:?} is used twice; names must be unique",
                    s.name
                ));
            }
            match url::Url::parse(&s.base_url) {
                Err(_) => {
                    return err(format!(
                        "sources[{i}].base_url {:?} is not a URL (e.g. https://www.google.com)",
                        s.base_url
                    ));
                }
                // The URL is not echoed: it holds the secret.
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    return err(format!(
                        "sources[{i}].base_url carries a user name or password (user:password@host); secrets are refused in the pipeline file. Remove them and name the credential with auth (token_env, token_file or key_file)"
                    ));
                }
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    return err(format!(
                        "sources[{i}].base_url must be an http:// or https:// URL, not {}://",
                        u.scheme()
                    ));
                }
                Ok(_) => {}
            }
            match s.provider {
                Provider::Google => {
                    if s.domain.as_deref().is_none_or(str::is_empty) {
                        return err(format!(
                            "sources[{i}] ({}) is a google source and needs domain = \"example.com\"",
                            s.name
                        ));
                    }
                    // The domain is the source's account: the same rules hold.
                    if let Some(d) = &s.domain
                        && let Err(why) = check_account_id(d)
                    {
                        return err(format!("sources[{i}].domain {d:?} {why}"));
                    }
                    if s.auth.is_none() {
                        return err(format!(
                            "sources[{i}] ({}) needs auth = {{ kind = \"bearer\", token_env = \"GOOGLE_TOKEN\" }} or a service_account",
                            s.name
                        ));
                    }
                    if let Some(
                        AuthConfig::Bearer {
                            token_env,
                            token_file,
                        }
                        | AuthConfig::ClientLogin {
                            token_env,
                            token_file,
                        },
                    ) = &s.auth
                        && token_env.is_none() == token_file.is_none()
                    {
                        return err(format!(
                            "sources[{i}] ({}).auth needs exactly one of token_env or token_file",
                            s.name
                        ));
                    }
                    if matches!(s.auth, Some(AuthConfig::App { .. })) {
                        return err(format!(
                            "sources[{i}] ({}): auth kind \"app\" is for aurinko sources",
                            s.name
                        ));
                    }
                    if let Some(p) = &s.projection
                        && !(p == "full" || p == "thin" || p.starts_with("property-"))
                    {
                        return err(format!(
                            "sources[{i}].projection {p:?} must be full, thin or property-KEY"
                        ));
                    }
                    if s.page_size == Some(0) {
                        return err(format!("sources[{i}].page_size must be at least 1"));
                    }
                    if s.photo_concurrency == Some(0) {
                        return err(format!("sources[{i}].photo_concurrency must be at least 1"));
                    }
                }
                Provider::Aurinko => {
                    if s.photos {
                        return err(format!(
                            "sources[{i}] ({}): photos = true is supported for google sources only; remove it",
                            s.name
                        ));
                    }
                    // Where each account is configured, for errors.
                    let mut places: Vec<String> = (0..s.accounts.len())
                        .map(|j| format!("{file}: sources[{i}].accounts[{j}].id"))
                        .collect();
                    if let Some(file_name) = s.accounts_file.clone() {
                        let path = dir.join(&file_name);
                        for (line, a) in read_accounts_file(&path)? {
                            places.push(format!("{}:{line}", path.display()));
                            s.accounts.push(a);
                        }
                    }
                    let mut first_at: std::collections::HashMap<&str, &str> = Default::default();
                    for (a, at) in s.accounts.iter().zip(&places) {
                        if let Err(why) = check_account_id(&a.id) {
                            return Err(Error::config(format!(
                                "{at}: the account id {:?} {why}",
                                a.id
                            )));
                        }
                        if let Some(before) = first_at.insert(&a.id, at) {
                            return Err(Error::config(format!(
                                "{at}: the account {} is listed twice in source {} (first at {before}); remove one",
                                a.id, s.name
                            )));
                        }
                    }
                    if s.accounts.is_empty() {
                        return err(format!(
                            "sources[{i}] ({}) is an aurinko source and needs accounts = [{{ id = \"101\", token_env = \"AURINKO_TOKEN_101\" }}] or accounts_file",
                            s.name
                        ));
                    }
                    let app = matches!(s.auth, Some(AuthConfig::App { .. }));
                    for a in &s.accounts {
                        if !app && a.token_env.is_none() == a.token_file.is_none() {
                            return err(format!(
                                "sources[{i}] ({}): account {} needs exactly one of token_env or token_file (or use auth = {{ kind = \"app\", … }})",
                                s.name, a.id
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The pipeline file's folder, against which relative paths (token files, keys) resolve.
    pub fn dir(&self) -> std::path::PathBuf {
        self.path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf()
    }

    /// The lake URL, with relative paths resolved against the pipeline file's folder.
    pub fn lake_url(&self) -> Result<url::Url> {
        resolve_lake_url(&self.lake.url, &self.dir())
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Result<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<_> = self.sources.iter().map(|s| s.name.as_str()).collect();
            Error::config(format!(
                "no source named {name:?} in {}; sources: {}",
                self.path.display(),
                names.join(", ")
            ))
        })
    }
}

/// Reads a secret from the environment variable `env` or the file `file` (relative to
/// `base`); `what` names the secret's owner in errors. Surrounding whitespace is trimmed.
pub fn load_secret(
    env: Option<&str>,
    file: Option<&str>,
    base: &std::path::Path,
    what: &str,
) -> Result<Secret> {
    match (env, file) {
        (Some(var), _) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            _ => Err(Error::config(format!(
                "{what}: the environment variable {var} is not set; export it with the credential"
            ))),
        },
        (None, Some(f)) => {
            let path = base.join(f);
            match std::fs::read_to_string(&path) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
                Ok(_) => Err(Error::config(format!(
                    "{what}: the token file {} is empty",
                    path.display()
                ))),
                Err(e) => Err(Error::config(format!(
                    "{what}: cannot read the token file {}: {e}",
                    path.display()
                ))),
            }
        }
        (None, None) => Err(Error::config(format!(
            "{what}: name the credential with token_env or token_file"
        ))),
    }
}

/// Resolves a lake location (URL or path) to a URL.
pub fn resolve_lake_url(loc: &str, base: &Path) -> Result<url::Url> {
    if loc.contains("://") {
        return url::Url::parse(loc)
            .map_err(|e| Error::config(format!("lake.url {loc:?} is not a URL: {e}")));
    }
    let p = Path::new(loc);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(base).join(p)
    };
    // `..` and `.` are resolved here, by name: the object store refuses paths that hold
    // them ("illegal character sequence '..'"), so `url = "../lake"` next to the pipeline
    // file must become the folder it names.
    let mut abs = std::path::PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::CurDir => {}
            other => abs.push(other),
        }
    }
    url::Url::from_directory_path(&abs)
        .map_err(|_| Error::config(format!("lake.url {loc:?} is not a usable path")))
}

fn check_no_inline_secrets(v: &toml::Value, at: &str, file: &str) -> Result<()> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if SECRET_KEYS.contains(&k.as_str()) {
                    return Err(Error::config(format!(
                        "{file}: {here} would put a secret in the pipeline file; secrets are refused here. Put it in an environment variable and name that with {k}_env (e.g. token_env = \"MY_TOKEN\"), or use a key_file"
                    )));
                }
                check_no_inline_secrets(v, &here, file)?;
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                check_no_inline_secrets(v, &format!("{at}[{i}]"), file)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${VAR}` with the variable's value; `$${` stays a literal `${`.
/// Returns the name of the first unset variable as the error.
pub fn interpolate(s: &str) -> std::result::Result<String, String> {
    interpolate_with(s, &|var| std::env::var(var).ok())
}

/// [`interpolate`] with a custom variable lookup.
pub fn interpolate_with(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(t) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let end = t.find('}').ok_or_else(|| t.to_string())?;
            let var = &t[..end];
            out.push_str(&lookup(var).ok_or_else(|| var.to_string())?);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads an accounts file: CSV records `id,token_env,token_file` (RFC 4180: fields may be
/// quoted, `""` is a quote inside one), an optional header whose first field is `id`,
/// blank lines and `#` comments. Returns each account with its line number.
fn read_accounts_file(path: &Path) -> Result<Vec<(usize, AccountConfig)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read accounts_file {}: {e}", path.display())))?;
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

    fn parse(t: &str) -> Result<Pipeline> {
        Pipeline::parse(t, Path::new("p.toml"))
    }

    const GOOD: &str = r#"
[lake]
url = "file:///tmp/lake"
[[sources]]
name = "g"
provider = "google"
domain = "example.com"
base_url = "http://127.0.0.1:1"
auth = { kind = "bearer", token_env = "T" }
[[sources]]
name = "a"
provider = "aurinko"
base_url = "http://127.0.0.1:1"
accounts = [{ id = "101", token_env = "A101" }]
"#;

    #[test]
    fn parses_a_good_pipeline() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.sources.len(), 2);
        assert_eq!(p.sources[0].provider, Provider::Google);
        assert_eq!(p.sources[1].accounts[0].id, "101");
    }

    #[test]
    fn refuses_inline_secrets() {
        let t = GOOD.replace("token_env = \"T\"", "token = \"abc\"");
        let e = parse(&t).unwrap_err().to_string();
        assert!(
            e.contains("sources[0].auth.token") && e.contains("environment variable"),
            "{e}"
        );
        assert!(!e.contains("abc"), "the secret must not be echoed: {e}");
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let t = GOOD.replace(
            "domain = \"example.com\"",
            "domain = \"example.com\"\npagesize = 3",
        );
        let e = parse(&t).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("pagesize"), "{e}");
    }

    #[test]
    fn interpolation_and_missing_variables() {
        assert_eq!(interpolate("a$${b}c").unwrap(), "a${b}c");
        assert_eq!(interpolate("cost $5").unwrap(), "cost $5");
        let t = GOOD.replace("example.com", "${CONTACTS_ETL_SURELY_UNSET_VAR}");
        let e = parse(&t).unwrap_err().to_string();
        assert!(
            e.contains("sources[0].domain") && e.contains("CONTACTS_ETL_SURELY_UNSET_VAR"),
            "{e}"
        );
    }

    #[test]
    fn credentials_in_urls_are_refused_without_echo() {
        let t = GOOD.replacen("http://127.0.0.1:1", "http://user:hunter2@127.0.0.1:1", 1);
        let e = parse(&t).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.contains("sources[0].base_url") && e.contains("auth"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let t = GOOD.replace("file:///tmp/lake", "s3://AKIA:hunter2@bucket/x");
        let e = parse(&t).unwrap_err().to_string();
        assert!(e.contains("lake.url") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn account_ids_are_checked_where_they_are_configured() {
        for (id, why) in [
            ("a/b", "'/'"),
            ("10%2F", "'%'"),
            ("a\\nb", "'\\n'"),
            ("..", "'.'"),
            ("", "empty"),
        ] {
            let t = GOOD.replace("id = \"101\"", &format!("id = \"{id}\""));
            let e = parse(&t).unwrap_err().to_string();
            assert!(
                e.contains("p.toml: sources[1].accounts[0].id") && e.contains(why),
                "{id}: {e}"
            );
        }
        let long = "1".repeat(MAX_ACCOUNT_ID_LEN + 1);
        let e = parse(&GOOD.replace("\"101\"", &format!("\"{long}\"")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("129 characters"), "{e}");
        let e = parse(&GOOD.replace(
            "{ id = \"101\", token_env = \"A101\" }",
            "{ id = \"101\", token_env = \"A\" }, { id = \"101\", token_env = \"B\" }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sources[1].accounts[1].id")
                && e.contains("twice")
                && e.contains("accounts[0]"),
            "{e}"
        );
        let e = parse(&GOOD.replace("example.com", "example.com/../x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sources[0].domain"), "{e}");
        let e = parse(&GOOD.replace("name = \"a\"", &format!("name = \"{}\"", "a".repeat(65))))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sources[1].name") && e.contains("at most 64"),
            "{e}"
        );
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
        let pipeline = dir.path().join("p.toml");
        let t = GOOD.replace(
            "accounts = [{ id = \"101\", token_env = \"A101\" }]",
            "accounts_file = \"accounts.csv\"",
        );
        let p = Pipeline::parse(&t, &pipeline).unwrap();
        let a = &p.sources[1].accounts;
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
            let e = Pipeline::parse(&t, &pipeline).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let e = e.to_string();
            assert!(
                e.contains(&format!("accounts.csv:{line}")) && e.contains(why),
                "{body}: {e}"
            );
        }
    }

    #[test]
    fn missing_domain_and_duplicate_names() {
        let e = parse(&GOOD.replace("domain = \"example.com\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs domain"), "{e}");
        let e = parse(&GOOD.replace("name = \"a\"", "name = \"g\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("used twice"), "{e}");
    }

    /// The README's tour keeps its lake beside the repository (`../contacts-lake`): the
    /// URL holds no `..`, which the object store refuses.
    #[test]
    fn lake_paths_with_dots_are_resolved() {
        let u = resolve_lake_url("../contacts-lake", Path::new("/srv/etl/./pipelines")).unwrap();
        assert_eq!(u.as_str(), "file:///srv/etl/contacts-lake/");
        let u = resolve_lake_url("/a/b/../../c/./d", Path::new("/x")).unwrap();
        assert_eq!(u.as_str(), "file:///c/d/");
        let u = resolve_lake_url("file:///a/b/../c", Path::new("/x")).unwrap();
        assert!(!u.as_str().contains(".."), "{u}");
    }
}
