//! Operation records: what was done to the DUT, when, for how long, with what outcome.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

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

/// A finished operation on a DUT, successful or not.
///
/// Serializes to JSON as `{"device", "handle", "operation", "started_at_ms", "duration_ms", "ok",
/// "detail"}` (times in milliseconds, `started_at_ms` since the Unix epoch). `detail` is a short
/// summary (`"state on"`, `"exit code 0, 12 bytes of output"`, the error message); it carries no
/// command line, environment value, key or controller address.
#[derive(Debug, Clone, Serialize)]
pub struct OperationRecord {
    /// The DUT's name.
    pub device: String,
    /// The handle used.
    pub handle: Handle,
    /// The operation (`on`, `off`, `cycle`, `status`, `open`, `read`, `write`, `expect`, `run`,
    /// `copy-to`, `copy-from`, `wait-reachable`).
    pub operation: &'static str,
    /// When the operation started (wall clock).
    #[serde(rename = "started_at_ms", serialize_with = "unix_ms")]
    pub started_at: SystemTime,
    /// How long it took (monotonic clock).
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Whether it succeeded.
    pub ok: bool,
    /// A short summary of the outcome, or the error message.
    pub detail: String,
}

fn unix_ms<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Receives an [`OperationRecord`] for every operation on a DUT.
///
/// Called synchronously from the operation, after it finished: an implementation should hand
/// the record on (push it to a buffer, send it over a channel) rather than block.
pub trait Recorder: Send + Sync {
    /// Takes one record.
    fn record(&self, record: OperationRecord);
}

impl<F: Fn(OperationRecord) + Send + Sync> Recorder for F {
    fn record(&self, record: OperationRecord) {
        self(record)
    }
}

/// A [`Recorder`] that keeps every record in memory; clones share the same list.
#[derive(Debug, Clone, Default)]
pub struct MemoryRecorder {
    records: Arc<Mutex<Vec<OperationRecord>>>,
}

impl MemoryRecorder {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the records so far, oldest first.
    pub fn records(&self) -> Vec<OperationRecord> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes the records so far, leaving the list empty.
    pub fn take(&self) -> Vec<OperationRecord> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Recorder for MemoryRecorder {
    fn record(&self, record: OperationRecord) {
        self.records.lock().unwrap_or_else(PoisonError::into_inner).push(record);
    }
}

/// What a device and its sessions share: the DUT's name (for errors and records) and the
/// current recorder.
pub(crate) struct Shared {
    pub(crate) name: String,
    recorder: RwLock<Option<Arc<dyn Recorder>>>,
}

/// The start of an operation, on both clocks.
#[derive(Clone, Copy)]
pub(crate) struct Started {
    at: SystemTime,
    instant: Instant,
}

impl Started {
    pub(crate) fn now() -> Self {
        Started { at: SystemTime::now(), instant: Instant::now() }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.instant.elapsed()
    }
}

impl Shared {
    pub(crate) fn new(name: String) -> Arc<Self> {
        Arc::new(Shared { name, recorder: RwLock::new(None) })
    }

    pub(crate) fn set_recorder(&self, recorder: Option<Arc<dyn Recorder>>) {
        *self.recorder.write().unwrap_or_else(PoisonError::into_inner) = recorder;
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

    /// Records one finished operation and logs it.
    pub(crate) fn record(&self, handle: Handle, operation: &'static str, started: Started, ok: bool, detail: String) {
        let duration = started.elapsed();
        if ok {
            tracing::debug!(device = %self.name, %handle, operation, ?duration, %detail, "device operation");
        } else {
            // Info, not warn: the caller gets the failure and decides (a plugin waiting for a
            // rebooting device expects several); the job's event stream records every one.
            tracing::info!(device = %self.name, %handle, operation, ?duration, %detail, "device operation failed");
        }
        let recorder = self.recorder.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(recorder) = recorder {
            recorder.record(OperationRecord {
                device: self.name.clone(),
                handle,
                operation,
                started_at: started.at,
                duration,
                ok,
                detail,
            });
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
