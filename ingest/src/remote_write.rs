//! `POST /api/v1/write` (alias `/api/v1/push`): Prometheus remote-write 1.0 and 2.0.
//!
//! Status codes follow the spec and Prometheus' own receiver: 204 when every sample is stored;
//! 400 when the body cannot be decoded (nothing is stored) or when some series or samples are
//! rejected (the rest is stored and the body says how many were rejected and why); 413 for a
//! body over a size limit; 415 for an unsupported encoding or content type; 408 (Prometheus'
//! error JSON) when the body does not arrive within `ingest.body_read_timeout`; 429 when too many
//! requests are in flight; 500 only for failures a retry can fix (WAL write errors); 503 until
//! the WAL replay is done.

use crate::body::BodyError;
use crate::decode::{decode_v1, decode_v2, DecodeLimits, Decoded};
use crate::metadata::MetadataStore;
use crate::metrics::{IngestMetrics, RequestLabels};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use toolwatch_storage::Db;

#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest accepted request body, compressed.
    pub max_body_bytes: usize,
    /// Largest accepted body after snappy decompression.
    pub max_decompressed_bytes: usize,
    /// Requests decoded and appended at once; more get 429 so the sender backs off.
    pub max_inflight_requests: usize,
    /// Longest a request body may take to arrive once its request holds a slot; past it the
    /// answer is 408 and the slot is free again (`ingest.body_read_timeout`; zero: no limit).
    pub body_read_timeout: std::time::Duration,
    pub decode: DecodeLimits,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_body_bytes: 32 << 20,
            max_decompressed_bytes: 256 << 20,
            max_inflight_requests: 64,
            body_read_timeout: std::time::Duration::from_secs(30),
            decode: DecodeLimits::default(),
        }
    }
}

pub struct IngestState {
    /// Set once WAL replay finishes; writes before that get 503.
    pub db: Arc<OnceLock<Db>>,
    pub limits: IngestLimits,
    pub metadata: Arc<MetadataStore>,
    pub metrics: IngestMetrics,
    inflight: Arc<tokio::sync::Semaphore>,
    last_rejection_log: AtomicU64,
}

impl IngestState {
    pub fn new(
        db: Arc<OnceLock<Db>>,
        limits: IngestLimits,
        metadata: Arc<MetadataStore>,
        metrics: IngestMetrics,
    ) -> IngestState {
        let inflight = Arc::new(tokio::sync::Semaphore::new(limits.max_inflight_requests.max(1)));
        IngestState { db, limits, metadata, metrics, inflight, last_rejection_log: AtomicU64::new(0) }
    }
}

pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .route("/api/v1/push", post(write))
        // The handler enforces ingest.max_body_bytes itself, to name the limit in the error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn label(self) -> &'static str {
        match self {
            Version::V1 => "1.0",
            Version::V2 => "2.0",
        }
    }
}

/// What the append step did, for the response headers and the body.
#[derive(Default)]
struct Outcome {
    written: u64,
    rejected: u64,
    histograms_rejected: u64,
    examples: Vec<String>,
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into() + "\n").into_response()
}

/// A 415 in Prometheus' JSON error form. The content type is required, as the remote-write
/// spec says: a web page can POST a form or `text/plain` to any address without a CORS
/// preflight, but not `application/x-protobuf`, so this also keeps browsers from writing.
fn unsupported_type(msg: String) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": "bad_data", "error": msg});
    (StatusCode::UNSUPPORTED_MEDIA_TYPE, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn content_version(headers: &HeaderMap) -> Result<Version, String> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err("missing Content-Type: expected application/x-protobuf (remote-write 1.0) or \
                    application/x-protobuf;proto=io.prometheus.write.v2.Request (2.0)"
            .into());
    };
    let ct = ct.to_str().map_err(|_| "unreadable Content-Type".to_string())?.to_ascii_lowercase().replace(' ', "");
    match ct.as_str() {
        "application/x-protobuf" | "application/x-protobuf;proto=prometheus.writerequest" => Ok(Version::V1),
        "application/x-protobuf;proto=io.prometheus.write.v2.request" => Ok(Version::V2),
        _ => Err(format!(
            "unsupported Content-Type {ct:?}: expected application/x-protobuf (remote-write 1.0) or \
             application/x-protobuf;proto=io.prometheus.write.v2.Request (2.0)"
        )),
    }
}

async fn write(State(st): State<Arc<IngestState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let version = content_version(&headers);
    let label = version.as_ref().map_or("unknown", |v| v.label());
    let resp = handle(&st, &headers, version, body).await;
    st.metrics
        .requests
        .get_or_create(&RequestLabels { version: label.to_string(), code: resp.status().as_u16() })
        .inc();
    st.metrics.duration.observe(started.elapsed().as_secs_f64());
    resp
}

async fn handle(st: &Arc<IngestState>, headers: &HeaderMap, version: Result<Version, String>, body: Body) -> Response {
    let Some(db) = st.db.get().cloned() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "storage is starting (WAL replay in progress); retry later");
    };
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"snappy") {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {enc:?}: only snappy (block format)"),
            );
        }
    }
    let version = match version {
        Ok(v) => v,
        Err(e) => return unsupported_type(e),
    };
    let Ok(_permit) = st.inflight.clone().try_acquire_owned() else {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "ingest queue full: ingest.max_inflight_requests = {} requests are in flight; retry later",
                st.limits.max_inflight_requests
            ),
        );
    };
    let max = st.limits.max_body_bytes;
    // Read with the size checked as bytes arrive and a deadline, so a slow or stalled sender
    // gives its slot back (the permit drops when this returns).
    let timeout = st.limits.body_read_timeout;
    let body: Bytes = match crate::body::read_body(body, max, timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { .. }) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, format!("body exceeds ingest.max_body_bytes = {max}"))
        }
        Err(BodyError::TimedOut) => return crate::body::timeout_response(timeout),
        Err(BodyError::Read(e)) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let st2 = st.clone();
    // Decoding and appending are CPU work with no await points; keep them off the I/O threads.
    match tokio::task::spawn_blocking(move || decode_and_append(&st2, &db, &body, version)).await {
        Ok(r) => r,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("ingest task failed: {e}")),
    }
}

fn decode_and_append(st: &IngestState, db: &Db, body: &[u8], version: Version) -> Response {
    let limits = &st.limits;
    let len = match snap::raw::decompress_len(body) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("snappy decode: {e}")),
    };
    if len > limits.max_decompressed_bytes {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "decompressed body of {len} bytes exceeds ingest.max_decompressed_bytes = {}",
                limits.max_decompressed_bytes
            ),
        );
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(body) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("snappy decode: {e}")),
    };
    let decoded = match version {
        Version::V1 => decode_v1(&raw, &limits.decode),
        Version::V2 => decode_v2(&raw, &limits.decode),
    };
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("protobuf decode ({}): {e}; nothing was written", version_name(version)),
            )
        }
    };
    for m in &decoded.metadata {
        if !m.metric.is_empty() {
            st.metadata.set(m.metric, m.typ, m.help, m.unit);
        }
    }
    let outcome = match append(st, db, &decoded) {
        Ok(o) => o,
        // A failed WAL fsync: nothing is acknowledged until a later fsync succeeds (a 5xx
        // that Prometheus' remote-write client retries with backoff).
        Err(e @ toolwatch_storage::StorageError::WalUnhealthy { .. }) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("storage unavailable, retry: {e}"))
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("writing the WAL failed, retry: {e}")),
    };
    respond(st, version, outcome)
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::V1 => "prometheus.WriteRequest",
        Version::V2 => "io.prometheus.write.v2.Request",
    }
}

fn append(st: &IngestState, db: &Db, d: &Decoded<'_>) -> Result<Outcome, toolwatch_storage::StorageError> {
    let mut out = Outcome::default();
    let mut by_reason: [u64; 6] = [0; 6];
    let reasons = ["out_of_order", "duplicate", "too_old", "invalid", "limit", "too_far_in_future"];
    let note = |out: &mut Outcome, what: String| {
        if out.examples.len() < 3 {
            out.examples.push(what);
        }
    };
    let mut exemplars = 0u64;
    let mut items: Vec<(&[toolwatch_storage::LabelRef<'_>], i64, f64)> = Vec::with_capacity(d.samples.len());
    let mut item_series: Vec<u32> = Vec::with_capacity(d.samples.len());
    for (si, s) in d.series.iter().enumerate() {
        let labels = d.series_labels(s);
        let samples = d.series_samples(s);
        exemplars += s.exemplars as u64;
        if s.histograms > 0 {
            out.histograms_rejected += s.histograms as u64;
            note(
                &mut out,
                format!("{}: {} native histogram samples (not supported yet)", describe(labels), s.histograms),
            );
        }
        if let Some(why) = &s.invalid {
            out.rejected += samples.len() as u64;
            by_reason[3] += samples.len() as u64;
            note(&mut out, format!("{}: {why}", describe(labels)));
            continue;
        }
        for &(t, v) in samples {
            items.push((labels, t, v));
            item_series.push(si as u32);
        }
    }
    let mut app = db.appender()?;
    out.written = app.append_batch(&items, |i, e| {
        out.rejected += 1;
        if let Some(k) = reasons.iter().position(|x| *x == e.reason()) {
            by_reason[k] += 1;
        }
        let labels = d.series_labels(&d.series[item_series[i] as usize]);
        note(&mut out, format!("{}: {e}", describe(labels)));
    }) as u64;
    app.commit()?;
    let m = &st.metrics;
    m.count_samples("accepted", out.written);
    for (i, n) in by_reason.iter().enumerate() {
        m.count_samples(reasons[i], *n);
    }
    m.histograms_rejected.inc_by(out.histograms_rejected);
    m.exemplars_dropped.inc_by(exemplars);
    Ok(out)
}

fn respond(st: &IngestState, version: Version, o: Outcome) -> Response {
    let mut resp = if o.rejected == 0 && o.histograms_rejected == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let mut parts = Vec::new();
        if o.rejected > 0 {
            parts.push(format!("{} samples rejected", o.rejected));
        }
        if o.histograms_rejected > 0 {
            parts.push(format!(
                "{} native histogram samples rejected (native histograms are not stored yet)",
                o.histograms_rejected
            ));
        }
        let msg = format!("{}; {} samples written; first: {}", parts.join(", "), o.written, o.examples.join("; "));
        log_rejection(st, &msg);
        text(StatusCode::BAD_REQUEST, msg)
    };
    if version == Version::V2 {
        let h = resp.headers_mut();
        h.insert("X-Prometheus-Remote-Write-Samples-Written", HeaderValue::from(o.written));
        h.insert("X-Prometheus-Remote-Write-Histograms-Written", HeaderValue::from(0u64));
        h.insert("X-Prometheus-Remote-Write-Exemplars-Written", HeaderValue::from(0u64));
    }
    resp
}

/// At most one log line per 10 s: a misbehaving sender must not flood the log.
fn log_rejection(st: &IngestState, msg: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = st.last_rejection_log.load(Ordering::Relaxed);
    if now >= last + 10
        && st.last_rejection_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(detail = %msg, "remote-write samples rejected (logged at most every 10s)");
    }
}

fn describe(labels: &[toolwatch_storage::LabelRef<'_>]) -> String {
    let inner: Vec<String> = labels.iter().map(|l| format!("{}={:?}", l.name, l.value)).collect();
    format!("{{{}}}", inner.join(", "))
}
