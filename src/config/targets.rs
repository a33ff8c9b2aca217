//! The MCP servers toolwatch watches from the outside: `probes` (it calls them) and `proxies`
//! (it sits in front of them), their config entries and the typed specs built from them.

use super::{de_duration, default_timeout, Config};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::time::Duration;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub target: String,
    /// Streamable HTTP endpoint (`http://…/mcp`); or give `command`.
    #[serde(default)]
    pub url: String,
    /// A stdio MCP server to launch per probe: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default = "default_probe_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub bearer_token: String,
    #[serde(default)]
    pub call: Option<ProbeCall>,
    #[serde(default)]
    pub tls: TlsConfig,
}

/// Never prints the bearer token, header values or the URL's user-info and query (they may hold
/// credentials).
impl std::fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("target", &self.target)
            .field("url", &toolwatch_storage::redact_url(&self.url))
            .field("command", &self.command)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("call", &self.call)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeCall {
    pub tool: String,
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub target: String,
    /// Where it is mounted; `/proxy/<target>/mcp` when empty.
    #[serde(default)]
    pub path: String,
    /// The MCP server's Streamable HTTP endpoint (`http://…/mcp`).
    pub upstream: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub bearer_token: String,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Distinct tool names its series may carry; names past it are recorded as `_other`.
    #[serde(default = "default_max_tools")]
    pub max_tools: usize,
    #[serde(default)]
    pub tls: TlsConfig,
}

fn default_max_tools() -> usize {
    1000
}

/// Never prints the bearer token, header values or the URL's user-info and query (they may hold
/// credentials).
impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("target", &self.target)
            .field("path", &self.path)
            .field("upstream", &toolwatch_storage::redact_url(&self.upstream))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("connect_timeout", &self.connect_timeout)
            .field("max_tools", &self.max_tools)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Certificate checks for an `https://` server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted besides the system's (a private CA), relative to the
    /// config file.
    pub ca_file: String,
    /// Check no certificate at all: for test setups only.
    pub insecure_skip_verify: bool,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(60)
}

impl Config {
    /// The CA certificates a `tls` block names (`what` locates it in errors).
    fn tls_roots(&self, what: &str, t: &TlsConfig) -> Result<Vec<reqwest::Certificate>> {
        if t.ca_file.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.config_dir.join(&t.ca_file);
        let pem = std::fs::read(&p).with_context(|| format!("{what}.tls.ca_file: reading {}", p.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{what}.tls.ca_file: {} is not PEM", p.display()))?;
        if certs.is_empty() {
            bail!("{what}.tls.ca_file: {} holds no certificate", p.display());
        }
        Ok(certs)
    }

    pub fn probe_specs(&self) -> Result<Vec<toolwatch_ingest::prober::ProbeSpec>> {
        use toolwatch_ingest::prober::{ProbeSpec, ProbeTransport, TlsOptions};
        self.probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(ProbeSpec {
                    target: p.target.clone(),
                    transport: if p.command.is_empty() {
                        ProbeTransport::Http {
                            url: p.url.clone(),
                            headers: p.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                            bearer_token: (!p.bearer_token.is_empty()).then(|| p.bearer_token.clone()),
                            tls: TlsOptions {
                                roots: self.tls_roots(&format!("probes[{i}]"), &p.tls)?,
                                insecure_skip_verify: p.tls.insecure_skip_verify,
                            },
                        }
                    } else {
                        ProbeTransport::Stdio { command: p.command.clone() }
                    },
                    interval: p.interval,
                    timeout: p.timeout,
                    call: p.call.as_ref().map(|c| (c.tool.clone(), c.arguments.clone())),
                })
            })
            .collect()
    }

    pub fn proxy_targets(&self) -> Result<Vec<toolwatch_mcp::proxy_http::ProxyTarget>> {
        self.proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(toolwatch_mcp::proxy_http::ProxyTarget {
                    target: p.target.clone(),
                    path: if p.path.is_empty() { format!("/proxy/{}/mcp", p.target) } else { p.path.clone() },
                    upstream: p.upstream.clone(),
                    headers: p.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    bearer_token: (!p.bearer_token.is_empty()).then(|| p.bearer_token.clone()),
                    connect_timeout: p.connect_timeout,
                    max_tools: p.max_tools,
                    tls_roots: self.tls_roots(&format!("proxies[{i}]"), &p.tls)?,
                    tls_insecure_skip_verify: p.tls.insecure_skip_verify,
                })
            })
            .collect()
    }
}

/// An upstream that is this listener's own `/proxy/…` would relay to itself until connections
/// run out.
pub(super) fn proxies_itself(t: &toolwatch_mcp::proxy_http::ProxyTarget, listen: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(&t.upstream) else { return false };
    let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else { return false };
    let Some((lhost, lport)) = listen.rsplit_once(':') else { return false };
    let local = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "[::1]" | "0.0.0.0" | "[::]" | "");
    let same_host = host == lhost || (local(host) && local(lhost));
    same_host && lport.parse() == Ok(port) && u.path().starts_with("/proxy/")
}
