//! What the policy config sections share: the validation error.
//!
//! Serde catches unknown keys and wrong types; `validate()` on each section
//! catches values that parse but make no sense (a failure rate of 2, zero
//! probes), naming the key so the config loader can report it.

use std::fmt;

/// A config value that parses but is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    /// The dotted path of the key, e.g. `breaker.failure_rate`.
    pub path: String,
    /// Why it is refused.
    pub reason: String,
}

impl InvalidConfig {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidConfig {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error under a parent path (`keys[2]` + `limits.rpm`).
    pub fn under(mut self, parent: &str) -> Self {
        self.path = format!("{parent}.{}", self.path);
        self
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for InvalidConfig {}
