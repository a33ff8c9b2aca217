//! Slow or stalled senders cannot hold ingest capacity, against the real binary: a write body
//! that stops arriving gets 408 naming `ingest.body_read_timeout` and gives its slot back, and
//! `/api/v1/probes` refuses a body over `ingest.max_body_bytes` as it arrives, not after it.


use crate::common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn config(dir: &std::path::Path, yaml: &str) -> String {
    let p = dir.join("toolwatch.yml");
    std::fs::write(&p, yaml).unwrap();
    p.to_str().unwrap().to_string()
}

/// Opens a connection and sends a request's head and `body` only: with `Content-Length:
/// declared` when given, else chunked with `body` as one chunk. The connection then stays open
/// with nothing more coming.
fn stall(addr: &str, path: &str, headers: &[(&str, &str)], declared: Option<usize>, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n");
    match declared {
        Some(n) => req.push_str(&format!("Content-Length: {n}\r\n")),
        None => req.push_str("Transfer-Encoding: chunked\r\n"),
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if declared.is_some() {
        s.write_all(body).unwrap();
    } else {
        s.write_all(format!("{:x}\r\n", body.len()).as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.flush().unwrap();
    s
}

/// Reads one response (status and body) without waiting for the connection to close.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()));
            if len.is_some_and(|n| buf.len() >= end + 4 + n) {
                break;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no answer: {e}; got so far: {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status");
    (status, String::from_utf8_lossy(&buf[end + 4..]).to_string())
}

/// Whether the server has already answered on `s` (without consuming the answer).
fn answered(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let got = s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
    s.set_nonblocking(false).unwrap();
    got
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {body}"))
}

fn write_one(addr: &str, name: &str) -> (u16, String) {
    remote_write(addr, &[(vec![("__name__", name)], vec![(now_ms(), 1.0)])]).unwrap()
}

#[test]
fn a_stalled_remote_write_times_out_and_gives_its_slot_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "ingest:\n  body_read_timeout: 1s\n  max_inflight_requests: 1\nself_monitoring:\n  enabled: false\n",
    );
    let tw = Server::start(&dir.path().join("tw"), &["--config", &cfg]);
    assert_eq!(write_one(&tw.addr, "before").0, 204);

    // Declares 1000 bytes, sends 10, stalls, holding the only slot. A write of the loop below
    // may take the slot first (the server serves each connection on its own task), and then
    // the stalled request itself is the one turned away: start it again.
    let mut began = Instant::now();
    let mut stalled = stall(&tw.addr, "/api/v1/write", &RW_HEADERS, Some(1000), b"0123456789");
    // Meanwhile other writers are turned away (429) rather than queued behind it.
    let mut turned_away = false;
    while !turned_away && began.elapsed() < Duration::from_millis(800) {
        let (code, body) = write_one(&tw.addr, "during");
        assert!(code == 429 || code == 204, "{code}: {body}");
        turned_away = code == 429;
        if turned_away {
            assert!(body.contains("ingest.max_inflight_requests = 1"), "{body}");
        } else if answered(&stalled) {
            let (code, body) = read_response(&mut stalled);
            assert_eq!(code, 429, "{body}");
            began = Instant::now();
            stalled = stall(&tw.addr, "/api/v1/write", &RW_HEADERS, Some(1000), b"0123456789");
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(turned_away, "the stalled request should hold the only slot");

    // The stalled one gets 408 in Prometheus' error JSON naming the setting, within seconds.
    let (code, body) = read_response(&mut stalled);
    let took = began.elapsed();
    assert_eq!(code, 408, "{body}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "answered after {took:?}");
    let v = json(&body);
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["errorType"], "timeout", "{v}");
    assert!(v["error"].as_str().unwrap().contains("ingest.body_read_timeout = 1s"), "{v}");

    // Its slot is free again: a normal write succeeds.
    let (code, body) = write_one(&tw.addr, "after");
    assert_eq!(code, 204, "{body}");
    let (_, b) = http(&tw.addr, "GET", "/api/v1/query?query=after", &[], &[]).unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["data"]["result"].as_array().map(|r| r.len()), Some(1), "{v}");
    assert_eq!(tw.metric_with("toolwatch_remote_write_requests_total", "code=\"408\""), Some(1.0));
}

#[test]
fn a_stalled_probe_push_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "ingest:\n  body_read_timeout: 1s\n");
    let tw = Server::start(&dir.path().join("tw"), &["--config", &cfg]);
    let began = Instant::now();
    let mut stalled =
        stall(&tw.addr, "/api/v1/probes", &[("Content-Type", "application/json")], Some(1000), b"{\"target\":");
    let (code, body) = read_response(&mut stalled);
    assert_eq!(code, 408, "{body}");
    assert!(began.elapsed() < Duration::from_secs(5), "answered after {:?}", began.elapsed());
    let v = json(&body);
    assert_eq!(v["errorType"], "timeout", "{v}");
    assert!(v["error"].as_str().unwrap().contains("ingest.body_read_timeout"), "{v}");
}

#[test]
fn probe_bodies_over_the_limit_are_refused_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    // The default 30 s read timeout: an answer within seconds comes from the size check.
    let cfg = config(dir.path(), "ingest:\n  max_body_bytes: 1000\n");
    let tw = Server::start(&dir.path().join("tw"), &["--config", &cfg]);
    let json_ct = [("Content-Type", "application/json")];

    // A whole body too large: refused naming the limit.
    let big = format!("[{}]", vec!["{\"target\":\"t\",\"success\":true}"; 100].join(","));
    assert!(big.len() > 1000);
    let (code, body) = http(&tw.addr, "POST", "/api/v1/probes", &json_ct, big.as_bytes()).unwrap();
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(code, 413, "{body}");
    let v = json(&body);
    assert_eq!(v["status"], "error", "{v}");
    assert!(v["error"].as_str().unwrap().contains("ingest.max_body_bytes (1000)"), "{v}");

    // No declared length (chunked): 1500 bytes arrive and the sender keeps the body open. The
    // answer comes as soon as the limit is passed, not when (if ever) the body ends.
    let began = Instant::now();
    let mut s = stall(&tw.addr, "/api/v1/probes", &json_ct, None, &[b' '; 1500]);
    let (code, body) = read_response(&mut s);
    assert_eq!(code, 413, "{body}");
    assert!(began.elapsed() < Duration::from_secs(5), "answered after {:?}", began.elapsed());
    assert!(json(&body)["error"].as_str().unwrap().contains("ingest.max_body_bytes (1000)"), "{body}");

    // Within the limit, results are still taken.
    let one = br#"{"target":"t","success":true}"#;
    let (code, body) = http(&tw.addr, "POST", "/api/v1/probes", &json_ct, one).unwrap();
    assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn remote_write_bodies_over_the_limit_are_refused_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "ingest:\n  max_body_bytes: 1000\n  max_inflight_requests: 1\n");
    let tw = Server::start(&dir.path().join("tw"), &["--config", &cfg]);
    let began = Instant::now();
    let mut s = stall(&tw.addr, "/api/v1/write", &RW_HEADERS, None, &[0u8; 1500]);
    let (code, body) = read_response(&mut s);
    assert_eq!(code, 413, "{body}");
    assert!(began.elapsed() < Duration::from_secs(5), "answered after {:?}", began.elapsed());
    assert!(body.contains("ingest.max_body_bytes = 1000"), "{body}");
    // The slot was given back with the answer.
    assert_eq!(write_one(&tw.addr, "after").0, 204);
}
