//! # phasebox-testkit
//!
//! The one test harness behind the integration tests of the server, the client, the agent and
//! the CLI: a real phasebox server in-process on `127.0.0.1:0` over a temporary directory, with
//! its signing and secrets keys written there (mode 0600, as the server demands), on SQLite or
//! on a fresh PostgreSQL database. It is stopped when dropped or with [`TestServer::stop`],
//! which hands back what a restart on the same port and database needs.
//!
//! PostgreSQL: tests that run on every backend call [`backends`]; PostgreSQL is among them when
//! `PHASEBOX_TEST_POSTGRES_URL` is set, and with `PHASEBOX_REQUIRE_POSTGRES=1` (CI) a missing
//! URL fails the test instead of leaving PostgreSQL untested.

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::Path;

use phasebox_client::{Client, ClientConfig, Credentials};
use phasebox_server::auth::{self, Role};
use phasebox_server::{AppState, ServerConfig, ServerError, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The JWT signing key of every test server, so tests can forge tokens with it.
pub const JWT_KEY: &str = "test-signing-key-0123456789abcdef-0123456789";
/// The secret of the clients the kit creates: long enough for Testflinger's 15-character rule.
pub const SECRET: &str = "a-long-client-secret";

/// Sends the code's `tracing` output to the test's output when `RUST_LOG` is set.
pub fn logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the server's temporary directory.
    Sqlite,
    /// A new database on the PostgreSQL server `PHASEBOX_TEST_POSTGRES_URL` names.
    Postgres,
}

/// SQLite always; PostgreSQL too when `PHASEBOX_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Db> {
    let mut v = vec![Db::Sqlite];
    if postgres_url().is_some() {
        v.push(Db::Postgres);
    }
    v
}

/// `PHASEBOX_TEST_POSTGRES_URL`, if set. Panics when it is not but `PHASEBOX_REQUIRE_POSTGRES=1`,
/// so CI cannot silently skip PostgreSQL.
pub fn postgres_url() -> Option<String> {
    match std::env::var("PHASEBOX_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("PHASEBOX_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "PHASEBOX_REQUIRE_POSTGRES=1 but PHASEBOX_TEST_POSTGRES_URL is not set \
                 (export PHASEBOX_TEST_POSTGRES_URL=\"$(bash runtime/server/ci-postgres.sh)\")"
            );
            None
        }
    }
}

/// A new, empty PostgreSQL database on the server `PHASEBOX_TEST_POSTGRES_URL` names.
pub async fn fresh_postgres_url() -> String {
    let base = postgres_url().expect("PHASEBOX_TEST_POSTGRES_URL");
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).unwrap();
    let name = format!("phasebox_test_{}", hex::encode(suffix));
    let admin =
        sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&base).await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    admin.close().await;
    phasebox_server::config::url_for_database(&base, &name)
}

/// Writes `secret` to a new file at `path` readable by its owner only, as the server and the
/// agent require of files that hold a secret.
pub fn write_secret(path: &Path, secret: &str) {
    assert!(phasebox_config::secret_file::create(path, secret.as_bytes(), "test secret").unwrap(), "{path:?} exists");
}

/// Writes the test keys into `dir` and returns a configuration using them (and a fresh
/// PostgreSQL database for [`Db::Postgres`]); without `secrets`, the server has no secrets key.
pub async fn config_in(dir: &Path, db: Db, secrets: bool) -> ServerConfig {
    let mut config = ServerConfig::in_dir(dir);
    if db == Db::Postgres {
        config.database_url = fresh_postgres_url().await;
    }
    let jwt = dir.join("jwt.key");
    write_secret(&jwt, JWT_KEY);
    config.jwt_signing_key_file = Some(jwt);
    if secrets {
        let key = dir.join("secrets.key");
        write_secret(&key, phasebox_server::secrets::generate_key().as_str());
        config.secrets_key_file = Some(key);
    }
    config
}

/// How to start a [`TestServer`].
pub struct Options {
    /// The database.
    pub db: Db,
    /// Whether the server has a secrets key.
    pub secrets: bool,
    /// A last change to the configuration.
    pub edit: Box<dyn FnOnce(&mut ServerConfig) + Send>,
    /// More routes served beside the API (the web interface), made from the server's state.
    pub routes: Option<Box<dyn FnOnce(AppState) -> axum::Router + Send>>,
}

impl Default for Options {
    fn default() -> Self {
        Options { db: Db::Sqlite, secrets: true, edit: Box::new(|_| {}), routes: None }
    }
}

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its directory (database, blobs, keys).
    pub dir: TempDir,
    /// Its configuration.
    pub config: ServerConfig,
    /// Its state, for reading the store directly.
    pub state: AppState,
    /// Its store.
    pub store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl TestServer {
    /// A fresh server on SQLite with a secrets key.
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    /// A fresh server on `db`.
    pub async fn start_on(db: Db) -> TestServer {
        Self::start_with(Options { db, ..Options::default() }).await
    }

    /// A fresh server started as `options` say.
    pub async fn start_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path(), options.db, options.secrets).await;
        (options.edit)(&mut config);
        Self::launch(dir, config, "127.0.0.1:0".parse().unwrap(), options.routes).await
    }

    /// Starts on an existing directory and configuration, listening on `addr` (for restarts:
    /// the address [`TestServer::stop`] returned). Binding retries briefly, since the port of a
    /// server that just stopped can take a moment to be free.
    pub async fn start_in(dir: TempDir, config: ServerConfig, addr: SocketAddr) -> TestServer {
        Self::launch(dir, config, addr, None).await
    }

    async fn launch(
        dir: TempDir,
        config: ServerConfig,
        addr: SocketAddr,
        routes: Option<Box<dyn FnOnce(AppState) -> axum::Router + Send>>,
    ) -> TestServer {
        let mut attempts = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if attempts == 50 => panic!("binding {addr}: {e}"),
                Err(_) => attempts += 1,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let addr = listener.local_addr().unwrap();
        let state = phasebox_server::build_state(config.clone()).await.expect("server state");
        let (tx, rx) = oneshot::channel::<()>();
        let routes = routes.map_or_else(axum::Router::new, |routes| routes(state.clone()));
        let task = tokio::spawn(phasebox_server::serve_with_routes(listener, state.clone(), routes, async move {
            let _ = rx.await;
        }));
        TestServer { addr, dir, config, store: state.store.clone(), state, stop: Some(tx), task: Some(task) }
    }

    /// Stops the server and waits for it; returns what [`TestServer::start_in`] needs to start
    /// it again on the same port and database.
    pub async fn stop(mut self) -> (TempDir, ServerConfig, SocketAddr) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().expect("server stopped cleanly");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.config.clone(), self.addr)
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates client `client_id` with `role` and secret [`SECRET`].
    pub async fn create_client(&self, client_id: &str, role: Role) {
        auth::create_client(&self.store, client_id, SECRET, role).await.expect("create client");
    }

    /// Binds agent client `client_id` to agent name `client_id` on `queues`, as
    /// `phasebox server admin bind-agent` does.
    pub async fn bind_agent(&self, client_id: &str, queues: &[&str]) {
        let queues = queues.iter().map(|q| (*q).to_owned()).collect();
        auth::bind_agent(&self.store, client_id, vec![client_id.to_owned()], queues).await.expect("bind agent");
    }

    /// An anonymous [`phasebox_client::Client`].
    pub fn anon_client(&self) -> Client {
        Client::new(ClientConfig::new(self.url())).unwrap()
    }

    /// A [`phasebox_client::Client`] holding `client_id`'s credentials (which need not exist).
    pub fn client_for(&self, client_id: &str, secret: &str) -> Client {
        let mut config = ClientConfig::new(self.url());
        config.credentials = Some(Credentials::new(client_id, secret));
        Client::new(config).unwrap()
    }

    /// Creates client `client_id` with `role` and returns a [`phasebox_client::Client`] for it.
    pub async fn new_client(&self, client_id: &str, role: Role) -> Client {
        self.create_client(client_id, role).await;
        self.client_for(client_id, SECRET)
    }
}
