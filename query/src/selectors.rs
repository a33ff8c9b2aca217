//! Selectors: reading series from storage once per query and turning them into per-step
//! values (instant selectors, with lookback and staleness) or per-step windows (range selectors).

use crate::engine::{duration_ms, Evaluator};
use crate::error::{QueryError, Result};
use crate::value::Series;
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Offset, VectorSelector};
use toolwatch_storage::{MatchOp, Matcher, METRIC_NAME};

/// Prometheus' staleness marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Storage matchers for a selector; `or`-separated matcher sets become several lists.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        for m in ms {
            let op = match m.op {
                PMatchOp::Equal => MatchOp::Equal,
                PMatchOp::NotEqual => MatchOp::NotEqual,
                PMatchOp::Re(_) => MatchOp::Regex,
                PMatchOp::NotRe(_) => MatchOp::NotRegex,
            };
            out.push(Matcher::new(op, &m.name, &m.value)?);
        }
        if let Some(name) = &vs.name {
            if !out.iter().any(|m| m.name == METRIC_NAME) {
                out.push(Matcher::eq(METRIC_NAME, name));
            }
        }
        Ok(out)
    };
    let mut sets = Vec::new();
    if !vs.matchers.matchers.is_empty() || vs.matchers.or_matchers.is_empty() {
        sets.push(convert(&vs.matchers.matchers)?);
    }
    for or in &vs.matchers.or_matchers {
        sets.push(convert(or)?);
    }
    Ok(sets)
}

impl Evaluator<'_> {
    /// Every sample of every matching series in `[mint, maxt]`, stale markers included.
    pub(crate) fn select(&self, vs: &VectorSelector, mint: i64, maxt: i64) -> Result<Vec<Series>> {
        let querier = self.db.querier(mint, maxt);
        let mut out: Vec<Series> = Vec::new();
        for matchers in selector_matchers(vs)? {
            for s in querier.select(&matchers)? {
                self.limits.check("series selection")?;
                let points: Vec<(i64, f64)> = s.iter().collect();
                self.limits.add_samples(points.len())?;
                self.limits.series.set(self.limits.series.get() + 1);
                out.push(Series { labels: s.labels, points });
            }
        }
        if !vs.matchers.or_matchers.is_empty() {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.dedup_by(|a, b| a.labels == b.labels);
        }
        Ok(out)
    }

    /// An instant selector: per step, the newest sample within the lookback window, unless it is
    /// a staleness marker. Points carry step timestamps; `sample_times` gives the samples' own
    /// timestamps as values instead (for `timestamp()`).
    pub(crate) fn eval_vector_selector_with(&self, vs: &VectorSelector, sample_times: bool) -> Result<Vec<Series>> {
        let lookback = duration_ms(&self.opts.lookback);
        let (first, last) = self.ref_times(&vs.at, &vs.offset);
        let raw = self.select(vs, first - lookback, last)?;
        let n = self.nsteps();
        let mut out = Vec::with_capacity(raw.len());
        for s in raw {
            let mut points = Vec::with_capacity(n.min(s.points.len() * 2));
            // The reference time only grows with the step, so one cursor walks the samples once.
            let mut i = 0;
            for k in 0..n {
                let reft = self.ref_time(k, &vs.at, &vs.offset);
                while i < s.points.len() && s.points[i].0 <= reft {
                    i += 1;
                }
                if i == 0 {
                    continue;
                }
                let (t, v) = s.points[i - 1];
                if t < reft - lookback || is_stale(v) {
                    continue;
                }
                points.push((self.ts(k), if sample_times { t as f64 / 1000.0 } else { v }));
            }
            if !points.is_empty() {
                out.push(Series { labels: s.labels, points });
            }
        }
        Ok(out)
    }

    pub(crate) fn eval_vector_selector(&self, vs: &VectorSelector) -> Result<Vec<Series>> {
        self.eval_vector_selector_with(vs, false)
    }

    /// The samples a range selector can see over all steps, staleness markers dropped.
    pub(crate) fn matrix_selector_series(&self, vs: &VectorSelector, range: i64) -> Result<Vec<Series>> {
        let (first, last) = self.ref_times(&vs.at, &vs.offset);
        let mut raw = self.select(vs, first - range, last)?;
        for s in &mut raw {
            s.points.retain(|(_, v)| !is_stale(*v));
        }
        raw.retain(|s| !s.points.is_empty());
        Ok(raw)
    }

    /// Calls `f(step, window)` for each step whose window `[ref - range, ref]` holds samples,
    /// until `f` returns false. Windows slide forward with the step, so each series' samples
    /// are walked once.
    pub(crate) fn for_each_window(
        &self,
        points: &[(i64, f64)],
        range: i64,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        mut f: impl FnMut(usize, i64, &[(i64, f64)]) -> bool,
    ) {
        let (mut lo, mut hi) = (0usize, 0usize);
        for k in 0..self.nsteps() {
            let reft = self.ref_time(k, at, offset);
            while hi < points.len() && points[hi].0 <= reft {
                hi += 1;
            }
            while lo < hi && points[lo].0 < reft - range {
                lo += 1;
            }
            if lo < hi && !f(k, reft, &points[lo..hi]) {
                return;
            }
        }
    }
}

/// The range-vector argument of a function: a selector's samples or a subquery's points, with
/// the window parameters that apply to them.
pub(crate) struct RangeArg<'e> {
    pub series: Vec<Series>,
    pub range: i64,
    pub at: &'e Option<AtModifier>,
    pub offset: &'e Option<Offset>,
    /// The selector, when the argument is one (absent_over_time reads its matchers).
    pub selector: Option<&'e VectorSelector>,
}

impl Evaluator<'_> {
    /// Evaluates a function's range-vector argument (a matrix selector or a subquery, maybe in
    /// parentheses).
    pub(crate) fn range_arg<'e>(&self, expr: &'e promql_parser::parser::Expr) -> Result<RangeArg<'e>> {
        use promql_parser::parser::Expr;
        match expr {
            Expr::Paren(p) => self.range_arg(&p.expr),
            Expr::MatrixSelector(ms) => {
                let range = duration_ms(&ms.range);
                Ok(RangeArg {
                    series: self.matrix_selector_series(&ms.vs, range)?,
                    range,
                    at: &ms.vs.at,
                    offset: &ms.vs.offset,
                    selector: Some(&ms.vs),
                })
            }
            Expr::Subquery(sq) => Ok(RangeArg {
                series: self.eval_subquery(sq)?,
                range: duration_ms(&sq.range),
                at: &sq.at,
                offset: &sq.offset,
                selector: None,
            }),
            _ => Err(QueryError::BadData("expected a range vector".into())),
        }
    }
}
