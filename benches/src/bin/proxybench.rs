//! Added latency of toolwatch's MCP proxy, both modes: the same MCP session — `initialize`,
//! then N `tools/call` round trips, one at a time — directly and through the proxy,
//! interleaved in rounds so machine noise hits both alike. stdio: `toolwatch mcp --data-dir`
//! against `toolwatch proxy -- toolwatch mcp --data-dir`. Streamable HTTP: one toolwatch
//! serving `/mcp` and proxying `/proxy/self/mcp` to it (one keep-alive connection per
//! session). Prints p50/p99 per mode and their differences.
//!
//! usage: proxybench PATH/TO/toolwatch [CALLS_PER_ROUND=2000] [ROUNDS=5]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn session(bin: &str, args: &[String], calls: usize) -> Vec<f64> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut rt = |w: &mut std::process::ChildStdin, msg: &str, r: &mut BufReader<std::process::ChildStdout>| -> f64 {
        let t = Instant::now();
        writeln!(w, "{msg}").unwrap();
        w.flush().unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        t.elapsed().as_secs_f64() * 1e6
    };
    rt(
        &mut w,
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#,
        &mut r,
    );
    writeln!(w, r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#).unwrap();
    let mut out = Vec::with_capacity(calls);
    for i in 0..calls {
        out.push(rt(&mut w, &CALL.replace("ID", &(i + 1).to_string()), &mut r));
    }
    drop(w);
    let _ = child.wait();
    out
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"query","arguments":{"query":"1","time":"1700000000"}}}"#;

/// One POST on a keep-alive connection; returns the answer's headers and body (content-length
/// or chunked, as the server chose).
fn post(r: &mut BufReader<TcpStream>, addr: &str, path: &str, session: &str, body: &str) -> (String, Vec<u8>) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !session.is_empty() {
        req.push_str(&format!("Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    r.get_mut().write_all(req.as_bytes()).unwrap();
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let mut out = Vec::new();
    if let Some(n) = head.lines().find_map(|l| l.strip_prefix("content-length: ")?.trim().parse::<usize>().ok()) {
        out.resize(n, 0);
        r.read_exact(&mut out).unwrap();
    } else {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }
    (head, out)
}

fn http_session(addr: &str, path: &str, calls: usize) -> Vec<f64> {
    let mut r = BufReader::new(TcpStream::connect(addr).unwrap());
    r.get_ref().set_nodelay(true).unwrap();
    let (head, _) = post(
        &mut r,
        addr,
        path,
        "",
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#,
    );
    let session =
        head.lines().find_map(|l| l.strip_prefix("mcp-session-id: ")).expect("a session id").trim().to_string();
    post(&mut r, addr, path, &session, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    (0..calls)
        .map(|i| {
            let t = Instant::now();
            let (_, body) = post(&mut r, addr, path, &session, &CALL.replace("ID", &(i + 1).to_string()));
            let e = t.elapsed().as_secs_f64() * 1e6;
            assert!(body.windows(7).any(|w| w == b"\"isErro"), "{}", String::from_utf8_lossy(&body));
            e
        })
        .collect()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, rounds: usize, direct: &mut [f64], proxied: &mut [f64]) {
    let (d50, d99) = (pct(direct, 0.50), pct(direct, 0.99));
    let (p50, p99) = (pct(proxied, 0.50), pct(proxied, 0.99));
    println!(
        "{what}: tools/call round trip, {} calls per mode ({rounds} rounds, first 10% of each dropped)",
        direct.len()
    );
    println!("  direct : p50 {d50:7.1} µs  p99 {d99:7.1} µs");
    println!("  proxied: p50 {p50:7.1} µs  p99 {p99:7.1} µs");
    println!("  added  : p50 {:7.1} µs  p99 {:7.1} µs", p50 - d50, p99 - d99);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).expect("usage: proxybench PATH/TO/toolwatch [CALLS] [ROUNDS]").clone();
    let calls: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let data = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    // The proxy ships to a toolwatch that is not there: the relay must not care.
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let d = session(&bin, &["mcp".into(), "--data-dir".into(), data(&format!("d{round}"))], calls);
        let p = session(
            &bin,
            &[
                "proxy".into(),
                "--target".into(),
                "bench".into(),
                "--url".into(),
                "http://127.0.0.1:9".into(),
                "--".into(),
                bin.clone(),
                "mcp".into(),
                "--data-dir".into(),
                data(&format!("p{round}")),
            ],
            calls,
        );
        // The first calls warm up both processes.
        direct.extend_from_slice(&d[calls / 10..]);
        proxied.extend_from_slice(&p[calls / 10..]);
    }
    report("stdio", rounds, &mut direct, &mut proxied);

    // Streamable HTTP: one server, its own /mcp proxied at /proxy/self/mcp.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, format!("proxies: [{{target: self, upstream: \"http://{addr}/mcp\"}}]\n")).unwrap();
    let mut server = Command::new(&bin)
        .args(["--listen", &addr, "--data-dir", &data("http"), "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let began = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(began.elapsed() < Duration::from_secs(30), "toolwatch did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500)); // WAL replay of an empty store
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        direct.extend_from_slice(&http_session(&addr, "/mcp", calls)[calls / 10..]);
        proxied.extend_from_slice(&http_session(&addr, "/proxy/self/mcp", calls)[calls / 10..]);
    }
    let _ = server.kill();
    let _ = server.wait();
    report("Streamable HTTP", rounds, &mut direct, &mut proxied);
}
