//! What the DUT loops and their jobs share: the agent's [`Shared`] state, its sandbox engines,
//! a loaded DUT ([`DutCtx`]) and its device's cleanup.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phasebox_client::Client;
use phasebox_device::{CleanupAction, Device};
use phasebox_job::{PluginSet, RunnerConfig};
use phasebox_sandbox::{EngineConfig, Sandbox};
use tokio_util::sync::CancellationToken;

use crate::Observer;
use crate::config::AgentConfig;

/// What every DUT loop shares.
pub(crate) struct Shared {
    pub config: AgentConfig,
    pub client: Client,
    pub observer: Option<Arc<dyn Observer>>,
    /// Stop claiming; running jobs get the grace period.
    pub stop: CancellationToken,
    /// Out of time: outboxes spool what is left instead of posting it.
    pub hurry: CancellationToken,
    pub sandboxes: Sandboxes,
}

/// Sandbox engines, one per distinct `[engine]` section: DUTs whose runners configure the
/// engine alike share one (and its compiled plugins); each still has its own plugin set,
/// policy and device.
#[derive(Default)]
pub(crate) struct Sandboxes(Mutex<Vec<(EngineConfig, Arc<Sandbox>)>>);

impl Sandboxes {
    pub(crate) fn get(&self, runner: &RunnerConfig) -> Result<Arc<Sandbox>, phasebox_job::JobError> {
        let mut engines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = engines.iter().find(|(c, _)| *c == runner.engine) {
            return Ok(s.clone());
        }
        let sandbox = Arc::new(runner.sandbox()?);
        engines.push((runner.engine.clone(), sandbox.clone()));
        Ok(sandbox)
    }
}

/// A DUT ready to run jobs.
pub(crate) struct DutCtx {
    pub name: Arc<str>,
    pub runner: RunnerConfig,
    pub plugins: PluginSet,
    pub device: Option<Arc<Device>>,
    /// Where its job directories go.
    pub work_dir: PathBuf,
}

/// Carries out the device's cleanup action (power-off, reset) within `limit`: the action taken
/// (`None` when there is nothing to do), or why it failed.
pub(crate) async fn clean_device(ctx: &DutCtx, limit: Duration) -> Result<Option<CleanupAction>, String> {
    let Some(device) = &ctx.device else { return Ok(None) };
    let action = device.cleanup_action();
    if action == CleanupAction::None {
        return Ok(None);
    }
    match tokio::time::timeout(limit, device.cleanup()).await {
        Ok(Ok(())) => {
            tracing::debug!(dut = %ctx.name, %action, "device cleaned up");
            Ok(Some(action))
        }
        Ok(Err(e)) => Err(format!("device cleanup ({action}) failed: {e}")),
        Err(_) => Err(format!("device cleanup ({action}) did not finish within {limit:?}")),
    }
}
