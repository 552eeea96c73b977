//! Wire types: log types, log fragments and chunks, secret expiry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Testflinger's phases in order; log chunks list them in this order.
pub const PHASES: [&str; 7] = ["setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup"];

/// Job states after which nothing more happens. (Testflinger's CLI stops polling on
/// `complete` and `cancelled` only; `completed` is accepted here as its agent and server do.)
pub const TERMINAL_STATES: [&str; 3] = ["complete", "completed", "cancelled"];

/// Which log of a job: the phase commands' output or the device's serial console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    /// `output`: what the phases printed.
    Output,
    /// `serial`: the device's serial console.
    Serial,
}

impl LogType {
    /// The path segment: `output` or `serial`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::Output => "output",
            LogType::Serial => "serial",
        }
    }
}

impl fmt::Display for LogType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "output" => Ok(LogType::Output),
            "serial" => Ok(LogType::Serial),
            _ => Err(format!("unknown log type {s:?}: expected output or serial")),
        }
    }
}

/// One numbered piece of a job's log, as an agent posts it
/// (`POST /v1/result/<id>/log/<type>`).
///
/// Fragment numbers count from 0 per job and log type, across phases; readers rely on them
/// increasing. Serializable so an agent can spool fragments to disk while the server is away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFragment {
    /// The fragment's number (0, 1, 2, ... per job and log type).
    pub fragment_number: u64,
    /// When it was produced, ISO 8601 (e.g. `2025-01-01T12:00:00.123456Z`).
    pub timestamp: String,
    /// The phase that produced it (one of [`PHASES`]).
    pub phase: String,
    /// The text.
    pub log_data: String,
}

impl LogFragment {
    /// A fragment stamped with the current time.
    pub fn now(fragment_number: u64, phase: impl Into<String>, log_data: impl Into<String>) -> Self {
        LogFragment { fragment_number, timestamp: now_iso(), phase: phase.into(), log_data: log_data.into() }
    }
}

/// The current UTC time in RFC 3339 form.
pub(crate) fn now_iso() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// One phase's part of a [`LogChunk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseLog {
    /// The phase.
    pub phase: String,
    /// The highest fragment number of this phase in the chunk; `-1` when there is none.
    pub last_fragment_number: i64,
    /// The fragments' text, in fragment order.
    pub log_data: String,
}

/// What `GET /v1/result/<id>/log/<type>` answered: per phase, the text of the fragments asked
/// for and the highest fragment number among them.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    /// The log type asked for.
    pub log_type: LogType,
    /// The phases in [`PHASES`] order (then any the server added), as answered.
    pub phases: Vec<PhaseLog>,
    /// The answer as it came, for `poll --json`.
    pub raw: Value,
}

impl LogChunk {
    /// Parses the server's answer `{"<type>": {"<phase>": {"last_fragment_number", "log_data"}}}`.
    pub fn from_json(log_type: LogType, raw: Value) -> Result<Self, String> {
        let per_phase = raw
            .get(log_type.as_str())
            .and_then(Value::as_object)
            .ok_or_else(|| format!("no {:?} object in the log answer", log_type.as_str()))?;
        let mut names: Vec<&String> = per_phase.keys().collect();
        let rank = |p: &str| PHASES.iter().position(|x| *x == p).unwrap_or(PHASES.len());
        names.sort_by_key(|p| (rank(p), (*p).clone()));
        let mut phases = Vec::with_capacity(names.len());
        for name in names {
            let entry = &per_phase[name];
            let last_fragment_number = entry
                .get("last_fragment_number")
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("phase {name:?} has no integer last_fragment_number"))?;
            let log_data = entry
                .get("log_data")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("phase {name:?} has no string log_data"))?
                .to_owned();
            phases.push(PhaseLog { phase: name.clone(), last_fragment_number, log_data });
        }
        Ok(LogChunk { log_type, phases, raw })
    }

    /// The highest fragment number over all phases; `None` when the chunk is empty.
    pub fn last_fragment_number(&self) -> Option<u64> {
        self.phases.iter().map(|p| p.last_fragment_number).max().and_then(|n| u64::try_from(n).ok())
    }

    /// The text of every phase, concatenated in phase order (what `poll` prints).
    pub fn text(&self) -> String {
        self.phases.iter().map(|p| p.log_data.as_str()).collect()
    }

    /// The phase with the highest fragment number: the one that wrote last.
    pub fn latest_phase(&self) -> Option<&str> {
        self.phases
            .iter()
            .filter(|p| p.last_fragment_number >= 0)
            .max_by_key(|p| p.last_fragment_number)
            .map(|p| p.phase.as_str())
    }
}

/// Which fragments to read (`GET /v1/result/<id>/log/<type>` query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only fragments numbered this or higher.
    pub start_fragment: u64,
    /// Only fragments stamped at or after this ISO 8601 time.
    pub start_timestamp: Option<String>,
    /// Only this phase.
    pub phase: Option<String>,
}

/// How long a secret written with [`crate::Client::put_secret_with`] lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecretExpiry {
    /// The server's default (Testflinger: one year).
    #[default]
    Default,
    /// This many seconds after writing.
    After(u64),
    /// Until deleted.
    Never,
    /// Until the first job that uses it is claimed (Testflinger's `ephemeral`).
    SingleUse,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_parse_in_phase_order() {
        let raw = json!({"output": {
            "test": {"last_fragment_number": 7, "log_data": "t"},
            "setup": {"last_fragment_number": 2, "log_data": "s"},
            "cleanup": {"last_fragment_number": -1, "log_data": ""},
        }});
        let c = LogChunk::from_json(LogType::Output, raw).unwrap();
        assert_eq!(c.text(), "st");
        assert_eq!(c.last_fragment_number(), Some(7));
        assert_eq!(c.latest_phase(), Some("test"));
        assert_eq!(c.phases[0].phase, "setup");
        let empty = LogChunk::from_json(
            LogType::Serial,
            json!({"serial": {"setup": {"last_fragment_number": -1, "log_data": ""}}}),
        )
        .unwrap();
        assert_eq!(empty.last_fragment_number(), None);
        assert!(LogChunk::from_json(LogType::Serial, json!({"output": {}})).is_err());
    }

    #[test]
    fn fragments_serialize_as_the_wire_shape() {
        let f = LogFragment::now(3, "test", "hello\n");
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["fragment_number"], 3);
        assert_eq!(v["phase"], "test");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!("serial".parse::<LogType>().unwrap(), LogType::Serial);
    }
}
