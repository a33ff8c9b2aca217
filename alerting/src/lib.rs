//! toolwatch-alerting: Prometheus rule files, group scheduling, alert state, notifiers
//! (Alertmanager API v2, webhooks) and the rules/alerts API.
//!
//! Filled by the alerting issue. It evaluates through `toolwatch-query` and writes `ALERTS`,
//! `ALERTS_FOR_STATE` and recording-rule output back through `toolwatch-storage`'s `Appender`.
