//! The Streamable HTTP side of the MCP proxy: a reverse proxy per `proxies:` entry, mounted on
//! the main listener. Every method (POST, GET for the server's SSE stream, DELETE) is relayed
//! to the upstream with its headers (session, protocol version, Last-Event-ID, Origin) and body
//! unchanged; the answer streams back chunk by chunk as it arrives — never buffered whole —
//! while `proxy::Observer` sees each JSON-RPC message on the way (the request body, then each
//! SSE event or the JSON body of the answer). The wire format is in docs/format/mcp-proxy.md.
//!
//! One observer per HTTP exchange is enough: a POST's answers come back on that POST's own
//! response, and the session's protocol version travels in `MCP-Protocol-Version` on every
//! request after `initialize`.

use crate::proxy::{error_message, Observer, ProxyMetrics, Requests, TargetNames, UpstreamLabels};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One proxied MCP server (a `proxies:` entry).
#[derive(Clone)]
pub struct ProxyTarget {
    /// The `target` label of its series.
    pub target: String,
    /// Where it is mounted on toolwatch's listener (`/proxy/NAME/mcp`).
    pub path: String,
    /// Its Streamable HTTP endpoint (`http://host:port/mcp`).
    pub upstream: String,
    /// Added to every upstream request (credentials for the upstream, say).
    pub headers: Vec<(String, String)>,
    pub bearer_token: Option<String>,
    pub connect_timeout: Duration,
    /// Distinct tool names its series may carry (`proxy::TargetNames`).
    pub max_tools: usize,
    /// Certificates trusted for an `https://` upstream besides the system's (a private CA).
    pub tls_roots: Vec<reqwest::Certificate>,
    /// Checks no certificate (test setups only).
    pub tls_insecure_skip_verify: bool,
}

/// What all proxies share.
#[derive(Clone)]
pub struct ProxyOptions {
    pub max_request_body_bytes: usize,
    /// `Host` values accepted (`mcp.allowed_hosts`). The upstream sees its own host name, so its
    /// DNS-rebinding check cannot see the client's: the proxy checks here instead.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted (`mcp.allowed_origins`), checked as `/mcp` checks them: many
    /// upstreams trust whatever reaches them on loopback, and toolwatch must not become the
    /// way a web page gets there.
    pub allowed_origins: Vec<String>,
    /// toolwatch checks bearer tokens itself: then the client's `Authorization` is toolwatch's
    /// credential and is not passed on (upstream credentials come from the target's config).
    pub own_auth: bool,
}

/// Checks a target's settings; the error names what is wrong.
pub fn validate(t: &ProxyTarget) -> Result<(), String> {
    if t.target.is_empty() {
        return Err("target is required".into());
    }
    let plain = t.path.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c));
    if !t.path.starts_with("/proxy/") || !plain || t.path.contains("//") {
        return Err(format!("path {:?} must start with /proxy/ and hold only letters, digits and - . _ ~ /", t.path));
    }
    match reqwest::Url::parse(&t.upstream) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            let shown = toolwatch_storage::redact_url(&t.upstream);
            return Err(format!("upstream {shown:?} is not an http:// or https:// URL"));
        }
    }
    extra_headers(t).map(|_| ())
}

fn extra_headers(t: &ProxyTarget) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    for (k, v) in &t.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("header name {k:?} is not valid"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("header {k:?}: value is not valid"))?;
        h.insert(name, value);
    }
    if let Some(tok) = &t.bearer_token {
        let v = HeaderValue::from_str(&format!("Bearer {tok}")).map_err(|_| "bearer_token is not valid".to_string())?;
        h.insert(header::AUTHORIZATION, v);
    }
    Ok(h)
}

struct Proxied {
    t: ProxyTarget,
    extra: HeaderMap,
    client: reqwest::Client,
    metrics: ProxyMetrics,
    names: Arc<TargetNames>,
    opts: ProxyOptions,
    shutdown: CancellationToken,
}

/// Mounts every target at its path. `shutdown` ends open streams, so a graceful shutdown is
/// not held up by an agent's GET stream.
pub fn router(
    targets: Vec<ProxyTarget>,
    opts: ProxyOptions,
    metrics: ProxyMetrics,
    shutdown: CancellationToken,
) -> Result<axum::Router, String> {
    let mut r = axum::Router::new();
    for t in targets {
        validate(&t).map_err(|e| format!("proxy {:?}: {e}", t.target))?;
        let mut b = reqwest::Client::builder()
            .connect_timeout(t.connect_timeout)
            .tcp_nodelay(true)
            // A redirect is the upstream's answer to the client, not something to follow here.
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(t.tls_insecure_skip_verify);
        for c in &t.tls_roots {
            b = b.add_root_certificate(c.clone());
        }
        let client = b.build().map_err(|e| format!("proxy {:?}: {e}", t.target))?;
        let extra = extra_headers(&t)?;
        let path = t.path.clone();
        let names = TargetNames::new(t.max_tools);
        let p = Arc::new(Proxied {
            t,
            extra,
            client,
            metrics: metrics.clone(),
            names,
            opts: opts.clone(),
            shutdown: shutdown.clone(),
        });
        r = r.route(&path, axum::routing::any(relay).with_state(p));
    }
    Ok(r)
}

/// Connection-level headers (RFC 9110 §7.6.1), never forwarded by a proxy.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn end_to_end(h: &HeaderMap) -> HeaderMap {
    let mut out = h.clone();
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for n in named {
        out.remove(n.as_str());
    }
    for n in &HOP_BY_HOP {
        out.remove(n);
    }
    out.remove(header::UPGRADE);
    out
}

async fn relay(State(p): State<Arc<Proxied>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let refused = if !host_allowed(&parts.headers, &p.opts.allowed_hosts) {
        Some("Host header is not allowed (mcp.allowed_hosts)")
    } else if !origin_allowed(&parts.headers, &p.opts.allowed_origins) {
        Some("Origin header is not allowed (mcp.allowed_origins)")
    } else {
        None
    };
    if let Some(why) = refused {
        return jsonrpc_error(StatusCode::FORBIDDEN, &[], false, -32600, why.into());
    }
    let body = match axum::body::to_bytes(body, p.opts.max_request_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return jsonrpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &[],
                false,
                -32600,
                crate::body_limit_message(p.opts.max_request_body_bytes),
            )
        }
    };
    let mut obs = Observer::new(&p.t.target, "tcp", p.metrics.clone(), p.names.clone());
    if let Some(v) = parts.headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok()) {
        obs.set_protocol_version(v);
    }
    let Requests { ids, batch } =
        if parts.method == Method::POST { obs.client_message(&body) } else { Requests::default() };

    let mut url = p.t.upstream.clone();
    if let Some(q) = parts.uri.query() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(q);
    }
    let mut headers = end_to_end(&parts.headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    // The answer must arrive as sent (identity) for the observer to read it; on loopback
    // compression buys nothing.
    headers.remove(header::ACCEPT_ENCODING);
    if p.opts.own_auth {
        headers.remove(header::AUTHORIZATION);
    }
    // The upstream sees toolwatch as its peer; this tells it (its logs, its rate limits) who
    // the client was, appended to whatever proxies before us said.
    if let Some(axum::extract::ConnectInfo(peer)) =
        parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        let ip = peer.ip().to_string();
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(before) => format!("{before}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", v);
        }
    }
    for (k, v) in &p.extra {
        headers.insert(k, v.clone());
    }
    let mut rb = p.client.request(parts.method.clone(), &url).headers(headers);
    if !body.is_empty() {
        rb = rb.body(body);
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            p.metrics.upstream_errors.get_or_create(&UpstreamLabels { target: p.t.target.clone() }).inc();
            obs.fail_pending("-32000");
            // The upstream URL may carry credentials (user-info, a key in the query string):
            // logs and answers get it without them, and reqwest's error without the URL.
            let why = error_chain(&e.without_url());
            let upstream = toolwatch_storage::redact_url(&p.t.upstream);
            tracing::warn!(target = %p.t.target, upstream = %upstream, error = %why, "MCP upstream unreachable");
            return jsonrpc_error(
                StatusCode::BAD_GATEWAY,
                &ids,
                batch,
                -32000,
                format!("the MCP server {:?} at {upstream} is unreachable: {why}", p.t.target),
            );
        }
    };

    let status = resp.status();
    let headers = end_to_end(resp.headers());
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let watch = if content_type.starts_with("text/event-stream") {
        Watch::Sse(SseEvents::default())
    } else if content_type.starts_with("application/json") {
        Watch::Json(Vec::new())
    } else {
        Watch::Nothing
    };
    // Errors for unanswered requests can be added to an event stream of unstated length.
    let can_add_events = matches!(watch, Watch::Sse(_)) && !headers.contains_key(header::CONTENT_LENGTH);
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let mut tap = Tap { obs, watch, status };
    if length == Some(0) {
        tap.end();
    }
    let stream = Relayed {
        inner: Box::pin(resp.bytes_stream()),
        cancel: Box::pin(p.shutdown.clone().cancelled_owned()),
        tap,
        proxied: p.clone(),
        can_add_events,
        length,
        received: 0,
        done: length == Some(0),
    };
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// reqwest's own text is "error sending request for url (…)"; the causes beneath it
/// (connection refused, timed out) are what tell the user what to fix.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        causes.push(c.to_string());
        cur = c.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(auth) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
    else {
        return false;
    };
    let bare = |h: &str| h.trim_matches(['[', ']']).to_ascii_lowercase();
    let host = bare(auth.host());
    // An allowed entry without a port allows every port, as in rmcp's own check.
    allowed.iter().any(|a| match a.parse::<axum::http::uri::Authority>() {
        Ok(x) => bare(x.host()) == host && x.port_u16().is_none_or(|p| Some(p) == auth.port_u16()),
        Err(_) => bare(a) == host,
    })
}

/// Requests without `Origin` (not from a browser) pass; `null` only when listed; otherwise
/// scheme and host must match an entry, whose port is `*` (any), absent (any, as rmcp still
/// allows) or equal to the origin's (the scheme's default when the origin omits it). An empty
/// list admits no browser origin, as `/mcp` enforces.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str().map(str::trim) else { return false };
    if origin.eq_ignore_ascii_case("null") {
        return allowed.iter().any(|a| a.trim().eq_ignore_ascii_case("null"));
    }
    let parse = |v: &str| -> Option<(String, String, Option<u16>)> {
        let u = v.parse::<axum::http::Uri>().ok()?;
        Some((
            u.scheme_str()?.to_ascii_lowercase(),
            u.host()?.trim_matches(['[', ']']).to_ascii_lowercase(),
            u.port_u16(),
        ))
    };
    let Some((scheme, host, port)) = parse(origin) else { return false };
    let port = port.or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    });
    allowed.iter().any(|a| {
        let (a, any_port) = match a.trim().strip_suffix(":*") {
            Some(base) => (base, true),
            None => (a.trim(), false),
        };
        parse(a).is_some_and(|(s, h, p)| s == scheme && h == host && (any_port || p.is_none() || p == port))
    })
}

/// An HTTP error whose body is a JSON-RPC error for each request the client sent (or one with
/// a null id when it sent none).
pub(crate) fn jsonrpc_error(status: StatusCode, ids: &[Value], batch: bool, code: i64, message: String) -> Response {
    let body = if ids.is_empty() {
        error_message(&Value::Null, code, &message)
    } else if batch {
        Value::Array(ids.iter().map(|id| error_message(id, code, &message)).collect())
    } else {
        error_message(&ids[0], code, &message)
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// What the observer reads from an answer.
enum Watch {
    Sse(SseEvents),
    /// The body so far (a copy for the observer, bounded by MAX_WATCHED; the client's copy
    /// streams on regardless).
    Json(Vec<u8>),
    Nothing,
}

/// Largest answer body or SSE event the observer reads. Past it the message is relayed
/// untouched and only counted as malformed: the bound is on telemetry memory, not on traffic.
const MAX_WATCHED: usize = 16 << 20;

struct Tap {
    obs: Observer,
    watch: Watch,
    status: StatusCode,
}

impl Tap {
    fn chunk(&mut self, b: &[u8]) {
        match &mut self.watch {
            Watch::Sse(events) => events.feed(b, |data| self.obs.server_message(data)),
            Watch::Json(buf) if buf.len() + b.len() <= MAX_WATCHED => buf.extend_from_slice(b),
            Watch::Json(_) => {
                self.obs.malformed("server");
                self.watch = Watch::Nothing;
            }
            Watch::Nothing => {}
        }
    }

    /// The upstream finished its answer.
    fn end(&mut self) {
        if let Watch::Json(buf) = &self.watch {
            if !buf.is_empty() {
                self.obs.server_message(buf);
            }
        }
        // An HTTP error that did not answer the requests in JSON-RPC (404 for an unknown
        // session, say) is their outcome.
        if !self.status.is_success() {
            self.obs.fail_pending(self.status.as_str());
        }
    }
}

/// The answer's body on its way to the client: each chunk is shown to the tap, then passed on.
struct Relayed {
    inner: Pin<Box<dyn futures_core::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    cancel: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    tap: Tap,
    proxied: Arc<Proxied>,
    can_add_events: bool,
    /// The upstream's Content-Length: hyper stops polling a body once that many bytes are out,
    /// so the answer's end is noticed by counting, not by the stream's end.
    length: Option<u64>,
    received: u64,
    done: bool,
}

impl futures_core::Stream for Relayed {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.cancel.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                this.tap.chunk(&b);
                this.received += b.len() as u64;
                if this.length == Some(this.received) {
                    this.done = true;
                    this.tap.end();
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                let p = &this.proxied;
                p.metrics.upstream_errors.get_or_create(&UpstreamLabels { target: p.t.target.clone() }).inc();
                let why = error_chain(&e.without_url());
                tracing::warn!(target = %p.t.target, error = %why, "MCP upstream broke off its answer");
                // Requests left unanswered get a JSON-RPC error each, as the stream's last events.
                let ids = this.tap.obs.fail_pending("-32000");
                if !this.can_add_events || ids.is_empty() {
                    return Poll::Ready(Some(Err(std::io::Error::other(why))));
                }
                let msg = format!("the MCP server {:?} broke off its answer: {why}", p.t.target);
                let mut events = String::new();
                for id in ids {
                    events.push_str(&format!("event: message\ndata: {}\n\n", error_message(&id, -32000, &msg)));
                }
                Poll::Ready(Some(Ok(Bytes::from(events))))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.tap.end();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The client went away before the answer ended: its requests still pending were cancelled.
impl Drop for Relayed {
    fn drop(&mut self) {
        if !self.done {
            self.tap.obs.fail_pending("cancelled");
        }
    }
}

/// Reads the `data` of each event from a `text/event-stream` fed in arbitrary chunks, by the
/// WHATWG rules (lines end in CRLF, LF or CR; `data:` lines of one event join with LF; a blank
/// line ends the event). Hand-written: the SSE crates are clients that own the connection,
/// while here the bytes pass through untouched and only need watching.
#[derive(Default)]
pub struct SseEvents {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in CR: a LF starting the next one belongs to that line ending.
    after_cr: bool,
    /// The current event outgrew MAX_WATCHED; it is skipped (and counted as malformed).
    oversized: bool,
}

impl SseEvents {
    pub fn feed(&mut self, mut b: &[u8], mut event: impl FnMut(&[u8])) {
        if self.after_cr && !b.is_empty() {
            if b[0] == b'\n' {
                b = &b[1..];
            }
            self.after_cr = false;
        }
        while let Some(i) = b.iter().position(|&c| c == b'\n' || c == b'\r') {
            self.push(&b[..i]);
            let cr = b[i] == b'\r';
            b = &b[i + 1..];
            if cr {
                match b.first() {
                    Some(b'\n') => b = &b[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            self.end_line(&mut event);
        }
        self.push(b);
    }

    fn push(&mut self, b: &[u8]) {
        if self.line.len() + self.data.len() + b.len() > MAX_WATCHED {
            self.oversized = true;
        } else {
            self.line.extend_from_slice(b);
        }
    }

    fn end_line(&mut self, event: &mut impl FnMut(&[u8])) {
        if self.line.is_empty() {
            if self.oversized {
                event(b"");
            } else if self.has_data && !self.data.is_empty() {
                event(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            self.oversized = false;
            return;
        }
        let line = &self.line[..];
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseEvents::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |d| out.push(String::from_utf8_lossy(d).into_owned()));
        }
        out
    }

    #[test]
    fn sse_events_across_any_chunking_and_line_endings() {
        let whole = b"id: 0\nretry: 3000\ndata:\n\n: comment\nevent: message\ndata: {\"a\":1}\n\ndata: x\r\ndata:y\r\n\r\ndata: z\r\rdata: w\n\n";
        let want = vec!["{\"a\":1}".to_string(), "x\ny".into(), "z".into(), "w".into()];
        assert_eq!(events(&[whole]), want);
        // Every split point, including between CR and LF.
        for i in 0..whole.len() {
            assert_eq!(events(&[&whole[..i], &whole[i..]]), want, "split at {i}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn hosts_are_checked_like_rmcp() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(v).unwrap());
            m
        };
        let allowed = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into(), "example.com:8080".into()];
        assert!(host_allowed(&h("127.0.0.1:9201"), &allowed));
        assert!(host_allowed(&h("[::1]:9201"), &allowed));
        assert!(host_allowed(&h("LOCALHOST"), &allowed));
        assert!(host_allowed(&h("example.com:8080"), &allowed));
        assert!(!host_allowed(&h("example.com:80"), &allowed));
        assert!(!host_allowed(&h("evil.test:9201"), &allowed));
        assert!(!host_allowed(&HeaderMap::new(), &allowed));
        assert!(host_allowed(&h("evil.test"), &[]));
    }

    #[test]
    fn origins_are_checked_like_mcp() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ORIGIN, HeaderValue::from_str(v).unwrap());
            m
        };
        let allowed: Vec<String> = [
            "http://localhost:*",
            "http://127.0.0.1:*",
            "http://[::1]:*",
            "https://app.example:8443",
            "http://portless",
        ]
        .map(String::from)
        .to_vec();
        for ok in ["http://localhost:3000", "http://[::1]:5173", "https://app.example:8443", "http://portless:81"] {
            assert!(origin_allowed(&h(ok), &allowed), "{ok}");
        }
        for bad in ["http://evil.test", "https://localhost:3000", "https://app.example", "null", "garbage"] {
            assert!(!origin_allowed(&h(bad), &allowed), "{bad}");
        }
        assert!(origin_allowed(&HeaderMap::new(), &allowed), "no Origin: not a browser");
        assert!(!origin_allowed(&h("http://localhost:3000"), &[]));
        assert!(origin_allowed(&h("null"), &["null".into()]));
    }

    #[test]
    fn request_ids_keep_batch_order_and_skip_notifications() {
        let mut reg = prometheus_client::registry::Registry::default();
        let mut o = Observer::new("t", "tcp", ProxyMetrics::register(&mut reg), TargetNames::new(10));
        let mut request_ids = |b: &[u8]| {
            let r = o.client_message(b);
            (r.ids, r.batch)
        };
        let (ids, batch) = request_ids(
            br#"[{"jsonrpc":"2.0","id":"b","method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        );
        assert_eq!((ids, batch), (vec![Value::from("b"), Value::from(1)], true));
        assert_eq!(request_ids(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#), (vec![], false));
        assert_eq!(request_ids(b"garbage"), (vec![], false));
    }
}
