//! Where the client verbs find the server and credentials, and the file `login` writes.
//!
//! Precedence, lowest first: the default server (Testflinger's public one) < the settings file
//! < environment (`PHASEBOX_*`, then Testflinger's `TESTFLINGER_*`) < command-line flags.
//!
//! The settings file is `$XDG_CONFIG_HOME/phasebox/client.toml` (or
//! `~/.config/phasebox/client.toml`; `PHASEBOX_CLIENT_CONFIG` names another). `phasebox login`
//! writes it with mode 0600; it holds refresh tokens, never secret keys:
//!
//! ```toml
//! server = "https://testflinger.example.com"   # the default for every verb
//! ca_file = "/etc/ssl/lab-ca.pem"                # optional
//! allow_plain_http = false                      # optional
//!
//! [auth."https://testflinger.example.com"]
//! client_id = "alice"
//! refresh_token = "…"
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use phasebox_client::{ClientConfig, Credentials, DEFAULT_SERVER, Secret};
use serde::{Deserialize, Serialize};

/// The settings file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// Default server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Extra CA certificates (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` to hosts other than loopback.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plain_http: bool,
    /// Server URL → stored login.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth: BTreeMap<String, StoredLogin>,
}

/// A login kept for one server.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredLogin {
    /// The client id the refresh token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The refresh token.
    pub refresh_token: String,
}

impl std::fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLogin").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// The settings file's path.
pub fn settings_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PHASEBOX_CLIENT_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".config")))
        .context("cannot place the settings file: neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(base.join("phasebox").join("client.toml"))
}

/// Reads the settings file (empty when it does not exist). A file that other users can read or
/// change is refused, as every phasebox file holding a secret is (`phasebox_config::secret_file`).
pub fn load(path: &Path) -> anyhow::Result<SettingsFile> {
    let text = match phasebox_config::secret_file::read(path, "settings file (it holds login tokens)") {
        Ok(t) => t,
        Err(phasebox_config::secret_file::SecretFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(SettingsFile::default());
        }
        Err(e) => return Err(e.into()),
    };
    toml::from_str(&text).with_context(|| format!("{} is not a valid settings file", path.display()))
}

/// Writes the settings file with mode 0600 (its directory 0700 when created), replacing it
/// atomically.
pub fn save(path: &Path, settings: &SettingsFile) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(settings).context("serialising the settings")?;
    let tmp = dir.join(format!(".client.toml.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(b"# Written by `phasebox login`: keep it private (mode 0600).\n")?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", path.display()))
}

/// Command-line flags that name the server and credentials.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub server: Option<String>,
    pub client_id: Option<String>,
    pub secret_key: Option<String>,
    pub allow_plain_http: bool,
    pub ca_file: Option<PathBuf>,
}

fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// Everything resolved: the client configuration and where it came from.
pub struct Resolved {
    pub config: ClientConfig,
    pub settings_path: PathBuf,
    pub settings: SettingsFile,
    /// The server URL as normalised for the `[auth]` table.
    pub server_key: String,
}

/// Applies the precedence rules. `use_stored_login`: take the refresh token the settings file
/// holds for this server when no credentials are given.
pub fn resolve(flags: &Flags, use_stored_login: bool) -> anyhow::Result<Resolved> {
    let settings_path = settings_path()?;
    let settings = load(&settings_path)?;
    let server = flags
        .server
        .clone()
        .or_else(|| env(&["PHASEBOX_SERVER", "TESTFLINGER_SERVER"]))
        .or_else(|| settings.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("Server must start with \"http://\" or \"https://\" - currently set to: \"{server}\"");
    }
    let server_key = server.trim_end_matches('/').to_owned();

    let (client_id, secret_key) = match (&flags.client_id, &flags.secret_key) {
        (Some(id), Some(key)) => (Some(id.clone()), Some(key.clone())),
        (None, None) => (
            env(&["PHASEBOX_CLIENT_ID", "TESTFLINGER_CLIENT_ID"]),
            env(&["PHASEBOX_SECRET_KEY", "TESTFLINGER_SECRET_KEY"]),
        ),
        _ => bail!("--client-id and --secret-key go together: give both or neither"),
    };
    let mut config = ClientConfig::new(server);
    config.user_agent = concat!("phasebox/", env!("CARGO_PKG_VERSION")).to_owned();
    config.allow_plain_http = flags.allow_plain_http
        || env(&["PHASEBOX_ALLOW_PLAIN_HTTP"]).is_some_and(|v| v == "1" || v == "true")
        || settings.allow_plain_http;
    config.ca_file =
        flags.ca_file.clone().or_else(|| env(&["PHASEBOX_CA_FILE"]).map(PathBuf::from)).or(settings.ca_file.clone());
    match (client_id, secret_key) {
        (Some(id), Some(key)) => config.credentials = Some(Credentials::new(id, key)),
        (Some(_), None) => bail!("a client id is set but no secret key (TESTFLINGER_SECRET_KEY or --secret-key)"),
        (None, Some(_)) => bail!("a secret key is set but no client id (TESTFLINGER_CLIENT_ID or --client-id)"),
        (None, None) => {
            if use_stored_login && let Some(stored) = settings.auth.get(&server_key) {
                config.refresh_token = Some(Secret::new(stored.refresh_token.clone()));
            }
        }
    }
    Ok(Resolved { config, settings_path, settings, server_key })
}
