//! Rule groups: each runs on its own interval at a fixed per-group offset (Prometheus'
//! alignment: evaluations land on `k × interval + offset`, the offset a hash of file and name, so
//! groups spread out and restarts keep their timing), evaluates its rules in order, writes their
//! output back (so a recording rule feeds the rules after it) and hands alerts to the notifier.

use crate::notifier::{Notifier, OutAlert};
use crate::rule::{EvalCtx, LabelMap, OutSample, Rule};
use crate::rulefile::GroupSpec;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use toolwatch_query::{Engine, EngineOptions};
use toolwatch_storage::{Db, LabelRef};

/// Prometheus' default resend delay for firing alerts.
pub const RESEND_DELAY_MS: i64 = 60_000;

pub struct GroupShared {
    pub external_labels: LabelMap,
    pub external_url: String,
    pub engine_opts: EngineOptions,
    pub notifier: Arc<Notifier>,
    pub metrics: RuleMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct GroupLabel {
    pub rule_group: String,
}

/// Rule telemetry, named after Prometheus' `prometheus_rule_*` metrics.
#[derive(Clone, Default)]
pub struct RuleMetrics {
    pub evaluations: Family<GroupLabel, Counter>,
    pub failures: Family<GroupLabel, Counter>,
    pub missed: Family<GroupLabel, Counter>,
    pub last_duration: Family<GroupLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl RuleMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> RuleMetrics {
        let m = RuleMetrics::default();
        registry.register("toolwatch_rule_evaluations", "Rule evaluations, per group", m.evaluations.clone());
        registry.register(
            "toolwatch_rule_evaluation_failures",
            "Rule evaluations that failed, per group",
            m.failures.clone(),
        );
        registry.register(
            "toolwatch_rule_group_iterations_missed",
            "Group evaluations skipped because the previous one ran past its interval",
            m.missed.clone(),
        );
        registry.register(
            "toolwatch_rule_group_last_duration_seconds",
            "Duration of the group's last evaluation",
            m.last_duration.clone(),
        );
        m
    }
}

#[derive(Default, Clone, Debug)]
pub struct GroupStatus {
    pub last_eval_ms: i64,
    pub eval_seconds: f64,
    pub missed_iterations: u64,
    pub iterations: u64,
}

pub struct Group {
    pub spec: GroupSpec,
    pub interval: Duration,
    /// The rules and their state; locked by the group's own evaluation and by API readers.
    pub rules: Mutex<Vec<Rule>>,
    pub status: Mutex<GroupStatus>,
    /// Label sets each rule wrote last time, to end vanished series with staleness markers.
    written: Mutex<Vec<HashSet<LabelMap>>>,
}

/// The tick to evaluate when the planned one was `next` and it is now `now`: a group that fell
/// behind evaluates the latest tick that has passed and skips (counts) the ones before it,
/// rather than running late evaluations back to back.
pub fn due_tick(next: i64, now: i64, interval: i64) -> (i64, u64) {
    if now - next >= interval {
        let missed = (now - next) / interval;
        (next + missed * interval, missed as u64)
    } else {
        (next, 0)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Group {
    pub fn new(spec: GroupSpec, default_interval: Duration) -> Group {
        let interval = spec.interval.unwrap_or(default_interval);
        let rules = spec.rules.iter().cloned().map(Rule::new).collect::<Vec<_>>();
        let n = rules.len();
        Group {
            spec,
            interval,
            rules: Mutex::new(rules),
            status: Mutex::new(GroupStatus::default()),
            written: Mutex::new(vec![HashSet::new(); n]),
        }
    }

    pub fn metric_label(&self) -> GroupLabel {
        GroupLabel { rule_group: format!("{};{}", self.spec.file.display(), self.spec.name) }
    }

    /// The group's fixed offset within its interval, in nanoseconds: Prometheus' own (xxhash64
    /// of the label set `{file, name}` modulo the interval), so a group keeps the timing it had
    /// in Prometheus.
    pub fn offset_ns(&self) -> u64 {
        let mut b = Vec::new();
        for (n, v) in [("file", self.spec.file.display().to_string()), ("name", self.spec.name.clone())] {
            b.extend_from_slice(n.as_bytes());
            b.push(0xff);
            b.extend_from_slice(v.as_bytes());
            b.push(0xff);
        }
        xxhash_rust::xxh64::xxh64(&b, 0) % (self.interval.as_nanos().max(1) as u64)
    }

    /// The evaluation time (ms) at or before `now` (ms): `k × interval + offset`.
    pub fn eval_time(&self, now: i64) -> i64 {
        let iv = self.interval.as_nanos().max(1) as i128;
        let off = self.offset_ns() as i128;
        let adj = now as i128 * 1_000_000 - off;
        ((adj - adj.rem_euclid(iv) + off) / 1_000_000) as i64
    }

    /// Takes over alert state from the same rule of a previous load (reload keeps alerts).
    pub fn inherit(&self, old: &Group) {
        let mut new_rules = self.rules.lock();
        let mut old_rules = old.rules.lock();
        for r in new_rules.iter_mut() {
            if let Some(o) = old_rules.iter_mut().find(|o| o.spec.name == r.spec.name && o.spec.expr == r.spec.expr) {
                r.active = std::mem::take(&mut o.active);
                r.health = o.health.clone();
                r.restored = o.restored;
            }
        }
        *self.status.lock() = old.status.lock().clone();
    }

    /// Evaluates every rule at `ts`, writes their output, and queues alerts to send.
    pub fn eval(&self, db: &Db, shared: &GroupShared, ts: i64, restore: bool) {
        let began = std::time::Instant::now();
        let engine = Engine::new(db.clone(), shared.engine_opts.clone());
        let mut rules = self.rules.lock();
        let mut to_send: Vec<OutAlert> = Vec::new();
        for (i, rule) in rules.iter_mut().enumerate() {
            let rule_began = std::time::Instant::now();
            let ctx = EvalCtx {
                engine: &engine,
                ts,
                query_offset_ms: self.spec.query_offset.as_millis() as i64,
                limit: self.spec.limit,
                external_labels: &shared.external_labels,
                external_url: &shared.external_url,
                group_labels: &self.spec.labels,
            };
            rule.health.last_error.clear();
            let samples = match rule.eval(&ctx) {
                Ok(s) => {
                    rule.health.health = if rule.health.last_error.is_empty() { "ok" } else { "err" };
                    s
                }
                Err(e) => {
                    shared.metrics.failures.get_or_create(&self.metric_label()).inc();
                    tracing::warn!(group = %self.spec.name, rule = %rule.spec.name, error = %e, "rule evaluation failed");
                    rule.health.health = "err";
                    rule.health.last_error = e;
                    Vec::new()
                }
            };
            if let Err(e) = self.write(db, i, ts - ctx.query_offset_ms, &samples) {
                rule.health.health = "err";
                rule.health.last_error = format!("writing rule output: {e}");
            }
            if rule.spec.is_alert() {
                if restore && !rule.restored {
                    rule.restore_for_state(&engine, ts);
                }
                rule.restored = true;
                let query = serde_urlencoded::to_string([("g0.expr", rule.spec.expr.as_str()), ("g0.tab", "1")])
                    .unwrap_or_default();
                let generator_url = format!("{}/graph?{query}", shared.external_url.trim_end_matches('/'));
                for a in rule.alerts_to_send(ts, RESEND_DELAY_MS, self.interval.as_millis() as i64) {
                    to_send.push(OutAlert::from_alert(&a, &shared.external_labels, &generator_url));
                }
            }
            shared.metrics.evaluations.get_or_create(&self.metric_label()).inc();
            rule.health.last_eval_ms = ts;
            rule.health.eval_seconds = rule_began.elapsed().as_secs_f64();
        }
        drop(rules);
        if !to_send.is_empty() {
            shared.notifier.send(to_send);
        }
        let mut st = self.status.lock();
        st.last_eval_ms = ts;
        st.eval_seconds = began.elapsed().as_secs_f64();
        shared.metrics.last_duration.get_or_create(&self.metric_label()).set(st.eval_seconds);
        st.iterations += 1;
    }

    /// Appends a rule's samples, plus staleness markers for series it wrote last time and not now.
    fn write(&self, db: &Db, rule_idx: usize, t: i64, samples: &[OutSample]) -> Result<(), String> {
        let mut written = self.written.lock();
        let now: HashSet<LabelMap> = samples.iter().map(|s| s.0.clone()).collect();
        let stale_nan = f64::from_bits(0x7ff0_0000_0000_0002);
        let gone: Vec<LabelMap> = written[rule_idx].difference(&now).cloned().collect();
        if samples.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let mut app = db.appender().map_err(|e| e.to_string())?;
        let mut append = |labels: &LabelMap, v: f64| -> Result<(), String> {
            let refs: Vec<LabelRef> =
                labels.iter().filter(|(_, v)| !v.is_empty()).map(|(n, v)| LabelRef { name: n, value: v }).collect();
            match app.append(&refs, t, v) {
                Ok(()) => Ok(()),
                // A restart within one interval re-evaluates the same timestamp: not an error.
                Err(toolwatch_storage::AppendError::Duplicate { .. })
                | Err(toolwatch_storage::AppendError::OutOfOrder { .. }) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        for (labels, _, v) in samples {
            append(labels, *v)?;
        }
        for labels in &gone {
            append(labels, stale_nan)?;
        }
        app.commit().map_err(|e| e.to_string())?;
        written[rule_idx] = now;
        Ok(())
    }
}
