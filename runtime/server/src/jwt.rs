//! HS256 JSON Web Tokens, as Testflinger issues them (PyJWT): header `{"alg":"HS256","typ":"JWT"}`,
//! claims `exp`, `iat`, `sub` and `permissions`. Verification follows PyJWT's order and
//! Testflinger's mapping of its errors to 401 (expired, not yet valid) and 403 (everything else).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` is in the past (401 "Token has expired").
    #[error("Token has expired")]
    Expired,
    /// `iat` is in the future (401 "Token not yet valid").
    #[error("Token not yet valid")]
    NotYetValid,
    /// The signature does not match (403 "Invalid Token signature").
    #[error("Invalid Token signature")]
    BadSignature,
    /// Not three base64url JSON segments (403 "Unable to decode token").
    #[error("Unable to decode token")]
    Undecodable,
    /// A required claim is missing or the algorithm is not HS256 (403 "Invalid Token").
    #[error("Invalid Token")]
    Invalid,
}

impl TokenError {
    /// Whether the client should refresh and retry (401) rather than give up (403).
    pub fn is_unauthorized(self) -> bool {
        matches!(self, TokenError::Expired | TokenError::NotYetValid)
    }
}

/// The signing key.
pub struct JwtKey {
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKey(**redacted**)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl JwtKey {
    /// Wraps key bytes.
    pub fn new(key: Zeroizing<Vec<u8>>) -> Self {
        JwtKey { key }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// Signs an access token for `permissions`, valid `ttl` seconds from `now` (Unix seconds).
    pub fn issue(&self, permissions: &Value, now: i64, ttl: i64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({ "exp": now + ttl, "iat": now, "sub": "access_token", "permissions": permissions });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Verifies a token at `now` (Unix seconds) with `leeway` seconds of clock skew; returns
    /// its `permissions` claim.
    pub fn verify(&self, token: &str, now: i64, leeway: i64) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Undecodable);
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Undecodable)?;
        let claims_bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| TokenError::Undecodable)?;
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Undecodable)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(TokenError::Invalid);
        }
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(c.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let claims: Value = serde_json::from_slice(&claims_bytes).map_err(|_| TokenError::Undecodable)?;
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or(TokenError::Invalid)?;
        let iat = claims.get("iat").and_then(Value::as_i64).ok_or(TokenError::Invalid)?;
        if claims.get("sub").and_then(Value::as_str).is_none() {
            return Err(TokenError::Invalid);
        }
        if exp <= now - leeway {
            return Err(TokenError::Expired);
        }
        if iat > now + leeway {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims.get("permissions").cloned().unwrap_or(Value::Object(Default::default())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> JwtKey {
        JwtKey::new(Zeroizing::new(k.as_bytes().to_vec()))
    }

    #[test]
    fn issue_and_verify() {
        let k = key("0123456789abcdef0123456789abcdef");
        let t = k.issue(&json!({"client_id": "c", "role": "agent"}), 1000, 600);
        assert_eq!(k.verify(&t, 1000, 5).unwrap()["role"], "agent");
        assert_eq!(k.verify(&t, 1605, 5), Err(TokenError::Expired));
        assert_eq!(k.verify(&t, 1604, 5), Ok(json!({"client_id": "c", "role": "agent"})));
        assert_eq!(k.verify(&t, 990, 5), Err(TokenError::NotYetValid));
        assert_eq!(key("another key another key another key").verify(&t, 1000, 5), Err(TokenError::BadSignature));
        assert_eq!(k.verify("abc", 1000, 5), Err(TokenError::Undecodable));
        let mut tampered = t.clone();
        tampered.replace_range(t.len() - 3.., "AAA");
        assert_eq!(k.verify(&tampered, 1000, 5), Err(TokenError::BadSignature));
    }
}
