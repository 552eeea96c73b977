//! The job: [`JobSpec`] and its sections (spec §1.1, §1.3, §1.4).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value as Json};

use crate::duration::parse_duration;
use crate::error::{Error, ErrorKind};
use crate::fields::{self, Result, integer, invalid_type, invalid_value, list, missing_field, string, unknown_field};
use crate::node::{Node, Value, index, join};
use crate::phasebox::{PhaseboxBlock, parse_block};
use crate::provision::{self, ProvisionData};
use crate::{json, yaml};

/// Default of the job's `global_timeout` on the agent (seconds): 4 h (spec §1.1).
pub const DEFAULT_GLOBAL_TIMEOUT: u64 = 14_400;
/// Default of the job's `output_timeout` on the agent (seconds): 15 min (spec §1.1).
pub const DEFAULT_OUTPUT_TIMEOUT: u64 = 900;
/// Default `reserve_data.timeout` (seconds): 1 h (spec §1.4).
pub const DEFAULT_RESERVE_TIMEOUT: u64 = 3_600;
/// Longest reservation (seconds, 6 h) a job may ask for without an authenticated client whose
/// `max_reservation_time` allows more (spec §3.2.5). Longer ones are valid job text; the
/// server's permission check decides.
pub const MAX_UNAUTHENTICATED_RESERVE_TIMEOUT: u64 = 21_600;

/// A validated Testflinger job, with phasebox's optional additions.
///
/// Built by [`JobSpec::from_yaml`], [`JobSpec::from_json`], [`JobSpec::parse`] (job files and
/// `POST /v1/job` bodies) or [`JobSpec::from_server_json`] (a job as the server stores and
/// dispatches it). Serialises to the JSON the Testflinger server stores in `job_data`: the
/// same field names, values normalised the way the server's schema normalises them
/// (`reserve_data.timeout` as seconds, marshmallow booleans and integers converted,
/// `noprovision` with `skip: true`, `exclude_agents` always present).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobSpec {
    /// Resubmission id. Must be a UUID in the forms Python's `uuid.UUID` accepts; an empty
    /// string counts as absent (the server then generates one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Parent job of a `multi` child job. Testflinger's schema types it as a plain string
    /// (no UUID check), so any string is accepted here too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tags for searching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Queue name (required, non-empty).
    pub job_queue: String,
    /// Seconds per phase (all phases but reserve). Testflinger's integer field: integers,
    /// integral strings and numbers (truncated) are accepted, duration strings are not.
    /// The agent applies `min(this, its own limit)`, both defaulting to [`DEFAULT_GLOBAL_TIMEOUT`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_timeout: Option<i64>,
    /// Seconds without output before the test phase is stopped; same integer rules as
    /// `global_timeout`; default [`DEFAULT_OUTPUT_TIMEOUT`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_timeout: Option<i64>,
    /// Seconds the `multi` connector waits for child jobs (its default is 7200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_timeout: Option<i64>,
    /// `None`: absent. `Some(None)`: explicitly `null` (stored as null; the phase is skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provision_data: Option<Option<ProvisionData>>,
    /// Free-form; conventional keys `version`, `ignore_failure`, `attachments`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_update_data: Option<PhaseData>,
    /// The test phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_data: Option<TestData>,
    /// Free-form, e.g. `{allocate: true}`; its presence enables the allocate phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocate_data: Option<PhaseData>,
    /// The reserve phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserve_data: Option<ReserveData>,
    /// URL the server forwards agent events to. A plain string in Testflinger's schema (the
    /// server checks it against its `WEBHOOK_URL` only when events arrive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status_webhook: Option<String>,
    /// Higher runs earlier; absent means 0. Testflinger's schema sets no range (any 64-bit
    /// integer here); non-zero values need an authenticated client with enough `max_priority`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_priority: Option<i64>,
    /// Agents that must not run the job. Always present (Testflinger's `load_default=[]`).
    pub exclude_agents: Vec<String>,
    /// Passed through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// Server-added: `waiting` until the attachments archive is uploaded, then `complete`.
    /// Only accepted by [`JobSpec::from_server_json`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments_status: Option<AttachmentsStatus>,
    /// Server-added: the submitter's client id (jobs with secrets). Only accepted by
    /// [`JobSpec::from_server_json`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Server-added when dispatching (`GET /v1/job`). Only accepted by [`JobSpec::from_server_json`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// The server's `attachments_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentsStatus {
    /// The job waits for its attachments archive and is not dispatched.
    Waiting,
    /// The archive has been uploaded.
    Complete,
}

/// `firmware_update_data` or `allocate_data`: free-form mappings in Testflinger.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PhaseData {
    /// The fields as given (for `firmware_update_data`, `attachments` is checked and normalised
    /// like any other attachments list, because the CLI packs them).
    #[serde(flatten)]
    pub fields: Map<String, Json>,
    /// phasebox additions for the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phasebox: Option<PhaseboxBlock>,
}

/// `test_data` (spec §1.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestData {
    /// The test script: one string (a list is rejected, as by Testflinger's server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_cmds: Option<String>,
    /// Files to upload with the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// Connectors default to `ubuntu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_username: Option<String>,
    /// Password for `test_username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_password: Option<String>,
    /// Environment variable name → secret path (in a dispatched job: → secret value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretMap>,
    /// phasebox additions for the test phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phasebox: Option<PhaseboxBlock>,
}

/// `reserve_data` (spec §1.4).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReserveData {
    /// Keys to install, each `lp:<user>` or `gh:<user>` (imported from Launchpad or GitHub), or,
    /// as a phasebox addition, a well-formed OpenSSH public key line (see [`is_ssh_key_entry`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_keys: Option<Vec<String>>,
    /// Reservation length in seconds. `Some(None)`: explicitly `null`. Written as seconds or a
    /// duration string (`"2h30m"`), stored as seconds. Longer than
    /// [`MAX_UNAUTHENTICATED_RESERVE_TIMEOUT`] needs the server's permission check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Option<u64>>,
    /// phasebox additions for the reserve phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phasebox: Option<PhaseboxBlock>,
}

impl ReserveData {
    /// The reservation length the connector uses: `timeout`, or [`DEFAULT_RESERVE_TIMEOUT`].
    pub fn effective_timeout(&self) -> u64 {
        self.timeout.flatten().unwrap_or(DEFAULT_RESERVE_TIMEOUT)
    }

    /// Whether the server would require an authenticated client with a sufficient
    /// `max_reservation_time` for this reservation.
    pub fn needs_authorization(&self) -> bool {
        self.effective_timeout() > MAX_UNAUTHENTICATED_RESERVE_TIMEOUT
    }
}

/// One attachment of a phase.
///
/// In a job file (what the CLI reads) an attachment names a `local` file and optionally the
/// `agent` path it gets; the CLI packs it and submits only `agent` (spec §4.4). The server's
/// schema then requires `agent`. Both forms are accepted: `agent` is required unless `local`
/// is given. Paths are not checked here (the agent checks them when unpacking).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// File on the submitter's machine (job files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// Path in the attachments archive / on the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Path on the device under test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// `test_data.secrets`: environment variable name → secret path, or, in a job as dispatched to
/// an agent, → the secret's value. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SecretMap(BTreeMap<String, String>);

impl SecretMap {
    /// The value (path or secret) for a variable name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether a variable name is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Variable names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Name/value pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying map.
    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, "<redacted>"))).finish()
    }
}

/// Where the job text comes from; decides which server-only fields are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A job file or `POST /v1/job` body.
    Submission,
    /// `job_data` as stored, or a job as dispatched by `GET /v1/job`.
    Server,
}

impl JobSpec {
    /// Reads a job file in YAML, resolving plain scalars the way the Testflinger CLI's PyYAML
    /// does (YAML 1.1: `yes`/`on` are booleans, ...). One document only; duplicate keys,
    /// unknown keys and invalid values are errors with field path, line and column.
    pub fn from_yaml(text: &str) -> std::result::Result<Self, Error> {
        decode(&yaml::parse(text)?, Source::Submission)
    }

    /// Reads a job in JSON (a `POST /v1/job` body). The same rules as [`JobSpec::from_yaml`];
    /// duplicate keys are rejected (Python's `json` would keep the last). Errors carry line and
    /// column whenever the text also parses as YAML, which valid JSON nearly always does.
    pub fn from_json(text: &str) -> std::result::Result<Self, Error> {
        decode(&json::parse(text)?, Source::Submission)
    }

    /// Reads a job in either format: text whose first non-blank character is `{` is read as
    /// JSON if it is valid JSON, otherwise (and for everything else) as YAML.
    pub fn parse(text: &str) -> std::result::Result<Self, Error> {
        if text.trim_start_matches('\u{feff}').trim_start().starts_with('{') {
            match json::parse(text) {
                Ok(node) => return decode(&node, Source::Submission),
                Err(e) if e.kind() == ErrorKind::JsonSyntax => {
                    return match yaml::parse(text) {
                        Ok(node) => decode(&node, Source::Submission),
                        Err(_) => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        Self::from_yaml(text)
    }

    /// Reads a job as the Testflinger server stores it (`job_data`) or dispatches it to an
    /// agent (`GET /v1/job`): additionally accepts the server-added `attachments_status`,
    /// `client_id` and `started_at`, and `test_data.secrets` values that are secret values
    /// rather than paths.
    pub fn from_server_json(text: &str) -> std::result::Result<Self, Error> {
        decode(&json::parse(text)?, Source::Server)
    }

    /// The JSON that the Testflinger server stores for this job (see the type's docs).
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).expect("a JobSpec always serialises")
    }

    /// [`JobSpec::to_json`] as a compact string.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// `job_priority`, 0 when absent.
    pub fn priority(&self) -> i64 {
        self.job_priority.unwrap_or(0)
    }

    /// Whether any `<phase>_data` has an `attachments` key (then the server keeps the job
    /// `waiting` until the archive is uploaded).
    pub fn has_attachments(&self) -> bool {
        let provision = matches!(&self.provision_data, Some(Some(p)) if p.fields.contains_key("attachments"));
        let firmware = self.firmware_update_data.as_ref().is_some_and(|d| d.fields.contains_key("attachments"));
        let allocate = self.allocate_data.as_ref().is_some_and(|d| d.fields.contains_key("attachments"));
        let test = self.test_data.as_ref().is_some_and(|t| t.attachments.is_some());
        provision || firmware || allocate || test
    }

    /// The same job without any `phasebox` block: what a plain Testflinger server accepts.
    /// (A `<phase>_data` that held only a `phasebox` block becomes `{}`, which Testflinger skips.)
    pub fn without_phasebox(&self) -> JobSpec {
        let mut job = self.clone();
        if let Some(Some(p)) = &mut job.provision_data {
            p.phasebox = None;
        }
        if let Some(d) = &mut job.firmware_update_data {
            d.phasebox = None;
        }
        if let Some(t) = &mut job.test_data {
            t.phasebox = None;
        }
        if let Some(d) = &mut job.allocate_data {
            d.phasebox = None;
        }
        if let Some(r) = &mut job.reserve_data {
            r.phasebox = None;
        }
        job
    }
}

impl<'de> Deserialize<'de> for JobSpec {
    /// Deserialises from any self-describing format with the rules of [`JobSpec::from_json`]
    /// (no positions in errors).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let node = Node::deserialize(d)?;
        decode(&node, Source::Submission).map_err(serde::de::Error::custom)
    }
}

const TOP_KEYS: &[&str] = &[
    "job_id",
    "parent_job_id",
    "name",
    "tags",
    "job_queue",
    "global_timeout",
    "output_timeout",
    "allocation_timeout",
    "provision_data",
    "firmware_update_data",
    "test_data",
    "allocate_data",
    "reserve_data",
    "job_status_webhook",
    "job_priority",
    "exclude_agents",
    "debug",
];
const SERVER_KEYS: &[&str] = &["attachments_status", "client_id", "started_at"];
const TEST_KEYS: &[&str] = &["test_cmds", "attachments", "test_username", "test_password", "secrets", "phasebox"];
const RESERVE_KEYS: &[&str] = &["ssh_keys", "timeout", "phasebox"];
const ATTACHMENT_KEYS: &[&str] = &["local", "agent", "device"];

static ENV_NAME_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_]*$").expect("static regex"));
static SECRET_PATH_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_/-]+$").expect("static regex"));
static SSH_KEY_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(?:lp|gh):\S+$").expect("static regex"));

/// OpenSSH public key types a reservation may install.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Whether `entry` is an accepted `reserve_data.ssh_keys` item: `lp:<user>` or `gh:<user>`, as
/// Testflinger accepts, or (a phasebox addition, so a job valid for Testflinger stays valid) an
/// OpenSSH public key line `<type> <base64 blob> [comment]` whose blob decodes and names the same
/// type, on one line. Anything else — a private key, a truncated blob, a second line smuggled
/// into `authorized_keys` — is refused.
pub fn is_ssh_key_entry(entry: &str) -> bool {
    if SSH_KEY_RE.is_match(entry) {
        return true;
    }
    if entry.contains(['\n', '\r', '\0']) {
        return false;
    }
    let mut parts = entry.splitn(3, ' ');
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else { return false };
    if !SSH_KEY_TYPES.contains(&kind) {
        return false;
    }
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(blob) else { return false };
    // The blob starts with the key type as an SSH string: a big-endian u32 length, then bytes.
    let Some((len, rest)) = bytes.split_first_chunk::<4>() else { return false };
    let len = u32::from_be_bytes(*len) as usize;
    rest.len() > len && &rest[..len] == kind.as_bytes()
}

/// Whether `name` is an environment variable name as Testflinger's secrets schema defines it.
pub(crate) fn is_env_name(name: &str) -> bool {
    ENV_NAME_RE.is_match(name)
}

/// The names a phase may declare in `phasebox.secrets`: the keys of `test_data.secrets`.
fn secret_names(entries: &[crate::node::Entry]) -> BTreeSet<String> {
    let test = entries.iter().find(|e| e.key == "test_data");
    let Some(Value::Map(test)) = test.map(|e| &e.value.value) else {
        return BTreeSet::new();
    };
    let secrets = test.iter().find(|e| e.key == "secrets");
    match secrets.map(|e| &e.value.value) {
        Some(Value::Map(s)) => s.iter().map(|e| e.key.clone()).collect(),
        _ => BTreeSet::new(),
    }
}

/// Reads the `phasebox` block of a phase and checks its secret names against the job's.
fn phasebox_block(node: &Node, path: &str, secrets: &BTreeSet<String>) -> Result<PhaseboxBlock> {
    let block = parse_block(node, path)?;
    for (i, name) in block.secrets.iter().flatten().enumerate() {
        if !secrets.contains(name) {
            let item_path = index(&join(path, "secrets"), i);
            let loc = match node_at(node, "secrets").map(|n| &n.value) {
                Some(Value::Seq(items)) => items.get(i).and_then(|n| n.loc),
                _ => node.loc,
            };
            return Err(Error::new(
                ErrorKind::UnknownSecret,
                item_path,
                loc,
                format!(
                    "secret `{name}` is not defined: declare it in test_data.secrets \
                     (`{name}: <secret path>`)"
                ),
            ));
        }
    }
    Ok(block)
}

fn node_at<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.value {
        Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
        _ => None,
    }
}

fn decode(root: &Node, source: Source) -> Result<JobSpec> {
    let Value::Map(entries) = &root.value else {
        return Err(Error::new(
            ErrorKind::InvalidType,
            "",
            root.loc,
            format!("a job must be a mapping of fields, found {}", root.describe()),
        ));
    };
    let secrets = secret_names(entries);
    let mut job = JobSpec::default();
    let mut job_queue = None;
    for e in entries {
        let p = e.key.as_str();
        let v = &e.value;
        match p {
            "job_queue" => job_queue = Some(fields::non_empty_string(v, p)?),
            "job_id" => {
                let s = string(v, p)?;
                if !s.is_empty() {
                    if !fields::is_python_uuid(&s) {
                        return Err(Error::new(
                            ErrorKind::InvalidJobId,
                            p,
                            v.loc,
                            format!("Invalid job_id specified: {s:?} is not a UUID"),
                        ));
                    }
                    job.job_id = Some(s);
                }
            }
            "parent_job_id" => job.parent_job_id = Some(string(v, p)?),
            "name" => job.name = Some(string(v, p)?),
            "tags" => job.tags = Some(list(v, p, string)?),
            "global_timeout" => job.global_timeout = Some(integer(v, p)?),
            "output_timeout" => job.output_timeout = Some(integer(v, p)?),
            "allocation_timeout" => job.allocation_timeout = Some(integer(v, p)?),
            "provision_data" => {
                job.provision_data = Some(if v.is_null() {
                    None
                } else {
                    let block = match node_at(v, "phasebox") {
                        Some(b) => Some(phasebox_block(b, "provision_data.phasebox", &secrets)?),
                        None => None,
                    };
                    Some(provision::parse(v, p, block)?)
                });
            }
            "firmware_update_data" => {
                job.firmware_update_data = Some(phase_data(v, p, true, &secrets)?);
            }
            "allocate_data" => job.allocate_data = Some(phase_data(v, p, false, &secrets)?),
            "test_data" => job.test_data = Some(test_data(v, p, source, &secrets)?),
            "reserve_data" => job.reserve_data = Some(reserve_data(v, p, &secrets)?),
            "job_status_webhook" => job.job_status_webhook = Some(string(v, p)?),
            "job_priority" => job.job_priority = Some(integer(v, p)?),
            "exclude_agents" => job.exclude_agents = list(v, p, string)?,
            "debug" => job.debug = Some(fields::boolean(v, p)?),
            "attachments_status" if source == Source::Server => {
                job.attachments_status = Some(match string(v, p)?.as_str() {
                    "waiting" => AttachmentsStatus::Waiting,
                    "complete" => AttachmentsStatus::Complete,
                    other => {
                        return Err(invalid_value(
                            v.loc,
                            p,
                            format!("Must be one of: waiting, complete (found {other:?})"),
                        ));
                    }
                });
            }
            "client_id" if source == Source::Server => job.client_id = Some(string(v, p)?),
            "started_at" if source == Source::Server => job.started_at = Some(string(v, p)?),
            _ => {
                let mut known = TOP_KEYS.to_vec();
                if source == Source::Server {
                    known.extend_from_slice(SERVER_KEYS);
                }
                return Err(unknown_field(e, "", &known));
            }
        }
    }
    job.job_queue = job_queue.ok_or_else(|| missing_field(root, "", "job_queue"))?;
    Ok(job)
}

fn phase_data(node: &Node, path: &str, typed_attachments: bool, secrets: &BTreeSet<String>) -> Result<PhaseData> {
    let mut data = PhaseData::default();
    for e in fields::map(node, path)? {
        let p = join(path, &e.key);
        match e.key.as_str() {
            "phasebox" => data.phasebox = Some(phasebox_block(&e.value, &p, secrets)?),
            "attachments" if typed_attachments => {
                let items = list(&e.value, &p, parse_attachment)?;
                data.fields.insert(e.key.clone(), serde_json::to_value(items).expect("attachments serialise"));
            }
            _ => {
                data.fields.insert(e.key.clone(), fields::to_json(&e.value, &p)?);
            }
        }
    }
    Ok(data)
}

fn test_data(node: &Node, path: &str, source: Source, secrets: &BTreeSet<String>) -> Result<TestData> {
    let mut data = TestData::default();
    for e in fields::map(node, path)? {
        let p = join(path, &e.key);
        let v = &e.value;
        match e.key.as_str() {
            "test_cmds" => {
                if matches!(v.value, Value::Seq(_)) {
                    return Err(Error::new(
                        ErrorKind::InvalidType,
                        p,
                        v.loc,
                        "Not a valid string: test_cmds must be one string (Testflinger's server \
                         rejects a list, whatever its docs say); write the commands as a block, \
                         e.g. `test_cmds: |`",
                    ));
                }
                data.test_cmds = Some(string(v, &p)?);
            }
            "attachments" => data.attachments = Some(list(v, &p, parse_attachment)?),
            "test_username" => data.test_username = Some(string(v, &p)?),
            "test_password" => data.test_password = Some(string(v, &p)?),
            "secrets" => {
                let mut map = BTreeMap::new();
                for s in fields::map(v, &p)? {
                    let sp = join(&p, &s.key);
                    if !is_env_name(&s.key) {
                        return Err(invalid_value(
                            s.key_loc,
                            &sp,
                            format!("`{}` is not an environment variable name ([a-zA-Z_][a-zA-Z0-9_]*)", s.key),
                        ));
                    }
                    let value = string(&s.value, &sp)?;
                    if source == Source::Submission && !SECRET_PATH_RE.is_match(&value) {
                        return Err(invalid_value(
                            s.value.loc,
                            &sp,
                            format!("{value:?} is not a secret path (letters, digits, `_`, `-` and `/`)"),
                        ));
                    }
                    map.insert(s.key.clone(), value);
                }
                data.secrets = Some(SecretMap(map));
            }
            "phasebox" => data.phasebox = Some(phasebox_block(v, &p, secrets)?),
            _ => return Err(unknown_field(e, path, TEST_KEYS)),
        }
    }
    Ok(data)
}

fn reserve_data(node: &Node, path: &str, secrets: &BTreeSet<String>) -> Result<ReserveData> {
    let mut data = ReserveData::default();
    for e in fields::map(node, path)? {
        let p = join(path, &e.key);
        let v = &e.value;
        match e.key.as_str() {
            "ssh_keys" => {
                data.ssh_keys = Some(list(v, &p, |item, ip| {
                    let key = string(item, ip)?;
                    if !is_ssh_key_entry(&key) {
                        return Err(invalid_value(
                            item.loc,
                            ip,
                            format!(
                                "{key:?} is not a key: expected `lp:<launchpad user>`, `gh:<github user>` \
                                 or an OpenSSH public key line (`ssh-ed25519 AAAA… comment`)"
                            ),
                        ));
                    }
                    Ok(key)
                })?);
            }
            "timeout" => data.timeout = Some(testflinger_duration(v, &p)?),
            "phasebox" => data.phasebox = Some(phasebox_block(v, &p, secrets)?),
            _ => return Err(unknown_field(e, path, RESERVE_KEYS)),
        }
    }
    Ok(data)
}

/// Testflinger's `DurationField` (allow_none): `null`; an integer ≥ 0; a duration string.
/// Like Testflinger (Python's `bool` is an `int`), `true`/`false` count as 1 and 0 seconds.
/// Floats are rejected ("Duration must be string or int").
fn testflinger_duration(node: &Node, path: &str) -> Result<Option<u64>> {
    let bad = |message: String| Error::new(ErrorKind::InvalidDuration, path, node.loc, message);
    match &node.value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(u64::from(*b))),
        Value::Int(i) => u64::try_from(*i)
            .map(Some)
            .map_err(|_| bad(format!("Invalid duration format: {i}: a duration cannot be negative"))),
        Value::Str(s) => parse_duration(s).map(Some).map_err(|e| bad(format!("Invalid duration format: {e}"))),
        _ => Err(invalid_type(node, path, "a duration (integer seconds, or a string like 2h30m)")),
    }
}

/// Reads one attachment mapping (see [`Attachment`]).
pub(crate) fn parse_attachment(node: &Node, path: &str) -> Result<Attachment> {
    let mut a = Attachment::default();
    for e in fields::map(node, path)? {
        let p = join(path, &e.key);
        let slot = match e.key.as_str() {
            "local" => &mut a.local,
            "agent" => &mut a.agent,
            "device" => &mut a.device,
            _ => return Err(unknown_field(e, path, ATTACHMENT_KEYS)),
        };
        *slot = Some(string(&e.value, &p)?);
    }
    if a.local.is_none() && a.agent.is_none() {
        return Err(Error::new(
            ErrorKind::MissingField,
            join(path, "agent"),
            node.loc,
            "Missing data for required field `agent` (or give `local`, the file to upload)",
        ));
    }
    Ok(a)
}
