//! Values the engine passes between nodes and returns: scalars, strings, and series of points.
//!
//! Inside an evaluation every instant vector is kept as series × steps (`Vec<Series>`, each
//! series holding at most one point per step), so a range query evaluates each node once for
//! all steps instead of once per step.

use std::sync::Arc;
use toolwatch_storage::{Label, Labels, METRIC_NAME};

/// A series with its points in time order (step timestamps for instant vectors, sample
/// timestamps for range vectors).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// A node's value over all steps of the evaluation.
#[derive(Clone, Debug)]
pub enum Value {
    /// One value per step.
    Scalar(Vec<f64>),
    String(String),
    /// An instant vector: at most one point per step per series.
    Vector(Vec<Series>),
    /// A range vector (only ever returned from an instant query): the samples in the window.
    Matrix(Vec<Series>),
}

/// What a query returns, in the shapes of Prometheus' API.
#[derive(Clone, Debug)]
pub enum QueryValue {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        s: String,
    },
    /// Instant-query vector: one point per series, in the engine's output order.
    Vector(Vec<(Labels, i64, f64)>),
    Matrix(Vec<Series>),
}

impl QueryValue {
    pub fn result_type(&self) -> &'static str {
        match self {
            QueryValue::Scalar { .. } => "scalar",
            QueryValue::String { .. } => "string",
            QueryValue::Vector(_) => "vector",
            QueryValue::Matrix(_) => "matrix",
        }
    }
}

/// Whether `s` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a valid metric name (label-name characters plus `:`).
pub fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Labels without `__name__`.
pub fn drop_name(l: &Labels) -> Labels {
    if l.get(METRIC_NAME).is_none() {
        return l.clone();
    }
    Labels::from_vec_sorted(l.iter().filter(|x| &*x.name != METRIC_NAME).cloned().collect())
}

/// Labels with `name` set to `value` (removed when `value` is empty, as Prometheus treats an
/// empty value as an absent label).
pub fn with_label(l: &Labels, name: &str, value: &str) -> Labels {
    let mut v: Vec<Label> = l.iter().filter(|x| &*x.name != name).cloned().collect();
    if !value.is_empty() {
        v.push(Label { name: Arc::from(name), value: Arc::from(value) });
        v.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Labels::from_vec_sorted(v)
}

/// Only the labels named in `keep`.
pub fn keep_labels(l: &Labels, keep: &[String]) -> Labels {
    Labels::from_vec_sorted(l.iter().filter(|x| keep.iter().any(|k| **k == *x.name)).cloned().collect())
}

/// All labels except those named in `drop`.
pub fn remove_labels(l: &Labels, drop: &[String]) -> Labels {
    Labels::from_vec_sorted(l.iter().filter(|x| !drop.iter().any(|k| **k == *x.name)).cloned().collect())
}

/// Prometheus' text form of a label set, used in error messages: `{a="1", b="2"}`.
pub fn labels_string(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|x| format!("{}={:?}", x.name, &*x.value)).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Formats a float the way Prometheus' API does (Go's `strconv.FormatFloat(f, 'f', -1, 64)`
/// for finite values, `+Inf`, `-Inf`, `NaN`).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // The API uses Go's 'f' format with shortest digits, which is what Rust's Display gives.
        format!("{v}")
    }
}
