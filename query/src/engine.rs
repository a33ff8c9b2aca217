//! The engine: parses a query, runs the evaluator over all steps at once and shapes the result.
//!
//! Evaluation follows Prometheus' range evaluation: every node produces its value for all step
//! timestamps of the query (an instant query is a range query of one step), selectors read each
//! series once for the whole query, and step-invariant subtrees (`@` modifiers, literals) are
//! evaluated once and repeated.

use crate::depth::Parsed;
use crate::error::{QueryError, Result};
use crate::value::{QueryValue, Series, Value};
use promql_parser::parser::{self, AtModifier, Expr, Offset};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use toolwatch_storage::Db;

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus' `lookback_delta`).
    pub lookback: Duration,
    /// Samples a single query may load from storage before it fails.
    pub max_samples: usize,
    /// Default and upper bound of a query's run time.
    pub timeout: Duration,
    /// Points a range query may return per series.
    pub max_points_per_series: usize,
    /// Step of a subquery that names none.
    pub default_subquery_step: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            max_points_per_series: 11_000,
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

/// Per-query controls from the caller: a timeout shorter than the engine's and a flag that
/// cancels the query when set (the HTTP layer sets it when the client goes away).
#[derive(Clone, Default)]
pub struct QueryControl {
    pub timeout: Option<Duration>,
    pub cancel: Option<Arc<AtomicBool>>,
    /// How long the query waited for an evaluation slot before it started (`execQueueTime`);
    /// zero when it did not wait or nothing bounds concurrency.
    pub queued: Duration,
}

/// What a query cost, for `stats=all`. Every field is measured.
#[derive(Clone, Debug, Default)]
pub struct QueryStats {
    /// Samples decoded from storage (`totalQueryableSamples`).
    pub samples_loaded: usize,
    /// The most samples the evaluation held at once (`peakSamples`): the points (one per
    /// scalar step) of the intermediate results alive together, that is a node's operands with
    /// its result, and a subquery's points until the function reading them is done. Raw samples
    /// that selectors and range functions decode and drop series by series, on a few threads,
    /// are not counted.
    pub peak_samples: usize,
    pub series_selected: usize,
    /// Time spent waiting for an evaluation slot (`execQueueTime`), from `QueryControl::queued`.
    pub queue_time: Duration,
    pub parse_time: Duration,
    pub eval_time: Duration,
}

pub struct Engine {
    db: Db,
    opts: EngineOptions,
}

static REGISTER_FUNCTIONS: Once = Once::new();

/// Parses PromQL, accepting Prometheus 2's `holt_winters` as well as its Prometheus 3 name.
/// Queries nested deeper than `query.max_expression_depth` are refused (see `depth.rs`).
pub fn parse(q: &str) -> Result<Parsed> {
    REGISTER_FUNCTIONS.call_once(|| {
        use parser::value::ValueType;
        let _ = parser::register_extra_functions(vec![parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
    let bound = crate::depth::check_before_parse(q)?;
    let parsed = crate::depth::with_stack_for(bound, || {
        parser::parse(q).map(Parsed::new).map_err(|e| QueryError::BadData(crate::parse_error::describe(q, &e)))
    })?;
    crate::depth::check_after_parse(&parsed)?;
    Ok(parsed)
}

impl Engine {
    pub fn new(db: Db, opts: EngineOptions) -> Engine {
        Engine { db, opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Evaluates `q` at `t` (milliseconds).
    pub fn instant(&self, q: &str, t: i64, ctl: &QueryControl) -> Result<(QueryValue, QueryStats)> {
        let began = Instant::now();
        let expr = parse(q)?;
        let parse_time = began.elapsed();
        let limits = self.limits(ctl);
        let ev = Evaluator::new(&self.db, &self.opts, &limits, t, t, 1);
        let v = ev.eval(&expr)?;
        let out = match v {
            Value::Scalar(v) => QueryValue::Scalar { t, v: v[0] },
            Value::String(s) => QueryValue::String { t, s },
            Value::Vector(series) => QueryValue::Vector(
                series.into_iter().filter_map(|s| s.points.first().map(|p| (s.labels, t, p.1))).collect(),
            ),
            Value::Matrix(series) => QueryValue::Matrix(series),
        };
        Ok((out, self.stats(&limits, parse_time, began)))
    }

    /// Evaluates `q` at every `step` from `start` to `end` (milliseconds).
    pub fn range(
        &self,
        q: &str,
        start: i64,
        end: i64,
        step: i64,
        ctl: &QueryControl,
    ) -> Result<(QueryValue, QueryStats)> {
        if step <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(QueryError::BadData("end timestamp must not be before start time".into()));
        }
        // As Prometheus: refused only when (end-start)/step exceeds the limit, so a range of
        // exactly `max_points_per_series` steps (that many points plus the one at `start`) runs.
        let steps = (end - start) / step;
        if steps as u64 > self.opts.max_points_per_series as u64 {
            return Err(QueryError::BadData(format!(
                "exceeded maximum resolution of {} points per timeseries (max_points_per_series). Try decreasing the query resolution (?step=XX)",
                self.opts.max_points_per_series
            )));
        }
        let began = Instant::now();
        let expr = parse(q)?;
        let parse_time = began.elapsed();
        match expr.value_type() {
            parser::value::ValueType::Scalar | parser::value::ValueType::Vector => {}
            other => {
                let name = if other == parser::value::ValueType::Matrix { "range vector" } else { "string" };
                return Err(QueryError::BadData(format!(
                    "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
                )));
            }
        }
        let limits = self.limits(ctl);
        let ev = Evaluator::new(&self.db, &self.opts, &limits, start, end, step);
        let out = match ev.eval(&expr)? {
            Value::Scalar(v) => QueryValue::Matrix(vec![Series {
                labels: Default::default(),
                points: v.iter().enumerate().map(|(k, v)| (ev.ts(k), *v)).collect(),
            }]),
            Value::Vector(mut series) => {
                series.retain(|s| !s.points.is_empty());
                series.sort_by(|a, b| a.labels.cmp(&b.labels));
                QueryValue::Matrix(series)
            }
            _ => return Err(QueryError::Internal("range evaluation returned a non-vector".into())),
        };
        Ok((out, self.stats(&limits, parse_time, began)))
    }

    fn limits(&self, ctl: &QueryControl) -> Limits {
        let timeout = ctl.timeout.map_or(self.opts.timeout, |t| t.min(self.opts.timeout));
        Limits {
            deadline: Instant::now() + timeout,
            cancel: ctl.cancel.clone(),
            max_samples: self.opts.max_samples,
            samples: AtomicUsize::new(0),
            series: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            queued: ctl.queued,
        }
    }

    fn stats(&self, limits: &Limits, parse_time: Duration, began: Instant) -> QueryStats {
        QueryStats {
            samples_loaded: limits.samples.load(Ordering::Relaxed),
            peak_samples: limits.peak.load(Ordering::Relaxed),
            series_selected: limits.series.load(Ordering::Relaxed),
            queue_time: limits.queued,
            parse_time,
            eval_time: began.elapsed().saturating_sub(parse_time),
        }
    }
}

/// Limits shared by every evaluator of one query (subqueries get their own evaluator).
pub(crate) struct Limits {
    deadline: Instant,
    cancel: Option<Arc<AtomicBool>>,
    max_samples: usize,
    samples: AtomicUsize,
    pub(crate) series: AtomicUsize,
    /// Samples the evaluation holds now, and the most it held at once (see `QueryStats`).
    held: AtomicUsize,
    peak: AtomicUsize,
    queued: Duration,
}

impl Limits {
    /// Fails the query when it ran out of time or was canceled; called between units of work.
    pub(crate) fn check(&self, stage: &'static str) -> Result<()> {
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(QueryError::Canceled(stage));
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout(stage));
        }
        Ok(())
    }

    /// Samples the evaluation holds now (for `node_done`).
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A node finished with a result of `out` samples: while it was made, everything its
    /// operands held was alive with it (unless the result is an operand's value, `moved`, as
    /// for parentheses); afterwards only the result remains on top of what was held before.
    pub(crate) fn node_done(&self, before: usize, out: usize, moved: bool) {
        let now = self.held.load(Ordering::Relaxed);
        let at_most = if moved { now.max(before + out) } else { now + out };
        self.peak.fetch_max(at_most, Ordering::Relaxed);
        self.held.store(before + out, Ordering::Relaxed);
    }

    pub(crate) fn add_samples(&self, n: usize) -> Result<()> {
        let total = self.samples.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.max_samples {
            return Err(QueryError::Execution(format!(
                "query processing would load too many samples into memory in query execution (max_samples = {})",
                self.max_samples
            )));
        }
        Ok(())
    }
}

/// Evaluates expressions over the steps `start, start+interval, ..., end` (milliseconds).
pub(crate) struct Evaluator<'a> {
    pub db: &'a Db,
    pub opts: &'a EngineOptions,
    pub limits: &'a Limits,
    pub start: i64,
    pub end: i64,
    pub interval: i64,
    /// The outermost query's range, which `@ start()` and `@ end()` refer to.
    pub query_start: i64,
    pub query_end: i64,
}

/// Samples in a value, as `peakSamples` counts them: one per point, one per scalar step.
pub(crate) fn samples_in(v: &Value) -> usize {
    match v {
        Value::Scalar(v) => v.len(),
        Value::String(_) => 1,
        Value::Vector(series) | Value::Matrix(series) => series.iter().map(|s| s.points.len()).sum(),
    }
}

pub(crate) fn duration_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        db: &'a Db,
        opts: &'a EngineOptions,
        limits: &'a Limits,
        start: i64,
        end: i64,
        interval: i64,
    ) -> Evaluator<'a> {
        Evaluator { db, opts, limits, start, end, interval, query_start: start, query_end: end }
    }

    /// An evaluator over other steps for the same query (subqueries, step-invariant parts).
    pub(crate) fn with_steps(&self, start: i64, end: i64, interval: i64) -> Evaluator<'a> {
        Evaluator { start, end, interval, ..*self }
    }

    pub(crate) fn nsteps(&self) -> usize {
        ((self.end - self.start) / self.interval + 1) as usize
    }

    pub(crate) fn ts(&self, k: usize) -> i64 {
        self.start + k as i64 * self.interval
    }

    pub(crate) fn step_of(&self, t: i64) -> usize {
        ((t - self.start) / self.interval) as usize
    }

    /// The time an `@` modifier pins a selector to, if any.
    pub(crate) fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    pub(crate) fn eval(&self, expr: &Expr) -> Result<Value> {
        crate::depth::deep(|| {
            let before = self.limits.held();
            let v = self.eval_here(expr)?;
            self.limits.node_done(before, samples_in(&v), matches!(expr, Expr::Paren(_)));
            Ok(v)
        })
    }

    fn eval_here(&self, expr: &Expr) -> Result<Value> {
        self.limits.check("query evaluation")?;
        if self.nsteps() > 1
            && is_step_invariant(expr)
            && !matches!(expr, Expr::NumberLiteral(_) | Expr::StringLiteral(_))
        {
            return self.eval_once_and_repeat(expr);
        }
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.nsteps()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(series) => {
                    let out = series
                        .into_iter()
                        .map(|s| Series {
                            labels: crate::value::drop_name(&s.labels),
                            points: s.points.into_iter().map(|(t, v)| (t, -v)).collect(),
                        })
                        .collect();
                    Ok(Value::Vector(merge_same_labels(out)?))
                }
                _ => Err(QueryError::BadData("unary minus is only defined on scalars and instant vectors".into())),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.eval_vector_selector(vs)?)),
            Expr::MatrixSelector(ms) => {
                let series = self.matrix_selector_series(&ms.vs, duration_ms(&ms.range))?;
                Ok(Value::Matrix(self.top_level_windows(series, duration_ms(&ms.range), &ms.vs.at, &ms.vs.offset)))
            }
            Expr::Subquery(sq) => {
                let series = self.eval_subquery(sq)?;
                Ok(Value::Matrix(self.top_level_windows(series, duration_ms(&sq.range), &sq.at, &sq.offset)))
            }
            Expr::Call(call) => crate::functions::eval_call(self, call),
            Expr::Aggregate(agg) => crate::aggregate::eval_aggregate(self, agg),
            Expr::Binary(b) => crate::binary::eval_binary(self, b),
            Expr::Extension(_) => Err(QueryError::BadData("extension expressions are not supported".into())),
        }
    }

    /// Evaluates a step-invariant expression at the first step and repeats its value.
    fn eval_once_and_repeat(&self, expr: &Expr) -> Result<Value> {
        let once = self.with_steps(self.start, self.start, self.interval);
        let n = self.nsteps();
        Ok(match once.eval(expr)? {
            Value::Scalar(v) => Value::Scalar(vec![v[0]; n]),
            Value::Vector(series) => Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        let v = s.points.first()?.1;
                        Some(Series { labels: s.labels, points: (0..n).map(|k| (self.ts(k), v)).collect() })
                    })
                    .collect(),
            ),
            other => other,
        })
    }

    /// The range vector returned by a top-level matrix selector or subquery (instant queries).
    fn top_level_windows(
        &self,
        series: Vec<Series>,
        range: i64,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
    ) -> Vec<Series> {
        let reft = self.at_ms(at).unwrap_or(self.start) - offset_ms(offset);
        series
            .into_iter()
            .filter_map(|s| {
                let points: Vec<(i64, f64)> =
                    s.points.into_iter().filter(|(t, _)| *t >= reft - range && *t <= reft).collect();
                (!points.is_empty()).then_some(Series { labels: s.labels, points })
            })
            .collect()
    }

    /// The step timestamps a selector reads at: the step times, or the `@` time, minus offset.
    pub(crate) fn ref_times(&self, at: &Option<AtModifier>, offset: &Option<Offset>) -> (i64, i64) {
        let off = offset_ms(offset);
        match self.at_ms(at) {
            Some(t) => (t - off, t - off),
            None => (self.start - off, self.end - off),
        }
    }

    pub(crate) fn ref_time(&self, k: usize, at: &Option<AtModifier>, offset: &Option<Offset>) -> i64 {
        self.at_ms(at).unwrap_or_else(|| self.ts(k)) - offset_ms(offset)
    }

    /// Evaluates a subquery's inner expression over its own steps and returns its series (points
    /// at the subquery's step timestamps), ready to be windowed like a matrix selector's samples.
    pub(crate) fn eval_subquery(&self, sq: &parser::SubqueryExpr) -> Result<Vec<Series>> {
        let step = sq.step.as_ref().map_or(duration_ms(&self.opts.default_subquery_step), duration_ms);
        if step <= 0 {
            return Err(QueryError::BadData("subquery step must be positive".into()));
        }
        let range = duration_ms(&sq.range);
        let (first_ref, last_ref) = self.ref_times(&sq.at, &sq.offset);
        // Inner steps are aligned to multiples of the step (absolute time), as in Prometheus, so
        // a subquery gives the same points whatever the outer query's start.
        let lo = first_ref - range;
        let mut start = step * (lo / step);
        if start < lo {
            start += step;
        }
        if start > last_ref {
            return Ok(Vec::new());
        }
        let inner = Evaluator { start, end: last_ref, interval: step, ..*self };
        match inner.eval(&sq.expr)? {
            Value::Vector(series) => Ok(series),
            Value::Scalar(v) => Ok(vec![Series {
                labels: Default::default(),
                points: v.into_iter().enumerate().map(|(k, v)| (inner.ts(k), v)).collect(),
            }]),
            _ => Err(QueryError::BadData("subquery is only allowed on instant vectors".into())),
        }
    }
}

/// Whether an expression has the same value at every step (Prometheus' step-invariance rule):
/// selectors and subqueries pinned with `@`, literals, and anything built only from those,
/// except functions that read the step time.
pub(crate) fn is_step_invariant(expr: &Expr) -> bool {
    crate::depth::deep(|| step_invariant_here(expr))
}

fn step_invariant_here(expr: &Expr) -> bool {
    match expr {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::VectorSelector(vs) => vs.at.is_some(),
        Expr::MatrixSelector(ms) => ms.vs.at.is_some(),
        Expr::Subquery(sq) => sq.at.is_some(),
        Expr::Paren(p) => is_step_invariant(&p.expr),
        Expr::Unary(u) => is_step_invariant(&u.expr),
        Expr::Binary(b) => is_step_invariant(&b.lhs) && is_step_invariant(&b.rhs),
        Expr::Aggregate(a) => is_step_invariant(&a.expr) && a.param.as_ref().is_none_or(|p| is_step_invariant(p)),
        Expr::Call(c) => {
            const READS_STEP_TIME: &[&str] = &[
                "days_in_month",
                "day_of_month",
                "day_of_week",
                "day_of_year",
                "hour",
                "minute",
                "month",
                "year",
                "predict_linear",
                "time",
                "timestamp",
            ];
            !READS_STEP_TIME.contains(&c.func.name) && c.args.args.iter().all(|a| is_step_invariant(a))
        }
        Expr::Extension(_) => false,
    }
}

/// Maps `f` over `items` on up to one thread per core when there are enough items to pay for
/// the threads (big selections: decoding chunks and sliding windows dominate query time), in
/// order. `None` results are dropped; the first error wins.
pub(crate) fn par_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> Result<Option<U>> + Sync) -> Result<Vec<U>> {
    const MIN_PER_THREAD: usize = 256;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len() / MIN_PER_THREAD).max(1);
    let run = |chunk: &[T]| -> Result<Vec<U>> {
        let mut out = Vec::with_capacity(chunk.len());
        for it in chunk {
            if let Some(u) = f(it)? {
                out.push(u);
            }
        }
        Ok(out)
    };
    if threads == 1 {
        return run(items);
    }
    let per = items.len().div_ceil(threads);
    let parts: Vec<Result<Vec<U>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items.chunks(per).map(|c| scope.spawn(|| run(c))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(QueryError::Internal("query worker panicked".into()))))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Merges series that ended up with the same labels (after dropping `__name__`, say). Two
/// points at one step means two series collided, which Prometheus refuses.
pub(crate) fn merge_same_labels(mut series: Vec<Series>) -> Result<Vec<Series>> {
    // Usually every label set is distinct; a hash pass proves it without sorting.
    let mut seen = rustc_hash::FxHashSet::default();
    seen.reserve(series.len());
    if series.iter().all(|s| seen.insert(&s.labels)) {
        series.retain(|s| !s.points.is_empty());
        return Ok(series);
    }
    drop(seen);
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.labels == s.labels => {
                let mut merged = Vec::with_capacity(last.points.len() + s.points.len());
                let (mut i, mut j) = (0, 0);
                while i < last.points.len() || j < s.points.len() {
                    if j == s.points.len() || (i < last.points.len() && last.points[i].0 < s.points[j].0) {
                        merged.push(last.points[i]);
                        i += 1;
                    } else if i == last.points.len() || s.points[j].0 < last.points[i].0 {
                        merged.push(s.points[j]);
                        j += 1;
                    } else {
                        return Err(QueryError::Execution(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                }
                last.points = merged;
            }
            _ => out.push(s),
        }
    }
    Ok(out)
}
