//! toolwatch-storage: the embedded time-series database.
//!
//! A series is a sorted set of labels (`Labels`, strings interned); a sample is an i64
//! millisecond timestamp and an f64 value, stored bit-exactly. `Db` owns the data directory:
//! the in-memory `Head` (sharded by label hash, Gorilla-compressed chunks), the write-ahead log,
//! immutable mmapped blocks with an inverted index, compaction and retention. Writers use an
//! `Appender`; readers a `Querier` (`select`, `label_names`, `label_values`).
//!
//! Invariants: an appender's samples are in the WAL before `commit` returns; nothing outside this
//! crate touches files of the data directory; readers never hold a lock while decoding chunks.

pub mod block;
pub mod chunk;
pub mod compact;
pub mod db;
pub mod error;
#[doc(hidden)]
pub mod fault;
pub mod head;
pub mod index;
pub mod labels;
pub mod lock;
pub mod matcher;
pub mod postings;
pub mod redact;
mod replay;
pub mod series;
pub mod wal;

pub use compact::PersistReport;
pub use db::{wall_clock_ms, Appender, Db, DbOptions, DbStats, Querier};
pub use error::{AppendError, Result, StorageError};
pub use head::{Head, HeadOptions, SeriesRef};
pub use labels::{Label, LabelRef, Labels, METRIC_NAME};
pub use lock::DataDirLock;
pub use matcher::{MatchOp, Matcher};
pub use redact::redact_url;
pub use series::{Series, SeriesIter};
pub use wal::FsyncMode;
