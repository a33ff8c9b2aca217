//! toolwatch-ingest: wire formats in, samples out. Decodes Prometheus remote-write 1.0 and 2.0
//! (snappy block + protobuf, decoded zero-copy) and appends through `toolwatch_storage::Appender`;
//! keeps remote-write metadata for the metadata API.
//!
//! MCP probe results come in too: pushed to `/api/v1/probes` or produced by the built-in prober
//! (`prober.rs`, rmcp's client), both recorded by `probe::ProbeSink` as `mcp_probe_*` series.
//!
//! Main types: `IngestState` (storage handle, limits, metadata, metrics) and `router`, mounted by
//! the binary. It never touches the data directory itself and never acknowledges a sample that
//! is not in the WAL.

pub mod body;
pub mod decode;
pub mod metadata;
pub mod metrics;
pub mod probe;
pub mod prober;
pub mod remote_write;
pub mod remote_write_proto;
pub mod wire;

pub use decode::DecodeLimits;
pub use metadata::MetadataStore;
pub use metrics::IngestMetrics;
pub use remote_write::{router, IngestLimits, IngestState};
