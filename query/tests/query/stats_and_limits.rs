//! What `stats=all` reports is measured (peak samples held at once, time queued for a slot),
//! and the range-query resolution limit is Prometheus' (`(end-start)/step` may equal it).

use std::sync::{Arc, OnceLock};
use std::time::Duration;
use toolwatch_query::http::{run_query, MetadataSource, MetricMetadata, QueryState, RuntimeFacts};
use toolwatch_query::metrics::QueryMetrics;
use toolwatch_query::{Engine, EngineOptions, QueryControl, QueryError, QueryStats};
use toolwatch_storage::{Db, DbOptions, LabelRef};

const T: i64 = 10 * 60 * 1000;

/// `up{job="a"} = 1` and `up{job="b"} = 2` every 15 s from 0 to 10 minutes.
fn db(dir: &std::path::Path) -> Db {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let mut app = db.appender().unwrap();
    for t in (0..=T).step_by(15_000) {
        for (job, v) in [("a", 1.0), ("b", 2.0)] {
            let l = [LabelRef { name: "__name__", value: "up" }, LabelRef { name: "job", value: job }];
            app.append(&l, t, v).unwrap();
        }
    }
    app.commit().unwrap();
    db
}

fn instant_stats(e: &Engine, q: &str) -> QueryStats {
    e.instant(q, T, &QueryControl::default()).unwrap_or_else(|err| panic!("{q}: {err}")).1
}

#[test]
fn peak_samples_count_what_is_held_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::new(db(dir.path()), EngineOptions::default());
    // One point per series: the selector's result.
    assert_eq!(instant_stats(&e, "up").peak_samples, 2);
    // Parentheses pass the same value on.
    assert_eq!(instant_stats(&e, "((up))").peak_samples, 2);
    // Both operands and the result are alive together.
    assert_eq!(instant_stats(&e, "up + up").peak_samples, 6);
    // A range function decodes its samples series by series: only its result is held.
    assert_eq!(instant_stats(&e, "rate(up[1m])").peak_samples, 2);
    // A range vector result: its samples.
    let (v, s) = e.instant("up[1m]", T, &QueryControl::default()).unwrap();
    let n = match v {
        toolwatch_query::QueryValue::Matrix(series) => series.iter().map(|s| s.points.len()).sum::<usize>(),
        other => panic!("{other:?}"),
    };
    assert!(n >= 8 && s.peak_samples >= n, "{n} samples, {s:?}");
    // A subquery's points are held while the function reads them: more than the result's two.
    let s = instant_stats(&e, "max_over_time(up[1m:15s])");
    assert!(s.peak_samples >= 2 + 2 * 4, "{s:?}");
    // A range query holds a point per series per step.
    let (_, s) = e.range("up", 0, T, 60_000, &QueryControl::default()).unwrap();
    assert_eq!(s.peak_samples, 2 * 11);
    // Nothing queued outside the HTTP layer.
    assert_eq!(s.queue_time, Duration::ZERO);
}

#[test]
fn a_range_of_exactly_max_points_per_series_steps_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::new(db(dir.path()), EngineOptions::default());
    let max = e.options().max_points_per_series as i64;
    assert_eq!(max, 11_000);
    // (end-start)/step == 11000: accepted, as Prometheus does; 11001 points come back.
    let (v, _) = e.range("1", 0, max * 1000, 1000, &QueryControl::default()).unwrap();
    match v {
        toolwatch_query::QueryValue::Matrix(series) => assert_eq!(series[0].points.len(), 11_001),
        other => panic!("{other:?}"),
    }
    // One more step is refused, naming the limit.
    let err = e.range("1", 0, (max + 1) * 1000, 1000, &QueryControl::default()).unwrap_err();
    assert!(matches!(err, QueryError::BadData(_)), "{err:?}");
    assert!(err.to_string().contains("max_points_per_series"), "{err}");
    // A smaller configured limit behaves the same way.
    let opts = EngineOptions { max_points_per_series: 10, ..EngineOptions::default() };
    let e = Engine::new(e.db().clone(), opts);
    assert!(e.range("1", 0, 10_000, 1000, &QueryControl::default()).is_ok());
    assert!(e.range("1", 0, 10_999, 1000, &QueryControl::default()).is_ok(), "10.999 steps round down");
    assert!(e.range("1", 0, 11_000, 1000, &QueryControl::default()).is_err());
}

struct NoMetadata;

impl MetadataSource for NoMetadata {
    fn all(&self) -> Vec<MetricMetadata> {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_time_is_the_wait_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Arc::new(OnceLock::new());
    let _ = cell.set(db(dir.path()));
    let mut registry = prometheus_client::registry::Registry::default();
    let st = Arc::new(QueryState::new(
        cell,
        EngineOptions::default(),
        1,
        Arc::new(NoMetadata),
        RuntimeFacts::default(),
        &toolwatch_query::http::BuildInfo::UNKNOWN,
        QueryMetrics::new(&mut registry),
    ));
    // Alone, a query does not wait.
    let (_, s) = run_query(&st, None, |e, c| e.instant("up", T, c)).await.unwrap();
    assert!(s.queue_time < Duration::from_millis(200), "{s:?}");
    // With the only slot held for 400 ms, the next query waits about that long, and says so.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    let st2 = st.clone();
    let holder = tokio::spawn(async move {
        run_query(&st2, None, move |_, _| {
            let _ = held_tx.send(());
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        })
        .await
    });
    held_rx.await.unwrap();
    let (_, s) = run_query(&st, None, |e, c| e.instant("up", T, c)).await.unwrap();
    assert!(s.queue_time >= Duration::from_millis(250), "{s:?}");
    assert!(s.queue_time < Duration::from_secs(10), "{s:?}");
    holder.await.unwrap().unwrap();
}

#[test]
fn config_reloads_report_the_last_outcome_and_the_last_success() {
    use toolwatch_query::http::ConfigReloads;
    let r = ConfigReloads::default();
    assert_eq!(r.last(), (false, None), "nothing loaded yet");
    r.record(false, 1_000);
    assert_eq!(r.last(), (false, None), "a failure is no successful load");
    r.record(true, 2_000);
    assert_eq!(r.last(), (true, Some(2_000)));
    r.record(false, 3_000);
    assert_eq!(r.last(), (false, Some(2_000)), "a failed reload keeps the last good time");
    r.record(true, 4_000);
    assert_eq!(r.last(), (true, Some(4_000)));
}
