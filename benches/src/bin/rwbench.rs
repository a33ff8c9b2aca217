//! End-to-end remote-write load generator: pre-encodes the MCP workload as remote-write 1.0
//! requests, sends them over N keep-alive connections and prints samples/s and latency.
//!   rwbench [--url http://127.0.0.1:9201/api/v1/write] [--series 10000] [--steps 120]
//!           [--batch 2000] [--concurrency 4]
//! Each connection owns a fixed share of the series, so every series arrives in time order.

use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use toolwatch_benches::mix::Workload;
use toolwatch_ingest::remote_write_proto as pb;

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn main() {
    let url = flag("--url", "http://127.0.0.1:9201/api/v1/write");
    let series: usize = flag("--series", "10000").parse().unwrap();
    let steps: usize = flag("--steps", "120").parse().unwrap();
    let batch: usize = flag("--batch", "2000").parse().unwrap();
    let conns: usize = flag("--concurrency", "4").parse().unwrap();
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (addr, path) = rest.split_once('/').map(|(a, p)| (a.to_string(), format!("/{p}"))).unwrap();

    let mut w = Workload::new(series, 15_000);
    let start_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
        - steps as i64 * 15_000;
    let labels: Vec<Vec<pb::Label>> = w
        .labels
        .iter()
        .map(|l| l.iter().map(|(n, v)| pb::Label { name: n.clone(), value: v.clone() }).collect())
        .collect();
    // per connection: its requests in send order
    let mut plan: Vec<Vec<(Vec<u8>, usize)>> = vec![Vec::new(); conns];
    let t0 = Instant::now();
    for step in 0..steps {
        let t = start_ms + step as i64 * 15_000;
        let values = w.step().to_vec();
        for (j, range) in (0..series).collect::<Vec<_>>().chunks(batch).enumerate() {
            let req = pb::WriteRequest {
                timeseries: range
                    .iter()
                    .map(|&i| pb::TimeSeries {
                        labels: labels[i].clone(),
                        samples: vec![pb::Sample { value: values[i], timestamp: t }],
                        ..Default::default()
                    })
                    .collect(),
                metadata: vec![],
            };
            let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
            plan[j % conns].push((body, range.len()));
        }
    }
    let bytes: usize = plan.iter().flatten().map(|(b, _)| b.len()).sum();
    eprintln!(
        "encoded {} requests ({bytes} bytes) in {:.1}s",
        plan.iter().map(|p| p.len()).sum::<usize>(),
        t0.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let results: Vec<(usize, usize, Vec<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .iter()
            .map(|reqs| {
                let (addr, path) = (addr.clone(), path.clone());
                s.spawn(move || {
                    let mut stream = TcpStream::connect(&addr).expect("connect");
                    stream.set_nodelay(true).unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let (mut ok, mut failed, mut lat) = (0usize, 0usize, Vec::with_capacity(reqs.len()));
                    for (body, n) in reqs {
                        let t = Instant::now();
                        let head = format!(
                            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n\
                             X-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        stream.write_all(head.as_bytes()).unwrap();
                        stream.write_all(body).unwrap();
                        let code = read_response(&mut reader);
                        lat.push(t.elapsed());
                        if (200..300).contains(&code) {
                            ok += n;
                        } else {
                            failed += n;
                        }
                    }
                    (ok, failed, lat)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let ok: usize = results.iter().map(|r| r.0).sum();
    let failed: usize = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.2).collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "rwbench: {ok} samples ok, {failed} failed in {secs:.2}s = {:.0} samples/s; latency p50 {:.2} ms p99 {:.2} ms ({} requests, {conns} connections)",
        ok as f64 / secs,
        pct(0.5),
        pct(0.99),
        lat.len()
    );
}

/// Reads one HTTP/1.1 response (status line, headers, Content-Length or chunked body).
fn read_response(r: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let code: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (mut len, mut chunked) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut buf = vec![0; n + 2];
            r.read_exact(&mut buf).unwrap();
            if n == 0 {
                break;
            }
        }
    } else {
        let mut buf = vec![0; len];
        r.read_exact(&mut buf).unwrap();
    }
    code
}
