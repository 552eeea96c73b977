//! The job engine's integration tests, in one test binary: each links the whole runtime
//! (wasmtime among it), so one binary instead of four keeps the build's time and disk down.

mod common;
mod device;
mod escapes;
mod job;
mod leaks;
mod openssh;
mod standard;
mod testflinger;
