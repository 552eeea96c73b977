//! `phasebox server admin …`: manage clients and restricted queues directly in the database of
//! a server configuration (`--config`), with the server running or not. Out of band, so it
//! also creates the first admin client.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use phasebox_server::auth::{self, Role};
use phasebox_server::{ServerConfig, Store};

use crate::Verdict;

/// The admin commands.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a client with a generated secret, printed once on stdout (store it now: only its
    /// hash is kept).
    CreateClient {
        /// The new client's id.
        client_id: String,
        /// Its role: agent, contributor, manager or admin.
        #[arg(long, default_value = "contributor", value_parser = parse_role)]
        role: Role,
        /// For an agent client: a queue it may take jobs from (repeat for several; see
        /// `bind-agent`). Without any, it takes no jobs until bound.
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
    },
    /// Bind an agent client to the agent names it may act as and the queues it may take jobs
    /// from (replacing its binding): the `agent_id` and `job_queues` of the agent's
    /// configuration.
    BindAgent {
        /// The agent client's id.
        client_id: String,
        /// An agent name it may act as (repeat for several).
        #[arg(long = "agent", value_name = "NAME", required = true)]
        agents: Vec<String>,
        /// A queue it may take jobs from (repeat for several).
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
    },
    /// Replace a client's secret with a generated one, printed once on stdout.
    ResetSecret {
        /// The client's id.
        client_id: String,
    },
    /// Set a client's role (effective at its next request).
    SetRole {
        /// The client's id.
        client_id: String,
        /// agent, contributor, manager or admin.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Replace a client's highest job priority per queue (`*` for every queue); none clears.
    SetMaxPriority {
        /// The client's id.
        client_id: String,
        /// `QUEUE=PRIORITY`, e.g. `*=10 lab-a=50`.
        #[arg(value_parser = parse_limit)]
        limits: Vec<(String, i64)>,
    },
    /// Replace a client's longest reservation per queue, in seconds (`*` for every queue);
    /// none clears.
    SetMaxReservationTime {
        /// The client's id.
        client_id: String,
        /// `QUEUE=SECONDS`, e.g. `*=43200`.
        #[arg(value_parser = parse_limit)]
        limits: Vec<(String, i64)>,
    },
    /// Replace the restricted queues a client may submit to; none clears.
    SetAllowedQueues {
        /// The client's id.
        client_id: String,
        /// Queue names.
        queues: Vec<String>,
    },
    /// List clients: id, role, limits and allowed queues (never secrets).
    ListClients {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a client and its refresh tokens.
    DeleteClient {
        /// The client's id.
        client_id: String,
    },
    /// Restrict a queue: only clients whose allowed queues list it may submit to it.
    AddRestrictedQueue {
        /// Queue name.
        queue: String,
    },
    /// Lift a queue's restriction (clients keep it in their allowed queues).
    RemoveRestrictedQueue {
        /// Queue name.
        queue: String,
    },
    /// List restricted queues and the clients allowed on each.
    ListRestrictedQueues {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: expected agent, contributor, manager or admin"))
}

fn parse_limit(s: &str) -> Result<(String, i64), String> {
    let (queue, value) = s.split_once('=').ok_or_else(|| format!("expected QUEUE=NUMBER, got {s:?}"))?;
    if queue.is_empty() {
        return Err(format!("empty queue name in {s:?}"));
    }
    let value = value.trim().parse::<i64>().map_err(|_| format!("not an integer in {s:?}"))?;
    Ok((queue.to_owned(), value))
}

fn limits(list: Vec<(String, i64)>) -> BTreeMap<String, i64> {
    list.into_iter().collect()
}

/// Opens the store of `config` and runs `command` against it.
pub async fn run(config: &ServerConfig, command: AdminCommand) -> anyhow::Result<Verdict> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("cannot open {}", phasebox_server::config::redact_url(&config.database_url)))?;
    let result = execute(&store, command).await;
    store.close().await;
    result.map(|()| Verdict::Success)
}

async fn execute(store: &Store, command: AdminCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        AdminCommand::CreateClient { client_id, role, queues } => {
            if !queues.is_empty() && role != Role::Agent {
                anyhow::bail!("--queue binds agent clients only (this client's role is {role})");
            }
            let secret = auth::generate_client_secret();
            auth::create_client(store, &client_id, &secret, role).await?;
            if role == Role::Agent {
                auth::bind_agent(store, &client_id, vec![client_id.clone()], queues).await?;
            }
            eprintln!("created client '{client_id}' with role {role}; its secret follows (it is not shown again)");
            writeln!(out, "{}", secret.as_str())?;
        }
        AdminCommand::ResetSecret { client_id } => {
            let secret = auth::generate_client_secret();
            auth::set_client_secret(store, &client_id, &secret).await?;
            eprintln!("new secret for client '{client_id}' follows (it is not shown again)");
            writeln!(out, "{}", secret.as_str())?;
        }
        AdminCommand::BindAgent { client_id, agents, queues } => {
            auth::bind_agent(store, &client_id, agents.clone(), queues.clone()).await?;
            eprintln!("agent client '{client_id}' may act as {agents:?} and take jobs from {queues:?}");
        }
        AdminCommand::SetRole { client_id, role } => {
            auth::grant_role(store, &client_id, role).await?;
            eprintln!("client '{client_id}' now has role {role}");
        }
        AdminCommand::SetMaxPriority { client_id, limits: l } => {
            auth::set_max_priority(store, &client_id, limits(l)).await?;
        }
        AdminCommand::SetMaxReservationTime { client_id, limits: l } => {
            auth::set_max_reservation_time(store, &client_id, limits(l)).await?;
        }
        AdminCommand::SetAllowedQueues { client_id, queues } => {
            auth::set_allowed_queues(store, &client_id, queues).await?;
        }
        AdminCommand::ListClients { json } => {
            let clients = store.list_clients().await?;
            if json {
                let list: Vec<serde_json::Value> = clients
                    .iter()
                    .map(|c| {
                        let mut client = serde_json::json!({
                            "client_id": c.client_id,
                            "role": c.role.as_str(),
                            "max_priority": c.max_priority,
                            "max_reservation_time": c.max_reservation_time,
                            "allowed_queues": c.allowed_queues,
                            "email": c.email,
                        });
                        if c.role == Role::Agent {
                            client["agent_names"] = serde_json::json!(c.agent_names);
                            client["agent_queues"] = serde_json::json!(c.agent_queues);
                        }
                        client
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                let rows: Vec<[String; 5]> = clients
                    .iter()
                    .map(|c| {
                        [
                            c.client_id.clone(),
                            c.role.to_string(),
                            pairs(&c.max_priority),
                            pairs(&c.max_reservation_time),
                            c.allowed_queues.join(","),
                        ]
                    })
                    .collect();
                table(&mut out, ["CLIENT", "ROLE", "MAX_PRIORITY", "MAX_RESERVATION_TIME", "ALLOWED_QUEUES"], &rows)?;
            }
        }
        AdminCommand::DeleteClient { client_id } => {
            auth::delete_client(store, &client_id).await?;
            eprintln!("deleted client '{client_id}'");
        }
        AdminCommand::AddRestrictedQueue { queue } => {
            if !auth::add_restricted_queue(store, &queue).await? {
                eprintln!("queue '{queue}' was restricted already");
            }
        }
        AdminCommand::RemoveRestrictedQueue { queue } => {
            if !auth::remove_restricted_queue(store, &queue).await? {
                anyhow::bail!("queue '{queue}' is not restricted");
            }
        }
        AdminCommand::ListRestrictedQueues { json } => {
            let clients = store.list_clients().await?;
            let owners = |q: &str| -> Vec<String> {
                clients
                    .iter()
                    .filter(|c| c.allowed_queues.iter().any(|a| a == q))
                    .map(|c| c.client_id.clone())
                    .collect()
            };
            let queues = store.restricted_queues().await?;
            if json {
                let list: Vec<serde_json::Value> =
                    queues.iter().map(|q| serde_json::json!({ "queue": q, "owners": owners(q) })).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                let rows: Vec<[String; 2]> = queues.iter().map(|q| [q.clone(), owners(q).join(",")]).collect();
                table(&mut out, ["QUEUE", "OWNERS"], &rows)?;
            }
        }
    }
    Ok(())
}

fn pairs(map: &BTreeMap<String, i64>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Left-aligned columns separated by two spaces; `-` for empty cells.
fn table<const N: usize>(out: &mut impl Write, header: [&str; N], rows: &[[String; N]]) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len().max(1));
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(|c| if c.is_empty() { "-" } else { c.as_str() }).collect()))?;
    }
    Ok(())
}
