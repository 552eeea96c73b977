//! The job's results, derived from its event stream.
//!
//! [`JobResults::to_json`] gives Testflinger's result shape (what `GET /v1/result/<id>`
//! returns, reference §3.4 ResultGet and §2.7), so tools that read Testflinger results read
//! these:
//!
//! ```json
//! { "job_state": "complete",
//!   "setup_status": 0, "setup_output": "…", "setup_serial": "",
//!   "test_status": 1,  "test_output": "…",  "test_serial": "",
//!   "device_info": {"agent_name": "rpi4-07", "device_ip": "10.0.0.5"},
//!   "phasebox": { … } }
//! ```
//!
//! `<phase>_status`, `<phase>_output` and `<phase>_serial` are present for each phase that ran
//! (Testflinger records nothing for a skipped phase). The `phasebox` key holds what Testflinger
//! has no place for ([`Structured`]): the job id and end reason, every phase's plugin, outcome
//! and end reason (skipped ones with why), the test suites with their cases, the measurements,
//! and the artifacts.
//!
//! [`ResultsBuilder`] is a [`JobSink`]: fed the event stream (live, or read back from
//! `events.jsonl`), it builds exactly these results.

use std::collections::BTreeMap;
use std::io::{self, Write};

use phasebox_jobspec::Phase;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::events::{
    CaseStatus, EndReason, EventRecord, JobEvent, JobSink, JobState, OutputStream, PhaseOutcome, SkipReason,
};
use crate::transcript::{JobTranscript, PhaseText};

/// A job's results: Testflinger's fields plus phasebox's structured results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobResults {
    /// `complete` or `cancelled`; `None` until the job ended.
    pub job_state: Option<JobState>,
    /// `<phase>_status` of each phase that ran.
    pub status: BTreeMap<Phase, i32>,
    /// `<phase>_output`: stdout, stderr and the engine's lines, in the order they came.
    pub output: BTreeMap<Phase, String>,
    /// `<phase>_serial`: the device's serial console during the phase.
    pub serial: BTreeMap<Phase, String>,
    /// `device_info`.
    pub device_info: Map<String, Value>,
    /// The `phasebox` key.
    pub phasebox: Structured,
}

/// phasebox's structured results (the `phasebox` key of the results).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Structured {
    /// The job id.
    pub job_id: String,
    /// Why the job ended (`normal_exit`, `<phase>_fail`, `cancelled`, `job_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// How long the job took, in ms.
    pub elapsed_ms: u64,
    /// Every phase, skipped or not.
    pub phases: BTreeMap<Phase, PhaseSummary>,
    /// Test suites in the order they were first reported.
    pub suites: Vec<Suite>,
    /// Measurements in the order they were reported.
    pub measurements: Vec<MeasurementRecord>,
    /// What was packed from the artifacts directory, when it was not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsSummary>,
}

/// What became of one phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    /// Why it did not run, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkipReason>,
    /// The plugin that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The plugin's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Its status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<PhaseOutcome>,
    /// How it ended (or why it was skipped), in words.
    pub reason: String,
    /// How long it ran, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

/// A test suite: the cases one phase reported under one suite name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    /// The phase that reported it.
    pub phase: Phase,
    /// The suite name.
    pub name: String,
    /// Its cases, in the order reported.
    pub cases: Vec<CaseRecord>,
}

impl Suite {
    /// Number of cases with `status`.
    pub fn count(&self, status: CaseStatus) -> usize {
        self.cases.iter().filter(|c| c.status == status).count()
    }

    /// Total duration of its cases, in ms.
    pub fn duration_ms(&self) -> u64 {
        self.cases.iter().map(|c| c.duration_ms).sum()
    }
}

/// One test case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// The case name.
    pub name: String,
    /// How it ended.
    pub status: CaseStatus,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// Why, or a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasurementRecord {
    /// The phase that reported it.
    pub phase: Phase,
    /// The suite the phase had last reported a case in, if any: the measurement's context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
}

/// What was packed from the artifacts directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactsSummary {
    /// Files stored.
    pub files: u64,
    /// Bytes of their contents.
    pub bytes: u64,
    /// Entries left out, with why.
    pub skipped: Vec<String>,
}

impl JobResults {
    /// Builds results from a whole event stream.
    pub fn from_events<'a>(records: impl IntoIterator<Item = &'a EventRecord>) -> Self {
        let mut b = ResultsBuilder::default();
        for r in records {
            b.event(r);
        }
        b.finish()
    }

    /// Testflinger's result shape, with the `phasebox` key (see the [module docs](self)).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(state) = self.job_state {
            m.insert("job_state".into(), state.to_string().into());
        }
        for (phase, status) in &self.status {
            m.insert(format!("{phase}_status"), (*status).into());
            let output = self.output.get(phase).cloned().unwrap_or_default();
            m.insert(format!("{phase}_output"), output.into());
            let serial = self.serial.get(phase).cloned().unwrap_or_default();
            m.insert(format!("{phase}_serial"), serial.into());
        }
        m.insert("device_info".into(), Value::Object(self.device_info.clone()));
        m.insert("phasebox".into(), serde_json::to_value(&self.phasebox).expect("results always serialize"));
        Value::Object(m)
    }

    /// [`JobResults::to_json`] as pretty-printed text.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).expect("results always serialize")
    }

    /// Writes [`JobResults::to_json_pretty`] to `out`, taking each phase's `output` and
    /// `serial` text from `transcript` a piece at a time (never whole in memory).
    pub fn write_json_pretty(&self, transcript: &JobTranscript, out: &mut impl Write) -> io::Result<()> {
        let Value::Object(fields) = self.to_json() else { unreachable!("the results are an object") };
        let texts: BTreeMap<String, (Phase, PhaseText)> = self
            .status
            .keys()
            .flat_map(|p| {
                [(format!("{p}_output"), (*p, PhaseText::Output)), (format!("{p}_serial"), (*p, PhaseText::Serial))]
            })
            .collect();
        out.write_all(b"{")?;
        for (i, (key, value)) in fields.iter().enumerate() {
            out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
            serde_json::to_writer(&mut *out, key)?;
            out.write_all(b": ")?;
            match texts.get(key).map(|(p, t)| transcript.open(*p, *t)).transpose()?.flatten() {
                Some(file) => {
                    out.write_all(b"\"")?;
                    crate::transcript::copy_json_string_contents(io::BufReader::new(file), out)?;
                    out.write_all(b"\"")?;
                }
                // Nested values as `to_string_pretty` lays them out, one level in (a JSON
                // string holds no raw newline, so every newline is layout).
                None => out.write_all(serde_json::to_string_pretty(value)?.replace('\n', "\n  ").as_bytes())?,
            }
        }
        out.write_all(if fields.is_empty() { b"}" } else { b"\n}" })
    }
}

/// Builds [`JobResults`] from events: a [`JobSink`] that accumulates each phase's output and
/// serial text, statuses, suites, cases and measurements.
#[derive(Debug)]
pub struct ResultsBuilder {
    results: JobResults,
    /// The suite each phase last reported a case in.
    current_suite: BTreeMap<Phase, String>,
    /// Whether output and serial text are accumulated (the engine keeps them on disk instead).
    keep_text: bool,
}

impl Default for ResultsBuilder {
    fn default() -> Self {
        ResultsBuilder { results: JobResults::default(), current_suite: BTreeMap::new(), keep_text: true }
    }
}

impl ResultsBuilder {
    /// A builder that leaves every phase's `output` and `serial` empty (the job engine's: the
    /// texts are in the job's [transcript](crate::transcript)).
    pub(crate) fn without_text() -> Self {
        ResultsBuilder { keep_text: false, ..ResultsBuilder::default() }
    }

    /// The results so far.
    pub fn results(&self) -> &JobResults {
        &self.results
    }

    /// The results.
    pub fn finish(self) -> JobResults {
        self.results
    }

    fn summary(&mut self, phase: Phase) -> &mut PhaseSummary {
        self.results.phasebox.phases.entry(phase).or_default()
    }
}

impl JobSink for ResultsBuilder {
    fn event(&mut self, record: &EventRecord) {
        let r = &mut self.results;
        match &record.event {
            JobEvent::JobStart { job_id, device_info, .. } => {
                r.phasebox.job_id = job_id.clone();
                r.device_info = device_info.clone();
            }
            JobEvent::PhaseStart { phase, plugin, sha256, .. } => {
                r.output.entry(*phase).or_default();
                r.serial.entry(*phase).or_default();
                let s = self.summary(*phase);
                s.plugin = Some(plugin.clone());
                s.sha256 = Some(sha256.clone());
                s.reason = "running".into();
            }
            JobEvent::PhaseSkipped { phase, reason, detail } => {
                let s = self.summary(*phase);
                s.skipped = Some(*reason);
                s.reason = detail.clone();
            }
            JobEvent::Output { .. } if !self.keep_text => {}
            JobEvent::Output { phase, stream, data } => {
                let text = match stream {
                    OutputStream::Serial => r.serial.entry(*phase).or_default(),
                    _ => r.output.entry(*phase).or_default(),
                };
                text.push_str(data);
            }
            JobEvent::Log { .. } | JobEvent::Capability { .. } => {}
            JobEvent::Case { phase, suite, name, status, duration_ms, message } => {
                let case = CaseRecord {
                    name: name.clone(),
                    status: *status,
                    duration_ms: *duration_ms,
                    message: message.clone(),
                };
                match r.phasebox.suites.iter_mut().find(|s| s.phase == *phase && s.name == *suite) {
                    Some(s) => s.cases.push(case),
                    None => r.phasebox.suites.push(Suite { phase: *phase, name: suite.clone(), cases: vec![case] }),
                }
                self.current_suite.insert(*phase, suite.clone());
            }
            JobEvent::Measurement { phase, name, value, unit } => {
                r.phasebox.measurements.push(MeasurementRecord {
                    phase: *phase,
                    suite: self.current_suite.get(phase).cloned(),
                    name: name.clone(),
                    value: value.is_finite().then_some(*value),
                    unit: unit.clone(),
                });
            }
            JobEvent::PhaseEnd { phase, status, outcome, reason, elapsed_ms, .. } => {
                r.status.insert(*phase, *status);
                let s = self.summary(*phase);
                s.status = Some(*status);
                s.outcome = Some(*outcome);
                s.reason = reason.clone();
                s.elapsed_ms = Some(*elapsed_ms);
            }
            JobEvent::Artifacts { files, bytes, skipped } => {
                r.phasebox.artifacts =
                    Some(ArtifactsSummary { files: *files, bytes: *bytes, skipped: skipped.clone() });
            }
            JobEvent::JobEnd { job_state, reason, elapsed_ms, .. } => {
                r.job_state = Some(*job_state);
                r.phasebox.end_reason = Some(*reason);
                r.phasebox.elapsed_ms = *elapsed_ms;
            }
        }
    }
}
