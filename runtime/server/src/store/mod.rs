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
//!
//! This file holds what every query needs: the [`Store`] type, connecting, and the macros that
//! run a query on either backend. The queries are in one file per domain, each adding methods
//! to [`Store`]: `jobs.rs` (submit, claim, cancel, attachments, results), `logs.rs` (log
//! fragments and the event stream), `agents.rs`, `queues.rs` (descriptions, images, wait times,
//! restrictions), `clients.rs` (clients and refresh tokens), `secrets.rs`, `maintenance.rs`
//! (settings and retention); `sqlite.rs` is the SQLite writer and its batches, `records.rs`
//! the types read and written.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use sqlite::{Checkpointer, WRITER_CHECKPOINT_PAGES, Writer, checkpoint_loop};

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

// The queries, by domain; each file adds methods to [`Store`]. Declared after the macros
// above, which they use.
mod agents;
mod clients;
mod jobs;
mod logs;
mod maintenance;
mod queues;
mod records;
mod secrets;
mod sqlite;

pub use records::*;

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
}
