//! Aggregation operators (`sum`, `avg`, ..., `topk`, `quantile`, `count_values`) with `by` and
//! `without`. Simple aggregations walk each input series once and accumulate into
//! (group, step) cells; the ones that rank or count values work step by step.

use crate::engine::{merge_same_labels, Evaluator};
use crate::error::{QueryError, Result};
use crate::functions::{kahan_inc, quantile};
use crate::value::{format_float, keep_labels, remove_labels, with_label, Series, Value};
use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, LabelModifier};
use rustc_hash::FxHashMap;
use toolwatch_storage::{Labels, METRIC_NAME};

pub(crate) fn eval_aggregate(ev: &Evaluator, agg: &AggregateExpr) -> Result<Value> {
    let op = agg.op.id();
    let param = match &agg.param {
        Some(p) => Some(ev.eval(p)?),
        None => None,
    };
    let input = match ev.eval(&agg.expr)? {
        Value::Vector(v) => v,
        _ => return Err(QueryError::BadData("aggregations are only defined on instant vectors".into())),
    };
    let modifier = agg.modifier.as_ref();
    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK | T_QUANTILE => {
            let Some(Value::Scalar(p)) = param else {
                return Err(QueryError::BadData("expected a scalar parameter".into()));
            };
            ranked(ev, op, input, &p, modifier)
        }
        T_COUNT_VALUES => {
            let Some(Value::String(label)) = param else {
                return Err(QueryError::BadData("count_values expects a string parameter".into()));
            };
            count_values(ev, input, &label, modifier)
        }
        T_LIMIT_RATIO => Err(QueryError::BadData("limit_ratio is not supported".into())),
        _ => simple(ev, op, input, modifier),
    }
}

/// The labels of the group a series falls into.
fn group_labels(l: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => keep_labels(l, &by.labels),
        Some(LabelModifier::Exclude(without)) => {
            let mut drop = without.labels.clone();
            drop.push(METRIC_NAME.to_string());
            remove_labels(l, &drop)
        }
        None => Labels::default(),
    }
}

/// Assigns each series a group index, groups numbered in order of first appearance.
fn assign_groups(input: &[Series], modifier: Option<&LabelModifier>) -> (Vec<usize>, Vec<Labels>) {
    let mut index: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut groups = Vec::new();
    let of = input
        .iter()
        .map(|s| {
            let g = group_labels(&s.labels, modifier);
            *index.entry(g.clone()).or_insert_with(|| {
                groups.push(g);
                groups.len() - 1
            })
        })
        .collect();
    (of, groups)
}

#[derive(Clone, Copy, Default)]
struct Cell {
    count: f64,
    value: f64,
    comp: f64,
    mean: f64,
    incremental_mean: bool,
}

fn simple(ev: &Evaluator, op: u16, input: Vec<Series>, modifier: Option<&LabelModifier>) -> Result<Value> {
    let n = ev.nsteps();
    let (group_of, groups) = assign_groups(&input, modifier);
    let mut cells = vec![Cell::default(); groups.len() * n];
    for (s, &g) in input.iter().zip(&group_of) {
        ev.limits.check("aggregation")?;
        for &(t, v) in &s.points {
            let c = &mut cells[g * n + ev.step_of(t)];
            c.count += 1.0;
            let first = c.count == 1.0;
            match op {
                T_SUM => (c.value, c.comp) = kahan_inc(v, c.value, c.comp),
                T_MIN => {
                    if first || c.value > v || c.value.is_nan() {
                        c.value = v
                    }
                }
                T_MAX => {
                    if first || c.value < v || c.value.is_nan() {
                        c.value = v
                    }
                }
                T_AVG => avg_add(c, v),
                T_STDDEV | T_STDVAR => {
                    let delta = v - c.mean;
                    c.mean += delta / c.count;
                    c.value += delta * (v - c.mean);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (g, labels) in groups.into_iter().enumerate() {
        let mut points = Vec::new();
        for k in 0..n {
            let c = &cells[g * n + k];
            if c.count == 0.0 {
                continue;
            }
            let v = match op {
                T_SUM => {
                    if c.value.is_infinite() {
                        c.value
                    } else {
                        c.value + c.comp
                    }
                }
                T_AVG => {
                    if c.incremental_mean {
                        c.mean + c.comp
                    } else {
                        c.value / c.count + c.comp / c.count
                    }
                }
                T_COUNT => c.count,
                T_GROUP => 1.0,
                T_STDVAR => c.value / c.count,
                T_STDDEV => (c.value / c.count).sqrt(),
                _ => c.value,
            };
            points.push((ev.ts(k), v));
        }
        out.push(Series { labels, points });
    }
    Ok(Value::Vector(out))
}

/// Adds to an average: a compensated sum while it stays finite, then an incremental mean, which
/// cannot overflow (Prometheus' approach, so the results agree to the last bits).
fn avg_add(c: &mut Cell, v: f64) {
    if c.count == 1.0 {
        c.value = v;
        return;
    }
    if !c.incremental_mean {
        let (sum, comp) = kahan_inc(v, c.value, c.comp);
        if !sum.is_infinite() {
            c.value = sum;
            c.comp = comp;
            return;
        }
        c.incremental_mean = true;
        c.mean = c.value / (c.count - 1.0);
        c.comp /= c.count - 1.0;
    }
    if c.mean.is_infinite() {
        if v.is_infinite() && (c.mean > 0.0) == (v > 0.0) {
            return;
        }
        if !v.is_infinite() && !v.is_nan() {
            return;
        }
    }
    let current = c.mean + c.comp;
    (c.mean, c.comp) = kahan_inc(v / c.count - current / c.count, c.mean, c.comp);
}

/// topk, bottomk, limitk and quantile: per step and group, look at all the group's values.
fn ranked(
    ev: &Evaluator,
    op: u16,
    input: Vec<Series>,
    param: &[f64],
    modifier: Option<&LabelModifier>,
) -> Result<Value> {
    let n = ev.nsteps();
    let (group_of, groups) = assign_groups(&input, modifier);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (i, &g) in group_of.iter().enumerate() {
        members[g].push(i);
    }
    let mut cursors = vec![0usize; input.len()];
    // topk/bottomk/limitk keep input series; quantile makes one series per group.
    let mut out_points: Vec<Vec<(i64, f64)>> =
        vec![Vec::new(); if op == T_QUANTILE { groups.len() } else { input.len() }];
    // The order of an instant query's result: group by group, ranked within each.
    let mut order: Vec<usize> = Vec::new();
    let mut vals: Vec<(usize, f64)> = Vec::new();
    for k in 0..n {
        ev.limits.check("aggregation")?;
        let t = ev.ts(k);
        for (g, m) in members.iter().enumerate() {
            vals.clear();
            for &i in m {
                let pts = &input[i].points;
                while cursors[i] < pts.len() && pts[cursors[i]].0 < t {
                    cursors[i] += 1;
                }
                if let Some(&(pt, v)) = pts.get(cursors[i]) {
                    if pt == t {
                        vals.push((i, v));
                    }
                }
            }
            if vals.is_empty() {
                continue;
            }
            let p = param[k];
            match op {
                T_QUANTILE => {
                    let mut vs: Vec<f64> = vals.iter().map(|x| x.1).collect();
                    out_points[g].push((t, quantile(p, &mut vs)));
                }
                _ => {
                    let kk = param_k(p)?;
                    if kk == 0 {
                        continue;
                    }
                    match op {
                        T_TOPK => vals.sort_by(|a, b| rank_cmp(b.1, a.1)),
                        T_BOTTOMK => vals.sort_by(|a, b| rank_cmp(a.1, b.1).then(std::cmp::Ordering::Equal)),
                        _ => {}
                    }
                    // NaN never outranks a number, in either direction.
                    if op == T_BOTTOMK {
                        vals.sort_by_key(|x| x.1.is_nan());
                    }
                    for &(i, v) in vals.iter().take(kk) {
                        out_points[i].push((t, v));
                        if n == 1 {
                            order.push(i);
                        }
                    }
                }
            }
        }
    }
    let out: Vec<Series> = if op == T_QUANTILE {
        groups.into_iter().zip(out_points).map(|(labels, points)| Series { labels, points }).collect()
    } else if n == 1 {
        order
            .iter()
            .map(|&i| Series { labels: input[i].labels.clone(), points: std::mem::take(&mut out_points[i]) })
            .collect()
    } else {
        input
            .into_iter()
            .zip(out_points)
            .filter(|(_, p)| !p.is_empty())
            .map(|(s, points)| Series { labels: s.labels, points })
            .collect()
    };
    Ok(Value::Vector(out))
}

/// Descending-friendly comparison where NaN ranks below every number.
fn rank_cmp(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap(),
    }
}

fn param_k(p: f64) -> Result<usize> {
    if p.is_nan() {
        return Err(QueryError::Execution("Parameter value is NaN".into()));
    }
    if p >= 9.223372036854776e18 {
        return Err(QueryError::Execution(format!("Scalar value {p} overflows int64")));
    }
    Ok(if p < 1.0 { 0 } else { p as usize })
}

fn count_values(ev: &Evaluator, input: Vec<Series>, label: &str, modifier: Option<&LabelModifier>) -> Result<Value> {
    if !crate::value::valid_label_name(label) {
        return Err(QueryError::Execution(format!("invalid label name {label:?}")));
    }
    let by_with_label = match modifier {
        Some(LabelModifier::Include(by)) => {
            let mut l = by.labels.clone();
            l.push(label.to_string());
            Some(l)
        }
        _ => None,
    };
    let mut counts: FxHashMap<Labels, FxHashMap<i64, f64>> = FxHashMap::default();
    for s in &input {
        ev.limits.check("aggregation")?;
        for &(t, v) in &s.points {
            let l = with_label(&s.labels, label, &format_float(v));
            let g = match (&by_with_label, modifier) {
                (Some(keep), _) => keep_labels(&l, keep),
                (None, Some(LabelModifier::Exclude(without))) => {
                    let mut drop: Vec<String> = without.labels.iter().filter(|x| *x != label).cloned().collect();
                    drop.push(METRIC_NAME.to_string());
                    remove_labels(&l, &drop)
                }
                _ => keep_labels(&l, &[label.to_string()]),
            };
            *counts.entry(g).or_default().entry(t).or_insert(0.0) += 1.0;
        }
    }
    let out = counts
        .into_iter()
        .map(|(labels, by_t)| {
            let mut points: Vec<(i64, f64)> = by_t.into_iter().collect();
            points.sort_by_key(|p| p.0);
            Series { labels, points }
        })
        .collect();
    Ok(Value::Vector(merge_same_labels(out)?))
}
