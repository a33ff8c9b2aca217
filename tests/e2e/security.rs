//! Scopes and browsers against the real binary: every route the app has declares a scope
//! (`toolwatch routes`) and the guard enforces exactly it; web pages cannot change state when no
//! tokens are configured; empty tokens are config errors; client-chosen MCP protocol versions do
//! not grow toolwatch's own series. (docs/security.md)


use crate::common::{free_port, http, remote_write_body, Server, RW_HEADERS};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const TOKENS: [(&str, &str); 4] =
    [("read", "read-secret"), ("write", "write-secret"), ("admin", "admin-secret"), ("proxy", "proxy-secret")];

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("toolwatch.yml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// `toolwatch routes --config cfg`: (path, scope) per line, and whether it exited 0.
fn routes(cfg: &str) -> (Vec<(String, String)>, bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_toolwatch")).args(["routes", "--config", cfg]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines = text
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(p, s)| (p.to_string(), s.to_string())))
        .collect();
    (lines, out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// A concrete path for a route pattern: `{name}` → `job`, `{*rest}` → `x`.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with("{*") {
                "x".to_string()
            } else if seg.starts_with('{') {
                "job".to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Method, headers and body a route of this scope accepts, so the token that has the scope gets
/// the handler's own answer.
fn request_for(path: &str, scope: &str) -> (&'static str, Vec<(&'static str, &'static str)>, Vec<u8>) {
    let json = vec![("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")];
    match scope {
        "write" if path == "/api/v1/probes" => ("POST", json, br#"{"target":"t","success":true}"#.to_vec()),
        "write" => {
            ("POST", RW_HEADERS.to_vec(), remote_write_body(&[(vec![("__name__", "sec")], vec![(now_ms(), 1.0)])]))
        }
        "admin" => ("POST", vec![], vec![]),
        "proxy" => ("POST", json, br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec()),
        _ => ("GET", vec![], vec![]),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn every_route_declares_a_scope_and_the_guard_enforces_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: String = TOKENS
        .iter()
        .map(|(scope, secret)| format!("    - {{name: {scope}-token, token: {secret}, scopes: [{scope}]}}\n"))
        .collect();
    // The upstream need not answer: the proxy token gets the proxy's own 502.
    let cfg = write_config(
        dir.path(),
        &format!(
            "self_monitoring: {{enabled: false}}\nauth:\n  tokens:\n{tokens}proxies:\n  - {{target: up, upstream: \"http://127.0.0.1:{}/mcp\"}}\n",
            free_port()
        ),
    );
    let (listed, ok, stderr) = routes(&cfg);
    assert!(ok, "toolwatch routes failed: {stderr}\n{listed:?}");
    let scope_of = |p: &str| listed.iter().find(|(r, _)| r == p).map(|(_, s)| s.as_str());
    for (path, scope) in [
        ("/api/v1/write", "write"),
        ("/api/v1/push", "write"),
        ("/api/v1/probes", "write"),
        ("/api/v1/admin/flush", "admin"),
        ("/-/reload", "admin"),
        ("/api/v1/query", "read"),
        ("/api/v1/query_range", "read"),
        ("/api/v1/rules", "read"),
        ("/api/v1/alerts", "read"),
        ("/mcp", "read"),
        ("/metrics", "read"),
        ("/proxy/up/mcp", "proxy"),
        ("/-/healthy", "open"),
        ("/-/ready", "open"),
    ] {
        assert_eq!(scope_of(path), Some(scope), "{path} in {listed:?}");
    }
    let known: BTreeSet<&str> = ["open", "read", "write", "admin", "proxy"].into();
    for (path, scope) in &listed {
        assert!(known.contains(scope.as_str()), "{path} declares {scope:?}");
    }

    let server = Server::start(&dir.path().join("data"), &["--config", &cfg]);
    let a = server.addr.clone();
    let send = |path: &str, scope: &str, auth: Option<&str>| -> (u16, String) {
        let (method, fixed, body) = request_for(path, scope);
        let mut headers: Vec<(&str, &str)> = fixed.iter().map(|&(k, v)| (k, v)).collect();
        if let Some(v) = auth {
            headers.push(("Authorization", v));
        }
        let (code, b) = http(&a, method, &concrete(path), &headers, &body).unwrap();
        (code, String::from_utf8_lossy(&b).to_string())
    };
    for (path, scope) in &listed {
        let (path, scope) = (path.as_str(), scope.as_str());
        let what = format!("{path} ({scope})");
        if scope == "open" {
            for auth in [None, Some("Basic dXNlcjpwYXNz"), Some("Bearer wrong")] {
                assert_eq!(send(path, scope, auth).0, 200, "{what} with {auth:?}");
            }
            continue;
        }
        let (code, body) = send(path, scope, None);
        assert_eq!(code, 401, "{what} without a token: {body}");
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "read-secret", "Bearer wrong"] {
            let (code, body) = send(path, scope, Some(bad));
            assert_eq!(code, 401, "{what} with Authorization: {bad:?}: {body}");
        }
        for (token_scope, secret) in TOKENS {
            let auth = format!("Bearer {secret}");
            let (code, body) = send(path, scope, Some(auth.as_str()));
            if token_scope == scope {
                assert!(code != 401 && code != 403, "{what} with the {token_scope} token: {code} {body}");
            } else {
                assert_eq!(code, 403, "{what} with the {token_scope} token: {body}");
                assert!(body.contains(&format!("\\\"{scope}\\\" scope")), "{what}: {body}");
            }
        }
    }
    assert!(!server.log_text().contains("-secret"), "secrets never logged");
}

#[test]
fn web_pages_cannot_change_state_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // Beyond loopback with no tokens: the start-up warning says who can do what.
    let port = free_port();
    let server = Server::spawn_at(&format!("0.0.0.0:{port}"), &dir.path().join("data"), &[]);
    server.wait_ready(std::time::Duration::from_secs(30));
    let log = server.log_text();
    assert!(log.contains("WARN") && log.contains("beyond loopback") && log.contains("anyone who can reach"), "{log}");
    let a = format!("127.0.0.1:{port}");
    let body = || remote_write_body(&[(vec![("__name__", "csrf")], vec![(now_ms(), 1.0)])]);
    let write = |extra: &[(&str, &str)]| {
        let mut h = RW_HEADERS.to_vec();
        h.extend_from_slice(extra);
        let (code, b) = http(&a, "POST", "/api/v1/write", &h, &body()).unwrap();
        (code, String::from_utf8_lossy(&b).to_string())
    };

    let (code, resp) = write(&[("Origin", "http://evil.example")]);
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains(r#""errorType":"forbidden""#) && resp.contains("cross-site"), "{resp}");
    assert_eq!(write(&[("Sec-Fetch-Site", "cross-site")]).0, 403);
    assert_eq!(write(&[("Origin", "null")]).0, 403);
    assert_eq!(write(&[]).0, 204, "no Origin: not a browser, works as always");
    let own = format!("http://{a}");
    assert_eq!(write(&[("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")]).0, 204, "its own origin");

    // The content types a page cannot send cross-site without a preflight are required.
    let (code, resp) = {
        let (c, b) = http(&a, "POST", "/api/v1/write", &[("Content-Type", "text/plain")], &body()).unwrap();
        (c, String::from_utf8_lossy(&b).to_string())
    };
    assert_eq!(code, 415, "{resp}");
    assert!(resp.contains(r#""status":"error""#) && resp.contains("application/x-protobuf"), "{resp}");
    let probe = br#"{"target":"t","success":true}"#;
    let (code, resp) = http(&a, "POST", "/api/v1/probes", &[("Content-Type", "text/plain")], probe).unwrap();
    let resp = String::from_utf8_lossy(&resp).to_string();
    assert_eq!(code, 415, "{resp}");
    assert!(resp.contains(r#""status":"error""#) && resp.contains("application/json"), "{resp}");
    let json = ("Content-Type", "application/json");
    assert_eq!(http(&a, "POST", "/api/v1/probes", &[json], probe).unwrap().0, 204);
    assert_eq!(http(&a, "POST", "/api/v1/probes", &[json, ("Origin", "http://evil.example")], probe).unwrap().0, 403);

    // Administering: the same rule.
    for path in ["/api/v1/admin/flush", "/-/reload"] {
        assert_eq!(http(&a, "POST", path, &[("Origin", "http://evil.example")], &[]).unwrap().0, 403, "{path}");
        assert_eq!(http(&a, "POST", path, &[("Sec-Fetch-Site", "cross-site")], &[]).unwrap().0, 403, "{path}");
        assert_eq!(http(&a, "POST", path, &[], &[]).unwrap().0, 200, "{path}");
    }
    // Reading changes nothing (and the browser keeps the answer from the page without CORS).
    let q = "/api/v1/query?query=1";
    assert_eq!(http(&a, "GET", q, &[("Origin", "http://evil.example")], &[]).unwrap().0, 200);
}

#[test]
fn empty_tokens_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.token"), "  \n").unwrap();
    for (name, entry) in [
        ("blank", r#"{name: blank, token: "  ", scopes: [read]}"#),
        ("nofile", "{name: nofile, token_file: empty.token, scopes: [write]}"),
    ] {
        let cfg = write_config(dir.path(), &format!("auth:\n  tokens:\n    - {entry}\n"));
        let out = Command::new(env!("CARGO_BIN_EXE_toolwatch"))
            .args(["--config", &cfg, "--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: started with an empty token\n{err}");
        assert!(err.contains(&format!("auth.tokens[\"{name}\"]")) && err.contains("empty"), "{name}: {err}");
    }
}

#[test]
fn client_chosen_protocol_versions_do_not_grow_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "self_monitoring: {enabled: false}\n");
    let server = Server::start(&dir.path().join("data"), &["--config", &cfg]);
    let headers = [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")];
    let mut answered = 0;
    for i in 0..50 {
        let init = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"garbage-{i}","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
        );
        let (code, _) = http(&server.addr, "POST", "/mcp", &headers, init.as_bytes()).unwrap();
        answered += usize::from(code == 200);
    }
    assert!(answered > 0, "no initialize was answered");
    let (_, metrics) = http(&server.addr, "GET", "/metrics", &[], &[]).unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    let versions: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("mcp_server_operation_duration_seconds"))
        .filter_map(|l| l.split("mcp_protocol_version=\"").nth(1)?.split('"').next())
        .collect();
    assert!(versions.contains("_other"), "{versions:?}");
    assert!(versions.len() <= 3, "one series per garbage version: {versions:?}");
}
