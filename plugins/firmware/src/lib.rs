//! `firmware`: Testflinger's firmware_update phase through fwupd on the device under test.
//!
//! Over `exec`, it lists the device's firmware (`fwupdmgr get-devices --json`), looks for updates
//! (`fwupdmgr get-updates --json`), applies them (`fwupdmgr update`), restarts the device (a
//! power cycle, or `reboot` over exec when the device has no power handle), waits until it
//! answers, and checks each device now runs the version it was offered. Each firmware device
//! is a test case in suite `firmware`; the versions before and after are in its message.
//!
//! `firmware_update_data`: `version` (only `latest`, as in Testflinger), `ignore_failure` (a
//! failed update is reported but the phase passes), `boot_timeout` (seconds; else the device fact
//! `boot_timeout`; else 600).
//! A device without fwupd is an infrastructure error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use phasebox_plugin_sdk::{self as sdk, DeviceError, Failure, Guest, Outcome, PhaseContext, results::Status};
use serde::Deserialize;

/// The part of `firmware_update_data` this plugin reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    version: Option<String>,
    ignore_failure: bool,
    boot_timeout: Option<u64>,
}

/// `fwupdmgr … --json` output: the fields used here.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Devices {
    devices: Vec<Device>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, rename_all = "PascalCase")]
struct Device {
    name: String,
    device_id: String,
    version: String,
    flags: Vec<String>,
    releases: Vec<Release>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, rename_all = "PascalCase")]
struct Release {
    version: String,
}

/// fwupdmgr's exit status for "nothing to do".
const NOTHING_TO_DO: i32 = 2;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1800);

struct Firmware;

impl Guest for Firmware {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Data = sdk::ctx_data(&ctx)?;
        if let Some(v) = data.version.as_deref().filter(|v| *v != "latest") {
            return Err(Failure::JobError(format!(
                "firmware_update_data.version {v:?} is not supported: only \"latest\" is, as in Testflinger"
            )));
        }
        let name = sdk::fact(&ctx, "name").unwrap_or("the device").to_owned();
        let version = fwupd(&name, "fwupdmgr --version")?;
        if version.status == 127 {
            return Err(Failure::InfraError(format!("{name} has no fwupd (fwupdmgr not found)")));
        }

        let before = devices(&name, "fwupdmgr get-devices --json")?;
        for d in &before {
            println!("{:<40} {}", d.name, d.version);
        }
        // Metadata refresh needs the device's own network; an offline device can still apply
        // what fwupd already knows, so a failure here is only a warning.
        let refresh = fwupd(&name, "fwupdmgr refresh --force")?;
        if refresh.status != 0 && refresh.status != NOTHING_TO_DO {
            sdk::log::warn(&format!("fwupdmgr refresh exited {}: {}", refresh.status, refresh.stderr_text()));
        }
        let offered: Vec<Device> =
            devices(&name, "fwupdmgr get-updates --json")?.into_iter().filter(|d| !d.releases.is_empty()).collect();
        if offered.is_empty() {
            for d in &before {
                sdk::report_case(
                    "firmware",
                    &d.name,
                    Status::Pass,
                    Duration::ZERO,
                    Some(&format!("{} (latest)", d.version)),
                );
            }
            return Ok(Outcome { summary: format!("{name}: all firmware is up to date") });
        }

        let started = Instant::now();
        let update = fwupd(&name, "fwupdmgr update --assume-yes --no-reboot-check")?;
        let mut failures = Vec::new();
        if update.status != 0 && update.status != NOTHING_TO_DO {
            failures.push(format!("fwupdmgr update exited {}: {}", update.status, update.stderr_text()));
        } else {
            let fact = sdk::fact(&ctx, "boot_timeout").and_then(|t| t.parse().ok());
            restart(&name, Duration::from_secs(data.boot_timeout.or(fact).unwrap_or(600)))?;
        }

        let after: BTreeMap<String, Device> =
            devices(&name, "fwupdmgr get-devices --json")?.into_iter().map(|d| (d.device_id.clone(), d)).collect();
        let took = started.elapsed();
        for d in &offered {
            let wanted = &d.releases[0].version;
            let now = after.get(&d.device_id).map(|a| a.version.as_str()).unwrap_or("(gone)");
            let message = format!("{} → {now} (offered {wanted})", d.version);
            if now == wanted {
                sdk::report_case("firmware", &d.name, Status::Pass, took, Some(&message));
            } else {
                sdk::report_case("firmware", &d.name, Status::Fail, took, Some(&message));
                failures.push(format!("{}: {message}", d.name));
            }
            println!("{:<40} {message}", d.name);
        }
        if failures.is_empty() {
            Ok(Outcome { summary: format!("{name}: {} firmware update(s) applied", offered.len()) })
        } else if data.ignore_failure {
            sdk::log::warn(&format!("firmware update failed, ignored as asked: {}", failures.join("; ")));
            Ok(Outcome { summary: format!("{name}: firmware update failed (ignored): {}", failures.join("; ")) })
        } else {
            Err(Failure::TestFailure(format!("{name}: firmware update failed: {}", failures.join("; "))))
        }
    }
}

/// Runs a fwupdmgr command; a device that cannot run it is an infrastructure error.
fn fwupd(name: &str, command: &str) -> Result<sdk::exec::Captured, Failure> {
    sdk::exec::run_captured(command, &[], COMMAND_TIMEOUT)
        .map_err(|e| Failure::InfraError(format!("{name}: `{command}` could not run: {}", sdk::describe(&e))))
}

/// The firmware devices in a `--json` listing (an empty listing when fwupd has nothing to say).
fn devices(name: &str, command: &str) -> Result<Vec<Device>, Failure> {
    let out = fwupd(name, command)?;
    if out.status == NOTHING_TO_DO {
        return Ok(Vec::new());
    }
    if out.status != 0 {
        return Err(Failure::InfraError(format!("{name}: `{command}` exited {}: {}", out.status, out.stderr_text())));
    }
    let parsed: Devices = serde_json::from_slice(&out.stdout).map_err(|e| {
        Failure::InfraError(format!("{name}: `{command}` printed something other than fwupd JSON: {e}"))
    })?;
    Ok(parsed.devices.into_iter().filter(|d| d.flags.is_empty() || d.flags.iter().any(|f| f == "updatable")).collect())
}

/// Restarts the device so the firmware takes effect, and waits until it answers.
fn restart(name: &str, boot_timeout: Duration) -> Result<(), Failure> {
    println!("restarting {name}");
    match sdk::power::cycle() {
        Ok(()) => {}
        Err(DeviceError::NotConfigured) => {
            // No power handle: ask the device itself, detached so the command returns first.
            let _ = sdk::exec::run_captured("(sleep 1; reboot) >/dev/null 2>&1 &", &[], Duration::from_secs(30));
            std::thread::sleep(Duration::from_secs(5));
        }
        Err(e) => return Err(Failure::InfraError(format!("{name}: power cycle failed: {}", sdk::describe(&e)))),
    }
    let took = sdk::exec::wait_until_answering(boot_timeout)
        .map_err(|why| Failure::InfraError(format!("{name} did not come back after the firmware update: {why}")))?;
    println!("{name} answers after {:.1} s", took.as_secs_f64());
    Ok(())
}

sdk::export_phase!(Firmware);
