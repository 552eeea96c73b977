//! The job's device under test as the sandbox sees it: [`DeviceDut`] adapts a
//! [`phasebox_device::Device`] (SSH, console server, power controller, flash target) to the
//! sandbox's [`Dut`] trait, so plugins reach the device through their handles while its
//! addresses, commands and keys stay in the device crate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use phasebox_device::{Device, DeviceError, ErrorKind, ExecRequest};
use phasebox_sandbox::device::{
    BoxFuture, ConsoleIo, DeviceFailure, Dut, ExecCommand, ExecEvent, ExecIo, FlashIo, PowerAction, PowerState,
};
use phasebox_sandbox::events::Stream;

/// A [`Device`] behind the sandbox's [`Dut`] trait.
pub struct DeviceDut(pub Arc<Device>);

/// What the plugin is told: the kind and the device crate's message, which names the device
/// and the handle but never how it is reached.
fn failure(e: DeviceError) -> DeviceFailure {
    match e.kind() {
        ErrorKind::NotConfigured => DeviceFailure::NotConfigured,
        ErrorKind::Timeout => DeviceFailure::TimedOut,
        _ => DeviceFailure::Failed(e.to_string()),
    }
}

fn power_state(s: phasebox_device::PowerState) -> PowerState {
    match s {
        phasebox_device::PowerState::On => PowerState::On,
        phasebox_device::PowerState::Off => PowerState::Off,
        phasebox_device::PowerState::Unknown => PowerState::Unknown,
    }
}

impl Dut for DeviceDut {
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerState, DeviceFailure>> {
        Box::pin(async move {
            let state = match action {
                PowerAction::On => self.0.power_on().await,
                PowerAction::Off => self.0.power_off().await,
                PowerAction::Cycle => self.0.power_cycle().await,
                PowerAction::Status => self.0.power_status().await,
            };
            state.map(power_state).map_err(failure)
        })
    }

    fn console(&self) -> BoxFuture<'_, Result<Box<dyn ConsoleIo>, DeviceFailure>> {
        Box::pin(async move {
            let session = self.0.console().await.map_err(failure)?;
            Ok(Box::new(Console(session)) as Box<dyn ConsoleIo>)
        })
    }

    fn exec(&self, command: ExecCommand) -> BoxFuture<'_, Result<Box<dyn ExecIo>, DeviceFailure>> {
        Box::pin(async move {
            let mut request = ExecRequest::new(command.command);
            for (name, value) in &command.env {
                request = request.env(name.clone(), value.expose());
            }
            if let Some(t) = command.timeout {
                request = request.timeout(t);
            }
            let process = self.0.exec(request).await.map_err(failure)?;
            Ok(Box::new(Process { process, done: false }) as Box<dyn ExecIo>)
        })
    }

    fn copy_to(&self, path: String, data: Vec<u8>) -> BoxFuture<'_, Result<(), DeviceFailure>> {
        Box::pin(async move { self.0.copy_to(&path, Bytes::from(data)).await.map_err(failure) })
    }

    fn copy_from(&self, path: String) -> BoxFuture<'_, Result<Vec<u8>, DeviceFailure>> {
        Box::pin(async move { self.0.copy_from(&path).await.map(|b| b.to_vec()).map_err(failure) })
    }

    fn flash(&self) -> BoxFuture<'_, Result<Box<dyn FlashIo>, DeviceFailure>> {
        Box::pin(async move {
            let writer = self.0.flash().await.map_err(failure)?;
            Ok(Box::new(Flash(writer)) as Box<dyn FlashIo>)
        })
    }

    fn wait_until_reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<Duration, DeviceFailure>> {
        Box::pin(async move { self.0.wait_until_reachable(timeout).await.map_err(failure) })
    }
}

struct Console(phasebox_device::ConsoleSession);

impl ConsoleIo for Console {
    fn read(&mut self, max: usize, timeout: Duration) -> BoxFuture<'_, Result<Vec<u8>, DeviceFailure>> {
        Box::pin(async move { self.0.read(max, timeout).await.map(|b| b.to_vec()).map_err(failure) })
    }
    fn write(&mut self, data: Vec<u8>) -> BoxFuture<'_, Result<(), DeviceFailure>> {
        Box::pin(async move { self.0.write(&data).await.map_err(failure) })
    }
    fn expect(&mut self, pattern: String, timeout: Duration) -> BoxFuture<'_, Result<String, DeviceFailure>> {
        Box::pin(async move { self.0.expect(pattern.as_str(), timeout).await.map_err(failure) })
    }
}

struct Process {
    process: phasebox_device::ExecProcess,
    done: bool,
}

/// Signal numbers for the names the device crate reports, for the shell's `128 + n` status.
fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "KILL" => 9,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

impl ExecIo for Process {
    fn next(&mut self) -> BoxFuture<'_, Result<ExecEvent, DeviceFailure>> {
        Box::pin(async move {
            if !self.done {
                if let Some((stream, data)) = self.process.next_output().await {
                    let stream = match stream {
                        phasebox_device::Stream::Stdout => Stream::Stdout,
                        phasebox_device::Stream::Stderr => Stream::Stderr,
                    };
                    return Ok(ExecEvent::Output(stream, data));
                }
                self.done = true;
            }
            let status = self.process.wait().await.map_err(failure)?;
            let code = match (status.code, status.signal.as_deref()) {
                (Some(code), _) => code as i32,
                (None, Some(signal)) => 128 + signal_number(signal),
                (None, None) => -1,
            };
            Ok(ExecEvent::Exited(code))
        })
    }
}

struct Flash(phasebox_device::FlashWriter);

impl FlashIo for Flash {
    fn write(&mut self, chunk: Vec<u8>) -> BoxFuture<'_, Result<u64, DeviceFailure>> {
        Box::pin(async move {
            self.0.write(&chunk).await.map_err(failure)?;
            Ok(self.0.progress())
        })
    }
    fn finish(&mut self) -> BoxFuture<'_, Result<(u64, String), DeviceFailure>> {
        Box::pin(async move { self.0.finish().await.map(|r| (r.bytes, r.sha256)).map_err(failure) })
    }
}

/// How long [`restore_power`] waits for a device it switched on to answer.
pub(crate) const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// Makes a device that the last job's cleanup switched off (`cleanup = "power-off"`) usable
/// again for a job that does not provision it, as Testflinger's devices are always found: if
/// its power reports off, switches it on and waits until it runs a command. A device without
/// power control, or one that is on, is left as it is. Returns what was done, for the job's
/// log, or why the device could not be restored.
pub(crate) async fn restore_power(dut: &dyn Dut, timeout: Duration) -> Result<Option<String>, String> {
    match dut.power(PowerAction::Status).await {
        Ok(PowerState::Off) => {}
        Ok(_) | Err(DeviceFailure::NotConfigured) => return Ok(None),
        Err(e) => return Err(format!("its power status could not be read: {e}")),
    }
    dut.power(PowerAction::On).await.map_err(|e| format!("it was off and could not be switched on: {e}"))?;
    match dut.wait_until_reachable(timeout).await {
        Ok(took) => Ok(Some(format!(
            "the device was off (the last job's cleanup): switched on, answering after {:.1} s",
            took.as_secs_f64()
        ))),
        // No command execution: switched on is all that can be done.
        Err(DeviceFailure::NotConfigured) => Ok(Some("the device was off: switched on".into())),
        Err(e) => Err(format!("it was switched on but did not answer within {} s: {e}", timeout.as_secs())),
    }
}
