//! Test harness: a real server in-process on 127.0.0.1:0 over a temporary SQLite file (or a
//! fresh PostgreSQL database when PHASEBOX_TEST_POSTGRES_URL is set and the test asks for
//! every backend), driven over HTTP with reqwest.

#![allow(dead_code)]

use phasebox_server::ServerConfig;
use phasebox_server::auth::Role;
use phasebox_server::jwt::JwtKey;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

pub use phasebox_testkit::{Db, JWT_KEY, Options, SECRET, backends, config_in, fresh_postgres_url, postgres_url};

/// The kit's server, reached over raw HTTP ([`Api`]), as these tests check the wire itself.
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

    pub async fn start_on(db: Db) -> TestServer {
        TestServer(phasebox_testkit::TestServer::start_on(db).await)
    }

    pub async fn start_with(options: Options) -> TestServer {
        TestServer(phasebox_testkit::TestServer::start_with(options).await)
    }

    /// Starts on an existing directory and configuration (for restarts).
    pub async fn start_in(dir: TempDir, config: ServerConfig) -> TestServer {
        TestServer(phasebox_testkit::TestServer::start_in(dir, config, "127.0.0.1:0".parse().unwrap()).await)
    }

    /// Stops the server and waits for it; returns the directory and configuration.
    pub async fn stop(self) -> (TempDir, ServerConfig) {
        let (dir, config, _) = self.0.stop().await;
        (dir, config)
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
        self.create_client(client_id, role).await;
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
        self.bind_agent(name, queues).await;
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
