//! The Prometheus HTTP query API against the real binary: the requests Grafana's Prometheus data
//! source sends (replayed as it sends them), Debian's promtool, Prometheus' error mapping and the
//! configurable limits.


use crate::common::*;
use serde_json::Value;
use std::process::Command;

/// 2023-11-14T22:13:20Z, in milliseconds.
const BASE: i64 = 1_700_000_000_000;
const STEP: i64 = 15_000;

fn load(addr: &str) {
    let counter = |n: usize, per_step: f64| -> Vec<(i64, f64)> {
        (0..n).map(|i| (BASE + i as i64 * STEP, i as f64 * per_step)).collect()
    };
    let mut series: Vec<(Vec<(&str, &str)>, Vec<(i64, f64)>)> = vec![
        (vec![("__name__", "mcp_tool_calls_total"), ("tool", "search"), ("status", "ok")], counter(41, 3.0)),
        (vec![("__name__", "mcp_tool_calls_total"), ("tool", "search"), ("status", "error")], counter(41, 1.0)),
        (vec![("__name__", "mcp_tool_calls_total"), ("tool", "fetch"), ("status", "ok")], counter(41, 6.0)),
    ];
    for (le, frac) in [("0.1", 0.5), ("0.5", 0.9), ("+Inf", 1.0)] {
        series.push((
            vec![("__name__", "mcp_tool_latency_seconds_bucket"), ("tool", "search"), ("le", le)],
            counter(41, 4.0 * frac),
        ));
    }
    let (code, body) = remote_write(addr, &series).unwrap();
    assert_eq!(code, 204, "{body}");
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&")
}

fn post_form(addr: &str, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let body = form(pairs);
    let (code, b) =
        http(addr, "POST", path, &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes()).unwrap();
    (code, serde_json::from_slice(&b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&b))))
}

fn get(addr: &str, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let (code, b) = http(addr, "GET", &format!("{path}?{}", form(pairs)), &[], &[]).unwrap();
    (code, serde_json::from_slice(&b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&b))))
}

fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

#[test]
fn grafana_requests_replayed() {
    let dir = tempfile::tempdir().unwrap();
    // Exact label lists below: toolwatch's own series (job, instance) would join them.
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "self_monitoring:\n  enabled: false\n").unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    load(&tw.addr);
    let a = &tw.addr;

    // Health check: instant `1+1` at time=4 by form POST.
    let (code, v) = post_form(a, "/api/v1/query", &[("query", "1+1"), ("time", "4")]);
    assert_eq!(code, 200);
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"], serde_json::json!([4, "2"]));

    // A dashboard panel: query_range by form POST with timeout, float times.
    let (start, end) = (BASE + 300_000, BASE + 600_000);
    let (code, v) = post_form(
        a,
        "/api/v1/query_range",
        &[
            ("query", "sum by (tool) (rate(mcp_tool_calls_total[5m]))"),
            ("start", &secs(start)),
            ("end", &secs(end)),
            ("step", "60"),
            ("timeout", "2m"),
        ],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{v}");
    let fetch = result.iter().find(|s| s["metric"]["tool"] == "fetch").unwrap();
    assert_eq!(fetch["metric"].as_object().unwrap().len(), 1, "only the `by` label remains");
    let values = fetch["values"].as_array().unwrap();
    assert_eq!(values.len(), 6);
    // 6 per 15s is 0.4/s; rate over a full window of regular samples extrapolates to exactly that.
    for p in values {
        let r: f64 = p[1].as_str().unwrap().parse().unwrap();
        assert!((r - 0.4).abs() < 1e-9, "rate {r}");
    }
    assert_eq!(values[0][0].as_f64().unwrap(), start as f64 / 1000.0);
    let search = result.iter().find(|s| s["metric"]["tool"] == "search").unwrap();
    let r: f64 = search["values"][0][1].as_str().unwrap().parse().unwrap();
    assert!((r - 4.0 / 15.0).abs() < 1e-9, "search rate {r}");

    // p95 latency panel.
    let (code, v) = post_form(
        a,
        "/api/v1/query",
        &[
            ("query", "histogram_quantile(0.95, sum by (le, tool) (rate(mcp_tool_latency_seconds_bucket[5m])))"),
            ("time", &secs(end)),
        ],
    );
    assert_eq!(code, 200, "{v}");
    let q: f64 = v["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    // The 95th percentile falls into the +Inf bucket, so the answer is the last finite bound.
    assert_eq!(q, 0.5);

    // Labels and series by form POST with match[], start, end and limit=40000.
    let range = [("start", secs(BASE)), ("end", secs(end))];
    let (code, v) = post_form(
        a,
        "/api/v1/labels",
        &[("match[]", "mcp_tool_calls_total"), ("start", &range[0].1), ("end", &range[1].1), ("limit", "40000")],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"], serde_json::json!(["__name__", "status", "tool"]));
    let (code, v) = get(a, "/api/v1/labels", &[]);
    assert_eq!(code, 200);
    assert_eq!(v["data"], serde_json::json!(["__name__", "le", "status", "tool"]));
    let (code, v) = post_form(
        a,
        "/api/v1/series",
        &[("match[]", "{__name__!=\"\"}"), ("start", &range[0].1), ("end", &range[1].1), ("limit", "40000")],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 6);
    assert!(v["data"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"__name__": "mcp_tool_calls_total", "status": "error", "tool": "search"})));

    // Label values with match[], start, end, limit; truncation is a warning.
    let (code, v) = get(
        a,
        "/api/v1/label/tool/values",
        &[("match[]", "mcp_tool_calls_total{status=\"ok\"}"), ("start", &range[0].1), ("end", &range[1].1)],
    );
    assert_eq!(code, 200);
    assert_eq!(v["data"], serde_json::json!(["fetch", "search"]));
    let (_, v) = get(a, "/api/v1/label/__name__/values", &[("limit", "1")]);
    assert_eq!(v["data"], serde_json::json!(["mcp_tool_calls_total"]));
    assert_eq!(v["warnings"], serde_json::json!(["results truncated due to limit"]));

    // Metadata, buildinfo (no `features`: Grafana would take us for Mimir), exemplars with
    // millisecond times, rules.
    let (code, v) = get(a, "/api/v1/metadata", &[]);
    assert_eq!((code, v["status"].as_str()), (200, Some("success")));
    assert!(v["data"].is_object());
    let (code, v) = get(a, "/api/v1/status/buildinfo", &[]);
    assert_eq!(code, 200);
    assert!(v["data"]["version"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["data"].get("features").is_none());
    let (code, v) = get(
        a,
        "/api/v1/query_exemplars",
        &[("query", "test"), ("start", &BASE.to_string()), ("end", &end.to_string())],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"], serde_json::json!([]));
    let (code, v) = get(a, "/api/v1/rules", &[]);
    assert_eq!(code, 200);
    assert!(v["data"]["groups"].is_array());

    // tsdb status: top metrics by series count.
    let (code, v) = get(a, "/api/v1/status/tsdb", &[]);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["headStats"]["numSeries"], 6);
    assert_eq!(
        v["data"]["seriesCountByMetricName"][0],
        serde_json::json!({"name": "mcp_tool_calls_total", "value": 3})
    );

    // RFC 3339 times work too, and stats=all reports what the query touched.
    let (code, v) = get(
        a,
        "/api/v1/query",
        &[("query", "mcp_tool_calls_total{tool=\"fetch\"}"), ("time", "2023-11-14T22:23:20Z"), ("stats", "all")],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["value"], serde_json::json!([1700000600, "240"]));
    assert!(v["data"]["stats"]["samples"]["totalQueryableSamples"].as_u64().unwrap() > 0);
    // Measured, not made up: one series selected, so one sample held at the peak; the wait for
    // a query slot is reported; what is not measured (a separate result sort) is left out.
    let stats = &v["data"]["stats"];
    assert_eq!(stats["samples"]["peakSamples"], 1, "{stats}");
    assert!(stats["timings"]["execQueueTime"].as_f64().is_some_and(|t| t >= 0.0), "{stats}");
    let (total, eval) = (stats["timings"]["execTotalTime"].as_f64(), stats["timings"]["evalTotalTime"].as_f64());
    assert!(total.unwrap() >= eval.unwrap(), "{stats}");
    assert!(stats["timings"].get("resultSortTime").is_none(), "{stats}");

    let (code, v) = get(a, "/api/v1/format_query", &[("query", "sum(rate(foo[5m]))by(job)")]);
    assert_eq!(code, 200);
    assert_eq!(v["data"], "sum by (job) (rate(foo[5m]))");
}

#[test]
fn errors_and_limits_in_prometheus_form() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "query:\n  max_samples: 150\n").unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    load(&tw.addr);
    let a = &tw.addr;
    let t = secs(BASE + 600_000);

    let check = |(code, v): (u16, Value), want_code: u16, want_type: &str, want_msg: &str| {
        assert_eq!(code, want_code, "{v}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], want_type, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(want_msg), "error {msg:?} should mention {want_msg:?}");
    };
    // Unparsable PromQL: bad_data, with where it went wrong.
    check(get(a, "/api/v1/query", &[("query", "sum(rate(foo[5m])"), ("time", &t)]), 400, "bad_data", "1:4");
    check(get(a, "/api/v1/query", &[("query", "up"), ("time", "yesterday")]), 400, "bad_data", "time");
    // Matching that is many-to-many: execution.
    check(
        get(a, "/api/v1/query", &[("query", "mcp_tool_calls_total + on(tool) mcp_tool_calls_total"), ("time", &t)]),
        422,
        "execution",
        "many-to-many",
    );
    // Too many samples for the configured limit.
    check(
        get(a, "/api/v1/query", &[("query", "count_over_time({__name__=~\"mcp_.*\"}[1h])"), ("time", &t)]),
        422,
        "execution",
        "max_samples = 150",
    );
    // Out of time: a per-request timeout this short expires before evaluation starts.
    check(
        get(a, "/api/v1/query", &[("query", "mcp_tool_calls_total"), ("time", &t), ("timeout", "0.000000001")]),
        503,
        "timeout",
        "timed out",
    );
    // Too many points per series.
    check(
        get(a, "/api/v1/query_range", &[("query", "1"), ("start", "0"), ("end", "100000"), ("step", "1")]),
        400,
        "bad_data",
        "11000 points",
    );
    // As Prometheus: refused only when (end-start)/step > 11000, so exactly 11000 steps answer.
    let (code, v) = get(a, "/api/v1/query_range", &[("query", "1"), ("start", "0"), ("end", "11000"), ("step", "1")]);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["values"].as_array().unwrap().len(), 11_001);
    check(
        get(a, "/api/v1/query_range", &[("query", "1"), ("start", "0"), ("end", "11001"), ("step", "1")]),
        400,
        "bad_data",
        "11000 points",
    );
    check(
        get(a, "/api/v1/query_range", &[("query", "1"), ("start", "10"), ("end", "0"), ("step", "1")]),
        400,
        "bad_data",
        "end timestamp must not be before start time",
    );
    check(
        get(
            a,
            "/api/v1/query_range",
            &[("query", "mcp_tool_calls_total[5m]"), ("start", "0"), ("end", "10"), ("step", "1")],
        ),
        400,
        "bad_data",
        "range vector",
    );
    check(get(a, "/api/v1/series", &[]), 400, "bad_data", "no match[] parameter provided");
    check(get(a, "/api/v1/label/a-b/values", &[]), 400, "bad_data", "invalid label name");
}

/// `reloadConfigSuccess` and `lastConfigTime` are those of the last rule-file load: at start,
/// by `POST /-/reload` and by SIGHUP; a failed load keeps the time of the last good one.
#[test]
fn runtimeinfo_reports_the_last_rule_load() {
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let good = "groups:\n  - name: g\n    rules:\n      - record: r:one\n        expr: vector(1)\n";
    let broken = "groups:\n  - name: g\n    rules:\n      - record: r:one\n        expr: sum(\n";
    std::fs::write(&rules, good).unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "rule_files: ['rules.yml']\nself_monitoring:\n  enabled: false\n").unwrap();
    let began = now_ms();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    let info = || {
        let (code, v) = get(&tw.addr, "/api/v1/status/runtimeinfo", &[]);
        assert_eq!(code, 200, "{v}");
        let d = v["data"].clone();
        let t = toolwatch_query::time::parse_time(d["lastConfigTime"].as_str().unwrap()).unwrap();
        (d["reloadConfigSuccess"].as_bool().unwrap(), t)
    };
    // Loaded at start.
    let (ok, t0) = info();
    assert!(ok);
    assert!(t0 >= began - 1000 && t0 <= now_ms(), "{t0} not within the start ({began}..)");

    // A broken file: the reload fails and says so; the last good load's time stays.
    std::fs::write(&rules, broken).unwrap();
    assert_eq!(http(&tw.addr, "POST", "/-/reload", &[], &[]).unwrap().0, 500);
    assert_eq!(info(), (false, t0));

    // Fixed: success again, at the time of this reload.
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::write(&rules, good).unwrap();
    let before_reload = now_ms();
    assert_eq!(http(&tw.addr, "POST", "/-/reload", &[], &[]).unwrap().0, 200);
    let (ok, t1) = info();
    assert!(ok);
    assert!(t1 > t0 && t1 >= before_reload - 1000 && t1 <= now_ms(), "{t0} -> {t1}");

    // SIGHUP reloads too, and a failed one shows.
    std::fs::write(&rules, broken).unwrap();
    tw.signal(libc::SIGHUP);
    let waited = std::time::Instant::now();
    while info().0 {
        assert!(waited.elapsed() < std::time::Duration::from_secs(10), "the SIGHUP reload was not reported");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(info(), (false, t1));
}

#[test]
fn promtool_queries_work_unchanged() {
    let promtool = "/usr/bin/promtool";
    if !have_binary(promtool) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    load(&tw.addr);
    let url = format!("http://{}", tw.addr);
    let run = |args: &[&str]| -> String {
        let out = Command::new(promtool).arg("query").args(args).output().unwrap();
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool query {args:?} failed: {so}{se}");
        so.to_string()
    };
    let t = "2023-11-14T22:23:20Z";
    let out = run(&["instant", "--time", t, &url, "sum by (tool) (mcp_tool_calls_total)"]);
    assert!(out.contains("{tool=\"fetch\"} => 240 @[1700000600]"), "{out}");
    assert!(out.contains("{tool=\"search\"} => 160 @[1700000600]"), "{out}");
    let out = run(&[
        "range",
        "--start",
        "2023-11-14T22:18:20Z",
        "--end",
        t,
        "--step",
        "1m",
        &url,
        "mcp_tool_calls_total{tool=\"fetch\"}",
    ]);
    assert!(out.contains("240 @[1700000600]") && out.contains("120 @[1700000300]"), "{out}");
    // promtool's default window is around now; the data is from 2023.
    let window = ["--start", "2023-11-14T00:00:00Z", "--end", "2023-11-15T00:00:00Z"];
    let out = run(&[&["series", "--match", "mcp_tool_calls_total{tool=\"search\"}"], &window[..], &[&url]].concat());
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("status=\"error\""), "{out}");
    let out = run(&[&["labels"], &window[..], &[&url, "tool"]].concat());
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["fetch", "search"], "{out}");
}

/// A client that hangs up cancels its query: the evaluation stops (the only query slot frees up
/// long before the query could have finished) and it is counted as canceled.
#[test]
fn dropped_connection_cancels_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "query:\n  max_concurrency: 1\n").unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    // One day of 15s samples for a few series: a quantile over a one-day window at 11,000 steps
    // sorts ~5,760 values per step per series, which takes far longer than this test waits.
    let day: Vec<(i64, f64)> = (0..5760).map(|i| (BASE + i * STEP, (i * 7919 % 1000) as f64)).collect();
    // 48 series take ~35s on the CI machine uncanceled (6 took 4.5s).
    let names: Vec<String> = (0..48).map(|i| format!("s{i}")).collect();
    let series: Vec<(Vec<(&str, &str)>, Vec<(i64, f64)>)> =
        names.iter().map(|n| (vec![("__name__", "slow"), ("n", n.as_str())], day.clone())).collect();
    assert_eq!(remote_write(&tw.addr, &series).unwrap().0, 204);
    let end = BASE + 5759 * STEP;
    let path = format!(
        "/api/v1/query_range?query=quantile_over_time(0.5,slow%5B1d%5D)&start={}&end={}&step={}",
        secs(end - 10_999 * 7_000),
        secs(end),
        "7"
    );
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&tw.addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        // Dropping the stream closes the connection mid-query.
    }
    let canceled = || tw.metric_with("toolwatch_queries_total", "result=\"canceled\"").unwrap_or(0.0);
    let began = std::time::Instant::now();
    while canceled() < 1.0 {
        assert!(began.elapsed() < std::time::Duration::from_secs(10), "query not counted as canceled");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // With one slot, this waits until the canceled evaluation has really stopped.
    let (code, v) = get(&tw.addr, "/api/v1/query", &[("query", "1"), ("time", "0")]);
    assert_eq!(code, 200, "{v}");
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "the canceled query kept its slot for {:?}",
        began.elapsed()
    );
}

/// The shipped Grafana dashboard is valid to import (inputs, uid, panels) and every tool panel's
/// query, with Grafana's variables filled in as Grafana would, returns data from toolwatch.
#[test]
fn grafana_dashboard_queries_answer() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana/mcp-tools.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    load(&tw.addr);
    let (start, end) = (secs(BASE + 300_000), secs(BASE + 600_000));
    let mut tool_panels = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$tool", ".*")
                .replace("$target", ".*");
            let (code, v) = get(
                &tw.addr,
                "/api/v1/query_range",
                &[("query", &expr), ("start", &start), ("end", &end), ("step", "60")],
            );
            assert_eq!(code, 200, "{expr}: {v}");
            if expr.contains("mcp_tool_") {
                tool_panels += 1;
                assert!(!v["data"]["result"].as_array().unwrap().is_empty(), "{expr} returned nothing");
            }
        }
    }
    assert!(tool_panels >= 4);
    let vars: Vec<&Value> =
        dash["templating"]["list"].as_array().unwrap().iter().map(|v| &v["query"]["query"]).collect();
    assert_eq!(vars, ["label_values(mcp_tool_calls_total, tool)", "label_values(mcp_tool_calls_total, target)"]);
}

/// The queries that used to abort the whole server (a tokio worker's stack overflowed): long
/// chains and deep nesting answer over HTTP, past the limits a `bad_data` names the setting, and
/// the server answers the next request.
#[test]
fn deep_queries_answer_and_never_bring_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    let a = &tw.addr;
    let chain = |op: &str, n: usize| vec!["vector(1)"; n].join(op);
    let nest = |open: &str, close: &str, n: usize| format!("{}vector(1){}", open.repeat(n), close.repeat(n));
    for (q, want) in [
        (chain("+", 3_000), "3000"),
        (chain(" or ", 3_000), "1"),
        (chain("+", 10_000), "10000"),
        (nest("(", ")", 10_000), "1"),
        (nest("abs(", ")", 10_000), "1"),
        (nest("-(", ")", 10_000), if 10_000 % 2 == 0 { "1" } else { "-1" }),
        (nest("sum(", ")", 10_000), "1"),
    ] {
        let (code, v) = post_form(a, "/api/v1/query", &[("query", &q), ("time", "100")]);
        assert_eq!(code, 200, "{}…: {v}", &q[..40]);
        assert_eq!(v["data"]["result"][0]["value"][1], want, "{}…", &q[..40]);
    }
    let (code, v) = post_form(a, "/api/v1/query", &[("query", &nest("abs(", ")", 30_000)), ("time", "100")]);
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("query.max_expression_depth"), "{v}");
    let (code, v) = post_form(a, "/api/v1/format_query", &[("query", &nest("abs(", ")", 5_000))]);
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("query.max_format_depth"), "{v}");
    let (code, v) = post_form(a, "/api/v1/format_query", &[("query", &nest("abs(", ")", 100))]);
    assert_eq!(code, 200, "{v}");
    let (code, v) = get(a, "/api/v1/query", &[("query", "1+1"), ("time", "100")]);
    assert_eq!((code, v["data"]["result"][1].as_str()), (200, Some("2")), "{v}");
}
