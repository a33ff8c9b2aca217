//! Reading a request body within limits, for the write endpoints (`/api/v1/write`,
//! `/api/v1/probes`): the size is checked as bytes arrive (a body is refused as soon as it grows
//! past the limit, never read whole first), and the whole body must arrive within
//! `ingest.body_read_timeout`, so a slow or stalled sender cannot hold an ingest slot or a
//! handler for long.
//!
//! A declared `Content-Length` over the limit is not refused before reading: hyper closes a
//! connection whose body it has not read, and if the body is still arriving the client gets a
//! reset instead of the 413. Reading up to the limit first lets the answer arrive.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The setting that bounds how long a body may take to arrive, as errors name it.
pub const TIMEOUT_SETTING: &str = "ingest.body_read_timeout";

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The bytes read so far exceed the limit.
    TooLarge { seen: u64 },
    /// The whole body did not arrive within the read timeout.
    TimedOut,
    /// The connection failed or ended before the body was complete.
    Read(String),
}

/// Reads `body` whole: refused once it is over `max` bytes, given up after `timeout` (zero: no
/// deadline). The caller's slot, if any, is released when it drops its permit on the error.
pub async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    read_within(body, max, timeout).await
}

/// A source of body bytes: the request's body, or a channel in the tests.
trait Chunks: Unpin {
    /// The next piece of data; an empty piece for a frame that carries none (trailers).
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>>;

    /// Bytes the sender declared it will send (`Content-Length`), 0 when unknown; only a hint
    /// for the buffer.
    fn declared(&self) -> u64 {
        0
    }
}

impl Chunks for Body {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        match Pin::new(&mut *self).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.to_string()))),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame.into_data().unwrap_or_default()))),
        }
    }

    fn declared(&self) -> u64 {
        HttpBody::size_hint(self).lower()
    }
}

async fn read_within(body: impl Chunks, max: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    if timeout.is_zero() {
        return read_limited(body, max).await;
    }
    match tokio::time::timeout(timeout, read_limited(body, max)).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::TimedOut),
    }
}

async fn read_limited(mut body: impl Chunks, max: usize) -> Result<Bytes, BodyError> {
    let max = max as u64;
    let declared = body.declared().min(max);
    // One piece (the usual case) is returned as it is; more are copied together.
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = std::future::poll_fn(|cx| body.poll_chunk(cx)).await {
        let data = chunk.map_err(BodyError::Read)?;
        if data.is_empty() {
            continue;
        }
        total += data.len() as u64;
        if total > max {
            return Err(BodyError::TooLarge { seen: total });
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            Some(f) => {
                joined.reserve(declared.max(total) as usize);
                joined.extend_from_slice(&f);
                joined.extend_from_slice(&data);
            }
            None => joined.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// A duration as the config file writes it (`30s`, `1500ms`).
pub fn format_timeout(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// 408 in Prometheus' error JSON, naming the setting: the body did not arrive in time. Nothing
/// of the request was stored.
pub fn timeout_response(timeout: Duration) -> Response {
    let msg =
        format!("request body not received within {TIMEOUT_SETTING} = {}; nothing was stored", format_timeout(timeout));
    let body = serde_json::json!({"status": "error", "errorType": "timeout", "error": msg});
    (StatusCode::REQUEST_TIMEOUT, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    impl Chunks for mpsc::Receiver<Bytes> {
        fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
            self.poll_recv(cx).map(|c| c.map(Ok))
        }
    }

    #[tokio::test]
    async fn whole_bodies_within_the_limit_are_read() {
        let b = read_body(Body::from(vec![7u8; 100]), 100, Duration::from_secs(1)).await.unwrap();
        assert_eq!(b.len(), 100);
        let b = read_body(Body::empty(), 0, Duration::ZERO).await.unwrap();
        assert!(b.is_empty());
        // Several pieces are joined in order.
        let (tx, rx) = mpsc::channel(4);
        let parts: [&[u8]; 4] = [b"ab", b"", b"cd", b"e"];
        for p in parts {
            tx.send(Bytes::copy_from_slice(p)).await.unwrap();
        }
        drop(tx);
        assert_eq!(&read_within(rx, 5, Duration::from_secs(1)).await.unwrap()[..], b"abcde");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let r = read_body(Body::from(vec![0u8; 101]), 100, Duration::from_secs(1)).await;
        assert_eq!(r, Err(BodyError::TooLarge { seen: 101 }));
    }

    #[tokio::test]
    async fn a_body_growing_past_the_limit_is_refused_as_it_arrives() {
        // The sender keeps going (the channel stays open): the refusal must not wait for the end.
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from(vec![0u8; 60])).await.unwrap();
        tx.send(Bytes::from(vec![0u8; 60])).await.unwrap();
        let r = read_within(rx, 100, Duration::from_secs(5)).await;
        assert_eq!(r, Err(BodyError::TooLarge { seen: 120 }));
        drop(tx);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
        let began = std::time::Instant::now();
        let r = read_within(rx, 1000, Duration::from_millis(100)).await;
        assert_eq!(r, Err(BodyError::TimedOut));
        assert!(began.elapsed() < Duration::from_secs(5));
        drop(tx);
    }

    #[test]
    fn the_timeout_answer_names_the_setting() {
        assert_eq!(format_timeout(Duration::from_secs(30)), "30s");
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1500ms");
        let r = timeout_response(Duration::from_secs(1));
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
