//! The alerting crate's one error type.

use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum AlertingError {
    /// A rule file or configuration is wrong; the text names file, line, group and rule.
    #[error("{0}")]
    Invalid(String),
    /// Evaluating a rule failed (its health becomes `err`).
    #[error("{0}")]
    Eval(String),
}

pub type Result<T, E = AlertingError> = std::result::Result<T, E>;
