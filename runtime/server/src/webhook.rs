//! Forwarding of agent events to a job's `job_status_webhook`, with Testflinger's guard: only
//! to the scheme and host of the configured `webhook_url` (no SSRF through job text), no
//! redirects, 3 s timeout, one retry, and its mapping of failures to 500/502/504.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A parsed `http(s)://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default for the scheme when absent).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// `host[:port]` as written, for comparisons and the Host header.
    pub authority: String,
}

/// Parses an `http`/`https` URL with a host; `None` otherwise.
pub fn origin(url: &str) -> Option<Target> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let mut path = rest[end..].split('#').next().unwrap_or("").to_owned();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Target { scheme, host: host.to_ascii_lowercase(), port, path, authority: authority.to_ascii_lowercase() })
}

/// Forwards `{agent_id, job_queue, events}` to `webhook` (reference §3.5 item 9).
pub async fn forward(st: &AppState, webhook: &str, body: &Map<String, Value>) -> ApiResult<Response> {
    let Some(allowed) = st.config.webhook_url.as_deref() else {
        return Err(ApiError::Text(StatusCode::INTERNAL_SERVER_ERROR, "Webhook URL not configured".into()));
    };
    let (Some(allowed), Some(target)) = (origin(allowed), origin(webhook)) else {
        return Err(ApiError::Forbidden("Webhook URL does not match the server's webhook host".into()));
    };
    if (allowed.scheme.as_str(), allowed.host.as_str(), allowed.port)
        != (target.scheme.as_str(), target.host.as_str(), target.port)
    {
        return Err(ApiError::Forbidden("Webhook URL does not match the server's webhook host".into()));
    }
    let payload = json!({
        "agent_id": body.get("agent_id"),
        "job_queue": body.get("job_queue"),
        "events": body.get("events").cloned().unwrap_or(Value::Array(Vec::new())),
    })
    .to_string();
    let auth = st.webhook_auth.as_ref().map(|t| format!("Bearer {}", t.as_str()));
    let mut last = None;
    for _attempt in 0..2 {
        match tokio::time::timeout(Duration::from_secs(3), put(&target, &payload, auth.as_deref())).await {
            Ok(Ok((status, body))) => {
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(ApiError::Text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Webhook authentication failed".into(),
                    ));
                }
                return Ok((status, body).into_response());
            }
            Ok(Err(e)) => {
                tracing::warn!(webhook = ?target.authority, error = %e, "webhook call failed");
                last = Some(StatusCode::BAD_GATEWAY);
            }
            Err(_) => {
                tracing::warn!(webhook = ?target.authority, "webhook call timed out");
                last = Some(StatusCode::GATEWAY_TIMEOUT);
            }
        }
    }
    let status = last.unwrap_or(StatusCode::BAD_GATEWAY);
    let text =
        if status == StatusCode::GATEWAY_TIMEOUT { "Webhook request timed out" } else { "Webhook connection failed" };
    Err(ApiError::Text(status, text.into()))
}

async fn put(target: &Target, payload: &str, auth: Option<&str>) -> Result<(StatusCode, Bytes), String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| e.to_string())?;
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(&target.path)
        .header(header::HOST, &target.authority)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        request = request.header(header::AUTHORIZATION, a);
    }
    let request = request.body(Full::new(Bytes::from(payload.to_owned()))).map_err(|e| e.to_string())?;
    if target.scheme == "https" {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name =
            tokio_rustls::rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
        let tls =
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(|e| e.to_string());
    let out = match response {
        Ok(r) => {
            let status = r.status();
            let body = r.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok((status, body))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origins() {
        let t = origin("https://Hooks.example.com/a/b?x=1").unwrap();
        assert_eq!(
            (t.scheme.as_str(), t.host.as_str(), t.port, t.path.as_str()),
            ("https", "hooks.example.com", 443, "/a/b?x=1")
        );
        let t = origin("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.port, t.path.as_str()), (8080, "/"));
        assert_eq!(origin("http://[::1]:9/x").unwrap().host, "::1");
        assert!(origin("ftp://x").is_none());
        assert!(origin("http://user@evil").is_none());
        assert!(origin("not a url").is_none());
    }
}
