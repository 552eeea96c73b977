//! `cleanup`: the default cleanup phase. Leaves the device under test as its operator
//! configured: the fact `cleanup_action` (from the device configuration's `cleanup`) is
//! `power-off`, `reset` (a power cycle) or `none`. A device without a power handle is left as it
//! is, with a warning. Cleanup failures are infrastructure errors: the next job should not start
//! on a device in an unknown state.

use phasebox_plugin_sdk::{self as sdk, DeviceError, Failure, Guest, Outcome, PhaseContext};

struct Cleanup;

impl Guest for Cleanup {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let name = sdk::fact(&ctx, "name").unwrap_or("the device").to_owned();
        let action = sdk::fact(&ctx, "cleanup_action").unwrap_or("none");
        let result = match action {
            "none" => return Ok(Outcome { summary: format!("{name} left as it is") }),
            "power-off" => sdk::power::off(),
            "reset" => sdk::power::cycle(),
            other => {
                return Err(Failure::InfraError(format!(
                    "unknown cleanup action {other:?} for {name}: expected power-off, reset or none"
                )));
            }
        };
        match result {
            Ok(()) => {
                println!("{name}: {action} done");
                Ok(Outcome { summary: format!("{name}: {action}") })
            }
            Err(DeviceError::NotConfigured) => {
                sdk::log::warn(&format!("{name} has no power handle: {action} skipped"));
                Ok(Outcome { summary: format!("{name}: no power handle, left as it is") })
            }
            Err(e) => Err(Failure::InfraError(format!("{name}: {action} failed: {}", sdk::describe(&e)))),
        }
    }
}

sdk::export_phase!(Cleanup);
