//! Log fragments and the job event stream.

use serde_json::{Map, Value};

use super::sqlite::SqliteArgs;
use super::{Backend, EventRecord, LogFragment, LogQuery, Pools, Result, Store};

impl Store {
    /// Stores one log fragment, and a `log` event for the event stream that refers to it (the
    /// text is stored once, in `log_fragments`; [`Store::events_after`] puts it into the event).
    /// One transaction in one round trip.
    pub async fn append_log(&self, f: &LogFragment, now: i64) -> Result<()> {
        let data =
            serde_json::json!({ "log_type": f.log_type, "phase": f.phase, "fragment_number": f.fragment_number })
                .to_string();
        // $1 job_id, $2 log_type, $3 phase, $4 fragment_number, $5 timestamp, $6 log_data,
        // $7 now, $8 event data.
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                const SQL: &str = "\
                    INSERT INTO log_fragments (job_id, log_type, phase, fragment_number, timestamp, log_data, created_at) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7); \
                    INSERT INTO job_events (job_id, kind, data, created_at, log_seq) \
                    VALUES ($1, 'log', $8, $7, last_insert_rowid());";
                let mut args = SqliteArgs::default();
                args.add(f.job_id.clone())?
                    .add(f.log_type.clone())?
                    .add(f.phase.clone())?
                    .add(f.fragment_number)?
                    .add(f.timestamp)?
                    .add(f.log_data.clone())?
                    .add(now)?
                    .add(data)?;
                writer.batch(SQL, args).await?;
            }
            Pools::Postgres(pool) => {
                // The event takes the job's advisory lock first, as `event!` does.
                const SQL: &str = "\
                    WITH f AS (INSERT INTO log_fragments \
                        (job_id, log_type, phase, fragment_number, timestamp, log_data, created_at) \
                        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq, job_id) \
                    INSERT INTO job_events (job_id, kind, data, created_at, log_seq) \
                    SELECT f.job_id, 'log', $8, $7, f.seq FROM f \
                    CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(hashtext(f.job_id))) l";
                sqlx::query(SQL)
                    .bind(&f.job_id)
                    .bind(&f.log_type)
                    .bind(&f.phase)
                    .bind(f.fragment_number)
                    .bind(f.timestamp)
                    .bind(&f.log_data)
                    .bind(now)
                    .bind(&data)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
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

    /// Events of a job with id greater than `after`, oldest first, at most `limit`. A `log`
    /// event gets its fragment's text as `log_data`.
    pub async fn events_after(&self, job_id: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>> {
        on!(self, read, p => {
            let rows: Vec<(i64, String, String, i64, Option<String>)> = sqlx::query_as(
                "SELECT e.id, e.kind, e.data, e.created_at, f.log_data FROM job_events e \
                 LEFT JOIN log_fragments f ON f.seq = e.log_seq \
                 WHERE e.job_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3",
            )
            .bind(job_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.into_iter()
                .map(|(id, kind, data, created_at, log_data)| {
                    let data = match log_data {
                        Some(text) => with_log_data(&data, text)?,
                        None => data,
                    };
                    Ok(EventRecord { id, kind, data, created_at })
                })
                .collect()
        })
    }
}

/// A `log` event's data (a small JSON object) with its fragment's text added as `log_data`.
fn with_log_data(data: &str, text: String) -> Result<String> {
    let mut map: Map<String, Value> = serde_json::from_str(data)?;
    map.insert("log_data".into(), Value::String(text));
    Ok(Value::Object(map).to_string())
}
