//! toolwatch-mcp: the MCP server (stdio and Streamable HTTP) through which agents query their
//! own tool telemetry.
//!
//! `ToolwatchMcp` (server.rs) is the rmcp `ServerHandler`: eleven read-only tools (tools.rs),
//! resources and prompts, each request measured in OpenTelemetry's MCP conventions
//! (telemetry.rs). Results are fitted to a budget (budget.rs); failures carry hints (hints.rs);
//! `tool_health` (health.rs) reads the common metric conventions. `router` mounts it at `/mcp`
//! (both protocol eras), `serve_stdio` runs it on stdin/stdout, and `relay_stdio` bridges stdio
//! to a running toolwatch's `/mcp`.
//!
//! It answers through `toolwatch-query` and reads alert state from `toolwatch-alerting`; it
//! never writes to storage (its telemetry is stored by whoever owns the registry).

pub mod budget;
pub mod health;
pub mod hints;
pub mod proxy;
pub mod proxy_http;
pub mod server;
pub mod telemetry;
pub mod tools;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::transport::Transport;
use std::sync::Arc;
use std::time::Duration;
use toolwatch_alerting::RuleManager;
use toolwatch_query::http::QueryState;

pub use budget::Budget;
pub use health::{default_sources, HealthSource};
pub use server::ToolwatchMcp;
pub use telemetry::McpMetrics;

/// The MCP server's options (the `mcp:` config section).
#[derive(Clone, Debug)]
pub struct McpOptions {
    pub budget: Budget,
    /// Longest a tool may run; queries get it as their timeout.
    pub tool_timeout: Duration,
    pub health_sources: Vec<HealthSource>,
    /// `Host` values `/mcp` accepts (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Browser origins `/mcp` accepts; requests without `Origin` always pass.
    pub allowed_origins: Vec<String>,
    pub max_request_body_bytes: usize,
}

impl Default for McpOptions {
    fn default() -> Self {
        McpOptions {
            budget: Budget::default(),
            tool_timeout: Duration::from_secs(10),
            health_sources: default_sources(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: vec!["http://localhost:*".into(), "http://127.0.0.1:*".into(), "http://[::1]:*".into()],
            max_request_body_bytes: 1 << 20,
        }
    }
}

/// The last failure of a probe target, kept by whoever records probe results (the reason is
/// text, which series cannot hold).
pub trait ProbeErrors: Send + Sync {
    /// (error code, message) of the target's latest result, when it failed.
    fn last_error(&self, target: &str) -> Option<(String, String)>;
}

/// What every MCP session shares: the query state, the rules (when this process runs them),
/// the metrics and the options.
pub struct Backend {
    pub query: Arc<QueryState>,
    pub rules: Option<Arc<RuleManager>>,
    pub probe_errors: Option<Arc<dyn ProbeErrors>>,
    pub metrics: McpMetrics,
    pub opts: McpOptions,
    pub version: &'static str,
}

/// `/mcp`: Streamable HTTP for both protocol eras — 2025-11-25 sessions (`initialize`,
/// `Mcp-Session-Id`, GET/DELETE) and stateless 2026-07-28 requests (`server/discover`).
pub fn router(b: Arc<Backend>, shutdown: tokio_util::sync::CancellationToken) -> axum::Router {
    let cfg = StreamableHttpServerConfig::default()
        .with_allowed_hosts(b.opts.allowed_hosts.clone())
        .with_allowed_origins(b.opts.allowed_origins.clone())
        .enforce_origin_validation()
        .with_legacy_session_mode(true)
        .with_max_request_body_bytes(b.opts.max_request_body_bytes)
        .with_cancellation_token(shutdown);
    let limit = b.opts.max_request_body_bytes;
    let service: StreamableHttpService<ToolwatchMcp, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(ToolwatchMcp::new(b.clone(), "tcp")), Default::default(), cfg);
    axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn_with_state(limit, http_answers))
}

/// Two answers of rmcp's HTTP service made clearer: a session DELETE gets 204 instead of 202
/// (clients, PyPI `mcp` among them, expect 200 or 204 and warn otherwise), and a body over the
/// limit gets a JSON-RPC error naming the setting instead of a bare 413.
async fn http_answers(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let is_delete = req.method() == axum::http::Method::DELETE;
    let mut resp = next.run(req).await;
    if is_delete && resp.status() == StatusCode::ACCEPTED {
        *resp.status_mut() = StatusCode::NO_CONTENT;
    }
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return proxy_http::jsonrpc_error(StatusCode::PAYLOAD_TOO_LARGE, &[], false, -32600, body_limit_message(limit));
    }
    resp
}

/// The error for a body over `mcp.max_request_body_bytes` (on `/mcp` and the proxies).
fn body_limit_message(limit: usize) -> String {
    format!("request body exceeds mcp.max_request_body_bytes ({limit} bytes)")
}

/// Serves MCP on stdin/stdout until the client closes stdin.
pub async fn serve_stdio(b: Arc<Backend>) -> Result<(), String> {
    use rmcp::ServiceExt;
    let running = ToolwatchMcp::new(b, "pipe")
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| format!("MCP session failed to start: {e}"))?;
    running.waiting().await.map_err(|e| format!("MCP session ended with an error: {e}"))?;
    Ok(())
}

/// Bridges stdio to a running toolwatch's `/mcp`, message by message: the agent talks to the
/// server's own tools (and its telemetry records the calls) without opening the store here.
pub async fn relay_stdio(url: &str, token: Option<String>) -> Result<(), String> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::{async_rw::AsyncRwTransport, StreamableHttpClientTransport};
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", url.trim_end_matches('/')));
    if let Some(t) = token {
        cfg = cfg.auth_header(t);
    }
    let mut up = StreamableHttpClientTransport::from_config(cfg);
    let (r, w) = rmcp::transport::stdio_pipes();
    let mut down = AsyncRwTransport::<rmcp::RoleServer, _, _>::new_server(r, w);
    loop {
        tokio::select! {
            m = down.receive() => match m {
                Some(m) => up.send(m).await.map_err(|e| format!("cannot reach toolwatch at {url}: {e}"))?,
                None => break,
            },
            m = up.receive() => match m {
                Some(m) => down.send(m).await.map_err(|e| format!("writing to stdout: {e}"))?,
                None => return Err(format!("toolwatch at {url} closed the MCP session")),
            },
        }
    }
    let _ = up.close().await;
    Ok(())
}
