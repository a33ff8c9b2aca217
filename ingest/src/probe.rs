//! MCP probe results: what a client sees of an MCP server from outside (handshake, tool list,
//! latency, auth). Pushed as JSON to `POST /api/v1/probes` or produced by the built-in prober
//! (prober.rs); both go through `ProbeSink::record`, which turns each result into the
//! `mcp_probe_*` series and counts schema drift. The JSON shape is in docs/probes.md.

use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use toolwatch_storage::{Db, LabelRef};

/// The phases a probe times, in order.
pub const PHASES: [&str; 5] = ["connect", "discover", "initialize", "tools_list", "tool_call"];
/// What `mcp_probe_state` reports; exactly one is 1 per result.
pub const STATES: [&str; 5] = ["up", "down", "auth_required", "protocol_error", "timeout"];

/// One probe of one MCP server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeResult {
    pub target: String,
    pub url: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub success: bool,
    pub duration_seconds: Option<f64>,
    pub phases: Vec<(String, f64)>,
    pub protocol_version: String,
    pub server_name: String,
    pub server_version: String,
    pub tools: Option<u64>,
    pub schema_hash: String,
    pub error_code: String,
    pub error_message: String,
    pub http_status: Option<u16>,
    /// One of `STATES`; derived from the rest when a pushed result does not say.
    pub state: String,
}

impl ProbeResult {
    /// The state a result implies when it does not name one: success is up; 401/403 is
    /// auth_required (the server answered, it wants credentials); a timeout code is timeout;
    /// a JSON-RPC or protocol error is protocol_error; anything else is down.
    pub fn derive_state(&self) -> &'static str {
        if self.success {
            "up"
        } else if matches!(self.http_status, Some(401) | Some(403)) {
            "auth_required"
        } else if self.error_code == "timeout" {
            "timeout"
        } else if self.error_code == "protocol_error" || self.error_code.parse::<i64>().is_ok_and(|c| c < 0) {
            "protocol_error"
        } else {
            "down"
        }
    }
}

/// A field of a pushed result that is wrong, named as the JSON path a user wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_string(), message: message.into() }
}

fn opt_str(o: &Map<String, Value>, k: &str) -> Result<String, FieldError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(err(k, "must be a string")),
    }
}

fn opt_num(o: &Map<String, Value>, k: &str) -> Result<Option<f64>, FieldError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
            _ => Err(err(k, "must be a non-negative number")),
        },
        Some(_) => Err(err(k, "must be a number")),
    }
}

/// Checks and converts one pushed result; `now` fills an omitted timestamp.
pub fn parse_result(v: &Value, now: i64) -> Result<ProbeResult, FieldError> {
    let o = v.as_object().ok_or_else(|| err("", "a probe result must be a JSON object"))?;
    const KNOWN: [&str; 14] = [
        "target",
        "url",
        "timestamp",
        "success",
        "duration_seconds",
        "phases",
        "protocol_version",
        "server",
        "tools",
        "schema_hash",
        "error",
        "http_status",
        "state",
        "schema_changed",
    ];
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(err(k, "unknown field (see docs/probes.md)"));
    }
    let target = opt_str(o, "target")?;
    if target.is_empty() {
        return Err(err("target", "required: the name of the probed server"));
    }
    if target.len() > 256 {
        return Err(err("target", "longer than 256 bytes"));
    }
    let timestamp = match o.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::Number(n)) => {
            let s = n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| err("timestamp", "must be unix seconds >= 0"))?;
            (s * 1000.0).round() as i64
        }
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|_| err("timestamp", format!("{s:?} is not RFC 3339 (2026-11-22T10:00:00Z)")))?,
        Some(_) => return Err(err("timestamp", "must be RFC 3339 text or unix seconds")),
    };
    let success = match o.get("success") {
        Some(Value::Bool(b)) => *b,
        None => return Err(err("success", "required: true or false")),
        Some(_) => return Err(err("success", "must be true or false")),
    };
    let mut phases = Vec::new();
    match o.get("phases") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            for (k, v) in p {
                let field = format!("phases.{k}");
                if !PHASES.contains(&k.as_str()) {
                    return Err(err(&field, format!("unknown phase; phases are {}", PHASES.join(", "))));
                }
                match v.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 => phases.push((k.clone(), x)),
                    _ => return Err(err(&field, "must be a non-negative number of seconds")),
                }
            }
        }
        Some(_) => return Err(err("phases", "must be an object of phase → seconds")),
    }
    let (server_name, server_version) = match o.get("server") {
        None | Some(Value::Null) => (String::new(), String::new()),
        Some(Value::Object(s)) => {
            let get = |k: &str| match s.get(k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(x)) => Ok(x.clone()),
                Some(_) => Err(err(&format!("server.{k}"), "must be a string")),
            };
            (get("name")?, get("version")?)
        }
        Some(_) => return Err(err("server", "must be an object {name, version}")),
    };
    let tools = match o.get("tools") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| err("tools", "must be a non-negative integer"))?),
    };
    let (error_code, error_message) = match o.get("error") {
        None | Some(Value::Null) => (String::new(), String::new()),
        Some(Value::String(m)) => ("error".to_string(), m.clone()),
        Some(Value::Object(e)) => {
            let code = match e.get("code") {
                None | Some(Value::Null) => "error".to_string(),
                Some(Value::String(c)) => c.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(_) => return Err(err("error.code", "must be a string or number")),
            };
            let msg = match e.get("message") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(m)) => m.clone(),
                Some(_) => return Err(err("error.message", "must be a string")),
            };
            (code, msg)
        }
        Some(_) => return Err(err("error", "must be null, a message, or {code, message}")),
    };
    let http_status = match o.get("http_status") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(c) if (100..=599).contains(&c) => Some(c as u16),
            _ => return Err(err("http_status", "must be an HTTP status code (100-599)")),
        },
    };
    let mut r = ProbeResult {
        target,
        url: opt_str(o, "url")?,
        timestamp,
        success,
        duration_seconds: opt_num(o, "duration_seconds")?,
        phases,
        protocol_version: opt_str(o, "protocol_version")?,
        server_name,
        server_version,
        tools,
        schema_hash: opt_str(o, "schema_hash")?,
        error_code,
        error_message,
        http_status,
        state: opt_str(o, "state")?,
    };
    if r.state.is_empty() {
        r.state = r.derive_state().to_string();
    } else if !STATES.contains(&r.state.as_str()) {
        return Err(err("state", format!("unknown state; states are {}", STATES.join(", "))));
    }
    Ok(r)
}

/// Per target: the last schema hash seen and the drift count so far.
#[derive(Default)]
struct TargetState {
    schema_hash: String,
    changes: u64,
    last: Option<ProbeResult>,
}

/// Where probe results go, pushed or probed: into the store as `mcp_probe_*` series.
pub struct ProbeSink {
    db: Arc<OnceLock<Db>>,
    /// Drift detection needs the previous hash of each target; results of one target are
    /// recorded one at a time under this lock so two probes cannot both count one change.
    targets: Mutex<HashMap<String, TargetState>>,
}

impl ProbeSink {
    pub fn new(db: Arc<OnceLock<Db>>) -> ProbeSink {
        ProbeSink { db, targets: Mutex::new(HashMap::new()) }
    }

    /// The latest result per target (for logs and status).
    pub fn last(&self, target: &str) -> Option<ProbeResult> {
        self.targets.lock().get(target).and_then(|t| t.last.clone())
    }

    /// Refuses a result stamped more than `storage.max_future` past `now`, as remote-write
    /// refuses such samples: stored, it would hold the target's series open far ahead.
    pub fn check_time(&self, r: ProbeResult, now: i64) -> Result<ProbeResult, FieldError> {
        let max = self.db.get().map_or(0, |db| db.options().max_future_ms);
        if max > 0 && r.timestamp > now.saturating_add(max) {
            return Err(err(
                "timestamp",
                format!(
                    "{} ms is more than storage.max_future = {max} ms ahead of this server's clock ({now})",
                    r.timestamp
                ),
            ));
        }
        Ok(r)
    }

    /// Stores results; each result's series are written together or not at all.
    pub fn record(&self, results: &[ProbeResult]) -> Result<usize, String> {
        let db = self.db.get().ok_or("storage is starting (WAL replay in progress)")?;
        let mut app = db.appender().map_err(|e| e.to_string())?;
        let mut targets = self.targets.lock();
        for r in results {
            let st = targets.entry(r.target.clone()).or_default();
            if !r.schema_hash.is_empty() {
                if !st.schema_hash.is_empty() && st.schema_hash != r.schema_hash {
                    st.changes += 1;
                    tracing::warn!(target = %r.target, from = %st.schema_hash, to = %r.schema_hash, "MCP schema drift: the tool list or schemas changed");
                }
                st.schema_hash = r.schema_hash.clone();
            }
            st.last = Some(r.clone());
            for (name, extra, v) in series_of(r, st.changes) {
                let mut labels: Vec<LabelRef<'_>> =
                    vec![LabelRef { name: "__name__", value: name }, LabelRef { name: "target", value: &r.target }];
                labels.extend(extra.iter().map(|(n, v)| LabelRef { name: n, value: v }));
                labels.sort_by(|a, b| a.name.cmp(b.name));
                if let Err(e) = app.append(&labels, r.timestamp, v) {
                    tracing::debug!(target = %r.target, metric = name, error = %e, "probe sample not stored");
                }
            }
        }
        drop(targets);
        app.commit().map_err(|e| e.to_string())
    }
}

/// The samples one result becomes: (metric, extra labels, value).
fn series_of(r: &ProbeResult, changes: u64) -> Vec<(&'static str, Vec<(&'static str, String)>, f64)> {
    let mut out = vec![("mcp_probe_success", vec![], if r.success { 1.0 } else { 0.0 })];
    if let Some(d) = r.duration_seconds {
        out.push(("mcp_probe_duration_seconds", vec![("phase", "total".to_string())], d));
    }
    for (p, d) in &r.phases {
        out.push(("mcp_probe_duration_seconds", vec![("phase", p.clone())], *d));
    }
    if let Some(t) = r.tools {
        out.push(("mcp_probe_tools", vec![], t as f64));
    }
    if !(r.protocol_version.is_empty() && r.server_name.is_empty() && r.server_version.is_empty()) {
        out.push((
            "mcp_probe_info",
            vec![
                ("protocol_version", r.protocol_version.clone()),
                ("server_name", r.server_name.clone()),
                ("server_version", r.server_version.clone()),
            ],
            1.0,
        ));
    }
    out.push(("mcp_probe_schema_changes_total", vec![], changes as f64));
    for s in STATES {
        out.push(("mcp_probe_state", vec![("state", s.to_string())], if r.state == s { 1.0 } else { 0.0 }));
    }
    if let Some(c) = r.http_status {
        out.push(("mcp_probe_http_status", vec![], c as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_documented_example_parses() {
        let v = json!({"target":"search","url":"https://mcp.example.com/mcp","timestamp":"2026-11-22T10:00:00Z",
            "success":true,"duration_seconds":0.412,"phases":{"connect":0.05,"initialize":0.11,"tools_list":0.2},
            "protocol_version":"2025-11-25","server":{"name":"search","version":"1.2.0"},"tools":12,
            "schema_hash":"sha256:abc","error":null,"http_status":200});
        let r = parse_result(&v, 0).unwrap();
        assert_eq!(r.timestamp, 1_795_341_600_000);
        assert_eq!((r.state.as_str(), r.tools, r.server_version.as_str()), ("up", Some(12), "1.2.0"));
        assert_eq!(r.phases.len(), 3);
        let r = parse_result(&json!({"target": "a", "success": false, "timestamp": 1700000000.5}), 0).unwrap();
        assert_eq!((r.timestamp, r.state.as_str()), (1_700_000_000_500, "down"));
        let r = parse_result(&json!({"target": "a", "success": false}), 42).unwrap();
        assert_eq!(r.timestamp, 42);
    }

    #[test]
    fn states_from_the_result() {
        let st = |v: Value| parse_result(&v, 0).unwrap().state;
        assert_eq!(st(json!({"target": "a", "success": false, "http_status": 401})), "auth_required");
        assert_eq!(st(json!({"target": "a", "success": false, "error": {"code": "timeout"}})), "timeout");
        assert_eq!(
            st(json!({"target": "a", "success": false, "error": {"code": -32600, "message": "x"}})),
            "protocol_error"
        );
        assert_eq!(st(json!({"target": "a", "success": false, "error": "refused"})), "down");
        assert_eq!(st(json!({"target": "a", "success": false, "state": "timeout"})), "timeout");
    }

    #[test]
    fn errors_name_the_field() {
        let f = |v: Value| parse_result(&v, 0).unwrap_err().field;
        assert_eq!(f(json!({"success": true})), "target");
        assert_eq!(f(json!({"target": "a"})), "success");
        assert_eq!(f(json!({"target": "a", "success": "yes"})), "success");
        assert_eq!(f(json!({"target": "a", "success": true, "timestamp": "yesterday"})), "timestamp");
        assert_eq!(f(json!({"target": "a", "success": true, "phases": {"dns": 1}})), "phases.dns");
        assert_eq!(f(json!({"target": "a", "success": true, "phases": {"connect": -1}})), "phases.connect");
        assert_eq!(f(json!({"target": "a", "success": true, "tools": 1.5})), "tools");
        assert_eq!(f(json!({"target": "a", "success": true, "server": {"name": 3}})), "server.name");
        assert_eq!(f(json!({"target": "a", "success": true, "http_status": 999})), "http_status");
        assert_eq!(f(json!({"target": "a", "success": true, "state": "sleepy"})), "state");
        assert_eq!(f(json!({"target": "a", "success": true, "bogus": 1})), "bogus");
    }
}

/// Whether the request's media type is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /api/v1/probes`: one result or an array. Every valid result is stored; each invalid
/// one is rejected whole and named (index and field) in a 400. The body is read with
/// `ingest.max_body_bytes` checked as it arrives (413) and within `ingest.body_read_timeout`
/// (408).
pub fn router(sink: Arc<ProbeSink>, max_body_bytes: usize, body_read_timeout: std::time::Duration) -> axum::Router {
    use crate::body::BodyError;
    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    type PushState = (Arc<ProbeSink>, usize, std::time::Duration);
    async fn push(
        State((sink, max, timeout)): State<PushState>,
        headers: axum::http::HeaderMap,
        body: axum::body::Body,
    ) -> Response {
        let bad = |code: StatusCode, msg: String, extra: Value| {
            let mut v = serde_json::json!({"status": "error", "errorType": "bad_data", "error": msg});
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            (code, [(axum::http::header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        };
        // JSON only: a web page can POST text/plain or a form anywhere without a CORS
        // preflight, but not application/json.
        if !is_json(&headers) {
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported Content-Type: expected application/json".into(),
                Value::Null,
            );
        }
        let body = match crate::body::read_body(body, max, timeout).await {
            Ok(b) => b,
            Err(BodyError::TooLarge { seen }) => {
                return bad(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body of at least {seen} bytes exceeds ingest.max_body_bytes ({max})"),
                    Value::Null,
                )
            }
            Err(BodyError::TimedOut) => return crate::body::timeout_response(timeout),
            Err(BodyError::Read(e)) => {
                return bad(StatusCode::BAD_REQUEST, format!("reading the body: {e}"), Value::Null)
            }
        };
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad(StatusCode::BAD_REQUEST, format!("body: not JSON: {e}"), Value::Null),
        };
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let (items, is_array) = match &v {
            Value::Array(a) => (a.iter().collect::<Vec<_>>(), true),
            other => (vec![other], false),
        };
        let mut ok = Vec::new();
        let mut rejected = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match parse_result(item, now).and_then(|r| sink.check_time(r, now)) {
                Ok(r) => ok.push(r),
                Err(e) => {
                    let field = if is_array {
                        format!("[{i}].{}", e.field).trim_end_matches('.').to_string()
                    } else {
                        e.field.clone()
                    };
                    rejected.push(serde_json::json!({"index": i, "field": field, "error": e.message}));
                }
            }
        }
        if !ok.is_empty() {
            if let Err(e) = sink.record(&ok) {
                return (StatusCode::SERVICE_UNAVAILABLE, e).into_response();
            }
        }
        if rejected.is_empty() {
            return StatusCode::NO_CONTENT.into_response();
        }
        let first = &rejected[0];
        bad(
            StatusCode::BAD_REQUEST,
            format!(
                "{} of {} probe results rejected; first: {}: {}",
                rejected.len(),
                items.len(),
                first["field"].as_str().unwrap_or(""),
                first["error"].as_str().unwrap_or("")
            ),
            serde_json::json!({"accepted": ok.len(), "rejected": rejected}),
        )
    }
    axum::Router::new()
        .route("/api/v1/probes", axum::routing::post(push))
        // The handler checks the size itself, to name the limit.
        .layer(DefaultBodyLimit::disable())
        .with_state((sink, max_body_bytes, body_read_timeout))
}
