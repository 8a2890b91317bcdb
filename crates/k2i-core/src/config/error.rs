//! Configuration errors, each naming the key path, what was expected and what was found; and warnings,
//! about a valid configuration that still deserves a look.

use std::fmt;
use std::path::PathBuf;

/// One problem in a configuration, located by its key path (`buffer.flush_interval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path; map keys that contain dots are quoted (`kafka.properties."sasl.password"`).
    pub path: String,
    /// What is wrong.
    pub kind: ConfigErrorKind,
    /// The environment variable the value came from, if it came from one.
    pub env_var: Option<String>,
}

/// The kinds of configuration problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io(String),
    /// The file is not valid TOML.
    Syntax(String),
    /// A key that k2i does not know.
    UnknownKey {
        /// The closest known key at the same level, if one is close.
        suggestion: Option<String>,
    },
    /// A required key is absent.
    Missing {
        /// What the key holds.
        expected: String,
    },
    /// A value of the wrong type or outside its range.
    Invalid {
        /// What the key holds.
        expected: String,
        /// What was written instead.
        found: String,
    },
    /// The value has the right type but breaks a rule; the message says which.
    Rule(String),
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, kind: ConfigErrorKind) -> Self {
        Self { path: path.into(), kind, env_var: None }
    }

    pub(crate) fn rule(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(path, ConfigErrorKind::Rule(message.into()))
    }

    pub(crate) fn invalid(path: impl Into<String>, expected: impl Into<String>, found: impl Into<String>) -> Self {
        Self::new(path, ConfigErrorKind::Invalid { expected: expected.into(), found: found.into() })
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        match &self.kind {
            ConfigErrorKind::Io(msg) | ConfigErrorKind::Syntax(msg) | ConfigErrorKind::Rule(msg) => f.write_str(msg)?,
            ConfigErrorKind::UnknownKey { suggestion: Some(s) } => write!(f, "unknown key; did you mean `{s}`?")?,
            ConfigErrorKind::UnknownKey { suggestion: None } => f.write_str("unknown key")?,
            ConfigErrorKind::Missing { expected } => write!(f, "missing required key (expected {expected})")?,
            ConfigErrorKind::Invalid { expected, found } => write!(f, "expected {expected}, found {found}")?,
        }
        if let Some(var) = &self.env_var {
            write!(f, " (from environment variable {var})")?;
        }
        Ok(())
    }
}

/// Every problem found in one configuration, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file the configuration came from.
    pub file: PathBuf,
    /// The problems, in document order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "invalid configuration {} ({n} problem{})", self.file.display(), if n == 1 { "" } else { "s" })?;
        for error in &self.errors {
            write!(f, "\n  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Something in a valid configuration worth a look: a key accepted and ignored, a setting without effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted key path, as in [`ConfigError::path`].
    pub path: String,
    /// Why it deserves a look.
    pub message: String,
}

impl ConfigWarning {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
