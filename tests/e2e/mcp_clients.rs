//! The Python `mcp` client (PyPI mcp 2.3) against toolwatch: Streamable HTTP in `legacy` and
//! `auto` modes, and stdio through `toolwatch mcp` both relaying to a running server and
//! opening a store itself.


use crate::common::{remote_write, Server};
use std::process::Command;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// 20 minutes of counters: search 3 ok + 1 error per second, fetch 1 ok per second.
pub fn tool_calls(addr: &str) {
    let now = now_ms();
    let pts = |per_s: f64| -> Vec<(i64, f64)> {
        (0..=80).map(|i| (now - 20 * 60_000 + i * 15_000, per_s * (i * 15) as f64)).collect()
    };
    let s = |tool: &'static str, status: &'static str| {
        vec![("__name__", "mcp_tool_calls_total"), ("job", "demo"), ("status", status), ("tool", tool)]
    };
    let series = vec![
        (s("search", "ok"), pts(3.0)),
        (s("search", "error"), pts(1.0)),
        (s("fetch", "ok"), pts(1.0)),
        (s("fetch", "error"), pts(0.0)),
    ];
    assert_eq!(remote_write(addr, &series).unwrap().0, 204);
}

fn python_mcp_available() -> bool {
    let ok = Command::new("python3").args(["-c", "import mcp"]).status().is_ok_and(|s| s.success());
    if !ok && std::env::var("TOOLWATCH_SKIP_PYTHON").is_err() {
        panic!("the Python mcp client is missing: pip install mcp==2.3.0 (scripts/test-deps.sh does), or set TOOLWATCH_SKIP_PYTHON=1");
    }
    ok
}

/// Calls of the `query` tool through a proxy, by outcome.
fn outcomes(addr: &str, target: &str) -> Vec<(String, String)> {
    let q =
        crate::common::urlencode(&format!("sum by (status) (mcp_tool_calls_total{{target=\"{target}\", tool=\"query\"}})"));
    let (_, body) = crate::common::http(addr, "GET", &format!("/api/v1/query?query={q}"), &[], &[]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut got: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"]["status"].as_str().unwrap().to_string(), r["value"][1].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    got
}

fn run_client(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mcp_client.py");
    let out = Command::new("python3").arg(script).args(args).output().expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client {args:?} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("OK "), "{stdout}");
    assert!(!stderr.contains("Session termination failed"), "{stderr}");
}

#[test]
fn python_client_over_http_and_stdio() {
    if !python_mcp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", crate::common::free_port());
    let cfg = dir.path().join("toolwatch.yml");
    let proxies =
        format!("self_monitoring: {{interval: 1s}}\nproxies: [{{target: pyhttp, upstream: \"http://{addr}/mcp\"}}]\n");
    std::fs::write(&cfg, proxies).unwrap();
    let mut tw = Server::spawn_at(&addr, &dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    tw.wait_ready(std::time::Duration::from_secs(60));
    tool_calls(&tw.addr);
    let url = format!("http://{}/mcp", tw.addr);
    run_client(&["legacy", &url]);
    run_client(&["auto", &url]);
    let bin = env!("CARGO_BIN_EXE_toolwatch");
    let base = format!("http://{}", tw.addr);
    run_client(&["legacy", "--", bin, "mcp", "--url", &base]);
    run_client(&["auto", "--", bin, "mcp", "--url", &base]);
    // The relayed calls were served (and measured) by the server: per run one good query and
    // two that fail (bad PromQL, unknown metric).
    let count =
        |status: &str| tw.metric_with("toolwatch_mcp_tool_calls_total", &format!("tool=\"query\",status=\"{status}\""));
    assert_eq!(count("ok"), Some(4.0));
    assert_eq!(count("tool_error"), Some(8.0));

    // Through `toolwatch proxy` (stdio) wrapping the same server: the client sees no difference,
    // and toolwatch sees the proxied calls under target="py".
    for mode in ["legacy", "auto"] {
        run_client(&[mode, "--", bin, "proxy", "--target", "py", "--url", &base, "--", bin, "mcp", "--url", &base]);
    }
    assert_eq!(outcomes(&tw.addr, "py"), [("ok".to_string(), "2".to_string()), ("tool_error".into(), "4".into())]);

    // Through the Streamable HTTP proxy (`proxies:`) in front of the same server: the same.
    for mode in ["legacy", "auto"] {
        run_client(&[mode, &format!("http://{addr}/proxy/pyhttp/mcp")]);
    }
    let want = [("ok".to_string(), "2".to_string()), ("tool_error".into(), "4".into())];
    let began = std::time::Instant::now();
    while outcomes(&tw.addr, "pyhttp") != want && began.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(outcomes(&tw.addr, "pyhttp"), want);

    // With the server stopped, `toolwatch mcp --data-dir` opens the same store itself.
    tw.signal(libc::SIGTERM);
    assert_eq!(tw.wait_exit(std::time::Duration::from_secs(20)), Some(0));
    let data = dir.path().join("tw");
    run_client(&["legacy", "--", bin, "mcp", "--data-dir", data.to_str().unwrap()]);
    run_client(&["auto", "--", bin, "mcp", "--data-dir", data.to_str().unwrap()]);
}
