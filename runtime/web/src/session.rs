//! Logging in to the web interface, and CSRF tokens.
//!
//! The login form checks a client's id and secret exactly as `POST /v1/oauth2/token` does
//! (Argon2 verification, a dummy hash for unknown clients so both take as long) and stores an
//! access token signed with the server's key in the `phasebox_session` cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` behind TLS). [`present_session`] hands that token to the
//! server's [`Caller`](phasebox_server::auth::Caller) extractor as a bearer token, so a page
//! sees the caller exactly as the API would: the client's record as stored now.
//!
//! Every form that changes something carries a CSRF token: a random value kept in the
//! `phasebox_csrf` cookie (`SameSite=Strict`) and repeated in the form (double submit); a post
//! whose two copies differ is refused.

use axum::Form;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use phasebox_server::AppState;
use phasebox_server::auth::{self, Permissions};
use phasebox_server::clock::now_micros;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::view::{Visit, render};

/// The session cookie: an access token.
pub const SESSION_COOKIE: &str = "phasebox_session";
/// The CSRF cookie.
pub const CSRF_COOKIE: &str = "phasebox_csrf";
/// How long a login lasts, in seconds. The client's record is read at every request, so a
/// deleted client or a changed role applies at once regardless.
pub const SESSION_TTL_SECS: i64 = 8 * 3600;

/// The request's CSRF token (from its cookie, or new).
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// Reads a cookie from a request's headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_owned())
    })
}

fn cookie_attributes(st: &AppState) -> &'static str {
    if st.config.tls_enabled() {
        "; Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; Path=/; HttpOnly; SameSite=Strict"
    }
}

/// Middleware of every page: presents a valid session cookie as a bearer token (an invalid or
/// expired one is dropped, and the visitor is anonymous), and gives the request a CSRF token,
/// setting its cookie when it had none.
pub async fn present_session(State(st): State<AppState>, mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        let now = now_micros() / 1_000_000;
        if st.jwt.verify(&token, now, st.config.jwt_leeway.as_secs() as i64).is_ok()
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(AUTHORIZATION, value);
        }
    }
    let (csrf, new) = match cookie(request.headers(), CSRF_COOKIE).filter(|c| c.len() == 32) {
        Some(c) => (c, false),
        None => (random_token(), true),
    };
    request.extensions_mut().insert(CsrfToken(csrf.clone()));
    let mut response = next.run(request).await;
    if new && let Ok(v) = HeaderValue::from_str(&format!("{CSRF_COOKIE}={csrf}{}", cookie_attributes(&st))) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

/// Whether a form's CSRF field matches the request's cookie.
pub fn csrf_ok(visit: &Visit, field: &str) -> bool {
    !field.is_empty() && bool::from(visit.csrf.as_bytes().ct_eq(field.as_bytes()))
}

/// A local path to go back to after logging in (never another site).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

/// `?next=` of the login form.
#[derive(Debug, Deserialize)]
pub struct NextPath {
    next: Option<String>,
}

/// `GET /login`.
pub async fn login_form(visit: Visit, axum::extract::Query(q): axum::extract::Query<NextPath>) -> Response {
    login_page(&visit, &local_path(q.next.as_deref()), None, StatusCode::OK)
}

fn login_page(visit: &Visit, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let ctx = serde_json::json!({ "next": next, "error": error });
    (status, render(visit, "login.html", "Log in", ctx)).into_response()
}

/// The login form's fields. The secret is never logged nor echoed back.
#[derive(Deserialize)]
pub struct LoginForm {
    client_id: String,
    client_secret: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /login`: checks the credentials as `POST /v1/oauth2/token` does, then sets the session.
pub async fn login(State(st): State<AppState>, visit: Visit, Form(form): Form<LoginForm>) -> Response {
    let next = local_path(form.next.as_deref());
    if !csrf_ok(&visit, &form.csrf) {
        return login_page(&visit, &next, Some("The form expired: please try again."), StatusCode::FORBIDDEN);
    }
    let client = match st.store.get_client(&form.client_id).await {
        Ok(c) => c,
        Err(e) => return crate::view::error_page(&visit, e.into()),
    };
    let hash = client.as_ref().and_then(|c| c.secret_hash.clone()).unwrap_or_else(|| auth::DUMMY_HASH.clone());
    let secret = Zeroizing::new(form.client_secret);
    let ok = tokio::task::spawn_blocking(move || auth::verify_secret(&hash, &secret)).await.unwrap_or(false);
    let Some(client) = client.filter(|c| ok && c.secret_hash.is_some()) else {
        tracing::warn!(client_id = ?form.client_id, "web login failed");
        return login_page(&visit, &next, Some("Invalid client id or client key."), StatusCode::UNAUTHORIZED);
    };
    let token = st.jwt.issue(&Permissions::claim(&client), now_micros() / 1_000_000, SESSION_TTL_SECS);
    tracing::info!(client_id = ?client.client_id, role = %client.role, "web login");
    let mut response = Redirect::to(&next).into_response();
    let value = format!("{SESSION_COOKIE}={token}; Max-Age={SESSION_TTL_SECS}{}", cookie_attributes(&st));
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

/// The logout form.
#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /logout`: clears the session cookie.
pub async fn logout(State(st): State<AppState>, visit: Visit, Form(form): Form<LogoutForm>) -> Response {
    if !csrf_ok(&visit, &form.csrf) {
        return crate::view::message_page(&visit, StatusCode::FORBIDDEN, "The form expired: please try again.");
    }
    let mut response = Redirect::to("/").into_response();
    let value = format!("{SESSION_COOKIE}=; Max-Age=0{}", cookie_attributes(&st));
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}
