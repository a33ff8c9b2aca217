//! The Prometheus HTTP query API over the engine: `/api/v1/query`, `query_range`, `series`,
//! `labels`, `label/<name>/values`, `metadata`, `status/*`, `query_exemplars`, `format_query`.
//! Same JSON envelope, error types and status codes as Prometheus, so Grafana and promtool work
//! unchanged. Parameters come from the query string and, for POST, a form-encoded body.

use crate::engine::{Engine, EngineOptions, QueryControl, QueryStats};
use crate::error::QueryError;
use crate::metrics::QueryMetrics;
use crate::selectors::selector_matchers;
use crate::value::{format_float, QueryValue};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use promql_parser::parser::Expr;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use toolwatch_storage::{Db, Labels, Matcher};

/// Metric metadata as the API serves it; provided by whoever receives it (remote-write).
#[derive(Clone, Debug)]
pub struct MetricMetadata {
    pub metric: String,
    pub typ: String,
    pub help: String,
    pub unit: String,
}

pub trait MetadataSource: Send + Sync {
    fn all(&self) -> Vec<MetricMetadata>;
}

/// Facts `/api/v1/status/runtimeinfo` reports about the running process.
#[derive(Clone, Debug, Default)]
pub struct RuntimeFacts {
    pub start_time_ms: i64,
    pub cwd: String,
    pub retention: String,
    /// The outcome of configuration loads, read at request time.
    pub reloads: Arc<ConfigReloads>,
}

/// The outcome of configuration (rule file) loads: written by whoever loads them (the binary at
/// start, `POST /-/reload`, SIGHUP; the alerting crate's rule manager) and read by
/// `runtimeinfo` at request time for `reloadConfigSuccess` and `lastConfigTime`.
#[derive(Debug, Default)]
pub struct ConfigReloads {
    /// Whether the last load succeeded (false before any load).
    success: AtomicBool,
    /// Whether any load has succeeded, and when the last one did (milliseconds since the epoch).
    ever_succeeded: AtomicBool,
    last_success_ms: AtomicI64,
}

impl ConfigReloads {
    /// Records a load at `at_ms` that succeeded or failed.
    pub fn record(&self, ok: bool, at_ms: i64) {
        if ok {
            self.last_success_ms.store(at_ms, Ordering::Relaxed);
            self.ever_succeeded.store(true, Ordering::Release);
        }
        self.success.store(ok, Ordering::Relaxed);
    }

    /// Whether the last load succeeded (false before any) and when the last successful one
    /// happened (`None` if none has).
    pub fn last(&self) -> (bool, Option<i64>) {
        let ok = self.success.load(Ordering::Relaxed);
        let when = self.ever_succeeded.load(Ordering::Acquire).then(|| self.last_success_ms.load(Ordering::Relaxed));
        (ok, when)
    }
}

pub struct QueryState {
    /// Set once the WAL replay finishes; queries before that get 503.
    pub db: Arc<OnceLock<Db>>,
    pub opts: EngineOptions,
    /// Bounds queries that evaluate at once; further ones wait their turn.
    pub slots: Arc<tokio::sync::Semaphore>,
    pub metadata: Arc<dyn MetadataSource>,
    pub runtime: RuntimeFacts,
    pub build: &'static BuildInfo,
    pub metrics: QueryMetrics,
}

/// What the binary was built from, for `/api/v1/status/buildinfo` (Prometheus' fields).
#[derive(Debug, Clone, Copy)]
pub struct BuildInfo {
    pub version: &'static str,
    pub revision: &'static str,
    pub branch: &'static str,
    pub build_user: &'static str,
    pub build_date: &'static str,
    /// The compiler, in the field Prometheus names `goVersion` (`rustc 1.95.0 (…)`).
    pub rust_version: &'static str,
}

impl BuildInfo {
    /// For tests and tools that know only a version.
    pub const UNKNOWN: BuildInfo = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        revision: "unknown",
        branch: "unknown",
        build_user: "unknown",
        build_date: "unknown",
        rust_version: "unknown",
    };
}

impl QueryState {
    pub fn new(
        db: Arc<OnceLock<Db>>,
        opts: EngineOptions,
        max_concurrency: usize,
        metadata: Arc<dyn MetadataSource>,
        runtime: RuntimeFacts,
        build: &'static BuildInfo,
        metrics: QueryMetrics,
    ) -> QueryState {
        QueryState {
            db,
            opts,
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrency.max(1))),
            metadata,
            runtime,
            build,
            metrics,
        }
    }
}

type St = State<Arc<QueryState>>;

pub fn router(state: Arc<QueryState>) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .route("/api/v1/status/tsdb", get(tsdb_status))
        .with_state(state)
}

/// Request parameters: the query string, then (for a form POST) the body, as Go's `FormValue`.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(method: &Method, headers: &HeaderMap, raw: Option<String>, body: &Bytes) -> Result<Params, QueryError> {
        let bad = |e: serde_urlencoded::de::Error| QueryError::BadData(format!("invalid parameters: {e}"));
        let mut v: Vec<(String, String)> = Vec::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if *method == Method::POST && is_form {
            v.extend(serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(bad)?);
        }
        if let Some(q) = raw {
            v.extend(serde_urlencoded::from_str::<Vec<(String, String)>>(&q).map_err(bad)?);
        }
        Ok(Params(v))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub use crate::time::{format_rfc3339, parse_duration, parse_time, MAX_TIME, MIN_TIME};

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::BadData(msg.into())
}

fn error_response(e: &QueryError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"status": "error", "errorType": e.error_type(), "error": e.to_string()});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn success(data: &str, warnings: &[String]) -> Response {
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(data);
    if !warnings.is_empty() {
        body.push_str(r#","warnings":"#);
        body.push_str(&serde_json::to_string(warnings).unwrap_or_default());
    }
    body.push('}');
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn respond(r: Result<(String, Vec<String>), QueryError>) -> Response {
    match r {
        Ok((data, warnings)) => success(&data, &warnings),
        Err(e) => error_response(&e),
    }
}

fn db_of(st: &QueryState) -> Result<Db, QueryError> {
    st.db.get().cloned().ok_or_else(|| QueryError::Internal("storage is starting (WAL replay in progress)".into()))
}

/// Sets the cancel flag when dropped: the handler future is dropped when the client goes away,
/// and the evaluating thread sees the flag at its next check.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs a query on the blocking pool, within the concurrency limit, canceled if the caller
/// goes away (its future dropped). The MCP tools run their queries through this too.
pub async fn run_query<T: Send + 'static>(
    st: &Arc<QueryState>,
    timeout: Option<Duration>,
    f: impl FnOnce(&Engine, &QueryControl) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let db = db_of(st)?;
    let waiting = std::time::Instant::now();
    let slot = st.slots.clone().acquire_owned().await.map_err(|_| QueryError::Canceled("queue"))?;
    let queued = waiting.elapsed();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let ctl = QueryControl { timeout, cancel: Some(cancel), queued };
    let engine = Engine::new(db, st.opts.clone());
    // The slot goes with the evaluation, so a canceled query holds it until it has stopped.
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f(&engine, &ctl)
    })
    .await
    .map_err(|e| QueryError::Internal(format!("query panicked: {e}")))?
}

/// Counts a query's outcome and time. A query whose client went away is counted as canceled
/// when its future is dropped, since nobody awaits the result.
pub async fn observed(
    st: &Arc<QueryState>,
    kind: &'static str,
    fut: impl std::future::Future<Output = Result<(QueryValue, QueryStats), QueryError>>,
) -> Result<(QueryValue, QueryStats), QueryError> {
    struct Pending<'a> {
        st: &'a QueryState,
        kind: &'static str,
        began: std::time::Instant,
        done: bool,
    }
    impl Drop for Pending<'_> {
        fn drop(&mut self) {
            if !self.done {
                self.st.metrics.observe(self.kind, "canceled", self.began.elapsed().as_secs_f64());
            }
        }
    }
    let mut p = Pending { st, kind, began: std::time::Instant::now(), done: false };
    let r = fut.await;
    p.done = true;
    let result = match &r {
        Ok((_, s)) => {
            st.metrics.samples.inc_by(s.samples_loaded as u64);
            "success"
        }
        Err(e) => e.error_type(),
    };
    st.metrics.observe(kind, result, p.began.elapsed().as_secs_f64());
    r
}

fn timeout_param(p: &Params) -> Result<Option<Duration>, QueryError> {
    p.get("timeout").map(parse_duration).transpose().map_err(bad)
}

async fn query(State(st): St, method: Method, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    respond(
        async {
            let p = Params::parse(&method, &headers, raw, &body)?;
            let q = p.get("query").unwrap_or("").to_string();
            let t = match p.get("time") {
                Some(t) => parse_time(t).map_err(|e| bad(format!("invalid parameter \"time\": {e}")))?,
                None => now_ms(),
            };
            let stats = p.get("stats").is_some();
            let (v, s) =
                observed(&st, "instant", run_query(&st, timeout_param(&p)?, move |e, c| e.instant(&q, t, c))).await?;
            Ok((result_json(&v, stats.then_some(&s)), Vec::new()))
        }
        .await,
    )
}

async fn query_range(
    State(st): St,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    respond(
        async {
            let p = Params::parse(&method, &headers, raw, &body)?;
            let q = p.get("query").unwrap_or("").to_string();
            let time = |name: &str| -> Result<i64, QueryError> {
                let v = p.get(name).ok_or_else(|| bad(format!("invalid parameter \"{name}\": missing")))?;
                parse_time(v).map_err(|e| bad(format!("invalid parameter \"{name}\": {e}")))
            };
            let (start, end) = (time("start")?, time("end")?);
            let step = p.get("step").ok_or_else(|| bad("invalid parameter \"step\": missing"))?;
            let step = parse_duration(step).map_err(|e| bad(format!("invalid parameter \"step\": {e}")))?;
            let step = step.as_millis() as i64;
            if end < start {
                return Err(bad("invalid parameter \"end\": end timestamp must not be before start time"));
            }
            let stats = p.get("stats").is_some();
            let (v, s) = observed(
                &st,
                "range",
                run_query(&st, timeout_param(&p)?, move |e, c| e.range(&q, start, end, step, c)),
            )
            .await?;
            Ok((result_json(&v, stats.then_some(&s)), Vec::new()))
        }
        .await,
    )
}

fn write_ts(out: &mut String, t: i64) {
    // Milliseconds as seconds with up to three decimals, exactly as Prometheus prints them.
    let (neg, t) = if t < 0 { (true, -(t as i128)) } else { (false, t as i128) };
    if neg {
        out.push('-');
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &x.name);
        out.push(':');
        write_str(out, &x.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_ts(out, t);
    out.push_str(",\"");
    out.push_str(&format_float(v));
    out.push_str("\"]");
}

fn result_json(v: &QueryValue, stats: Option<&QueryStats>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(r#"{"resultType":""#);
    out.push_str(v.result_type());
    out.push_str(r#"","result":"#);
    match v {
        QueryValue::Scalar { t, v } => write_point(&mut out, *t, *v),
        QueryValue::String { t, s } => {
            out.push('[');
            write_ts(&mut out, *t);
            out.push(',');
            write_str(&mut out, s);
            out.push(']');
        }
        QueryValue::Vector(rows) => {
            out.push('[');
            for (i, (l, t, v)) in rows.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, l);
                out.push_str(r#","value":"#);
                write_point(&mut out, *t, *v);
                out.push('}');
            }
            out.push(']');
        }
        QueryValue::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                out.push_str(r#","values":["#);
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(&mut out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    if let Some(s) = stats {
        out.push_str(r#","stats":"#);
        out.push_str(&stats_json(s).to_string());
    }
    out.push('}');
    out
}

/// `stats=all`: Prometheus' shape, every figure measured. The sort of a range result is part of
/// `innerEvalTime`, so there is no `resultSortTime`; `queryPreparationTime` is parsing.
fn stats_json(s: &QueryStats) -> serde_json::Value {
    let eval_total = s.parse_time + s.eval_time;
    serde_json::json!({
        "timings": {
            "evalTotalTime": eval_total.as_secs_f64(),
            "queryPreparationTime": s.parse_time.as_secs_f64(),
            "innerEvalTime": s.eval_time.as_secs_f64(),
            "execQueueTime": s.queue_time.as_secs_f64(),
            "execTotalTime": (s.queue_time + eval_total).as_secs_f64(),
        },
        "samples": {
            "totalQueryableSamples": s.samples_loaded,
            "peakSamples": s.peak_samples,
        },
        "series": s.series_selected,
    })
}

/// `match[]` selectors as storage matcher sets (a selector with `or` gives several).
fn match_params(p: &Params) -> Result<Vec<Vec<Matcher>>, QueryError> {
    selector_sets(&p.all("match[]"))
}

/// Series selectors (`up`, `{job="x"}`) as storage matcher sets, as `match[]` takes them.
pub fn selector_sets(selectors: &[&str]) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let mut sets = Vec::new();
    for m in selectors {
        match crate::engine::parse(m)?.expr() {
            Expr::VectorSelector(vs) => sets.extend(selector_matchers(vs)?),
            _ => return Err(bad(format!("invalid parameter \"match[]\": {m:?} is not a series selector"))),
        }
    }
    Ok(sets)
}

fn range_params(p: &Params) -> Result<(i64, i64), QueryError> {
    let start =
        p.get("start").map(parse_time).transpose().map_err(|e| bad(format!("invalid parameter \"start\": {e}")))?;
    let end = p.get("end").map(parse_time).transpose().map_err(|e| bad(format!("invalid parameter \"end\": {e}")))?;
    Ok((start.unwrap_or(MIN_TIME), end.unwrap_or(MAX_TIME)))
}

fn limit_param(p: &Params) -> Result<usize, QueryError> {
    match p.get("limit") {
        None => Ok(0),
        Some(l) => {
            l.parse::<i64>().map(|v| v.max(0) as usize).map_err(|_| bad("invalid parameter \"limit\": not a number"))
        }
    }
}

const TRUNCATED: &str = "results truncated due to limit";

fn string_list(values: &[String], limit: usize) -> (String, Vec<String>) {
    let (values, warnings) = if limit > 0 && values.len() > limit {
        (&values[..limit], vec![TRUNCATED.to_string()])
    } else {
        (values, Vec::new())
    };
    (serde_json::to_string(values).unwrap_or_default(), warnings)
}

async fn series(State(st): St, method: Method, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    respond(
        async {
            let p = Params::parse(&method, &headers, raw, &body)?;
            let sets = match_params(&p)?;
            if sets.is_empty() {
                return Err(bad("no match[] parameter provided"));
            }
            let (start, end) = range_params(&p)?;
            let limit = limit_param(&p)?;
            run_query(&st, None, move |e, _| {
                let q = e.db().querier(start, end);
                let mut all: Vec<Labels> = sets.iter().flat_map(|m| q.series_labels(m)).collect();
                all.sort();
                all.dedup();
                let mut warnings = Vec::new();
                if limit > 0 && all.len() > limit {
                    all.truncate(limit);
                    warnings.push(TRUNCATED.to_string());
                }
                let mut out = String::from("[");
                for (i, l) in all.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_labels(&mut out, l);
                }
                out.push(']');
                Ok((out, warnings))
            })
            .await
        }
        .await,
    )
}

async fn labels(State(st): St, method: Method, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    respond(
        async {
            let p = Params::parse(&method, &headers, raw, &body)?;
            let sets = match_params(&p)?;
            let (start, end) = range_params(&p)?;
            let limit = limit_param(&p)?;
            run_query(&st, None, move |e, _| {
                let q = e.db().querier(start, end);
                let mut names: Vec<String> = if sets.is_empty() {
                    q.label_names(&[])
                } else {
                    sets.iter().flat_map(|m| q.label_names(m)).collect()
                };
                names.sort();
                names.dedup();
                Ok(string_list(&names, limit))
            })
            .await
        }
        .await,
    )
}

async fn label_values(State(st): St, Path(name): Path<String>, RawQuery(raw): RawQuery) -> Response {
    respond(
        async {
            let p = Params::parse(&Method::GET, &HeaderMap::new(), raw, &Bytes::new())?;
            if !crate::value::valid_label_name(&name) {
                return Err(bad(format!("invalid label name: {name:?}")));
            }
            let sets = match_params(&p)?;
            let (start, end) = range_params(&p)?;
            let limit = limit_param(&p)?;
            run_query(&st, None, move |e, _| {
                let q = e.db().querier(start, end);
                let mut values: Vec<String> = if sets.is_empty() {
                    q.label_values(&name, &[])
                } else {
                    sets.iter().flat_map(|m| q.label_values(&name, m)).collect()
                };
                values.sort();
                values.dedup();
                Ok(string_list(&values, limit))
            })
            .await
        }
        .await,
    )
}

async fn metadata(State(st): St, RawQuery(raw): RawQuery) -> Response {
    respond((|| {
        let p = Params::parse(&Method::GET, &HeaderMap::new(), raw, &Bytes::new())?;
        let limit = limit_param(&p)?;
        let metric = p.get("metric");
        let mut all = st.metadata.all();
        all.retain(|m| metric.is_none_or(|want| m.metric == want));
        all.sort_by(|a, b| a.metric.cmp(&b.metric));
        let mut out = serde_json::Map::new();
        for m in all {
            if limit > 0 && out.len() >= limit {
                break;
            }
            out.insert(m.metric.clone(), serde_json::json!([{"type": m.typ, "help": m.help, "unit": m.unit}]));
        }
        Ok((serde_json::Value::Object(out).to_string(), Vec::new()))
    })())
}

/// `/api/v1/query_exemplars` always answers `{"status":"success","data":[]}` for a valid
/// request: toolwatch stores no exemplars (remote-write counts and drops them, see
/// `toolwatch_remote_write_exemplars_dropped_total`), so there are never any to return. The
/// endpoint exists so Grafana's exemplar option works (showing none) instead of failing; like
/// Prometheus it still parses `query`, `start` and `end` and answers 400 `bad_data` for a bad one.
async fn query_exemplars(method: Method, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    respond((|| {
        let p = Params::parse(&method, &headers, raw, &body)?;
        crate::engine::parse(p.get("query").unwrap_or(""))?;
        range_params(&p)?;
        Ok(("[]".to_string(), Vec::new()))
    })())
}

async fn format_query(method: Method, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    respond((|| {
        let p = Params::parse(&method, &headers, raw, &body)?;
        let expr = crate::engine::parse(p.get("query").unwrap_or(""))?;
        Ok((serde_json::to_string(&expr.prettify()?).unwrap_or_default(), Vec::new()))
    })())
}

async fn buildinfo(State(st): St) -> Response {
    // No `features` field: Grafana reads a non-empty one as "this is Mimir".
    let b = st.build;
    let data = serde_json::json!({
        "version": b.version,
        "revision": b.revision,
        "branch": b.branch,
        "buildUser": b.build_user,
        "buildDate": b.build_date,
        "goVersion": b.rust_version,
    });
    success(&data.to_string(), &[])
}

async fn runtimeinfo(State(st): St) -> Response {
    let r = &st.runtime;
    let start = r.start_time_ms;
    // From the last rule-file load (start, `POST /-/reload`, SIGHUP). Never loaded successfully:
    // Go's zero time, as Prometheus would show.
    let (reload_ok, last_ok) = r.reloads.last();
    let data = serde_json::json!({
        "startTime": format_rfc3339(start),
        "CWD": r.cwd,
        "reloadConfigSuccess": reload_ok,
        "lastConfigTime": last_ok.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), format_rfc3339),
        "corruptionCount": st.db.get().map_or(0, |d| d.stats().wal_corruptions.load(Ordering::Relaxed)),
        // No goroutines and no Go memory limit here: those fields are left out rather than
        // reported as a made-up 0.
        "GOMAXPROCS": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": r.retention,
    });
    success(&data.to_string(), &[])
}

async fn tsdb_status(State(st): St, RawQuery(raw): RawQuery) -> Response {
    respond(
        async {
            let p = Params::parse(&Method::GET, &HeaderMap::new(), raw, &Bytes::new())?;
            let limit = match limit_param(&p)? {
                0 => 10,
                n => n,
            };
            run_query(&st, None, move |e, c| tsdb_stats(e.db(), limit, c)).await
        }
        .await,
    )
}

/// Cardinality statistics over the whole store: top metrics, label names and label pairs by
/// series count.
pub fn tsdb_stats(db: &Db, limit: usize, ctl: &QueryControl) -> Result<(String, Vec<String>), QueryError> {
    let q = db.querier(MIN_TIME, MAX_TIME);
    let all = q.series_labels(&[Matcher::new(toolwatch_storage::MatchOp::Regex, "__name__", ".+")?]);
    let mut by_metric: rustc_hash::FxHashMap<&str, u64> = Default::default();
    let mut by_pair: rustc_hash::FxHashMap<(&str, &str), u64> = Default::default();
    let mut values_by_name: rustc_hash::FxHashMap<&str, rustc_hash::FxHashSet<&str>> = Default::default();
    let mut bytes_by_name: rustc_hash::FxHashMap<&str, u64> = Default::default();
    for (i, l) in all.iter().enumerate() {
        if i % 4096 == 0 && ctl.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(QueryError::Canceled("tsdb status"));
        }
        for x in l.iter() {
            if &*x.name == "__name__" {
                *by_metric.entry(&x.value).or_default() += 1;
            }
            *by_pair.entry((&x.name, &x.value)).or_default() += 1;
            if values_by_name.entry(&x.name).or_default().insert(&x.value) {
                *bytes_by_name.entry(&x.name).or_default() += x.value.len() as u64;
            }
        }
    }
    let top = |mut v: Vec<(String, u64)>| -> serde_json::Value {
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(limit);
        v.into_iter().map(|(name, value)| serde_json::json!({"name": name, "value": value})).collect()
    };
    let (mint, maxt) = all_time_range(db);
    let data = serde_json::json!({
        "headStats": {
            "numSeries": db.num_series(),
            "numLabelPairs": by_pair.len(),
            // No `chunkCount`: the head does not count its chunks, and a 0 would claim it had.
            "minTime": mint,
            "maxTime": maxt,
        },
        "seriesCountByMetricName": top(by_metric.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
        "labelValueCountByLabelName": top(values_by_name.iter().map(|(k, v)| (k.to_string(), v.len() as u64)).collect()),
        "memoryInBytesByLabelName": top(bytes_by_name.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
        "seriesCountByLabelValuePair": top(by_pair.iter().map(|((n, v), c)| (format!("{n}={v}"), *c)).collect()),
    });
    Ok((data.to_string(), Vec::new()))
}

/// The time range of the head (as Prometheus reports head stats), 0..0 when empty.
fn all_time_range(db: &Db) -> (i64, i64) {
    db.head().time_range().unwrap_or((0, 0))
}
