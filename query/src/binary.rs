//! Binary operators: arithmetic, comparisons (filtering or `bool`) and set operators, between
//! scalars and vectors, with Prometheus' vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`) and its rules for when `__name__` is dropped.

use crate::engine::{merge_same_labels, Evaluator};
use crate::error::{QueryError, Result};
use crate::value::{drop_name, keep_labels, labels_string, remove_labels, with_label, Series, Value};
use promql_parser::parser::token::*;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use rustc_hash::FxHashMap;
use toolwatch_storage::{Labels, METRIC_NAME};

pub(crate) fn eval_binary(ev: &Evaluator, b: &BinaryExpr) -> Result<Value> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs)?;
    let rhs = ev.eval(&b.rhs)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
            l.iter()
                .zip(&r)
                .map(|(a, b)| {
                    let (v, keep) = elem_op(op, *a, *b);
                    if is_comparison(op) {
                        if keep {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Value::Vector(l), Value::Scalar(r)) => vector_scalar(ev, op, l, &r, false, return_bool),
        (Value::Scalar(l), Value::Vector(r)) => vector_scalar(ev, op, r, &l, true, return_bool),
        (Value::Vector(l), Value::Vector(r)) => {
            let modifier = b.modifier.as_ref();
            let matching = modifier.and_then(|m| m.matching.as_ref());
            let card = modifier.map_or(VectorMatchCardinality::OneToOne, |m| m.card.clone());
            match op {
                T_LAND | T_LOR | T_LUNLESS => set_op(ev, op, l, r, matching),
                _ => vector_vector(ev, op, l, r, matching, &card, return_bool),
            }
        }
        _ => Err(QueryError::BadData("binary operators are only defined on scalars and instant vectors".into())),
    }
}

pub(crate) fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic drops the metric name; comparisons and set operators keep it.
fn drops_name(op: u16) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
}

/// The value of `lhs op rhs` and, for comparisons, whether the element is kept.
fn elem_op(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn vector_scalar(
    ev: &Evaluator,
    op: u16,
    vector: Vec<Series>,
    scalar: &[f64],
    scalar_on_left: bool,
    return_bool: bool,
) -> Result<Value> {
    let drop = drops_name(op) || return_bool;
    let mut out = Vec::with_capacity(vector.len());
    for s in vector {
        let mut points = Vec::with_capacity(s.points.len());
        for (t, v) in s.points {
            let sv = scalar[ev.step_of(t)];
            let (l, r) = if scalar_on_left { (sv, v) } else { (v, sv) };
            let (mut value, mut keep) = elem_op(op, l, r);
            // A comparison keeps the vector element's value even when the scalar is on the left.
            if is_comparison(op) && scalar_on_left {
                value = v;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                points.push((t, value));
            }
        }
        if !points.is_empty() {
            out.push(Series { labels: if drop { drop_name(&s.labels) } else { s.labels }, points });
        }
    }
    Ok(Value::Vector(if drop { merge_same_labels(out)? } else { out }))
}

/// The labels two series are matched on, as one comparable key.
fn signature(l: &Labels, matching: Option<&LabelModifier>) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    let mut push = |name: &str, value: &str| {
        key.extend_from_slice(name.as_bytes());
        key.push(0xff);
        key.extend_from_slice(value.as_bytes());
        key.push(0xfe);
    };
    match matching {
        Some(LabelModifier::Include(on)) => {
            for x in l.iter().filter(|x| on.labels.iter().any(|n| **n == *x.name)) {
                push(&x.name, &x.value);
            }
        }
        Some(LabelModifier::Exclude(ign)) => {
            for x in l.iter().filter(|x| &*x.name != METRIC_NAME && !ign.labels.iter().any(|n| **n == *x.name)) {
                push(&x.name, &x.value);
            }
        }
        None => {
            for x in l.iter().filter(|x| &*x.name != METRIC_NAME) {
                push(&x.name, &x.value);
            }
        }
    }
    key
}

/// A cursor over a series' points that answers "value at step k?" while k only grows.
struct StepCursor {
    i: usize,
}

impl StepCursor {
    fn at(&mut self, s: &Series, t: i64) -> Option<f64> {
        while self.i < s.points.len() && s.points[self.i].0 < t {
            self.i += 1;
        }
        match s.points.get(self.i) {
            Some(&(pt, v)) if pt == t => Some(v),
            _ => None,
        }
    }
}

fn set_op(ev: &Evaluator, op: u16, l: Vec<Series>, r: Vec<Series>, matching: Option<&LabelModifier>) -> Result<Value> {
    let n = ev.nsteps();
    // For each signature, the steps at which the other side has at least one element.
    let present = |side: &[Series]| -> FxHashMap<Vec<u8>, Vec<bool>> {
        let mut m: FxHashMap<Vec<u8>, Vec<bool>> = FxHashMap::default();
        for s in side {
            let steps = m.entry(signature(&s.labels, matching)).or_insert_with(|| vec![false; n]);
            for (t, _) in &s.points {
                steps[ev.step_of(*t)] = true;
            }
        }
        m
    };
    match op {
        T_LAND | T_LUNLESS => {
            let rp = present(&r);
            let want = op == T_LAND;
            let out = l
                .into_iter()
                .filter_map(|mut s| {
                    let steps = rp.get(&signature(&s.labels, matching));
                    s.points.retain(|(t, _)| steps.is_some_and(|st| st[ev.step_of(*t)]) == want);
                    (!s.points.is_empty()).then_some(s)
                })
                .collect();
            Ok(Value::Vector(out))
        }
        _ => {
            let lp = present(&l);
            let mut out = l;
            for mut s in r {
                let steps = lp.get(&signature(&s.labels, matching));
                s.points.retain(|(t, _)| !steps.is_some_and(|st| st[ev.step_of(*t)]));
                if !s.points.is_empty() {
                    out.push(s);
                }
            }
            Ok(Value::Vector(merge_same_labels(out)?))
        }
    }
}

fn vector_vector(
    ev: &Evaluator,
    op: u16,
    l: Vec<Series>,
    r: Vec<Series>,
    matching: Option<&LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
) -> Result<Value> {
    // The "many" side is iterated, the "one" side looked up; for one-to-one both are "one".
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let include: Vec<String> = match card {
        VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => ls.labels.clone(),
        _ => Vec::new(),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let many_sigs: Vec<Vec<u8>> = many.iter().map(|s| signature(&s.labels, matching)).collect();
    let one_sigs: Vec<Vec<u8>> = one.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut many_cur: Vec<StepCursor> = many.iter().map(|_| StepCursor { i: 0 }).collect();
    let mut one_cur: Vec<StepCursor> = one.iter().map(|_| StepCursor { i: 0 }).collect();
    // Result labels depend only on the pair of series, so they are built once per pair.
    let mut pair_out: FxHashMap<(usize, usize), usize> = FxHashMap::default();
    let mut out: Vec<Series> = Vec::new();
    let mut one_at: FxHashMap<&[u8], (usize, f64)> = FxHashMap::default();
    let mut matched: FxHashMap<&[u8], Vec<usize>> = FxHashMap::default();
    for k in 0..ev.nsteps() {
        ev.limits.check("binary operation")?;
        let t = ev.ts(k);
        one_at.clear();
        for (j, s) in one.iter().enumerate() {
            if let Some(v) = one_cur[j].at(s, t) {
                if let Some(&(prev, _)) = one_at.get(one_sigs[j].as_slice()) {
                    let side = if swapped { "left" } else { "right" };
                    return Err(QueryError::Execution(format!(
                        "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        labels_string(&match_labels(&s.labels, matching)),
                        labels_string(&s.labels),
                        labels_string(&one[prev].labels),
                    )));
                }
                one_at.insert(one_sigs[j].as_slice(), (j, v));
            }
        }
        matched.clear();
        for (i, s) in many.iter().enumerate() {
            let Some(mv) = many_cur[i].at(s, t) else { continue };
            let Some(&(j, ov)) = one_at.get(many_sigs[i].as_slice()) else { continue };
            let (fl, fr) = if swapped { (ov, mv) } else { (mv, ov) };
            let (mut value, mut keep) = elem_op(op, fl, fr);
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            let idx = match pair_out.get(&(i, j)) {
                Some(&idx) => idx,
                None => {
                    let labels =
                        result_labels(op, &s.labels, &one[j].labels, matching, one_to_one, &include, return_bool);
                    out.push(Series { labels, points: Vec::new() });
                    pair_out.insert((i, j), out.len() - 1);
                    out.len() - 1
                }
            };
            let seen = matched.entry(many_sigs[i].as_slice()).or_default();
            if one_to_one {
                if !seen.is_empty() {
                    return Err(QueryError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                            .into(),
                    ));
                }
            } else if seen.iter().any(|&o| out[o].labels == out[idx].labels) {
                return Err(QueryError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches".into(),
                ));
            }
            seen.push(idx);
            if keep {
                out[idx].points.push((t, value));
            }
        }
    }
    Ok(Value::Vector(merge_same_labels(out)?))
}

fn match_labels(l: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => keep_labels(l, &on.labels),
        Some(LabelModifier::Exclude(ign)) => {
            let mut drop = ign.labels.clone();
            drop.push(METRIC_NAME.to_string());
            remove_labels(l, &drop)
        }
        None => drop_name(l),
    }
}

fn result_labels(
    op: u16,
    many: &Labels,
    one: &Labels,
    matching: Option<&LabelModifier>,
    one_to_one: bool,
    include: &[String],
    return_bool: bool,
) -> Labels {
    let mut l = if drops_name(op) || return_bool { drop_name(many) } else { many.clone() };
    if one_to_one {
        l = match matching {
            Some(LabelModifier::Include(on)) => keep_labels(&l, &on.labels),
            Some(LabelModifier::Exclude(ign)) => remove_labels(&l, &ign.labels),
            None => l,
        };
    }
    for name in include {
        l = with_label(&l, name, one.get(name).unwrap_or(""));
    }
    l
}
