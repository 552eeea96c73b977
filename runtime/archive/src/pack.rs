//! Packing of a job's `artifacts/` directory into the tar.gz Testflinger's server expects.

use std::cell::Cell;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_fs_ext::{DirExt as _, FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use flate2::Compression;
use flate2::write::GzEncoder;
use phasebox_redact::Redactor;
use tar::{EntryType, Header};
use tracing::{debug, info, warn};

use crate::error::ArchiveError;
use crate::paths;

/// Top-level directory of an artifact archive, as Testflinger's agent makes it
/// (`shutil.make_archive(..., root_dir=rundir, base_dir="artifacts")`).
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Directories nested deeper than this below the source are skipped (each level holds an open
/// directory handle while packing).
const MAX_PACK_DEPTH: usize = 128;

/// Something [`pack_artifacts`] left out of the archive, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Path relative to the source directory.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: String,
}

/// What [`pack_artifacts`] put in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Regular files stored.
    pub files: u64,
    /// Directories stored below `artifacts/` (the top-level directory itself excluded).
    pub dirs: u64,
    /// Symlinks stored (only those whose target stays inside the source directory).
    pub symlinks: u64,
    /// Content bytes of the stored files.
    pub bytes: u64,
    /// Entries left out (symlinks pointing outside, FIFOs, sockets, devices, over-deep
    /// directories), each also logged as a warning.
    pub skipped: Vec<Skipped>,
}

/// Packs `src_dir` as a gzip-compressed tar whose single top-level directory is `artifacts/`.
///
/// * Symlinks are never followed, `src_dir` itself included (a job could have replaced its
///   `artifacts/` with a link). A symlink is stored as a symlink only if its target is
///   relative and stays inside `src_dir` under the same rule the unpacker applies (leading
///   `..` only, never above `src_dir`); otherwise it is skipped and listed in
///   [`PackStats::skipped`].
/// * Only regular files, directories and such symlinks are stored; FIFOs, sockets and device
///   nodes are skipped. Files are opened relative to a handle on `src_dir`, without following
///   symlinks and without blocking, so a file swapped for a link or a FIFO while packing
///   cannot leak data from elsewhere or hang the packer.
/// * Output is deterministic for a given tree: entries in byte-wise sorted order, owner and
///   group 0 with no user or group names, modes normalised to `0755` (directories and files
///   executable by their owner) or `0644`, modification times preserved (whole seconds), and
///   the gzip header carries no timestamp or file name.
///
/// `out` receives the complete `.tar.gz`; it is not flushed beyond what the encoder writes.
/// Nothing is redacted: see [`pack_artifacts_redacted`] for a job with secrets.
pub fn pack_artifacts(src_dir: &Path, out: impl Write) -> Result<PackStats, ArchiveError> {
    pack_artifacts_redacted(src_dir, out, None)
}

/// [`pack_artifacts`], with every secret form `redactor` knows masked in what the archive
/// holds and what the packer logs or reports:
///
/// * file **contents** are redacted as a stream (a secret split across read boundaries is
///   caught); a file's redacted copy is staged in an anonymous temporary file (unlinked at
///   once, holding no secret) so its size is known for the tar header;
/// * entry **names** (the whole path below `artifacts/`, so a secret spanning directories is
///   caught too) and **symlink targets** are redacted as text;
/// * paths and reasons in [`PackStats::skipped`] and in log lines are redacted likewise.
///
/// A file that contained a secret is therefore stored with the same token in its place that
/// the job's output shows, not refused: the rest of a log stays useful.
pub fn pack_artifacts_redacted(
    src_dir: &Path,
    out: impl Write,
    redactor: Option<&Redactor>,
) -> Result<PackStats, ArchiveError> {
    let root = open_source_dir(src_dir)?;
    let root_meta = root.dir_metadata().map_err(ArchiveError::io(src_dir))?;

    let mut packer = Packer {
        src_dir,
        builder: tar::Builder::new(GzEncoder::new(out, Compression::default())),
        stats: PackStats::default(),
        read_failed: Cell::new(false),
        redactor,
    };
    packer.append_dir(Path::new(ARTIFACTS_DIR), root_meta.mtime())?;
    packer.walk(&root, Path::new(""), 0)?;

    let encoder = packer.builder.into_inner().map_err(|source| ArchiveError::Output { source })?;
    encoder.finish().map_err(|source| ArchiveError::Output { source })?;

    let stats = packer.stats;
    info!(
        src = ?src_dir,
        files = stats.files,
        bytes = stats.bytes,
        skipped = stats.skipped.len(),
        "packed artifacts"
    );
    Ok(stats)
}

/// Opens `src_dir` without following a link in its last component: the directories above it
/// are the operator's, the last one is the job's.
fn open_source_dir(src_dir: &Path) -> Result<Dir, ArchiveError> {
    let (Some(parent), Some(name)) = (src_dir.parent(), src_dir.file_name()) else {
        return Dir::open_ambient_dir(src_dir, ambient_authority()).map_err(ArchiveError::io(src_dir));
    };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let parent = Dir::open_ambient_dir(parent, ambient_authority()).map_err(ArchiveError::io(parent))?;
    parent.open_dir_nofollow(name).map_err(ArchiveError::io(src_dir))
}

struct Packer<'a, W: Write> {
    src_dir: &'a Path,
    builder: tar::Builder<GzEncoder<W>>,
    stats: PackStats,
    /// Set by [`ExactReader`] when the error in flight came from the source file.
    read_failed: Cell<bool>,
    redactor: Option<&'a Redactor>,
}

impl<W: Write> Packer<'_, W> {
    fn skip(&mut self, rel: &Path, reason: impl Into<String>) {
        let reason = self.redacted(&reason.into());
        let path = self.redacted_path(rel);
        warn!(path = ?path, reason = ?reason, "not packing artifact entry");
        self.stats.skipped.push(Skipped { path, reason });
    }

    /// `text` with every secret form masked.
    fn redacted(&self, text: &str) -> String {
        match self.redactor {
            Some(r) => r.redact_str(text),
            None => text.to_owned(),
        }
    }

    /// `path` with every secret form masked (as it is, when it holds none).
    fn redacted_path(&self, path: &Path) -> PathBuf {
        match self.redactor {
            Some(r) => {
                let shown = path.to_string_lossy();
                let redacted = r.redact_str(&shown);
                if redacted == shown { path.to_path_buf() } else { PathBuf::from(redacted) }
            }
            None => path.to_path_buf(),
        }
    }

    fn walk(&mut self, dir: &Dir, rel: &Path, depth: usize) -> Result<(), ArchiveError> {
        let abs = self.src_dir.join(rel);
        let mut children: Vec<(OsString, cap_std::fs::FileType)> = Vec::new();
        for child in dir.entries().map_err(ArchiveError::io(&abs))? {
            let child = child.map_err(ArchiveError::io(&abs))?;
            let file_type = child.file_type().map_err(ArchiveError::io(&abs))?;
            children.push((child.file_name(), file_type));
        }
        children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        for (name, file_type) in children {
            let child_rel = rel.join(&name);
            let child_abs = self.src_dir.join(&child_rel);
            let arc_path = Path::new(ARTIFACTS_DIR).join(self.redacted_path(&child_rel));
            if file_type.is_dir() {
                if depth + 1 > MAX_PACK_DEPTH {
                    self.skip(&child_rel, format!("nested deeper than {MAX_PACK_DEPTH} levels"));
                    continue;
                }
                let sub = match dir.open_dir_nofollow(&name) {
                    Ok(sub) => sub,
                    Err(e) => {
                        // Replaced by a symlink (or removed) since it was listed.
                        self.skip(&child_rel, format!("could not open directory: {e}"));
                        continue;
                    }
                };
                let meta = sub.dir_metadata().map_err(ArchiveError::io(&child_abs))?;
                self.append_dir(&arc_path, meta.mtime())?;
                self.stats.dirs += 1;
                self.walk(&sub, &child_rel, depth + 1)?;
            } else if file_type.is_file() {
                self.append_file(dir, &name, &child_rel, &arc_path)?;
            } else if file_type.is_symlink() {
                let target = dir.read_link_contents(&name).map_err(ArchiveError::io(&child_abs))?;
                match paths::check_symlink_target(depth, target.as_os_str().as_bytes()) {
                    Ok(()) => {
                        let target = self.redacted_path(&target);
                        let mut header = base_header(EntryType::Symlink, 0o777, symlink_mtime(dir, &name));
                        self.builder
                            .append_link(&mut header, &arc_path, &target)
                            .map_err(|source| ArchiveError::Output { source })?;
                        self.stats.symlinks += 1;
                    }
                    Err(problem) => {
                        let reason = format!(
                            "{} (`{}`); symlinks are kept only if they stay inside the artifacts \
                             directory",
                            problem.describe(),
                            target.display()
                        );
                        self.skip(&child_rel, reason);
                    }
                }
            } else {
                self.skip(&child_rel, "not a regular file, directory or symlink (FIFO, socket or device)");
            }
        }
        Ok(())
    }

    fn append_dir(&mut self, arc_path: &Path, mtime: i64) -> Result<(), ArchiveError> {
        let mut header = base_header(EntryType::Directory, 0o755, mtime);
        self.builder.append_data(&mut header, arc_path, io::empty()).map_err(|source| ArchiveError::Output { source })
    }

    fn append_file(&mut self, dir: &Dir, name: &OsString, rel: &Path, arc_path: &Path) -> Result<(), ArchiveError> {
        let abs = self.src_dir.join(rel);
        let mut options = OpenOptions::new();
        options.read(true).follow(FollowSymlinks::No).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
        let file = match dir.open_with(name, &options) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.skip(rel, "replaced by a symlink while packing");
                return Ok(());
            }
            Err(e) => {
                return Err(ArchiveError::Io { path: abs, source: e });
            }
        };
        let meta = file.metadata().map_err(ArchiveError::io(&abs))?;
        if !meta.is_file() {
            self.skip(rel, "no longer a regular file when opened");
            return Ok(());
        }
        let mode = if meta.mode() & 0o100 != 0 { 0o755 } else { 0o644 };
        let (source, size) = match self.redactor {
            Some(r) => redacted_copy(file.into_std(), r).map_err(ArchiveError::io(&abs))?,
            None => (file.into_std(), meta.len()),
        };
        let mut header = base_header(EntryType::Regular, mode, meta.mtime());
        header.set_size(size);

        self.read_failed.set(false);
        let reader = ExactReader { inner: source, remaining: size, failed: &self.read_failed };
        if let Err(source) = self.builder.append_data(&mut header, arc_path, reader) {
            return Err(if self.read_failed.get() {
                ArchiveError::Io { path: abs, source }
            } else {
                ArchiveError::Output { source }
            });
        }
        debug!(path = ?self.redacted_path(rel), size, "packed artifact file");
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }
}

/// The contents of `file` with every secret form masked, in an anonymous temporary file
/// rewound to its start, and its length.
fn redacted_copy(mut file: std::fs::File, redactor: &Redactor) -> io::Result<(std::fs::File, u64)> {
    let mut copy = tempfile::tempfile()?;
    let mut stream = redactor.stream();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(buf.len() * 2);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        stream.push_into(&buf[..n], &mut out);
        copy.write_all(&out)?;
    }
    out.clear();
    stream.finish_into(&mut out);
    copy.write_all(&out)?;
    let len = io::Seek::seek(&mut copy, io::SeekFrom::End(0))?;
    io::Seek::seek(&mut copy, io::SeekFrom::Start(0))?;
    Ok((copy, len))
}

/// A header with everything but type, mode and mtime zeroed: uid/gid 0, no names.
fn base_header(entry_type: EntryType, mode: u32, mtime: i64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(mtime).unwrap_or(0));
    header.set_size(0);
    header
}

fn symlink_mtime(dir: &Dir, name: &OsString) -> i64 {
    dir.symlink_metadata(name).map(|m| m.mtime()).unwrap_or(0)
}

/// Yields exactly `remaining` bytes of `inner`, failing if it ends early (the file shrank
/// after its size was recorded in the header); extra bytes (it grew) are not read.
struct ExactReader<'a, R> {
    inner: R,
    remaining: u64,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.failed.set(true);
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while it was being packed"))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.set(true);
                }
                Err(e)
            }
        }
    }
}
