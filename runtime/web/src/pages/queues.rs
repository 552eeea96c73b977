//! `/queues`: every queue with its load, agents and owners; one queue with its jobs.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::response::Response;
use phasebox_server::auth;
use phasebox_server::handlers::agents::owners;
use phasebox_server::handlers::jobs::agent_queues;
use phasebox_server::handlers::listed_job_id;
use phasebox_server::{ApiError, AppState};
use serde_json::{Value, json};

use crate::view::{Visit, error_page, iso, render};

/// Most jobs a queue's page lists (the jobs list pages through all).
const QUEUE_JOBS: usize = 100;

/// Every queue known from descriptions, agents or restrictions, with its numbers.
async fn queue_views(st: &AppState) -> Result<BTreeMap<String, Value>, ApiError> {
    let descriptions: BTreeMap<String, String> = st.store.list_queues().await?.into_iter().collect();
    let agents = st.store.list_agents().await?;
    let owners = owners(&st.store).await?;
    let mut names: BTreeSet<String> = descriptions.keys().cloned().collect();
    names.extend(owners.keys().cloned());
    let mut serving: BTreeMap<String, usize> = BTreeMap::new();
    for (doc, _) in &agents {
        for q in agent_queues(doc) {
            *serving.entry(q.clone()).or_default() += 1;
            names.insert(q);
        }
    }
    let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
    let mut running: BTreeMap<String, usize> = BTreeMap::new();
    for j in st.store.search(&[], false, &["active".to_owned()]).await? {
        let counter = if j.state == "waiting" { &mut waiting } else { &mut running };
        *counter.entry(j.queue).or_default() += 1;
    }
    Ok(names
        .into_iter()
        .map(|name| {
            let view = json!({
                "name": name, "description": descriptions.get(&name),
                "waiting": waiting.get(&name).copied().unwrap_or(0), "running": running.get(&name).copied().unwrap_or(0),
                "agents": serving.get(&name).copied().unwrap_or(0),
                "restricted": owners.contains_key(&name), "owners": owners.get(&name).cloned().unwrap_or_default(),
            });
            (name, view)
        })
        .collect())
}

/// `GET /queues`: the rules of `GET /v1/agents/queues` and `GET /v1/restricted-queues`.
pub async fn list(State(st): State<AppState>, visit: Visit) -> Response {
    let page = async {
        visit.caller.require(auth::USERS)?;
        let queues: Vec<Value> = queue_views(&st).await?.into_values().collect();
        Ok::<_, ApiError>(render(&visit, "queues.html", "Queues", json!({ "queues": queues })))
    };
    page.await.unwrap_or_else(|e| error_page(&visit, e))
}

/// `GET /queues/<name>`: the rules of `GET /v1/queues/<name>/agents` and `/jobs`.
pub async fn detail(State(st): State<AppState>, visit: Visit, Path(name): Path<String>) -> Response {
    let page = async {
        let principal = visit.caller.require(auth::USERS)?;
        let queue = queue_views(&st)
            .await?
            .remove(&name)
            .ok_or_else(|| ApiError::NotFound(format!("Queue {name:?} does not exist")))?;
        let agents: Vec<Value> = st
            .store
            .list_agents()
            .await?
            .into_iter()
            .filter(|(doc, _)| agent_queues(doc).contains(&name))
            .map(|(doc, _)| json!({ "name": doc.get("name"), "state": doc.get("state") }))
            .collect();
        let jobs: Vec<Value> = st
            .store
            .queue_jobs(&name)
            .await?
            .iter()
            .rev()
            .take(QUEUE_JOBS)
            .map(|j| json!({ "job_id": listed_job_id(&principal, j), "state": j.state, "created": iso(j.created_at) }))
            .collect();
        let ctx = json!({ "queue": queue, "agents": agents, "jobs": jobs });
        Ok::<_, ApiError>(render(&visit, "queue.html", &format!("Queue {name}"), ctx))
    };
    page.await.unwrap_or_else(|e| error_page(&visit, e))
}
