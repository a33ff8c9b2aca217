//! `tool_health`: per MCP tool, over a window, calls/s, error ratio and latency quantiles, with
//! the change against the window before. It reads whichever metric conventions the servers use
//! (a mapping per convention, configurable), so one answer covers every server and toolwatch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toolwatch_query::QueryError;
use toolwatch_storage::Labels;

/// How one metric convention spells calls, errors and latency.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthSource {
    /// A name for the convention, reported with each tool.
    pub name: String,
    /// Counter of calls (for a histogram, its `_count`).
    pub calls: String,
    /// The label holding the tool name.
    pub tool_label: String,
    /// Matchers every series must have, e.g. `mcp_method_name="tools/call"`.
    #[serde(default)]
    pub selector: String,
    /// Matchers that pick the failed calls among them, e.g. `status!~"ok|success"`.
    pub error_selector: String,
    /// Histogram (base name) of call latency in seconds; empty when there is none.
    #[serde(default)]
    pub latency: String,
}

/// The two conventions in common use: `mcp_tool_calls_total{tool,status}` with
/// `mcp_tool_latency_seconds`, and OpenTelemetry's `mcp_server_operation_duration_seconds`.
pub fn default_sources() -> Vec<HealthSource> {
    vec![
        HealthSource {
            name: "mcp_tool_calls_total".into(),
            calls: "mcp_tool_calls_total".into(),
            tool_label: "tool".into(),
            selector: String::new(),
            error_selector: r#"status!~"ok|success|""#.into(),
            latency: "mcp_tool_latency_seconds".into(),
        },
        HealthSource {
            name: "opentelemetry".into(),
            calls: "mcp_server_operation_duration_seconds_count".into(),
            tool_label: "gen_ai_tool_name".into(),
            selector: r#"mcp_method_name="tools/call""#.into(),
            error_selector: r#"error_type!="""#.into(),
            latency: "mcp_server_operation_duration_seconds".into(),
        },
    ]
}

/// One window's figures for a tool.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq)]
pub struct WindowStats {
    pub calls_per_second: f64,
    /// Calls in the window (rate × window).
    pub calls: f64,
    /// Failed calls / calls; null without calls.
    pub error_ratio: Option<f64>,
    /// Latency quantiles in seconds; null without a latency histogram or calls.
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize, JsonSchema, PartialEq)]
pub struct ToolHealth {
    pub tool: String,
    /// `job` and `target` of the series, when they have them (which server the tool belongs to).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The metric convention the figures come from.
    pub source: String,
    pub current: WindowStats,
    pub previous: WindowStats,
    /// current − previous error ratio (null when either has no calls).
    pub error_ratio_change: Option<f64>,
    /// Relative change of calls/s and p95 latency, e.g. 0.5 = +50% (null when undefined).
    pub calls_per_second_change: Option<f64>,
    pub p95_change: Option<f64>,
}

const GROUP: &str = "job, target";

fn braces(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!("{{{a}}}"),
        (true, false) => format!("{{{b}}}"),
        (false, false) => format!("{{{a}, {b}}}"),
    }
}

/// The instant queries for one source over `window` (a PromQL duration): calls/s, errors/s,
/// and each quantile.
pub fn queries(s: &HealthSource, window: &str, tool: Option<&str>) -> Vec<(&'static str, String)> {
    let tool_m = tool.map(|t| format!("{}={}", s.tool_label, serde_json::Value::from(t))).unwrap_or_default();
    let sel =
        [s.selector.as_str(), tool_m.as_str()].iter().filter(|x| !x.is_empty()).copied().collect::<Vec<_>>().join(", ");
    let by = format!("{}, {GROUP}", s.tool_label);
    let mut q = vec![
        ("calls", format!("sum by ({by}) (rate({}{}[{window}]))", s.calls, braces(&sel, ""))),
        ("errors", format!("sum by ({by}) (rate({}{}[{window}]))", s.calls, braces(&sel, &s.error_selector))),
    ];
    if !s.latency.is_empty() {
        for (k, phi) in [("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")] {
            q.push((
                k,
                format!(
                    "histogram_quantile({phi}, sum by (le, {by}) (rate({}_bucket{}[{window}])))",
                    s.latency,
                    braces(&sel, "")
                ),
            ));
        }
    }
    q
}

type Key = (String, BTreeMap<String, String>);

fn key(s: &HealthSource, l: &Labels) -> Key {
    let tool = l.get(&s.tool_label).unwrap_or("").to_string();
    let extra = ["job", "target"].iter().filter_map(|n| l.get(n).map(|v| (n.to_string(), v.to_string()))).collect();
    (tool, extra)
}

/// Runs `s`'s queries at `t` and collects each tool's figures.
fn window_stats(
    s: &HealthSource,
    window: &str,
    window_secs: f64,
    tool: Option<&str>,
    t: i64,
    eval: &mut dyn FnMut(&str, i64) -> Result<Vec<(Labels, f64)>, QueryError>,
) -> Result<BTreeMap<Key, WindowStats>, QueryError> {
    let mut out: BTreeMap<Key, WindowStats> = BTreeMap::new();
    let mut errors: BTreeMap<Key, f64> = BTreeMap::new();
    for (kind, q) in queries(s, window, tool) {
        for (l, v) in eval(&q, t)? {
            let k = key(s, &l);
            if k.0.is_empty() {
                continue;
            }
            let fin = v.is_finite().then_some(v);
            match kind {
                "calls" => {
                    let w = out.entry(k).or_default();
                    w.calls_per_second = v;
                    w.calls = v * window_secs;
                }
                "errors" => {
                    errors.insert(k, v);
                }
                "p50" => out.entry(k).or_default().p50_seconds = fin,
                "p95" => out.entry(k).or_default().p95_seconds = fin,
                _ => out.entry(k).or_default().p99_seconds = fin,
            }
        }
    }
    for (k, w) in out.iter_mut() {
        if w.calls_per_second > 0.0 {
            w.error_ratio = Some(errors.get(k).copied().unwrap_or(0.0) / w.calls_per_second);
        } else {
            w.p50_seconds = None;
            w.p95_seconds = None;
            w.p99_seconds = None;
        }
    }
    Ok(out)
}

fn rel(cur: f64, prev: f64) -> Option<f64> {
    (prev > 0.0 && cur.is_finite()).then(|| cur / prev - 1.0)
}

/// Every tool's health at `t` over `window`, worst first (error ratio, then p95, then calls).
pub fn tool_health(
    sources: &[HealthSource],
    window: &str,
    window_ms: i64,
    tool: Option<&str>,
    t: i64,
    eval: &mut dyn FnMut(&str, i64) -> Result<Vec<(Labels, f64)>, QueryError>,
) -> Result<Vec<ToolHealth>, QueryError> {
    let secs = window_ms as f64 / 1000.0;
    let mut all = Vec::new();
    for s in sources {
        let cur = window_stats(s, window, secs, tool, t, eval)?;
        let prev = window_stats(s, window, secs, tool, t - window_ms, eval)?;
        let keys: std::collections::BTreeSet<&Key> = cur.keys().chain(prev.keys()).collect();
        for k in keys {
            let c = cur.get(k).cloned().unwrap_or_default();
            let p = prev.get(k).cloned().unwrap_or_default();
            if c.calls <= 0.0 && p.calls <= 0.0 {
                continue;
            }
            all.push(ToolHealth {
                tool: k.0.clone(),
                labels: k.1.clone(),
                source: s.name.clone(),
                error_ratio_change: c.error_ratio.zip(p.error_ratio).map(|(a, b)| a - b),
                calls_per_second_change: rel(c.calls_per_second, p.calls_per_second),
                p95_change: c.p95_seconds.zip(p.p95_seconds).and_then(|(a, b)| rel(a, b)),
                current: c,
                previous: p,
            });
        }
    }
    let num = |v: Option<f64>| v.unwrap_or(-1.0);
    all.sort_by(|a, b| {
        num(b.current.error_ratio)
            .total_cmp(&num(a.current.error_ratio))
            .then(num(b.current.p95_seconds).total_cmp(&num(a.current.p95_seconds)))
            .then(b.current.calls.total_cmp(&a.current.calls))
            .then(a.tool.cmp(&b.tool))
    });
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_for_the_opentelemetry_convention() {
        let s = &default_sources()[1];
        let q = queries(s, "5m", Some("query"));
        assert_eq!(
            q[0].1,
            r#"sum by (gen_ai_tool_name, job, target) (rate(mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call", gen_ai_tool_name="query"}[5m]))"#
        );
        assert!(q[1].1.contains(r#"gen_ai_tool_name="query", error_type!=""}"#), "{}", q[1].1);
        assert!(q[3].1.starts_with("histogram_quantile(0.95, sum by (le, gen_ai_tool_name, job, target) (rate(mcp_server_operation_duration_seconds_bucket{"));
        for (_, q) in &q {
            toolwatch_query::parse(q).unwrap();
        }
        for (_, q) in queries(&default_sources()[0], "1h", None) {
            toolwatch_query::parse(&q).unwrap();
        }
    }
}
