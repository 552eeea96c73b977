//! The SQLite writer: one connection, background checkpoints, and batches of statements run
//! as one transaction in one call to the connection's worker thread.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};

use super::{Result, StoreError};

/// The single SQLite writer: one connection, used by one task at a time, in turn. (A pool of
/// one would check the connection with an extra round trip to its worker thread each time it
/// is handed back.)
#[derive(Clone)]
pub(super) struct Writer {
    conn: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    options: Arc<SqliteConnectOptions>,
}

/// The writer, held: derefs to its connection.
pub(super) struct WriterLock(tokio::sync::OwnedMutexGuard<Option<SqliteConnection>>);

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
    pub(super) async fn connect(options: SqliteConnectOptions) -> Result<Writer> {
        let conn = SqliteConnection::connect_with(&options).await?;
        Ok(Writer { conn: Arc::new(tokio::sync::Mutex::new(Some(conn))), options: Arc::new(options) })
    }

    /// Waits for the writer (first come, first served); an error once the store is closed.
    pub(super) async fn lock(&self) -> Result<WriterLock> {
        let guard = self.conn.clone().lock_owned().await;
        if guard.is_none() {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        Ok(WriterLock(guard))
    }

    pub(super) async fn close(&self) {
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
pub(super) struct Checkpointer(pub(super) tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the background checkpoint runs.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// Pages of write-ahead log at which the writer checkpoints itself after all (4 KiB each): a
/// backstop should the background checkpoints fall behind.
pub(super) const WRITER_CHECKPOINT_PAGES: &str = "8000";

pub(super) async fn checkpoint_loop(read: SqlitePool) {
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

/// Arguments for [`sqlite_batch`]: owned values, so the batch can run in its own task.
#[derive(Default)]
pub(super) struct SqliteArgs(sqlx::sqlite::SqliteArguments<'static>);

impl SqliteArgs {
    pub(super) fn add<T>(&mut self, value: T) -> Result<&mut Self>
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
pub(super) async fn sqlite_batch(
    writer: &Writer,
    statements: &str,
    args: SqliteArgs,
) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
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
