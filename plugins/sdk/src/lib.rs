//! Write phasebox phase plugins in Rust.
//!
//! A phase plugin is a WebAssembly component that targets the `phase` world of
//! `phasebox:plugin@0.1.0` (see `wit/phase.wit` in the phasebox repository). The host calls its
//! one export, [`Guest::run`], once per phase, with a [`PhaseContext`] describing the job; the
//! plugin answers with an [`Outcome`] or a [`Failure`]. Everything else the plugin can reach —
//! [`log`] lines, [`secrets`], structured [`results`], and the WASI files, sockets and
//! environment that Rust's standard library uses — comes through imports that the host links only
//! when the phase's grant allows them.
//!
//! This crate holds the generated bindings for that world plus a few helpers, so a plugin crate
//! needs no `wit-bindgen` dependency of its own and no copy of the WIT files.
//!
//! # A complete plugin
//!
//! A `cdylib` crate that depends on this one (and on `serde` for the data type):
//!
//! ```no_run
//! use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};
//!
//! #[derive(serde::Deserialize)]
//! struct Data { image: String }
//!
//! struct Flash;
//!
//! impl Guest for Flash {
//!     fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
//!         let data: Data = sdk::ctx_data(&ctx)?;
//!         sdk::log::info(&format!("flashing {} on {}", data.image, ctx.job_id));
//!         Ok(Outcome { summary: format!("flashed {}", data.image) })
//!     }
//! }
//!
//! sdk::export_phase!(Flash);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release`; the `.wasm` that rustc writes
//! is already a component the host can load.
//!
//! # What a plugin may use
//!
//! Imports the plugin never calls are not part of the built component, so a plugin that never
//! reads a secret does not need a `secrets` grant. The standard library works as usual, within
//! the grant: `println!` is the phase's output, `std::fs` sees only the directories the job was
//! given, `std::net` reaches only granted endpoints, and `std::env` holds only the variables the
//! grant defines.

use std::time::Duration;

use serde::de::DeserializeOwned;

/// The bindings that `wit-bindgen` generates for the `phase` world.
///
/// Plugins reach everything through the re-exports at the crate root; this module is public only
/// because the [`export_phase!`] macro expands inside the plugin crate and has to name the
/// generated entry points from there.
#[doc(hidden)]
#[allow(missing_docs, clippy::all, clippy::undocumented_unsafe_blocks)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "phase",
        path: "../../wit",
        // The export macro has to be usable from other crates (the plugins), and it has to find
        // the generated entry points here rather than in the plugin crate.
        pub_export_macro: true,
        default_bindings_module: "phasebox_plugin_sdk::bindings",
        // Plugins compare outcomes and failures in their own unit tests.
        additional_derives: [PartialEq],
    });
}

/// Why a phase did not end well: `Err(Failure::…)` from [`Guest::run`].
pub use bindings::Failure;
/// The trait a plugin implements: its `run` function is the phase.
pub use bindings::Guest;
/// A phase that ended well: `Ok(Outcome { summary })` from [`Guest::run`].
pub use bindings::Outcome;
/// What the host tells the plugin about the phase it runs.
pub use bindings::PhaseContext;
/// One public fact about the device under test, as found in [`PhaseContext::dut`].
pub use bindings::phasebox::plugin::types::DutFact;

pub mod log {
    //! Structured log lines, recorded in the job's event stream beside the phase's output.
    //!
    //! [`log()`] is the raw import; [`trace`], [`debug`], [`info`], [`warn`] and [`error`] are
    //! shorthands for it.

    pub use crate::bindings::phasebox::plugin::log::{Level, log};

    /// Logs `message` at [`Level::Trace`]: details for whoever debugs the plugin itself.
    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }

    /// Logs `message` at [`Level::Debug`]: details for whoever debugs a job.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    /// Logs `message` at [`Level::Info`]: normal progress.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// Logs `message` at [`Level::Warn`]: something unexpected that the phase could work around.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// Logs `message` at [`Level::Error`]: something that made the phase fail.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

pub mod secrets {
    //! Secrets that this phase declared in the job and that the job's owner provides.
    //!
    //! [`get`] is the raw import; [`secret`](crate::secret) wraps it with a readable error.

    pub use crate::bindings::phasebox::plugin::secrets::{Error, get};
}

pub mod results {
    //! Structured test results: test cases and measurements.
    //!
    //! [`report_case`] and [`report_measurement`] are the raw imports;
    //! [`report_case`](crate::report_case) and [`measure`](crate::measure) at the crate root
    //! build the records for you.

    pub use crate::bindings::phasebox::plugin::results::{
        Measurement, Status, TestCase, report_case, report_measurement,
    };
}

/// Why an operation on the device under test failed.
pub use bindings::phasebox::plugin::types::DeviceError;

pub mod power {
    //! Power control of the job's device under test (needs the `power` capability).

    pub use crate::bindings::phasebox::plugin::power::{State, cycle, off, on, status};
}

pub mod console {
    //! The serial console of the job's device under test (needs the `console` capability).
    //! What a plugin reads is also recorded, redacted, as the job's serial log.

    pub use crate::bindings::phasebox::plugin::console::{Session, open};
}

pub mod exec {
    //! Commands on the job's device under test (needs the `exec` capability). The device's
    //! address and the key that reaches it stay with the host.

    pub use crate::bindings::phasebox::plugin::exec::{Channel, Command, Event, Process, copy_from, copy_to, run};

    /// Runs `command` on the device and waits for it, passing its output to `on_output` as it
    /// arrives; returns its exit status. `secret_env` names declared secrets that the host
    /// exports to this command only.
    pub fn run_streaming(
        command: &str,
        env: &[(String, String)],
        secret_env: &[String],
        timeout: std::time::Duration,
        mut on_output: impl FnMut(Channel, &[u8]),
    ) -> Result<i32, crate::DeviceError> {
        let process = run(&Command {
            command: command.to_owned(),
            env: env.to_vec(),
            secret_env: secret_env.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        })?;
        loop {
            match process.next()? {
                Event::Output((channel, data)) => on_output(channel, &data),
                Event::Exited(code) => return Ok(code),
            }
        }
    }

    /// What a command left behind: its exit status and its output, kept rather than streamed.
    #[derive(Debug, Clone, Default)]
    pub struct Captured {
        /// The exit status.
        pub status: i32,
        /// Everything it wrote to stdout.
        pub stdout: Vec<u8>,
        /// Everything it wrote to stderr.
        pub stderr: Vec<u8>,
    }

    impl Captured {
        /// stdout as text (invalid UTF-8 replaced).
        pub fn stdout_text(&self) -> String {
            String::from_utf8_lossy(&self.stdout).into_owned()
        }

        /// stderr as text, trimmed (invalid UTF-8 replaced): the usual "why" of a failure.
        pub fn stderr_text(&self) -> String {
            String::from_utf8_lossy(&self.stderr).trim().to_owned()
        }
    }

    /// Runs `command` on the device and keeps its output (the host still records it in the
    /// phase's output stream). For commands whose output the plugin parses.
    pub fn run_captured(
        command: &str,
        env: &[(String, String)],
        timeout: std::time::Duration,
    ) -> Result<Captured, crate::DeviceError> {
        let mut captured = Captured::default();
        captured.status = run_streaming(command, env, &[], timeout, |channel, data| match channel {
            Channel::Stdout => captured.stdout.extend_from_slice(data),
            Channel::Stderr => captured.stderr.extend_from_slice(data),
        })?;
        Ok(captured)
    }

    /// Tries `true` on the device every half second until it answers or `timeout` passes.
    /// Returns how long it took, or why it never answered (the last error seen).
    pub fn wait_until_answering(timeout: std::time::Duration) -> Result<std::time::Duration, String> {
        let started = std::time::Instant::now();
        let mut last = String::from("no attempt");
        while started.elapsed() < timeout {
            match run_streaming("true", &[], &[], std::time::Duration::from_secs(10), |_, _| {}) {
                Ok(0) => return Ok(started.elapsed()),
                Ok(code) => last = format!("`true` exited with {code}"),
                Err(e) => last = crate::describe(&e),
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Err(format!("no answer within {} s (last: {last})", timeout.as_secs()))
    }
}

pub mod http;

pub mod flash {
    //! Writing an image to the storage of the job's device under test (needs the `flash`
    //! capability).

    pub use crate::bindings::phasebox::plugin::flash::{Report, Writer, open};
}

/// A device error in words, for messages: what kind, and the host's explanation (which names
/// the device and the handle, never how it is reached).
pub fn describe(error: &DeviceError) -> String {
    match error {
        DeviceError::NotConfigured => "the device has no such handle configured".to_owned(),
        DeviceError::TimedOut => "the device did not answer in time".to_owned(),
        DeviceError::Failed(message) => message.clone(),
    }
}

/// Parses the phase's data (`<phase>_data` in the job, JSON) into `T`.
///
/// An empty data string counts as `{}`, the same as the host sends when the job gives no data,
/// so a `T` whose fields all have defaults always parses. A parse problem is the submitter's to
/// fix, so it comes back as [`Failure::JobError`] naming the phase and what serde found wrong,
/// ready to be returned from [`Guest::run`] with `?`.
pub fn ctx_data<T: DeserializeOwned>(ctx: &PhaseContext) -> Result<T, Failure> {
    let text = if ctx.data.trim().is_empty() { "{}" } else { ctx.data.as_str() };
    serde_json::from_str(text).map_err(|err| Failure::JobError(format!("invalid {}_data: {err}", ctx.phase)))
}

/// Returns the value of the device-under-test fact `key` (such as `name`, `arch` or `serial`),
/// or `None` when the host gave no such fact.
pub fn fact<'a>(ctx: &'a PhaseContext, key: &str) -> Option<&'a str> {
    ctx.dut.iter().find(|fact| fact.key == key).map(|fact| fact.value.as_str())
}

/// Returns the value of the secret `name`, or a one-line explanation when the host does not give
/// it (the phase did not declare it, or the job has no value for it: the host does not say
/// which).
///
/// The value is redacted from everything the job outputs, but a plugin should still not print it.
pub fn secret(name: &str) -> Result<String, String> {
    secrets::get(name).map_err(|err| match err {
        secrets::Error::NotGranted(name) => {
            format!("secret {name:?} is not granted to this phase")
        }
    })
}

/// Records one test case in `suite` named `name` that ended with `status` after `duration`.
///
/// `message` says why it failed, was skipped or errored; for a pass, anything worth keeping.
/// Durations are recorded in whole milliseconds, rounded down.
pub fn report_case(suite: &str, name: &str, status: results::Status, duration: Duration, message: Option<&str>) {
    results::report_case(&results::TestCase {
        suite: suite.to_owned(),
        name: name.to_owned(),
        status,
        // A u64 of milliseconds covers 584 million years; saturate rather than wrap anyway.
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        message: message.map(str::to_owned),
    });
}

/// Records the measurement `name` = `value` `unit` (e.g. `measure("boot-time", 41.5, "s")`).
pub fn measure(name: &str, value: f64, unit: &str) {
    results::report_measurement(&results::Measurement { name: name.to_owned(), value, unit: unit.to_owned() });
}

/// Makes the type `$ty`, which implements [`Guest`], the plugin's `run` export.
///
/// Use it once per plugin crate, at the top level of the crate:
///
/// ```ignore
/// struct MyPhase;
/// impl phasebox_plugin_sdk::Guest for MyPhase { /* fn run … */ }
/// phasebox_plugin_sdk::export_phase!(MyPhase);
/// ```
#[macro_export]
macro_rules! export_phase {
    ($ty:ident) => {
        $crate::bindings::export!($ty with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(data: &str) -> PhaseContext {
        PhaseContext {
            phase: "test".to_owned(),
            job_id: "job-1".to_owned(),
            data: data.to_owned(),
            dut: vec![DutFact { key: "name".to_owned(), value: "rpi4-07".to_owned() }],
        }
    }

    #[derive(serde::Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Data {
        image: Option<String>,
    }

    #[test]
    fn data_parses_and_empty_counts_as_an_empty_object() {
        assert_eq!(ctx_data::<Data>(&ctx(r#"{"image":"a.img"}"#)).unwrap(), Data { image: Some("a.img".to_owned()) });
        assert_eq!(ctx_data::<Data>(&ctx("")).unwrap(), Data::default());
        assert_eq!(ctx_data::<Data>(&ctx("{}")).unwrap(), Data::default());
    }

    #[test]
    fn bad_data_is_a_job_error_naming_the_phase() {
        match ctx_data::<Data>(&ctx("{not json")) {
            Err(Failure::JobError(message)) => {
                assert!(message.starts_with("invalid test_data: "), "message: {message}")
            }
            other => panic!("expected a job error, got {other:?}"),
        }
    }

    #[test]
    fn facts_are_found_by_key() {
        let ctx = ctx("{}");
        assert_eq!(fact(&ctx, "name"), Some("rpi4-07"));
        assert_eq!(fact(&ctx, "serial"), None);
    }
}
