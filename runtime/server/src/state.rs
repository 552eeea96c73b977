//! The state every handler shares.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::blobs::Blobs;
use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::jwt::JwtKey;
use crate::metrics::Metrics;
use crate::secrets::SecretsKey;
use crate::store::Store;

/// Handler state (cheap to clone).
pub type AppState = Arc<Shared>;

/// What [`AppState`] points to.
#[derive(Debug)]
pub struct Shared {
    /// The store.
    pub store: Store,
    /// The configuration.
    pub config: ServerConfig,
    /// Access token key.
    pub jwt: JwtKey,
    /// Secrets key; `None` = no secrets store.
    pub secrets: Option<SecretsKey>,
    /// Wake-ups for long-poll claims and event streams.
    pub hub: Hub,
    /// Counters.
    pub metrics: Metrics,
    /// Blob files.
    pub blobs: Blobs,
    /// Bearer token for webhook calls.
    pub webhook_auth: Option<Zeroizing<String>>,
    /// Cancelled when the server shuts down: long-poll claims and event streams end early.
    pub shutdown: tokio_util::sync::CancellationToken,
}
