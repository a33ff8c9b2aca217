//! Selectors: reading series from storage once per query and turning them into per-step
//! values (instant selectors, with lookback and staleness) or per-step windows (range selectors).

use crate::engine::{duration_ms, Evaluator};
use crate::error::{QueryError, Result};
use crate::value::Series;
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Offset, VectorSelector};
use toolwatch_storage::{MatchOp, Matcher, Series as StoredSeries, METRIC_NAME};

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
    /// Matching series in `[mint, maxt]`, their chunks not yet decoded.
    pub(crate) fn select_raw(&self, vs: &VectorSelector, mint: i64, maxt: i64) -> Result<Vec<StoredSeries>> {
        let querier = self.db.querier(mint, maxt);
        let mut out: Vec<StoredSeries> = Vec::new();
        for matchers in selector_matchers(vs)? {
            self.limits.check("series selection")?;
            out.extend(querier.select_unsorted(&matchers)?);
        }
        // Order matters only where it shows: an instant query's output order (and the
        // tie order of sort/topk) follows the series order, as in Prometheus; a range query's
        // output is sorted at the end.
        if self.nsteps() == 1 || !vs.matchers.or_matchers.is_empty() {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.dedup_by(|a, b| a.labels == b.labels);
        }
        self.limits.series.fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Decodes one selected series, counting its samples against the query's limit.
    pub(crate) fn decode(&self, s: &StoredSeries) -> Result<Vec<(i64, f64)>> {
        let points = s.samples();
        self.limits.add_samples(points.len())?;
        Ok(points)
    }

    /// An instant selector: per step, the newest sample within the lookback window, unless it is
    /// a staleness marker. Points carry step timestamps; `sample_times` gives the samples' own
    /// timestamps as values instead (for `timestamp()`).
    pub(crate) fn eval_vector_selector_with(&self, vs: &VectorSelector, sample_times: bool) -> Result<Vec<Series>> {
        let lookback = duration_ms(&self.opts.lookback);
        let (first, last) = self.ref_times(&vs.at, &vs.offset);
        let raw = self.select_raw(vs, first - lookback, last)?;
        let n = self.nsteps();
        crate::engine::par_map(&raw, |s| {
            self.limits.check("instant selector")?;
            let samples = self.decode(s)?;
            let mut points = Vec::with_capacity(n.min(samples.len() * 2));
            // The reference time only grows with the step, so one cursor walks the samples once.
            let mut i = 0;
            for k in 0..n {
                let reft = self.ref_time(k, &vs.at, &vs.offset);
                while i < samples.len() && samples[i].0 <= reft {
                    i += 1;
                }
                if i == 0 {
                    continue;
                }
                let (t, v) = samples[i - 1];
                if t < reft - lookback || is_stale(v) {
                    continue;
                }
                points.push((self.ts(k), if sample_times { t as f64 / 1000.0 } else { v }));
            }
            Ok((!points.is_empty()).then(|| Series { labels: s.labels.clone(), points }))
        })
    }

    pub(crate) fn eval_vector_selector(&self, vs: &VectorSelector) -> Result<Vec<Series>> {
        self.eval_vector_selector_with(vs, false)
    }

    /// Decodes a range selector's series with staleness markers dropped (range vectors never
    /// show them).
    pub(crate) fn decode_for_range(&self, s: &StoredSeries) -> Result<Vec<(i64, f64)>> {
        let mut points = self.decode(s)?;
        points.retain(|(_, v)| !is_stale(*v));
        Ok(points)
    }

    /// The samples a range selector can see over all steps.
    pub(crate) fn matrix_selector_series(&self, vs: &VectorSelector, range: i64) -> Result<Vec<Series>> {
        let (first, last) = self.ref_times(&vs.at, &vs.offset);
        let raw = self.select_raw(vs, first - range, last)?;
        crate::engine::par_map(&raw, |s| {
            let points = self.decode_for_range(s)?;
            Ok((!points.is_empty()).then(|| Series { labels: s.labels.clone(), points }))
        })
    }

    /// Calls `f(step, ref, window, first)` (`first`: the window's offset in `points`) for each
    /// step whose window `[ref - range, ref]` holds samples,
    /// until `f` returns false. Windows slide forward with the step, so each series' samples
    /// are walked once.
    pub(crate) fn for_each_window(
        &self,
        points: &[(i64, f64)],
        range: i64,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        mut f: impl FnMut(usize, i64, &[(i64, f64)], usize) -> bool,
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
            if lo < hi && !f(k, reft, &points[lo..hi], lo) {
                return;
            }
        }
    }
}

/// A range argument's series: a selector's, decoded by whoever walks them (in parallel), or a
/// subquery's, already evaluated.
pub(crate) enum RangeSeries {
    Stored(Vec<StoredSeries>),
    Evaluated(Vec<Series>),
}

/// The range-vector argument of a function: a selector's samples or a subquery's points, with
/// the window parameters that apply to them.
pub(crate) struct RangeArg<'e> {
    pub series: RangeSeries,
    pub range: i64,
    pub at: &'e Option<AtModifier>,
    pub offset: &'e Option<Offset>,
    /// The selector, when the argument is one (absent_over_time reads its matchers).
    pub selector: Option<&'e VectorSelector>,
}

impl RangeArg<'_> {
    /// Maps `f(labels, samples)` over the argument's series, decoding stored ones inside the
    /// (parallel) workers.
    pub(crate) fn map<U: Send>(
        &self,
        ev: &Evaluator,
        f: impl Fn(&toolwatch_storage::Labels, &[(i64, f64)]) -> Result<Option<U>> + Sync,
    ) -> Result<Vec<U>> {
        match &self.series {
            RangeSeries::Stored(raw) => crate::engine::par_map(raw, |s| {
                let points = ev.decode_for_range(s)?;
                if points.is_empty() {
                    return Ok(None);
                }
                f(&s.labels, &points)
            }),
            RangeSeries::Evaluated(series) => crate::engine::par_map(series, |s| f(&s.labels, &s.points)),
        }
    }
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
                let (first, last) = self.ref_times(&ms.vs.at, &ms.vs.offset);
                Ok(RangeArg {
                    series: RangeSeries::Stored(self.select_raw(&ms.vs, first - range, last)?),
                    range,
                    at: &ms.vs.at,
                    offset: &ms.vs.offset,
                    selector: Some(&ms.vs),
                })
            }
            Expr::Subquery(sq) => Ok(RangeArg {
                series: RangeSeries::Evaluated(self.eval_subquery(sq)?),
                range: duration_ms(&sq.range),
                at: &sq.at,
                offset: &sq.offset,
                selector: None,
            }),
            _ => Err(QueryError::BadData("expected a range vector".into())),
        }
    }
}
