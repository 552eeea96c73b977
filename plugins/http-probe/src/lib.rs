//! `http-probe`: a phasebox test plugin that sends one HTTP GET through `wasi:http`.
//!
//! Its phase data is `{"url": "scheme://host[:port][/path][?query]"}`. It returns
//! `allowed: <status> <body length>` when a response came back (whatever its status), and
//! `denied: <error>` when the request was refused or failed, where `<error>` is the Debug text of
//! the `wasi:http` `ErrorCode` the guest got (for example `denied: ErrorCode::ConnectionRefused`).
//!
//! It uses `wasi:http/outgoing-handler` directly rather than a socket, so it is the component the
//! host's tests use to check the `http` grant: it imports `wasi:http` and no `wasi:sockets`.

use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};
use serde::Deserialize;
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// The phase data `http-probe` understands.
#[derive(Deserialize)]
struct Data {
    /// The URL to GET.
    url: String,
}

/// How many body bytes to ask for per read; the body is counted, not kept.
const READ_SIZE: u64 = 64 * 1024;

/// The plugin's `Guest` implementation.
struct HttpProbe;

impl Guest for HttpProbe {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Data = sdk::ctx_data(&ctx)?;
        let url = Url::parse(&data.url)?;
        sdk::log::info(&format!("GET {}", data.url));
        let summary = match get(&url) {
            Ok((status, length)) => format!("allowed: {status} {length}"),
            Err(error) => format!("denied: {error}"),
        };
        Ok(Outcome { summary })
    }
}

sdk::export_phase!(HttpProbe);

/// Sends a GET for `url` and reads the whole response body. Returns the status code and the
/// body's length, or the error the guest got, as one line.
fn get(url: &Url) -> Result<(u16, u64), String> {
    let request = OutgoingRequest::new(Fields::new());
    // These setters fail only for values the host would reject as malformed; say which one.
    request.set_method(&Method::Get).map_err(|()| "the host rejected the method GET".to_owned())?;
    request.set_scheme(Some(&url.scheme)).map_err(|()| format!("the host rejected the scheme {:?}", url.scheme))?;
    request
        .set_authority(Some(&url.authority))
        .map_err(|()| format!("the host rejected the authority {:?}", url.authority))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| format!("the host rejected the path {:?}", url.path_with_query))?;
    // The request body is never taken, which sends an empty one: a GET has nothing to send.

    let pending = outgoing_handler::handle(request, None).map_err(|code| error_text(&code))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(error_text(&code)),
        // After `block` the response is ready and this is its first `get`, so neither happens
        // with a conforming host; report rather than panic if one does.
        Some(Err(())) => return Err("the response was already taken".to_owned()),
        None => return Err("the response was not ready after waiting for it".to_owned()),
    };
    let status = response.status();

    let body = response.consume().map_err(|()| "the response body was already taken".to_owned())?;
    let length = body_length(&body)?;
    // The trailers are not needed; finishing the body releases the host's side of it.
    drop(IncomingBody::finish(body));
    Ok((status, length))
}

/// Reads `body` to its end and counts its bytes.
fn body_length(body: &IncomingBody) -> Result<u64, String> {
    let stream = body.stream().map_err(|()| "the response body stream was already taken".to_owned())?;
    let mut length: u64 = 0;
    loop {
        match stream.blocking_read(READ_SIZE) {
            Ok(bytes) => length += bytes.len() as u64,
            Err(StreamError::Closed) => return Ok(length),
            Err(StreamError::LastOperationFailed(err)) => {
                // The stream error's payload may be a wasi:http error code; prefer its text.
                return Err(match wasi::http::types::http_error_code(&err) {
                    Some(code) => error_text(&code),
                    None => err.to_debug_string(),
                });
            }
        }
    }
}

/// The Debug text of `code`, as `denied:` reports it.
fn error_text(code: &ErrorCode) -> String {
    format!("{code:?}")
}

/// The parts of a URL that a `wasi:http` request is built from.
struct Url {
    /// `http`, `https` or another scheme.
    scheme: Scheme,
    /// `host[:port]`.
    authority: String,
    /// `/path?query`, at least `/`.
    path_with_query: String,
}

impl Url {
    /// Splits `url` into scheme, authority and path. The host checks the rest (which origins
    /// the grant allows), so this only refuses what cannot be a request at all.
    fn parse(url: &str) -> Result<Url, Failure> {
        let invalid = |why: &str| Failure::JobError(format!("invalid url {url:?}: {why}"));
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
    fn non_urls_are_job_errors() {
        for url in ["example.test/x", "://h/", "http:///path"] {
            assert!(matches!(Url::parse(url), Err(Failure::JobError(_))), "{url}");
        }
    }
}
