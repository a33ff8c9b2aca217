//! The built-in prober: speaks MCP to configured servers from outside, as an agent would —
//! connect, `server/discover` falling back to `initialize`, `tools/list` through every page,
//! an optional read-only tool call — timing each phase, and records the result through the same
//! `ProbeSink` as pushed results. A bounded pool runs the probes on the async runtime; nothing
//! here touches the ingest path's threads or locks.

use crate::probe::{ProbeResult, ProbeSink};
use rmcp::model::{CallToolRequestParams, ProtocolVersion, Tool};
use rmcp::service::RunningService;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How an `https://` server's certificate is checked: against the system's roots plus `roots`
/// (a private CA); `insecure_skip_verify` checks nothing (test setups only).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub roots: Vec<reqwest::Certificate>,
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug)]
pub enum ProbeTransport {
    /// Streamable HTTP (`http://` or `https://`).
    Http { url: String, headers: Vec<(String, String)>, bearer_token: Option<String>, tls: TlsOptions },
    /// A server launched per probe, spoken to on its stdin/stdout.
    Stdio { command: Vec<String> },
}

#[derive(Clone, Debug)]
pub struct ProbeSpec {
    pub target: String,
    pub transport: ProbeTransport,
    pub interval: Duration,
    pub timeout: Duration,
    /// A read-only tool to call and its arguments.
    pub call: Option<(String, serde_json::Map<String, serde_json::Value>)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// SHA-256 of the canonical JSON (keys sorted, no whitespace) of the tools sorted by name, each
/// with its input schema, output schema and annotations: any change an agent would notice
/// changes the hash; the order the server lists them in does not.
pub fn schema_hash(tools: &[Tool]) -> String {
    let mut items: Vec<serde_json::Value> = tools
        .iter()
        .map(|t| {
            let v = serde_json::to_value(t).unwrap_or_default();
            serde_json::json!({
                "name": t.name,
                "inputSchema": v.get("inputSchema").cloned().unwrap_or_default(),
                "outputSchema": v.get("outputSchema").cloned().unwrap_or_default(),
                "annotations": v.get("annotations").cloned().unwrap_or_default(),
            })
        })
        .collect();
    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut text = String::new();
    canonical(&serde_json::Value::Array(items), &mut text);
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What kind of failure an error is, from the client library's description of it.
///
/// Only words count, never bare status numbers: the description carries the target's URL, and
/// a port such as 40123 must not make a certificate error look like a 401. The client names an
/// error status with its reason phrase ("401 Unauthorized", "403 Forbidden").
fn classify(e: &str) -> (&'static str, &'static str, Option<u16>) {
    let l = e.to_ascii_lowercase();
    if l.contains("authrequired") || l.contains("auth required") || l.contains("unauthorized") {
        ("auth_required", "auth_required", Some(401))
    } else if l.contains("insufficientscope") || l.contains("forbidden") {
        ("auth_required", "auth_required", Some(403))
    } else if l.contains("connection refused") || l.contains("connect error") || l.contains("connection reset") {
        ("down", "down", None)
    } else if l.contains("certificate") || l.contains("tls") {
        // The server answers, but not with a certificate this prober trusts (or not with TLS).
        ("protocol_error", "tls", None)
    } else {
        ("protocol_error", "protocol_error", None)
    }
}

/// The description without the target's URL, or its parts the client may print on their own
/// (address, host, path), so that a word in them — a host named `tls.example`, a path
/// `/unauthorized/mcp` — cannot pass for the kind of the error. Lowercased, as `classify` reads.
fn without_url(detail: &str, url: &str) -> String {
    let mut d = detail.to_ascii_lowercase();
    let Ok(u) = parse_url(url) else { return d };
    // As the client prints it (host lowercased, default port dropped), and as written.
    let printed = u.as_str().to_ascii_lowercase();
    let written = url.to_ascii_lowercase();
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    let address = host_port(url).unwrap_or_default().to_ascii_lowercase();
    let path = u.path().to_ascii_lowercase();
    let mut parts = [printed.trim_end_matches('/'), written.trim_end_matches('/'), &address, &host, &path];
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in parts.iter().filter(|p| p.len() > 1) {
        d = d.replace(*p, " ");
    }
    d
}

/// `message` with the target's URL, wherever a client library printed it, replaced by the URL
/// without user-info and query string (they may hold credentials): the message is logged and
/// shown by `probe_status`.
fn without_secrets(message: String, spec: &ProbeSpec) -> String {
    let ProbeTransport::Http { url, .. } = &spec.transport else { return message };
    let shown = toolwatch_storage::redact_url(url);
    let mut forms = vec![url.clone()];
    if let Ok(u) = reqwest::Url::parse(url) {
        forms.push(u.as_str().to_string());
        forms.push(u.as_str().trim_end_matches('/').to_string());
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut m = message;
    for f in forms.iter().filter(|f| !f.is_empty() && **f != shown) {
        m = m.replace(f.as_str(), &shown);
    }
    m
}

fn shorten(s: String) -> String {
    if s.len() <= 500 {
        return s;
    }
    let mut end = 500;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Probes once, within the spec's timeout.
pub async fn probe_once(spec: &ProbeSpec) -> ProbeResult {
    let mut r = ProbeResult { target: spec.target.clone(), timestamp: now_ms(), ..Default::default() };
    if let ProbeTransport::Http { url, .. } = &spec.transport {
        r.url = toolwatch_storage::redact_url(url);
    }
    let began = Instant::now();
    let outcome = tokio::time::timeout(spec.timeout, run(spec, &mut r)).await;
    r.duration_seconds = Some(began.elapsed().as_secs_f64());
    match outcome {
        Ok(Ok(())) => {
            r.success = true;
            r.state = "up".into();
        }
        Ok(Err((state, code, message))) => {
            r.success = false;
            r.state = state.into();
            r.error_code = code;
            r.error_message = shorten(without_secrets(message, spec));
        }
        Err(_) => {
            r.success = false;
            r.state = "timeout".into();
            r.error_code = "timeout".into();
            r.error_message = format!("no complete answer within {:?} (probe timeout)", spec.timeout);
        }
    }
    r
}

type Failure = (&'static str, String, String);

fn phase(r: &mut ProbeResult, name: &str, since: Instant) {
    r.phases.push((name.to_string(), since.elapsed().as_secs_f64()));
}

async fn run(spec: &ProbeSpec, r: &mut ProbeResult) -> Result<(), Failure> {
    let lifecycle = ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    };
    let handshake_failed = |r: &mut ProbeResult, e: HandshakeError| -> Failure {
        let detail = match &spec.transport {
            ProbeTransport::Http { url, .. } => without_url(&e.detail, url),
            _ => e.detail.clone(),
        };
        let (state, code, status) = classify(&detail);
        r.http_status = status;
        (state, code.to_string(), e.message)
    };
    let client: RunningService<RoleClient, ()> = match &spec.transport {
        ProbeTransport::Http { url, headers, bearer_token, tls } => {
            let t = Instant::now();
            let addr = host_port(url).map_err(|e| ("protocol_error", "bad_url".to_string(), e))?;
            tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| ("down", "connect".to_string(), format!("connecting to {addr}: {e}")))?;
            phase(r, "connect", t);
            let mut hm = reqwest::header::HeaderMap::new();
            for (k, v) in headers {
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| ("protocol_error", "bad_header".to_string(), format!("header {k:?}: {e}")))?;
                let value = reqwest::header::HeaderValue::from_str(v)
                    .map_err(|e| ("protocol_error", "bad_header".to_string(), format!("header {k:?}: {e}")))?;
                hm.insert(name, value);
            }
            let mut b = reqwest::Client::builder().default_headers(hm);
            for c in &tls.roots {
                b = b.add_root_certificate(c.clone());
            }
            let http = b
                .danger_accept_invalid_certs(tls.insecure_skip_verify)
                .build()
                .map_err(|e| ("protocol_error", "client".to_string(), e.to_string()))?;
            let mut cfg =
                rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url.clone());
            if let Some(tok) = bearer_token {
                cfg = cfg.auth_header(tok.clone());
            }
            let make = || Ok(rmcp::transport::StreamableHttpClientTransport::with_client(http.clone(), cfg.clone()));
            let t = Instant::now();
            let c = handshake(make, lifecycle).await.map_err(|e| handshake_failed(r, e))?;
            handshake_phase(r, &c, t);
            c
        }
        ProbeTransport::Stdio { command } => {
            let t = Instant::now();
            let (prog, args) = command.split_first().ok_or((
                "protocol_error",
                "bad_command".to_string(),
                "empty command".to_string(),
            ))?;
            let spawn = || {
                let mut cmd = tokio::process::Command::new(prog);
                cmd.args(args).stderr(std::process::Stdio::null());
                rmcp::transport::TokioChildProcess::new(cmd).map_err(|e| format!("starting {prog:?}: {e}"))
            };
            let first = spawn().map_err(|e| ("down", "spawn".to_string(), e))?;
            phase(r, "connect", t);
            let t = Instant::now();
            let mut first = Some(first);
            let make = || match first.take() {
                Some(p) => Ok(p),
                None => spawn(),
            };
            let c = handshake(make, lifecycle).await.map_err(|e| handshake_failed(r, e))?;
            handshake_phase(r, &c, t);
            c
        }
    };
    let result = after_handshake(spec, r, &client).await;
    let _ = client.cancel().await;
    result
}

/// `server/discover` first; a server that answers discover but shares no modern version with
/// us (or does not know discover) gets the 2025-11-25 `initialize` handshake on a new
/// connection.
async fn handshake<T, E, A>(
    mut make: impl FnMut() -> Result<T, String>,
    lifecycle: ClientLifecycleMode,
) -> Result<RunningService<RoleClient, ()>, HandshakeError>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let transport = make().map_err(HandshakeError::plain)?;
    match ().serve_with_lifecycle(transport, lifecycle).await {
        Ok(c) => Ok(c),
        Err(e) => {
            let e = HandshakeError::from(&e);
            if !e.detail.contains("NoCompatibleProtocolVersion") {
                return Err(e);
            }
            let transport = make().map_err(HandshakeError::plain)?;
            ().serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
                .await
                .map_err(|e| HandshakeError::from(&e))
        }
    }
}

/// A failed handshake, described twice: `detail` (the error's Debug form) names the client
/// library's error variants, which is what the failure's kind is read from; `message` is the
/// chain of causes in words, which is what a person or an agent reads (the Debug form spends
/// its first hundreds of characters on type names and ids).
struct HandshakeError {
    detail: String,
    message: String,
}

impl HandshakeError {
    fn plain(message: String) -> Self {
        HandshakeError { detail: message.clone(), message }
    }

    fn from(e: &rmcp::service::ClientInitializeError) -> Self {
        HandshakeError { detail: format!("{e:?}"), message: describe(e) }
    }
}

/// A handshake error in words: what the client was doing, then each cause once. rmcp's
/// transport errors do not hand on their causes through `source()` (and print the transport's
/// type name), so the steps in between are opened here.
fn describe(e: &rmcp::service::ClientInitializeError) -> String {
    use rmcp::service::ClientInitializeError as E;
    match e {
        E::TransportError { error, context } => format!("{context}: {}", causes(&*error.error)),
        E::LegacyFallbackFailed { discover, fallback } => {
            format!("discover: {}; initialize: {}", describe(discover), describe(fallback))
        }
        other => causes(other),
    }
}

/// An error and its sources, each said once: many errors print their source inside their own
/// message, so a cause already said is not said again.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    type HttpError = rmcp::transport::streamable_http_client::StreamableHttpError<reqwest::Error>;
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = match err.downcast_ref::<HttpError>() {
            Some(HttpError::Client(inner)) => Some(inner as &(dyn std::error::Error + 'static)),
            _ => err.source(),
        };
    }
    out
}

fn handshake_phase(r: &mut ProbeResult, c: &RunningService<RoleClient, ()>, t: Instant) {
    let info = c.peer().peer_info();
    let version = info.as_ref().map(|i| i.protocol_version.clone());
    let modern = version.as_ref().is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
    phase(r, if modern { "discover" } else { "initialize" }, t);
    r.protocol_version = version.map(|v| v.as_str().to_string()).unwrap_or_default();
    if let Some(si) = info.as_ref().and_then(|i| i.server_info.as_ref()) {
        r.server_name = si.name.clone();
        r.server_version = si.version.clone();
    }
}

async fn after_handshake(
    spec: &ProbeSpec,
    r: &mut ProbeResult,
    c: &RunningService<RoleClient, ()>,
) -> Result<(), Failure> {
    let t = Instant::now();
    let tools = c
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| ("protocol_error", "tools_list".to_string(), format!("tools/list failed: {e}")))?;
    phase(r, "tools_list", t);
    r.tools = Some(tools.len() as u64);
    r.schema_hash = schema_hash(&tools);
    if let Some((tool, args)) = &spec.call {
        let t = Instant::now();
        let res = c
            .peer()
            .call_tool(CallToolRequestParams::new(tool.clone()).with_arguments(args.clone()))
            .await
            .map_err(|e| ("protocol_error", "tool_call".to_string(), format!("tools/call {tool}: {e}")))?;
        phase(r, "tool_call", t);
        if res.is_error == Some(true) {
            let text: String = res.content.iter().filter_map(|b| b.as_text().map(|t| t.text.clone())).collect();
            return Err(("down", "tool_error".to_string(), format!("tool {tool} answered isError: {text}")));
        }
    }
    Ok(())
}

/// The URL read by reqwest's own parser, so the prober checks exactly what its client will use.
fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    let shown = toolwatch_storage::redact_url(url);
    let u = reqwest::Url::parse(url).map_err(|e| format!("{shown:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{shown:?}: only http:// and https:// URLs (and stdio commands) can be probed"));
    }
    Ok(u)
}

fn host_port(url: &str) -> Result<String, String> {
    let u = parse_url(url)?;
    match (u.host_str(), u.port_or_known_default()) {
        (Some(host), Some(port)) if !host.is_empty() => Ok(format!("{host}:{port}")),
        _ => Err(format!("{:?}: no host", toolwatch_storage::redact_url(url))),
    }
}

/// Checks a spec before the prober starts, so a bad one is a start-up error.
pub fn validate(spec: &ProbeSpec) -> Result<(), String> {
    match &spec.transport {
        ProbeTransport::Http { url, .. } => host_port(url).map(|_| ()),
        ProbeTransport::Stdio { command } if command.is_empty() => Err("command must not be empty".into()),
        ProbeTransport::Stdio { .. } => Ok(()),
    }
}

/// Runs every spec on its interval until the returned handles are dropped or aborted. Each
/// target starts at its own offset in its interval (a hash of its name), so probes spread out.
pub fn start(specs: Vec<ProbeSpec>, sink: Arc<ProbeSink>, max_concurrent: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let pool = Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1)));
    specs
        .into_iter()
        .map(|spec| {
            let (sink, pool) = (sink.clone(), pool.clone());
            tokio::spawn(async move {
                let iv = spec.interval.max(Duration::from_millis(100));
                let h = spec.target.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
                let offset = Duration::from_millis(h % iv.as_millis().max(1) as u64);
                let mut next = tokio::time::Instant::now() + offset;
                loop {
                    tokio::time::sleep_until(next).await;
                    next += iv;
                    let Ok(_permit) = pool.acquire().await else { return };
                    let r = probe_once(&spec).await;
                    if !r.success {
                        tracing::info!(target = %r.target, state = %r.state, code = %r.error_code, error = %r.error_message, "MCP probe failed");
                    }
                    if let Err(e) = sink.record(std::slice::from_ref(&r)) {
                        tracing::warn!(target = %r.target, error = %e, "probe result not stored");
                    }
                    // A probe that ran past its interval does not queue up missed ones.
                    let now = tokio::time::Instant::now();
                    while next <= now {
                        next += iv;
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_to_addresses() {
        assert_eq!(host_port("http://127.0.0.1:9201/mcp").unwrap(), "127.0.0.1:9201");
        assert_eq!(host_port("http://example.com/mcp").unwrap(), "example.com:80");
        assert_eq!(host_port("https://example.com/mcp").unwrap(), "example.com:443");
        assert!(host_port("ftp://example.com/mcp").unwrap_err().contains("only http:// and https://"));
    }

    #[test]
    fn hash_ignores_order_and_sees_schema_changes() {
        let tool = |name: &str, prop: &str| -> Tool {
            serde_json::from_value(serde_json::json!({
                "name": name, "inputSchema": {"type": "object", "properties": {prop: {"type": "string"}}}
            }))
            .unwrap()
        };
        let a = schema_hash(&[tool("a", "x"), tool("b", "y")]);
        assert_eq!(a, schema_hash(&[tool("b", "y"), tool("a", "x")]));
        assert_ne!(a, schema_hash(&[tool("a", "x"), tool("b", "z")]));
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
    }

    #[test]
    fn failures_by_kind() {
        assert_eq!(classify("TransportError { error: AuthRequired(...) }").0, "auth_required");
        assert_eq!(classify("Connection refused (os error 111)").0, "down");
        assert_eq!(classify("Deserialize error: expected value").0, "protocol_error");
        assert_eq!(classify("HTTP status client error (401 Unauthorized) for url (http://h/mcp)").0, "auth_required");
        assert_eq!(classify("HTTP 403 Forbidden: no").2, Some(403));
        // The port is part of the description; it is not a status.
        let tls = "Client(reqwest::Error { kind: Request, url: \"https://localhost:40123/mcp\", source: \
                   hyper_util::client::legacy::Error(Connect, Custom { kind: Other, error: \
                   InvalidCertificate(UnknownIssuer) }) })";
        assert_eq!(classify(tls), ("protocol_error", "tls", None));
        assert_eq!(classify("connecting to 127.0.0.1:40301: Connection refused (os error 111)").0, "down");
    }

    #[test]
    fn words_in_the_target_url_are_not_the_error() {
        // A 400 from a server whose host and path hold the words `classify` looks for.
        let url = "https://TLS.example:8443/unauthorized/certificate/mcp";
        let detail = "UnexpectedServerResponse(\"HTTP 400 Bad Request\") for url \
                      (https://tls.example:8443/unauthorized/certificate/mcp), host tls.example";
        assert_eq!(classify(&without_url(detail, url)), ("protocol_error", "protocol_error", None));
        // The error's own words still count.
        let refused = "error sending request for url (https://tls.example:8443/unauthorized/certificate/mcp): \
                       Connection refused";
        assert_eq!(classify(&without_url(refused, url)).0, "down");
        let cert = "https://tls.example:8443/unauthorized/certificate/mcp: invalid peer certificate: UnknownIssuer";
        assert_eq!(classify(&without_url(cert, url)).1, "tls");
    }
}
