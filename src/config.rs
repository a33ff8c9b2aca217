//! The YAML config file. Every field has a default, so an empty file (or none) runs; each is
//! documented in docs/configuration.md. Only this module reads the file; crates get typed
//! options built from it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toolwatch_ingest::{DecodeLimits, IngestLimits};
use toolwatch_storage::{DbOptions, FsyncMode, HeadOptions};

mod targets;
use targets::proxies_itself;
pub use targets::{ProbeConfig, ProxyConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub query: QueryConfig,
    /// Prometheus' `global` block: rule evaluation interval and external labels.
    pub global: GlobalConfig,
    /// Globs of Prometheus rule files, relative to the config file's directory.
    pub rule_files: Vec<String>,
    pub alerting: AlertingConfig,
    /// The URL toolwatch is reached at, for alert generator links and `$externalURL`.
    pub external_url: String,
    /// The MCP server at `/mcp` and `toolwatch mcp`.
    pub mcp: McpConfig,
    /// Bearer tokens guarding the HTTP endpoints; none configured means no authentication.
    pub auth: AuthConfig,
    pub http: HttpConfig,
    /// toolwatch appends its own metrics into its own store.
    pub self_monitoring: SelfMonitoringConfig,
    /// MCP servers the built-in prober checks from outside.
    pub probes: Vec<ProbeConfig>,
    /// Probes running at once, across all targets.
    pub probe_concurrency: usize,
    /// MCP servers relayed through toolwatch's listener (Streamable HTTP reverse proxy), each
    /// tool call recorded.
    pub proxies: Vec<ProxyConfig>,
    /// Directory of the config file; relative `rule_files` are resolved against it.
    #[serde(skip)]
    pub config_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:9201".into(),
            data_dir: PathBuf::from("./data"),
            log_level: "info".into(),
            storage: StorageConfig::default(),
            ingest: IngestConfig::default(),
            query: QueryConfig::default(),
            global: GlobalConfig::default(),
            rule_files: Vec::new(),
            alerting: AlertingConfig::default(),
            external_url: String::new(),
            mcp: McpConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            self_monitoring: SelfMonitoringConfig::default(),
            probes: Vec::new(),
            probe_concurrency: 4,
            proxies: Vec::new(),
            config_dir: PathBuf::from("."),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(deserialize_with = "de_duration")]
    pub out_of_order_window: Duration,
    pub max_series: usize,
    pub wal_fsync: FsyncMode,
    #[serde(deserialize_with = "de_duration")]
    pub wal_fsync_interval: Duration,
    pub wal_segment_bytes: u64,
    #[serde(deserialize_with = "de_duration")]
    pub block_range: Duration,
    #[serde(deserialize_with = "de_opt_duration")]
    pub max_block_span: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub retention_time: Duration,
    pub retention_bytes: u64,
    #[serde(deserialize_with = "de_duration")]
    pub persist_interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_future: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            out_of_order_window: Duration::ZERO,
            max_series: 0,
            wal_fsync: FsyncMode::Interval,
            wal_fsync_interval: Duration::from_secs(1),
            wal_segment_bytes: 128 << 20,
            block_range: Duration::from_secs(2 * 3600),
            max_block_span: None,
            retention_time: Duration::from_secs(15 * 24 * 3600),
            retention_bytes: 0,
            persist_interval: Duration::from_secs(60),
            // As Mimir's creation grace period: a sender whose clock runs a little ahead is
            // fine, one sending nanoseconds as milliseconds is not.
            max_future: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_inflight_requests: usize,
    /// Longest a write body (remote-write, probe results) may take to arrive; past it 408.
    #[serde(deserialize_with = "de_duration")]
    pub body_read_timeout: Duration,
    pub max_series_per_request: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let d = IngestLimits::default();
        IngestConfig {
            max_body_bytes: d.max_body_bytes,
            max_decompressed_bytes: d.max_decompressed_bytes,
            max_inflight_requests: d.max_inflight_requests,
            body_read_timeout: d.body_read_timeout,
            max_series_per_request: d.decode.max_series_per_request,
            max_labels_per_series: d.decode.max_labels_per_series,
            max_label_name_bytes: d.decode.max_label_name_bytes,
            max_label_value_bytes: d.decode.max_label_value_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlobalConfig {
    #[serde(deserialize_with = "de_duration")]
    pub evaluation_interval: Duration,
    pub external_labels: std::collections::BTreeMap<String, String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig { evaluation_interval: Duration::from_secs(60), external_labels: Default::default() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// As in prometheus.yml: `static_configs[].targets`, `scheme`, `path_prefix`, `timeout`.
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// Generic receivers sent Alertmanager's webhook payload.
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub static_configs: Vec<StaticConfig>,
    pub scheme: String,
    pub path_prefix: String,
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    pub api_version: String,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            static_configs: Vec::new(),
            scheme: "http".into(),
            path_prefix: "/".into(),
            timeout: Duration::from_secs(10),
            api_version: "v2".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticConfig {
    pub targets: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

/// Never prints the URL's user-info or query string (they may hold credentials).
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &toolwatch_storage::redact_url(&self.url))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// Where alerts go: every Alertmanager target (`<scheme>://<target><path_prefix>api/v2/alerts`)
    /// and every webhook.
    pub fn notify_targets(&self) -> Vec<toolwatch_alerting::Target> {
        let mut out = Vec::new();
        for am in &self.alerting.alertmanagers {
            let prefix = format!("/{}/", am.path_prefix.trim_matches('/')).replace("//", "/");
            for sc in &am.static_configs {
                for t in &sc.targets {
                    out.push(toolwatch_alerting::Target {
                        kind: toolwatch_alerting::TargetKind::Alertmanager,
                        url: format!("{}://{t}{prefix}api/v2/alerts", am.scheme),
                        timeout: am.timeout,
                    });
                }
            }
        }
        for w in &self.alerting.webhooks {
            out.push(toolwatch_alerting::Target {
                kind: toolwatch_alerting::TargetKind::Webhook,
                url: w.url.clone(),
                timeout: w.timeout,
            });
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Longest a query may run; a request's `timeout` can only shorten it.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Samples one query may load before it fails.
    pub max_samples: usize,
    /// How far back an instant selector looks for a sample.
    #[serde(deserialize_with = "de_duration")]
    pub lookback_delta: Duration,
    /// Queries evaluated at once; more wait for a slot.
    pub max_concurrency: usize,
    /// Points per series a range query may return.
    pub max_points_per_series: usize,
    /// Levels a query's syntax tree may have (query API, rules and MCP tools alike).
    pub max_expression_depth: usize,
    /// Levels a query may have for `/api/v1/format_query`, whose output grows with their square.
    pub max_format_depth: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let d = toolwatch_query::EngineOptions::default();
        QueryConfig {
            timeout: d.timeout,
            max_samples: d.max_samples,
            lookback_delta: d.lookback,
            max_concurrency: 20,
            max_points_per_series: d.max_points_per_series,
            max_expression_depth: toolwatch_query::depth::DEFAULT_MAX_EXPRESSION_DEPTH,
            max_format_depth: toolwatch_query::depth::DEFAULT_MAX_FORMAT_DEPTH,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Longest one tool call may run (queries get it as their timeout).
    #[serde(deserialize_with = "de_duration")]
    pub tool_timeout: Duration,
    /// What one tool result may hold before it is cut and summarized.
    pub budget: BudgetConfig,
    /// `Host` header values `/mcp` accepts (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin`s `/mcp` accepts (scheme://host:port, `:*` for any port); others get 403.
    pub allowed_origins: Vec<String>,
    pub max_request_body_bytes: usize,
    /// Metric conventions `tool_health` reads.
    pub tool_health: Vec<toolwatch_mcp::HealthSource>,
}

impl Default for McpConfig {
    fn default() -> Self {
        let d = toolwatch_mcp::McpOptions::default();
        McpConfig {
            tool_timeout: d.tool_timeout,
            budget: BudgetConfig {
                max_series: d.budget.max_series,
                max_points: d.budget.max_points,
                max_bytes: d.budget.max_bytes,
            },
            allowed_hosts: d.allowed_hosts,
            allowed_origins: d.allowed_origins,
            max_request_body_bytes: d.max_request_body_bytes,
            tool_health: d.health_sources,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub max_series: usize,
    pub max_points: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// Paths served without a token (liveness and readiness probes carry none).
    pub unauthenticated_paths: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { tokens: Vec::new(), unauthenticated_paths: vec!["/-/healthy".into(), "/-/ready".into()] }
    }
}

/// What a token may do. Each route declares the one scope it needs where it is mounted
/// (src/server.rs); `toolwatch routes` lists them.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The query API, rules and alerts, `/mcp`, `/metrics`.
    Read,
    /// Remote-write (`/api/v1/write`, `/api/v1/push`) and pushed probe results.
    Write,
    /// Flush and rule reload.
    Admin,
    /// `/proxy/*`: relaying to upstream MCP servers with toolwatch's own credentials.
    Proxy,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Proxy => "proxy",
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token; shown in logs instead of the token.
    pub name: String,
    /// The secret, or use `token_file`.
    #[serde(default)]
    pub token: String,
    /// A file holding the secret (trailing whitespace trimmed).
    #[serde(default)]
    pub token_file: String,
    pub scopes: Vec<Scope>,
}

/// Never prints the secret.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig").field("name", &self.name).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub rate_limit: RateLimitConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second each client (by token, else by address) may make; 0 turns it off.
    pub requests_per_second: f64,
    /// Requests a client may make at once before the rate applies.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { requests_per_second: 0.0, burst: 100 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfMonitoringConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// The `job` label of the stored series (`instance` is the listen address).
    pub job: String,
}

impl Default for SelfMonitoringConfig {
    fn default() -> Self {
        SelfMonitoringConfig { enabled: true, interval: Duration::from_secs(15), job: "toolwatch".into() }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let mut cfg: Config =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
        cfg.config_dir = path.parent().map_or_else(|| PathBuf::from("."), |p| p.to_path_buf());
        cfg.validate()?;
        // One depth limit for everything that parses PromQL in this process: the query API,
        // rule files and MCP tools (see toolwatch_query::depth).
        toolwatch_query::depth::set_max_expression_depth(cfg.query.max_expression_depth);
        toolwatch_query::depth::set_max_format_depth(cfg.query.max_format_depth);
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.storage.block_range.as_millis() == 0 {
            bail!("storage.block_range must be positive");
        }
        if self.global.evaluation_interval.is_zero() {
            bail!("global.evaluation_interval must be positive");
        }
        for am in &self.alerting.alertmanagers {
            if am.api_version != "v2" {
                bail!("alerting.alertmanagers[].api_version: only v2 is supported, got {:?}", am.api_version);
            }
        }
        if self.query.max_expression_depth == 0 || self.query.max_format_depth == 0 {
            bail!("query.max_expression_depth and query.max_format_depth must be positive");
        }
        if self.query.lookback_delta.is_zero() || self.query.timeout.is_zero() {
            bail!("query.lookback_delta and query.timeout must be positive");
        }
        for t in &self.auth.tokens {
            if t.token_file.is_empty() && t.token.trim().is_empty() {
                bail!("auth.tokens[{:?}]: token is empty or only whitespace (set token or token_file)", t.name);
            }
            if t.token.is_empty() == t.token_file.is_empty() {
                bail!("auth.tokens[{:?}]: set exactly one of token and token_file", t.name);
            }
            if t.scopes.is_empty() {
                bail!("auth.tokens[{:?}]: scopes must list at least one of read, write, admin, proxy", t.name);
            }
        }
        // Token files are read now, so an empty or missing one stops the start at once.
        self.tokens()?;
        if self.mcp.tool_timeout.is_zero() || self.self_monitoring.interval.is_zero() {
            bail!("mcp.tool_timeout and self_monitoring.interval must be positive");
        }
        for (i, spec) in self.probe_specs()?.into_iter().enumerate() {
            let p = &self.probes[i];
            if p.target.is_empty() {
                bail!("probes[{i}]: target is required");
            }
            if p.url.is_empty() == p.command.is_empty() {
                bail!("probes[{i}] ({:?}): set exactly one of url and command", p.target);
            }
            if p.interval.is_zero() || p.timeout.is_zero() {
                bail!("probes[{i}] ({:?}): interval and timeout must be positive", p.target);
            }
            toolwatch_ingest::prober::validate(&spec)
                .map_err(|e| anyhow::anyhow!("probes[{i}] ({:?}): {e}", p.target))?;
        }
        let mut paths = std::collections::HashSet::new();
        for (i, t) in self.proxy_targets()?.iter().enumerate() {
            toolwatch_mcp::proxy_http::validate(t)
                .map_err(|e| anyhow::anyhow!("proxies[{i}] ({:?}): {e}", t.target))?;
            if proxies_itself(t, &self.listen) {
                let upstream = toolwatch_storage::redact_url(&t.upstream);
                bail!("proxies[{i}] ({:?}): upstream {upstream} is one of toolwatch's own proxy paths", t.target);
            }
            if !paths.insert(t.path.clone()) {
                bail!("proxies[{i}] ({:?}): path {} is used by another proxy", t.target, t.path);
            }
        }
        if self.http.rate_limit.requests_per_second < 0.0 {
            bail!("http.rate_limit.requests_per_second must not be negative");
        }
        if self.storage.wal_segment_bytes < 1 << 20 {
            bail!("storage.wal_segment_bytes must be at least 1MiB");
        }
        Ok(())
    }

    pub fn db_options(&self) -> DbOptions {
        let s = &self.storage;
        let retention_ms = s.retention_time.as_millis() as i64;
        DbOptions {
            head: HeadOptions {
                out_of_order_window_ms: s.out_of_order_window.as_millis() as i64,
                max_series: s.max_series,
                block_range_ms: s.block_range.as_millis() as i64,
            },
            wal_fsync: s.wal_fsync,
            wal_fsync_interval: s.wal_fsync_interval,
            wal_segment_bytes: s.wal_segment_bytes,
            retention_ms,
            retention_bytes: s.retention_bytes,
            max_block_span_ms: s.max_block_span.map(|d| d.as_millis() as i64).unwrap_or(if retention_ms == 0 {
                31 * 24 * 3600 * 1000
            } else {
                (retention_ms / 10).min(31 * 24 * 3600 * 1000)
            }),
            max_future_ms: s.max_future.as_millis() as i64,
        }
    }

    pub fn engine_options(&self) -> toolwatch_query::EngineOptions {
        let q = &self.query;
        toolwatch_query::EngineOptions {
            lookback: q.lookback_delta,
            max_samples: q.max_samples,
            timeout: q.timeout,
            max_points_per_series: q.max_points_per_series,
            ..Default::default()
        }
    }

    pub fn ingest_limits(&self) -> IngestLimits {
        let i = &self.ingest;
        IngestLimits {
            max_body_bytes: i.max_body_bytes,
            max_decompressed_bytes: i.max_decompressed_bytes,
            max_inflight_requests: i.max_inflight_requests,
            body_read_timeout: i.body_read_timeout,
            decode: DecodeLimits {
                max_series_per_request: i.max_series_per_request,
                max_labels_per_series: i.max_labels_per_series,
                max_label_name_bytes: i.max_label_name_bytes,
                max_label_value_bytes: i.max_label_value_bytes,
            },
        }
    }
}

impl Config {
    pub fn mcp_options(&self) -> toolwatch_mcp::McpOptions {
        let m = &self.mcp;
        toolwatch_mcp::McpOptions {
            budget: toolwatch_mcp::Budget {
                max_series: m.budget.max_series,
                max_points: m.budget.max_points,
                max_bytes: m.budget.max_bytes,
            },
            tool_timeout: m.tool_timeout,
            health_sources: m.tool_health.clone(),
            allowed_hosts: m.allowed_hosts.clone(),
            allowed_origins: m.allowed_origins.clone(),
            max_request_body_bytes: m.max_request_body_bytes,
        }
    }

    /// The configured tokens with their secrets read (from `token_file` where given).
    pub fn tokens(&self) -> Result<Vec<crate::auth::Token>> {
        self.auth
            .tokens
            .iter()
            .map(|t| {
                let secret = if t.token_file.is_empty() {
                    t.token.clone()
                } else {
                    let p = self.config_dir.join(&t.token_file);
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("auth.tokens[{:?}]: reading token_file {}", t.name, p.display()))?
                        .trim_end()
                        .to_string()
                };
                // An empty secret would match an empty presented token; never accept one.
                if secret.trim().is_empty() {
                    bail!("auth.tokens[{:?}]: the token (token or token_file) is empty or only whitespace", t.name);
                }
                Ok(crate::auth::Token { name: t.name.clone(), secret, scopes: t.scopes.clone() })
            })
            .collect()
    }
}

/// Prometheus duration syntax: `1y2w3d4h5m6s7ms`, or `0` — the query API's parser, so config
/// files and requests accept exactly the same durations.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let ms = toolwatch_query::time::parse_duration_ms(s.trim()).map_err(anyhow::Error::msg)?;
    Ok(Duration::from_millis(ms as u64))
}

/// A duration in Prometheus' notation with the largest units that divide it (`15d`, `90m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [("d", 86_400_000u64), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("15d").unwrap(), Duration::from_secs(15 * 86400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn yaml_with_defaults_and_unknown_fields() {
        let c: Config = serde_saphyr::from_str("storage:\n  out_of_order_window: 10m\n  wal_fsync: batch\n").unwrap();
        assert_eq!(c.storage.out_of_order_window, Duration::from_secs(600));
        assert_eq!(c.storage.wal_fsync, FsyncMode::Batch);
        assert_eq!(c.listen, "127.0.0.1:9201");
        assert!(serde_saphyr::from_str::<Config>("storage:\n  bogus: 1\n").is_err());
    }

    /// Read as Prometheus' `yaml.UnmarshalStrict` reads its config: unknown fields and duplicate
    /// keys are errors that give line and column, merge keys work.
    #[test]
    fn yaml_is_read_strictly_with_merge_keys() {
        let text = "listen: 127.0.0.1:1\nstorage:\n  wal_fsync: batch\n  bogus: 1\n";
        let e = serde_saphyr::from_str::<Config>(text).unwrap_err();
        let loc = e.location().expect("a location");
        assert_eq!((loc.line(), loc.column()), (4, 3), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");

        let e = serde_saphyr::from_str::<Config>("storage:\n  wal_fsync: batch\n  wal_fsync: never\n").unwrap_err();
        assert!(e.to_string().to_lowercase().contains("duplicate"), "{e}");
        assert_eq!(e.location().map(|l| l.line()), Some(3), "{e}");

        // A merge key takes an anchored mapping's fields; the entry's own fields win.
        let c: Config = serde_saphyr::from_str(
            "auth:\n  tokens:\n    - &t {name: a, token: x, scopes: [read]}\n    - <<: *t\n      name: b\n",
        )
        .unwrap();
        assert_eq!(c.auth.tokens.len(), 2);
        assert_eq!((c.auth.tokens[1].name.as_str(), c.auth.tokens[1].token.as_str()), ("b", "x"));
    }

    #[test]
    fn body_read_timeout_is_a_duration_with_a_default() {
        let c: Config = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(c.ingest.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.ingest_limits().body_read_timeout, Duration::from_secs(30));
        let c: Config = serde_saphyr::from_str("ingest:\n  body_read_timeout: 1s\n").unwrap();
        assert_eq!(c.ingest_limits().body_read_timeout, Duration::from_secs(1));
        assert!(serde_saphyr::from_str::<Config>("ingest:\n  body_read_timeout: 5\n").is_err());
    }

    #[test]
    fn a_proxy_may_not_point_at_toolwatch_itself() {
        let mut cfg: Config = serde_saphyr::from_str(
            "listen: 127.0.0.1:9201\nproxies: [{target: a, upstream: \"http://localhost:9201/proxy/a/mcp\"}]",
        )
        .unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("proxies[0]") && e.contains("own proxy paths"), "{e}");
        cfg.proxies[0].upstream = "http://127.0.0.1:9201/mcp".into();
        cfg.validate().unwrap();
        cfg.proxies[0].upstream = "https://127.0.0.1:8443/mcp".into();
        cfg.validate().unwrap();
        cfg.proxies[0].tls.ca_file = "no-such-ca.pem".into();
        let e = format!("{:#}", cfg.validate().unwrap_err());
        assert!(e.contains("proxies[0].tls.ca_file") && e.contains("no-such-ca.pem"), "{e}");
        cfg.proxies[0].tls.ca_file.clear();
        cfg.proxies[0].upstream = "http://127.0.0.1:8080/mcp".into();
        cfg.proxies[0].path = "/mcp".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("must start with /proxy/"));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// examples/toolwatch.yml documents every field at its default; keep them in step.
    #[test]
    fn example_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/toolwatch.yml");
        let mut c = Config::load(&path).unwrap();
        c.config_dir = Config::default().config_dir;
        assert_eq!(format!("{:?}", c), format!("{:?}", Config::default()));
    }
}
