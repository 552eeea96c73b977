//! `phasebox agent --config FILE`: serves the devices under test of an agent configuration
//! (see `config/agent.toml`) until SIGTERM or SIGINT, then stops within its grace period.

use std::path::Path;

use anyhow::Context;
use phasebox_agent::{Agent, AgentConfig};

use crate::Verdict;

pub async fn run(config: &Path) -> anyhow::Result<Verdict> {
    let config = AgentConfig::from_file(config)?;
    let duts = config.duts.len();
    let agent = Agent::new(config).context("setting up the agent")?;
    eprintln!(
        "phasebox agent: serving {duts} device(s) for {} ({} protocol); SIGTERM or Ctrl-C stops it",
        agent.config().server,
        agent.config().protocol
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    agent.run(shutdown).await?;
    Ok(Verdict::Success)
}
