//! `toolwatch rules test`: promtool's rule unit-test format (`rule_files`, `evaluation_interval`,
//! `tests[]` with `interval`, `input_series` in expanding notation, `alert_rule_test`,
//! `promql_expr_test`, `external_labels`, `external_url`), run against a scratch store with the
//! same rule evaluation the server uses, so a rule file's tests give the same verdicts here as in
//! promtool.

use crate::group::{Group, GroupShared};
use crate::notifier::Notifier;
use crate::rule::{AlertState, LabelMap};
use crate::rulefile::parse_rule_file;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toolwatch_query::promqltest::{expand_values, parse_duration_ms, parse_series_line};
use toolwatch_query::{Engine, EngineOptions, QueryControl, QueryValue};
use toolwatch_storage::{Db, DbOptions, LabelRef};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    labels: String,
    value: f64,
}

type AlertSet = Vec<(LabelMap, LabelMap)>;

/// Runs one unit-test file; `Ok(())` when every test passes, else the failures, one per line
/// block in promtool's shape.
pub fn run_test_file(path: &Path) -> Result<(), Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let file: TestFile = serde_saphyr::from_str(&text).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let dur = |s: &str| parse_duration_ms(s).map_err(|e| vec![e]);
    let eval_interval = match &file.evaluation_interval {
        Some(s) => dur(s)?,
        None => 60_000,
    };
    let mut specs = Vec::new();
    for f in &file.rule_files {
        let p = base.join(f);
        let t = std::fs::read_to_string(&p).map_err(|e| vec![format!("{}: {e}", p.display())])?;
        specs.extend(parse_rule_file(&p, &t).map_err(|e| vec![e.to_string()])?);
    }
    if !file.group_eval_order.is_empty() {
        specs.sort_by_key(|g| file.group_eval_order.iter().position(|n| *n == g.name).unwrap_or(usize::MAX));
    }
    let mut failures = Vec::new();
    for tg in &file.tests {
        if let Err(mut f) = run_group(tg, &specs, eval_interval) {
            if !tg.name.is_empty() {
                f.insert(0, format!("    name: {},", tg.name));
            }
            failures.append(&mut f);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

fn fmt_alerts(a: &AlertSet) -> String {
    let parts: Vec<String> = a.iter().map(|(l, an)| format!("{{Labels:{l:?} Annotations:{an:?}}}")).collect();
    format!("[{}]", parts.join(" "))
}

fn run_group(tg: &TestGroup, specs: &[crate::rulefile::GroupSpec], eval_interval: i64) -> Result<(), Vec<String>> {
    let interval = match &tg.interval {
        Some(s) => parse_duration_ms(s).map_err(|e| vec![e])?,
        None => eval_interval,
    };
    let dir = tempfile_dir().map_err(|e| vec![e])?;
    let db = Db::open(&dir, DbOptions::default()).map_err(|e| vec![e.to_string()])?;
    let result = (|| {
        // Input series, last definition of a series winning, as promtool loads them.
        let mut app = db.appender().map_err(|e| vec![e.to_string()])?;
        for s in &tg.input_series {
            let line = format!("{} {}", s.series, s.values);
            let (labels, vals) = parse_series_line(&line).map_err(|e| vec![e])?;
            let values = expand_values(vals).map_err(|e| vec![e])?;
            let refs: Vec<LabelRef> = labels.iter().map(|l| LabelRef { name: &l.name, value: &l.value }).collect();
            for (i, v) in values.iter().enumerate() {
                if let Some(v) = v {
                    app.append(&refs, i as i64 * interval, *v).map_err(|e| vec![e.to_string()])?;
                }
            }
        }
        app.commit().map_err(|e| vec![e.to_string()])?;

        let shared = GroupShared {
            external_labels: tg.external_labels.clone(),
            external_url: tg.external_url.clone(),
            engine_opts: EngineOptions::default(),
            notifier: Notifier::new(Vec::new(), 1, None),
            metrics: Default::default(),
        };
        let groups: Vec<Group> =
            specs.iter().cloned().map(|s| Group::new(s, Duration::from_millis(eval_interval as u64))).collect();
        for g in &groups {
            for r in g.rules.lock().iter_mut() {
                r.restored = true;
            }
        }
        let mut alert_tests: Vec<(i64, &AlertTest)> = Vec::new();
        for t in &tg.alert_rule_test {
            alert_tests.push((parse_duration_ms(&t.eval_time).map_err(|e| vec![e])?, t));
        }
        alert_tests.sort_by_key(|t| t.0);
        let mut expr_tests: Vec<(i64, &ExprTest)> = Vec::new();
        for t in &tg.promql_expr_test {
            expr_tests.push((parse_duration_ms(&t.eval_time).map_err(|e| vec![e])?, t));
        }
        let maxt = alert_tests.iter().map(|t| t.0).chain(expr_tests.iter().map(|t| t.0)).max().unwrap_or(0);
        let mut failures = Vec::new();
        let mut next_alert = 0;
        let mut ts = 0;
        while ts <= maxt {
            for g in &groups {
                g.eval(&db, &shared, ts, false);
            }
            // Alert tests whose time falls in [ts, ts + interval) see this evaluation's state.
            while next_alert < alert_tests.len() && alert_tests[next_alert].0 < ts + eval_interval {
                let (at, t) = alert_tests[next_alert];
                next_alert += 1;
                if at < ts {
                    continue;
                }
                let mut got: AlertSet = Vec::new();
                for g in &groups {
                    for r in g.rules.lock().iter() {
                        if r.spec.name != t.alertname || !r.spec.is_alert() {
                            continue;
                        }
                        for a in r.active.values().filter(|a| a.state == AlertState::Firing) {
                            got.push((a.labels.clone(), a.annotations.clone()));
                        }
                    }
                }
                let mut exp: AlertSet = t
                    .exp_alerts
                    .iter()
                    .map(|e| {
                        let mut l = e.exp_labels.clone();
                        l.insert("alertname".into(), t.alertname.clone());
                        (l, e.exp_annotations.clone())
                    })
                    .collect();
                got.sort();
                exp.sort();
                if got != exp {
                    failures.push(format!(
                        "    alertname: {}, time: {},\n        exp:{},\n        got:{}",
                        t.alertname,
                        t.eval_time,
                        fmt_alerts(&exp),
                        fmt_alerts(&got)
                    ));
                }
            }
            ts += eval_interval;
        }
        let engine = Engine::new(db.clone(), EngineOptions::default());
        for (at, t) in expr_tests {
            let got = match engine.instant(&t.expr, at, &QueryControl::default()) {
                Ok((QueryValue::Vector(rows), _)) => {
                    rows.into_iter().map(|(l, _, v)| (toolwatch_query::value::labels_string(&l), v)).collect::<Vec<_>>()
                }
                Ok((QueryValue::Scalar { v, .. }, _)) => vec![("{}".to_string(), v)],
                Ok(_) => Vec::new(),
                Err(e) => {
                    failures.push(format!("    expr: {:?}, time: {}, err: {e}", t.expr, t.eval_time));
                    continue;
                }
            };
            let mut exp = Vec::new();
            for s in &t.exp_samples {
                let (l, _) = parse_series_line(&s.labels).map_err(|e| vec![e])?;
                exp.push((toolwatch_query::value::labels_string(&l), s.value));
            }
            let (mut got, mut exp) = (got, exp);
            got.sort_by(|a, b| a.0.cmp(&b.0));
            exp.sort_by(|a, b| a.0.cmp(&b.0));
            // promtool compares values exactly (NaN equal to NaN).
            let same = got.len() == exp.len()
                && got.iter().zip(&exp).all(|(g, e)| g.0 == e.0 && (g.1 == e.1 || (g.1.is_nan() && e.1.is_nan())));
            if !same {
                failures.push(format!(
                    "    expr: {:?}, time: {},\n        exp: {exp:?}\n        got: {got:?}",
                    t.expr, t.eval_time
                ));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    })();
    let _ = db.close();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh scratch directory for one test group's store.
fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "toolwatch-rules-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}
