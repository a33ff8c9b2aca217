//! The rule manager: loads rule files, runs one task per group, reloads on request (keeping
//! alert state of unchanged rules; a bad reload keeps the old rules running), and serves
//! `/api/v1/rules`, `/api/v1/alerts` and `POST /-/reload`.

use crate::group::{now_ms, Group, GroupShared};
use crate::rule::{AlertState, Rule};
use crate::rulefile::{load_rule_files, RuleKind};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::{Mutex, RwLock};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use toolwatch_query::http::ConfigReloads;
use toolwatch_storage::Db;

pub struct RuleManager {
    db: Arc<OnceLock<Db>>,
    rule_files: Vec<String>,
    base_dir: PathBuf,
    default_interval: Duration,
    pub shared: Arc<GroupShared>,
    groups: RwLock<Vec<Arc<Group>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The last reload's outcome, for logs and the reload endpoint.
    last_error: Mutex<Option<String>>,
    /// Where every load's outcome is also reported (the query API's `runtimeinfo`), once set.
    reloads: OnceLock<Arc<ConfigReloads>>,
}

impl RuleManager {
    pub fn new(
        db: Arc<OnceLock<Db>>,
        rule_files: Vec<String>,
        base_dir: PathBuf,
        default_interval: Duration,
        shared: Arc<GroupShared>,
    ) -> Arc<RuleManager> {
        Arc::new(RuleManager {
            db,
            rule_files,
            base_dir,
            default_interval,
            shared,
            groups: RwLock::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            reloads: OnceLock::new(),
        })
    }

    /// Reports the outcome of every later load (start, `POST /-/reload`, SIGHUP) to `to`, which
    /// `/api/v1/status/runtimeinfo` reads. Set once; later calls are ignored.
    pub fn report_reloads_to(&self, to: Arc<ConfigReloads>) {
        let _ = self.reloads.set(to);
    }

    fn report(&self, ok: bool) {
        if let Some(r) = self.reloads.get() {
            r.record(ok, now_ms());
        }
    }

    /// (Re)loads the rule files. On error the running groups stay as they are.
    pub fn reload(self: &Arc<Self>) -> Result<usize, String> {
        let specs = match load_rule_files(&self.rule_files, &self.base_dir) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("error loading rules, previous rule set restored: {e}");
                tracing::error!("{msg}");
                *self.last_error.lock() = Some(msg.clone());
                self.report(false);
                return Err(msg);
            }
        };
        let new: Vec<Arc<Group>> = specs.into_iter().map(|s| Arc::new(Group::new(s, self.default_interval))).collect();
        {
            let old = self.groups.read();
            for g in &new {
                if let Some(o) = old.iter().find(|o| o.spec.name == g.spec.name && o.spec.file == g.spec.file) {
                    g.inherit(o);
                }
            }
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        let mut tasks = Vec::new();
        for g in &new {
            tasks.push(tokio::spawn(run_group(g.clone(), self.db.clone(), self.shared.clone())));
        }
        let n = new.iter().map(|g| g.spec.rules.len()).sum();
        *self.groups.write() = new;
        *self.tasks.lock() = tasks;
        *self.last_error.lock() = None;
        self.report(true);
        tracing::info!(groups = self.groups.read().len(), rules = n, "rules loaded");
        Ok(n)
    }

    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.groups.read().clone()
    }
}

/// Evaluates a group at every aligned tick; ticks that passed while an evaluation ran long are
/// skipped and counted as missed.
async fn run_group(g: Arc<Group>, db: Arc<OnceLock<Db>>, shared: Arc<GroupShared>) {
    let iv = g.interval.as_millis().max(1) as i64;
    let mut next = g.eval_time(now_ms()) + iv;
    let mut restore = true;
    loop {
        let wait = (next - now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (ts, missed) = crate::group::due_tick(next, now_ms(), iv);
        if missed > 0 {
            g.status.lock().missed_iterations += missed;
            shared.metrics.missed.get_or_create(&g.metric_label()).inc_by(missed);
            tracing::warn!(group = %g.spec.name, missed, "rule group evaluation ran past its interval; skipping ticks");
        }
        next = ts + iv;
        let Some(db) = db.get().cloned() else { continue };
        let (g2, shared2) = (g.clone(), shared.clone());
        let r = tokio::task::spawn_blocking(move || g2.eval(&db, &shared2, ts, restore)).await;
        if r.is_err() {
            tracing::error!(group = %g.spec.name, "rule group evaluation panicked");
        }
        restore = false;
    }
}

/// `/api/v1/rules` and `/api/v1/alerts` (reading). Reloading is `reload_router`: the two need
/// different scopes, declared where the binary mounts each.
pub fn router(m: Arc<RuleManager>) -> Router {
    Router::new().route("/api/v1/rules", get(rules_api)).route("/api/v1/alerts", get(alerts_api)).with_state(m)
}

/// `POST /-/reload` (administering).
pub fn reload_router(m: Arc<RuleManager>) -> Router {
    Router::new().route("/-/reload", post(reload_api)).with_state(m)
}

fn ok_json(v: serde_json::Value) -> Response {
    let body = serde_json::json!({"status": "success", "data": v});
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ts_or_zero(ms: i64) -> String {
    if ms == 0 {
        "0001-01-01T00:00:00Z".into()
    } else {
        toolwatch_query::http::format_rfc3339(ms)
    }
}

fn alert_json(a: &crate::rule::Alert) -> serde_json::Value {
    let mut v = serde_json::json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": ts_or_zero(a.active_at),
        "value": format!("{:e}", a.value),
    });
    if a.keep_firing_since != 0 {
        v["keepFiringSince"] = ts_or_zero(a.keep_firing_since).into();
    }
    v
}

fn rule_state(r: &Rule) -> AlertState {
    let states: Vec<AlertState> = r.active.values().map(|a| a.state).collect();
    if states.contains(&AlertState::Firing) {
        AlertState::Firing
    } else if states.contains(&AlertState::Pending) {
        AlertState::Pending
    } else {
        AlertState::Inactive
    }
}

async fn rules_api(State(m): State<Arc<RuleManager>>, RawQuery(q): RawQuery) -> Response {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&q.unwrap_or_default()).unwrap_or_default();
    let want = params.iter().find(|(k, _)| k == "type").map(|(_, v)| v.clone());
    match m.rules_json(want.as_deref()) {
        Ok(v) => ok_json(v),
        Err(e) => {
            let body = serde_json::json!({"status": "error", "errorType": "bad_data", "error": e});
            (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
    }
}

async fn alerts_api(State(m): State<Arc<RuleManager>>) -> Response {
    ok_json(serde_json::json!({"alerts": m.alerts_json()}))
}

impl RuleManager {
    /// The rule groups as `/api/v1/rules` reports them (`data`), optionally only alerting
    /// (`"alert"`) or recording (`"record"`) rules.
    pub fn rules_json(&self, want: Option<&str>) -> Result<serde_json::Value, String> {
        if let Some(w) = want {
            if w != "alert" && w != "record" {
                return Err(format!("invalid parameter \"type\": {w:?} is not alert or record"));
            }
        }
        let mut groups = Vec::new();
        for g in self.groups() {
            let rules = g.rules.lock();
            let st = g.status.lock().clone();
            let mut out = Vec::new();
            for r in rules.iter() {
                let common = |v: &mut serde_json::Value| {
                    v["health"] = r.health.health.into();
                    v["lastError"] = r.health.last_error.clone().into();
                    v["evaluationTime"] = r.health.eval_seconds.into();
                    v["lastEvaluation"] = ts_or_zero(r.health.last_eval_ms).into();
                };
                match &r.spec.kind {
                    RuleKind::Alert { for_, keep_firing_for, annotations } => {
                        if want == Some("record") {
                            continue;
                        }
                        let mut alerts: Vec<&crate::rule::Alert> =
                            r.active.values().filter(|a| a.state != AlertState::Inactive).collect();
                        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
                        let mut v = serde_json::json!({
                            "state": rule_state(r).as_str(),
                            "name": r.spec.name,
                            "query": r.spec.expr,
                            "duration": secs(*for_),
                            "keepFiringFor": secs(*keep_firing_for),
                            "labels": r.spec.labels,
                            "annotations": annotations,
                            "alerts": alerts.into_iter().map(alert_json).collect::<Vec<_>>(),
                            "type": "alerting",
                        });
                        common(&mut v);
                        out.push(v);
                    }
                    RuleKind::Record => {
                        if want == Some("alert") {
                            continue;
                        }
                        let mut v = serde_json::json!({
                            "name": r.spec.name,
                            "query": r.spec.expr,
                            "labels": r.spec.labels,
                            "type": "recording",
                        });
                        common(&mut v);
                        out.push(v);
                    }
                }
            }
            groups.push(serde_json::json!({
                "name": g.spec.name,
                "file": g.spec.file.display().to_string(),
                "rules": out,
                "interval": secs(g.interval),
                "limit": g.spec.limit,
                "evaluationTime": st.eval_seconds,
                "lastEvaluation": ts_or_zero(st.last_eval_ms),
            }));
        }
        Ok(serde_json::json!({"groups": groups}))
    }

    /// Pending and firing alerts as `/api/v1/alerts` lists them.
    pub fn alerts_json(&self) -> Vec<serde_json::Value> {
        let mut alerts = Vec::new();
        for g in self.groups() {
            for r in g.rules.lock().iter() {
                let mut active: Vec<&crate::rule::Alert> =
                    r.active.values().filter(|a| a.state != AlertState::Inactive).collect();
                active.sort_by(|a, b| a.labels.cmp(&b.labels));
                alerts.extend(active.into_iter().map(alert_json));
            }
        }
        alerts
    }

    /// The rule files in use (globs expanded), for the MCP resources.
    pub fn rule_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.groups().iter().map(|g| g.spec.file.clone()).collect();
        files.sort();
        files.dedup();
        files
    }
}

async fn reload_api(State(m): State<Arc<RuleManager>>) -> Response {
    match m.reload() {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {e}\n")).into_response(),
    }
}
