//! Reading a Lambda's configuration from its environment: one error type that names the variable and
//! what is wrong with it, so a misconfigured function says exactly what to fix.

use std::str::FromStr;

/// A variable that is missing or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A required variable is not set.
    #[error("{name} is not set: {hint}")]
    Missing {
        /// The variable.
        name: &'static str,
        /// What it should hold.
        hint: &'static str,
    },
    /// The variable's value is not what it should be.
    #[error("{name}={value:?}: {problem}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong, and what it should hold.
        problem: String,
    },
}

/// The value of `name`, or `None` when it is unset or empty.
#[must_use]
pub fn optional(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// The value of `name`; `hint` says what it should hold when it is missing.
pub fn required(name: &'static str, hint: &'static str) -> Result<String, EnvError> {
    optional(name).ok_or(EnvError::Missing { name, hint })
}

/// The value of `name` parsed as `T`, or `None` when it is unset.
pub fn parsed<T>(name: &'static str) -> Result<Option<T>, EnvError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    optional(name)
        .map(|value| {
            value.trim().parse().map_err(|e: T::Err| EnvError::Invalid {
                name,
                problem: e.to_string(),
                value,
            })
        })
        .transpose()
}

/// Why a function cannot start: its configuration is missing or wrong, or what it names cannot be
/// opened.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable is missing or does not parse.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A variable's value does not name what it should (`METER_STORE` a store): the variable, with
    /// the parser's reason as the source.
    #[error("{name}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Why its value is not one.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A value that says itself what is wrong (an archive or reports location that does not parse).
    #[error(transparent)]
    Value(Box<dyn std::error::Error + Send + Sync>),
    /// The store, a file or a client could not be opened.
    #[error("cannot open {what}")]
    Open {
        /// What was being opened.
        what: String,
        /// Why not.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConfigError {
    /// `what` could not be opened.
    pub fn open(what: impl Into<String>, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Open { what: what.into(), source: err.into() }
    }
}
