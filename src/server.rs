//! Composes the HTTP app from the crates' routers, adds the binary's own endpoints (health,
//! readiness, metrics, admin) and request telemetry, and runs it until a signal arrives. Every
//! router is mounted with the access its routes need (`Mount`); `toolwatch routes` lists them.

use crate::auth::{Access, Guard, RateLimiter};
use crate::config::{Config, Scope};
use crate::telemetry::{HttpLabels, Telemetry};
use anyhow::{Context, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use toolwatch_alerting::{GroupShared, Notifier, RuleManager};
use toolwatch_ingest::{IngestMetrics, IngestState, MetadataStore};
use toolwatch_query::http::{ConfigReloads, MetadataSource, MetricMetadata, QueryState, RuntimeFacts};
use toolwatch_query::metrics::QueryMetrics;
use toolwatch_storage::{DataDirLock, Db};

#[derive(Clone)]
struct AppState {
    db: Arc<OnceLock<Db>>,
    telemetry: Arc<Telemetry>,
}

/// Serves remote-write metadata to the query API's `/api/v1/metadata`.
struct Metadata(Arc<MetadataStore>);

impl MetadataSource for Metadata {
    fn all(&self) -> Vec<MetricMetadata> {
        self.0
            .all()
            .into_iter()
            .map(|(metric, m)| MetricMetadata { metric, typ: m.typ, help: m.help, unit: m.unit })
            .collect()
    }
}

/// The prober's failure reasons, for the MCP `probe_status` tool.
struct ProbeNotes(Arc<toolwatch_ingest::probe::ProbeSink>);

impl toolwatch_mcp::ProbeErrors for ProbeNotes {
    fn last_error(&self, target: &str) -> Option<(String, String)> {
        self.0.last(target).filter(|r| !r.success).map(|r| (r.error_code, r.error_message))
    }
}

/// The app being composed. Each router is mounted with the access its routes need, and every
/// path it brings is recorded with that declaration, so a route cannot join the app without
/// one; `toolwatch routes` and tests/e2e/security.rs check the result against the final router.
pub struct Mount {
    router: Router,
    declared: Vec<(String, Access)>,
    guard: Arc<Guard>,
}

impl Mount {
    pub fn new(guard: Arc<Guard>) -> Mount {
        Mount { router: Router::new(), declared: Vec::new(), guard }
    }

    /// Merges `r`, its routes behind the guard with `access` (the guard runs only for requests
    /// that match one of them; unknown paths are a plain 404).
    pub fn mount(mut self, access: Access, r: Router) -> Mount {
        let paths = route_paths(&r);
        if paths.is_empty() {
            return self; // route_layer panics on a router without routes
        }
        self.declared.extend(paths.into_iter().map(|p| (p, access)));
        let layer = middleware::from_fn_with_state((self.guard.clone(), access), crate::auth::guard);
        self.router = self.router.merge(r.route_layer(layer));
        self
    }

    pub fn finish(self) -> (Router, Vec<(String, Access)>) {
        (self.router, self.declared)
    }
}

/// Every path `r` routes, sorted. axum 0.8 has no public listing of a router's routes, but its
/// `Debug` output prints them all (`PathRouter { routes: {..}, node: Node { paths:
/// {RouteId(3): "/api/v1/query", ..} } }`, see axum's routing/path_router.rs); the routes
/// themselves print no quoted text. The fallback router, printed after `fallback_router`, is
/// left out. `route_paths_are_read_from_debug` below fails if a new axum prints otherwise.
pub fn route_paths(r: &Router) -> Vec<String> {
    let text = format!("{r:?}");
    let text = text.split("fallback_router").next().unwrap_or("");
    let mut out = Vec::new();
    for piece in text.split("RouteId(").skip(1) {
        let Some((id, rest)) = piece.split_once("): \"") else { continue };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some((path, _)) = rest.split_once('"') {
            out.push(path.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The app: every crate's router and the binary's own endpoints, each mounted with its access,
/// and request telemetry around all of them. Also returns what each path declared.
#[allow(clippy::too_many_arguments)]
pub fn router(
    db: Arc<OnceLock<Db>>,
    telemetry: Arc<Telemetry>,
    ingest: Arc<IngestState>,
    query: Arc<QueryState>,
    rules: Arc<RuleManager>,
    mcp: Router,
    proxies: Option<Router>,
    probes: Router,
    guard: Arc<Guard>,
) -> (Router, Vec<(String, Access)>) {
    use crate::auth::Access::{Open, Scoped};
    let st = AppState { db: db.clone(), telemetry: telemetry.clone() };
    let health = Router::new()
        .route("/-/healthy", get(|| async { "toolwatch is Healthy.\n" }))
        .route("/-/ready", get(ready))
        .with_state(st.clone());
    let own_metrics = Router::new().route("/metrics", get(metrics)).with_state(st.clone());
    let flush_route = Router::new().route("/api/v1/admin/flush", post(flush)).with_state(st.clone());
    let mut app = Mount::new(guard)
        .mount(Open, health)
        .mount(Scoped(Scope::Read), own_metrics)
        .mount(Scoped(Scope::Admin), flush_route)
        .mount(Scoped(Scope::Write), toolwatch_ingest::router(ingest))
        .mount(Scoped(Scope::Write), probes)
        .mount(Scoped(Scope::Read), toolwatch_query::http::router(query))
        .mount(Scoped(Scope::Read), toolwatch_alerting::router(rules.clone()))
        .mount(Scoped(Scope::Admin), toolwatch_alerting::reload_router(rules))
        .mount(Scoped(Scope::Read), mcp);
    if let Some(p) = proxies {
        // Relays with toolwatch's own credentials to the upstreams: a scope of its own.
        app = app.mount(Scoped(Scope::Proxy), p);
    }
    let (app, declared) = app.finish();
    (app.layer(middleware::from_fn_with_state(st, count_requests)), declared)
}

/// Every route of `app` with what it declared, `None` for a path no mount declared.
pub fn declarations(app: &Router, declared: &[(String, Access)]) -> Vec<(String, Option<Access>)> {
    route_paths(app)
        .into_iter()
        .map(|p| {
            let access = declared.iter().find(|(d, _)| *d == p).map(|(_, a)| *a);
            (p, access)
        })
        .collect()
}

/// The proxies' router (`/proxy/...`), its series registered in `registry`.
fn proxy_router(
    cfg: &Config,
    registry: &mut prometheus_client::registry::Registry,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Router> {
    let opts = toolwatch_mcp::proxy_http::ProxyOptions {
        max_request_body_bytes: cfg.mcp.max_request_body_bytes,
        allowed_hosts: cfg.mcp.allowed_hosts.clone(),
        allowed_origins: cfg.mcp.allowed_origins.clone(),
        own_auth: !cfg.auth.tokens.is_empty(),
    };
    let metrics = toolwatch_mcp::proxy::ProxyMetrics::register(registry);
    toolwatch_mcp::proxy_http::router(cfg.proxy_targets()?, opts, metrics, shutdown).map_err(anyhow::Error::msg)
}

/// With no tokens every route is open to whoever reaches the listener; on loopback that is
/// this host's users (and, for state changes, not web pages: see auth::cross_site). Beyond
/// loopback, say so at start.
fn warn_if_open(cfg: &Config, bound: Option<std::net::SocketAddr>) {
    let loopback = bound.is_some_and(|a| a.ip().is_loopback());
    if loopback || !cfg.auth.tokens.is_empty() {
        return;
    }
    let proxies = if cfg.proxies.is_empty() { "" } else { ", relay tool calls through its MCP proxies" };
    tracing::warn!(
        "listening on {} beyond loopback with no auth.tokens: anyone who can reach it can write data \
         (remote-write, probe results), reload rules and flush the head{proxies}, and read everything; \
         configure auth.tokens (see docs/security.md)",
        cfg.listen
    );
}

/// Every route of the app this config builds, with its declared access (`None`: undeclared),
/// for `toolwatch routes`. Built by `router`, as the server builds it, around state that is
/// never started: the storage cell stays empty and no task is spawned.
pub fn app_routes(cfg: &Config) -> Result<Vec<(String, Option<Access>)>> {
    let cell: Arc<OnceLock<Db>> = Arc::new(OnceLock::new());
    let mut telemetry = Telemetry::new(cell.clone());
    let metadata = Arc::new(MetadataStore::default());
    let ingest_metrics = IngestMetrics::new(&mut telemetry.registry);
    let ingest = Arc::new(IngestState::new(cell.clone(), cfg.ingest_limits(), metadata.clone(), ingest_metrics));
    let query = Arc::new(QueryState::new(
        cell.clone(),
        cfg.engine_options(),
        cfg.query.max_concurrency,
        Arc::new(Metadata(metadata)),
        RuntimeFacts::default(),
        &crate::build_info::BUILD,
        QueryMetrics::new(&mut telemetry.registry),
    ));
    let shared = Arc::new(GroupShared {
        external_labels: cfg.global.external_labels.clone(),
        external_url: cfg.external_url.clone(),
        engine_opts: cfg.engine_options(),
        notifier: Notifier::new(Vec::new(), 1, None),
        metrics: toolwatch_alerting::group::RuleMetrics::register(&mut telemetry.registry),
    });
    let rules = RuleManager::new(
        cell.clone(),
        cfg.rule_files.clone(),
        cfg.config_dir.clone(),
        cfg.global.evaluation_interval,
        shared,
    );
    let probes = Arc::new(toolwatch_ingest::probe::ProbeSink::new(cell.clone()));
    let backend = Arc::new(toolwatch_mcp::Backend {
        query: query.clone(),
        rules: Some(rules.clone()),
        probe_errors: None,
        metrics: toolwatch_mcp::McpMetrics::register(&mut telemetry.registry),
        opts: cfg.mcp_options(),
        version: env!("CARGO_PKG_VERSION"),
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mcp = toolwatch_mcp::router(backend, shutdown.clone());
    let mut proxy_registry = prometheus_client::registry::Registry::default();
    let proxies =
        if cfg.proxies.is_empty() { None } else { Some(proxy_router(cfg, &mut proxy_registry, shutdown)?) };
    let probe_routes =
        toolwatch_ingest::probe::router(probes, cfg.ingest.max_body_bytes, cfg.ingest_limits().body_read_timeout);
    let guard = Arc::new(Guard {
        tokens: cfg.tokens()?,
        open_paths: Vec::new(),
        rate: None,
        allowed_hosts: cfg.mcp.allowed_hosts.clone(),
    });
    let (app, declared) =
        router(cell, Arc::new(telemetry), ingest, query, rules, mcp, proxies, probe_routes, guard);
    Ok(declarations(&app, &declared))
}

async fn ready(State(st): State<AppState>) -> Response {
    match st.db.get() {
        Some(_) => (StatusCode::OK, "toolwatch is Ready.\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: WAL replay in progress.\n").into_response(),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let body = st.telemetry.encode();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

fn api_error(code: StatusCode, error_type: &str, msg: String) -> Response {
    (code, Json(serde_json::json!({"status": "error", "errorType": error_type, "error": msg}))).into_response()
}

async fn flush(State(st): State<AppState>) -> Response {
    let Some(db) = st.db.get().cloned() else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "storage is starting (WAL replay in progress)".into(),
        );
    };
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(report)) => Json(serde_json::json!({"status": "success", "data": report})).into_response(),
        Ok(Err(e)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn count_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let handler =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    st.telemetry.http_requests.get_or_create(&HttpLabels { handler, code: resp.status().as_u16() }).inc();
    resp
}

/// Runs the server: lock the data dir, bind, serve (ready once the WAL is replayed), and on
/// SIGTERM/SIGINT stop accepting, let in-flight requests finish, sync the WAL and return.
pub async fn run(cfg: Config) -> Result<()> {
    let lock = DataDirLock::acquire(&cfg.data_dir).context("cannot use the data directory")?;
    let listener =
        tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, data_dir = %cfg.data_dir.display(), "toolwatch starting");
    warn_if_open(&cfg, listener.local_addr().ok());
    let cell: Arc<OnceLock<Db>> = Arc::new(OnceLock::new());
    let mut telemetry = Telemetry::new(cell.clone());
    let ingest_metrics = IngestMetrics::new(&mut telemetry.registry);
    let metadata = Arc::new(MetadataStore::default());
    let ingest = Arc::new(IngestState::new(cell.clone(), cfg.ingest_limits(), metadata.clone(), ingest_metrics));
    // Rule-file loads report here; runtimeinfo reads it (reloadConfigSuccess, lastConfigTime).
    let reloads = Arc::new(ConfigReloads::default());
    let runtime = RuntimeFacts {
        start_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        retention: crate::config::format_duration(cfg.storage.retention_time),
        reloads: reloads.clone(),
    };
    let query = Arc::new(QueryState::new(
        cell.clone(),
        cfg.engine_options(),
        cfg.query.max_concurrency,
        Arc::new(Metadata(metadata.clone())),
        runtime,
        &crate::build_info::BUILD,
        QueryMetrics::new(&mut telemetry.registry),
    ));
    let notifier = Notifier::new(cfg.notify_targets(), 10_000, Some(&mut telemetry.registry));
    tokio::spawn(notifier.clone().run());
    let shared = Arc::new(GroupShared {
        external_labels: cfg.global.external_labels.clone(),
        external_url: if cfg.external_url.is_empty() {
            format!("http://{}", cfg.listen)
        } else {
            cfg.external_url.clone()
        },
        engine_opts: cfg.engine_options(),
        notifier,
        metrics: toolwatch_alerting::group::RuleMetrics::register(&mut telemetry.registry),
    });
    let rules = RuleManager::new(
        cell.clone(),
        cfg.rule_files.clone(),
        cfg.config_dir.clone(),
        cfg.global.evaluation_interval,
        shared,
    );
    rules.report_reloads_to(reloads);
    rules.reload().map_err(anyhow::Error::msg).context("loading rule files")?;
    let rules2 = rules.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rule files");
            let _ = rules2.reload();
        }
    });
    let probes = Arc::new(toolwatch_ingest::probe::ProbeSink::new(cell.clone()));
    let mcp_backend = Arc::new(toolwatch_mcp::Backend {
        query: query.clone(),
        rules: Some(rules.clone()),
        probe_errors: Some(Arc::new(ProbeNotes(probes.clone()))),
        metrics: toolwatch_mcp::McpMetrics::register(&mut telemetry.registry),
        opts: cfg.mcp_options(),
        version: env!("CARGO_PKG_VERSION"),
    });
    let mcp_shutdown = tokio_util::sync::CancellationToken::new();
    let mcp = toolwatch_mcp::router(mcp_backend, mcp_shutdown.clone());
    let mut proxy_routes = None;
    // Proxied servers' series have the same names as toolwatch's own MCP series (both follow
    // OpenTelemetry), so they live in a registry of their own, stored under job "mcp-proxy".
    if !cfg.proxies.is_empty() {
        let mut proxy_registry = prometheus_client::registry::Registry::default();
        proxy_routes = Some(proxy_router(&cfg, &mut proxy_registry, mcp_shutdown.clone())?);
        tracing::info!(targets = cfg.proxies.len(), "proxying MCP servers");
        let m = metadata.clone();
        tokio::spawn(crate::selfscrape::run(
            move || crate::telemetry::exposition(&proxy_registry),
            move |name: &str, typ: &str, help: &str| m.set(name, typ, help, ""),
            cell.clone(),
            "mcp-proxy".into(),
            cfg.listen.clone(),
            cfg.self_monitoring.interval,
        ));
    }
    let rl = &cfg.http.rate_limit;
    let guard = Arc::new(Guard {
        tokens: cfg.tokens()?,
        open_paths: cfg.auth.unauthenticated_paths.clone(),
        rate: (rl.requests_per_second > 0.0).then(|| RateLimiter::new(rl.requests_per_second, rl.burst)),
        allowed_hosts: cfg.mcp.allowed_hosts.clone(),
    });
    if !guard.tokens.is_empty() {
        tracing::info!(tokens = guard.tokens.len(), "bearer-token authentication on");
    }
    let probe_routes =
        toolwatch_ingest::probe::router(probes.clone(), cfg.ingest.max_body_bytes, cfg.ingest.body_read_timeout);
    // The tasks run until the process exits.
    let _probers = toolwatch_ingest::prober::start(cfg.probe_specs()?, probes, cfg.probe_concurrency);
    if !cfg.probes.is_empty() {
        tracing::info!(targets = cfg.probes.len(), "probing MCP servers");
    }
    let telemetry = Arc::new(telemetry);
    let (app, _) =
        router(cell.clone(), telemetry.clone(), ingest, query, rules, mcp, proxy_routes, probe_routes, guard);
    if cfg.self_monitoring.enabled {
        let t = telemetry.clone();
        tokio::spawn(crate::selfscrape::run(
            move || t.encode(),
            move |name: &str, typ: &str, help: &str| metadata.set(name, typ, help, ""),
            cell.clone(),
            cfg.self_monitoring.job.clone(),
            cfg.listen.clone(),
            cfg.self_monitoring.interval,
        ));
    }

    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    let (dir, opts, persist_every, cell2) =
        (cfg.data_dir.clone(), cfg.db_options(), cfg.storage.persist_interval, cell.clone());
    tokio::task::spawn_blocking(move || match Db::open_locked(lock, &dir, opts) {
        Ok(db) => {
            db.start_background(persist_every);
            let _ = cell2.set(db);
            tracing::info!("ready");
        }
        Err(e) => {
            let _ = fatal_tx.blocking_send(anyhow::Error::new(e).context("opening storage"));
        }
    });

    let fatal = Arc::new(std::sync::Mutex::new(None::<anyhow::Error>));
    let fatal2 = fatal.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received, shutting down"),
            Some(e) = fatal_rx.recv() => *fatal2.lock().expect("fatal slot") = Some(e),
        }
        // Open MCP streams (GET/SSE) would otherwise hold the graceful shutdown forever.
        mcp_shutdown.cancel();
    };
    // Answers go out in several writes (headers, then each SSE event); with Nagle on, a
    // client's delayed ACK holds the second write ~40 ms.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    if let Some(e) = fatal.lock().expect("fatal slot").take() {
        return Err(e);
    }
    if let Some(db) = cell.get() {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.close()).await?.context("syncing the WAL on shutdown")?;
        tracing::info!("WAL synced, bye");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Give a moment for the log line to flush in tests that read stderr.
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn h() -> &'static str {
        ""
    }

    #[test]
    fn route_paths_are_read_from_debug() {
        let inner = Router::new().route("/x", get(h));
        let r: Router = Router::new()
            .route("/api/v1/query", get(h).post(h))
            .route("/api/v1/label/{name}/values", get(h))
            .nest_service("/n", inner)
            .fallback(h);
        assert_eq!(
            route_paths(&r),
            vec!["/api/v1/label/{name}/values", "/api/v1/query", "/n", "/n/", "/n/{*__private__axum_nest_tail_param}"]
        );
    }

    #[test]
    fn a_path_merged_past_the_mount_is_undeclared() {
        let guard =
            Arc::new(Guard { tokens: Vec::new(), open_paths: Vec::new(), rate: None, allowed_hosts: Vec::new() });
        let (app, declared) = Mount::new(guard)
            .mount(Access::Open, Router::new().route("/-/healthy", get(h)))
            .mount(Access::Scoped(Scope::Write), Router::new().route("/api/v1/write", post(h)))
            .mount(Access::Scoped(Scope::Read), Router::new())
            .finish();
        let app = app.merge(Router::new().route("/sneaky", get(h)));
        assert_eq!(
            declarations(&app, &declared),
            vec![
                ("/-/healthy".to_string(), Some(Access::Open)),
                ("/api/v1/write".to_string(), Some(Access::Scoped(Scope::Write))),
                ("/sneaky".to_string(), None),
            ]
        );
    }

    #[tokio::test]
    async fn the_app_declares_every_route() {
        let routes = app_routes(&Config::default()).unwrap();
        let of = |p: &str| routes.iter().find(|(r, _)| r == p).and_then(|(_, a)| *a).map(Access::as_str);
        assert!(routes.iter().all(|(_, a)| a.is_some()), "{routes:?}");
        assert_eq!(of("/api/v1/write"), Some("write"));
        assert_eq!(of("/api/v1/push"), Some("write"));
        assert_eq!(of("/api/v1/probes"), Some("write"));
        assert_eq!(of("/api/v1/admin/flush"), Some("admin"));
        assert_eq!(of("/-/reload"), Some("admin"));
        assert_eq!(of("/api/v1/query"), Some("read"));
        assert_eq!(of("/api/v1/rules"), Some("read"));
        assert_eq!(of("/mcp"), Some("read"));
        assert_eq!(of("/metrics"), Some("read"));
        assert_eq!(of("/-/healthy"), Some("open"));
        assert_eq!(of("/-/ready"), Some("open"));
    }
}
