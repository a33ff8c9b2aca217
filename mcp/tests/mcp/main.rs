//! Integration tests of the mcp crate, one binary with a module per area.

mod proxy_props;
mod support;
mod tools;
