//! Functions over range vectors. Each series' samples are loaded once; the window
//! `[t - range, t]` slides forward with the steps and each function reduces one window.

use crate::engine::{merge_same_labels, Evaluator};
use crate::error::{QueryError, Result};
use crate::functions::{absent_over_time, kahan_inc, quantile};
use crate::value::{drop_name, Series, Value};
use promql_parser::parser::Expr;

/// What a window function sees besides the samples.
struct Window<'a> {
    points: &'a [(i64, f64)],
    /// The window's right edge (step time or `@` time, minus offset).
    reft: i64,
    /// The step's own time (predict_linear extrapolates from it).
    step_t: i64,
    range: i64,
    /// Scalar parameters at this step.
    params: [f64; 2],
    /// Whether the window holds a counter reset (only known for rate and increase; `true`
    /// when unknown).
    has_reset: bool,
}

pub(crate) fn eval_range_function(ev: &Evaluator, name: &str, args: &[&Expr]) -> Result<Value> {
    let matrix_idx = usize::from(name == "quantile_over_time");
    let arg = ev.range_arg(args[matrix_idx])?;
    if name == "absent_over_time" {
        return absent_over_time(ev, &arg);
    }
    let scalar = |i: usize| -> Result<Vec<f64>> {
        match ev.eval(args[i])? {
            Value::Scalar(v) => Ok(v),
            _ => Err(QueryError::BadData("expected a scalar argument".into())),
        }
    };
    let n = ev.nsteps();
    let (p0, p1) = match name {
        "quantile_over_time" => (scalar(0)?, vec![0.0; n]),
        "predict_linear" => (scalar(1)?, vec![0.0; n]),
        "holt_winters" | "double_exponential_smoothing" => (scalar(1)?, scalar(2)?),
        _ => (vec![0.0; n], vec![0.0; n]),
    };
    let keep_name = name == "last_over_time";
    let f =
        RangeFn::from_name(name).ok_or_else(|| QueryError::BadData(format!("function {name:?} is not supported")))?;
    let out = arg.map(ev, |labels, samples| {
        ev.limits.check("range function")?;
        let mut points = Vec::new();
        let mut err = None;
        // Counters rarely reset: count resets once per series so most windows skip the scan.
        let resets_before: Vec<u32> = if matches!(f, RangeFn::Rate | RangeFn::Increase) {
            let mut acc = 0u32;
            std::iter::once(0)
                .chain(samples.windows(2).map(|p| {
                    acc += u32::from(p[1].1 < p[0].1);
                    acc
                }))
                .collect()
        } else {
            Vec::new()
        };
        ev.for_each_window(samples, arg.range, arg.at, arg.offset, |k, reft, w, lo| {
            // Long windows make single series slow: look at the clock every few hundred steps.
            if k % 256 == 255 {
                if let Err(e) = ev.limits.check("range function") {
                    err = Some(e);
                    return false;
                }
            }
            let has_reset = resets_before.is_empty() || resets_before[lo + w.len() - 1] != resets_before[lo];
            let win = Window { points: w, reft, step_t: ev.ts(k), range: arg.range, params: [p0[k], p1[k]], has_reset };
            match apply(f, &win) {
                Ok(Some(v)) => points.push((ev.ts(k), v)),
                Ok(None) => {}
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            }
            true
        });
        if let Some(e) = err {
            return Err(e);
        }
        Ok((!points.is_empty())
            .then(|| Series { labels: if keep_name { labels.clone() } else { drop_name(labels) }, points }))
    })?;
    Ok(Value::Vector(merge_same_labels(out)?))
}

/// A range function, resolved from its name once per query rather than per window.
#[derive(Clone, Copy)]
enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Changes,
    Resets,
    Deriv,
    PredictLinear,
    HoltWinters,
    DoubleExponentialSmoothing,
    PresentOverTime,
    CountOverTime,
    LastOverTime,
    SumOverTime,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    QuantileOverTime,
    StddevOverTime,
    StdvarOverTime,
    MadOverTime,
}

impl RangeFn {
    fn from_name(name: &str) -> Option<RangeFn> {
        Some(match name {
            "rate" => RangeFn::Rate,
            "increase" => RangeFn::Increase,
            "delta" => RangeFn::Delta,
            "irate" => RangeFn::Irate,
            "idelta" => RangeFn::Idelta,
            "changes" => RangeFn::Changes,
            "resets" => RangeFn::Resets,
            "deriv" => RangeFn::Deriv,
            "predict_linear" => RangeFn::PredictLinear,
            "holt_winters" => RangeFn::HoltWinters,
            "double_exponential_smoothing" => RangeFn::DoubleExponentialSmoothing,
            "present_over_time" => RangeFn::PresentOverTime,
            "count_over_time" => RangeFn::CountOverTime,
            "last_over_time" => RangeFn::LastOverTime,
            "sum_over_time" => RangeFn::SumOverTime,
            "avg_over_time" => RangeFn::AvgOverTime,
            "min_over_time" => RangeFn::MinOverTime,
            "max_over_time" => RangeFn::MaxOverTime,
            "quantile_over_time" => RangeFn::QuantileOverTime,
            "stddev_over_time" => RangeFn::StddevOverTime,
            "stdvar_over_time" => RangeFn::StdvarOverTime,
            "mad_over_time" => RangeFn::MadOverTime,
            _ => return None,
        })
    }
}

fn apply(f: RangeFn, w: &Window) -> Result<Option<f64>> {
    let pts = w.points;
    let values = || pts.iter().map(|p| p.1);
    Ok(match f {
        RangeFn::Rate => extrapolated_rate(w, true, true),
        RangeFn::Increase => extrapolated_rate(w, true, false),
        RangeFn::Delta => extrapolated_rate(w, false, false),
        RangeFn::Irate => instant_value(pts, true),
        RangeFn::Idelta => instant_value(pts, false),
        RangeFn::Changes => {
            Some(pts.windows(2).filter(|p| !(p[1].1 == p[0].1 || (p[1].1.is_nan() && p[0].1.is_nan()))).count() as f64)
        }
        RangeFn::Resets => Some(pts.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64),
        RangeFn::Deriv => (pts.len() >= 2).then(|| linear_regression(pts, pts[0].0).0),
        RangeFn::PredictLinear => (pts.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(pts, w.step_t);
            slope * w.params[0] + intercept
        }),
        RangeFn::HoltWinters | RangeFn::DoubleExponentialSmoothing => {
            return holt_winters(pts, w.params[0], w.params[1])
        }
        RangeFn::PresentOverTime => Some(1.0),
        RangeFn::CountOverTime => Some(pts.len() as f64),
        RangeFn::LastOverTime => Some(pts[pts.len() - 1].1),
        RangeFn::SumOverTime => {
            let (mut sum, mut c) = (0.0, 0.0);
            for v in values() {
                (sum, c) = kahan_inc(v, sum, c);
            }
            Some(if sum.is_infinite() { sum } else { sum + c })
        }
        RangeFn::AvgOverTime => Some(avg(values())),
        RangeFn::MinOverTime => Some(values().fold(pts[0].1, |m, v| if v < m || m.is_nan() { v } else { m })),
        RangeFn::MaxOverTime => Some(values().fold(pts[0].1, |m, v| if v > m || m.is_nan() { v } else { m })),
        RangeFn::QuantileOverTime => Some(quantile(w.params[0], &mut values().collect::<Vec<_>>())),
        RangeFn::StddevOverTime => Some(variance(values()).sqrt()),
        RangeFn::StdvarOverTime => Some(variance(values())),
        RangeFn::MadOverTime => {
            let mut vs: Vec<f64> = values().collect();
            let median = quantile(0.5, &mut vs);
            let mut dev: Vec<f64> = vs.iter().map(|v| (v - median).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }
    })
}

/// rate, increase and delta: the change over the window, counter resets compensated, and
/// extrapolated towards the window's edges the way Prometheus 2 does.
fn extrapolated_rate(w: &Window, is_counter: bool, is_rate: bool) -> Option<f64> {
    let pts = w.points;
    if pts.len() < 2 {
        return None;
    }
    let (range_start, range_end) = (w.reft - w.range, w.reft);
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    let mut result = last.1 - first.1;
    if is_counter && w.has_reset {
        for p in pts.windows(2) {
            if p[1].1 < p[0].1 {
                result += p[0].1;
            }
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg_between = sampled / (pts.len() - 1) as f64;
    // A counter cannot go below zero: do not extrapolate past the point where it would.
    if is_counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { avg_between / 2.0 };
    interval += if to_end < threshold { to_end } else { avg_between / 2.0 };
    let mut factor = interval / sampled;
    if is_rate {
        factor /= w.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// irate and idelta: from the last two samples.
fn instant_value(pts: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let (prev, last) = (pts[pts.len() - 2], pts[pts.len() - 1]);
    let mut v = if is_rate && last.1 < prev.1 { last.1 } else { last.1 - prev.1 };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares slope and the intercept at `intercept_time`, with compensated sums.
fn linear_regression(pts: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = pts[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in pts.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn holt_winters(pts: &[(i64, f64)], sf: f64, tf: f64) -> Result<Option<f64>> {
    if !(sf > 0.0 && sf < 1.0) {
        return Err(QueryError::Execution(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}")));
    }
    if !(tf > 0.0 && tf < 1.0) {
        return Err(QueryError::Execution(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf}")));
    }
    if pts.len() < 2 {
        return Ok(None);
    }
    let (mut s0, mut s1) = (0.0, pts[0].1);
    let mut b = pts[1].1 - pts[0].1;
    for (i, p) in pts.iter().enumerate().skip(1) {
        let x = sf * p.1;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Ok(Some(s1))
}

/// The mean, summed with compensation and switching to an incremental mean if the sum would
/// overflow (as Prometheus' avg_over_time).
fn avg(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c, mut count) = (0.0, 0.0, 0.0);
    let mut incremental = false;
    let mut mean = 0.0;
    for v in values {
        count += 1.0;
        if count == 1.0 {
            sum = v;
            continue;
        }
        if !incremental {
            let (s, nc) = kahan_inc(v, sum, c);
            if !s.is_infinite() {
                sum = s;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        let current = mean + c;
        (mean, c) = kahan_inc(v / count - current / count, mean, c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

/// Population variance with Welford's method and compensated sums.
fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}
