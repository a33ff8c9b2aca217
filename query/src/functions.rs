//! PromQL functions. Range-vector functions (`rate`, `*_over_time`, ...) slide a window over
//! each series' samples once per query; instant-vector functions map points; a few
//! (`absent`, `scalar`, `sort*`, `label_*`, `histogram_quantile`) look at whole vectors.

use crate::engine::{merge_same_labels, Evaluator};
use crate::error::{QueryError, Result};
use crate::selectors::RangeArg;
use crate::value::{drop_name, with_label, Series, Value};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr, VectorSelector};
use rustc_hash::FxHashMap;
use toolwatch_storage::{Labels, METRIC_NAME};

/// Neumaier's compensated sum step: Prometheus sums this way, so results agree to the last bits.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    if t.is_infinite() {
        (t, 0.0)
    } else if sum.abs() >= inc.abs() {
        (t, c + ((sum - t) + inc))
    } else {
        (t, c + ((inc - t) + sum))
    }
}

/// The q-quantile of `values` with linear interpolation between closest ranks (reorders them).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()).reverse()));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

fn scalar_arg(ev: &Evaluator, e: &Expr) -> Result<Vec<f64>> {
    match ev.eval(e)? {
        Value::Scalar(v) => Ok(v),
        _ => Err(QueryError::BadData("expected a scalar argument".into())),
    }
}

fn string_arg(e: &Expr) -> Result<String> {
    match unwrap_parens(e) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        _ => Err(QueryError::BadData("expected a string literal argument".into())),
    }
}

fn vector_arg(ev: &Evaluator, e: &Expr) -> Result<Vec<Series>> {
    match ev.eval(e)? {
        Value::Vector(v) => Ok(v),
        _ => Err(QueryError::BadData("expected an instant vector argument".into())),
    }
}

pub(crate) fn eval_call(ev: &Evaluator, call: &Call) -> Result<Value> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| unwrap_parens(a)).collect();
    match name {
        "time" => Ok(Value::Scalar((0..ev.nsteps()).map(|k| ev.ts(k) as f64 / 1000.0).collect())),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; ev.nsteps()])),
        "vector" => {
            let v = scalar_arg(ev, args[0])?;
            Ok(Value::Vector(vec![Series {
                labels: Labels::default(),
                points: v.into_iter().enumerate().map(|(k, v)| (ev.ts(k), v)).collect(),
            }]))
        }
        "scalar" => {
            let series = vector_arg(ev, args[0])?;
            let mut count = vec![0u32; ev.nsteps()];
            let mut value = vec![f64::NAN; ev.nsteps()];
            for s in &series {
                for &(t, v) in &s.points {
                    let k = ev.step_of(t);
                    count[k] += 1;
                    value[k] = v;
                }
            }
            Ok(Value::Scalar(count.iter().zip(value).map(|(c, v)| if *c == 1 { v } else { f64::NAN }).collect()))
        }
        "timestamp" => {
            let series = match args[0] {
                Expr::VectorSelector(vs) => ev.eval_vector_selector_with(vs, true)?,
                other => vector_arg(ev, other)?
                    .into_iter()
                    .map(|s| Series {
                        labels: s.labels,
                        points: s.points.iter().map(|&(t, _)| (t, t as f64 / 1000.0)).collect(),
                    })
                    .collect(),
            };
            map_points(ev, series, |_, v| Some(v))
        }
        "absent" => {
            let series = vector_arg(ev, args[0])?;
            let mut present = vec![false; ev.nsteps()];
            for s in &series {
                for &(t, _) in &s.points {
                    present[ev.step_of(t)] = true;
                }
            }
            Ok(absent_result(ev, &present, args[0]))
        }
        "absent_over_time"
        | "present_over_time"
        | "rate"
        | "increase"
        | "delta"
        | "irate"
        | "idelta"
        | "changes"
        | "resets"
        | "deriv"
        | "predict_linear"
        | "holt_winters"
        | "double_exponential_smoothing"
        | "avg_over_time"
        | "min_over_time"
        | "max_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "last_over_time"
        | "quantile_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "mad_over_time" => crate::range_functions::eval_range_function(ev, name, &args),
        "label_replace" => label_replace(ev, &args),
        "label_join" => label_join(ev, &args),
        "sort" | "sort_desc" => {
            let mut series = vector_arg(ev, args[0])?;
            if ev.nsteps() == 1 {
                sort_by_value(&mut series, name == "sort_desc");
            }
            Ok(Value::Vector(series))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut series = vector_arg(ev, args[0])?;
            let names = args[1..].iter().map(|a| string_arg(a)).collect::<Result<Vec<_>>>()?;
            if ev.nsteps() == 1 {
                let desc = name == "sort_by_label_desc";
                sort_by_value(&mut series, desc);
                series.sort_by(|a, b| {
                    for n in &names {
                        let o = natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                        if o != std::cmp::Ordering::Equal {
                            return if desc { o.reverse() } else { o };
                        }
                    }
                    std::cmp::Ordering::Equal
                });
            }
            Ok(Value::Vector(series))
        }
        "histogram_quantile" => {
            crate::histogram::histogram_quantile(ev, &scalar_arg(ev, args[0])?, vector_arg(ev, args[1])?)
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_fraction" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Native histograms are not stored yet, so these functions have nothing to read.
            for a in &args {
                ev.eval(a)?;
            }
            Ok(Value::Vector(Vec::new()))
        }
        "clamp" => {
            let series = vector_arg(ev, args[0])?;
            let (lo, hi) = (scalar_arg(ev, args[1])?, scalar_arg(ev, args[2])?);
            map_points(ev, series, |k, v| {
                let (lo, hi) = (lo[k], hi[k]);
                (hi >= lo || lo.is_nan() || hi.is_nan()).then(|| go_max(lo, go_min(hi, v)))
            })
        }
        "clamp_min" => {
            let series = vector_arg(ev, args[0])?;
            let lo = scalar_arg(ev, args[1])?;
            map_points(ev, series, |k, v| Some(go_max(lo[k], v)))
        }
        "clamp_max" => {
            let series = vector_arg(ev, args[0])?;
            let hi = scalar_arg(ev, args[1])?;
            map_points(ev, series, |k, v| Some(go_min(hi[k], v)))
        }
        "round" => {
            let series = vector_arg(ev, args[0])?;
            let to = if args.len() > 1 { scalar_arg(ev, args[1])? } else { vec![1.0; ev.nsteps()] };
            map_points(ev, series, |k, v| {
                let inv = 1.0 / to[k];
                Some((v * inv + 0.5).floor() / inv)
            })
        }
        "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute" | "month" | "year" => {
            let series = if args.is_empty() {
                vec![Series {
                    labels: Labels::default(),
                    points: (0..ev.nsteps()).map(|k| (ev.ts(k), ev.ts(k) as f64 / 1000.0)).collect(),
                }]
            } else {
                vector_arg(ev, args[0])?
            };
            map_points(ev, series, |_, v| Some(date_part(name, v)))
        }
        _ => {
            let Some(f) = math_fn(name) else {
                return Err(QueryError::BadData(format!("function {name:?} is not supported")));
            };
            let series = vector_arg(ev, args[0])?;
            map_points(ev, series, |_, v| Some(f(v)))
        }
    }
}

/// Applies `f(step, value)` to every point; `None` drops the point. The metric name is dropped,
/// as by every function that changes values.
fn map_points(ev: &Evaluator, series: Vec<Series>, f: impl Fn(usize, f64) -> Option<f64>) -> Result<Value> {
    let out = series
        .into_iter()
        .map(|s| Series {
            labels: drop_name(&s.labels),
            points: s.points.into_iter().filter_map(|(t, v)| f(ev.step_of(t), v).map(|v| (t, v))).collect(),
        })
        .collect();
    Ok(Value::Vector(merge_same_labels(out)?))
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

/// Go's `math.Max`: NaN wins, then +Inf; Rust's `f64::max` ignores NaN instead.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN wins, then -Inf.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Stable sort by value (descending for `desc`), NaN last either way.
fn sort_by_value(series: &mut [Series], desc: bool) {
    let val = |s: &Series| s.points.first().map_or(f64::NAN, |p| p.1);
    series.sort_by(|a, b| {
        let (x, y) = (val(a), val(b));
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ if desc => y.partial_cmp(&x).unwrap(),
            _ => x.partial_cmp(&y).unwrap(),
        }
    });
}

/// Natural order: runs of digits compare as numbers, everything else byte by byte.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut start = 0;
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let both_digits = x.as_bytes()[0].is_ascii_digit() && y.as_bytes()[0].is_ascii_digit();
        let o = if both_digits {
            let (tx, ty) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
        } else {
            x.cmp(y)
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The labels `absent()` gives its result: the selector's equality matchers, where a name
/// matched more than once (or not by equality) is left out, as Prometheus does.
pub(crate) fn absent_labels(vs: Option<&VectorSelector>) -> Labels {
    let Some(vs) = vs else { return Labels::default() };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, PMatchOp::Equal) && !seen.contains(&m.name) {
            pairs.push((m.name.clone(), m.value.clone()));
            seen.push(m.name.clone());
        } else {
            pairs.retain(|(n, _)| *n != m.name);
        }
    }
    Labels::from_pairs(&pairs)
}

fn absent_result(ev: &Evaluator, present: &[bool], arg: &Expr) -> Value {
    let vs = match arg {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let points: Vec<(i64, f64)> =
        present.iter().enumerate().filter(|(_, p)| !**p).map(|(k, _)| (ev.ts(k), 1.0)).collect();
    if points.is_empty() {
        return Value::Vector(Vec::new());
    }
    Value::Vector(vec![Series { labels: absent_labels(vs), points }])
}

pub(crate) fn absent_over_time(ev: &Evaluator, arg: &RangeArg) -> Result<Value> {
    let per_series: Vec<Vec<usize>> = arg.map(ev, |_, points| {
        let mut steps = Vec::new();
        ev.for_each_window(points, arg.range, arg.at, arg.offset, |k, _, _, _| {
            steps.push(k);
            true
        });
        Ok(Some(steps))
    })?;
    let mut present = vec![false; ev.nsteps()];
    for k in per_series.into_iter().flatten() {
        present[k] = true;
    }
    let points: Vec<(i64, f64)> =
        present.iter().enumerate().filter(|(_, p)| !**p).map(|(k, _)| (ev.ts(k), 1.0)).collect();
    if points.is_empty() {
        return Ok(Value::Vector(Vec::new()));
    }
    Ok(Value::Vector(vec![Series { labels: absent_labels(arg.selector), points }]))
}

fn label_replace(ev: &Evaluator, args: &[&Expr]) -> Result<Value> {
    let series = vector_arg(ev, args[0])?;
    let (dst, repl, src, re) = (string_arg(args[1])?, string_arg(args[2])?, string_arg(args[3])?, string_arg(args[4])?);
    let regex = regex::Regex::new(&format!("^(?s:{re})$"))
        .map_err(|e| QueryError::Execution(format!("invalid regular expression in label_replace(): {re}: {e}")))?;
    if !crate::value::valid_label_name(&dst) {
        return Err(QueryError::Execution(format!("invalid destination label name in label_replace(): {dst}")));
    }
    let mut cache: FxHashMap<Labels, Labels> = FxHashMap::default();
    let out = series
        .into_iter()
        .map(|s| {
            let labels = cache
                .entry(s.labels.clone())
                .or_insert_with(|| {
                    let v = s.labels.get(&src).unwrap_or("");
                    match regex.captures(v) {
                        Some(caps) => {
                            let mut res = String::new();
                            caps.expand(&repl, &mut res);
                            with_label(&s.labels, &dst, &res)
                        }
                        None => s.labels.clone(),
                    }
                })
                .clone();
            Series { labels, points: s.points }
        })
        .collect();
    Ok(Value::Vector(merge_same_labels(out)?))
}

fn label_join(ev: &Evaluator, args: &[&Expr]) -> Result<Value> {
    let series = vector_arg(ev, args[0])?;
    let (dst, sep) = (string_arg(args[1])?, string_arg(args[2])?);
    let srcs = args[3..].iter().map(|a| string_arg(a)).collect::<Result<Vec<_>>>()?;
    if !crate::value::valid_label_name(&dst) {
        return Err(QueryError::Execution(format!("invalid destination label name in label_join(): {dst}")));
    }
    for s in &srcs {
        if !crate::value::valid_label_name(s) {
            return Err(QueryError::Execution(format!("invalid source label name in label_join(): {s}")));
        }
    }
    let out = series
        .into_iter()
        .map(|s| {
            let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
            Series { labels: with_label(&s.labels, &dst, &joined.join(&sep)), points: s.points }
        })
        .collect();
    Ok(Value::Vector(merge_same_labels(out)?))
}

/// Calendar fields of a unix time in UTC.
fn date_part(name: &str, secs: f64) -> f64 {
    let secs = secs as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = crate::time::civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match name {
        "minute" => ((sod / 60) % 60) as f64,
        "hour" => (sod / 3600) as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
            (CUM[(m - 1) as usize] + d + i64::from(leap && m > 2)) as f64
        }
        "month" => m as f64,
        "year" => y as f64,
        _ => match m {
            2 if leap => 29.0,
            2 => 28.0,
            4 | 6 | 9 | 11 => 30.0,
            _ => 31.0,
        },
    }
}
