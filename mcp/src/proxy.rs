//! The telemetry side of the MCP proxy: it watches the JSON-RPC messages an agent and an MCP
//! server exchange (it never changes them) and records, per request, method, tool, duration,
//! outcome, protocol version and sizes — never arguments or results. The relays (stdio in the
//! binary, HTTP in proxy_http.rs) hand it each message's bytes.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// The server's own operation and tool-call labels, plus the proxied server's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub target: String,
    #[prometheus(flatten)]
    pub op: OperationLabels,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub target: String,
    #[prometheus(flatten)]
    pub call: ToolCallLabels,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub target: String,
    pub tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SizeLabels {
    pub target: String,
    pub mcp_method_name: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
    pub direction: String,
}

use crate::telemetry::{OperationLabels, ToolCallLabels, BUCKETS};

/// The proxy's series, every one with `target`.
#[derive(Clone)]
pub struct ProxyMetrics {
    pub operations: Family<OpLabels, Histogram>,
    pub tool_calls: Family<CallLabels, Counter>,
    pub tool_latency: Family<ToolLabels, Histogram>,
    pub message_bytes: Family<SizeLabels, Histogram>,
    pub malformed: Family<TargetLabels, Counter>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
}

impl ProxyMetrics {
    pub fn register(r: &mut Registry) -> ProxyMetrics {
        let m = ProxyMetrics {
            operations: Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied())),
            tool_calls: Family::default(),
            tool_latency: Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied())),
            message_bytes: Family::new_with_constructor(|| Histogram::new(exponential_buckets(64.0, 4.0, 10))),
            malformed: Family::default(),
            upstream_errors: Family::default(),
        };
        r.register(
            "mcp_server_operation_duration_seconds",
            "MCP requests relayed by the toolwatch proxy (OpenTelemetry mcp.server.operation.duration)",
            m.operations.clone(),
        );
        r.register("mcp_tool_calls", "MCP tool calls relayed by the toolwatch proxy, by outcome", m.tool_calls.clone());
        r.register(
            "mcp_tool_latency_seconds",
            "MCP tool call latency seen by the toolwatch proxy",
            m.tool_latency.clone(),
        );
        r.register(
            "mcp_proxy_message_bytes",
            "Sizes of relayed MCP requests and responses (contents are never stored)",
            m.message_bytes.clone(),
        );
        r.register("mcp_proxy_malformed_messages", "Relayed messages that were not JSON-RPC", m.malformed.clone());
        r.register(
            "mcp_proxy_upstream_errors",
            "Exchanges the HTTP proxy could not complete with the upstream MCP server (unreachable or broken off)",
            m.upstream_errors.clone(),
        );
        m
    }
}

/// Names one target's series may carry as label values. They come from the client, so a name
/// is admitted only once the server has shown it exists — any answer but one of `reject` (a
/// name never seen before that fails so is `_unknown`) — and at most `max` of them (then
/// `_other`): clients cannot grow the series count at will.
struct Names {
    max: usize,
    reject: &'static [&'static str],
    known: Mutex<HashSet<String>>,
}

impl Names {
    fn label(&self, name: &str, error_type: &str) -> String {
        let mut known = self.known.lock();
        if known.contains(name) {
            return name.to_string();
        }
        if self.reject.contains(&error_type) {
            return "_unknown".into();
        }
        if known.len() >= self.max {
            return "_other".into();
        }
        known.insert(name.to_string());
        name.to_string()
    }
}

/// Methods a target may show: the spec has a few dozen.
const MAX_METHODS: usize = 100;
/// JSON-RPC error codes a target may show: the spec and MCP define about a dozen.
const MAX_ERROR_CODES: usize = 50;

/// The label values one target has admitted (shared by all its sessions): tool names (an
/// unknown tool is "method not found" or "invalid params"), method names ("method not
/// found") and the error codes its server answers with.
pub struct TargetNames {
    tools: Names,
    methods: Names,
    codes: Names,
}

impl TargetNames {
    pub fn new(max_tools: usize) -> Arc<TargetNames> {
        let names = |max, reject| Names { max, reject, known: Mutex::new(HashSet::new()) };
        Arc::new(TargetNames {
            tools: names(max_tools, &["-32601", "-32602"]),
            methods: names(MAX_METHODS, &["-32601"]),
            codes: names(MAX_ERROR_CODES, &[]),
        })
    }
}

/// A protocol version is a date (`2025-11-25`); anything else a client claims is `_other`.
/// Used for the proxy's series and for toolwatch's own MCP server (server.rs) alike.
pub(crate) fn version_label(v: &str) -> String {
    let b = v.as_bytes();
    let date = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if date {
        v.to_string()
    } else {
        "_other".into()
    }
}

/// The requests in one client message.
#[derive(Debug, Default, PartialEq)]
pub struct Requests {
    pub ids: Vec<Value>,
    pub batch: bool,
}

/// A JSON-RPC error answering `id`: what a relay sends when the server cannot.
pub fn error_message(id: &Value, code: i64, message: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

struct Pending {
    id: Value,
    method: String,
    tool: String,
    request_bytes: usize,
    began: Instant,
}

/// Follows one session (one stdio pipe pair, or one HTTP session) and records each request
/// when its response passes.
pub struct Observer {
    target: String,
    transport: &'static str,
    metrics: ProxyMetrics,
    names: Arc<TargetNames>,
    protocol_version: String,
    /// Requests relayed to the server and not answered yet, by JSON-RPC id (as JSON text, so
    /// 1 and "1" stay apart).
    pending: HashMap<String, Pending>,
}

impl Observer {
    pub fn new(target: &str, transport: &'static str, metrics: ProxyMetrics, names: Arc<TargetNames>) -> Observer {
        Observer {
            target: target.to_string(),
            transport,
            metrics,
            names,
            protocol_version: String::new(),
            pending: HashMap::new(),
        }
    }

    /// The version an HTTP client names in `MCP-Protocol-Version` (it sends it on every request
    /// after `initialize`, so a per-request observer knows the session's version).
    pub fn set_protocol_version(&mut self, v: &str) {
        self.protocol_version = version_label(v);
    }

    /// A message from the client (one line on stdio, one POST body on HTTP). Returns the ids
    /// of the requests in it (a batch in its order), for a relay that must answer them itself.
    pub fn client_message(&mut self, bytes: &[u8]) -> Requests {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Array(items)) => {
                let n = bytes.len() / items.len().max(1);
                Requests { ids: items.iter().filter_map(|m| self.client_one(m, n)).collect(), batch: true }
            }
            Ok(m) => Requests { ids: self.client_one(&m, bytes.len()).into_iter().collect(), batch: false },
            Err(_) => {
                self.malformed("client");
                Requests::default()
            }
        }
    }

    /// A message from the server (one line on stdio, one JSON body or SSE event on HTTP).
    pub fn server_message(&mut self, bytes: &[u8]) {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Array(items)) => items.iter().for_each(|m| self.server_one(m, bytes.len() / items.len().max(1))),
            Ok(m) => self.server_one(&m, bytes.len()),
            Err(_) => self.malformed("server"),
        }
    }

    pub(crate) fn malformed(&self, direction: &str) {
        self.metrics
            .malformed
            .get_or_create(&TargetLabels { target: self.target.clone(), direction: direction.into() })
            .inc();
    }

    fn size(&self, method: &str, direction: &str, n: usize) {
        self.metrics
            .message_bytes
            .get_or_create(&SizeLabels {
                target: self.target.clone(),
                mcp_method_name: method.into(),
                direction: direction.into(),
            })
            .observe(n as f64);
    }

    /// Notes one client message; returns its id when it is a request.
    fn client_one(&mut self, m: &Value, n: usize) -> Option<Value> {
        let Some(method) = m.get("method").and_then(Value::as_str) else {
            // A response from the client (to a server request): nothing to time.
            return None;
        };
        if method == "initialize" {
            if let Some(v) = m.pointer("/params/protocolVersion").and_then(Value::as_str) {
                self.protocol_version = version_label(v);
            }
        }
        if let Some(v) = m.pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion").and_then(Value::as_str) {
            self.protocol_version = version_label(v);
        }
        let Some(id) = m.get("id") else {
            // A notification: its size now; a cancelled request is over for the client (a
            // server should not answer it, and would otherwise stay pending here).
            let label = self.names.methods.label(method, "");
            self.size(&label, "request", n);
            if method == "notifications/cancelled" {
                if let Some(p) = m.pointer("/params/requestId").and_then(|id| self.pending.remove(&id.to_string())) {
                    self.finish(p, "cancelled".into(), None);
                }
            }
            return None;
        };
        let tool = if method == "tools/call" {
            m.pointer("/params/name").and_then(Value::as_str).unwrap_or("").to_string()
        } else {
            String::new()
        };
        let p = Pending { id: id.clone(), method: method.to_string(), tool, request_bytes: n, began: Instant::now() };
        self.pending.insert(id.to_string(), p);
        Some(id.clone())
    }

    fn server_one(&mut self, m: &Value, n: usize) {
        let Some(id) = m.get("id") else { return };
        if m.get("method").is_some() {
            return; // a request from the server to the client
        }
        let Some(p) = self.pending.remove(&id.to_string()) else { return };
        if p.method == "initialize" {
            if let Some(v) = m.pointer("/result/protocolVersion").and_then(Value::as_str) {
                self.protocol_version = version_label(v);
            }
        }
        // The server's words become label values too: a code must be an integer, and only so
        // many distinct ones are kept.
        let error_type = if let Some(code) = m.pointer("/error/code") {
            match code.as_i64() {
                Some(c) => self.names.codes.label(&c.to_string(), ""),
                None => "_other".to_string(),
            }
        } else if m.pointer("/result/isError") == Some(&Value::Bool(true)) {
            "tool_error".to_string()
        } else {
            String::new()
        };
        self.finish(p, error_type, Some(n));
    }

    /// Records a request once its outcome is known (and its answer's size, when it had one).
    fn finish(&self, mut p: Pending, error_type: String, response_bytes: Option<usize>) {
        let secs = p.began.elapsed().as_secs_f64();
        p.method = self.names.methods.label(&p.method, &error_type);
        self.size(&p.method, "request", p.request_bytes);
        if let Some(n) = response_bytes {
            self.size(&p.method, "response", n);
        }
        if p.method == "tools/call" {
            p.tool = self.names.tools.label(&p.tool, &error_type);
            let status = match error_type.as_str() {
                "" => "ok",
                "tool_error" => "tool_error",
                _ => "error",
            };
            let t = CallLabels {
                target: self.target.clone(),
                call: ToolCallLabels { tool: p.tool.clone(), status: status.into() },
            };
            self.metrics.tool_calls.get_or_create(&t).inc();
            self.metrics
                .tool_latency
                .get_or_create(&ToolLabels { target: self.target.clone(), tool: p.tool.clone() })
                .observe(secs);
        }
        self.metrics
            .operations
            .get_or_create(&OpLabels {
                target: self.target.clone(),
                op: OperationLabels {
                    mcp_method_name: p.method,
                    gen_ai_tool_name: p.tool,
                    error_type,
                    mcp_protocol_version: self.protocol_version.clone(),
                    network_transport: self.transport.to_string(),
                },
            })
            .observe(secs);
    }

    /// The server went away: every unanswered request fails with `error_type` (the relay sends
    /// the client a JSON-RPC error for each). Returns their ids.
    pub fn fail_pending(&mut self, error_type: &str) -> Vec<Value> {
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        pending
            .into_iter()
            .map(|p| {
                let id = p.id.clone();
                self.finish(p, error_type.to_string(), None);
                id
            })
            .collect()
    }

    /// Requests noted and not yet recorded.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn records_outcomes_without_contents() {
        let mut reg = Registry::default();
        let m = ProxyMetrics::register(&mut reg);
        let mut o = Observer::new("demo", "pipe", m, TargetNames::new(1));
        o.client_message(
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
        );
        o.server_message(br#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25"}}"#);
        o.client_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        o.client_message(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"secret"}}},{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"fetch"}}]"#);
        o.server_message(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#);
        o.server_message(br#"{"jsonrpc":"2.0","id":"1","error":{"code":-32602,"message":"bad"}}"#);
        o.client_message(br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search"}}"#);
        o.server_message(br#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#);
        o.client_message(b"not json");
        // A name the server does not know stays out of the labels; past the cap, `_other`.
        o.client_message(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"made_up_1"}}"#);
        o.server_message(br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"tool not found"}}"#);
        o.client_message(br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"third"}}"#);
        o.server_message(br#"{"jsonrpc":"2.0","id":4,"result":{"content":[]}}"#);
        // A method the server does not have; a request the client gave up on.
        o.client_message(br#"{"jsonrpc":"2.0","id":5,"method":"made/up","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"junk"}}}"#);
        o.server_message(br#"{"jsonrpc":"2.0","id":5,"error":{"code":-32601,"message":"no"}}"#);
        o.client_message(br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"search"}}"#);
        o.client_message(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":6}}"#);
        assert_eq!(o.pending_len(), 0);
        let t = text(&reg);
        assert!(t.contains(r#"mcp_tool_calls_total{target="demo",tool="search",status="tool_error"} 1"#), "{t}");
        assert!(t.contains(r#"mcp_tool_calls_total{target="demo",tool="search",status="ok"} 1"#), "{t}");
        assert!(t.contains(r#"mcp_tool_calls_total{target="demo",tool="_unknown",status="error"} 2"#), "{t}");
        assert!(t.contains(r#"mcp_tool_calls_total{target="demo",tool="_other",status="ok"} 1"#), "{t}");
        assert!(!t.contains("made_up_1") && !t.contains("fetch"), "{t}");
        assert!(!t.contains("made/up") && !t.contains("junk"), "{t}");
        assert!(
            t.contains(
                r#"mcp_method_name="_unknown",gen_ai_tool_name="",error_type="-32601",mcp_protocol_version="_other""#
            ),
            "{t}"
        );
        assert!(t.contains(r#"mcp_tool_calls_total{target="demo",tool="search",status="error"} 1"#), "cancelled: {t}");
        assert!(t.contains(r#"error_type="cancelled""#), "{t}");
        assert!(t.contains(r#"gen_ai_tool_name="_unknown",error_type="-32602",mcp_protocol_version="2025-11-25",network_transport="pipe""#), "{t}");
        assert!(t.contains(r#"mcp_proxy_malformed_messages_total{target="demo",direction="client"} 1"#), "{t}");
        assert!(!t.contains("secret"), "arguments are never recorded");
    }
}
