//! The root, `/metrics`, and phasebox's additive endpoints under `/phasebox/v1`: a job's
//! event stream (server-sent events with resume) and the plugin registry (by sha256).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use serde_json::json;

use super::{job_id_param, query_all, query_one, query_pairs};
use crate::auth::{self, Caller};
use crate::blobs::BlobKind;
use crate::error::{ApiError, ApiResult};
use crate::hub::FALLBACK_POLL;
use crate::state::AppState;
use crate::store::TERMINAL_STATES;

/// `GET /v1` and `/v1/`: the server banner (the CLI and agent check only the prefix).
pub async fn root() -> &'static str {
    concat!("Testflinger Server v", env!("CARGO_PKG_VERSION"), " (phasebox)")
}

/// `GET /metrics` on the API listener (any authenticated client; anonymous callers are
/// refused even with `anonymous_access`): Prometheus text. A scraper logs in as a client —
/// Prometheus' `oauth2` client-credentials block works against `/v1/oauth2/token`.
pub async fn metrics(State(st): State<AppState>, caller: Caller) -> ApiResult<Response> {
    if caller.require(auth::ANY)?.permissions.is_none() {
        return Err(ApiError::Unauthorized("Authentication is required for /metrics".into()));
    }
    metrics_text(&st).await
}

/// `GET /metrics` on the separate `metrics_listen` listener (no authentication: the operator
/// chose who can reach that address).
pub async fn metrics_unauthenticated(State(st): State<AppState>) -> ApiResult<Response> {
    metrics_text(&st).await
}

async fn metrics_text(st: &AppState) -> ApiResult<Response> {
    let text = st.metrics.render(&st.store).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

const BATCH: i64 = 256;

/// The kinds of event a job's stream may carry (besides the final `end`).
const EVENT_KINDS: [&str; 8] = ["submitted", "claimed", "state", "result", "log", "attachments", "artifact", "agent"];

/// `GET /phasebox/v1/job/<id>/events[?after=N][&kind=K…]` (any role; the job's owner or the
/// agent that claimed it, see [`super::check_reader`]): the job's events as
/// server-sent events — `id` is the sequence number, `event` the kind (`submitted`, `claimed`,
/// `state`, `result`, `log`, `attachments`, `artifact`, `agent`), `data` JSON. Resume with
/// `after=N` or the `Last-Event-ID` header. `kind` (repeated, or comma-separated) sends only
/// those kinds — an agent watching for a cancel asks for `state` and is not sent its own log
/// back. The stream ends once the job is in a terminal state and every event has been sent,
/// with `end` whatever the filter.
pub async fn job_events(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let principal = caller.require(auth::ANY)?;
    let id = job_id_param(&id)?;
    let Some(job) = st.store.get_job(&id).await? else {
        return Err(ApiError::NotFound(format!("Job {id} not found")));
    };
    super::check_reader(&principal, &job)?;
    let pairs = query_pairs(q.as_deref());
    let after = query_one(&pairs, "after")
        .or_else(|| headers.get("last-event-id").and_then(|v| v.to_str().ok()))
        .map(|s| {
            s.trim().parse::<i64>().map_err(|_| ApiError::BadRequest("after must be an event sequence number".into()))
        })
        .transpose()?
        .unwrap_or(0);
    let mut kinds = Vec::new();
    for kind in query_all(&pairs, "kind").iter().flat_map(|v| v.split(',')).map(str::trim) {
        if !EVENT_KINDS.contains(&kind) {
            return Err(ApiError::BadRequest(format!(
                "unknown event kind {kind:?} (one of: {})",
                EVENT_KINDS.join(", ")
            )));
        }
        kinds.push(kind.to_owned());
    }
    let stream = event_stream(st, id, after, kinds);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

struct Cursor {
    st: AppState,
    job_id: String,
    after: i64,
    /// The kinds to send; all when empty.
    kinds: Vec<String>,
    pending: std::collections::VecDeque<Event>,
    done: bool,
}

fn event_stream(
    st: AppState,
    job_id: String,
    after: i64,
    kinds: Vec<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let cursor = Cursor { st, job_id, after, kinds, pending: Default::default(), done: false };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                return Some((Ok(e), c));
            }
            if c.done {
                return None;
            }
            let watch = c.st.hub.watch_job(&c.job_id);
            let woken = watch.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // The state is read before the events: every event committed up to a terminal
            // state is then seen by the read that follows.
            let state = match c.st.store.get_job(&c.job_id).await {
                Ok(Some(job)) => job.state,
                _ => return None,
            };
            let events = match c.st.store.events_after(&c.job_id, c.after, BATCH).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(job_id = %c.job_id, error = %e, "event stream read failed");
                    return None;
                }
            };
            if !events.is_empty() {
                for e in events {
                    c.after = e.id;
                    if c.kinds.is_empty() || c.kinds.contains(&e.kind) {
                        c.pending.push_back(Event::default().id(e.id.to_string()).event(e.kind).data(e.data));
                    }
                }
                continue;
            }
            if TERMINAL_STATES.contains(&state.as_str()) {
                c.done = true;
                c.pending.push_back(Event::default().event("end").data(json!({ "job_state": state }).to_string()));
                continue;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(FALLBACK_POLL) => {}
                _ = c.st.shutdown.cancelled() => return None,
            }
        }
    })
}

fn valid_sha256(s: &str) -> ApiResult<String> {
    let lower = s.to_ascii_lowercase();
    if lower.len() == 64 && lower.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(ApiError::BadRequest("expected a sha256 as 64 hex digits".into()))
    }
}

async fn store_plugin(st: &AppState, body: Body, expected: Option<&str>) -> ApiResult<(String, u64)> {
    let limit = st.config.max_plugin_bytes;
    let mut writer = st.blobs.writer(limit).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| {
            if e.to_string().contains("length limit") {
                ApiError::PayloadTooLarge(format!("Payload too large (limit {limit} bytes)"))
            } else {
                ApiError::BadRequest(format!("cannot read body: {e}"))
            }
        })?;
        writer.write(&chunk).await.map_err(|e| super::blob_error(e, limit))?;
    }
    if writer.size() == 0 {
        return Err(ApiError::BadRequest("empty plugin".into()));
    }
    let sha = writer.sha256();
    if let Some(expected) = expected
        && expected != sha
    {
        return Err(ApiError::Unprocessable(format!("body has sha256 {sha}, not {expected}")));
    }
    let written = writer.flushed_path().await.map_err(|e| ApiError::Internal(e.to_string()))?.to_owned();
    validate_component(written).await?;
    if !st.blobs.exists(BlobKind::Plugins, &sha).await {
        check_plugin_quota(st, writer.size()).await?;
    }
    let size = writer.finish(&st.blobs, BlobKind::Plugins, &sha).await.map_err(|e| super::blob_error(e, limit))?;
    tracing::info!(sha256 = %sha, bytes = size, "plugin stored");
    Ok((sha, size))
}

/// Refuses (422) anything but a valid WebAssembly component: the registry serves what agents
/// run, and an agent's compile of a malformed module is work an uploader should not cause.
async fn validate_component(path: std::path::PathBuf) -> ApiResult<()> {
    let verdict = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read the upload back: {e}"))?;
        if !wasmparser::Parser::is_component(&bytes) {
            return Err(if wasmparser::Parser::is_core_wasm(&bytes) {
                "a core WebAssembly module, not a component (build for wasm32-wasip2)".to_owned()
            } else {
                "not a WebAssembly component (no component header)".to_owned()
            });
        }
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&bytes)
            .map(drop)
            .map_err(|e| format!("invalid WebAssembly component: {e}"))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    verdict.map_err(|m| ApiError::Unprocessable(format!("Plugin refused: {m}")))
}

/// Refuses (413) a new plugin that would take the registry past `max_plugins` components or
/// `max_plugin_store_bytes` bytes.
async fn check_plugin_quota(st: &AppState, size: u64) -> ApiResult<()> {
    let (count, bytes) = st.blobs.usage(BlobKind::Plugins).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let (max_count, max_bytes) = (st.config.max_plugins, st.config.max_plugin_store_bytes);
    if count >= max_count {
        return Err(ApiError::PayloadTooLarge(format!(
            "The plugin registry holds {count} plugins, its limit (max_plugins = {max_count})"
        )));
    }
    if bytes.saturating_add(size) > max_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "The plugin registry holds {bytes} bytes; {size} more would pass its limit (max_plugin_store_bytes = \
             {max_bytes})"
        )));
    }
    Ok(())
}

/// `POST /phasebox/v1/plugins` (admin): the body is a WebAssembly component (validated; 422
/// otherwise), within the registry's quota (413 otherwise); answers `{"sha256", "size"}`.
/// Content-addressed: agents still decide by policy which hashes run.
pub async fn post_plugin(State(st): State<AppState>, caller: Caller, body: Body) -> ApiResult<Json<serde_json::Value>> {
    caller.require(auth::ADMIN)?;
    let (sha, size) = store_plugin(&st, body, None).await?;
    Ok(Json(json!({ "sha256": sha, "size": size })))
}

/// `PUT /phasebox/v1/plugins/<sha256>` (admin): as POST, but the body must hash to the path's
/// sha256 (422 otherwise, nothing stored).
pub async fn put_plugin(
    State(st): State<AppState>,
    caller: Caller,
    Path(sha): Path<String>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(auth::ADMIN)?;
    let expected = valid_sha256(&sha)?;
    let (sha, size) = store_plugin(&st, body, Some(&expected)).await?;
    Ok(Json(json!({ "sha256": sha, "size": size })))
}

/// `GET /phasebox/v1/plugins/<sha256>` (any role): the component bytes; 404 when unknown.
pub async fn get_plugin(State(st): State<AppState>, caller: Caller, Path(sha): Path<String>) -> ApiResult<Response> {
    caller.require(auth::ANY)?;
    let sha = valid_sha256(&sha)?;
    let response = super::send_blob(&st.blobs, BlobKind::Plugins, &sha, "application/wasm", None).await?;
    if response.status() == StatusCode::NO_CONTENT {
        return Err(ApiError::NotFound(format!("No plugin with sha256 {sha}")));
    }
    Ok(response)
}
