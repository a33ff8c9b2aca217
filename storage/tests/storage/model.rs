//! Property test: random appends, cuts, compactions, restarts and queries against a naive
//! in-memory model. Cases: 16 by default (CI), more with TOOLWATCH_PROPTEST_CASES.

use proptest::prelude::*;
use std::collections::BTreeMap;
use toolwatch_storage::{AppendError, Db, DbOptions, HeadOptions, LabelRef, Matcher};

#[derive(Debug, Clone)]
enum Op {
    Append { series: u8, t: i64 },
    Batch { series: u8, start: i64, n: u8 },
    PersistDue,
    Flush,
    Restart,
    Query { series: Option<u8>, mint: i64, maxt: i64 },
}

/// Each (series, t) has exactly one value, so a duplicate can only ever be a resend.
fn value(series: u8, t: i64) -> f64 {
    match t % 11 {
        0 => f64::from_bits(0x7ff0_0000_0000_0002),
        1 => -0.0,
        2 => f64::INFINITY,
        3 => (t / 1000) as f64,
        _ => series as f64 + t as f64 / 3.0,
    }
}

const HOUR: i64 = 3_600_000;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0i64..10 * HOUR).prop_map(|(series, t)| Op::Append { series, t: t / 1000 * 1000 }),
        4 => (0u8..4, 0i64..10 * HOUR, 1u8..200).prop_map(|(series, s, n)| Op::Batch { series, start: s / 1000 * 1000, n }),
        1 => Just(Op::PersistDue),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
        2 => (proptest::option::of(0u8..4), 0i64..10 * HOUR, 0i64..10 * HOUR)
            .prop_map(|(series, a, b)| Op::Query { series, mint: a.min(b), maxt: a.max(b) }),
    ]
}

fn cases() -> u32 {
    std::env::var("TOOLWATCH_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
}

fn name(series: u8) -> String {
    format!("s{series}")
}

fn check(db: &Db, model: &BTreeMap<u8, BTreeMap<i64, u64>>, series: Option<u8>, mint: i64, maxt: i64) {
    let mut matchers = vec![Matcher::eq("__name__", "m")];
    if let Some(s) = series {
        matchers.push(Matcher::eq("id", &name(s)));
    }
    let got: BTreeMap<String, Vec<(i64, u64)>> = db
        .querier(mint, maxt)
        .select(&matchers)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels.get("id").unwrap().to_string(), s.iter().map(|(t, v)| (t, v.to_bits())).collect()))
        .filter(|(_, v): &(String, Vec<_>)| !v.is_empty())
        .collect();
    let want: BTreeMap<String, Vec<(i64, u64)>> = model
        .iter()
        .filter(|(s, _)| series.is_none_or(|x| x == **s))
        .map(|(s, m)| (name(*s), m.range(mint..=maxt).map(|(t, v)| (*t, *v)).collect::<Vec<_>>()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    assert_eq!(got, want, "select {series:?} [{mint}, {maxt}]");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
    #[test]
    fn storage_matches_model(ops in proptest::collection::vec(op(), 1..60), window in prop_oneof![Just(0i64), Just(30 * 60_000)]) {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            head: HeadOptions { out_of_order_window_ms: window, ..Default::default() },
            retention_ms: i64::MAX / 4,
            max_block_span_ms: 6 * HOUR,
            ..Default::default()
        };
        let mut db = Db::open(dir.path(), opts.clone()).unwrap();
        let mut model: BTreeMap<u8, BTreeMap<i64, u64>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Append { series, t } | Op::Batch { series, start: t, .. } => {
                    let n = if let Op::Batch { n, .. } = op { n as i64 } else { 1 };
                    let id = name(series);
                    let labels = [LabelRef { name: "__name__", value: "m" }, LabelRef { name: "id", value: &id }];
                    let mut app = db.appender().unwrap();
                    let ts: Vec<i64> = (0..n).map(|k| t + k * 15_000).collect();
                    let mut outcome: Vec<Result<(), AppendError>> = Vec::new();
                    if let Op::Batch { .. } = op {
                        // Batches go through append_batch, single appends through append.
                        let items: Vec<(&[LabelRef<'_>], i64, f64)> = ts.iter().map(|&t| (&labels[..], t, value(series, t))).collect();
                        outcome = vec![Ok(()); items.len()];
                        app.append_batch(&items, |i, e| outcome[i] = Err(e));
                    } else {
                        outcome.push(app.append(&labels, t, value(series, t)));
                    }
                    for (&t, res) in ts.iter().zip(outcome) {
                        let newest = model.get(&series).and_then(|m| m.keys().next_back().copied());
                        match res {
                            Ok(()) => {
                                model.entry(series).or_default().insert(t, value(series, t).to_bits());
                            }
                            Err(AppendError::OutOfOrder { .. }) => {
                                prop_assert!(newest.is_some_and(|n| n > t), "out-of-order rejection of t={t} but newest is {newest:?}");
                            }
                            Err(e) => prop_assert!(false, "unexpected rejection of t={t}: {e}"),
                        }
                    }
                    app.commit().unwrap();
                }
                Op::PersistDue => { db.persist_due().unwrap(); }
                Op::Flush => { db.flush().unwrap(); }
                Op::Restart => {
                    db.close().unwrap();
                    drop(db);
                    db = Db::open(dir.path(), opts.clone()).unwrap();
                }
                Op::Query { series, mint, maxt } => check(&db, &model, series, mint, maxt),
            }
        }
        check(&db, &model, None, 0, i64::MAX);
        let ids: Vec<String> = model.keys().map(|s| name(*s)).collect();
        prop_assert_eq!(db.querier(0, i64::MAX).label_values("id", &[]), ids);
    }
}
