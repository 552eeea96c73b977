//! [`Delivery`]: one thing a DUT posts to the server, as the [outbox](crate::outbox) queues it
//! and the [spool](crate::spool) keeps it on disk.

use std::path::PathBuf;

use phasebox_client::{Client, ClientError, LogFragment, LogType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One thing to post to the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Delivery {
    /// `POST /v1/agents/data/<agent>`.
    AgentData {
        /// The agent (DUT) name.
        agent: String,
        /// The fields.
        body: Value,
    },
    /// `POST /v1/result/<job_id>`.
    Result {
        /// The job.
        job_id: String,
        /// `status`, `device_info`, `job_state`.
        body: Value,
    },
    /// `POST /v1/result/<job_id>/log/<type>`.
    Log {
        /// The job.
        job_id: String,
        /// `output` or `serial`.
        log_type: LogType,
        /// The numbered fragment.
        fragment: LogFragment,
    },
    /// `POST /v1/result/<job_id>/artifact`.
    Artifact {
        /// The job.
        job_id: String,
        /// The archive to upload (moved into the spool when spooled).
        archive: PathBuf,
    },
    /// `POST /v1/agents/provision_logs/<agent>`.
    ProvisionLog {
        /// The agent (DUT) name.
        agent: String,
        /// `job_id`, `exit_code`, `detail`.
        body: Value,
    },
    /// `POST /v1/job/<job_id>/events`: the job's status events so far, for its webhook.
    JobEvents {
        /// The job.
        job_id: String,
        /// `agent_id`, `job_queue`, `job_status_webhook`, `events`.
        body: Value,
    },
}

impl Delivery {
    pub(crate) fn describe(&self) -> String {
        match self {
            Delivery::AgentData { agent, .. } => format!("agent data of {agent}"),
            Delivery::Result { job_id, .. } => format!("result of job {job_id}"),
            Delivery::Log { job_id, log_type, fragment } => {
                format!("{log_type} fragment {} of job {job_id}", fragment.fragment_number)
            }
            Delivery::Artifact { job_id, .. } => format!("artifacts of job {job_id}"),
            Delivery::ProvisionLog { agent, .. } => format!("provision log of {agent}"),
            Delivery::JobEvents { job_id, .. } => format!("status events of job {job_id}"),
        }
    }

    pub(crate) async fn post(&self, client: &Client) -> Result<(), ClientError> {
        match self {
            Delivery::AgentData { agent, body } => client.post_agent_data(agent, body).await,
            Delivery::Result { job_id, body } => client.post_result(job_id, body).await,
            Delivery::Log { job_id, log_type, fragment } => client.post_log_fragment(job_id, *log_type, fragment).await,
            Delivery::Artifact { job_id, archive } => client.post_artifact(job_id, archive).await,
            Delivery::ProvisionLog { agent, body } => client.post_provision_log(agent, body).await,
            Delivery::JobEvents { job_id, body } => client.post_job_events(job_id, body).await,
        }
    }
}

/// Whether a failed delivery should be kept and tried again: the server was away or
/// overloaded, or refused the agent's credentials (an operator can fix that; dropping the
/// output would lose it for good).
pub(crate) fn worth_retrying(e: &ClientError) -> bool {
    e.is_transient() || matches!(e, ClientError::Auth { .. })
}

impl Delivery {
    /// Whether this delivery, having failed with `e`, should be kept and tried again. Status
    /// events are best effort, as Testflinger's agent sends them: kept only while the server
    /// cannot be reached, dropped when it answers with an error (its webhook may be
    /// unconfigured or down), so they never hold up the job's output behind them.
    pub(crate) fn worth_retrying(&self, e: &ClientError) -> bool {
        match self {
            Delivery::JobEvents { .. } => matches!(e, ClientError::Unreachable { .. } | ClientError::Timeout { .. }),
            _ => worth_retrying(e),
        }
    }
}
