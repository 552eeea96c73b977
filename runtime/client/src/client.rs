//! [`Client`]: transport, authentication and the request/answer plumbing every call shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use phasebox_redact::Secret;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::{ClientConfig, Credentials, base_url};
use crate::error::{ClientError, Result, root_cause};

/// A client of one server. Cloning is cheap; clones share the connection pool, the cookie
/// jar and the access token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Base URL without a trailing `/`.
    base: String,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
    timeout: Duration,
    transfer_timeout: Duration,
}

/// Tokens held; `generation` counts logins so that concurrent 401s log in again only once.
#[derive(Default)]
struct AuthState {
    access: Option<Secret>,
    refresh: Option<Secret>,
    generation: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.base)
            .field("client_id", &self.inner.credentials.as_ref().map(|c| c.client_id.as_str()))
            .finish_non_exhaustive()
    }
}

/// What a login produced (see [`Client::login`]).
#[derive(Debug, Clone)]
pub struct Login {
    /// The client id the server issued the token to.
    pub client_id: Option<String>,
    /// The role in the token (`contributor` when it names none).
    pub role: String,
    /// The refresh token, when the login used credentials (keep it to log in later without
    /// the secret key).
    pub refresh_token: Option<Secret>,
}

/// How the request body is made: once, and again if it is replayed after a 401.
pub(crate) type Build<'a> = dyn Fn(RequestBuilder) -> Result<RequestBuilder> + Send + Sync + 'a;

/// Percent-encodes one path segment (everything but unreserved characters).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `config.server`. Checks the address (plain HTTP only to loopback unless
    /// allowed) and loads the extra CA file; contacts nothing yet.
    pub fn new(config: ClientConfig) -> Result<Client> {
        let base = base_url(&config)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(true)
            .https_only(!base.starts_with("http://"))
            .cookie_store(true)
            .connect_timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            // A redirect could carry the Authorization header elsewhere: follow none.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_file {
            for cert in load_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http =
            builder.build().map_err(|e| ClientError::InvalidConfig(format!("HTTP client: {}", root_cause(&e))))?;
        let refresh = if config.credentials.is_some() { None } else { config.refresh_token.clone() };
        Ok(Client {
            inner: Arc::new(Inner {
                base,
                http,
                credentials: config.credentials,
                auth: Mutex::new(AuthState { access: None, refresh, generation: 0 }),
                timeout: config.timeout,
                transfer_timeout: config.transfer_timeout,
            }),
        })
    }

    /// The server's base URL (without a trailing `/`).
    pub fn server(&self) -> &str {
        &self.inner.base
    }

    /// The configured limit of ordinary requests.
    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The configured limit of transfers.
    pub(crate) fn transfer_timeout(&self) -> Duration {
        self.inner.transfer_timeout
    }

    // ------------------------------------------------------------------ authentication

    /// Logs in now (dropping any access token held): with the credentials if there are some,
    /// else with the refresh token. Fails when there is neither.
    pub async fn login(&self) -> Result<Login> {
        let mut state = self.inner.auth.lock().await;
        if self.inner.credentials.is_none() && state.refresh.is_none() {
            return Err(ClientError::InvalidConfig(
                "nothing to log in with: set a client id and secret key (TESTFLINGER_CLIENT_ID and \
                 TESTFLINGER_SECRET_KEY, or --client-id and --secret-key)"
                    .into(),
            ));
        }
        state.access = None;
        if self.inner.credentials.is_some() {
            // A fresh login with the secret key, so the caller gets a new refresh token.
            state.refresh = None;
        }
        self.authenticate(&mut state).await?;
        let claims = state.access.as_ref().and_then(|t| token_claims(t.expose()));
        let permissions = claims.as_ref().and_then(|c| c.get("permissions"));
        Ok(Login {
            client_id: permissions
                .and_then(|p| p.get("client_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| self.inner.credentials.as_ref().map(|c| c.client_id.clone())),
            role: permissions.and_then(|p| p.get("role")).and_then(Value::as_str).unwrap_or("contributor").to_owned(),
            refresh_token: state.refresh.clone(),
        })
    }

    /// The refresh token held (from the configuration or the last login with credentials).
    pub async fn refresh_token(&self) -> Option<Secret> {
        self.inner.auth.lock().await.refresh.clone()
    }

    /// The caller's client id: the credentials' one, else the one in the access token
    /// (logging in with the refresh token if needed); `None` when anonymous.
    pub async fn client_id(&self) -> Result<Option<String>> {
        if let Some(c) = &self.inner.credentials {
            return Ok(Some(c.client_id.clone()));
        }
        let Some((token, _)) = self.access_token().await? else { return Ok(None) };
        Ok(token_claims(token.expose())
            .and_then(|c| c.get("permissions")?.get("client_id")?.as_str().map(str::to_owned)))
    }

    /// The access token to send, logging in first when there is none yet; `None` when the
    /// client is anonymous.
    async fn access_token(&self) -> Result<Option<(Secret, u64)>> {
        let mut state = self.inner.auth.lock().await;
        if state.access.is_none() {
            if self.inner.credentials.is_none() && state.refresh.is_none() {
                return Ok(None);
            }
            self.authenticate(&mut state).await?;
        }
        Ok(state.access.clone().map(|t| (t, state.generation)))
    }

    /// After a 401 to a request sent with the token of `generation`: log in again unless
    /// another request already did. `None` when there is nothing to log in with.
    async fn reauthenticate(&self, generation: u64) -> Result<Option<Secret>> {
        let mut state = self.inner.auth.lock().await;
        if state.generation != generation && state.access.is_some() {
            return Ok(state.access.clone());
        }
        state.access = None;
        if self.inner.credentials.is_none() && state.refresh.is_none() {
            return Ok(None);
        }
        self.authenticate(&mut state).await?;
        Ok(state.access.clone())
    }

    /// Gets an access token: with the refresh token if one is held (falling back to the
    /// credentials if the server rejects it), else with the credentials.
    async fn authenticate(&self, state: &mut AuthState) -> Result<()> {
        if let Some(refresh) = state.refresh.clone() {
            match self.refresh(&refresh).await {
                Ok(access) => {
                    state.access = Some(access);
                    state.generation += 1;
                    return Ok(());
                }
                Err(e @ ClientError::Auth { .. }) => {
                    state.refresh = None;
                    if self.inner.credentials.is_none() {
                        return Err(e);
                    }
                    tracing::info!(server = %self.inner.base, "refresh token rejected; logging in with credentials");
                }
                Err(e) => return Err(e),
            }
        }
        let Some(creds) = &self.inner.credentials else {
            return Err(ClientError::InvalidConfig("no credentials to log in with".into()));
        };
        let endpoint = "POST /v1/oauth2/token".to_owned();
        let request = self
            .inner
            .http
            .post(format!("{}/v1/oauth2/token", self.inner.base))
            .basic_auth(&creds.client_id, Some(creds.secret.expose()))
            .timeout(self.inner.timeout);
        let response = self.transport(request, &endpoint, self.inner.timeout).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let message = read_message(response).await;
            if matches!(status.as_u16(), 400 | 401 | 403) {
                return Err(ClientError::Auth {
                    endpoint,
                    status: status.as_u16(),
                    message: format!(
                        "{message}; authentication with client id '{}' failed: check the client id and secret key",
                        creds.client_id
                    ),
                });
            }
            return Err(ClientError::Status { endpoint, status: status.as_u16(), message });
        }
        let body = json_body(response, &endpoint).await?;
        let access = token_field(&body, "access_token", &endpoint)?;
        state.access = Some(access);
        state.refresh = body.get("refresh_token").and_then(Value::as_str).map(Secret::new);
        state.generation += 1;
        tracing::debug!(server = %self.inner.base, client_id = %creds.client_id, "logged in with client credentials");
        Ok(())
    }

    /// `POST /v1/oauth2/refresh`: an access token for a refresh token.
    async fn refresh(&self, refresh: &Secret) -> Result<Secret> {
        let endpoint = "POST /v1/oauth2/refresh".to_owned();
        let request = self
            .inner
            .http
            .post(format!("{}/v1/oauth2/refresh", self.inner.base))
            .json(&json!({ "refresh_token": refresh.expose() }))
            .timeout(self.inner.timeout);
        let response = self.transport(request, &endpoint, self.inner.timeout).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let message = read_message(response).await;
            if matches!(status.as_u16(), 400 | 401 | 403 | 422) {
                return Err(ClientError::Auth {
                    endpoint,
                    status: status.as_u16(),
                    message: format!("{message}; the refresh token was rejected: log in again"),
                });
            }
            return Err(ClientError::Status { endpoint, status: status.as_u16(), message });
        }
        let body = json_body(response, &endpoint).await?;
        let access = token_field(&body, "access_token", &endpoint)?;
        tracing::debug!(server = %self.inner.base, "access token refreshed");
        Ok(access)
    }

    // ------------------------------------------------------------------ requests

    /// Sends a request to `path` (with its query) with the access token, replaying it once
    /// after logging in again if the server answers 401. Any answer is returned; transport
    /// failures are errors.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        limit: Duration,
        build: &Build<'_>,
    ) -> Result<Response> {
        let endpoint = endpoint(&method, path);
        let url = format!("{}{}", self.inner.base, path);
        let token = self.access_token().await?;
        let generation = token.as_ref().map(|(_, g)| *g).unwrap_or(0);
        let request = |token: Option<&Secret>| -> Result<RequestBuilder> {
            let mut r = self.inner.http.request(method.clone(), &url).timeout(limit);
            if let Some(t) = token {
                r = r.header(AUTHORIZATION, bearer(t, &endpoint)?);
            }
            build(r)
        };
        let response = self.transport(request(token.as_ref().map(|(t, _)| t))?, &endpoint, limit).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let first = read_message(response).await;
        tracing::debug!(%endpoint, "401: logging in again and replaying once");
        let Some(fresh) = self.reauthenticate(generation).await? else {
            return Err(ClientError::Auth {
                endpoint,
                status: 401,
                message: format!(
                    "{first}; the server requires authentication: set a client id and secret key \
                     (TESTFLINGER_CLIENT_ID and TESTFLINGER_SECRET_KEY) or log in"
                ),
            });
        };
        let response = self.transport(request(Some(&fresh))?, &endpoint, limit).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let message = read_message(response).await;
            return Err(ClientError::Auth {
                endpoint,
                status: 401,
                message: format!("{message} (again after logging in anew)"),
            });
        }
        Ok(response)
    }

    /// Sends one request; maps transport failures.
    async fn transport(&self, request: RequestBuilder, endpoint: &str, limit: Duration) -> Result<Response> {
        request.send().await.map_err(|e| self.transport_error(e, endpoint, limit))
    }

    pub(crate) fn transport_error(&self, e: reqwest::Error, endpoint: &str, limit: Duration) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout {
                server: self.inner.base.clone(),
                endpoint: endpoint.to_owned(),
                secs: limit.as_secs(),
            }
        } else if e.is_builder() {
            ClientError::InvalidConfig(format!("{endpoint}: {}", root_cause(&e)))
        } else {
            ClientError::Unreachable {
                server: self.inner.base.clone(),
                endpoint: endpoint.to_owned(),
                detail: root_cause(&e),
            }
        }
    }

    /// Sends with the ordinary time limit and no body.
    pub(crate) async fn call(&self, method: Method, path: &str) -> Result<Response> {
        self.send(method, path, self.inner.timeout, &|r| Ok(r)).await
    }

    /// Sends a JSON body with the ordinary time limit.
    pub(crate) async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: &(impl serde::Serialize + Sync + ?Sized),
    ) -> Result<Response> {
        self.send(method, path, self.inner.timeout, &|r| Ok(r.json(body))).await
    }
}

/// Reads a PEM bundle of CA certificates, checking each is a usable trust anchor.
fn load_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |message: String| ClientError::CaFile { path: path.to_owned(), message };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut certs = Vec::new();
    for (i, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| bad(format!("certificate {} is not valid PEM: {e}", i + 1)))?;
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| bad(format!("certificate {} cannot be used as a CA: {e}", i + 1)))?;
        certs.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|e| bad(format!("certificate {}: {}", i + 1, root_cause(&e))))?,
        );
    }
    if certs.is_empty() {
        return Err(bad("no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)".into()));
    }
    Ok(certs)
}

/// `METHOD /path` without the query, for messages.
pub(crate) fn endpoint(method: &Method, path: &str) -> String {
    format!("{method} {}", path.split('?').next().unwrap_or(path))
}

fn bearer(token: &Secret, endpoint: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| ClientError::BadResponse {
        endpoint: endpoint.to_owned(),
        message: "the access token is not a valid header value".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn token_field(body: &Value, key: &str, endpoint: &str) -> Result<Secret> {
    body.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(Secret::new).ok_or_else(|| {
        ClientError::BadResponse { endpoint: endpoint.to_owned(), message: format!("no {key} in the answer") }
    })
}

/// The claims of a JWT, read without verifying it (the server verifies; the client only looks
/// up its own client id and role).
pub(crate) fn token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let engine = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    serde_json::from_slice(&engine.decode(payload).ok()?).ok()
}

/// Reads an answer's body; a connection that breaks (or times out) meanwhile is
/// [`ClientError::Unreachable`], transient as a failed request is.
pub(crate) async fn body_bytes(response: Response, endpoint: &str) -> Result<bytes::Bytes> {
    let url = response.url().clone();
    response.bytes().await.map_err(|e| ClientError::Unreachable {
        server: format!("{}://{}", url.scheme(), url.authority()),
        endpoint: endpoint.to_owned(),
        detail: format!("reading the answer: {}", root_cause(&e)),
    })
}

/// The body of an answer, parsed as JSON.
pub(crate) async fn json_body(response: Response, endpoint: &str) -> Result<Value> {
    let bytes = body_bytes(response, endpoint).await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
        endpoint: endpoint.to_owned(),
        message: format!("not JSON ({e}): {}", excerpt(&String::from_utf8_lossy(&bytes))),
    })
}

/// The body of an answer as text.
pub(crate) async fn text_body(response: Response, endpoint: &str) -> Result<String> {
    let bytes = body_bytes(response, endpoint).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The server's message in an error answer: its JSON `message` (with 422 field errors), or
/// its text.
pub(crate) async fn read_message(response: Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = message_of(&text);
    if message.is_empty() { status.canonical_reason().unwrap_or("no message").to_owned() } else { message }
}

/// See [`read_message`].
pub(crate) fn message_of(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return excerpt(text.trim()) };
    let mut message = match v.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => return excerpt(text.trim()),
    };
    if let Some(detail) = v.get("detail").and_then(Value::as_object) {
        for (location, errors) in detail {
            if let Some(fields) = errors.as_object() {
                let parts: Vec<String> = fields.iter().map(|(k, e)| format!("{k}: {}", flatten(e))).collect();
                if !parts.is_empty() {
                    message.push_str(&format!(" ({location}: {})", parts.join("; ")));
                }
            }
        }
    }
    excerpt(&message)
}

fn flatten(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(flatten).collect::<Vec<_>>().join(" "),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}: {}", flatten(v))).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

fn excerpt(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Maps an answer that is not the expected success to an error.
pub(crate) async fn unexpected(response: Response, endpoint: &str) -> ClientError {
    let status = response.status().as_u16();
    let message = read_message(response).await;
    match status {
        401 | 403 => ClientError::Auth { endpoint: endpoint.to_owned(), status, message },
        404 => ClientError::NotFound { endpoint: endpoint.to_owned(), message },
        _ => ClientError::Status { endpoint: endpoint.to_owned(), status, message },
    }
}

/// Requires a 2xx answer other than 204.
pub(crate) async fn expect_ok(response: Response, endpoint: &str) -> Result<Response> {
    if response.status().is_success() && response.status() != StatusCode::NO_CONTENT {
        Ok(response)
    } else {
        Err(unexpected(response, endpoint).await)
    }
}

/// Requires any 2xx answer (for posts whose body does not matter).
pub(crate) async fn expect_success(response: Response, endpoint: &str) -> Result<()> {
    if response.status().is_success() { Ok(()) } else { Err(unexpected(response, endpoint).await) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_json_or_text() {
        assert_eq!(message_of(r#"{"message": "nope", "detail": {}}"#), "nope");
        assert_eq!(
            message_of(
                r#"{"message":"Validation error","detail":{"json":{"job_queue":["Missing data for required field."]}}}"#
            ),
            "Validation error (json: job_queue: Missing data for required field.)"
        );
        assert_eq!(message_of("Invalid job id\n"), "Invalid job id");
        assert_eq!(message_of(r#"{"message": {"phase": ["Must be one of"]}}"#), r#"{"phase":["Must be one of"]}"#);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("queue-1_x.y~"), "queue-1_x.y~");
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"permissions":{"client_id":"me","role":"agent"}}"#);
        let c = token_claims(&format!("h.{payload}.s")).unwrap();
        assert_eq!(c["permissions"]["client_id"], "me");
        assert!(token_claims("garbage").is_none());
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut config = ClientConfig::new("http://127.0.0.1:1");
        config.credentials = Some(Credentials::new("me", "the-secret-key-1234"));
        let client = Client::new(config).unwrap();
        let d = format!("{client:?}");
        assert!(d.contains("127.0.0.1") && !d.contains("the-secret-key-1234"), "{d}");
    }
}
