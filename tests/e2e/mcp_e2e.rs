//! toolwatch's `/mcp` over real HTTP with rmcp's client in both protocol eras (2025-11-25
//! sessions and stateless 2026-07-28), its own telemetry stored in itself, and the HTTP guard
//! (bearer tokens, Origin, rate and body limits).

use crate::client::{call, eras, ok, text};

use crate::common::{http, remote_write, Server};
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use rmcp::service::{PeerRequestOptions, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::json;
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn connect(addr: &str, mode: ClientLifecycleMode, token: Option<&str>) -> RunningService<RoleClient, ()> {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"));
    if let Some(t) = token {
        cfg = cfg.auth_header(t.to_string());
    }
    ().serve_with_lifecycle(StreamableHttpClientTransport::from_config(cfg), mode).await.expect("MCP client connects")
}

fn write_fixture(addr: &str) {
    let now = now_ms();
    let pts = |per_s: f64| -> Vec<(i64, f64)> {
        (0..=80).map(|i| (now - 20 * 60_000 + i * 15_000, per_s * (i * 15) as f64)).collect()
    };
    let mut series = vec![
        (vec![("__name__", "mcp_tool_calls_total"), ("status", "ok"), ("tool", "search")], pts(3.0)),
        (vec![("__name__", "mcp_tool_calls_total"), ("status", "error"), ("tool", "search")], pts(1.0)),
    ];
    let names: Vec<String> = (0..30).map(|i| format!("{i:02}")).collect();
    for n in &names {
        series.push((vec![("__name__", "wide"), ("w", n.as_str())], pts(1.0)));
    }
    assert_eq!(remote_write(addr, &series).unwrap().0, 204);
    // A day of samples for 48 series: a quantile over 1d windows at 7s steps runs for minutes.
    let day: Vec<(i64, f64)> = (0..5760).map(|i| (now - 86_400_000 + i * 15_000, (i * 7919 % 1000) as f64)).collect();
    let slow: Vec<String> = (0..48).map(|i| format!("s{i}")).collect();
    let series: Vec<(Vec<(&str, &str)>, Vec<(i64, f64)>)> =
        slow.iter().map(|n| (vec![("__name__", "slow"), ("n", n.as_str())], day.clone())).collect();
    assert_eq!(remote_write(addr, &series).unwrap().0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_over_http_in_both_eras() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(
        &cfg,
        "query:\n  max_concurrency: 1\nmcp:\n  tool_timeout: 60s\n  budget: {max_series: 5, max_points: 5000, max_bytes: 65536}\n",
    )
    .unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    write_fixture(&tw.addr);
    for (era, mode) in eras() {
        let c = connect(&tw.addr, mode, None).await;
        let si = c.peer().peer_info().and_then(|i| i.server_info.clone()).expect("server info");
        assert_eq!((si.name.as_str(), si.version.as_str()), ("toolwatch", env!("CARGO_PKG_VERSION")), "{era}");
        let tools = c.peer().list_all_tools().await.unwrap();
        assert_eq!(tools.len(), 11, "{era}");
        assert!(tools.iter().all(|t| t.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true)));

        // Every tool, with arguments an agent would send.
        let q = ok(&call(&c, "query", json!({"query": "sum by (status) (rate(mcp_tool_calls_total[5m]))"})).await);
        assert_eq!(q["result"].as_array().unwrap().len(), 2, "{era}: {q}");
        ok(&call(&c, "query_range", json!({"query": "sum(rate(mcp_tool_calls_total[5m]))", "start": "now-15m"})).await);
        let m = ok(&call(&c, "list_metrics", json!({"filter": "^mcp_", "regex": true})).await);
        assert_eq!(m["metrics"][0]["name"], "mcp_tool_calls_total");
        ok(&call(&c, "label_names", json!({"match": ["wide"]})).await);
        let v = ok(&call(&c, "label_values", json!({"label": "status"})).await);
        assert_eq!(v["values"], json!(["error", "ok"]));
        ok(&call(&c, "series", json!({"match": ["mcp_tool_calls_total"]})).await);
        let h = ok(&call(&c, "tool_health", json!({"tool": "search", "window": "5m"})).await);
        let search = h["tools"].as_array().unwrap().iter().find(|t| t["source"] == "mcp_tool_calls_total").unwrap();
        assert!((search["current"]["error_ratio"].as_f64().unwrap() - 0.25).abs() < 1e-9, "{h}");
        ok(&call(&c, "alerts", json!({"state": "firing"})).await);
        ok(&call(&c, "rules", json!({"type": "alert"})).await);
        ok(&call(&c, "probe_status", json!({})).await);
        ok(&call(&c, "tsdb_status", json!({})).await);

        // Errors: bad PromQL, unknown metric, unknown tool, malformed arguments.
        let r = call(&c, "query", json!({"query": "rate(wide[5m]"})).await;
        assert!(r.is_error == Some(true) && text(&r).contains("Hint:"), "{}", text(&r));
        let r = call(&c, "query", json!({"query": "wides"})).await;
        assert!(text(&r).contains("closest: wide"), "{}", text(&r));
        match c.peer().call_tool(CallToolRequestParams::new("nope")).await {
            Err(rmcp::ServiceError::McpError(e)) => assert_eq!(e.code.0, -32602),
            other => panic!("{era}: unknown tool gave {other:?}"),
        }
        let bad = json!({"query": ["not", "a", "string"]}).as_object().unwrap().clone();
        match c.peer().call_tool(CallToolRequestParams::new("query").with_arguments(bad)).await {
            Err(rmcp::ServiceError::McpError(e)) => assert_eq!(e.code.0, -32602),
            other => panic!("{era}: malformed arguments gave {other:?}"),
        }

        // Budget: 30 series, 5 shown, the rest summarized.
        let w = ok(&call(&c, "query", json!({"query": "wide"})).await);
        assert_eq!((w["truncated"].as_bool(), w["result"].as_array().unwrap().len()), (Some(true), 5), "{era}");
        assert_eq!(w["summaries"].as_array().unwrap().len(), 25);
        assert!(w["hint"].as_str().unwrap().contains("max_series=5"));

        // Cancellation stops the evaluation: with one query slot, the next query runs at once.
        let before = tw.metric_with("toolwatch_queries_total", "result=\"canceled\"").unwrap_or(0.0);
        let args = json!({"query": "quantile_over_time(0.5, slow[1d])", "start": "now-20h", "step": "7s"});
        let req = ClientRequest::CallToolRequest(CallToolRequest::new(
            CallToolRequestParams::new("query_range").with_arguments(args.as_object().unwrap().clone()),
        ));
        let handle = c.peer().send_cancellable_request(req, PeerRequestOptions::no_options()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let began = Instant::now();
        handle.cancel(Some("enough".into())).await.unwrap();
        while tw.metric_with("toolwatch_queries_total", "result=\"canceled\"").unwrap_or(0.0) < before + 1.0 {
            assert!(began.elapsed() < Duration::from_secs(10), "{era}: query not canceled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok(&call(&c, "query", json!({"query": "1"})).await);
        assert!(began.elapsed() < Duration::from_secs(10), "{era}: slot held {:?}", began.elapsed());
        c.cancel().await.unwrap();
    }
}

/// toolwatch stores its own MCP telemetry (every second here) and `tool_health` reports its
/// own tools from it; alert state and rule files are visible through tools, resources and the
/// investigate_alert prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_telemetry_and_alerts_through_mcp() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "self_monitoring:\n  interval: 1s\nrule_files: [always.yml]\n").unwrap();
    std::fs::write(
        dir.path().join("always.yml"),
        "groups:\n  - name: demo\n    interval: 1s\n    rules:\n      - alert: AlwaysOn\n        expr: vector(1)\n        labels: {severity: page}\n        annotations: {summary: always on}\n",
    )
    .unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    let c = connect(&tw.addr, ClientLifecycleMode::Initialize, None).await;
    for q in ["1", "up", "2", "rate(("] {
        call(&c, "query", json!({"query": q})).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let h = ok(&call(&c, "tool_health", json!({"tool": "query", "window": "1m"})).await);
    let own = h["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == "opentelemetry" && t["labels"]["job"] == "toolwatch")
        .unwrap_or_else(|| panic!("toolwatch's own query tool in {h}"));
    let cur = &own["current"];
    // Two of the four calls fail ("up" names no stored metric, "rate((" does not parse). Rates
    // are extrapolated from 1s scrapes, hence the tolerance.
    let ratio = cur["error_ratio"].as_f64().unwrap();
    assert!((ratio - 0.5).abs() < 0.03, "error ratio {ratio}: {h}");
    let calls = cur["calls"].as_f64().unwrap();
    assert!((3.5..=5.0).contains(&calls), "calls {calls}: {h}");
    assert!(cur["p50_seconds"].as_f64().is_some(), "{h}");
    // The same series are in the store for any query.
    let q = ok(&call(
        &c,
        "query",
        json!({"query": "sum by (status) (toolwatch_mcp_tool_calls_total{job=\"toolwatch\", tool=\"query\"})"}),
    )
    .await);
    assert_eq!(q["result"].as_array().unwrap().len(), 2, "{q}");
    // Its own metrics are described like remote-written ones.
    let m = ok(&call(&c, "list_metrics", json!({"filter": "toolwatch_mcp_tool_calls_total"})).await);
    assert_eq!(m["metrics"][0]["type"], "counter", "{m}");

    let a = ok(&call(&c, "alerts", json!({"state": "firing"})).await);
    let alert = &a["alerts"][0];
    assert_eq!(
        (alert["labels"]["alertname"].as_str(), alert["labels"]["severity"].as_str()),
        (Some("AlwaysOn"), Some("page")),
        "{a}"
    );
    assert_eq!(alert["annotations"]["summary"], "always on");
    assert!(alert["activeAt"].as_str().is_some() && alert["value"].as_str().is_some(), "{a}");
    let r = ok(&call(&c, "rules", json!({})).await);
    assert_eq!(r["groups"][0]["rules"][0]["health"], "ok", "{r}");
    let res = c.peer().list_all_resources().await.unwrap();
    assert!(res.iter().any(|r| r.uri == "toolwatch://rules/always.yml"), "{res:?}");
    let file = c
        .peer()
        .read_resource(rmcp::model::ReadResourceRequestParams::new("toolwatch://rules/always.yml"))
        .await
        .unwrap();
    assert!(serde_json::to_string(&file.contents).unwrap().contains("AlwaysOn"));
    let mut p = rmcp::model::GetPromptRequestParams::new("investigate_alert");
    p.arguments = Some(json!({"alertname": "AlwaysOn"}).as_object().unwrap().clone());
    let got = serde_json::to_string(&c.peer().get_prompt(p).await.unwrap().messages).unwrap();
    assert!(got.contains("vector(1)") && got.contains("firing"), "{got}");
}

fn header_of(resp: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(resp).to_string();
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
}

/// A raw request returning the whole response head and body.
fn raw(addr: &str, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_origins_and_limits_guard_the_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(dir.path().join("admin.token"), "admin-secret\n").unwrap();
    std::fs::write(
        &cfg,
        "auth:\n  tokens:\n    - {name: grafana, token: read-secret, scopes: [read]}\n    - {name: prom, token: write-secret, scopes: [write]}\n    - {name: ops, token_file: admin.token, scopes: [admin, read]}\nmcp:\n  max_request_body_bytes: 2000\n",
    )
    .unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    let a = tw.addr.clone();
    let q = "/api/v1/query?query=1";

    // Health and readiness stay open; everything else needs a token.
    assert_eq!(http(&a, "GET", "/-/healthy", &[], &[]).unwrap().0, 200);
    let (code, resp) = raw(&a, &format!("GET {q} HTTP/1.1\r\nHost: {a}\r\n"), "");
    assert_eq!(code, 401, "{resp}");
    assert_eq!(header_of(resp.as_bytes(), "www-authenticate").as_deref(), Some(r#"Bearer realm="toolwatch""#));
    let (code, resp) = raw(&a, &format!("GET {q} HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer wrong\r\n"), "");
    assert_eq!(code, 401);
    assert!(header_of(resp.as_bytes(), "www-authenticate").unwrap().contains("invalid_token"));
    assert!(!resp.contains("read-secret") && !tw.log_text().contains("read-secret"), "secrets never echoed");

    // Scopes: read queries, write ingests, admin flushes.
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(http(&a, "GET", q, &[("Authorization", &bearer("read-secret"))], &[]).unwrap().0, 200);
    let body = crate::common::remote_write_body(&[(vec![("__name__", "x")], vec![(now_ms(), 1.0)])]);
    let rw = |t: &str| {
        http(
            &a,
            "POST",
            "/api/v1/write",
            &[
                ("Authorization", &bearer(t)),
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/x-protobuf"),
            ],
            &body,
        )
        .unwrap()
        .0
    };
    let (code, resp) =
        raw(&a, &format!("POST /api/v1/write HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer read-secret\r\n"), "");
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains("insufficient_scope") && resp.contains("\\\"write\\\""), "{resp}");
    assert_eq!(rw("write-secret"), 204);
    assert_eq!(
        http(&a, "POST", "/api/v1/admin/flush", &[("Authorization", &bearer("write-secret"))], &[]).unwrap().0,
        403
    );
    assert_eq!(
        http(&a, "POST", "/api/v1/admin/flush", &[("Authorization", &bearer("admin-secret"))], &[]).unwrap().0,
        200
    );

    // /mcp: no token → 401; a read token works with rmcp's client; a foreign Origin → 403.
    let mcp_head = |extra: &str| {
        format!("POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}")
    };
    assert_eq!(raw(&a, &mcp_head(""), INIT).0, 401);
    let c = connect(&a, ClientLifecycleMode::Initialize, Some("read-secret")).await;
    ok(&call(&c, "query", json!({"query": "1"})).await);
    c.cancel().await.unwrap();
    let (code, resp) = raw(&a, &mcp_head("Authorization: Bearer read-secret\r\nOrigin: http://evil.example\r\n"), INIT);
    assert_eq!(code, 403, "{resp}");
    let port = a.rsplit(':').next().unwrap();
    let (code, resp) =
        raw(&a, &mcp_head(&format!("Authorization: Bearer read-secret\r\nOrigin: http://localhost:{port}\r\n")), INIT);
    assert_eq!(code, 200, "{resp}");
    let (code, _) = raw(&a, &format!("POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: Bearer read-secret\r\n"), INIT);
    assert_eq!(code, 403, "a foreign Host is refused (DNS rebinding)");
    // Body limit on /mcp.
    let big = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#, "x".repeat(5000));
    let (code, resp) = raw(&a, &mcp_head("Authorization: Bearer read-secret\r\n"), &big);
    assert_eq!(code, 413, "{resp}");
    assert!(resp.contains("mcp.max_request_body_bytes (2000 bytes)"), "{resp}");
}

#[test]
fn rate_limit_names_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "http:\n  rate_limit: {requests_per_second: 0.5, burst: 3}\n").unwrap();
    let tw = Server::spawn(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut codes = Vec::new();
    let mut last = String::new();
    for _ in 0..5 {
        let (code, resp) = raw(&tw.addr, &format!("GET /api/v1/labels HTTP/1.1\r\nHost: {}\r\n", tw.addr), "");
        codes.push(code);
        last = resp;
    }
    assert_eq!(&codes[3..], [429, 429], "{codes:?}");
    assert!(last.contains("http.rate_limit.requests_per_second=0.5"), "{last}");
    assert!(header_of(last.as_bytes(), "retry-after").is_some(), "{last}");
}
