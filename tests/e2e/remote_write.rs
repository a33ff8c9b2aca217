//! Remote-write status codes against the real binary: each bad request gets its code and a body
//! that says why, and the valid part of a partly bad request is stored.


use crate::common::*;
use prost::Message;
use std::io::Write;
use std::time::Duration;
use toolwatch_ingest::remote_write_proto::v2;
use toolwatch_storage::{Db, DbOptions, Matcher};

fn stop_and_read(mut server: Server, metric: &str) -> Vec<(String, Vec<(i64, f64)>)> {
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let db = Db::open(&server.data_dir, DbOptions::default()).unwrap();
    let got = db.querier(0, i64::MAX).select(&[Matcher::eq("__name__", metric)]).unwrap();
    got.iter().map(|s| (s.labels.to_string(), s.samples())).collect()
}

fn post(addr: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (code, b) = http(addr, "POST", "/api/v1/write", headers, body).unwrap();
    (code, String::from_utf8_lossy(&b).to_string())
}

const V2_HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request"),
    ("X-Prometheus-Remote-Write-Version", "2.0.0"),
];

#[test]
fn accepted_and_partially_rejected_v1() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let ok = vec![("__name__", "rw"), ("job", "a")];
    assert_eq!(remote_write(&server.addr, &[(ok.clone(), vec![(1000, 1.0), (2000, 2.0)])]).unwrap().0, 204);
    // Out of order, duplicate and invalid labels beside valid samples: 400, valid part stored.
    let (code, body) = remote_write(
        &server.addr,
        &[
            (ok.clone(), vec![(1500, 9.0), (2000, 3.0), (3000, 3.0)]),
            (vec![("__name__", "rw"), ("", "x")], vec![(1000, 1.0)]),
            (vec![("__name__", "rw"), ("job", "b"), ("job", "c")], vec![(1000, 1.0)]),
            (vec![("job", "b"), ("__name__", "rw")], vec![(1000, 5.0)]),
        ],
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.starts_with("4 samples rejected"), "{body}");
    assert!(body.contains("2 samples written"), "{body}");
    assert!(body.contains("out-of-order") && body.contains("empty label name"), "{body}");
    let m = http(&server.addr, "GET", "/metrics", &[], &[]).unwrap().1;
    let m = String::from_utf8_lossy(&m);
    assert!(m.contains(r#"toolwatch_remote_write_samples_total{result="accepted"} 4"#), "{m}");
    assert!(m.contains(r#"toolwatch_remote_write_samples_total{result="out_of_order"} 1"#), "{m}");
    assert!(m.contains(r#"toolwatch_remote_write_samples_total{result="invalid"} 2"#), "{m}");
    assert!(m.contains(r#"toolwatch_remote_write_samples_total{result="duplicate"} 1"#), "{m}");
    assert!(m.contains(r#"toolwatch_remote_write_requests_total{version="1.0",code="400"} 1"#), "{m}");
    let got = stop_and_read(server, "rw");
    assert_eq!(got[0], (r#"{__name__="rw", job="a"}"#.to_string(), vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]));
    assert_eq!(got[1], (r#"{__name__="rw", job="b"}"#.to_string(), vec![(1000, 5.0)]), "unsorted labels were sorted");
}

#[test]
fn undecodable_unsupported_and_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", &write_config(dir.path(), "ingest:\n  max_body_bytes: 2000\n  max_decompressed_bytes: 3000\n")],
    );
    let (code, body) = post(&server.addr, &RW_HEADERS, b"not snappy at all");
    assert_eq!((code, body.starts_with("snappy decode")), (400, true), "{body}");
    let garbage = snap::raw::Encoder::new().compress_vec(&[0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2]).unwrap();
    let (code, body) = post(&server.addr, &RW_HEADERS, &garbage);
    assert_eq!(code, 400);
    assert!(body.contains("protobuf decode") && body.contains("nothing was written"), "{body}");
    let ok_body = remote_write_body(&[(vec![("__name__", "x")], vec![(1, 1.0)])]);
    let (code, body) = post(&server.addr, &[("Content-Encoding", "gzip")], &ok_body);
    assert_eq!(code, 415, "{body}");
    let (code, body) = post(&server.addr, &[("Content-Type", "application/json")], &ok_body);
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("application/x-protobuf"));
    // The content type is required (a browser cannot send it cross-site without a preflight).
    let (code, body) = post(&server.addr, &[("Content-Encoding", "snappy")], &ok_body);
    assert_eq!(code, 415, "{body}");
    assert!(body.contains(r#""errorType":"bad_data""#) && body.contains("missing Content-Type"), "{body}");
    let big = vec![0u8; 4000];
    let (code, body) = post(&server.addr, &RW_HEADERS, &big);
    assert_eq!(code, 413);
    assert!(body.contains("ingest.max_body_bytes = 2000"), "{body}");
    let compressible = snap::raw::Encoder::new().compress_vec(&vec![0u8; 10_000]).unwrap();
    assert!(compressible.len() < 2000);
    let (code, body) = post(&server.addr, &RW_HEADERS, &compressible);
    assert_eq!(code, 413);
    assert!(body.contains("ingest.max_decompressed_bytes = 3000"), "{body}");
    // A v1 body without Content-Encoding is taken as snappy, as Prometheus' receiver does.
    assert_eq!(post(&server.addr, &[("Content-Type", "application/x-protobuf")], &ok_body).0, 204);
    let got = stop_and_read(server, "x");
    assert_eq!(got.len(), 1, "only the one valid request was stored");
}

#[test]
fn remote_write_v2_with_headers_histograms_and_bad_refs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let sample = |t, v| v2::Sample { value: v, timestamp: t, start_timestamp: 0 };
    let req = v2::Request {
        symbols: ["", "__name__", "rw2", "tool", "search", "fetch", "calls", ""]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![sample(1000, 1.5), sample(2000, 2.5)],
                metadata: Some(v2::Metadata { r#type: 1, help_ref: 6, unit_ref: 0 }),
                ..Default::default()
            },
            v2::TimeSeries { labels_refs: vec![1, 2, 3, 5], samples: vec![sample(1000, 7.0)], ..Default::default() },
        ],
    };
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
    let (code, b, headers) = http_with_headers(&server.addr, &V2_HEADERS, &body);
    assert_eq!(code, 204, "{b}");
    assert!(headers.contains("x-prometheus-remote-write-samples-written: 3"), "{headers}");
    assert!(headers.contains("x-prometheus-remote-write-histograms-written: 0"), "{headers}");

    let bad = v2::Request {
        symbols: ["", "__name__", "rw2", "tool", "write"].iter().map(|s| s.to_string()).collect(),
        timeseries: vec![
            v2::TimeSeries { labels_refs: vec![1, 2, 3, 4], samples: vec![sample(3000, 3.0)], ..Default::default() },
            v2::TimeSeries { labels_refs: vec![1, 2, 3, 99], samples: vec![sample(3000, 1.0)], ..Default::default() },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                histograms: vec![v2::Histogram { count_int: 3, sum: 1.0, timestamp: 4000 }],
                ..Default::default()
            },
        ],
    };
    let body = snap::raw::Encoder::new().compress_vec(&bad.encode_to_vec()).unwrap();
    let (code, b, headers) = http_with_headers(&server.addr, &V2_HEADERS, &body);
    assert_eq!(code, 400, "{b}");
    assert!(b.contains("symbol reference 99 out of range"), "{b}");
    assert!(b.contains("1 native histogram samples rejected"), "{b}");
    assert!(headers.contains("x-prometheus-remote-write-samples-written: 1"), "{headers}");
    let got = stop_and_read(server, "rw2");
    let names: Vec<&str> = got.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            r#"{__name__="rw2", tool="fetch"}"#,
            r#"{__name__="rw2", tool="search"}"#,
            r#"{__name__="rw2", tool="write"}"#
        ]
    );
    assert_eq!(got[1].1, vec![(1000, 1.5), (2000, 2.5)]);
}

#[test]
fn full_ingest_queue_answers_429() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", &write_config(dir.path(), "ingest:\n  max_inflight_requests: 1\n")],
    );
    // Hold the only slot: headers promise a body that never finishes arriving.
    let hold = || {
        let mut c = std::net::TcpStream::connect(&server.addr).unwrap();
        write!(
            c,
            "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n\
             Content-Length: 1000\r\n\r\nab"
        )
        .unwrap();
        c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        c
    };
    let mut slow = hold();
    // Until the server has taken the slow request in, our writes may still get the slot; and if
    // one of them held it when the slow request arrived, that one was answered 429: send it again.
    let start = std::time::Instant::now();
    let (code, body) = loop {
        let (code, body) = remote_write(&server.addr, &[(vec![("__name__", "q")], vec![(1, 1.0)])]).unwrap();
        if code != 204 || start.elapsed() > Duration::from_secs(10) {
            break (code, body);
        }
        let mut buf = [0u8; 64];
        if matches!(std::io::Read::read(&mut slow, &mut buf), Ok(_)) {
            slow = hold();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("ingest.max_inflight_requests = 1"), "{body}");
    drop(slow);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(remote_write(&server.addr, &[(vec![("__name__", "q")], vec![(1, 1.0)])]).unwrap().0, 204);
}

#[test]
fn series_limit_and_label_limits_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // Self-monitoring off: toolwatch's own series would count against max_series too.
    let cfg = "storage:\n  max_series: 2\ningest:\n  max_label_value_bytes: 8\n  max_series_per_request: 3\nself_monitoring:\n  enabled: false\n";
    let server = Server::start(&dir.path().join("data"), &["--config", &write_config(dir.path(), cfg)]);
    let s = |v: &'static str| (vec![("__name__", "lim"), ("v", v)], vec![(1, 1.0)]);
    let (code, body) = remote_write(&server.addr, &[s("a"), s("b"), s("c")]).unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("storage.max_series = 2"), "{body}");
    let (code, body) = remote_write(&server.addr, &[s("a"), s("much-too-long")]).unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("ingest.max_label_value_bytes = 8"), "{body}");
    let (code, body) = remote_write(&server.addr, &[s("a"), s("b"), s("c"), s("d")]).unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("ingest.max_series_per_request = 3") && body.contains("nothing was written"), "{body}");
    let got = stop_and_read(server, "lim");
    assert_eq!(got.len(), 2);
}

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("toolwatch.yml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// POST returning status, body and the raw header block (lower-cased).
fn http_with_headers(addr: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string(), head.to_ascii_lowercase())
}
