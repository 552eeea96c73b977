//! Credentials and administration: `/v1/oauth2/*`, `/v1/restricted-queues*`,
//! `/v1/client-permissions*` and `/v1/secrets/*`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use regex::Regex;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{FieldErrors, RawBody, json_object, ok_text};
use crate::auth::{self, Caller, PROTECTED_CLIENT, Permissions, Role};
use crate::clock::{iso_marshmallow, now_micros};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{ClientRecord, SealedSecret};

fn unauthorized_text(m: &str) -> ApiError {
    ApiError::Text(StatusCode::UNAUTHORIZED, m.to_owned())
}

fn token_response(st: &AppState, client: &ClientRecord) -> Map<String, Value> {
    let ttl = st.config.access_token_ttl.as_secs() as i64;
    let token = st.jwt.issue(&Permissions::claim(client), now_micros() / 1_000_000, ttl);
    let mut m = Map::new();
    m.insert("access_token".into(), Value::String(token));
    m.insert("token_type".into(), Value::String("Bearer".into()));
    m.insert("expires_in".into(), Value::from(ttl));
    m
}

/// `POST /v1/oauth2/token` (HTTP Basic client credentials): access and refresh token.
pub async fn token(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let Some(h) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized_text("No authorization header specified"));
    };
    let creds = h
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .map(Zeroizing::new)
        .and_then(|b| String::from_utf8(b.to_vec()).ok().map(Zeroizing::new));
    let Some((client_id, secret)) =
        creds.as_ref().and_then(|c| c.split_once(':')).filter(|(c, s)| !c.is_empty() && !s.is_empty())
    else {
        return Err(unauthorized_text("Client id and key must be specified in authorization header"));
    };
    let client = st.store.get_client(client_id).await?;
    let hash = client.as_ref().and_then(|c| c.secret_hash.clone()).unwrap_or_else(|| auth::DUMMY_HASH.clone());
    let secret = Zeroizing::new(secret.to_owned());
    let ok = tokio::task::spawn_blocking(move || auth::verify_secret(&hash, &secret))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(client) = client.filter(|c| ok && c.secret_hash.is_some()) else {
        tracing::warn!(client_id = ?client_id, "authentication failed");
        return Err(unauthorized_text("Invalid client id or client key"));
    };
    let (refresh, hash) = auth::new_refresh_token();
    let now = now_micros();
    let expires = now + st.config.refresh_token_ttl.as_micros() as i64;
    st.store.insert_refresh_token(&hash, &client.client_id, now, expires).await?;
    let mut body = token_response(&st, &client);
    body.insert("refresh_token".into(), Value::String(refresh));
    tracing::info!(client_id = ?client.client_id, role = %client.role, "token issued");
    Ok(Json(Value::Object(body)))
}

fn refresh_field(body: &Bytes) -> ApiResult<String> {
    let map = json_object(body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["refresh_token"]);
    errors.required(&map, &["refresh_token"]);
    let token = match map.get("refresh_token") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            errors.add("refresh_token", "Shorter than minimum length 1.");
            String::new()
        }
        Some(_) => {
            errors.add("refresh_token", "Not a valid string.");
            String::new()
        }
        None => String::new(),
    };
    errors.check("json")?;
    Ok(token)
}

/// `POST /v1/oauth2/refresh` `{"refresh_token"}`: a new access token.
pub async fn refresh(State(st): State<AppState>, RawBody(body): RawBody) -> ApiResult<Json<Value>> {
    let token = Zeroizing::new(refresh_field(&body)?);
    let now = now_micros();
    let Some((client_id, expires_at, revoked)) =
        st.store.use_refresh_token(&auth::refresh_token_hash(&token), now).await?
    else {
        return Err(ApiError::BadRequest("Invalid refresh token.".into()));
    };
    if revoked {
        return Err(ApiError::BadRequest("Refresh token revoked.".into()));
    }
    if expires_at <= now {
        return Err(ApiError::BadRequest("Refresh token expired".into()));
    }
    let Some(client) = st.store.get_client(&client_id).await? else {
        return Err(ApiError::BadRequest("Invalid refresh token.".into()));
    };
    Ok(Json(Value::Object(token_response(&st, &client))))
}

/// `POST /v1/oauth2/revoke` `{"refresh_token"}` (admin).
pub async fn revoke(State(st): State<AppState>, caller: Caller, RawBody(body): RawBody) -> ApiResult<Json<Value>> {
    caller.require(auth::ADMIN)?;
    let token = Zeroizing::new(refresh_field(&body)?);
    match st.store.revoke_refresh_token(&auth::refresh_token_hash(&token)).await? {
        Some(true) => Ok(Json(json!({ "status": "OK" }))),
        Some(false) => Err(ApiError::BadRequest("Refresh token already revoked.".into())),
        None => Err(ApiError::BadRequest("Invalid refresh token.".into())),
    }
}

// --------------------------------------------------------------------- restricted queues

/// `GET /v1/restricted-queues` (contributor, manager, admin): `[{"queue", "owners"}]`.
pub async fn list_restricted(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(auth::USERS)?;
    let owners = super::agents::owners(&st.store).await?;
    Ok(Json(Value::Array(owners.into_iter().map(|(q, o)| json!({ "queue": q, "owners": o })).collect())))
}

/// `GET /v1/restricted-queues/<queue>` (contributor, manager, admin); 404 unless restricted.
pub async fn get_restricted(
    State(st): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(auth::USERS)?;
    let owners = super::agents::owners(&st.store).await?;
    match owners.get(&queue) {
        Some(o) => Ok(Json(json!({ "queue": queue, "owners": o }))),
        None => Err(ApiError::NotFound(format!("Queue '{queue}' is not restricted."))),
    }
}

fn client_id_field(body: &Bytes) -> ApiResult<String> {
    let map = json_object(body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["client_id"]);
    errors.required(&map, &["client_id"]);
    let id = match map.get("client_id") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errors.add("client_id", "Not a valid string.");
            String::new()
        }
        None => String::new(),
    };
    errors.check("json")?;
    if id.is_empty() {
        return Err(ApiError::BadRequest("client_id must not be empty".into()));
    }
    Ok(id)
}

/// `POST /v1/restricted-queues/<queue>` `{"client_id"}` (manager, admin): restrict the queue
/// and add the client to its owners. 404 for an unknown client or a queue no agent lists.
pub async fn add_restricted(
    State(st): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(auth::MANAGERS)?;
    let client_id = client_id_field(&body)?;
    if st.store.get_client(&client_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("Client '{client_id}' does not exist.")));
    }
    let exists = st.store.list_agents().await?.iter().any(|(doc, _)| super::jobs::agent_queues(doc).contains(&queue));
    if !exists {
        return Err(ApiError::NotFound(format!("Queue '{queue}' does not exist.")));
    }
    st.store.restrict_queue(&queue, &client_id).await?;
    tracing::info!(queue = ?queue, client_id = ?client_id, "queue restricted");
    Ok(ok_text())
}

/// `DELETE /v1/restricted-queues/<queue>` `{"client_id"}` (manager, admin): un-restricts the
/// queue for everybody (Testflinger's behaviour) and removes it from the client.
pub async fn delete_restricted(
    State(st): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(auth::MANAGERS)?;
    let client_id = client_id_field(&body)?;
    if !st.store.unrestrict_queue(&queue, &client_id).await? {
        return Err(ApiError::NotFound(format!("Queue '{queue}' is not restricted.")));
    }
    tracing::info!(queue = ?queue, client_id = ?client_id, "queue unrestricted");
    Ok(ok_text())
}

// --------------------------------------------------------------------- client permissions

fn client_out(c: &ClientRecord) -> Value {
    let mut out = json!({
        "client_id": c.client_id,
        "max_priority": c.max_priority,
        "allowed_queues": c.allowed_queues,
        "max_reservation_time": c.max_reservation_time,
        "role": c.role.as_str(),
        "email": c.email,
    });
    if c.role == Role::Agent {
        out["agent_names"] = json!(c.agent_names);
        out["agent_queues"] = json!(c.agent_queues);
    }
    out
}

/// A list of non-empty strings, or a field error.
fn string_list(v: &Value, field: &str, errors: &mut FieldErrors) -> Vec<String> {
    match v.as_array().map(|a| a.iter().map(|x| x.as_str().filter(|s| !s.is_empty())).collect::<Option<Vec<_>>>()) {
        Some(Some(items)) => items.into_iter().map(str::to_owned).collect(),
        _ => {
            errors.add(field, "Not a valid list of non-empty strings.");
            Vec::new()
        }
    }
}

/// `GET /v1/client-permissions` (manager, admin).
pub async fn list_clients(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(auth::MANAGERS)?;
    Ok(Json(Value::Array(st.store.list_clients().await?.iter().map(client_out).collect())))
}

/// `GET /v1/client-permissions/<id>` (manager, admin); 404 when unknown.
pub async fn get_client(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    caller.require(auth::MANAGERS)?;
    match st.store.get_client(&id).await? {
        Some(c) => Ok(Json(client_out(&c))),
        None => Err(ApiError::NotFound(format!("Client '{id}' does not exist."))),
    }
}

static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[^@\s]+@[^@\s]+\.[^@\s]+$").expect("static regex"));

fn int_map(v: &Value, field: &str, errors: &mut FieldErrors) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    match v.as_object() {
        Some(m) => {
            for (k, v) in m {
                match super::as_int(v) {
                    Ok(n) => {
                        out.insert(k.clone(), n);
                    }
                    Err(msg) => errors.add(field, format!("Value of {k:?}: {msg}")),
                }
            }
        }
        None => errors.add(field, "Not a valid mapping type."),
    }
    out
}

/// `PUT /v1/client-permissions/<id>` (manager, admin): create or update a client. The caller's
/// role must be at least the client's current role and the new one; only admins create or
/// change agent clients, whose `agent_names` and `agent_queues` (phasebox additions) bind them
/// to the agents they may act as and the queues they may take jobs from.
pub async fn put_client(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let principal = caller.require(auth::MANAGERS)?;
    let map = json_object(&body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(
        &map,
        &["client_secret", "max_priority", "max_reservation_time", "role", "email", "agent_names", "agent_queues"],
    );
    let secret = match map.get("client_secret") {
        None => None,
        Some(Value::String(s)) if s.chars().count() >= 15 => Some(Zeroizing::new(s.clone())),
        Some(Value::String(_)) => {
            errors.add("client_secret", "Shorter than minimum length 15.");
            None
        }
        Some(_) => {
            errors.add("client_secret", "Not a valid string.");
            None
        }
    };
    let max_priority = map.get("max_priority").map(|v| int_map(v, "max_priority", &mut errors));
    let max_reservation = map.get("max_reservation_time").map(|v| int_map(v, "max_reservation_time", &mut errors));
    let role = match map.get("role") {
        None => None,
        Some(v) => match v.as_str().and_then(Role::parse) {
            Some(r) => Some(r),
            None => {
                errors.add("role", "Must be one of: admin, manager, contributor, agent.");
                None
            }
        },
    };
    let email = match map.get("email") {
        None => None,
        Some(Value::String(s)) if EMAIL_RE.is_match(s) => Some(s.clone()),
        Some(_) => {
            errors.add("email", "Not a valid email address.");
            None
        }
    };
    let agent_names = map.get("agent_names").map(|v| string_list(v, "agent_names", &mut errors));
    let agent_queues = map.get("agent_queues").map(|v| string_list(v, "agent_queues", &mut errors));
    errors.check("json")?;
    if id == PROTECTED_CLIENT {
        return Err(ApiError::Unprocessable(format!("Client '{PROTECTED_CLIENT}' cannot be modified through the API")));
    }
    let existing = st.store.get_client(&id).await?;
    let current_role = existing.as_ref().map(|c| c.role).unwrap_or(Role::Contributor);
    let new_role = role.unwrap_or(current_role);
    if principal.role < current_role || principal.role < new_role {
        return Err(ApiError::Forbidden(format!(
            "Role '{}' cannot modify a client with role '{current_role}' or grant role '{new_role}'",
            principal.role
        )));
    }
    // An agent credential receives the secrets of the jobs it claims: only admins make one or
    // change one (its secret, its binding).
    let touches_agent = current_role == Role::Agent || new_role == Role::Agent;
    if touches_agent && principal.role != Role::Admin {
        return Err(ApiError::Forbidden(format!(
            "Only admins may create or change agent clients (client '{id}', caller role '{}')",
            principal.role
        )));
    }
    if (agent_names.is_some() || agent_queues.is_some()) && new_role != Role::Agent {
        return Err(ApiError::field("agent_names", "Only agent clients are bound to agent names and queues."));
    }
    let created = existing.is_none();
    let mut client = match existing {
        Some(c) => c,
        None => {
            if secret.is_none() {
                return Err(ApiError::BadRequest("client_secret is required to create a client".into()));
            }
            ClientRecord {
                client_id: id.clone(),
                secret_hash: None,
                role: Role::Contributor,
                max_priority: BTreeMap::new(),
                allowed_queues: Vec::new(),
                max_reservation_time: BTreeMap::new(),
                email: None,
                agent_names: Vec::new(),
                agent_queues: Vec::new(),
            }
        }
    };
    if let Some(secret) = secret {
        client.secret_hash = Some(
            tokio::task::spawn_blocking(move || auth::hash_secret(&secret))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
    }
    client.role = new_role;
    if let Some(m) = max_priority {
        client.max_priority = m;
    }
    if let Some(m) = max_reservation {
        client.max_reservation_time = m;
    }
    if email.is_some() {
        client.email = email;
    }
    if let Some(names) = agent_names {
        client.agent_names = names;
    }
    if let Some(queues) = agent_queues {
        client.agent_queues = queues;
    }
    if client.role == Role::Agent && client.agent_names.is_empty() {
        client.agent_names = vec![id.clone()];
    }
    st.store.put_client(&client, now_micros()).await?;
    tracing::info!(client_id = ?id, role = %new_role, by = ?principal.client_id(), created, "client permissions set");
    let verb = if created { "Created" } else { "Updated" };
    Ok((StatusCode::OK, format!("{verb} permissions for client '{id}'")).into_response())
}

/// `DELETE /v1/client-permissions/<id>` (admin).
pub async fn delete_client(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let principal = caller.require(auth::ADMIN)?;
    if id == PROTECTED_CLIENT {
        return Err(ApiError::Unprocessable(format!("Client '{PROTECTED_CLIENT}' cannot be deleted through the API")));
    }
    if !st.store.delete_client(&id).await? {
        return Err(ApiError::NotFound(format!("Client '{id}' does not exist.")));
    }
    tracing::info!(client_id = ?id, by = ?principal.client_id(), "client deleted");
    Ok(ok_text())
}

// -------------------------------------------------------------------------------- secrets

/// Default secret lifetime: one year (Testflinger's).
const DEFAULT_EXPIRE_AFTER: i64 = 31_536_000;

/// Checks common to secret writes and deletes; returns the owner's client id.
fn secret_owner(st: &AppState, caller: &Caller, client_id: &str, path: &str) -> ApiResult<String> {
    let principal = caller.require(auth::USERS)?;
    if st.secrets.is_none() {
        return Err(ApiError::BadRequest("No secrets store".into()));
    }
    let Some(me) = principal.client_id() else {
        return Err(ApiError::Unauthorized("Authentication is required to manage secrets".into()));
    };
    if me != client_id {
        return Err(ApiError::Forbidden(format!("Client '{me}' cannot access secrets of '{client_id}'")));
    }
    if !crate::secrets::valid_path(path) {
        return Err(ApiError::field("path", "Invalid secret path: letters, digits, `_` and `-`, separated by `/`"));
    }
    Ok(me.to_owned())
}

/// `PUT /v1/secrets/<client_id>/<path>` `{"value", "expire_after"?, "ephemeral"?}`
/// (contributor, manager, admin; own namespace only) → `{"expires_at": ISO | null}`.
pub async fn put_secret(
    State(st): State<AppState>,
    caller: Caller,
    Path((client_id, path)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let owner = secret_owner(&st, &caller, &client_id, &path)?;
    let map = json_object(&body)?;
    let mut errors = FieldErrors::default();
    errors.unknown(&map, &["value", "expire_after", "ephemeral"]);
    errors.required(&map, &["value"]);
    let value = match map.get("value") {
        Some(Value::String(s)) if !s.is_empty() => Some(Zeroizing::new(s.clone())),
        Some(Value::String(_)) => {
            errors.add("value", "Shorter than minimum length 1.");
            None
        }
        Some(_) => {
            errors.add("value", "Not a valid string.");
            None
        }
        None => None,
    };
    let expire_after = match map.get("expire_after") {
        None => Some(DEFAULT_EXPIRE_AFTER),
        Some(Value::Null) => None,
        Some(v) => match super::as_int(v) {
            Ok(n) if n >= 1 => Some(n),
            Ok(_) => {
                errors.add("expire_after", "Must be greater than or equal to 1.");
                None
            }
            Err(m) => {
                errors.add("expire_after", m);
                None
            }
        },
    };
    let ephemeral = match map.get("ephemeral") {
        None => false,
        Some(v) => super::as_bool(v).unwrap_or_else(|m| {
            errors.add("ephemeral", m);
            false
        }),
    };
    if ephemeral && map.get("expire_after").is_some_and(|v| !v.is_null()) {
        errors.add("_schema", "ephemeral and expire_after cannot be used together");
    }
    errors.check("json")?;
    let Some(value) = value else { return Err(ApiError::Internal("validated secret lacks its value".into())) };
    let key = st.secrets.as_ref().ok_or_else(|| ApiError::BadRequest("No secrets store".into()))?;
    let (nonce, ciphertext) = key.seal(&owner, &path, &value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = now_micros();
    let expires_at =
        if ephemeral { None } else { expire_after.map(|s| now.saturating_add(s.saturating_mul(1_000_000))) };
    st.store
        .put_secret(
            &SealedSecret { namespace: owner.clone(), path: path.clone(), nonce, ciphertext, ephemeral, expires_at },
            now,
        )
        .await?;
    tracing::info!(client_id = ?owner, path = ?path, ephemeral, "secret written");
    Ok(Json(json!({ "expires_at": expires_at.map(iso_marshmallow) })))
}

/// `DELETE /v1/secrets/<client_id>/<path>` (contributor, manager, admin; own namespace only).
pub async fn delete_secret(
    State(st): State<AppState>,
    caller: Caller,
    Path((client_id, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = secret_owner(&st, &caller, &client_id, &path)?;
    st.store.delete_secret(&owner, &path).await?;
    tracing::info!(client_id = ?owner, path = ?path, "secret deleted");
    Ok(ok_text())
}
