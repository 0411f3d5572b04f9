//! The crate's error type: kinds a caller can act on, with context in the message.

use std::fmt;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on. Messages carry the context (account,
/// URL, page, contact id) and, where there is one, what to do next. Displayed, a message
/// never shows a secret of this process, even one a server echoed into it
/// ([`crate::secret::redact`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pipeline file, command line or input file is wrong; the user must fix it.
    /// The CLI exits with code 2.
    #[error("{}", crate::secret::printable(.0))]
    Config(String),
    /// The API refused the credentials (401/403) after a refresh was tried.
    #[error("{}", crate::secret::printable(.0))]
    Auth(String),
    /// The API said the stored cursor is no longer valid (Google 410, Aurinko 410
    /// `syncToken.expired` or 400 `token.notValid`); a full extract is needed.
    #[error("{}", crate::secret::printable(.0))]
    CursorExpired(String),
    /// An HTTP request failed for good (after retries, or with a non-retriable status).
    #[error("{}", crate::secret::printable(.message))]
    Http {
        /// The HTTP status, when one was received.
        status: Option<u16>,
        /// What happened, with account, URL and status.
        message: String,
    },
    /// The API answered something that is not what the protocol promises.
    #[error("{}", crate::secret::printable(.0))]
    Decode(String),
    /// Another run committed first (same source and account); nothing of this run landed.
    #[error("{}", crate::secret::printable(.0))]
    Concurrent(String),
    /// The Delta Lake, object store or Parquet layer failed.
    #[error("{}", crate::secret::printable(.0))]
    Lake(String),
    /// A SQL query failed.
    #[error("{}", crate::secret::printable(.0))]
    Sql(String),
    /// Anything else.
    #[error("{}", crate::secret::printable(.0))]
    Other(String),
    /// A layer below failed (Delta Lake, object store, Parquet, Arrow, DataFusion, I/O);
    /// `source` is its own error, kept so that callers can match it by type (a commit
    /// conflict is a `deltalake` `TransactionError`, not a message).
    #[error("{}", crate::secret::printable(.message))]
    Layer {
        /// What failed, with context; the CLI prints this.
        message: String,
        /// The layer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A configuration or usage error (exit code 2).
    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }
    /// A decode error.
    pub fn decode(msg: impl fmt::Display) -> Self {
        Error::Decode(msg.to_string())
    }
    /// A lake error. An object store's "Error performing GET <url> …" becomes one
    /// sentence naming the endpoint (see [`store_words`]).
    pub fn lake(msg: impl fmt::Display) -> Self {
        Error::Lake(store_words(&msg.to_string()))
    }
    /// Any other error.
    pub fn other(msg: impl fmt::Display) -> Self {
        Error::Other(msg.to_string())
    }
    /// The process exit code the CLI uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        let wrap = |m: String| format!("{ctx}: {m}");
        match self {
            Error::Config(m) => Error::Config(wrap(m)),
            Error::Auth(m) => Error::Auth(wrap(m)),
            Error::CursorExpired(m) => Error::CursorExpired(wrap(m)),
            Error::Http { status, message } => Error::Http {
                status,
                message: wrap(message),
            },
            Error::Decode(m) => Error::Decode(wrap(m)),
            Error::Concurrent(m) => Error::Concurrent(wrap(m)),
            Error::Lake(m) => Error::Lake(wrap(m)),
            Error::Sql(m) => Error::Sql(wrap(m)),
            Error::Other(m) => Error::Other(wrap(m)),
            Error::Layer { message, source } => Error::Layer {
                message: wrap(message),
                source,
            },
        }
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
        if matches!(self, Error::Concurrent(_)) {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(c) = cause {
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

/// A layer's error with the kind of message the crate had for it.
fn layer(message: String, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Layer {
        message: store_words(&message),
        source: Box::new(source),
    }
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
        layer(e.to_string(), e)
    }
}

impl From<deltalake::kernel::transaction::TransactionError> for Error {
    fn from(e: deltalake::kernel::transaction::TransactionError) -> Self {
        layer(e.to_string(), e)
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        layer(e.to_string(), e)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        layer(format!("Arrow: {e}"), e)
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        layer(e.to_string(), e)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        layer(format!("Parquet: {e}"), e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        layer(e.to_string(), e)
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
