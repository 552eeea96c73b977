//! Running one phase: check the plugin's imports against the grant, build the store from the
//! grant, call `run`, and end the phase on the first limit, cancel or trap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phasebox_redact::Secret;
use tokio_util::sync::CancellationToken;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::phasebox::plugin::types::DutFact;
use crate::bindings::{Failure, PhaseContext};
use crate::engine::Sandbox;
use crate::error::SandboxError;
use crate::events::{EventSender, Stream};
use crate::grant::Grant;
use crate::host::PhaseState;
use crate::http::HttpHooks;
use crate::limits::{MemoryLimiter, Monitor, Stop};
use crate::output::GuestOutput;
use crate::plugin::Plugin;

/// What the plugin is told about the phase.
#[derive(Clone, Debug, Default)]
pub struct PhaseInput {
    /// The phase name, e.g. `test`.
    pub phase: String,
    /// The job id.
    pub job_id: String,
    /// The phase's `<phase>_data` as JSON (`{}` when absent).
    pub data_json: String,
    /// Public facts about the device under test.
    pub dut: Vec<(String, String)>,
}

/// The kind of a failure the plugin reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The lab's fault: retry elsewhere or quarantine the device.
    InfraError,
    /// The job's fault.
    JobError,
    /// What was tested did not pass.
    TestFailure,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InfraError => "infra-error",
            Self::JobError => "job-error",
            Self::TestFailure => "test-failure",
        })
    }
}

/// How a phase ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhaseEnd {
    /// The plugin returned an outcome.
    Passed {
        /// Its one-line summary.
        summary: String,
    },
    /// The plugin returned a failure.
    Failed {
        /// Which kind.
        kind: FailureKind,
        /// Its message.
        message: String,
    },
    /// The host ended the phase: a limit, a timeout or a cancel.
    Stopped(Stop),
    /// The guest trapped (a panic, a stack overflow, an invalid operation).
    Trapped {
        /// The trap, as wasmtime names it.
        trap: String,
        /// The end of what the guest wrote to stderr (where a panic message lands).
        guest_message: String,
    },
    /// The guest called `exit` instead of returning.
    Exited {
        /// The exit code.
        code: i32,
    },
}

impl PhaseEnd {
    /// Whether the phase passed.
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed { .. })
    }
}

impl std::fmt::Display for PhaseEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passed { summary } => write!(f, "passed: {summary}"),
            Self::Failed { kind, message } => write!(f, "{kind}: {message}"),
            Self::Stopped(stop) => write!(f, "stopped: {stop}"),
            Self::Trapped { trap, guest_message } if guest_message.is_empty() => write!(f, "crashed: {trap}"),
            Self::Trapped { trap, guest_message } => write!(f, "crashed: {trap}: {guest_message}"),
            Self::Exited { code } => write!(f, "exited with code {code} without returning an outcome"),
        }
    }
}

/// What a finished phase reports.
#[derive(Clone, Debug)]
pub struct PhaseReport {
    /// How it ended.
    pub end: PhaseEnd,
    /// How long it ran (from instantiation to its end).
    pub elapsed: Duration,
    /// Bytes of output it wrote.
    pub output_bytes: u64,
    /// Memory its instance held at the end, all memories together.
    pub memory_bytes: u64,
}

impl Sandbox {
    /// Runs one phase of `plugin` under `grant`. `secrets` holds every secret the job
    /// provides; the phase sees only those its grant names. Events (output, logs, results,
    /// capability uses) go to `events` as they happen, so the receiver must be drained by
    /// another task while this runs. `cancel` ends the phase at once, even a guest blocked in a
    /// host call. The phase waits for a free pool slot and for its handle limit from the
    /// process's [handle budget](crate::EngineConfig::max_handles) before it starts.
    ///
    /// An `Err` means the phase never started (for example, the plugin imports an interface
    /// the grant does not include); anything that happens after it starts is a [`PhaseEnd`].
    pub async fn run_phase(
        &self,
        plugin: &Plugin,
        grant: &Grant,
        input: &PhaseInput,
        secrets: &BTreeMap<String, Secret>,
        events: EventSender,
        cancel: CancellationToken,
    ) -> Result<PhaseReport, SandboxError> {
        plugin.check_imports(&input.phase, grant.linked())?;
        let limits = grant.limits().clone();
        let monitor = Arc::new(
            Monitor::new(limits.memory.min(self.config.max_memory), limits.output)
                .with_disk_limits(limits.disk, limits.files),
        );
        // Opened now, not when the grant was resolved: an earlier phase may have changed the tree.
        let preopens = crate::files::open_mounts(grant.mounts(), &input.phase)?;
        let wasi = build_wasi(plugin, grant, &events, &monitor);
        let network = grant.network().clone();
        let granted_secrets =
            grant.secret_names().filter_map(|name| secrets.get(name).map(|s| (name.to_owned(), s.clone()))).collect();

        let pool_slot = match &self.pool_slots {
            Some(slots) => Some(slots.clone().acquire_owned().await.expect("the pool semaphore is never closed")),
            None => None,
        };
        // The phase's share of the process's handles, reserved for its whole run (after the
        // pool slot, always in this order): what it holds can never be another phase's.
        let reserved = (limits.handles + grant.mounts().len() as u64).min(self.handle_budget_size).min(u32::MAX.into());
        let handles_reserved = self
            .handle_budget
            .clone()
            .acquire_many_owned(reserved as u32)
            .await
            .expect("the handle budget is never closed");
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(limits.handles.min(u32::MAX as u64) as usize);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(crate::http::FIELD_SIZE_LIMIT);
        let state = PhaseState {
            wasi,
            preopens,
            table,
            http,
            hooks: HttpHooks { network: network.clone(), events: events.clone(), monitor: monitor.clone() },
            limiter: MemoryLimiter { monitor: monitor.clone() },
            monitor: monitor.clone(),
            events,
            secrets: granted_secrets,
            network,
            device: grant.device.clone().map(|d| d.0),
            _pool_slot: pool_slot,
            _handles_reserved: handles_reserved,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        let (timeout, idle) = (limits.timeout, limits.output_timeout);
        let epoch_monitor = monitor.clone();
        store.epoch_deadline_callback(move |_| {
            // Guest code checks in here every tick: stop it if anything says so, otherwise
            // yield to the runtime so a cancel or a watchdog can act.
            if epoch_monitor.stopped_because().is_none() {
                deadline_check(&epoch_monitor, timeout, idle);
            }
            Ok(if epoch_monitor.stopped_because().is_some() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        let ctx = PhaseContext {
            phase: input.phase.clone(),
            job_id: input.job_id.clone(),
            data: if input.data_json.trim().is_empty() { "{}".into() } else { input.data_json.clone() },
            dut: input.dut.iter().map(|(key, value)| DutFact { key: key.clone(), value: value.clone() }).collect(),
        };

        let run = async {
            let phase = plugin.pre.instantiate_async(&mut store).await.map_err(Err)?;
            phase.call_run(&mut store, &ctx).await.map_err(Ok)
        };
        let watchdog = async {
            while let Some(wait) = deadline_check(&monitor, timeout, idle) {
                tokio::time::sleep(wait).await;
            }
        };
        let result = tokio::select! {
            biased;
            r = run => Some(r),
            () = cancel.cancelled() => { monitor.stop(Stop::Cancelled); None }
            () = monitor.wait_stopped() => None,
            () = watchdog => None,
        };
        let elapsed = monitor.elapsed();
        let end = match (result, monitor.stopped_because()) {
            // A recorded stop explains whatever the guest did after it (usually a trap).
            (_, Some(stop)) => PhaseEnd::Stopped(stop),
            (Some(Ok(Ok(outcome))), None) => PhaseEnd::Passed { summary: outcome.summary },
            (Some(Ok(Err(failure))), None) => {
                let (kind, message) = match failure {
                    Failure::InfraError(m) => (FailureKind::InfraError, m),
                    Failure::JobError(m) => (FailureKind::JobError, m),
                    Failure::TestFailure(m) => (FailureKind::TestFailure, m),
                };
                PhaseEnd::Failed { kind, message }
            }
            (Some(Err(Err(instantiate))), None) => {
                return Err(SandboxError::Instantiate {
                    plugin: plugin.name().to_owned(),
                    reason: format!("{instantiate:#}"),
                });
            }
            (Some(Err(Ok(call))), None) => end_from_error(&call, &monitor, limits.handles),
            (None, None) => PhaseEnd::Stopped(Stop::Cancelled),
        };
        let memory_bytes = monitor.memory_in_use();
        drop(store);
        // The end's text may quote the guest (a summary, a panic message) and so a secret; the
        // log gets only its kind, and the redacted text travels through the job's channels.
        let kind = match &end {
            PhaseEnd::Passed { .. } => "passed",
            PhaseEnd::Failed { .. } => "failed",
            PhaseEnd::Stopped(_) => "stopped",
            PhaseEnd::Trapped { .. } => "trapped",
            PhaseEnd::Exited { .. } => "exited",
        };
        tracing::debug!(plugin = plugin.name(), phase = %input.phase, end = kind, ms = elapsed.as_millis() as u64, "phase ended");
        Ok(PhaseReport { end, elapsed, output_bytes: monitor.output_written(), memory_bytes })
    }
}

impl Sandbox {
    /// [`run_phase`](Self::run_phase), with the events collected instead of streamed: for
    /// callers that look at them only after the phase (tests, tools), not live.
    pub async fn run_phase_collecting(
        &self,
        plugin: &Plugin,
        grant: &Grant,
        input: &PhaseInput,
        secrets: &BTreeMap<String, Secret>,
        cancel: CancellationToken,
    ) -> Result<(PhaseReport, Vec<crate::events::PhaseEvent>), SandboxError> {
        let (tx, mut rx) = crate::events::channel();
        // Drained by its own task: the phase blocks when the channel is full.
        let drain = tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(e) = rx.recv().await {
                events.push(e);
            }
            events
        });
        let report = self.run_phase(plugin, grant, input, secrets, tx, cancel).await?;
        let events = drain.await.expect("the event drain does not panic");
        Ok((report, events))
    }
}

/// Records a timeout if one passed; otherwise returns how long until the next could.
fn deadline_check(monitor: &Monitor, timeout: Duration, idle: Duration) -> Option<Duration> {
    let elapsed = monitor.elapsed();
    if elapsed >= timeout {
        monitor.stop(Stop::Timeout(timeout));
        return None;
    }
    let quiet = monitor.idle_for();
    if quiet >= idle {
        monitor.stop(Stop::OutputTimeout(idle));
        return None;
    }
    Some((timeout - elapsed).min(idle - quiet))
}

fn end_from_error(error: &wasmtime::Error, monitor: &Monitor, handles: u64) -> PhaseEnd {
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return PhaseEnd::Exited { code: exit.0 };
    }
    // The resource table is full: the guest held as many handles as its limit allows and asked
    // for one more, and the host function that would have made it trapped.
    let table_full = error.chain().any(|e| {
        matches!(e.downcast_ref::<wasmtime_wasi::ResourceTableError>(), Some(wasmtime_wasi::ResourceTableError::Full))
    });
    if table_full {
        return PhaseEnd::Stopped(Stop::HandleLimit(handles));
    }
    let trap = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        // Not a wasm trap: a host function failed; its message is the best explanation.
        None => format!("{error:#}").lines().next().unwrap_or_default().to_owned(),
    };
    PhaseEnd::Trapped { trap, guest_message: monitor.stderr_tail() }
}

/// WASI's context for the phase. It holds no preopens: those are the handles
/// [`open_mounts`](crate::files::open_mounts) opened, which `get-directories` hands out.
fn build_wasi(plugin: &Plugin, grant: &Grant, events: &EventSender, monitor: &Arc<Monitor>) -> wasmtime_wasi::WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stdout(GuestOutput { stream: Stream::Stdout, events: events.clone(), monitor: monitor.clone() });
    b.stderr(GuestOutput { stream: Stream::Stderr, events: events.clone(), monitor: monitor.clone() });
    // Nothing of the host's environment: only what the grant defines.
    let mut args = vec![plugin.name().to_owned()];
    args.extend(grant.args.iter().cloned());
    b.args(&args);
    for (k, v) in &grant.env {
        b.env(k, v);
    }
    crate::network::prepare(&mut b, grant.network(), events, monitor);
    b.build()
}
