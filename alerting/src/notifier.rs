//! Sends alerts to Alertmanagers (API v2, `POST /api/v2/alerts`) and to generic webhooks (in
//! Alertmanager's webhook payload format), from a bounded queue, with timeouts, a few retries
//! and counters for what was sent, failed and dropped. Sending never blocks rule evaluation.

use crate::rule::{Alert, LabelMap};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// An alert as Alertmanager's API v2 takes it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OutAlert {
    pub labels: LabelMap,
    pub annotations: LabelMap,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// `ends_at` in milliseconds, to tell firing from resolved.
    #[serde(skip)]
    pub ends_ms: i64,
}

impl OutAlert {
    pub fn from_alert(a: &Alert, external_labels: &LabelMap, generator_url: &str) -> OutAlert {
        let mut labels = a.labels.clone();
        for (k, v) in external_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let ends = if a.resolved_at != 0 { a.resolved_at } else { a.valid_until };
        OutAlert {
            labels,
            annotations: a.annotations.clone(),
            starts_at: toolwatch_query::http::format_rfc3339(if a.fired_at != 0 { a.fired_at } else { a.active_at }),
            ends_at: toolwatch_query::http::format_rfc3339(ends),
            generator_url: generator_url.to_string(),
            ends_ms: ends,
        }
    }

    pub fn resolved(&self) -> bool {
        self.ends_ms <= crate::group::now_ms()
    }
}

#[derive(Clone, Debug)]
pub enum TargetKind {
    Alertmanager,
    Webhook,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub kind: TargetKind,
    /// Full URL to POST to (`http://host:9093/api/v2/alerts`, or the webhook's URL).
    pub url: String,
    pub timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Default)]
pub struct NotifierMetrics {
    sent: Family<TargetLabels, Counter>,
    errors: Family<TargetLabels, Counter>,
    dropped: Counter,
}

pub struct Notifier {
    targets: Vec<Target>,
    queue: Mutex<VecDeque<OutAlert>>,
    capacity: usize,
    wake: tokio::sync::Notify,
    metrics: NotifierMetrics,
    client: reqwest::Client,
}

impl Notifier {
    pub fn new(targets: Vec<Target>, capacity: usize, registry: Option<&mut Registry>) -> Arc<Notifier> {
        let metrics = NotifierMetrics::default();
        if let Some(r) = registry {
            r.register("toolwatch_notifications_sent", "Alerts sent, per target", metrics.sent.clone());
            r.register(
                "toolwatch_notifications_errors",
                "Failed sends (after retries), per target",
                metrics.errors.clone(),
            );
            r.register(
                "toolwatch_notifications_dropped",
                "Alerts dropped because the queue was full",
                metrics.dropped.clone(),
            );
        }
        Arc::new(Notifier {
            targets,
            queue: Mutex::new(VecDeque::new()),
            capacity,
            wake: tokio::sync::Notify::new(),
            metrics,
            client: reqwest::Client::new(),
        })
    }

    /// Queues alerts; the oldest are dropped (and counted) when the queue is full.
    pub fn send(&self, alerts: Vec<OutAlert>) {
        if self.targets.is_empty() {
            return;
        }
        let mut q = self.queue.lock();
        for a in alerts {
            if q.len() >= self.capacity {
                q.pop_front();
                self.metrics.dropped.inc();
            }
            q.push_back(a);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Sends queued alerts until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let batch: Vec<OutAlert> = {
                    let mut q = self.queue.lock();
                    let n = q.len().min(256);
                    q.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
                // Targets in turn: a handful of loopback receivers; each send has its own timeout.
                let sends = self.targets.iter().map(|t| self.send_to(t, &batch));
                for s in sends {
                    s.await;
                }
            }
        }
    }

    async fn send_to(&self, t: &Target, batch: &[OutAlert]) {
        let body = match t.kind {
            TargetKind::Alertmanager => serde_json::to_vec(batch).unwrap_or_default(),
            TargetKind::Webhook => webhook_payload(batch),
        };
        // URLs may carry secrets (user-info, a token in the query string): logs and series get
        // the URL without them, and reqwest's errors without the URL.
        let shown = toolwatch_storage::redact_url(&t.url);
        let labels = TargetLabels { target: shown.clone() };
        for attempt in 0..3u32 {
            let r = self
                .client
                .post(&t.url)
                .header("Content-Type", "application/json")
                .header("User-Agent", concat!("toolwatch/", env!("CARGO_PKG_VERSION")))
                .timeout(t.timeout)
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => {
                    self.metrics.sent.get_or_create(&labels).inc_by(batch.len() as u64);
                    return;
                }
                Ok(resp) if resp.status().is_client_error() => {
                    tracing::warn!(target = %shown, status = %resp.status(), "alert notification rejected");
                    break;
                }
                Ok(resp) => {
                    tracing::warn!(target = %shown, status = %resp.status(), attempt, "alert notification failed")
                }
                Err(e) => {
                    let e = e.without_url();
                    tracing::warn!(target = %shown, error = %e, attempt, "alert notification failed")
                }
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        self.metrics.errors.get_or_create(&labels).inc();
    }
}

/// Alertmanager's webhook payload (version 4) for one batch, so existing receivers work.
fn webhook_payload(batch: &[OutAlert]) -> Vec<u8> {
    let firing = batch.iter().any(|a| !a.resolved());
    let common = |f: &dyn Fn(&OutAlert) -> &LabelMap| -> LabelMap {
        let mut it = batch.iter();
        let Some(first) = it.next() else { return LabelMap::new() };
        let mut c = f(first).clone();
        for a in it {
            c.retain(|k, v| f(a).get(k) == Some(v));
        }
        c
    };
    let alerts: Vec<serde_json::Value> = batch
        .iter()
        .map(|a| {
            serde_json::json!({
                "status": if a.resolved() { "resolved" } else { "firing" },
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": a.starts_at,
                "endsAt": a.ends_at,
                "generatorURL": a.generator_url,
                "fingerprint": fingerprint(&a.labels),
            })
        })
        .collect();
    let common_labels = common(&|a| &a.labels);
    serde_json::to_vec(&serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{}", serde_json::to_string(&common_labels).unwrap_or_default()),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": "toolwatch",
        "groupLabels": {},
        "commonLabels": common_labels,
        "commonAnnotations": common(&|a| &a.annotations),
        "externalURL": "",
        "alerts": alerts,
    }))
    .unwrap_or_default()
}

fn fingerprint(labels: &LabelMap) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    format!("{:016x}", h.finish())
}
