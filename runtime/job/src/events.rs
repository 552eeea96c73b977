//! The job's event stream: everything a job does, in order, as it happens.
//!
//! Every event is wrapped in an [`EventRecord`] with a sequence number (from 0, +1 per event,
//! no gaps) and a UTC timestamp, and serializes as one JSON object per line (JSON Lines):
//!
//! ```json
//! {"seq":0,"time":"2026-05-01T12:00:00.000Z","type":"job_start","job_id":"…",…}
//! {"seq":1,"time":"…","type":"phase_start","phase":"setup","plugin":"hello",…}
//! {"seq":2,"time":"…","type":"output","phase":"setup","stream":"stdout","data":"hello from setup…\n"}
//! ```
//!
//! The stream is the job's record of truth: the Testflinger results, the JUnit report and the
//! terminal view are all derived from it ([`ResultsBuilder`](crate::ResultsBuilder),
//! [`TerminalRenderer`](crate::TerminalRenderer)). Every string in it has been through the
//! job's redactor before any sink sees it.
//!
//! Sinks ([`JobSink`]) receive records live, in order, on the task running the job; a sink
//! must not block, and says when it cannot take more (the guest then waits).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use phasebox_jobspec::Phase;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One event with its sequence number and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the job's stream: 0 for `job_start`, then +1 per event.
    pub seq: u64,
    /// When the engine emitted it: RFC 3339, UTC, milliseconds (`2026-05-01T12:00:00.000Z`).
    pub time: String,
    /// The event.
    #[serde(flatten)]
    pub event: JobEvent,
}

impl EventRecord {
    /// The record as one line of JSON (without the newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an event record always serializes")
    }

    /// Reads an `events.jsonl` text back.
    pub fn parse_jsonl(text: &str) -> Result<Vec<EventRecord>, serde_json::Error> {
        text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect()
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job starts: its identity and plan.
    JobStart {
        /// The job id.
        job_id: String,
        /// The queue it was submitted to.
        job_queue: String,
        /// Its name, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Testflinger's `device_info`: the device's public facts.
        device_info: serde_json::Map<String, serde_json::Value>,
        /// The whole job's time budget, cleanup included, in milliseconds.
        job_timeout_ms: u64,
        /// The part of it kept for cleanup, in milliseconds.
        cleanup_budget_ms: u64,
        /// Each of the seven phases: what will run it, or why it is skipped.
        phases: Vec<PhasePlanInfo>,
    },
    /// A phase starts.
    PhaseStart {
        /// The phase.
        phase: Phase,
        /// The plugin's name.
        plugin: String,
        /// The plugin's sha256.
        sha256: String,
        /// The phase's timeout as it starts (already shortened by the job's budget), in ms.
        timeout_ms: u64,
        /// Its output-idle timeout, in ms.
        output_timeout_ms: u64,
    },
    /// A phase does not run.
    PhaseSkipped {
        /// The phase.
        phase: Phase,
        /// Why, as a code.
        reason: SkipReason,
        /// Why, in words.
        detail: String,
    },
    /// Output of a phase: a chunk as it arrived (not split into lines), redacted.
    Output {
        /// The phase.
        phase: Phase,
        /// Which stream.
        stream: OutputStream,
        /// The text.
        data: String,
    },
    /// A log line of the plugin.
    Log {
        /// The phase.
        phase: Phase,
        /// Its severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// A test case the plugin reported.
    Case {
        /// The phase.
        phase: Phase,
        /// The suite.
        suite: String,
        /// The case.
        name: String,
        /// How it ended.
        status: CaseStatus,
        /// How long it took, in ms.
        duration_ms: u64,
        /// Why, or a note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A measurement the plugin reported.
    Measurement {
        /// The phase.
        phase: Phase,
        /// What was measured.
        name: String,
        /// The value (`null` in JSON when it is not a finite number).
        #[serde(serialize_with = "finite_or_null", deserialize_with = "null_as_nan")]
        value: f64,
        /// Its unit.
        unit: String,
    },
    /// A capability use: which grant, which call, allowed or denied.
    Capability {
        /// The phase.
        phase: Phase,
        /// The capability kind, e.g. `network`, `secrets`.
        grant: String,
        /// The call and its target, e.g. `get API_TOKEN`.
        call: String,
        /// Whether it was allowed.
        allowed: bool,
        /// Why it was denied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How long the call took (device handle calls: power, console, exec, flash).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// A phase ended.
    PhaseEnd {
        /// The phase.
        phase: Phase,
        /// Its Testflinger status code (see [`crate::status`]).
        status: i32,
        /// How it ended, as a code.
        outcome: PhaseOutcome,
        /// How it ended, in words.
        reason: String,
        /// How long it ran, in ms.
        elapsed_ms: u64,
        /// Bytes of output it wrote.
        output_bytes: u64,
    },
    /// The artifacts directory was packed (after cleanup).
    Artifacts {
        /// Files stored.
        files: u64,
        /// Bytes of their contents.
        bytes: u64,
        /// Entries left out (links leading outside, special files), with why.
        skipped: Vec<String>,
    },
    /// The job ended.
    JobEnd {
        /// `complete` or `cancelled`.
        job_state: JobState,
        /// Why it ended: `normal_exit`, `<phase>_fail`, `cancelled` or `job_timeout`.
        reason: EndReason,
        /// The status of every phase that ran.
        statuses: BTreeMap<Phase, i32>,
        /// How long the job took, in ms.
        elapsed_ms: u64,
    },
}

impl JobEvent {
    /// The phase the event belongs to, if any.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Self::PhaseStart { phase, .. }
            | Self::PhaseSkipped { phase, .. }
            | Self::Output { phase, .. }
            | Self::Log { phase, .. }
            | Self::Case { phase, .. }
            | Self::Measurement { phase, .. }
            | Self::Capability { phase, .. }
            | Self::PhaseEnd { phase, .. } => Some(*phase),
            Self::JobStart { .. } | Self::Artifacts { .. } | Self::JobEnd { .. } => None,
        }
    }

    /// Applies `f` to every free-text string of the event (for redaction), except output of the
    /// plugin's own streams (stdout, stderr, serial): those are redacted as streams, before they
    /// become events, and are the bulk of a job's bytes. The engine's own output lines (which
    /// may quote the plugin, e.g. a crash message) are included.
    pub(crate) fn map_strings(&mut self, f: &mut dyn FnMut(&mut String)) {
        match self {
            Self::JobStart { job_id, job_queue, name, device_info, phases, .. } => {
                f(job_id);
                f(job_queue);
                if let Some(n) = name {
                    f(n);
                }
                for v in device_info.values_mut() {
                    if let serde_json::Value::String(s) = v {
                        f(s);
                    }
                }
                for p in phases {
                    if let Some(plugin) = &mut p.plugin {
                        f(plugin);
                    }
                    f(&mut p.detail);
                }
            }
            Self::PhaseStart { plugin, .. } => f(plugin),
            Self::PhaseSkipped { detail, .. } => f(detail),
            Self::Output { stream: OutputStream::Engine, data, .. } => f(data),
            Self::Output { .. } => {}
            Self::Log { message, .. } => f(message),
            Self::Case { suite, name, message, .. } => {
                f(suite);
                f(name);
                if let Some(m) = message {
                    f(m);
                }
            }
            Self::Measurement { name, unit, .. } => {
                f(name);
                f(unit);
            }
            Self::Capability { grant, call, reason, .. } => {
                f(grant);
                f(call);
                if let Some(r) = reason {
                    f(r);
                }
            }
            Self::PhaseEnd { reason, .. } => f(reason),
            Self::Artifacts { skipped, .. } => skipped.iter_mut().for_each(f),
            Self::JobEnd { .. } => {}
        }
    }
}

/// One phase in the job's plan, as announced by `job_start`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhasePlanInfo {
    /// The phase.
    pub phase: Phase,
    /// The plugin that will run it; `None` when skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Why it is skipped; `None` when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<SkipReason>,
    /// Its timeout or why it is skipped, in words.
    pub detail: String,
}

/// Which stream an output chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// The plugin's stdout.
    Stdout,
    /// The plugin's stderr.
    Stderr,
    /// The device's serial console (Testflinger's `<phase>_serial`).
    Serial,
    /// Lines the engine adds to a phase's output, like Testflinger's agent does: why a phase
    /// was stopped (`ERROR: Global timeout reached! (900s)`).
    Engine,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

impl From<phasebox_sandbox::events::LogLevel> for LogLevel {
    fn from(l: phasebox_sandbox::events::LogLevel) -> Self {
        use phasebox_sandbox::events::LogLevel as L;
        match l {
            L::Trace => Self::Trace,
            L::Debug => Self::Debug,
            L::Info => Self::Info,
            L::Warn => Self::Warn,
            L::Error => Self::Error,
        }
    }
}

/// How a test case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl From<phasebox_sandbox::events::CaseStatus> for CaseStatus {
    fn from(s: phasebox_sandbox::events::CaseStatus) -> Self {
        use phasebox_sandbox::events::CaseStatus as S;
        match s {
            S::Pass => Self::Pass,
            S::Fail => Self::Fail,
            S::Skip => Self::Skip,
            S::Error => Self::Error,
        }
    }
}

/// Why a phase did not run. The first four are Testflinger's skip rules for the job's data
/// (spec §2.5, §2.8); the others are the agent's and phasebox's reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `<phase>_data` is absent.
    Absent,
    /// `<phase>_data` is `null` or empty.
    Empty,
    /// `<phase>_data.skip` is truthy.
    SkipFlag,
    /// `<phase>_data` holds only `attachments`.
    OnlyAttachments,
    /// `setup` or `cleanup` with no plugin configured (Testflinger: an empty `<phase>_command`).
    NoPlugin,
    /// An earlier phase other than `test` failed, which stops the job.
    AfterFailure,
    /// The job was cancelled before the phase started.
    Cancelled,
    /// The job's time was used up (only the cleanup budget was left).
    JobTimeout,
}

impl From<phasebox_jobspec::SkipReason> for SkipReason {
    fn from(r: phasebox_jobspec::SkipReason) -> Self {
        use phasebox_jobspec::SkipReason as S;
        match r {
            S::Absent => Self::Absent,
            S::Empty => Self::Empty,
            S::SkipFlag => Self::SkipFlag,
            S::OnlyAttachments => Self::OnlyAttachments,
        }
    }
}

impl SkipReason {
    /// The reason in words, for `phase`.
    pub fn describe(self, phase: Phase) -> String {
        let key = phase.data_key().unwrap_or("data");
        match self {
            Self::Absent => format!("the job has no {key}"),
            Self::Empty => format!("{key} is empty"),
            Self::SkipFlag => format!("{key}.skip is set"),
            Self::OnlyAttachments => format!("{key} holds only attachments"),
            Self::NoPlugin => format!("no plugin is configured for {phase}"),
            Self::AfterFailure => "not run: an earlier phase failed".into(),
            Self::Cancelled => "not run: the job was cancelled".into(),
            Self::JobTimeout => "not run: the job's time is used up".into(),
        }
    }
}

/// How a phase that ran ended, as a code. [`crate::status`] maps each to a status number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseOutcome {
    /// The plugin returned an outcome.
    Passed,
    /// The plugin reported a test failure.
    TestFailure,
    /// The plugin reported a job error (the job's fault).
    JobError,
    /// The plugin reported an infrastructure error (the lab's fault).
    InfraError,
    /// The phase's own timeout passed (`phasebox.timeout`, else Testflinger's `global_timeout`).
    Timeout,
    /// The job's time budget ran out during the phase.
    JobTimeout,
    /// No output for the output-idle timeout.
    OutputTimeout,
    /// More output than the policy allows.
    OutputLimit,
    /// More memory than the policy allows (the guest's own, or what the host held for its
    /// HTTP requests beside it).
    MemoryLimit,
    /// More bytes written, or more files created, in read-write mounts than the policy allows.
    DiskLimit,
    /// More handles held at once (open files, sockets, streams, HTTP resources) than the policy
    /// allows.
    HandleLimit,
    /// The job was cancelled while the phase ran.
    Cancelled,
    /// The plugin crashed (a trap: panic, out-of-bounds access, stack overflow).
    Crashed,
    /// The plugin called `exit` instead of returning (status: its exit code).
    Exited,
    /// The engine could not start the phase.
    EngineError,
}

/// The job's final state, as Testflinger names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// The job ran to its end (whatever its phases' statuses).
    Complete,
    /// The job was cancelled.
    Cancelled,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Complete => "complete",
            Self::Cancelled => "cancelled",
        })
    }
}

/// Why the job ended, with Testflinger's `job_end` detail words where it has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Every phase that was to run ran (`normal_exit`; a failed `test` phase ends this way too).
    NormalExit,
    /// A phase other than `test` failed and stopped the job (`<phase>_fail`).
    PhaseFailed(Phase),
    /// The job was cancelled (`cancelled`).
    Cancelled,
    /// The job's time budget ran out (`job_timeout`).
    JobTimeout,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NormalExit => f.write_str("normal_exit"),
            Self::PhaseFailed(p) => write!(f, "{p}_fail"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::JobTimeout => f.write_str("job_timeout"),
        }
    }
}

impl FromStr for EndReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal_exit" => Ok(Self::NormalExit),
            "cancelled" => Ok(Self::Cancelled),
            "job_timeout" => Ok(Self::JobTimeout),
            other => other
                .strip_suffix("_fail")
                .and_then(|p| p.parse().ok())
                .map(Self::PhaseFailed)
                .ok_or_else(|| format!("`{other}` is not a job end reason")),
        }
    }
}

impl Serialize for EndReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EndReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

fn finite_or_null<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() { s.serialize_f64(*v) } else { s.serialize_none() }
}

fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Receives a job's events, live and in order.
///
/// Called on the task that runs the job, between guest steps. A sink that cannot take more
/// for now (its consumer is slow: a server that answers slowly) says so in
/// [`poll_ready`](JobSink::poll_ready); the engine then waits before it hands over the next
/// record, stops reading the phase's events, and the guest blocks on its next write: a slow
/// consumer slows the job instead of growing a queue. [`event`](JobSink::event) itself must
/// be quick (buffer, or hand off to a thread as [`TerminalRenderer`](crate::TerminalRenderer)
/// does).
pub trait JobSink: Send {
    /// Whether the sink can take the next record now; when it cannot, it returns `Pending`
    /// and wakes `cx` once it can (as a bounded channel's sender does). By default a sink is
    /// always ready.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }

    /// One event. Called only after [`poll_ready`](JobSink::poll_ready) said `Ready`.
    fn event(&mut self, record: &EventRecord);
}

/// Waits until `sink` can take the next record.
pub(crate) async fn ready(sink: &mut (impl JobSink + ?Sized)) {
    std::future::poll_fn(|cx| sink.poll_ready(cx)).await;
}

impl<S: JobSink + ?Sized> JobSink for &mut S {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_ready(cx)
    }

    fn event(&mut self, record: &EventRecord) {
        (**self).event(record);
    }
}

impl<S: JobSink + ?Sized> JobSink for Box<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_ready(cx)
    }

    fn event(&mut self, record: &EventRecord) {
        (**self).event(record);
    }
}

/// Keeps every record.
impl JobSink for Vec<EventRecord> {
    fn event(&mut self, record: &EventRecord) {
        self.push(record.clone());
    }
}

/// Discards every record.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl JobSink for NullSink {
    fn event(&mut self, _record: &EventRecord) {}
}

/// Feeds two sinks, the first first.
#[derive(Debug, Default)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: JobSink, B: JobSink> JobSink for Tee<A, B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Ready once both are: a ready sink stays ready until it is given a record.
        match (self.0.poll_ready(cx), self.1.poll_ready(cx)) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    fn event(&mut self, record: &EventRecord) {
        self.0.event(record);
        self.1.event(record);
    }
}

/// Writes each record as a line of JSON (`events.jsonl`), flushing at the end of each phase
/// and of the job. A write error is kept (and logged once); later records are dropped and
/// [`JsonlSink::finish`] returns it.
pub struct JsonlSink<W: Write + Send> {
    out: BufWriter<W>,
    error: Option<std::io::Error>,
}

impl JsonlSink<std::fs::File> {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(std::fs::File::create(path)?))
    }
}

impl<W: Write + Send> JsonlSink<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        Self { out: BufWriter::new(out), error: None }
    }

    /// Flushes and returns the writer, or the first write error.
    pub fn finish(mut self) -> std::io::Result<W> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

impl<W: Write + Send> JobSink for JsonlSink<W> {
    fn event(&mut self, record: &EventRecord) {
        if self.error.is_some() {
            return;
        }
        let mut line = record.to_json_line();
        line.push('\n');
        let flush = matches!(record.event, JobEvent::PhaseEnd { .. } | JobEvent::JobEnd { .. });
        let result = self.out.write_all(line.as_bytes()).and_then(|()| if flush { self.out.flush() } else { Ok(()) });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write the event log; later events are dropped");
            self.error = Some(e);
        }
    }
}

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-05-01T12:00:00.000Z`: one fixed width,
/// so the records of a job sort as text.
pub fn rfc3339(t: SystemTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let t = time::OffsetDateTime::from(t.max(UNIX_EPOCH));
    // The format names only fields every UTC date has, so formatting cannot fail.
    t.format(FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, ms: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn records_round_trip_through_json_lines() {
        let records = [
            EventRecord {
                seq: 0,
                time: rfc3339(SystemTime::now()),
                event: JobEvent::Measurement {
                    phase: Phase::Test,
                    name: "x".into(),
                    value: f64::NAN,
                    unit: "s".into(),
                },
            },
            EventRecord {
                seq: 1,
                time: rfc3339(SystemTime::now()),
                event: JobEvent::JobEnd {
                    job_state: JobState::Complete,
                    reason: EndReason::PhaseFailed(Phase::FirmwareUpdate),
                    statuses: [(Phase::Setup, 0)].into(),
                    elapsed_ms: 5,
                },
            },
        ];
        let text: String = records.iter().map(|r| r.to_json_line() + "\n").collect();
        assert!(text.contains(r#""type":"measurement""#) && text.contains(r#""value":null"#), "{text}");
        assert!(text.contains(r#""reason":"firmware_update_fail""#), "{text}");
        let back = EventRecord::parse_jsonl(&text).unwrap();
        assert_eq!(back[1], records[1]);
        assert!(matches!(back[0].event, JobEvent::Measurement { value, .. } if value.is_nan()));
    }

    #[test]
    fn end_reasons_use_testflinger_words() {
        for r in [EndReason::NormalExit, EndReason::PhaseFailed(Phase::Provision), EndReason::Cancelled] {
            assert_eq!(r.to_string().parse::<EndReason>().unwrap(), r);
        }
        assert_eq!(EndReason::PhaseFailed(Phase::Provision).to_string(), "provision_fail");
        assert!("nonsense_fail".parse::<EndReason>().is_err());
    }
}
