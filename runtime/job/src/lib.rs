//! # phasebox-job
//!
//! Runs a Testflinger job phase by phase in the sandbox. The pipeline:
//!
//! ```text
//! job text ──JobSpec::parse──▶ JobSpec ──JobPlan::new──▶ JobPlan ──run_job──▶ JobOutcome ──write_outputs──▶ out dir
//!  (jobspec crate: stage one)    (stage two: plugins,      (phases in order,     (results,       results.json junit.xml
//!                                 grants, timeouts —        redaction, events,    events,         events.jsonl
//!                                 every refusal here)       cleanup always)       artifacts)      artifacts.tar.gz
//! ```
//!
//! ```no_run
//! # async fn example() -> Result<(), phasebox_job::JobError> {
//! use std::path::Path;
//! use phasebox_job::*;
//!
//! let runner = RunnerConfig::from_file(Path::new("config/runner.toml"))?;
//! let plugins = PluginSet::load(&runner)?;                 // compile once per process
//! let spec = load_job(Path::new("config/jobs/hello.yaml"))?;
//! let job_dir = Path::new("/tmp/phasebox/job-1");
//! let plan = JobPlan::new(&spec, &runner, &plugins, job_dir)?;
//! let mut terminal = TerminalRenderer::stderr();
//! let outcome = run_job(&plan, JobInputs::default(), &mut terminal, CancellationToken::new()).await?;
//! terminal.finish();
//! write_outputs(&outcome, Path::new("out"))?;
//! std::process::exit(if outcome.passed() { 0 } else { 1 });
//! # }
//! ```
//!
//! - [`config`]: the runner's configuration ([`RunnerConfig`], TOML).
//! - [`PluginSet`]: the plugins a runner has, loaded once.
//! - [`plan`]: [`JobPlan::new`] — each phase's plugin, effective grant, standard mounts,
//!   timeouts; every refusal that can be made before running.
//! - [`timeouts`]: the timeout tree (job → phase → output-idle) and the cleanup budget.
//! - [`run`]: [`run_job`] — Testflinger's phase order, skip and stop rules, cleanup always,
//!   cancel, attachments in, artifacts out.
//! - [`status`]: the status code of each way a phase can end (247 for timeouts and cancels).
//! - [`events`]: the event stream ([`JobEvent`], [`EventRecord`], JSON Lines) and its sinks.
//! - [`transcript`]: every event and every phase's text, kept in the job directory (not in
//!   memory) while the job runs.
//! - [`results`]: Testflinger's result shape plus structured results, derived from the events;
//!   [`junit`]: their JUnit XML export.
//! - [`render`]: [`TerminalRenderer`], the live view `phasebox run` shows.
//!
//! Secrets: one redactor per job holds every secret value given in [`JobInputs`]; every event
//! is redacted before any sink sees it (a phase's stdout, stderr and log lines as one merged
//! stream and each stream on its own, after dropping terminal escapes so that what renders is
//! what is matched; the rest whole), so `events.jsonl`, `results.json`, `junit.xml` and the
//! terminal are all redacted; so are the contents, names and link targets in
//! `artifacts.tar.gz`. The terminal renderer shows control characters visibly rather than
//! passing them to the terminal.

#![deny(missing_docs)]

pub mod config;
pub mod defaults;
pub mod device;
pub mod error;
pub mod events;
pub mod junit;
mod outputs;
pub mod plan;
mod plugins;
mod redaction;
pub mod render;
pub mod results;
pub mod run;
pub mod status;
pub mod timeouts;
pub mod transcript;

pub use config::{DutConfig, RunnerConfig};
pub use device::DeviceDut;
pub use error::JobError;
pub use events::{
    CaseStatus, EndReason, EventRecord, JobEvent, JobSink, JobState, JsonlSink, LogLevel, NullSink, OutputStream,
    PhaseOutcome, SkipReason, Tee,
};
pub use junit::junit_xml;
pub use outputs::{WrittenOutputs, load_job, write_outputs};
pub use phasebox_jobspec::{JobSpec, Phase};
pub use phasebox_sandbox::{CancellationToken, Secret};
pub use plan::{JobPlan, PhaseRun, PlannedPhase};
pub use plugins::PluginSet;
pub use render::{RenderOptions, TerminalRenderer};
pub use results::{JobResults, ResultsBuilder};
pub use run::{AttachmentsArchive, JobInputs, JobOutcome, PackedArtifacts, PhaseRecord, run_job};
pub use transcript::{JobTranscript, PhaseText};
