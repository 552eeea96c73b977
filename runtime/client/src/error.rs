//! [`ClientError`]: what can go wrong talking to the server.

use std::path::PathBuf;

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a client call failed.
///
/// Every message names the request (`METHOD /path`) or the file concerned and, where there is
/// one, what to do about it. None contains a client secret, token or secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (a malformed server address, for one).
    #[error("{0}")]
    InvalidConfig(String),
    /// `http://` to a host other than loopback without `allow_plain_http`.
    #[error(
        "refusing plain http:// to {server}: the client secret, tokens and secret values would cross the network \
         unencrypted; use https://, or allow plain HTTP explicitly (--allow-plain-http)"
    )]
    PlainHttpRefused {
        /// The server address as configured.
        server: String,
    },
    /// The extra CA file cannot be read or holds no usable certificate.
    #[error("CA file {path}: {message}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The server could not be reached, or the connection broke before an answer arrived.
    /// Transient: retry later.
    #[error("cannot reach the server at {server} ({endpoint}): {detail}; check the address and that the server is up")]
    Unreachable {
        /// The server's base URL.
        server: String,
        /// `METHOD /path` of the request.
        endpoint: String,
        /// The underlying failure.
        detail: String,
    },
    /// No answer within the time limit. Transient: retry later.
    #[error("the server at {server} did not answer {endpoint} within {secs} s")]
    Timeout {
        /// The server's base URL.
        server: String,
        /// `METHOD /path` of the request.
        endpoint: String,
        /// The limit that passed.
        secs: u64,
    },
    /// Logging in failed, or the server still answered 401/403 after logging in again.
    #[error("{endpoint}: authentication failed ({status}): {message}")]
    Auth {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// The HTTP status (401, 403, or 400 for a rejected refresh token).
        status: u16,
        /// The server's message and what to do.
        message: String,
    },
    /// What was asked for does not exist: an unknown job (204), a job without artifacts, an
    /// unknown agent or queue (404).
    #[error("{message}")]
    NotFound {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// What is missing.
        message: String,
    },
    /// Any other answer than the one expected.
    #[error("{endpoint}: the server answered {status}: {message}")]
    Status {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The server's message (its JSON `message` and field errors, or its text).
        message: String,
    },
    /// A 200 answer whose body is not what the API promises.
    #[error("{endpoint}: unexpected answer from the server: {message}")]
    BadResponse {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// What does not fit.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// Whether trying again later may succeed: the server was unreachable, did not answer in
    /// time, or answered 500, 502, 503 or 504 (an agent spools and retries these).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => true,
            ClientError::Status { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The HTTP status the server answered with, if this error is an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Auth { status, .. } | ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether this is [`ClientError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::NotFound { .. })
    }

    /// The server's own message, for errors that are answers.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            ClientError::Auth { message, .. }
            | ClientError::Status { message, .. }
            | ClientError::NotFound { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// The innermost cause of a reqwest error, which says what actually happened
/// ("Connection refused (os error 111)", "invalid peer certificate: UnknownIssuer").
pub(crate) fn root_cause(e: &reqwest::Error) -> String {
    let mut messages = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let m = s.to_string();
        if messages.last() != Some(&m) {
            messages.push(m);
        }
        source = s.source();
    }
    // The outer messages repeat the URL ("error sending request for url (...)"); the last two
    // say what failed.
    let n = messages.len();
    if n >= 2 { format!("{}: {}", messages[n - 2], messages[n - 1]) } else { messages.remove(0) }
}
