//! One loop per device under test (DUT), each in its own task under a supervisor.
//!
//! A DUT's loop:
//!
//! 1. **Recovery.** If the DUT's job record says a job was running when the agent (or this
//!    DUT's task) stopped, the job is reported ended — a line in its output saying why, status
//!    100 for the phase it was in, `job_state: complete` — after whatever the spool still held
//!    for it.
//! 2. **Loading** the runner configuration, the device configuration and the plugins. A
//!    failure takes this DUT offline on the server (comment: the reason) and is retried with
//!    backoff; the other DUTs are not affected. Then the device's cleanup action (power-off,
//!    reset) runs if a job was interrupted.
//! 3. **Registration**: `POST /v1/agents/data/<name>` with `state: waiting`, the queues and
//!    location (an `offline` or `maintenance` state an operator set is kept).
//! 4. **The claim loop**: deliver the spool first; read the DUT's state on the server — `offline`
//!    and `maintenance` take no jobs, `restart` reloads the DUT (as Testflinger's agent exits to
//!    be restarted); re-post the state as a heartbeat when due; claim from the queues (only the
//!    restricted ones that have owners, if any) — waiting on the server (phasebox) or once per
//!    `poll_interval` (Testflinger); run the job.
//!
//! The supervisor starts the loop again if its task panics (recovery then reports the job it
//! was running), and owns the DUT's outbox, which outlives such restarts.

use std::sync::Arc;
use std::time::Duration;

use phasebox_client::{AgentData, Backoff, ClientError};
use phasebox_device::{Device, DeviceConfig};
use phasebox_job::{PluginSet, RunnerConfig};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{DutEntry, Protocol};
use crate::ctx::{DutCtx, Shared, clean_device};
use crate::delivery::Delivery;
use crate::error::AgentError;
use crate::job;
use crate::job_id::{JobId, remove_job_dir};
use crate::outbox::Outbox;
use crate::spool::{JobRecord, RecordFile, Spool};

/// The comment of a DUT the agent took offline because it stopped.
pub(crate) const STOPPED: &str = "phasebox agent: stopped";
const RESTARTING: &str = "phasebox agent: restarting";
const CONFIG_ERROR: &str = "phasebox agent: configuration error";

/// Reads the DUT's runner and device configurations and loads its plugins (compiling what
/// the engine has not compiled yet). Blocking.
fn load(shared: &Shared, entry: &DutEntry) -> Result<DutCtx, AgentError> {
    let err = |reason: String| AgentError::Dut { dut: entry.name.clone(), reason };
    let mut runner = RunnerConfig::from_file(&entry.runner).map_err(|e| err(e.to_string()))?;
    runner.dut.name = entry.name.clone();
    if let Some(device) = &entry.device {
        runner.device = Some(device.clone());
    }
    let device = match &runner.device {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| err(format!("device config {}: {e}", path.display())))?;
            let config = DeviceConfig::from_toml_str(&text)
                .map_err(|e| err(format!("device config {}: {e}", path.display())))?;
            let device = Device::new(config).map_err(|e| err(format!("device config {}: {e}", path.display())))?;
            // The device's public facts are plugin facts too (the runner's own win).
            for (k, v) in device.facts() {
                if k != "name" {
                    runner.dut.facts.entry(k).or_insert(v);
                }
            }
            Some(Arc::new(device))
        }
        None => None,
    };
    let sandbox = shared.sandboxes.get(&runner).map_err(|e| err(e.to_string()))?;
    let plugins = PluginSet::load_into(sandbox, &runner).map_err(|e| err(e.to_string()))?;
    let work_dir = shared.config.work_dir().join(&entry.name);
    std::fs::create_dir_all(&work_dir).map_err(|e| AgentError::io(&work_dir, e))?;
    Ok(DutCtx { name: entry.name.as_str().into(), runner, plugins, device, work_dir })
}

enum Exit {
    /// The agent is stopping.
    Stopped,
    /// The server asked for a restart: load the DUT again.
    Restart,
}

/// Runs one DUT until the agent stops: its outbox, and its loop, started again after a panic.
pub(crate) async fn supervise(shared: Arc<Shared>, entry: DutEntry) {
    let name = entry.name.clone();
    let dut_dir = shared.config.spool_dir.join(&name);
    let mut retry = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    let spool = loop {
        match Spool::open(&dut_dir) {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(dut = %name, error = %e, "cannot open the spool; the DUT waits");
                if !pause(&shared.stop, retry.next_delay()).await {
                    return;
                }
            }
        }
    };
    let (outbox, outbox_task) = Outbox::start(shared.client.clone(), spool, name.clone(), shared.hurry.clone());
    let records = RecordFile::new(&dut_dir);
    let mut panics = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let task = tokio::spawn(run(shared.clone(), entry.clone(), outbox.clone(), records.clone()));
        match task.await {
            Ok(Exit::Stopped) => break,
            Ok(Exit::Restart) => {
                tracing::info!(dut = %name, "restarting as the server asked");
                panics.reset();
            }
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into()),
                    Err(e) => e.to_string(),
                };
                tracing::error!(dut = %name, panic = %why, "the DUT's loop crashed; starting it again");
                if !pause(&shared.stop, panics.next_delay()).await {
                    break;
                }
            }
        }
        if shared.stop.is_cancelled() {
            break;
        }
    }
    outbox
        .push(Delivery::AgentData { agent: name.clone(), body: json!({ "state": "offline", "comment": STOPPED }) })
        .await;
    drop(outbox);
    let _ = outbox_task.await;
    tracing::info!(dut = %name, "stopped");
}

/// One incarnation of the DUT's loop.
async fn run(shared: Arc<Shared>, entry: DutEntry, outbox: Outbox, records: RecordFile) -> Exit {
    let name = entry.name.clone();
    let interrupted = report_interrupted(&entry, &outbox, &records).await;

    // Load, retrying with backoff; the DUT is offline on the server meanwhile.
    let mut retry = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    let mut shown: Option<String> = None;
    let ctx = loop {
        let loaded = {
            let shared = shared.clone();
            let entry = entry.clone();
            tokio::task::spawn_blocking(move || load(&shared, &entry)).await
        };
        match loaded {
            Ok(Ok(ctx)) => break ctx,
            Ok(Err(e)) => {
                tracing::error!(dut = %name, error = %e, "the DUT cannot be loaded; it stays offline and is loaded again later");
                let comment = format!("{CONFIG_ERROR}: {e}");
                if shown.as_deref() != Some(comment.as_str()) {
                    let mut body = registration(&entry);
                    body["state"] = "offline".into();
                    body["comment"] = comment.clone().into();
                    outbox.push(Delivery::AgentData { agent: name.clone(), body }).await;
                    shown = Some(comment);
                }
                if !pause(&shared.stop, retry.next_delay()).await {
                    return Exit::Stopped;
                }
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    };
    tracing::info!(dut = %name, plugins = ?ctx.plugins, device = ctx.device.is_some(), "DUT loaded");

    let mut cleanup_failed = None;
    if let Some(record) = interrupted {
        cleanup_failed = clean_up_after(&ctx, &record).await;
        records.remove();
    }

    // Registration, keeping a state an operator set (read once what is spooled is delivered,
    // so that it is not a state of ours from before).
    let mut body = registration(&entry);
    outbox.barrier().await;
    let current = if outbox.drain().await { shared.client.agent_data(&name).await.ok() } else { None };
    if let Some(data) = current {
        let (state, comment) = (data.state(), data.comment());
        let ours = [STOPPED, RESTARTING, CONFIG_ERROR].iter().any(|c| comment.starts_with(c));
        if matches!(state, "offline" | "maintenance") && !ours {
            tracing::info!(dut = %name, state, comment, "keeping the state set on the server");
            if let Some(o) = body.as_object_mut() {
                o.remove("state");
                o.remove("comment");
            }
        }
    }
    if let Some(comment) = cleanup_failed {
        body["state"] = "offline".into();
        body["comment"] = comment.into();
    }
    outbox.push(Delivery::AgentData { agent: name.clone(), body }).await;
    outbox.barrier().await;
    // What `list-queues` shows, as Testflinger's agent advertises at start. Best effort, and
    // beside the loop: a server that is slow or refuses it still hands out jobs at once.
    let (client, queues, dut) = (shared.client.clone(), advertised_queues(&entry), name.clone());
    tokio::spawn(async move {
        if let Err(e) = client.post_queues(&queues).await {
            tracing::warn!(dut = %dut, error = %e, "advertising the DUT's queues failed");
        }
    });
    let mut last_post = Instant::now();
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

    loop {
        if shared.stop.is_cancelled() {
            return Exit::Stopped;
        }
        // What an earlier outage or run left in the spool goes first.
        if !outbox.drain().await {
            if !pause(&shared.stop, retry.next_delay()).await {
                return Exit::Stopped;
            }
            continue;
        }
        let data = match shared.client.agent_data(&name).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => {
                // The server forgot the DUT (its agents expire): register again.
                outbox.push(Delivery::AgentData { agent: name.clone(), body: registration(&entry) }).await;
                outbox.barrier().await;
                continue;
            }
            Err(e) => {
                tracing::warn!(dut = %name, error = %e, "cannot read the DUT's state on the server");
                if !pause(&shared.stop, retry.next_delay()).await {
                    return Exit::Stopped;
                }
                continue;
            }
        };
        let (state, comment) = (data.state().to_owned(), data.comment().to_owned());
        let heartbeat_due = last_post.elapsed() >= shared.config.heartbeat;
        match state.as_str() {
            "offline" | "maintenance" => {
                if heartbeat_due {
                    post_state(&outbox, &name, &state, &comment).await;
                    last_post = Instant::now();
                }
                tracing::debug!(dut = %name, %state, %comment, "not taking jobs");
                if !pause(&shared.stop, shared.config.poll_interval).await {
                    return Exit::Stopped;
                }
                continue;
            }
            "restart" => {
                post_state(&outbox, &name, "offline", RESTARTING).await;
                return Exit::Restart;
            }
            "waiting" => {
                if heartbeat_due {
                    post_state(&outbox, &name, "waiting", &comment).await;
                    last_post = Instant::now();
                }
            }
            _ => {
                post_state(&outbox, &name, "waiting", "").await;
                last_post = Instant::now();
            }
        }
        let queues = claim_queues(&entry, &data);

        let started = Instant::now();
        let wait = (shared.config.protocol == Protocol::Phasebox).then_some(shared.config.long_poll);
        let claimed = tokio::select! {
            r = shared.client.claim_job_as(&name, &queues, wait) => r,
            () = shared.stop.cancelled() => return Exit::Stopped,
        };
        match claimed {
            Ok(Some(job)) => {
                // The job id names a directory and URLs: it is checked before any use.
                let job_id = match JobId::parse(&job.job_id) {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::error!(dut = %name, error = %e, "refusing a job from the server");
                        if !pause(&shared.stop, retry.next_delay()).await {
                            return Exit::Stopped;
                        }
                        continue;
                    }
                };
                retry.reset();
                let end = job::run_claimed(&shared, &ctx, &outbox, &records, job_id, job).await;
                if end.abandoned {
                    return Exit::Stopped;
                }
                if let Some(comment) = end.offline {
                    post_state(&outbox, &name, "offline", &comment).await;
                }
                last_post = Instant::now();
            }
            Ok(None) => {
                retry.reset();
                // Testflinger: the next claim after the polling interval. A server that
                // answered a long-poll at once does not wait: poll it the same way.
                if (wait.is_none() || started.elapsed() < Duration::from_secs(1))
                    && !pause(&shared.stop, shared.config.poll_interval).await
                {
                    return Exit::Stopped;
                }
            }
            Err(e) => {
                let wait = retry.next_delay();
                let wait = match &e {
                    ClientError::Auth { .. } => {
                        tracing::error!(dut = %name, error = %e, "the agent is not authorized to claim jobs");
                        // Credentials are fixed by an operator, not by retrying soon.
                        wait.max(Duration::from_secs(60))
                    }
                    _ => {
                        tracing::warn!(dut = %name, error = %e, "cannot claim jobs");
                        wait
                    }
                };
                if !pause(&shared.stop, wait).await {
                    return Exit::Stopped;
                }
            }
        }
    }
}

/// `POST /v1/agents/data/<name>` at registration.
fn registration(entry: &DutEntry) -> Value {
    let mut body = json!({
        "state": "waiting",
        "comment": "",
        "job_id": "",
        "queues": entry.queues,
        "location": entry.location.clone().unwrap_or_default(),
    });
    if let Some(p) = &entry.provision_type {
        body["provision_type"] = p.clone().into();
    }
    body
}

/// `POST /v1/agents/queues` at start: every queue of the DUT, with its description if the
/// configuration gives one.
fn advertised_queues(entry: &DutEntry) -> Value {
    let map: serde_json::Map<String, Value> = entry
        .queues
        .iter()
        .map(|q| (q.clone(), Value::String(entry.advertised_queues.get(q).cloned().unwrap_or_default())))
        .collect();
    Value::Object(map)
}

async fn post_state(outbox: &Outbox, name: &str, state: &str, comment: &str) {
    outbox
        .push(Delivery::AgentData { agent: name.to_owned(), body: json!({ "state": state, "comment": comment }) })
        .await;
    outbox.barrier().await;
}

/// Testflinger: if any of the DUT's queues is restricted to owners, claim from those only.
fn claim_queues(entry: &DutEntry, data: &AgentData) -> Vec<String> {
    let restricted: Vec<String> = data.restricted_queues().map(str::to_owned).collect();
    if restricted.is_empty() { entry.queues.clone() } else { restricted }
}

/// When the job record says a job was running, reports it ended (once) and returns the
/// record, so that the device is cleaned up once the DUT is loaded.
async fn report_interrupted(entry: &DutEntry, outbox: &Outbox, records: &RecordFile) -> Option<JobRecord> {
    let mut record = records.read()?;
    if record.reported {
        return Some(record);
    }
    let phase = record.phase.clone().unwrap_or_else(|| "setup".into());
    tracing::warn!(dut = %entry.name, job_id = %record.job_id, %phase, "a job was interrupted; reporting it ended");
    let text = format!(
        "\nphasebox agent: the agent stopped while this job was running (in its {phase} phase), and ended the job \
         when it started again; the device is cleaned up before its next job.\n"
    );
    outbox
        .push(Delivery::Log {
            job_id: record.job_id.to_string(),
            log_type: phasebox_client::LogType::Output,
            fragment: phasebox_client::LogFragment {
                fragment_number: record.next_output,
                timestamp: phasebox_job::events::rfc3339(std::time::SystemTime::now()),
                phase: phase.clone(),
                log_data: text,
            },
        })
        .await;
    record.next_output += 1;
    record.status.entry(phase).or_insert(phasebox_job::status::ENGINE_ERROR);
    outbox
        .push(Delivery::Result {
            job_id: record.job_id.to_string(),
            body: json!({ "status": crate::shipper::status_json(&record.status), "job_state": "complete" }),
        })
        .await;
    outbox.push(Delivery::AgentData { agent: entry.name.clone(), body: json!({ "job_id": "" }) }).await;
    record.reported = true;
    if let Err(e) = records.write(&record) {
        tracing::warn!(dut = %entry.name, error = %e, "cannot update the job record");
    }
    Some(record)
}

/// After an interrupted job: the job directory, and the device's cleanup action. Returns the
/// offline comment when the cleanup failed.
async fn clean_up_after(ctx: &DutCtx, record: &JobRecord) -> Option<String> {
    remove_job_dir(&ctx.work_dir, &record.job_id);
    match clean_device(ctx, ctx.runner.cleanup_budget).await {
        Ok(Some(action)) => {
            tracing::info!(dut = %ctx.name, %action, job_id = %record.job_id, "device cleaned up after the interrupted job");
            None
        }
        Ok(None) => None,
        Err(e) => Some(format!("phasebox agent: after an interrupted job, {e}")),
    }
}

/// Sleeps `d`; `false` when the agent is stopping.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_queues_with_owners_are_claimed_alone() {
        let entry = DutEntry {
            name: "d".into(),
            queues: vec!["a".into(), "b".into()],
            runner: "r".into(),
            device: None,
            location: None,
            provision_type: None,
            advertised_queues: Default::default(),
        };
        let data = |v| serde_json::from_value::<AgentData>(v).unwrap();
        assert_eq!(claim_queues(&entry, &data(json!({"restricted_to": {}}))), ["a", "b"]);
        assert_eq!(claim_queues(&entry, &data(json!({"restricted_to": {"b": ["owner"]}}))), ["b"]);
        assert_eq!(claim_queues(&entry, &data(json!({"restricted_to": {"b": []}}))), ["a", "b"]);
        assert_eq!(claim_queues(&entry, &data(json!({}))), ["a", "b"]);
    }
}
