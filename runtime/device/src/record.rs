//! The operation log: what was done to the DUT, for how long, with what outcome.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{DeviceError, ErrorKind};

/// One of a DUT's handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Handle {
    /// Power control.
    Power,
    /// The serial console.
    Console,
    /// Command execution and file copies over SSH.
    Exec,
    /// Writing an image to the DUT's storage.
    Flash,
}

impl Handle {
    /// All handles, in a fixed order.
    pub const ALL: [Handle; 4] = [Handle::Power, Handle::Console, Handle::Exec, Handle::Flash];

    /// The handle's lower-case name, as in configs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Handle::Power => "power",
            Handle::Console => "console",
            Handle::Exec => "exec",
            Handle::Flash => "flash",
        }
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a device and its sessions share: the DUT's name, for errors and the operation log.
pub(crate) struct Shared {
    pub(crate) name: String,
}

/// The start of an operation.
#[derive(Clone, Copy)]
pub(crate) struct Started {
    instant: Instant,
}

impl Started {
    pub(crate) fn now() -> Self {
        Started { instant: Instant::now() }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.instant.elapsed()
    }
}

impl Shared {
    pub(crate) fn new(name: String) -> Arc<Self> {
        Arc::new(Shared { name })
    }

    pub(crate) fn error(
        &self,
        handle: Handle,
        operation: &'static str,
        kind: ErrorKind,
        detail: impl Into<String>,
    ) -> DeviceError {
        DeviceError::new(&self.name, handle, operation, kind, detail)
    }

    /// Logs one finished operation to the operator's log. What a job's plugin did with the
    /// device reaches the job's event stream from the sandbox, which records every device call
    /// it makes with its outcome and duration.
    pub(crate) fn record(&self, handle: Handle, operation: &'static str, started: Started, ok: bool, detail: String) {
        let duration = started.elapsed();
        if ok {
            tracing::debug!(device = %self.name, %handle, operation, ?duration, %detail, "device operation");
        } else {
            // Info, not warn: the caller gets the failure and decides (a plugin waiting for a
            // rebooting device expects several); the job's event stream records every one.
            tracing::info!(device = %self.name, %handle, operation, ?duration, %detail, "device operation failed");
        }
    }

    /// Records the outcome of `result` (summarised by `summary` when it is a success) and
    /// returns it unchanged.
    pub(crate) fn finish<T>(
        &self,
        handle: Handle,
        operation: &'static str,
        started: Started,
        result: Result<T, DeviceError>,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<T, DeviceError> {
        match &result {
            Ok(value) => self.record(handle, operation, started, true, summary(value)),
            Err(error) => self.record(handle, operation, started, false, error.to_string()),
        }
        result
    }
}
