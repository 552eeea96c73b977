//! A real phasebox server in-process on 127.0.0.1:0 over a temporary SQLite file.

#![allow(dead_code)]

use phasebox_client::Client;
use phasebox_server::ServerConfig;
use phasebox_server::auth::Role;
use serde_json::json;

pub use phasebox_testkit::SECRET;

/// The kit's server, with the client crate's ways to reach it.
pub struct TestServer(phasebox_testkit::TestServer);

impl std::ops::Deref for TestServer {
    type Target = phasebox_testkit::TestServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer(phasebox_testkit::TestServer::start().await)
    }

    pub async fn start_with(edit: impl FnOnce(&mut ServerConfig) + Send + 'static) -> TestServer {
        let options = phasebox_testkit::Options { edit: Box::new(edit), ..Default::default() };
        TestServer(phasebox_testkit::TestServer::start_with(options).await)
    }

    /// An anonymous client.
    pub fn anon(&self) -> Client {
        self.anon_client()
    }

    /// Creates a client id with `role` and returns a client holding its credentials.
    pub async fn client(&self, client_id: &str, role: Role) -> Client {
        self.new_client(client_id, role).await
    }

    /// An agent client registered as `name` on `queues`.
    pub async fn agent(&self, name: &str, queues: &[&str]) -> Client {
        let agent = self.client(name, Role::Agent).await;
        self.bind_agent(name, queues).await;
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
