//! Long and deep queries of every kind answer, or fail naming `query.max_expression_depth`;
//! none may overflow a stack. Everything runs on threads with tokio's 2 MiB worker stack, where
//! a few thousand levels used to abort the process.
//!
//! `TOOLWATCH_PROPTEST_CASES` raises the number of random cases (CI runs a bounded few).

use proptest::prelude::*;
use std::sync::OnceLock;
use toolwatch_query::{depth, Engine, EngineOptions, QueryControl, QueryError, QueryValue};
use toolwatch_storage::{Db, DbOptions, LabelRef};

const T: i64 = 10 * 60 * 1000;

/// A small store: `up{job="a"} = 1` and `up{job="b"} = 2` every 15 s for 10 minutes.
fn engine() -> &'static Engine {
    static E: OnceLock<(tempfile::TempDir, Engine)> = OnceLock::new();
    &E.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let mut app = db.appender().unwrap();
        for t in (0..=T).step_by(15_000) {
            for (job, v) in [("a", 1.0), ("b", 2.0)] {
                let l = [LabelRef { name: "__name__", value: "up" }, LabelRef { name: "job", value: job }];
                app.append(&l, t, v).unwrap();
            }
        }
        app.commit().unwrap();
        (dir, Engine::new(db, EngineOptions::default()))
    })
    .1
}

/// Runs `f` on a thread with a tokio worker's stack.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().expect("no panic")
}

fn instant(q: String) -> Result<QueryValue, QueryError> {
    on_small_stack(move || engine().instant(&q, T, &QueryControl::default()).map(|(v, _)| v))
}

fn vector_values(v: &QueryValue) -> Vec<f64> {
    match v {
        QueryValue::Vector(s) => {
            let mut out: Vec<f64> = s.iter().map(|x| x.2).collect();
            out.sort_by(f64::total_cmp);
            out
        }
        QueryValue::Scalar { v, .. } => vec![*v],
        other => panic!("unexpected {other:?}"),
    }
}

fn wrap(n: usize, open: &str, inner: &str, close: &str) -> String {
    let mut s = String::with_capacity(n * (open.len() + close.len()) + inner.len());
    for _ in 0..n {
        s.push_str(open);
    }
    s.push_str(inner);
    for _ in 0..n {
        s.push_str(close);
    }
    s
}

#[test]
fn ten_thousand_levels_of_every_kind_answer() {
    let n = 10_000;
    let chain = |op: &str| vec!["up"; n].join(op);
    let cases: Vec<(&str, String, Vec<f64>)> = vec![
        ("sum chain", chain(" + "), vec![10_000.0, 20_000.0]),
        ("or chain", chain(" or "), vec![1.0, 2.0]),
        ("and chain", chain(" and "), vec![1.0, 2.0]),
        ("scalar chain", vec!["1"; n].join(" + "), vec![10_000.0]),
        ("parentheses", wrap(n, "(", "up", ")"), vec![1.0, 2.0]),
        ("unary minus", wrap(n, "-(", "up", ")"), vec![1.0, 2.0]),
        ("function calls", wrap(n, "abs(", "up", ")"), vec![1.0, 2.0]),
        ("aggregations", wrap(n, "max by (job) (", "up", ")"), vec![1.0, 2.0]),
        ("right-nested sums", wrap(n, "up + (", "up", ")"), vec![10_001.0, 20_002.0]),
    ];
    for (what, q, want) in cases {
        let got = instant(q).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(vector_values(&got), want, "{what}");
    }
}

#[test]
fn deeply_nested_subqueries_answer() {
    // Each level's inner evaluation spans one more minute, so the work grows with the square
    // of the depth; 2,000 levels keep the test short while being far past the old crash.
    let q = wrap(2_000, "max_over_time(", "up", "[1m:1m])");
    assert_eq!(vector_values(&instant(q).unwrap()), vec![1.0, 2.0]);
}

#[test]
fn past_the_limit_a_bad_data_error_names_it() {
    let limit = depth::max_expression_depth();
    for q in [vec!["up"; limit + 10].join(" + "), wrap(limit + 10, "abs(", "up", ")"), vec!["1"; limit * 5].join("+")] {
        match instant(q) {
            Err(QueryError::BadData(m)) => assert!(m.contains("query.max_expression_depth"), "{m}"),
            other => panic!("expected bad_data, got {other:?}"),
        }
    }
}

#[test]
fn printing_and_dropping_deep_trees_stays_on_a_small_stack() {
    let limit = depth::DEFAULT_MAX_FORMAT_DEPTH;
    let q = wrap(limit - 1, "abs(", "up", ")");
    let printed = on_small_stack(move || toolwatch_query::parse(&q).unwrap().prettify().unwrap());
    assert!(printed.starts_with("abs(") && printed.contains("up"));
    // Deeper trees would take minutes to format: refused naming the limit, and the 20,000-level
    // tree is still parsed and dropped on the small stack.
    let q = wrap(20_000, "abs(", "up", ")");
    let err = on_small_stack(move || toolwatch_query::parse(&q).unwrap().prettify().unwrap_err());
    assert!(matches!(&err, QueryError::BadData(m) if m.contains("query.max_format_depth = 500")), "{err:?}");
}

/// One level of nesting, wrapped around an instant-vector expression.
#[derive(Debug, Clone, Copy)]
enum Level {
    Binary(&'static str),
    Paren,
    Unary,
    Call,
    Aggregate,
    Subquery,
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        prop::sample::select(vec![" + ", " - ", " * ", " / ", " or ", " and ", " unless ", " > bool ", " ^ ", " atan2 "])
            .prop_map(Level::Binary),
        Just(Level::Paren),
        Just(Level::Unary),
        Just(Level::Call),
        Just(Level::Aggregate),
        Just(Level::Subquery),
    ]
}

/// Builds the query from the inside out; `depth` counts syntax-tree levels as the engine does.
fn build(levels: &[Level]) -> String {
    let mut q = "up".to_string();
    for l in levels {
        q = match l {
            Level::Binary(op) => format!("{q}{op}up"),
            Level::Paren => format!("({q})"),
            Level::Unary => format!("-({q})"),
            Level::Call => format!("abs({q})"),
            Level::Aggregate => format!("sum by (job) ({q})"),
            // Subqueries multiply work with depth; keep them rare in long spines (below).
            Level::Subquery => format!("last_over_time(({q})[1m:1m])"),
        };
    }
    q
}

fn cases() -> u32 {
    std::env::var("TOOLWATCH_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Random spines of mixed levels, some past the limit: an answer, or bad_data naming it.
    #[test]
    fn mixed_deep_queries_answer_or_name_the_limit(
        mut levels in prop::collection::vec(level(), 0..12_000),
        over in any::<bool>(),
    ) {
        let mut subqueries = 0;
        levels.retain(|l| !matches!(l, Level::Subquery) || { subqueries += 1; subqueries <= 50 });
        let limit = depth::max_expression_depth();
        if over {
            levels.extend(std::iter::repeat_n(Level::Call, limit + 1));
        }
        let q = build(&levels);
        match instant(q) {
            Ok(_) => prop_assert!(!over, "a query past the limit answered"),
            Err(QueryError::BadData(m)) if m.contains("query.max_expression_depth") => {
                prop_assert!(over, "refused below the limit: {m}")
            }
            Err(e) => prop_assert!(false, "neither an answer nor the limit: {e}"),
        }
    }
}
