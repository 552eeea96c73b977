//! Agent-side handles to one device under test (DUT).
//!
//! The agent operator describes each DUT in a [`DeviceConfig`] (TOML, see
//! `config/device.toml`): how its power is switched, where its serial console is served, how
//! commands reach it over SSH, and which block device or image file holds its storage. A
//! [`Device`] built from that config offers four handles, each a small set of typed operations:
//!
//! | handle | operations | reached through |
//! |---|---|---|
//! | [`Handle::Power`] | [`Device::power_on`], [`Device::power_off`], [`Device::power_cycle`], [`Device::power_status`] | commands run by the agent host (`sh -c`), or an HTTP power controller |
//! | [`Handle::Console`] | [`Device::console`] → [`ConsoleSession::read`] / [`write`](ConsoleSession::write) / [`expect`](ConsoleSession::expect) | a TCP console server (ser2net and the like) |
//! | [`Handle::Exec`] | [`Device::exec`] → [`ExecProcess`], [`Device::copy_to`], [`Device::copy_from`], [`Device::wait_until_reachable`] | SSH with a key the agent holds |
//! | [`Handle::Flash`] | [`Device::flash`] → [`FlashWriter`] | the configured block device or image file, nothing else |
//!
//! # What never leaves this crate
//!
//! Phase plugins reach a DUT only through these operations. Command lines, key files and their
//! contents, passwords and controller addresses stay here: the `Debug` output of the configs
//! redacts them, and a [`DeviceError`]'s message names the DUT, the handle, the operation and
//! what went wrong — never how the device is reached. Diagnostics that would reveal that (a
//! power command's stderr, the address that refused a connection) go to the agent's own log
//! through `tracing`, which only the operator reads.
//!
//! # The operation log
//!
//! Every operation, successful or not, is logged through `tracing` (handle, operation,
//! duration, outcome) for the operator. A job's own view of its device calls comes from the
//! sandbox, which puts each call a plugin makes, with its outcome and duration, in the job's
//! event stream.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use phasebox_device::{Device, DeviceConfig, ExecRequest};
//!
//! let config = DeviceConfig::from_toml_str(&std::fs::read_to_string("config/device.toml")?)?;
//! let device = Device::new(config)?;
//! device.power_cycle().await?;
//! let mut console = device.console().await?;
//! console.expect("login:", Duration::from_secs(120)).await?;
//! let output = device
//!     .exec(ExecRequest::new("uname -a").timeout(Duration::from_secs(30)))
//!     .await?
//!     .output()
//!     .await?;
//! assert!(output.status.success());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod console;
mod device;
mod error;
mod exec;
mod flash;
mod power;
mod record;

pub use config::{
    CleanupAction, ConsoleConfig, DeviceConfig, ExecConfig, FlashConfig, HttpPower, PowerCommands, PowerConfig,
    SecretString, SshExec, TcpConsole,
};
pub use console::{ConsoleSession, Pattern};
pub use device::Device;
pub use error::{ConfigError, DeviceError, ErrorKind};
pub use exec::{ExecOutput, ExecProcess, ExecRequest, ExitStatus, Stream, shell_quote};
pub use flash::{FlashReport, FlashWriter};
pub use power::PowerState;
pub use record::Handle;
