//! `POST /api/v1/write` (alias `/api/v1/push`): Prometheus remote-write 1.0.
//!
//! Status codes follow Prometheus' own receiver: 204 when every sample is stored; 400 when the
//! body cannot be decoded or some samples were rejected (the others are still stored, and the
//! body says how many were rejected and why); 415 for an unsupported encoding or type; 500
//! only for failures a retry can fix (WAL write errors); 503 until the WAL replay is done.

use crate::remote_write_proto::WriteRequest;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;
use std::sync::{Arc, OnceLock};
use toolwatch_storage::{AppendError, Db, LabelRef};

#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest accepted request body, compressed.
    pub max_body_bytes: usize,
    /// Largest accepted body after snappy decompression.
    pub max_decompressed_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits { max_body_bytes: 32 << 20, max_decompressed_bytes: 256 << 20 }
    }
}

pub struct IngestState {
    /// Set once WAL replay finishes; writes before that get 503.
    pub db: Arc<OnceLock<Db>>,
    pub limits: IngestLimits,
}

pub fn router(state: Arc<IngestState>) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/api/v1/write", post(write))
        .route("/api/v1/push", post(write))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into() + "\n").into_response()
}

async fn write(State(st): State<Arc<IngestState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(db) = st.db.get().cloned() else {
        return err(StatusCode::SERVICE_UNAVAILABLE, "storage is starting (WAL replay in progress); retry later");
    };
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"snappy") {
            return err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {enc:?}: only snappy"),
            );
        }
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let ct = ct.to_ascii_lowercase().replace(' ', "");
        let v1 = ct == "application/x-protobuf" || ct == "application/x-protobuf;proto=prometheus.writerequest";
        if !v1 {
            return err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {ct:?}: expected application/x-protobuf (remote-write 1.0)"),
            );
        }
    }
    if body.len() > st.limits.max_body_bytes {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body of {} bytes exceeds ingest.max_body_bytes = {}", body.len(), st.limits.max_body_bytes),
        );
    }
    let limits = st.limits.clone();
    // Decoding and appending are CPU work with no await points; keep them off the I/O threads.
    match tokio::task::spawn_blocking(move || decode_and_append(&db, &body, &limits)).await {
        Ok(r) => r,
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, format!("ingest task failed: {e}")),
    }
}

fn decode_and_append(db: &Db, body: &[u8], limits: &IngestLimits) -> Response {
    let len = match snap::raw::decompress_len(body) {
        Ok(n) => n,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("snappy decode: {e}")),
    };
    if len > limits.max_decompressed_bytes {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "decompressed body of {len} bytes exceeds ingest.max_decompressed_bytes = {}",
                limits.max_decompressed_bytes
            ),
        );
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(body) {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("snappy decode: {e}")),
    };
    let req = match WriteRequest::decode(&raw[..]) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("protobuf decode: {e}")),
    };
    let mut app = match db.appender() {
        Ok(a) => a,
        Err(e) => return err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut rejected = 0usize;
    let mut examples: Vec<String> = Vec::new();
    let mut labels: Vec<LabelRef<'_>> = Vec::new();
    for ts in &req.timeseries {
        labels.clear();
        labels.extend(ts.labels.iter().map(|l| LabelRef { name: &l.name, value: &l.value }));
        for s in &ts.samples {
            if let Err(e) = app.append(&labels, s.timestamp, s.value) {
                rejected += 1;
                if examples.len() < 3 {
                    examples.push(format!("{}: {e}", describe(&labels)));
                }
                if matches!(e, AppendError::InvalidLabels(_)) {
                    rejected += ts.samples.len() - 1;
                    break;
                }
            }
        }
    }
    if let Err(e) = app.commit() {
        return err(StatusCode::INTERNAL_SERVER_ERROR, format!("writing the WAL failed, retry: {e}"));
    }
    if rejected > 0 {
        return err(
            StatusCode::BAD_REQUEST,
            format!("{rejected} samples rejected (the others were stored); first: {}", examples.join("; ")),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

fn describe(labels: &[LabelRef<'_>]) -> String {
    let inner: Vec<String> = labels.iter().map(|l| format!("{}={:?}", l.name, l.value)).collect();
    format!("{{{}}}", inner.join(", "))
}
