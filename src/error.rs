//! The crate's error type: kinds a caller can match, each with its context and the lower
//! error that caused it.

use std::fmt;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A lower layer's error, kept as the [`source`](std::error::Error::source) of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in terms a caller can act on: each variant is a kind a caller can
/// match, holding `context` (what was being done: account, URL, page, file, contact id,
/// and where there is one, what to do next) and, when a lower error caused it, that error
/// as `source` (object_store's shape). Displayed, an error shows its context and then its
/// chain of causes, and never a secret of this process, even one a server echoed into it
/// ([`crate::secret::redact`]). Build one with the constructors ([`Error::config`], …),
/// or from a lower error with [`Context::context`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pipeline file, command line or input file is wrong; the user must fix it.
    /// The CLI exits with code 2.
    #[error("{}", shown(context, source.as_deref(), false))]
    Config {
        /// What is wrong and what to do.
        context: String,
        /// The lower error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// The API refused the credentials (401/403) after a refresh was tried.
    #[error("{}", shown(context, source.as_deref(), false))]
    Auth {
        /// Which account and what to check.
        context: String,
        /// The lower error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// The API said the stored cursor is no longer valid (Google 410, Aurinko 410
    /// `syncToken.expired` or 400 `token.notValid`, CardDAV `valid-sync-token`); a full
    /// extract is needed.
    #[error("{}", shown(context, source.as_deref(), false))]
    CursorExpired {
        /// Which account and cursor.
        context: String,
        /// The lower error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// What was asked for is not there: a table, a version of it, a run, a file.
    #[error("{}", shown(context, source.as_deref(), true))]
    NotFound {
        /// What was looked for, and where.
        context: String,
        /// The lower error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// An HTTP request failed for good (after retries, or with a non-retriable status).
    #[error("{}", shown(context, source.as_deref(), false))]
    Http {
        /// The HTTP status, when one was received.
        status: Option<u16>,
        /// What happened, with account, URL and status.
        context: String,
        /// The transport's error, when the request got no answer.
        #[source]
        source: Option<BoxError>,
    },
    /// The API answered something that is not what the protocol promises.
    #[error("{}", shown(context, source.as_deref(), false))]
    Decode {
        /// Which answer (account, URL, page, entry) and what is wrong with it.
        context: String,
        /// The parser's error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// Another run committed first (same source and account), or the remote changed
    /// under a write; nothing of this run landed.
    #[error("{}", shown(context, source.as_deref(), false))]
    Concurrent {
        /// What collided.
        context: String,
        /// The lower error (a `deltalake` `TransactionError`), if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// A file of the lake (a data file, a log entry, a deletion vector, a saved plan)
    /// is damaged: it does not say what its format promises.
    #[error("{}", shown(context, source.as_deref(), true))]
    CorruptLake {
        /// Which file and what is wrong with it.
        context: String,
        /// The reader's error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// The Delta Lake, object store or Parquet layer failed.
    #[error("{}", shown(context, source.as_deref(), true))]
    Lake {
        /// What was being done, to which table.
        context: String,
        /// The layer's error (`deltalake`, `object_store`, `parquet`, `arrow`, I/O).
        #[source]
        source: Option<BoxError>,
    },
    /// A SQL query failed.
    #[error("{}", shown(context, source.as_deref(), false))]
    Sql {
        /// The query's fault, and what the lake holds.
        context: String,
        /// DataFusion's error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// Anything else.
    #[error("{}", shown(context, source.as_deref(), false))]
    Other {
        /// What failed.
        context: String,
        /// The lower error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
}

/// The kinds of [`Error`], to build one from a lower error with [`Context::context`] or
/// [`Error::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// [`Error::Config`].
    Config,
    /// [`Error::Auth`].
    Auth,
    /// [`Error::CursorExpired`].
    CursorExpired,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::Http`] with no status.
    Http,
    /// [`Error::Decode`].
    Decode,
    /// [`Error::Concurrent`].
    Concurrent,
    /// [`Error::CorruptLake`].
    CorruptLake,
    /// [`Error::Lake`].
    Lake,
    /// [`Error::Sql`].
    Sql,
    /// [`Error::Other`].
    Other,
}

/// An error's text: its context, then each cause in its chain, as one line of
/// printable text with no secret in it. A store's wording is made plain for the kinds
/// a store can cause (`store`).
fn shown(
    context: &str,
    source: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
    store: bool,
) -> String {
    let mut text = context.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match source {
        Some(s) => Some(s),
        None => None,
    };
    while let Some(c) = cause {
        let words = c.to_string();
        // A layer that repeats its source's words in its own adds nothing to the line.
        if !words.is_empty() && !text.ends_with(&words) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&words);
        }
        // An error of ours already shows its own chain.
        if c.is::<Error>() {
            break;
        }
        cause = c.source();
        if cause.is_some_and(|next| words.contains(&next.to_string())) {
            cause = cause.and_then(|n| n.source());
        }
    }
    let text = if store { store_words(&text) } else { text };
    crate::secret::printable(&text).into_owned()
}

/// Wrapping a lower error as one of ours, keeping it as the source.
pub trait Context<T> {
    /// On error, a `kind` error saying what was being done (`what`), with the lower error
    /// as its source.
    fn context(self, kind: Kind, what: impl fmt::Display) -> Result<T>;
    /// As [`Context::context`], with the words built only on error.
    fn with_context<D: fmt::Display>(self, kind: Kind, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn context(self, kind: Kind, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::with_source(kind, what, e))
    }
    fn with_context<D: fmt::Display>(self, kind: Kind, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::with_source(kind, what(), e))
    }
}

impl Error {
    /// A `kind` error with these words and no lower cause.
    pub fn new(kind: Kind, context: impl fmt::Display) -> Self {
        Self::build(kind, context.to_string(), None)
    }
    /// A `kind` error saying what was being done (`context`), caused by `source`.
    pub fn with_source(
        kind: Kind,
        context: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::build(kind, context.to_string(), Some(Box::new(source)))
    }
    fn build(kind: Kind, context: String, source: Option<BoxError>) -> Self {
        match kind {
            Kind::Config => Error::Config { context, source },
            Kind::Auth => Error::Auth { context, source },
            Kind::CursorExpired => Error::CursorExpired { context, source },
            Kind::NotFound => Error::NotFound { context, source },
            Kind::Http => Error::Http {
                status: None,
                context,
                source,
            },
            Kind::Decode => Error::Decode { context, source },
            Kind::Concurrent => Error::Concurrent { context, source },
            Kind::CorruptLake => Error::CorruptLake { context, source },
            Kind::Lake => Error::Lake { context, source },
            Kind::Sql => Error::Sql { context, source },
            Kind::Other => Error::Other { context, source },
        }
    }
    /// A configuration or usage error (exit code 2).
    pub fn config(msg: impl fmt::Display) -> Self {
        Self::new(Kind::Config, msg)
    }
    /// A credentials error.
    pub fn auth(msg: impl fmt::Display) -> Self {
        Self::new(Kind::Auth, msg)
    }
    /// A cursor the API no longer accepts.
    pub fn cursor_expired(msg: impl fmt::Display) -> Self {
        Self::new(Kind::CursorExpired, msg)
    }
    /// Something asked for that is not there.
    pub fn not_found(msg: impl fmt::Display) -> Self {
        Self::new(Kind::NotFound, msg)
    }
    /// An HTTP failure with the status received, if any.
    pub fn http(status: Option<u16>, msg: impl fmt::Display) -> Self {
        Error::Http {
            status,
            context: msg.to_string(),
            source: None,
        }
    }
    /// A decode error.
    pub fn decode(msg: impl fmt::Display) -> Self {
        Self::new(Kind::Decode, msg)
    }
    /// Another writer got there first.
    pub fn concurrent(msg: impl fmt::Display) -> Self {
        Self::new(Kind::Concurrent, msg)
    }
    /// A damaged file of the lake.
    pub fn corrupt(msg: impl fmt::Display) -> Self {
        Self::new(Kind::CorruptLake, msg)
    }
    /// A lake error. An object store's "Error performing GET <url> …" becomes one
    /// sentence naming the endpoint (see [`store_words`]).
    pub fn lake(msg: impl fmt::Display) -> Self {
        Self::new(Kind::Lake, msg)
    }
    /// A SQL error.
    pub fn sql(msg: impl fmt::Display) -> Self {
        Self::new(Kind::Sql, msg)
    }
    /// Any other error.
    pub fn other(msg: impl fmt::Display) -> Self {
        Self::new(Kind::Other, msg)
    }
    /// This error's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Config { .. } => Kind::Config,
            Error::Auth { .. } => Kind::Auth,
            Error::CursorExpired { .. } => Kind::CursorExpired,
            Error::NotFound { .. } => Kind::NotFound,
            Error::Http { .. } => Kind::Http,
            Error::Decode { .. } => Kind::Decode,
            Error::Concurrent { .. } => Kind::Concurrent,
            Error::CorruptLake { .. } => Kind::CorruptLake,
            Error::Lake { .. } => Kind::Lake,
            Error::Sql { .. } => Kind::Sql,
            Error::Other { .. } => Kind::Other,
        }
    }
    /// The HTTP status an [`Error::Http`] received.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => *status,
            _ => None,
        }
    }
    /// The process exit code the CLI uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => 2,
            _ => 1,
        }
    }
    /// Prefixes the words with context, keeping the kind and the source.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        let words = match &mut self {
            Error::Config { context, .. }
            | Error::Auth { context, .. }
            | Error::CursorExpired { context, .. }
            | Error::NotFound { context, .. }
            | Error::Http { context, .. }
            | Error::Decode { context, .. }
            | Error::Concurrent { context, .. }
            | Error::CorruptLake { context, .. }
            | Error::Lake { context, .. }
            | Error::Sql { context, .. }
            | Error::Other { context, .. } => context,
        };
        *words = if words.is_empty() {
            ctx.to_string()
        } else {
            format!("{ctx}: {words}")
        };
        self
    }

    /// Whether this is a commit that lost a race with another writer of the table (a
    /// conflict delta-rs found, a version another writer took, or delta-rs's own retries
    /// used up), matched by type through the chain of sources.
    pub fn is_commit_conflict(&self) -> bool {
        use deltalake::DeltaTableError as D;
        use deltalake::kernel::transaction::TransactionError as T;
        let conflict = |t: &T| {
            matches!(
                t,
                T::CommitConflict(_) | T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_)
            )
        };
        if matches!(self, Error::Concurrent { .. }) {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(c) = cause {
            if let Some(Error::Concurrent { .. }) = c.downcast_ref::<Error>() {
                return true;
            }
            if let Some(D::Transaction { source }) = c.downcast_ref::<D>()
                && conflict(source)
            {
                return true;
            }
            if let Some(D::VersionAlreadyExists(_)) = c.downcast_ref::<D>() {
                return true;
            }
            if let Some(t) = c.downcast_ref::<T>()
                && conflict(t)
            {
                return true;
            }
            cause = c.source();
        }
        false
    }
}

/// A layer's error as a lake error whose words are the layer's own.
fn layer(kind: Kind, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(kind, "", source)
}

/// The wrappers delta-rs and object_store put around a store's request error, which say
/// nothing to a reader once the request itself is named.
const STORE_NOISE: [&str; 5] = [
    "Kernel error:",
    "Failed to read delta log object:",
    "Error interacting with object store:",
    "Generic S3 error:",
    "Error performing ",
];

/// `text` with every URL's query cut (a store's list request carries its prefix and
/// continuation token there; an HTTP client's, a cursor), and, where it holds an object
/// store's request that never got an answer ("Error performing GET http://host:port/… in
/// 24.1s, after 1 retries, … - HTTP error: error sending request"), that part said as one
/// sentence: which endpoint did not answer, how long it was given, and what to check.
pub fn store_words(text: &str) -> String {
    let text = strip_url_queries(text);
    // object_store nests "Error performing list request: Error performing GET <url> …":
    // the one followed by a method and a URL is the request.
    let request = text.match_indices("Error performing ").find_map(|(at, m)| {
        let rest = &text[at + m.len()..];
        let mut words = rest.split_whitespace();
        let method = words.next()?;
        let url = url::Url::parse(words.next()?)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))?;
        Some((at, rest, method, url))
    });
    let Some((at, rest, method, url)) = request else {
        return text;
    };
    if !store_unanswered(rest) {
        return text;
    }
    let took = rest
        .split_once(" in ")
        .and_then(|(_, t)| t.split_once("s,"))
        .and_then(|(secs, _)| secs.parse::<f64>().ok())
        .map(|s| format!(" in {s:.0} s"))
        .unwrap_or_default();
    let endpoint = match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        _ => url.origin().ascii_serialization(),
    };
    let start = STORE_NOISE
        .iter()
        .filter_map(|n| text.find(n))
        .min()
        .unwrap_or(at);
    let context = text[..start].trim_end().trim_end_matches(':');
    let sentence = format!(
        "the object store at {endpoint} did not answer a {method} request{took} (tried again, then gave up). Check that the endpoint (AWS_ENDPOINT_URL, or `endpoint` in [lake] storage_options) is the store and is up; a store that is only slow can be given more time with `timeout` and `retry_timeout` in [lake] storage_options"
    );
    if context.is_empty() {
        sentence
    } else {
        format!("{context}: {sentence}")
    }
}

/// Whether an object store's error says its request got no answer (a timeout, or a
/// connection that failed): asking the same store again would only wait as long.
pub fn store_unanswered(text: &str) -> bool {
    ["error sending request", "timed out"]
        .iter()
        .any(|w| text.contains(w))
}

/// `text` with the query of every `http://` or `https://` URL in it cut off.
fn strip_url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|s| rest.find(s))
        .min()
    {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .map_or(rest.len(), |e| at + e);
        let url = &rest[at..end];
        out.push_str(url.split(['?', '#']).next().unwrap_or(url));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Self {
        layer(Kind::Lake, e)
    }
}

impl From<deltalake::kernel::transaction::TransactionError> for Error {
    fn from(e: deltalake::kernel::transaction::TransactionError) -> Self {
        layer(Kind::Lake, e)
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        layer(Kind::Lake, e)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        layer(Kind::Lake, e)
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        layer(Kind::Lake, e)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        layer(Kind::Lake, e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        layer(Kind::Lake, e)
    }
}

#[cfg(test)]
mod tests {
    use super::Error;
    use deltalake::DeltaTableError as D;
    use deltalake::kernel::transaction::{CommitConflictError, TransactionError as T};

    /// Conflicts are matched by the type delta-rs gives them, through context added on
    /// the way, and nothing else is taken for one (not even a message that says so).
    #[test]
    fn commit_conflicts_are_matched_by_type() {
        let conflicts = [
            Error::from(D::Transaction {
                source: T::CommitConflict(CommitConflictError::ConcurrentAppend),
            }),
            Error::from(D::Transaction {
                source: T::VersionAlreadyExists(7),
            }),
            Error::from(T::MaxCommitAttempts(15)),
            Error::from(D::VersionAlreadyExists(3)).context("committing run 4"),
        ];
        for e in &conflicts {
            assert!(e.is_commit_conflict(), "{e}");
        }
        let others = [
            Error::from(D::Generic("Failed to commit: concurrent conflict".into())),
            Error::lake("concurrent transaction conflict"),
            Error::from(std::io::Error::other("disk full")),
        ];
        for e in &others {
            assert!(!e.is_commit_conflict(), "{e}");
        }
        // The source stays reachable.
        let e = Error::from(D::VersionAlreadyExists(3)).context("x");
        assert!(std::error::Error::source(&e).is_some());
    }

    /// An object store's request that got no answer is one sentence naming the endpoint
    /// (host and port), with no query of any URL; other messages keep their words.
    #[test]
    fn an_unanswered_store_request_names_the_endpoint_without_queries() {
        let e = Error::lake(
            "looking for s3://b/x/: Failed to read delta log object: Generic S3 error: Error performing list request: Error performing GET http://127.0.0.1:47311/b?list-type=2&prefix=x%2F_delta_log%2F in 24.126953329s, after 1 retries, max_retries: 10, retry_timeout: 15s  - HTTP error: error sending request",
        )
        .to_string();
        assert!(
            e.starts_with("looking for s3://b/x/: the object store at http://127.0.0.1:47311 did not answer a GET request in 24 s"),
            "{e}"
        );
        assert!(!e.contains("list-type") && !e.contains("prefix="), "{e}");
        assert!(e.contains("retry_timeout") && e.contains("timeout"), "{e}");
        let e = Error::from(std::io::Error::other(
            "GET https://h.example/p?token=abc#frag failed: 404",
        ))
        .to_string();
        assert_eq!(e, "GET https://h.example/p failed: 404");
    }
}
