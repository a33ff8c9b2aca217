//! What each tool does, apart from the MCP plumbing: arguments, outputs and their evaluation
//! through the query engine and the rule manager. Every failure comes back as a `ToolError`
//! whose text says what went wrong and what to do instead.

use crate::budget::{fit, labels_map, QueryOutput};
use crate::health::{tool_health, ToolHealth};
use crate::hints::{closest, metric_names, query_error};
use crate::Backend;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use toolwatch_query::http::{format_rfc3339, observed, run_query, selector_sets, MAX_TIME, MIN_TIME};
use toolwatch_query::time::{parse_duration_ms, parse_time};
use toolwatch_query::{QueryError, QueryValue};
use toolwatch_storage::{Labels, MatchOp, Matcher};

/// A failure the agent should read: shown as `isError: true` with this text.
#[derive(Debug)]
pub struct ToolError(pub String);

impl<E: std::fmt::Display> From<E> for ToolError {
    fn from(e: E) -> Self {
        ToolError(e.to_string())
    }
}

pub type ToolResult<T> = Result<T, ToolError>;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A time as agents write it: `now`, `now-1h`, RFC 3339 or unix seconds.
pub fn parse_when(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rest) = s.strip_prefix("now-") {
        return parse_duration_ms(rest).map(|d| now - d).map_err(|e| format!("{s:?}: {e}"));
    }
    parse_time(s).map_err(|e| format!("{s:?}: {e}. Use now, now-1h, RFC 3339 (2026-11-30T10:00:00Z) or unix seconds"))
}

fn when(arg: &Option<String>, default: i64, now: i64, name: &str) -> ToolResult<i64> {
    match arg.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => parse_when(s, now).map_err(|e| ToolError(format!("invalid {name}: {e}"))),
    }
}

/// Steps an agent can read at a glance; the query range picks the smallest one that gives at
/// most `TARGET_POINTS` points per series.
const NICE_STEPS_S: [i64; 17] =
    [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const TARGET_POINTS: i64 = 120;

pub fn auto_step_ms(range_ms: i64) -> i64 {
    let want = range_ms / TARGET_POINTS;
    NICE_STEPS_S.iter().map(|s| s * 1000).find(|s| *s >= want).unwrap_or_else(|| want.max(1000))
}

const NARROW: &str = "Narrow it: add label matchers (e.g. {tool=\"search\"}), aggregate (sum by (tool) (...)), \
    keep the worst few with topk(5, ...), or for ranges use a larger step or a shorter range.";

#[derive(Debug, Deserialize, JsonSchema)]
pub struct QueryArgs {
    /// PromQL expression, e.g. `sum by (tool) (rate(mcp_tool_calls_total[5m]))`.
    pub query: String,
    /// Evaluation time: `now` (default), `now-1h`, RFC 3339 or unix seconds.
    #[serde(default)]
    pub time: Option<String>,
    /// Evaluation timeout, e.g. `5s`; capped by the server's per-tool timeout.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct QueryRangeArgs {
    /// PromQL expression, e.g. `histogram_quantile(0.95, sum by (le, tool) (rate(mcp_tool_latency_seconds_bucket[5m])))`.
    pub query: String,
    /// Range start: `now-1h` (default), RFC 3339 or unix seconds.
    #[serde(default)]
    pub start: Option<String>,
    /// Range end: `now` (default), RFC 3339 or unix seconds.
    #[serde(default)]
    pub end: Option<String>,
    /// Resolution, e.g. `30s` or `5m`; chosen from the range (about 120 points) when omitted.
    #[serde(default)]
    pub step: Option<String>,
    /// Evaluation timeout, e.g. `5s`; capped by the server's per-tool timeout.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListMetricsArgs {
    /// Keep metric names containing this text (or matching it, with `regex: true`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Treat `filter` as an RE2 regular expression matched anywhere in the name.
    #[serde(default)]
    pub regex: bool,
    /// Page size (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MetricInfo {
    pub name: String,
    /// counter, gauge, histogram, summary… from remote-write metadata; empty when unknown.
    #[serde(rename = "type")]
    pub typ: String,
    pub help: String,
    pub unit: String,
    /// Series with this name.
    pub series: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListMetricsOutput {
    pub metrics: Vec<MetricInfo>,
    /// Metric names matching the filter, across all pages.
    pub total: usize,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LabelsArgs {
    /// Series selectors to restrict to, e.g. `["mcp_tool_calls_total{job=\"search\"}"]`.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Start of the time range (default: all data); `now-1h`, RFC 3339 or unix seconds.
    #[serde(default)]
    pub start: Option<String>,
    /// End of the time range (default: all data).
    #[serde(default)]
    pub end: Option<String>,
    /// At most this many values (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LabelValuesArgs {
    /// Label name, e.g. `tool`.
    pub label: String,
    /// Series selectors to restrict to, e.g. `["mcp_tool_calls_total"]`.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    /// At most this many values (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StringsOutput {
    pub values: Vec<String>,
    /// All values before the limit (and the result budget, mcp.budget.max_bytes).
    pub total: usize,
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SeriesArgs {
    /// One or more series selectors, e.g. `["mcp_tool_calls_total{status=\"error\"}"]`.
    #[serde(rename = "match")]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    /// At most this many series (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SeriesOutput {
    pub series: Vec<BTreeMap<String, String>>,
    pub total: usize,
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ToolHealthArgs {
    /// Only this tool (default: every tool seen).
    #[serde(default)]
    pub tool: Option<String>,
    /// Window length, e.g. `5m`, `1h` (default `15m`); compared with the window before it.
    #[serde(default)]
    pub window: Option<String>,
    /// End of the window (default `now`).
    #[serde(default)]
    pub time: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ToolHealthOutput {
    /// Worst first: highest error ratio, then slowest p95, then busiest.
    pub tools: Vec<ToolHealth>,
    pub window: String,
    pub time: String,
    /// Set when no tool had calls: what was looked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AlertsArgs {
    /// `firing` or `pending` (default: both).
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AlertsOutput {
    /// Each alert: state, labels, annotations, activeAt, value.
    pub alerts: Vec<serde_json::Value>,
    /// Alerts before the result budget (mcp.budget.max_series) cut the list.
    pub total: usize,
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RulesArgs {
    /// `alert` or `record` (default: both).
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RulesOutput {
    /// Each group: name, file, interval, rules (name, query, health, lastError, state, alerts).
    pub groups: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProbeStatusArgs {
    /// Only this probe target (default: all).
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct ProbeTarget {
    pub target: String,
    /// up, down, auth_required, protocol_error or timeout (from `mcp_probe_state`).
    pub state: String,
    /// Whether the last probe succeeded (`mcp_probe_success`).
    pub success: Option<bool>,
    /// Last total probe duration in seconds.
    pub duration_seconds: Option<f64>,
    /// Tools the server listed.
    pub tools: Option<f64>,
    /// Schema changes counted so far.
    pub schema_changes: Option<f64>,
    /// protocol_version, server_name, server_version (from `mcp_probe_info`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub info: BTreeMap<String, String>,
    /// Why the latest probe failed (code, message), when this toolwatch recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProbeError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProbeStatusOutput {
    pub targets: Vec<ProbeTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TsdbStatusArgs {
    /// Entries in each top list (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TsdbStatusOutput {
    /// Prometheus' `/api/v1/status/tsdb` data: headStats, seriesCountByMetricName,
    /// labelValueCountByLabelName, memoryInBytesByLabelName, seriesCountByLabelValuePair.
    pub status: serde_json::Value,
}

impl Backend {
    fn timeout(&self, arg: &Option<String>) -> ToolResult<Duration> {
        let max = self.opts.tool_timeout;
        match arg.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(max),
            Some(s) => {
                let d =
                    toolwatch_query::time::parse_duration(s).map_err(|e| ToolError(format!("invalid timeout: {e}")))?;
                Ok(d.min(max))
            }
        }
    }

    fn timeout_text(&self, t: Duration) -> String {
        format!("limit: {:?}; the per-tool limit is mcp.tool_timeout = {:?}", t, self.opts.tool_timeout)
    }

    /// Runs `f` on the query pool; a canceled request stops it (the dropped future flags the
    /// evaluation, which checks the flag between series and steps).
    async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        ct: &CancellationToken,
        f: impl FnOnce(&toolwatch_query::Engine, &toolwatch_query::QueryControl) -> Result<T, QueryError> + Send + 'static,
    ) -> Result<T, QueryError> {
        tokio::select! {
            r = run_query(&self.query, Some(timeout), f) => r,
            _ = ct.cancelled() => Err(QueryError::Canceled("the MCP request")),
        }
    }

    async fn run_value(
        &self,
        kind: &'static str,
        timeout: Duration,
        ct: &CancellationToken,
        f: impl FnOnce(
                &toolwatch_query::Engine,
                &toolwatch_query::QueryControl,
            ) -> Result<(QueryValue, toolwatch_query::QueryStats), QueryError>
            + Send
            + 'static,
    ) -> Result<QueryValue, QueryError> {
        let st = self.query.clone();
        let obs = observed(&st, kind, run_query(&st, Some(timeout), f));
        tokio::select! {
            r = obs => r.map(|(v, _)| v),
            _ = ct.cancelled() => Err(QueryError::Canceled("the MCP request")),
        }
    }

    fn db(&self) -> ToolResult<toolwatch_storage::Db> {
        self.query
            .db
            .get()
            .cloned()
            .ok_or_else(|| ToolError("toolwatch is starting (WAL replay in progress); try again shortly".into()))
    }

    /// For an empty answer: the metric names the query uses that have no series at all, each
    /// with the closest names that do exist.
    fn unknown_metrics(&self, q: &str) -> Option<String> {
        let expr = toolwatch_query::parse(q).ok()?;
        let mut names = Vec::new();
        metric_names(&expr, &mut names);
        let db = self.db().ok()?;
        let known = db.querier(MIN_TIME, MAX_TIME).label_values("__name__", &[]);
        let mut msgs = Vec::new();
        for n in names {
            if known.binary_search(&n).is_err() && !known.contains(&n) {
                let near = closest(&n, known.iter().map(String::as_str), 5);
                msgs.push(if near.is_empty() {
                    format!("metric {n:?} does not exist (list_metrics shows what does)")
                } else {
                    format!("metric {n:?} does not exist; closest: {}", near.join(", "))
                });
            }
        }
        (!msgs.is_empty()).then(|| msgs.join("\n"))
    }

    fn query_failed(&self, e: QueryError, timeout: Duration) -> ToolError {
        ToolError(query_error(&e, &self.timeout_text(timeout)))
    }

    pub async fn query(&self, a: QueryArgs, ct: &CancellationToken) -> ToolResult<QueryOutput> {
        let now = now_ms();
        let t = when(&a.time, now, now, "time")?;
        let timeout = self.timeout(&a.timeout)?;
        let q = a.query.clone();
        let v = self
            .run_value("instant", timeout, ct, move |e, c| e.instant(&q, t, c))
            .await
            .map_err(|e| self.query_failed(e, timeout))?;
        self.shape(&a.query, v, |o| o.time = Some(format_rfc3339(t)))
    }

    pub async fn query_range(&self, a: QueryRangeArgs, ct: &CancellationToken) -> ToolResult<QueryOutput> {
        let now = now_ms();
        let end = when(&a.end, now, now, "end")?;
        let start = when(&a.start, end - 3_600_000, now, "start")?;
        if end < start {
            return Err(ToolError("invalid range: end is before start".into()));
        }
        let step = match a.step.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => parse_duration_ms(s).map_err(|e| ToolError(format!("invalid step: {e}")))?,
            None => auto_step_ms(end - start),
        };
        if step <= 0 {
            return Err(ToolError("invalid step: must be positive, e.g. 30s".into()));
        }
        let timeout = self.timeout(&a.timeout)?;
        let q = a.query.clone();
        let v = self
            .run_value("range", timeout, ct, move |e, c| e.range(&q, start, end, step, c))
            .await
            .map_err(|e| self.query_failed(e, timeout))?;
        self.shape(&a.query, v, |o| {
            o.start = Some(format_rfc3339(start));
            o.end = Some(format_rfc3339(end));
            o.step_seconds = Some(step as f64 / 1000.0);
        })
    }

    fn shape(&self, q: &str, v: QueryValue, set: impl FnOnce(&mut QueryOutput)) -> ToolResult<QueryOutput> {
        let empty = match &v {
            QueryValue::Vector(r) => r.is_empty(),
            QueryValue::Matrix(m) => m.is_empty(),
            _ => false,
        };
        if empty {
            if let Some(msg) = self.unknown_metrics(q) {
                return Err(ToolError(msg));
            }
        }
        let mut out = fit(&v, &self.opts.budget, NARROW);
        set(&mut out);
        Ok(out)
    }

    pub async fn list_metrics(&self, a: ListMetricsArgs, ct: &CancellationToken) -> ToolResult<ListMetricsOutput> {
        let limit = a.limit.unwrap_or(100).clamp(1, 1000);
        let re = match (&a.filter, a.regex) {
            (Some(f), true) => Some(regex::Regex::new(f).map_err(|e| ToolError(format!("invalid filter regex: {e}")))?),
            _ => None,
        };
        let after = a.cursor.clone().unwrap_or_default();
        let metadata: BTreeMap<String, toolwatch_query::http::MetricMetadata> =
            self.query.metadata.all().into_iter().map(|m| (m.metric.clone(), m)).collect();
        let filter = a.filter.clone().unwrap_or_default();
        let (page, total, more) = self
            .run(self.opts.tool_timeout, ct, move |e, _| {
                let q = e.db().querier(MIN_TIME, MAX_TIME);
                let mut names = q.label_values("__name__", &[]);
                names.sort();
                names.retain(|n| match &re {
                    Some(re) => re.is_match(n),
                    None => n.contains(filter.as_str()),
                });
                let total = names.len();
                let start = names.partition_point(|n| n.as_str() <= after.as_str());
                let page: Vec<(String, usize)> = names[start..]
                    .iter()
                    .take(limit)
                    .map(|n| {
                        let m = Matcher::new(MatchOp::Equal, "__name__", n).expect("equality matcher");
                        (n.clone(), q.series_labels(&[m]).len())
                    })
                    .collect();
                let more = names.len() > start + page.len();
                Ok((page, total, more))
            })
            .await
            .map_err(|e| ToolError(e.to_string()))?;
        let next_cursor = if more { page.last().map(|(n, _)| n.clone()) } else { None };
        let metrics = page
            .into_iter()
            .map(|(name, series)| {
                // Histograms and counters are described under their base name.
                let base = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| metadata.contains_key(*b)))
                    .unwrap_or(&name);
                let m = metadata.get(&name).or_else(|| metadata.get(base));
                MetricInfo {
                    typ: m.map(|m| m.typ.clone()).unwrap_or_default(),
                    help: m.map(|m| m.help.clone()).unwrap_or_default(),
                    unit: m.map(|m| m.unit.clone()).unwrap_or_default(),
                    name,
                    series,
                }
            })
            .collect();
        Ok(ListMetricsOutput { metrics, total, next_cursor })
    }

    fn range(&self, start: &Option<String>, end: &Option<String>) -> ToolResult<(i64, i64)> {
        let now = now_ms();
        Ok((when(start, MIN_TIME, now, "start")?, when(end, MAX_TIME, now, "end")?))
    }

    fn sets(&self, matchers: &[String]) -> ToolResult<Vec<Vec<Matcher>>> {
        let refs: Vec<&str> = matchers.iter().map(String::as_str).collect();
        selector_sets(&refs).map_err(|e| {
            ToolError(format!(
                "invalid series selector: {e}\nHint: a selector looks like mcp_tool_calls_total{{tool=\"search\"}}"
            ))
        })
    }

    pub async fn label_names(&self, a: LabelsArgs, ct: &CancellationToken) -> ToolResult<StringsOutput> {
        let sets = self.sets(&a.matchers)?;
        let (start, end) = self.range(&a.start, &a.end)?;
        let v = self
            .run(self.opts.tool_timeout, ct, move |e, _| {
                let q = e.db().querier(start, end);
                Ok(if sets.is_empty() {
                    q.label_names(&[])
                } else {
                    sets.iter().flat_map(|m| q.label_names(m)).collect()
                })
            })
            .await
            .map_err(|e| ToolError(e.to_string()))?;
        Ok(strings(v, a.limit, &self.opts.budget))
    }

    pub async fn label_values(&self, a: LabelValuesArgs, ct: &CancellationToken) -> ToolResult<StringsOutput> {
        if !toolwatch_query::value::valid_label_name(&a.label) {
            return Err(ToolError(format!("invalid label name {:?}: use letters, digits and _, e.g. tool", a.label)));
        }
        let sets = self.sets(&a.matchers)?;
        let (start, end) = self.range(&a.start, &a.end)?;
        let name = a.label.clone();
        let v = self
            .run(self.opts.tool_timeout, ct, move |e, _| {
                let q = e.db().querier(start, end);
                Ok(if sets.is_empty() {
                    q.label_values(&name, &[])
                } else {
                    sets.iter().flat_map(|m| q.label_values(&name, m)).collect()
                })
            })
            .await
            .map_err(|e| ToolError(e.to_string()))?;
        if v.is_empty() {
            let names = self
                .label_names(LabelsArgs { matchers: a.matchers, start: a.start, end: a.end, limit: Some(1000) }, ct)
                .await?;
            if !names.values.contains(&a.label) {
                let near = closest(&a.label, names.values.iter().map(String::as_str), 5);
                return Err(ToolError(format!(
                    "no series has label {:?}{}",
                    a.label,
                    if near.is_empty() { String::new() } else { format!("; closest label names: {}", near.join(", ")) }
                )));
            }
        }
        Ok(strings(v, a.limit, &self.opts.budget))
    }

    pub async fn series(&self, a: SeriesArgs, ct: &CancellationToken) -> ToolResult<SeriesOutput> {
        if a.matchers.is_empty() {
            return Err(ToolError("give at least one selector in match, e.g. [\"mcp_tool_calls_total\"]".into()));
        }
        let sets = self.sets(&a.matchers)?;
        let (start, end) = self.range(&a.start, &a.end)?;
        let limit = a.limit.unwrap_or(100).clamp(1, self.opts.budget.max_series.max(1));
        let mut all: Vec<Labels> = self
            .run(self.opts.tool_timeout, ct, move |e, _| {
                let q = e.db().querier(start, end);
                Ok(sets.iter().flat_map(|m| q.series_labels(m)).collect())
            })
            .await
            .map_err(|e| ToolError(e.to_string()))?;
        all.sort();
        all.dedup();
        let total = all.len();
        all.truncate(limit);
        let mut series: Vec<BTreeMap<String, String>> = all.iter().map(labels_map).collect();
        series.truncate(fit_bytes(&series, limit, self.opts.budget.max_bytes));
        Ok(SeriesOutput { truncated: series.len() < total, series, total })
    }

    /// Instant query returning plain (labels, value) rows, for the tools built on PromQL.
    async fn rows(&self, q: String, t: i64, ct: &CancellationToken) -> Result<Vec<(Labels, f64)>, QueryError> {
        let v = self.run_value("instant", self.opts.tool_timeout, ct, move |e, c| e.instant(&q, t, c)).await?;
        Ok(match v {
            QueryValue::Vector(rows) => rows.into_iter().map(|(l, _, v)| (l, v)).collect(),
            _ => Vec::new(),
        })
    }

    pub async fn tool_health(&self, a: ToolHealthArgs, ct: &CancellationToken) -> ToolResult<ToolHealthOutput> {
        let now = now_ms();
        let t = when(&a.time, now, now, "time")?;
        let window = a.window.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "15m".into());
        let window_ms = parse_duration_ms(&window).map_err(|e| ToolError(format!("invalid window: {e}")))?;
        if window_ms <= 0 {
            return Err(ToolError("invalid window: must be positive, e.g. 15m".into()));
        }
        // The engine is synchronous per query; the queries are few and small, so collect them
        // first and run them one by one on the pool.
        let sources = self.opts.health_sources.clone();
        let tool = a.tool.clone();
        let w2 = window.clone();
        let st = self.query.clone();
        let timeout = self.opts.tool_timeout;
        let fut = run_query(&st, Some(timeout), move |e, c| {
            let mut eval = |q: &str, t: i64| -> Result<Vec<(Labels, f64)>, QueryError> {
                Ok(match e.instant(q, t, c)?.0 {
                    QueryValue::Vector(rows) => rows.into_iter().map(|(l, _, v)| (l, v)).collect(),
                    _ => Vec::new(),
                })
            };
            tool_health(&sources, &w2, window_ms, tool.as_deref(), t, &mut eval)
        });
        let tools = tokio::select! {
            r = fut => r.map_err(|e| self.query_failed(e, timeout))?,
            _ = ct.cancelled() => return Err(ToolError("canceled".into())),
        };
        let note = tools.is_empty().then(|| {
            let looked: Vec<String> = self
                .opts
                .health_sources
                .iter()
                .map(|s| format!("{} (tool label {:?})", s.calls, s.tool_label))
                .collect();
            format!(
                "no tool calls in the last two {window} windows{}; looked for {}",
                a.tool.as_ref().map(|t| format!(" for tool {t:?}")).unwrap_or_default(),
                looked.join(" and ")
            )
        });
        Ok(ToolHealthOutput { tools, window, time: format_rfc3339(t), note })
    }

    pub fn alerts(&self, a: AlertsArgs) -> ToolResult<AlertsOutput> {
        let Some(rules) = &self.rules else {
            return Ok(AlertsOutput { alerts: Vec::new(), total: 0, truncated: false });
        };
        if let Some(s) = &a.state {
            if s != "firing" && s != "pending" {
                return Err(ToolError(format!("invalid state {s:?}: use firing or pending")));
            }
        }
        let mut alerts = rules.alerts_json();
        alerts.retain(|x| a.state.as_deref().is_none_or(|s| x["state"] == s));
        let total = alerts.len();
        let keep = fit_bytes(&alerts, self.opts.budget.max_series, self.opts.budget.max_bytes);
        alerts.truncate(keep);
        Ok(AlertsOutput { truncated: alerts.len() < total, alerts, total })
    }

    pub fn rules(&self, a: RulesArgs) -> ToolResult<RulesOutput> {
        let Some(rules) = &self.rules else {
            return Ok(RulesOutput { groups: Vec::new() });
        };
        let v = rules.rules_json(a.typ.as_deref()).map_err(ToolError)?;
        let groups = v["groups"].as_array().cloned().unwrap_or_default();
        Ok(RulesOutput { groups })
    }

    pub async fn probe_status(&self, a: ProbeStatusArgs, ct: &CancellationToken) -> ToolResult<ProbeStatusOutput> {
        let sel = a
            .target
            .as_ref()
            .map(|t| format!("{{target={}}}", serde_json::Value::from(t.as_str())))
            .unwrap_or_default();
        let sel_total = match &a.target {
            Some(t) => format!("{{target={}, phase=\"total\"}}", serde_json::Value::from(t.as_str())),
            None => "{phase=\"total\"}".to_string(),
        };
        // Each mcp_probe_* series and what it fills in of its target's entry.
        type Fill = fn(&mut ProbeTarget, &Labels, f64);
        let table: [(String, Fill); 6] = [
            (format!("mcp_probe_success{sel}"), |p, _, v| p.success = Some(v == 1.0)),
            (format!("mcp_probe_state{sel} == 1"), |p, l, _| {
                if let Some(s) = l.get("state") {
                    p.state = s.to_string();
                }
            }),
            (format!("mcp_probe_duration_seconds{sel_total}"), |p, _, v| p.duration_seconds = Some(v)),
            (format!("mcp_probe_tools{sel}"), |p, _, v| p.tools = Some(v)),
            (format!("mcp_probe_schema_changes_total{sel}"), |p, _, v| p.schema_changes = Some(v)),
            (format!("mcp_probe_info{sel}"), |p, l, _| {
                for x in l.iter().filter(|x| !matches!(&*x.name, "__name__" | "target" | "job" | "instance")) {
                    p.info.insert(x.name.to_string(), x.value.to_string());
                }
            }),
        ];
        let t = now_ms();
        let mut by: BTreeMap<String, ProbeTarget> = BTreeMap::new();
        for (q, fill) in table {
            for (l, v) in self.rows(q, t, ct).await.map_err(|e| ToolError(e.to_string()))? {
                let Some(target) = l.get("target") else { continue };
                let p = by
                    .entry(target.to_string())
                    .or_insert_with(|| ProbeTarget { target: target.to_string(), ..Default::default() });
                fill(p, &l, v);
            }
        }
        if let Some(pe) = &self.probe_errors {
            for t in by.values_mut() {
                t.error = pe.last_error(&t.target).map(|(code, message)| ProbeError { code, message });
            }
        }
        let note = by.is_empty().then(|| {
            "no probe results (mcp_probe_success) in the last 5 minutes: configure `probes:` or push results to /api/v1/probes"
                .to_string()
        });
        Ok(ProbeStatusOutput { targets: by.into_values().collect(), note })
    }

    pub async fn tsdb_status(&self, a: TsdbStatusArgs, ct: &CancellationToken) -> ToolResult<TsdbStatusOutput> {
        let limit = a.limit.unwrap_or(10).clamp(1, 1000);
        let (s, _) = self
            .run(self.opts.tool_timeout, ct, move |e, c| toolwatch_query::http::tsdb_stats(e.db(), limit, c))
            .await
            .map_err(|e| ToolError(e.to_string()))?;
        Ok(TsdbStatusOutput { status: serde_json::from_str(&s)? })
    }
}

/// How many leading items fit in `max_items` and `max_bytes` of JSON: list results stay within
/// the same budget as query results.
fn fit_bytes<T: Serialize>(items: &[T], max_items: usize, max_bytes: usize) -> usize {
    let mut bytes = 0;
    for (i, x) in items.iter().enumerate().take(max_items) {
        bytes += serde_json::to_string(x).map_or(0, |j| j.len() + 1);
        if bytes > max_bytes {
            return i;
        }
    }
    items.len().min(max_items)
}

fn strings(mut v: Vec<String>, limit: Option<usize>, budget: &crate::budget::Budget) -> StringsOutput {
    v.sort();
    v.dedup();
    let limit = limit.unwrap_or(100).max(1);
    let total = v.len();
    v.truncate(fit_bytes(&v, limit, budget.max_bytes));
    StringsOutput { truncated: v.len() < total, values: v, total }
}

pub type Shared = Arc<Backend>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_steps() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_when("now", now), Ok(now));
        assert_eq!(parse_when("now-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_when("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_when("2023-11-14T22:13:20Z", now), Ok(1_700_000_000_000));
        assert!(parse_when("yesterday", now).unwrap_err().contains("now-1h"));
        assert_eq!(auto_step_ms(3_600_000), 30_000);
        assert_eq!(auto_step_ms(86_400_000), 900_000);
        assert_eq!(auto_step_ms(60_000), 1_000);
    }
}
