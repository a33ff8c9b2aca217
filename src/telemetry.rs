//! toolwatch's own metrics, exposed at `/metrics` in Prometheus text format through
//! `prometheus-client`. Storage counters live as atomics in the storage crate and are read at
//! scrape time by a collector, so the hot path never touches the registry.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use toolwatch_storage::Db;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub handler: String,
    pub code: u16,
}

pub struct Telemetry {
    pub registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
}

impl Telemetry {
    pub fn new(db: Arc<OnceLock<Db>>) -> Telemetry {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("toolwatch_http_requests", "HTTP requests by handler and status code", http_requests.clone());
        registry.register_collector(Box::new(StorageCollector { db }));
        crate::build_info::register(&mut registry);
        Telemetry { registry, http_requests }
    }

    pub fn encode(&self) -> String {
        exposition(&self.registry)
    }
}

/// A registry in the Prometheus text format (what `/metrics` serves and the self-scrape stores).
pub fn exposition(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

#[derive(Debug)]
struct StorageCollector {
    db: Arc<OnceLock<Db>>,
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for StorageCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(db) = self.db.get() else {
            return gauge(&mut enc, "toolwatch_ready", "1 once the WAL replay is done", 0.0);
        };
        gauge(&mut enc, "toolwatch_ready", "1 once the WAL replay is done", 1.0)?;
        let s = db.stats();
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut enc;
        counter(
            e,
            "toolwatch_storage_samples_appended",
            "Samples written to the WAL and head",
            l(&s.samples_appended),
        )?;
        counter(
            e,
            "toolwatch_storage_samples_out_of_order",
            "Samples rejected as out of order",
            l(&s.samples_rejected_out_of_order),
        )?;
        counter(
            e,
            "toolwatch_storage_samples_duplicate",
            "Samples rejected: same timestamp, other value",
            l(&s.samples_rejected_duplicate),
        )?;
        counter(
            e,
            "toolwatch_storage_samples_series_limit",
            "Samples rejected by storage.max_series",
            l(&s.samples_rejected_limit),
        )?;
        counter(
            e,
            "toolwatch_storage_samples_rejected_other",
            "Samples rejected for other reasons",
            l(&s.samples_rejected_other),
        )?;
        counter(
            e,
            "toolwatch_storage_wal_corruptions",
            "Corrupt or torn WAL tails truncated at start-up",
            l(&s.wal_corruptions),
        )?;
        counter(
            e,
            "toolwatch_storage_wal_truncated_bytes",
            "WAL bytes dropped at start-up because of corruption",
            l(&s.wal_truncated_bytes),
        )?;
        counter(
            e,
            "toolwatch_storage_wal_replay_dropped_samples",
            "WAL samples not replayed (unknown series)",
            l(&s.wal_replay_dropped_samples),
        )?;
        gauge(
            e,
            "toolwatch_storage_wal_replay_duration_seconds",
            "Time the last WAL replay took",
            l(&s.wal_replay_seconds_x1000) as f64 / 1000.0,
        )?;
        counter(
            e,
            "toolwatch_storage_blocks_dropped",
            "Unreadable blocks moved aside at start-up",
            l(&s.blocks_dropped),
        )?;
        counter(
            e,
            "toolwatch_tsdb_blocks_quarantined",
            "Blocks moved aside as <id>.corrupt (at start-up, or a chunk failing its check when compacted or read)",
            l(&s.blocks_quarantined),
        )?;
        counter(e, "toolwatch_wal_fsync_failures", "Failed fsyncs of the WAL", db.wal_fsync_failures())?;
        gauge(
            e,
            "toolwatch_wal_healthy",
            "0 while the last WAL fsync has failed (writes answer 503 until one succeeds), else 1",
            if db.wal_healthy() { 1.0 } else { 0.0 },
        )?;
        counter(e, "toolwatch_storage_blocks_cut", "Blocks written from the head", l(&s.blocks_cut))?;
        counter(e, "toolwatch_storage_compactions", "Block compactions", l(&s.compactions))?;
        counter(
            e,
            "toolwatch_storage_retention_deleted_blocks",
            "Blocks deleted by retention",
            l(&s.blocks_deleted_by_retention),
        )?;
        counter(e, "toolwatch_storage_wal_checkpoints", "WAL checkpoints written", l(&s.checkpoints))?;
        gauge(e, "toolwatch_storage_head_series", "Series in the head", db.num_series() as f64)?;
        let blocks = db.blocks();
        gauge(e, "toolwatch_storage_blocks", "Blocks on disk", blocks.len() as f64)?;
        gauge(
            e,
            "toolwatch_storage_blocks_bytes",
            "Bytes of all blocks",
            blocks.iter().map(|b| b.size_bytes).sum::<u64>() as f64,
        )?;
        Ok(())
    }
}
