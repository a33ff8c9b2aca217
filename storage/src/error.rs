use std::path::PathBuf;

/// Why one sample was not stored. Cheap to copy so the append path can count rejections per
/// reason without allocating; callers turn it into their protocol's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("out-of-order sample: timestamp {t} is older than the series' newest sample {newest} (out-of-order window {window_ms} ms)")]
    OutOfOrder { t: i64, newest: i64, window_ms: i64 },
    #[error("duplicate sample for timestamp {t} with a different value")]
    Duplicate { t: i64 },
    #[error(
        "series limit reached: storage.max_series = {limit}; new series are rejected, existing series keep ingesting"
    )]
    SeriesLimit { limit: usize },
    #[error("timestamp {t} is negative; samples need a timestamp >= 0")]
    NegativeTimestamp { t: i64 },
    #[error("invalid labels: {0}")]
    InvalidLabels(&'static str),
    /// A sender stamping nanoseconds or seconds as milliseconds would otherwise store a sample
    /// years ahead, which then holds every series' head open and skews retention.
    #[error("timestamp {t} is too far in the future: more than storage.max_future = {max_future_ms} ms ahead of this server's clock ({now}); is the sender's clock or timestamp unit wrong?")]
    TooFarInFuture { t: i64, now: i64, max_future_ms: i64 },
}

impl AppendError {
    /// Short reason for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AppendError::OutOfOrder { .. } => "out_of_order",
            AppendError::Duplicate { .. } => "duplicate",
            AppendError::SeriesLimit { .. } => "limit",
            AppendError::NegativeTimestamp { .. } => "too_old",
            AppendError::InvalidLabels(_) => "invalid",
            AppendError::TooFarInFuture { .. } => "too_far_in_future",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("data directory {path} is locked by another toolwatch process ({holder})")]
    Locked { path: PathBuf, holder: String },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("invalid matcher: {0}")]
    BadMatcher(String),
    #[error("storage is closed")]
    Closed,
    /// The last fsync of the WAL failed: what was written may not be durable, so writes are
    /// refused (HTTP 503) until a later fsync succeeds (the background thread retries).
    #[error(
        "the WAL cannot be made durable ({detail}); writes are refused until an fsync succeeds again, retry later"
    )]
    WalUnhealthy { detail: String },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StorageError::Io { context: context(), source })
    }
}

pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt { what: what.into(), detail: detail.into() }
}
