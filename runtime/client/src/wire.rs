//! Typed bodies of the agent's side of Testflinger's wire (reference §2.3–2.7, §3.4).
//!
//! What the server sends is read into these types with every field it may leave out optional
//! and every field they do not name kept (`other`): a Testflinger server may add fields, and
//! a job document carries the submitter's whole job. What the agent sends leaves out what it
//! does not set, so each post is the JSON object Testflinger's agent posts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `GET /v1/agents/data/<name>`: an agent's document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentData {
    /// `waiting`, `offline`, `maintenance`, `restart`, a phase name; absent on an old server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why it is in that state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Its queues restricted to owners: `{queue: [client ids]}`; `None` when the server sent
    /// none (an old server), so that what is shown again is what was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted_to: Option<BTreeMap<String, Vec<String>>>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl AgentData {
    /// The state, `""` when the server sent none.
    pub fn state(&self) -> &str {
        self.state.as_deref().unwrap_or_default()
    }

    /// The comment, `""` when the server sent none.
    pub fn comment(&self) -> &str {
        self.comment.as_deref().unwrap_or_default()
    }

    /// The queues restricted to at least one owner (empty when none is).
    pub fn restricted_queues(&self) -> impl Iterator<Item = &str> {
        self.restricted_to.iter().flatten().filter(|(_, owners)| !owners.is_empty()).map(|(q, _)| q.as_str())
    }
}

/// `POST /v1/agents/data/<name>`: the fields an agent sets (Testflinger's `AgentIn`); those
/// left `None` are not sent and keep their value on the server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpdate {
    /// `waiting`, `offline`, a phase name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The job it runs (`""`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The queues it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Its device connector type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_type: Option<String>,
}

impl AgentUpdate {
    /// `{"state": state, "comment": comment}`.
    pub fn state(state: &str, comment: &str) -> Self {
        AgentUpdate { state: Some(state.to_owned()), comment: Some(comment.to_owned()), ..AgentUpdate::default() }
    }

    /// `{"job_id": job_id}` (`""` when the agent is between jobs).
    pub fn job_id(job_id: &str) -> Self {
        AgentUpdate { job_id: Some(job_id.to_owned()), ..AgentUpdate::default() }
    }
}

/// `POST /v1/result/<id>`: what an agent reports of a job (Testflinger's `ResultPost`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultUpdate {
    /// The status of every phase that ended so far (cumulative: it replaces the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BTreeMap<String, i32>>,
    /// Facts about the device (`device_ip`, `agent_name`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_info: Option<Map<String, Value>>,
    /// The phase about to run, or the end state (`complete`, `cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_state: Option<String>,
}

/// `POST /v1/agents/provision_logs/<agent>`: how a provision phase went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionLogEntry {
    /// The job.
    pub job_id: String,
    /// The phase's status.
    pub exit_code: i32,
    /// `provision_success` or `provision_fail`.
    pub detail: String,
}

/// One of a job's status events (Testflinger's `event_emitter`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// `job_start`, `<phase>_start`, `<phase>_success`, ...
    pub event_name: String,
    /// When (RFC 3339).
    pub timestamp: String,
    /// Why, or `""`.
    pub detail: String,
}

/// `POST /v1/job/<id>/events`: every status event of the job so far, for its webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvents {
    /// The agent (DUT) name.
    pub agent_id: String,
    /// The job's queue.
    pub job_queue: String,
    /// The job's `job_status_webhook`.
    pub job_status_webhook: String,
    /// The events so far, oldest first.
    pub events: Vec<StatusEvent>,
}

/// `GET /v1/job`: a claimed job — the submitted job with what the server added. The fields
/// the agent acts on are typed; the rest of the job (its phases' data) is kept as sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimedJob {
    /// Its id (checked by the agent before any use).
    pub job_id: String,
    /// Its queue (`""` when the server sent none or `null`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub job_queue: String,
    /// `waiting` or `complete` when it has attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments_status: Option<String>,
    /// Where its status events go, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status_webhook: Option<String>,
    /// Every other field of the job, as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `null` read as the type's default, as a field left out is.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_are_kept_and_absent_ones_default() {
        let data: AgentData = serde_json::from_value(json!({
            "name": "dut", "state": "offline", "updated_at": "2025-01-01T00:00:00Z",
            "restricted_to": {"q": ["owner"]},
        }))
        .unwrap();
        assert_eq!((data.state(), data.comment()), ("offline", ""));
        assert_eq!(data.restricted_queues().collect::<Vec<_>>(), ["q"]);
        assert_eq!(data.other["updated_at"], "2025-01-01T00:00:00Z");
        let old: AgentData = serde_json::from_value(json!({"name": "dut"})).unwrap();
        assert_eq!(old.state(), "");
        assert_eq!(serde_json::to_value(&old).unwrap(), json!({"name": "dut"}));
        let open: AgentData = serde_json::from_value(json!({"restricted_to": {}})).unwrap();
        assert_eq!(open.restricted_queues().count(), 0);
        assert_eq!(serde_json::to_value(&open).unwrap(), json!({"restricted_to": {}}));

        let job: ClaimedJob = serde_json::from_value(json!({
            "job_id": "j", "job_queue": "q", "test_data": {"test_cmds": "true"}, "new_field": 1,
        }))
        .unwrap();
        assert_eq!(job.attachments_status, None);
        let queueless: ClaimedJob = serde_json::from_value(json!({"job_id": "j", "job_queue": null})).unwrap();
        assert_eq!(queueless.job_queue, "");
        let back = serde_json::to_value(&job).unwrap();
        assert_eq!(back, json!({"job_id": "j", "job_queue": "q", "test_data": {"test_cmds": "true"}, "new_field": 1}));
    }

    #[test]
    fn posts_carry_only_what_is_set() {
        let v = serde_json::to_value(AgentUpdate::state("waiting", "")).unwrap();
        assert_eq!(v, json!({"state": "waiting", "comment": ""}));
        assert_eq!(serde_json::to_value(AgentUpdate::job_id("")).unwrap(), json!({"job_id": ""}));
        let r = ResultUpdate { job_state: Some("setup".into()), ..ResultUpdate::default() };
        assert_eq!(serde_json::to_value(r).unwrap(), json!({"job_state": "setup"}));
    }
}
