//! End-to-end tests: the built binary (`CARGO_BIN_EXE_toolwatch`) against real clients and
//! peers. One test binary with a module per area, so the suite links once (see README for
//! running one module or one test).

#[path = "../../mcp/tests/mcp/support/client.rs"]
mod client;
mod common;

mod alerting_e2e;
mod cli;
mod corruption;
mod crash;
mod disk_full;
mod mcp_clients;
mod mcp_e2e;
mod probes_e2e;
mod prometheus_e2e;
mod promql_differential;
mod proxy_e2e;
mod query_api;
mod remote_write;
mod security;
mod slow_sender;
