//! Log fragments and the job event stream.

use super::{Backend, EventRecord, LogFragment, LogQuery, Pools, Result, Store};

impl Store {
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
}
