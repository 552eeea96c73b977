//! A server with the web interface, and a lab seeded through the API with jobs in several
//! states: alice's running job (with a secret), bob's cancelled job, an anonymous waiting job.

use std::net::SocketAddr;

use phasebox_server::AppState;
use phasebox_server::auth::{self, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every client's secret.
pub use phasebox_testkit::SECRET;
/// The value of alice's stored secret: must never reach a page.
pub const SECRET_VALUE: &str = "tok-5ecret-value-never-on-a-page";

/// A running server.
pub struct Lab {
    pub addr: SocketAddr,
    pub state: AppState,
    /// alice's running job, with a secret and tags `nightly`.
    pub running: String,
    /// bob's cancelled job.
    pub cancelled: String,
    /// An anonymous job, waiting.
    pub anonymous: String,
    pub agent: Api,
    server: phasebox_testkit::TestServer,
}

impl Lab {
    pub async fn start() -> Lab {
        let options = phasebox_testkit::Options { routes: Some(Box::new(phasebox_web::router)), ..Default::default() };
        let server = phasebox_testkit::TestServer::start_with(options).await;
        let (addr, state) = (server.addr, server.state.clone());
        let base = format!("http://{addr}");
        for (id, role) in [("alice", Role::Contributor), ("bob", Role::Contributor), ("agent-1", Role::Agent)] {
            auth::create_client(&state.store, id, SECRET, role).await.unwrap();
        }
        auth::bind_agent(&state.store, "agent-1", vec!["agent-1".into()], vec!["lab".into()]).await.unwrap();
        let alice = Api::login(&base, "alice").await;
        let bob = Api::login(&base, "bob").await;
        let agent = Api::login(&base, "agent-1").await;
        let anon = Api { base: base.clone(), http: reqwest::Client::new(), token: None };

        let r = agent
            .post(
                "/v1/agents/data/agent-1",
                json!({"state": "waiting", "queues": ["lab"], "location": "rack 7", "provision_type": "noprovision"}),
            )
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        assert_eq!(alice.put("/v1/secrets/alice/lab/token", json!({"value": SECRET_VALUE})).await.0, StatusCode::OK);
        let running = alice
            .submit(json!({"job_queue": "lab", "tags": ["nightly"],
                "test_data": {"test_cmds": "echo hi", "secrets": {"API_TOKEN": "lab/token"}}}))
            .await;
        let cancelled = bob.submit(json!({"job_queue": "other", "test_data": {"test_cmds": "true"}})).await;
        let r = bob.post(&format!("/v1/job/{cancelled}/action"), json!({"action": "cancel"})).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        let r = agent.get("/v1/job?queue=lab").await;
        assert_eq!(r.0, StatusCode::OK);
        let claimed: Value = serde_json::from_str(&r.1).unwrap();
        assert_eq!(claimed["job_id"], running.as_str());
        let r = agent.post(&format!("/v1/result/{running}"), json!({"job_state": "setup"})).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        let r = agent.post("/v1/agents/data/agent-1", json!({"state": "setup", "job_id": running})).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        let anonymous = anon.submit(json!({"job_queue": "lab", "test_data": {"test_cmds": "true"}})).await;
        Lab { addr, state, running, cancelled, anonymous, agent, server }
    }

    /// The server's temporary directory (screenshots go there too).
    pub fn dir(&self) -> &std::path::Path {
        self.server.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The agent posts a fragment of the running job's output.
    pub async fn post_output(&self, fragment: i64, text: &str) {
        let body = json!({"fragment_number": fragment, "timestamp": "2026-01-01T12:00:00+00:00", "phase": "setup",
            "log_data": text});
        let r = self.agent.post(&format!("/v1/result/{}/log/output", self.running), body).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    }
}

/// An API client with a bearer token (or none).
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    async fn login(base: &str, client_id: &str) -> Api {
        let http = reqwest::Client::builder().cookie_store(true).build().unwrap();
        let r = http.post(format!("{base}/v1/oauth2/token")).basic_auth(client_id, Some(SECRET)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login {client_id}");
        let body: Value = r.json().await.unwrap();
        Api { base: base.to_owned(), http, token: body["access_token"].as_str().map(str::to_owned) }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap_or_default())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, String) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, String) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn submit(&self, job: Value) -> String {
        let (status, text) = self.post("/v1/job", job).await;
        assert_eq!(status, StatusCode::OK, "submit: {text}");
        serde_json::from_str::<Value>(&text).unwrap()["job_id"].as_str().unwrap().to_owned()
    }
}
