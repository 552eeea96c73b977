//! `noprovision`: Testflinger's provisioner for devices that keep what they have. It only
//! checks that the device under test answers a command; a device that does not is an
//! infrastructure error, so the job stops before its tests run against nothing.

use std::time::Duration;

use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};

struct NoProvision;

impl Guest for NoProvision {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let name = sdk::fact(&ctx, "name").unwrap_or("the device").to_owned();
        let status = sdk::exec::run_streaming("true", &[], &[], Duration::from_secs(60), |_, _| {})
            .map_err(|e| Failure::InfraError(format!("{name} does not answer over exec: {}", sdk::describe(&e))))?;
        if status != 0 {
            return Err(Failure::InfraError(format!("{name} answered, but `true` exited with status {status}")));
        }
        sdk::log::info(&format!("{name} answers over exec"));
        Ok(Outcome { summary: format!("{name} answers; nothing to provision") })
    }
}

sdk::export_phase!(NoProvision);
