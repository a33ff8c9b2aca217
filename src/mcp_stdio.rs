//! `toolwatch mcp`: MCP over stdin/stdout for agents that launch their servers. By default it
//! relays to a running toolwatch (whose telemetry then records the calls); with `--data-dir` it
//! opens the store itself and records its own calls there.

use crate::config::Config;
use crate::McpArgs;
use anyhow::{Context, Result};
use std::sync::{Arc, OnceLock};
use toolwatch_query::http::{MetadataSource, MetricMetadata, QueryState, RuntimeFacts};
use toolwatch_query::metrics::QueryMetrics;
use toolwatch_storage::{DataDirLock, Db};

/// With the store opened directly there is no remote-write metadata to serve.
struct NoMetadata;

impl MetadataSource for NoMetadata {
    fn all(&self) -> Vec<MetricMetadata> {
        Vec::new()
    }
}

pub fn run(a: McpArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    // stdout carries the protocol; logs go to stderr, quietly unless asked.
    crate::init_logging("warn");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let Some(dir) = a.data_dir else {
        let token = crate::client_token(a.token, a.token_file.as_deref())?;
        return rt.block_on(toolwatch_mcp::relay_stdio(&a.url, token)).map_err(anyhow::Error::msg);
    };
    cfg.data_dir = dir;
    let lock = DataDirLock::acquire(&cfg.data_dir).context("cannot use the data directory")?;
    let db = Db::open_locked(lock, &cfg.data_dir, cfg.db_options()).context("opening storage")?;
    let cell = Arc::new(OnceLock::new());
    let _ = cell.set(db.clone());
    let mut registry = prometheus_client::registry::Registry::default();
    let query = Arc::new(QueryState::new(
        cell.clone(),
        cfg.engine_options(),
        cfg.query.max_concurrency,
        Arc::new(NoMetadata),
        RuntimeFacts::default(),
        &crate::build_info::BUILD,
        QueryMetrics::new(&mut registry),
    ));
    let backend = Arc::new(toolwatch_mcp::Backend {
        query,
        rules: None,
        probe_errors: None,
        metrics: toolwatch_mcp::McpMetrics::register(&mut registry),
        opts: cfg.mcp_options(),
        version: env!("CARGO_PKG_VERSION"),
    });
    let registry = Arc::new(registry);
    let r = rt.block_on(async {
        if cfg.self_monitoring.enabled {
            let reg = registry.clone();
            tokio::spawn(crate::selfscrape::run(
                move || crate::telemetry::exposition(&reg),
                |_: &str, _: &str, _: &str| {},
                cell.clone(),
                cfg.self_monitoring.job.clone(),
                "stdio".to_string(),
                cfg.self_monitoring.interval,
            ));
        }
        toolwatch_mcp::serve_stdio(backend).await
    });
    // One last scrape so calls of a short session are kept.
    let text = crate::telemetry::exposition(&registry);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    crate::selfscrape::append_scrape(
        &db,
        &crate::selfscrape::parse_exposition(&text),
        &cfg.self_monitoring.job,
        "stdio",
        now,
        now - 1,
        &mut Default::default(),
    );
    db.close().context("syncing the WAL")?;
    r.map_err(anyhow::Error::msg)
}
