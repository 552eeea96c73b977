//! `shell`: runs a Testflinger job's `test_cmds` on the device under test.
//!
//! The commands run through the `exec` handle, by the device's shell, so they reach the device
//! without the plugin knowing its address or key. Their output is the phase's output, live (the
//! host streams it; the plugin does not print it again). The secrets named in
//! `test_data.secrets` become environment variables of that command only: the plugin passes
//! their names, the host fills in the values, and the plugin never sees them.
//!
//! Exit status 0 passes; any other status is a test failure; a device that cannot be reached is
//! an infrastructure error.
//!
//! Artifacts: as Testflinger's test_cmds leave files in `artifacts/` of their working directory,
//! files the commands leave in `artifacts/` of theirs (the login's home on the device) are
//! copied back into the job's artifacts when the phase is granted `/artifacts` — up to
//! `MAX_ARTIFACTS` files, each within the device's copy limit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use phasebox_plugin_sdk::{self as sdk, DeviceError, Failure, Guest, Outcome, PhaseContext, results::Status};
use serde::Deserialize;

/// The part of `test_data` this plugin reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct TestData {
    /// The commands, one shell script.
    test_cmds: Option<String>,
    /// Environment variable name → secret path; only the names matter here.
    secrets: BTreeMap<String, serde_json::Value>,
}

/// Most files copied back from the device's `artifacts/`.
const MAX_ARTIFACTS: usize = 1000;

struct Shell;

impl Guest for Shell {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: TestData = sdk::ctx_data(&ctx)?;
        let Some(cmds) = data.test_cmds.filter(|c| !c.trim().is_empty()) else {
            return Err(Failure::JobError("test_data.test_cmds is missing or empty".into()));
        };
        let names: Vec<String> = data.secrets.keys().cloned().collect();
        sdk::log::info(&format!("running test_cmds on {}", sdk::fact(&ctx, "name").unwrap_or("the device")));
        let started = Instant::now();
        // A zero timeout means the phase's own limit, which the host enforces.
        let status = sdk::exec::run_streaming(&cmds, &[], &names, Duration::ZERO, |_, _| {}).map_err(infra)?;
        let took = started.elapsed();
        if std::path::Path::new("/artifacts").is_dir() {
            collect_artifacts();
        }
        if status == 0 {
            sdk::report_case("shell", "test_cmds", Status::Pass, took, None);
            Ok(Outcome { summary: "test_cmds exited 0".into() })
        } else {
            let message = format!("test_cmds exited with status {status}");
            sdk::report_case("shell", "test_cmds", Status::Fail, took, Some(&message));
            Err(Failure::TestFailure(message))
        }
    }
}

/// Copies the files under `artifacts/` on the device (relative to the commands' working
/// directory) to `/artifacts`, keeping their relative paths. Problems are logged, not fatal:
/// the commands' own verdict stands.
fn collect_artifacts() {
    let listing = match sdk::exec::run_captured(
        &format!("[ -d artifacts ] && find artifacts -type f 2>/dev/null | head -n {MAX_ARTIFACTS}"),
        &[],
        Duration::from_secs(60),
    ) {
        Ok(out) => out.stdout_text(),
        Err(e) => return sdk::log::warn(&format!("listing artifacts on the device failed: {}", sdk::describe(&e))),
    };
    let mut copied = 0;
    for remote in listing.lines().filter(|l| !l.is_empty()) {
        // `find artifacts` prints paths under artifacts/; refuse anything that could leave it.
        let Some(rel) = remote.strip_prefix("artifacts/") else { continue };
        if rel.split('/').any(|part| part.is_empty() || part == "..") {
            continue;
        }
        let local = format!("/artifacts/{rel}");
        let result = sdk::exec::copy_from(remote).map_err(|e| sdk::describe(&e)).and_then(|data| {
            if let Some(parent) = std::path::Path::new(&local).parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&local, data).map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => copied += 1,
            Err(why) => sdk::log::warn(&format!("artifact {remote}: {why}")),
        }
    }
    if copied > 0 {
        sdk::log::info(&format!("copied {copied} artifact(s) from the device"));
    }
}

/// A device that cannot run the commands is the lab's problem, not the job's.
fn infra(e: DeviceError) -> Failure {
    Failure::InfraError(match e {
        DeviceError::NotConfigured => "the device has no command execution configured".into(),
        DeviceError::TimedOut => "running test_cmds on the device timed out".into(),
        DeviceError::Failed(m) => format!("running test_cmds on the device failed: {m}"),
    })
}

sdk::export_phase!(Shell);
