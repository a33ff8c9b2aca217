//! toolwatch-alerting: Prometheus rule files, group scheduling, alert state, notifiers
//! (Alertmanager API v2, webhooks) and the rules/alerts API.
//!
//! `rulefile.rs` parses and validates rule files; `template.rs` renders Go-template labels and
//! annotations; `rule.rs` evaluates one rule and keeps alert state; `group.rs` runs a group at
//! its aligned interval and writes output back; `notifier.rs` delivers alerts; `manager.rs`
//! loads, reloads and serves `/api/v1/rules`, `/api/v1/alerts` and `/-/reload`; `unittest.rs`
//! runs promtool's rule unit-test format.
//!
//! It evaluates only through `toolwatch-query` and writes `ALERTS`, `ALERTS_FOR_STATE` and
//! recording-rule output only through `toolwatch-storage`'s `Appender`; it never touches the
//! data directory's files.

pub mod error;
pub mod group;
pub mod manager;
pub mod notifier;
pub mod rule;
pub mod rulefile;
pub mod template;
mod template_funcs;
pub mod unittest;

pub use error::AlertingError;
pub use group::GroupShared;
pub use manager::{reload_router, router, RuleManager};
pub use notifier::{Notifier, Target, TargetKind};
