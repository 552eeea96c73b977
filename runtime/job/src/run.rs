//! The phase executor: runs a [`JobPlan`] in Testflinger's order with its skip and stop rules.
//!
//! 1. Before any phase: the job's secrets are checked (each at least 6 characters, each
//!    declared one given) and compiled into the job's redactor; the attachments archive is
//!    unpacked into `attachments/` and made read-only. A failure here is a [`JobError`] and
//!    nothing runs, not even cleanup (Testflinger's agent would still run cleanup after a
//!    refused archive; here nothing has touched the device yet, so there is nothing to clean).
//! 2. `setup`, `provision`, `firmware_update`, `test`, `allocate`, `reserve`, in order. A
//!    phase the plan skips is announced as skipped. A phase that ends with a non-zero status
//!    stops the job — no later phase but cleanup runs — unless it is `test` (reference §2.4:
//!    a failed test phase does not stop `allocate` and `reserve`). A cancel ends the running
//!    phase at once (status 247) and stops the job; so does the job running out of time.
//! 3. `cleanup`, always (when it has a plugin), with its [reserved budget](crate::timeouts),
//!    even after a cancel or a timeout, and not cancellable: the point of cleanup is to leave
//!    the device usable. (To abandon it too, drop the `run_job` future: the running guest is
//!    dropped with it.)
//! 4. The artifacts directory is packed to `artifacts.tar.gz` in the job directory, when it is
//!    not empty (every secret form masked in file contents and names, as in the output), and
//!    the job ends `complete`, or `cancelled` if a cancel stopped it.
//!
//! Every event goes through the job's redactor, then to the caller's sink (once it is ready
//! for it: a slow sink slows the guest), to the results builder and to the job's
//! [transcript](crate::transcript) on disk, in that order, with one sequence of numbers. No
//! event and no output is kept in memory past its phase's redaction hold-back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use phasebox_jobspec::Phase;
use phasebox_sandbox::{CancellationToken, PhaseEnd, PhaseEvent, Secret, Stop};
use serde::Serialize;

use crate::error::JobError;
use crate::events::{
    EndReason, EventRecord, JobEvent, JobSink, JobState, LogLevel, OutputStream, PhaseOutcome, SkipReason, ready,
    rfc3339,
};
use crate::plan::{ARTIFACTS_DIR, ATTACHMENTS_DIR, JobPlan, PhaseAction, PhaseRun};
use crate::redaction::JobRedactor;
use crate::results::{JobResults, ResultsBuilder};
use crate::status::{self, secs};
use crate::timeouts::{TimeoutSource, budget};
use crate::transcript::{JobTranscript, TRANSCRIPT_DIR, TranscriptWriter};

/// What a job runs with besides its plan: secret values and the attachments archive.
#[derive(Debug, Default)]
pub struct JobInputs {
    /// Secret values by name (the names of `test_data.secrets`, which phases declare in
    /// `phasebox.secrets`). Every value is redacted from everything the job emits, whichever
    /// phase reads it; each must have at least 6 characters.
    pub secrets: BTreeMap<String, Secret>,
    /// The job's attachments archive (Testflinger's `attachments.tar.gz`: `<phase>/<path>`
    /// entries). Required when the job has attachments.
    pub attachments: Option<AttachmentsArchive>,
}

/// A job that does not provision finds its device as the last job left it; when that job's
/// cleanup switched it off, it is switched on again first (see
/// [`restore_power`](crate::device::restore_power)). What was done, or why it could not be, is
/// logged in the first phase that runs, so the job's output says it.
async fn restore_device(job: &mut Job<'_>) {
    let plan = job.plan;
    let Some(dut) = plan.dut.clone() else { return };
    let provisions = plan.phases.iter().any(|p| p.phase == Phase::Provision && p.run().is_some());
    let Some(first) = plan.phases.iter().find(|p| p.run().is_some()).map(|p| p.phase) else { return };
    if provisions {
        return;
    }
    let (level, message) = match crate::device::restore_power(dut.as_ref(), crate::device::RESTORE_TIMEOUT).await {
        Ok(None) => return,
        Ok(Some(done)) => (LogLevel::Info, done),
        Err(why) => (LogLevel::Error, format!("the device is not usable: {why}")),
    };
    tracing::info!(job = %plan.job_id, "{message}");
    job.emitter.emit(JobEvent::Log { phase: first, level, message }).await;
}

/// Where the attachments archive is.
#[derive(Clone, Debug)]
pub enum AttachmentsArchive {
    /// A `.tar.gz` file.
    Path(PathBuf),
    /// The archive's bytes.
    Bytes(Vec<u8>),
}

/// How a job ended.
#[derive(Debug)]
pub struct JobOutcome {
    /// The job id.
    pub job_id: String,
    /// `complete`, or `cancelled` when a cancel stopped it.
    pub job_state: JobState,
    /// Why it ended.
    pub end_reason: EndReason,
    /// The seven phases, in order.
    pub phases: Vec<PhaseRecord>,
    /// The results (Testflinger's shape plus phasebox's), derived from the events. The texts
    /// (`output`, `serial`) are not held here, only in the transcript: a phase that ran has an
    /// empty entry (read its text with [`JobTranscript::output`]).
    pub results: JobResults,
    /// Every event and every phase's text, in the job directory.
    pub transcript: JobTranscript,
    /// The packed artifacts, when the artifacts directory was not empty.
    pub artifacts: Option<PackedArtifacts>,
    /// How long the job took.
    pub elapsed: Duration,
}

impl JobOutcome {
    /// Whether the job passed: it completed (not cancelled) and every phase that ran has
    /// status 0.
    pub fn passed(&self) -> bool {
        self.job_state == JobState::Complete && self.phases.iter().all(|p| p.status.unwrap_or(0) == 0)
    }

    /// The record of `phase`.
    pub fn phase(&self, phase: Phase) -> &PhaseRecord {
        self.phases.iter().find(|p| p.phase == phase).expect("an outcome holds all seven phases")
    }

    /// The status of `phase`, when it ran.
    pub fn status(&self, phase: Phase) -> Option<i32> {
        self.phase(phase).status
    }
}

/// What became of one phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhaseRecord {
    /// The phase.
    pub phase: Phase,
    /// Why it did not run; `None` when it ran.
    pub skipped: Option<SkipReason>,
    /// Its status code, when it ran.
    pub status: Option<i32>,
    /// How it ended, when it ran.
    pub outcome: Option<PhaseOutcome>,
    /// How it ended or why it was skipped, in words (redacted).
    pub reason: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// The artifacts archive.
#[derive(Clone, Debug)]
pub struct PackedArtifacts {
    /// `artifacts.tar.gz` in the job directory.
    pub path: PathBuf,
    /// What was stored and left out.
    pub stats: phasebox_archive::PackStats,
}

/// Runs `plan` (see the [module docs](self) for the order and rules). Events go to `sink` as
/// they happen. `cancel` stops the job: the running phase ends at once (a guest blocked in a
/// host call included), later phases are not run, cleanup runs.
///
/// An `Err` means no phase ran: a secret is too short or missing, or the attachments archive
/// is missing or refused. Once phases run, whatever happens is in the [`JobOutcome`].
///
/// A plan is meant to run once: its job directory keeps what the run left there.
pub async fn run_job(
    plan: &JobPlan,
    inputs: JobInputs,
    sink: &mut dyn JobSink,
    cancel: CancellationToken,
) -> Result<JobOutcome, JobError> {
    let redactor =
        JobRedactor::new(&inputs.secrets).map_err(|source| JobError::Secret { job: plan.job_id.clone(), source })?;
    for planned in &plan.phases {
        if let Some(run) = planned.run() {
            for name in &run.secrets {
                if !inputs.secrets.contains_key(name) {
                    return Err(JobError::MissingSecret {
                        job: plan.job_id.clone(),
                        phase: planned.phase,
                        name: name.clone(),
                    });
                }
            }
        }
    }
    prepare_attachments(plan, inputs.attachments).await?;

    let transcript = TranscriptWriter::create(&plan.job_dir, redactor.redactor()).map_err(|source| {
        JobError::JobDir { job: plan.job_id.clone(), path: plan.job_dir.join(TRANSCRIPT_DIR), source }
    })?;
    let started = Instant::now();
    let deadline = started + plan.job_timeout;
    let mut job = Job {
        plan,
        secrets: &inputs.secrets,
        emitter: Emitter { seq: 0, redactor, sink, results: ResultsBuilder::without_text(), transcript },
        records: Vec::new(),
    };
    tracing::info!(job = %plan.job_id, dir = %plan.job_dir.display(), "job starting");
    job.emitter
        .emit(JobEvent::JobStart {
            job_id: plan.job_id.clone(),
            job_queue: plan.job_queue.clone(),
            name: plan.name.clone(),
            device_info: plan.device_info.clone(),
            job_timeout_ms: plan.job_timeout.as_millis() as u64,
            cleanup_budget_ms: plan.cleanup_budget.as_millis() as u64,
            phases: plan.phases.iter().map(|p| p.info()).collect(),
        })
        .await;

    restore_device(&mut job).await;

    // Why the job stopped early, if it did: what later phases are skipped for, and the end.
    let mut stopped: Option<(SkipReason, EndReason)> = None;
    for planned in &plan.phases {
        let phase = planned.phase;
        let run = match &planned.action {
            PhaseAction::Skip(reason) => {
                job.skip(phase, *reason, reason.describe(phase)).await;
                continue;
            }
            PhaseAction::Run(run) => run,
        };
        if phase == Phase::Cleanup {
            let left = deadline.saturating_duration_since(Instant::now());
            let (timeout, clipped) =
                budget(phase, run.timeouts.timeout, left, plan.cleanup_budget).expect("cleanup always has its budget");
            // Not the job's token: a cancel has already stopped the job, and cleanup runs anyway.
            job.run_phase(phase, run, timeout, clipped, CancellationToken::new()).await;
            continue;
        }
        if let Some((skip, end)) = &stopped {
            let detail = match end {
                EndReason::PhaseFailed(failed) => format!("not run: {failed} failed"),
                _ => skip.describe(phase),
            };
            job.skip(phase, *skip, detail).await;
            continue;
        }
        if cancel.is_cancelled() {
            stopped = Some((SkipReason::Cancelled, EndReason::Cancelled));
            job.skip(phase, SkipReason::Cancelled, SkipReason::Cancelled.describe(phase)).await;
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((timeout, clipped)) = budget(phase, run.timeouts.timeout, left, plan.cleanup_budget) else {
            stopped = Some((SkipReason::JobTimeout, EndReason::JobTimeout));
            job.skip(phase, SkipReason::JobTimeout, SkipReason::JobTimeout.describe(phase)).await;
            continue;
        };
        let record = job.run_phase(phase, run, timeout, clipped, cancel.child_token()).await;
        stopped = match (record.status, record.outcome) {
            (Some(0), _) => None,
            (_, Some(PhaseOutcome::Cancelled)) => Some((SkipReason::Cancelled, EndReason::Cancelled)),
            (_, Some(PhaseOutcome::JobTimeout)) => Some((SkipReason::JobTimeout, EndReason::JobTimeout)),
            // Testflinger: a failed test phase does not stop allocate and reserve.
            _ if phase == Phase::Test => None,
            _ => Some((SkipReason::AfterFailure, EndReason::PhaseFailed(phase))),
        };
    }

    let artifacts = job.pack_artifacts().await;
    release_attachments(plan);
    let (job_state, end_reason) = match stopped {
        Some((SkipReason::Cancelled, _)) => (JobState::Cancelled, EndReason::Cancelled),
        Some((_, end)) => (JobState::Complete, end),
        None => (JobState::Complete, EndReason::NormalExit),
    };
    let elapsed = started.elapsed();
    let statuses = job.records.iter().filter_map(|r| r.status.map(|s| (r.phase, s))).collect();
    job.emitter.emit(JobEvent::JobEnd { job_state, reason: end_reason, statuses, elapsed_ms: ms(elapsed) }).await;
    tracing::info!(job = %plan.job_id, state = %job_state, reason = %end_reason, ms = ms(elapsed), "job ended");

    let Job { emitter, records, .. } = job;
    // The joined texts are redacted again as they are written (see the transcript module).
    let transcript = emitter.transcript.finish();
    Ok(JobOutcome {
        job_id: plan.job_id.clone(),
        job_state,
        end_reason,
        phases: records,
        results: emitter.results.finish(),
        transcript,
        artifacts,
        elapsed,
    })
}

struct Job<'a> {
    plan: &'a JobPlan,
    secrets: &'a BTreeMap<String, Secret>,
    emitter: Emitter<'a>,
    records: Vec<PhaseRecord>,
}

impl Job<'_> {
    async fn skip(&mut self, phase: Phase, reason: SkipReason, detail: String) {
        tracing::debug!(job = %self.plan.job_id, %phase, ?reason, "phase skipped");
        self.emitter.emit(JobEvent::PhaseSkipped { phase, reason, detail: detail.clone() }).await;
        self.records.push(PhaseRecord {
            phase,
            skipped: Some(reason),
            status: None,
            outcome: None,
            reason: self.emitter.redactor.redacted(&detail),
            elapsed: Duration::ZERO,
        });
    }

    /// Runs one phase with `timeout` (`clipped`: shortened to the job's budget) and records it.
    async fn run_phase(
        &mut self,
        phase: Phase,
        run: &PhaseRun,
        timeout: Duration,
        clipped: bool,
        cancel: CancellationToken,
    ) -> PhaseRecord {
        let mut grant = run.grant.clone();
        let mut limits = grant.limits().clone();
        limits.timeout = timeout;
        limits.output_timeout = run.timeouts.output_timeout;
        grant.set_limits(limits);

        tracing::info!(job = %self.plan.job_id, %phase, plugin = run.plugin.name(), ?timeout, "phase starting");
        self.emitter
            .emit(JobEvent::PhaseStart {
                phase,
                plugin: run.plugin.name().to_owned(),
                sha256: run.plugin.sha256().to_owned(),
                timeout_ms: ms(timeout),
                output_timeout_ms: ms(run.timeouts.output_timeout),
            })
            .await;
        let started = Instant::now();
        let (tx, mut rx) = phasebox_sandbox::channel();
        let mut streams = self.emitter.redactor.phase_streams(phase);
        let sandbox = &self.plan.sandbox;
        // The engine records the console only for plugins that do not read it themselves: two
        // readers of one console would each see part of it.
        let capture_stop = CancellationToken::new();
        let plugin_reads_console = grant.interfaces().any(|c| c == phasebox_sandbox::Capability::Console);
        let capture = match &self.plan.dut {
            Some(dut) if !plugin_reads_console => {
                Some(tokio::spawn(capture_serial(dut.clone(), tx.clone(), capture_stop.clone())))
            }
            _ => None,
        };
        let running = async {
            let report = sandbox.run_phase(&run.plugin, &grant, &run.input, self.secrets, tx, cancel).await;
            capture_stop.cancel();
            report
        };
        let emitter = &mut self.emitter;
        let forward = async {
            let mut released = Vec::new();
            while let Some(event) = rx.recv().await {
                translate(phase, event, &mut streams, &mut released);
                // A sink that is not ready holds this loop, the phase's event channel fills,
                // and the guest waits on its next write.
                for e in released.drain(..) {
                    emitter.emit(e).await;
                }
            }
        };
        let (report, ()) = tokio::join!(running, forward);
        if let Some(capture) = capture {
            let _ = capture.await;
        }
        for event in streams.finish() {
            self.emitter.emit(event).await;
        }

        let (status, outcome, reason, elapsed, output_bytes) = match report {
            Ok(report) => {
                let (status, outcome) = status::classify(&report.end, clipped);
                let reason = match (&report.end, outcome) {
                    (_, PhaseOutcome::JobTimeout) => format!(
                        "stopped: the job's time ran out ({} job_timeout, {} kept for cleanup)",
                        secs(self.plan.job_timeout),
                        secs(self.plan.cleanup_budget)
                    ),
                    (end, _) => end.to_string(),
                };
                if let Some(line) = stop_line(&report.end, outcome, run, timeout) {
                    self.emitter.emit(JobEvent::Output { phase, stream: OutputStream::Engine, data: line }).await;
                }
                (status, outcome, reason, report.elapsed, report.output_bytes)
            }
            Err(e) => {
                let reason = format!("the phase could not start: {e}");
                let line = format!("\nERROR: {reason}\n");
                self.emitter.emit(JobEvent::Output { phase, stream: OutputStream::Engine, data: line }).await;
                (status::ENGINE_ERROR, PhaseOutcome::EngineError, reason, started.elapsed(), 0)
            }
        };
        tracing::info!(job = %self.plan.job_id, %phase, status, ?outcome, ms = ms(elapsed), "phase ended");
        self.emitter
            .emit(JobEvent::PhaseEnd {
                phase,
                status,
                outcome,
                reason: reason.clone(),
                elapsed_ms: ms(elapsed),
                output_bytes,
            })
            .await;
        let record = PhaseRecord {
            phase,
            skipped: None,
            status: Some(status),
            outcome: Some(outcome),
            reason: self.emitter.redactor.redacted(&reason),
            elapsed,
        };
        self.records.push(record.clone());
        record
    }

    /// Packs `artifacts/` to `artifacts.tar.gz` when it is not empty (Testflinger uploads no
    /// archive for an empty directory). A failure is logged and leaves no archive: the job's
    /// result does not depend on it.
    async fn pack_artifacts(&mut self) -> Option<PackedArtifacts> {
        let dir = self.plan.job_dir.join(ARTIFACTS_DIR);
        // A phase could not have replaced `artifacts/` itself, but nothing here follows a link.
        let is_dir = dir.symlink_metadata().is_ok_and(|m| m.is_dir());
        let has_entries = is_dir && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(false);
        if !has_entries {
            return None;
        }
        let path = self.plan.job_dir.join("artifacts.tar.gz");
        let target = path.clone();
        // The artifacts are the job's output too: contents and names are redacted.
        let redactor = self.emitter.redactor.redactor().cloned();
        let packed = tokio::task::spawn_blocking(move || -> Result<_, String> {
            // Created anew, never opened through whatever a phase may have left at that name.
            match std::fs::remove_file(&target) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("{}: {e}", target.display())),
                _ => {}
            }
            let file = std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(|e| format!("{}: {e}", target.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let stats = phasebox_archive::pack_artifacts_redacted(&dir, &mut out, redactor.as_ref())
                .map_err(|e| e.to_string())?;
            std::io::Write::flush(&mut out).map_err(|e| format!("{}: {e}", target.display()))?;
            Ok(stats)
        })
        .await;
        let stats = match packed {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                let e = self.emitter.redactor.redacted(&e);
                tracing::warn!(job = %self.plan.job_id, error = ?e, "cannot pack the artifacts");
                return None;
            }
            Err(e) => {
                tracing::warn!(job = %self.plan.job_id, error = %e, "packing the artifacts panicked");
                return None;
            }
        };
        self.emitter
            .emit(JobEvent::Artifacts {
                files: stats.files,
                bytes: stats.bytes,
                skipped: stats.skipped.iter().map(|s| format!("{}: {}", s.path.display(), s.reason)).collect(),
            })
            .await;
        Some(PackedArtifacts { path, stats })
    }
}

/// The line Testflinger's agent appends to a phase's output when it stops the phase, or
/// phasebox's equivalent for what Testflinger has no words for.
fn stop_line(end: &PhaseEnd, outcome: PhaseOutcome, run: &PhaseRun, timeout: Duration) -> Option<String> {
    let line = match (end, outcome) {
        (_, PhaseOutcome::JobTimeout) => format!("ERROR: Job timeout reached! ({})", secs(timeout)),
        (PhaseEnd::Stopped(Stop::Timeout(d)), _) => match run.timeouts.timeout_source {
            TimeoutSource::GlobalTimeout | TimeoutSource::DefaultGlobalTimeout => {
                format!("ERROR: Global timeout reached! ({})", secs(*d))
            }
            _ => format!("ERROR: Phase timeout reached! ({})", secs(*d)),
        },
        (PhaseEnd::Stopped(Stop::OutputTimeout(d)), _) => format!("ERROR: Output timeout reached! ({})", secs(*d)),
        (PhaseEnd::Stopped(Stop::Cancelled), _) => "Job cancellation was requested, exiting.".to_owned(),
        (PhaseEnd::Stopped(stop), _) => format!("ERROR: the phase {stop}"),
        (PhaseEnd::Trapped { .. }, _) => format!("ERROR: the plugin {end}"),
        _ => return None,
    };
    Some(format!("\n{line}\n"))
}

/// A sandbox event as job events, appended to `out`: output and log lines through the phase's
/// streams (which may hold them back for now, or release earlier ones), the rest as it is.
fn translate(phase: Phase, event: PhaseEvent, streams: &mut crate::redaction::PhaseStreams, out: &mut Vec<JobEvent>) {
    use phasebox_sandbox::events::Stream;
    let event = match event {
        PhaseEvent::Output { stream, data, .. } => {
            let stream = match stream {
                Stream::Stdout => OutputStream::Stdout,
                Stream::Stderr => OutputStream::Stderr,
            };
            return streams.output(stream, &data, out);
        }
        PhaseEvent::Serial { data, .. } => return streams.output(OutputStream::Serial, &data, out),
        PhaseEvent::Log { level, message, .. } => return streams.log(level.into(), &message, out),
        PhaseEvent::Case(c) => JobEvent::Case {
            phase,
            suite: c.suite,
            name: c.name,
            status: c.status.into(),
            duration_ms: c.duration_ms,
            message: c.message,
        },
        PhaseEvent::Measurement(m) => JobEvent::Measurement { phase, name: m.name, value: m.value, unit: m.unit },
        PhaseEvent::Capability(c) => JobEvent::Capability {
            phase,
            grant: c.grant,
            call: c.call,
            allowed: c.allowed,
            reason: c.reason,
            duration_ms: c.duration_ms,
        },
        PhaseEvent::Progress { handle, bytes } => JobEvent::Capability {
            phase,
            grant: handle,
            call: format!("progress: {bytes} bytes"),
            allowed: true,
            reason: None,
            duration_ms: None,
        },
    };
    out.push(event);
}

/// How long the console must stay quiet after a phase ends before its serial log is closed.
const SERIAL_DRAIN: Duration = Duration::from_millis(500);

/// Records the device's console as the phase's serial log until `stop`: reads whatever the
/// console prints and sends it as [`PhaseEvent::Serial`], reopening the console if it drops (a
/// console server may close the connection across a power cycle). A device without a console
/// ends it at once.
async fn capture_serial(
    dut: std::sync::Arc<dyn phasebox_sandbox::device::Dut>,
    tx: phasebox_sandbox::events::EventSender,
    stop: CancellationToken,
) {
    use phasebox_sandbox::device::DeviceFailure;
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = dut.console() => opened,
        };
        let mut session = match opened {
            Ok(session) => session,
            Err(DeviceFailure::NotConfigured) => return,
            Err(e) => {
                tracing::debug!(error = %e, "serial capture: console not available, retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut drain_until: Option<Instant> = None;
        loop {
            // After the phase ends, what the device printed just before still belongs to it:
            // keep reading until the console has been quiet for SERIAL_DRAIN.
            let draining = stop.is_cancelled();
            if draining {
                // A console that never goes quiet (a boot loop) ends the log anyway.
                let until = *drain_until.get_or_insert_with(|| Instant::now() + SERIAL_DRAIN * 4);
                if Instant::now() >= until {
                    return;
                }
            }
            let read = if draining {
                session.read(64 * 1024, SERIAL_DRAIN).await
            } else {
                tokio::select! {
                    _ = stop.cancelled() => continue,
                    read = session.read(64 * 1024, Duration::from_secs(1)) => read,
                }
            };
            match read {
                Ok(data) if !data.is_empty() => {
                    let event = PhaseEvent::Serial { data: data.into(), at: SystemTime::now() };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(DeviceFailure::TimedOut) if draining => return,
                Ok(_) | Err(DeviceFailure::TimedOut) => {}
                Err(_) if draining => return,
                Err(_) => break,
            }
        }
    }
}

/// Numbers, redacts and hands out every event.
struct Emitter<'a> {
    seq: u64,
    redactor: JobRedactor,
    sink: &'a mut dyn JobSink,
    results: ResultsBuilder,
    transcript: TranscriptWriter,
}

impl Emitter<'_> {
    /// Redacts `event`, waits until the sink can take it, then hands it to the sink, the
    /// results and the transcript.
    async fn emit(&mut self, mut event: JobEvent) {
        let redactor = &self.redactor;
        event.map_strings(&mut |s| redactor.redact(s));
        let record = EventRecord { seq: self.seq, time: rfc3339(SystemTime::now()), event };
        self.seq += 1;
        ready(&mut *self.sink).await;
        self.sink.event(&record);
        self.results.event(&record);
        self.transcript.record(&record);
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Unpacks the attachments archive into `attachments/` (replacing the empty directories the
/// plan created for the mounts), creates any planned mount source it lacks, and makes the tree
/// read-only. Nothing from a refused archive is left.
async fn prepare_attachments(plan: &JobPlan, archive: Option<AttachmentsArchive>) -> Result<(), JobError> {
    let job = || plan.job_id.clone();
    let Some(archive) = archive else {
        if plan.attachment_phases.is_empty() {
            return Ok(());
        }
        let phases = plan.attachment_phases.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
        return Err(JobError::MissingAttachments { job: job(), phases });
    };
    let dest = plan.job_dir.join(ATTACHMENTS_DIR);
    let sources: Vec<PathBuf> = plan.attachment_sources.iter().map(|s| plan.job_dir.join(s)).collect();
    let job_id = plan.job_id.clone();
    let unpacked = tokio::task::spawn_blocking(move || -> Result<phasebox_archive::Unpacked, JobError> {
        let dir_err = |path: &Path, source| JobError::JobDir { job: job_id.clone(), path: path.to_owned(), source };
        // Only the plan's empty mount directories are there: no phase has run yet.
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| dir_err(&dest, e))?;
        }
        let limits = phasebox_archive::Limits::default();
        let unpacked = match archive {
            AttachmentsArchive::Path(p) => {
                let file = std::fs::File::open(&p).map_err(|source| JobError::AttachmentsFile {
                    job: job_id.clone(),
                    path: p.clone(),
                    source,
                })?;
                phasebox_archive::unpack_attachments(std::io::BufReader::new(file), &dest, &limits)
            }
            AttachmentsArchive::Bytes(b) => phasebox_archive::unpack_attachments(b.as_slice(), &dest, &limits),
        }
        .map_err(|source| JobError::Attachments { job: job_id.clone(), source })?;
        for s in &sources {
            std::fs::create_dir_all(s).map_err(|e| dir_err(s, e))?;
        }
        phasebox_archive::make_read_only(&dest).map_err(|e| dir_err(&dest, std::io::Error::other(e.to_string())))?;
        Ok(unpacked)
    })
    .await
    .map_err(|e| JobError::JobDir {
        job: job(),
        path: plan.job_dir.join(ATTACHMENTS_DIR),
        source: std::io::Error::other(e.to_string()),
    })??;
    tracing::info!(job = %plan.job_id, files = unpacked.files, bytes = unpacked.bytes, "attachments unpacked");
    Ok(())
}

/// Gives write permission back to the attachments tree, so that whoever owns the job directory
/// can delete it.
fn release_attachments(plan: &JobPlan) {
    let dir = plan.job_dir.join(ATTACHMENTS_DIR);
    if dir.is_dir()
        && let Err(e) = phasebox_archive::make_writable(&dir)
    {
        tracing::warn!(job = %plan.job_id, error = %e, "cannot make the attachments writable again");
    }
}
