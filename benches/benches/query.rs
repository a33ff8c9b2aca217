//! Range-query latency of the two dashboard queries the issue names, over the MCP-mix workload
//! in both bench scenarios (10k series × 120 steps, 100k series × 30 steps at 15s), whole data
//! range, step 60s — the same shape `../shared/peers/bench.py` times over HTTP.
//! `cargo bench -p toolwatch-benches --bench query`

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use toolwatch_benches::mix::Workload;
use toolwatch_query::{Engine, EngineOptions, QueryControl};
use toolwatch_storage::{Db, DbOptions, FsyncMode, LabelRef};

const QUERIES: [(&str, &str); 2] = [
    ("rate_by_tool", "sum by (tool) (rate(mcp_tool_calls_total[5m]))"),
    ("p95_by_tool", "histogram_quantile(0.95, sum by (le, tool) (rate(mcp_tool_latency_seconds_bucket[5m])))"),
];

fn load(series: usize, steps: usize) -> (tempfile::TempDir, Db, i64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions { wal_fsync: FsyncMode::Never, ..Default::default() };
    let db = Db::open(&dir.path().join("data"), opts).unwrap();
    let mut w = Workload::new(series, 15_000);
    let labels = w.labels.clone();
    for step in 0..steps {
        let t = step as i64 * 15_000;
        let values = w.step().to_vec();
        for chunk in (0..series).collect::<Vec<_>>().chunks(2000) {
            let refs: Vec<Vec<LabelRef<'_>>> = chunk
                .iter()
                .map(|&i| labels[i].iter().map(|(n, v)| LabelRef { name: n, value: v }).collect())
                .collect();
            let items: Vec<(&[LabelRef<'_>], i64, f64)> =
                chunk.iter().zip(&refs).map(|(&i, r)| (&r[..], t, values[i])).collect();
            let mut app = db.appender().unwrap();
            app.append_batch(&items, |i, e| panic!("sample {i} rejected: {e}"));
            app.commit().unwrap();
        }
    }
    (dir, db, (steps as i64 - 1) * 15_000)
}

fn bench_queries(c: &mut Criterion) {
    for (series, steps) in [(10_000usize, 120usize), (100_000, 30)] {
        let (_dir, db, end) = load(series, steps);
        let engine = Engine::new(db, EngineOptions::default());
        let mut g = c.benchmark_group(format!("query_range_{series}x{steps}"));
        g.measurement_time(Duration::from_secs(8)).sample_size(20);
        for (name, q) in QUERIES {
            g.bench_function(name, |b| {
                b.iter(|| engine.range(q, 0, end, 60_000, &QueryControl::default()).unwrap());
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_queries);
criterion_main!(benches);
