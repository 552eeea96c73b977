//! A real phasebox server in-process on 127.0.0.1:0 over a temporary SQLite file.

#![allow(dead_code)]

use std::net::SocketAddr;

use phasebox_client::{Client, ClientConfig, Credentials};
use phasebox_server::auth::{self, Role};
use phasebox_server::{AppState, ServerConfig};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A client secret long enough for the server's 15-character rule.
pub const SECRET: &str = "a-long-client-secret-0123";

/// A running server; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), phasebox_server::ServerError>>>,
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
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::in_dir(dir.path());
        let jwt = dir.path().join("jwt.key");
        std::fs::write(&jwt, "client-test-signing-key-0123456789abcdef-0123").unwrap();
        config.jwt_signing_key_file = Some(jwt);
        let key = dir.path().join("secrets.key");
        std::fs::write(&key, phasebox_server::secrets::generate_key().as_str()).unwrap();
        config.secrets_key_file = Some(key);
        edit(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = phasebox_server::build_state(config).await.expect("server state");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(phasebox_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer { addr, dir, state, stop: Some(tx), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An anonymous client.
    pub fn anon(&self) -> Client {
        Client::new(ClientConfig::new(self.url())).unwrap()
    }

    /// Creates a client id with `role` and returns a client holding its credentials.
    pub async fn client(&self, client_id: &str, role: Role) -> Client {
        auth::create_client(&self.state.store, client_id, SECRET, role).await.expect("create client");
        self.client_for(client_id, SECRET)
    }

    /// A client with the given credentials (the client id need not exist).
    pub fn client_for(&self, client_id: &str, secret: &str) -> Client {
        let mut config = ClientConfig::new(self.url());
        config.credentials = Some(Credentials::new(client_id, secret));
        Client::new(config).unwrap()
    }

    /// An agent client registered as `name` on `queues`.
    pub async fn agent(&self, name: &str, queues: &[&str]) -> Client {
        let agent = self.client(name, Role::Agent).await;
        let queue_names: Vec<String> = queues.iter().map(|q| (*q).to_owned()).collect();
        auth::bind_agent(&self.state.store, name, vec![name.to_owned()], queue_names).await.expect("bind agent");
        agent.post_agent_data(name, &json!({"state": "waiting", "queues": queues})).await.expect("register agent");
        agent
    }

    /// How many requests the server answered on `route` with `status` (from the server's metrics).
    pub async fn requests(&self, route: &str, status: u16) -> u64 {
        // Read in-process: `/metrics` needs a login, which would count as a request itself.
        let text = self.state.metrics.render(&self.state.store).await.unwrap();
        let needle = format!("route=\"{route}\",status=\"{status}\"");
        text.lines()
            .filter(|l| l.starts_with("phasebox_http_requests_total") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|n| n as u64)
            .sum()
    }
}
