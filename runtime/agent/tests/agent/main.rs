//! Integration tests: a real phasebox server in-process on 127.0.0.1, a real agent, the bundled
//! plugins and simulated devices.
//!
//! * `jobs` — jobs end to end over long-poll and Testflinger-style polling: states, output
//!   fragments in order, results, artifacts, cancels, secrets, agent states set on the server.
//! * `faults` — the server going away mid-job, the agent killed mid-phase and restarted on its
//!   spool, a DUT with a broken configuration beside a working one, SIGTERM with a running job.
//! * `hostile_server` — a fake server handing out job ids that are paths.
//! * `back_pressure` — a fake server that stops answering: the guest waits, memory does not grow.

mod back_pressure;
mod common;
mod faults;
mod hostile_server;
mod jobs;
