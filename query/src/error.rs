//! The query crate's one error type; the HTTP layer maps each kind to Prometheus' `errorType`.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum QueryError {
    /// The request itself is wrong: unparsable PromQL, bad times or parameters (`bad_data`, 400).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be evaluated (`execution`, 422): duplicate label sets,
    /// many-to-many matching, a limit such as max samples.
    #[error("{0}")]
    Execution(String),
    /// The query ran past its timeout (`timeout`, 503).
    #[error("query timed out in {0} (limit: the request's `timeout` parameter or query.timeout)")]
    Timeout(&'static str),
    /// The client went away or the server is shutting down (`canceled`, 499).
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// Storage failed underneath (`internal`, 500).
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    /// Prometheus' `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Canceled(_) => "canceled",
            QueryError::Internal(_) => "internal",
        }
    }

    /// The HTTP status Prometheus answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            QueryError::BadData(_) => 400,
            QueryError::Execution(_) => 422,
            QueryError::Timeout(_) => 503,
            QueryError::Canceled(_) => 499,
            QueryError::Internal(_) => 500,
        }
    }
}

impl From<toolwatch_storage::StorageError> for QueryError {
    fn from(e: toolwatch_storage::StorageError) -> Self {
        match e {
            toolwatch_storage::StorageError::BadMatcher(m) => QueryError::BadData(m),
            other => QueryError::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
