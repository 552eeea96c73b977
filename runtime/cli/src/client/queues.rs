//! `list-queues`, `list-agents`, `agent-status`, `queue-status`.

use phasebox_client::{Client, ClientError};
use serde_json::{Map, Value, json};

use super::{explain, sorted};
use crate::Verdict;

/// `list-queues [--json]`.
pub async fn list_queues(client: &Client, json: bool) -> anyhow::Result<Verdict> {
    eprintln!("This only shows a curated list of queues with descriptions");
    let queues = client.list_queues().await.map_err(|e| explain(e, None))?;
    if json {
        println!("{}", serde_json::to_string(&queues)?);
    } else {
        println!("Advertised queues on this server:");
        for (name, description) in &queues {
            println!(" {name} - {description}");
        }
    }
    Ok(Verdict::Success)
}

/// `list-agents [-q QUEUE] [-s STATE] [--json]`.
pub async fn list_agents(
    client: &Client,
    queue: Option<&str>,
    state: Option<&str>,
    json: bool,
) -> anyhow::Result<Verdict> {
    let mut agents = client.list_agents().await.map_err(|e| explain(e, None))?;
    agents.retain(|a| {
        let in_queue = queue.is_none_or(|q| {
            a.get("queues").and_then(Value::as_array).is_some_and(|qs| qs.iter().any(|x| x.as_str() == Some(q)))
        });
        let in_state = state.is_none_or(|s| a.get("state").and_then(Value::as_str) == Some(s));
        in_queue && in_state
    });
    agents.sort_by(|a, b| str_of(a, "name").cmp(str_of(b, "name")));
    if json {
        println!("{}", serde_json::to_string(&sorted(&Value::Array(agents)))?);
        return Ok(Verdict::Success);
    }
    let width = agents.iter().map(|a| str_of(a, "name").len()).max().unwrap_or(0).max(4);
    println!("{:width$}  {:15}  Queues", "Name", "State");
    for a in &agents {
        let queues: Vec<&str> = a
            .get("queues")
            .and_then(Value::as_array)
            .map(|q| q.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!("{:width$}  {:15}  {}", str_of(a, "name"), str_of(a, "state"), queues.join(", "));
    }
    Ok(Verdict::Success)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `agent-status NAME [--json]`: the agent's state, or its data with `name`→`agent` and
/// `state`→`status` as testflinger-cli prints it.
pub async fn agent_status(client: &Client, name: &str, json: bool) -> anyhow::Result<Verdict> {
    let data = client.agent_data(name).await.map_err(|e| match e {
        ClientError::NotFound { .. } => anyhow::anyhow!("Agent '{name}' does not exist."),
        other => explain(other, None),
    })?;
    if json {
        // Every field the server sent, unknown ones included.
        let mut data = serde_json::to_value(&data)?;
        if let Some(obj) = data.as_object_mut() {
            if let Some(n) = obj.remove("name") {
                obj.insert("agent".into(), n);
            }
            if let Some(s) = obj.remove("state") {
                obj.insert("status".into(), s);
            }
        }
        println!("{}", serde_json::to_string(&sorted(&data))?);
    } else {
        println!("{}", data.state());
    }
    Ok(Verdict::Success)
}

/// `queue-status QUEUE [-v] [--json]`: agents available/busy/offline and jobs
/// waiting/running/completed.
pub async fn queue_status(client: &Client, queue: &str, verbose: bool, json: bool) -> anyhow::Result<Verdict> {
    let agents = client.queue_agents(queue).await.map_err(|e| match e {
        ClientError::NotFound { .. } => anyhow::Error::new(e),
        other => explain(other, None),
    })?;
    if agents.is_empty() {
        anyhow::bail!("No agent is listening on queue '{queue}'.");
    }
    let jobs = client.queue_jobs(queue).await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "cannot list the jobs of the queue");
        Vec::new()
    });
    let mut groups: [(&str, Vec<Value>); 3] =
        [("jobs_waiting", Vec::new()), ("jobs_running", Vec::new()), ("jobs_completed", Vec::new())];
    for job in &jobs {
        let info = json!({"job_id": job.get("job_id"), "created_at": job.get("created_at")});
        match str_of(job, "job_state").to_ascii_lowercase().as_str() {
            "waiting" => groups[0].1.push(info),
            "complete" | "completed" => groups[2].1.push(info),
            "cancelled" => {}
            _ => groups[1].1.push(info),
        }
    }
    if json {
        let mut out = Map::new();
        out.insert("queue".into(), json!(queue));
        out.insert("agents".into(), Value::Array(agents));
        for (i, (name, list)) in groups.iter().enumerate() {
            if verbose || i == 0 {
                out.insert((*name).into(), Value::Array(list.clone()));
            }
        }
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
        return Ok(Verdict::Success);
    }
    let state = |a: &Value| {
        let s = a.get("state").or_else(|| a.get("status")).and_then(Value::as_str).unwrap_or("");
        match s {
            "waiting" | "offline" => s.to_owned(),
            _ => "busy".to_owned(),
        }
    };
    let count = |s: &str| agents.iter().filter(|a| state(a) == s).count();
    println!("Agents in queue: {}", agents.len());
    println!("Available:       {}", count("waiting"));
    println!("Busy:            {}", count("busy"));
    println!("Offline:         {}", count("offline"));
    if verbose {
        for (name, list) in &groups {
            if list.is_empty() {
                continue;
            }
            let title: Vec<String> = name
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
                })
                .collect();
            println!("\n{}:", title.join(" "));
            for job in list {
                println!("  {} - {}", str_of(job, "job_id"), str_of(job, "created_at"));
            }
        }
    } else {
        println!("Jobs waiting:    {}", groups[0].1.len());
        println!("Jobs running:    {}", groups[1].1.len());
        println!("Jobs completed:  {}", groups[2].1.len());
    }
    Ok(Verdict::Success)
}
