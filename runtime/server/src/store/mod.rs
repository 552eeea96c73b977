//! The store: jobs, claims, logs, events, agents, queues, clients, tokens and secrets.
//!
//! Two backends, picked once from the URL scheme ([`Store::connect`]):
//!
//! * **SQLite** (`sqlite://PATH`): one file in WAL mode. Writes go through a pool of exactly one
//!   connection — the single writer — so a claim (`UPDATE … WHERE seq = (SELECT … LIMIT 1)
//!   RETURNING …` inside a `BEGIN IMMEDIATE` transaction) can never hand one job to two agents;
//!   reads use a separate pool and never block the writer.
//! * **PostgreSQL** (`postgres://…`): one pool shared by any number of server replicas; a claim
//!   locks its row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers skip each other's rows
//!   instead of waiting or double-dispatching.
//!
//! Each backend has its own migrations (`migrations/sqlite`, `migrations/postgres`), run at
//! connect. Queries are written once with `$N` placeholders, which both drivers accept; where
//! the dialects differ (the claim's row lock, transaction start) the code says so. Times are
//! microseconds since the Unix epoch; JSON documents are stored as text.

use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

mod records;

pub use records::*;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (the message names it).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored document is not what this version expects.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The URL names no supported backend.
    #[error("unsupported database URL (use sqlite://PATH or postgres://...): {0}")]
    Url(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("already exists ({})", d.constraint().unwrap_or("unique key")))
            }
            _ => StoreError::Database(e),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Store result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

#[derive(Clone)]
enum Pools {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

/// A connection pool to the store (cheap to clone).
#[derive(Clone)]
pub struct Store {
    pools: Pools,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish()
    }
}

/// Runs `$body` with `$p` bound to the backend's pool for reads or writes. The body is the
/// same text for both backends (compiled once per driver).
macro_rules! on {
    ($s:expr, read, $p:ident => $body:expr) => {
        match &$s.pools {
            Pools::Sqlite { read: $p, .. } => $body,
            Pools::Postgres($p) => $body,
        }
    };
    ($s:expr, write, $p:ident => $body:expr) => {
        match &$s.pools {
            Pools::Sqlite { write: $p, .. } => $body,
            Pools::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` inside a write transaction `$t` (SQLite: `BEGIN IMMEDIATE` on the single
/// writer; PostgreSQL: `BEGIN`, read committed). The body commits.
macro_rules! tx {
    ($s:expr, $t:ident => $body:expr) => {
        match &$s.pools {
            Pools::Sqlite { write, .. } => {
                #[allow(unused_mut)]
                let mut $t = write.begin_with("BEGIN IMMEDIATE").await?;
                $body
            }
            Pools::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $t = pool.begin().await?;
                $body
            }
        }
    };
}

/// Appends a job event inside a transaction; evaluates to its id.
///
/// Event ids must become visible in id order, or a reader resuming "after N" could skip one.
/// SQLite's single writer guarantees it. On PostgreSQL identity values are handed out at insert
/// but become visible at commit, so concurrent transactions for one job first take a
/// transaction-scoped advisory lock on the job: its events are numbered in commit order.
macro_rules! event {
    ($s:expr, $t:expr, $job_id:expr, $kind:expr, $data:expr, $now:expr) => {{
        if $s.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind($job_id).execute(&mut *$t).await?;
        }
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO job_events (job_id, kind, data, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind($job_id)
        .bind($kind)
        .bind($data)
        .bind($now)
        .fetch_one(&mut *$t)
        .await?;
        id
    }};
}

macro_rules! job_cols {
    () => {
        "seq, job_id, queue, priority, state, created_at, started_at, agent, attachments_status, client_id, \
         job_data, result_data"
    };
}

/// `$1, $2, …` for `n` values starting at `first`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `(nonce, ciphertext, ephemeral, expires_at)`.
type SecretRow = (Vec<u8>, Vec<u8>, i64, Option<i64>);

/// Terminal job states (Testflinger's set, including `completed`, which no agent posts).
pub const TERMINAL_STATES: [&str; 3] = ["cancelled", "complete", "completed"];

impl Store {
    /// Connects to `url` (`sqlite://PATH`, `postgres://…`, `postgresql://…`), creating a SQLite
    /// file if missing, and runs the backend's migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|_| StoreError::Url(crate::config::redact_url(url)))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            // The single writer: all writes queue here, in order, without SQLITE_BUSY.
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options.clone())
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&write).await?;
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options)
                .await?;
            Ok(Store { pools: Pools::Sqlite { read, write } })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool =
                PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(60)).connect(url).await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Ok(Store { pools: Pools::Postgres(pool) })
        } else {
            Err(StoreError::Url(crate::config::redact_url(url)))
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes all connections (waits for them to be returned).
    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }

    // ----------------------------------------------------------------------------------- jobs

    /// Inserts a submitted job (state `waiting`) with its exclusions and tags, and its
    /// `submitted` event. A `job_id` that exists already is a [`StoreError::Conflict`].
    pub async fn insert_job(&self, job: &NewJob) -> Result<()> {
        let data = serde_json::json!({ "job_queue": job.queue, "job_priority": job.priority }).to_string();
        tx!(self, t => {
            let (seq,): (i64,) = sqlx::query_as(
                "INSERT INTO jobs (job_id, queue, priority, state, created_at, attachments_status, client_id, job_data) \
                 VALUES ($1, $2, $3, 'waiting', $4, $5, $6, $7) RETURNING seq",
            )
            .bind(&job.job_id)
            .bind(&job.queue)
            .bind(job.priority)
            .bind(job.created_at)
            .bind(&job.attachments_status)
            .bind(&job.client_id)
            .bind(&job.job_data)
            .fetch_one(&mut *t)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("Job {} already exists", job.job_id)),
                other => other,
            })?;
            for agent in &job.exclude_agents {
                sqlx::query("INSERT INTO job_exclusions (job_seq, agent) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(seq)
                    .bind(agent)
                    .execute(&mut *t)
                    .await?;
            }
            for tag in &job.tags {
                sqlx::query("INSERT INTO job_tags (job_seq, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(seq)
                    .bind(tag)
                    .execute(&mut *t)
                    .await?;
            }
            event!(self, t, &job.job_id, "submitted", &data, job.created_at);
            t.commit().await?;
            Ok(())
        })
    }

    /// One job by id.
    pub async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        on!(self, read, p => {
            let row: Option<JobTuple> = sqlx::query_as(concat!("SELECT ", job_cols!(), " FROM jobs WHERE job_id = $1"))
                .bind(job_id)
                .fetch_optional(p)
                .await?;
            Ok(row.map(JobRecord::from))
        })
    }

    /// Claims the next job for `agent` from `queues`: the `waiting` job with the highest
    /// priority (FIFO among equals) whose attachments are complete (or that has none) and that
    /// does not exclude `agent`. Marks it `running`, records its wait time and a `claimed`
    /// event. Never returns one job twice, whatever the concurrency.
    pub async fn claim(&self, queues: &[String], agent: &str, now: i64) -> Result<Option<JobRecord>> {
        if queues.is_empty() {
            return Ok(None);
        }
        // The only dialect difference: PostgreSQL locks the chosen row and lets concurrent
        // claimers skip it; SQLite's single writer already serialises claims.
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE OF j SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', started_at = $1, agent = $2 \
             WHERE seq = (SELECT j.seq FROM jobs j \
                 WHERE j.state = 'waiting' AND j.queue IN ({}) \
                 AND (j.attachments_status IS NULL OR j.attachments_status = 'complete') \
                 AND NOT EXISTS (SELECT 1 FROM job_exclusions e WHERE e.job_seq = j.seq AND e.agent = $2) \
                 ORDER BY j.priority DESC, j.seq ASC LIMIT 1 {lock}) \
             AND state = 'waiting' RETURNING {}",
            placeholders(3, queues.len()),
            job_cols!()
        );
        tx!(self, t => {
            let mut q = sqlx::query_as::<_, JobTuple>(&sql).bind(now).bind(agent);
            for queue in queues {
                q = q.bind(queue);
            }
            let Some(row) = q.fetch_optional(&mut *t).await? else {
                t.commit().await?;
                return Ok(None);
            };
            let job = JobRecord::from(row);
            let wait = (now - job.created_at).max(0) / 1_000_000;
            sqlx::query("INSERT INTO queue_wait_times (queue, wait_seconds, created_at) VALUES ($1, $2, $3)")
                .bind(&job.queue)
                .bind(wait)
                .bind(now)
                .execute(&mut *t)
                .await?;
            let data = serde_json::json!({ "agent": agent, "job_state": "running" }).to_string();
            event!(self, t, &job.job_id, "claimed", &data, now);
            t.commit().await?;
            Ok(Some(JobRecord { state: "running".into(), started_at: Some(now), agent: Some(agent.into()), ..job }))
        })
    }

    /// Cancels a job that is not in a terminal state. Returns whether it was cancelled.
    pub async fn cancel(&self, job_id: &str, now: i64) -> Result<bool> {
        tx!(self, t => {
            let done = sqlx::query(
                "UPDATE jobs SET state = 'cancelled' WHERE job_id = $1 AND state NOT IN ('cancelled', 'complete', 'completed')",
            )
            .bind(job_id)
            .execute(&mut *t)
            .await?
            .rows_affected();
            if done > 0 {
                event!(self, t, job_id, "state", r#"{"job_state":"cancelled"}"#, now);
            }
            t.commit().await?;
            Ok(done > 0)
        })
    }

    /// 0-based position of a `waiting` job in its queue (priority desc, FIFO); `None` when the
    /// job is unknown or not waiting.
    pub async fn position(&self, job_id: &str) -> Result<Option<i64>> {
        on!(self, read, p => {
            let row: Option<(String, i64, i64, String)> =
                sqlx::query_as("SELECT queue, priority, seq, state FROM jobs WHERE job_id = $1")
                    .bind(job_id)
                    .fetch_optional(p)
                    .await?;
            let Some((queue, priority, seq, state)) = row else { return Ok(None) };
            if state != "waiting" {
                return Ok(None);
            }
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM jobs WHERE state = 'waiting' AND queue = $1 \
                 AND (priority > $2 OR (priority = $2 AND seq < $3))",
            )
            .bind(&queue)
            .bind(priority)
            .bind(seq)
            .fetch_one(p)
            .await?;
            Ok(Some(n))
        })
    }

    /// Jobs matching tags (`match_all`: every tag, else any) and states (`active` = not
    /// terminal), in submission order: `(job_id, created_at, state)`.
    pub async fn search(&self, tags: &[String], match_all: bool, states: &[String]) -> Result<Vec<JobSummary>> {
        let mut tags: Vec<&String> = tags.iter().collect();
        tags.sort();
        tags.dedup();
        let mut clauses = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if !tags.is_empty() {
            let ph = placeholders(1, tags.len());
            binds.extend(tags.iter().map(|t| (*t).clone()));
            if match_all {
                clauses.push(format!(
                    "seq IN (SELECT job_seq FROM job_tags WHERE tag IN ({ph}) GROUP BY job_seq HAVING COUNT(*) = {})",
                    tags.len()
                ));
            } else {
                clauses.push(format!("seq IN (SELECT job_seq FROM job_tags WHERE tag IN ({ph}))"));
            }
        }
        if !states.is_empty() {
            let named: Vec<&String> = states.iter().filter(|s| *s != "active").collect();
            let mut ors = Vec::new();
            if !named.is_empty() {
                ors.push(format!("state IN ({})", placeholders(binds.len() + 1, named.len())));
                binds.extend(named.iter().map(|s| (*s).clone()));
            }
            if states.iter().any(|s| s == "active") {
                ors.push("state NOT IN ('cancelled', 'complete', 'completed')".to_owned());
            }
            clauses.push(format!("({})", ors.join(" OR ")));
        }
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!("SELECT job_id, created_at, state, queue FROM jobs {filter} ORDER BY seq");
        on!(self, read, p => {
            let mut q = sqlx::query_as::<_, (String, i64, String, String)>(&sql);
            for b in &binds {
                q = q.bind(b);
            }
            Ok(q.fetch_all(p).await?.into_iter().map(JobSummary::from).collect())
        })
    }

    /// All jobs of a queue, any state, in submission order.
    pub async fn queue_jobs(&self, queue: &str) -> Result<Vec<JobSummary>> {
        on!(self, read, p => {
            let rows: Vec<(String, i64, String, String)> =
                sqlx::query_as("SELECT job_id, created_at, state, queue FROM jobs WHERE queue = $1 ORDER BY seq")
                    .bind(queue)
                    .fetch_all(p)
                    .await?;
            Ok(rows.into_iter().map(JobSummary::from).collect())
        })
    }

    /// Marks a waiting job's attachments as uploaded. Returns the job's queue when it changed.
    pub async fn complete_attachments(&self, job_id: &str, now: i64) -> Result<Option<String>> {
        tx!(self, t => {
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE jobs SET attachments_status = 'complete' WHERE job_id = $1 AND state = 'waiting' \
                 AND attachments_status = 'waiting' RETURNING queue",
            )
            .bind(job_id)
            .fetch_optional(&mut *t)
            .await?;
            if row.is_some() {
                event!(self, t, job_id, "attachments", r#"{"attachments_status":"complete"}"#, now);
            }
            t.commit().await?;
            Ok(row.map(|r| r.0))
        })
    }

    /// Applies a result post (`$set` of `status`, `device_info`, `job_state`). A job that does
    /// not exist is a silent no-op (as in Testflinger). Returns whether the job exists.
    pub async fn update_result(&self, job_id: &str, patch: &ResultPatch, now: i64) -> Result<bool> {
        tx!(self, t => {
            let row: Option<(String,)> = sqlx::query_as("SELECT result_data FROM jobs WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(&mut *t)
                .await?;
            let Some((result,)) = row else {
                t.commit().await?;
                return Ok(false);
            };
            let mut result: Map<String, Value> = serde_json::from_str(&result)?;
            if let Some(status) = &patch.status {
                result.insert("status".into(), status.clone());
            }
            if let Some(info) = &patch.device_info {
                result.insert("device_info".into(), info.clone());
            }
            let result = Value::Object(result).to_string();
            match &patch.job_state {
                Some(state) => {
                    sqlx::query("UPDATE jobs SET result_data = $1, state = $2 WHERE job_id = $3")
                        .bind(&result)
                        .bind(state)
                        .bind(job_id)
                        .execute(&mut *t)
                        .await?;
                }
                None => {
                    sqlx::query("UPDATE jobs SET result_data = $1 WHERE job_id = $2")
                        .bind(&result)
                        .bind(job_id)
                        .execute(&mut *t)
                        .await?;
                }
            }
            let mut data = Map::new();
            if let Some(s) = &patch.status {
                data.insert("status".into(), s.clone());
            }
            if let Some(s) = &patch.job_state {
                data.insert("job_state".into(), Value::String(s.clone()));
            }
            if patch.device_info.is_some() {
                data.insert("device_info".into(), Value::Bool(true));
            }
            let kind = if patch.job_state.is_some() { "state" } else { "result" };
            event!(self, t, job_id, kind, &Value::Object(data).to_string(), now);
            t.commit().await?;
            Ok(true)
        })
    }

    /// Number of jobs per state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        on!(self, read, p => Ok(sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state").fetch_all(p).await?))
    }

    /// Number of waiting jobs per queue.
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>> {
        on!(self, read, p => Ok(sqlx::query_as(
            "SELECT queue, COUNT(*) FROM jobs WHERE state = 'waiting' GROUP BY queue ORDER BY queue"
        )
        .fetch_all(p)
        .await?))
    }

    // ----------------------------------------------------------------------------------- logs

    /// Stores one log fragment (and a `log` event carrying it, for the event stream).
    pub async fn append_log(&self, f: &LogFragment, now: i64) -> Result<()> {
        let data = serde_json::json!({
            "log_type": f.log_type, "phase": f.phase, "fragment_number": f.fragment_number, "log_data": f.log_data,
        })
        .to_string();
        tx!(self, t => {
            sqlx::query(
                "INSERT INTO log_fragments (job_id, log_type, phase, fragment_number, timestamp, log_data, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&f.job_id)
            .bind(&f.log_type)
            .bind(&f.phase)
            .bind(f.fragment_number)
            .bind(f.timestamp)
            .bind(&f.log_data)
            .bind(now)
            .execute(&mut *t)
            .await?;
            event!(self, t, &f.job_id, "log", &data, now);
            t.commit().await?;
            Ok(())
        })
    }

    /// Fragments of one log type of a job, filtered, ordered by fragment number:
    /// `(phase, fragment_number, log_data)`.
    pub async fn query_logs(&self, q: &LogQuery<'_>) -> Result<Vec<(String, i64, String)>> {
        on!(self, read, p => Ok(sqlx::query_as(
            "SELECT phase, fragment_number, log_data FROM log_fragments \
             WHERE job_id = $1 AND log_type = $2 AND fragment_number >= $3 AND timestamp >= $4 \
             AND ($5 = '' OR phase = $5) ORDER BY fragment_number, seq",
        )
        .bind(q.job_id)
        .bind(q.log_type)
        .bind(q.start_fragment)
        .bind(q.start_timestamp.unwrap_or(i64::MIN))
        .bind(q.phase.unwrap_or(""))
        .fetch_all(p)
        .await?))
    }

    /// All fragments of a job: `(log_type, phase, log_data)` in fragment order.
    pub async fn all_logs(&self, job_id: &str) -> Result<Vec<(String, String, String)>> {
        on!(self, read, p => Ok(sqlx::query_as(
            "SELECT log_type, phase, log_data FROM log_fragments WHERE job_id = $1 ORDER BY log_type, fragment_number, seq",
        )
        .bind(job_id)
        .fetch_all(p)
        .await?))
    }

    // --------------------------------------------------------------------------------- events

    /// Appends a job event outside any other change (agent events); returns its id.
    pub async fn append_event(&self, job_id: &str, kind: &str, data: &str, now: i64) -> Result<i64> {
        tx!(self, t => {
            let id = event!(self, t, job_id, kind, data, now);
            t.commit().await?;
            Ok(id)
        })
    }

    /// Events of a job with id greater than `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, job_id: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>> {
        on!(self, read, p => {
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "SELECT id, kind, data, created_at FROM job_events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(job_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|(id, kind, data, created_at)| EventRecord { id, kind, data, created_at }).collect())
        })
    }

    // --------------------------------------------------------------------------------- agents

    /// An agent's document and `updated_at`.
    pub async fn get_agent(&self, name: &str) -> Result<Option<(Map<String, Value>, i64)>> {
        on!(self, read, p => {
            let row: Option<(String, i64)> = sqlx::query_as("SELECT doc, updated_at FROM agents WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?;
            row.map(|(doc, at)| Ok((serde_json::from_str(&doc)?, at))).transpose()
        })
    }

    /// All agents, by name.
    pub async fn list_agents(&self) -> Result<Vec<(Map<String, Value>, i64)>> {
        on!(self, read, p => {
            let rows: Vec<(String, i64)> = sqlx::query_as("SELECT doc, updated_at FROM agents ORDER BY name").fetch_all(p).await?;
            rows.into_iter().map(|(doc, at)| Ok((serde_json::from_str(&doc)?, at))).collect()
        })
    }

    /// Upserts an agent: `$set` of `fields`, `log` lines appended keeping the last 100.
    pub async fn upsert_agent(&self, name: &str, fields: &Map<String, Value>, log: &[String], now: i64) -> Result<()> {
        tx!(self, t => {
            let row: Option<(String,)> = sqlx::query_as("SELECT doc FROM agents WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *t)
                .await?;
            let mut doc: Map<String, Value> = match row {
                Some((d,)) => serde_json::from_str(&d)?,
                None => Map::new(),
            };
            for (k, v) in fields {
                doc.insert(k.clone(), v.clone());
            }
            doc.insert("name".into(), Value::String(name.to_owned()));
            if !log.is_empty() {
                let mut lines: Vec<Value> = match doc.remove("log") {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                lines.extend(log.iter().cloned().map(Value::String));
                let excess = lines.len().saturating_sub(100);
                lines.drain(..excess);
                doc.insert("log".into(), Value::Array(lines));
            }
            sqlx::query(
                "INSERT INTO agents (name, doc, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(Value::Object(doc).to_string())
            .bind(now)
            .execute(&mut *t)
            .await?;
            t.commit().await?;
            Ok(())
        })
    }

    /// Records a provision outcome for an agent (kept even for an unknown agent, as in
    /// Testflinger), then updates the agent's provision streak. Returns whether the agent exists.
    pub async fn provision_log(&self, name: &str, entry: &Map<String, Value>, now: i64) -> Result<bool> {
        tx!(self, t => {
            let row: Option<(String,)> = sqlx::query_as("SELECT doc FROM provision_logs WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *t)
                .await?;
            let mut doc: Map<String, Value> = match row {
                Some((d,)) => serde_json::from_str(&d)?,
                None => Map::new(),
            };
            let mut item = entry.clone();
            item.insert("timestamp".into(), Value::String(crate::clock::iso_z(now)));
            for (k, v) in &item {
                doc.insert(k.clone(), v.clone());
            }
            doc.insert("name".into(), Value::String(name.to_owned()));
            let mut history: Vec<Value> = match doc.remove("provision_log") {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            history.push(Value::Object(item));
            let excess = history.len().saturating_sub(100);
            history.drain(..excess);
            doc.insert("provision_log".into(), Value::Array(history));
            sqlx::query(
                "INSERT INTO provision_logs (name, doc, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(Value::Object(doc).to_string())
            .bind(now)
            .execute(&mut *t)
            .await?;
            let agent: Option<(String,)> = sqlx::query_as("SELECT doc FROM agents WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *t)
                .await?;
            let Some((agent,)) = agent else {
                t.commit().await?;
                return Ok(false);
            };
            let mut agent: Map<String, Value> = serde_json::from_str(&agent)?;
            let failed = entry.get("exit_code").and_then(Value::as_i64).unwrap_or(0) != 0;
            let kind = if failed { "fail" } else { "pass" };
            let count = if agent.get("provision_streak_type").and_then(Value::as_str) == Some(kind) {
                agent.get("provision_streak_count").and_then(Value::as_i64).unwrap_or(0) + 1
            } else {
                1
            };
            agent.insert("provision_streak_type".into(), Value::String(kind.into()));
            agent.insert("provision_streak_count".into(), Value::from(count));
            sqlx::query("UPDATE agents SET doc = $1 WHERE name = $2")
                .bind(Value::Object(agent).to_string())
                .bind(name)
                .execute(&mut *t)
                .await?;
            t.commit().await?;
            Ok(true)
        })
    }

    // --------------------------------------------------------------------------------- queues

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

    // -------------------------------------------------------------------------------- clients

    /// One client.
    pub async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        on!(self, read, p => {
            let row: Option<ClientTuple> = sqlx::query_as(
                "SELECT client_id, secret_hash, role, max_priority, allowed_queues, max_reservation_time, email \
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
                "SELECT client_id, secret_hash, role, max_priority, allowed_queues, max_reservation_time, email \
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
                 email, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (client_id) DO UPDATE SET secret_hash = excluded.secret_hash, role = excluded.role, \
                 max_priority = excluded.max_priority, allowed_queues = excluded.allowed_queues, \
                 max_reservation_time = excluded.max_reservation_time, email = excluded.email",
            )
            .bind(&c.client_id)
            .bind(&c.secret_hash)
            .bind(c.role.as_str())
            .bind(serde_json::to_string(&c.max_priority)?)
            .bind(serde_json::to_string(&c.allowed_queues)?)
            .bind(serde_json::to_string(&c.max_reservation_time)?)
            .bind(&c.email)
            .bind(now)
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

    // -------------------------------------------------------------------------------- secrets

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
        on!(self, write, p => {
            let row: Option<SecretRow> = sqlx::query_as(
                "SELECT nonce, ciphertext, ephemeral, expires_at FROM secrets WHERE namespace = $1 AND path = $2 \
                 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(namespace)
            .bind(path)
            .bind(now)
            .fetch_optional(p)
            .await?;
            let Some((nonce, ciphertext, ephemeral, expires_at)) = row else { return Ok(None) };
            if ephemeral != 0 {
                let taken: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
                    "DELETE FROM secrets WHERE namespace = $1 AND path = $2 AND ephemeral = 1 RETURNING nonce, ciphertext",
                )
                .bind(namespace)
                .bind(path)
                .fetch_optional(p)
                .await?;
                let Some((nonce, ciphertext)) = taken else { return Ok(None) };
                return Ok(Some(SealedSecret {
                    namespace: namespace.into(), path: path.into(), nonce, ciphertext, ephemeral: true, expires_at,
                }));
            }
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

    // ------------------------------------------------------------------------------- settings

    /// A server setting; if absent, stores `default` and returns it (first writer wins).
    pub async fn setting_or_insert(&self, key: &str, default: &str) -> Result<String> {
        on!(self, write, p => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(key)
                .bind(default)
                .execute(p)
                .await?;
            let (v,): (String,) = sqlx::query_as("SELECT value FROM settings WHERE key = $1").bind(key).fetch_one(p).await?;
            Ok(v)
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
