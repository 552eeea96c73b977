//! One DUT's on-disk state under `<spool_dir>/<dut>/`:
//!
//! ```text
//! outbox/<seq>.json                deliveries not made yet, in order (seq: 20 digits)
//! outbox/<seq>.artifacts.tar.gz    the archive an artifact delivery uploads
//! current-job.json                 the job this DUT is running (see JobRecord)
//! ```
//!
//! Everything here was redacted before it was written: output and results come from the job's
//! event stream, which the job engine redacts before any sink sees it. The claimed job (which
//! holds resolved secret values) and the job's inputs are never written. Files are written to a
//! temporary name and renamed, so a crash leaves either the old or the new file.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::delivery::Delivery;
use crate::error::AgentError;
use crate::job_id::JobId;

/// The outbox part of a DUT's spool: deliveries in order.
pub(crate) struct Spool {
    dir: PathBuf,
    /// Sequence numbers of the files in `dir`, oldest first.
    pending: VecDeque<u64>,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating) `<dut_dir>/outbox` and lists what it holds.
    pub(crate) fn open(dut_dir: &Path) -> Result<Self, AgentError> {
        let dir = dut_dir.join("outbox");
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::io(&dir, e))?;
        let mut pending = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| AgentError::io(&dir, e))? {
            let entry = entry.map_err(|e| AgentError::io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) {
                pending.push(seq);
            } else if name.contains(".tmp") {
                // A write that a crash interrupted: never renamed, so never part of the spool.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        pending.sort_unstable();
        let next_seq = pending.last().map_or(0, |s| s + 1);
        if !pending.is_empty() {
            tracing::info!(spool = %dir.display(), deliveries = pending.len(), "spooled deliveries found");
        }
        Ok(Spool { dir, pending: pending.into(), next_seq })
    }

    /// Number of deliveries waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn json_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    fn archive_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.artifacts.tar.gz"))
    }

    /// Appends a delivery. An artifact's archive is moved into the spool (copied when it is on
    /// another file system).
    pub(crate) fn append(&mut self, mut delivery: Delivery) -> Result<(), AgentError> {
        let seq = self.next_seq;
        if let Delivery::Artifact { archive, .. } = &mut delivery {
            let dest = self.archive_path(seq);
            move_regular_file(archive, &dest)?;
            *archive = dest;
        }
        let text = serde_json::to_vec(&delivery).expect("a delivery always serializes");
        write_atomically(&self.json_path(seq), &text)?;
        self.next_seq += 1;
        self.pending.push_back(seq);
        Ok(())
    }

    /// The oldest delivery. A file that cannot be read back is dropped with an error log (it
    /// cannot be delivered, and must not block the ones after it).
    pub(crate) fn front(&mut self) -> Option<(u64, Delivery)> {
        while let Some(&seq) = self.pending.front() {
            let path = self.json_path(seq);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Delivery>(&b).map_err(|e| format!("not a delivery: {e}")))
            {
                Ok(d) => return Some((seq, d)),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "unreadable spool file dropped");
                    self.remove(seq);
                }
            }
        }
        None
    }

    /// Removes a delivery (made, or dropped) and its archive.
    pub(crate) fn remove(&mut self, seq: u64) {
        if self.pending.front() == Some(&seq) {
            self.pending.pop_front();
        } else {
            self.pending.retain(|s| *s != seq);
        }
        for path in [self.json_path(seq), self.archive_path(seq)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot remove a spool file"),
            }
        }
    }
}

/// The record of the job a DUT is running, kept in `current-job.json` from the moment the job
/// is claimed until its final result is delivered or spooled. An agent that finds one on start
/// was stopped in the middle of that job: it reports the job ended, with this record's phase,
/// statuses and next fragment numbers, and cleans the device up before taking new work.
///
/// The job directory is not recorded: it is always `<work_dir>/<dut>/<job_id>`, and a record
/// whose job id is not a UUID does not load (so a record from before this rule, or one edited
/// by hand, cannot make recovery delete another directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    /// The job id.
    pub job_id: JobId,
    /// Its queue.
    pub queue: String,
    /// When it was claimed (RFC 3339).
    pub claimed_at: String,
    /// The phase running (or last started), if any.
    #[serde(default)]
    pub phase: Option<String>,
    /// The next `output` fragment number.
    #[serde(default)]
    pub next_output: u64,
    /// The next `serial` fragment number.
    #[serde(default)]
    pub next_serial: u64,
    /// The status of every phase that ended.
    #[serde(default)]
    pub status: BTreeMap<String, i32>,
    /// Whether the end of the job has been reported (recovery: only the device cleanup is
    /// left to do).
    #[serde(default)]
    pub reported: bool,
}

impl JobRecord {
    /// The record of a job just claimed.
    pub(crate) fn new(job_id: JobId, queue: String, claimed_at: String) -> Self {
        JobRecord {
            job_id,
            queue,
            claimed_at,
            phase: None,
            next_output: 0,
            next_serial: 0,
            status: BTreeMap::new(),
            reported: false,
        }
    }
}

/// Where a DUT's [`JobRecord`] lives.
#[derive(Clone, Debug)]
pub(crate) struct RecordFile {
    path: PathBuf,
}

impl RecordFile {
    pub(crate) fn new(dut_dir: &Path) -> Self {
        RecordFile { path: dut_dir.join("current-job.json") }
    }

    /// The record, if there is one. An unreadable record is reported and treated as absent.
    pub(crate) fn read(&self) -> Option<JobRecord> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "cannot read the current job record");
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "the current job record is corrupt; ignored");
                None
            }
        }
    }

    pub(crate) fn write(&self, record: &JobRecord) -> Result<(), AgentError> {
        let text = serde_json::to_vec_pretty(record).expect("a job record always serializes");
        write_atomically(&self.path, &text)
    }

    pub(crate) fn remove(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %self.path.display(), error = %e, "cannot remove the current job record"),
        }
    }
}

/// Moves the regular file `from` to `to` (copying it when they are on different file
/// systems). `from` lies in a job directory, which a job's phases wrote to: it is opened without
/// following a link and must be a regular file, so a link planted there can never make the
/// agent move, copy or later upload a file from elsewhere on the host.
fn move_regular_file(from: &Path, to: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut source = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(from)
        .map_err(|e| AgentError::io(from, e))?;
    let meta = source.metadata().map_err(|e| AgentError::io(from, e))?;
    if !meta.is_file() {
        let refused = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file; it is not spooled");
        return Err(AgentError::io(from, refused));
    }
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    // From the handle opened above, not by path again.
    let mut dest =
        std::fs::OpenOptions::new().write(true).create_new(true).open(to).map_err(|e| AgentError::io(to, e))?;
    io::copy(&mut source, &mut dest).map_err(|e| AgentError::io(to, e))?;
    let _ = std::fs::remove_file(from);
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AgentError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use phasebox_client::{LogFragment, LogType};
    use serde_json::json;

    use super::*;

    fn log(n: u64) -> Delivery {
        Delivery::Log {
            job_id: "j".into(),
            log_type: LogType::Output,
            fragment: LogFragment {
                fragment_number: n,
                timestamp: "t".into(),
                phase: "test".into(),
                log_data: "x".into(),
            },
        }
    }

    #[test]
    fn deliveries_come_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).unwrap();
        for n in 0..3 {
            spool.append(log(n)).unwrap();
        }
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(&archive, b"gz").unwrap();
        spool.append(Delivery::Artifact { job_id: "j".into(), archive: archive.clone() }).unwrap();
        spool.append(Delivery::Result { job_id: "j".into(), body: json!({"job_state": "complete"}) }).unwrap();
        assert!(!archive.exists(), "the archive moved into the spool");
        let (seq, first) = spool.front().unwrap();
        assert_eq!(first, log(0));
        spool.remove(seq);
        drop(spool);

        let mut spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.len(), 4);
        let mut seen = Vec::new();
        while let Some((seq, d)) = spool.front() {
            if let Delivery::Artifact { archive, .. } = &d {
                assert_eq!(std::fs::read(archive).unwrap(), b"gz");
            }
            seen.push(d);
            spool.remove(seq);
        }
        assert_eq!(seen[0], log(1));
        assert_eq!(seen[1], log(2));
        assert!(matches!(seen[2], Delivery::Artifact { .. }));
        assert!(matches!(seen[3], Delivery::Result { .. }));
        assert_eq!(std::fs::read_dir(dir.path().join("outbox")).unwrap().count(), 0);
        // Numbering goes on after what was there.
        spool.append(log(9)).unwrap();
        assert!(spool.front().unwrap().0 >= 5);
    }

    #[test]
    fn an_archive_planted_as_a_link_is_never_spooled() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary.txt");
        std::fs::write(&canary, b"host secret").unwrap();
        let job_dir = tmp.path().join("job");
        std::fs::create_dir(&job_dir).unwrap();
        let archive = job_dir.join("artifacts.tar.gz");
        std::os::unix::fs::symlink(&canary, &archive).unwrap();
        let mut spool = Spool::open(&tmp.path().join("dut")).unwrap();
        let err = spool.append(Delivery::Artifact { job_id: "j".into(), archive: archive.clone() }).unwrap_err();
        assert!(err.to_string().contains("artifacts.tar.gz"), "{err}");
        assert!(spool.is_empty());
        assert_eq!(std::fs::read(&canary).unwrap(), b"host secret");
        for entry in std::fs::read_dir(tmp.path().join("dut/outbox")).unwrap() {
            let path = entry.unwrap().path();
            assert_ne!(std::fs::read(&path).unwrap(), b"host secret", "{} holds the canary", path.display());
        }
    }

    #[test]
    fn the_record_round_trips_and_disappears() {
        let dir = tempfile::tempdir().unwrap();
        let file = RecordFile::new(dir.path());
        assert!(file.read().is_none());
        let id = JobId::parse("1c3e5a4f-9b2d-4e8a-8f00-0123456789ab").unwrap();
        let mut record = JobRecord::new(id, "q".into(), "t".into());
        record.phase = Some("test".into());
        record.next_output = 4;
        file.write(&record).unwrap();
        assert_eq!(file.read().unwrap(), record);
        file.remove();
        assert!(file.read().is_none());
        std::fs::write(dir.path().join("current-job.json"), "{not json").unwrap();
        assert!(file.read().is_none());
        // A record naming a job id that is not a UUID is not trusted with a path.
        let hostile = serde_json::to_string(&record).unwrap().replace("1c3e5a4f-9b2d-4e8a-8f00-0123456789ab", "../x");
        std::fs::write(dir.path().join("current-job.json"), hostile).unwrap();
        assert!(file.read().is_none());
    }
}
