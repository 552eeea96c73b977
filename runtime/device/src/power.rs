//! The power handle: shell commands on the agent host, or an HTTP power controller.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::config::{HttpPower, PowerCommands, PowerConfig, SecretString};
use crate::error::ErrorKind;

/// A DUT's power state as its power control reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Switched on.
    On,
    /// Switched off.
    Off,
    /// The power control cannot tell (no status command, or an answer that is neither on nor off).
    Unknown,
}

impl PowerState {
    /// `"on"`, `"off"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        }
    }

    fn parse(text: &str) -> PowerState {
        match text.trim().to_ascii_lowercase().as_str() {
            "on" => PowerState::On,
            "off" => PowerState::Off,
            _ => PowerState::Unknown,
        }
    }
}

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PowerAction {
    On,
    Off,
    Cycle,
    Status,
}

impl PowerAction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::Status => "status",
        }
    }

    /// The state a successful action leaves the DUT in, as far as the agent can tell.
    fn expected(self) -> PowerState {
        match self {
            PowerAction::On | PowerAction::Cycle => PowerState::On,
            PowerAction::Off => PowerState::Off,
            PowerAction::Status => PowerState::Unknown,
        }
    }
}

/// A failure: its kind and a message safe to show to plugins.
pub(crate) type Failure = (ErrorKind, String);

/// The configured way to switch a DUT's power.
pub(crate) enum PowerDriver {
    Commands(PowerCommands),
    Http(HttpTarget, Duration),
}

impl PowerDriver {
    pub(crate) fn new(config: &PowerConfig) -> Result<Self, String> {
        Ok(match config {
            PowerConfig::Commands(c) => PowerDriver::Commands(c.clone()),
            PowerConfig::Http(HttpPower { base_url, timeout }) => {
                PowerDriver::Http(HttpTarget::parse(base_url)?, *timeout)
            }
        })
    }

    pub(crate) async fn run(&self, device: &str, action: PowerAction) -> Result<PowerState, Failure> {
        match self {
            PowerDriver::Commands(c) => run_commands(c, device, action).await,
            PowerDriver::Http(target, timeout) => target.request(device, action, *timeout).await,
        }
    }
}

async fn run_commands(c: &PowerCommands, device: &str, action: PowerAction) -> Result<PowerState, Failure> {
    match action {
        PowerAction::On => run_command(&c.on, "on", device, c.timeout).await.map(|_| PowerState::On),
        PowerAction::Off => run_command(&c.off, "off", device, c.timeout).await.map(|_| PowerState::Off),
        PowerAction::Cycle => match &c.cycle {
            Some(cycle) => run_command(cycle, "cycle", device, c.timeout).await.map(|_| PowerState::On),
            None => {
                run_command(&c.off, "off", device, c.timeout).await?;
                tokio::time::sleep(c.cycle_off_time).await;
                run_command(&c.on, "on", device, c.timeout).await.map(|_| PowerState::On)
            }
        },
        PowerAction::Status => match &c.status {
            Some(status) => run_command(status, "status", device, c.timeout).await.map(|out| PowerState::parse(&out)),
            None => Ok(PowerState::Unknown),
        },
    }
}

/// Runs one operator command with `sh -c`; its stdout on success.
///
/// The command line and its output may carry credentials or addresses: they go to the agent's
/// log only, never into the returned message.
async fn run_command(command: &SecretString, which: &str, device: &str, timeout: Duration) -> Result<String, Failure> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command.expose())
        .env("PHASEBOX_DEVICE", device)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| (ErrorKind::Io, format!("could not start the {which} command: {e}")))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (status, _, _) = tokio::join!(child.wait(), stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            kill_group(pid);
            tracing::warn!(device, command = which, ?timeout, "power command timed out; killed its process group");
            return Err((ErrorKind::Timeout, format!("the {which} command did not finish within {timeout:?}")));
        }
    };
    // Whatever the command left running in its group goes too: nothing outlives the operation.
    kill_group(pid);
    let status = status.map_err(|e| (ErrorKind::Io, format!("waiting for the {which} command: {e}")))?;
    let stderr_text = String::from_utf8_lossy(&err);
    if !status.success() {
        tracing::warn!(device, command = which, %status, stderr = %stderr_text.trim(), "power command failed");
        return Err((
            ErrorKind::Failed,
            format!("the {which} command exited with {status} (details in the agent log)"),
        ));
    }
    if !stderr_text.trim().is_empty() {
        tracing::debug!(device, command = which, stderr = %stderr_text.trim(), "power command stderr");
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A parsed `http://` base URL of a power controller outlet.
pub(crate) struct HttpTarget {
    /// `host:port` to connect to.
    connect: String,
    /// `Host` header value.
    host_header: String,
    /// Path prefix without a trailing slash.
    path: String,
    /// `Authorization` header value from the URL's user info.
    authorization: Option<SecretString>,
}

impl HttpTarget {
    /// Parses and checks a base URL; the error message does not repeat the URL.
    pub(crate) fn parse(base_url: &str) -> Result<Self, String> {
        let (userinfo, rest) = match base_url.strip_prefix("http://") {
            Some(rest) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                match rest[..authority_end].rfind('@') {
                    Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
                    None => (None, rest),
                }
            }
            None if base_url.starts_with("https://") => {
                return Err("https is not supported; use an http:// URL".into());
            }
            None => return Err("must be an http:// URL".into()),
        };
        let uri: Uri = format!("http://{rest}").parse().map_err(|_| "is not a valid URL".to_string())?;
        if uri.query().is_some() || rest.contains('#') {
            return Err("must not have a query or fragment".into());
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = uri.authority().ok_or("has no host")?.as_str();
        let authorization = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let credentials = format!("{}:{}", percent_decode(user), percent_decode(password));
            SecretString::new(format!("Basic {}", base64(credentials.as_bytes())))
        });
        Ok(HttpTarget {
            connect: format!("{host}:{port}"),
            host_header: authority.to_owned(),
            path: uri.path().trim_end_matches('/').to_owned(),
            authorization,
        })
    }

    async fn request(&self, device: &str, action: PowerAction, timeout: Duration) -> Result<PowerState, Failure> {
        let method = if action == PowerAction::Status { Method::GET } else { Method::POST };
        let path = format!("{}/{}", self.path, action.as_str());
        match tokio::time::timeout(timeout, self.send(method.clone(), &path)).await {
            Err(_) => {
                tracing::warn!(device, controller = %self.connect, %path, "power controller did not answer in time");
                Err((ErrorKind::Timeout, format!("the power controller did not answer within {timeout:?}")))
            }
            Ok(Err((kind, message, log))) => {
                tracing::warn!(device, controller = %self.connect, %path, error = %log, "power controller request failed");
                Err((kind, message))
            }
            Ok(Ok((status, body))) if status.is_success() => {
                let reported = serde_json::from_slice::<StateBody>(&body).ok().map(|b| PowerState::parse(&b.state));
                Ok(match action {
                    PowerAction::Status => reported.unwrap_or(PowerState::Unknown),
                    _ => reported.filter(|s| *s != PowerState::Unknown).unwrap_or(action.expected()),
                })
            }
            Ok(Ok((status, body))) => {
                tracing::warn!(device, controller = %self.connect, %path, %status,
                    body = %String::from_utf8_lossy(&body[..body.len().min(512)]), "power controller refused");
                Err((
                    ErrorKind::Failed,
                    format!("the power controller answered {method} {} with {status}", action.as_str()),
                ))
            }
        }
    }

    /// One request on a fresh connection: the status and up to 64 KiB of body, or
    /// (kind, message for the caller, message for the log).
    async fn send(&self, method: Method, path: &str) -> Result<(StatusCode, Bytes), (ErrorKind, String, String)> {
        let stream = TcpStream::connect(&self.connect).await.map_err(|e| {
            (ErrorKind::Unreachable, format!("could not connect to the power controller: {e}"), e.to_string())
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| {
                (ErrorKind::Failed, format!("HTTP handshake with the power controller failed: {e}"), e.to_string())
            })?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(if path.is_empty() { "/" } else { path })
            .header(header::HOST, &self.host_header)
            .header(header::USER_AGENT, "phasebox-device")
            .header(header::ACCEPT, "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth.expose());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| (ErrorKind::InvalidRequest, "could not build the HTTP request".into(), e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| {
            (ErrorKind::Failed, format!("HTTP request to the power controller failed: {e}"), e.to_string())
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 64 << 10)
            .collect()
            .await
            .map_err(|e| (ErrorKind::Failed, "reading the power controller's answer failed".into(), e.to_string()))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }
}

#[derive(Deserialize)]
struct StateBody {
    state: String,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/power/").unwrap();
        assert_eq!(t.connect, "127.0.0.1:8080");
        assert_eq!(t.path, "/power");
        assert!(t.authorization.is_none());
        let t = HttpTarget::parse("http://admin:s%40cret@pdu.lab/outlets/7").unwrap();
        assert_eq!(t.connect, "pdu.lab:80");
        assert_eq!(t.host_header, "pdu.lab");
        assert_eq!(t.authorization.unwrap().expose(), format!("Basic {}", base64(b"admin:s@cret")));
        let t = HttpTarget::parse("http://pdu.lab").unwrap();
        assert_eq!(t.path, "");
        for bad in ["https://pdu", "ftp://pdu", "pdu.lab", "http:///x", "http://pdu/x?y=1"] {
            let err = HttpTarget::parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(!err.contains("pdu"), "the message must not repeat the URL: {err}");
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn states() {
        assert_eq!(PowerState::parse(" ON\n"), PowerState::On);
        assert_eq!(PowerState::parse("off"), PowerState::Off);
        assert_eq!(PowerState::parse("Chassis Power is on"), PowerState::Unknown);
    }
}
