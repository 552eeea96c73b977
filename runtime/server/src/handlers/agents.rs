//! `/v1/agents…` and `/v1/queues…`: agent registration and state, queue descriptions and
//! images, provision logs, queue listings and wait times.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::jobs::agent_queues;
use super::{FieldErrors, RawBody, json_object, no_content, ok_text, query_all, query_pairs};
use crate::auth::{self, Caller, Principal, Role};
use crate::clock::{iso_z, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::Store;

/// Restricted queue → owners (clients whose `allowed_queues` list it), for restricted queues.
/// Public for the web interface, which shows the same owners as `GET /v1/restricted-queues`.
pub async fn owners(store: &Store) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let mut map: BTreeMap<String, Vec<String>> =
        store.restricted_queues().await?.into_iter().map(|q| (q, Vec::new())).collect();
    for client in store.list_clients().await? {
        for q in &client.allowed_queues {
            if let Some(list) = map.get_mut(q) {
                list.push(client.client_id.clone());
            }
        }
    }
    Ok(map)
}

/// An agent document as `GET /v1/agents/data` shows it: all fields but `log`, `updated_at`
/// as ISO text, plus `restricted_to` (`{queue: owners}` for its restricted queues with owners).
fn agent_out(mut doc: Map<String, Value>, updated_at: i64, owners: &BTreeMap<String, Vec<String>>) -> Value {
    doc.remove("log");
    doc.insert("updated_at".into(), Value::String(iso_z(updated_at)));
    let mut restricted = Map::new();
    for q in agent_queues(&doc) {
        if let Some(list) = owners.get(&q)
            && !list.is_empty()
        {
            restricted.insert(q, json!(list));
        }
    }
    doc.insert("restricted_to".into(), Value::Object(restricted));
    Value::Object(doc)
}

/// `GET /v1/agents/queues` (contributor, manager, admin): `{queue: description}`.
pub async fn get_queues(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(auth::USERS)?;
    let map: Map<String, Value> =
        st.store.list_queues().await?.into_iter().map(|(q, d)| (q, Value::String(d))).collect();
    Ok(Json(Value::Object(map)))
}

/// `POST /v1/agents/queues` (agent, manager, admin): `{queue: description}`.
pub async fn post_queues(State(st): State<AppState>, caller: Caller, RawBody(body): RawBody) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENTS_AND_MANAGERS)?;
    let map = json_object(&body)?;
    // An agent describes only the queues it is bound to.
    if principal.role == Role::Agent {
        principal.require_agent_queues(&map.keys().cloned().collect::<Vec<_>>())?;
    }
    let mut errors = FieldErrors::default();
    for (k, v) in &map {
        if k.is_empty() {
            errors.add(k, "Key: Shorter than minimum length 1.");
        }
        if !v.is_string() {
            errors.add(k, "Value: Not a valid string.");
        }
    }
    errors.check("json")?;
    st.store.upsert_queues(&map, now_micros()).await?;
    Ok(ok_text())
}

/// `GET /v1/agents/images/<queue>` (contributor, manager, admin): `{image: provision data}`.
pub async fn get_images(
    State(st): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(auth::USERS)?;
    Ok(Json(Value::Object(st.store.get_images(&queue).await?)))
}

/// `POST /v1/agents/images` (agent, manager, admin): `{queue: {image: provision data}}`;
/// each queue's map is replaced.
pub async fn post_images(State(st): State<AppState>, caller: Caller, RawBody(body): RawBody) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENTS_AND_MANAGERS)?;
    let map = json_object(&body)?;
    // An agent replaces only the images of the queues it is bound to.
    if principal.role == Role::Agent {
        principal.require_agent_queues(&map.keys().cloned().collect::<Vec<_>>())?;
    }
    let mut errors = FieldErrors::default();
    for (queue, images) in &map {
        let Some(images) = images.as_object() else {
            errors.add(queue, "Value: Not a valid mapping type.");
            continue;
        };
        for (name, value) in images {
            if name.is_empty() || name.starts_with('$') || name.contains('.') || name.contains('\0') {
                errors.add(queue, format!("Invalid image name {name:?}."));
            }
            if !value.is_string() {
                errors.add(queue, format!("Image {name:?}: Not a valid string."));
            }
        }
    }
    errors.check("json")?;
    st.store.set_images(&map).await?;
    Ok(ok_text())
}

/// `GET /v1/agents/data` (contributor, manager, admin): every agent.
pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let principal = caller.require(auth::USERS)?;
    let owners = owners(&st.store).await?;
    let mut out = Vec::new();
    for (doc, at) in st.store.list_agents().await? {
        out.push(agent_out(hide_anonymous_job(&st, &principal, doc).await?, at, &owners));
    }
    Ok(Json(Value::Array(out)))
}

/// An agent's document as `principal` may see it: the id of the job it runs is the only
/// credential of a job submitted without credentials, so it is shown to admins only (`null`
/// for others), as in job listings ([`super::listed_job_id`]). Public for the web interface.
pub async fn hide_anonymous_job(
    st: &AppState,
    principal: &Principal,
    mut doc: Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    if principal.role == Role::Admin {
        return Ok(doc);
    }
    if let Some(id) = doc.get("job_id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        let anonymous = match st.store.get_job(id).await? {
            Some(job) => job.submitter.is_none(),
            None => false,
        };
        if anonymous {
            doc.insert("job_id".into(), Value::Null);
        }
    }
    Ok(doc)
}

/// `GET /v1/agents/data/<name>` (any role): one agent; 404 `{}` when unknown.
pub async fn get(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let principal = caller.require(auth::ANY)?;
    let Some((doc, at)) = st.store.get_agent(&name).await? else {
        return Ok((StatusCode::NOT_FOUND, Json(json!({}))).into_response());
    };
    let owners = owners(&st.store).await?;
    Ok(Json(agent_out(hide_anonymous_job(&st, &principal, doc).await?, at, &owners)).into_response())
}

const AGENT_STRINGS: [&str; 6] = ["identifier", "job_id", "location", "provision_type", "state", "comment"];

/// `POST /v1/agents/data/<name>` (agent bound to `name`, manager, admin): set fields (upsert),
/// append `log` lines (last 100 kept); answers `{"status": "OK"}` with the `agent_name` cookie.
pub async fn post(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENTS_AND_MANAGERS)?;
    principal.require_agent_name(&name)?;
    let map = json_object(&body)?;
    let mut errors = FieldErrors::default();
    let mut allowed: Vec<&str> = AGENT_STRINGS.to_vec();
    allowed.extend(["queues", "log"]);
    errors.unknown(&map, &allowed);
    let mut fields = Map::new();
    let mut log = Vec::new();
    for (k, v) in &map {
        match k.as_str() {
            "queues" | "log" => {
                match v.as_array().map(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
                {
                    Some(Some(items)) if k == "log" => log = items,
                    Some(Some(items)) => {
                        fields.insert(k.clone(), json!(items));
                    }
                    _ => errors.add(k, "Not a valid list of strings."),
                }
            }
            _ if AGENT_STRINGS.contains(&k.as_str()) => match v {
                Value::String(_) => {
                    fields.insert(k.clone(), v.clone());
                }
                _ => errors.add(k, "Not a valid string."),
            },
            _ => {}
        }
    }
    errors.check("json")?;
    st.store.upsert_agent(&name, &fields, &log, now_micros()).await?;
    st.hub.agent_changed(&name);
    let mut response = Json(json!({ "status": "OK" })).into_response();
    let cookie = format!("agent_name={name}; HttpOnly; Path=/; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `POST /v1/agents/provision_logs/<name>` (agent bound to `name`): `{job_id, exit_code, detail?}`.
pub async fn provision_log(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENT)?;
    principal.require_agent_name(&name)?;
    let map = json_object(&body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["job_id", "exit_code", "detail"]);
    errors.required(&map, &["job_id", "exit_code"]);
    let mut entry = Map::new();
    for (k, v) in &map {
        match k.as_str() {
            "job_id" | "detail" => match v {
                Value::String(_) => {
                    entry.insert(k.clone(), v.clone());
                }
                _ => errors.add(k, "Not a valid string."),
            },
            "exit_code" => match super::as_int(v) {
                Ok(n) => {
                    entry.insert(k.clone(), Value::from(n));
                }
                Err(m) => errors.add(k, m),
            },
            _ => {}
        }
    }
    errors.check("json")?;
    if st.store.provision_log(&name, &entry, now_micros()).await? {
        Ok(ok_text())
    } else {
        Err(ApiError::Text(StatusCode::NOT_FOUND, "Agent not found\n".into()))
    }
}

/// `GET /v1/queues/<queue>/agents` (contributor, manager, admin): agents listing the queue;
/// 404 when none does.
pub async fn queue_agents(
    State(st): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(auth::USERS)?;
    let owners = owners(&st.store).await?;
    let agents: Vec<Value> = st
        .store
        .list_agents()
        .await?
        .into_iter()
        .filter(|(doc, _)| agent_queues(doc).contains(&queue))
        .map(|(doc, at)| {
            let full = agent_out(doc, at, &owners);
            let mut out = Map::new();
            for key in ["name", "state", "queues", "location", "provision_type", "job_id", "comment", "restricted_to"] {
                if let Some(v) = full.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect();
    if agents.is_empty() {
        return Err(ApiError::NotFound(format!("Queue '{queue}' does not exist.")));
    }
    Ok(Json(Value::Array(agents)))
}

/// `GET /v1/queues/<queue>/jobs` (contributor, manager, admin): its jobs, any state (`job_id`
/// null for anonymous jobs, see [`super::listed_job_id`]); 204 when none.
pub async fn queue_jobs(State(st): State<AppState>, caller: Caller, Path(queue): Path<String>) -> ApiResult<Response> {
    let principal = caller.require(auth::USERS)?;
    let jobs = st.store.queue_jobs(&queue).await?;
    if jobs.is_empty() {
        return Ok(no_content());
    }
    let list: Vec<Value> = jobs
        .into_iter()
        .map(|j| {
            json!({ "job_id": super::listed_job_id(&principal, &j), "created_at": iso_z(j.created_at),
                    "job_state": j.state, "job_queue": j.queue })
        })
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

/// Percentile with linear interpolation between closest ranks (numpy's default).
fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] as f64 + (sorted[hi] - sorted[lo]) as f64 * frac
}

/// `GET /v1/queues/wait_times?queue=…` (contributor, manager, admin): per queue, the 5th, 10th,
/// 50th, 90th and 95th percentile of the seconds jobs waited before being claimed.
pub async fn wait_times(State(st): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    caller.require(auth::USERS)?;
    let queues = query_all(&query_pairs(q.as_deref()), "queue");
    let mut by_queue: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (queue, secs) in st.store.wait_times(&queues).await? {
        by_queue.entry(queue).or_default().push(secs);
    }
    let mut out = Map::new();
    for (queue, mut v) in by_queue {
        v.sort_unstable();
        let mut p = Map::new();
        for pct in [5u32, 10, 50, 90, 95] {
            p.insert(pct.to_string(), json!(percentile(&v, f64::from(pct))));
        }
        out.insert(queue, Value::Object(p));
    }
    Ok(Json(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_interpolate() {
        let v = [1, 2, 3, 4, 5];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 5.0), 1.2);
        assert_eq!(percentile(&[7], 95.0), 7.0);
    }
}
