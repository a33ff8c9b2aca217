//! Differential check against the real thing: Debian's Prometheus scrapes itself and
//! remote-writes every sample to toolwatch, so both hold the same data. Then the same queries —
//! not the conformance corpus, but everyday ones over real counters, gauges, histograms and
//! summaries — go to both HTTP APIs, as range and as instant queries, and the answers must agree
//! (relative tolerance 1e-6, NaN equals NaN, labels as sets).
//! Needs /usr/bin/prometheus (installed by scripts/test-deps.sh, part of the README test command).


use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "/usr/bin/prometheus";

const QUERIES: &[&str] = &[
    "up",
    "prometheus_http_requests_total",
    "rate(prometheus_http_requests_total[5s])",
    "irate(prometheus_http_requests_total[5s])",
    "increase(prometheus_tsdb_head_samples_appended_total[7s])",
    "delta(go_goroutines[6s])",
    "idelta(process_resident_memory_bytes[6s])",
    "deriv(process_resident_memory_bytes[8s])",
    "predict_linear(go_memstats_alloc_bytes[8s], 60)",
    "holt_winters(go_goroutines[8s], 0.5, 0.5)",
    "changes(go_goroutines[10s])",
    "resets(go_memstats_alloc_bytes[10s])",
    "avg_over_time(go_goroutines[5s])",
    "min_over_time(go_memstats_alloc_bytes[5s])",
    "max_over_time(go_memstats_alloc_bytes[5s])",
    "sum_over_time(go_goroutines[5s])",
    "count_over_time(up[10s])",
    "last_over_time(go_goroutines[5s])",
    "quantile_over_time(0.9, go_memstats_alloc_bytes[10s])",
    "stddev_over_time(go_memstats_alloc_bytes[10s])",
    "stdvar_over_time(go_goroutines[10s])",
    "present_over_time(up[5s])",
    "absent_over_time(nonexistent[5s])",
    "absent(nonexistent{job=\"x\"})",
    "sum(rate(prometheus_http_requests_total[5s]))",
    "sum by (handler) (rate(prometheus_http_requests_total[5s]))",
    "sum without (instance, code) (prometheus_http_requests_total)",
    "avg by (job) (go_memstats_alloc_bytes)",
    "max by (quantile) (go_gc_duration_seconds)",
    "min without (quantile) (go_gc_duration_seconds)",
    "count by (__name__) ({__name__=~\"go_memstats_.*_bytes\"})",
    "stddev(go_gc_duration_seconds)",
    "stdvar by (job) (go_gc_duration_seconds)",
    "group by (handler) (prometheus_http_requests_total)",
    "topk(3, prometheus_http_requests_total)",
    "bottomk(2, go_gc_duration_seconds)",
    "quantile(0.5, go_gc_duration_seconds)",
    "count_values(\"value\", up)",
    "histogram_quantile(0.9, rate(prometheus_http_request_duration_seconds_bucket[5s]))",
    "histogram_quantile(0.5, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))",
    "histogram_quantile(0.99, sum by (le, handler) (prometheus_http_response_size_bytes_bucket))",
    "prometheus_http_requests_total / ignoring(code) group_left prometheus_http_response_size_bytes_count",
    "rate(prometheus_http_request_duration_seconds_sum[10s]) / rate(prometheus_http_request_duration_seconds_count[10s])",
    "go_memstats_alloc_bytes / on(instance, job) go_memstats_sys_bytes",
    "go_gc_duration_seconds > 0",
    "go_gc_duration_seconds > bool 0",
    "1 - go_gc_duration_seconds",
    "2 ^ up",
    "go_goroutines % 7",
    "-go_goroutines",
    "up == 1 and on(job) go_goroutines > 0",
    "go_goroutines or nonexistent",
    "prometheus_http_requests_total unless on(handler) prometheus_http_requests_total{handler=\"/metrics\"}",
    "label_replace(up, \"port\", \"$1\", \"instance\", \".*:(.*)\")",
    "label_join(up, \"both\", \"/\", \"job\", \"instance\")",
    "abs(delta(go_goroutines[5s]))",
    "ceil(rate(process_cpu_seconds_total[5s]) * 100)",
    "floor(go_memstats_alloc_bytes / 1e6)",
    "round(go_memstats_alloc_bytes / 1e6, 0.5)",
    "clamp(go_goroutines, 10, 30)",
    "clamp_max(go_goroutines, 20)",
    "sqrt(go_memstats_alloc_bytes)",
    "ln(go_memstats_alloc_bytes) + log2(go_memstats_alloc_bytes) - log10(go_memstats_alloc_bytes)",
    "exp(up)",
    "sgn(delta(go_goroutines[5s]))",
    "timestamp(up)",
    "time() - process_start_time_seconds",
    "scalar(up) * 2",
    "vector(1) + on() group_left up",
    "sum(up) by (job) * on(job) group_right max(go_goroutines) by (job)",
    "go_goroutines offset 5s",
    "rate(prometheus_http_requests_total[5s] offset 3s)",
    "max_over_time(rate(prometheus_http_requests_total[5s])[10s:2s])",
    "avg_over_time(go_goroutines[10s:3s])",
    "sort(go_gc_duration_seconds)",
    "day_of_week(process_start_time_seconds)",
    "hour() + minute()",
];

fn get_json(addr: &str, path: &str) -> Value {
    let (code, body) = http(addr, "GET", path, &[], &[]).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(code, 200, "{addr}{path}: {v}");
    v
}

fn num(v: &Value) -> f64 {
    match v.as_str().unwrap() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() / (a.abs() + b.abs()) < 1e-6
}

/// A result as labels → points, comparable across servers.
fn normalize(v: &Value) -> BTreeMap<String, Vec<(i64, f64)>> {
    let data = &v["data"];
    let mut out = BTreeMap::new();
    let point = |p: &Value| ((p[0].as_f64().unwrap() * 1000.0).round() as i64, num(&p[1]));
    match data["resultType"].as_str().unwrap() {
        "scalar" => {
            out.insert("scalar".into(), vec![point(&data["result"])]);
        }
        _ => {
            for s in data["result"].as_array().unwrap() {
                let key = serde_json::to_string(&s["metric"]).unwrap();
                let pts = match s.get("values") {
                    Some(vs) => vs.as_array().unwrap().iter().map(point).collect(),
                    None => vec![point(&s["value"])],
                };
                out.insert(key, pts);
            }
        }
    }
    out
}

fn diff(q: &str, ours: &Value, theirs: &Value) -> Option<String> {
    let (a, b) = (normalize(ours), normalize(theirs));
    if a.keys().ne(b.keys()) {
        return Some(format!("{q}: series differ\n  ours:   {:?}\n  theirs: {:?}", a.keys(), b.keys()));
    }
    for (k, pa) in &a {
        let pb = &b[k];
        let same = pa.len() == pb.len() && pa.iter().zip(pb).all(|(x, y)| x.0 == y.0 && close(x.1, y.1));
        if !same {
            return Some(format!("{q}: {k} differs\n  ours:   {pa:?}\n  theirs: {pb:?}"));
        }
    }
    None
}

#[test]
fn same_answers_as_prometheus() {
    if !have_binary(PROMETHEUS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['{prom_addr}']\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
            tw.addr
        ),
    )
    .unwrap();
    let prom = spawn_prometheus(&cfg, dir.path(), &prom_addr);

    // Let ~25 scrapes happen; both stores then hold the same samples up to the newest one.
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(25));
    let prom_latest = |addr: &str| -> f64 {
        let v = get_json(addr, "/api/v1/query?query=max(timestamp(up))");
        v["data"]["result"].get(0).map_or(0.0, |r| num(&r["value"][1]))
    };
    let newest = prom_latest(&prom_addr);
    assert!(
        newest > 0.0,
        "prometheus has no data; log:\n{}",
        std::fs::read_to_string(dir.path().join("prom.log")).unwrap_or_default()
    );
    // Wait until toolwatch has the same newest sample (remote-write lags a little).
    while prom_latest(&tw.addr) < newest {
        assert!(began.elapsed() < Duration::from_secs(90), "toolwatch never caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Queries end well before the newest sample, so samples still in flight cannot matter.
    let end = newest - 3.0;
    let start = end - 12.0;
    let mut failures = Vec::new();
    for q in QUERIES {
        let range = format!("/api/v1/query_range?query={}&start={start}&end={end}&step=1", urlencode(q));
        let instant = format!("/api/v1/query?query={}&time={end}", urlencode(q));
        for path in [range, instant] {
            let theirs = get_json(&prom_addr, &path);
            let ours = get_json(&tw.addr, &path);
            if let Some(d) = diff(q, &ours, &theirs) {
                failures.push(d);
            }
        }
    }
    drop(prom);
    assert!(
        failures.is_empty(),
        "{} of {} comparisons differ:\n{}",
        failures.len(),
        QUERIES.len() * 2,
        failures.join("\n")
    );
}
