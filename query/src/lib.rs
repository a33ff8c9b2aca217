//! toolwatch-query: PromQL evaluation over `toolwatch_storage::Querier` and the Prometheus HTTP
//! query API (`/api/v1/query`, `/api/v1/query_range`, labels, series, metadata).
//!
//! Filled by the PromQL engine issue. It parses with `promql-parser` and evaluates with its own
//! engine; it never touches files of the data dir and never appends samples.
