//! Integration tests of the storage crate, one binary with a module per area.

mod db;
mod faults;
mod model;
