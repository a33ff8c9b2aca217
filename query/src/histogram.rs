//! `histogram_quantile` over classic histograms: bucket series told apart by their `le` label.

use crate::engine::Evaluator;
use crate::error::Result;
use crate::value::{drop_name, remove_labels, Series, Value};
use rustc_hash::FxHashMap;
use toolwatch_storage::Labels;

pub(crate) fn histogram_quantile(ev: &Evaluator, q: &[f64], series: Vec<Series>) -> Result<Value> {
    let n = ev.nsteps();
    // Group bucket series by their labels without `le` (and without the metric name).
    let mut groups: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut group_labels: Vec<Labels> = Vec::new();
    let mut buckets: Vec<Vec<(f64, usize)>> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let Some(upper) = s.labels.get("le").and_then(parse_bound) else { continue };
        let key = remove_labels(&drop_name(&s.labels), &["le".to_string()]);
        let g = *groups.entry(key.clone()).or_insert_with(|| {
            group_labels.push(key);
            buckets.push(Vec::new());
            group_labels.len() - 1
        });
        buckets[g].push((upper, i));
    }
    let mut cursors = vec![0usize; series.len()];
    let mut out: Vec<Series> = group_labels.into_iter().map(|labels| Series { labels, points: Vec::new() }).collect();
    let mut bs: Vec<(f64, f64)> = Vec::new();
    for k in 0..n {
        ev.limits.check("histogram_quantile")?;
        let t = ev.ts(k);
        for (g, members) in buckets.iter().enumerate() {
            bs.clear();
            for &(upper, i) in members {
                let pts = &series[i].points;
                while cursors[i] < pts.len() && pts[cursors[i]].0 < t {
                    cursors[i] += 1;
                }
                if let Some(&(pt, v)) = pts.get(cursors[i]) {
                    if pt == t {
                        bs.push((upper, v));
                    }
                }
            }
            if !bs.is_empty() {
                out[g].points.push((t, bucket_quantile(q[k], &mut bs)));
            }
        }
    }
    out.retain(|s| !s.points.is_empty());
    Ok(Value::Vector(out))
}

fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The quantile from cumulative bucket counts `(upper bound, count)`, interpolating linearly
/// inside the bucket, as Prometheus' classic `histogram_quantile`.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound (from differently spelled `le` values) add up.
    buckets.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let last = buckets.len() - 1;
    let b = buckets[..last].partition_point(|x| x.1 < rank);
    if b == last {
        return buckets[last - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Counts must not decrease with the bound; float noise or scrape skew can make them, so
/// differences below 1e-12 (relative) are evened out and real decreases are flattened.
fn ensure_monotonic(buckets: &mut [(f64, f64)]) {
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) || curr < prev {
            b.1 = prev;
            continue;
        }
        prev = curr;
    }
}

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || (a.abs() + b.abs()) < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / (a.abs() + b.abs()).min(f64::MAX) < epsilon
}
