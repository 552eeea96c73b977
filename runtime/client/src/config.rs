//! [`ClientConfig`] and [`Credentials`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use phasebox_redact::Secret;

use crate::error::ClientError;

/// Testflinger's public server, the CLI's default when nothing else names one.
pub const DEFAULT_SERVER: &str = "https://testflinger.canonical.com";

/// How long an ordinary request may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an upload or download of attachments or artifacts may take (Testflinger: 600 s).
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// A client id and its secret key (Testflinger's `client_id` / `secret_key`).
///
/// `Debug` shows the client id only.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The secret key; redacted in `Debug` and `Display`.
    pub secret: Secret,
}

impl Credentials {
    /// Credentials from a client id and secret key.
    pub fn new(client_id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Credentials { client_id: client_id.into(), secret: secret.into() }
    }
}

/// Where the server is and how to talk to it.
///
/// `Debug` never shows the secret key or the refresh token.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's base URL, e.g. `https://testflinger.example.com` (a path prefix is kept;
    /// a trailing `/` is ignored).
    pub server: String,
    /// Allow `http://` to hosts other than loopback. Tokens, client secrets and secret values
    /// then cross the network unencrypted. Default: false.
    pub allow_plain_http: bool,
    /// A PEM file of extra CA certificates to trust besides the webpki roots (for a lab CA).
    pub ca_file: Option<PathBuf>,
    /// Client credentials for `POST /v1/oauth2/token`. When set, they are used to log in
    /// and [`refresh_token`](Self::refresh_token) is ignored.
    pub credentials: Option<Credentials>,
    /// A refresh token (from an earlier login or an agent's token file) for
    /// `POST /v1/oauth2/refresh`, used when there are no credentials.
    pub refresh_token: Option<Secret>,
    /// Limit for one ordinary request, including connecting. Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Limit for one attachments or artifacts transfer. Default [`DEFAULT_TRANSFER_TIMEOUT`].
    pub transfer_timeout: Duration,
    /// The `User-Agent` header. Default `phasebox-client/<version>`.
    pub user_agent: String,
}

impl ClientConfig {
    /// Defaults for `server`: anonymous, certificates verified against the webpki roots,
    /// plain HTTP to loopback only.
    pub fn new(server: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            allow_plain_http: false,
            ca_file: None,
            credentials: None,
            refresh_token: None,
            timeout: DEFAULT_TIMEOUT,
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            user_agent: concat!("phasebox-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig::new(DEFAULT_SERVER)
    }
}

/// Checks the server URL and returns it without a trailing `/`.
pub(crate) fn base_url(config: &ClientConfig) -> Result<String, ClientError> {
    let server = config.server.trim();
    let invalid = |why: &str| ClientError::InvalidConfig(format!("server address {server:?} {why}"));
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(invalid("must start with http:// or https://"));
    }
    let mut url =
        reqwest::Url::parse(server.trim_end_matches('/')).map_err(|e| invalid(&format!("is invalid: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: the address itself holds the password.
        return Err(ClientError::InvalidConfig(
            "the server address must not carry a user name or password; use client credentials instead".into(),
        ));
    }
    if url.host().is_none() {
        return Err(invalid("has no host"));
    }
    if url.scheme() == "http" && !config.allow_plain_http && !is_loopback(&url) {
        return Err(ClientError::PlainHttpRefused { server: server.to_owned() });
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `localhost`, `*.localhost`, 127.0.0.0/8, ::1 (and IPv4-mapped loopback).
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            IpAddr::V6(ip).is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(server: &str, allow: bool) -> Result<String, ClientError> {
        let mut c = ClientConfig::new(server);
        c.allow_plain_http = allow;
        base_url(&c)
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in ["http://127.0.0.1:5000", "http://localhost:8000/", "http://[::1]:1", "http://a.localhost"] {
            assert!(check(ok, false).is_ok(), "{ok}");
        }
        for refused in ["http://10.0.0.1", "http://testflinger.example.com", "http://[::ffff:10.0.0.1]"] {
            let e = check(refused, false).unwrap_err();
            assert!(matches!(e, ClientError::PlainHttpRefused { .. }), "{refused}");
            assert!(e.to_string().contains(refused), "{e}");
            assert!(check(refused, true).is_ok());
        }
        assert!(check("https://testflinger.example.com", false).is_ok());
    }

    #[test]
    fn addresses_are_checked_and_normalised() {
        assert_eq!(check("https://tf.example.com/prefix/", false).unwrap(), "https://tf.example.com/prefix");
        assert_eq!(check("https://tf.example.com", false).unwrap(), "https://tf.example.com");
        for bad in ["tf.example.com:5000", "ftp://x", "https://user:pw@x", "https://x/?q=1", "https://"] {
            let e = check(bad, false).unwrap_err();
            assert!(matches!(e, ClientError::InvalidConfig(_)), "{bad}: {e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = ClientConfig::new("https://x");
        c.credentials = Some(Credentials::new("me", "super-secret-key-123"));
        c.refresh_token = Some(Secret::new("refresh-token-value-xyz"));
        let d = format!("{c:?}");
        assert!(d.contains("\"me\""), "{d}");
        assert!(!d.contains("super-secret-key-123") && !d.contains("refresh-token-value-xyz"), "{d}");
    }
}
