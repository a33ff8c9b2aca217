//! Added latency of `toolwatch proxy` (stdio): the same MCP session — `initialize`, then N
//! `tools/call` round trips, one at a time — against `toolwatch mcp --data-dir` directly and
//! through the proxy, interleaved in rounds so machine noise hits both alike. Prints p50/p99
//! per mode and their differences.
//!
//! usage: proxybench PATH/TO/toolwatch [CALLS_PER_ROUND=2000] [ROUNDS=5]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

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
        let msg = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"query","arguments":{{"query":"1","time":"1700000000"}}}}}}"#,
            i + 1
        );
        out.push(rt(&mut w, &msg, &mut r));
    }
    drop(w);
    let _ = child.wait();
    out
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
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
    let (d50, d99) = (pct(&mut direct, 0.50), pct(&mut direct, 0.99));
    let (p50, p99) = (pct(&mut proxied, 0.50), pct(&mut proxied, 0.99));
    println!("tools/call round trip, {} calls per mode ({rounds} rounds, first 10% of each dropped)", direct.len());
    println!("direct : p50 {d50:7.1} µs  p99 {d99:7.1} µs");
    println!("proxied: p50 {p50:7.1} µs  p99 {p99:7.1} µs");
    println!("added  : p50 {:7.1} µs  p99 {:7.1} µs", p50 - d50, p99 - d99);
}
