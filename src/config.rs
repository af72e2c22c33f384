//! Settings errors shared by every layer's `validate()`, so that the command line, a
//! configuration file and a library caller all meet the same rules and the same messages.

use std::fmt;

/// A setting that cannot be used: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The setting's name as the command line and the configuration file spell it, with `_`
    /// for `-` (e.g. `open_window` for `--open-window`).
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl ConfigError {
    /// A setting `key` that is wrong for `reason`.
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            key,
            reason: reason.into(),
        }
    }
}

/// An error with its chain of causes on one line (`a: b: c`), for logs and messages.
pub fn report<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl fmt::Display + 'a {
    struct Report<'a>(&'a (dyn std::error::Error + 'static));
    impl fmt::Display for Report<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)?;
            let mut cause = self.0.source();
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
            Ok(())
        }
    }
    Report(e)
}
