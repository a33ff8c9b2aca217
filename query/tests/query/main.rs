//! Integration tests of the query crate, one binary with a module per area.

mod deep_queries;
mod promql_conformance;
mod stats_and_limits;
