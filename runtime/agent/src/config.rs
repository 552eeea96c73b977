//! The agent's configuration: which server, how to authenticate, how to talk to it, where to
//! keep what could not be delivered yet, and the devices under test (DUTs) this process serves.
//!
//! It is TOML (the example with every key is `config/agent.toml`); unknown keys are errors.
//! Relative paths are taken from the file's directory. Each `[[dut]]` names a *runner
//! configuration* ([`phasebox_job::RunnerConfig`]: plugins, default plugin per phase, policy,
//! device config), which is read by that DUT's own loop: a broken runner or device file takes
//! only that DUT out of service, and is read again until it is fixed.
//!
//! ```toml
//! server = "https://phasebox.lab.example"
//! protocol = "phasebox"                # or "testflinger"
//! spool_dir = "/var/lib/phasebox-agent"
//!
//! [credentials]
//! client_id = "agent-host-07"
//! secret_file = "/etc/phasebox/agent.secret"
//!
//! [[dut]]
//! name = "rpi4-07"
//! queues = ["rpi4"]
//! runner = "runner-rpi4.toml"
//! device = "devices/rpi4-07.toml"
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phasebox_config::units::serde_duration as duration;
use phasebox_config::{Rebase, rebase};
use phasebox_sandbox::Secret;
use serde::Deserialize;

use crate::error::AgentError;

/// How the agent claims jobs and notices cancels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A phasebox server: claims wait on the server (`GET /v1/job?…&wait=N`), so a job is picked
    /// up the moment it is submitted; cancels arrive on the job's event stream.
    #[default]
    Phasebox,
    /// Any Testflinger server: plain claims every `poll_interval` (Testflinger's agent default:
    /// 10 s); a running job's state is polled every `cancel_poll`.
    Testflinger,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Phasebox => "phasebox",
            Protocol::Testflinger => "testflinger",
        })
    }
}

/// The agent's configuration. See the [module docs](self) and `config/agent.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The server's base URL (`https://…`; `http://` only to loopback unless
    /// `allow_plain_http`).
    pub server: String,
    /// How to authenticate. Without it requests go out anonymously, which only an old
    /// Testflinger server without agent authentication accepts.
    #[serde(default)]
    pub credentials: Option<CredentialsConfig>,
    /// A PEM file of extra CA certificates to trust (a lab CA). Default: the webpki roots only.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` to hosts other than loopback: tokens and secret values would cross the
    /// network unencrypted. Default: false.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// `phasebox` (long-poll claims, cancels on the event stream) or `testflinger` (plain
    /// polling, for a Testflinger server). Default: `phasebox`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where each DUT keeps its spool (output, results and artifacts not yet delivered, in
    /// order) and the record of the job it is running. Never holds secret values.
    pub spool_dir: PathBuf,
    /// Where job directories (attachments, artifacts, scratch) are made, one per running job
    /// under `<work_dir>/<dut>/`. Default: `<spool_dir>/work`.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// Testflinger protocol: the pause between claims when there was no job (Testflinger's
    /// `polling_interval`). Both protocols: how often a DUT set offline or in maintenance on the
    /// server looks again. Default: 10 s.
    #[serde(default = "default_poll_interval", with = "duration")]
    pub poll_interval: Duration,
    /// phasebox protocol: how long one claim waits on the server for a job (the server caps it,
    /// 60 s by default). Default: 30 s.
    #[serde(default = "default_long_poll", with = "duration")]
    pub long_poll: Duration,
    /// Testflinger protocol: how often a running job's state is read to notice a cancel.
    /// Default: 500 ms.
    #[serde(default = "default_cancel_poll", with = "duration")]
    pub cancel_poll: Duration,
    /// How often each DUT tells the server it is alive: between jobs the agent re-posts the
    /// DUT's state when the server last heard of it longer ago than this; during a job it
    /// re-posts the running phase. Default: 60 s.
    #[serde(default = "default_heartbeat", with = "duration")]
    pub heartbeat: Duration,
    /// After SIGTERM: running jobs may go on for the first half of this, are then cancelled
    /// (their cleanup phase runs), and whatever still runs at four fifths is abandoned (the next
    /// start reports it and cleans the device up); the rest is for delivering or spooling what
    /// is left. Default: 30 s.
    #[serde(default = "default_grace_period", with = "duration")]
    pub grace_period: Duration,
    /// The devices under test, one loop each.
    #[serde(rename = "dut")]
    pub duts: Vec<DutEntry>,
}

/// How the agent authenticates: an `agent`-role client id and its secret key, which the
/// agent exchanges for access tokens (`POST /v1/oauth2/token`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// The client id.
    pub client_id: String,
    /// A file holding the secret key (trailing newline ignored); it should be readable by the
    /// agent's user only.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret key, when there is no `secret_file`.
    #[serde(default)]
    pub secret_env: Option<String>,
}

impl fmt::Debug for CredentialsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsConfig")
            .field("client_id", &self.client_id)
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

/// One device under test.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutEntry {
    /// The DUT's name: the agent name the server knows it by (`/v1/agents/data/<name>`, the
    /// `agent_name` cookie), and the `name` plugins see (it replaces the runner configuration's
    /// `[dut] name`). Unique within the file.
    pub name: String,
    /// The queues it takes jobs from. Each is advertised to the server at start (Testflinger's
    /// `advertised_queues`: what `list-queues` shows), with its description from
    /// `advertised_queues` or none.
    pub queues: Vec<String>,
    /// Descriptions of some of `queues`, as `list-queues` shows them: `{ rpi4 = "Raspberry Pi 4,
    /// 8 GB" }`.
    #[serde(default)]
    pub advertised_queues: std::collections::BTreeMap<String, String>,
    /// Its runner configuration (plugins, defaults per phase, policy, device; see
    /// `config/runner.toml`).
    pub runner: PathBuf,
    /// Its device configuration (see `config/device.toml`), replacing the runner
    /// configuration's `device`, so that many DUTs can share one runner file.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// Where it is, as reported to the server (Testflinger's `location`).
    #[serde(default)]
    pub location: Option<String>,
    /// What provisions it, as reported to the server (Testflinger's `provision_type`).
    #[serde(default)]
    pub provision_type: Option<String>,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_long_poll() -> Duration {
    Duration::from_secs(30)
}
fn default_cancel_poll() -> Duration {
    Duration::from_millis(500)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(60)
}
fn default_grace_period() -> Duration {
    Duration::from_secs(30)
}

impl AgentConfig {
    /// Reads a configuration file; relative paths in it are taken from its directory.
    pub fn from_file(path: &Path) -> Result<Self, AgentError> {
        let config: AgentConfig = phasebox_config::load(path).map_err(|e| config_error(path, e))?;
        config.validate().map_err(|reason| AgentError::Config { path: path.to_owned(), reason })?;
        Ok(config)
    }

    /// Parses configuration text; relative paths are taken from `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, AgentError> {
        let inline = Path::new("(inline)");
        let config: AgentConfig =
            phasebox_config::parse(text, inline, base_dir).map_err(|e| config_error(inline, e))?;
        config.validate().map_err(|reason| AgentError::Config { path: inline.to_owned(), reason })?;
        Ok(config)
    }

    /// Checks what serde cannot: DUT names unique and usable in a URL, queues given, intervals
    /// positive, credentials complete.
    pub fn validate(&self) -> Result<(), String> {
        if self.duts.is_empty() {
            return Err("no [[dut]]: the agent needs at least one device under test to serve".into());
        }
        let mut names = BTreeSet::new();
        for dut in &self.duts {
            let valid = !dut.name.is_empty()
                && dut.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && dut.name != "."
                && dut.name != "..";
            if !valid {
                return Err(format!(
                    "dut name {:?}: use letters, digits, `-`, `_` and `.` only (it is part of URLs and file names)",
                    dut.name
                ));
            }
            if !names.insert(dut.name.as_str()) {
                return Err(format!("dut name {:?} is used twice: each DUT needs its own name", dut.name));
            }
            if dut.queues.is_empty() || dut.queues.iter().any(|q| q.trim().is_empty()) {
                return Err(format!("dut {:?}: queues must list at least one non-empty queue name", dut.name));
            }
            if let Some(q) = dut.advertised_queues.keys().find(|q| !dut.queues.contains(q)) {
                return Err(format!(
                    "dut {:?}: advertised_queues describes {q:?}, which is not one of its queues {:?}",
                    dut.name, dut.queues
                ));
            }
        }
        for (key, value) in [
            ("poll_interval", self.poll_interval),
            ("long_poll", self.long_poll),
            ("cancel_poll", self.cancel_poll),
            ("heartbeat", self.heartbeat),
            ("grace_period", self.grace_period),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be longer than zero"));
            }
        }
        if let Some(c) = &self.credentials {
            if c.client_id.trim().is_empty() {
                return Err("credentials.client_id is empty".into());
            }
            match (&c.secret_file, &c.secret_env) {
                (Some(_), Some(_)) => {
                    return Err("credentials: give secret_file or secret_env, not both".into());
                }
                (None, None) => return Err("credentials: give secret_file or secret_env".into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Where job directories go.
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| self.spool_dir.join("work"))
    }

    /// Reads the client secret from its file (which only the agent's user may read, see
    /// `phasebox_config::secret_file`) or environment variable.
    pub fn client_secret(&self) -> Result<Option<(String, Secret)>, AgentError> {
        let Some(c) = &self.credentials else { return Ok(None) };
        let value = match (&c.secret_file, &c.secret_env) {
            (Some(path), _) => phasebox_config::secret_file::read(path, "credentials.secret_file")
                .map_err(|e| AgentError::Credentials { reason: e.to_string() })?
                .to_string(),
            (None, Some(var)) => std::env::var(var).map_err(|_| AgentError::Credentials {
                reason: format!("credentials.secret_env: the environment variable {var} is not set"),
            })?,
            (None, None) => unreachable!("validated: one of secret_file and secret_env"),
        };
        if value.is_empty() {
            return Err(AgentError::Credentials { reason: "the client secret is empty".into() });
        }
        Ok(Some((c.client_id.clone(), Secret::new(value))))
    }
}

impl Rebase for AgentConfig {
    fn rebase(&mut self, base: &Path) {
        rebase(&mut self.spool_dir, base);
        let secret_file = self.credentials.as_mut().and_then(|c| c.secret_file.as_mut());
        for path in [self.work_dir.as_mut(), self.ca_file.as_mut(), secret_file].into_iter().flatten() {
            rebase(path, base);
        }
        for dut in &mut self.duts {
            rebase(&mut dut.runner, base);
            if let Some(device) = &mut dut.device {
                rebase(device, base);
            }
        }
    }
}

/// The agent's error for a configuration file that cannot be used.
fn config_error(path: &Path, error: phasebox_config::ConfigError) -> AgentError {
    let reason = match error {
        phasebox_config::ConfigError::Parse { message, .. } => message.trim_end().to_owned(),
        phasebox_config::ConfigError::Read { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    AgentError::Config { path: path.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "server = \"https://tf.example\"\nspool_dir = \"spool\"\n\
                           [[dut]]\nname = \"d1\"\nqueues = [\"q\"]\nrunner = \"r.toml\"\n";

    #[test]
    fn defaults_and_relative_paths() {
        let c = AgentConfig::from_toml(MINIMAL, Path::new("/etc/phasebox")).unwrap();
        assert_eq!(c.protocol, Protocol::Phasebox);
        assert_eq!(c.spool_dir, Path::new("/etc/phasebox/spool"));
        assert_eq!(c.work_dir(), Path::new("/etc/phasebox/spool/work"));
        assert_eq!(c.duts[0].runner, Path::new("/etc/phasebox/r.toml"));
        assert_eq!(c.poll_interval, Duration::from_secs(10));
        assert_eq!(c.long_poll, Duration::from_secs(30));
        assert_eq!(c.cancel_poll, Duration::from_millis(500));
        assert_eq!(c.heartbeat, Duration::from_secs(60));
        assert_eq!(c.grace_period, Duration::from_secs(30));
        assert!(c.credentials.is_none());
        assert!(c.client_secret().unwrap().is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        for (extra, needle) in [
            ("protocl = \"phasebox\"\n", "protocl"),
            ("protocol = \"grpc\"\n", "grpc"),
            ("heartbeat = \"often\"\n", "often"),
            ("heartbeat = 0\n", "heartbeat"),
            ("[credentials]\nclient_id = \"a\"\n", "secret_file"),
            ("[credentials]\nclient_id = \"a\"\nsecret = \"x\"\n", "secret"),
        ] {
            let text = format!("{extra}{MINIMAL}");
            // Keys after a table header belong to it; put top-level keys first.
            let text = if extra.starts_with('[') { format!("{MINIMAL}{extra}") } else { text };
            let err = AgentConfig::from_toml(&text, Path::new(".")).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let twice = format!("{MINIMAL}[[dut]]\nname = \"d1\"\nqueues = [\"q\"]\nrunner = \"r.toml\"\n");
        assert!(AgentConfig::from_toml(&twice, Path::new(".")).unwrap_err().to_string().contains("twice"));
        let slash = MINIMAL.replace("\"d1\"", "\"a/b\"");
        assert!(AgentConfig::from_toml(&slash, Path::new(".")).is_err());
        let no_queue = MINIMAL.replace("[\"q\"]", "[]");
        assert!(AgentConfig::from_toml(&no_queue, Path::new(".")).is_err());
        let described = format!("{MINIMAL}advertised_queues = {{ q = \"the q\" }}\n");
        let c = AgentConfig::from_toml(&described, Path::new(".")).unwrap();
        assert_eq!(c.duts[0].advertised_queues["q"], "the q");
        let foreign = format!("{MINIMAL}advertised_queues = {{ other = \"not served\" }}\n");
        let err = AgentConfig::from_toml(&foreign, Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("\"other\", which is not one of its queues"), "{err}");
        let no_dut = "server = \"https://x\"\nspool_dir = \"s\"\ndut = []\n";
        assert!(AgentConfig::from_toml(no_dut, Path::new(".")).unwrap_err().to_string().contains("[[dut]]"));
    }

    #[test]
    fn the_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent.toml");
        let c = AgentConfig::from_file(&path).unwrap();
        assert_eq!(c.duts.len(), 1);
        assert_eq!(c.duts[0].queues, ["sim-dut"]);
        assert!(c.duts[0].runner.ends_with("config/runner.toml"));
        assert_eq!(c.credentials.as_ref().unwrap().client_id, "agent-host-01");
    }

    #[test]
    fn the_secret_comes_from_its_file_and_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.secret");
        std::fs::write(&file, "s3cret-value-0123\n").unwrap();
        let text = format!("{MINIMAL}[credentials]\nclient_id = \"agent-1\"\nsecret_file = \"agent.secret\"\n");
        let c = AgentConfig::from_toml(&text, dir.path()).unwrap();

        // Readable by others: refused (it used to be used with a warning), without the value.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = c.client_secret().unwrap_err().to_string();
        assert!(error.contains("credentials.secret_file") && error.contains("chmod 600"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (id, secret) = c.client_secret().unwrap().unwrap();
        assert_eq!(id, "agent-1");
        assert_eq!(secret.expose(), "s3cret-value-0123");
        assert!(!format!("{c:?}{secret:?}").contains("s3cret"));
    }
}
