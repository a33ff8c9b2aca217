//! `toolwatch proxy --target NAME -- CMD ARGS...`: what an agent launches instead of a stdio MCP
//! server. It spawns the server, relays stdin → server and server → stdout byte for byte
//! (stderr passes straight through), lets `toolwatch_mcp::proxy::Observer` watch each message,
//! and ships the resulting metrics to a running toolwatch by remote-write. The relay never waits
//! for telemetry: snapshots queue (bounded) and are dropped, counted, while toolwatch is away.

use crate::selfscrape::{parse_exposition, snapshot};
use anyhow::{Context, Result};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use toolwatch_ingest::remote_write_proto as pb;
use toolwatch_mcp::proxy::{Observer, ProxyMetrics, TargetNames};

#[derive(clap::Args, Clone)]
pub struct ProxyArgs {
    /// Name of the proxied server: the `target` label of every series.
    #[arg(long)]
    pub target: String,
    /// The toolwatch that receives the metrics (remote-write to <URL>/api/v1/write).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9201")]
    pub url: String,
    /// Bearer token with the write scope. Shows in `ps` to every user of this host: prefer
    /// --token-file or the TOOLWATCH_TOKEN environment variable.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the bearer token (trailing whitespace trimmed). Without --token and
    /// --token-file, TOOLWATCH_TOKEN is used when set.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// How often metrics are sent.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Snapshots kept while toolwatch cannot be reached; older ones are dropped and counted.
    #[arg(long, default_value_t = 60)]
    pub max_buffered: usize,
    /// Distinct tool names the series may carry (names the server rejects are `_unknown`,
    /// names past this many `_other`).
    #[arg(long, default_value_t = 1000)]
    pub max_tools: usize,
    /// The MCP server to run: program and arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s).map_err(|e| e.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs the proxy; returns the server's exit code.
pub fn run(mut a: ProxyArgs) -> Result<i32> {
    crate::init_logging("warn");
    // Resolved once (flag, file, environment); the shipper sends what is in `a.token`.
    a.token = crate::client_token(a.token.take(), a.token_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(relay(a))
}

struct Shipper {
    registry: Registry,
    dropped: Counter,
    sent: Counter,
    queue: Mutex<VecDeque<(Vec<u8>, u64)>>,
    /// Series already sent (new counters get a zero first) and when the last snapshot was taken.
    seen: Mutex<(HashSet<String>, i64)>,
}

async fn relay(a: ProxyArgs) -> Result<i32> {
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let dropped = Counter::default();
    let sent = Counter::default();
    registry.register(
        "toolwatch_proxy_telemetry_dropped_samples",
        "Samples the proxy could not deliver (toolwatch unreachable and the buffer full)",
        dropped.clone(),
    );
    registry.register("toolwatch_proxy_telemetry_sent_samples", "Samples the proxy delivered", sent.clone());
    let shipper = Arc::new(Shipper {
        registry,
        dropped,
        sent,
        queue: Mutex::new(VecDeque::new()),
        seen: Mutex::new((HashSet::new(), now_ms())),
    });
    let observer = Arc::new(Mutex::new(Observer::new(&a.target, "pipe", metrics, TargetNames::new(a.max_tools))));

    let (prog, args) = a.command.split_first().context("no server command after --")?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {prog:?}"))?;
    let mut child_in = child.stdin.take().context("server stdin")?;
    let child_out = child.stdout.take().context("server stdout")?;

    // Client → server. Ends when the agent closes stdin; closing the server's stdin then asks
    // it to exit, as the MCP stdio transport prescribes. Each request is noted before it is
    // sent, so its answer can never overtake it.
    let obs = observer.clone();
    let up = tokio::spawn(async move {
        pump(tokio::io::stdin(), &mut child_in, |line| {
            obs.lock().client_message(line);
        })
        .await;
    });
    // Server → client.
    let obs = observer.clone();
    let down = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        pump(child_out, &mut out, |line| obs.lock().server_message(line)).await;
        out
    });

    let ship = tokio::spawn(ship_loop(shipper.clone(), a.clone()));
    let mut out = down.await.context("relay task")?;
    // The server's stdout is closed: it exited (or crashed). Requests it never answered get
    // a JSON-RPC error, so the agent is not left waiting.
    let status = child.wait().await.ok();
    let ids = observer.lock().fail_pending("-32000");
    let why = format!(
        "the MCP server {:?} exited before answering ({})",
        a.target,
        status.map(|s| s.to_string()).unwrap_or_else(|| "unknown status".into())
    );
    for id in ids {
        let msg = toolwatch_mcp::proxy::error_message(&id, -32000, &why);
        let _ = out.write_all(format!("{msg}\n").as_bytes()).await;
    }
    let _ = out.flush().await;
    up.abort();
    ship.abort();
    // One last delivery attempt, briefly: the session's calls should not be lost to timing.
    snapshot_into_queue(&shipper, &a);
    let _ = tokio::time::timeout(Duration::from_secs(2), flush_queue(&shipper, &a)).await;
    Ok(status.and_then(|s| s.code()).unwrap_or(1))
}

/// Copies newline-delimited messages from `from` to `to` unchanged, showing each to `note`
/// (without its line ending) before writing it. Stops at end of input or a write error.
async fn pump(
    from: impl tokio::io::AsyncRead + Unpin,
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    mut note: impl FnMut(&[u8]),
) {
    let mut r = BufReader::new(from);
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        note(trim_newline(&buf));
        if to.write_all(&buf).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn snapshot_into_queue(s: &Shipper, a: &ProxyArgs) {
    let text = crate::telemetry::exposition(&s.registry);
    let t = now_ms();
    let series = {
        let mut g = s.seen.lock();
        let zero_at = g.1 + 1;
        g.1 = t;
        // Each proxy process is its own instance: two sessions of one target must not write
        // the same counters.
        let instance = format!("{}/{}", a.target, std::process::id());
        snapshot(&parse_exposition(&text), "mcp-proxy", &instance, t, zero_at, &mut g.0)
    };
    let n: u64 = series.iter().map(|(_, p)| p.len() as u64).sum();
    let req = pb::WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, points)| pb::TimeSeries {
                labels: labels.into_iter().map(|(name, value)| pb::Label { name, value }).collect(),
                samples: points.into_iter().map(|(timestamp, value)| pb::Sample { value, timestamp }).collect(),
                ..Default::default()
            })
            .collect(),
        metadata: Vec::new(),
    };
    let body = snap::raw::Encoder::new().compress_vec(&prost::Message::encode_to_vec(&req)).unwrap_or_default();
    let mut q = s.queue.lock();
    q.push_back((body, n));
    while q.len() > a.max_buffered.max(1) {
        if let Some((_, lost)) = q.pop_front() {
            s.dropped.inc_by(lost);
        }
    }
}

/// Sends queued snapshots oldest first; stops at the first failure (they stay queued).
async fn flush_queue(s: &Shipper, a: &ProxyArgs) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
    let token = a.token.clone();
    let url = format!("{}/api/v1/write", a.url.trim_end_matches('/'));
    loop {
        let Some((body, n)) = s.queue.lock().front().cloned() else { return };
        let mut req = client
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            // 2xx, or a 4xx that retrying cannot fix: either way this snapshot is done.
            Ok(r) if r.status().is_success() || r.status().is_client_error() => {
                if r.status().is_success() {
                    s.sent.inc_by(n);
                } else {
                    tracing::warn!(status = %r.status(), "toolwatch refused proxy telemetry");
                    s.dropped.inc_by(n);
                }
                s.queue.lock().pop_front();
            }
            _ => return,
        }
    }
}

async fn ship_loop(s: Arc<Shipper>, a: ProxyArgs) {
    let mut tick = tokio::time::interval(a.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        snapshot_into_queue(&s, &a);
        flush_queue(&s, &a).await;
    }
}
