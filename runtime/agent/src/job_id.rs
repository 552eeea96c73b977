//! [`JobId`]: a job id the server handed out, checked to be a UUID before the agent uses it.
//!
//! The server is not trusted with the agent's file system: a job id becomes the name of the
//! job's directory under the DUT's work directory (which the agent deletes after the job), a
//! path segment of every URL the agent posts the job's output to, and a field of the job record
//! on disk. An id such as `/home` or `../../etc` would make each of those point elsewhere. A
//! `JobId` can only be built by [`JobId::parse`], which accepts the hyphenated UUID form that
//! Testflinger and phasebox servers give out and nothing else, so a `JobId` is always one plain
//! path segment.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A job id that is a UUID in its hyphenated form (`8-4-4-4-12` hex digits).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct JobId(String);

/// Why a server-chosen job id was refused. Carries the id (bounded, Debug-quoted when shown).
#[derive(Debug, thiserror::Error)]
#[error("the server gave the job id {shown:?}, which is not a UUID: the job is refused")]
pub(crate) struct InvalidJobId {
    shown: String,
}

/// At most this many characters of a refused id are shown.
const SHOWN_CHARS: usize = 80;

impl JobId {
    /// Accepts `id` when it is a UUID written as Testflinger writes it (hyphenated, 36
    /// characters); any other form (braced, URN, simple hex) is refused too, so the id the
    /// server names the job by is the one the agent uses.
    pub(crate) fn parse(id: &str) -> Result<JobId, InvalidJobId> {
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) if uuid.hyphenated().to_string() == id.to_ascii_lowercase() => Ok(JobId(id.to_owned())),
            _ => Err(InvalidJobId { shown: id.chars().take(SHOWN_CHARS).collect() }),
        }
    }

    /// The id as the server wrote it.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The job's directory: `work_dir/<id>`, always a direct child of `work_dir`.
    pub(crate) fn dir_in(&self, work_dir: &Path) -> PathBuf {
        work_dir.join(&self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = String::deserialize(d)?;
        JobId::parse(&id).map_err(serde::de::Error::custom)
    }
}

/// Deletes the directory of job `job_id` under `work_dir`, attachments included (which a job
/// interrupted by a crash left read-only). Only ever a direct child of `work_dir`: a [`JobId`]
/// is one plain path segment. Phases wrote into it, so nothing here follows a link:
/// `make_writable` refuses a linked `attachments` and never follows one inside, and
/// `remove_dir_all` removes links, not what they point at.
pub(crate) fn remove_job_dir(work_dir: &std::path::Path, job_id: &JobId) {
    let dir = job_id.dir_in(work_dir);
    let dir = dir.as_path();
    let attachments = dir.join("attachments");
    if attachments.is_dir()
        && let Err(e) = phasebox_archive::make_writable(&attachments)
    {
        tracing::warn!(dir = %attachments.display(), error = %e, "cannot make the attachments writable");
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the job directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyphenated_uuids_are_job_ids() {
        let id = "1c3e5a4f-9b2d-4e8a-8f00-0123456789ab";
        assert_eq!(JobId::parse(id).unwrap().as_str(), id);
        assert!(JobId::parse(&id.to_ascii_uppercase()).is_ok());
        for bad in [
            "",
            "/",
            "/tmp/victim",
            "../x",
            "..",
            ".",
            "1c3e5a4f-9b2d-4e8a-8f00-0123456789ab/../..",
            "1c3e5a4f9b2d4e8a8f000123456789ab",
            "{1c3e5a4f-9b2d-4e8a-8f00-0123456789ab}",
            "urn:uuid:1c3e5a4f-9b2d-4e8a-8f00-0123456789ab",
            "1c3e5a4f-9b2d-4e8a-8f00-0123456789ab\n",
        ] {
            let err = JobId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not a UUID"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_job_directory_is_a_direct_child_of_the_work_directory() {
        let id = JobId::parse("1c3e5a4f-9b2d-4e8a-8f00-0123456789ab").unwrap();
        let dir = id.dir_in(Path::new("/work/dut"));
        assert_eq!(dir.parent(), Some(Path::new("/work/dut")));
    }

    #[test]
    fn a_record_with_a_hostile_id_does_not_load() {
        assert!(serde_json::from_str::<JobId>("\"../../x\"").is_err());
        let id: JobId = serde_json::from_str("\"1c3e5a4f-9b2d-4e8a-8f00-0123456789ab\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"1c3e5a4f-9b2d-4e8a-8f00-0123456789ab\"");
    }

    #[test]
    fn removing_a_job_directory_follows_no_planted_link() {
        use std::os::unix::fs::PermissionsExt as _;

        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("host-secret.txt"), "canary").unwrap();
        std::fs::set_permissions(canary.join("host-secret.txt"), std::fs::Permissions::from_mode(0o400)).unwrap();
        let work = tmp.path().join("work");
        let id = JobId::parse("5b1e7c3a-1f2d-4e5a-9b8c-0d1e2f3a4b5c").unwrap();
        let job = id.dir_in(&work);
        std::fs::create_dir_all(job.join("artifacts/sub")).unwrap();
        std::os::unix::fs::symlink(&canary, job.join("artifacts/dir-link")).unwrap();
        std::os::unix::fs::symlink(canary.join("host-secret.txt"), job.join("artifacts/sub/file-link")).unwrap();
        std::os::unix::fs::symlink("../../canary", job.join("attachments")).unwrap();

        remove_job_dir(&work, &id);
        assert!(job.symlink_metadata().is_err(), "the job directory is gone");
        assert_eq!(std::fs::read_to_string(canary.join("host-secret.txt")).unwrap(), "canary");
        let mode = std::fs::metadata(canary.join("host-secret.txt")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400, "the canary's mode was changed");
        assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 1);

        // A job directory that is itself a link: the link goes, the directory stays.
        let linked = JobId::parse("6c2f8d4b-2a3e-4f6b-8c9d-1e2f3a4b5c6d").unwrap();
        let linked_dir = linked.dir_in(&work);
        std::os::unix::fs::symlink(&canary, &linked_dir).unwrap();
        remove_job_dir(&work, &linked);
        let linked = linked_dir;
        assert!(linked.symlink_metadata().is_err());
        assert_eq!(std::fs::read_to_string(canary.join("host-secret.txt")).unwrap(), "canary");
    }
}
