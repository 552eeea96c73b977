//! # phasebox-client
//!
//! A typed async client of Testflinger's v1 API and phasebox's additions. The `phasebox` CLI
//! (`submit`, `poll`, `status`, ...) and the phasebox agent both speak to the server through it,
//! and it works against a Testflinger server as well.
//!
//! ```rust,ignore
//! use phasebox_client::{Client, ClientConfig, Credentials, LogType};
//!
//! let mut config = ClientConfig::new("https://testflinger.example.com");
//! config.credentials = Some(Credentials::new("my-client", "my-secret-key"));
//! let client = Client::new(config)?;
//! let job_id = client.submit_job(&serde_json::json!({"job_queue": "rpi4"})).await?;
//! let log = client.get_log(&job_id, LogType::Output, 0).await?;
//! print!("{}", log.text());
//! ```
//!
//! * **Transport**: rustls (ring) with the webpki roots plus an optional extra CA file;
//!   plain `http://` only to loopback hosts unless [`ClientConfig::allow_plain_http`] is set;
//!   a cookie jar (Testflinger's agents are identified by the `agent_name` cookie).
//! * **Authentication** as Testflinger's CLI and agent do it: on the first request that needs
//!   it, an access token from `POST /v1/oauth2/token` (HTTP Basic `client_id:secret`) or
//!   `POST /v1/oauth2/refresh`; every request then carries `Authorization: Bearer <token>`; on
//!   a 401 the client authenticates again and replays the request once. Without credentials
//!   or a refresh token requests go out anonymously (a server without OIDC treats them as a
//!   contributor).
//! * **Retries**: [`Backoff`], the one waiting rule of every retry loop of its callers.
//! * **Errors** ([`ClientError`]) separate an unreachable server (retry later) from status
//!   answers, authentication failures and responses that do not parse.
//!
//! Client secrets, tokens and secret values are held as [`Secret`]s: they never appear in
//! `Debug` output, logs or error messages.

#![deny(missing_docs)]

mod agent;
mod api;
mod backoff;
mod client;
mod config;
mod error;
// The job event stream, for the agent (phasebox addition).
mod events;
mod types;
mod wire;

pub use backoff::Backoff;
pub use client::{Client, Login};
pub use config::{ClientConfig, Credentials, DEFAULT_SERVER, DEFAULT_TIMEOUT, DEFAULT_TRANSFER_TIMEOUT};
pub use error::{ClientError, Result};
pub use events::{JobEventStream, JobStreamEvent};
pub use phasebox_redact::Secret;
pub use types::{LogChunk, LogFragment, LogQuery, LogType, PHASES, PhaseLog, SecretExpiry, TERMINAL_STATES};
pub use wire::{AgentData, AgentUpdate, ClaimedJob, ProvisionLogEntry, ResultUpdate, StatusEvent, StatusEvents};
