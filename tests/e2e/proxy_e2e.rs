//! `toolwatch proxy` in front of a stdio MCP server (`toolwatch mcp --data-dir`, a real rmcp
//! server): the agent's session is byte-for-byte the same as a direct one, the calls show up in
//! toolwatch per tool and target, and a session outlives the toolwatch it reports to.


use crate::common::{free_port, Server};
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
                return (std::mem::take(&mut self.transcript), st.code());
            }
            assert!(began.elapsed() < Duration::from_secs(20), "session did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A session a failing test leaves behind is stopped by its PID (never by name) and reaped.
impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn query(addr: &str, q: &str) -> Vec<Value> {
    eventually(addr, &[], q, |_| true)
}

fn calls(addr: &str, status: &str) -> f64 {
    value_of(&query(addr, &format!("sum(mcp_tool_calls_total{{target=\"demo\",status=\"{status}\"}})")))
}

/// `tool_health`'s entry (from `mcp_tool_calls_total`) for one tool of one proxied target, asked
/// through toolwatch's own `/mcp`.
async fn tool_health_of(addr: &str, tool: &str, target: &str) -> Value {
    use rmcp::{ClientLifecycleMode, ClientServiceExt};
    let t = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp"));
    let c = ().serve_with_lifecycle(t, ClientLifecycleMode::Initialize).await.unwrap();
    let args = json!({"window": "5m"}).as_object().unwrap().clone();
    let r =
        c.peer().call_tool(rmcp::model::CallToolRequestParams::new("tool_health").with_arguments(args)).await.unwrap();
    let health = r.structured_content.unwrap();
    health["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == tool && t["labels"]["target"] == target && t["source"] == "mcp_tool_calls_total")
        .cloned()
        .unwrap_or_else(|| panic!("{health}"))
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
    let q = rt.block_on(tool_health_of(&tw.addr, "query", "demo"));
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

// ---- Streamable HTTP: `proxies:` on the main listener ----

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use std::sync::{Arc, Mutex};

/// What the stand-in upstream received: method, headers, body.
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Vec<u8>)>>>;

const CHUNK_A: &str = "id: 1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\r\n\r\nid: 2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":";
const CHUNK_B: &str = "5,\"result\":{\"content\":[],\"isError\":true}}\r\n\r\n";
const CRASH_A: &str = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"working\"}}\n\n";

/// An MCP server stand-in whose every byte is known: answers by tool name (`json`, `stream`
/// — held back until the test opens the gate —, `crash`), 202 for notifications, 400 for
/// garbage, an SSE stream for GET, 204 for DELETE.
async fn upstream(seen: Seen, gate: Arc<tokio::sync::Notify>) -> String {
    use axum::extract::Request;
    use axum::response::Response;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::any(move |req: Request| {
            let (seen, gate) = (seen.clone(), gate.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
                seen.lock().unwrap().push((parts.method.to_string(), parts.headers.clone(), body.clone()));
                let sse = |chunks: Vec<Result<Bytes, std::io::Error>>, gate: Option<Arc<tokio::sync::Notify>>| {
                    let stream = futures_util::stream::unfold((chunks.into_iter(), gate, 0), |(mut it, gate, i)| async move {
                        if i == 1 {
                            match &gate {
                                Some(g) => g.notified().await,
                                // Long enough for the first chunk to be on its way.
                                None => tokio::time::sleep(Duration::from_millis(300)).await,
                            }
                        }
                        let next = it.next()?;
                        Some((next, (it, gate, i + 1)))
                    });
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .header("mcp-session-id", "sess-1")
                        .body(Body::from_stream(stream))
                        .unwrap()
                };
                if parts.method == "GET" {
                    let pending = futures_util::stream::unfold(0, |i| async move {
                        if i == 0 {
                            Some((Ok::<_, std::io::Error>(Bytes::from_static(CRASH_A.as_bytes())), 1))
                        } else {
                            std::future::pending().await
                        }
                    });
                    return Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(pending))
                        .unwrap();
                }
                if parts.method == "DELETE" {
                    return Response::builder().status(204).body(Body::empty()).unwrap();
                }
                let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
                    return Response::builder().status(400).header("content-type", "text/plain").body(Body::from("bad")).unwrap();
                };
                if msg.get("id").is_none() {
                    return Response::builder().status(202).body(Body::empty()).unwrap();
                }
                let id = msg["id"].clone();
                match msg["params"]["name"].as_str().unwrap_or("") {
                    "stream" => sse(vec![Ok(Bytes::from(CHUNK_A)), Ok(Bytes::from(CHUNK_B))], Some(gate)),
                    "crash" => sse(vec![Ok(Bytes::from(CRASH_A)), Err(std::io::Error::other("upstream crashed"))], None),
                    _ => Response::builder()
                        .header("content-type", "application/json")
                        .header("x-upstream", "yes")
                        .body(Body::from(json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "hi"}]}}).to_string()))
                        .unwrap(),
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn call_body(id: i64, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"secret": "s3"}}})
        .to_string()
}

/// Polls an instant query until `want` holds for its result (telemetry lands every second).
fn eventually(addr: &str, auth: &[(&str, &str)], q: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let began = Instant::now();
    loop {
        let (code, body) =
            crate::common::http(addr, "GET", &format!("/api/v1/query?query={}", crate::common::urlencode(q)), auth, &[]).unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let r =
            serde_json::from_slice::<Value>(&body).unwrap()["data"]["result"].as_array().cloned().unwrap_or_default();
        if want(&r) || began.elapsed() > Duration::from_secs(15) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn value_of(r: &[Value]) -> f64 {
    r.first().and_then(|x| x["value"][1].as_str()?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_relays_exactly_and_streams() {
    let seen: Seen = Arc::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let up = upstream(seen.clone(), gate.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(
        &cfg,
        format!(
            "self_monitoring: {{interval: 1s}}\nmcp: {{max_request_body_bytes: 65536}}\n\
             auth: {{tokens: [{{name: agent, token: tw-secret, scopes: [read, proxy]}}]}}\n\
             proxies:\n  - {{target: raw, upstream: \"http://{up}/mcp\", bearer_token: up-secret, headers: {{X-Api-Key: k1}}}}\n"
        ),
    )
    .unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    let url = format!("http://{}/proxy/raw/mcp", tw.addr);
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(&url)
            .bearer_auth("tw-secret")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", "sess-1")
            .header("mcp-protocol-version", "2025-11-25")
            .header("accept-encoding", "gzip")
            .header("x-custom", "v")
            .body(body)
    };

    // A JSON answer: body and end-to-end headers pass both ways unchanged.
    let body = call_body(4, "json");
    let r = post(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "yes");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"id":4,"jsonrpc":"2.0","result":{"content":[{"text":"hi","type":"text"}]}}"#
    );
    {
        let s = seen.lock().unwrap();
        let (method, h, b) = s.last().unwrap();
        assert_eq!((method.as_str(), b.as_slice()), ("POST", body.as_bytes()), "request body relayed as is");
        assert_eq!(h["mcp-session-id"], "sess-1");
        assert_eq!(h["mcp-protocol-version"], "2025-11-25");
        assert_eq!(h["x-custom"], "v");
        assert_eq!(h["x-api-key"], "k1");
        assert_eq!(h["authorization"], "Bearer up-secret", "toolwatch's own token is not passed on");
        assert_eq!(h["host"], up.as_str());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "the upstream learns who the client was");
        assert!(!h.contains_key("accept-encoding"));
    }

    // An SSE answer streams: the first chunk reaches the client while the upstream still holds
    // the second; the whole is byte for byte what the upstream sent.
    let mut r = post(call_body(5, "stream")).send().await.unwrap();
    assert_eq!(r.headers()["mcp-session-id"], "sess-1");
    let mut got = Vec::new();
    while got.len() < CHUNK_A.len() {
        let c = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("the first chunk arrives before the upstream finishes: the proxy must not buffer")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&c);
    }
    assert_eq!(String::from_utf8_lossy(&got), CHUNK_A);
    gate.notify_one();
    while let Some(c) = r.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(String::from_utf8_lossy(&got), format!("{CHUNK_A}{CHUNK_B}"));

    // The client gives up mid-answer: the call is recorded as cancelled.
    let mut r = post(call_body(11, "stream")).send().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), r.chunk()).await;
    drop(r);

    // The upstream breaks off mid-answer: the client still gets a JSON-RPC error for its request.
    let r = post(call_body(6, "crash")).send().await.unwrap();
    let mut got = Vec::new();
    let mut r = r;
    while let Ok(Some(c)) = r.chunk().await {
        got.extend_from_slice(&c);
    }
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(got.starts_with(CRASH_A), "{got}");
    let err: Value =
        serde_json::from_str(got.lines().find(|l| l.contains("\"id\":6")).unwrap().trim_start_matches("data: "))
            .unwrap();
    assert_eq!(err["error"]["code"], -32000, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("raw"), "{err}");

    // Notifications, garbage, GET streams (with Last-Event-ID) and DELETE pass through.
    let r =
        post(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}).to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    let r = post("not json".into()).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (400, "bad".to_string()));
    let mut r = client
        .get(&url)
        .bearer_auth("tw-secret")
        .header("accept", "text/event-stream")
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.chunk().await.unwrap().unwrap(), CRASH_A.as_bytes());
    drop(r);
    let r = client.delete(&url).bearer_auth("tw-secret").header("mcp-session-id", "sess-1").send().await.unwrap();
    assert_eq!(r.status(), 204);
    {
        let s = seen.lock().unwrap();
        let get = s.iter().find(|(m, _, _)| m == "GET").unwrap();
        assert_eq!(get.1["last-event-id"], "3");
        assert!(s.iter().any(|(m, h, _)| m == "DELETE" && h["mcp-session-id"] == "sess-1"));
        assert!(s.iter().any(|(_, _, b)| b == b"not json"));
    }

    // toolwatch's own guards apply to the proxy: its token, the Host and Origin checks, the body
    // limit.
    let r = client.post(&url).body(call_body(1, "json")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(call_body(1, "json")).header("host", "evil.test").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = post(call_body(1, "json")).header("origin", "http://evil.test").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("mcp.allowed_origins"));
    let r = post(call_body(1, "json")).header("origin", "http://localhost:3000").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post("x".repeat(100_000)).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("mcp.max_request_body_bytes"));

    // Recorded per target: ok, isError, and the broken-off call; the garbage counted; no contents.
    let auth = [("Authorization", "Bearer tw-secret")];
    let calls = |status: &str, want: f64| {
        let q = format!("sum(mcp_tool_calls_total{{target=\"raw\",status=\"{status}\"}})");
        value_of(&eventually(&tw.addr, &auth, &q, |r| value_of(r) == want))
    };
    assert_eq!((calls("ok", 2.0), calls("tool_error", 1.0), calls("error", 2.0)), (2.0, 1.0, 2.0));
    let ops = eventually(
        &tw.addr,
        &auth,
        "mcp_server_operation_duration_seconds_count{job=\"mcp-proxy\",target=\"raw\"}",
        |r| r.len() == 4,
    );
    let ops: Vec<(String, String, String, String)> = ops
        .iter()
        .map(|r| {
            let m = &r["metric"];
            let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
            (s("gen_ai_tool_name"), s("error_type"), s("mcp_protocol_version"), s("network_transport"))
        })
        .collect();
    for want in [("json", ""), ("stream", "tool_error"), ("stream", "cancelled"), ("crash", "-32000")] {
        assert!(
            ops.iter().any(|o| (o.0.as_str(), o.1.as_str()) == want && o.2 == "2025-11-25" && o.3 == "tcp"),
            "{want:?} in {ops:?}"
        );
    }
    let malformed =
        eventually(&tw.addr, &auth, "mcp_proxy_malformed_messages_total{target=\"raw\",direction=\"client\"}", |r| {
            !r.is_empty()
        });
    assert_eq!(value_of(&malformed), 1.0);
    let errors = eventually(&tw.addr, &auth, "mcp_proxy_upstream_errors_total{target=\"raw\"}", |r| !r.is_empty());
    assert_eq!(value_of(&errors), 1.0);
    let all = eventually(&tw.addr, &auth, "{job=\"mcp-proxy\"}", |_| true);
    assert!(!all.is_empty() && all.iter().all(|r| !r.to_string().contains("s3")), "arguments never stored");
}

/// One rmcp client session's script — tools/list, a good call, an isError call, an unknown
/// tool — and its answers (as JSON, errors as their text).
async fn rmcp_script(c: &rmcp::service::RunningService<rmcp::RoleClient, ()>) -> Vec<Value> {
    let call = |name: &'static str, args: Value| {
        let p = c.peer().clone();
        async move {
            let params = rmcp::model::CallToolRequestParams::new(name)
                .with_arguments(args.as_object().cloned().unwrap_or_default());
            match p.call_tool(params).await {
                Ok(r) => serde_json::to_value(r).unwrap(),
                Err(e) => json!({"error": e.to_string()}),
            }
        }
    };
    let tools = serde_json::to_value(c.peer().list_all_tools().await.unwrap()).unwrap();
    let ok = call("query", json!({"query": "1", "time": "1700000000"})).await;
    let tool_error = call("query", json!({"query": "rate((", "time": "1700000000"})).await;
    let rpc_error = call("no_such_tool", json!({})).await;
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(tool_error["isError"], true, "{tool_error}");
    assert!(rpc_error["error"].as_str().unwrap().contains("-32602"), "{rpc_error}");
    vec![tools, ok, tool_error, rpc_error]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_through_the_stdio_proxy_sees_the_same_server() {
    use rmcp::model::ProtocolVersion;
    use rmcp::{ClientLifecycleMode, ClientServiceExt};
    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    let url = format!("http://{}", tw.addr);
    let eras = [
        ClientLifecycleMode::Initialize,
        ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
    ];
    for (era, mode) in eras.into_iter().enumerate() {
        let mut results = Vec::new();
        for proxied in [false, true] {
            let mut cmd = tokio::process::Command::new(BIN);
            if proxied {
                cmd.args(["proxy", "--target", "rs", "--url", &url, "--interval", "1s", "--", BIN]);
            }
            cmd.args(["mcp", "--data-dir", dir.path().join(format!("s{era}{proxied}")).to_str().unwrap()]);
            let (t, _) = rmcp::transport::TokioChildProcess::builder(cmd).stderr(Stdio::null()).spawn().unwrap();
            let c = ().serve_with_lifecycle(t, mode.clone()).await.unwrap();
            results.push(rmcp_script(&c).await);
            let _ = c.cancel().await;
        }
        assert_eq!(results[0], results[1], "{mode:?}");
    }
    // Each proxy sends what it saw as its server exits: both eras' calls, by outcome.
    let calls = |status: &str| {
        let q = format!("sum(mcp_tool_calls_total{{job=\"mcp-proxy\",target=\"rs\",status=\"{status}\"}})");
        value_of(&eventually(&tw.addr, &[], &q, |r| value_of(r) == 2.0))
    };
    assert_eq!((calls("ok"), calls("tool_error"), calls("error")), (2.0, 2.0, 2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_sessions_match_direct_ones_and_feed_tool_health() {
    use rmcp::model::ProtocolVersion;
    use rmcp::{ClientLifecycleMode, ClientServiceExt};
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(
        &cfg,
        format!(
            "self_monitoring: {{interval: 1s}}\nproxies:\n  - {{target: self, upstream: \"http://{addr}/mcp\"}}\n  - {{target: gone, upstream: \"http://127.0.0.1:{}/mcp\"}}\n",
            free_port()
        ),
    )
    .unwrap();
    let tw = Server::spawn_at(&addr, &dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    tw.wait_ready(Duration::from_secs(60));

    // Raw HTTP: the same initialize, directly and through the proxy, gets the same bytes back.
    let client = reqwest::Client::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let mut answers = Vec::new();
    for path in ["/mcp", "/proxy/self/mcp"] {
        let r = client
            .post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init)
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("mcp-session-id"));
        answers.push((r.status(), r.headers()["content-type"].clone(), r.bytes().await.unwrap()));
    }
    assert_eq!(answers[0], answers[1]);

    // rmcp's client in both eras: every answer through the proxy equals the direct one.
    let eras = [
        ClientLifecycleMode::Initialize,
        ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
    ];
    for mode in eras {
        let mut results = Vec::new();
        for path in ["/mcp", "/proxy/self/mcp"] {
            let t = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("http://{addr}{path}"));
            let c = ().serve_with_lifecycle(t, mode.clone()).await.unwrap();
            let answers = rmcp_script(&c).await;
            results.push(answers);
            let _ = c.cancel().await;
        }
        assert_eq!(results[0], results[1], "{mode:?}");
    }

    // Upstream down: 502 with a JSON-RPC error per request (a batch keeps its order).
    let gone = format!("http://{addr}/proxy/gone/mcp");
    let r =
        client.post(&gone).header("content-type", "application/json").body(call_body(7, "query")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!((e["id"].clone(), e["error"]["code"].clone()), (json!(7), json!(-32000)), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("\"gone\""), "{e}");
    let batch = format!("[{},{}]", call_body(8, "a"), call_body(9, "b"));
    let r = client.post(&gone).header("content-type", "application/json").body(batch).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!((e[0]["id"].clone(), e[1]["id"].clone()), (json!(8), json!(9)), "{e}");

    // In the store, per target: two eras × (ok, isError, JSON-RPC error); the down server's calls.
    let calls = |target: &str, status: &str, want: f64| {
        let q = format!("sum(mcp_tool_calls_total{{job=\"mcp-proxy\",target=\"{target}\",status=\"{status}\"}})");
        value_of(&eventually(&addr, &[], &q, |r| value_of(r) == want))
    };
    let got = (calls("self", "ok", 2.0), calls("self", "tool_error", 2.0), calls("self", "error", 2.0));
    assert_eq!(got, (2.0, 2.0, 2.0));
    assert_eq!(calls("gone", "error", 3.0), 3.0);
    // The name of a tool the server does not have never becomes a label value.
    let unknown =
        eventually(&addr, &[], "mcp_tool_calls_total{target=\"self\",tool=~\"no_such_tool|_unknown\"}", |r| {
            !r.is_empty()
        });
    assert_eq!((unknown.len(), unknown[0]["metric"]["tool"].as_str()), (1, Some("_unknown")), "{unknown:?}");
    let versions = eventually(
        &addr,
        &[],
        "count by (mcp_protocol_version) (mcp_server_operation_duration_seconds_count{job=\"mcp-proxy\",target=\"self\",mcp_method_name=\"tools/call\"})",
        |r| r.len() == 2,
    );
    let mut v: Vec<&str> = versions.iter().filter_map(|r| r["metric"]["mcp_protocol_version"].as_str()).collect();
    v.sort();
    assert_eq!(v, ["2025-11-25", "2026-07-28"]);

    // tool_health through toolwatch's own /mcp sees the proxied target: query failed 2 of 4.
    let q = tool_health_of(&addr, "query", "self").await;
    assert!((q["current"]["error_ratio"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{q}");
}
