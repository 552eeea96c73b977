//! Device handles: `power`, `console`, `exec` and `flash` on the job's own device under test.
//!
//! The sandbox does not know how a device is reached. Whoever runs the phase passes a [`Dut`]
//! (the agent implements it over SSH, a console server and a power controller; tests may pass a
//! double), and the host functions here forward each call to it, record the call in the
//! phase's events (which handle, which call, the outcome and how long it took), and turn its
//! output into phase output or serial log. A plugin can only reach the one device its phase
//! was given, and only through the handles its grant links.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use wasmtime::component::Resource;

use crate::bindings::phasebox::plugin::{console, exec, flash, power, types};
use crate::events::{CapabilityUse, EventSender, PhaseEvent, Stream};
use crate::exec_output::ExecOutputRedactor;
use crate::host::PhaseState;
use crate::limits::Monitor;

/// A boxed future, as the [`Dut`] traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a device operation failed, as the plugin is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceFailure {
    /// The device has no such handle.
    NotConfigured,
    /// The operation ran out of time.
    TimedOut,
    /// It failed; the message must not say how the device is reached.
    Failed(String),
}

impl std::fmt::Display for DeviceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotConfigured => f.write_str("not configured for this device"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

/// A power action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// Switch on.
    On,
    /// Switch off.
    Off,
    /// Switch off and on.
    Cycle,
    /// Report the state only.
    Status,
}

/// A device's power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    /// On.
    On,
    /// Off.
    Off,
    /// Not known.
    Unknown,
}

/// A command to run on the device, with the secret values already filled in by the host.
#[derive(Clone)]
pub struct ExecCommand {
    /// The command line for the device's shell.
    pub command: String,
    /// Environment variables for the command, secrets included.
    pub env: Vec<(String, phasebox_redact::Secret)>,
    /// Time limit; `None` for the phase's own.
    pub timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for ExecCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecCommand").field("command", &self.command).field("env", &names).finish()
    }
}

/// What a running command did next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    /// Output.
    Output(Stream, Bytes),
    /// Exit status (128 + signal for a signal).
    Exited(i32),
}

/// The job's device under test, as the host reaches it.
pub trait Dut: Send + Sync + 'static {
    /// Runs a power action and returns the state afterwards.
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerState, DeviceFailure>>;
    /// Opens the serial console.
    fn console(&self) -> BoxFuture<'_, Result<Box<dyn ConsoleIo>, DeviceFailure>>;
    /// Starts a command.
    fn exec(&self, command: ExecCommand) -> BoxFuture<'_, Result<Box<dyn ExecIo>, DeviceFailure>>;
    /// Writes a file.
    fn copy_to(&self, path: String, data: Vec<u8>) -> BoxFuture<'_, Result<(), DeviceFailure>>;
    /// Reads a file.
    fn copy_from(&self, path: String) -> BoxFuture<'_, Result<Vec<u8>, DeviceFailure>>;
    /// Starts writing an image to the device's storage.
    fn flash(&self) -> BoxFuture<'_, Result<Box<dyn FlashIo>, DeviceFailure>>;
    /// Waits until the device runs commands (after it was switched on), for at most
    /// `timeout`; returns how long it took. A device that cannot tell answers `NotConfigured`.
    fn wait_until_reachable(
        &self,
        timeout: std::time::Duration,
    ) -> BoxFuture<'_, Result<std::time::Duration, DeviceFailure>> {
        let _ = timeout;
        Box::pin(async { Err(DeviceFailure::NotConfigured) })
    }
}

/// An open console.
pub trait ConsoleIo: Send + Sync + 'static {
    /// Reads up to `max` bytes, waiting at most `timeout` for the first.
    fn read(&mut self, max: usize, timeout: std::time::Duration) -> BoxFuture<'_, Result<Vec<u8>, DeviceFailure>>;
    /// Writes bytes.
    fn write(&mut self, data: Vec<u8>) -> BoxFuture<'_, Result<(), DeviceFailure>>;
    /// Waits for `pattern`; returns the text up to and including it.
    fn expect(&mut self, pattern: String, timeout: std::time::Duration)
    -> BoxFuture<'_, Result<String, DeviceFailure>>;
}

/// A running command.
pub trait ExecIo: Send + Sync + 'static {
    /// The next output chunk or the exit.
    fn next(&mut self) -> BoxFuture<'_, Result<ExecEvent, DeviceFailure>>;
}

/// An image being written.
pub trait FlashIo: Send + Sync + 'static {
    /// Writes the next chunk; returns the bytes written so far.
    fn write(&mut self, chunk: Vec<u8>) -> BoxFuture<'_, Result<u64, DeviceFailure>>;
    /// Finishes; returns bytes written and their sha256.
    fn finish(&mut self) -> BoxFuture<'_, Result<(u64, String), DeviceFailure>>;
}

/// The guest's console session resource.
pub struct ConsoleSession(Box<dyn ConsoleIo>);
/// The guest's running-command resource.
pub struct ExecProcess {
    io: Box<dyn ExecIo>,
    exited: Option<i32>,
    command: String,
    /// Masks the command's secret-env values in what the plugin reads.
    redactor: Option<ExecOutputRedactor>,
    /// Events redacted and ready for the plugin, before anything else is read.
    ready: std::collections::VecDeque<exec::Event>,
}
/// The guest's flash writer resource.
pub struct FlashWriter(Box<dyn FlashIo>);

fn wit_channel(stream: Stream) -> exec::Channel {
    match stream {
        Stream::Stdout => exec::Channel::Stdout,
        Stream::Stderr => exec::Channel::Stderr,
    }
}

fn to_wit(e: DeviceFailure) -> types::DeviceError {
    match e {
        DeviceFailure::NotConfigured => types::DeviceError::NotConfigured,
        DeviceFailure::TimedOut => types::DeviceError::TimedOut,
        DeviceFailure::Failed(m) => types::DeviceError::Failed(m),
    }
}

/// Records one device call in the phase's events.
async fn record<T>(
    events: &EventSender,
    monitor: &Monitor,
    handle: &str,
    call: String,
    started: Instant,
    result: &Result<T, DeviceFailure>,
) {
    let event = PhaseEvent::Capability(CapabilityUse {
        grant: handle.into(),
        call,
        allowed: result.is_ok(),
        reason: result.as_ref().err().map(|e| e.to_string()),
        duration_ms: Some(started.elapsed().as_millis() as u64),
    });
    if monitor.admit(&event) {
        let _ = events.send(event).await;
    }
}

impl PhaseState {
    fn device(&self) -> Result<Arc<dyn Dut>, DeviceFailure> {
        self.device.clone().ok_or(DeviceFailure::NotConfigured)
    }

    async fn power_action(&mut self, action: PowerAction) -> Result<PowerState, DeviceFailure> {
        let started = Instant::now();
        let result = match self.device() {
            Ok(d) => d.power(action).await,
            Err(e) => Err(e),
        };
        record(&self.events, &self.monitor, "power", format!("{action:?}").to_lowercase(), started, &result).await;
        self.monitor.touch();
        result
    }
}

impl power::Host for PhaseState {
    async fn on(&mut self) -> Result<(), types::DeviceError> {
        self.power_action(PowerAction::On).await.map(|_| ()).map_err(to_wit)
    }
    async fn off(&mut self) -> Result<(), types::DeviceError> {
        self.power_action(PowerAction::Off).await.map(|_| ()).map_err(to_wit)
    }
    async fn cycle(&mut self) -> Result<(), types::DeviceError> {
        self.power_action(PowerAction::Cycle).await.map(|_| ()).map_err(to_wit)
    }
    async fn status(&mut self) -> Result<power::State, types::DeviceError> {
        self.power_action(PowerAction::Status)
            .await
            .map(|s| match s {
                PowerState::On => power::State::On,
                PowerState::Off => power::State::Off,
                PowerState::Unknown => power::State::Unknown,
            })
            .map_err(to_wit)
    }
}

impl console::Host for PhaseState {
    async fn open(&mut self) -> Result<Resource<ConsoleSession>, types::DeviceError> {
        let started = Instant::now();
        let result = match self.device() {
            Ok(d) => d.console().await,
            Err(e) => Err(e),
        };
        record(&self.events, &self.monitor, "console", "open".into(), started, &result).await;
        let io = result.map_err(to_wit)?;
        self.table.push(ConsoleSession(io)).map_err(|e| types::DeviceError::Failed(e.to_string()))
    }
}

impl PhaseState {
    /// Sends console bytes to the serial log. Takes `&mut self` so no shared borrow of the
    /// (not `Sync`) state is held across the await.
    async fn serial(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.monitor.touch();
        let event = PhaseEvent::Serial { data: Bytes::copy_from_slice(data), at: SystemTime::now() };
        if self.monitor.admit(&event) {
            let _ = self.events.send(event).await;
        }
    }
}

impl console::HostSession for PhaseState {
    async fn read(
        &mut self,
        s: Resource<ConsoleSession>,
        max: u32,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, types::DeviceError> {
        let session = self.table.get_mut(&s).map_err(|e| types::DeviceError::Failed(e.to_string()))?;
        let data =
            session.0.read(max as usize, std::time::Duration::from_millis(timeout_ms.into())).await.map_err(to_wit)?;
        self.serial(&data).await;
        Ok(data)
    }

    async fn write(&mut self, s: Resource<ConsoleSession>, data: Vec<u8>) -> Result<(), types::DeviceError> {
        let session = self.table.get_mut(&s).map_err(|e| types::DeviceError::Failed(e.to_string()))?;
        session.0.write(data).await.map_err(to_wit)
    }

    async fn expect(
        &mut self,
        s: Resource<ConsoleSession>,
        pattern: String,
        timeout_ms: u32,
    ) -> Result<String, types::DeviceError> {
        let started = Instant::now();
        let session = self.table.get_mut(&s).map_err(|e| types::DeviceError::Failed(e.to_string()))?;
        let result = session.0.expect(pattern.clone(), std::time::Duration::from_millis(timeout_ms.into())).await;
        if let Ok(text) = &result {
            self.serial(text.as_bytes()).await;
        }
        record(&self.events, &self.monitor, "console", format!("expect {pattern:?}"), started, &result).await;
        result.map_err(to_wit)
    }

    async fn drop(&mut self, s: Resource<ConsoleSession>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl exec::Host for PhaseState {
    async fn run(&mut self, cmd: exec::Command) -> Result<Resource<ExecProcess>, types::DeviceError> {
        let started = Instant::now();
        let call = format!("run {:?}", cmd.command);
        let mut env: Vec<(String, phasebox_redact::Secret)> =
            cmd.env.into_iter().map(|(k, v)| (k, phasebox_redact::Secret::new(v))).collect();
        for name in &cmd.secret_env {
            match self.secrets.get(name) {
                Some(value) => env.push((name.clone(), value.clone())),
                None => {
                    let failure = DeviceFailure::Failed(format!("secret {name:?} is not granted to this phase"));
                    record::<()>(&self.events, &self.monitor, "exec", call, started, &Err(failure.clone())).await;
                    return Err(to_wit(failure));
                }
            }
        }
        // The plugin never sees a secret-env value: not even in what the command prints.
        let secret_env = &env[env.len() - cmd.secret_env.len()..];
        let redactor = match ExecOutputRedactor::new(secret_env.iter().map(|(n, v)| (n.as_str(), v))) {
            Ok(r) => r,
            Err(e) => {
                let failure = DeviceFailure::Failed(e.to_string());
                record::<()>(&self.events, &self.monitor, "exec", call, started, &Err(failure.clone())).await;
                return Err(to_wit(failure));
            }
        };
        let timeout = (cmd.timeout_ms > 0).then(|| std::time::Duration::from_millis(cmd.timeout_ms));
        let command = ExecCommand { command: cmd.command.clone(), env, timeout };
        let result = match self.device() {
            Ok(d) => d.exec(command).await,
            Err(e) => Err(e),
        };
        record(&self.events, &self.monitor, "exec", call, started, &result).await;
        let io = result.map_err(to_wit)?;
        self.table
            .push(ExecProcess { io, exited: None, command: cmd.command, redactor, ready: Default::default() })
            .map_err(|e| types::DeviceError::Failed(e.to_string()))
    }

    async fn copy_to(&mut self, path: String, data: Vec<u8>) -> Result<(), types::DeviceError> {
        let started = Instant::now();
        let len = data.len();
        let result = match self.device() {
            Ok(d) => d.copy_to(path.clone(), data).await,
            Err(e) => Err(e),
        };
        record(&self.events, &self.monitor, "exec", format!("copy-to {path} ({len} bytes)"), started, &result).await;
        result.map_err(to_wit)
    }

    async fn copy_from(&mut self, path: String) -> Result<Vec<u8>, types::DeviceError> {
        let started = Instant::now();
        let result = match self.device() {
            Ok(d) => d.copy_from(path.clone()).await,
            Err(e) => Err(e),
        };
        record(&self.events, &self.monitor, "exec", format!("copy-from {path}"), started, &result).await;
        result.map_err(to_wit)
    }
}

impl exec::HostProcess for PhaseState {
    async fn next(&mut self, p: Resource<ExecProcess>) -> Result<exec::Event, types::DeviceError> {
        loop {
            let process = self.table.get_mut(&p).map_err(|e| types::DeviceError::Failed(e.to_string()))?;
            if let Some(event) = process.ready.pop_front() {
                return Ok(event);
            }
            if let Some(code) = process.exited {
                return Ok(exec::Event::Exited(code));
            }
            let event = process.io.next().await.map_err(to_wit)?;
            match event {
                ExecEvent::Output(stream, data) => {
                    // The command's output is the phase's output: live, counted, and redacted
                    // downstream like the guest's own (with every secret of the job).
                    let keep = self.monitor.output(data.len());
                    if keep > 0 {
                        let chunk = data.slice(..keep);
                        let _ =
                            self.events.send(PhaseEvent::Output { stream, data: chunk, at: SystemTime::now() }).await;
                    }
                    let process = self.table.get_mut(&p).map_err(|e| types::DeviceError::Failed(e.to_string()))?;
                    match &mut process.redactor {
                        None => return Ok(exec::Event::Output((wit_channel(stream), data.to_vec()))),
                        Some(r) => {
                            let released = r.push(stream, &data);
                            process
                                .ready
                                .extend(released.into_iter().map(|(s, b)| exec::Event::Output((wit_channel(s), b))));
                        }
                    }
                }
                ExecEvent::Exited(code) => {
                    if let Some(r) = process.redactor.take() {
                        let rest = r.finish();
                        process.ready.extend(rest.into_iter().map(|(s, b)| exec::Event::Output((wit_channel(s), b))));
                    }
                    process.exited = Some(code);
                    let command = process.command.clone();
                    let result: Result<(), DeviceFailure> = Ok(());
                    record(
                        &self.events,
                        &self.monitor,
                        "exec",
                        format!("exit {code} {command:?}"),
                        Instant::now(),
                        &result,
                    )
                    .await;
                }
            }
        }
    }

    async fn drop(&mut self, p: Resource<ExecProcess>) -> wasmtime::Result<()> {
        // Dropping the I/O ends the command if it is still running.
        self.table.delete(p)?;
        Ok(())
    }
}

impl flash::Host for PhaseState {
    async fn open(&mut self) -> Result<Resource<FlashWriter>, types::DeviceError> {
        let started = Instant::now();
        let result = match self.device() {
            Ok(d) => d.flash().await,
            Err(e) => Err(e),
        };
        record(&self.events, &self.monitor, "flash", "open".into(), started, &result).await;
        let io = result.map_err(to_wit)?;
        self.table.push(FlashWriter(io)).map_err(|e| types::DeviceError::Failed(e.to_string()))
    }
}

/// How often flash progress is recorded.
const PROGRESS_EVERY: u64 = 16 << 20;

impl flash::HostWriter for PhaseState {
    async fn write(&mut self, w: Resource<FlashWriter>, chunk: Vec<u8>) -> Result<u64, types::DeviceError> {
        let len = chunk.len() as u64;
        let writer = self.table.get_mut(&w).map_err(|e| types::DeviceError::Failed(e.to_string()))?;
        let total = writer.0.write(chunk).await.map_err(to_wit)?;
        self.monitor.touch();
        if total / PROGRESS_EVERY != (total - len) / PROGRESS_EVERY {
            let event = PhaseEvent::Progress { handle: "flash".into(), bytes: total };
            if self.monitor.admit(&event) {
                let _ = self.events.send(event).await;
            }
        }
        Ok(total)
    }

    async fn finish(&mut self, w: Resource<FlashWriter>) -> Result<flash::Report, types::DeviceError> {
        let started = Instant::now();
        let writer = self.table.get_mut(&w).map_err(|e| types::DeviceError::Failed(e.to_string()))?;
        let result = writer.0.finish().await;
        let call = match &result {
            Ok((bytes, sha)) => format!("finish ({bytes} bytes, sha256 {sha})"),
            Err(_) => "finish".into(),
        };
        record(&self.events, &self.monitor, "flash", call, started, &result).await;
        result.map(|(bytes, sha256)| flash::Report { bytes, sha256 }).map_err(to_wit)
    }

    async fn drop(&mut self, w: Resource<FlashWriter>) -> wasmtime::Result<()> {
        self.table.delete(w)?;
        Ok(())
    }
}
