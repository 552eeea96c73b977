//! [`ServerConfig`]: the server's TOML configuration.
//!
//! Precedence: built-in defaults < the TOML file < environment variables (only for the two
//! keys, which may come from `PHASEBOX_SECRETS_KEY` and `PHASEBOX_JWT_SIGNING_KEY`). Unknown keys
//! in the file are errors. Relative paths (and a relative SQLite file) are taken from the
//! file's directory. Files holding a key (`*_key_file`, `webhook_auth_file`) must be readable by
//! the server's user only (`chmod 600`): the server refuses to start otherwise. An example with
//! every key and its default:
//!
//! ```toml
//! # Where the store lives: `sqlite://PATH` (created if missing; one file, WAL) or
//! # `postgres://user:password@host/db` (any number of server replicas may share it).
//! # PostgreSQL session settings go in the URL as `options[NAME]=VALUE` parameters. Commits are
//! # acknowledged once fsynced; `?options[synchronous_commit]=off` acknowledges them before
//! # (several times the jobs/s on a slow disk), at the price of losing the last moments of
//! # commits — a claim among them, so a job could be dispatched twice — if PostgreSQL or its
//! # machine crashes. SQLite always acknowledges commits once they are in its WAL file: safe
//! # against a crash of the server, not of the machine.
//! database_url = "sqlite:///var/lib/phasebox/server.db"
//! # Attachments, artifacts and plugins are files below this directory (shared storage when
//! # several replicas share one PostgreSQL database).
//! blob_dir = "/var/lib/phasebox/blobs"
//! # Like Testflinger with OIDC off: requests without `Authorization` act as `contributor`.
//! # false: every role-gated endpoint requires a token (Testflinger with OIDC on).
//! anonymous_access = true
//! # 32 random bytes, base64, in a file readable only by the server. Without it (and without
//! # PHASEBOX_SECRETS_KEY) the server has no secrets store, as a Testflinger server without one.
//! # secrets_key_file = "/etc/phasebox/secrets.key"
//! # HS256 key for access tokens (any length ≥ 32 bytes, raw file contents). Without it (and
//! # without PHASEBOX_JWT_SIGNING_KEY) a random key is made once into `jwt-signing.key` in
//! # `blob_dir` (mode 0600; refused unless owned by the server's user and closed to others).
//! # jwt_signing_key_file = "/etc/phasebox/jwt.key"
//! # Durations: seconds (`600`) or text (`"10m"`, `"6d"`, `"1h30m"`); the older names with
//! # `_secs` (`access_token_ttl_secs = 600`) are still read.
//! access_token_ttl = "10m"
//! refresh_token_ttl = "6d"
//! jwt_leeway = "5s"
//! # POST /v1/result bodies of this size or more are refused with 413 (Testflinger: 16 MiB).
//! max_result_bytes = 16777216
//! # Every other JSON body (jobs, log fragments, agents, ...).
//! max_json_bytes = 16777216
//! max_attachment_bytes = 1073741824
//! max_artifact_bytes = 1073741824
//! max_plugin_bytes = 268435456
//! # The plugin registry's quota: how many components, and their total size.
//! max_plugins = 1000
//! max_plugin_store_bytes = 10737418240
//! # The longest an agent may wait in `GET /v1/job?...&wait=N` (phasebox long-poll).
//! max_long_poll = "1m"
//! # Jobs, their logs, events, attachments and artifacts are deleted this long after creation
//! # (Testflinger: 7 days). 0 keeps them forever. (`job_retention_days = 7` is still read.)
//! job_retention = "7d"
//! # Testflinger's WEBHOOK_URL: `POST /v1/job/<id>/events` forwards only to this scheme+host.
//! # webhook_url = "https://hooks.example.com"
//! # webhook_auth_file = "/etc/phasebox/webhook.token"
//! # HTTPS: a certificate chain and its private key (PEM). With both set the server speaks TLS
//! # only; without them plain HTTP (which `phasebox server` allows on loopback only).
//! # tls_cert_file = "/etc/phasebox/tls/cert.pem"
//! # tls_key_file = "/etc/phasebox/tls/key.pem"
//! # Serve `/metrics` on this separate address only (e.g. "127.0.0.1:9090"); without it,
//! # `/metrics` is served by the API listener.
//! # metrics_listen = "127.0.0.1:9090"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phasebox_config::units::serde_duration;
use phasebox_config::{Rebase, rebase, secret_file};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Environment variable that can hold the secrets key (base64 of 32 bytes).
pub const SECRETS_KEY_ENV: &str = "PHASEBOX_SECRETS_KEY";
/// Environment variable that can hold the JWT signing key (raw text, ≥ 32 bytes).
pub const JWT_KEY_ENV: &str = "PHASEBOX_JWT_SIGNING_KEY";

/// The server configuration (see the module docs for the TOML form and defaults).
///
/// `Debug` never shows key material: keys are read from their files or the environment only
/// when the server starts ([`ServerConfig::secrets_key`], [`ServerConfig::jwt_signing_key`]).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `sqlite://PATH` or `postgres://...` (also `postgresql://`; session settings as
    /// `options[NAME]=VALUE` query parameters).
    pub database_url: String,
    /// Directory of attachments, artifacts and plugins.
    pub blob_dir: PathBuf,
    /// Requests without `Authorization` act as an anonymous `contributor`.
    pub anonymous_access: bool,
    /// File holding the secrets encryption key (base64 of 32 bytes).
    pub secrets_key_file: Option<PathBuf>,
    /// File holding the JWT signing key.
    pub jwt_signing_key_file: Option<PathBuf>,
    /// Lifetime of access tokens (Testflinger: 600 s).
    #[serde(with = "serde_duration", alias = "access_token_ttl_secs")]
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens (Testflinger: 6 days).
    #[serde(with = "serde_duration", alias = "refresh_token_ttl_secs")]
    pub refresh_token_ttl: Duration,
    /// Clock skew tolerated when checking token times (Testflinger's `JWT_LEEWAY`: 5 s).
    #[serde(with = "serde_duration", alias = "jwt_leeway_secs")]
    pub jwt_leeway: Duration,
    /// Size at which `POST /v1/result/<id>` answers 413.
    pub max_result_bytes: usize,
    /// Size limit of other JSON bodies.
    pub max_json_bytes: usize,
    /// Size limit of an attachments archive.
    pub max_attachment_bytes: u64,
    /// Size limit of an artifacts archive.
    pub max_artifact_bytes: u64,
    /// Size limit of a plugin component.
    pub max_plugin_bytes: u64,
    /// Most components the plugin registry holds.
    pub max_plugins: u64,
    /// Most bytes the plugin registry holds.
    pub max_plugin_store_bytes: u64,
    /// Longest long-poll wait an agent may ask for.
    #[serde(with = "serde_duration", alias = "max_long_poll_secs")]
    pub max_long_poll: Duration,
    /// How long after creation a job's data is deleted; zero = never. See
    /// [`ServerConfig::retention`].
    #[serde(with = "serde_duration")]
    pub job_retention: Duration,
    /// The older form of `job_retention`, in whole days; it wins when given.
    pub job_retention_days: Option<u64>,
    /// Testflinger's `WEBHOOK_URL`.
    pub webhook_url: Option<String>,
    /// File holding Testflinger's `WEBHOOK_AUTH` bearer token.
    pub webhook_auth_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) for HTTPS; needs [`ServerConfig::tls_key_file`].
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for HTTPS; needs [`ServerConfig::tls_cert_file`].
    pub tls_key_file: Option<PathBuf>,
    /// A separate address for `/metrics` (then absent from the API listener).
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            database_url: "sqlite://phasebox-server.db".to_owned(),
            blob_dir: PathBuf::from("phasebox-blobs"),
            anonymous_access: true,
            secrets_key_file: None,
            jwt_signing_key_file: None,
            access_token_ttl: Duration::from_secs(600),
            refresh_token_ttl: Duration::from_secs(6 * 86_400),
            jwt_leeway: Duration::from_secs(5),
            max_result_bytes: 16 * 1024 * 1024,
            max_json_bytes: 16 * 1024 * 1024,
            max_attachment_bytes: 1 << 30,
            max_artifact_bytes: 1 << 30,
            max_plugin_bytes: 256 << 20,
            max_plugins: 1000,
            max_plugin_store_bytes: 10 << 30,
            max_long_poll: Duration::from_secs(60),
            job_retention: Duration::from_secs(7 * 86_400),
            job_retention_days: None,
            webhook_url: None,
            webhook_auth_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            metrics_listen: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("blob_dir", &self.blob_dir)
            .field("anonymous_access", &self.anonymous_access)
            .field("secrets_key_file", &self.secrets_key_file)
            .field("jwt_signing_key_file", &self.jwt_signing_key_file)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("max_attachment_bytes", &self.max_attachment_bytes)
            .field("max_artifact_bytes", &self.max_artifact_bytes)
            .field("max_plugin_bytes", &self.max_plugin_bytes)
            .field("max_plugins", &self.max_plugins)
            .field("max_plugin_store_bytes", &self.max_plugin_store_bytes)
            .field("max_long_poll", &self.max_long_poll)
            .field("job_retention", &self.job_retention)
            .field("job_retention_days", &self.job_retention_days)
            .field("webhook_url", &self.webhook_url)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("metrics_listen", &self.metrics_listen)
            .finish_non_exhaustive()
    }
}

/// The URL of database `name` on the server that `url` names, with `url`'s user, password and
/// connection parameters (`postgres://u:p@host:5432/old?options[x]=y` →
/// `postgres://u:p@host:5432/NAME?options[x]=y`).
pub fn url_for_database(url: &str, name: &str) -> String {
    let (address, parameters) = url.split_once('?').map_or((url, None), |(a, p)| (a, Some(p)));
    let server = match address.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split_once('/').map_or(rest, |(host, _)| host)),
        None => address.to_owned(),
    };
    match parameters {
        Some(p) => format!("{server}/{name}?{p}"),
        None => format!("{server}/{name}"),
    }
}

/// `url` with one more query parameter (`name=value`), e.g. a PostgreSQL session setting
/// `options[synchronous_commit]=off`.
pub fn url_with_parameter(url: &str, parameter: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameter}")
}

/// A database URL with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((auth, host)) = rest.split_once('@') else { return url.to_owned() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Errors reading the configuration or its key files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("invalid server configuration {path}: {message}")]
    Parse {
        /// The file (empty for a string).
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key is malformed (the message never contains key material).
    #[error("invalid {what}: {message}")]
    Key {
        /// Which key.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid server configuration: {0}")]
    Invalid(String),
    /// A file holding a key is unsafe to use (others can read it) or unreadable.
    #[error(transparent)]
    SecretFile(#[from] phasebox_config::secret_file::SecretFileError),
}

impl Rebase for ServerConfig {
    fn rebase(&mut self, base: &Path) {
        rebase(&mut self.blob_dir, base);
        let files = [
            &mut self.secrets_key_file,
            &mut self.jwt_signing_key_file,
            &mut self.webhook_auth_file,
            &mut self.tls_cert_file,
            &mut self.tls_key_file,
        ];
        files.into_iter().flatten().for_each(|file| rebase(file, base));
        if let Some(rest) = self.database_url.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(':')
        {
            self.database_url = format!("sqlite://{}", base.join(rest).display());
        }
    }
}

impl ServerConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: ServerConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file; relative paths in it (and a relative SQLite file in
    /// `database_url`) are taken from the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let config: ServerConfig = phasebox_config::load(path).map_err(|e| match e {
            phasebox_config::ConfigError::Read { path, source } => ConfigError::Read { path, source },
            phasebox_config::ConfigError::Parse { path, message } => ConfigError::Parse { path, message },
            phasebox_config::ConfigError::Invalid { message, .. } => ConfigError::Invalid(message),
            phasebox_config::ConfigError::Secret(e) => ConfigError::SecretFile(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration for tests and demos: SQLite file and blobs under `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        ServerConfig {
            database_url: format!("sqlite://{}", dir.join("server.db").display()),
            blob_dir: dir.join("blobs"),
            ..ServerConfig::default()
        }
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.access_token_ttl.as_secs() == 0 || self.refresh_token_ttl.as_secs() == 0 {
            return Err(ConfigError::Invalid("token lifetimes must be at least one second".into()));
        }
        if self.max_result_bytes == 0 || self.max_json_bytes == 0 {
            return Err(ConfigError::Invalid("body limits must be positive".into()));
        }
        let scheme = self.database_url.split("://").next().unwrap_or("");
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            return Err(ConfigError::Invalid(format!(
                "database_url must start with sqlite://, postgres:// or postgresql:// (found {scheme:?})"
            )));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::Invalid("tls_cert_file and tls_key_file must be set together".into()));
        }
        Ok(())
    }

    /// The secrets encryption key: `PHASEBOX_SECRETS_KEY`, else `secrets_key_file`, else none.
    pub fn secrets_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, ConfigError> {
        let text = match std::env::var(SECRETS_KEY_ENV) {
            Ok(v) => Some(Zeroizing::new(v)),
            Err(_) => match &self.secrets_key_file {
                Some(path) => Some(secret_file::read(path, "secrets key file")?),
                None => None,
            },
        };
        let Some(text) = text else { return Ok(None) };
        crate::secrets::decode_key(text.trim())
            .map(Some)
            .map_err(|message| ConfigError::Key { what: "secrets key", message })
    }

    /// The JWT signing key from `PHASEBOX_JWT_SIGNING_KEY` or `jwt_signing_key_file`, if given.
    pub fn jwt_signing_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
        let key = match std::env::var(JWT_KEY_ENV) {
            Ok(v) => Some(Zeroizing::new(v.trim().as_bytes().to_vec())),
            Err(_) => match &self.jwt_signing_key_file {
                Some(path) => {
                    let text = secret_file::read(path, "JWT signing key file")?;
                    Some(Zeroizing::new(text.trim().as_bytes().to_vec()))
                }
                None => None,
            },
        };
        if let Some(k) = &key
            && k.len() < 32
        {
            return Err(ConfigError::Key { what: "JWT signing key", message: "must be at least 32 bytes".into() });
        }
        Ok(key)
    }

    /// How long after creation a job's data is kept (`job_retention`, or the older
    /// `job_retention_days` when given); zero keeps it forever.
    pub fn retention(&self) -> Duration {
        self.job_retention_days.map_or(self.job_retention, |days| Duration::from_secs(days.saturating_mul(86_400)))
    }

    /// Whether HTTPS is configured (`tls_cert_file` and `tls_key_file`).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    /// The webhook bearer token, if configured.
    pub fn webhook_auth(&self) -> Result<Option<Zeroizing<String>>, ConfigError> {
        match &self.webhook_auth_file {
            Some(path) => Ok(Some(Zeroizing::new(secret_file::read(path, "webhook token file")?.trim().to_owned()))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_example_parses_and_matches_defaults() {
        let doc = include_str!("config.rs");
        let start = doc.find("//! ```toml\n").expect("example") + "//! ```toml\n".len();
        let end = start + doc[start..].find("//! ```\n").expect("end");
        let text: String = doc[start..end]
            .lines()
            .map(|l| l.trim_start_matches("//!").trim_start())
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = ServerConfig::from_toml(&text).expect("example parses");
        let defaults = ServerConfig {
            database_url: "sqlite:///var/lib/phasebox/server.db".into(),
            blob_dir: "/var/lib/phasebox/blobs".into(),
            ..ServerConfig::default()
        };
        assert_eq!(parsed, defaults);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = ServerConfig::from_toml("database_urll = \"sqlite://x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn debug_hides_passwords() {
        let c = ServerConfig { database_url: "postgres://u:hunter2@db/x".into(), ..ServerConfig::default() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn url_for_database_keeps_credentials_and_parameters() {
        assert_eq!(
            url_for_database("postgres://u:p@db:5432/main?options[synchronous_commit]=off", "other"),
            "postgres://u:p@db:5432/other?options[synchronous_commit]=off"
        );
        assert_eq!(url_for_database("postgresql://db/main", "other"), "postgresql://db/other");
        assert_eq!(url_for_database("postgres://db", "other"), "postgres://db/other");
        assert_eq!(url_with_parameter("postgres://db/x", "a=1"), "postgres://db/x?a=1");
        assert_eq!(url_with_parameter("postgres://db/x?a=1", "b=2"), "postgres://db/x?a=1&b=2");
    }

    #[test]
    fn durations_take_one_grammar_and_the_older_secs_names() {
        let text = "access_token_ttl = \"15m\"\nrefresh_token_ttl = \"2d\"\njwt_leeway = 2\nmax_long_poll = \"1.5s\"\n\
                    job_retention = \"36h\"\n";
        let c = ServerConfig::from_toml(text).unwrap();
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.refresh_token_ttl, Duration::from_secs(2 * 86_400));
        assert_eq!(c.jwt_leeway, Duration::from_secs(2));
        assert_eq!(c.max_long_poll, Duration::from_millis(1_500));
        assert_eq!(c.retention(), Duration::from_secs(36 * 3_600));

        let older = "access_token_ttl_secs = 60\nmax_long_poll_secs = 5\njob_retention_days = 3\n";
        let c = ServerConfig::from_toml(older).unwrap();
        assert_eq!((c.access_token_ttl, c.max_long_poll), (Duration::from_secs(60), Duration::from_secs(5)));
        assert_eq!(c.retention(), Duration::from_secs(3 * 86_400));

        let error = ServerConfig::from_toml("access_token_ttl = \"10 minutes\"").unwrap_err().to_string();
        assert!(error.contains("10 minutes") && error.contains("access_token_ttl"), "{error}");
        let error = ServerConfig::from_toml("access_token_ttl = \"500ms\"").unwrap_err().to_string();
        assert!(error.contains("at least one second"), "{error}");
    }
}
