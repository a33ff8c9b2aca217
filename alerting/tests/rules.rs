//! Rule groups evaluated against a real store at chosen timestamps: alert state transitions,
//! `for`, `keep_firing_for`, recording output feeding later rules, `limit`, templates, the
//! `ALERTS` series, notifications and restoring `for` state after a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toolwatch_alerting::group::{Group, GroupShared};
use toolwatch_alerting::notifier::Notifier;
use toolwatch_alerting::rule::AlertState;
use toolwatch_alerting::rulefile::parse_rule_file;
use toolwatch_query::{Engine, EngineOptions, QueryControl, QueryValue};
use toolwatch_storage::{Db, DbOptions, LabelRef};

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000;

fn db() -> (tempfile::TempDir, Db) {
    let d = tempfile::tempdir().unwrap();
    let db = Db::open(d.path(), DbOptions::default()).unwrap();
    (d, db)
}

fn write(db: &Db, labels: &[(&str, &str)], t: i64, v: f64) {
    let mut l: Vec<LabelRef> = labels.iter().map(|(n, v)| LabelRef { name: n, value: v }).collect();
    l.sort();
    let mut app = db.appender().unwrap();
    app.append(&l, t, v).unwrap();
    app.commit().unwrap();
}

fn group(yaml: &str) -> Group {
    let mut groups = parse_rule_file(Path::new("test.yml"), yaml).unwrap();
    Group::new(groups.remove(0), Duration::from_secs(60))
}

fn shared() -> GroupShared {
    GroupShared {
        external_labels: [("cluster".to_string(), "eu".to_string())].into(),
        external_url: "http://tw:9201".into(),
        engine_opts: EngineOptions::default(),
        notifier: Notifier::new(Vec::new(), 100, None),
        metrics: Default::default(),
    }
}

fn query(db: &Db, q: &str, t: i64) -> Vec<(String, f64)> {
    let e = Engine::new(db.clone(), EngineOptions::default());
    match e.instant(q, t, &QueryControl::default()).unwrap().0 {
        QueryValue::Vector(rows) => {
            rows.into_iter().map(|(l, _, v)| (toolwatch_query::value::labels_string(&l), v)).collect()
        }
        other => panic!("{other:?}"),
    }
}

fn state(g: &Group, rule: usize) -> Vec<AlertState> {
    let rules = g.rules.lock();
    let mut s: Vec<AlertState> = rules[rule].active.values().map(|a| a.state).collect();
    s.sort_by_key(|s| s.as_str());
    s
}

#[test]
fn pending_then_firing_then_resolved_with_alerts_series() {
    let (_d, db) = db();
    let g = group(
        r#"
groups:
  - name: tools
    rules:
      - alert: ToolErrors
        expr: errors > 5
        for: 2m
        labels:
          severity: "{{ if gt $value 50.0 }}page{{ else }}ticket{{ end }}"
        annotations:
          summary: "{{ $labels.tool }} has {{ $value }} errors ({{ $externalLabels.cluster }})"
"#,
    );
    let sh = shared();
    for i in 0..=4 {
        write(&db, &[("__name__", "errors"), ("tool", "search")], T0 + i * MIN, 10.0);
    }
    write(&db, &[("__name__", "errors"), ("tool", "search")], T0 + 5 * MIN, 1.0);
    g.eval(&db, &sh, T0, false);
    assert_eq!(state(&g, 0), [AlertState::Pending]);
    g.eval(&db, &sh, T0 + MIN, false);
    assert_eq!(state(&g, 0), [AlertState::Pending]);
    g.eval(&db, &sh, T0 + 2 * MIN, false);
    assert_eq!(state(&g, 0), [AlertState::Firing]);
    {
        let rules = g.rules.lock();
        let a = rules[0].active.values().next().unwrap();
        assert_eq!(a.labels.get("severity").map(String::as_str), Some("ticket"));
        assert_eq!(a.labels.get("alertname").map(String::as_str), Some("ToolErrors"));
        assert_eq!(a.annotations["summary"], "search has 10 errors (eu)");
        assert_eq!(a.active_at, T0);
        assert_eq!(rules[0].health.health, "ok");
    }
    // ALERTS and ALERTS_FOR_STATE were written at every evaluation.
    let alerts = query(&db, "ALERTS", T0 + 2 * MIN);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].0.contains(r#"alertstate="firing""#), "{alerts:?}");
    assert_eq!(query(&db, "ALERTS_FOR_STATE", T0 + 2 * MIN)[0].1, (T0 / 1000) as f64);
    assert_eq!(query(&db, "ALERTS{alertstate=\"pending\"}", T0 + MIN).len(), 1);
    // The condition clears: the alert resolves, stays 15m as inactive, and ALERTS goes stale.
    g.eval(&db, &sh, T0 + 5 * MIN, false);
    assert_eq!(state(&g, 0), [AlertState::Inactive]);
    assert!(query(&db, "ALERTS", T0 + 5 * MIN).is_empty(), "ALERTS must end with a staleness marker");
    g.eval(&db, &sh, T0 + 21 * MIN, false);
    assert!(state(&g, 0).is_empty(), "resolved alerts are forgotten after 15m");
}

#[test]
fn sending_rules_pending_never_firing_every_minute_resolved_at_once() {
    let (_d, db) = db();
    let g = group("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 0\n        for: 1m\n");
    let sh = shared();
    for i in 0..=3 {
        write(&db, &[("__name__", "x")], T0 + i * MIN, 1.0);
    }
    write(&db, &[("__name__", "x")], T0 + 4 * MIN, 0.0);
    let sends = |g: &Group, ts: i64| -> usize {
        let mut rules = g.rules.lock();
        rules[0].alerts_to_send(ts, 60_000, 60_000).len()
    };
    g.eval(&db, &sh, T0, false); // pending (eval itself already took what needed sending)
    assert_eq!(sends(&g, T0), 0, "pending alerts are never sent");
    g.eval(&db, &sh, T0 + MIN, false); // firing: sent by eval
    assert_eq!(sends(&g, T0 + MIN), 0, "just sent");
    assert_eq!(sends(&g, T0 + MIN + 60_001), 1, "resent after the resend delay");
    g.eval(&db, &sh, T0 + 4 * MIN, false); // resolved: sent by eval at once
    let rules = g.rules.lock();
    let a = rules[0].active.values().next().unwrap();
    assert_eq!(a.resolved_at, T0 + 4 * MIN);
    assert_eq!(a.last_sent_at, T0 + 4 * MIN, "a resolution is sent in the same evaluation");
}

#[test]
fn keep_firing_for_holds_a_firing_alert() {
    let (_d, db) = db();
    let g =
        group("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 0\n        keep_firing_for: 3m\n");
    let sh = shared();
    write(&db, &[("__name__", "x")], T0, 1.0);
    write(&db, &[("__name__", "x")], T0 + MIN, 0.0);
    g.eval(&db, &sh, T0, false);
    assert_eq!(state(&g, 0), [AlertState::Firing], "for: 0 fires at once");
    g.eval(&db, &sh, T0 + MIN, false);
    assert_eq!(state(&g, 0), [AlertState::Firing]);
    g.eval(&db, &sh, T0 + 3 * MIN, false);
    assert_eq!(state(&g, 0), [AlertState::Firing]);
    g.eval(&db, &sh, T0 + 4 * MIN, false);
    assert_eq!(state(&g, 0), [AlertState::Inactive]);
}

#[test]
fn recording_output_feeds_later_rules_and_limit_fails_the_rule() {
    let (_d, db) = db();
    let g = group(
        r#"
groups:
  - name: g
    limit: 2
    labels:
      team: mcp
    rules:
      - record: tool:calls:sum
        expr: sum by (tool) (calls)
      - alert: ManyCalls
        expr: tool:calls:sum > 10
"#,
    );
    let sh = shared();
    write(&db, &[("__name__", "calls"), ("tool", "a"), ("i", "1")], T0, 8.0);
    write(&db, &[("__name__", "calls"), ("tool", "a"), ("i", "2")], T0, 8.0);
    write(&db, &[("__name__", "calls"), ("tool", "b"), ("i", "1")], T0, 1.0);
    g.eval(&db, &sh, T0, false);
    assert_eq!(
        query(&db, "tool:calls:sum", T0),
        [
            (r#"{__name__="tool:calls:sum", team="mcp", tool="a"}"#.to_string(), 16.0),
            (r#"{__name__="tool:calls:sum", team="mcp", tool="b"}"#.to_string(), 1.0)
        ]
    );
    assert_eq!(state(&g, 1), [AlertState::Firing], "the alert saw the recorded series of this evaluation");
    // A third tool: the recording rule exceeds its limit, errors and records nothing.
    write(&db, &[("__name__", "calls"), ("tool", "c"), ("i", "1")], T0 + MIN, 1.0);
    g.eval(&db, &sh, T0 + MIN, false);
    let rules = g.rules.lock();
    assert_eq!(rules[0].health.health, "err");
    assert!(rules[0].health.last_error.contains("exceeded limit of 2 with 3 series"), "{}", rules[0].health.last_error);
}

#[test]
fn template_errors_show_in_the_annotation_and_health() {
    let (_d, db) = db();
    let g = group("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        annotations:\n          s: \"{{ nosuch $value }}\"\n");
    write(&db, &[("__name__", "x")], T0, 1.0);
    g.eval(&db, &shared(), T0, false);
    let rules = g.rules.lock();
    let a = rules[0].active.values().next().unwrap();
    assert!(a.annotations["s"].contains("error expanding template"), "{:?}", a.annotations);
    assert_eq!(rules[0].health.health, "err");
    assert_eq!(a.state, AlertState::Firing, "evaluation went on");
}

#[test]
fn for_state_is_restored_after_a_restart() {
    let (_d, db) = db();
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: Slow\n        expr: x > 0\n        for: 30m\n";
    for i in 0..=40 {
        write(&db, &[("__name__", "x")], T0 + i * MIN, 1.0);
    }
    let sh = shared();
    let before = group(yaml);
    for i in 0..=10 {
        before.eval(&db, &sh, T0 + i * MIN, false);
    }
    assert_eq!(state(&before, 0), [AlertState::Pending]);
    // "Restart" five minutes later: a fresh group restores activeAt, shifted by the downtime
    // (pending 10m before going down, 20m still to wait).
    let after = group(yaml);
    after.eval(&db, &sh, T0 + 15 * MIN, true);
    let rules = after.rules.lock();
    let a = rules[0].active.values().next().unwrap();
    assert_eq!(a.active_at, T0 + 5 * MIN, "activeAt moved by the 5m outage");
    drop(rules);
    after.eval(&db, &sh, T0 + 34 * MIN, false);
    assert_eq!(state(&after, 0), [AlertState::Pending]);
    after.eval(&db, &sh, T0 + 35 * MIN, false);
    assert_eq!(state(&after, 0), [AlertState::Firing]);
    let _ = Arc::new(());
}

#[test]
fn rule_file_errors_name_file_line_group_and_rule() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m])\n      - record: bad name\n        expr: up\n";
    let err = parse_rule_file(Path::new("rules/bad.yml"), yaml).unwrap_err().to_string();
    assert!(err.contains("rules/bad.yml:4: group \"g\", rule 1 (\"A\"): could not parse expression"), "{err}");
    assert!(err.contains("rules/bad.yml:6: group \"g\", rule 2 (\"bad name\"): invalid recording rule name"), "{err}");
    let err = parse_rule_file(Path::new("x.yml"), "groups:\n  - name: g\n    rulez: []\n").unwrap_err().to_string();
    assert!(err.starts_with("x.yml:3:"), "{err}");
}

/// Rule files are PromQL any user writes: a deep expression loads and evaluates (on a tokio
/// worker's 2 MiB stack, where rules run), and one past `query.max_expression_depth` is a load
/// error naming the rule and the setting, never a crash.
#[test]
fn deep_expressions_load_and_run_or_name_the_limit() {
    let nest = |n: usize| format!("{}vector(1){}", "abs(".repeat(n), ")".repeat(n));
    let file = |name: &str, expr: String| format!("groups:\n  - name: g\n    rules:\n      - record: {name}\n        expr: '{expr}'\n");
    let ok = file("deep:one", nest(10_000));
    let too_deep = file("deep:too", nest(30_000));
    let on_small_stack = |f: Box<dyn FnOnce() + Send>| std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().unwrap();
    on_small_stack(Box::new(move || {
        let (_d, db) = db();
        let g = group(&ok);
        g.eval(&db, &shared(), T0, false);
        assert_eq!(query(&db, "deep:one", T0), [(r#"{__name__="deep:one"}"#.to_string(), 1.0)]);
    }));
    on_small_stack(Box::new(move || {
        let err = parse_rule_file(Path::new("deep.yml"), &too_deep).unwrap_err().to_string();
        assert!(err.contains("group \"g\", rule 1 (\"deep:too\")"), "{}", &err[..err.len().min(300)]);
        assert!(err.contains("query.max_expression_depth = 25000"), "{}", &err[..err.len().min(300)]);
    }));
}

#[test]
fn query_offset_evaluates_in_the_past_and_writes_there() {
    let (_d, db) = db();
    let g = group("groups:\n  - name: g\n    query_offset: 5m\n    rules:\n      - record: x:copy\n        expr: x\n");
    write(&db, &[("__name__", "x")], T0, 1.0);
    write(&db, &[("__name__", "x")], T0 + 5 * MIN, 2.0);
    g.eval(&db, &shared(), T0 + 5 * MIN, false);
    // The rule saw the data as of T0 and its output is stamped T0.
    assert_eq!(query(&db, "x:copy", T0), [(r#"{__name__="x:copy"}"#.to_string(), 1.0)]);
    assert_eq!(query(&db, "timestamp(x:copy)", T0 + MIN), [("{}".to_string(), (T0 / 1000) as f64)]);
}

#[test]
fn a_slow_group_skips_and_counts_missed_ticks() {
    use toolwatch_alerting::group::due_tick;
    // On time, or late by less than an interval: the planned tick, nothing missed.
    assert_eq!(due_tick(10_000, 10_000, 1_000), (10_000, 0));
    assert_eq!(due_tick(10_000, 10_999, 1_000), (10_000, 0));
    // The previous evaluation ran 2.5 intervals past the planned tick: two ticks are skipped and
    // the latest passed one is evaluated.
    assert_eq!(due_tick(10_000, 12_500, 1_000), (12_000, 2));
}

#[test]
fn the_query_template_function_reads_the_store() {
    let (_d, db) = db();
    let g = group(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 0\n        annotations:\n          total: '{{ with query \"sum(x)\" }}{{ . | first | value }}{{ end }}'\n          each: '{{ range query \"x\" }}{{ .Labels.i }}={{ .Value }} {{ end }}'\n",
    );
    write(&db, &[("__name__", "x"), ("i", "1")], T0, 2.0);
    write(&db, &[("__name__", "x"), ("i", "2")], T0, 3.0);
    g.eval(&db, &shared(), T0, false);
    let rules = g.rules.lock();
    let a = rules[0].active.values().next().unwrap();
    assert_eq!(a.annotations["total"], "5");
    assert_eq!(a.annotations["each"], "1=2 2=3 ");
}
