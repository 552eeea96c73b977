//! Server settings and retention.

use super::{Pools, Result, Store};

impl Store {
    /// Deletes a server setting. Returns whether it existed.
    pub async fn delete_setting(&self, key: &str) -> Result<bool> {
        on!(self, write, p => {
            let n = sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(p).await?.rows_affected();
            Ok(n > 0)
        })
    }

    // ------------------------------------------------------------------------------ retention

    /// Deletes jobs created before `cutoff` with their logs, events and wait times, agents and
    /// queues not updated since, and expired secrets and refresh tokens. Returns the deleted
    /// job ids (their blobs are the caller's).
    pub async fn purge_before(&self, cutoff: i64, now: i64) -> Result<Vec<String>> {
        tx!(self, t => {
            let rows: Vec<(String,)> = sqlx::query_as("DELETE FROM jobs WHERE created_at < $1 RETURNING job_id")
                .bind(cutoff)
                .fetch_all(&mut *t)
                .await?;
            for sql in [
                "DELETE FROM log_fragments WHERE created_at < $1",
                "DELETE FROM job_events WHERE created_at < $1",
                "DELETE FROM queue_wait_times WHERE created_at < $1",
                "DELETE FROM agents WHERE updated_at < $1",
                "DELETE FROM queues WHERE updated_at < $1",
            ] {
                sqlx::query(sql).bind(cutoff).execute(&mut *t).await?;
            }
            sqlx::query("DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at <= $1").bind(now).execute(&mut *t).await?;
            sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1").bind(now).execute(&mut *t).await?;
            t.commit().await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        })
    }
}
