//! Errors: [`ConfigError`] for a config the agent cannot use, [`DeviceError`] for an operation
//! on a DUT that did not succeed.

use std::fmt;

use crate::record::Handle;

/// A device config that cannot be used: it does not parse, a value is invalid, or a file it
/// names (the SSH key) cannot be loaded.
///
/// The message names the DUT (when known) and the field; it never contains a command string,
/// a password or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device config{}: {field}: {message}", device.as_deref().map(|d| format!(" for {d}")).unwrap_or_default())]
pub struct ConfigError {
    /// The DUT's name, when the config got far enough to have one.
    pub device: Option<String>,
    /// The offending field, as a dotted path (`exec.ssh.host_key`), or `toml` for a parse error.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(device: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { device: Some(device.to_owned()), field: field.into(), message: message.into() }
    }
}

/// What kind of failure a [`DeviceError`] is, for callers that react differently (retry,
/// report an infrastructure error, fail the test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The DUT has no such handle in its config.
    NotConfigured,
    /// The device, its console server or its power controller could not be reached.
    Unreachable,
    /// The SSH server refused the agent's key, or its host key is not the configured one.
    Auth,
    /// The operation did not complete within its time limit (a timed-out command is killed).
    Timeout,
    /// The device or its controller answered, and the answer was a failure (a power command
    /// exiting non-zero, an HTTP error status, a copy whose `cat` failed).
    Failed,
    /// The connection closed before the operation completed.
    Closed,
    /// A size limit was reached (flash `max_bytes`, the copy limit).
    LimitExceeded,
    /// The request itself is invalid (a bad environment variable name, a flash already running).
    InvalidRequest,
    /// Reading or writing a local file or socket failed.
    Io,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotConfigured => "not configured",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Failed => "failed",
            ErrorKind::Closed => "connection closed",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::Io => "I/O error",
        })
    }
}

/// An operation on a DUT that did not succeed.
///
/// Its message reads `device <name>: <handle> <operation>: <kind>: <detail>`, for example
/// `device dut-01: exec run: timed out: no exit within 2s; the command was killed`. The detail is
/// safe to show to a phase plugin: it never contains a command line, key, password or
/// controller address (those diagnostics go to the agent's log).
#[derive(Debug, Clone, thiserror::Error)]
#[error("device {device}: {handle} {operation}: {kind}: {detail}")]
pub struct DeviceError {
    device: String,
    handle: Handle,
    operation: &'static str,
    kind: ErrorKind,
    detail: String,
}

impl DeviceError {
    pub(crate) fn new(
        device: &str,
        handle: Handle,
        operation: &'static str,
        kind: ErrorKind,
        detail: impl Into<String>,
    ) -> Self {
        DeviceError { device: device.to_owned(), handle, operation, kind, detail: detail.into() }
    }

    /// The DUT's name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The handle the operation used.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The operation (`on`, `cycle`, `expect`, `run`, `copy-to`, `write`, …).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What went wrong, without the DUT, handle and operation.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}
