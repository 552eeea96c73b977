//! Authentication and authorization.
//!
//! * Clients (Testflinger's `client_permissions`) authenticate with HTTP Basic
//!   `client_id:client_secret` at `POST /v1/oauth2/token`; secrets are stored as Argon2id PHC
//!   strings. They get an HS256 access token (10 min) whose `permissions` claim carries the
//!   client's role and limits, and an opaque refresh token (stored as its SHA-256). Each
//!   request with a token looks its client up in the store: what the client may do is its
//!   record as it is now (a deleted client's tokens are refused with 401, a changed role or
//!   limit applies at once), not what the token claimed when it was issued.
//! * Agent clients are bound to the agent names they may act as and the queues they may take
//!   jobs from ([`bind_agent`]); [`Principal::require_agent_name`] and
//!   [`Principal::require_agent_queues`] check them.
//! * [`Caller`] is the extractor every handler takes. It never rejects by itself: the handler
//!   calls [`Caller::require`] with the roles of its row in the endpoint table, which yields
//!   401/403 exactly as Testflinger does (reference §3.2). Endpoint access is not hierarchical.
//! * Library functions for the `phasebox server admin` commands: [`create_client`],
//!   [`grant_role`], [`set_limits`], [`set_max_priority`], [`set_max_reservation_time`],
//!   [`set_allowed_queues`], [`bind_agent`], [`set_client_secret`], [`delete_client`], [`add_restricted_queue`],
//!   [`remove_restricted_queue`], and [`generate_client_secret`] for new secrets.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::jwt::TokenError;
use crate::state::AppState;
pub use crate::store::Role;
use crate::store::{ClientRecord, Store, StoreError};

/// The admin client that the API may neither change nor delete (Testflinger's bootstrap id).
pub const PROTECTED_CLIENT: &str = "testflinger-admin";

/// Roles of agent-only endpoints.
pub const AGENT: &[Role] = &[Role::Agent];
/// Roles of user endpoints (contributor, manager, admin).
pub const USERS: &[Role] = &[Role::Admin, Role::Manager, Role::Contributor];
/// Every role.
pub const ANY: &[Role] = &[Role::Admin, Role::Manager, Role::Contributor, Role::Agent];
/// Agent, manager, admin (agent registration endpoints).
pub const AGENTS_AND_MANAGERS: &[Role] = &[Role::Admin, Role::Manager, Role::Agent];
/// Manager, admin.
pub const MANAGERS: &[Role] = &[Role::Admin, Role::Manager];
/// Admin only.
pub const ADMIN: &[Role] = &[Role::Admin];

/// What a client may do: its record as stored now (not as its token claims it), so a changed
/// role or limit applies at the next request and a deleted client is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Client id.
    pub client_id: String,
    /// Role.
    pub role: Role,
    /// Queue (or `*`) → highest priority.
    pub max_priority: BTreeMap<String, i64>,
    /// Restricted queues the client may use.
    pub allowed_queues: Vec<String>,
    /// Queue (or `*`) → longest reservation (seconds).
    pub max_reservation_time: BTreeMap<String, i64>,
    /// For an agent client: the agent names it may act as.
    pub agent_names: Vec<String>,
    /// For an agent client: the queues it may take jobs from.
    pub agent_queues: Vec<String>,
}

impl Permissions {
    fn of(client: ClientRecord) -> Permissions {
        Permissions {
            client_id: client.client_id,
            role: client.role,
            max_priority: client.max_priority,
            allowed_queues: client.allowed_queues,
            max_reservation_time: client.max_reservation_time,
            agent_names: client.agent_names,
            agent_queues: client.agent_queues,
        }
    }

    /// The claim for a client record.
    pub fn claim(client: &ClientRecord) -> Value {
        let mut v = json!({
            "client_id": client.client_id,
            "role": client.role.as_str(),
            "max_priority": client.max_priority,
            "allowed_queues": client.allowed_queues,
            "max_reservation_time": client.max_reservation_time,
        });
        if let Some(email) = &client.email {
            v["email"] = Value::String(email.clone());
        }
        v
    }
}

#[derive(Debug, Clone)]
enum Identity {
    Anonymous,
    Client(Permissions),
    NotBearer,
    BadToken(TokenError),
    /// A valid token of a client that no longer exists.
    Deleted(String),
    /// The store could not be asked who the client is.
    Unavailable(String),
}

/// Who is calling: extracted from `Authorization` (and the `agent_name` cookie) before the
/// handler runs.
#[derive(Debug, Clone)]
pub struct Caller {
    identity: Identity,
    anonymous_access: bool,
    agent_name: Option<String>,
}

/// A caller that passed a role check.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The effective role.
    pub role: Role,
    /// Token permissions; `None` for anonymous callers.
    pub permissions: Option<Permissions>,
}

impl Principal {
    /// The client id, if authenticated.
    pub fn client_id(&self) -> Option<&str> {
        self.permissions.as_ref().map(|p| p.client_id.as_str())
    }

    /// Whether this (agent) client is bound to agent name `name`.
    pub fn acts_as(&self, name: &str) -> bool {
        self.permissions.as_ref().is_some_and(|p| p.agent_names.iter().any(|n| n == name))
    }

    /// For an agent caller: refuses agent names it is not bound to (managers and admins may
    /// act for any agent, as they set agents' states).
    pub fn require_agent_name(&self, name: &str) -> ApiResult<()> {
        if self.role != Role::Agent || self.acts_as(name) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "Agent credential {:?} may not act as agent {name:?} (it is bound to {:?}; an admin binds agent \
             credentials with `phasebox server admin bind-agent`)",
            self.client_id().unwrap_or(""),
            self.permissions.as_ref().map(|p| p.agent_names.as_slice()).unwrap_or_default(),
        )))
    }

    /// For an agent caller: refuses queues it is not bound to.
    pub fn require_agent_queues(&self, queues: &[String]) -> ApiResult<()> {
        let bound = self.permissions.as_ref().map(|p| p.agent_queues.as_slice()).unwrap_or_default();
        match queues.iter().find(|q| !bound.contains(q)) {
            None => Ok(()),
            Some(q) => Err(ApiError::Forbidden(format!(
                "Agent credential {:?} may not take jobs from queue {q:?} (it is bound to queues {bound:?}; an \
                 admin binds agent credentials with `phasebox server admin bind-agent`)",
                self.client_id().unwrap_or(""),
            ))),
        }
    }
}

fn roles_message(allowed: &[Role]) -> String {
    let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
    format!("Specified action requires role: {}", names.join(", "))
}

impl Caller {
    /// Checks that the caller has one of `allowed` roles.
    pub fn require(&self, allowed: &[Role]) -> ApiResult<Principal> {
        let principal = match &self.identity {
            Identity::BadToken(e) if e.is_unauthorized() => return Err(ApiError::Unauthorized(e.to_string())),
            Identity::BadToken(e) => return Err(ApiError::Forbidden(e.to_string())),
            Identity::Deleted(id) => {
                return Err(ApiError::Unauthorized(format!("Client {id:?} no longer exists; its token is void")));
            }
            Identity::Unavailable(e) => return Err(ApiError::Internal(format!("cannot look up the client: {e}"))),
            Identity::Anonymous | Identity::NotBearer if !self.anonymous_access => {
                return Err(ApiError::Unauthorized("Authentication is required for specified endpoint".into()));
            }
            Identity::NotBearer => return Err(ApiError::Forbidden(roles_message(allowed))),
            Identity::Anonymous => Principal { role: Role::Contributor, permissions: None },
            Identity::Client(p) => Principal { role: p.role, permissions: Some(p.clone()) },
        };
        if !allowed.contains(&principal.role) {
            return Err(ApiError::Forbidden(roles_message(allowed)));
        }
        Ok(principal)
    }

    /// The `agent_name` cookie (set by `POST /v1/agents/data/<name>`), trusted as Testflinger does.
    pub fn agent_name(&self) -> Option<&str> {
        self.agent_name.as_deref()
    }
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts.headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.trim_matches('"').to_owned())
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let identity = match parts.headers.get(AUTHORIZATION).map(|h| h.to_str().unwrap_or("")) {
            None => Identity::Anonymous,
            Some(h) => match h.strip_prefix("Bearer ") {
                None => Identity::NotBearer,
                Some(token) => {
                    let now = crate::clock::now_micros() / 1_000_000;
                    match state.jwt.verify(token.trim(), now, state.config.jwt_leeway.as_secs() as i64) {
                        Ok(claim) => match claim.get("client_id").and_then(Value::as_str) {
                            // The token names the client; what it may do is what the store says
                            // now: a deleted client's tokens stop working at once, a new role
                            // applies at its next request.
                            Some(id) => match state.store.get_client(id).await {
                                Ok(Some(client)) => Identity::Client(Permissions::of(client)),
                                Ok(None) => Identity::Deleted(id.to_owned()),
                                Err(e) => Identity::Unavailable(e.to_string()),
                            },
                            None => Identity::BadToken(TokenError::Invalid),
                        },
                        Err(e) => Identity::BadToken(e),
                    }
                }
            },
        };
        Ok(Caller {
            identity,
            anonymous_access: state.config.anonymous_access,
            agent_name: cookie(parts, "agent_name"),
        })
    }
}

// ------------------------------------------------------------------------------ credentials

/// Hashes a client secret (Argon2id, random salt) into a PHC string.
pub fn hash_secret(secret: &str) -> Result<String, AdminError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AdminError::Crypto(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AdminError::Crypto(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Crypto(e.to_string()))
}

/// Checks a client secret against its stored hash.
pub fn verify_secret(hash: &str, secret: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the client does not exist, so that unknown and known client
/// ids take the same time.
pub static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_secret("phasebox-dummy-secret-for-timing").unwrap_or_default());

/// `len` random characters of `[A-Za-z0-9]`, uniformly.
fn random_alphanumeric(len: usize) -> Zeroizing<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = Zeroizing::new(String::with_capacity(len));
    while out.len() < len {
        let mut buf = Zeroizing::new([0u8; 64]);
        getrandom::fill(buf.as_mut_slice()).expect("the OS random source works");
        // Rejection sampling: 248 = 4 * 62 keeps the distribution uniform.
        let missing = len - out.len();
        out.extend(buf.iter().filter(|b| **b < 248).map(|b| ALPHABET[(*b % 62) as usize] as char).take(missing));
    }
    out
}

/// A new opaque refresh token (48 characters of `[A-Za-z0-9]`, as Testflinger's) and the
/// SHA-256 hex under which it is stored.
pub fn new_refresh_token() -> (String, String) {
    let token = random_alphanumeric(48).to_string();
    let hash = refresh_token_hash(&token);
    (token, hash)
}

/// A new client secret: 40 random characters of `[A-Za-z0-9]` (about 238 bits).
pub fn generate_client_secret() -> Zeroizing<String> {
    random_alphanumeric(40)
}

/// The stored form of a refresh token.
pub fn refresh_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

// ----------------------------------------------------------------------------- admin library

/// Errors of the admin functions.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The client exists already.
    #[error("client '{0}' already exists")]
    Exists(String),
    /// No such client.
    #[error("client '{0}' does not exist")]
    NotFound(String),
    /// The secret is shorter than Testflinger's 15 characters.
    #[error("client secret must be at least 15 characters")]
    WeakSecret,
    /// Hashing failed.
    #[error("cannot hash secret: {0}")]
    Crypto(String),
    /// Only agent clients have an agent binding.
    #[error("client '{0}' has role {1}, not agent: only agent clients are bound to agent names and queues")]
    NotAnAgent(String, Role),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a client with a secret and role (`phasebox server admin create-client`).
pub async fn create_client(store: &Store, client_id: &str, secret: &str, role: Role) -> Result<(), AdminError> {
    if secret.chars().count() < 15 {
        return Err(AdminError::WeakSecret);
    }
    if store.get_client(client_id).await?.is_some() {
        return Err(AdminError::Exists(client_id.to_owned()));
    }
    let secret = secret.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_secret(&secret))
        .await
        .map_err(|e| AdminError::Crypto(e.to_string()))??;
    let record = ClientRecord {
        client_id: client_id.to_owned(),
        secret_hash: Some(hash),
        role,
        max_priority: BTreeMap::new(),
        allowed_queues: Vec::new(),
        max_reservation_time: BTreeMap::new(),
        email: None,
        agent_names: if role == Role::Agent { vec![client_id.to_owned()] } else { Vec::new() },
        agent_queues: Vec::new(),
    };
    store.put_client(&record, crate::clock::now_micros()).await?;
    Ok(())
}

/// Binds an agent client to the agent names it may act as and the queues it may take jobs
/// from (`phasebox server admin bind-agent`), replacing its earlier binding. Takes effect at
/// its next request.
pub async fn bind_agent(
    store: &Store,
    client_id: &str,
    agent_names: Vec<String>,
    agent_queues: Vec<String>,
) -> Result<(), AdminError> {
    let client = store.get_client(client_id).await?.ok_or_else(|| AdminError::NotFound(client_id.to_owned()))?;
    if client.role != Role::Agent {
        return Err(AdminError::NotAnAgent(client_id.to_owned(), client.role));
    }
    update_client(store, client_id, |c| {
        c.agent_names = dedup(agent_names);
        c.agent_queues = dedup(agent_queues);
    })
    .await
    .map(drop)
}

/// `list` in its order, without repeats.
fn dedup(list: Vec<String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}

/// Changes a client's role (`phasebox server admin set-role`). Takes effect at the client's
/// next request.
pub async fn grant_role(store: &Store, client_id: &str, role: Role) -> Result<(), AdminError> {
    let mut client = store.get_client(client_id).await?.ok_or_else(|| AdminError::NotFound(client_id.to_owned()))?;
    client.role = role;
    if role == Role::Agent && client.agent_names.is_empty() {
        client.agent_names = vec![client_id.to_owned()];
    }
    store.put_client(&client, crate::clock::now_micros()).await?;
    Ok(())
}

/// Sets the per-queue limits of a client (queue or `*` → value).
pub async fn set_limits(
    store: &Store,
    client_id: &str,
    max_priority: BTreeMap<String, i64>,
    max_reservation_time: BTreeMap<String, i64>,
) -> Result<(), AdminError> {
    let mut client = store.get_client(client_id).await?.ok_or_else(|| AdminError::NotFound(client_id.to_owned()))?;
    client.max_priority = max_priority;
    client.max_reservation_time = max_reservation_time;
    store.put_client(&client, crate::clock::now_micros()).await?;
    Ok(())
}

/// Replaces a client's secret.
pub async fn set_client_secret(store: &Store, client_id: &str, secret: &str) -> Result<(), AdminError> {
    if secret.chars().count() < 15 {
        return Err(AdminError::WeakSecret);
    }
    let mut client = store.get_client(client_id).await?.ok_or_else(|| AdminError::NotFound(client_id.to_owned()))?;
    let secret = secret.to_owned();
    client.secret_hash = Some(
        tokio::task::spawn_blocking(move || hash_secret(&secret))
            .await
            .map_err(|e| AdminError::Crypto(e.to_string()))??,
    );
    store.put_client(&client, crate::clock::now_micros()).await?;
    Ok(())
}

async fn update_client(
    store: &Store,
    client_id: &str,
    change: impl FnOnce(&mut ClientRecord),
) -> Result<ClientRecord, AdminError> {
    let mut client = store.get_client(client_id).await?.ok_or_else(|| AdminError::NotFound(client_id.to_owned()))?;
    change(&mut client);
    store.put_client(&client, crate::clock::now_micros()).await?;
    Ok(client)
}

/// Replaces a client's `max_priority` (queue or `*` → highest job priority).
pub async fn set_max_priority(
    store: &Store,
    client_id: &str,
    max_priority: BTreeMap<String, i64>,
) -> Result<(), AdminError> {
    update_client(store, client_id, |c| c.max_priority = max_priority).await.map(drop)
}

/// Replaces a client's `max_reservation_time` (queue or `*` → seconds).
pub async fn set_max_reservation_time(
    store: &Store,
    client_id: &str,
    max_reservation_time: BTreeMap<String, i64>,
) -> Result<(), AdminError> {
    update_client(store, client_id, |c| c.max_reservation_time = max_reservation_time).await.map(drop)
}

/// Replaces the restricted queues a client may submit to (its `allowed_queues`; order kept,
/// duplicates dropped). The queues need not be restricted (yet).
pub async fn set_allowed_queues(store: &Store, client_id: &str, queues: Vec<String>) -> Result<(), AdminError> {
    update_client(store, client_id, |c| c.allowed_queues = dedup(queues)).await.map(drop)
}

/// Restricts a queue: from then on only clients whose `allowed_queues` list it may submit to
/// it. Returns `false` when it was restricted already.
pub async fn add_restricted_queue(store: &Store, queue: &str) -> Result<bool, AdminError> {
    Ok(store.add_restricted_queue(queue).await?)
}

/// Lifts a queue's restriction for everybody (clients' `allowed_queues` are kept, so
/// restricting it again restores its owners). Returns `false` when it was not restricted.
pub async fn remove_restricted_queue(store: &Store, queue: &str) -> Result<bool, AdminError> {
    Ok(store.remove_restricted_queue(queue).await?)
}

/// Deletes a client and its refresh tokens.
pub async fn delete_client(store: &Store, client_id: &str) -> Result<(), AdminError> {
    if !store.delete_client(client_id).await? {
        return Err(AdminError::NotFound(client_id.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret(&h, "correct horse battery staple"));
        assert!(!verify_secret(&h, "wrong"));
        assert!(!verify_secret("garbage", "x"));
    }

    #[test]
    fn refresh_tokens_look_like_testflinger_ones() {
        let (t, h) = new_refresh_token();
        assert_eq!(t.len(), 48);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(h, refresh_token_hash(&t));
        assert_ne!(new_refresh_token().0, t);
        let s = generate_client_secret();
        assert_eq!(s.len(), 40);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(*generate_client_secret(), *s);
    }
}
