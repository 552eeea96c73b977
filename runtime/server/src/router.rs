//! [`router`]: every route in one place — Testflinger's v1 API first (the same paths, methods
//! and status codes), then phasebox's additions. Every route is described in
//! [`crate::openapi`] (a test holds the two together).

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use crate::handlers::{admin, agents, ext, jobs, results};
use crate::state::AppState;

/// Multipart framing allowance on top of a blob's own size limit.
const MULTIPART_OVERHEAD: u64 = 1 << 20;

/// The HTTP API.
pub fn router(state: AppState) -> Router {
    let cfg = &state.config;
    // Testflinger refuses results of 16 MiB *or more*.
    let result_limit = DefaultBodyLimit::max(cfg.max_result_bytes.saturating_sub(1));
    let blob_limit =
        |n: u64| DefaultBodyLimit::max(usize::try_from(n.saturating_add(MULTIPART_OVERHEAD)).unwrap_or(usize::MAX));
    let attachments_limit = blob_limit(cfg.max_attachment_bytes);
    let artifact_limit = blob_limit(cfg.max_artifact_bytes);
    let spec = crate::openapi::Spec::new(cfg);

    let api = Router::new()
        // ---------------------------------------------------------------- Testflinger v1
        .route("/v1", get(ext::root))
        .route("/v1/", get(ext::root))
        .route("/v1/oauth2/token", post(admin::token))
        .route("/v1/oauth2/refresh", post(admin::refresh))
        .route("/v1/oauth2/revoke", post(admin::revoke))
        .route("/v1/job", post(jobs::submit).get(jobs::claim))
        .route("/v1/job/search", get(jobs::search))
        .route("/v1/job/{job_id}", get(jobs::get))
        .route("/v1/job/{job_id}/position", get(jobs::position))
        .route("/v1/job/{job_id}/action", post(jobs::action))
        .route(
            "/v1/job/{job_id}/attachments",
            get(jobs::get_attachments).post(jobs::post_attachments).layer(attachments_limit),
        )
        .route("/v1/job/{job_id}/events", post(jobs::events))
        .route("/v1/result/{job_id}", post(results::post).get(results::get).layer(result_limit))
        .route(
            "/v1/result/{job_id}/artifact",
            post(results::post_artifact).get(results::get_artifact).layer(artifact_limit),
        )
        .route("/v1/result/{job_id}/log/{log_type}", post(results::post_log).get(results::get_log))
        .route("/v1/agents/queues", get(agents::get_queues).post(agents::post_queues))
        .route("/v1/agents/images", post(agents::post_images))
        .route("/v1/agents/images/{queue}", get(agents::get_images))
        .route("/v1/agents/data", get(agents::list))
        .route("/v1/agents/data/{agent}", get(agents::get).post(agents::post))
        .route("/v1/agents/provision_logs/{agent}", post(agents::provision_log))
        .route("/v1/queues/wait_times", get(agents::wait_times))
        .route("/v1/queues/{queue}/agents", get(agents::queue_agents))
        .route("/v1/queues/{queue}/jobs", get(agents::queue_jobs))
        .route("/v1/restricted-queues", get(admin::list_restricted))
        .route(
            "/v1/restricted-queues/{queue}",
            get(admin::get_restricted).post(admin::add_restricted).delete(admin::delete_restricted),
        )
        .route("/v1/client-permissions", get(admin::list_clients))
        .route(
            "/v1/client-permissions/{client_id}",
            get(admin::get_client).put(admin::put_client).delete(admin::delete_client),
        )
        .route("/v1/secrets/{client_id}/{*path}", put(admin::put_secret).delete(admin::delete_secret))
        // `/oidc/*` is deliberately absent: without OIDC Testflinger answers 404 there, and the
        // CLI relies on that to fall back to anonymous access.
        // ------------------------------------------------------------ phasebox additions
        .route("/phasebox/v1/openapi.json", get(move || std::future::ready(spec.response())))
        .route("/phasebox/v1/job/{job_id}/events", get(ext::job_events))
        .route("/phasebox/v1/plugins", post(ext::post_plugin))
        .route("/phasebox/v1/plugins/{sha256}", get(ext::get_plugin).put(ext::put_plugin));
    // With `metrics_listen`, `/metrics` is served there only ([`metrics_router`]).
    let api = if cfg.metrics_listen.is_none() { api.route("/metrics", get(ext::metrics)) } else { api };
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.max_json_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// `/metrics` alone, for the separate listener of `metrics_listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ext::metrics_unauthenticated))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    (StatusCode::NOT_FOUND, format!("Not found: {}\n", uri.path())).into_response()
}

async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(json!({ "message": "Method Not Allowed", "detail": {} })))
        .into_response()
}

/// Counts and logs every request (method, route template, status, time); never bodies.
async fn track(State(st): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route =
        request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    st.metrics.request(method.as_str(), &route, status);
    let micros = start.elapsed().as_micros() as u64;
    if status >= 500 {
        tracing::warn!(%method, %route, status, micros, "request failed");
    } else {
        tracing::debug!(%method, %route, status, micros, "request");
    }
    response
}
