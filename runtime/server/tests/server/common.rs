//! Test harness: a real server in-process on 127.0.0.1:0 over a temporary SQLite file (or a
//! fresh PostgreSQL database when PHASEBOX_TEST_POSTGRES_URL is set and the test asks for
//! every backend), driven over HTTP with reqwest.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use phasebox_server::auth::{self, Role};
use phasebox_server::jwt::JwtKey;
use phasebox_server::{AppState, ServerConfig, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The JWT key every test server uses, so tests can forge expired tokens.
pub const JWT_KEY: &str = "test-signing-key-0123456789abcdef-0123456789";
/// A secret long enough for Testflinger's 15-character rule.
pub const SECRET: &str = "a-long-client-secret";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when PHASEBOX_TEST_POSTGRES_URL is set. With
/// PHASEBOX_REQUIRE_POSTGRES=1 (CI) a missing URL fails the test instead.
pub fn backends() -> Vec<Db> {
    let mut v = vec![Db::Sqlite];
    if postgres_url().is_some() {
        v.push(Db::Postgres);
    }
    v
}

/// PHASEBOX_TEST_POSTGRES_URL, if set. Panics when it is not but PHASEBOX_REQUIRE_POSTGRES=1,
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

/// A new, empty PostgreSQL database on the server named by PHASEBOX_TEST_POSTGRES_URL.
pub async fn fresh_postgres_url() -> String {
    let base = postgres_url().expect("PHASEBOX_TEST_POSTGRES_URL");
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).unwrap();
    let name = format!("phasebox_test_{}", hex(&suffix));
    let admin = sqlx_admin(&base).await;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    admin.close().await;
    phasebox_server::config::url_for_database(&base, &name)
}

async fn sqlx_admin(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await.expect("connect to PostgreSQL")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub config: ServerConfig,
    pub store: Store,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), phasebox_server::ServerError>>>,
}

/// Options for [`TestServer::start_with`].
pub struct Options {
    pub db: Db,
    pub secrets: bool,
    pub edit: Box<dyn FnOnce(&mut ServerConfig) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Options { db: Db::Sqlite, secrets: true, edit: Box::new(|_| {}) }
    }
}

/// Writes the test keys into `dir` and returns a configuration using them.
pub async fn config_in(dir: &std::path::Path, db: Db, secrets: bool) -> ServerConfig {
    let mut config = ServerConfig::in_dir(dir);
    if db == Db::Postgres {
        config.database_url = fresh_postgres_url().await;
    }
    let jwt: PathBuf = dir.join("jwt.key");
    std::fs::write(&jwt, JWT_KEY).unwrap();
    config.jwt_signing_key_file = Some(jwt);
    if secrets {
        let key = dir.join("secrets.key");
        std::fs::write(&key, phasebox_server::secrets::generate_key().as_str()).unwrap();
        config.secrets_key_file = Some(key);
    }
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    pub async fn start_on(db: Db) -> TestServer {
        Self::start_with(Options { db, ..Options::default() }).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path(), options.db, options.secrets).await;
        (options.edit)(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts on an existing directory and configuration (for restarts).
    pub async fn start_in(dir: TempDir, config: ServerConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = phasebox_server::build_state(config.clone()).await.expect("server state");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(phasebox_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer { addr, dir, config, store: state.store.clone(), state, stop: Some(tx), task: Some(task) }
    }

    /// Stops the server and waits for it; returns the directory and configuration.
    pub async fn stop(mut self) -> (TempDir, ServerConfig) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().expect("server stopped cleanly");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.config.clone())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// An anonymous client.
    pub fn anon(&self) -> Api {
        Api { base: format!("http://{}", self.addr), http: reqwest::Client::new(), token: None }
    }

    /// Creates a client with `role` and logs it in.
    pub async fn client(&self, client_id: &str, role: Role) -> Api {
        auth::create_client(&self.store, client_id, SECRET, role).await.expect("create client");
        self.login(client_id).await
    }

    /// Logs in an existing client (secret [`SECRET`]).
    pub async fn login(&self, client_id: &str) -> Api {
        let api = self.anon();
        let r = api.http.post(self.url("/v1/oauth2/token")).basic_auth(client_id, Some(SECRET)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login {client_id}");
        let body: Value = r.json().await.unwrap();
        Api {
            base: api.base,
            http: reqwest::Client::builder().cookie_store(true).build().unwrap(),
            token: Some(body["access_token"].as_str().unwrap().to_owned()),
        }
    }

    /// An agent client, registered under `name` (so it carries the `agent_name` cookie).
    pub async fn agent(&self, name: &str, queues: &[&str]) -> Api {
        let api = self.client(name, Role::Agent).await;
        let queue_names: Vec<String> = queues.iter().map(|q| (*q).to_owned()).collect();
        auth::bind_agent(&self.store, name, vec![name.to_owned()], queue_names).await.expect("bind agent");
        let r = api.post(&format!("/v1/agents/data/{name}"), json!({"state": "waiting", "queues": queues})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        api
    }

    /// An access token signed with the server's key, valid from `iat` for `ttl` seconds.
    pub fn forge(&self, permissions: Value, iat: i64, ttl: i64) -> String {
        let key = JwtKey::new(zeroize::Zeroizing::new(JWT_KEY.as_bytes().to_vec()));
        key.issue(&permissions, iat, ttl)
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

/// A client: base URL, HTTP client (cookies kept for logged-in clients), optional bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn with_token(&self, token: &str) -> Api {
        Api { token: Some(token.to_owned()), ..self.clone() }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub async fn send(&self, r: reqwest::RequestBuilder) -> Reply {
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Reply { status, headers, text }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(self.req(reqwest::Method::POST, path).header("content-type", "application/json").body(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.req(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str, body: Option<Value>) -> Reply {
        let mut r = self.req(reqwest::Method::DELETE, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> Reply {
        let part = reqwest::multipart::Part::bytes(bytes).file_name("file").mime_str("application/x-gzip").unwrap();
        let form = reqwest::multipart::Form::new().part("file", part);
        self.send(self.req(reqwest::Method::POST, path).multipart(form)).await
    }

    /// Submits a job; returns its id.
    pub async fn submit(&self, job: Value) -> String {
        let r = self.post("/v1/job", job).await;
        assert_eq!(r.status, StatusCode::OK, "submit: {}", r.text);
        r.json()["job_id"].as_str().unwrap().to_owned()
    }

    /// Claims from `queues` (agent clients); `None` on 204.
    pub async fn claim(&self, queues: &[&str]) -> Option<Value> {
        let q: Vec<String> = queues.iter().map(|q| format!("queue={q}")).collect();
        let r = self.get(&format!("/v1/job?{}", q.join("&"))).await;
        match r.status {
            StatusCode::NO_CONTENT => {
                assert!(r.text.is_empty());
                None
            }
            StatusCode::OK => Some(r.json()),
            s => panic!("claim answered {s}: {}", r.text),
        }
    }
}
