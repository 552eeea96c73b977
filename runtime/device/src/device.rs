//! [`Device`]: one DUT's handles, built from its config.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{CleanupAction, ConsoleConfig, DeviceConfig, ExecConfig, TcpConsole};
use crate::console::ConsoleSession;
use crate::error::{ConfigError, DeviceError, ErrorKind};
use crate::exec::{ExecProcess, ExecRequest, SshLink};
use crate::flash::{FlashTarget, FlashWriter};
use crate::power::{PowerAction, PowerDriver, PowerState};
use crate::record::{Handle, Shared, Started};

/// One device under test, reached the way its [`DeviceConfig`] says.
///
/// Cheap to share behind an `Arc`: every operation takes `&self`. The SSH connection is opened
/// on first use and shared; a power operation drops it (the DUT is about to go away).
pub struct Device {
    shared: Arc<Shared>,
    facts: BTreeMap<String, String>,
    cleanup: CleanupAction,
    power: Option<PowerDriver>,
    console: Option<TcpConsole>,
    ssh: Option<SshLink>,
    flash: Option<FlashTarget>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.shared.name)
            .field("handles", &self.handles())
            .field("facts", &self.facts)
            .field("cleanup", &self.cleanup)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Builds a device from a config: validates it, and reads the SSH key (and host key file)
    /// if the DUT has an exec handle. Connects to nothing yet.
    pub fn new(config: DeviceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let name = config.name.clone();
        let power = config
            .power
            .as_ref()
            .map(PowerDriver::new)
            .transpose()
            .map_err(|m| ConfigError::new(&name, "power.http.base_url", m))?;
        let console = config.console.as_ref().map(|ConsoleConfig::Tcp(tcp)| tcp.clone());
        let ssh = config.exec.as_ref().map(|ExecConfig::Ssh(ssh)| SshLink::new(&name, ssh)).transpose()?;
        let flash = config.flash.as_ref().map(FlashTarget::new);
        Ok(Device {
            shared: Shared::new(name),
            facts: config.facts,
            cleanup: config.cleanup,
            power,
            console,
            ssh,
            flash,
        })
    }

    /// The DUT's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The public facts from the config, plus `name`, as shown to plugins.
    pub fn facts(&self) -> BTreeMap<String, String> {
        let mut facts = self.facts.clone();
        facts.entry("name".into()).or_insert_with(|| self.shared.name.clone());
        facts
    }

    /// The handles this DUT has.
    pub fn handles(&self) -> Vec<Handle> {
        Handle::ALL.into_iter().filter(|h| self.has(*h)).collect()
    }

    /// Whether this DUT has `handle`.
    pub fn has(&self, handle: Handle) -> bool {
        match handle {
            Handle::Power => self.power.is_some(),
            Handle::Console => self.console.is_some(),
            Handle::Exec => self.ssh.is_some(),
            Handle::Flash => self.flash.is_some(),
        }
    }

    /// What the agent does with the DUT after every job.
    pub fn cleanup_action(&self) -> CleanupAction {
        self.cleanup
    }

    fn not_configured(&self, handle: Handle, operation: &'static str) -> DeviceError {
        let error = self.shared.error(handle, operation, ErrorKind::NotConfigured, "this DUT has no such handle");
        self.shared.record(handle, operation, Started::now(), false, error.to_string());
        error
    }

    async fn power(&self, action: PowerAction) -> Result<PowerState, DeviceError> {
        let operation = action.as_str();
        let Some(driver) = &self.power else { return Err(self.not_configured(Handle::Power, operation)) };
        let started = Started::now();
        if action != PowerAction::Status
            && let Some(ssh) = &self.ssh
        {
            ssh.invalidate().await;
        }
        let result = driver
            .run(&self.shared.name, action)
            .await
            .map_err(|(kind, detail)| self.shared.error(Handle::Power, operation, kind, detail));
        self.shared.finish(Handle::Power, operation, started, result, |state| format!("state {state}"))
    }

    /// Switches the DUT on; returns the state the controller reports (or `On`).
    pub async fn power_on(&self) -> Result<PowerState, DeviceError> {
        self.power(PowerAction::On).await
    }

    /// Switches the DUT off; returns the state the controller reports (or `Off`).
    pub async fn power_off(&self) -> Result<PowerState, DeviceError> {
        self.power(PowerAction::Off).await
    }

    /// Power-cycles the DUT (the `cycle` command or endpoint, or off then on); returns the state
    /// the controller reports (or `On`). The DUT then boots: see
    /// [`wait_until_reachable`](Self::wait_until_reachable).
    pub async fn power_cycle(&self) -> Result<PowerState, DeviceError> {
        self.power(PowerAction::Cycle).await
    }

    /// Asks the power control for the DUT's power state.
    pub async fn power_status(&self) -> Result<PowerState, DeviceError> {
        self.power(PowerAction::Status).await
    }

    /// Opens a session on the DUT's serial console.
    pub async fn console(&self) -> Result<ConsoleSession, DeviceError> {
        let Some(console) = &self.console else { return Err(self.not_configured(Handle::Console, "open")) };
        ConsoleSession::open(self.shared.clone(), console).await
    }

    fn ssh(&self, operation: &'static str) -> Result<&SshLink, DeviceError> {
        self.ssh.as_ref().ok_or_else(|| self.not_configured(Handle::Exec, operation))
    }

    /// Starts a command on the DUT. See [`ExecRequest`] for the environment, time limit and input.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecProcess, DeviceError> {
        self.ssh("run")?.start(self.shared.clone(), "run", true, request).await
    }

    /// Writes `data` to `remote_path` on the DUT (created or truncated; a relative path is
    /// relative to the SSH user's home), over the shared SSH connection.
    pub async fn copy_to(&self, remote_path: &str, data: Bytes) -> Result<(), DeviceError> {
        let ssh = self.ssh("copy-to")?;
        let started = Started::now();
        let len = data.len();
        let result = ssh.copy_to(self.shared.clone(), remote_path, data).await;
        self.shared.finish(Handle::Exec, "copy-to", started, result, |_| format!("{len} bytes"))
    }

    /// Reads the file at `remote_path` on the DUT (at most the config's `max_copy_bytes`), over
    /// the shared SSH connection.
    pub async fn copy_from(&self, remote_path: &str) -> Result<Bytes, DeviceError> {
        let ssh = self.ssh("copy-from")?;
        let started = Started::now();
        let result = ssh.copy_from(self.shared.clone(), remote_path).await;
        self.shared.finish(Handle::Exec, "copy-from", started, result, |data| format!("{} bytes", data.len()))
    }

    /// Waits until the DUT's SSH server accepts the agent's login (after a power cycle, a
    /// flash, a reboot), trying every 250 ms for at most `timeout`. Returns how long it took.
    /// A host key mismatch or a refused key fails at once.
    pub async fn wait_until_reachable(&self, timeout: Duration) -> Result<Duration, DeviceError> {
        let ssh = self.ssh("wait-reachable")?;
        let started = Started::now();
        let result = ssh
            .wait_reachable(&self.shared.name, timeout)
            .await
            .map(|_| started.elapsed())
            .map_err(|(kind, detail)| self.shared.error(Handle::Exec, "wait-reachable", kind, detail));
        self.shared.finish(Handle::Exec, "wait-reachable", started, result, |d| format!("reachable after {d:?}"))
    }

    /// Starts writing an image to the DUT's storage (the configured target only). One flash
    /// at a time per DUT.
    pub async fn flash(&self) -> Result<FlashWriter, DeviceError> {
        let Some(flash) = &self.flash else { return Err(self.not_configured(Handle::Flash, "open")) };
        flash.open(self.shared.clone()).await
    }

    /// Carries out the configured [`CleanupAction`]: powers the DUT off, cycles it, or nothing.
    pub async fn cleanup(&self) -> Result<(), DeviceError> {
        match self.cleanup {
            CleanupAction::PowerOff => self.power_off().await.map(drop),
            CleanupAction::Reset => self.power_cycle().await.map(drop),
            CleanupAction::None => Ok(()),
        }
    }
}
