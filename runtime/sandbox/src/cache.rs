//! The on-disk cache of compiled plugins.
//!
//! Compiling a 12–18 MB JavaScript or Python component takes seconds; loading its compiled
//! form takes about a millisecond. So each plugin is compiled once per engine configuration
//! and stored as `<sha256>-<engine hash>.cwasm` in a directory of this user's.
//!
//! Loading compiled code skips WebAssembly validation (wasmtime's `deserialize` is `unsafe` for
//! that reason), so a compiled artifact from anywhere else would be native code run as is. The
//! cache therefore deserializes only artifacts it wrote itself, and trusts nothing another user
//! could have put there:
//!
//! - the directory must be this user's and writable by no one else; a cache directory that is
//!   not is refused with an error ([`SandboxError::UnsafeCache`]), never tightened and trusted,
//!   because whatever another user planted while it was open would still be in it;
//! - each artifact is stored with an HMAC-SHA256 tag over the plugin's sha256 and the compiled
//!   bytes (so one plugin's artifact can never pass for another's), under a random key kept
//!   **outside** the directory it protects: in a key file beside it (`<cache dir>.key`, or
//!   [`EngineConfig::cache_key_file`](crate::EngineConfig::cache_key_file)), created `0600`
//!   and checked at every open (ours, a regular file, readable by no one else, never through a
//!   link);
//! - an artifact or tag that is not ours, or that group or others could write, is ignored with
//!   a warning and compiled again, as is one whose tag does not check out. A checked artifact is
//!   read into memory, checked against its tag, and deserialized from those same bytes.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::SandboxError;

type HmacSha256 = Hmac<Sha256>;

/// A directory of compiled plugins.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Whether a load came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The compiled artifact was in the cache and its tag checked out.
    Hit,
    /// It was compiled now (and stored, when a cache is configured).
    Compiled,
}

impl CompileCache {
    /// Opens (creating if needed, `0700`) the cache at `dir`, with its key in `key_file`
    /// (created if needed, `0600`), or in `<dir>.key` beside the directory when `None`. Refuses a
    /// directory that is not this user's or that group or others can write, and a key file
    /// that is not this user's, not a regular file, or that group or others can read or write.
    pub fn open(dir: impl Into<PathBuf>, key_file: Option<&Path>) -> Result<Self, SandboxError> {
        let dir = dir.into();
        let unsafe_cache = |path: &Path, reason: String| SandboxError::UnsafeCache { path: path.to_owned(), reason };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| SandboxError::io(&dir, e))?;
        let meta = fs::symlink_metadata(&dir).map_err(|e| SandboxError::io(&dir, e))?;
        if !meta.is_dir() {
            return Err(unsafe_cache(&dir, "not a directory (or a symlink)".into()));
        }
        if let Some(reason) = foreign(&meta, 0o022) {
            return Err(unsafe_cache(
                &dir,
                format!(
                    "{reason}; another user could have planted compiled code in it, so it is not used: \
                     remove it, or make it this user's and not group- or world-writable (chmod 700)"
                ),
            ));
        }
        let key_path = match key_file {
            Some(path) => path.to_owned(),
            None => default_key_file(&dir),
        };
        if key_path.starts_with(&dir) {
            return Err(unsafe_cache(&key_path, "the cache key must be kept outside the cache directory".into()));
        }
        let key = load_or_create_key(&key_path)?;
        // Caches written before the key moved out kept it inside; it protects nothing now.
        let _ = fs::remove_file(dir.join("key"));
        Ok(Self { dir, key })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The artifact path for a plugin under an engine.
    pub fn artifact_path(&self, sha256: &str, engine: &Engine) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", engine_hash(engine)))
    }

    /// Whether a compiled artifact for `sha256` under `engine` is present (not checked).
    pub fn contains(&self, sha256: &str, engine: &Engine) -> bool {
        self.artifact_path(sha256, engine).exists()
    }

    /// Loads the compiled artifact for `sha256`, if this cache wrote one for this engine.
    pub fn load(&self, sha256: &str, engine: &Engine) -> Option<Component> {
        let path = self.artifact_path(sha256, engine);
        let bytes = read_trusted(&path)?;
        let tag = read_trusted(&path.with_extension("tag"))?;
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length works");
        mac.update(sha256.as_bytes());
        mac.update(&bytes);
        if mac.verify_slice(&tag).is_err() {
            tracing::warn!(path = %path.display(), "compiled artifact has no valid tag; ignoring it");
            return None;
        }
        // SAFETY: these bytes are exactly what `store` wrote from `Component::serialize` for this
        // engine configuration and this plugin (the tag proves it: only holders of the key, a
        // 0600 file outside the cache, can make one), and they are deserialized from memory, so
        // nothing can change them after the check.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot load compiled artifact; recompiling");
                None
            }
        }
    }

    /// Stores a compiled artifact.
    pub fn store(&self, sha256: &str, engine: &Engine, compiled: &[u8]) -> Result<(), SandboxError> {
        let path = self.artifact_path(sha256, engine);
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length works");
        mac.update(sha256.as_bytes());
        mac.update(compiled);
        // Tag first, artifact last: a reader that sees the artifact also sees its tag.
        write_atomic(&path.with_extension("tag"), &mac.finalize().into_bytes())?;
        write_atomic(&path, compiled)
    }
}

/// Where the key of the cache at `dir` lives when none is configured: beside it, as
/// `<dir name>.key`.
pub fn default_key_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".key");
    dir.with_file_name(name)
}

/// Why a file or directory is not to be trusted: owned by another user, or open to others
/// through any bit of `others_mask` (`0o022`: writable by group or others).
fn foreign(meta: &fs::Metadata, others_mask: u32) -> Option<String> {
    if meta.uid() != current_uid() {
        return Some(format!("owned by uid {}, not by this user (uid {})", meta.uid(), current_uid()));
    }
    if meta.mode() & others_mask != 0 {
        return Some(format!("its mode {:04o} lets group or others in", meta.mode() & 0o7777));
    }
    None
}

/// Reads a cache file that is ours, regular, not writable by group or others, and not a link.
fn read_trusted(path: &Path) -> Option<Vec<u8>> {
    let mut file = fs::OpenOptions::new().read(true).custom_flags(o_nofollow()).open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        tracing::warn!(path = %path.display(), "cache entry is not a regular file; ignoring it");
        return None;
    }
    if let Some(reason) = foreign(&meta, 0o022) {
        tracing::warn!(path = %path.display(), %reason, "cache entry not written by this user; ignoring it");
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

fn o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn engine_hash(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    // A temporary name of its own per write: several threads of one process may store the same
    // plugin at once (an agent's devices load their plugins concurrently), and an artifact and
    // its tag must not share one either.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp{}-{}", std::process::id(), WRITES.fetch_add(1, Ordering::Relaxed)));
    let tmp = path.with_file_name(name);
    // A leftover of a crashed process with the same pid; created anew, never opened through a link.
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| SandboxError::io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| SandboxError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| SandboxError::io(path, e))
}

/// Reads the key at `path`, after checking that it is ours, a regular file, and private (no
/// group or other bits); creates it when it is missing.
fn load_or_create_key(path: &Path) -> Result<[u8; 32], SandboxError> {
    let unsafe_key = |reason: String| SandboxError::UnsafeCache { path: path.to_owned(), reason };
    match fs::OpenOptions::new().read(true).custom_flags(o_nofollow()).open(path) {
        Ok(mut file) => {
            let meta = file.metadata().map_err(|e| SandboxError::io(path, e))?;
            if !meta.is_file() {
                return Err(unsafe_key("the cache key is not a regular file".into()));
            }
            if let Some(reason) = foreign(&meta, 0o077) {
                return Err(unsafe_key(format!(
                    "the cache key is {reason}; it is not used: remove it (a new one is made) or make it \
                     this user's with mode 600"
                )));
            }
            let mut key = Vec::with_capacity(32);
            file.read_to_end(&mut key).map_err(|e| SandboxError::io(path, e))?;
            match <[u8; 32]>::try_from(key.as_slice()) {
                Ok(key) => return Ok(key),
                Err(_) => tracing::warn!(path = %path.display(), "cache key has the wrong length; making a new one"),
            }
        }
        // ELOOP: a link where the key should be.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(unsafe_key("the cache key is a symbolic link".into()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SandboxError::io(path, e)),
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| SandboxError::io(path, std::io::Error::other(e.to_string())))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|e| SandboxError::io(parent, e))?;
    }
    write_atomic(path, &key)?;
    Ok(key)
}

fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// An engine and the serialized form of two different components.
    fn two_artifacts() -> (Engine, Vec<u8>, Vec<u8>) {
        let engine = Engine::default();
        let a = Component::new(&engine, "(component)").unwrap().serialize().unwrap();
        let b = Component::new(&engine, "(component (core module))").unwrap().serialize().unwrap();
        assert_ne!(a, b);
        (engine, a, b)
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown_to_nobody(path: &Path) {
        std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
    }

    #[test]
    fn creates_a_private_directory_and_a_key_outside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = CompileCache::open(&dir, None).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let key = tmp.path().join("cache.key");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "nothing secret inside the cache");
        // Reopening keeps the key, so earlier artifacts stay valid.
        let again = CompileCache::open(&dir, None).unwrap();
        assert_eq!(cache.key, again.key);
        // A key in a place of the caller's choosing.
        let chosen = tmp.path().join("state/cache-key");
        let elsewhere = CompileCache::open(&dir, Some(&chosen)).unwrap();
        assert_ne!(elsewhere.key, cache.key);
        assert_eq!(fs::metadata(&chosen).unwrap().mode() & 0o777, 0o600);
        // Never inside the directory it protects.
        let err = CompileCache::open(&dir, Some(&dir.join("key"))).unwrap_err().to_string();
        assert!(err.contains("outside the cache directory"), "{err}");
    }

    #[test]
    fn refuses_a_directory_others_can_write_or_another_user_owns() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        fs::create_dir(&dir).unwrap();
        for mode in [0o777, 0o770, 0o702] {
            chmod(&dir, mode);
            let err = CompileCache::open(&dir, None).unwrap_err();
            assert!(matches!(err, SandboxError::UnsafeCache { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("lets group or others in"), "{err}");
            assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, mode, "the mode is left for the operator");
        }
        chmod(&dir, 0o700);
        chown_to_nobody(&dir);
        let err = CompileCache::open(&dir, None).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn refuses_a_key_others_can_read_or_another_user_owns() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let key = tmp.path().join("cache.key");
        CompileCache::open(&dir, None).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            chmod(&key, mode);
            let err = CompileCache::open(&dir, None).unwrap_err().to_string();
            assert!(err.contains("cache.key") && err.contains("lets group or others in"), "{mode:o}: {err}");
        }
        chmod(&key, 0o600);
        chown_to_nobody(&key);
        let err = CompileCache::open(&dir, None).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        // A key planted as a link to a key someone else knows.
        fs::remove_file(&key).unwrap();
        let known = tmp.path().join("known");
        fs::write(&known, [7u8; 32]).unwrap();
        chmod(&known, 0o600);
        std::os::unix::fs::symlink(&known, &key).unwrap();
        let err = CompileCache::open(&dir, None).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn entries_not_ours_or_open_to_others_are_never_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(tmp.path().join("cache"), None).unwrap();
        let (engine, bytes, _) = two_artifacts();
        let sha = "ab".repeat(32);
        cache.store(&sha, &engine, &bytes).unwrap();
        assert!(cache.load(&sha, &engine).is_some());
        let artifact = cache.artifact_path(&sha, &engine);
        for path in [artifact.clone(), artifact.with_extension("tag")] {
            chmod(&path, 0o666);
            assert!(cache.load(&sha, &engine).is_none(), "{} writable by others was loaded", path.display());
            chmod(&path, 0o600);
            chown_to_nobody(&path);
            assert!(cache.load(&sha, &engine).is_none(), "{} of another user was loaded", path.display());
            std::os::unix::fs::lchown(&path, Some(current_uid()), None).unwrap();
            assert!(cache.load(&sha, &engine).is_some());
        }
    }

    #[test]
    fn concurrent_stores_of_one_artifact_all_succeed_and_load() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(tmp.path().join("cache"), None).unwrap();
        let engine = Engine::default();
        let bytes = Component::new(&engine, "(component)").unwrap().serialize().unwrap();
        let sha = "cd".repeat(32);
        std::thread::scope(|s| {
            let stores: Vec<_> =
                (0..8).map(|_| s.spawn(|| (0..20).try_for_each(|_| cache.store(&sha, &engine, &bytes)))).collect();
            for store in stores {
                store.join().unwrap().unwrap();
            }
        });
        assert!(cache.load(&sha, &engine).is_some());
        let left: Vec<_> = fs::read_dir(cache.dir()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "the artifact and its tag, no temporary files: {left:?}");
    }

    #[test]
    fn refuses_foreign_swapped_or_untagged_artifacts() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(tmp.path().join("cache"), None).unwrap();
        let (engine, bytes, other_bytes) = two_artifacts();
        let sha = "ab".repeat(32);
        // Planted without a tag: ignored.
        fs::write(cache.artifact_path(&sha, &engine), &bytes).unwrap();
        chmod(&cache.artifact_path(&sha, &engine), 0o600);
        assert!(cache.load(&sha, &engine).is_none());
        // Written by the cache: loads.
        cache.store(&sha, &engine, &bytes).unwrap();
        assert!(cache.load(&sha, &engine).is_some());
        // Changed afterwards: ignored.
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        fs::write(cache.artifact_path(&sha, &engine), &tampered).unwrap();
        assert!(cache.load(&sha, &engine).is_none());
        // Another plugin's genuine artifact and tag, swapped in under this plugin's name: ignored.
        let other_sha = "ef".repeat(32);
        cache.store(&other_sha, &engine, &other_bytes).unwrap();
        for ext in ["cwasm", "tag"] {
            fs::copy(
                cache.artifact_path(&other_sha, &engine).with_extension(ext),
                cache.artifact_path(&sha, &engine).with_extension(ext),
            )
            .unwrap();
        }
        assert!(cache.load(&sha, &engine).is_none(), "one plugin's artifact passed for another's");
        assert!(cache.load(&other_sha, &engine).is_some());
        // Another cache's key: ignored.
        let other = CompileCache::open(tmp.path().join("other"), None).unwrap();
        other.store(&sha, &engine, &bytes).unwrap();
        for ext in ["cwasm", "tag"] {
            fs::copy(
                other.artifact_path(&sha, &engine).with_extension(ext),
                cache.artifact_path(&sha, &engine).with_extension(ext),
            )
            .unwrap();
        }
        assert!(cache.load(&sha, &engine).is_none());
    }
}
