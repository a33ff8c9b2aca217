//! Ingest telemetry, registered in the binary's registry and updated per request.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub version: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SampleLabels {
    pub result: String,
}

#[derive(Clone)]
pub struct IngestMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub samples: Family<SampleLabels, Counter>,
    pub histograms_rejected: Counter,
    pub exemplars_dropped: Counter,
    pub duration: Histogram,
}

impl IngestMetrics {
    pub fn new(registry: &mut Registry) -> IngestMetrics {
        let m = IngestMetrics {
            requests: Family::default(),
            samples: Family::default(),
            histograms_rejected: Counter::default(),
            exemplars_dropped: Counter::default(),
            duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        };
        registry.register(
            "toolwatch_remote_write_requests",
            "Remote-write requests by protocol version and status code",
            m.requests.clone(),
        );
        registry.register(
            "toolwatch_remote_write_samples",
            "Remote-write samples by result (accepted, out_of_order, duplicate, too_old, invalid, limit)",
            m.samples.clone(),
        );
        registry.register(
            "toolwatch_remote_write_histograms_rejected",
            "Native histogram samples rejected (not stored yet)",
            m.histograms_rejected.clone(),
        );
        registry.register(
            "toolwatch_remote_write_exemplars_dropped",
            "Exemplars received and not stored",
            m.exemplars_dropped.clone(),
        );
        registry.register(
            "toolwatch_remote_write_request_duration_seconds",
            "Time to handle one remote-write request",
            m.duration.clone(),
        );
        m
    }

    pub fn unregistered() -> IngestMetrics {
        IngestMetrics::new(&mut Registry::default())
    }

    pub fn count_samples(&self, result: &str, n: u64) {
        if n > 0 {
            self.samples.get_or_create(&SampleLabels { result: result.to_string() }).inc_by(n);
        }
    }
}
