//! # phasebox-agent
//!
//! The agent: one process serves many devices under test (DUTs), speaking Testflinger's wire
//! protocol to a phasebox server (with its long-poll claims and event stream) or to a
//! Testflinger server (plain polling). Each DUT has its own loop, runner configuration
//! (plugins, policy), device and spool; a DUT whose configuration is broken, whose device
//! fails or whose task panics is taken out of service alone.
//!
//! ```text
//!             ┌──────────── one task per DUT (supervised: restarted after a panic) ────────────┐
//! server ◀──▶ │ claim ─▶ plan ─▶ run_job ─sink─▶ shipper ─▶ outbox ──▶ server                    │
//!             │  (long-poll /      (sandboxed     (batches output,  (in order; spool on disk   │
//!             │   polling)          phases)        states, results)   while the server is away)│
//!             │         cancel watcher (event stream / polling) ──▶ the job's CancellationToken│
//!             └─────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! ```no_run
//! # async fn example() -> Result<(), phasebox_agent::AgentError> {
//! use std::path::Path;
//! use phasebox_agent::{Agent, AgentConfig};
//!
//! let config = AgentConfig::from_file(Path::new("config/agent.toml"))?;
//! Agent::new(config)?.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! - [`config`]: [`AgentConfig`], the TOML file (`config/agent.toml`).
//! - The DUT loop: recovery of an interrupted job, loading, registration, agent states
//!   (`offline`, `maintenance`, `restart`), heartbeats, claims.
//! - Per job: secrets from the claimed job into memory only, attachments, the job's events
//!   turned into Testflinger's states, numbered log fragments (about one a second, and at
//!   once at the end of each phase), cumulative results, artifacts before the final result;
//!   a cancel on the server ends the running phase within a second.
//! - Faults: deliveries the server did not take wait in the DUT's spool and go out in order
//!   when it is back; an agent restarted after a crash reports the job it was running as
//!   ended (with why), delivers what was spooled and cleans the device up before new work; on
//!   shutdown, running jobs get a grace period (see [`AgentConfig::grace_period`]).
//!
//! Modules depend in one direction, each only on those after it:
//!
//! ```text
//! lib (Agent::run) → dut (a DUT's loop) → job (one claimed job) → watch (cancels on the server)
//!                                           └→ shipper (events → deliveries) → outbox (in order)
//!                                                → spool (on disk) → delivery (one post)
//! below them all: ctx (what the loops share, a loaded DUT), job_id, config, error
//! ```
//!
//! The server is not trusted with the agent's files: a job id it hands out is used (as the job
//! directory's name, in URLs, in the job record) only once it has been checked to be a UUID; a
//! job with any other id is refused with an error in the agent's log, and nothing outside a
//! DUT's work directory is ever removed.
//!
//! Secrets: the values a claimed job carries are held in memory for the job and never written
//! to disk or logs; everything the agent writes to its spool or sends comes from the job's
//! event stream, which the job engine redacts before the agent sees it.

#![deny(missing_docs)]

pub mod config;
mod ctx;
mod delivery;
mod dut;
pub mod error;
mod job;
mod job_id;
mod outbox;
mod shipper;
mod spool;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use phasebox_client::{Client, ClientConfig, Credentials};
use phasebox_job::EventRecord;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{AgentConfig, CredentialsConfig, DutEntry, Protocol};
pub use error::AgentError;

/// Watches what the agent's DUTs do, for embedding and measurement. Called on the agent's
/// tasks: keep it quick.
pub trait Observer: Send + Sync {
    /// An event of a job `dut` runs, as the job engine emits it (already redacted).
    fn job_event(&self, dut: &str, record: &EventRecord) {
        let _ = (dut, record);
    }

    /// `dut` finished job `job_id`: its final result was delivered, or spooled.
    fn job_finished(&self, dut: &str, job_id: &str) {
        let _ = (dut, job_id);
    }
}

/// The agent: its configuration and server client. See the [crate docs](crate).
pub struct Agent {
    config: AgentConfig,
    client: Client,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("config", &self.config).field("client", &self.client).finish_non_exhaustive()
    }
}

impl Agent {
    /// Sets the agent up: reads the client secret and builds the server client (checking the
    /// address, the CA file and plain HTTP). Contacts nothing yet; the DUTs' runner and device
    /// configurations are read by their loops.
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        let mut client = ClientConfig::new(config.server.clone());
        client.allow_plain_http = config.allow_plain_http;
        client.ca_file = config.ca_file.clone();
        if let Some((id, secret)) = config.client_secret()? {
            client.credentials = Some(Credentials::new(id, secret));
        }
        client.user_agent = concat!("phasebox-agent/", env!("CARGO_PKG_VERSION")).to_owned();
        let client = Client::new(client)?;
        Ok(Agent { config, client, observer: None })
    }

    /// Reports every job event and every finished job to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Serves every DUT until `shutdown` completes, then stops: no more claims; running jobs
    /// may finish for half the grace period, are then cancelled (their cleanup phase still
    /// runs), and are abandoned at four fifths of it (the next start reports them and cleans
    /// their devices up); each DUT is posted `offline`; what cannot be delivered by the end of
    /// the grace period is left in the spool for the next start.
    pub async fn run<F>(self, shutdown: F) -> Result<(), AgentError>
    where
        F: Future<Output = ()>,
    {
        for dir in [self.config.spool_dir.clone(), self.config.work_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| AgentError::io(&dir, e))?;
        }
        let grace = self.config.grace_period;
        let duts = self.config.duts.clone();
        tracing::info!(
            server = %self.client.server(), protocol = %self.config.protocol, duts = duts.len(),
            "phasebox agent starting"
        );
        let shared = Arc::new(ctx::Shared {
            config: self.config,
            client: self.client,
            observer: self.observer,
            stop: CancellationToken::new(),
            hurry: CancellationToken::new(),
            sandboxes: ctx::Sandboxes::default(),
        });
        let tracker = TaskTracker::new();
        for entry in duts {
            tracker.spawn(dut::supervise(shared.clone(), entry));
        }
        tracker.close();
        tokio::select! {
            () = tracker.wait() => return Ok(()),
            () = shutdown => {}
        }
        tracing::info!(?grace, "phasebox agent stopping");
        shared.stop.cancel();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("grace period over: what is left is spooled for the next start");
            shared.hurry.cancel();
            if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
                tracing::warn!("some DUTs did not stop in time");
            }
        }
        tracing::info!("phasebox agent stopped");
        Ok(())
    }
}
