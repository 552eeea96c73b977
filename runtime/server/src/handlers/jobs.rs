//! `/v1/job…`: submit, claim (with phasebox's long-poll), get, search, position, cancel,
//! attachments, and agent events (forwarded to the job's webhook).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::select_all;
use phasebox_jobspec::{AttachmentsStatus, ErrorKind, JobSpec, MAX_UNAUTHENTICATED_RESERVE_TIMEOUT};
use serde_json::{Map, Value, json};

use super::{
    FieldErrors, RawBody, check_owner, job_id_param, json_object, no_content, ok_text, query_all, query_one,
    query_pairs,
};
use crate::auth::{self, Caller, Principal};
use crate::blobs::BlobKind;
use crate::clock::{iso_offset_z, iso_z, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::hub::FALLBACK_POLL;
use crate::state::AppState;
use crate::store::{JobRecord, NewJob};

/// Maps a job-text error to Testflinger's answer: 400 for an invalid `job_id` or unparseable
/// text, otherwise 422 with the field errors nested as marshmallow nests them.
fn job_error(e: phasebox_jobspec::Error) -> ApiError {
    match e.kind() {
        ErrorKind::InvalidJobId => ApiError::BadRequest("Invalid job_id specified".into()),
        ErrorKind::JsonSyntax | ErrorKind::YamlSyntax => {
            ApiError::BadRequest(format!("Failed to decode JSON object: {e}"))
        }
        _ => ApiError::Validation { location: "json", errors: nest(e.path(), e.message()) },
    }
}

/// `a.b[1].c` + message → `{"a": {"b": {"1": {"c": [message]}}}}`; empty path → `_schema`.
fn nest(path: &str, message: &str) -> Value {
    let segments: Vec<String> =
        path.replace('[', ".").replace(']', "").split('.').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let mut value = json!([message]);
    if segments.is_empty() {
        return json!({ "_schema": value });
    }
    for seg in segments.iter().rev() {
        value = json!({ seg.as_str(): value });
    }
    value
}

/// `POST /v1/job` (contributor, manager, admin): validate, check permissions, store.
pub async fn submit(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let principal = caller.require(auth::USERS)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("Failed to decode JSON object: not UTF-8".into()))?;
    let yaml = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("yaml"));
    let mut spec = if yaml { JobSpec::from_yaml(text) } else { JobSpec::from_json(text) }.map_err(job_error)?;
    let now = now_micros();

    if !spec.exclude_agents.is_empty() {
        let agents = st.store.list_agents().await?;
        let allowed = agents.iter().any(|(doc, _)| {
            let name = doc.get("name").and_then(Value::as_str).unwrap_or("");
            agent_queues(doc).iter().any(|q| q == &spec.job_queue) && !spec.exclude_agents.iter().any(|a| a == name)
        });
        if !allowed {
            return Err(ApiError::Unprocessable(
                "There are no agents on the specified queue that are allowed to run this job".into(),
            ));
        }
    }

    if let Some(secrets) = spec.test_data.as_ref().and_then(|t| t.secrets.as_ref()) {
        if st.secrets.is_none() {
            return Err(ApiError::Unprocessable("No secrets store".into()));
        }
        let Some(client_id) = principal.client_id() else {
            return Err(ApiError::Unprocessable("Missing client ID (user not authenticated)".into()));
        };
        let mut missing = BTreeSet::new();
        for (_, path) in secrets.iter() {
            if !st.store.secret_exists(client_id, path, now).await? {
                missing.insert(path.to_owned());
            }
        }
        if !missing.is_empty() {
            let list: Vec<String> = missing.into_iter().collect();
            return Err(ApiError::Unprocessable(format!("Inaccessible secret paths: {}", list.join(", "))));
        }
        spec.client_id = Some(client_id.to_owned());
    }

    let job_id = match spec.job_id.take() {
        Some(id) => {
            super::canonical_uuid(&id).ok_or_else(|| ApiError::BadRequest("Invalid job_id specified".into()))?
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    if spec.has_attachments() {
        spec.attachments_status = Some(AttachmentsStatus::Waiting);
    }
    let may_use_restricted = check_permissions(&st, &principal, &spec).await?;

    let tags = spec.tags.clone().unwrap_or_default();
    let job = NewJob {
        job_id: job_id.clone(),
        queue: spec.job_queue.clone(),
        priority: spec.priority(),
        created_at: now,
        attachments_status: spec.attachments_status.map(|_| "waiting".to_owned()),
        client_id: spec.client_id.clone(),
        submitter: principal.client_id().map(str::to_owned),
        job_data: spec.to_json_string(),
        exclude_agents: spec.exclude_agents.clone(),
        tags,
    };
    if !st.store.insert_job_unless_restricted(&job, may_use_restricted).await? {
        return Err(restricted_error(&principal, &job.queue));
    }
    st.metrics.submitted(&job.queue);
    st.hub.queue_changed(&job.queue);
    tracing::info!(job_id = %job_id, queue = ?job.queue, priority = job.priority, submitter = ?job.submitter, "job submitted");
    Ok(Json(json!({ "job_id": job_id })))
}

/// Testflinger's job permission checks (reference §3.2.5), on the token's permissions, in its
/// order: priority, restricted queue, reservation time. Answers whether the caller may submit
/// to the queue should it be restricted: the store checks whether it is as it inserts the job,
/// so a restriction added meanwhile is not missed, and the common case costs no extra query.
async fn check_permissions(st: &AppState, principal: &Principal, spec: &JobSpec) -> ApiResult<bool> {
    let queue = &spec.job_queue;
    let perms = principal.permissions.as_ref();
    let priority = spec.priority();
    if priority != 0 {
        let Some(p) = perms else {
            return Err(ApiError::Unauthorized(format!("Authentication required for setting priority: {priority}")));
        };
        let star = p.max_priority.get("*").copied().unwrap_or(0);
        let allowed = star.max(p.max_priority.get(queue).copied().unwrap_or(0));
        if priority > allowed {
            return Err(ApiError::Forbidden(format!(
                "Not enough permissions to push to {queue} with priority {priority}"
            )));
        }
    }
    let may_use_restricted = perms.is_some_and(|p| p.allowed_queues.iter().any(|q| q == queue));
    let timeout =
        spec.reserve_data.as_ref().map(|r| r.effective_timeout()).unwrap_or(phasebox_jobspec::DEFAULT_RESERVE_TIMEOUT);
    if timeout > MAX_UNAUTHENTICATED_RESERVE_TIMEOUT {
        // A restricted-queue refusal comes first: look it up now.
        if !may_use_restricted && st.store.restricted_queues().await?.iter().any(|q| q == queue) {
            return Err(restricted_error(principal, queue));
        }
        let Some(p) = perms else {
            return Err(ApiError::Unauthorized(format!("Authentication required for reservation time: {timeout}")));
        };
        let star = p.max_reservation_time.get("*").copied().unwrap_or(0);
        let allowed = star.max(p.max_reservation_time.get(queue).copied().unwrap_or(0));
        if timeout as i128 > i128::from(allowed) {
            return Err(ApiError::Forbidden(format!(
                "Not enough permissions to reserve {queue} for {timeout} seconds"
            )));
        }
    }
    Ok(may_use_restricted)
}

/// The refusal of a job for a restricted queue the caller may not use.
fn restricted_error(principal: &Principal, queue: &str) -> ApiError {
    match principal.permissions {
        None => ApiError::Unauthorized(format!("Authentication required to push to restricted queue {queue}")),
        Some(_) => ApiError::Forbidden(format!("Not authorized to push to restricted queue {queue}")),
    }
}

/// The queues an agent document lists.
pub fn agent_queues(doc: &Map<String, Value>) -> Vec<String> {
    doc.get("queues")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|q| q.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// `GET /v1/job?queue=a&queue=b[&wait=N]` (agent): claim the next job. phasebox addition:
/// `wait=N` waits up to N seconds (capped by `max_long_poll`) for a job to arrive.
pub async fn claim(State(st): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENT)?;
    let pairs = query_pairs(q.as_deref());
    let queues = query_all(&pairs, "queue");
    if queues.is_empty() {
        return Err(ApiError::BadRequest("No queue(s) specified in request".into()));
    }
    let Some(agent) = caller.agent_name().map(str::to_owned) else {
        return Err(ApiError::Unauthorized("No agent name specified in the agent_name cookie".into()));
    };
    // The cookie names the agent; the credential must be bound to that name and every queue.
    principal.require_agent_name(&agent)?;
    principal.require_agent_queues(&queues)?;
    let wait = match query_one(&pairs, "wait") {
        Some(w) => w.parse::<f64>().map_err(|_| ApiError::BadRequest("wait must be a number of seconds".into()))?,
        None => 0.0,
    };
    let wait = Duration::from_secs_f64(wait.clamp(0.0, st.config.max_long_poll.as_secs_f64()));
    let deadline = tokio::time::Instant::now() + wait;

    let job = if wait.is_zero() {
        st.store.claim(&queues, &agent, now_micros()).await?
    } else {
        let _gauge = st.metrics.waiter();
        let mut watches: Vec<_> = queues.iter().map(|q| st.hub.watch_queue(q)).collect();
        watches.push(st.hub.watch_agent(&agent));
        loop {
            // Register for wake-ups before looking, so a submit in between is not missed.
            let mut woken: Vec<_> = watches.iter().map(|w| Box::pin(w.notify.notified())).collect();
            for n in &mut woken {
                n.as_mut().enable();
            }
            // An agent that an operator set offline, to maintenance or to restart while it
            // waits gets no job: it learns its state when it next reads its data (a plain
            // claim is answered as Testflinger's server does, without this check).
            if agent_is_held(&st, &agent).await? {
                break None;
            }
            if let Some(job) = st.store.claim(&queues, &agent, now_micros()).await? {
                break Some(job);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break None;
            }
            let nap = (deadline - now).min(FALLBACK_POLL);
            tokio::select! {
                _ = select_all(woken) => {}
                _ = tokio::time::sleep(nap) => {}
                _ = st.shutdown.cancelled() => break None,
            }
        }
    };
    let Some(job) = job else { return Ok(no_content()) };
    st.metrics.claimed(job.started_at.unwrap_or(job.created_at) - job.created_at);
    st.hub.job_changed(&job.job_id);
    tracing::info!(job_id = %job.job_id, queue = ?job.queue, agent = ?agent, "job claimed");
    let body = dispatch_json(&st, &job).await?;
    Ok(Json(body).into_response())
}

/// Whether agent `name`'s state on the server keeps it from taking jobs (Testflinger's agent
/// takes none while `offline` or `maintenance`, and restarts on `restart`).
async fn agent_is_held(st: &AppState, name: &str) -> ApiResult<bool> {
    let Some((data, _)) = st.store.get_agent(name).await? else { return Ok(false) };
    Ok(matches!(data.get("state").and_then(Value::as_str), Some("offline" | "maintenance" | "restart")))
}

/// The job as dispatched: `job_data` + `job_id` + `started_at`, with `test_data.secrets`
/// resolved to values (`""` for any that cannot be read; single-use ones are consumed).
async fn dispatch_json(st: &AppState, job: &JobRecord) -> ApiResult<Value> {
    let mut data: Map<String, Value> = serde_json::from_str(&job.job_data).map_err(crate::store::StoreError::from)?;
    data.insert("job_id".into(), Value::String(job.job_id.clone()));
    if let Some(status) = &job.attachments_status {
        data.insert("attachments_status".into(), Value::String(status.clone()));
    }
    data.insert("started_at".into(), Value::String(iso_offset_z(job.started_at.unwrap_or(job.created_at))));
    let now = now_micros();
    if let Some(Value::Object(secrets)) = data.get_mut("test_data").and_then(|t| t.get_mut("secrets")) {
        for (_, value) in secrets.iter_mut() {
            let path = value.as_str().unwrap_or("").to_owned();
            let resolved = match (&st.secrets, &job.client_id) {
                (Some(key), Some(owner)) => match st.store.take_secret(owner, &path, now).await {
                    Ok(Some(sealed)) => match key.open(owner, &path, &sealed.nonce, &sealed.ciphertext) {
                        Ok(secret) => Some(secret),
                        Err(e) => {
                            tracing::warn!(job_id = %job.job_id, path = ?path, error = %e, "secret cannot be decrypted");
                            None
                        }
                    },
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(job_id = %job.job_id, path = ?path, error = %e, "secret cannot be read");
                        None
                    }
                },
                _ => None,
            };
            *value = Value::String(resolved.map(|s| s.expose().to_owned()).unwrap_or_default());
        }
    }
    Ok(Value::Object(data))
}

/// `GET /v1/job/<id>` (contributor, manager, admin; the job's owner, see
/// [`super::check_owner`]): the job as submitted (secret paths, never values); 204 when unknown.
pub async fn get(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let principal = caller.require(auth::USERS)?;
    let id = job_id_param(&id)?;
    let Some(job) = st.store.get_job(&id).await? else { return Ok(no_content()) };
    check_owner(&principal, &job)?;
    let mut data: Map<String, Value> = serde_json::from_str(&job.job_data).map_err(crate::store::StoreError::from)?;
    for server_only in ["client_id", "attachments_status", "started_at"] {
        data.remove(server_only);
    }
    data.insert("job_id".into(), Value::String(job.job_id));
    Ok(Json(Value::Object(data)).into_response())
}

/// `GET /v1/job/<id>/position` (contributor, manager, admin; the job's owner): `"<n>"` as
/// text; 410 when the job is unknown or no longer waiting.
pub async fn position(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let principal = caller.require(auth::USERS)?;
    let id = job_id_param(&id)?;
    if let Some(job) = st.store.get_job(&id).await? {
        check_owner(&principal, &job)?;
    }
    match st.store.position(&id).await? {
        Some(n) => Ok((StatusCode::OK, n.to_string()).into_response()),
        None => Err(ApiError::Text(StatusCode::GONE, "Job not found or already started\n".into())),
    }
}

/// `POST /v1/job/<id>/action` `{"action": "cancel"}` (contributor, manager, admin; the job's
/// owner).
pub async fn action(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let principal = caller.require(auth::USERS)?;
    let id = job_id_param(&id)?;
    let map = json_object(&body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["action"]);
    errors.required(&map, &["action"]);
    if let Some(a) = map.get("action")
        && a.as_str() != Some("cancel")
    {
        errors.add("action", "Must be one of: cancel.");
    }
    errors.check("json")?;
    if let Some(job) = st.store.get_job(&id).await? {
        check_owner(&principal, &job)?;
    }
    if st.store.cancel(&id, now_micros()).await? {
        st.hub.job_changed(&id);
        tracing::info!(job_id = %id, by = ?principal.client_id(), "job cancelled");
        Ok(ok_text())
    } else {
        Err(ApiError::Text(StatusCode::BAD_REQUEST, "The job is already completed or cancelled".into()))
    }
}

const SEARCH_STATES: [&str; 11] = [
    "setup",
    "provision",
    "firmware_update",
    "test",
    "allocate",
    "allocated",
    "reserve",
    "cleanup",
    "cancelled",
    "completed",
    "active",
];

/// `GET /v1/job/search?tags=&match=any|all&state=` (contributor, manager, admin): a bare list
/// of `{job_id, created_at, job_state}` (`job_id` null for anonymous jobs, see
/// [`super::listed_job_id`]).
pub async fn search(State(st): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let principal = caller.require(auth::USERS)?;
    let pairs = query_pairs(q.as_deref());
    let mut errors = FieldErrors::default();
    for (k, _) in &pairs {
        if !["tags", "match", "state"].contains(&k.as_str()) {
            errors.add(k, "Unknown field.");
        }
    }
    let tags = query_all(&pairs, "tags");
    let match_all = match query_one(&pairs, "match") {
        None | Some("any") => false,
        Some("all") => true,
        Some(_) => {
            errors.add("match", "Must be one of: any, all.");
            false
        }
    };
    let states = query_all(&pairs, "state");
    for s in &states {
        if !SEARCH_STATES.contains(&s.as_str()) {
            errors.add("state", format!("Must be one of: {}.", SEARCH_STATES.join(", ")));
        }
    }
    errors.check("query")?;
    let jobs = st.store.search(&tags, match_all, &states).await?;
    let list: Vec<Value> = jobs
        .into_iter()
        .map(|j| json!({ "job_id": super::listed_job_id(&principal, &j), "created_at": iso_z(j.created_at), "job_state": j.state }))
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `GET /v1/job/<id>/attachments` (agent; the one that claimed the job): the archive
/// (`application/gzip`), 204 when none.
pub async fn get_attachments(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENT)?;
    let id = job_id_param(&id)?;
    super::claimed_job(&st, &principal, &id).await?;
    super::send_blob(&st.blobs, BlobKind::Attachments, &id, "application/gzip", Some("attachments.tar.gz")).await
}

/// `POST /v1/job/<id>/attachments` (contributor, manager, admin; the job's owner): multipart
/// `file`; the job becomes claimable once this succeeds. One upload only: it is accepted while
/// the job waits for its attachments and no other upload has begun (a job submitted without
/// credentials has no other owner than whoever knows its id, so a second upload could replace
/// its inputs); once they are complete, another upload is answered 200 and changes nothing.
pub async fn post_attachments(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let principal = caller.require(auth::USERS)?;
    let id = job_id_param(&id)?;
    let invalid = || ApiError::Text(StatusCode::UNPROCESSABLE_ENTITY, format!("Job {id} is not valid\n"));
    let job = st.store.get_job(&id).await?.ok_or_else(invalid)?;
    check_owner(&principal, &job)?;
    if job.state != "waiting" {
        return Err(invalid());
    }
    match job.attachments_status.as_deref() {
        None => {
            return Err(ApiError::Text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Job {id} not awaiting attachments\n"),
            ));
        }
        Some("complete") => return Ok(ok_text()),
        _ => {}
    }
    if !st.store.begin_attachments(&id).await? {
        return Err(ApiError::Conflict(format!(
            "The attachments of job {id} are being uploaded or were uploaded already"
        )));
    }
    let limit = st.config.max_attachment_bytes;
    let stored = async {
        let writer = super::receive_file(multipart, &st.blobs, limit).await?;
        writer.finish(&st.blobs, BlobKind::Attachments, &id).await.map_err(|e| super::blob_error(e, limit))
    };
    let size = match stored.await {
        Ok(size) => size,
        Err(e) => {
            // The upload failed: the job waits for its attachments again.
            st.store.abort_attachments(&id).await?;
            return Err(e);
        }
    };
    if let Some(queue) = st.store.complete_attachments(&id, now_micros()).await? {
        st.hub.queue_changed(&queue);
        st.hub.job_changed(&id);
    }
    tracing::info!(job_id = %id, bytes = size, by = ?principal.client_id(), "attachments stored");
    Ok(ok_text())
}

/// `POST /v1/job/<id>/events` (agent): records the agent's events in the job's event stream,
/// then forwards them to the job's webhook as Testflinger does (reference §3.5 item 9).
pub async fn events(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENT)?;
    let id = job_id_param(&id)?;
    let map = json_object(&body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["agent_id", "job_queue", "job_status_webhook", "events"]);
    errors.required(&map, &["job_status_webhook"]);
    for key in ["agent_id", "job_queue"] {
        if let Some(v) = map.get(key)
            && let Err(m) = super::as_string(v)
        {
            errors.add(key, m);
        }
    }
    let webhook = map.get("job_status_webhook").and_then(Value::as_str).unwrap_or("");
    if map.contains_key("job_status_webhook") && crate::webhook::origin(webhook).is_none() {
        errors.add("job_status_webhook", "Not a valid URL.");
    }
    let events = match map.get("events") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            for (i, e) in items.iter().enumerate() {
                let ok = e.as_object().is_some_and(|o| {
                    o.keys().all(|k| ["event_name", "timestamp", "detail"].contains(&k.as_str()))
                        && o.get("event_name").is_some_and(Value::is_string)
                        && o.get("timestamp").is_some_and(Value::is_string)
                        && o.get("detail").is_none_or(Value::is_string)
                });
                if !ok {
                    errors.add("events", format!("Item {i}: expected {{event_name, timestamp, detail?}} strings."));
                }
            }
            items.clone()
        }
        Some(_) => {
            errors.add("events", "Not a valid list.");
            Vec::new()
        }
    };
    errors.check("json")?;
    super::claimed_job(&st, &principal, &id).await?;
    // The agent posts its whole list every time: the newest event is the last one.
    let data = json!({ "agent_id": map.get("agent_id"), "event": events.last() }).to_string();
    st.store.append_event(&id, "agent", &data, now_micros()).await?;
    st.hub.job_changed(&id);
    crate::webhook::forward(&st, webhook, &map).await
}
