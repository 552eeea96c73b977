//! Unpacking of attachment archives (`attachments.tar.gz`).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _, Permissions, PermissionsExt as _};
use flate2::read::MultiGzDecoder;
use tar::EntryType;
use tracing::{debug, info, warn};

use crate::error::ArchiveError;
use crate::paths::{self, LinkProblem, NAME_MAX, NameProblem};

/// Mode of every directory created while unpacking.
const DIR_MODE: u32 = 0o755;
/// Upper bound of a file's mode after unpacking (`0644`: no execute, no group/other write,
/// no setuid/setgid/sticky).
const FILE_MODE_MAX: u32 = 0o644;
/// Largest PAX extended header (`x`/`g`) we are willing to hold in memory.
const MAX_PAX_HEADER: u64 = 256 * 1024;
/// Allowance per member, on top of its contents, for the tar header, padding and extension
/// headers when bounding the whole decompressed stream.
const PER_ENTRY_OVERHEAD: u64 = 4 * 1024;
/// Allowance for the end-of-archive marker and record padding (tar pads to 10 KiB records;
/// some writers use larger blocking factors).
const TRAILER_ALLOWANCE: u64 = 1024 * 1024;

/// The phase directories Testflinger's agent accepts at the top of an attachments archive
/// (`provision/`, `firmware_update/`, `test/`).
pub const TESTFLINGER_PHASES: [&str; 3] = ["provision", "firmware_update", "test"];

/// Bounds applied while unpacking. Anything over a bound aborts the whole unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum sum of all regular files' contents, counted as bytes actually read from the
    /// decompressor. The decompressed stream as a whole (headers, padding, trailing data) is
    /// bounded by this plus a small per-entry allowance.
    pub max_total_bytes: u64,
    /// Maximum size of one member: its header's declared size and the bytes actually read for
    /// it must both stay within this.
    pub max_entry_bytes: u64,
    /// Maximum number of members (files, directories, links, and PAX global headers) plus
    /// directories implied by members' paths but absent from the archive. GNU long-name and
    /// PAX per-file headers belong to their member and are not counted apart.
    pub max_entries: u64,
    /// Maximum number of path components of a member name (`test/a/b` is 3).
    pub max_depth: usize,
    /// Maximum length in bytes of a member name (after dropping `.` and empty components)
    /// and of a link target. Single components are further limited to 255 bytes.
    pub max_path_bytes: usize,
    /// Top-level directories allowed in the archive. `Some` (the default, Testflinger's
    /// [`TESTFLINGER_PHASES`]) refuses any member outside them and any top-level member that
    /// is not a directory; `None` accepts any layout.
    pub allowed_phases: Option<Vec<String>>,
}

impl Default for Limits {
    /// 1 GiB in total, 512 MiB per file, 10 000 entries, 32 levels, 4096-byte paths, and
    /// Testflinger's phase directories.
    fn default() -> Self {
        Limits {
            max_total_bytes: 1 << 30,
            max_entry_bytes: 512 << 20,
            max_entries: 10_000,
            max_depth: 32,
            max_path_bytes: 4096,
            allowed_phases: Some(TESTFLINGER_PHASES.iter().map(|p| p.to_string()).collect()),
        }
    }
}

impl Limits {
    /// The bound on the whole decompressed stream derived from these limits.
    pub fn max_stream_bytes(&self) -> u64 {
        self.max_total_bytes
            .saturating_add(self.max_entries.saturating_add(2).saturating_mul(PER_ENTRY_OVERHEAD))
            .saturating_add(TRAILER_ALLOWANCE)
    }
}

/// One top-level directory of an unpacked archive (a phase, in Testflinger's layout
/// `attachments/<phase>/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseDir {
    /// The directory name, e.g. `test` (lossily decoded if not UTF-8).
    pub name: String,
    /// Its final location, `<dest>/<name>`.
    pub path: PathBuf,
    /// Regular files (hard links included) anywhere below it.
    pub files: u64,
    /// Bytes of those files' contents (hard links count zero).
    pub bytes: u64,
}

/// What [`unpack_attachments`] put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The destination directory, now holding the archive's tree.
    pub root: PathBuf,
    /// Top-level directories, sorted by name.
    pub phases: Vec<PhaseDir>,
    /// Regular files extracted (hard links included; a replaced duplicate counts once).
    pub files: u64,
    /// Directories created (explicit or implied by a member's path), the root excluded.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Content bytes of the extracted files (hard links count zero).
    pub bytes: u64,
}

impl Unpacked {
    /// The directory of phase `name`, if the archive had one.
    pub fn phase(&self, name: &str) -> Option<&PhaseDir> {
        self.phases.iter().find(|p| p.name == name)
    }
}

/// Unpacks a gzip-compressed tar archive of attachments into `dest`, atomically.
///
/// `dest` must not exist, or be an empty directory; its parent must exist. The archive is
/// extracted into a fresh private directory next to `dest` (same parent, so on the same
/// filesystem) and renamed to `dest` only once every member has passed every check. On any
/// error the staging directory is removed and `dest` is left as it was, so nothing from a
/// refused archive is ever visible there.
///
/// Members are laid out as in the archive: for a Testflinger archive `test/run.sh` becomes
/// `<dest>/test/run.sh`, so with `dest = <rundir>/attachments` the usual
/// `attachments/<phase>/...` layout results. See the crate documentation for every check.
pub fn unpack_attachments(archive: impl Read, dest: &Path, limits: &Limits) -> Result<Unpacked, ArchiveError> {
    check_destination(dest)?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let staging =
        tempfile::Builder::new().prefix(".phasebox-unpack-").tempdir_in(parent).map_err(ArchiveError::io(parent))?;
    let staging_path = staging.path().to_path_buf();
    debug!(dest = %dest.display(), staging = %staging_path.display(), "unpacking attachments");

    let tree = match extract(archive, &staging_path, limits) {
        Ok(tree) => tree,
        Err(err) => {
            warn!(dest = %dest.display(), error = %err, "refused attachment archive");
            if let Err(cleanup) = staging.close() {
                tracing::error!(
                    staging = %staging_path.display(),
                    error = %cleanup,
                    "could not remove staging directory of refused archive"
                );
            }
            return Err(err);
        }
    };

    fs::set_permissions(staging.path(), fs::Permissions::from_mode(DIR_MODE))
        .map_err(ArchiveError::io(staging.path()))?;
    if let Err(source) = fs::rename(staging.path(), dest) {
        let err = match source.raw_os_error() {
            Some(libc::ENOTEMPTY | libc::EEXIST) => ArchiveError::DestinationNotEmpty { path: dest.to_path_buf() },
            _ => ArchiveError::Io { path: dest.to_path_buf(), source },
        };
        // `staging` is dropped here and removes the extracted tree.
        return Err(err);
    }
    let _ = staging.keep();

    let unpacked = tree.summary(dest);
    info!(
        dest = %dest.display(),
        files = unpacked.files,
        bytes = unpacked.bytes,
        phases = ?unpacked.phases.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "unpacked attachments"
    );
    Ok(unpacked)
}

/// `dest` must be absent or an empty real directory.
fn check_destination(dest: &Path) -> Result<(), ArchiveError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ArchiveError::Io { path: dest.to_path_buf(), source: e }),
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(ArchiveError::io(dest))?;
            if entries.next().is_none() {
                Ok(())
            } else {
                Err(ArchiveError::DestinationNotEmpty { path: dest.to_path_buf() })
            }
        }
        Ok(_) => Err(ArchiveError::DestinationNotEmpty { path: dest.to_path_buf() }),
    }
}

/// Reader that counts decompressed bytes and fails once they exceed a cap.
struct CappedReader<R> {
    inner: R,
    read: u64,
    cap: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded.get() {
            return Err(io::Error::other("decompressed stream limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.cap {
            self.exceeded.set(true);
            return Err(io::Error::other("decompressed stream limit exceeded"));
        }
        Ok(n)
    }
}

/// What the staging tree holds at a path. The unpacker only ever creates things in a fresh
/// private directory, so this map is an exact picture of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File { bytes: u64 },
    Symlink,
}

/// What a member is, once its type is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
}

/// Extension headers seen before the member they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

struct Extractor<'a> {
    root: Dir,
    root_path: &'a Path,
    limits: &'a Limits,
    stream_cap: u64,
    exceeded: Rc<Cell<bool>>,
    tree: HashMap<PathBuf, Node>,
    entries: u64,
    content_bytes: u64,
    buf: Vec<u8>,
}

fn extract<'a>(archive: impl Read, root_path: &'a Path, limits: &'a Limits) -> Result<Extractor<'a>, ArchiveError> {
    let root = Dir::open_ambient_dir(root_path, ambient_authority()).map_err(ArchiveError::io(root_path))?;
    let exceeded = Rc::new(Cell::new(false));
    let stream_cap = limits.max_stream_bytes();
    let reader =
        CappedReader { inner: MultiGzDecoder::new(archive), read: 0, cap: stream_cap, exceeded: Rc::clone(&exceeded) };
    let mut ex = Extractor {
        root,
        root_path,
        limits,
        stream_cap,
        exceeded,
        tree: HashMap::new(),
        entries: 0,
        content_bytes: 0,
        buf: vec![0; 64 * 1024],
    };

    let mut archive = tar::Archive::new(reader);
    {
        // Raw mode: we handle GNU long names and PAX headers ourselves so that their size is
        // bounded before anything is buffered.
        let entries = archive.entries().map_err(|e| ex.read_error(e, None))?.raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| ex.read_error(e, None))?;
            ex.handle_raw(&mut entry, &mut pending)?;
        }
        if !pending.is_empty() {
            return Err(ArchiveError::Corrupt(
                "archive ends with an extension header (long name or PAX) that describes no \
                 entry"
                    .into(),
            ));
        }
    }

    // Drain what follows the end-of-archive marker: it must still be a valid gzip stream
    // (checksums are verified at its end) and it counts against the stream bound.
    let mut reader = archive.into_inner();
    let mut trailing_nonzero = false;
    loop {
        match reader.read(&mut ex.buf) {
            Ok(0) => break,
            Ok(n) => trailing_nonzero |= ex.buf[..n].iter().any(|b| *b != 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ex.read_error(e, None)),
        }
    }
    if reader.read == 0 {
        return Err(ArchiveError::Corrupt("the archive is empty (no tar data inside the gzip stream)".into()));
    }
    if trailing_nonzero {
        warn!("attachment archive has non-zero data after the tar end-of-archive marker; ignored");
    }
    Ok(ex)
}

impl Extractor<'_> {
    /// Maps an error from reading the archive stream.
    fn read_error(&self, err: io::Error, entry: Option<&[u8]>) -> ArchiveError {
        if self.exceeded.get() {
            return ArchiveError::StreamTooLarge { limit: self.stream_cap };
        }
        match entry {
            Some(name) => ArchiveError::Corrupt(format!("while reading entry `{}`: {err}", paths::display(name))),
            None => ArchiveError::Corrupt(err.to_string()),
        }
    }

    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries { limit: self.limits.max_entries });
        }
        Ok(())
    }

    /// Reads the data of an extension header, refusing it if larger than `max`.
    fn read_meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>, ArchiveError> {
        let size = entry.size();
        if size > max {
            return Err(ArchiveError::Corrupt(format!(
                "{what} header of {size} bytes is larger than the {max} bytes allowed"
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(|e| self.read_error(e, None))?;
        if data.len() as u64 != size {
            return Err(ArchiveError::Corrupt(format!("{what} header is truncated")));
        }
        Ok(data)
    }

    /// Reads a GNU long name or long link (NUL-terminated), bounded by the path limit.
    fn read_long_path<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, what: &str) -> Result<Vec<u8>, ArchiveError> {
        let limit = self.limits.max_path_bytes;
        let size = entry.size();
        if size > limit as u64 + 1 {
            return Err(ArchiveError::PathTooLong {
                entry: format!("({what} header of the next entry)"),
                len: usize::try_from(size - 1).unwrap_or(usize::MAX),
                limit,
            });
        }
        self.read_meta(entry, limit as u64 + 1, what)
    }

    fn handle_raw<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pending: &mut Pending,
    ) -> Result<(), ArchiveError> {
        let entry_type = entry.header().entry_type();
        let duplicate = || ArchiveError::Corrupt("two extension headers of the same kind describe one entry".into());
        if entry_type.is_gnu_longname() {
            if pending.long_name.is_some() {
                return Err(duplicate());
            }
            let mut name = self.read_long_path(entry, "GNU long name")?;
            strip_nuls(&mut name);
            pending.long_name = Some(name);
            return Ok(());
        }
        if entry_type.is_gnu_longlink() {
            if pending.long_link.is_some() {
                return Err(duplicate());
            }
            let mut link = self.read_long_path(entry, "GNU long link")?;
            strip_nuls(&mut link);
            pending.long_link = Some(link);
            return Ok(());
        }
        if entry_type.is_pax_local_extensions() {
            if pending.pax.is_some() {
                return Err(duplicate());
            }
            pending.pax = Some(self.read_meta(entry, MAX_PAX_HEADER, "PAX extended")?);
            return Ok(());
        }
        if entry_type.is_pax_global_extensions() {
            // Global headers (e.g. `git archive`'s commit comment) carry nothing we use, but
            // they are members, so they count.
            self.count_entry()?;
            self.read_meta(entry, MAX_PAX_HEADER, "PAX global")?;
            debug!("ignoring PAX global header");
            return Ok(());
        }

        let pending = std::mem::take(pending);
        let mut name = pending.long_name.unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let mut link = pending.long_link.or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        if let Some(pax) = &pending.pax {
            for ext in tar::PaxExtensions::new(pax) {
                let ext = ext.map_err(|e| {
                    ArchiveError::Corrupt(format!("malformed PAX header before `{}`: {e}", paths::display(&name)))
                })?;
                match ext.key_bytes() {
                    b"path" => name = ext.value_bytes().to_vec(),
                    b"linkpath" => link = Some(ext.value_bytes().to_vec()),
                    b"size" => {
                        let declared = ext.value().ok().and_then(|v| v.parse::<u64>().ok());
                        if declared != Some(entry.size()) {
                            return Err(ArchiveError::Corrupt(format!(
                                "PAX size of entry `{}` disagrees with its header size {}",
                                paths::display(&name),
                                entry.size()
                            )));
                        }
                    }
                    _ => {}
                }
            }
        }
        self.handle_member(entry, &name, link.as_deref())
    }

    fn handle_member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
        link: Option<&[u8]>,
    ) -> Result<(), ArchiveError> {
        let shown = || paths::display(name);
        self.count_entry()?;

        let components = match paths::split_member_name(name) {
            Ok(c) => c,
            Err(NameProblem::Absolute) => {
                return Err(ArchiveError::AbsolutePath { entry: shown() });
            }
            Err(NameProblem::DotDot) => return Err(ArchiveError::PathEscapes { entry: shown() }),
            Err(NameProblem::Empty) => {
                return Err(ArchiveError::InvalidPath { entry: shown(), reason: "empty name".into() });
            }
            Err(NameProblem::Nul) => {
                return Err(ArchiveError::InvalidPath { entry: shown(), reason: "name contains a NUL byte".into() });
            }
        };

        let header_type = entry.header().entry_type();
        let kind = match header_type {
            // Old (pre-POSIX) archives mark directories as regular files named `.../`.
            EntryType::Regular if header_type.as_byte() == 0 && name.ends_with(b"/") => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::HardLink,
            other => {
                return Err(ArchiveError::UnsupportedEntryType { entry: shown(), kind: describe_type(other) });
            }
        };

        if entry.size() > self.limits.max_entry_bytes {
            return Err(ArchiveError::TooLarge { entry: shown(), limit: self.limits.max_entry_bytes });
        }

        if components.is_empty() {
            if kind == Kind::Dir {
                return Ok(()); // `./`: the root itself.
            }
            return Err(ArchiveError::InvalidPath {
                entry: shown(),
                reason: "names the archive root but is not a directory".into(),
            });
        }
        self.check_shape(name, &components)?;
        self.check_phase(name, &components, kind)?;

        // Every ancestor must be a real directory we created; create missing ones.
        for depth in 1..components.len() {
            let prefix = paths::join(&components[..depth]);
            match self.tree.get(&prefix) {
                Some(Node::Dir) => {}
                Some(Node::Symlink) => {
                    return Err(ArchiveError::WritesThroughLink { entry: shown(), link: prefix.display().to_string() });
                }
                Some(Node::File { .. }) => {
                    return Err(ArchiveError::PathConflict {
                        entry: shown(),
                        reason: format!("`{}` is a regular file, not a directory", prefix.display()),
                    });
                }
                None => {
                    // Directories implied by a member's path are created, so they count:
                    // otherwise 10 000 deep paths could create 300 000 directories.
                    self.count_entry()?;
                    self.make_dir(&prefix)?;
                }
            }
        }

        let rel = paths::join(&components);
        let parent_depth = components.len() - 1;
        match (self.tree.get(&rel).copied(), kind) {
            (None, _) => {}
            (Some(Node::Dir), Kind::Dir) => return Ok(()),
            (Some(Node::Dir), _) => {
                return Err(ArchiveError::PathConflict {
                    entry: shown(),
                    reason: "a directory already exists at this path".into(),
                });
            }
            (Some(Node::File { .. }), Kind::HardLink) if links_to_itself(link, &rel) => {
                return Ok(()); // Python's tarfile writes these for a file added twice.
            }
            (Some(Node::File { .. }), Kind::File | Kind::HardLink | Kind::Symlink) => {
                // A later duplicate replaces the earlier file, as tar does. Unlinking never
                // follows links, and the replacement is created afresh.
                debug!(entry = %rel.display(), "replacing duplicate archive entry");
                self.root.remove_file(&rel).map_err(ArchiveError::io(self.root_path.join(&rel)))?;
                self.tree.remove(&rel);
            }
            (Some(Node::File { .. }), Kind::Dir) => {
                return Err(ArchiveError::PathConflict {
                    entry: shown(),
                    reason: "a regular file already exists at this path".into(),
                });
            }
            (Some(Node::Symlink), _) => {
                return Err(ArchiveError::PathConflict {
                    entry: shown(),
                    reason: "a symlink already exists at this path; replacing links is refused".into(),
                });
            }
        }

        match kind {
            Kind::Dir => self.make_dir(&rel),
            Kind::File => self.write_file(entry, name, &rel),
            Kind::Symlink => self.make_symlink(name, &rel, parent_depth, link),
            Kind::HardLink => self.make_hard_link(name, &rel, link),
        }
    }

    /// Depth and length limits.
    fn check_shape(&self, name: &[u8], components: &[&[u8]]) -> Result<(), ArchiveError> {
        if components.len() > self.limits.max_depth {
            return Err(ArchiveError::TooDeep {
                entry: paths::display(name),
                depth: components.len(),
                limit: self.limits.max_depth,
            });
        }
        let len = components.iter().map(|c| c.len()).sum::<usize>() + components.len() - 1;
        if len > self.limits.max_path_bytes {
            return Err(ArchiveError::PathTooLong {
                entry: paths::display(name),
                len,
                limit: self.limits.max_path_bytes,
            });
        }
        if let Some(long) = components.iter().find(|c| c.len() > NAME_MAX) {
            return Err(ArchiveError::PathTooLong { entry: paths::display(name), len: long.len(), limit: NAME_MAX });
        }
        Ok(())
    }

    /// Testflinger layout: every member under an allowed phase directory.
    fn check_phase(&self, name: &[u8], components: &[&[u8]], kind: Kind) -> Result<(), ArchiveError> {
        let Some(allowed) = &self.limits.allowed_phases else {
            return Ok(());
        };
        let top = components[0];
        if !allowed.iter().any(|p| p.as_bytes() == top) {
            return Err(ArchiveError::UnknownPhase {
                entry: paths::display(name),
                phase: paths::display(top),
                allowed: allowed.join(", "),
            });
        }
        if components.len() == 1 && kind != Kind::Dir {
            return Err(ArchiveError::InvalidPath {
                entry: paths::display(name),
                reason: "top-level entries must be phase directories".into(),
            });
        }
        Ok(())
    }

    fn make_dir(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        let abs = self.root_path.join(rel);
        self.root.create_dir(rel).map_err(ArchiveError::io(&abs))?;
        self.root.set_permissions(rel, Permissions::from_mode(DIR_MODE)).map_err(ArchiveError::io(&abs))?;
        self.tree.insert(rel.to_path_buf(), Node::Dir);
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
        rel: &Path,
    ) -> Result<(), ArchiveError> {
        let abs = self.root_path.join(rel);
        let header = entry.header();
        let mode = (header.mode().unwrap_or(0o644) & FILE_MODE_MAX) | 0o600;
        let mtime = header.mtime().ok();
        let declared = entry.size();

        let mut options = OpenOptions::new();
        options.write(true).create_new(true).mode(0o600).follow(FollowSymlinks::No);
        let mut file = self.root.open_with(rel, &options).map_err(ArchiveError::io(&abs))?.into_std();

        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e, Some(name))),
            };
            written += n as u64;
            if written > self.limits.max_entry_bytes {
                return Err(ArchiveError::TooLarge { entry: paths::display(name), limit: self.limits.max_entry_bytes });
            }
            if self.content_bytes + written > self.limits.max_total_bytes {
                return Err(ArchiveError::TotalTooLarge {
                    entry: paths::display(name),
                    limit: self.limits.max_total_bytes,
                });
            }
            file.write_all(&self.buf[..n]).map_err(ArchiveError::io(&abs))?;
        }
        if written != declared {
            return Err(ArchiveError::Corrupt(format!(
                "entry `{}` declares {declared} bytes but the archive ends after {written}",
                paths::display(name)
            )));
        }
        self.content_bytes += written;

        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(ArchiveError::io(&abs))?;
        if let Some(secs) = mtime
            && let Err(e) = file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        {
            debug!(file = %abs.display(), error = %e, "could not set mtime");
        }
        self.tree.insert(rel.to_path_buf(), Node::File { bytes: written });
        Ok(())
    }

    fn make_symlink(
        &mut self,
        name: &[u8],
        rel: &Path,
        parent_depth: usize,
        target: Option<&[u8]>,
    ) -> Result<(), ArchiveError> {
        let target = target.unwrap_or_default();
        if target.len() > self.limits.max_path_bytes {
            return Err(ArchiveError::PathTooLong {
                entry: paths::display(name),
                len: target.len(),
                limit: self.limits.max_path_bytes,
            });
        }
        match paths::check_symlink_target(parent_depth, target) {
            Ok(()) => {}
            Err(LinkProblem::Empty | LinkProblem::Nul) => {
                return Err(ArchiveError::InvalidPath {
                    entry: paths::display(name),
                    reason: "symlink with an empty target or a NUL byte in it".into(),
                });
            }
            Err(_) => {
                return Err(ArchiveError::LinkEscapes { entry: paths::display(name), target: paths::display(target) });
            }
        }
        let abs = self.root_path.join(rel);
        self.root.symlink(OsStr::from_bytes(target), rel).map_err(ArchiveError::io(&abs))?;
        self.tree.insert(rel.to_path_buf(), Node::Symlink);
        Ok(())
    }

    fn make_hard_link(&mut self, name: &[u8], rel: &Path, target: Option<&[u8]>) -> Result<(), ArchiveError> {
        let target = target.unwrap_or_default();
        let target_components = match paths::split_member_name(target) {
            Ok(c) if !c.is_empty() => c,
            Err(NameProblem::Absolute | NameProblem::DotDot) => {
                return Err(ArchiveError::LinkEscapes { entry: paths::display(name), target: paths::display(target) });
            }
            _ => {
                return Err(ArchiveError::HardLinkTarget {
                    entry: paths::display(name),
                    target: paths::display(target),
                });
            }
        };
        let target_rel = paths::join(&target_components);
        if !matches!(self.tree.get(&target_rel), Some(Node::File { .. })) {
            return Err(ArchiveError::HardLinkTarget { entry: paths::display(name), target: paths::display(target) });
        }
        let abs = self.root_path.join(rel);
        self.root.hard_link(&target_rel, &self.root, rel).map_err(ArchiveError::io(&abs))?;
        self.tree.insert(rel.to_path_buf(), Node::File { bytes: 0 });
        Ok(())
    }

    /// Builds the report for the final location `dest`.
    fn summary(&self, dest: &Path) -> Unpacked {
        let mut phases: BTreeMap<OsString, PhaseDir> = BTreeMap::new();
        let (mut files, mut dirs, mut symlinks, mut bytes) = (0, 0, 0, 0);
        for (path, node) in &self.tree {
            let mut components = path.components();
            let Some(top) = components.next() else {
                continue;
            };
            let top = top.as_os_str();
            let is_top = components.next().is_none();
            match node {
                Node::Dir => {
                    dirs += 1;
                    if is_top {
                        phases.entry(top.to_os_string()).or_insert_with(|| PhaseDir {
                            name: top.to_string_lossy().into_owned(),
                            path: dest.join(top),
                            files: 0,
                            bytes: 0,
                        });
                    }
                }
                Node::Symlink => symlinks += 1,
                Node::File { bytes: b } => {
                    files += 1;
                    bytes += b;
                    if !is_top {
                        let phase = phases.entry(top.to_os_string()).or_insert_with(|| PhaseDir {
                            name: top.to_string_lossy().into_owned(),
                            path: dest.join(top),
                            files: 0,
                            bytes: 0,
                        });
                        phase.files += 1;
                        phase.bytes += b;
                    }
                }
            }
        }
        Unpacked { root: dest.to_path_buf(), phases: phases.into_values().collect(), files, dirs, symlinks, bytes }
    }
}

/// Whether a hard link's target is the link's own path.
fn links_to_itself(target: Option<&[u8]>, rel: &Path) -> bool {
    target.and_then(|t| paths::split_member_name(t).ok()).is_some_and(|c| paths::join(&c) == rel)
}

fn strip_nuls(bytes: &mut Vec<u8>) {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
}

fn describe_type(entry_type: EntryType) -> String {
    match entry_type {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "FIFO (named pipe)".into(),
        EntryType::GNUSparse => "GNU sparse file".into(),
        other => {
            let byte = other.as_byte();
            if byte.is_ascii_graphic() {
                format!("tar entry of unsupported type `{}`", byte as char)
            } else {
                format!("tar entry of unsupported type 0x{byte:02x}")
            }
        }
    }
}
