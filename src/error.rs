//! The crate's error type: kinds a caller can act on, with context in the message.

use std::fmt;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on. Messages carry the context (account,
/// URL, page, contact id) and, where there is one, what to do next. Displayed, a message
/// never shows a secret of this process, even one a server echoed into it
/// ([`crate::secret::redact`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline file, command line or input file is wrong; the user must fix it.
    /// The CLI exits with code 2.
    #[error("{}", crate::secret::redact(.0))]
    Config(String),
    /// The API refused the credentials (401/403) after a refresh was tried.
    #[error("{}", crate::secret::redact(.0))]
    Auth(String),
    /// The API said the stored cursor is no longer valid (Google 410, Aurinko 410
    /// `syncToken.expired` or 400 `token.notValid`); a full extract is needed.
    #[error("{}", crate::secret::redact(.0))]
    CursorExpired(String),
    /// An HTTP request failed for good (after retries, or with a non-retriable status).
    #[error("{}", crate::secret::redact(.message))]
    Http {
        /// The HTTP status, when one was received.
        status: Option<u16>,
        /// What happened, with account, URL and status.
        message: String,
    },
    /// The API answered something that is not what the protocol promises.
    #[error("{}", crate::secret::redact(.0))]
    Decode(String),
    /// Another run committed first (same source and account); nothing of this run landed.
    #[error("{}", crate::secret::redact(.0))]
    Concurrent(String),
    /// The Delta Lake, object store or Parquet layer failed.
    #[error("{}", crate::secret::redact(.0))]
    Lake(String),
    /// A SQL query failed.
    #[error("{}", crate::secret::redact(.0))]
    Sql(String),
    /// Anything else.
    #[error("{}", crate::secret::redact(.0))]
    Other(String),
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
    /// A lake error.
    pub fn lake(msg: impl fmt::Display) -> Self {
        Error::Lake(msg.to_string())
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
        }
    }
}

impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Self {
        Error::Lake(e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::Sql(e.to_string())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Other(format!("Arrow: {e}"))
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Lake(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Lake(format!("Parquet: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Other(e.to_string())
    }
}
