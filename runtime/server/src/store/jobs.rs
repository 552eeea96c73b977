//! Jobs: submit, claim, cancel, position, listings, attachments and results.

use serde_json::{Map, Value};

use super::sqlite::SqliteArgs;
use super::{
    Backend, JobRecord, JobSummary, JobTuple, NewJob, Pools, Result, ResultPatch, Store, StoreError, SummaryTuple,
    placeholders,
};

impl Store {
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
                let rows = writer.batch(SQL, args).await.map_err(conflict)?;
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
                let rows = writer.batch_owned(sql, args).await?;
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
    /// not exist, or (with `patch.claimed_by`) was not claimed by one of those agents, is left
    /// as it is. Returns whether the job was changed.
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
        let claimed_by = patch.claimed_by.as_ref().map(serde_json::to_string).transpose()?;
        // $1 job_id, $2 job_state or NULL, $3 event kind, $4 event data, $5 now, $6 the agents
        // (JSON array) or NULL, then the result fields to set.
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                // The stored document's keys are replaced (not merged) by json_set.
                let mut expr = "result_data".to_owned();
                let mut args = SqliteArgs::default();
                args.add(job_id.to_owned())?
                    .add(patch.job_state.clone())?
                    .add(kind)?
                    .add(data)?
                    .add(now)?
                    .add(claimed_by)?;
                for (i, (key, value)) in set.iter().enumerate() {
                    expr = format!("json_set({expr}, '$.{key}', json(${}))", 7 + i);
                    args.add(value.to_string())?;
                }
                const CLAIMED: &str = "($6 IS NULL OR agent IN (SELECT value FROM json_each($6)))";
                let sql = format!(
                    "UPDATE jobs SET result_data = {expr}, state = coalesce($2, state) WHERE job_id = $1 AND {CLAIMED} \
                     RETURNING 1; \
                     INSERT INTO job_events (job_id, kind, data, created_at) SELECT $1, $3, $4, $5 FROM jobs \
                     WHERE job_id = $1 AND {CLAIMED};"
                );
                Ok(!writer.batch_owned(sql, args).await?.is_empty())
            }
            Pools::Postgres(pool) => {
                // `||` replaces top-level keys, as Testflinger's `$set result_data.<key>`.
                const SQL: &str = "\
                    WITH u AS (UPDATE jobs SET result_data = (result_data::jsonb || $7::jsonb)::text, \
                        state = coalesce($2, state) WHERE job_id = $1 \
                        AND ($6::text IS NULL OR agent IN (SELECT jsonb_array_elements_text($6::jsonb))) \
                        RETURNING job_id), \
                    e AS (INSERT INTO job_events (job_id, kind, data, created_at) SELECT u.job_id, $3, $4, $5 FROM u \
                        CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(hashtext(u.job_id))) l) \
                    SELECT count(*) FROM u";
                let (n,): (i64,) = sqlx::query_as(SQL)
                    .bind(job_id)
                    .bind(&patch.job_state)
                    .bind(kind)
                    .bind(&data)
                    .bind(now)
                    .bind(&claimed_by)
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
}
