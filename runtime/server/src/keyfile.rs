//! The generated JWT signing key: without `jwt_signing_key_file` (or its environment
//! variable) the server makes one random key into `jwt-signing.key` in its state directory
//! (`blob_dir`, which replicas share), never into the database, where any backup of it would
//! let its reader mint tokens for any client.
//!
//! The file is created with mode 0600 and published atomically (written to a temporary file,
//! then linked into place, so replicas starting together agree on one key and never read a
//! half-written one). An existing file is used only when it is a regular file owned by the
//! server's user that nobody else can read or write.

use std::fs;
use std::path::Path;

use phasebox_config::secret_file;
use zeroize::Zeroizing;

use crate::config::ConfigError;

/// The generated key's file name in `blob_dir`.
pub const GENERATED_JWT_KEY_FILE: &str = "jwt-signing.key";

/// The setting under which versions before this one kept the generated key in the database.
pub(crate) const LEGACY_DATABASE_SETTING: &str = "jwt_signing_key";

fn invalid(path: &Path, message: String) -> ConfigError {
    ConfigError::Key { what: "generated JWT signing key", message: format!("{}: {message}", path.display()) }
}

fn read_error(path: &Path, source: std::io::Error) -> ConfigError {
    ConfigError::Read { path: path.to_owned(), source }
}

/// Reads the generated key at `path`, making it first if there is none.
pub fn load_or_create(path: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    match fs::symlink_metadata(path) {
        Ok(_) => load(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(path)?;
            load(path)
        }
        Err(e) => Err(read_error(path, e)),
    }
}

fn load(path: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    // The key is this server's own file: a link in its place is refused, not followed.
    let meta = fs::symlink_metadata(path).map_err(|e| read_error(path, e))?;
    if !meta.file_type().is_file() {
        return Err(invalid(path, "not a regular file (a symbolic link or something else); remove it".into()));
    }
    let text = secret_file::read(path, "generated JWT signing key")?;
    let key = Zeroizing::new(text.trim().as_bytes().to_vec());
    if key.len() < 32 {
        return Err(invalid(path, "shorter than 32 bytes".into()));
    }
    Ok(key)
}

/// Writes a new random key in place, completely or not at all; a key another replica
/// published first wins and this one is discarded.
fn create(path: &Path) -> Result<(), ConfigError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut_slice()).map_err(|e| read_error(path, std::io::Error::other(e)))?;
    let text = Zeroizing::new(hex::encode(raw.as_slice()));
    if secret_file::create(path, text.as_bytes(), "generated JWT signing key")? {
        tracing::info!(file = ?path, "generated a JWT signing key");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_then_reused_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GENERATED_JWT_KEY_FILE);
        let first = load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(*load_or_create(&path).unwrap(), *first);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("mode 640"), "{e}");
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
