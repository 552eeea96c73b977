//! What a running phase reports to whoever runs it: output as it is written, log lines, test
//! results, and every capability use. Events flow over a bounded channel, so a consumer that
//! falls behind slows the guest down instead of letting memory grow.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// Severity of a log line, as the guest gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Plugin debugging detail.
    Trace,
    /// Job debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected.
    Warn,
    /// Something that made the phase fail.
    Error,
}

/// How a test case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseStatus {
    /// Passed.
    Pass,
    /// Failed its assertion.
    Fail,
    /// Not run.
    Skip,
    /// Could not be run to an answer.
    Error,
}

/// One test case reported through `results`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestCase {
    /// Suite name.
    pub suite: String,
    /// Case name.
    pub name: String,
    /// How it ended.
    pub status: CaseStatus,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Why, or a note.
    pub message: Option<String>,
}

/// One measurement reported through `results`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// A capability use: which grant, which call, and whether it was allowed. Secret values never
/// appear here, only names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapabilityUse {
    /// The capability kind, e.g. `network`, `secrets`, `http`.
    pub grant: String,
    /// The call and its target, e.g. `connect 10.0.0.1:22`, `get API_TOKEN`.
    pub call: String,
    /// Whether it was allowed.
    pub allowed: bool,
    /// Why it was denied, when it was.
    pub reason: Option<String>,
    /// How long the call took, for device handles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// What a phase reports while it runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PhaseEvent {
    /// Bytes the guest wrote, exactly as written (not split into lines).
    Output {
        /// Which stream.
        stream: Stream,
        /// The bytes.
        #[serde(serialize_with = "lossy")]
        data: Bytes,
        /// When the host received them.
        at: SystemTime,
    },
    /// A log line.
    Log {
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
        /// When.
        at: SystemTime,
    },
    /// A test case.
    Case(TestCase),
    /// A measurement.
    Measurement(Measurement),
    /// A capability use.
    Capability(CapabilityUse),
    /// Bytes the device's serial console printed while the phase read it.
    Serial {
        /// The bytes.
        #[serde(serialize_with = "lossy")]
        data: Bytes,
        /// When the host received them.
        at: SystemTime,
    },
    /// Progress of a long device operation (bytes flashed so far).
    Progress {
        /// The handle, e.g. `flash`.
        handle: String,
        /// Bytes done.
        bytes: u64,
    },
}

fn lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// The sending half a phase reports into. Clone it freely: every clone feeds one consumer.
pub type EventSender = tokio::sync::mpsc::Sender<PhaseEvent>;
/// The receiving half.
pub type EventReceiver = tokio::sync::mpsc::Receiver<PhaseEvent>;

/// A bounded event channel of the size phases use by default (enough to keep the guest busy
/// while the consumer works; small enough that a stalled consumer stalls the guest).
pub fn channel() -> (EventSender, EventReceiver) {
    tokio::sync::mpsc::channel(256)
}
