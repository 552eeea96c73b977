//! The sandbox's integration tests, in one test binary: each links wasmtime, so one binary
//! instead of three keeps the build's time and disk down.

mod capabilities;
mod common;
mod devices;
mod files;
mod languages;
mod limits;
// The `probe` plugin's CPU workload, compiled natively from the plugin's own source.
#[path = "../../../../plugins/probe/src/work.rs"]
mod work;
