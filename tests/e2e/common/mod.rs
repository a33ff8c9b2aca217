//! Helpers for end-to-end tests: start the real binary, talk plain HTTP/1.1 to it, and build
//! remote-write requests.
#![allow(dead_code)]

use prost::Message;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use toolwatch_ingest::remote_write_proto as pb;

/// Kills and reaps a helper process (Prometheus, Alertmanager) when the test ends, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Debian's Prometheus with `config` on `addr`, its TSDB and log (`prom.log`) in `dir`;
/// killed when the guard drops.
pub fn spawn_prometheus(config: &Path, dir: &Path, addr: &str) -> KillOnDrop {
    KillOnDrop(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prom").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prom.log")).unwrap())
            .spawn()
            .expect("starting prometheus"),
    )
}

/// Whether a Debian-packaged helper the test needs is installed. Missing, it is a failure (the
/// README test command installs it) unless TOOLWATCH_SKIP_PROMETHEUS asks to skip.
pub fn have_binary(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("TOOLWATCH_SKIP_PROMETHEUS").is_ok() {
        eprintln!("skipping: {path} missing and TOOLWATCH_SKIP_PROMETHEUS set");
        return false;
    }
    panic!("{path} is missing: run scripts/test-deps.sh (the README test command does)");
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts `toolwatch` on a free port; waits until /-/ready answers 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let s = Server::spawn(data_dir, extra);
        s.wait_ready(Duration::from_secs(60));
        s
    }

    pub fn spawn(data_dir: &Path, extra: &[&str]) -> Server {
        Server::spawn_at(&format!("127.0.0.1:{}", free_port()), data_dir, extra)
    }

    /// Starts on a given address (for configs that must name it, such as a probe of itself).
    pub fn spawn_at(addr: &str, data_dir: &Path, extra: &[&str]) -> Server {
        let addr = addr.to_string();
        let log = data_dir.with_extension(format!("{}.log", addr.replace([':', '.'], "_")));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_toolwatch"))
            .args(["--listen", &addr, "--data-dir", data_dir.to_str().unwrap()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("starting toolwatch");
        Server { child, addr, data_dir: data_dir.to_path_buf(), log }
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok((200, _)) = http(&self.addr, "GET", "/-/ready", &[], &[]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("toolwatch not ready after {timeout:?}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The value of the first sample of `name` whose labels contain `labels_part`.
    pub fn metric_with(&self, name: &str, labels_part: &str) -> Option<f64> {
        let (_, body) = http(&self.addr, "GET", "/metrics", &[], &[]).ok()?;
        let body = String::from_utf8_lossy(&body).to_string();
        body.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name) && l.contains(labels_part))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http(&self.addr, "GET", "/metrics", &[], &[]).ok()?;
        let body = String::from_utf8_lossy(&body).to_string();
        body.lines().find(|l| l.split([' ', '{']).next() == Some(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&resp[..end]).to_string();
    let status: u16 =
        head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("bad status"))?;
    let mut body = resp[end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { break };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
    out
}

/// A snappy-compressed remote-write 1.0 body.
pub fn remote_write_body(series: &[(Vec<(&str, &str)>, Vec<(i64, f64)>)]) -> Vec<u8> {
    let req = pb::WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| pb::TimeSeries {
                labels: labels.iter().map(|(n, v)| pb::Label { name: n.to_string(), value: v.to_string() }).collect(),
                samples: samples.iter().map(|&(t, v)| pb::Sample { value: v, timestamp: t }).collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()
}

pub const RW_HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

pub fn remote_write(addr: &str, series: &[(Vec<(&str, &str)>, Vec<(i64, f64)>)]) -> std::io::Result<(u16, String)> {
    let (code, body) = http(addr, "POST", "/api/v1/write", &RW_HEADERS, &remote_write_body(series))?;
    Ok((code, String::from_utf8_lossy(&body).to_string()))
}

/// Tiny deterministic PRNG (xorshift) so tests need no extra crate.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
