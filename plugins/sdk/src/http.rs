//! Outgoing HTTP requests through `wasi:http` (needs an `http` grant naming the origin).
//!
//! The host checks every request against the phase's grant: an origin the grant does not name
//! is refused with `HttpRequestDenied`, before any connection is made. Plugins use this module
//! rather than raw sockets so that a grant can name an origin (`https://launchpad.net`) instead
//! of an address.

use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// How many body bytes to ask the host for per read.
const READ_SIZE: u64 = 64 * 1024;

/// Why a request did not bring back a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL cannot be a request at all (no scheme, no host).
    InvalidUrl(String),
    /// The host refused the request: the phase's grant does not name the origin.
    Denied,
    /// The request was allowed but failed (DNS, connection, TLS, protocol); the `wasi:http`
    /// error code's text.
    Failed(String),
    /// The body was larger than the caller allowed.
    TooLarge(u64),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidUrl(why) => write!(f, "invalid url: {why}"),
            Error::Denied => f.write_str("HttpRequestDenied: the phase's grant does not allow this origin"),
            Error::Failed(code) => write!(f, "request failed: {code}"),
            Error::TooLarge(max) => write!(f, "the response body is larger than {max} bytes"),
        }
    }
}

/// The parts of a URL that a `wasi:http` request is built from.
#[derive(Debug)]
pub struct Url {
    /// `http`, `https` or another scheme.
    pub scheme: Scheme,
    /// `host[:port]`.
    pub authority: String,
    /// `/path?query`, at least `/`.
    pub path_with_query: String,
}

impl Url {
    /// Splits `url` into scheme, authority and path. The host checks the rest (which origins
    /// the grant allows), so this only refuses what cannot be a request at all.
    pub fn parse(url: &str) -> Result<Url, Error> {
        let invalid = |why: &str| Error::InvalidUrl(format!("{url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("it has no scheme://"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "" => return Err(invalid("the scheme is empty")),
            other => Scheme::Other(other.to_owned()),
        };
        // The authority ends at the first '/', '?' or '#'; a fragment is never sent.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() {
            return Err(invalid("it has no host"));
        }
        let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
        let path_with_query = if tail.starts_with('/') { tail.to_owned() } else { format!("/{tail}") };
        Ok(Url { scheme, authority: authority.to_owned(), path_with_query })
    }
}

/// A response whose body is still to be read; [`Response::read`] takes it chunk by chunk.
pub struct Response {
    status: u16,
    // Field order matters: the stream is a child of the body and must be dropped first.
    stream: wasi::io::streams::InputStream,
    _body: IncomingBody,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The next chunk of the body, or `None` at its end.
    pub fn read(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match self.stream.blocking_read(READ_SIZE) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StreamError::Closed) => Ok(None),
            // The stream error's payload may be a wasi:http error code; prefer its text.
            Err(StreamError::LastOperationFailed(err)) => Err(match wasi::http::types::http_error_code(&err) {
                Some(code) => error(code),
                None => Error::Failed(err.to_debug_string()),
            }),
        }
    }

    /// The whole body, refusing one over `max_bytes`.
    pub fn read_all(mut self, max_bytes: u64) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = self.read()? {
            if body.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(Error::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Sends a GET for `url` and waits for the response's status and headers; the body is read
/// from the [`Response`]. A refused origin fails here, before any body is read.
pub fn get(url: &str) -> Result<Response, Error> {
    let url = Url::parse(url)?;
    let request = OutgoingRequest::new(Fields::new());
    // These setters fail only for values the host would reject as malformed; say which one.
    let rejected = |what: String| Error::Failed(format!("the host rejected {what}"));
    request.set_method(&Method::Get).map_err(|()| rejected("the method GET".into()))?;
    request.set_scheme(Some(&url.scheme)).map_err(|()| rejected(format!("the scheme {:?}", url.scheme)))?;
    request.set_authority(Some(&url.authority)).map_err(|()| rejected(format!("the authority {:?}", url.authority)))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| rejected(format!("the path {:?}", url.path_with_query)))?;
    // The request body is never taken, which sends an empty one: a GET has nothing to send.

    let pending = outgoing_handler::handle(request, None).map_err(error)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(error(code)),
        // After `block` the response is ready and this is its first `get`, so neither happens
        // with a conforming host; report rather than panic if one does.
        Some(Err(())) => return Err(Error::Failed("the response was already taken".into())),
        None => return Err(Error::Failed("the response was not ready after waiting for it".into())),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| Error::Failed("the response body was already taken".into()))?;
    let stream = body.stream().map_err(|()| Error::Failed("the response body stream was already taken".into()))?;
    Ok(Response { status, stream, _body: body })
}

fn error(code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Denied,
        other => Error::Failed(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Scheme has no PartialEq; compare the parts through Debug.
    fn parts(url: &str) -> (String, String, String) {
        let url = Url::parse(url).unwrap();
        (format!("{:?}", url.scheme), url.authority, url.path_with_query)
    }

    #[test]
    fn urls_split_into_request_parts() {
        assert_eq!(parts("http://127.0.0.1:8080"), ("Scheme::Http".into(), "127.0.0.1:8080".into(), "/".into()));
        assert_eq!(
            parts("HTTPS://example.test/a/b?c=d#frag"),
            ("Scheme::Https".into(), "example.test".into(), "/a/b?c=d".into())
        );
        assert_eq!(parts("http://h?q=1"), ("Scheme::Http".into(), "h".into(), "/?q=1".into()));
    }

    #[test]
    fn non_urls_are_refused() {
        for url in ["example.test/x", "://h/", "http:///path"] {
            assert!(matches!(Url::parse(url), Err(Error::InvalidUrl(_))), "{url}");
        }
    }
}
