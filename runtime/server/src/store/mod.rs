//! The store: jobs, claims, logs, events, agents, queues, clients, tokens and secrets.
//!
//! Two backends, picked once from the URL scheme ([`Store::connect`]):
//!
//! * **SQLite** (`sqlite://PATH`): one file in WAL mode (`synchronous = NORMAL`). Writes go
//!   through a pool of exactly one connection — the single writer — so a claim (`UPDATE …
//!   WHERE seq = (SELECT … LIMIT 1) RETURNING …` inside a `BEGIN IMMEDIATE` transaction) can
//!   never hand one job to two agents; reads use a separate pool and never block the writer.
//!   A background task checkpoints the log, so the writer does not stop for it.
//! * **PostgreSQL** (`postgres://…`): one pool shared by any number of server replicas; a claim
//!   locks its row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers skip each other's rows
//!   instead of waiting or double-dispatching.
//!
//! Each backend has its own migrations (`migrations/sqlite`, `migrations/postgres`), run at
//! connect. Queries are written once with `$N` placeholders, which both drivers accept; where
//! the dialects differ (the claim's row lock, transaction start) the code says so. Times are
//! microseconds since the Unix epoch; JSON documents are stored as text.
//!
//! The writes of every job's life — submit ([`Store::insert_job_unless_restricted`]), claim
//! ([`Store::claim`]) and result ([`Store::update_result`]) — are each one transaction in one
//! round trip: on SQLite a batch of statements between `BEGIN IMMEDIATE` and `COMMIT` sent to
//! the writer at once (the writer is never held while a task waits to be scheduled), on
//! PostgreSQL one statement whose data-modifying `WITH` clauses do every part (one commit, no
//! `BEGIN` and `COMMIT` round trips). Less frequent writes use ordinary transactions.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::Connection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

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
    Sqlite { read: SqlitePool, writer: Writer, checkpointer: Arc<Checkpointer> },
    Postgres(PgPool),
}

/// The single SQLite writer: one connection, used by one task at a time, in turn. (A pool of
/// one would check the connection with an extra round trip to its worker thread each time it
/// is handed back.)
#[derive(Clone)]
struct Writer {
    conn: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    options: Arc<SqliteConnectOptions>,
}

/// The writer, held: derefs to its connection.
struct WriterLock(tokio::sync::OwnedMutexGuard<Option<SqliteConnection>>);

impl std::ops::Deref for WriterLock {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.0.as_ref().expect("checked when locked")
    }
}

impl std::ops::DerefMut for WriterLock {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.0.as_mut().expect("checked when locked")
    }
}

impl Writer {
    async fn connect(options: SqliteConnectOptions) -> Result<Writer> {
        let conn = SqliteConnection::connect_with(&options).await?;
        Ok(Writer { conn: Arc::new(tokio::sync::Mutex::new(Some(conn))), options: Arc::new(options) })
    }

    /// Waits for the writer (first come, first served); an error once the store is closed.
    async fn lock(&self) -> Result<WriterLock> {
        let guard = self.conn.clone().lock_owned().await;
        if guard.is_none() {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        Ok(WriterLock(guard))
    }

    async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the SQLite writer failed");
        }
    }
}

/// Copies the SQLite write-ahead log into the database file in the background, so the single
/// writer never stops for it (the log is written, and synced, exactly as before; only who
/// checkpoints changes). Ends when the last clone of the store is dropped or closed.
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the background checkpoint runs.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// Pages of write-ahead log at which the writer checkpoints itself after all (4 KiB each): a
/// backstop should the background checkpoints fall behind.
const WRITER_CHECKPOINT_PAGES: &str = "8000";

async fn checkpoint_loop(read: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // PASSIVE: copies what it can without waiting for, or blocking, readers and the writer.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&read).await {
            tracing::debug!(error = %e, "background checkpoint failed");
        }
    }
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

/// Runs `$body` with `$p` bound to the backend's pool for reads or writes (on SQLite, writes
/// get the single writer's connection: the body may use `$p` once). The body is the same text
/// for both backends (compiled once per driver).
macro_rules! on {
    ($s:expr, read, $p:ident => $body:expr) => {
        match &$s.pools {
            Pools::Sqlite { read: $p, .. } => $body,
            Pools::Postgres($p) => $body,
        }
    };
    ($s:expr, write, $p:ident => $body:expr) => {
        match &$s.pools {
            Pools::Sqlite { writer, .. } => {
                let mut held = writer.lock().await?;
                let $p = &mut *held;
                $body
            }
            Pools::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` inside a write transaction `$t` (SQLite: `BEGIN IMMEDIATE` on the single
/// writer; PostgreSQL: `BEGIN`, read committed). The body commits.
macro_rules! tx {
    ($s:expr, $t:ident => $body:expr) => {
        match &$s.pools {
            Pools::Sqlite { writer, .. } => {
                let mut held = writer.lock().await?;
                #[allow(unused_mut)]
                let mut $t = sqlx::Connection::begin_with(&mut *held, "BEGIN IMMEDIATE").await?;
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
         job_data, result_data, submitter"
    };
}

/// `$1, $2, …` for `n` values starting at `first`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Arguments for [`sqlite_batch`]: owned values, so the batch can run in its own task.
#[derive(Default)]
struct SqliteArgs(sqlx::sqlite::SqliteArguments<'static>);

impl SqliteArgs {
    fn add<T>(&mut self, value: T) -> Result<&mut Self>
    where
        T: sqlx::Encode<'static, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'static,
    {
        sqlx::Arguments::add(&mut self.0, value).map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
        Ok(self)
    }
}

/// Runs `statements` (several, sharing the `$N` arguments) as one `BEGIN IMMEDIATE … COMMIT`
/// transaction on the SQLite writer, in a single call to its worker thread: the writer is held
/// only while SQLite works, not while the caller's task waits to be scheduled between
/// statements. Returns the rows of any `RETURNING` clause.
///
/// A failing statement leaves the rest unrun; the transaction is then rolled back. So is one
/// whose caller went away mid-batch (a client that disconnected): see [`BatchGuard`].
async fn sqlite_batch(writer: &Writer, statements: &str, args: SqliteArgs) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
    let sql = format!("BEGIN IMMEDIATE; {statements} COMMIT;");
    let mut guard = BatchGuard(Some(writer.lock().await?), writer.options.clone());
    let Some(held) = guard.0.as_mut() else { return Err(StoreError::Database(sqlx::Error::PoolClosed)) };
    let result = sqlx::query_with(&sql, args.0).fetch_all(&mut **held).await;
    let held = guard.0.take();
    match (result, held) {
        (Ok(rows), _) => Ok(rows),
        (Err(e), Some(held)) => {
            rollback(held, &writer.options).await;
            Err(e.into())
        }
        (Err(e), None) => Err(e.into()),
    }
}

/// Holds the writer during [`sqlite_batch`]. Dropped with the writer still inside — the caller
/// was cancelled while the batch ran, possibly between two of its statements — it rolls back
/// from a task of its own before letting the writer go (the worker thread runs commands in
/// order, so the rollback follows whatever part of the batch ran).
struct BatchGuard(Option<WriterLock>, Arc<SqliteConnectOptions>);

impl Drop for BatchGuard {
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            let options = self.1.clone();
            tokio::spawn(async move { rollback(held, &options).await });
        }
    }
}

/// Ends any open transaction on the writer; a connection whose state is then unknown is
/// replaced by a new one.
async fn rollback(mut held: WriterLock, options: &SqliteConnectOptions) {
    let Err(e) = sqlx::query("ROLLBACK").execute(&mut *held).await else { return };
    if e.to_string().contains("no transaction is active") {
        return;
    }
    tracing::warn!(error = %e, "rollback failed; reopening the SQLite writer");
    match SqliteConnection::connect_with(options).await {
        Ok(fresh) => *held.0 = Some(fresh),
        Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite writer"),
    }
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
            // The single writer: all writes queue here, in order, without SQLITE_BUSY. It leaves
            // checkpoints to the background task.
            let writer = Writer::connect(options.clone().pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)).await?;
            sqlx::migrate!("./migrations/sqlite").run_direct(&mut *writer.lock().await?).await?;
            // Readers are not checked before each use: a query on a broken one fails anyway.
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(60))
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            let checkpointer = Arc::new(Checkpointer(tokio::spawn(checkpoint_loop(read.clone()))));
            Ok(Store { pools: Pools::Sqlite { read, writer, checkpointer } })
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
            Pools::Sqlite { read, writer, checkpointer } => {
                checkpointer.0.abort();
                read.close().await;
                writer.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }

    // ----------------------------------------------------------------------------------- jobs

    /// Inserts a submitted job (state `waiting`) with its exclusions and tags, and its
    /// `submitted` event. A `job_id` that exists already is a [`StoreError::Conflict`].
    pub async fn insert_job(&self, job: &NewJob) -> Result<()> {
        self.insert_job_unless_restricted(job, true).await.map(drop)
    }

    /// As [`Store::insert_job`], except when the job's queue is restricted and
    /// `may_use_restricted` is false: then nothing is stored and the answer is `false`. The
    /// check and the insert are one atomic step.
    pub async fn insert_job_unless_restricted(&self, job: &NewJob, may_use_restricted: bool) -> Result<bool> {
        let data = serde_json::json!({ "job_queue": job.queue, "job_priority": job.priority }).to_string();
        let exclusions = serde_json::to_string(&job.exclude_agents)?;
        let tags = serde_json::to_string(&job.tags)?;
        let conflict = |e: StoreError| match e {
            StoreError::Conflict(_) => StoreError::Conflict(format!("Job {} already exists", job.job_id)),
            other => other,
        };
        // $1 job_id, $2 queue, $3 priority, $4 created_at, $5 attachments_status, $6 client_id,
        // $7 job_data, $8 may_use_restricted, $9 event data, $10 exclusions, $11 tags (JSON arrays),
        // $12 submitter.
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                // One transaction in one call to the writer. The restriction test is repeated in
                // each statement (nothing in between changes it); when it holds, the job named
                // $1 is the one just inserted (an existing one fails the insert).
                const SQL: &str = "\
                    INSERT INTO jobs (job_id, queue, priority, state, created_at, attachments_status, client_id, job_data, \
                    submitter) SELECT $1, $2, $3, 'waiting', $4, $5, $6, $7, $12 \
                    WHERE $8 OR NOT EXISTS (SELECT 1 FROM restricted_queues WHERE queue = $2) RETURNING seq; \
                    INSERT INTO job_exclusions (job_seq, agent) SELECT j.seq, x.value FROM jobs j, json_each($10) x \
                    WHERE j.job_id = $1 AND ($8 OR NOT EXISTS (SELECT 1 FROM restricted_queues WHERE queue = $2)) \
                    ON CONFLICT DO NOTHING; \
                    INSERT INTO job_tags (job_seq, tag) SELECT j.seq, x.value FROM jobs j, json_each($11) x \
                    WHERE j.job_id = $1 AND ($8 OR NOT EXISTS (SELECT 1 FROM restricted_queues WHERE queue = $2)) \
                    ON CONFLICT DO NOTHING; \
                    INSERT INTO job_events (job_id, kind, data, created_at) SELECT $1, 'submitted', $9, $4 \
                    WHERE $8 OR NOT EXISTS (SELECT 1 FROM restricted_queues WHERE queue = $2);";
                let mut args = SqliteArgs::default();
                args.add(job.job_id.clone())?
                    .add(job.queue.clone())?
                    .add(job.priority)?
                    .add(job.created_at)?
                    .add(job.attachments_status.clone())?
                    .add(job.client_id.clone())?
                    .add(job.job_data.clone())?
                    .add(may_use_restricted)?
                    .add(data)?
                    .add(exclusions)?
                    .add(tags)?
                    .add(job.submitter.clone())?;
                let rows = sqlite_batch(writer, SQL, args).await.map_err(conflict)?;
                Ok(!rows.is_empty())
            }
            Pools::Postgres(pool) => {
                // One statement (so one transaction and one round trip); the event takes the
                // job's advisory lock first, as `event!` does.
                const SQL: &str = "\
                    WITH allowed AS (SELECT ($8 OR NOT EXISTS (SELECT 1 FROM restricted_queues WHERE queue = $2)) AS ok), \
                    j AS (INSERT INTO jobs (job_id, queue, priority, state, created_at, attachments_status, client_id, job_data, \
                        submitter) SELECT $1, $2, $3, 'waiting', $4, $5, $6, $7, $12 FROM allowed WHERE allowed.ok \
                        RETURNING seq, job_id), \
                    x AS (INSERT INTO job_exclusions (job_seq, agent) \
                        SELECT j.seq, a FROM j, jsonb_array_elements_text($10::jsonb) a ON CONFLICT DO NOTHING), \
                    t AS (INSERT INTO job_tags (job_seq, tag) \
                        SELECT j.seq, a FROM j, jsonb_array_elements_text($11::jsonb) a ON CONFLICT DO NOTHING), \
                    e AS (INSERT INTO job_events (job_id, kind, data, created_at) \
                        SELECT j.job_id, 'submitted', $9, $4 FROM j \
                        CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(hashtext(j.job_id))) l) \
                    SELECT seq FROM j";
                let row: Option<(i64,)> = sqlx::query_as(SQL)
                    .bind(&job.job_id)
                    .bind(&job.queue)
                    .bind(job.priority)
                    .bind(job.created_at)
                    .bind(&job.attachments_status)
                    .bind(&job.client_id)
                    .bind(&job.job_data)
                    .bind(may_use_restricted)
                    .bind(&data)
                    .bind(&exclusions)
                    .bind(&tags)
                    .bind(&job.submitter)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| conflict(e.into()))?;
                Ok(row.is_some())
            }
        }
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
        let data = serde_json::json!({ "agent": agent, "job_state": "running" }).to_string();
        // $1 now, $2 agent, $3 event data, $4… queues.
        let candidate = format!(
            "SELECT j.seq FROM jobs j \
             WHERE j.state = 'waiting' AND j.queue IN ({}) \
             AND (j.attachments_status IS NULL OR j.attachments_status = 'complete') \
             AND NOT EXISTS (SELECT 1 FROM job_exclusions e WHERE e.job_seq = j.seq AND e.agent = $2) \
             ORDER BY j.priority DESC, j.seq ASC LIMIT 1",
            placeholders(4, queues.len()),
        );
        let row: Option<JobTuple> = match &self.pools {
            Pools::Sqlite { writer, .. } => {
                // One transaction in one call to the single writer, which serialises claims:
                // the candidate is the same job in each statement, and the update comes last
                // so that its row is the only one returned.
                let sql = format!(
                    "INSERT INTO queue_wait_times (queue, wait_seconds, created_at) \
                     SELECT queue, max(0, $1 - created_at) / 1000000, $1 FROM jobs WHERE seq = ({candidate}); \
                     INSERT INTO job_events (job_id, kind, data, created_at) \
                     SELECT job_id, 'claimed', $3, $1 FROM jobs WHERE seq = ({candidate}); \
                     UPDATE jobs SET state = 'running', started_at = $1, agent = $2 \
                     WHERE seq = ({candidate}) AND state = 'waiting' RETURNING {};",
                    job_cols!()
                );
                let mut args = SqliteArgs::default();
                args.add(now)?.add(agent.to_owned())?.add(data)?;
                for queue in queues {
                    args.add(queue.clone())?;
                }
                let rows = sqlite_batch(writer, &sql, args).await?;
                rows.first().map(<JobTuple as sqlx::FromRow<'_, sqlx::sqlite::SqliteRow>>::from_row).transpose()?
            }
            Pools::Postgres(pool) => {
                // One statement: the chosen row is locked, and concurrent claimers (on any
                // replica) skip it instead of waiting or double-dispatching.
                let sql = format!(
                    "WITH c AS ({candidate} FOR UPDATE OF j SKIP LOCKED), \
                     u AS (UPDATE jobs SET state = 'running', started_at = $1, agent = $2 FROM c \
                         WHERE jobs.seq = c.seq AND jobs.state = 'waiting' RETURNING jobs.*), \
                     w AS (INSERT INTO queue_wait_times (queue, wait_seconds, created_at) \
                         SELECT queue, GREATEST(0, $1 - created_at) / 1000000, $1 FROM u), \
                     e AS (INSERT INTO job_events (job_id, kind, data, created_at) \
                         SELECT u.job_id, 'claimed', $3, $1 FROM u \
                         CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(hashtext(u.job_id))) l) \
                     SELECT {} FROM u",
                    job_cols!()
                );
                let mut q = sqlx::query_as::<_, JobTuple>(&sql).bind(now).bind(agent).bind(&data);
                for queue in queues {
                    q = q.bind(queue);
                }
                q.fetch_optional(pool).await?
            }
        };
        Ok(row.map(JobRecord::from))
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
        let sql = format!("SELECT job_id, created_at, state, queue, submitter FROM jobs {filter} ORDER BY seq");
        on!(self, read, p => {
            let mut q = sqlx::query_as::<_, SummaryTuple>(&sql);
            for b in &binds {
                q = q.bind(b);
            }
            Ok(q.fetch_all(p).await?.into_iter().map(JobSummary::from).collect())
        })
    }

    /// All jobs of a queue, any state, in submission order.
    pub async fn queue_jobs(&self, queue: &str) -> Result<Vec<JobSummary>> {
        on!(self, read, p => {
            let rows: Vec<SummaryTuple> =
                sqlx::query_as("SELECT job_id, created_at, state, queue, submitter FROM jobs WHERE queue = $1 ORDER BY seq")
                    .bind(queue)
                    .fetch_all(p)
                    .await?;
            Ok(rows.into_iter().map(JobSummary::from).collect())
        })
    }

    /// Starts the one upload of a waiting job's attachments: `waiting` becomes `uploading`.
    /// Returns `false` (and changes nothing) unless the job waits for them and no other upload
    /// has started, so of concurrent uploads exactly one proceeds.
    pub async fn begin_attachments(&self, job_id: &str) -> Result<bool> {
        on!(self, write, p => {
            let n = sqlx::query(
                "UPDATE jobs SET attachments_status = 'uploading' WHERE job_id = $1 AND state = 'waiting' \
                 AND attachments_status = 'waiting'",
            )
            .bind(job_id)
            .execute(p)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    /// Ends a failed upload begun by [`Store::begin_attachments`]: the job waits again.
    pub async fn abort_attachments(&self, job_id: &str) -> Result<()> {
        on!(self, write, p => {
            sqlx::query("UPDATE jobs SET attachments_status = 'waiting' WHERE job_id = $1 AND attachments_status = 'uploading'")
                .bind(job_id)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// Marks a job's attachments as uploaded (after [`Store::begin_attachments`]). Returns
    /// the job's queue when it changed.
    pub async fn complete_attachments(&self, job_id: &str, now: i64) -> Result<Option<String>> {
        tx!(self, t => {
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE jobs SET attachments_status = 'complete' WHERE job_id = $1 \
                 AND attachments_status = 'uploading' RETURNING queue",
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
        let mut set = Map::new();
        let mut data = Map::new();
        if let Some(status) = &patch.status {
            set.insert("status".into(), status.clone());
            data.insert("status".into(), status.clone());
        }
        if let Some(s) = &patch.job_state {
            data.insert("job_state".into(), Value::String(s.clone()));
        }
        if let Some(info) = &patch.device_info {
            set.insert("device_info".into(), info.clone());
            data.insert("device_info".into(), Value::Bool(true));
        }
        let kind = if patch.job_state.is_some() { "state" } else { "result" };
        let data = Value::Object(data).to_string();
        // $1 job_id, $2 job_state or NULL, $3 event kind, $4 event data, $5 now, then the
        // result fields to set.
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                // The stored document's keys are replaced (not merged) by json_set.
                let mut expr = "result_data".to_owned();
                let mut args = SqliteArgs::default();
                args.add(job_id.to_owned())?.add(patch.job_state.clone())?.add(kind)?.add(data)?.add(now)?;
                for (i, (key, value)) in set.iter().enumerate() {
                    expr = format!("json_set({expr}, '$.{key}', json(${}))", 6 + i);
                    args.add(value.to_string())?;
                }
                let sql = format!(
                    "UPDATE jobs SET result_data = {expr}, state = coalesce($2, state) WHERE job_id = $1 RETURNING 1; \
                     INSERT INTO job_events (job_id, kind, data, created_at) SELECT $1, $3, $4, $5 FROM jobs \
                     WHERE job_id = $1;"
                );
                Ok(!sqlite_batch(writer, &sql, args).await?.is_empty())
            }
            Pools::Postgres(pool) => {
                // `||` replaces top-level keys, as Testflinger's `$set result_data.<key>`.
                const SQL: &str = "\
                    WITH u AS (UPDATE jobs SET result_data = (result_data::jsonb || $6::jsonb)::text, \
                        state = coalesce($2, state) WHERE job_id = $1 RETURNING job_id), \
                    e AS (INSERT INTO job_events (job_id, kind, data, created_at) SELECT u.job_id, $3, $4, $5 FROM u \
                        CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(hashtext(u.job_id))) l) \
                    SELECT count(*) FROM u";
                let (n,): (i64,) = sqlx::query_as(SQL)
                    .bind(job_id)
                    .bind(&patch.job_state)
                    .bind(kind)
                    .bind(&data)
                    .bind(now)
                    .bind(Value::Object(set).to_string())
                    .fetch_one(pool)
                    .await?;
                Ok(n > 0)
            }
        }
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

    // -------------------------------------------------------------------------------- clients

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

    // ------------------------------------------------------------------------------- settings

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
