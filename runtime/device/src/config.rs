//! The operator's description of one DUT ([`DeviceConfig`]), read from TOML.
//!
//! ```toml
//! name = "dut-01"
//! cleanup = "power-off"
//!
//! [facts]
//! arch = "arm64"
//!
//! [power.http]
//! base_url = "http://pdu-3.lab:8080/outlets/7"
//!
//! [console.tcp]
//! address = "ser2net.lab:7001"
//!
//! [exec.ssh]
//! host = "10.0.4.17"
//! user = "ubuntu"
//! key_file = "/etc/phasebox/keys/dut-01"
//! host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… root@dut-01"
//!
//! [flash]
//! target = "/dev/disk/by-id/usb-SDMux_dut-01"
//! max_bytes = 34359738368
//! ```
//!
//! Unknown keys are errors. Durations are a number of seconds or a string such as `"10s"`,
//! `"500ms"`, `"1m30s"` (the grammar of every phasebox configuration: `phasebox_config::units`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::record::Handle;
use phasebox_config::units::serde_duration as duration;

/// One DUT as the agent operator describes it: its name, the facts shown to plugins, and how
/// each of its handles is reached. A handle left out is not available on this DUT.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The DUT's name, unique among the agent's devices. It names the DUT in errors, records
    /// and logs, and is given to plugins as the fact `name`.
    pub name: String,
    /// Public facts about the DUT shown to phase plugins (for example `arch`, `serial`, `model`).
    /// Put nothing here that plugins must not see.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// What the agent does with the DUT after every job (see [`CleanupAction`]); default `none`.
    #[serde(default)]
    pub cleanup: CleanupAction,
    /// How the agent switches the DUT's power. Without it the DUT has no power handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerConfig>,
    /// Where the DUT's serial console is served. Without it the DUT has no console handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
    /// How commands run on the DUT. Without it the DUT has no exec handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecConfig>,
    /// Where images for the DUT are written. Without it the DUT has no flash handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash: Option<FlashConfig>,
}

/// What the agent does with a DUT after every job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanupAction {
    /// Switch the DUT off (`"power-off"`).
    PowerOff,
    /// Power-cycle the DUT, so the next job finds it freshly booted (`"reset"`).
    Reset,
    /// Leave the DUT as the job left it (`"none"`, the default).
    #[default]
    None,
}

impl std::fmt::Display for CleanupAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CleanupAction::PowerOff => "power-off",
            CleanupAction::Reset => "reset",
            CleanupAction::None => "none",
        })
    }
}

/// How the agent switches a DUT's power: `[power.commands]` or `[power.http]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum PowerConfig {
    /// Shell commands run on the agent host (`[power.commands]`).
    Commands(PowerCommands),
    /// An HTTP power controller (`[power.http]`).
    Http(HttpPower),
}

/// Power control by shell commands that the agent host runs with `sh -c`.
///
/// A command succeeds when it exits with status 0 within `timeout`; on timeout its whole
/// process group is killed. Each runs with `PHASEBOX_DEVICE` set to the DUT's name. The commands
/// often carry credentials (`ipmitool -P …`, an SNMP community), so they are never shown: not in
/// `Debug`, not in errors, not in records.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCommands {
    /// Switches the DUT on.
    pub on: SecretString,
    /// Switches the DUT off.
    pub off: SecretString,
    /// Power-cycles the DUT. Without it a cycle is `off`, a pause of `cycle_off_time`, `on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<SecretString>,
    /// Prints the power state: output `on` or `off` (trimmed, any case); anything else reads as
    /// unknown. Without it the power status is always unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SecretString>,
    /// Time limit for each command; default 60 s.
    #[serde(default = "default_command_timeout", with = "duration")]
    pub timeout: Duration,
    /// How long a cycle without a `cycle` command leaves the DUT off; default 3 s.
    #[serde(default = "default_cycle_off_time", with = "duration")]
    pub cycle_off_time: Duration,
}

/// Power control through an HTTP power controller with this REST shape:
///
/// - `POST {base_url}/on`, `POST {base_url}/off`, `POST {base_url}/cycle`: any 2xx status is
///   success; a JSON body `{"state": "on" | "off"}` in the answer is read when present;
/// - `GET {base_url}/status` answers `{"state": "on" | "off"}`; any other state reads as unknown.
///
/// Only `http://` URLs are supported.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPower {
    /// The controller's base URL for this DUT's outlet, e.g. `http://pdu-3.lab:8080/outlets/7`.
    /// Credentials may be given as `http://user:password@host/…` (sent as HTTP basic auth);
    /// they are redacted from `Debug`.
    pub base_url: String,
    /// Time limit for each request, connection included; default 10 s.
    #[serde(default = "default_http_timeout", with = "duration")]
    pub timeout: Duration,
}

impl fmt::Debug for HttpPower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPower")
            .field("base_url", &redact_userinfo(&self.base_url))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `http://user:pass@host/x` → `http://***@host/x`.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Where a DUT's serial console is served: `[console.tcp]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConsoleConfig {
    /// A TCP console server, such as ser2net in raw mode (`[console.tcp]`).
    Tcp(TcpConsole),
}

/// A serial console served over raw TCP.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConsole {
    /// `host:port` of the console server.
    pub address: String,
    /// Time limit for connecting; default 10 s.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
}

/// How commands run on a DUT: `[exec.ssh]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ExecConfig {
    /// SSH with a key the agent holds (`[exec.ssh]`).
    Ssh(SshExec),
}

/// Command execution over SSH, authenticated with a private key that the agent holds.
///
/// The server's host key is checked against `host_key` (or the key in `host_key_file`); only
/// `insecure_accept_any_host_key = true` turns the check off, and exactly one of the three must
/// be given. The key file's contents are read once by [`Device::new`](crate::Device::new) and
/// never shown.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshExec {
    /// Host name or address of the DUT's SSH server.
    pub host: String,
    /// Port of the DUT's SSH server; default 22.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// User to log in as. Its login shell must be a POSIX shell (environment variables are
    /// passed as `export` statements, see [`ExecRequest`](crate::ExecRequest)).
    pub user: String,
    /// The agent's private key (OpenSSH or PKCS#8 PEM, not passphrase-protected).
    pub key_file: PathBuf,
    /// The server's host public key, as an OpenSSH public key line
    /// (`ssh-ed25519 AAAA… comment`, as in `/etc/ssh/ssh_host_ed25519_key.pub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// A file holding the server's host public key line (alternative to `host_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_file: Option<PathBuf>,
    /// Accept whatever host key the server presents. Only for throwaway setups: anyone who can
    /// answer on the DUT's address then receives the commands and files meant for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_accept_any_host_key: bool,
    /// Time limit for connecting and logging in; default 10 s.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Interval of SSH keepalives on the connection, which detect a DUT that went away;
    /// default 15 s. Three unanswered keepalives close the connection.
    #[serde(default = "default_keepalive", with = "duration")]
    pub keepalive_interval: Duration,
    /// Time limit for one `copy_to` or `copy_from`; default 10 min.
    #[serde(default = "default_copy_timeout", with = "duration")]
    pub copy_timeout: Duration,
    /// Largest file `copy_from` accepts; default 256 MiB.
    #[serde(default = "default_max_copy_bytes")]
    pub max_copy_bytes: u64,
}

/// Where images for a DUT are written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlashConfig {
    /// Absolute path of the block device (for example an SD mux's disk, best named through
    /// `/dev/disk/by-id/…`) or image file that holds the DUT's storage. A flash writes here and
    /// nowhere else: a block device is written in place, a regular file is truncated first.
    pub target: PathBuf,
    /// Largest image accepted, in bytes; a write past it fails.
    pub max_bytes: u64,
}

/// A string that is never shown: `Debug` prints `"<redacted>"`.
///
/// Used for power commands, which often carry credentials. [`SecretString::expose`] gives the
/// value to the code that runs it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_cycle_off_time() -> Duration {
    Duration::from_secs(3)
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}
fn default_copy_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_ssh_port() -> u16 {
    22
}
fn default_max_copy_bytes() -> u64 {
    256 << 20
}

impl DeviceConfig {
    /// Parses and [validates](Self::validate) a config from TOML text.
    ///
    /// A parse error is reported with its line and column but without the offending line's
    /// text, which could be a command carrying a password.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: DeviceConfig = toml::from_str(text).map_err(|e| {
            let position = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                format!("line {line}, column {column}: ")
            });
            ConfigError {
                device: None,
                field: "toml".into(),
                message: format!("{}{}", position.unwrap_or_default(), e.message()),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Renders the config as TOML (secrets included: this is for writing config files).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a device config always serializes")
    }

    /// The handles this config provides.
    pub fn handles(&self) -> Vec<Handle> {
        let mut handles = Vec::new();
        if self.power.is_some() {
            handles.push(Handle::Power);
        }
        if self.console.is_some() {
            handles.push(Handle::Console);
        }
        if self.exec.is_some() {
            handles.push(Handle::Exec);
        }
        if self.flash.is_some() {
            handles.push(Handle::Flash);
        }
        handles
    }

    /// Checks the values that parsing alone does not: a usable name, well-formed addresses and
    /// URLs, exactly one host key choice, an absolute flash target, a cleanup that has the power
    /// handle it needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError {
                device: None,
                field: "name".into(),
                message: "must be 1 to 128 printable ASCII characters without spaces".into(),
            });
        }
        let err = |field: &str, message: String| ConfigError::new(name, field, message);
        match &self.power {
            Some(PowerConfig::Commands(c)) => {
                for (field, value) in [("on", Some(&c.on)), ("off", Some(&c.off)), ("cycle", c.cycle.as_ref())]
                    .into_iter()
                    .chain([("status", c.status.as_ref())])
                {
                    if value.is_some_and(|v| v.expose().trim().is_empty()) {
                        return Err(err(&format!("power.commands.{field}"), "must not be empty".into()));
                    }
                }
                if c.timeout.is_zero() {
                    return Err(err("power.commands.timeout", "must be more than zero".into()));
                }
            }
            Some(PowerConfig::Http(h)) => {
                crate::power::HttpTarget::parse(&h.base_url).map_err(|message| err("power.http.base_url", message))?;
                if h.timeout.is_zero() {
                    return Err(err("power.http.timeout", "must be more than zero".into()));
                }
            }
            None => {}
        }
        if let Some(ConsoleConfig::Tcp(t)) = &self.console {
            check_host_port(&t.address).map_err(|message| err("console.tcp.address", message))?;
        }
        if let Some(ExecConfig::Ssh(s)) = &self.exec {
            if s.host.is_empty() || s.host.contains(char::is_whitespace) {
                return Err(err("exec.ssh.host", "must be a host name or address".into()));
            }
            if s.port == 0 {
                return Err(err("exec.ssh.port", "must not be 0".into()));
            }
            if s.user.is_empty() || s.user.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(err("exec.ssh.user", "must be a user name".into()));
            }
            let choices = usize::from(s.host_key.is_some())
                + usize::from(s.host_key_file.is_some())
                + usize::from(s.insecure_accept_any_host_key);
            if choices != 1 {
                return Err(err(
                    "exec.ssh.host_key",
                    "give exactly one of host_key, host_key_file or insecure_accept_any_host_key = true".into(),
                ));
            }
            if let Some(line) = &s.host_key {
                crate::exec::parse_host_key(line).map_err(|message| err("exec.ssh.host_key", message))?;
            }
        }
        if let Some(f) = &self.flash {
            if !f.target.is_absolute() {
                return Err(err("flash.target", "must be an absolute path".into()));
            }
            if f.max_bytes == 0 {
                return Err(err("flash.max_bytes", "must be more than zero".into()));
            }
        }
        if self.cleanup != CleanupAction::None && self.power.is_none() {
            return Err(err("cleanup", "power-off and reset need a [power] section".into()));
        }
        Ok(())
    }
}

fn check_host_port(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("must be host:port".into());
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("must be host:port".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err("must end in a port number (1-65535)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(redact_userinfo("http://admin:hunter2@pdu:80/o/1"), "http://***@pdu:80/o/1");
        assert_eq!(redact_userinfo("http://pdu:80/a@b"), "http://pdu:80/a@b");
        assert_eq!(redact_userinfo("http://pdu"), "http://pdu");
    }

    #[test]
    fn host_port() {
        assert!(check_host_port("127.0.0.1:7001").is_ok());
        assert!(check_host_port("[::1]:7001").is_ok());
        assert!(check_host_port("ser2net.lab:7001").is_ok());
        assert!(check_host_port("ser2net.lab").is_err());
        assert!(check_host_port(":7001").is_err());
        assert!(check_host_port("h:0").is_err());
    }
}
