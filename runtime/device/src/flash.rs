//! The flash handle: writes an image to the DUT's storage — the configured block device or
//! image file, and nothing else.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::FlashConfig;
use crate::error::{DeviceError, ErrorKind};
use crate::record::{Handle, Shared, Started};

/// The configured flash target, with a lock so that one flash runs at a time.
pub(crate) struct FlashTarget {
    target: PathBuf,
    max_bytes: u64,
    busy: Arc<Mutex<()>>,
}

impl FlashTarget {
    pub(crate) fn new(config: &FlashConfig) -> Self {
        FlashTarget { target: config.target.clone(), max_bytes: config.max_bytes, busy: Arc::new(Mutex::new(())) }
    }

    /// Opens the target for writing: a block device in place, a regular file (or a new one)
    /// truncated. Anything else at the path is refused.
    pub(crate) async fn open(&self, shared: Arc<Shared>) -> Result<FlashWriter, DeviceError> {
        let started = Started::now();
        let result = self.open_inner(&shared).await;
        let (file, guard) =
            shared.finish(Handle::Flash, "open", started, result, |_| format!("up to {} bytes", self.max_bytes))?;
        Ok(FlashWriter {
            shared,
            file: Some(file),
            guard: Some(guard),
            written: 0,
            max_bytes: self.max_bytes,
            hasher: Sha256::new(),
            started,
        })
    }

    async fn open_inner(&self, shared: &Shared) -> Result<(File, OwnedMutexGuard<()>), DeviceError> {
        let error = |kind, detail: String| shared.error(Handle::Flash, "open", kind, detail);
        let guard = self
            .busy
            .clone()
            .try_lock_owned()
            .map_err(|_| error(ErrorKind::InvalidRequest, "another flash to this DUT is in progress".into()))?;
        let block_device = match tokio::fs::metadata(&self.target).await {
            Ok(meta) if meta.file_type().is_block_device() => true,
            Ok(meta) if meta.is_file() => false,
            Ok(_) => {
                tracing::error!(device = %shared.name, target = %self.target.display(), "flash target is neither a block device nor a regular file");
                return Err(error(
                    ErrorKind::Failed,
                    "the flash target is neither a block device nor a regular file".into(),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(self.io_error(shared, "open", e)),
        };
        let mut options = OpenOptions::new();
        options.write(true);
        if !block_device {
            options.create(true).truncate(true);
        }
        let file = options.open(&self.target).await.map_err(|e| self.io_error(shared, "open", e))?;
        Ok((file, guard))
    }

    fn io_error(&self, shared: &Shared, operation: &'static str, e: std::io::Error) -> DeviceError {
        tracing::warn!(device = %shared.name, target = %self.target.display(), error = %e, "flash target I/O error");
        shared.error(Handle::Flash, operation, ErrorKind::Io, format!("the flash target: {e}"))
    }
}

/// What a finished flash wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashReport {
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of the bytes written, lower-case hex.
    pub sha256: String,
    /// From opening the target to the end of the final sync.
    pub duration: Duration,
}

/// An image being written to the DUT's storage, chunk by chunk.
///
/// [`finish`](Self::finish) syncs the data to the device and reports size and SHA-256.
/// Dropping the writer without finishing leaves a partly written target. The DUT takes one
/// flash at a time: the next may start once this one has finished or failed (or was dropped).
pub struct FlashWriter {
    shared: Arc<Shared>,
    /// `None` once the flash finished or failed.
    file: Option<File>,
    /// The DUT's one-flash-at-a-time lock, held while `file` is open.
    guard: Option<OwnedMutexGuard<()>>,
    written: u64,
    max_bytes: u64,
    hasher: Sha256,
    started: Started,
}

impl std::fmt::Debug for FlashWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlashWriter")
            .field("device", &self.shared.name)
            .field("written", &self.written)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl FlashWriter {
    /// Writes the next chunk of the image. A chunk that would take the image past the
    /// configured `max_bytes` is refused whole ([`ErrorKind::LimitExceeded`]) and the flash
    /// cannot continue.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), DeviceError> {
        let Some(file) = self.file.as_mut() else {
            return Err(self.shared.error(
                Handle::Flash,
                "write",
                ErrorKind::InvalidRequest,
                "this flash already finished or failed",
            ));
        };
        if self.written + chunk.len() as u64 > self.max_bytes {
            // What was written before stays written; this flash cannot go on.
            let _ = file.flush().await;
            self.end();
            let error = self.shared.error(
                Handle::Flash,
                "write",
                ErrorKind::LimitExceeded,
                format!("the image is larger than this DUT's limit of {} bytes", self.max_bytes),
            );
            self.shared.record(Handle::Flash, "write", self.started, false, error.to_string());
            return Err(error);
        }
        if let Err(e) = file.write_all(chunk).await {
            self.end();
            let error =
                self.shared.error(Handle::Flash, "write", ErrorKind::Io, format!("writing the flash target: {e}"));
            self.shared.record(Handle::Flash, "write", self.started, false, error.to_string());
            return Err(error);
        }
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Closes the target and lets the next flash of this DUT start.
    fn end(&mut self) {
        self.file = None;
        self.guard = None;
    }

    /// Bytes written so far.
    pub fn progress(&self) -> u64 {
        self.written
    }

    /// Flushes and syncs the image to the device and reports what was written. Afterwards the
    /// writer accepts nothing more (a second `finish` fails with [`ErrorKind::InvalidRequest`]).
    pub async fn finish(&mut self) -> Result<FlashReport, DeviceError> {
        let Some(mut file) = self.file.take() else {
            return Err(self.shared.error(
                Handle::Flash,
                "finish",
                ErrorKind::InvalidRequest,
                "this flash already finished or failed",
            ));
        };
        let synced = async {
            file.flush().await?;
            file.sync_all().await
        }
        .await;
        drop(file);
        self.end();
        let result = match synced {
            Ok(()) => Ok(FlashReport {
                bytes: self.written,
                sha256: hex::encode(self.hasher.clone().finalize()),
                duration: self.started.elapsed(),
            }),
            Err(e) => {
                Err(self.shared.error(Handle::Flash, "write", ErrorKind::Io, format!("syncing the flash target: {e}")))
            }
        };
        self.shared.finish(Handle::Flash, "write", self.started, result, |r| {
            format!("{} bytes, sha256 {}", r.bytes, &r.sha256[..12])
        })
    }
}
