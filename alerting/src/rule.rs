//! One rule's evaluation: recording rules produce series; alerting rules keep per-label-set
//! alert state (inactive → pending → firing, `for`, `keep_firing_for`, resolved alerts kept
//! 15m), exactly as Prometheus' `rules/alerting.go` does.

use crate::rulefile::{RuleKind, RuleSpec};
use crate::template::{render, QueryFn, TemplateData};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use toolwatch_query::{Engine, QueryControl, QueryValue};

/// How long a resolved alert is kept (and re-sent) so Alertmanager learns it ended.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

pub type LabelMap = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Alert {
    pub labels: LabelMap,
    pub annotations: LabelMap,
    pub state: AlertState,
    pub value: f64,
    /// Times in milliseconds; 0 = not set.
    pub active_at: i64,
    pub fired_at: i64,
    pub resolved_at: i64,
    pub last_sent_at: i64,
    pub valid_until: i64,
    pub keep_firing_since: i64,
}

impl Alert {
    /// Pending alerts are never sent; a resolution is sent at once; others every resend delay.
    pub fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if self.resolved_at > self.last_sent_at {
            return true;
        }
        self.last_sent_at + resend_delay_ms < ts
    }
}

#[derive(Clone, Debug, Default)]
pub struct RuleHealth {
    pub health: &'static str,
    pub last_error: String,
    pub last_eval_ms: i64,
    pub eval_seconds: f64,
}

pub struct Rule {
    pub spec: RuleSpec,
    pub health: RuleHealth,
    /// Alerts by label set (alerting rules only).
    pub active: HashMap<LabelMap, Alert>,
    /// Whether `for` state has been restored from ALERTS_FOR_STATE (or needs none); until then
    /// no ALERTS series are written, as in Prometheus.
    pub restored: bool,
}

/// Context of one evaluation.
pub struct EvalCtx<'a> {
    pub engine: &'a Engine,
    pub ts: i64,
    pub query_offset_ms: i64,
    pub limit: usize,
    pub external_labels: &'a LabelMap,
    pub external_url: &'a str,
    pub group_labels: &'a LabelMap,
}

/// A sample a rule wants written.
pub type OutSample = (LabelMap, i64, f64);

struct EngineQuery<'a> {
    engine: &'a Engine,
    ts: i64,
}

impl QueryFn for EngineQuery<'_> {
    fn query(&self, q: &str) -> Result<Vec<(LabelMap, f64)>, String> {
        let (v, _) = self.engine.instant(q, self.ts, &QueryControl::default()).map_err(|e| e.to_string())?;
        Ok(rows(v))
    }
}

fn rows(v: QueryValue) -> Vec<(LabelMap, f64)> {
    match v {
        QueryValue::Vector(rows) => rows
            .into_iter()
            .map(|(l, _, v)| (l.iter().map(|x| (x.name.to_string(), x.value.to_string())).collect(), v))
            .collect(),
        QueryValue::Scalar { v, .. } => vec![(LabelMap::new(), v)],
        _ => Vec::new(),
    }
}

impl Rule {
    pub fn new(spec: RuleSpec) -> Rule {
        Rule {
            spec,
            health: RuleHealth { health: "unknown", ..Default::default() },
            active: HashMap::new(),
            restored: false,
        }
    }

    pub fn hold_ms(&self) -> i64 {
        match &self.spec.kind {
            RuleKind::Alert { for_, .. } => for_.as_millis() as i64,
            RuleKind::Record => 0,
        }
    }

    /// Evaluates the rule at `ctx.ts`; returns the samples to write (recording output, or
    /// `ALERTS`/`ALERTS_FOR_STATE`). Template errors end up in the annotation text and the
    /// rule's health, never abort the evaluation.
    pub fn eval(&mut self, ctx: &EvalCtx) -> Result<Vec<OutSample>, String> {
        let qts = ctx.ts - ctx.query_offset_ms;
        let (value, _) =
            ctx.engine.instant(&self.spec.expr, qts, &QueryControl::default()).map_err(|e| e.to_string())?;
        let result = rows(value);
        match self.spec.kind.clone() {
            RuleKind::Record => self.eval_record(ctx, qts, result),
            RuleKind::Alert { keep_firing_for, annotations, .. } => {
                self.eval_alert(ctx, qts, result, keep_firing_for, &annotations)
            }
        }
    }

    fn eval_record(&mut self, ctx: &EvalCtx, qts: i64, result: Vec<(LabelMap, f64)>) -> Result<Vec<OutSample>, String> {
        let mut out = Vec::with_capacity(result.len());
        let mut seen = std::collections::HashSet::new();
        for (mut labels, v) in result {
            labels.insert("__name__".into(), self.spec.name.clone());
            for (k, val) in ctx.group_labels.iter().chain(&self.spec.labels) {
                if val.is_empty() {
                    labels.remove(k);
                } else {
                    labels.insert(k.clone(), val.clone());
                }
            }
            if !seen.insert(labels.clone()) {
                return Err("vector contains metrics with the same labelset after applying rule labels".into());
            }
            out.push((labels, qts, v));
        }
        if ctx.limit > 0 && out.len() > ctx.limit {
            return Err(format!("exceeded limit of {} with {} series", ctx.limit, out.len()));
        }
        Ok(out)
    }

    fn eval_alert(
        &mut self,
        ctx: &EvalCtx,
        qts: i64,
        result: Vec<(LabelMap, f64)>,
        keep_firing_for: Duration,
        annotations: &LabelMap,
    ) -> Result<Vec<OutSample>, String> {
        let q = EngineQuery { engine: ctx.engine, ts: qts };
        let mut template_errors = Vec::new();
        let mut current: HashMap<LabelMap, Alert> = HashMap::new();
        for (mut sample_labels, v) in result {
            sample_labels.remove("__name__");
            let data = TemplateData {
                labels: &sample_labels,
                external_labels: ctx.external_labels,
                external_url: ctx.external_url,
                value: v,
            };
            let mut expand = |name: &str, text: &str| -> String {
                match render(name, text, &data, &q) {
                    Ok(s) => s,
                    Err(e) => {
                        template_errors.push(e.clone());
                        format!("<error expanding template: {e}>")
                    }
                }
            };
            let mut labels = sample_labels.clone();
            for (k, t) in ctx.group_labels.iter().chain(&self.spec.labels) {
                let val = expand(&format!("__alert_{}", self.spec.name), t);
                if val.is_empty() {
                    labels.remove(k);
                } else {
                    labels.insert(k.clone(), val);
                }
            }
            labels.insert("alertname".into(), self.spec.name.clone());
            let annos: LabelMap = annotations
                .iter()
                .map(|(k, t)| (k.clone(), expand(&format!("__alert_{}", self.spec.name), t)))
                .collect();
            if current.contains_key(&labels) {
                return Err("vector contains metrics with the same labelset after applying alert labels".into());
            }
            current.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations: annos,
                    state: AlertState::Pending,
                    value: v,
                    active_at: ctx.ts,
                    fired_at: 0,
                    resolved_at: 0,
                    last_sent_at: 0,
                    valid_until: 0,
                    keep_firing_since: 0,
                },
            );
        }
        let in_result: std::collections::HashSet<LabelMap> = current.keys().cloned().collect();
        for (k, a) in current {
            match self.active.get_mut(&k) {
                Some(existing) if existing.state != AlertState::Inactive => {
                    existing.value = a.value;
                    existing.annotations = a.annotations;
                }
                _ => {
                    self.active.insert(k, a);
                }
            }
        }
        let hold = self.hold_ms();
        let keep_ms = keep_firing_for.as_millis() as i64;
        let mut out = Vec::new();
        let mut remove = Vec::new();
        for (k, a) in self.active.iter_mut() {
            if !in_result.contains(k) {
                if keep_ms > 0 && a.state == AlertState::Firing {
                    if a.keep_firing_since == 0 {
                        a.keep_firing_since = ctx.ts;
                    }
                    if ctx.ts - a.keep_firing_since < keep_ms {
                        continue;
                    }
                }
                if a.state == AlertState::Pending
                    || (a.resolved_at != 0 && ctx.ts - a.resolved_at > RESOLVED_RETENTION_MS)
                {
                    remove.push(k.clone());
                }
                if a.state != AlertState::Inactive {
                    a.state = AlertState::Inactive;
                    a.resolved_at = ctx.ts;
                }
                continue;
            }
            a.keep_firing_since = 0;
            if a.state == AlertState::Pending && ctx.ts - a.active_at >= hold {
                a.state = AlertState::Firing;
                a.fired_at = ctx.ts;
            }
            if self.restored {
                let mut l = a.labels.clone();
                l.insert("__name__".into(), "ALERTS".into());
                l.insert("alertstate".into(), a.state.as_str().into());
                out.push((l, qts, 1.0));
                let mut l = a.labels.clone();
                l.insert("__name__".into(), "ALERTS_FOR_STATE".into());
                out.push((l, qts, (a.active_at / 1000) as f64));
            }
        }
        for k in remove {
            self.active.remove(&k);
        }
        if ctx.limit > 0 {
            let n = self.active.values().filter(|a| a.state != AlertState::Inactive).count();
            if n > ctx.limit {
                self.active.clear();
                return Err(format!("exceeded limit of {} with {} alerts", ctx.limit, n));
            }
        }
        if let Some(e) = template_errors.into_iter().next() {
            // Reported through health, but the alerts (with the error in their text) stand.
            self.health.last_error = e;
        }
        Ok(out)
    }

    /// Alerts that need sending now; marks them sent and sets how long they stay valid.
    pub fn alerts_to_send(&mut self, ts: i64, resend_delay_ms: i64, interval_ms: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            if a.needs_sending(ts, resend_delay_ms) {
                a.last_sent_at = ts;
                a.valid_until = ts + 4 * resend_delay_ms.max(interval_ms);
                out.push(a.clone());
            }
        }
        out
    }

    /// Restores `for` state after a restart from the newest `ALERTS_FOR_STATE` sample of each
    /// active alert (Prometheus' outage tolerance 1h and grace period 10m).
    pub fn restore_for_state(&mut self, engine: &Engine, ts: i64) {
        const OUTAGE_TOLERANCE_MS: i64 = 3_600_000;
        const GRACE_MS: i64 = 600_000;
        let hold = self.hold_ms();
        self.restored = true;
        if hold == 0 || hold < GRACE_MS {
            return;
        }
        let querier = engine.db().querier(ts - OUTAGE_TOLERANCE_MS, ts);
        for a in self.active.values_mut() {
            let mut matchers: Vec<toolwatch_storage::Matcher> =
                a.labels.iter().map(|(k, v)| toolwatch_storage::Matcher::eq(k, v)).collect();
            matchers.push(toolwatch_storage::Matcher::eq("__name__", "ALERTS_FOR_STATE"));
            // The newest sample says when the previous run last saw the alert (`down_at`) and
            // since when it had been active (its value, unix seconds).
            let Some((down_at, restored_secs)) = querier
                .select(&matchers)
                .ok()
                .and_then(|series| series.iter().filter_map(|s| s.samples().last().copied()).max_by_key(|p| p.0))
            else {
                continue;
            };
            let restored_active = (restored_secs * 1000.0) as i64;
            if ts - down_at > OUTAGE_TOLERANCE_MS {
                continue;
            }
            let spent = down_at - restored_active;
            let remaining = hold - spent;
            let active_at = if remaining <= 0 {
                restored_active
            } else if remaining < GRACE_MS {
                ts + GRACE_MS - hold
            } else {
                restored_active + (ts - down_at)
            };
            a.active_at = active_at;
        }
    }
}
