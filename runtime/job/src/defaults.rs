//! The standard plugins: which bundled plugin runs a phase when neither the job
//! (`<phase>_data.phasebox.plugin`) nor the runner's `[defaults]` names one, chosen from what the
//! job's `<phase>_data` asks for — so a plain Testflinger job runs without naming any plugin.
//!
//! | phase | standard plugin | when |
//! |---|---|---|
//! | `provision` | `noprovision` | `provision_data` is of type `noprovision` |
//! | `provision` | `flash` | `provision_data` has a `url`, or attachments (cm3, muxpi, oem, ...) |
//! | `firmware_update` | `firmware` | always (fwupd on the device) |
//! | `test` | `shell` | `test_data.test_cmds` is given |
//! | `reserve` | `reserve` | always |
//! | `cleanup` | `cleanup` | always (power off or reset, per the device's `cleanup`) |
//!
//! `setup` and `allocate` have none. A standard plugin is used only when the runner loaded a
//! plugin of that name: the runner's plugin list stays its allow-list of code.

use phasebox_jobspec::{JobSpec, Phase, ProvisionType};

/// The standard plugin for `phase` of `spec`, by name, per the [table](self).
pub fn standard_plugin(phase: Phase, spec: &JobSpec) -> Option<&'static str> {
    match phase {
        Phase::Provision => {
            let data = spec.provision_data.as_ref()?.as_ref()?;
            if data.kind == ProvisionType::NoProvision {
                Some("noprovision")
            } else if data.url().is_some() || data.fields.contains_key("attachments") {
                Some("flash")
            } else {
                None
            }
        }
        Phase::FirmwareUpdate => Some("firmware"),
        Phase::Test => spec.test_data.as_ref()?.test_cmds.as_ref().map(|_| "shell"),
        Phase::Reserve => Some("reserve"),
        Phase::Cleanup => Some("cleanup"),
        Phase::Setup | Phase::Allocate => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> JobSpec {
        JobSpec::parse(&format!("job_queue: q\n{yaml}")).unwrap()
    }

    #[test]
    fn phases_get_standard_plugins_from_their_data() {
        let s = spec(
            "provision_data: {url: 'http://images.lab/x.img'}\ntest_data: {test_cmds: 'true'}\nreserve_data: {}\n",
        );
        assert_eq!(standard_plugin(Phase::Provision, &s), Some("flash"));
        assert_eq!(standard_plugin(Phase::Test, &s), Some("shell"));
        assert_eq!(standard_plugin(Phase::Reserve, &s), Some("reserve"));
        assert_eq!(standard_plugin(Phase::Cleanup, &s), Some("cleanup"));
        assert_eq!(standard_plugin(Phase::Setup, &s), None);
        let s = spec("provision_data: {skip: true}\ntest_data: {}\n");
        assert_eq!(standard_plugin(Phase::Provision, &s), Some("noprovision"));
        assert_eq!(standard_plugin(Phase::Test, &s), None);
        // maas-like data (no url, no attachments): nothing standard provisions it.
        assert_eq!(standard_plugin(Phase::Provision, &spec("provision_data: {distro: noble}\n")), None);
    }
}
