//! phasebox's additions to a phase: the `phasebox` key inside `<phase>_data`.
//!
//! ```yaml
//! test_data:
//!   test_cmds: "echo hi"
//!   phasebox:
//!     plugin: shell            # a plugin name, or "sha256:<64 lowercase hex>"
//!     secrets: [API_TOKEN]     # names that must be keys of test_data.secrets
//!     timeout: 2h30m           # phase timeout
//!     output_timeout: 15m      # output-idle timeout
//!     grants: { ... }          # see phasebox_grants::GrantRequest
//! ```
//!
//! Everything in the block is optional; unknown keys are rejected with their full path
//! (e.g. `test_data.phasebox.grant`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::{Duration, parse_duration};
use crate::error::{Error, ErrorKind};
use crate::fields::{self, Result, invalid_type, invalid_value, unknown_field};
use crate::node::{Node, Value, join};
use crate::spec::is_env_name;
use phasebox_grants::{Access, FileRequest, GrantRequest, NetworkRequest};

/// The `phasebox` block of one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhaseboxBlock {
    /// Which plugin runs the phase; `None` lets the agent pick its default for the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// Secret names this phase declares (each a key of `test_data.secrets`); `None` when the
    /// block has no `secrets` key. Only declared secrets reach a phase; a test phase that
    /// declares none in a block gets Testflinger's `test_data.secrets` (see the job engine's
    /// plan), while `secrets: []` declares none at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// Phase timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Output-idle timeout for this phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_timeout: Option<Duration>,
    /// What the phase asks to be granted, parsed (its `secrets` stay empty: a job declares
    /// them in [`secrets`](Self::secrets)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<GrantRequest>,
}

/// A plugin reference: a name from the agent's plugin set, or a content hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginRef {
    /// A name matching `[a-z0-9][a-z0-9_-]*`.
    Name(String),
    /// `sha256:` followed by 64 lowercase hex digits; holds the hex digits.
    Sha256(String),
}

impl FromStr for PluginRef {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Ok(PluginRef::Sha256(hex.to_owned()));
            }
            return Err(format!("`{s}` is not a plugin digest: expected `sha256:` and 64 lowercase hex digits"));
        }
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if first_ok && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
            return Ok(PluginRef::Name(s.to_owned()));
        }
        Err(format!(
            "`{s}` is not a plugin reference: expected a name ([a-z0-9][a-z0-9_-]*) or \
             `sha256:<64 lowercase hex>`"
        ))
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Name(n) => f.write_str(n),
            PluginRef::Sha256(h) => write!(f, "sha256:{h}"),
        }
    }
}

impl Serialize for PluginRef {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

const BLOCK_KEYS: &[&str] = &["plugin", "secrets", "timeout", "output_timeout", "grants"];
const GRANT_KEYS: &[&str] = &["files", "network", "http", "dns", "env"];
const FILE_KEYS: &[&str] = &["path", "source", "access"];
const NETWORK_KEYS: &[&str] = &["connect", "bind", "udp"];

/// Reads a `phasebox` block at `path` (e.g. `test_data.phasebox`).
pub(crate) fn parse_block(node: &Node, path: &str) -> Result<PhaseboxBlock> {
    let entries = fields::map(node, path)?;
    let mut block = PhaseboxBlock::default();
    for e in entries {
        let p = join(path, &e.key);
        let v = &e.value;
        match e.key.as_str() {
            "plugin" => {
                let s = fields::string(v, &p)?;
                block.plugin = Some(s.parse().map_err(|m| invalid_value(v.loc, &p, m))?);
            }
            "secrets" => {
                let names = fields::list(v, &p, fields::string)?;
                for (i, name) in names.iter().enumerate() {
                    if names[..i].contains(name) {
                        let item = &seq_item(v, i);
                        return Err(invalid_value(
                            item.loc,
                            &crate::node::index(&p, i),
                            format!("secret `{name}` is listed twice"),
                        ));
                    }
                }
                block.secrets = Some(names);
            }
            "timeout" => block.timeout = Some(phase_duration(v, &p)?),
            "output_timeout" => block.output_timeout = Some(phase_duration(v, &p)?),
            "grants" => block.grants = Some(parse_grants(v, &p)?),
            _ => return Err(unknown_field(e, path, BLOCK_KEYS)),
        }
    }
    Ok(block)
}

fn seq_item(node: &Node, i: usize) -> Node {
    match &node.value {
        Value::Seq(items) => items[i].clone(),
        _ => node.clone(),
    }
}

/// phasebox's own durations: a positive integer number of seconds or a duration string.
fn phase_duration(node: &Node, path: &str) -> Result<Duration> {
    let secs = match &node.value {
        Value::Int(i) => u64::try_from(*i).map_err(|_| {
            Error::new(
                ErrorKind::InvalidDuration,
                path,
                node.loc,
                format!("invalid duration {i}: a duration cannot be negative"),
            )
        })?,
        Value::Str(s) => {
            parse_duration(s).map_err(|e| Error::new(ErrorKind::InvalidDuration, path, node.loc, e.to_string()))?
        }
        _ => {
            return Err(invalid_type(node, path, "a duration (seconds, or a string like 2h30m)"));
        }
    };
    if secs == 0 {
        return Err(Error::new(ErrorKind::InvalidDuration, path, node.loc, "a phase timeout must be longer than zero"));
    }
    Ok(Duration::from_secs(secs))
}

/// phasebox's own booleans: `true`/`false` only.
fn strict_bool(node: &Node, path: &str) -> Result<bool> {
    match node.value {
        Value::Bool(b) => Ok(b),
        _ => Err(invalid_type(node, path, "true or false")),
    }
}

/// A list of strings, each parsed into `T` (an endpoint, an origin, a name); an error names
/// the item.
fn parsed_strings<T: FromStr<Err = phasebox_grants::ParseError>>(node: &Node, path: &str) -> Result<Vec<T>> {
    fields::list(node, path, |item, p| {
        let s = fields::string(item, p)?;
        s.parse().map_err(|e: phasebox_grants::ParseError| invalid_value(item.loc, p, e.to_string()))
    })
}

fn parse_grants(node: &Node, path: &str) -> Result<GrantRequest> {
    let entries = fields::map(node, path)?;
    let mut g = GrantRequest::default();
    for e in entries {
        let p = join(path, &e.key);
        let v = &e.value;
        match e.key.as_str() {
            "files" => {
                g.files = fields::list(v, &p, parse_file)?;
                for (i, f) in g.files.iter().enumerate() {
                    if g.files[..i].iter().any(|o| o.path == f.path) {
                        let item = seq_item(v, i);
                        return Err(invalid_value(
                            item.loc,
                            &crate::node::index(&p, i),
                            format!("guest path `{}` is requested twice", f.path),
                        ));
                    }
                }
            }
            "network" => g.network = parse_network(v, &p)?,
            "http" => g.http = parsed_strings(v, &p)?,
            "dns" => g.dns = parsed_strings(v, &p)?,
            "env" => {
                let mut env = BTreeMap::new();
                for item in fields::map(v, &p)? {
                    let ip = join(&p, &item.key);
                    if !is_env_name(&item.key) {
                        return Err(invalid_value(
                            item.key_loc,
                            &ip,
                            format!("`{}` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", item.key),
                        ));
                    }
                    env.insert(item.key.clone(), fields::string(&item.value, &ip)?);
                }
                g.env = env;
            }
            _ => return Err(unknown_field(e, path, GRANT_KEYS)),
        }
    }
    Ok(g)
}

fn parse_file(node: &Node, path: &str) -> Result<FileRequest> {
    let entries = fields::map(node, path)?;
    let (mut guest, mut source, mut access) = (None, None, Access::Ro);
    for e in entries {
        let p = join(path, &e.key);
        let v = &e.value;
        match e.key.as_str() {
            "path" => {
                let s = fields::string(v, &p)?;
                phasebox_grants::validate_guest_path(&s).map_err(|e| invalid_value(v.loc, &p, e.to_string()))?;
                guest = Some(s);
            }
            "source" => {
                let s = fields::string(v, &p)?;
                phasebox_grants::validate_source(&s).map_err(|e| invalid_value(v.loc, &p, e.to_string()))?;
                source = Some(s);
            }
            "access" => {
                access = match fields::string(v, &p)?.as_str() {
                    "ro" => Access::Ro,
                    "rw" => Access::Rw,
                    other => {
                        return Err(invalid_value(v.loc, &p, format!("access must be `ro` or `rw`, not `{other}`")));
                    }
                }
            }
            _ => return Err(unknown_field(e, path, FILE_KEYS)),
        }
    }
    Ok(FileRequest {
        path: guest.ok_or_else(|| fields::missing_field(node, path, "path"))?,
        source: source.ok_or_else(|| fields::missing_field(node, path, "source"))?,
        access,
    })
}

fn parse_network(node: &Node, path: &str) -> Result<NetworkRequest> {
    let entries = fields::map(node, path)?;
    let mut n = NetworkRequest::default();
    for e in entries {
        let p = join(path, &e.key);
        let v = &e.value;
        match e.key.as_str() {
            "connect" => n.connect = parsed_strings(v, &p)?,
            "bind" => n.bind = strict_bool(v, &p)?,
            "udp" => n.udp = strict_bool(v, &p)?,
            _ => return Err(unknown_field(e, path, NETWORK_KEYS)),
        }
    }
    Ok(n)
}
