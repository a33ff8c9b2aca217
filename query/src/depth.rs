//! Deep queries without deep stacks.
//!
//! A query's syntax tree can be as deep as the query is long (`up+up+…+up` is a left-leaning
//! chain of binary nodes, `abs(abs(…))` a chain of calls). promql-parser builds, checks, prints
//! and drops that tree by recursion, and so does our evaluator, so a few thousand levels used to
//! overflow a tokio worker's 2 MiB stack and abort the whole process. Prometheus answers such
//! queries (Go stacks grow), so toolwatch does too, up to `query.max_expression_depth`:
//!
//! - before parsing, [`syntactic_bound`] reads the query's tokens for an upper bound of the
//!   tree's depth, so a query that could be deeper than the limit is refused (as `bad_data`,
//!   naming the setting) before the parser, whose type checks walk the left spine at every
//!   binary node and so take time quadratic in a chain's length, ever sees it;
//! - parsing, printing and our own recursive walks run through [`deep`], which moves onto a
//!   fresh heap-allocated stack segment whenever the current one runs low (`stacker`, the crate
//!   rustc uses for the same problem);
//! - [`Parsed`] owns a parsed tree and takes it apart iteratively when dropped, because the
//!   compiler-generated drop of nested `Box<Expr>` is recursive too.

use crate::error::{QueryError, Result};
use promql_parser::parser::{Expr, NumberLiteral};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default of `query.max_expression_depth`: well past the 10,000 levels of nesting of every
/// kind that must answer (a level of subquery nesting is two nodes: the call and the subquery).
pub const DEFAULT_MAX_EXPRESSION_DEPTH: usize = 25_000;

static MAX_EXPRESSION_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_EXPRESSION_DEPTH);

/// Sets the process-wide `query.max_expression_depth` (one setting for the query API, rules and
/// MCP tools alike, so a rule file that `rules check` accepts is one the engine will run).
pub fn set_max_expression_depth(n: usize) {
    MAX_EXPRESSION_DEPTH.store(n.max(1), Ordering::Relaxed);
}

pub fn max_expression_depth() -> usize {
    MAX_EXPRESSION_DEPTH.load(Ordering::Relaxed)
}

/// The default of `query.max_format_depth`. Prometheus' formatting (which promql-parser follows)
/// indents each level on a line of its own and measures every subtree by printing it, so its
/// output grows with the square of the depth and its time faster still: measured on 2 cores,
/// 1,000 nested `abs(` take 0.8 s and 4,000 take 98 s. 500 levels print in a few milliseconds'
/// worth of output (a quarter of a million indentation bytes) and no hand-written query nears it.
pub const DEFAULT_MAX_FORMAT_DEPTH: usize = 500;

static MAX_FORMAT_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_FORMAT_DEPTH);

/// Sets the process-wide `query.max_format_depth` (`/api/v1/format_query`).
pub fn set_max_format_depth(n: usize) {
    MAX_FORMAT_DEPTH.store(n.max(1), Ordering::Relaxed);
}

pub fn max_format_depth() -> usize {
    MAX_FORMAT_DEPTH.load(Ordering::Relaxed)
}

/// Stack left below which [`deep`] switches to a new segment, and that segment's size. A level
/// of evaluation takes a few KiB in the worst case (binary matching, aggregation); the red zone
/// covers several levels so one non-checking callee cannot run past it.
const RED_ZONE: usize = 256 * 1024;
const SEGMENT: usize = 8 * 1024 * 1024;

/// Runs `f`, on a new stack segment if this one is nearly used up. Cheap when it is not (a
/// comparison against the thread's stack limit).
#[inline]
pub fn deep<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}

/// An upper bound of the depth of the tree `q` parses to, from its tokens alone: every node on
/// a root-to-leaf path owns an operator token of its own (binary, unary), an opening `[` of its
/// own (range and subquery), or one level of parenthesis nesting (parentheses, calls,
/// aggregations). Strings and comments are skipped; words that are operators only in some
/// places (`and` as a label name) are counted anyway, which only loosens the bound.
pub fn syntactic_bound(q: &str) -> usize {
    let b = q.as_bytes();
    let (mut ops, mut brackets, mut nest, mut max_nest) = (0usize, 0usize, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                nest += 1;
                max_nest = max_nest.max(nest);
            }
            b')' => nest = nest.saturating_sub(1),
            b'[' => brackets += 1,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' => ops += 1,
            b'=' | b'!' if b.get(i + 1) == Some(&b'=') => {
                ops += 1;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] == b'_' || b[i + 1] == b':') {
                    i += 1;
                }
                let word = &q[start..=i];
                if ["and", "or", "unless", "atan2"].iter().any(|w| word.eq_ignore_ascii_case(w)) {
                    ops += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    ops + brackets + max_nest + 1
}

/// The depth of a parsed tree (nodes on its longest root-to-leaf path), walked with an
/// explicit stack.
pub fn tree_depth(e: &Expr) -> usize {
    let mut max = 0;
    let mut todo: Vec<(&Expr, usize)> = vec![(e, 1)];
    while let Some((e, d)) = todo.pop() {
        max = max.max(d);
        for c in children(e) {
            todo.push((c, d + 1));
        }
    }
    max
}

fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Aggregate(a) => std::iter::once(&*a.expr).chain(a.param.as_deref()).collect(),
        Expr::Unary(u) => vec![&u.expr],
        Expr::Binary(b) => vec![&b.lhs, &b.rhs],
        Expr::Paren(p) => vec![&p.expr],
        Expr::Subquery(s) => vec![&s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| &**a).collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => Vec::new(),
    }
}

fn leaf() -> Expr {
    Expr::NumberLiteral(NumberLiteral::new(0.0))
}

/// Takes a tree apart node by node: each node's children are moved out (a leaf left in their
/// place) before the node itself is dropped, so no drop recurses more than one level.
pub fn dismantle(e: Expr) {
    let mut todo = vec![e];
    while let Some(mut e) = todo.pop() {
        match &mut e {
            Expr::Aggregate(a) => {
                todo.push(std::mem::replace(&mut *a.expr, leaf()));
                if let Some(p) = a.param.as_mut() {
                    todo.push(std::mem::replace(&mut **p, leaf()));
                }
            }
            Expr::Unary(u) => todo.push(std::mem::replace(&mut *u.expr, leaf())),
            Expr::Binary(b) => {
                todo.push(std::mem::replace(&mut *b.lhs, leaf()));
                todo.push(std::mem::replace(&mut *b.rhs, leaf()));
            }
            Expr::Paren(p) => todo.push(std::mem::replace(&mut *p.expr, leaf())),
            Expr::Subquery(s) => todo.push(std::mem::replace(&mut *s.expr, leaf())),
            Expr::Call(c) => todo.extend(c.args.args.iter_mut().map(|a| std::mem::replace(&mut **a, leaf()))),
            _ => {}
        }
    }
}

/// A parsed query. Derefs to the tree; dropping it never recurses (see [`dismantle`]).
pub struct Parsed(Option<Expr>);

impl Parsed {
    pub(crate) fn new(e: Expr) -> Parsed {
        Parsed(Some(e))
    }

    /// Prometheus' formatting of the query (`/api/v1/format_query`), printed by promql-parser's
    /// recursive printer on a stack deep enough for it. A tree deeper than
    /// `query.max_format_depth` is refused: its formatting would take minutes (see
    /// [`DEFAULT_MAX_FORMAT_DEPTH`]).
    pub fn prettify(&self) -> Result<String> {
        let (d, limit) = (tree_depth(self.expr()), max_format_depth());
        if d > limit {
            return Err(QueryError::BadData(format!(
                "query is too deeply nested to format: it nests {d} levels, more than query.max_format_depth = {limit}"
            )));
        }
        Ok(with_stack_for(d, || self.expr().prettify()))
    }

    pub fn expr(&self) -> &Expr {
        self.0.as_ref().expect("a Parsed holds its tree until dropped")
    }
}

impl std::ops::Deref for Parsed {
    type Target = Expr;
    fn deref(&self) -> &Expr {
        self.expr()
    }
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Parsed").field(&self.0.as_ref().map(|_| "…")).finish()
    }
}

impl Drop for Parsed {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            dismantle(e);
        }
    }
}

/// Bytes of stack one level of promql-parser's recursion (checks, printing, cloning) may take;
/// measured well under this in release builds (see the `deep_queries` tests), doubled for debug.
const FOREIGN_FRAME: usize = if cfg!(debug_assertions) { 2048 } else { 512 };

/// Runs foreign recursive code over a tree of up to `depth` levels on a stack that fits it.
pub(crate) fn with_stack_for<R>(depth: usize, f: impl FnOnce() -> R) -> R {
    let need = depth.saturating_mul(FOREIGN_FRAME) + RED_ZONE;
    stacker::maybe_grow(need, need.max(SEGMENT), f)
}

/// The error for a query past the limit, in the words users will search for.
pub(crate) fn too_deep(what: &str, n: usize, limit: usize) -> QueryError {
    QueryError::BadData(format!(
        "query is too deeply nested: {what} {n} levels, more than query.max_expression_depth = {limit}"
    ))
}

/// Checks a query against the depth limit before it is parsed, and the parsed tree after.
pub(crate) fn check_before_parse(q: &str) -> Result<usize> {
    let limit = max_expression_depth();
    let bound = syntactic_bound(q);
    // The bound counts every operator, so a wide but shallow query (a sum of many terms in
    // balanced parentheses) can exceed the limit without being deep; such queries are refused
    // only past four times the limit, and the parsed tree's real depth decides below that.
    if bound > limit.saturating_mul(4) {
        return Err(too_deep("it could nest up to", bound, limit));
    }
    Ok(bound)
}

pub(crate) fn check_after_parse(e: &Expr) -> Result<()> {
    let limit = max_expression_depth();
    let d = tree_depth(e);
    if d > limit {
        return Err(too_deep("it nests", d, limit));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, n: usize) -> String {
        vec!["up"; n].join(op)
    }

    #[test]
    fn bound_is_at_least_the_depth() {
        for q in [
            "up".to_string(),
            chain("+", 50),
            chain(" or ", 50),
            format!("{}up{}", "(".repeat(40), ")".repeat(40)),
            format!("{}up{}", "abs(".repeat(40), ")".repeat(40)),
            format!("{}up{}", "sum by (and) (".repeat(40), ")".repeat(40)),
            format!("{}up{}", "max_over_time(".repeat(20), "[1m:1m])".repeat(20)),
            format!("{}up{}", "max_over_time((".repeat(20), ")[1m:1m])".repeat(20)),
            format!("{}1", "-".repeat(30)),
            r#"up{a="((((((", b='+++', c=`[[[[`} # ((((("#.to_string(),
        ] {
            let e = crate::engine::parse(&q).unwrap();
            assert!(syntactic_bound(&q) >= tree_depth(&e), "{q}: {} < {}", syntactic_bound(&q), tree_depth(&e));
        }
    }

    #[test]
    fn strings_and_comments_do_not_count() {
        assert_eq!(syntactic_bound(r#"up{a="((((((+-*/"}"#), 1);
        assert_eq!(syntactic_bound("up # ((((( and or"), 1);
    }

    #[test]
    fn dismantling_a_deep_tree_stays_on_a_small_stack() {
        let q = chain("+", 20_000);
        let e = crate::engine::parse(&q).unwrap();
        assert_eq!(tree_depth(&e), 20_000);
        // 64 KiB would not hold a recursive drop of 20,000 levels.
        std::thread::Builder::new().stack_size(64 * 1024).spawn(move || drop(e)).unwrap().join().unwrap();
    }
}
