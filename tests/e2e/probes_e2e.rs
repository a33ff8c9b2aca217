//! MCP probe results end to end: pushed to `/api/v1/probes`, and produced by toolwatch's own
//! prober against real servers on 127.0.0.1 — toolwatch's own `/mcp`, a legacy-only rmcp server
//! whose tool list changes mid-test, one answering 401, one that hangs, and a stopped one — with
//! the shipped "probe down" rule firing.


use crate::common::{free_port, http, Server};
use rmcp::model::{ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn query(addr: &str, q: &str) -> Vec<Value> {
    let path = format!("/api/v1/query?query={}", crate::common::urlencode(q));
    let (code, body) = http(addr, "GET", &path, &[], &[]).unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(addr: &str, q: &str) -> Option<f64> {
    query(addr, q).first().and_then(|r| r["value"][1].as_str()?.parse().ok())
}

fn post(addr: &str, body: &Value) -> (u16, Value) {
    let (code, b) =
        http(addr, "POST", "/api/v1/probes", &[("Content-Type", "application/json")], body.to_string().as_bytes())
            .unwrap();
    (code, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[test]
fn pushed_results_become_series() {
    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    let a = &tw.addr;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let example = json!({"target":"search","url":"https://mcp.example.com/mcp","timestamp": now - 30.0,
        "success":true,"duration_seconds":0.412,"phases":{"connect":0.05,"initialize":0.11,"tools_list":0.2},
        "protocol_version":"2025-11-25","server":{"name":"search","version":"1.2.0"},"tools":12,
        "schema_hash":"sha256:aa","error":null,"http_status":200});
    assert_eq!(post(a, &example).0, 204);
    assert_eq!(value(a, "mcp_probe_success{target=\"search\"}"), Some(1.0));
    assert_eq!(value(a, "mcp_probe_duration_seconds{target=\"search\",phase=\"total\"}"), Some(0.412));
    assert_eq!(value(a, "mcp_probe_duration_seconds{target=\"search\",phase=\"tools_list\"}"), Some(0.2));
    assert_eq!(value(a, "mcp_probe_tools{target=\"search\"}"), Some(12.0));
    assert_eq!(value(a, "mcp_probe_http_status{target=\"search\"}"), Some(200.0));
    let info = query(a, "mcp_probe_info");
    assert_eq!(info[0]["metric"]["server_version"], "1.2.0");
    assert_eq!(info[0]["metric"]["protocol_version"], "2025-11-25");
    let states = query(a, "mcp_probe_state{target=\"search\"}");
    assert_eq!(states.len(), 5);
    let up: Vec<&str> =
        states.iter().filter(|s| s["value"][1] == "1").map(|s| s["metric"]["state"].as_str().unwrap()).collect();
    assert_eq!(up, ["up"]);

    // An array: the valid items are written, the invalid one not at all, and it is named.
    let batch = json!([
        {"target": "files", "success": false, "http_status": 401, "timestamp": "2026-11-30T00:00:00Z"},
        {"target": "broken", "success": true, "phases": {"dns": 0.1}},
        {"target": "db", "success": false, "error": {"code": "timeout", "message": "no answer in 10s"}},
    ]);
    let (code, body) = post(a, &batch);
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["rejected"][0]["field"], "[1].phases.dns", "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown phase"), "{body}");
    assert_eq!(body["accepted"], 2);
    assert!(query(a, "mcp_probe_success{target=\"broken\"}").is_empty(), "nothing of the invalid item");
    let state = |t: &str| -> String {
        query(a, &format!("last_over_time(mcp_probe_state{{target=\"{t}\"}}[1y]) == 1"))[0]["metric"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("files"), "auth_required");
    assert_eq!(state("db"), "timeout");

    // Schema drift: a changed hash counts once per change, an unchanged one not at all.
    // (Results of one target need distinct timestamps: a second value at the same millisecond
    // is a duplicate sample.)
    for h in ["sha256:aa", "sha256:bb", "sha256:bb", "sha256:cc"] {
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(post(a, &json!({"target": "search", "success": true, "schema_hash": h})).0, 204);
    }
    assert_eq!(value(a, "mcp_probe_schema_changes_total{target=\"search\"}"), Some(2.0));

    let (code, body) = {
        let (c, b) = http(a, "POST", "/api/v1/probes", &[("Content-Type", "application/json")], b"{not json").unwrap();
        (c, String::from_utf8_lossy(&b).to_string())
    };
    assert_eq!(code, 400);
    assert!(body.contains("body: not JSON"), "{body}");
    assert_eq!(post(a, &json!({"success": true})).1["rejected"][0]["field"], "target");
}

/// A legacy-only MCP server (2025-11-25, no `server/discover`) whose tool list grows when told.
#[derive(Clone)]
struct Changing(Arc<AtomicBool>);

impl ServerHandler for Changing {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(rmcp::model::Implementation::new("changing", "0.3.0"))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&[ProtocolVersion::V_2025_11_25])
    }

    async fn list_tools(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools: Vec<Tool> =
            vec![serde_json::from_value(json!({"name": "search", "inputSchema": {"type": "object"}})).unwrap()];
        if self.0.load(Ordering::SeqCst) {
            tools.push(serde_json::from_value(json!({"name": "fetch", "inputSchema": {"type": "object"}})).unwrap());
        }
        Ok(ListToolsResult::with_all_items(tools))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prober_reports_states_drift_and_the_down_rule_fires() {
    // The servers the prober visits.
    let grow = Arc::new(AtomicBool::new(false));
    let g2 = grow.clone();
    let svc: StreamableHttpService<Changing, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(Changing(g2.clone())),
        Default::default(),
        StreamableHttpServerConfig::default().with_sse_keep_alive(None),
    );
    let changing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let changing_addr = changing.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(changing, axum::Router::new().nest_service("/mcp", svc)).await });

    let auth = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_addr = auth.local_addr().unwrap();
    let unauthorized = axum::Router::new().route(
        "/mcp",
        axum::routing::any(|| async {
            (axum::http::StatusCode::UNAUTHORIZED, [("WWW-Authenticate", r#"Bearer realm="mcp""#)], "login first")
        }),
    );
    tokio::spawn(async move { axum::serve(auth, unauthorized).await });

    // Answers, but not with MCP.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    let not_mcp = axum::Router::new().route(
        "/mcp",
        axum::routing::any(|| async { ([("Content-Type", "application/json")], "this is not JSON-RPC") }),
    );
    tokio::spawn(async move { axum::serve(garbage, not_mcp).await });

    // An MCP server behind a gate that wants a bearer token and a tenant header.
    let g3 = grow.clone();
    let gated_svc: StreamableHttpService<Changing, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(Changing(g3.clone())),
        Default::default(),
        StreamableHttpServerConfig::default().with_sse_keep_alive(None),
    );
    let gate = |req: axum::extract::Request, next: axum::middleware::Next| async move {
        let h = req.headers();
        let ok =
            h.get("authorization").is_some_and(|v| v == "Bearer s3cret") && h.get("x-tenant").is_some_and(|v| v == "a");
        if ok {
            next.run(req).await
        } else {
            use axum::response::IntoResponse;
            (axum::http::StatusCode::UNAUTHORIZED, [("WWW-Authenticate", "Bearer")], "").into_response()
        }
    };
    let gated = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gated_addr = gated.local_addr().unwrap();
    let gated_app = axum::Router::new().nest_service("/mcp", gated_svc).layer(axum::middleware::from_fn(gate));
    tokio::spawn(async move { axum::serve(gated, gated_app).await });

    // Accepts and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let stopped_port = free_port();

    let dir = tempfile::tempdir().unwrap();
    let tw_addr = format!("127.0.0.1:{}", free_port());
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rules/mcp.rules.yml");
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files: [{rules}]\nprobes:\n\
             \x20 - {{target: self, url: 'http://{tw_addr}/mcp', interval: 1s, timeout: 2s, call: {{tool: query, arguments: {{query: '1'}}}}}}\n\
             \x20 - {{target: changing, url: 'http://{changing_addr}/mcp', interval: 500ms, timeout: 2s}}\n\
             \x20 - {{target: auth, url: 'http://{auth_addr}/mcp', interval: 1s}}\n\
             \x20 - {{target: hang, url: 'http://{hang_addr}/mcp', interval: 1s, timeout: 700ms}}\n\
             \x20 - {{target: stopped, url: 'http://127.0.0.1:{stopped_port}/mcp', interval: 1s}}\n\
             \x20 - {{target: garbage, url: 'http://{garbage_addr}/mcp', interval: 1s}}\n\
             \x20 - {{target: gated, url: 'http://{gated_addr}/mcp', interval: 1s, bearer_token: s3cret, headers: {{X-Tenant: a}}}}\n"
        ),
    )
    .unwrap();
    let tw = Server::spawn_at(&tw_addr, &dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    tw.wait_ready(Duration::from_secs(30));
    let a = tw.addr.clone();
    let state_of = |t: &str| -> Option<String> {
        query(&a, &format!("mcp_probe_state{{target=\"{t}\"}} == 1"))
            .first()
            .map(|r| r["metric"]["state"].as_str().unwrap().to_string())
    };
    let began = Instant::now();
    while ["self", "changing", "auth", "hang", "stopped", "garbage", "gated"].iter().any(|t| state_of(t).is_none()) {
        assert!(began.elapsed() < Duration::from_secs(15), "not every target probed; log:\n{}", tw.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state_of("self").as_deref(), Some("up"));
    assert_eq!(
        state_of("changing").as_deref(),
        Some("up"),
        "{}",
        tw.log_text().lines().filter(|l| l.contains("changing")).take(3).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(state_of("auth").as_deref(), Some("auth_required"));
    assert_eq!(state_of("hang").as_deref(), Some("timeout"));
    assert_eq!(state_of("stopped").as_deref(), Some("down"));
    assert_eq!(state_of("garbage").as_deref(), Some("protocol_error"));
    assert_eq!(state_of("gated").as_deref(), Some("up"), "the configured token and header are sent");
    assert_eq!(value(&a, "mcp_probe_http_status{target=\"auth\"}"), Some(401.0));
    let hang_total = value(&a, "mcp_probe_duration_seconds{target=\"hang\",phase=\"total\"}").unwrap();
    assert!((0.7..1.5).contains(&hang_total), "timed out after {hang_total}s with a 700ms timeout");

    // toolwatch probing itself: the modern handshake, its eleven tools, the call timed.
    assert_eq!(value(&a, "mcp_probe_tools{target=\"self\"}"), Some(11.0));
    let info = query(&a, "mcp_probe_info{target=\"self\"}");
    assert_eq!(
        (info[0]["metric"]["protocol_version"].as_str(), info[0]["metric"]["server_name"].as_str()),
        (Some("2026-07-28"), Some("toolwatch"))
    );
    for phase in ["connect", "discover", "tools_list", "tool_call", "total"] {
        assert!(
            value(&a, &format!("mcp_probe_duration_seconds{{target=\"self\",phase=\"{phase}\"}}")).is_some(),
            "phase {phase}"
        );
    }
    // The legacy-only server: discover falls back to initialize.
    let info = query(&a, "mcp_probe_info{target=\"changing\"}");
    assert_eq!(info[0]["metric"]["protocol_version"], "2025-11-25");
    assert!(value(&a, "mcp_probe_duration_seconds{target=\"changing\",phase=\"initialize\"}").is_some());
    assert_eq!(value(&a, "mcp_probe_tools{target=\"changing\"}"), Some(1.0));

    // The tool list changes once: drift is counted once, however many probes follow.
    assert_eq!(value(&a, "mcp_probe_schema_changes_total{target=\"changing\"}"), Some(0.0));
    grow.store(true, Ordering::SeqCst);
    let began = Instant::now();
    while value(&a, "mcp_probe_tools{target=\"changing\"}") != Some(2.0) {
        assert!(began.elapsed() < Duration::from_secs(10), "the new tool list was never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(value(&a, "mcp_probe_schema_changes_total{target=\"changing\"}"), Some(1.0));
    assert!(tw.log_text().contains("MCP schema drift"), "drift is logged");

    // The shipped rule: down for three consecutive probes fires for the stopped server only.
    let began = Instant::now();
    let firing = || -> Vec<String> {
        let (_, body) = http(&a, "GET", "/api/v1/alerts", &[], &[]).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["labels"]["alertname"] == "MCPServerDown" && x["state"] == "firing")
            .map(|x| x["labels"]["target"].as_str().unwrap().to_string())
            .collect()
    };
    loop {
        let mut f = firing();
        f.sort();
        if f.contains(&"stopped".to_string()) {
            assert!(!f.contains(&"self".to_string()) && !f.contains(&"changing".to_string()), "{f:?}");
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "MCPServerDown never fired: {f:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And the drift rule saw the change.
    let drift = query(&a, "ALERTS{alertname=\"MCPSchemaDrift\", target=\"changing\"}");
    assert!(!drift.is_empty(), "MCPSchemaDrift for the changed server");

    // Agents see the same through the MCP probe_status tool, failure reasons included.
    use rmcp::{ClientLifecycleMode, ClientServiceExt};
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("http://{a}/mcp"));
    let c = ().serve_with_lifecycle(transport, ClientLifecycleMode::Initialize).await.unwrap();
    let r = c.peer().call_tool(rmcp::model::CallToolRequestParams::new("probe_status")).await.unwrap();
    let s = r.structured_content.expect("structured probe status");
    let by: std::collections::HashMap<String, Value> = s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["target"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    assert_eq!(by.len(), 7, "{s}");
    assert_eq!(by["garbage"]["error"]["code"], "protocol_error");
    assert!(!by["garbage"]["error"]["message"].as_str().unwrap().is_empty(), "the reason is kept: {s}");
    assert_eq!((by["self"]["state"].as_str(), by["self"]["tools"].as_f64()), (Some("up"), Some(11.0)), "{s}");
    assert_eq!(by["changing"]["info"]["protocol_version"], "2025-11-25");
    assert_eq!(by["changing"]["schema_changes"], 1.0);
    assert_eq!(by["stopped"]["state"], "down");
    assert_eq!(by["stopped"]["error"]["code"], "connect");
    assert!(by["stopped"]["error"]["message"].as_str().unwrap().contains("refused"), "{s}");
    assert_eq!(by["auth"]["state"], "auth_required");
    assert_eq!(by["hang"]["error"]["code"], "timeout");
    c.cancel().await.unwrap();
}

/// A private CA, a certificate it signed for localhost and 127.0.0.1, and a TLS terminator
/// using it in front of `upstream`; returns the CA's path and the terminator's address.
fn tls_in_front_of(dir: &std::path::Path, upstream: &str) -> (std::path::PathBuf, String, crate::common::KillOnDrop) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (scripts/test-deps.sh installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let (ca, ca_key, cert, key) = (p("ca.pem"), p("ca.key"), p("cert.pem"), p("key.pem"));
    let key_opts = ["-newkey", "rsa:2048", "-nodes", "-days", "2"];
    openssl(
        &[&["req", "-x509"][..], &key_opts, &["-subj", "/CN=toolwatch test CA", "-keyout", &ca_key, "-out", &ca]]
            .concat(),
    );
    openssl(
        &[
            &["req", "-x509", "-CA", &ca, "-CAkey", &ca_key][..],
            &key_opts,
            &["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            &["-addext", "basicConstraints=critical,CA:FALSE", "-keyout", &key, "-out", &cert],
        ]
        .concat(),
    );
    let port = free_port();
    let upstream_port = upstream.rsplit(':').next().unwrap();
    let mut child = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls_forward.py"))
        .args([&cert, &key, &port.to_string(), upstream_port])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (ca.into(), format!("127.0.0.1:{port}"), crate::common::KillOnDrop(child))
}

#[test]
fn https_servers_probed_and_proxied_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tw_addr = format!("127.0.0.1:{}", free_port());
    let (ca, tls_addr, _terminator) = tls_in_front_of(dir.path(), &tw_addr);
    let tls_port = tls_addr.rsplit(':').next().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(
        &cfg,
        format!(
            "probes:\n\
             \x20 - {{target: trusted, url: 'https://127.0.0.1:{tls_port}/mcp', interval: 1s, tls: {{ca_file: ca.pem}}}}\n\
             \x20 - {{target: untrusted, url: 'https://localhost:{tls_port}/mcp', interval: 1s}}\n\
             \x20 - {{target: unchecked, url: 'https://localhost:{tls_port}/mcp', interval: 1s, tls: {{insecure_skip_verify: true}}}}\n\
             proxies:\n\
             \x20 - {{target: secure, upstream: 'https://localhost:{tls_port}/mcp', tls: {{ca_file: {}}}}}\n",
            ca.display()
        ),
    )
    .unwrap();
    let tw = Server::spawn_at(&tw_addr, &dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    tw.wait_ready(Duration::from_secs(30));
    let state_of = |t: &str| -> Option<String> {
        query(&tw_addr, &format!("mcp_probe_state{{target=\"{t}\"}} == 1"))
            .first()
            .map(|r| r["metric"]["state"].as_str().unwrap().to_string())
    };
    let began = Instant::now();
    while ["trusted", "untrusted", "unchecked"].iter().any(|t| state_of(t).is_none()) {
        assert!(began.elapsed() < Duration::from_secs(15), "not every target probed; log:\n{}", tw.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(state_of("trusted").as_deref(), Some("up"), "{}", tw.log_text());
    assert_eq!(state_of("unchecked").as_deref(), Some("up"));
    assert_eq!(state_of("untrusted").as_deref(), Some("protocol_error"));
    let log = tw.log_text();
    let reason = log.lines().find(|l| l.contains("target=untrusted")).unwrap_or_else(|| panic!("{log}"));
    assert!(reason.contains("code=tls") && reason.to_ascii_lowercase().contains("certificate"), "{reason}");
    // The reason is the cause in words (whose certificate, why refused), not the client
    // library's type names and ids, which used to fill the first 500 characters.
    let words = reason.to_ascii_lowercase().replace(['_', ' '], "");
    assert!(words.contains("unknownissuer") && reason.contains("localhost:"), "{reason}");
    assert!(!reason.contains("TypeId") && !reason.contains("…"), "{reason}");

    // The HTTP proxy speaks TLS to its upstream, trusting the configured CA.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
        "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let headers = [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")];
    let (code, body) = http(&tw_addr, "POST", "/proxy/secure/mcp", &headers, init.to_string().as_bytes()).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"serverInfo\""), "{body}");
}
