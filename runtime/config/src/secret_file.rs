//! Files that hold a secret (a client secret, a signing key, the secrets store's key): read
//! only when they are regular files owned by this process's user that nobody else can read or
//! change, and written with mode 0600 without a moment in which another user could open them.
//!
//! A file that fails the check is an error, never a warning: a key that others can read is a
//! key that others may already hold, and the operator must know before the service starts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What the file holds, e.g. "client secret file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not safe to trust with a secret; the message says how to fix it.
    #[error("{what} {}: {reason}", path.display())]
    Unsafe {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// Why `path` (by its metadata, not followed if a link) must not hold a secret, if it must not.
fn unsafe_reason(meta: &fs::Metadata) -> Option<String> {
    if !meta.file_type().is_file() {
        return Some("not a regular file (a symbolic link or something else); replace it with a file".into());
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Some(format!("owned by uid {}, not by this process's uid {me}; chown it", meta.uid()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Some(format!("mode {mode:03o} lets other users read or change it; chmod 600 it"));
    }
    None
}

/// Reads the secret in `path` (a trailing line break is not part of it) after checking the
/// file as the [module docs](self) say. `what` names the file in errors.
pub fn read(path: &Path, what: &'static str) -> Result<Zeroizing<String>, SecretFileError> {
    let io = |source| SecretFileError::Io { what, path: path.to_owned(), source };
    // Opened without following a link, then checked through the open file, so the file read is
    // the file checked.
    let file =
        fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path).map_err(
            |e| match e.raw_os_error() {
                Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => SecretFileError::Unsafe {
                    what,
                    path: path.to_owned(),
                    reason: "a symbolic link; point the configuration at the file itself".into(),
                },
                _ => io(e),
            },
        )?;
    let meta = file.metadata().map_err(io)?;
    if let Some(reason) = unsafe_reason(&meta) {
        return Err(SecretFileError::Unsafe { what, path: path.to_owned(), reason });
    }
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut &file, &mut text).map_err(io)?;
    let kept = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(kept);
    Ok(text)
}

/// Writes `secret` to a new file at `path` with mode 0600, complete or not at all: through a
/// temporary file in the same directory, then linked into place. Returns `false`, writing
/// nothing, when `path` already exists (another process made it first; read that one).
pub fn create(path: &Path, secret: &[u8], what: &'static str) -> Result<bool, SecretFileError> {
    let io = |source| SecretFileError::Io { what, path: path.to_owned(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io(std::io::Error::other(e)))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", hex::encode(suffix)));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(secret)?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_owner_only_file_is_read_without_its_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(create(&path, b"s3cret\n", "test secret").unwrap());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read(&path, "test secret").unwrap().as_str(), "s3cret");
        // A second create keeps the first file.
        assert!(!create(&path, b"other", "test secret").unwrap());
        assert_eq!(read(&path, "test secret").unwrap().as_str(), "s3cret");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn files_others_can_read_or_links_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "s3cret").unwrap();
        for (mode, words) in [(0o644, "mode 644"), (0o640, "mode 640"), (0o602, "mode 602")] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let error = read(&path, "client secret file").unwrap_err().to_string();
            assert!(error.starts_with("client secret file ") && error.contains(words), "{error}");
            assert!(error.contains("chmod 600") && !error.contains("s3cret"), "{error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let error = read(&link, "signing key file").unwrap_err().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        let error = read(dir.path(), "signing key file").unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }
}
