//! The proxy's watchers on arbitrary traffic from either side: they never panic, every request
//! is recorded exactly once, label values stay bounded, and SSE events do not depend on how the
//! stream was cut into chunks. Cases: 64 by default (CI), more with TOOLWATCH_PROPTEST_CASES.

use prometheus_client::registry::Registry;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use toolwatch_mcp::proxy::{Observer, ProxyMetrics, TargetNames};
use toolwatch_mcp::proxy_http::SseEvents;

fn cases() -> u32 {
    std::env::var("TOOLWATCH_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

const MAX_TOOLS: usize = 3;

/// One message on the wire, from the client or from the server.
#[derive(Debug, Clone)]
enum Msg {
    Client(Vec<u8>),
    Server(Vec<u8>),
}

/// Ids from a small set, so answers, duplicates and cancellations meet their requests; 1 and
/// "1" must stay apart.
fn id() -> impl Strategy<Value = Value> {
    prop_oneof![(0..4i64).prop_map(Value::from), (0..4i64).prop_map(|i| Value::from(i.to_string())), Just(Value::Null)]
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tools/call".to_string()),
        Just("initialize".to_string()),
        Just("tools/list".to_string()),
        "[a-z/]{1,12}",
        ".{0,20}",
    ]
}

fn client_value() -> BoxedStrategy<Value> {
    prop_oneof![
        (id(), word(), word(), word()).prop_map(|(id, method, tool, version)| json!({
            "jsonrpc": "2.0", "id": id, "method": method,
            "params": {"name": tool, "protocolVersion": version, "arguments": {"q": "secret"}}
        })),
        id().prop_map(|id| json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}})),
        word().prop_map(|method| json!({"jsonrpc": "2.0", "method": method})),
        // A client's answer to a server request.
        id().prop_map(|id| json!({"jsonrpc": "2.0", "id": id, "result": {}})),
    ]
    .boxed()
}

fn server_value() -> BoxedStrategy<Value> {
    let code = prop_oneof![any::<i64>().prop_map(Value::from), word().prop_map(Value::from), Just(json!({"x": 1}))];
    prop_oneof![
        (id(), any::<bool>(), word()).prop_map(|(id, is_error, version)| json!({
            "jsonrpc": "2.0", "id": id, "result": {"isError": is_error, "protocolVersion": version}
        })),
        (id(), code)
            .prop_map(|(id, code)| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": "m"}})),
        (id(), word()).prop_map(|(id, method)| json!({"jsonrpc": "2.0", "id": id, "method": method})),
    ]
    .boxed()
}

fn batch_or_one(v: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => v.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(v, 0..4).prop_map(|b| Value::from(b).to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![batch_or_one(client_value()).prop_map(Msg::Client), batch_or_one(server_value()).prop_map(Msg::Server)]
}

/// How many requests a message sequence must have recorded: a request is open from the
/// client's message until an answer (no `method`) with its id, a cancellation naming it, or the
/// end; a second request reusing an open id replaces it.
fn expected_records(msgs: &[Msg]) -> usize {
    let items = |b: &[u8]| -> Vec<Value> {
        match serde_json::from_slice::<Value>(b) {
            Ok(Value::Array(a)) => a,
            Ok(v) => vec![v],
            Err(_) => vec![],
        }
    };
    let (mut open, mut done) = (HashSet::new(), 0);
    for m in msgs {
        match m {
            Msg::Client(b) => {
                for v in items(b) {
                    let Some(method) = v.get("method").and_then(Value::as_str) else { continue };
                    match v.get("id") {
                        Some(id) => {
                            open.insert(id.to_string());
                        }
                        None if method == "notifications/cancelled" => {
                            if let Some(id) = v.pointer("/params/requestId") {
                                done += open.remove(&id.to_string()) as usize;
                            }
                        }
                        None => {}
                    }
                }
            }
            Msg::Server(b) => {
                for v in items(b) {
                    if let (Some(id), None) = (v.get("id"), v.get("method")) {
                        done += open.remove(&id.to_string()) as usize;
                    }
                }
            }
        }
    }
    done + open.len()
}

/// Label values of `label` on the lines of `series` in the exposition.
fn label_values(text: &str, series: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.split(&key).nth(1).and_then(|r| r.split('"').next()).map(str::to_string))
        .collect()
}

fn sum(text: &str, series: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn sse(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut p = SseEvents::default();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, |d| out.push(d.to_vec()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn observer_records_each_request_once_with_bounded_labels(msgs in prop::collection::vec(msg(), 0..40)) {
        let mut reg = Registry::default();
        let metrics = ProxyMetrics::register(&mut reg);
        let mut o = Observer::new("t", "pipe", metrics, TargetNames::new(MAX_TOOLS));
        for m in &msgs {
            match m {
                Msg::Client(b) => {
                    o.client_message(b);
                }
                Msg::Server(b) => o.server_message(b),
            }
        }
        o.fail_pending("-32000");
        prop_assert_eq!(o.pending_len(), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let recorded = sum(&text, "mcp_server_operation_duration_seconds_count{");
        prop_assert_eq!(recorded as usize, expected_records(&msgs), "{}", text);
        prop_assert!(!text.contains("secret"), "arguments are never recorded");

        let tools = label_values(&text, "mcp_tool_calls_total{", "tool");
        prop_assert!(tools.iter().filter(|t| !t.starts_with('_')).count() <= MAX_TOOLS, "{:?}", tools);
        let methods = label_values(&text, "mcp_server_operation_duration_seconds_count{", "mcp_method_name");
        prop_assert!(methods.len() <= 102, "{:?}", methods);
        let codes = label_values(&text, "mcp_server_operation_duration_seconds_count{", "error_type");
        prop_assert!(codes.iter().all(|c| c.len() <= 20) && codes.len() <= 55, "{:?}", codes);
        let versions = label_values(&text, "mcp_server_operation_duration_seconds_count{", "mcp_protocol_version");
        let date = |v: &str| v.len() == 10 && v.bytes().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == b'-' } else { c.is_ascii_digit() });
        prop_assert!(versions.iter().all(|v| v.is_empty() || v == "_other" || date(v)), "{:?}", versions);
    }

    #[test]
    fn sse_events_do_not_depend_on_chunking(
        parts in prop::collection::vec(prop_oneof![
            Just(b"data:".to_vec()), Just(b"data: ".to_vec()), Just(b"\n".to_vec()), Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()), Just(b":".to_vec()), Just(b"id: 1".to_vec()), Just(b"event: message".to_vec()),
            prop::collection::vec(any::<u8>(), 0..8),
        ], 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let whole: Vec<u8> = parts.concat();
        let want = sse(&[&whole]);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(whole.len() + 1)).collect();
        at.sort();
        let mut chunks = Vec::new();
        let mut from = 0;
        for a in at {
            chunks.push(&whole[from..a]);
            from = a;
        }
        chunks.push(&whole[from..]);
        prop_assert_eq!(sse(&chunks), want);
    }
}
