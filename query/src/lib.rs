//! toolwatch-query: PromQL evaluation over `toolwatch_storage` and the Prometheus HTTP query API.
//!
//! `Engine` parses with `promql-parser` and evaluates with its own evaluator (`engine.rs` drives,
//! `selectors.rs`, `functions.rs`, `range_functions.rs`, `aggregate.rs`, `binary.rs` and
//! `histogram.rs` each own one concern). `http::router` serves `/api/v1/query` and friends in
//! Prometheus' JSON shapes. `promqltest` runs Prometheus' test-script format against the engine.
//!
//! It never touches files of the data dir and never appends samples (the test-script runner
//! loads its data through the storage `Appender`, as any writer would).

pub mod aggregate;
pub mod binary;
pub mod depth;
pub mod engine;
pub mod error;
pub mod functions;
pub mod histogram;
pub mod http;
pub mod metrics;
pub mod parse_error;
pub mod promqltest;
pub mod range_functions;
pub mod selectors;
pub mod time;
pub mod value;

pub use depth::Parsed;
pub use engine::{parse, Engine, EngineOptions, QueryControl, QueryStats};
pub use error::QueryError;
pub use value::{QueryValue, Series};
