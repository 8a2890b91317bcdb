//! The engine's error type: a kind that decides policy, a message, key/value context and a source.

use std::fmt;

/// What went wrong, as far as a caller's decision is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration cannot work (a partitioned table before partitioning is built, …).
    Config,
    /// Kafka: client creation, metadata, fetch, commit.
    Kafka,
    /// The Iceberg catalog or storage; may be transient.
    Catalog,
    /// A record that cannot be decoded or stored; routed by the error policy.
    InvalidRecord,
    /// A commit was refused because the table's progress for a partition is not where the commit starts
    /// (invariant 2). Never retried blindly.
    Fenced,
    /// The process was asked to stop.
    Shutdown,
    /// A bug or an impossible state.
    Internal,
}

/// An engine error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`; the message is a lowercase verb phrase ("cannot load table").
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), context: Vec::new(), source: None }
    }

    /// Adds a key/value pair naming what the error is about (topic, partition, offset, table, file).
    pub fn with(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Attaches the underlying error.
    pub fn source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation may succeed: catalog errors are, unless iceberg says they are
    /// permanent (a missing or existing table, invalid data, an unsupported feature, a failed precondition).
    /// Network failures surface as `Unexpected` without iceberg's retryable flag, and an outage of the catalog
    /// is exactly what retries are for.
    pub fn is_retryable(&self) -> bool {
        if self.kind != ErrorKind::Catalog {
            return false;
        }
        match self.source.as_deref().and_then(|s| s.downcast_ref::<iceberg::Error>()) {
            Some(e) => {
                e.retryable()
                    || matches!(e.kind(), iceberg::ErrorKind::CatalogCommitConflicts | iceberg::ErrorKind::Unexpected)
            }
            None => true,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.context.is_empty() {
            let parts: Vec<String> = self.context.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}
