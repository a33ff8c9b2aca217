//! toolwatch-ingest: wire formats in, samples out. Decodes Prometheus remote-write (snappy block
//! + protobuf) and appends through `toolwatch_storage::Appender`; later also MCP probe results.
//!
//! Main types: `IngestState` (the storage handle and limits) and `router`, mounted by the binary.
//! It never touches the data directory itself and never acknowledges a sample that is not in
//! the WAL.

pub mod remote_write;
pub mod remote_write_proto;

pub use remote_write::{router, IngestLimits, IngestState};
