//! The records the store reads and writes.

use std::collections::BTreeMap;
use std::fmt;

use super::StoreError;

/// A job to insert (`POST /v1/job`).
#[derive(Debug, Clone)]
pub struct NewJob {
    /// UUID.
    pub job_id: String,
    /// `job_queue`.
    pub queue: String,
    /// `job_priority` (0 when absent).
    pub priority: i64,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// `waiting` when the job has attachments, else `None`.
    pub attachments_status: Option<String>,
    /// Owner of the job's secrets (set for jobs with secrets, as in Testflinger).
    pub client_id: Option<String>,
    /// Who submitted it; `None` for a job submitted without credentials.
    pub submitter: Option<String>,
    /// The normalised job JSON (`job_data`), including the server-added fields.
    pub job_data: String,
    /// `exclude_agents`.
    pub exclude_agents: Vec<String>,
    /// `tags`.
    pub tags: Vec<String>,
}

pub(super) type JobTuple = (
    i64,
    String,
    String,
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
);

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Insertion order.
    pub seq: i64,
    /// UUID.
    pub job_id: String,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: i64,
    /// `job_state` (`waiting`, `running`, a phase, `complete`, `cancelled`, ...).
    pub state: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Set when claimed.
    pub started_at: Option<i64>,
    /// The agent that claimed it.
    pub agent: Option<String>,
    /// `waiting` / `complete` / none.
    pub attachments_status: Option<String>,
    /// Owner of the job's secrets, for jobs with secrets.
    pub client_id: Option<String>,
    /// Who submitted it; `None` for a job submitted without credentials.
    pub submitter: Option<String>,
    /// `job_data` JSON.
    pub job_data: String,
    /// `result_data` JSON minus `job_state` (`status`, `device_info`).
    pub result_data: String,
}

impl From<JobTuple> for JobRecord {
    fn from(t: JobTuple) -> Self {
        JobRecord {
            seq: t.0,
            job_id: t.1,
            queue: t.2,
            priority: t.3,
            state: t.4,
            created_at: t.5,
            started_at: t.6,
            agent: t.7,
            attachments_status: t.8,
            client_id: t.9,
            job_data: t.10,
            result_data: t.11,
            submitter: t.12,
        }
    }
}

/// A job in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    /// UUID.
    pub job_id: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// `job_state`.
    pub state: String,
    /// Queue.
    pub queue: String,
    /// Who submitted it; `None` for a job submitted without credentials.
    pub submitter: Option<String>,
}

pub(super) type SummaryTuple = (String, i64, String, String, Option<String>);

impl From<SummaryTuple> for JobSummary {
    fn from((job_id, created_at, state, queue, submitter): SummaryTuple) -> Self {
        JobSummary { job_id, created_at, state, queue, submitter }
    }
}

/// The fields of `POST /v1/result/<id>`.
#[derive(Debug, Clone, Default)]
pub struct ResultPatch {
    /// Phase → exit code (replaces the stored map).
    pub status: Option<serde_json::Value>,
    /// Device facts.
    pub device_info: Option<serde_json::Value>,
    /// New `job_state`.
    pub job_state: Option<String>,
    /// Apply only if the job was claimed by one of these agents (the posting agent's
    /// names); `None`: whoever claimed it.
    pub claimed_by: Option<Vec<String>>,
}

/// One log fragment.
#[derive(Debug, Clone)]
pub struct LogFragment {
    /// Job.
    pub job_id: String,
    /// `output` or `serial`.
    pub log_type: String,
    /// Phase name.
    pub phase: String,
    /// The agent's counter.
    pub fragment_number: i64,
    /// The agent's timestamp, microseconds since the epoch.
    pub timestamp: i64,
    /// Text.
    pub log_data: String,
}

/// Filters of `GET /v1/result/<id>/log/<type>`.
#[derive(Debug, Clone, Copy)]
pub struct LogQuery<'a> {
    /// Job.
    pub job_id: &'a str,
    /// `output` or `serial`.
    pub log_type: &'a str,
    /// Lowest fragment number.
    pub start_fragment: i64,
    /// Earliest timestamp (microseconds).
    pub start_timestamp: Option<i64>,
    /// One phase only.
    pub phase: Option<&'a str>,
}

/// One event of a job's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Sequence number (increasing; unique across jobs).
    pub id: i64,
    /// `submitted`, `claimed`, `state`, `result`, `log`, `attachments`, `artifact`, `agent`.
    pub kind: String,
    /// JSON.
    pub data: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

/// A client role. Ordered: `Agent < Contributor < Manager < Admin` (the order used when one
/// client changes another's permissions; endpoint access is not hierarchical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Runs jobs.
    Agent,
    /// Submits jobs (anonymous callers too, when anonymous access is on).
    Contributor,
    /// Manages queues and clients.
    Manager,
    /// Everything.
    Admin,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Contributor => "contributor",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "agent" => Role::Agent,
            "contributor" => Role::Contributor,
            "manager" => Role::Manager,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) type ClientTuple = (String, Option<String>, String, String, String, String, Option<String>, String, String);

/// A client (Testflinger's `client_permissions` document).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// Id.
    pub client_id: String,
    /// Argon2 PHC string of the client secret.
    pub secret_hash: Option<String>,
    /// Role.
    pub role: Role,
    /// Queue (or `*`) → highest priority allowed.
    pub max_priority: BTreeMap<String, i64>,
    /// Restricted queues this client may submit to.
    pub allowed_queues: Vec<String>,
    /// Queue (or `*`) → longest reservation allowed (seconds).
    pub max_reservation_time: BTreeMap<String, i64>,
    /// Contact.
    pub email: Option<String>,
    /// For an agent client: the agent names it may act as (claim, register, write job data).
    pub agent_names: Vec<String>,
    /// For an agent client: the queues it may take jobs from.
    pub agent_queues: Vec<String>,
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("role", &self.role)
            .field("max_priority", &self.max_priority)
            .field("allowed_queues", &self.allowed_queues)
            .field("max_reservation_time", &self.max_reservation_time)
            .field("agent_names", &self.agent_names)
            .field("agent_queues", &self.agent_queues)
            .finish_non_exhaustive()
    }
}

impl TryFrom<ClientTuple> for ClientRecord {
    type Error = StoreError;

    fn try_from(t: ClientTuple) -> Result<Self, StoreError> {
        Ok(ClientRecord {
            client_id: t.0,
            secret_hash: t.1,
            role: Role::parse(&t.2).ok_or_else(|| StoreError::Corrupt(format!("unknown role {:?}", t.2)))?,
            max_priority: serde_json::from_str(&t.3)?,
            allowed_queues: serde_json::from_str(&t.4)?,
            max_reservation_time: serde_json::from_str(&t.5)?,
            email: t.6,
            agent_names: serde_json::from_str(&t.7)?,
            agent_queues: serde_json::from_str(&t.8)?,
        })
    }
}

/// An encrypted secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Owner's client id.
    pub namespace: String,
    /// Path.
    pub path: String,
    /// AEAD nonce.
    pub nonce: Vec<u8>,
    /// AEAD ciphertext (with tag).
    pub ciphertext: Vec<u8>,
    /// Deleted on first read.
    pub ephemeral: bool,
    /// Microseconds since the epoch; `None` = never.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("namespace", &self.namespace)
            .field("path", &self.path)
            .field("ephemeral", &self.ephemeral)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
