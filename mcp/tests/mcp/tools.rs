//! The MCP server in process: rmcp's own client talks to `ToolwatchMcp` over an in-memory pipe
//! in both protocol eras, against a real store filled with known samples.

use rmcp::model::{CallToolRequestParams, ClientRequest, GetPromptRequestParams, ReadResourceRequestParams};
use rmcp::service::{PeerRequestOptions, RunningService};
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use toolwatch_mcp::{Backend, Budget, McpMetrics, McpOptions, ToolwatchMcp};
use toolwatch_query::http::{MetadataSource, MetricMetadata, QueryState, RuntimeFacts};
use toolwatch_query::metrics::QueryMetrics;
use toolwatch_storage::{Db, DbOptions, LabelRef};

use crate::support::client::{call, eras, ok, text};

struct Meta;
impl MetadataSource for Meta {
    fn all(&self) -> Vec<MetricMetadata> {
        vec![MetricMetadata {
            metric: "mcp_tool_calls_total".into(),
            typ: "counter".into(),
            help: "Tool calls by outcome".into(),
            unit: String::new(),
        }]
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Fixture {
    _dir: tempfile::TempDir,
    backend: Arc<Backend>,
    registry: Arc<parking_lot::Mutex<prometheus_client::registry::Registry>>,
}

/// A store with 20 minutes of 15s samples: three tools with known call and error rates and
/// latency histograms, 30 `wide` series, and (optionally) a day of `slow` samples.
fn fixture(opts: McpOptions, slow: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let now = now_ms();
    let mut app = db.appender().unwrap();
    let mut put = |labels: &[(&str, &str)], t: i64, v: f64| {
        let refs: Vec<LabelRef> = labels.iter().map(|(n, v)| LabelRef { name: n, value: v }).collect();
        app.append(&refs, t, v).unwrap();
    };
    // Per second: search 2 ok + 1 error (ratio 1/3), fetch 1 ok, list 4 ok; latencies in one
    // bucket each so quantiles are predictable.
    let tools = [("search", 2.0, 1.0, "0.5"), ("fetch", 1.0, 0.0, "0.1"), ("list", 4.0, 0.0, "0.05")];
    for i in 0..=80i64 {
        let t = now - 20 * 60_000 + i * 15_000;
        let secs = (i * 15) as f64;
        for (tool, ok, err, le) in tools {
            put(
                &[("__name__", "mcp_tool_calls_total"), ("job", "demo"), ("status", "ok"), ("tool", tool)],
                t,
                ok * secs,
            );
            put(
                &[("__name__", "mcp_tool_calls_total"), ("job", "demo"), ("status", "error"), ("tool", tool)],
                t,
                err * secs,
            );
            for b in ["0.05", "0.1", "0.5", "+Inf"] {
                let n = if b.parse::<f64>().unwrap_or(f64::INFINITY) >= le.parse::<f64>().unwrap() {
                    (ok + err) * secs
                } else {
                    0.0
                };
                put(
                    &[("__name__", "mcp_tool_latency_seconds_bucket"), ("job", "demo"), ("le", b), ("tool", tool)],
                    t,
                    n,
                );
            }
        }
        for w in 0..30 {
            put(&[("__name__", "wide"), ("w", &format!("{w:02}"))], t, w as f64 + i as f64);
        }
    }
    app.commit().unwrap();
    if slow {
        // A day of 15s samples per series: quantile_over_time over 1d windows at many steps
        // runs for minutes unless canceled.
        let mut app = db.appender().unwrap();
        for s in 0..48 {
            let name = format!("s{s}");
            for i in 0..5760i64 {
                let refs = [LabelRef { name: "__name__", value: "slow" }, LabelRef { name: "n", value: &name }];
                app.append(&refs, now - 86_400_000 + i * 15_000, (i * 7919 % 1000) as f64).unwrap();
            }
        }
        app.commit().unwrap();
    }
    let cell = Arc::new(OnceLock::new());
    let _ = cell.set(db);
    let mut registry = prometheus_client::registry::Registry::default();
    let query = Arc::new(QueryState::new(
        cell,
        toolwatch_query::EngineOptions::default(),
        1,
        Arc::new(Meta),
        RuntimeFacts::default(),
        &toolwatch_query::http::BuildInfo::UNKNOWN,
        QueryMetrics::new(&mut registry),
    ));
    let metrics = McpMetrics::register(&mut registry);
    let backend = Arc::new(Backend { query, rules: None, probe_errors: None, metrics, opts, version: "9.9.9" });
    Fixture { _dir: dir, backend, registry: Arc::new(parking_lot::Mutex::new(registry)) }
}

async fn connect(b: &Arc<Backend>, mode: ClientLifecycleMode) -> RunningService<RoleClient, ()> {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = ToolwatchMcp::new(b.clone(), "pipe");
    tokio::spawn(async move {
        if let Ok(s) = server.serve(server_io).await {
            let _ = s.waiting().await;
        }
    });
    ().serve_with_lifecycle(client_io, mode).await.expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_answers_in_both_eras() {
    let f = fixture(McpOptions::default(), false);
    for (era, mode) in eras() {
        let c = connect(&f.backend, mode).await;
        let info = c.peer().peer_info().expect("server info");
        let si = info.server_info.clone().expect("serverInfo");
        assert_eq!(si.name, "toolwatch", "{era}");
        assert_eq!(si.version, "9.9.9", "{era}");

        let tools = c.peer().list_all_tools().await.unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "alerts",
                "label_names",
                "label_values",
                "list_metrics",
                "probe_status",
                "query",
                "query_range",
                "rules",
                "series",
                "tool_health",
                "tsdb_status"
            ],
            "{era}"
        );
        for t in &tools {
            let a = t.annotations.as_ref().expect("annotations");
            assert_eq!(a.read_only_hint, Some(true), "{}", t.name);
            assert!(t.output_schema.is_some(), "{} has an outputSchema", t.name);
            assert!(t.description.as_deref().unwrap_or("").contains("Example"), "{} shows an example", t.name);
        }

        let q = ok(&call(&c, "query", json!({"query": "sum by (tool) (rate(mcp_tool_calls_total[5m]))"})).await);
        assert_eq!(q["result_type"], "vector");
        let mut rates: Vec<(String, f64)> = q["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"]["tool"].as_str().unwrap().to_string(),
                    (r["value"][1].as_str().unwrap().parse::<f64>().unwrap() * 1e6).round() / 1e6,
                )
            })
            .collect();
        rates.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(rates, [("fetch".to_string(), 1.0), ("list".into(), 4.0), ("search".into(), 3.0)], "{era}");

        let r = ok(&call(&c, "query_range", json!({"query": "wide", "start": "now-10m", "end": "now"})).await);
        assert_eq!(r["result_type"], "matrix");
        assert_eq!(r["step_seconds"], 5.0, "10m range picks a 5s step");
        assert_eq!(r["series_total"], 30);

        let m = ok(&call(&c, "list_metrics", json!({"filter": "mcp_tool"})).await);
        let first = &m["metrics"][0];
        assert_eq!((first["name"].as_str(), first["type"].as_str()), (Some("mcp_tool_calls_total"), Some("counter")));
        assert_eq!(first["series"], 6);
        assert_eq!(m["total"], 2);
        let page = ok(&call(&c, "list_metrics", json!({"limit": 1})).await);
        assert_eq!(page["metrics"][0]["name"], "mcp_tool_calls_total");
        let next = ok(&call(&c, "list_metrics", json!({"limit": 1, "cursor": page["next_cursor"]})).await);
        assert_eq!(next["metrics"][0]["name"], "mcp_tool_latency_seconds_bucket");

        let l = ok(&call(&c, "label_names", json!({"match": ["mcp_tool_calls_total"]})).await);
        assert_eq!(l["values"], json!(["__name__", "job", "status", "tool"]));
        let v = ok(&call(&c, "label_values", json!({"label": "tool", "match": ["mcp_tool_calls_total"]})).await);
        assert_eq!(v["values"], json!(["fetch", "list", "search"]));
        let v = ok(&call(&c, "label_values", json!({"label": "w", "limit": 3})).await);
        assert_eq!(
            (v["values"].as_array().unwrap().len(), v["total"].as_u64(), v["truncated"].as_bool()),
            (3, Some(30), Some(true))
        );
        let s = ok(&call(&c, "series", json!({"match": ["mcp_tool_calls_total{tool=\"search\"}"]})).await);
        assert_eq!(s["total"], 2);
        assert_eq!(s["series"][0]["status"], "error");

        let h = ok(&call(&c, "tool_health", json!({"window": "5m"})).await);
        let tools = h["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 3, "{h}");
        assert_eq!(tools[0]["tool"], "search", "worst (highest error ratio) first");
        let cur = &tools[0]["current"];
        assert!((cur["error_ratio"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{cur}");
        assert!((cur["calls_per_second"].as_f64().unwrap() - 3.0).abs() < 1e-9, "{cur}");
        assert!((cur["p95_seconds"].as_f64().unwrap() - 0.48).abs() < 1e-9, "{cur}");
        assert_eq!(tools[0]["labels"]["job"], "demo");
        assert_eq!(tools[0]["error_ratio_change"].as_f64(), Some(0.0), "same rates in the window before");
        assert_eq!(tools[1]["tool"], "fetch", "then the slowest p95");
        let one = ok(&call(&c, "tool_health", json!({"tool": "list"})).await);
        assert_eq!(one["tools"].as_array().unwrap().len(), 1);
        let none = ok(&call(&c, "tool_health", json!({"tool": "nope"})).await);
        assert!(none["note"].as_str().unwrap().contains("no tool calls"), "{none}");

        assert_eq!(ok(&call(&c, "alerts", json!({})).await)["alerts"], json!([]));
        assert_eq!(ok(&call(&c, "rules", json!({})).await)["groups"], json!([]));
        let p = ok(&call(&c, "probe_status", json!({})).await);
        assert!(p["note"].as_str().unwrap().contains("probes"), "{p}");
        let st = ok(&call(&c, "tsdb_status", json!({"limit": 2})).await);
        assert_eq!(st["status"]["seriesCountByMetricName"][0], json!({"name": "wide", "value": 30}));
        c.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_an_agent_can_act_on() {
    let f = fixture(McpOptions::default(), false);
    for (era, mode) in eras() {
        let c = connect(&f.backend, mode).await;
        let r = call(&c, "query", json!({"query": "sum(rate(mcp_tool_calls_total[5m])"})).await;
        assert_eq!(r.is_error, Some(true), "{era}");
        let t = text(&r);
        assert!(t.contains("1:") && t.contains("unclosed") && t.contains("Hint:"), "{t}");

        let r = call(&c, "query", json!({"query": "rat(mcp_tool_calls_total[5m])"})).await;
        assert!(text(&r).contains("Did you mean rate"), "{}", text(&r));

        let r = call(&c, "query", json!({"query": "sum(rate(mcp_tool_call_total[5m]))"})).await;
        assert_eq!(r.is_error, Some(true));
        let t = text(&r);
        assert!(
            t.contains("\"mcp_tool_call_total\" does not exist") && t.contains("closest: mcp_tool_calls_total"),
            "{t}"
        );

        // Deep queries answer (10,000 levels); past query.max_expression_depth the result is an
        // error that names the setting, and the server goes on answering.
        let nest = |n: usize| format!("{}vector(1){}", "abs(".repeat(n), ")".repeat(n));
        let q = ok(&call(&c, "query", json!({"query": nest(10_000)})).await);
        assert_eq!(q["result"][0]["value"][1], "1", "{era}: {q}");
        let r = call(&c, "query", json!({"query": nest(30_000)})).await;
        assert_eq!(r.is_error, Some(true), "{era}");
        assert!(text(&r).contains("query.max_expression_depth"), "{era}: {}", text(&r));

        let r = call(&c, "label_values", json!({"label": "tol"})).await;
        assert!(text(&r).contains("closest label names: tool"), "{}", text(&r));

        let r = call(&c, "query_range", json!({"query": "up", "start": "yesterday"})).await;
        assert!(text(&r).contains("invalid start") && text(&r).contains("now-1h"), "{}", text(&r));

        // Protocol errors: an unknown tool and arguments of the wrong shape.
        let e = c.peer().call_tool(CallToolRequestParams::new("no_such_tool")).await.unwrap_err();
        match e {
            rmcp::ServiceError::McpError(e) => assert_eq!(e.code.0, -32602, "{e:?}"),
            other => panic!("unknown tool gave {other:?}"),
        }
        let e = c
            .peer()
            .call_tool(
                CallToolRequestParams::new("query").with_arguments(json!({"query": 5}).as_object().unwrap().clone()),
            )
            .await
            .unwrap_err();
        match e {
            rmcp::ServiceError::McpError(e) => {
                assert_eq!(e.code.0, -32602, "{e:?}");
                assert!(e.message.contains("query"), "{e:?}");
            }
            other => panic!("malformed arguments gave {other:?}"),
        }
        c.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_answers_are_cut_to_the_budget() {
    let opts =
        McpOptions { budget: Budget { max_series: 5, max_points: 1000, max_bytes: 1 << 20 }, ..Default::default() };
    let f = fixture(opts, false);
    let c = connect(&f.backend, ClientLifecycleMode::Initialize).await;
    let r = ok(&call(&c, "query_range", json!({"query": "wide", "start": "now-5m", "step": "1m"})).await);
    assert_eq!(r["truncated"], true);
    assert_eq!(r["series_total"], 30);
    assert_eq!(r["result"].as_array().unwrap().len(), 5);
    let sums = r["summaries"].as_array().unwrap();
    assert_eq!(sums.len(), 25);
    assert_eq!(sums[0]["metric"]["w"], "05");
    assert!(sums[0]["max"].as_f64().unwrap() >= sums[0]["min"].as_f64().unwrap());
    let hint = r["hint"].as_str().unwrap();
    assert!(hint.contains("max_series=5") && hint.contains("topk"), "{hint}");
    // A small answer is whole.
    let r = ok(&call(&c, "query", json!({"query": "count(wide)"})).await);
    assert_eq!(r["truncated"], false);
    // The list tools stay within the same budget.
    let s = ok(&call(&c, "series", json!({"match": ["wide"], "limit": 1000})).await);
    assert_eq!(
        (s["series"].as_array().unwrap().len(), s["total"].as_u64(), s["truncated"].as_bool()),
        (5, Some(30), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_and_prompts() {
    let f = fixture(McpOptions::default(), false);
    let c = connect(&f.backend, ClientLifecycleMode::Initialize).await;
    let res = c.peer().list_all_resources().await.unwrap();
    let uris: Vec<&str> = res.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["toolwatch://metrics", "toolwatch://alerts"]);
    let tpl = c.peer().list_all_resource_templates().await.unwrap();
    assert_eq!(tpl[0].uri_template, "toolwatch://metric/{name}");
    let read = |uri: &'static str| {
        let c = &c;
        async move { c.peer().read_resource(ReadResourceRequestParams::new(uri)).await }
    };
    let body = |r: rmcp::model::ReadResourceResult| -> Value {
        match &r.contents[0] {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => serde_json::from_str(text).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let catalog = body(read("toolwatch://metrics").await.unwrap());
    assert_eq!(catalog["total"], 3);
    let one = body(read("toolwatch://metric/mcp_tool_calls_total").await.unwrap());
    assert_eq!(one["labels"], json!(["__name__", "job", "status", "tool"]));
    assert_eq!(one["metric"]["help"], "Tool calls by outcome");
    let missing = read("toolwatch://metric/nope").await.unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");

    let prompts = c.peer().list_all_prompts().await.unwrap();
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["investigate_alert", "tool_health_report", "slow_tool"]);
    let mut p = GetPromptRequestParams::new("slow_tool");
    p.arguments = Some(json!({"tool": "search"}).as_object().unwrap().clone());
    let got = c.peer().get_prompt(p).await.unwrap();
    let msg = serde_json::to_string(&got.messages).unwrap();
    assert!(msg.contains("tool_health") && msg.contains("search"), "{msg}");
    let e = c.peer().get_prompt(GetPromptRequestParams::new("slow_tool")).await.unwrap_err();
    assert!(e.to_string().contains("tool"), "{e}");
}

/// A canceled tool call stops its query: with one query slot, the next query gets it long
/// before the canceled one could have finished, and the query is counted as canceled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_the_query() {
    let opts = McpOptions { tool_timeout: Duration::from_secs(120), ..Default::default() };
    let f = fixture(opts, true);
    let c = connect(&f.backend, ClientLifecycleMode::Initialize).await;
    let args = json!({"query": "quantile_over_time(0.5, slow[1d])", "start": "now-20h", "step": "7s"});
    let req = ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(
        CallToolRequestParams::new("query_range").with_arguments(args.as_object().unwrap().clone()),
    ));
    let handle = c.peer().send_cancellable_request(req, PeerRequestOptions::no_options()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let began = Instant::now();
    handle.cancel(Some("test".into())).await.unwrap();
    let canceled = || {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &f.registry.lock()).unwrap();
        s.lines()
            .any(|l| l.starts_with("toolwatch_queries_total") && l.contains("result=\"canceled\"") && l.ends_with(" 1"))
    };
    while !canceled() {
        assert!(began.elapsed() < Duration::from_secs(10), "query not counted as canceled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = ok(&call(&c, "query", json!({"query": "1"})).await);
    assert_eq!(r["result"][1], "1");
    assert!(began.elapsed() < Duration::from_secs(10), "the canceled query kept the slot for {:?}", began.elapsed());
}

/// Every request is measured: tool calls by tool and outcome, other methods by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_measured() {
    let f = fixture(McpOptions::default(), false);
    let c = connect(&f.backend, ClientLifecycleMode::Initialize).await;
    ok(&call(&c, "query", json!({"query": "1"})).await);
    call(&c, "query", json!({"query": "("})).await;
    let _ = c.peer().call_tool(CallToolRequestParams::new("nope")).await;
    let _ = c.peer().list_all_tools().await;
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, &f.registry.lock()).unwrap();
    let count = |part: &str| -> f64 {
        s.lines()
            .filter(|l| l.starts_with("mcp_server_operation_duration_seconds_count") && l.contains(part))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(count(r#"gen_ai_tool_name="query",error_type="""#), 1.0, "{s}");
    assert_eq!(count(r#"gen_ai_tool_name="query",error_type="tool_error""#), 1.0, "{s}");
    assert_eq!(count(r#"gen_ai_tool_name="_unknown",error_type="-32602""#), 1.0, "{s}");
    assert_eq!(count(r#"mcp_method_name="tools/list""#), 1.0, "{s}");
    assert_eq!(count(r#"mcp_method_name="initialize""#), 1.0, "{s}");
    assert!(s.contains(r#"network_transport="pipe""#) && s.contains(r#"mcp_protocol_version="2025-11-25""#), "{s}");
    assert!(s.contains(r#"toolwatch_mcp_tool_calls_total{tool="query",status="tool_error"} 1"#), "{s}");
}

/// A query past the per-tool timeout fails with the limit named and advice to narrow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_name_the_limit() {
    let opts = McpOptions { tool_timeout: Duration::from_millis(300), ..Default::default() };
    let f = fixture(opts, true);
    let c = connect(&f.backend, ClientLifecycleMode::Initialize).await;
    let began = Instant::now();
    let r = call(
        &c,
        "query_range",
        json!({"query": "quantile_over_time(0.5, slow[1d])", "start": "now-20h", "step": "7s"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("timed out") && t.contains("mcp.tool_timeout") && t.contains("narrow"), "{t}");
    assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
    // A shorter per-call timeout applies too.
    let r = call(
        &c,
        "query_range",
        json!({"query": "quantile_over_time(0.5, slow[1d])", "start": "now-20h", "step": "7s", "timeout": "50ms"}),
    )
    .await;
    assert!(text(&r).contains("limit: 50ms"), "{}", text(&r));
}
