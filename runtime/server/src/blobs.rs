//! Blob files: attachments and artifacts (by job id) and plugins (by sha256), below the
//! configured `blob_dir`. A blob is written to `tmp/` and renamed into place only when complete
//! and within its size limit, so a failed or oversized upload leaves nothing behind.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// What a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A job's attachments archive (`<job_id>`).
    Attachments,
    /// A job's artifacts archive (`<job_id>`).
    Artifacts,
    /// A plugin component (`<sha256>`).
    Plugins,
}

impl BlobKind {
    fn dir(self) -> &'static str {
        match self {
            BlobKind::Attachments => "attachments",
            BlobKind::Artifacts => "artifacts",
            BlobKind::Plugins => "plugins",
        }
    }
}

/// Errors writing a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The upload passed its size limit.
    #[error("upload larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The file system failed.
    #[error("blob storage: {0}")]
    Io(#[from] io::Error),
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Opens (creating) the directory tree.
    pub fn open(root: &Path) -> io::Result<Blobs> {
        for sub in ["attachments", "artifacts", "plugins", "tmp"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Blobs { root: root.to_owned() })
    }

    /// Where a blob lives. `key` must be a UUID or hex digest (checked by the callers).
    pub fn path(&self, kind: BlobKind, key: &str) -> PathBuf {
        self.root.join(kind.dir()).join(key)
    }

    /// Starts writing a blob of at most `limit` bytes.
    pub async fn writer(&self, limit: u64) -> io::Result<BlobWriter> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(io::Error::other)?;
        let tmp = self.root.join("tmp").join(hex::encode(name));
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(BlobWriter { file: Some(file), tmp: Some(tmp), size: 0, limit, hash: Sha256::new() })
    }

    /// Opens a blob for reading: the file and its length.
    pub async fn read(&self, kind: BlobKind, key: &str) -> io::Result<Option<(tokio::fs::File, u64)>> {
        match tokio::fs::File::open(self.path(kind, key)).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a blob exists.
    pub async fn exists(&self, kind: BlobKind, key: &str) -> bool {
        tokio::fs::try_exists(self.path(kind, key)).await.unwrap_or(false)
    }

    /// How many blobs of `kind` there are and their total size in bytes.
    pub async fn usage(&self, kind: BlobKind) -> io::Result<(u64, u64)> {
        let mut entries = tokio::fs::read_dir(self.root.join(kind.dir())).await?;
        let (mut count, mut bytes) = (0u64, 0u64);
        while let Some(entry) = entries.next_entry().await? {
            let meta = entry.metadata().await?;
            if meta.is_file() {
                count += 1;
                bytes = bytes.saturating_add(meta.len());
            }
        }
        Ok((count, bytes))
    }

    /// Deletes a blob (missing is fine).
    pub async fn remove(&self, kind: BlobKind, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(kind, key)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A blob being written; dropped unfinished, its temporary file is removed.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<tokio::fs::File>,
    tmp: Option<PathBuf>,
    size: u64,
    limit: u64,
    hash: Sha256,
}

impl BlobWriter {
    /// Appends bytes; fails once the total passes the limit.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.hash.update(bytes);
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        file.write_all(bytes).await?;
        Ok(())
    }

    /// Flushes what was written so far and returns its temporary file, to inspect an upload
    /// before it is kept.
    pub async fn flushed_path(&mut self) -> io::Result<&Path> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        file.flush().await?;
        self.tmp.as_deref().ok_or_else(|| io::Error::other("blob writer already finished"))
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The sha256 (hex) of what was written.
    pub fn sha256(&self) -> String {
        hex::encode(self.hash.clone().finalize())
    }

    /// Flushes and moves the blob into place (replacing an older version).
    pub async fn finish(mut self, blobs: &Blobs, kind: BlobKind, key: &str) -> Result<u64, BlobError> {
        let mut file = self.file.take().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let tmp = self.tmp.take().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        if let Err(e) = tokio::fs::rename(&tmp, blobs.path(kind, key)).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(self.size)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
