//! Query telemetry, registered in the binary's registry: how many queries ran, how they ended
//! (Prometheus' error types, so a dashboard can tell bad input from overload), and how long
//! they took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `instant` or `range`.
    pub kind: String,
    /// `success` or the Prometheus error type (`bad_data`, `execution`, `timeout`, `canceled`, ...).
    pub result: String,
}

#[derive(Clone)]
pub struct QueryMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub duration: Family<QueryLabels, Histogram>,
    pub samples: Counter,
}

impl QueryMetrics {
    pub fn new(registry: &mut Registry) -> QueryMetrics {
        let m = QueryMetrics {
            queries: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            samples: Counter::default(),
        };
        registry.register("toolwatch_queries", "PromQL queries by kind and result", m.queries.clone());
        registry.register(
            "toolwatch_query_duration_seconds",
            "Time to evaluate one PromQL query, queueing included",
            m.duration.clone(),
        );
        registry.register("toolwatch_query_samples_loaded", "Samples read from storage by queries", m.samples.clone());
        m
    }

    /// Metrics nobody reads (tests, tools).
    pub fn unregistered() -> QueryMetrics {
        QueryMetrics::new(&mut Registry::default())
    }

    pub fn observe(&self, kind: &str, result: &str, seconds: f64) {
        let l = QueryLabels { kind: kind.to_string(), result: result.to_string() };
        self.queries.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(seconds);
    }
}
