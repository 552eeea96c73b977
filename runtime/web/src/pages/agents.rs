//! `/agents`: every agent, and one agent with its recent jobs.

use axum::extract::{Path, State};
use axum::response::Response;
use phasebox_server::auth::{self, Principal};
use phasebox_server::handlers::agents::hide_anonymous_job;
use phasebox_server::handlers::jobs::agent_queues;
use phasebox_server::handlers::listed_job_id;
use phasebox_server::{ApiError, AppState};
use serde_json::{Map, Value, json};

use crate::view::{Visit, error_page, iso, render};

/// How many of the newest jobs an agent's page looks through for its history.
const HISTORY_SCAN: usize = 500;

fn text(doc: &Map<String, Value>, key: &str) -> String {
    doc.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// An agent as the pages show it. `doc` has been through [`hide_anonymous_job`]: a `null`
/// `job_id` is a job the visitor may not know the id of.
fn agent_view(doc: &Map<String, Value>, updated_at: i64) -> Value {
    let state = text(doc, "state");
    let health = match state.as_str() {
        "offline" | "maintenance" => state.clone(),
        _ => "ok".to_owned(),
    };
    let streak = match (doc.get("provision_streak_type").and_then(Value::as_str), doc.get("provision_streak_count")) {
        (Some(kind), Some(n)) => {
            format!("last {n} provisioning{} {kind}", if n.as_i64() == Some(1) { "" } else { "s" })
        }
        _ => String::new(),
    };
    json!({
        "name": text(doc, "name"), "state": state, "health": health,
        "queues": agent_queues(doc),
        "job_id": doc.get("job_id").and_then(Value::as_str).filter(|s| !s.is_empty()),
        "job_hidden": doc.get("job_id").is_some_and(Value::is_null),
        "updated": iso(updated_at),
        "location": text(doc, "location"), "provision_type": text(doc, "provision_type"),
        "comment": text(doc, "comment"), "streak": streak,
    })
}

/// `GET /agents`: the rules of `GET /v1/agents/data`.
pub async fn list(State(st): State<AppState>, visit: Visit) -> Response {
    let page = async {
        let principal = visit.caller.require(auth::USERS)?;
        let mut agents = Vec::new();
        for (doc, at) in st.store.list_agents().await? {
            agents.push(agent_view(&hide_anonymous_job(&st, &principal, doc).await?, at));
        }
        Ok::<_, ApiError>(render(&visit, "agents.html", "Agents", json!({ "agents": agents })))
    };
    page.await.unwrap_or_else(|e| error_page(&visit, e))
}

/// `GET /agents/<name>`: the rules of `GET /v1/agents/data/<name>`, and its jobs among the
/// newest (ids as the jobs list shows them).
pub async fn detail(State(st): State<AppState>, visit: Visit, Path(name): Path<String>) -> Response {
    let page = async {
        let principal = visit.caller.require(auth::ANY)?;
        let (doc, at) =
            st.store.get_agent(&name).await?.ok_or_else(|| ApiError::NotFound(format!("Agent {name:?} not found")))?;
        let agent = agent_view(&hide_anonymous_job(&st, &principal, doc).await?, at);
        let jobs = history(&st, &principal, &name).await?;
        Ok::<_, ApiError>(render(
            &visit,
            "agent.html",
            &format!("Agent {name}"),
            json!({ "agent": agent, "jobs": jobs }),
        ))
    };
    page.await.unwrap_or_else(|e| error_page(&visit, e))
}

/// The jobs agent `name` ran among the [`HISTORY_SCAN`] newest. The store keeps no index by
/// agent, so this reads each job: bounded, and only on an agent's page.
async fn history(st: &AppState, principal: &Principal, name: &str) -> Result<Vec<Value>, ApiError> {
    // An agent credential reads no job listing, as in the API.
    if visit_is_agent(principal) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let jobs = st.store.search(&[], false, &[]).await?;
    for j in jobs.iter().rev().take(HISTORY_SCAN) {
        let Some(record) = st.store.get_job(&j.job_id).await? else { continue };
        if record.agent.as_deref() == Some(name) {
            out.push(json!({
                "job_id": listed_job_id(principal, j), "state": j.state, "queue": j.queue, "created": iso(j.created_at),
            }));
        }
    }
    Ok(out)
}

fn visit_is_agent(principal: &Principal) -> bool {
    principal.role == auth::Role::Agent
}
