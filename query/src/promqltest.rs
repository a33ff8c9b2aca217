//! A runner for Prometheus' `promqltest` script format (`load`, `clear`, `eval instant at`,
//! `eval range from .. to .. step ..`, `eval_fail`, `eval_ordered`), so the engine is checked
//! against the same scripts Prometheus checks its own engine with.
//!
//! Data is appended through the storage `Appender` into a fresh `Db` per section; every instant
//! eval is also re-run as a range query around its time, as Prometheus' harness does.

use crate::engine::{Engine, EngineOptions, QueryControl};
use crate::value::{QueryValue, Series};
use promql_parser::parser::Expr;
use std::sync::Arc;
use toolwatch_storage::{Db, LabelRef, Labels, METRIC_NAME};

/// One eval's outcome.
#[derive(Debug)]
pub struct EvalOutcome {
    pub line: usize,
    pub query: String,
    /// `None` when it passed; otherwise why not.
    pub failure: Option<String>,
}

enum Cmd {
    Load { step: i64, series: Vec<(Labels, Vec<Option<f64>>)> },
    Clear,
    Eval(EvalCmd),
}

struct EvalCmd {
    line: usize,
    query: String,
    kind: EvalKind,
    fail: bool,
    ordered: bool,
    /// Expected series (labels, values per step); a scalar result is one entry without labels
    /// and `scalar` set.
    expected: Vec<(Labels, Vec<Option<f64>>)>,
}

enum EvalKind {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

pub use crate::time::parse_duration_ms;

fn parse_value(tok: &str) -> Result<f64, String> {
    if tok == "stale" {
        return Ok(f64::from_bits(crate::selectors::STALE_NAN_BITS));
    }
    tok.parse::<f64>().map_err(|_| format!("bad value {tok:?}"))
}

/// Expands Prometheus' series notation: `1 2 3`, `1+2x3`, `5-1x2`, `1x3`, `_`, `_x3`, `stale`.
pub fn expand_values(s: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        let Some(xpos) = tok.rfind('x') else {
            out.push(Some(parse_value(tok)?));
            continue;
        };
        let (head, times) = (&tok[..xpos], &tok[xpos + 1..]);
        let times: usize = times.parse().map_err(|_| format!("bad repeat {tok:?}"))?;
        // Split `a+b` / `a-b`, skipping a sign at the start or after an exponent.
        let bytes = head.as_bytes();
        let split =
            (1..bytes.len()).find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
        match split {
            None => {
                let v = parse_value(head)?;
                out.extend(std::iter::repeat_n(Some(v), times + 1));
            }
            Some(i) => {
                let start = parse_value(&head[..i])?;
                let mut delta = parse_value(&head[i + 1..])?;
                if bytes[i] == b'-' {
                    delta = -delta;
                }
                let mut v = start;
                for _ in 0..=times {
                    out.push(Some(v));
                    v += delta;
                }
            }
        }
    }
    Ok(out)
}

/// Splits `metric{a="b"} 1 2 3` into labels and the value text.
pub fn parse_series_line(line: &str) -> Result<(Labels, &str), String> {
    let line = line.trim();
    let end = match line.find('{') {
        Some(open) if !line[..open].contains(char::is_whitespace) => {
            let mut in_quote = false;
            let mut escaped = false;
            let mut close = None;
            for (i, c) in line[open..].char_indices() {
                if in_quote {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        in_quote = false;
                    }
                } else if c == '"' {
                    in_quote = true;
                } else if c == '}' {
                    close = Some(open + i + 1);
                    break;
                }
            }
            close.ok_or_else(|| format!("unclosed braces in {line:?}"))?
        }
        _ => line.find(char::is_whitespace).unwrap_or(line.len()),
    };
    let desc = &line[..end];
    let labels = if desc == "{}" {
        Labels::default()
    } else {
        match crate::engine::parse(desc).map_err(|e| format!("bad series {desc:?}: {e}"))?.expr() {
            Expr::VectorSelector(vs) => {
                let mut pairs: Vec<(String, String)> =
                    vs.matchers.matchers.iter().map(|m| (m.name.clone(), m.value.clone())).collect();
                if let Some(n) = &vs.name {
                    pairs.push((METRIC_NAME.to_string(), n.clone()));
                }
                Labels::from_pairs(&pairs)
            }
            _ => return Err(format!("bad series {desc:?}")),
        }
    };
    Ok((labels, &line[end..]))
}

fn parse_script(text: &str) -> Result<Vec<Cmd>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    let is_body = |l: &str| !l.trim().is_empty() && l.starts_with([' ', '\t']) && !l.trim().starts_with('#');
    while i < lines.len() {
        let line = lines[i].trim();
        let lineno = i + 1;
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut body = Vec::new();
        while i < lines.len()
            && (is_body(lines[i]) || lines[i].trim().starts_with('#') && lines[i].starts_with([' ', '\t']))
        {
            if !lines[i].trim().starts_with('#') {
                body.push(lines[i]);
            }
            i += 1;
        }
        let err = |m: String| format!("line {lineno}: {m}");
        if let Some(step) = line.strip_prefix("load ") {
            let step = parse_duration_ms(step.trim()).map_err(err)?;
            let mut series: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
            for b in body {
                let (labels, vals) = parse_series_line(b).map_err(err)?;
                let vals = expand_values(vals).map_err(err)?;
                // A series defined twice keeps its last definition, as in Prometheus' loader.
                series.retain(|(l, _)| *l != labels);
                series.push((labels, vals));
            }
            cmds.push(Cmd::Load { step, series });
        } else if line == "clear" {
            cmds.push(Cmd::Clear);
        } else if line.starts_with("eval") {
            let (directive, rest) = line.split_once(' ').ok_or_else(|| err("bad eval".into()))?;
            let (fail, ordered) = match directive {
                "eval" => (false, false),
                "eval_fail" => (true, false),
                "eval_ordered" => (false, true),
                d => return Err(err(format!("unsupported directive {d}"))),
            };
            let (kind, query) = if let Some(r) = rest.strip_prefix("instant at ") {
                let (t, q) = r.split_once(' ').ok_or_else(|| err("missing query".into()))?;
                (EvalKind::Instant(parse_duration_ms(t).map_err(err)?), q)
            } else if let Some(r) = rest.strip_prefix("range from ") {
                let parts: Vec<&str> = r.splitn(6, ' ').collect();
                if parts.len() < 6 || parts[1] != "to" || parts[3] != "step" {
                    return Err(err("bad range eval".into()));
                }
                let start = parse_duration_ms(parts[0]).map_err(err)?;
                let end = parse_duration_ms(parts[2]).map_err(err)?;
                let step = parse_duration_ms(parts[4]).map_err(err)?;
                (EvalKind::Range { start, end, step }, parts[5])
            } else {
                return Err(err(format!("bad eval {rest:?}")));
            };
            let mut expected = Vec::new();
            for b in body {
                let t = b.trim();
                if t.starts_with("expected_fail_message") || t.starts_with("expected_fail_regexp") {
                    continue;
                }
                if let Ok(v) = parse_value(t) {
                    expected.push((Labels::default(), vec![Some(v)]));
                    continue;
                }
                let (labels, vals) = parse_series_line(t).map_err(err)?;
                expected.push((labels, expand_values(vals).map_err(err)?));
            }
            cmds.push(Cmd::Eval(EvalCmd {
                line: lineno,
                query: query.trim().to_string(),
                kind,
                fail,
                ordered,
                expected,
            }));
        } else {
            return Err(err(format!("unknown command {line:?}")));
        }
    }
    Ok(cmds)
}

/// Prometheus' float comparison for tests: relative tolerance, NaN equals NaN.
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

/// Runs one script. `new_db` gives an empty database for each section (after `clear`).
pub fn run_script(text: &str, mut new_db: impl FnMut() -> Arc<Db>) -> Result<Vec<EvalOutcome>, String> {
    let cmds = parse_script(text)?;
    let mut db = new_db();
    let mut out = Vec::new();
    for cmd in cmds {
        match cmd {
            Cmd::Clear => {
                db.close().map_err(|e| e.to_string())?;
                db = new_db();
            }
            Cmd::Load { step, series } => load(&db, step, &series)?,
            Cmd::Eval(e) => {
                let engine = Engine::new((*db).clone(), EngineOptions::default());
                let failure = run_eval(&engine, &e).err();
                out.push(EvalOutcome { line: e.line, query: e.query.clone(), failure });
            }
        }
    }
    db.close().map_err(|e| e.to_string())?;
    Ok(out)
}

fn load(db: &Db, step: i64, series: &[(Labels, Vec<Option<f64>>)]) -> Result<(), String> {
    let mut app = db.appender().map_err(|e| e.to_string())?;
    for (labels, values) in series {
        let refs: Vec<LabelRef> = labels.iter().map(|l| LabelRef { name: &l.name, value: &l.value }).collect();
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                app.append(&refs, i as i64 * step, *v).map_err(|e| format!("loading {labels:?}: {e}"))?;
            }
        }
    }
    app.commit().map_err(|e| e.to_string())?;
    Ok(())
}

fn run_eval(engine: &Engine, e: &EvalCmd) -> Result<(), String> {
    let ctl = QueryControl::default();
    match e.kind {
        EvalKind::Instant(t) => {
            let res = engine.instant(&e.query, t, &ctl);
            if e.fail {
                return match res {
                    Err(_) => Ok(()),
                    Ok(_) => Err("expected an error, query succeeded".into()),
                };
            }
            let (value, _) = res.map_err(|err| format!("unexpected error: {err}"))?;
            let got = instant_rows(&value)?;
            compare_instant(e, &got, e.ordered)?;
            if e.ordered || matches!(value, QueryValue::Matrix(_) | QueryValue::String { .. }) {
                return Ok(());
            }
            // The same query as a range query must give the same answer at `t`.
            let (rv, _) = engine
                .range(&e.query, t - 60_000, t + 60_000, 60_000, &ctl)
                .map_err(|err| format!("range re-check: unexpected error: {err}"))?;
            let QueryValue::Matrix(m) = rv else { return Err("range re-check: not a matrix".into()) };
            let rows: Vec<(Labels, f64)> =
                m.iter().filter_map(|s| s.points.iter().find(|p| p.0 == t).map(|p| (s.labels.clone(), p.1))).collect();
            let rows = if matches!(value, QueryValue::Scalar { .. }) {
                rows.into_iter().map(|(_, v)| (Labels::default(), v)).take(1).collect()
            } else {
                rows
            };
            compare_instant(e, &rows, false).map_err(|m| format!("range re-check: {m}"))
        }
        EvalKind::Range { start, end, step } => {
            let res = engine.range(&e.query, start, end, step, &ctl);
            if e.fail {
                return match res {
                    Err(_) => Ok(()),
                    Ok(_) => Err("expected an error, query succeeded".into()),
                };
            }
            let (value, _) = res.map_err(|err| format!("unexpected error: {err}"))?;
            let QueryValue::Matrix(m) = value else { return Err("range query did not return a matrix".into()) };
            compare_range(e, &m, start, step)
        }
    }
}

fn instant_rows(v: &QueryValue) -> Result<Vec<(Labels, f64)>, String> {
    Ok(match v {
        QueryValue::Scalar { v, .. } => vec![(Labels::default(), *v)],
        QueryValue::Vector(rows) => rows.iter().map(|(l, _, v)| (l.clone(), *v)).collect(),
        QueryValue::Matrix(series) => {
            // A range vector is compared by its samples, expected in load-step notation.
            return Ok(series.iter().flat_map(|s| s.points.iter().map(move |p| (s.labels.clone(), p.1))).collect());
        }
        QueryValue::String { .. } => Vec::new(),
    })
}

fn show(l: &Labels) -> String {
    crate::value::labels_string(l)
}

fn compare_instant(e: &EvalCmd, got: &[(Labels, f64)], ordered: bool) -> Result<(), String> {
    let want: Vec<(Labels, f64)> =
        e.expected.iter().flat_map(|(l, vs)| vs.iter().map(move |v| (l.clone(), v.unwrap_or(f64::NAN)))).collect();
    if got.len() != want.len() {
        return Err(format!(
            "expected {} samples, got {}: {:?}",
            want.len(),
            got.len(),
            got.iter().map(|(l, v)| format!("{} {v}", show(l))).collect::<Vec<_>>()
        ));
    }
    if ordered {
        for (i, ((gl, gv), (wl, wv))) in got.iter().zip(&want).enumerate() {
            if gl != wl || !almost_equal(*gv, *wv) {
                return Err(format!("at position {i}: expected {} {wv}, got {} {gv}", show(wl), show(gl)));
            }
        }
        return Ok(());
    }
    let mut used = vec![false; got.len()];
    for (wl, wv) in &want {
        let found = got.iter().enumerate().position(|(i, (gl, gv))| !used[i] && gl == wl && almost_equal(*gv, *wv));
        match found {
            Some(i) => used[i] = true,
            None => {
                let actual: Vec<String> = got.iter().filter(|(gl, _)| gl == wl).map(|(_, v)| v.to_string()).collect();
                return Err(format!("expected {} {wv}, got {:?}", show(wl), actual));
            }
        }
    }
    Ok(())
}

fn compare_range(e: &EvalCmd, got: &[Series], start: i64, step: i64) -> Result<(), String> {
    let want: Vec<(Labels, Vec<(i64, f64)>)> = e
        .expected
        .iter()
        .map(|(l, vs)| {
            let pts = vs.iter().enumerate().filter_map(|(i, v)| v.map(|v| (start + i as i64 * step, v))).collect();
            (l.clone(), pts)
        })
        .filter(|(_, p): &(Labels, Vec<(i64, f64)>)| !p.is_empty())
        .collect();
    if got.len() != want.len() {
        return Err(format!(
            "expected {} series, got {}: {:?}",
            want.len(),
            got.len(),
            got.iter().map(|s| show(&s.labels)).collect::<Vec<_>>()
        ));
    }
    for (wl, wp) in &want {
        let Some(s) = got.iter().find(|s| &s.labels == wl) else {
            return Err(format!("missing series {}", show(wl)));
        };
        let ok =
            s.points.len() == wp.len() && s.points.iter().zip(wp).all(|(g, w)| g.0 == w.0 && almost_equal(g.1, w.1));
        if !ok {
            return Err(format!("series {}: expected {:?}, got {:?}", show(wl), wp, s.points));
        }
    }
    Ok(())
}
