//! Composes the HTTP app from the crates' routers, adds the binary's own endpoints (health,
//! readiness, metrics, admin) and request telemetry, and runs it until a signal arrives.

use crate::auth::{Guard, RateLimiter};
use crate::config::Config;
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
use toolwatch_query::http::{MetadataSource, MetricMetadata, QueryState, RuntimeFacts};
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

pub fn router(
    db: Arc<OnceLock<Db>>,
    telemetry: Arc<Telemetry>,
    ingest: Arc<IngestState>,
    query: Arc<QueryState>,
    rules: Arc<RuleManager>,
    mcp: Router,
    probes: Router,
    guard: Arc<Guard>,
) -> Router {
    let st = AppState { db: db.clone(), telemetry: telemetry.clone() };
    let own = Router::new()
        .route("/-/healthy", get(|| async { "toolwatch is Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/admin/flush", post(flush))
        .with_state(st.clone());
    own.merge(toolwatch_ingest::router(ingest))
        .merge(toolwatch_query::http::router(query))
        .merge(toolwatch_alerting::router(rules))
        .merge(mcp)
        .merge(probes)
        .layer(middleware::from_fn_with_state(guard, crate::auth::guard))
        .layer(middleware::from_fn_with_state(st, count_requests))
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
    let cell: Arc<OnceLock<Db>> = Arc::new(OnceLock::new());
    let mut telemetry = Telemetry::new(cell.clone());
    let ingest_metrics = IngestMetrics::new(&mut telemetry.registry);
    let metadata = Arc::new(MetadataStore::default());
    let ingest = Arc::new(IngestState::new(cell.clone(), cfg.ingest_limits(), metadata.clone(), ingest_metrics));
    let runtime = RuntimeFacts {
        start_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        retention: crate::config::format_duration(cfg.storage.retention_time),
    };
    let query = Arc::new(QueryState::new(
        cell.clone(),
        cfg.engine_options(),
        cfg.query.max_concurrency,
        Arc::new(Metadata(metadata.clone())),
        runtime,
        env!("CARGO_PKG_VERSION"),
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
    let mut mcp = toolwatch_mcp::router(mcp_backend, mcp_shutdown.clone());
    // Proxied servers' series have the same names as toolwatch's own MCP series (both follow
    // OpenTelemetry), so they live in a registry of their own, stored under job "mcp-proxy".
    if !cfg.proxies.is_empty() {
        let mut proxy_registry = prometheus_client::registry::Registry::default();
        let opts = toolwatch_mcp::proxy_http::ProxyOptions {
            max_request_body_bytes: cfg.mcp.max_request_body_bytes,
            allowed_hosts: cfg.mcp.allowed_hosts.clone(),
            allowed_origins: cfg.mcp.allowed_origins.clone(),
            own_auth: !cfg.auth.tokens.is_empty(),
        };
        let metrics = toolwatch_mcp::proxy::ProxyMetrics::register(&mut proxy_registry);
        let proxies = toolwatch_mcp::proxy_http::router(cfg.proxy_targets()?, opts, metrics, mcp_shutdown.clone())
            .map_err(anyhow::Error::msg)?;
        mcp = mcp.merge(proxies);
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
    });
    if !guard.tokens.is_empty() {
        tracing::info!(tokens = guard.tokens.len(), "bearer-token authentication on");
    }
    let probe_routes = toolwatch_ingest::probe::router(probes.clone(), cfg.ingest.max_body_bytes);
    // The tasks run until the process exits.
    let _probers = toolwatch_ingest::prober::start(cfg.probe_specs()?, probes, cfg.probe_concurrency);
    if !cfg.probes.is_empty() {
        tracing::info!(targets = cfg.probes.len(), "probing MCP servers");
    }
    let telemetry = Arc::new(telemetry);
    let app = router(cell.clone(), telemetry.clone(), ingest, query, rules, mcp, probe_routes, guard);
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
