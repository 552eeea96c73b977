//! `hog`: an adversarial phasebox plugin for the host's limit tests.
//!
//! Each run makes the host hold ever more of one resource, chosen by the phase data
//! `{"hog": "<name>", ...params}`, and keeps everything it got, until the host stops it, a call
//! fails, or it holds `count` of them (default: no end). A failure ends the run with
//! `refused after <n>: <error>`, reaching `count` with `held <count>`, so a test can tell "the
//! host said no to the guest" from "the host stopped the phase"; a phase that the host stops
//! never returns.
//!
//! | hog | params | holds |
//! |---|---|---|
//! | `files` | `path` | the file at `path`, opened again and again (a host descriptor each) |
//! | `sockets` | `addr` (`ip:port`) | TCP connections to `addr` (a host socket each) |
//! | `http-fields` | `value_bytes` (default 60000) | `wasi:http` header maps, each with one header of `value_bytes` |
//! | `cases` | `count` (default: no end) | nothing: reports test cases with long names; returns `reported <count>` |
//! | `denied` | `count` (default: no end) | nothing: asks for a secret it did not declare; returns `denied <count> times` |

use std::fs::File;
use std::net::TcpStream;
use std::time::Duration;

use phasebox_plugin_sdk::results::Status;
use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};
use serde_json::{Map, Value};
use wasi::http::types::Fields;

/// The plugin's `Guest` implementation.
struct Hog;

impl Guest for Hog {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Map<String, Value> = sdk::ctx_data(&ctx)?;
        let param = |key: &str| data.get(key).and_then(Value::as_str);
        let number = |key: &str| data.get(key).and_then(Value::as_u64);
        let missing = |key: &str| Failure::JobError(format!("hog needs the string parameter `{key}`"));
        let summary = match param("hog") {
            Some("files") => {
                let path = param("path").ok_or_else(|| missing("path"))?;
                hold(number("count"), || File::open(path))
            }
            Some("sockets") => {
                let addr = param("addr").ok_or_else(|| missing("addr"))?;
                hold(number("count"), || TcpStream::connect(addr))
            }
            Some("http-fields") => {
                let value = vec![b'x'; number("value_bytes").unwrap_or(60_000) as usize];
                hold(number("count"), || {
                    let fields = Fields::new();
                    fields.append("x-hog", &value).map(|()| fields).map_err(|e| format!("{e:?}"))
                })
            }
            Some("cases") => {
                let count = number("count").unwrap_or(u64::MAX);
                let padding = "n".repeat(200);
                for i in 0..count {
                    sdk::report_case("hog", &format!("case-{i}-{padding}"), Status::Pass, Duration::ZERO, None);
                }
                format!("reported {count}")
            }
            Some("denied") => {
                let count = number("count").unwrap_or(u64::MAX);
                for _ in 0..count {
                    // Never declared: every call is denied, and the host records each denial.
                    let _ = sdk::secret("NEVER_DECLARED");
                }
                format!("denied {count} times")
            }
            other => return Err(Failure::JobError(format!("unknown hog {other:?}"))),
        };
        Ok(Outcome { summary })
    }
}

/// Calls `make` until it fails or made `count`, keeping everything it made.
fn hold<T, E: std::fmt::Display>(count: Option<u64>, mut make: impl FnMut() -> Result<T, E>) -> String {
    let count = count.unwrap_or(u64::MAX);
    let mut held = Vec::new();
    while (held.len() as u64) < count {
        match make() {
            Ok(item) => held.push(item),
            Err(e) => return format!("refused after {}: {e}", held.len()),
        }
    }
    format!("held {count}")
}

sdk::export_phase!(Hog);
