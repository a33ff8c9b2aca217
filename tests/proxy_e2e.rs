//! `toolwatch proxy` in front of a stdio MCP server (`toolwatch mcp --data-dir`, a real rmcp
//! server): the agent's session is byte-for-byte the same as a direct one, the calls show up in
//! toolwatch per tool and target, and a session outlives the toolwatch it reports to.

mod common;

use common::{free_port, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_toolwatch");

/// The agent's side of the session: requests (answered one by one) and a notification.
fn script() -> Vec<(Value, bool)> {
    let call = |id: i64, name: &str, args: Value| {
        (json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}), true)
    };
    vec![
        (
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
                "capabilities": {}, "clientInfo": {"name": "script", "version": "1"}}}),
            true,
        ),
        (json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), false),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), true),
        call(2, "query", json!({"query": "1", "time": "1700000000"})),
        call(3, "query", json!({"query": "rate((", "time": "1700000000"})),
        call(4, "no_such_tool", json!({})),
        call(5, "query", json!({"query": "2", "time": "1700000000"})),
        (json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}), true),
    ]
}

struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    transcript: Vec<u8>,
}

impl Session {
    fn start(args: &[&str]) -> Session {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Session { child, stdin, stdout, transcript: Vec::new() }
    }

    /// Sends one message; for a request, reads and keeps the answer's exact bytes.
    fn send(&mut self, msg: &Value, answer: bool) -> Option<Value> {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{msg}").unwrap();
        s.flush().unwrap();
        if !answer {
            return None;
        }
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        self.transcript.extend_from_slice(line.as_bytes());
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
    }

    fn finish(mut self) -> (Vec<u8>, Option<i32>) {
        drop(self.stdin.take());
        let began = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (self.transcript, st.code());
            }
            assert!(began.elapsed() < Duration::from_secs(20), "session did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn query(addr: &str, q: &str) -> Vec<Value> {
    let (code, body) =
        common::http(addr, "GET", &format!("/api/v1/query?query={}", common::urlencode(q)), &[], &[]).unwrap();
    assert_eq!(code, 200);
    serde_json::from_slice::<Value>(&body).unwrap()["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn calls(addr: &str, status: &str) -> f64 {
    query(addr, &format!("sum(mcp_tool_calls_total{{target=\"demo\",status=\"{status}\"}})"))
        .first()
        .and_then(|r| r["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn stdio_proxy_relays_bytes_and_records_calls() {
    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    let direct_dir = dir.path().join("direct");
    let proxied_dir = dir.path().join("proxied");

    let mut direct = Session::start(&["mcp", "--data-dir", direct_dir.to_str().unwrap()]);
    let url = format!("http://{}", tw.addr);
    let mut proxied = Session::start(&[
        "proxy",
        "--target",
        "demo",
        "--url",
        &url,
        "--interval",
        "1s",
        "--",
        BIN,
        "mcp",
        "--data-dir",
        proxied_dir.to_str().unwrap(),
    ]);
    for (msg, answer) in script() {
        let a = direct.send(&msg, answer);
        let b = proxied.send(&msg, answer);
        assert_eq!(a, b);
    }
    let (direct_bytes, _) = direct.finish();
    let (proxied_bytes, code) = proxied.finish();
    assert_eq!(code, Some(0), "the proxy exits with the server's status");
    assert_eq!(
        String::from_utf8_lossy(&direct_bytes),
        String::from_utf8_lossy(&proxied_bytes),
        "every byte relayed as is"
    );
    assert_eq!(direct_bytes.iter().filter(|b| **b == b'\n').count(), 7);

    // Three good calls, one isError, one JSON-RPC error — in toolwatch, for this target.
    assert_eq!(
        (calls(&tw.addr, "ok"), calls(&tw.addr, "tool_error"), calls(&tw.addr, "error")),
        (2.0, 1.0, 1.0),
        "{:?}",
        query(&tw.addr, "mcp_tool_calls_total")
    );
    let ops = query(&tw.addr, "sum by (mcp_method_name, error_type, mcp_protocol_version, network_transport) (mcp_server_operation_duration_seconds_count{target=\"demo\"})");
    let has = |m: &str, e: &str| {
        ops.iter().any(|r| r["metric"]["mcp_method_name"] == m && r["metric"]["error_type"].as_str().unwrap_or("") == e)
    };
    assert!(
        has("initialize", "")
            && has("tools/list", "")
            && has("ping", "")
            && has("tools/call", "-32602")
            && has("tools/call", "tool_error"),
        "{ops:?}"
    );
    assert!(ops
        .iter()
        .all(|r| r["metric"]["mcp_protocol_version"] == "2025-11-25" && r["metric"]["network_transport"] == "pipe"));
    assert!(
        query(&tw.addr, "{__name__=~\".+\", target=\"demo\"}").iter().all(|r| !r.to_string().contains("1700000000")),
        "arguments never stored"
    );

    // tool_health over MCP reports the proxied server's tools by target.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let health: Value = rt.block_on(async {
        use rmcp::{ClientLifecycleMode, ClientServiceExt};
        let t = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("http://{}/mcp", tw.addr));
        let c = ().serve_with_lifecycle(t, ClientLifecycleMode::Initialize).await.unwrap();
        let args = json!({"window": "5m"}).as_object().unwrap().clone();
        let r = c
            .peer()
            .call_tool(rmcp::model::CallToolRequestParams::new("tool_health").with_arguments(args))
            .await
            .unwrap();
        r.structured_content.unwrap()
    });
    let q = health["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "query" && t["labels"]["target"] == "demo" && t["source"] == "mcp_tool_calls_total")
        .unwrap_or_else(|| panic!("{health}"));
    assert!((q["current"]["error_ratio"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{q}");
}

#[test]
fn the_session_outlives_toolwatch_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut tw = Server::spawn_at(&addr, &dir.path().join("tw"), &[]);
    tw.wait_ready(Duration::from_secs(30));
    let up = dir.path().join("up");
    let mut s = Session::start(&[
        "proxy",
        "--target",
        "demo",
        "--url",
        &format!("http://{addr}"),
        "--interval",
        "200ms",
        "--max-buffered",
        "2",
        "--",
        BIN,
        "mcp",
        "--data-dir",
        up.to_str().unwrap(),
    ]);
    let msgs = script();
    s.send(&msgs[0].0, true);
    s.send(&msgs[1].0, false);
    tw.signal(libc::SIGTERM);
    assert_eq!(tw.wait_exit(Duration::from_secs(20)), Some(0));
    // toolwatch is gone; the agent's calls still go through.
    for i in 0..5 {
        let r = s.send(&json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {"name": "query", "arguments": {"query": "1"}}}), true).unwrap();
        assert_eq!(r["result"]["isError"], false, "{r}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Back again: the proxy delivers what it kept, with the count of what it had to drop.
    let tw = Server::spawn_at(&addr, &dir.path().join("tw"), &[]);
    tw.wait_ready(Duration::from_secs(30));
    let began = Instant::now();
    loop {
        let dropped = query(&addr, "toolwatch_proxy_telemetry_dropped_samples_total{job=\"mcp-proxy\"}");
        if let Some(v) = dropped.first().and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok()) {
            assert!(v > 0.0);
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "dropped-telemetry counter never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.send(&json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}), true).unwrap();
    assert_eq!(r["id"], 99);
    let (_, code) = s.finish();
    assert_eq!(code, Some(0));
    assert_eq!(calls(&addr, "ok"), 5.0, "the calls made while toolwatch was down are counted once it is back");
}
