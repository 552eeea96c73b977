//! Files: the job-directory subtrees a phase is granted, and the checks that stand in front of
//! `wasi:filesystem` so that what one phase leaves behind cannot hand a later phase, or the
//! host, anything outside the job directory.
//!
//! - **Mounts are opened when the phase starts, beneath the job directory, following no link.**
//!   A grant names its subtree when the job is planned; an earlier phase with a read-write
//!   mount may since have replaced a component of it with a symlink. [`open_beneath`] walks the
//!   subtree one plain name at a time with `O_NOFOLLOW`, and the directory handle it ends with
//!   is what the guest gets: `wasi:filesystem/preopens.get-directories` is answered from these
//!   handles (wasmtime-wasi's own builder only takes a path, which it would open again,
//!   following links).
//! - **A guest cannot make a link that leaves the directory it is made in.** Inside a phase,
//!   wasmtime-wasi never follows a link out of a preopen, but the link stays on disk for later
//!   phases and for the host. `symlink-at` refuses absolute targets and any `..`: a leading
//!   one climbs out of the link's directory, and one after a name climbs out too when that
//!   name is itself a link to `.` (`d -> .`, `l -> d/..`), which cannot be judged from the
//!   name. Under this rule no chain of links made by a guest leads outside.
//! - **Writes to read-write mounts are bounded per phase**: bytes written (through `write` and
//!   through output streams) and entries created (files, directories, links). The first write
//!   past a limit fails with `quota` and ends the phase with its own [`Stop`](crate::Stop) reason.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rustix::fs::{AtFlags, Mode, OFlags};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, Dir, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, Filesize, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, FsError, OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{FsPerms, OpenMode};

use crate::error::SandboxError;
use phasebox_grants::{Access, FileRequest};

use crate::grant::Documents;
use crate::host::PhaseState;
use crate::limits::Monitor;

/// The `wasi:filesystem` interfaces wasmtime-wasi 48 links (`wasi:filesystem@0.2.12`).
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";
const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// One directory mounted into the guest. It is named, not opened: a phase opens it when it
/// starts, beneath `job_dir` and without following any link (see [`Mount::host`]), because
/// what the subtree holds may have changed since the grant was resolved (an earlier phase
/// writes to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where the guest sees it.
    pub guest: String,
    /// The job directory the source lies in.
    pub job_dir: PathBuf,
    /// The subtree of the job directory: one or more plain names, no `.`, `..` or root.
    pub source: PathBuf,
    /// Its access.
    pub access: Access,
}

impl Mount {
    /// The directory on the host, for messages. Never open it by this path: a component may
    /// have been replaced by a symlink; the sandbox opens each component without following one.
    pub fn host(&self) -> PathBuf {
        self.job_dir.join(&self.source)
    }
}

/// Grants the job's directory requests: each covered by the manifest and the policy, its source
/// a directory inside `job_dir` reached without following any link ([`mount_source`]).
pub(crate) fn grant(docs: &Documents<'_>, asks: &[FileRequest], job_dir: &Path) -> Result<Vec<Mount>, SandboxError> {
    let mut mounts = Vec::new();
    for f in asks {
        let what = || format!("files {} ({}, {:?})", f.path, f.source, f.access);
        docs.require(what, |d| d.files.iter().any(|r| r.covers(f)))?;
        let (job_dir, source) = mount_source(docs.phase, &f.path, job_dir, &f.source)?;
        mounts.push(Mount { guest: f.path.clone(), job_dir, source, access: f.access });
    }
    Ok(mounts)
}

/// Checks a files `source`: plain names only (no `.`, `..`, empty component or root, so never
/// the whole job directory), naming a directory inside `job_dir` that can be reached without
/// following any link. Returns the job directory (canonical: it is the operator's path) and
/// the source as a relative path. The phase opens it again, the same way, when it starts.
fn mount_source(phase: &str, guest: &str, job_dir: &Path, source: &str) -> Result<(PathBuf, PathBuf), SandboxError> {
    let bad = |reason: String| SandboxError::BadMount { phase: phase.to_owned(), guest: guest.to_owned(), reason };
    if !guest.starts_with('/') {
        return Err(bad("the guest path must be absolute, e.g. `/attachments`".into()));
    }
    // Split by hand: `Path::components` drops `.` and empty components, so `./` or `a/./b` would
    // pass for something they are not written as.
    if source.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad(format!(
            "source `{source}` must name a subtree of the job directory by plain names (e.g. `artifacts` \
             or `attachments/test`): no `.`, `..`, empty or absolute components, and never the whole job \
             directory"
        )));
    }
    let root = job_dir.canonicalize().map_err(|e| bad(format!("job directory {}: {e}", job_dir.display())))?;
    let rel = PathBuf::from(source);
    open_beneath(&root, &rel).map_err(|e| bad(format!("source `{source}`: {e}")))?;
    Ok((root, rel))
}

/// Opens the directory `source` (plain names only) beneath `job_dir` without following any
/// symlink: each component is opened relative to the handle of the one before, by its name
/// alone, with `O_NOFOLLOW | O_DIRECTORY`, so a component that is a link (or not a directory)
/// is refused instead of followed. The handle is `O_PATH`, as wasmtime-wasi opens preopens.
pub(crate) fn open_beneath(job_dir: &Path, source: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // The job directory itself is the operator's path; links in it are the operator's own.
    let mut dir = rustix::fs::open(job_dir, flags, Mode::empty())?;
    for component in source.components() {
        let Component::Normal(name) = component else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "only plain names are allowed"));
        };
        dir = match rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(next) => next,
            Err(e) => {
                // O_NOFOLLOW | O_DIRECTORY says "not a directory" for a link; say what it is.
                let is_link = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink());
                let what = Path::new(name).display();
                return Err(if is_link {
                    io::Error::other(format!("`{what}` is a symbolic link; mounts never follow links"))
                } else {
                    io::Error::other(format!("`{what}`: {}", io::Error::from(e)))
                });
            }
        };
    }
    Ok(dir)
}

/// Opens every mount of a phase (see [`open_beneath`]) as the directory handles its guest gets.
pub(crate) fn open_mounts(mounts: &[Mount], phase: &str) -> Result<Vec<(Dir, String)>, SandboxError> {
    mounts
        .iter()
        .map(|m| {
            let fd = open_beneath(&m.job_dir, &m.source).map_err(|e| SandboxError::BadMount {
                phase: phase.to_owned(),
                guest: m.guest.clone(),
                reason: format!("source `{}` cannot be opened when the phase starts: {e}", m.source.display()),
            })?;
            let (perms, mode) = match m.access {
                Access::Ro => (FsPerms::ReadOnly, OpenMode::READ),
                Access::Rw => (FsPerms::ReadWrite, OpenMode::READ | OpenMode::WRITE),
            };
            Ok((Dir::new(std::fs::File::from(fd), perms, mode, false), m.guest.clone()))
        })
        .collect()
}

/// Why a symlink target would lead out of the directory the link is made in, or `None` when
/// it stays inside it.
pub(crate) fn escaping_link(target: &str) -> Option<&'static str> {
    if target.starts_with('/') {
        return Some("absolute symlink targets are not allowed");
    }
    if target.split('/').any(|c| c == "..") {
        return Some("symlink targets may not contain `..` (a link must stay inside the directory it is made in)");
    }
    None
}

/// Shadows the parts of `wasi:filesystem` that decide what a guest's files reach: the
/// preopens (from handles opened safely), link creation (checked), and every way to create an
/// entry or write bytes (counted against the phase's limits). Everything else is wasmtime-wasi's.
pub(crate) fn link(linker: &mut Linker<PhaseState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(PREOPENS)?.func_wrap("get-directories", |mut store, (): ()| {
        let state = store.data_mut();
        let mut dirs = Vec::with_capacity(state.preopens.len());
        for (dir, guest) in &state.preopens {
            dirs.push((state.table.push(Descriptor::Dir(dir.clone()))?, guest.clone()));
        }
        Ok((dirs,))
    })?;

    let mut types = linker.instance(TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, target, link): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let call = format!("symlink {link:?} -> {target:?}");
                if let Some(why) = escaping_link(&target) {
                    tracing::debug!(%call, why, "symlink refused");
                    crate::host::record(state, "files", call, Some(why.into())).await;
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                if !state.monitor.create_entry() {
                    return Ok((Err(ErrorCode::Quota),));
                }
                let result = HostDescriptor::symlink_at(&mut state.filesystem(), fd, target, link).await;
                Ok((fs_result(result)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if !state.monitor.create_entry() {
                    return Ok((Err(ErrorCode::Quota),));
                }
                Ok((fs_result(HostDescriptor::create_directory_at(&mut state.filesystem(), fd, path).await)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store,
         (fd, old_flags, old, new_fd, new): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                if !state.monitor.create_entry() {
                    return Ok((Err(ErrorCode::Quota),));
                }
                let result = HostDescriptor::link_at(&mut state.filesystem(), fd, old_flags, old, new_fd, new).await;
                Ok((fs_result(result)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                // Only an open that creates what was not there counts as a new entry.
                if oflags.contains(OpenFlags::CREATE) {
                    let probe = Resource::new_borrow(fd.rep());
                    let exists =
                        HostDescriptor::stat_at(&mut state.filesystem(), probe, PathFlags::empty(), path.clone())
                            .await
                            .is_ok();
                    if !exists && !state.monitor.create_entry() {
                        return Ok((Err(ErrorCode::Quota),));
                    }
                }
                let result =
                    HostDescriptor::open_at(&mut state.filesystem(), fd, path_flags, path, oflags, flags).await;
                Ok((fs_result(result)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, Filesize)| {
            Box::new(async move {
                let state = store.data_mut();
                if !state.monitor.write_bytes(buf.len() as u64) {
                    return Ok((Err(ErrorCode::Quota),));
                }
                Ok((fs_result(HostDescriptor::write(&mut state.filesystem(), fd, buf, offset).await)?,))
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, Filesize)| {
            let state = store.data_mut();
            let stream = HostDescriptor::write_via_stream(&mut state.filesystem(), fd, offset);
            Ok((counted(state, stream)?,))
        },
    )?;
    types.func_wrap("[method]descriptor.append-via-stream", |mut store, (fd,): (Resource<Descriptor>,)| {
        let state = store.data_mut();
        let stream = HostDescriptor::append_via_stream(&mut state.filesystem(), fd);
        Ok((counted(state, stream)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A filesystem call's result as the guest gets it: its error code, or a trap.
fn fs_result<T>(result: Result<T, FsError>) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) => Ok(Err(e.downcast()?)),
    }
}

/// Replaces a file's new output stream in the table with one that counts what goes through it.
fn counted(
    state: &mut PhaseState,
    stream: Result<Resource<DynOutputStream>, FsError>,
) -> wasmtime::Result<Result<Resource<DynOutputStream>, ErrorCode>> {
    let stream = match fs_result(stream)? {
        Ok(stream) => stream,
        Err(code) => return Ok(Err(code)),
    };
    // Just made, so nothing borrows it yet.
    let inner = state.table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(CountingStream { inner, monitor: state.monitor.clone() });
    Ok(Ok(state.table.push(wrapped)?))
}

/// A file's output stream whose bytes count against the phase's disk limit.
struct CountingStream {
    inner: DynOutputStream,
    monitor: Arc<Monitor>,
}

impl CountingStream {
    fn account(&self, n: usize) -> StreamResult<()> {
        if self.monitor.write_bytes(n as u64) {
            Ok(())
        } else {
            Err(StreamError::LastOperationFailed(wasmtime::format_err!("the phase reached its disk write limit")))
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CountingStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.account(bytes.len())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.account(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        self.account(nelem)?;
        self.inner.write_zeroes(nelem)
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CountingStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[cfg(test)]
mod tests {
    use phasebox_grants::GrantRequest;

    use super::*;
    use crate::{Capabilities, FileRule, Grant, Policy};

    #[test]
    fn mounts_stay_inside_the_job_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("job/attachments/test")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("job/link")).unwrap();
        let job = dir.path().join("job");
        let everything = Capabilities::everything();
        let policy = Policy {
            allow: Capabilities {
                files: vec![FileRule { path: "*".into(), source: Some("attachments".into()), access: Access::Ro }],
                ..Capabilities::default()
            },
            ..Policy::default()
        };
        // Built directly, past the grammar's checks: the sandbox checks the source again.
        let ask = |source: &str, access| GrantRequest {
            files: vec![FileRequest { path: "/attachments".into(), source: source.into(), access }],
            ..Default::default()
        };
        let g = Grant::resolve("test", &everything, &policy, &ask("attachments/test", Access::Ro), &job).unwrap();
        assert_eq!(g.mounts()[0].host(), job.canonicalize().unwrap().join("attachments/test"));
        // read-write is more than the policy allows
        assert!(Grant::resolve("test", &everything, &policy, &ask("attachments/test", Access::Rw), &job).is_err());
        let open = Policy { allow: everything.clone(), ..Policy::default() };
        for bad in ["../outside", "/etc", "link", "attachments/../../outside", "missing"] {
            let err = Grant::resolve("test", &everything, &open, &ask(bad, Access::Ro), &job).unwrap_err();
            assert!(matches!(err, SandboxError::BadMount { .. }), "{bad}: {err}");
        }
        // A link is refused even when it stays inside: mounts never follow one.
        std::os::unix::fs::symlink("attachments", job.join("inner-link")).unwrap();
        let err = Grant::resolve("test", &everything, &open, &ask("inner-link/test", Access::Ro), &job).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn the_whole_job_directory_is_never_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let open = Policy { allow: Capabilities::everything(), ..Policy::default() };
        for source in [".", "./", "a/..", "", "a/./b", "a//b", "a/b/", "./a"] {
            let ask = GrantRequest {
                files: vec![FileRequest { path: "/job".into(), source: source.into(), access: Access::Rw }],
                ..Default::default()
            };
            let err = Grant::resolve("setup", &Capabilities::everything(), &open, &ask, dir.path()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, SandboxError::BadMount { .. }), "{source:?}: {text}");
            assert!(text.contains("phase setup") && text.contains("/job") && text.contains("plain names"), "{text}");
        }
    }

    #[test]
    fn links_must_stay_in_their_directory() {
        for ok in ["file", "sub/file", "./file", "a/./b", "x..y", "..x/y"] {
            assert_eq!(escaping_link(ok), None, "{ok}");
        }
        for bad in ["/etc/passwd", "/", "..", "../x", "../../../../..", "d/..", "a/../b", "a/b/../../.."] {
            assert!(escaping_link(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn opening_beneath_follows_no_link() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("job");
        std::fs::create_dir_all(job.join("artifacts/real/deeper")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("../../..", job.join("artifacts/loot")).unwrap();
        std::os::unix::fs::symlink("real", job.join("artifacts/inner")).unwrap();
        std::fs::write(job.join("artifacts/file"), "x").unwrap();
        assert!(open_beneath(&job, Path::new("artifacts/real/deeper")).is_ok());
        for (source, needle) in [
            ("artifacts/loot", "symbolic link"),
            ("artifacts/inner/deeper", "symbolic link"),
            ("artifacts/file", "Not a directory"),
            ("artifacts/missing", "No such file"),
            ("../outside", "plain names"),
        ] {
            let err = open_beneath(&job, Path::new(source)).unwrap_err().to_string();
            assert!(err.contains(needle), "{source}: {err}");
        }
    }
}
