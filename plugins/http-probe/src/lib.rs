//! `http-probe`: a phasebox test plugin that sends one HTTP GET through `wasi:http`.
//!
//! Its phase data is `{"url": "scheme://host[:port][/path][?query]"}`. It returns
//! `allowed: <status> <body length>` when a response came back (whatever its status), and
//! `denied: <error>` when the request was refused or failed, where `<error>` names the `wasi:http`
//! error code the guest got (for example `denied: request failed: ConnectionRefused`).
//!
//! It uses `wasi:http/outgoing-handler` directly rather than a socket, so it is the component the
//! host's tests use to check the `http` grant: it imports `wasi:http` and no `wasi:sockets`.

use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};
use serde::Deserialize;

/// The phase data `http-probe` understands.
#[derive(Deserialize)]
struct Data {
    /// The URL to GET.
    url: String,
}

/// The plugin's `Guest` implementation.
struct HttpProbe;

impl Guest for HttpProbe {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Data = sdk::ctx_data(&ctx)?;
        sdk::http::Url::parse(&data.url).map_err(|e| Failure::JobError(e.to_string()))?;
        sdk::log::info(&format!("GET {}", data.url));
        // The body is counted, not kept.
        let fetch = || -> Result<(u16, u64), sdk::http::Error> {
            let mut response = sdk::http::get(&data.url)?;
            let mut length = 0u64;
            while let Some(chunk) = response.read()? {
                length += chunk.len() as u64;
            }
            Ok((response.status(), length))
        };
        let summary = match fetch() {
            Ok((status, length)) => format!("allowed: {status} {length}"),
            Err(error) => format!("denied: {error}"),
        };
        Ok(Outcome { summary })
    }
}

sdk::export_phase!(HttpProbe);
