//! # phasebox-server
//!
//! The phasebox server: Testflinger's v1 REST API — wire-compatible, so the Testflinger CLI
//! and agent work against it — plus additive phasebox extensions, over an embedded SQLite file
//! or a shared PostgreSQL database.
//!
//! * [`router`] lists every route: Testflinger v1 first, then `/phasebox/v1/…` and `/metrics`
//!   (or [`metrics_router`] on a listener of its own, with `metrics_listen`); [`openapi`]
//!   describes them all, at `GET /phasebox/v1/openapi.json`.
//! * HTTPS with `tls_cert_file` and `tls_key_file` ([`tls`], rustls with *ring*).
//! * [`launch`] serves a bound listener until a shutdown future completes; the `phasebox
//!   server` verb binds the address from its flags and passes SIGTERM/SIGINT.
//! * [`ServerConfig`] is the TOML configuration (unknown keys are errors).
//! * [`store::Store`] holds everything; see its docs for the SQLite/PostgreSQL split.
//! * [`auth`] has the role checks, token handling and the admin functions the CLI calls
//!   ([`auth::create_client`], [`auth::grant_role`], ...).
//!
//! phasebox additions, all additive to the Testflinger wire protocol:
//!
//! * **Long-poll claim**: `GET /v1/job?queue=q&wait=N` waits up to `N` seconds (capped by
//!   `max_long_poll`) and returns the job the moment one is submitted (one
//!   [`tokio::sync::Notify`] per queue); without `wait` it answers at once, as Testflinger.
//! * **Event stream**: `GET /phasebox/v1/job/<id>/events` is a server-sent event stream of the
//!   job's lifecycle, results, log fragments and agent events, resumable from a sequence number
//!   (`?after=N` or `Last-Event-ID`).
//! * **Plugin registry**: `POST /phasebox/v1/plugins`, `PUT|GET /phasebox/v1/plugins/<sha256>`.
//!
//! Deliberate differences from Testflinger are listed in the crate's README.

#![deny(missing_docs)]

pub mod auth;
pub mod blobs;
pub mod clock;
pub mod config;
pub mod error;
pub mod handlers;
pub mod hub;
pub mod jwt;
pub mod keyfile;
pub mod metrics;
pub mod openapi;
mod router;
pub mod secrets;
pub mod state;
pub mod store;
pub mod tls;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::{ConfigError, ServerConfig};
pub use error::ApiError;
pub use router::{metrics_router, router};
pub use state::{AppState, Shared};
pub use store::{Store, StoreError};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration or a key file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Listening, serving or the blob directory failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens the store, blob directory and keys: everything the handlers share.
pub async fn build_state(config: ServerConfig) -> Result<AppState, ServerError> {
    config.validate()?;
    let store = Store::connect(&config.database_url).await?;
    let blobs = blobs::Blobs::open(&config.blob_dir)?;
    let jwt_key = match config.jwt_signing_key()? {
        Some(k) => k,
        // No configured key: one random key, made once into a file in the state directory
        // (shared by replicas), so tokens survive restarts.
        None => keyfile::load_or_create(&config.blob_dir.join(keyfile::GENERATED_JWT_KEY_FILE))?,
    };
    if store.delete_setting(keyfile::LEGACY_DATABASE_SETTING).await? {
        tracing::warn!(
            "deleted the JWT signing key that an earlier version kept in the database: access tokens signed \
             with it are refused from now on (clients get new ones with their refresh tokens or credentials), \
             and backups of the database made before no longer hold a key that is in use"
        );
    }
    let secrets = config.secrets_key()?.map(|k| secrets::SecretsKey::new(&k));
    if secrets.is_none() {
        tracing::warn!("no secrets key configured: the secrets store is disabled");
    }
    let webhook_auth = config.webhook_auth()?;
    tracing::info!(
        database = %config::redact_url(&config.database_url),
        backend = ?store.backend(),
        blob_dir = %config.blob_dir.display(),
        anonymous_access = config.anonymous_access,
        "store ready"
    );
    Ok(Arc::new(Shared {
        store,
        config,
        jwt: jwt::JwtKey::new(jwt_key),
        secrets,
        hub: hub::Hub::default(),
        metrics: metrics::Metrics::default(),
        blobs,
        webhook_auth,
        shutdown: tokio_util::sync::CancellationToken::new(),
    }))
}

/// Serves the API on `listener` until `shutdown` completes; then stops accepting, ends
/// long-polls and event streams, lets requests in progress finish, and closes the store.
///
/// With `tls_cert_file` and `tls_key_file` configured the listener speaks HTTPS only; the
/// certificate and key are checked before the store is opened.
pub async fn launch<F>(listener: TcpListener, config: ServerConfig, shutdown: F) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    launch_with_routes(listener, config, |_| axum::Router::new(), shutdown).await
}

/// [`launch`], also serving the routes `extra` builds from the server's state (the web
/// interface) on the same listener. `extra`'s paths must not overlap the API's, and it must not
/// set a fallback: unknown paths get the API's answer.
pub async fn launch_with_routes<F>(
    listener: TcpListener,
    config: ServerConfig,
    extra: impl FnOnce(AppState) -> axum::Router,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let tls = tls::load(&config)?;
    let state = build_state(config).await?;
    let extra = extra(state.clone());
    serve_with(listener, state, tls, extra, shutdown).await
}

/// [`launch`] with state built by [`build_state`].
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with_routes(listener, state, axum::Router::new(), shutdown).await
}

/// [`serve`], also serving `extra` (the web interface) on the same listener; see
/// [`launch_with_routes`].
pub async fn serve_with_routes<F>(
    listener: TcpListener,
    state: AppState,
    extra: axum::Router,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let tls = tls::load(&state.config)?;
    serve_with(listener, state, tls, extra, shutdown).await
}

/// The API's listener: it speaks HTTPS when a certificate is configured, plain HTTP otherwise.
enum ApiListener {
    Https(tls::TlsListener),
    Http(axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)>),
}

/// Small requests and answers go out at once instead of waiting for more to coalesce.
fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

async fn serve_with<F>(
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    extra: axum::Router,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = match tls {
        Some(tls) => ApiListener::Https(tls::TlsListener::new(listener, tls)?),
        None => ApiListener::Http(axum::serve::ListenerExt::tap_io(listener, set_nodelay)),
    };
    let metrics = match state.config.metrics_listen {
        Some(at) => {
            let metrics = TcpListener::bind(at)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {at} for /metrics: {e}")))?;
            tracing::info!(addr = %metrics.local_addr()?, "metrics listening");
            let app = metrics_router(state.clone());
            let stop = state.shutdown.clone();
            Some(tokio::spawn(
                async move { axum::serve(metrics, app).with_graceful_shutdown(stop.cancelled_owned()).await },
            ))
        }
        None => None,
    };
    tracing::info!(%addr, scheme, "phasebox server listening");
    let retention = tokio::spawn(retention_loop(state.clone()));
    let token = state.shutdown.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down");
        token.cancel();
    };
    let app = router(state.clone()).merge(extra);
    let result = match listener {
        ApiListener::Https(https) => axum::serve(https, app).with_graceful_shutdown(signal).await,
        ApiListener::Http(http) => axum::serve(http, app).with_graceful_shutdown(signal).await,
    };
    retention.abort();
    // Stops with the same signal (or now, should the API listener have failed).
    state.shutdown.cancel();
    if let Some(metrics) = metrics {
        match metrics.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "metrics listener panicked"),
            Ok(Ok(())) => {}
        }
    }
    state.store.close().await;
    result.map_err(ServerError::from)
}

/// Deletes data older than the configured retention, hourly.
async fn retention_loop(state: AppState) {
    let retention = state.config.retention();
    if retention.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = clock::now_micros();
        let cutoff = now.saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX));
        match state.store.purge_before(cutoff, now).await {
            Ok(jobs) => {
                for id in &jobs {
                    let _ = state.blobs.remove(blobs::BlobKind::Attachments, id).await;
                    let _ = state.blobs.remove(blobs::BlobKind::Artifacts, id).await;
                }
                if !jobs.is_empty() {
                    tracing::info!(jobs = jobs.len(), "expired jobs deleted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}
