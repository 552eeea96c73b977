//! The seven phases and Testflinger's rules for which of them a job runs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::fields::truthy;
use crate::phasebox::PhaseboxBlock;
use crate::spec::JobSpec;

/// A phase, in Testflinger order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `setup`.
    Setup,
    /// `provision`.
    Provision,
    /// `firmware_update`.
    FirmwareUpdate,
    /// `test`.
    Test,
    /// `allocate`.
    Allocate,
    /// `reserve`.
    Reserve,
    /// `cleanup`.
    Cleanup,
}

impl Phase {
    /// All phases in the order the agent runs them (spec §2.4; cleanup always last).
    pub const ALL: [Phase; 7] = [
        Phase::Setup,
        Phase::Provision,
        Phase::FirmwareUpdate,
        Phase::Test,
        Phase::Allocate,
        Phase::Reserve,
        Phase::Cleanup,
    ];

    /// The wire name (`firmware_update`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Provision => "provision",
            Phase::FirmwareUpdate => "firmware_update",
            Phase::Test => "test",
            Phase::Allocate => "allocate",
            Phase::Reserve => "reserve",
            Phase::Cleanup => "cleanup",
        }
    }

    /// The job key holding this phase's data (`test_data`, ...); `None` for setup and cleanup,
    /// which have none.
    pub fn data_key(self) -> Option<&'static str> {
        match self {
            Phase::Setup | Phase::Cleanup => None,
            Phase::Provision => Some("provision_data"),
            Phase::FirmwareUpdate => Some("firmware_update_data"),
            Phase::Test => Some("test_data"),
            Phase::Allocate => Some("allocate_data"),
            Phase::Reserve => Some("reserve_data"),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("`{s}` is not a phase"))
    }
}

/// Why a phase does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `<phase>_data` is absent.
    Absent,
    /// `<phase>_data` is falsy: `null` or an empty mapping.
    Empty,
    /// `<phase>_data.skip` is truthy.
    SkipFlag,
    /// `<phase>_data` holds only `attachments`, which the agent removes after unpacking them,
    /// leaving nothing.
    OnlyAttachments,
}

/// One phase of a job and whether it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseEntry<'a> {
    /// The phase.
    pub phase: Phase,
    /// Why it is skipped; `None` if it runs.
    pub skip: Option<SkipReason>,
    /// Its phasebox block, if any.
    pub phasebox: Option<&'a PhaseboxBlock>,
}

impl PhaseEntry<'_> {
    /// Whether the phase runs.
    pub fn runs(&self) -> bool {
        self.skip.is_none()
    }
}

impl JobSpec {
    /// The seven phases in Testflinger order, each with whether it runs.
    ///
    /// The rules are the agent's (spec §2.5, `run_test_phase`): `setup` and `cleanup` need no
    /// data and always run; `provision`, `firmware_update`, `test`, `allocate` and `reserve` run
    /// only if `<phase>_data` is truthy (present, not `null`, not `{}`) and its `skip` is not
    /// truthy. Also (spec §2.8) after unpacking attachments the agent deletes the `attachments`
    /// key of `provision_data`, `firmware_update_data` and `test_data` and drops a dict left
    /// empty, so such a section holding only `attachments` is skipped too. (The agent also skips
    /// a phase whose `<phase>_command` is not configured; that is agent configuration, not job
    /// data, and is not modelled here.)
    pub fn phases(&self) -> Vec<PhaseEntry<'_>> {
        // Judge each section exactly as the agent sees it: the JSON the server hands out.
        let json = self.to_json();
        Phase::ALL
            .into_iter()
            .map(|phase| PhaseEntry { phase, skip: skip_reason(&json, phase), phasebox: self.phasebox(phase) })
            .collect()
    }

    /// The phasebox block of a phase, if any.
    pub fn phasebox(&self, phase: Phase) -> Option<&PhaseboxBlock> {
        match phase {
            Phase::Setup | Phase::Cleanup => None,
            Phase::Provision => match &self.provision_data {
                Some(Some(p)) => p.phasebox.as_ref(),
                _ => None,
            },
            Phase::FirmwareUpdate => self.firmware_update_data.as_ref()?.phasebox.as_ref(),
            Phase::Test => self.test_data.as_ref()?.phasebox.as_ref(),
            Phase::Allocate => self.allocate_data.as_ref()?.phasebox.as_ref(),
            Phase::Reserve => self.reserve_data.as_ref()?.phasebox.as_ref(),
        }
    }
}

fn skip_reason(json: &Json, phase: Phase) -> Option<SkipReason> {
    let key = phase.data_key()?;
    let Some(data) = json.get(key) else {
        return Some(SkipReason::Absent);
    };
    if !truthy(data) {
        return Some(SkipReason::Empty);
    }
    if data.get("skip").is_some_and(truthy) {
        return Some(SkipReason::SkipFlag);
    }
    let strips_attachments = matches!(phase, Phase::Provision | Phase::FirmwareUpdate | Phase::Test);
    if strips_attachments
        && let Json::Object(map) = data
        && map.len() == 1
        && map.contains_key("attachments")
    {
        return Some(SkipReason::OnlyAttachments);
    }
    None
}
