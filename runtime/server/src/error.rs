//! [`ApiError`]: every error a handler can answer with, mapped to Testflinger's status codes
//! and body shapes (reference §3.1): `abort()`-style errors are JSON `{"message", "detail"}`,
//! schema errors are 422 `{"message": "Validation error", "detail": {"json": {...}}}`, and a
//! few endpoints answer in plain text.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::store::StoreError;

/// An error answer. Internal failures are logged and answered with a generic 500; their
/// details never reach the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400, JSON `message`.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 400 whose `message` is an object of field errors (Testflinger's invalid log query).
    #[error("bad request: {0}")]
    BadRequestJson(Value),
    /// 401, JSON `message` (CLI and agent refresh their token and replay once).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403, JSON `message` (the CLI reads a 403 without JSON as a VPN problem).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404, JSON `message`.
    #[error("not found: {0}")]
    NotFound(String),
    /// 409, JSON `message` (phasebox: a resubmitted `job_id` that already exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 413, JSON `message`; nothing of the body was stored.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// 422 `{"message": "Validation error", "detail": {<location>: <field errors>}}`.
    #[error("validation error in {location}: {errors}")]
    Validation {
        /// `json` or `query`.
        location: &'static str,
        /// Field name → list of messages (nested objects for nested fields).
        errors: Value,
    },
    /// 422, JSON `message`.
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// Any status with a plain-text body (Testflinger answers some errors in text).
    #[error("{0}: {1}")]
    Text(StatusCode, String),
    /// 500 from the store; logged, answered generically.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// 500; logged, answered generically.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming one field of the JSON body.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation { location: "json", errors: json!({ field: [message.into()] }) }
    }

    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BadRequestJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation { .. } | ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Text(status, _) => *status,
            ApiError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the caller is told, as text: a refusal's message, or "Internal server error" for a
    /// store or internal failure, whose detail goes to the server's log only. The API and the
    /// web interface both answer with it.
    pub fn caller_message(self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::Unprocessable(m)
            | ApiError::Text(_, m)
            | ApiError::Store(StoreError::Conflict(m)) => m,
            ApiError::BadRequestJson(v) | ApiError::Validation { errors: v, .. } => v.to_string(),
            ApiError::Store(e) => {
                tracing::error!(error = ?e.to_string(), "store error");
                "Internal server error".into()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "Internal server error".into()
            }
        }
    }
}

fn message(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message, "detail": {} }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::BadRequestJson(m) => (status, Json(json!({ "message": m, "detail": {} }))).into_response(),
            ApiError::Validation { location, errors } => {
                (status, Json(json!({ "message": "Validation error", "detail": { location: errors } }))).into_response()
            }
            ApiError::Text(_, text) => (status, text).into_response(),
            other => message(status, &other.caller_message()),
        }
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
