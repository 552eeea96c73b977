//! # phasebox-web
//!
//! The lab's web interface, served by `phasebox server` beside the API on the same listener:
//! jobs, agents and queues as server-rendered HTML ([minijinja] templates embedded in the
//! binary, auto-escaped), readable without JavaScript. Two small scripts enhance the pages:
//! one shows times in the viewer's zone, one follows a running job's log over the server's
//! event stream (`EventSource`).
//!
//! * [`router`] lists the pages. The CLI merges it into the server's with
//!   [`phasebox_server::launch_with_routes`].
//! * Every page asks the server's own checks what the caller may see: the same role checks as
//!   the JSON API ([`phasebox_server::auth::Caller::require`]), the same owner check
//!   ([`phasebox_server::handlers::check_owner`]) and the same listing rules (anonymous jobs'
//!   ids are hidden, [`phasebox_server::handlers::listed_job_id`]). An anonymous visitor sees
//!   what an anonymous API caller sees.
//! * [`session`]: a login form checks client credentials exactly as `POST /v1/oauth2/token`
//!   does and keeps an access token in an `HttpOnly`, `SameSite=Strict` cookie; each request
//!   presents it to the server's extractor as a bearer token. Forms that change something carry
//!   a CSRF token.
//! * Secret values never reach a page: job definitions show `test_data.secrets` as the names
//!   and store paths the job was submitted with, which is all the server keeps in a job.

#![deny(missing_docs)]

mod pages;
pub mod session;
mod templates;
mod view;

use axum::Router;
use axum::routing::{get, post};
use phasebox_server::AppState;

/// The web interface's routes, with their state. Paths: `/` (the jobs list), `/jobs`,
/// `/jobs/<id>` (with `/cancel`, `/events`, `/artifact`), `/agents`, `/agents/<name>`,
/// `/queues`, `/queues/<name>`, `/login`, `/logout` and `/ui/assets/*`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::jobs::list))
        .route("/jobs", get(pages::jobs::list))
        .route("/jobs/{job_id}", get(pages::jobs::detail))
        .route("/jobs/{job_id}/cancel", post(pages::jobs::cancel))
        .route("/jobs/{job_id}/events", get(phasebox_server::handlers::ext::job_events))
        .route("/jobs/{job_id}/artifact", get(phasebox_server::handlers::results::get_artifact))
        .route("/agents", get(pages::agents::list))
        .route("/agents/{name}", get(pages::agents::detail))
        .route("/queues", get(pages::queues::list))
        .route("/queues/{name}", get(pages::queues::detail))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/ui/assets/{file}", get(pages::asset))
        .layer(axum::middleware::from_fn_with_state(state.clone(), session::present_session))
        .with_state(state)
}
