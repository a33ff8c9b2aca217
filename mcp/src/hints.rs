//! Advice an agent can act on when a query goes wrong: where the PromQL error is, which metric
//! or function name it probably meant, and how to narrow a query that hit a limit.

use promql_parser::parser::Expr;
use toolwatch_query::QueryError;

/// Levenshtein distance; the names compared are short, so the quadratic table is fine.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Up to `n` of `candidates` closest to `name`: containing it (or contained in it) first, then
/// by edit distance, leaving out the hopeless ones.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>, n: usize) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, bool, &str)> = candidates
        .into_iter()
        .filter(|c| *c != name)
        .filter_map(|c| {
            let cl = c.to_ascii_lowercase();
            let contains = cl.contains(&lower) || lower.contains(&cl);
            let d = edit_distance(&lower, &cl);
            (contains || d <= (name.len() / 3).max(3)).then_some((if contains { d.min(3) } else { d }, !contains, c))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, _, c)| c.to_string()).collect()
}

/// The metric names a query selects by name.
pub fn metric_names(e: &Expr, out: &mut Vec<String>) {
    // Trees can be thousands of levels deep (query.max_expression_depth).
    toolwatch_query::depth::deep(|| metric_names_here(e, out))
}

fn metric_names_here(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::VectorSelector(vs) => out.extend(vs.name.clone()),
        Expr::MatrixSelector(ms) => out.extend(ms.vs.name.clone()),
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| metric_names(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "stdvar",
    "count_values",
    "group",
    "limitk",
];

/// A hint for a PromQL the parser rejected: a likely function name when it names an unknown
/// one, and the general shape otherwise.
pub fn parse_hint(msg: &str) -> String {
    let unknown = msg
        .split(['\'', '"'])
        .nth(1)
        .filter(|_| msg.contains("unknown function"))
        .map(|f| closest(f, FUNCTIONS.iter().copied(), 3));
    match unknown {
        Some(c) if !c.is_empty() => format!("Did you mean {}?", c.join(", ")),
        _ => "Check brackets, quotes and commas; a counter is read with rate(), e.g. \
              sum by (tool) (rate(mcp_tool_calls_total[5m]))."
            .to_string(),
    }
}

/// The text an agent sees when its query failed: what went wrong and what to try instead.
pub fn query_error(e: &QueryError, timeout_limit: &str) -> String {
    match e {
        QueryError::BadData(m) => format!("invalid PromQL or parameter: {m}\nHint: {}", parse_hint(m)),
        QueryError::Timeout(_) => format!(
            "query timed out ({timeout_limit}).\nHint: narrow it: a shorter range or larger step, more \
             specific label matchers, or aggregate early (sum by (tool) (...))."
        ),
        QueryError::Execution(m) if m.contains("max_samples") || m.contains("samples") => format!(
            "{m}\nHint: the query loads too many samples: shorten the range or the [window], raise the step, \
             or select fewer series with label matchers."
        ),
        QueryError::Execution(m) => format!(
            "{m}\nHint: when both sides have several series with the same labels, match on fewer labels \
             (on(...)/ignoring(...)) or aggregate one side first."
        ),
        QueryError::Canceled(_) => "query was canceled".to_string(),
        QueryError::Internal(m) => format!("toolwatch failed to evaluate the query: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names() {
        let names = ["mcp_tool_calls_total", "mcp_tool_latency_seconds_bucket", "up", "toolwatch_ready"];
        assert_eq!(closest("mcp_tool_call_total", names, 3), vec!["mcp_tool_calls_total"]);
        assert_eq!(closest("latency", names, 3), vec!["mcp_tool_latency_seconds_bucket"]);
        assert!(closest("zzzzzzzzzz", names, 3).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_function_hint() {
        assert!(parse_hint("unknown function with name 'rat'").starts_with("Did you mean rate"));
        let real = toolwatch_query::parse("rat(x[5m])").unwrap_err().to_string();
        assert!(parse_hint(&real).starts_with("Did you mean rate"), "{real}");
        assert!(parse_hint("unexpected end of input").contains("rate("));
    }

    #[test]
    fn names_in_a_query() {
        let e = toolwatch_query::parse("sum(rate(a[5m])) / on() group_left b + scalar(c{x=\"1\"})").unwrap();
        let mut v = Vec::new();
        metric_names(&e, &mut v);
        assert_eq!(v, vec!["a", "b", "c"]);
    }
}
