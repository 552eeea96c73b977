//! The phasebox sandbox: runs one phase plugin as a WASI component that can touch only what
//! its phase was granted.
//!
//! A job's data flows one way through this crate:
//!
//! 1. [`Sandbox::new`] builds the process's one engine (epoch interruption from a single ticker
//!    thread, the pooling allocator, one linker holding every interface) and opens the
//!    [compile cache](cache).
//! 2. [`Sandbox::load_file`] identifies a plugin by sha256, reads its [`manifest`],
//!    compiles it once (or loads it from the cache) and keeps it pre-instantiated.
//! 3. [`Grant::resolve`] intersects what the plugin declares, what the operator's [`Policy`]
//!    allows and what the job asks for ([`GrantRequest`]).
//! 4. [`Sandbox::run_phase`] refuses a plugin that imports an interface the grant does not
//!    link, builds a fresh store from the grant (preopened directories, the network policy, the
//!    phase's secrets and limits), calls the plugin's `run`, and streams [`PhaseEvent`]s (output,
//!    logs, results, every capability use) to the caller as they happen. The phase ends with a
//!    [`PhaseEnd`]: passed, failed (infra / job / test), stopped by a limit or a cancel, trapped,
//!    or exited.
//!
//! The grammar of what is granted (endpoints, origins, names, directories) is
//! [`phasebox_grants`]'. Which interfaces link is [`capability`]'s: a plugin's imports are checked
//! against its manifest and the policy by one [`check_imports`], which the planner, the run and
//! `phasebox plugin check` share. Each capability then lives in one module, which grants the
//! job's request (manifest ∩ policy ∩ ask, through [`grant`]'s `Documents`), links its
//! interfaces and prepares them for an instance: [`network`] (sockets, DNS and the address rules
//! shared with HTTP), `http` (wasi-http origins and the send hook), `files` (mounts opened
//! beneath the job directory without following links, link creation checks, write limits),
//! `host` (log, secrets, results), [`device`] (power, console, exec, flash) and [`limits`]
//! (memory, output, handles, time, disk). `bindings` holds the one `bindgen!`.

#![deny(missing_docs)]

mod bindings;
pub mod cache;
pub mod capability;
pub mod device;
mod engine;
pub mod error;
pub mod events;
mod exec_output;
mod files;
pub mod grant;
mod host;
mod http;
pub mod limits;
pub mod manifest;
pub mod network;
mod output;
mod phase;
mod plugin;
pub mod units;

pub use cache::{CacheOutcome, CompileCache};
pub use capability::{Capabilities, Capability, Linked, Refusal, check_imports};
pub use engine::{Allocation, EngineConfig, Sandbox};
pub use error::SandboxError;
pub use events::{PhaseEvent, channel};
pub use grant::{Grant, Policy};
pub use limits::Limits;
pub use limits::Stop;
pub use manifest::Manifest;
pub use phase::{FailureKind, PhaseEnd, PhaseInput, PhaseReport};
pub use phasebox_grants::{
    Access, DnsName, Endpoint, EndpointPattern, FileRequest, FileRule, GrantRequest, HostPattern, NetworkRequest,
    NetworkRule, Origin, OriginPattern, ParseError,
};
pub use phasebox_redact::Secret;
pub use plugin::{Plugin, sha256_hex};
pub use tokio_util::sync::CancellationToken;
