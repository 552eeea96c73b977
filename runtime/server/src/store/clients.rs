//! Clients and refresh tokens.

use super::{ClientRecord, ClientTuple, Pools, Result, Store};

impl Store {
    /// One client.
    pub async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        on!(self, read, p => {
            let row: Option<ClientTuple> = sqlx::query_as(
                "SELECT client_id, secret_hash, role, max_priority, allowed_queues, max_reservation_time, email, \
                 agent_names, agent_queues \
                 FROM clients WHERE client_id = $1",
            )
            .bind(client_id)
            .fetch_optional(p)
            .await?;
            row.map(ClientRecord::try_from).transpose()
        })
    }

    /// All clients, by id.
    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        on!(self, read, p => {
            let rows: Vec<ClientTuple> = sqlx::query_as(
                "SELECT client_id, secret_hash, role, max_priority, allowed_queues, max_reservation_time, email, \
                 agent_names, agent_queues \
                 FROM clients ORDER BY client_id",
            )
            .fetch_all(p)
            .await?;
            rows.into_iter().map(ClientRecord::try_from).collect()
        })
    }

    /// Inserts or replaces a client.
    pub async fn put_client(&self, c: &ClientRecord, now: i64) -> Result<()> {
        on!(self, write, p => {
            sqlx::query(
                "INSERT INTO clients (client_id, secret_hash, role, max_priority, allowed_queues, max_reservation_time, \
                 email, created_at, agent_names, agent_queues) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (client_id) DO UPDATE SET secret_hash = excluded.secret_hash, role = excluded.role, \
                 max_priority = excluded.max_priority, allowed_queues = excluded.allowed_queues, \
                 max_reservation_time = excluded.max_reservation_time, email = excluded.email, \
                 agent_names = excluded.agent_names, agent_queues = excluded.agent_queues",
            )
            .bind(&c.client_id)
            .bind(&c.secret_hash)
            .bind(c.role.as_str())
            .bind(serde_json::to_string(&c.max_priority)?)
            .bind(serde_json::to_string(&c.allowed_queues)?)
            .bind(serde_json::to_string(&c.max_reservation_time)?)
            .bind(&c.email)
            .bind(now)
            .bind(serde_json::to_string(&c.agent_names)?)
            .bind(serde_json::to_string(&c.agent_queues)?)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Deletes a client and its refresh tokens. Returns whether it existed.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool> {
        tx!(self, t => {
            let n = sqlx::query("DELETE FROM clients WHERE client_id = $1").bind(client_id).execute(&mut *t).await?.rows_affected();
            sqlx::query("DELETE FROM refresh_tokens WHERE client_id = $1").bind(client_id).execute(&mut *t).await?;
            t.commit().await?;
            Ok(n > 0)
        })
    }

    // ------------------------------------------------------------------------- refresh tokens

    /// Stores a refresh token by its hash.
    pub async fn insert_refresh_token(&self, hash: &str, client_id: &str, now: i64, expires_at: i64) -> Result<()> {
        on!(self, write, p => {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, client_id, issued_at, expires_at, revoked, last_accessed) \
                 VALUES ($1, $2, $3, $4, 0, $3)",
            )
            .bind(hash)
            .bind(client_id)
            .bind(now)
            .bind(expires_at)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// A refresh token by hash: `(client_id, expires_at, revoked)`; updates `last_accessed`.
    pub async fn use_refresh_token(&self, hash: &str, now: i64) -> Result<Option<(String, i64, bool)>> {
        on!(self, write, p => {
            let row: Option<(String, i64, i64)> = sqlx::query_as(
                "UPDATE refresh_tokens SET last_accessed = $2 WHERE token_hash = $1 RETURNING client_id, expires_at, revoked",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(p)
            .await?;
            Ok(row.map(|(c, e, r)| (c, e, r != 0)))
        })
    }

    /// Revokes a refresh token. `None`: unknown; `Some(false)`: already revoked.
    pub async fn revoke_refresh_token(&self, hash: &str) -> Result<Option<bool>> {
        tx!(self, t => {
            let row: Option<(i64,)> = sqlx::query_as("SELECT revoked FROM refresh_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&mut *t)
                .await?;
            let out = match row {
                None => None,
                Some((r,)) if r != 0 => Some(false),
                Some(_) => {
                    sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE token_hash = $1").bind(hash).execute(&mut *t).await?;
                    Some(true)
                }
            };
            t.commit().await?;
            Ok(out)
        })
    }
}
