//! Metric metadata (type, help, unit) received by remote-write, kept per metric name in memory
//! for `/api/v1/metadata`. The newest value wins; it is not persisted (senders resend it).

use parking_lot::RwLock;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    #[serde(rename = "type")]
    pub typ: String,
    pub help: String,
    pub unit: String,
}

#[derive(Default)]
pub struct MetadataStore {
    /// Written once per request that carries metadata, read by the metadata API.
    by_metric: RwLock<BTreeMap<String, Metadata>>,
}

impl MetadataStore {
    pub fn set(&self, metric: &str, typ: &str, help: &str, unit: &str) {
        let m = Metadata { typ: typ.to_string(), help: help.to_string(), unit: unit.to_string() };
        let mut g = self.by_metric.write();
        if g.get(metric) != Some(&m) {
            g.insert(metric.to_string(), m);
        }
    }

    pub fn get(&self, metric: &str) -> Option<Metadata> {
        self.by_metric.read().get(metric).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, Metadata> {
        self.by_metric.read().clone()
    }
}
