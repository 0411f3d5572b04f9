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
        message,
        source: Box::new(source),
    }
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
}
