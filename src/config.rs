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

use crate::error::{Context, Error, Kind, Result};
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
    /// what their changes cost, not what the account weighs.
    ///
    /// Unset (the default): a new lake's `contacts` table is created with deletion
    /// vectors, as Databricks does for new tables; an existing table keeps what it has, so
    /// a lake made before this default stays readable by the readers it had. `true` also
    /// upgrades an existing table (protocol reader 3, writer 7, which cannot be undone).
    /// `false` creates tables without them, for readers that cannot apply them (the Python
    /// `deltalake` package's `to_pyarrow_table()`/`to_pandas()`, Spark before 3.4), and
    /// stops writing vectors to a table that has them.
    #[serde(default)]
    pub deletion_vectors: Option<bool>,
}

/// One `[[sources]]` entry: the settings every provider shares, and the provider's own
/// settings (every other key), which the provider reads and checks itself
/// (`providers::<name>::config`), so adding a provider changes nothing here.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// The source's name: the `source` column and the `--source` selector.
    pub name: String,
    /// Which API this source reads: a name in the providers' registry.
    pub provider: String,
    /// The API's base URL (the emulator's URL in tests).
    pub base_url: String,
    /// How many requests run at once: Google pages (default 4), CardDAV multigets and
    /// address books (default 4), Aurinko accounts (default one per 8 accounts listed,
    /// from 4 up to 64: `providers::aurinko::default_concurrency`).
    pub concurrency: Option<usize>,
    /// Per-request timeout in seconds (default 60).
    pub timeout_secs: Option<u64>,
    /// Retries of a failing request before giving up (default 6).
    pub max_retries: Option<u32>,
    /// First retry delay in milliseconds; doubles each time, with jitter (default 500).
    pub retry_base_ms: Option<u64>,
    /// The provider's own settings (`domain`, `auth`, `accounts`, …), `${VAR}`s already
    /// replaced. Unknown keys are refused by the provider.
    #[serde(flatten)]
    pub settings: toml::Table,
    /// Where the entry stands, for errors: `pipeline.toml: sources[0]`.
    #[serde(skip)]
    pub place: String,
    /// Why the entry's `${VAR}`s could not be replaced (an unset variable), if so: the
    /// entry cannot be used, and says this where it is used
    /// ([`SourceConfig::check_resolved`]).
    #[serde(skip)]
    pub unresolved: Option<String>,
}

impl SourceConfig {
    /// A configuration error about this entry, prefixed with where it stands.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::config(format!("{} ({}): {message}", self.place, self.name))
    }

    /// Refuses an entry whose `${VAR}`s could not be replaced, naming the variable.
    pub fn check_resolved(&self) -> Result<()> {
        match &self.unresolved {
            Some(why) => Err(Error::config(why.clone())),
            None => Ok(()),
        }
    }

    /// Names one of the entry's keys for errors: `pipeline.toml: sources[0].accounts[1].id`.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.place)
    }

    /// The provider's settings as its own type `T` (which should deny unknown fields);
    /// a wrong key or type is an error naming this entry.
    pub fn settings_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        // An unknown key is named with every key this entry may have (the shared ones
        // too, which serde's own message leaves out) and the nearest of them.
        let mut keys: Vec<&'static str> = SOURCE_KEYS.to_vec();
        keys.extend(struct_fields::<T>());
        if let Some(k) = self.settings.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(self.error(unknown_key(k, &keys)));
        }
        toml::Value::Table(self.settings.clone())
            .try_into()
            .map_err(|e: toml::de::Error| self.error(e.message().trim()))
    }
}

/// The keys every `[[sources]]` entry may have, whatever its provider.
const SOURCE_KEYS: &[&str] = &[
    "name",
    "provider",
    "base_url",
    "concurrency",
    "timeout_secs",
    "max_retries",
    "retry_base_ms",
];

/// The field names of a struct that serde reads (those of `#[derive(Deserialize)]`),
/// found by asking it to read itself from a reader that only records them.
pub fn struct_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Stop {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut f = Fields(None);
    let _ = T::deserialize(&mut f);
    f.0.unwrap_or(&[])
}

/// "unknown key `k`", the nearest valid key when one is near, and every valid key.
pub fn unknown_key(k: &str, valid: &[&str]) -> String {
    let near = valid
        .iter()
        .map(|v| (edit_distance(k, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min();
    let mut sorted = valid.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    format!(
        "unknown key `{k}`{}; the valid keys here are: {}",
        near.map(|(_, v)| format!(" (did you mean `{v}`?)"))
            .unwrap_or_default(),
        sorted.join(", ")
    )
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
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
        let text = read_input_file(path, MAX_INPUT_FILE, "pipeline file")?;
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
            .map_err(|e| Error::with_source(Kind::Config, &file, TomlError(e)))?;
        check_no_inline_secrets(&raw, "", &file.to_string())?;
        check_known_keys(&raw, &file.to_string())?;
        let mut p: Pipeline = toml::from_str(text)
            .map_err(|e| Error::with_source(Kind::Config, &file, TomlError(e)))?;
        p.path = path.to_path_buf();
        p.interpolate(lookup)?;
        p.validate()?;
        Ok(p)
    }

    fn interpolate(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        let file = self.path.display().to_string();
        let f = |key: &str, v: &mut String| -> Result<()> {
            // `why` is a phrase of ours that finishes the sentence, not a lower error.
            *v = interpolate_with(v, lookup)
                .map_err(|why| Error::config(format!("{file}: {key} {why}")))?;
            Ok(())
        };
        f("lake.url", &mut self.lake.url)?;
        for (k, v) in self.lake.storage_options.iter_mut() {
            f(&format!("lake.storage_options.{k}"), v)?;
        }
        // A source's `${VAR}`s are the API's settings: one that cannot be replaced fails
        // that source where it is synced, planned or applied, not the commands that only
        // read the lake (`query`, `status`, `state`), which an analyst may run with none
        // of the API's variables.
        for (i, s) in self.sources.iter_mut().enumerate() {
            let mut resolve = || -> Result<()> {
                f(&format!("sources[{i}].base_url"), &mut s.base_url)?;
                for (k, v) in s.settings.iter_mut() {
                    interpolate_value(v, &format!("sources[{i}].{k}"), &f)?;
                }
                Ok(())
            };
            if let Err(e) = resolve() {
                s.unresolved = Some(e.to_string());
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
            if s.unresolved.is_some() {
                // Checked when it is used, once its variables are there.
                s.place = format!("{file}: sources[{i}]");
                continue;
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
                // Paths are appended to base_url: a query or fragment would end up in
                // the middle of every URL built from it.
                Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                    return err(format!(
                        "sources[{i}].base_url has a query (?…) or fragment (#…); give the server's address only, e.g. {}://{}",
                        u.scheme(),
                        u.host_str().unwrap_or("host")
                    ));
                }
                Ok(_) => {}
            }
            s.place = format!("{file}: sources[{i}]");
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
            let v = read_input_file(&path, MAX_SECRET_FILE, &format!("{what}: the token file"))?;
            if v.trim().is_empty() {
                return Err(Error::config(format!(
                    "{what}: the token file {} is empty",
                    path.display()
                )));
            }
            Ok(Secret::new(v.trim()))
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
            .with_context(Kind::Config, || format!("lake.url {loc:?} is not a URL"));
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

/// The top level and `[lake]` may hold only their own keys; an unknown one is named with
/// the nearest valid key and the list (the sources' keys are checked by their providers).
fn check_known_keys(raw: &toml::Value, file: &str) -> Result<()> {
    let check = |t: &toml::Table, at: &str, valid: &[&str]| -> Result<()> {
        match t.keys().find(|k| !valid.contains(&k.as_str())) {
            Some(k) => Err(Error::config(format!(
                "{file}: {at}{}",
                unknown_key(k, valid)
            ))),
            None => Ok(()),
        }
    };
    if let Some(top) = raw.as_table() {
        check(top, "", struct_fields::<Pipeline>())?;
        if let Some(lake) = top.get("lake").and_then(toml::Value::as_table) {
            check(lake, "[lake]: ", struct_fields::<LakeConfig>())?;
        }
    }
    Ok(())
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

/// A TOML parser's error, shown with each line cut to 160 characters: the parser quotes
/// the offending line, which may be a 200 KB line of a damaged file.
#[derive(Debug)]
struct TomlError(toml::de::Error);

impl std::fmt::Display for TomlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        for (i, l) in text.trim().lines().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match l.char_indices().nth(160) {
                Some((at, _)) => write!(f, "{}…", &l[..at])?,
                None => f.write_str(l)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for TomlError {
    // The parser's own words are shown, cut, above: not again, whole, as a cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

/// Most bytes of a credential file (a token, a password).
pub const MAX_SECRET_FILE: u64 = 64 << 10;
/// Most bytes of a pipeline file, a service-account key or an accounts file.
pub const MAX_INPUT_FILE: u64 = 64 << 20;

/// Reads a text file that the pipeline or the command line names (the pipeline itself, a
/// token, a key, an accounts list). Only a regular file of at most `max` bytes is read: a
/// FIFO would hang the run, a device (`/dev/zero`) never end, and the files of `/proc`
/// and `/sys` (the process's environment among them) are not inputs, and an error about
/// their content could echo it. `what` names the setting in errors.
pub fn read_input_file(path: &Path, max: u64, what: &str) -> Result<String> {
    use std::io::Read;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .with_context(Kind::Config, || format!("{what}: cannot read {shown}"))?;
    if !meta.is_file() {
        return Err(Error::config(format!(
            "{what}: {shown} is not a regular file (a folder, FIFO, socket or device); name a file"
        )));
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|p| real.starts_with(p))
    {
        return Err(Error::config(format!(
            "{what}: {shown} is a file of the system ({}), not an input; name a file of your own",
            real.display()
        )));
    }
    if meta.len() > max {
        return Err(Error::config(format!(
            "{what}: {shown} is {} bytes, more than the {max} this file may have",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .with_context(Kind::Config, || format!("{what}: cannot read {shown}"))?;
    if bytes.len() as u64 > max {
        return Err(Error::config(format!(
            "{what}: {shown} is more than the {max} bytes this file may have"
        )));
    }
    String::from_utf8(bytes).with_context(Kind::Config, || {
        format!("{what}: {shown} is not UTF-8 text")
    })
}

/// Replaces `${VAR}` with the variable's value; `$${` stays a literal `${`.
/// The error says what is wrong with the first reference that cannot be replaced (an
/// unset variable, `${` without `}`, an empty or invalid name), ready to follow the
/// name of the setting.
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
            let end = t.find('}').ok_or_else(|| {
                "has `${` without its closing `}`; write ${NAME}, or $${ for a literal ${"
                    .to_string()
            })?;
            let var = &t[..end];
            let valid = var
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "uses ${{{}}}, which names no environment variable (a name is letters, digits and _, not starting with a digit); write ${{NAME}}, or $${{ for a literal ${{",
                    var.chars().take(40).collect::<String>()
                ));
            }
            out.push_str(&lookup(var).ok_or_else(|| {
                format!(
                    "uses ${{{var}}}, but the environment variable {var} is not set; export it or edit the file"
                )
            })?);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Replaces `${VAR}`s in every string of a provider setting (tables and arrays too);
/// `at` names the setting in errors.
fn interpolate_value(
    v: &mut toml::Value,
    at: &str,
    f: &dyn Fn(&str, &mut String) -> Result<()>,
) -> Result<()> {
    match v {
        toml::Value::String(s) => f(at, s),
        toml::Value::Table(t) => t
            .iter_mut()
            .try_for_each(|(k, v)| interpolate_value(v, &format!("{at}.{k}"), f)),
        toml::Value::Array(a) => a
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, v)| interpolate_value(v, &format!("{at}[{i}]"), f)),
        _ => Ok(()),
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
        assert_eq!(p.sources[0].provider, "google");
        // The provider's own keys are kept for it, interpolated, with where they stand.
        assert_eq!(
            p.sources[0].settings["domain"].as_str(),
            Some("example.com")
        );
        assert_eq!(
            p.sources[1].key("accounts[0].id"),
            "p.toml: sources[1].accounts[0].id"
        );
        assert!(p.sources[1].settings.contains_key("accounts"));
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
            "url = \"file:///tmp/lake\"",
            "url = \"file:///tmp/lake\"\nurll = 3",
        );
        let e = parse(&t).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("urll"), "{e}");
    }

    #[test]
    fn interpolation_and_missing_variables() {
        assert_eq!(interpolate("a$${b}c").unwrap(), "a${b}c");
        assert_eq!(interpolate("cost $5").unwrap(), "cost $5");
        // An unset variable of a source fails that source where it is used (sync, plan,
        // apply), not the lake-only commands: the file still loads.
        let t = GOOD.replace("example.com", "${CONTACTS_ETL_SURELY_UNSET_VAR}");
        let p = parse(&t).unwrap();
        crate::providers::check(&p).unwrap();
        let e = crate::providers::profile(&p.sources[0], Path::new("."))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("sources[0].domain") && e.contains("CONTACTS_ETL_SURELY_UNSET_VAR"),
            "{e}"
        );
        assert!(crate::providers::profile(&p.sources[1], Path::new(".")).is_ok());
        // The lake's own variables are needed by every command.
        let t = GOOD.replace("file:///tmp/lake", "${CONTACTS_ETL_SURELY_UNSET_VAR}");
        let e = parse(&t).unwrap_err().to_string();
        assert!(e.contains("lake.url"), "{e}");
        // `${`, `${}` and `${1X}` name no variable: said so, not "the variable  is not set".
        for (bad, words) in [
            ("${", "without its closing"),
            ("${}", "names no environment variable"),
            ("${1X}", "names no environment variable"),
        ] {
            let e = interpolate(&format!("a{bad}b")).unwrap_err();
            assert!(
                e.contains(words) && !e.contains("variable  is"),
                "{bad}: {e}"
            );
        }
    }

    /// Only regular files of bounded size are read: a FIFO (would hang), a device (would
    /// never end), /proc (the environment), a folder and a file over the limit are
    /// refused at once, naming the setting, and what they hold is never echoed.
    #[test]
    fn input_files_must_be_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 100]).unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "tok\n").unwrap();
        let link = dir.path().join("env-link");
        std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
        for (path, words) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (Path::new("/proc/self/environ"), "file of the system"),
            (link.as_path(), "file of the system"),
            (dir.path(), "not a regular file"),
            (big.as_path(), "more than the 50"),
        ] {
            let e = read_input_file(path, 50, "the token file").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let e = e.to_string();
            assert!(
                e.starts_with("the token file: ") && e.contains(words),
                "{e}"
            );
            assert!(!e.contains("PATH="), "{e}");
        }
        assert_eq!(read_input_file(&ok, 50, "t").unwrap(), "tok\n");
    }

    /// An unknown key names every valid key of its table (the shared source keys too)
    /// and the nearest one.
    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let t = GOOD.replace(
            "domain = \"example.com\"",
            "domain = \"example.com\"\nconcurency = 2",
        );
        let e = parse(&t).unwrap();
        let e = crate::providers::check(&e).unwrap_err().to_string();
        assert!(
            e.contains("unknown key `concurency` (did you mean `concurrency`?)"),
            "{e}"
        );
        assert!(
            e.contains("base_url") && e.contains("domain") && e.contains("max_retries"),
            "{e}"
        );
        let t = GOOD.replace(
            "url = \"file:///tmp/lake\"",
            "url = \"file:///tmp/lake\"\ndeletion_vector = true",
        );
        let e = parse(&t).unwrap_err().to_string();
        assert!(
            e.contains("[lake]: unknown key `deletion_vector` (did you mean `deletion_vectors`?)"),
            "{e}"
        );
        assert!(e.contains("storage_options"), "{e}");
        let e = parse(&format!("sorces = 1\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `sources`?"), "{e}");
        assert_eq!(
            struct_fields::<LakeConfig>(),
            ["url", "storage_options", "deletion_vectors"]
        );
    }

    /// A TOML error on a huge line quotes a bounded piece of it.
    #[test]
    fn toml_errors_quote_a_bounded_line() {
        let t = format!("[lake]\nurl = \"x\" {}\n", "y".repeat(200_000));
        let e = parse(&t).unwrap_err().to_string();
        assert!(e.len() < 2_000 && e.contains('…'), "{} bytes", e.len());
    }

    /// A query or fragment in base_url would land inside every URL built from it.
    #[test]
    fn base_url_with_query_or_fragment_is_refused() {
        for tail in ["?x=1", "#frag"] {
            let t = GOOD.replacen(
                "http://127.0.0.1:1",
                &format!("http://127.0.0.1:1/{tail}"),
                1,
            );
            let e = parse(&t).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("query (?…) or fragment"), "{e}");
        }
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
    fn source_names_are_checked() {
        let e = parse(&GOOD.replace("name = \"a\"", &format!("name = \"{}\"", "a".repeat(65))))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sources[1].name") && e.contains("at most 64"),
            "{e}"
        );
        let e = parse(&GOOD.replace("name = \"a\"", "name = \"a/b\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sources[1].name"), "{e}");
    }

    #[test]
    fn duplicate_names() {
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
