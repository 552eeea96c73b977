//! Request handlers, grouped by resource. Shared here: body and query parsing with
//! marshmallow-like field rules and error shapes, id checks, file uploads and downloads.

pub mod admin;
pub mod agents;
pub mod ext;
pub mod jobs;
pub mod results;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::auth::{Principal, Role};
use crate::blobs::{BlobError, BlobKind, BlobWriter, Blobs};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{JobRecord, JobSummary};

/// Testflinger's phases, in order.
pub const PHASES: [&str; 7] = ["setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup"];

/// 200 `OK` in plain text.
pub fn ok_text() -> Response {
    (StatusCode::OK, "OK").into_response()
}

/// 204 with an empty body.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The request body as bytes, with body-limit and read failures answered as [`ApiError`]s
/// (413 `Payload too large`, 400) rather than axum's plain-text rejections.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("Payload too large".into())
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })
    }
}

/// Parses a JSON body: malformed JSON is 400.
pub fn json_body(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("Failed to decode JSON object: {e}")))
}

/// A JSON body that must be an object (else 422, as marshmallow's "Invalid input type.").
pub fn json_object(body: &Bytes) -> ApiResult<Map<String, Value>> {
    match json_body(body)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::Validation { location: "json", errors: json!({"_schema": ["Invalid input type."]}) }),
    }
}

/// Collects field errors the way marshmallow reports them: field → list of messages.
#[derive(Debug, Default)]
pub struct FieldErrors {
    errors: Map<String, Value>,
}

impl FieldErrors {
    /// Records an error for `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        let entry = self.errors.entry(field.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(Value::String(message.into()));
        }
    }

    /// Records "Unknown field." for each key not in `allowed`.
    pub fn unknown(&mut self, map: &Map<String, Value>, allowed: &[&str]) {
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                self.add(k, "Unknown field.");
            }
        }
    }

    /// Records "Missing data for required field." for each absent key.
    pub fn required(&mut self, map: &Map<String, Value>, keys: &[&str]) {
        for k in keys {
            if !map.contains_key(*k) {
                self.add(k, "Missing data for required field.");
            }
        }
    }

    /// 422 if any error was recorded.
    pub fn check(self, location: &'static str) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation { location, errors: Value::Object(self.errors) })
        }
    }
}

/// marshmallow `String`.
pub fn as_string(v: &Value) -> Result<&str, &'static str> {
    v.as_str().ok_or("Not a valid string.")
}

/// marshmallow `Integer` (non-strict): integers, integral floats, integral strings; not booleans.
pub fn as_int(v: &Value) -> Result<i64, &'static str> {
    const MSG: &str = "Not a valid integer.";
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)).ok_or(MSG),
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| MSG),
        _ => Err(MSG),
    }
}

/// marshmallow `Boolean`: the usual truthy and falsy tokens.
pub fn as_bool(v: &Value) -> Result<bool, &'static str> {
    const MSG: &str = "Not a valid boolean.";
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::String(s) => match s.as_str() {
            "t" | "T" | "true" | "True" | "TRUE" | "on" | "On" | "ON" | "y" | "Y" | "yes" | "Yes" | "YES" | "1" => {
                Ok(true)
            }
            "f" | "F" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" | "n" | "N" | "no" | "No" | "NO" | "0" => {
                Ok(false)
            }
            _ => Err(MSG),
        },
        _ => Err(MSG),
    }
}

/// `key=value` pairs of a query string, in order (repeated keys kept).
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Values of a repeated query parameter.
pub fn query_all(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
}

/// The first value of a query parameter.
pub fn query_one<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Whether `s` is a UUID in a form Python's `uuid.UUID()` accepts (hyphens anywhere, braces,
/// a `urn:uuid:` prefix); returns the canonical lower-case hyphenated form.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("urn:").unwrap_or(s);
    let s = s.strip_prefix("uuid:").unwrap_or(s);
    let s = s.trim_start_matches('{').trim_end_matches('}');
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// Checks a `job_id` path parameter: 400 `Invalid job id` (plain text) unless it is a UUID.
/// Returns the id as stored (the canonical form).
pub fn job_id_param(id: &str) -> ApiResult<String> {
    canonical_uuid(id).ok_or_else(|| ApiError::Text(StatusCode::BAD_REQUEST, "Invalid job id\n".into()))
}

/// Whether `principal` may read or change job `job` as its owner: an admin, the job's
/// submitter, or — for a job submitted without credentials — anyone who knows its id (a random
/// UUID v4: the id is the credential of an anonymous job). Anonymous callers are told to log
/// in (401), other clients are refused (403).
pub fn check_owner(principal: &Principal, job: &JobRecord) -> ApiResult<()> {
    if principal.role == Role::Admin {
        return Ok(());
    }
    match (&job.submitter, principal.client_id()) {
        (None, _) => Ok(()),
        (Some(owner), Some(me)) if owner == me => Ok(()),
        (Some(_), None) => Err(ApiError::Unauthorized(format!(
            "Job {} was submitted with credentials: only its submitter and admins may access it",
            job.job_id
        ))),
        (Some(_), Some(me)) => {
            Err(ApiError::Forbidden(format!("Job {} belongs to another client: {me:?} may not access it", job.job_id)))
        }
    }
}

/// Whether agent `principal` claimed job `job`: the job's agent is one of the names the
/// credential is bound to. Every agent write of job data (results, logs, artifacts, events)
/// and read of its inputs goes through here.
pub fn check_claiming_agent(principal: &Principal, job: &JobRecord) -> ApiResult<()> {
    match &job.agent {
        Some(agent) if principal.acts_as(agent) => Ok(()),
        _ => Err(ApiError::Forbidden(format!(
            "Job {} was not claimed by an agent that credential {:?} is bound to",
            job.job_id,
            principal.client_id().unwrap_or("")
        ))),
    }
}

/// Reads of a job's data: agents read the jobs they claimed, everyone else as [`check_owner`].
pub fn check_reader(principal: &Principal, job: &JobRecord) -> ApiResult<()> {
    if principal.role == Role::Agent { check_claiming_agent(principal, job) } else { check_owner(principal, job) }
}

/// A job's id as a listing shows it to `principal`: the id of a job submitted without
/// credentials is its only credential, so listings show it to admins only (`null` for others);
/// the ids of other jobs grant nothing and are shown.
pub fn listed_job_id(principal: &Principal, job: &JobSummary) -> Value {
    if job.submitter.is_some() || principal.role == Role::Admin {
        Value::String(job.job_id.clone())
    } else {
        Value::Null
    }
}

/// Loads job `id` for a write by the agent that claimed it: 404 when unknown.
pub async fn claimed_job(st: &AppState, principal: &Principal, id: &str) -> ApiResult<JobRecord> {
    let job = st.store.get_job(id).await?.ok_or_else(|| ApiError::NotFound(format!("Job {id} not found")))?;
    check_claiming_agent(principal, &job)?;
    Ok(job)
}

/// Receives the multipart field `file` into a blob writer (other fields are read and
/// ignored). 400 without a `file` field or for a malformed body, 413 past `limit`.
pub async fn receive_file(
    multipart: Result<Multipart, MultipartRejection>,
    blobs: &Blobs,
    limit: u64,
) -> ApiResult<BlobWriter> {
    let mut multipart = multipart.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut writer = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e.status(), e.body_text(), limit)),
        };
        let is_file = field.name() == Some("file") && writer.is_none();
        let mut field = field;
        let mut w = if is_file {
            Some(blobs.writer(limit).await.map_err(|e| ApiError::Internal(e.to_string()))?)
        } else {
            None
        };
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if let Some(w) = &mut w {
                        w.write(&chunk).await.map_err(|e| blob_error(e, limit))?;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(multipart_error(e.status(), e.body_text(), limit)),
            }
        }
        if w.is_some() {
            writer = w;
        }
    }
    writer.ok_or_else(|| ApiError::BadRequest("No file found: expected a multipart field named `file`".into()))
}

fn multipart_error(status: StatusCode, text: String, limit: u64) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("Payload too large (limit {limit} bytes)"))
    } else {
        ApiError::BadRequest(format!("Invalid multipart body: {text}"))
    }
}

/// Maps a blob error to its answer.
pub fn blob_error(e: BlobError, limit: u64) -> ApiError {
    match e {
        BlobError::TooLarge { .. } => ApiError::PayloadTooLarge(format!("Payload too large (limit {limit} bytes)")),
        BlobError::Io(e) => ApiError::Internal(format!("blob storage: {e}")),
    }
}

/// Streams a blob: 200 with its bytes, or 204 when there is none.
pub async fn send_blob(
    blobs: &Blobs,
    kind: BlobKind,
    key: &str,
    content_type: &str,
    filename: Option<&str>,
) -> ApiResult<Response> {
    let Some((file, len)) = blobs.read(kind, key).await.map_err(|e| ApiError::Internal(e.to_string()))? else {
        return Ok(no_content());
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type.parse().expect("static content type"));
    headers.insert(header::CONTENT_LENGTH, len.into());
    if let Some(name) = filename {
        headers.insert(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename={name}").parse().expect("static file name"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_like_python() {
        let c = "0b1c6a52-8d3c-4f2e-9a61-3f5d2b7c9e10";
        assert_eq!(canonical_uuid(c).as_deref(), Some(c));
        assert_eq!(canonical_uuid("0B1C6A528D3C4F2E9A613F5D2B7C9E10").as_deref(), Some(c));
        assert_eq!(canonical_uuid("{0b1c6a52-8d3c-4f2e-9a61-3f5d2b7c9e10}").as_deref(), Some(c));
        assert_eq!(canonical_uuid("urn:uuid:0b1c6a52-8d3c-4f2e-9a61-3f5d2b7c9e10").as_deref(), Some(c));
        assert!(canonical_uuid("not-a-uuid").is_none());
        assert!(canonical_uuid("../../etc/passwd").is_none());
    }

    #[test]
    fn marshmallow_scalars() {
        assert_eq!(as_int(&json!("10")), Ok(10));
        assert_eq!(as_int(&json!(3.0)), Ok(3));
        assert!(as_int(&json!(true)).is_err());
        assert!(as_int(&json!(3.5)).is_err());
        assert_eq!(as_bool(&json!("yes")), Ok(true));
        assert!(as_bool(&json!("maybe")).is_err());
    }
}
