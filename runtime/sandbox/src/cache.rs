//! The on-disk cache of compiled plugins.
//!
//! Compiling a 12–18 MB JavaScript or Python component takes seconds; loading its compiled
//! form takes about a millisecond. So each plugin is compiled once per engine configuration
//! and stored as `<sha256>-<engine hash>.cwasm` in a directory only this user can enter (0700).
//!
//! Loading compiled code skips WebAssembly validation (wasmtime's `deserialize` is `unsafe` for
//! that reason), so a compiled artifact from anywhere else would be native code run as is. The
//! cache therefore deserializes only artifacts it wrote itself: each artifact is stored with an
//! HMAC-SHA256 tag under a random key that lives in the cache directory (0600), and is read
//! into memory, checked against its tag, and deserialized from those same bytes. An artifact
//! without a valid tag is ignored and rebuilt.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// Opens (creating if needed) the cache at `dir`. Refuses a directory owned by another user;
    /// tightens a directory of ours that others can enter to 0700.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let dir = dir.into();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| SandboxError::io(&dir, e))?;
        let meta = fs::symlink_metadata(&dir).map_err(|e| SandboxError::io(&dir, e))?;
        if !meta.is_dir() {
            return Err(SandboxError::UnsafeCache { path: dir, reason: "not a directory (or a symlink)".into() });
        }
        if meta.uid() != current_uid() {
            return Err(SandboxError::UnsafeCache {
                path: dir,
                reason: format!("owned by uid {}, not by this user", meta.uid()),
            });
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| SandboxError::io(&dir, e))?;
        }
        let key = load_or_create_key(&dir)?;
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
        let bytes = fs::read(&path).ok()?;
        let tag = fs::read(path.with_extension("tag")).ok()?;
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length works");
        mac.update(sha256.as_bytes());
        mac.update(&bytes);
        if mac.verify_slice(&tag).is_err() {
            tracing::warn!(path = %path.display(), "compiled artifact has no valid tag; ignoring it");
            return None;
        }
        // SAFETY: these bytes are exactly what `store` wrote from `Component::serialize` for this
        // engine configuration (the tag proves it: only holders of the 0600 key can make one),
        // and they are deserialized from memory, so nothing can change them after the check.
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
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| SandboxError::io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| SandboxError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| SandboxError::io(path, e))
}

fn load_or_create_key(dir: &Path) -> Result<[u8; 32], SandboxError> {
    let path = dir.join("key");
    match fs::read(&path) {
        Ok(k) if k.len() == 32 => return Ok(k.try_into().expect("length checked")),
        Ok(_) => tracing::warn!(path = %path.display(), "cache key has the wrong length; making a new one"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SandboxError::io(&path, e)),
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| SandboxError::io(&path, std::io::Error::other(e.to_string())))?;
    write_atomic(&path, &key)?;
    Ok(key)
}

fn current_uid() -> u32 {
    // The owner of a file this process just created is this process's effective uid.
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_directory_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = CompileCache::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(dir.join("key")).unwrap().mode() & 0o777, 0o600);
        // Reopening keeps the key, so earlier artifacts stay valid.
        let again = CompileCache::open(&dir).unwrap();
        assert_eq!(cache.key, again.key);
    }

    #[test]
    fn tightens_an_open_directory() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        CompileCache::open(tmp.path()).unwrap();
        assert_eq!(fs::metadata(tmp.path()).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn concurrent_stores_of_one_artifact_all_succeed_and_load() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(tmp.path()).unwrap();
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
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 3, "the key, the artifact and its tag, no temporary files: {left:?}");
    }

    #[test]
    fn refuses_foreign_or_untagged_artifacts() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(tmp.path()).unwrap();
        let engine = Engine::default();
        let component = Component::new(&engine, "(component)").unwrap();
        let bytes = component.serialize().unwrap();
        let sha = "ab".repeat(32);
        // Planted without a tag: ignored.
        fs::write(cache.artifact_path(&sha, &engine), &bytes).unwrap();
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
        // Another cache's key: ignored.
        let other = tempfile::tempdir().unwrap();
        let other = CompileCache::open(other.path()).unwrap();
        other.store(&sha, &engine, &bytes).unwrap();
        fs::copy(other.artifact_path(&sha, &engine), cache.artifact_path(&sha, &engine)).unwrap();
        fs::copy(
            other.artifact_path(&sha, &engine).with_extension("tag"),
            cache.artifact_path(&sha, &engine).with_extension("tag"),
        )
        .unwrap();
        assert!(cache.load(&sha, &engine).is_none());
    }
}
