//! The engine's error type: a kind that decides policy, a retryable flag set where the error is made, a
//! message, key/value context and a source.
//!
//! Callers branch on [`ErrorKind`] and [`Error::is_retryable`], never on messages or on a downcast of the
//! source: whoever makes an error knows whether trying again can help (a lost connection can; a malformed
//! `k2i.progress` property cannot, however often it is read).

use std::fmt;

/// What went wrong, as far as a caller's decision is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration or the environment it names cannot work (a table whose partition spec k2i cannot
    /// write yet, a table dropped and recreated under the ingest, a topic whose offsets went backwards, …).
    /// Fixed by the operator; exit code 2.
    Config,
    /// A server (Kafka, catalog, storage) failed or did not answer in time; trying again may help.
    Transient,
    /// A compare-and-swap lost to a concurrent writer: refresh and validate again.
    Conflict,
    /// A commit was refused because the table's progress for a partition is not where the commit starts
    /// (invariant 2). Never retried blindly: the pipeline resynchronises from the table.
    Fenced,
    /// A record that cannot be decoded or stored; routed by the error policy.
    InvalidRecord,
    /// Persistent state is damaged or unreadable (transaction log, a `k2i.*` table property).
    Corrupt,
    /// Local file I/O failed (transaction log directory, warehouse directory).
    Io,
    /// A bug or an impossible state.
    Internal,
}

impl ErrorKind {
    /// Whether errors of this kind are retryable unless their maker says otherwise.
    fn retryable_by_default(self) -> bool {
        matches!(self, Self::Transient | Self::Conflict)
    }
}

/// An engine error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    message: String,
    context: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`; the message is a lowercase verb phrase ("cannot load table"). Transient and
    /// conflict errors are retryable, others not; [`Error::retryable`] overrides that.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            retryable: kind.retryable_by_default(),
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    /// An error from an iceberg (catalog or storage) call, classified where it is made: a commit conflict is a
    /// [`ErrorKind::Conflict`]; network failures (iceberg reports them as `Unexpected`) and errors iceberg marks
    /// retryable are [`ErrorKind::Transient`]; invalid metadata is [`ErrorKind::Corrupt`]; a missing or existing
    /// table or namespace, an unsupported feature or a failed precondition is [`ErrorKind::Config`].
    pub fn iceberg(message: impl Into<String>, e: iceberg::Error) -> Self {
        use iceberg::ErrorKind as K;
        // A store's permanent refusal (storage::chunked) may arrive wrapped by the writer that met it.
        let mut refused = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            refused |= c.downcast_ref::<iceberg::Error>().is_some_and(|i| i.kind() == K::PreconditionFailed);
            cause = c.source();
        }
        let kind = match e.kind() {
            _ if refused => ErrorKind::Config,
            K::CatalogCommitConflicts => ErrorKind::Conflict,
            _ if e.retryable() => ErrorKind::Transient,
            K::Unexpected => ErrorKind::Transient,
            K::DataInvalid => ErrorKind::Corrupt,
            _ => ErrorKind::Config,
        };
        Self::new(kind, message).source(e)
    }

    /// The message followed by its chain of causes (`message (context): cause: its cause`), for logs and
    /// readiness reasons where the cause is the useful part (which store URL failed, and how).
    pub fn with_causes(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string().replace('\n', " "));
            cause = e.source();
        }
        out
    }

    /// Sets whether retrying the same operation may succeed.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
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

    /// Whether retrying the same operation may succeed, as decided where the error was made.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The value of a context key, if set.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maker_decides_retryability_not_the_source() {
        let conflict = iceberg::Error::new(iceberg::ErrorKind::CatalogCommitConflicts, "cas");
        assert_eq!(Error::iceberg("commit", conflict).kind(), ErrorKind::Conflict);
        let network = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "connection refused");
        assert!(Error::iceberg("load", network).is_retryable());
        let missing = iceberg::Error::new(iceberg::ErrorKind::TableNotFound, "gone");
        assert!(!Error::iceberg("load", missing).is_retryable());
        // A malformed property is corrupt whatever wrapped it: never retried.
        assert!(!Error::new(ErrorKind::Corrupt, "malformed").is_retryable());
        assert!(!Error::new(ErrorKind::Transient, "hung").retryable(false).is_retryable());
    }
}
