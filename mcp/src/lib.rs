//! toolwatch-mcp: the MCP server (stdio and Streamable HTTP) through which agents query their
//! own tool telemetry.
//!
//! Filled by the MCP server issue. It answers through `toolwatch-query`, reads alert state from
//! `toolwatch-alerting`, and never writes to storage except its own self-telemetry.
