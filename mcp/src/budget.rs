//! Fits a query result into the agent's budget: whole series while they fit (series, points,
//! bytes), then a one-line summary (min, max, avg, last) per remaining series, then only a count.
//! Agents pay for every byte of context, and an unbounded `{__name__=~".+"}` would drown them.

use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;
use toolwatch_query::value::{format_float, QueryValue, Series};
use toolwatch_storage::Labels;

/// Limits on what one tool result may hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub max_series: usize,
    pub max_points: usize,
    pub max_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_series: 100, max_points: 5_000, max_bytes: 64 * 1024 }
    }
}

/// A series left out of the full result, in a few numbers.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct SeriesSummary {
    pub metric: BTreeMap<String, String>,
    pub points: usize,
    /// Null when every value is NaN or infinite.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub last: Option<f64>,
}

/// A query result as a tool returns it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct QueryOutput {
    /// `vector`, `matrix`, `scalar` or `string`, as in Prometheus' API.
    pub result_type: String,
    /// Prometheus' result shape: vector items `{metric, value: [unix_seconds, "value"]}`, matrix
    /// items `{metric, values: [[unix_seconds, "value"], ...]}`, scalar/string `[unix_seconds, "value"]`.
    pub result: serde_json::Value,
    /// Series in the whole answer, before any truncation.
    pub series_total: usize,
    /// True when some series are only summarized or left out.
    pub truncated: bool,
    /// One summary per series that did not fit in `result`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub summaries: Vec<SeriesSummary>,
    /// Series neither in `result` nor in `summaries`.
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted_series: usize,
    /// How to get a smaller, more useful answer when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The evaluation time (instant) or range and step actually used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_seconds: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub fn labels_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter().map(|x| (x.name.to_string(), x.value.to_string())).collect()
}

fn ts(t: i64) -> serde_json::Value {
    serde_json::json!(t as f64 / 1000.0)
}

fn point(t: i64, v: f64) -> serde_json::Value {
    serde_json::json!([ts(t), format_float(v)])
}

fn summarize(labels: &Labels, points: &[(i64, f64)]) -> SeriesSummary {
    let finite: Vec<f64> = points.iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
    let fin = |v: f64| v.is_finite().then_some(v);
    SeriesSummary {
        metric: labels_map(labels),
        points: points.len(),
        min: finite.iter().copied().reduce(f64::min),
        max: finite.iter().copied().reduce(f64::max),
        avg: (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64).and_then(fin),
        last: points.last().and_then(|p| fin(p.1)),
    }
}

/// Shapes `v` into at most `budget`; `narrow` is the advice given when it does not fit.
pub fn fit(v: &QueryValue, budget: &Budget, narrow: &str) -> QueryOutput {
    let mut out = QueryOutput {
        result_type: v.result_type().to_string(),
        result: serde_json::Value::Null,
        series_total: 0,
        truncated: false,
        summaries: Vec::new(),
        omitted_series: 0,
        hint: None,
        time: None,
        start: None,
        end: None,
        step_seconds: None,
    };
    let series: Vec<(Labels, Vec<(i64, f64)>)> = match v {
        QueryValue::Scalar { t, v } => {
            out.result = point(*t, *v);
            return out;
        }
        QueryValue::String { t, s } => {
            out.result = serde_json::json!([ts(*t), s]);
            return out;
        }
        QueryValue::Vector(rows) => rows.iter().map(|(l, t, v)| (l.clone(), vec![(*t, *v)])).collect(),
        QueryValue::Matrix(ms) => ms.iter().map(|Series { labels, points }| (labels.clone(), points.clone())).collect(),
    };
    let is_vector = matches!(v, QueryValue::Vector(_));
    out.series_total = series.len();
    let (mut bytes, mut points) = (0usize, 0usize);
    let mut full = Vec::new();
    let mut rest = series.iter();
    for (labels, pts) in rest.by_ref() {
        let item = if is_vector {
            serde_json::json!({"metric": labels_map(labels), "value": point(pts[0].0, pts[0].1)})
        } else {
            let values: Vec<serde_json::Value> = pts.iter().map(|(t, v)| point(*t, *v)).collect();
            serde_json::json!({"metric": labels_map(labels), "values": values})
        };
        let size = item.to_string().len();
        if full.len() + 1 > budget.max_series
            || points + pts.len() > budget.max_points
            || bytes + size > budget.max_bytes
        {
            out.truncated = true;
            // This series did not fit; it is summarized with the rest.
            push_summary(&mut out, budget, &mut bytes, labels, pts);
            break;
        }
        bytes += size;
        points += pts.len();
        full.push(item);
    }
    for (labels, pts) in rest {
        push_summary(&mut out, budget, &mut bytes, labels, pts);
    }
    out.result = serde_json::Value::Array(full);
    if out.truncated {
        let shown = out.series_total - out.summaries.len() - out.omitted_series;
        out.hint = Some(format!(
            "The answer has {} series; {shown} are shown in full, {} summarized (min/max/avg/last), {} left out \
             (limits: mcp.budget.max_series={}, max_points={}, max_bytes={}). {narrow}",
            out.series_total,
            out.summaries.len(),
            out.omitted_series,
            budget.max_series,
            budget.max_points,
            budget.max_bytes
        ));
    }
    out
}

/// Summaries get up to half the byte budget again; beyond that series are only counted.
fn push_summary(out: &mut QueryOutput, budget: &Budget, bytes: &mut usize, labels: &Labels, pts: &[(i64, f64)]) {
    let s = summarize(labels, pts);
    let size = serde_json::to_string(&s).map_or(0, |j| j.len());
    if *bytes + size > budget.max_bytes + budget.max_bytes / 2 {
        out.omitted_series += 1;
    } else {
        *bytes += size;
        out.summaries.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize, pts: usize) -> QueryValue {
        QueryValue::Matrix(
            (0..n)
                .map(|i| Series {
                    labels: Labels::from_pairs(&[("__name__", "m"), ("i", &i.to_string())]),
                    points: (0..pts).map(|j| (j as i64 * 1000, j as f64)).collect(),
                })
                .collect(),
        )
    }

    #[test]
    fn small_results_pass_whole() {
        let o = fit(&series(3, 10), &Budget::default(), "");
        assert!(!o.truncated);
        assert_eq!(o.result.as_array().unwrap().len(), 3);
        assert!(o.summaries.is_empty() && o.hint.is_none());
    }

    #[test]
    fn series_beyond_the_budget_are_summarized() {
        let b = Budget { max_series: 2, max_points: 1000, max_bytes: 1 << 20 };
        let o = fit(&series(5, 10), &b, "add matchers");
        assert!(o.truncated);
        assert_eq!(o.result.as_array().unwrap().len(), 2);
        assert_eq!(o.summaries.len(), 3);
        let s = &o.summaries[0];
        assert_eq!((s.points, s.min, s.max, s.avg, s.last), (10, Some(0.0), Some(9.0), Some(4.5), Some(9.0)));
        assert_eq!(s.metric["i"], "2");
        let hint = o.hint.unwrap();
        assert!(hint.contains("max_series=2") && hint.contains("add matchers"), "{hint}");
    }

    #[test]
    fn points_and_bytes_bound_the_result() {
        let b = Budget { max_series: 100, max_points: 25, max_bytes: 1 << 20 };
        let o = fit(&series(5, 10), &b, "");
        assert_eq!(o.result.as_array().unwrap().len(), 2);
        let b = Budget { max_series: 100, max_points: 100_000, max_bytes: 2_000 };
        let o = fit(&series(1000, 10), &b, "");
        assert!(o.truncated && o.omitted_series > 0);
        let total = serde_json::to_string(&o).unwrap().len();
        assert!(total < 2 * 2_000 + 1_000, "{total}");
        assert_eq!(o.result.as_array().unwrap().len() + o.summaries.len() + o.omitted_series, 1000);
    }
}
