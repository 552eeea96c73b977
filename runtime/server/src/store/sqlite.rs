//! The SQLite writer: one connection, background checkpoints, and group commit of the batches
//! of statements that the frequent writes send.
//!
//! Every write of a job's life (submit, claim, result, log fragment) is a *batch*: a few
//! statements sharing their `$N` arguments, run as one unit. Batches go to one task, the
//! committer, over a bounded queue. It takes every batch waiting (up to [`MAX_GROUP`]) and runs
//! them as one transaction, each inside a savepoint: a batch that fails is rolled back alone,
//! and one `COMMIT` — one write of the pages they share to the log — serves the whole group.
//! A lone batch goes as `BEGIN IMMEDIATE; … COMMIT;` in a single call to the connection's
//! worker thread. Nobody is answered before the commit that holds their batch succeeded, so
//! durability is what it was; a caller that goes away leaves its batch to run whole or not at
//! all, as before.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqliteRow};
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};

/// The most batches one commit serves.
const MAX_GROUP: usize = 64;
/// Batches that may wait for the committer before senders wait too.
const QUEUE: usize = 1024;

/// The single SQLite writer: one connection, used by one task at a time, in turn (the
/// committer for batches, [`Writer::lock`] for everything else). A pool of one would check the
/// connection with an extra round trip to its worker thread each time it is handed back.
#[derive(Clone)]
pub(super) struct Writer {
    conn: WriterConn,
    batches: mpsc::Sender<Batch>,
    _committer: Arc<Committer>,
}

/// The writer's connection (`None` once closed).
#[derive(Clone)]
struct WriterConn {
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

/// Statements for [`Writer::batch`], their arguments, and where the answer goes.
struct Batch {
    statements: &'static str,
    owned: Option<String>,
    args: SqliteArgs,
    reply: oneshot::Sender<Result<Vec<SqliteRow>>>,
}

impl Batch {
    fn sql(&self) -> &str {
        self.owned.as_deref().unwrap_or(self.statements)
    }
}

/// The committer task; ends when the last clone of the writer is dropped.
struct Committer(tokio::task::JoinHandle<()>);

impl Drop for Committer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn closed() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

impl WriterConn {
    async fn lock(&self) -> Result<WriterLock> {
        let guard = self.conn.clone().lock_owned().await;
        if guard.is_none() {
            return Err(closed());
        }
        Ok(WriterLock(guard))
    }
}

impl Writer {
    pub(super) async fn connect(options: SqliteConnectOptions) -> Result<Writer> {
        let conn = SqliteConnection::connect_with(&options).await?;
        let conn = WriterConn { conn: Arc::new(tokio::sync::Mutex::new(Some(conn))), options: Arc::new(options) };
        let (batches, queue) = mpsc::channel(QUEUE);
        let committer = Arc::new(Committer(tokio::spawn(commit_groups(conn.clone(), queue))));
        Ok(Writer { conn, batches, _committer: committer })
    }

    /// Waits for the writer (first come, first served); an error once the store is closed.
    pub(super) async fn lock(&self) -> Result<WriterLock> {
        self.conn.lock().await
    }

    pub(super) async fn close(&self) {
        if let Some(conn) = self.conn.conn.lock().await.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the SQLite writer failed");
        }
    }

    /// Runs `statements` (several, sharing the `$N` arguments) as one atomic unit, committed
    /// with whatever other batches wait at the time (see the module doc). Returns the rows of
    /// any `RETURNING` clause. A failing statement leaves the rest unrun and the batch rolled
    /// back.
    pub(super) async fn batch(&self, statements: &'static str, args: SqliteArgs) -> Result<Vec<SqliteRow>> {
        self.send(Batch { statements, owned: None, args, reply: oneshot::channel().0 }).await
    }

    /// [`Writer::batch`] with statements built at run time.
    pub(super) async fn batch_owned(&self, statements: String, args: SqliteArgs) -> Result<Vec<SqliteRow>> {
        self.send(Batch { statements: "", owned: Some(statements), args, reply: oneshot::channel().0 }).await
    }

    async fn send(&self, mut batch: Batch) -> Result<Vec<SqliteRow>> {
        let (reply, answer) = oneshot::channel();
        batch.reply = reply;
        self.batches.send(batch).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// The committer: takes every batch waiting, runs them as one group, answers each.
async fn commit_groups(conn: WriterConn, mut queue: mpsc::Receiver<Batch>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let results = run_group(&conn, &mut group).await;
        for (batch, result) in group.drain(..).zip(results) {
            // The caller may have gone away; its batch ran (or not) all the same.
            let _ = batch.reply.send(result);
        }
    }
}

/// Runs `group` as one transaction; one result per batch, in order.
async fn run_group(conn: &WriterConn, group: &mut [Batch]) -> Vec<Result<Vec<SqliteRow>>> {
    let n = group.len();
    let all_failed = |e: &dyn std::fmt::Display| -> Vec<Result<Vec<SqliteRow>>> {
        (0..n).map(|_| Err(StoreError::Database(sqlx::Error::Protocol(format!("commit failed: {e}"))))).collect()
    };
    let mut held = match conn.lock().await {
        Ok(held) => held,
        Err(_) => return (0..group.len()).map(|_| Err(closed())).collect(),
    };
    if let [batch] = group {
        // One batch: one call to the worker thread.
        let sql = format!("BEGIN IMMEDIATE; {} COMMIT;", batch.sql());
        let args = std::mem::take(&mut batch.args);
        let result = sqlx::query_with(&sql, args.0).fetch_all(&mut *held).await;
        if result.is_err() {
            rollback(&mut held, &conn.options).await;
        }
        return vec![result.map_err(StoreError::from)];
    }
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *held).await {
        rollback(&mut held, &conn.options).await;
        return all_failed(&e);
    }
    let mut results = Vec::with_capacity(group.len());
    for batch in group.iter_mut() {
        let sql = format!("SAVEPOINT batch; {} RELEASE batch;", batch.sql());
        let args = std::mem::take(&mut batch.args);
        match sqlx::query_with(&sql, args.0).fetch_all(&mut *held).await {
            Ok(rows) => results.push(Ok(rows)),
            Err(e) => {
                // This batch only: the others stay.
                if let Err(undo) = sqlx::query("ROLLBACK TO batch; RELEASE batch;").execute(&mut *held).await {
                    rollback(&mut held, &conn.options).await;
                    return all_failed(&undo);
                }
                results.push(Err(e.into()));
            }
        }
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *held).await {
        rollback(&mut held, &conn.options).await;
        return all_failed(&e);
    }
    results
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

/// Arguments for [`Writer::batch`]: owned values, so the batch can run in the committer.
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

/// Ends any open transaction on the writer; a connection whose state is then unknown is
/// replaced by a new one.
async fn rollback(held: &mut WriterLock, options: &SqliteConnectOptions) {
    let Err(e) = sqlx::query("ROLLBACK").execute(&mut **held).await else { return };
    if e.to_string().contains("no transaction is active") {
        return;
    }
    tracing::warn!(error = %e, "rollback failed; reopening the SQLite writer");
    match SqliteConnection::connect_with(options).await {
        Ok(fresh) => *held.0 = Some(fresh),
        Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite writer"),
    }
}
