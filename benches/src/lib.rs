//! toolwatch-benches: a realistic MCP telemetry workload shared by the criterion benches and
//! the figure reports (`cargo run --release -p toolwatch-benches --bin figures`).
//!
//! The mix per scraped instance: `mcp_tool_calls_total{tool,status}` counters, classic
//! histograms `mcp_tool_latency_seconds_{bucket,sum,count}` and `http_request_duration_seconds`,
//! process and node gauges doing clamped random walks rounded to a few decimals, 2-decimal
//! CPU-seconds counters and a few constants. Timestamps are exact multiples of the interval.

pub mod mix;
