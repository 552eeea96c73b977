//! Encrypted secrets.

use super::{Pools, Result, SealedSecret, Store};

/// `(nonce, ciphertext, ephemeral, expires_at)`.
type SecretRow = (Vec<u8>, Vec<u8>, i64, Option<i64>);

impl Store {
    /// Writes (creates or replaces) an encrypted secret.
    pub async fn put_secret(&self, s: &SealedSecret, now: i64) -> Result<()> {
        on!(self, write, p => {
            sqlx::query(
                "INSERT INTO secrets (namespace, path, nonce, ciphertext, ephemeral, expires_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (namespace, path) DO UPDATE SET \
                 nonce = excluded.nonce, ciphertext = excluded.ciphertext, ephemeral = excluded.ephemeral, \
                 expires_at = excluded.expires_at, updated_at = excluded.updated_at",
            )
            .bind(&s.namespace)
            .bind(&s.path)
            .bind(&s.nonce)
            .bind(&s.ciphertext)
            .bind(i64::from(s.ephemeral))
            .bind(s.expires_at)
            .bind(now)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Whether an unexpired secret exists.
    pub async fn secret_exists(&self, namespace: &str, path: &str, now: i64) -> Result<bool> {
        on!(self, read, p => {
            let row: Option<(i64,)> = sqlx::query_as(
                "SELECT ephemeral FROM secrets WHERE namespace = $1 AND path = $2 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(namespace)
            .bind(path)
            .bind(now)
            .fetch_optional(p)
            .await?;
            Ok(row.is_some())
        })
    }

    /// Reads an unexpired secret; a single-use one is deleted in the same statement, so only
    /// one reader ever gets it.
    pub async fn take_secret(&self, namespace: &str, path: &str, now: i64) -> Result<Option<SealedSecret>> {
        tx!(self, t => {
            let row: Option<SecretRow> = sqlx::query_as(
                "SELECT nonce, ciphertext, ephemeral, expires_at FROM secrets WHERE namespace = $1 AND path = $2 \
                 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(namespace)
            .bind(path)
            .bind(now)
            .fetch_optional(&mut *t)
            .await?;
            let Some((nonce, ciphertext, ephemeral, expires_at)) = row else {
                t.commit().await?;
                return Ok(None);
            };
            if ephemeral != 0 {
                let taken: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
                    "DELETE FROM secrets WHERE namespace = $1 AND path = $2 AND ephemeral = 1 RETURNING nonce, ciphertext",
                )
                .bind(namespace)
                .bind(path)
                .fetch_optional(&mut *t)
                .await?;
                t.commit().await?;
                let Some((nonce, ciphertext)) = taken else { return Ok(None) };
                return Ok(Some(SealedSecret {
                    namespace: namespace.into(), path: path.into(), nonce, ciphertext, ephemeral: true, expires_at,
                }));
            }
            t.commit().await?;
            Ok(Some(SealedSecret { namespace: namespace.into(), path: path.into(), nonce, ciphertext, ephemeral: false, expires_at }))
        })
    }

    /// Deletes a secret (missing is fine).
    pub async fn delete_secret(&self, namespace: &str, path: &str) -> Result<()> {
        on!(self, write, p => {
            sqlx::query("DELETE FROM secrets WHERE namespace = $1 AND path = $2").bind(namespace).bind(path).execute(p).await?;
            Ok(())
        })
    }
}
