//! The secrets store's cryptography: XChaCha20-Poly1305, one random 192-bit nonce per write,
//! the owner and path bound as associated data (a ciphertext moved to another owner or path
//! does not decrypt). The key comes from the configuration or the environment and is never
//! logged; it is zeroized when dropped.

use std::fmt;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use phasebox_redact::Secret;
use regex::Regex;
use zeroize::Zeroizing;

/// Testflinger's secret path rule: segments of `[a-zA-Z0-9_-]`, separated by single `/`.
static PATH_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_-]+(?:/[a-zA-Z0-9_-]+)*$").expect("static regex"));

/// Whether `path` is a valid secret path.
pub fn valid_path(path: &str) -> bool {
    PATH_RE.is_match(path)
}

/// Decodes a key given as base64 of exactly 32 bytes. The error never contains the text.
pub fn decode_key(text: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(STANDARD.decode(text).map_err(|_| "not valid base64".to_owned())?);
    if bytes.len() != 32 {
        return Err(format!("must be base64 of exactly 32 bytes (found {} bytes)", bytes.len()));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// A fresh random key in the form [`decode_key`] reads (for `phasebox server` key generation).
pub fn generate_key() -> Zeroizing<String> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut_slice()).expect("the OS random source works");
    Zeroizing::new(STANDARD.encode(key.as_slice()))
}

/// Encryption or decryption failed (wrong key, tampered or misplaced record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("secret cannot be decrypted")]
pub struct CryptoError;

/// The secrets encryption key. `Debug` shows nothing of it.
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(**redacted**)")
    }
}

fn aad(namespace: &str, path: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(namespace.len() + path.len() + 16);
    aad.extend_from_slice(b"phasebox-secret\0");
    aad.extend_from_slice(namespace.as_bytes());
    aad.push(0);
    aad.extend_from_slice(path.as_bytes());
    aad
}

impl SecretsKey {
    /// Wraps raw key bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        SecretsKey { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// Encrypts `value` for `namespace`/`path`: `(nonce, ciphertext)`.
    pub fn seal(&self, namespace: &str, path: &str, value: &str) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError)?;
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: value.as_bytes(), aad: &aad(namespace, path) })
            .map_err(|_| CryptoError)?;
        Ok((nonce.to_vec(), ct))
    }

    /// Decrypts a stored value.
    pub fn open(&self, namespace: &str, path: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<Secret, CryptoError> {
        if nonce.len() != 24 {
            return Err(CryptoError);
        }
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad(namespace, path) })
                .map_err(|_| CryptoError)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| CryptoError)?;
        Ok(Secret::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = decode_key(&generate_key()).unwrap();
        let k = SecretsKey::new(&key);
        let (n, ct) = k.seal("alice", "db/pass", "hunter2").unwrap();
        assert!(!ct.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.open("alice", "db/pass", &n, &ct).unwrap().expose(), "hunter2");
        assert!(k.open("bob", "db/pass", &n, &ct).is_err());
        assert!(k.open("alice", "db/other", &n, &ct).is_err());
        let other = SecretsKey::new(&decode_key(&generate_key()).unwrap());
        assert!(other.open("alice", "db/pass", &n, &ct).is_err());
        assert_eq!(format!("{k:?}"), "SecretsKey(**redacted**)");
    }

    #[test]
    fn paths_and_keys() {
        assert!(valid_path("a/b-c/d_e"));
        for bad in ["", "/a", "a/", "a//b", "a.b", "a b"] {
            assert!(!valid_path(bad), "{bad}");
        }
        assert!(decode_key("c2hvcnQ=").is_err());
        assert!(decode_key("!!").is_err());
    }
}
