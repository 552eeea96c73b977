//! The shipper: turns a running job's event stream into what Testflinger's server expects, in
//! the order Testflinger's agent posts it (reference §2.4–2.7):
//!
//! - before each phase, `{"job_state": <phase>}` and the agent's `state` — also for a phase
//!   the job's data skips, never for `cleanup`, and not for phases left out after a failure or
//!   a cancel (Testflinger's agent leaves its phase loop there);
//! - output (`stdout`, `stderr` and the engine's own lines) and the serial console as numbered
//!   fragments of the `output` and `serial` logs, one counter per log per job, from 0, across
//!   phases; text is batched for about a second, and sent at once when the phase ends;
//! - after each phase that ran, the cumulative `{"status": {...}}`, and after `provision` a
//!   provision log entry;
//! - at the end, the artifacts archive, then `{"status": {...}, "job_state": ...}`.
//!
//! The job engine calls its sink between guest steps, so the sink ([`ChannelSink`]) only hands
//! each record to this task over a bounded channel. Everything goes out through the DUT's
//! [outbox](crate::outbox), which keeps the order and spools across outages. Every queue on
//! the way is bounded — the engine's from the guest, this task's, the outbox's — so a server
//! that answers slowly slows the guest down (its writes wait) instead of filling memory; a
//! server that does not answer at all makes the outbox spool to disk. The job record is
//! kept current (phase, statuses, the next fragment numbers) so that an agent restarted after
//! a crash can report the job's end without reusing a fragment number.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use phasebox_client::{Client, LogFragment, LogType};
use phasebox_job::events::{EndReason, PhaseOutcome};
use phasebox_job::{EventRecord, JobEvent, JobSink, OutputStream, Phase, SkipReason};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, PollSender};

use crate::Observer;
use crate::delivery::Delivery;
use crate::outbox::Outbox;
use crate::spool::{JobRecord, RecordFile};

/// How long output waits in a batch at most.
const BATCH_WINDOW: Duration = Duration::from_secs(1);
/// A batch this large is sent at once.
const BATCH_BYTES: usize = 256 * 1024;

/// What the shipper task receives.
pub(crate) enum ShipMsg {
    /// An event of the job (already redacted by the engine).
    Event(EventRecord),
    /// A line of the agent's own for a phase's output (already free of secrets: the agent
    /// writes only its own words there); `None`: the phase running, or the last one.
    Note { phase: Option<Phase>, text: String },
    /// The job is over: send what is left, the artifacts, the final result.
    Finish(Finish),
}

/// The end of a job.
pub(crate) struct Finish {
    /// `complete` or `cancelled`.
    pub job_state: String,
    /// A status to record for a phase the agent failed itself (the job could not start).
    pub extra_status: Option<(Phase, i32)>,
    /// The artifacts archive to upload before the final result.
    pub artifacts: Option<PathBuf>,
    /// Answered once everything is queued in the outbox.
    pub done: oneshot::Sender<()>,
}

/// How many messages wait for the shipper at most. Output records are at most a few KiB
/// (one guest write), so this is about the memory a DUT's job holds between the engine and
/// the shipper; when it is full the job waits.
pub(crate) const SHIP_QUEUE: usize = 64;

/// The job's sink: hands every record to the shipper task, and to the observer. It is ready
/// while the shipper's queue has room: a shipper held up by a slow server holds the job up.
pub(crate) struct ChannelSink {
    tx: PollSender<ShipMsg>,
    dut: Arc<str>,
    observer: Option<Arc<dyn Observer>>,
}

impl JobSink for ChannelSink {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A shipper that is gone (the job is being abandoned) takes anything: it is dropped.
        self.tx.poll_reserve(cx).map(drop)
    }

    fn event(&mut self, record: &EventRecord) {
        if let Some(o) = &self.observer {
            o.job_event(&self.dut, record);
        }
        let _ = self.tx.send_item(ShipMsg::Event(record.clone()));
    }
}

/// What the shipper needs to know about its job.
pub(crate) struct ShipperSetup {
    pub job_id: String,
    pub dut: Arc<str>,
    pub outbox: Outbox,
    pub record_file: RecordFile,
    pub record: JobRecord,
    /// Testflinger's `device_info`, sent with the first job state.
    pub device_info: Map<String, Value>,
    /// Cancelled by the shipper when the pre-phase check finds the job cancelled.
    pub cancel: CancellationToken,
    /// Set for the Testflinger protocol: read the job's state before posting each phase's
    /// (as Testflinger's agent does), so a cancel is not overwritten by the next phase's state.
    pub check_before_phase: Option<Client>,
    pub heartbeat: Duration,
    pub observer: Option<Arc<dyn Observer>>,
    /// Set when the job has a `job_status_webhook`: its status events go to the server.
    pub webhook: Option<Webhook>,
}

/// Testflinger's status events (its agent's `event_emitter`): when a job names a
/// `job_status_webhook`, every event appends `{event_name, timestamp, detail}` to the job's list
/// and the whole list so far is posted to `/v1/job/<id>/events`, which forwards it.
pub(crate) struct Webhook {
    /// The job's `job_status_webhook`.
    pub url: String,
    /// The job's queue.
    pub job_queue: String,
    /// The events so far.
    pub events: Vec<Value>,
}

/// Starts the shipper task; returns the sink to give the job, the sender for notes and the
/// end, and the task.
pub(crate) fn start(setup: ShipperSetup) -> (ChannelSink, mpsc::Sender<ShipMsg>, tokio::task::JoinHandle<JobRecord>) {
    let (tx, rx) = mpsc::channel(SHIP_QUEUE);
    let sink =
        ChannelSink { tx: PollSender::new(tx.clone()), dut: setup.dut.clone(), observer: setup.observer.clone() };
    let shipper = Shipper {
        output: Batch::default(),
        serial: Batch::default(),
        device_info: Some(setup.device_info.clone()),
        state: "setup".to_owned(),
        last_state_post: Instant::now(),
        setup,
    };
    (sink, tx, tokio::spawn(shipper.run(rx)))
}

#[derive(Default)]
struct Batch {
    phase: Option<Phase>,
    text: String,
    /// The time of its first text (RFC 3339), the fragment's timestamp.
    time: String,
    since: Option<Instant>,
}

struct Shipper {
    setup: ShipperSetup,
    output: Batch,
    serial: Batch,
    /// Sent with the first job state, then `None`.
    device_info: Option<Map<String, Value>>,
    /// The agent state last posted (a phase name), re-posted as the heartbeat.
    state: String,
    last_state_post: Instant,
}

impl Shipper {
    async fn run(mut self, mut rx: mpsc::Receiver<ShipMsg>) -> JobRecord {
        loop {
            let flush_at = [self.output.since, self.serial.since].into_iter().flatten().min().map(|t| t + BATCH_WINDOW);
            let heartbeat_at = self.last_state_post + self.setup.heartbeat;
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                () = sleep_until(flush_at) => {
                    self.flush_due().await;
                    continue;
                }
                () = tokio::time::sleep_until(heartbeat_at) => {
                    self.post_agent_state().await;
                    continue;
                }
            };
            match msg {
                Some(ShipMsg::Event(record)) => self.event(record).await,
                Some(ShipMsg::Note { phase, text }) => {
                    let current = self.setup.record.phase.as_deref().and_then(|p| p.parse().ok());
                    let phase = phase.or(current).unwrap_or(Phase::Setup);
                    self.add(LogType::Output, phase, &text, None).await;
                }
                Some(ShipMsg::Finish(finish)) => {
                    self.finish(finish).await;
                    break;
                }
                // The job was abandoned: send what there is; the record stays for the next start.
                None => {
                    self.flush(LogType::Output).await;
                    self.flush(LogType::Serial).await;
                    break;
                }
            }
        }
        self.setup.record
    }

    /// Appends a status event and posts the list so far, when the job has a webhook.
    async fn status_event(&mut self, name: String, detail: String) {
        let Some(hook) = self.setup.webhook.as_mut() else { return };
        hook.events.push(json!({
            "event_name": name,
            "timestamp": phasebox_job::events::rfc3339(std::time::SystemTime::now()),
            "detail": detail,
        }));
        let body = json!({
            "agent_id": self.setup.dut.to_string(),
            "job_queue": hook.job_queue,
            "job_status_webhook": hook.url,
            "events": hook.events,
        });
        self.push(Delivery::JobEvents { job_id: self.setup.job_id.clone(), body }).await;
    }

    /// The status events a record stands for (Testflinger's event names).
    async fn status_events_of(&mut self, event: &JobEvent) {
        if self.setup.webhook.is_none() {
            return;
        }
        match event {
            JobEvent::JobStart { .. } => self.status_event("job_start".into(), String::new()).await,
            JobEvent::PhaseStart { phase, .. } => self.status_event(format!("{phase}_start"), String::new()).await,
            JobEvent::PhaseEnd { phase, status, outcome, reason, .. } => {
                match outcome {
                    PhaseOutcome::Timeout | PhaseOutcome::JobTimeout => {
                        self.status_event("global_timeout".into(), reason.clone()).await
                    }
                    PhaseOutcome::OutputTimeout => self.status_event("output_timeout".into(), reason.clone()).await,
                    PhaseOutcome::Cancelled => self.status_event("cancelled".into(), reason.clone()).await,
                    _ => {}
                }
                if *status == 0 {
                    self.status_event(format!("{phase}_success"), String::new()).await;
                } else if *outcome == PhaseOutcome::InfraError {
                    // Testflinger's name for a device that could not be recovered (exit 46).
                    self.status_event("recovery_fail".into(), reason.clone()).await;
                } else {
                    self.status_event(format!("{phase}_fail"), reason.clone()).await;
                }
            }
            JobEvent::JobEnd { reason, .. } => {
                if *reason == EndReason::NormalExit {
                    self.status_event("normal_exit".into(), String::new()).await;
                }
                self.status_event("job_end".into(), reason.to_string()).await;
            }
            _ => {}
        }
    }

    async fn event(&mut self, record: EventRecord) {
        self.status_events_of(&record.event).await;
        match record.event {
            JobEvent::PhaseStart { phase, .. } => self.phase_begins(phase, true).await,
            JobEvent::PhaseSkipped { phase, reason, .. } => {
                // Testflinger posts a state for a phase its data skips, but leaves its phase
                // loop after a failure or a cancel.
                let announced =
                    !matches!(reason, SkipReason::AfterFailure | SkipReason::Cancelled | SkipReason::JobTimeout);
                if announced {
                    self.phase_begins(phase, false).await;
                }
            }
            JobEvent::Output { phase, stream, data } => {
                let log = if stream == OutputStream::Serial { LogType::Serial } else { LogType::Output };
                self.add(log, phase, &data, Some(record.time)).await;
            }
            JobEvent::PhaseEnd { phase, status, .. } => {
                self.flush(LogType::Output).await;
                self.flush(LogType::Serial).await;
                self.setup.record.status.insert(phase.as_str().to_owned(), status);
                self.save_record();
                self.push(Delivery::Result {
                    job_id: self.setup.job_id.clone(),
                    body: json!({ "status": self.status() }),
                })
                .await;
                if phase == Phase::Provision {
                    let detail = if status == 0 { "provision_success" } else { "provision_fail" };
                    self.push(Delivery::ProvisionLog {
                        agent: self.setup.dut.to_string(),
                        body: json!({ "job_id": self.setup.job_id, "exit_code": status, "detail": detail }),
                    })
                    .await;
                }
            }
            JobEvent::JobEnd { .. } => {
                self.flush(LogType::Output).await;
                self.flush(LogType::Serial).await;
            }
            JobEvent::JobStart { .. }
            | JobEvent::Log { .. }
            | JobEvent::Case { .. }
            | JobEvent::Measurement { .. }
            | JobEvent::Capability { .. }
            | JobEvent::Artifacts { .. } => {}
        }
    }

    /// Before a phase: what is buffered goes out, then the job state and agent state (never
    /// for cleanup, which Testflinger does not post).
    async fn phase_begins(&mut self, phase: Phase, runs: bool) {
        self.flush(LogType::Output).await;
        self.flush(LogType::Serial).await;
        self.setup.record.phase = Some(phase.as_str().to_owned());
        self.save_record();
        if phase == Phase::Cleanup {
            return;
        }
        if runs && let Some(client) = &self.setup.check_before_phase {
            let check = tokio::time::timeout(Duration::from_secs(2), client.job_state(&self.setup.job_id)).await;
            if let Ok(Ok(state)) = check
                && state == "cancelled"
            {
                tracing::info!(dut = %self.setup.dut, job_id = %self.setup.job_id, "job cancelled on the server");
                self.setup.cancel.cancel();
            }
        }
        if self.setup.cancel.is_cancelled() {
            // Posting the phase would overwrite the server's `cancelled`.
            return;
        }
        let mut body = json!({ "job_state": phase.as_str() });
        if let Some(info) = self.device_info.take() {
            body["device_info"] = Value::Object(info);
        }
        self.push(Delivery::Result { job_id: self.setup.job_id.clone(), body }).await;
        self.state = phase.as_str().to_owned();
        self.post_agent_state().await;
    }

    async fn post_agent_state(&mut self) {
        self.last_state_post = Instant::now();
        self.push(Delivery::AgentData {
            agent: self.setup.dut.to_string(),
            body: json!({ "state": self.state, "comment": "" }),
        })
        .await;
    }

    fn batch(&mut self, log: LogType) -> &mut Batch {
        match log {
            LogType::Output => &mut self.output,
            LogType::Serial => &mut self.serial,
        }
    }

    async fn add(&mut self, log: LogType, phase: Phase, text: &str, time: Option<String>) {
        if text.is_empty() {
            return;
        }
        if self.batch(log).phase.is_some_and(|p| p != phase) {
            self.flush(log).await;
        }
        let batch = self.batch(log);
        if batch.since.is_none() {
            batch.since = Some(Instant::now());
            batch.time = time.unwrap_or_else(|| phasebox_job::events::rfc3339(std::time::SystemTime::now()));
            batch.phase = Some(phase);
        }
        batch.text.push_str(text);
        if batch.text.len() >= BATCH_BYTES {
            self.flush(log).await;
        }
    }

    async fn flush_due(&mut self) {
        let now = Instant::now();
        for log in [LogType::Output, LogType::Serial] {
            if self.batch(log).since.is_some_and(|t| t + BATCH_WINDOW <= now) {
                self.flush(log).await;
            }
        }
    }

    /// Sends a batch as the next fragment of its log. The next number is saved in the record
    /// before the fragment is queued, so a number is never used twice.
    async fn flush(&mut self, log: LogType) {
        let batch = std::mem::take(self.batch(log));
        let Some(phase) = batch.phase else { return };
        if batch.text.is_empty() {
            return;
        }
        let counter = match log {
            LogType::Output => &mut self.setup.record.next_output,
            LogType::Serial => &mut self.setup.record.next_serial,
        };
        let fragment_number = *counter;
        *counter += 1;
        self.save_record();
        self.push(Delivery::Log {
            job_id: self.setup.job_id.clone(),
            log_type: log,
            fragment: LogFragment {
                fragment_number,
                timestamp: batch.time,
                phase: phase.as_str().to_owned(),
                log_data: batch.text,
            },
        })
        .await;
    }

    fn status(&self) -> Value {
        status_json(&self.setup.record.status)
    }

    async fn finish(&mut self, finish: Finish) {
        self.flush(LogType::Output).await;
        self.flush(LogType::Serial).await;
        if let Some((phase, status)) = finish.extra_status {
            self.setup.record.status.insert(phase.as_str().to_owned(), status);
        }
        if let Some(archive) = finish.artifacts {
            self.push(Delivery::Artifact { job_id: self.setup.job_id.clone(), archive }).await;
        }
        let mut body = json!({ "status": self.status(), "job_state": finish.job_state });
        if let Some(info) = self.device_info.take() {
            body["device_info"] = Value::Object(info);
        }
        self.push(Delivery::Result { job_id: self.setup.job_id.clone(), body }).await;
        self.setup.record.reported = true;
        self.save_record();
        let _ = finish.done.send(());
    }

    /// Queues `d` in the outbox, waiting while the outbox is full (the server is slow).
    async fn push(&self, d: Delivery) {
        self.setup.outbox.push(d).await;
    }

    fn save_record(&self) {
        if let Err(e) = self.setup.record_file.write(&self.setup.record) {
            tracing::warn!(dut = %self.setup.dut, error = %e, "cannot update the job record");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The statuses of a record, as `{"status": {...}}` wants them.
pub(crate) fn status_json(status: &BTreeMap<String, i32>) -> Value {
    Value::Object(status.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect())
}
