//! `/v1/result…`: results, log fragments and artifacts.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{
    FieldErrors, PHASES, RawBody, check_claiming_agent, check_owner, check_reader, claimed_job, job_id_param,
    json_object, no_content, ok_text, query_pairs,
};
use crate::auth::{self, Caller};
use crate::blobs::BlobKind;
use crate::clock::{now_micros, parse_iso};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{LogFragment, LogQuery, ResultPatch};

/// `POST /v1/result/<id>` (agent; the one that claimed the job): `status`, `device_info`,
/// `job_state` only. Bodies of `max_result_bytes` or more are refused with 413 by the route's
/// body limit.
pub async fn post(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENT)?;
    let id = job_id_param(&id)?;
    // An unknown job is a silent no-op, as in Testflinger; a known one takes results from the
    // agent that claimed it only. A valid post is applied on that condition in one write; the
    // job is read only to answer one that was not applied or not valid (a refusal by owner
    // comes before one by content, as it always has).
    let mut patch = result_patch(&body);
    if let Ok(patch) = &mut patch {
        patch.claimed_by = Some(principal.permissions.as_ref().map(|p| p.agent_names.clone()).unwrap_or_default());
        if st.store.update_result(&id, patch, now_micros()).await? {
            st.hub.job_changed(&id);
            return Ok(ok_text());
        }
    }
    let Some(job) = st.store.get_job(&id).await? else { return Ok(ok_text()) };
    check_claiming_agent(&principal, &job)?;
    patch?;
    Ok(ok_text())
}

/// The body of `POST /v1/result/<id>`, validated.
fn result_patch(body: &bytes::Bytes) -> ApiResult<ResultPatch> {
    let map = json_object(body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["status", "device_info", "job_state"]);
    let mut patch = ResultPatch::default();
    match map.get("status") {
        None => {}
        Some(Value::Object(s)) => {
            let mut status = Map::new();
            for (phase, code) in s {
                if !PHASES.contains(&phase.as_str()) {
                    errors.add("status", format!("Key {phase:?}: Must be one of: {}.", PHASES.join(", ")));
                    continue;
                }
                match super::as_int(code) {
                    Ok(n) => {
                        status.insert(phase.clone(), Value::from(n));
                    }
                    Err(m) => errors.add("status", format!("Value of {phase:?}: {m}")),
                }
            }
            patch.status = Some(Value::Object(status));
        }
        Some(_) => errors.add("status", "Not a valid mapping type."),
    }
    match map.get("device_info") {
        None => {}
        Some(v @ Value::Object(_)) => patch.device_info = Some(v.clone()),
        Some(_) => errors.add("device_info", "Not a valid mapping type."),
    }
    match map.get("job_state") {
        None => {}
        Some(Value::String(s)) => patch.job_state = Some(s.clone()),
        Some(_) => errors.add("job_state", "Not a valid string."),
    }
    errors.check("json")?;
    Ok(patch)
}

/// `GET /v1/result/<id>` (any role; the job's owner or the agent that claimed it):
/// `job_state`, `<phase>_status`, `<phase>_output`, `<phase>_serial`, `device_info`; 204 for an
/// unknown job.
pub async fn get(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let principal = caller.require(auth::ANY)?;
    let id = job_id_param(&id)?;
    let Some(job) = st.store.get_job(&id).await? else { return Ok(no_content()) };
    check_reader(&principal, &job)?;
    let result: Map<String, Value> = serde_json::from_str(&job.result_data).map_err(crate::store::StoreError::from)?;
    let mut out = Map::new();
    out.insert("job_state".into(), Value::String(job.state));
    if let Some(Value::Object(status)) = result.get("status") {
        for (phase, code) in status {
            out.insert(format!("{phase}_status"), code.clone());
        }
    }
    if let Some(info) = result.get("device_info") {
        out.insert("device_info".into(), info.clone());
    }
    for (log_type, phase, data) in st.store.all_logs(&id).await? {
        let suffix = if log_type == "serial" { "serial" } else { "output" };
        let key = format!("{phase}_{suffix}");
        match out.get_mut(&key) {
            Some(Value::String(s)) => s.push_str(&data),
            _ => {
                out.insert(key, Value::String(data));
            }
        }
    }
    Ok(Json(Value::Object(out)).into_response())
}

fn log_type(t: &str) -> ApiResult<&'static str> {
    match t {
        "output" => Ok("output"),
        "serial" => Ok("serial"),
        _ => Err(ApiError::NotFound(format!("Unknown log type {t:?}: expected output or serial"))),
    }
}

/// `POST /v1/result/<id>/log/<output|serial>` (agent; the one that claimed the job): one
/// fragment.
pub async fn post_log(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, kind)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENT)?;
    let id = job_id_param(&id)?;
    let kind = log_type(&kind)?;
    claimed_job(&st, &principal, &id).await?;
    let map = json_object(&body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["fragment_number", "timestamp", "phase", "log_data"]);
    errors.required(&map, &["fragment_number", "timestamp", "phase", "log_data"]);
    let fragment_number = map.get("fragment_number").and_then(|v| match super::as_int(v) {
        Ok(n) => Some(n),
        Err(m) => {
            errors.add("fragment_number", m);
            None
        }
    });
    let timestamp = map.get("timestamp").and_then(|v| match v.as_str().and_then(parse_iso) {
        Some(t) => Some(t),
        None => {
            errors.add("timestamp", "Not a valid datetime.");
            None
        }
    });
    let phase = map.get("phase").and_then(|v| match v.as_str() {
        Some(p) if PHASES.contains(&p) => Some(p.to_owned()),
        _ => {
            errors.add("phase", format!("Must be one of: {}.", PHASES.join(", ")));
            None
        }
    });
    let log_data = map.get("log_data").and_then(|v| match v.as_str() {
        Some(s) => Some(s.to_owned()),
        None => {
            errors.add("log_data", "Not a valid string.");
            None
        }
    });
    errors.check("json")?;
    let (Some(fragment_number), Some(timestamp), Some(phase), Some(log_data)) =
        (fragment_number, timestamp, phase, log_data)
    else {
        return Err(ApiError::Internal("validated log fragment lacks a field".into()));
    };
    let fragment =
        LogFragment { job_id: id.clone(), log_type: kind.to_owned(), phase, fragment_number, timestamp, log_data };
    st.store.append_log(&fragment, now_micros()).await?;
    st.hub.job_changed(&id);
    Ok(ok_text())
}

/// `GET /v1/result/<id>/log/<output|serial>?start_fragment=&start_timestamp=&phase=`
/// (contributor, manager, admin; the job's owner): per phase `{last_fragment_number,
/// log_data}` (empty for an unknown job).
pub async fn get_log(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, kind)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let principal = caller.require(auth::USERS)?;
    let id = job_id_param(&id)?;
    let kind = log_type(&kind)?;
    if let Some(job) = st.store.get_job(&id).await? {
        check_owner(&principal, &job)?;
    }
    let pairs = query_pairs(q.as_deref());
    let mut errors = Map::new();
    let mut start_fragment = 0;
    let mut start_timestamp = None;
    let mut phase = None;
    for (k, v) in &pairs {
        match k.as_str() {
            "start_fragment" => match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => start_fragment = n,
                Ok(_) => {
                    errors.insert(k.clone(), json!(["Must be greater than or equal to 0."]));
                }
                Err(_) => {
                    errors.insert(k.clone(), json!(["Not a valid integer."]));
                }
            },
            "start_timestamp" => match parse_iso(v) {
                Some(t) => start_timestamp = Some(t),
                None => {
                    errors.insert(k.clone(), json!(["Not a valid datetime."]));
                }
            },
            "phase" if PHASES.contains(&v.as_str()) => phase = Some(v.clone()),
            "phase" => {
                errors.insert(k.clone(), json!([format!("Must be one of: {}.", PHASES.join(", "))]));
            }
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::BadRequestJson(Value::Object(errors)));
    }
    let rows = st
        .store
        .query_logs(&LogQuery { job_id: &id, log_type: kind, start_fragment, start_timestamp, phase: phase.as_deref() })
        .await?;
    let phases: Vec<&str> = match &phase {
        Some(p) => vec![p.as_str()],
        None => PHASES.to_vec(),
    };
    let mut per_phase = Map::new();
    for p in &phases {
        let mut last = -1i64;
        let mut data = String::new();
        for (rp, n, text) in rows.iter().filter(|(rp, _, _)| rp == p) {
            let _ = rp;
            last = last.max(*n);
            data.push_str(text);
        }
        per_phase.insert((*p).to_owned(), json!({ "last_fragment_number": last, "log_data": data }));
    }
    Ok(Json(json!({ kind: per_phase })).into_response())
}

/// `POST /v1/result/<id>/artifact` (agent; the one that claimed the job): multipart `file`,
/// replacing any earlier one.
pub async fn post_artifact(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let principal = caller.require(auth::AGENT)?;
    let id = job_id_param(&id)?;
    claimed_job(&st, &principal, &id).await?;
    let limit = st.config.max_artifact_bytes;
    let writer = super::receive_file(multipart, &st.blobs, limit).await?;
    let size = writer.finish(&st.blobs, BlobKind::Artifacts, &id).await.map_err(|e| super::blob_error(e, limit))?;
    let data = json!({ "bytes": size }).to_string();
    st.store.append_event(&id, "artifact", &data, now_micros()).await?;
    st.hub.job_changed(&id);
    tracing::info!(job_id = %id, bytes = size, "artifact stored");
    Ok(ok_text())
}

/// `GET /v1/result/<id>/artifact` (contributor, manager, admin; the job's owner):
/// `artifact.tar.gz`, 204 when none.
pub async fn get_artifact(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let principal = caller.require(auth::USERS)?;
    let id = job_id_param(&id)?;
    if let Some(job) = st.store.get_job(&id).await? {
        check_owner(&principal, &job)?;
    }
    super::send_blob(&st.blobs, BlobKind::Artifacts, &id, "application/gzip", Some("artifact.tar.gz")).await
}
