//! Permission changes over an unpacked tree.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use cap_fs_ext::DirExt as _;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Permissions, PermissionsExt as _};
use tracing::debug;

use crate::error::ArchiveError;

/// Marks the tree at `dir` read-only: regular files `0444`, directories `0555` (`dir`
/// included).
///
/// The walk never follows symlinks (they are left alone; their own mode means nothing on
/// Linux) and skips anything that is not a regular file or directory. Every path is opened
/// relative to a handle on `dir`, so a link planted in the tree cannot redirect the change
/// to files elsewhere. `dir` itself must be a real directory, not a symlink to one.
///
/// This does not stop root, or the owner, from changing modes back; the engine additionally
/// mounts phase attachments read-only.
pub fn make_read_only(dir: &Path) -> Result<(), ArchiveError> {
    set_tree_modes(dir, 0o444, 0o555)
}

/// Undoes [`make_read_only`]: regular files `0644`, directories `0755`, so the tree can be
/// deleted by its (non-root) owner. Same walk rules as [`make_read_only`].
pub fn make_writable(dir: &Path) -> Result<(), ArchiveError> {
    set_tree_modes(dir, 0o644, 0o755)
}

fn set_tree_modes(dir: &Path, file_mode: u32, dir_mode: u32) -> Result<(), ArchiveError> {
    let meta = fs::symlink_metadata(dir).map_err(ArchiveError::io(dir))?;
    if !meta.is_dir() {
        return Err(ArchiveError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory (symlinks are not followed)",
            ),
        });
    }
    let root = Dir::open_ambient_dir(dir, ambient_authority()).map_err(ArchiveError::io(dir))?;
    // Directories are made writable before descending and read-only after, so both
    // directions work for a non-root owner.
    let set_root = || fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode)).map_err(ArchiveError::io(dir));
    if dir_mode & 0o200 != 0 {
        set_root()?;
    }
    walk(&root, dir, file_mode, dir_mode, 0)?;
    set_root()
}

fn walk(d: &Dir, abs: &Path, file_mode: u32, dir_mode: u32, depth: usize) -> Result<(), ArchiveError> {
    if depth > 4096 {
        return Err(ArchiveError::Io {
            path: abs.to_path_buf(),
            source: std::io::Error::other("directory tree nested too deeply"),
        });
    }
    for entry in d.entries().map_err(ArchiveError::io(abs))? {
        let entry = entry.map_err(ArchiveError::io(abs))?;
        let name = entry.file_name();
        let child_abs = abs.join(&name);
        let file_type = entry.file_type().map_err(ArchiveError::io(&child_abs))?;
        if file_type.is_dir() {
            if dir_mode & 0o200 != 0 {
                set(d, Path::new(&name), &child_abs, dir_mode)?;
            }
            let sub = d.open_dir_nofollow(&name).map_err(ArchiveError::io(&child_abs))?;
            walk(&sub, &child_abs, file_mode, dir_mode, depth + 1)?;
            set(d, Path::new(&name), &child_abs, dir_mode)?;
        } else if file_type.is_file() {
            set(d, Path::new(&name), &child_abs, file_mode)?;
        } else {
            debug!(path = %child_abs.display(), "leaving non-regular entry's mode alone");
        }
    }
    Ok(())
}

fn set(d: &Dir, name: &Path, abs: &Path, mode: u32) -> Result<(), ArchiveError> {
    d.set_permissions(name, Permissions::from_mode(mode)).map_err(ArchiveError::io(abs))
}
