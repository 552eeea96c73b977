//! What every page shares: who is visiting ([`Visit`]), rendering a template inside the
//! layout, error pages, and the formatting of times and durations.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use phasebox_server::auth::{self, Caller};
use phasebox_server::{ApiError, AppState};
use serde_json::{Value, json};

use crate::session::CsrfToken;

/// The visitor: the server's [`Caller`] (from the session cookie, see
/// [`crate::session::present_session`]) and the request's CSRF token.
pub struct Visit {
    /// Who is calling, as the API sees it.
    pub caller: Caller,
    /// The CSRF token forms carry.
    pub csrf: String,
    /// The path and query of the page, for the login link's way back.
    pub path: String,
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let csrf = parts.extensions.get::<CsrfToken>().map(|c| c.0.clone()).unwrap_or_default();
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        Ok(Visit { caller, csrf, path })
    }
}

impl Visit {
    /// The logged-in client and its role, for the header.
    fn who(&self) -> Value {
        match self.caller.require(auth::ANY) {
            Ok(p) => match p.client_id() {
                Some(id) => json!({ "client_id": id, "role": p.role.as_str() }),
                None => Value::Null,
            },
            Err(_) => Value::Null,
        }
    }
}

/// Renders `template` inside the layout, with the visitor's details added to `ctx`.
pub fn render(visit: &Visit, template: &str, title: &str, ctx: Value) -> Response {
    let page = json!({ "title": title, "who": visit.who(), "csrf": visit.csrf, "path": visit.path, "page": ctx });
    match crate::templates::render(template, &page) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "page cannot be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").into_response()
        }
    }
}

/// A page with a message and a status.
pub fn message_page(visit: &Visit, status: StatusCode, message: &str) -> Response {
    let login = status == StatusCode::UNAUTHORIZED;
    let ctx = json!({ "status": status.as_u16(), "message": message, "login": login });
    (status, render(visit, "error.html", status.canonical_reason().unwrap_or("Error"), ctx)).into_response()
}

/// The page for an error the API would have answered: same status, its message (store and
/// internal errors are logged and shown without their detail, as the API does).
pub fn error_page(visit: &Visit, e: ApiError) -> Response {
    let status = e.status();
    let message = e.caller_message();
    message_page(visit, status, message.trim())
}

/// A time as UTC ISO 8601 (`2026-05-01T12:00:00Z`), which the page's script shows in the
/// viewer's zone.
pub fn iso(micros: i64) -> String {
    phasebox_server::clock::iso_z(micros)
}

/// A duration for people: `450 ms`, `12.5 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_duration(micros: i64) -> String {
    let ms = micros.max(0) / 1000;
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        0..60 => format!("{:.1} s", ms as f64 / 1000.0),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(450_000), "450 ms");
        assert_eq!(human_duration(12_500_000), "12.5 s");
        assert_eq!(human_duration(200_000_000), "3 min 20 s");
        assert_eq!(human_duration(7_500_000_000), "2 h 5 min");
        assert_eq!(human_duration(273_600_000_000), "3 d 4 h");
        assert_eq!(human_duration(-5), "0 ms");
    }
}
