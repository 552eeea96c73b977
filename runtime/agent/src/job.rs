//! One claimed job on one DUT, from the claim to the final result (reference §2.4–2.9):
//!
//! 1. The job record is written (before anything else), and the agent's `job_id` posted.
//! 2. The secret values the server resolved into `test_data.secrets` are taken out of the job
//!    into [`JobInputs`] (held in memory only; the job the plugins see names the variables but
//!    carries no values). Attachments are downloaded when the server says they are complete.
//! 3. The job is planned on the DUT's runner (plugins, policy, device) and run; its events go to
//!    the [shipper](crate::shipper). A watcher notices a cancel on the server within a second
//!    (the phasebox event stream, or polling the job's state) and cancels the job's token.
//! 4. The device's configured cleanup (power-off, reset) runs; then the artifacts and the final
//!    result are queued, the record removed and the job directory deleted.
//!
//! A job that cannot start (the job text, a plugin the runner lacks, a grant the policy refuses,
//! a missing secret, refused attachments) ends at once with the reason in its `setup` output and
//! status 100 (Testflinger's code for an agent-side failure).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phasebox_client::{Backoff, ClaimedJob, ClientError};
use phasebox_job::events::PhaseOutcome;
use phasebox_job::{AttachmentsArchive, JobInputs, JobPlan, JobSpec, Phase, Secret, run_job, status};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Protocol;
use crate::ctx::{DutCtx, Shared};
use crate::delivery::{Delivery, worth_retrying};
use crate::job_id::{JobId, remove_job_dir};
use crate::outbox::Outbox;
use crate::shipper::{self, Finish, ShipMsg, ShipperSetup};
use crate::spool::{JobRecord, RecordFile};

/// How a job run ended, for the DUT loop.
#[derive(Debug, Default)]
pub(crate) struct JobEnd {
    /// The device's cleanup failed: the DUT should go offline with this comment.
    pub offline: Option<String>,
    /// The agent is stopping and the job was abandoned before it finished.
    pub abandoned: bool,
}

/// The prefix of the agent's own lines in a job's output.
const NOTE: &str = "phasebox agent:";

/// Runs a claimed job (the JSON `GET /v1/job` answered) on the DUT.
pub(crate) async fn run_claimed(
    shared: &Arc<Shared>,
    ctx: &DutCtx,
    outbox: &Outbox,
    records: &RecordFile,
    job_id: JobId,
    mut job: ClaimedJob,
) -> JobEnd {
    let queue = job.job_queue.clone();
    let dut = ctx.name.clone();
    tracing::info!(dut = %dut, job_id = %job_id, queue = ?queue, "job claimed");

    let record = JobRecord::new(job_id.clone(), queue, phasebox_job::events::rfc3339(std::time::SystemTime::now()));
    if let Err(e) = records.write(&record) {
        tracing::error!(dut = %dut, job_id = %job_id, error = %e, "cannot write the job record");
    }
    outbox.push(Delivery::AgentData { agent: dut.to_string(), body: json!({ "job_id": job_id.as_str() }) }).await;

    let cancel = CancellationToken::new();
    let check_before_phase = (shared.config.protocol == Protocol::Testflinger).then(|| shared.client.clone());
    let (mut sink, notes, shipper) = shipper::start(ShipperSetup {
        job_id: job_id.to_string(),
        dut: dut.clone(),
        outbox: outbox.clone(),
        record_file: records.clone(),
        record,
        device_info: ctx.runner.dut.device_info(),
        cancel: cancel.clone(),
        check_before_phase,
        heartbeat: shared.config.heartbeat,
        observer: shared.observer.clone(),
        webhook: job.job_status_webhook.as_deref().filter(|u| !u.is_empty()).map(|url| shipper::Webhook {
            url: url.to_owned(),
            job_queue: job.job_queue.clone(),
            events: Vec::new(),
        }),
    });
    let note = |phase: Option<Phase>, text: String| {
        let notes = notes.clone();
        async move {
            let _ = notes.send(ShipMsg::Note { phase, text: format!("\n{NOTE} {text}\n") }).await;
        }
    };

    // Secret values leave the job here; what remains names the variables only.
    let secrets = take_secrets(&mut job);
    let prepared = prepare(shared, ctx, &job_id, &job).await;
    let mut end = JobEnd::default();
    let mut extra_status = None;
    let mut artifacts = None;
    let mut job_state = "complete";
    let mut keep_record = false;
    // Whether the job's own cleanup phase already left the device as configured (the standard
    // `cleanup` plugin ran and passed): then the agent does not do it a second time.
    let mut cleaned_by_job = false;

    match prepared {
        Err(reason) => {
            tracing::warn!(dut = %dut, job_id = %job_id, %reason, "job cannot start");
            note(Some(Phase::Setup), format!("the job cannot start: {reason}")).await;
            extra_status = Some((Phase::Setup, status::ENGINE_ERROR));
        }
        Ok((plan, attachments)) => {
            // Aborted when this function returns or unwinds.
            let watcher = AbortOnDrop(tokio::spawn(watch_cancel(shared.clone(), job_id.to_string(), cancel.clone())));
            let inputs = JobInputs { secrets, attachments };
            // Boxed so that dropping it (abandoning the job at shutdown) drops the run.
            let mut running = Box::pin(run_job(&plan, inputs, &mut sink, cancel.clone()));
            let stop = shared.stop.clone();
            let mut deadlines: Option<(Instant, Instant)> = None;
            let outcome = loop {
                let cancel_at = deadlines.map(|d| d.0);
                let abandon_at = deadlines.map(|d| d.1);
                tokio::select! {
                    r = &mut running => break Some(r),
                    () = stop.cancelled(), if deadlines.is_none() => {
                        let grace = shared.config.grace_period;
                        let now = Instant::now();
                        deadlines = Some((now + grace / 2, now + grace * 4 / 5));
                        tracing::info!(dut = %dut, job_id = %job_id, ?grace, "stopping: the running job may finish within the grace period");
                    }
                    () = sleep_until(cancel_at), if cancel_at.is_some() && !cancel.is_cancelled() => {
                        note(None, "the agent is stopping: the job is cancelled (cleanup still runs)".into()).await;
                        cancel.cancel();
                    }
                    () = sleep_until(abandon_at), if abandon_at.is_some() => break None,
                }
            };
            drop(watcher);
            drop(running);
            match outcome {
                None => {
                    tracing::warn!(dut = %dut, job_id = %job_id, "stopping: job abandoned; the next start reports it and cleans up");
                    drop(sink);
                    drop(notes);
                    let _ = shipper.await;
                    return JobEnd { abandoned: true, ..JobEnd::default() };
                }
                Some(Err(e)) => {
                    tracing::warn!(dut = %dut, job_id = %job_id, error = %e, "job cannot start");
                    note(Some(Phase::Setup), format!("the job cannot start: {e}")).await;
                    extra_status = Some((Phase::Setup, status::ENGINE_ERROR));
                }
                Some(Ok(outcome)) => {
                    job_state = match outcome.job_state {
                        phasebox_job::JobState::Complete => "complete",
                        phasebox_job::JobState::Cancelled => "cancelled",
                    };
                    artifacts = outcome.artifacts.as_ref().map(|a| a.path.clone());
                    // Testflinger's agent takes a device offline when recovery failed (exit 46);
                    // phasebox's analogue is a phase that ended with an infrastructure error, the
                    // lab's fault: the device is quarantined until an operator looks at it.
                    if let Some(p) = outcome.phases.iter().find(|p| p.outcome == Some(PhaseOutcome::InfraError)) {
                        note(
                            Some(p.phase),
                            format!("{} ended with an infrastructure error: the device is taken offline", p.phase),
                        )
                        .await;
                        end.offline =
                            Some(format!("Set to offline by agent. Recovery failed during job '{job_id}' execution."));
                    }
                    cleaned_by_job = outcome
                        .results
                        .phasebox
                        .phases
                        .get(&Phase::Cleanup)
                        .is_some_and(|p| p.plugin.as_deref() == Some("cleanup") && p.status == Some(0));
                    tracing::info!(
                        dut = %dut, job_id = %job_id, state = job_state, reason = %outcome.end_reason,
                        ms = outcome.elapsed.as_millis() as u64, "job ended"
                    );
                }
            }
            // At shutdown the device's cleanup gets what is left before the job would be
            // abandoned; if it cannot finish, the next start does it (the record stays).
            let limit = match deadlines {
                Some((_, abandon_at)) => {
                    abandon_at.saturating_duration_since(Instant::now()).max(Duration::from_secs(1))
                }
                None => ctx.runner.cleanup_budget,
            };
            let cleaned = if cleaned_by_job { Ok(()) } else { crate::ctx::clean_device(ctx, limit).await.map(drop) };
            match cleaned {
                Ok(_) => {}
                Err(e) if deadlines.is_some() => {
                    tracing::warn!(dut = %dut, error = %e, "stopping: the device is cleaned up at the next start");
                    keep_record = true;
                }
                Err(e) => {
                    note(Some(Phase::Cleanup), format!("{e}; the device is taken offline")).await;
                    end.offline = Some(format!("{NOTE} {e}"));
                }
            }
        }
    }

    let (done, finished) = oneshot::channel();
    let _ = notes.send(ShipMsg::Finish(Finish { job_state: job_state.into(), extra_status, artifacts, done })).await;
    let _ = finished.await;
    drop(sink);
    drop(notes);
    let _ = shipper.await;
    // Everything is delivered or spooled (the archive moved into the spool): the record and
    // the job directory can go.
    outbox.barrier().await;
    if !keep_record {
        records.remove();
    }
    remove_job_dir(&ctx.work_dir, &job_id);
    outbox.push(Delivery::AgentData { agent: dut.to_string(), body: json!({ "job_id": "" }) }).await;
    if let Some(o) = &shared.observer {
        o.job_finished(&dut, job_id.as_str());
    }
    end
}

/// Takes the secret values out of `test_data.secrets`, leaving empty strings: the job the
/// plugins see names the variables and holds no value. Values the server could not resolve
/// (`""`) are left out; a phase that declared one then refuses to start, naming it.
fn take_secrets(job: &mut ClaimedJob) -> BTreeMap<String, Secret> {
    let mut secrets = BTreeMap::new();
    if let Some(Value::Object(map)) = job.other.get_mut("test_data").and_then(|t| t.get_mut("secrets")) {
        for (name, value) in map.iter_mut() {
            if let Value::String(s) = value {
                let taken = std::mem::take(s);
                if !taken.is_empty() {
                    secrets.insert(name.clone(), Secret::new(taken));
                }
            }
        }
    }
    secrets
}

/// Parses and plans the job and fetches its attachments; the reason it cannot start otherwise.
async fn prepare(
    shared: &Arc<Shared>,
    ctx: &DutCtx,
    job_id: &JobId,
    job: &ClaimedJob,
) -> Result<(JobPlan, Option<AttachmentsArchive>), String> {
    let text = serde_json::to_string(job).map_err(|e| format!("the job is not valid: {e}"))?;
    let spec = JobSpec::from_server_json(&text).map_err(|e| format!("the job is not valid: {e}"))?;
    remove_job_dir(&ctx.work_dir, job_id);
    let job_dir = job_id.dir_in(&ctx.work_dir);
    let mut plan = JobPlan::new(&spec, &ctx.runner, &ctx.plugins, &job_dir).map_err(|e| e.to_string())?;
    if let Some(device) = &ctx.device {
        // Also shows plugins the device's `cleanup_action`, which the standard cleanup plugin
        // carries out.
        plan.use_device(device.clone());
    }
    let complete = job.attachments_status.as_deref() == Some("complete");
    let attachments = if complete { Some(download_attachments(shared, job_id.as_str()).await?) } else { None };
    Ok((plan, attachments))
}

async fn download_attachments(shared: &Shared, job_id: &str) -> Result<AttachmentsArchive, String> {
    const ATTEMPTS: u32 = 5;
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match shared.client.get_attachments(job_id).await {
            Ok(bytes) => return Ok(AttachmentsArchive::Bytes(bytes.to_vec())),
            Err(e) if worth_retrying(&e) && retry.failures() + 1 < ATTEMPTS && !shared.stop.is_cancelled() => {
                let wait = retry.next_delay();
                tracing::warn!(job_id, error = %e, attempt = retry.failures(), "cannot download the attachments; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(format!("cannot download the attachments: {e}")),
        }
    }
}

/// Cancels `cancel` when the server says the job was cancelled: on a phasebox server from the
/// job's event stream (at once), otherwise by reading the job's state every `cancel_poll`.
async fn watch_cancel(shared: Arc<Shared>, job_id: String, cancel: CancellationToken) {
    if shared.config.protocol == Protocol::Phasebox {
        if crate::watch::event_stream(&shared.client, &job_id, &cancel).await {
            return;
        }
        tracing::debug!(job_id = %job_id, "the server has no event stream; polling the job's state");
    }
    loop {
        tokio::time::sleep(shared.config.cancel_poll).await;
        match shared.client.job_state(&job_id).await {
            Ok(state) if state == "cancelled" => {
                tracing::info!(job_id = %job_id, "job cancelled on the server");
                cancel.cancel();
                return;
            }
            Ok(_) => {}
            Err(ClientError::NotFound { .. }) => {}
            Err(e) => tracing::debug!(job_id = %job_id, error = %e, "cannot read the job's state"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
