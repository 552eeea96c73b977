//! `/jobs`: the jobs list with its filters, a job's page, and its cancel form.

use std::collections::{BTreeMap, BTreeSet};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use phasebox_server::auth::{self, Principal, Role};
use phasebox_server::blobs::BlobKind;
use phasebox_server::handlers::{RawBody, check_owner, job_id_param, jobs, listed_job_id};
use phasebox_server::store::{JobRecord, JobSummary, TERMINAL_STATES};
use phasebox_server::{ApiError, AppState};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::view::{Visit, error_page, human_duration, iso, render};

/// The states the filter offers (`active`: not finished).
const STATES: [&str; 13] = [
    "active",
    "waiting",
    "setup",
    "provision",
    "firmware_update",
    "test",
    "allocate",
    "allocated",
    "reserve",
    "cleanup",
    "complete",
    "cancelled",
    "completed",
];

/// The jobs list's filters (all optional; unknown ones are ignored).
#[derive(Debug, Default, Deserialize)]
pub struct JobFilter {
    #[serde(default)]
    queue: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    submitter: String,
    #[serde(default)]
    q: String,
    page: Option<usize>,
}

/// Whose submitter `principal` may see: admins see every job's, others their own only.
fn visible_submitter<'a>(principal: &Principal, submitter: Option<&'a str>) -> Option<&'a str> {
    submitter.filter(|s| principal.role == Role::Admin || principal.client_id() == Some(*s))
}

fn job_row(principal: &Principal, j: &JobSummary) -> Value {
    json!({
        "job_id": listed_job_id(principal, j),
        "state": j.state,
        "queue": j.queue,
        "submitter": visible_submitter(principal, j.submitter.as_deref()),
        "created": iso(j.created_at),
    })
}

/// Whether `j` matches the free-text search: its id (when shown), queue, state or submitter.
fn matches_search(principal: &Principal, j: &JobSummary, text: &str) -> bool {
    let text = text.to_lowercase();
    let id = listed_job_id(principal, j);
    [id.as_str(), Some(j.queue.as_str()), Some(j.state.as_str()), visible_submitter(principal, j.submitter.as_deref())]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&text))
}

/// `GET /jobs` (and `/`): who may list jobs and which ids they see are the rules of
/// `GET /v1/job/search`.
pub async fn list(State(st): State<AppState>, visit: Visit, Query(f): Query<JobFilter>) -> Response {
    match list_page(&st, &visit, f).await {
        Ok(r) => r,
        Err(e) => error_page(&visit, e),
    }
}

async fn list_page(st: &AppState, visit: &Visit, f: JobFilter) -> Result<Response, ApiError> {
    let principal = visit.caller.require(auth::USERS)?;
    let tags: Vec<String> = f.tag.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let states: Vec<String> = if f.state.is_empty() { Vec::new() } else { vec![f.state.clone()] };
    let mut jobs = st.store.search(&tags, false, &states).await?;
    jobs.reverse();
    let mut queues: BTreeSet<String> = st.store.list_queues().await?.into_iter().map(|(q, _)| q).collect();
    queues.extend(jobs.iter().map(|j| j.queue.clone()));
    let rows: Vec<Value> = jobs
        .iter()
        .filter(|j| f.queue.is_empty() || j.queue == f.queue)
        .filter(|j| {
            f.submitter.is_empty() || visible_submitter(&principal, j.submitter.as_deref()) == Some(&f.submitter)
        })
        .filter(|j| f.q.is_empty() || matches_search(&principal, j, &f.q))
        .map(|j| job_row(&principal, j))
        .collect();
    let total = rows.len();
    let (rows, paging) = super::paginate(rows, f.page.unwrap_or(1));
    let base = super::query_base(
        "/jobs",
        &[("queue", &f.queue), ("state", &f.state), ("tag", &f.tag), ("submitter", &f.submitter), ("q", &f.q)],
    );
    let ctx = json!({
        "jobs": rows, "total": total, "paging": paging, "page_base": base,
        "queues": queues, "states": STATES,
        "show_submitter": principal.client_id().is_some(),
        "filter": { "queue": f.queue, "state": f.state, "tag": f.tag, "submitter": f.submitter, "q": f.q },
    });
    Ok(render(visit, "jobs.html", "Jobs", ctx))
}

/// `GET /jobs/<id>`: who may see a job is the rule of `GET /v1/job/<id>` (its owner, an admin,
/// or anyone for a job submitted without credentials).
pub async fn detail(State(st): State<AppState>, visit: Visit, Path(id): Path<String>) -> Response {
    match detail_page(&st, &visit, &id).await {
        Ok(r) => r,
        Err(e) => error_page(&visit, e),
    }
}

/// The job as `GET /v1/job/<id>` shows it: the server's own fields removed. Secrets appear
/// as the job was submitted: names and store paths (the server never writes values into a job).
fn definition(job: &JobRecord) -> Result<Map<String, Value>, ApiError> {
    let mut data: Map<String, Value> =
        serde_json::from_str(&job.job_data).map_err(|e| ApiError::Internal(e.to_string()))?;
    for server_only in ["client_id", "attachments_status", "started_at"] {
        data.remove(server_only);
    }
    data.insert("job_id".into(), Value::String(job.job_id.clone()));
    Ok(data)
}

/// Log text per phase, in the order the phases first wrote.
fn by_phase(rows: &[(String, String, String)], log_type: &str) -> Vec<Value> {
    let mut order: Vec<String> = Vec::new();
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    for (kind, phase, data) in rows.iter().filter(|(kind, _, _)| kind == log_type) {
        let _ = kind;
        if !text.contains_key(phase) {
            order.push(phase.clone());
        }
        text.entry(phase.clone()).or_default().push_str(data);
    }
    order.into_iter().map(|p| json!({ "text": text.remove(&p).unwrap_or_default(), "phase": p })).collect()
}

/// The phases the job went through, from its `state` events: when each started, how long it
/// took (until the next state, or until now for the running one) and its exit status.
fn timeline(states: &[(String, i64)], status: &Map<String, Value>, now: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (state, at)) in states.iter().enumerate() {
        if TERMINAL_STATES.contains(&state.as_str()) || state == "waiting" {
            continue;
        }
        let end = states.get(i + 1).map(|(_, t)| *t).unwrap_or(now);
        out.push(json!({
            "phase": state, "started": iso(*at), "duration": human_duration(end - at),
            "status": status.get(state).cloned().unwrap_or(Value::Null),
        }));
    }
    out
}

async fn detail_page(st: &AppState, visit: &Visit, id: &str) -> Result<Response, ApiError> {
    let principal = visit.caller.require(auth::USERS)?;
    let id = job_id_param(id)?;
    let job = st.store.get_job(&id).await?.ok_or_else(|| ApiError::NotFound(format!("Job {id} not found")))?;
    check_owner(&principal, &job)?;
    let data = definition(&job)?;
    let secrets: Vec<&String> = data
        .get("test_data")
        .and_then(|t| t.get("secrets"))
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let tags = data.get("tags").cloned().unwrap_or(Value::Null);
    let result: Map<String, Value> = serde_json::from_str(&job.result_data).unwrap_or_default();
    let status = result.get("status").and_then(Value::as_object).cloned().unwrap_or_default();
    let events = st.store.events_after(&id, 0, i64::MAX).await?;
    let last_event = events.last().map(|e| e.id).unwrap_or(0);
    let states: Vec<(String, i64)> = events
        .iter()
        .filter(|e| e.kind == "state")
        .filter_map(|e| {
            let v: Value = serde_json::from_str(&e.data).ok()?;
            Some((v.get("job_state")?.as_str()?.to_owned(), e.created_at))
        })
        .collect();
    let logs = st.store.all_logs(&id).await?;
    let terminal = TERMINAL_STATES.contains(&job.state.as_str());
    let ctx = json!({
        "job": {
            "job_id": job.job_id, "state": job.state, "queue": job.queue, "agent": job.agent,
            "created": iso(job.created_at), "started": job.started_at.map(iso),
            "submitter": visible_submitter(&principal, job.submitter.as_deref()), "tags": tags,
        },
        "can_cancel": !terminal,
        "live": !terminal,
        "last_event": last_event,
        "phases": timeline(&states, &status, phasebox_server::clock::now_micros()),
        "output": by_phase(&logs, "output"),
        "serial": by_phase(&logs, "serial"),
        "device_info": result.get("device_info").map(|v| serde_json::to_string_pretty(v).unwrap_or_default()),
        "artifact": st.blobs.exists(BlobKind::Artifacts, &id).await,
        "secrets": secrets,
        "definition": serde_json::to_string_pretty(&data).unwrap_or_default(),
    });
    Ok(render(visit, "job.html", &format!("Job {id}"), ctx))
}

/// The cancel form.
#[derive(Deserialize)]
pub struct CancelForm {
    csrf: String,
}

/// `POST /jobs/<id>/cancel`: the API's own `POST /v1/job/<id>/action` with
/// `{"action": "cancel"}`, so the same caller may cancel the same jobs.
pub async fn cancel(
    State(st): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
    Form(form): Form<CancelForm>,
) -> Response {
    if !crate::session::csrf_ok(&visit, &form.csrf) {
        return crate::view::message_page(
            &visit,
            axum::http::StatusCode::FORBIDDEN,
            "The form expired: reload the job's page and try again.",
        );
    }
    let body = RawBody(Bytes::from_static(br#"{"action": "cancel"}"#));
    match jobs::action(State(st), visit.caller.clone(), Path(id.clone()), body).await {
        Ok(_) => match job_id_param(&id) {
            Ok(id) => Redirect::to(&format!("/jobs/{id}")).into_response(),
            Err(e) => error_page(&visit, e),
        },
        Err(e) => error_page(&visit, e),
    }
}
