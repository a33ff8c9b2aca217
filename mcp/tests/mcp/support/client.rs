//! rmcp client helpers shared by the MCP tests: this crate's in-process tests (`mod support`)
//! and the root crate's HTTP tests (which include this file by `#[path]`).
#![allow(dead_code)]

use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::{ClientLifecycleMode, RoleClient};
use serde_json::Value;

/// Both protocol eras: 2025-11-25 sessions (`initialize`) and stateless 2026-07-28 (`discover`).
pub fn eras() -> Vec<(&'static str, ClientLifecycleMode)> {
    vec![
        ("legacy", ClientLifecycleMode::Initialize),
        ("modern", ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }),
    ]
}

pub async fn call(c: &RunningService<RoleClient, ()>, tool: &'static str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    c.peer().call_tool(CallToolRequestParams::new(tool).with_arguments(args)).await.expect("tool call answered")
}

pub fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

/// Structured content of a successful call, checked against the text block that repeats it.
pub fn ok(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "tool failed: {}", text(r));
    let s = r.structured_content.clone().expect("structuredContent");
    let t: Value = serde_json::from_str(&text(r)).expect("text block is the same JSON");
    assert_eq!(s, t, "text block repeats structuredContent");
    s
}
