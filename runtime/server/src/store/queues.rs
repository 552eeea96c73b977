//! Queues: descriptions, images, wait times, restrictions.

use serde_json::{Map, Value};

use super::{Pools, Result, Store, placeholders};

impl Store {
    /// Sets queue descriptions (and their `updated_at`).
    pub async fn upsert_queues(&self, queues: &Map<String, Value>, now: i64) -> Result<()> {
        tx!(self, t => {
            for (name, description) in queues {
                sqlx::query(
                    "INSERT INTO queues (name, description, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET description = excluded.description, updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(description.as_str().unwrap_or_default())
                .bind(now)
                .execute(&mut *t)
                .await?;
            }
            t.commit().await?;
            Ok(())
        })
    }

    /// Replaces the image maps of the given queues.
    pub async fn set_images(&self, images: &Map<String, Value>) -> Result<()> {
        tx!(self, t => {
            for (name, map) in images {
                sqlx::query(
                    "INSERT INTO queues (name, images) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET images = excluded.images",
                )
                .bind(name)
                .bind(map.to_string())
                .execute(&mut *t)
                .await?;
            }
            t.commit().await?;
            Ok(())
        })
    }

    /// Queue name → description, for queues that have one.
    pub async fn list_queues(&self) -> Result<Vec<(String, String)>> {
        on!(self, read, p => Ok(sqlx::query_as(
            "SELECT name, description FROM queues WHERE description IS NOT NULL ORDER BY name"
        )
        .fetch_all(p)
        .await?))
    }

    /// The image map of a queue (`{}` when unknown).
    pub async fn get_images(&self, queue: &str) -> Result<Map<String, Value>> {
        on!(self, read, p => {
            let row: Option<(Option<String>,)> = sqlx::query_as("SELECT images FROM queues WHERE name = $1")
                .bind(queue)
                .fetch_optional(p)
                .await?;
            match row.and_then(|r| r.0) {
                Some(text) => Ok(serde_json::from_str(&text)?),
                None => Ok(Map::new()),
            }
        })
    }

    /// Recorded wait times (seconds) per queue, for the given queues or all.
    pub async fn wait_times(&self, queues: &[String]) -> Result<Vec<(String, i64)>> {
        let sql = if queues.is_empty() {
            "SELECT queue, wait_seconds FROM queue_wait_times ORDER BY queue, id".to_owned()
        } else {
            format!(
                "SELECT queue, wait_seconds FROM queue_wait_times WHERE queue IN ({}) ORDER BY queue, id",
                placeholders(1, queues.len())
            )
        };
        on!(self, read, p => {
            let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
            for queue in queues {
                q = q.bind(queue);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    // ------------------------------------------------------------------- restricted queues

    /// All restricted queues.
    pub async fn restricted_queues(&self) -> Result<Vec<String>> {
        on!(self, read, p => {
            let rows: Vec<(String,)> = sqlx::query_as("SELECT queue FROM restricted_queues ORDER BY queue").fetch_all(p).await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        })
    }

    /// Restricts `queue` (if not yet) and adds it to the client's `allowed_queues`.
    pub async fn restrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        tx!(self, t => {
            sqlx::query("INSERT INTO restricted_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(queue)
                .execute(&mut *t)
                .await?;
            let row: Option<(String,)> = sqlx::query_as("SELECT allowed_queues FROM clients WHERE client_id = $1")
                .bind(client_id)
                .fetch_optional(&mut *t)
                .await?;
            if let Some((allowed,)) = row {
                let mut allowed: Vec<String> = serde_json::from_str(&allowed)?;
                if !allowed.iter().any(|q| q == queue) {
                    allowed.push(queue.to_owned());
                }
                sqlx::query("UPDATE clients SET allowed_queues = $1 WHERE client_id = $2")
                    .bind(serde_json::to_string(&allowed)?)
                    .bind(client_id)
                    .execute(&mut *t)
                    .await?;
            }
            t.commit().await?;
            Ok(())
        })
    }

    /// Restricts `queue` (clients are unchanged). Returns whether it was not restricted yet.
    pub async fn add_restricted_queue(&self, queue: &str) -> Result<bool> {
        on!(self, write, p => {
            let n = sqlx::query("INSERT INTO restricted_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(queue)
                .execute(p)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
    }

    /// Un-restricts `queue` (clients are unchanged). Returns whether it was restricted.
    pub async fn remove_restricted_queue(&self, queue: &str) -> Result<bool> {
        on!(self, write, p => {
            let n = sqlx::query("DELETE FROM restricted_queues WHERE queue = $1").bind(queue).execute(p).await?.rows_affected();
            Ok(n > 0)
        })
    }

    /// Un-restricts `queue` for everybody and removes it from the client's `allowed_queues`
    /// (Testflinger's behaviour, reference §7 item 9). Returns whether it was restricted.
    pub async fn unrestrict_queue(&self, queue: &str, client_id: &str) -> Result<bool> {
        tx!(self, t => {
            let gone = sqlx::query("DELETE FROM restricted_queues WHERE queue = $1")
                .bind(queue)
                .execute(&mut *t)
                .await?
                .rows_affected();
            let row: Option<(String,)> = sqlx::query_as("SELECT allowed_queues FROM clients WHERE client_id = $1")
                .bind(client_id)
                .fetch_optional(&mut *t)
                .await?;
            if let Some((allowed,)) = row {
                let mut allowed: Vec<String> = serde_json::from_str(&allowed)?;
                allowed.retain(|q| q != queue);
                sqlx::query("UPDATE clients SET allowed_queues = $1 WHERE client_id = $2")
                    .bind(serde_json::to_string(&allowed)?)
                    .bind(client_id)
                    .execute(&mut *t)
                    .await?;
            }
            t.commit().await?;
            Ok(gone > 0)
        })
    }
}
