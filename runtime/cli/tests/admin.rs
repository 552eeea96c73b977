//! `phasebox server admin …` against a temporary SQLite database, checked through a server on
//! the same database: the printed secret logs in, and roles, limits and restricted queues show
//! in what the server answers.

use std::path::{Path, PathBuf};

use phasebox_server::ServerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn admin(config: &Path, args: &[&str]) -> Ran {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_phasebox"))
        .args(["server", "admin"])
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .expect("running phasebox");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(config: &Path, args: &[&str]) -> String {
    let ran = admin(config, args).await;
    assert_eq!(ran.code, Some(0), "{args:?}: {}{}", ran.stdout, ran.stderr);
    ran.stdout
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("server.toml");
    let text = format!(
        "database_url = \"sqlite://{}\"\nblob_dir = \"{}\"\n",
        dir.join("server.db").display(),
        dir.join("blobs").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An in-process server on the configuration's database.
struct Server {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), phasebox_server::ServerError>>,
}

impl Server {
    async fn start(config: &Path) -> Server {
        let config = ServerConfig::from_file(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(phasebox_server::launch(listener, config, async move {
            let _ = stopped.await;
        }));
        Server { base, stop, task }
    }

    async fn token(&self, client_id: &str, secret: &str) -> Result<String, StatusCode> {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/oauth2/token", self.base))
            .basic_auth(client_id, Some(secret))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::OK {
            return Err(r.status());
        }
        Ok(r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().expect("server stopped cleanly");
    }
}

fn secret_of(stdout: &str) -> String {
    let secret = stdout.trim().to_owned();
    assert_eq!(secret.len(), 40, "{stdout:?}");
    assert!(secret.chars().all(|c| c.is_ascii_alphanumeric()), "{stdout:?}");
    secret
}

#[tokio::test]
async fn admin_commands_manage_clients_the_server_honours() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());

    // Create: the secret is printed once, on stdout only.
    let ran = admin(&config, &["create-client", "lab-manager", "--role", "agent"]).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let secret = secret_of(&ran.stdout);
    assert!(ran.stderr.contains("lab-manager") && !ran.stderr.contains(&secret), "{}", ran.stderr);
    let again = admin(&config, &["create-client", "lab-manager"]).await;
    assert_eq!(again.code, Some(2));
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let bad_role = admin(&config, &["create-client", "x", "--role", "overlord"]).await;
    assert_eq!(bad_role.code, Some(2));
    assert!(bad_role.stderr.contains("unknown role"), "{}", bad_role.stderr);
    // An agent client is bound to the agent names and queues it serves.
    ok(&config, &["bind-agent", "lab-manager", "--agent", "dut-1", "--queue", "lab"]).await;
    let listed: Value = serde_json::from_str(&ok(&config, &["list-clients", "--json"]).await).unwrap();
    assert_eq!(
        (listed[0]["agent_names"].clone(), listed[0]["agent_queues"].clone()),
        (json!(["dut-1"]), json!(["lab"]))
    );

    let server = Server::start(&config).await;
    let token = server.token("lab-manager", &secret).await.expect("the printed secret logs in");
    assert_eq!(server.token("lab-manager", "wrong-secret-wrong-secret").await, Err(StatusCode::UNAUTHORIZED));
    let http = reqwest::Client::new();
    // An agent may not list clients.
    let r = http.get(format!("{}/v1/client-permissions", server.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Role, limits, allowed and restricted queues, while the server runs.
    ok(&config, &["set-role", "lab-manager", "manager"]).await;
    ok(&config, &["set-max-priority", "lab-manager", "*=10", "lab=50"]).await;
    ok(&config, &["set-max-reservation-time", "lab-manager", "*=43200"]).await;
    ok(&config, &["set-allowed-queues", "lab-manager", "lab", "lab", "bench"]).await;
    ok(&config, &["add-restricted-queue", "lab"]).await;
    assert_eq!(admin(&config, &["set-role", "nobody", "admin"]).await.code, Some(2));
    assert_eq!(admin(&config, &["set-max-priority", "lab-manager", "lab"]).await.code, Some(2));

    let listed: Value = serde_json::from_str(&ok(&config, &["list-clients", "--json"]).await).unwrap();
    assert_eq!(
        listed,
        json!([{"client_id": "lab-manager", "role": "manager", "max_priority": {"*": 10, "lab": 50},
                "max_reservation_time": {"*": 43200}, "allowed_queues": ["lab", "bench"], "email": null}])
    );
    let table = ok(&config, &["list-clients"]).await;
    assert!(table.starts_with("CLIENT") && table.contains("lab-manager  manager"), "{table}");
    assert!(!table.contains("argon2"), "{table}");
    let restricted: Value = serde_json::from_str(&ok(&config, &["list-restricted-queues", "--json"]).await).unwrap();
    assert_eq!(restricted, json!([{"queue": "lab", "owners": ["lab-manager"]}]));

    // A new token carries the new role and limits.
    let token = server.token("lab-manager", &secret).await.unwrap();
    let r = http
        .get(format!("{}/v1/client-permissions/lab-manager", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!((me["role"].clone(), me["max_priority"]["lab"].clone()), (json!("manager"), json!(50)));
    let submit = |token: Option<&str>, body: Value| {
        let mut req = http.post(format!("{}/v1/job", server.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // The restricted queue takes the owner's jobs, up to its priority limit, and no one else's.
    assert_eq!(submit(Some(&token), json!({"job_queue": "lab", "job_priority": 50})).await.unwrap().status(), 200);
    assert_eq!(submit(Some(&token), json!({"job_queue": "lab", "job_priority": 51})).await.unwrap().status(), 403);
    assert_eq!(submit(None, json!({"job_queue": "lab"})).await.unwrap().status(), 401);
    ok(&config, &["remove-restricted-queue", "lab"]).await;
    assert_eq!(submit(None, json!({"job_queue": "lab"})).await.unwrap().status(), 200);
    let gone = admin(&config, &["remove-restricted-queue", "lab"]).await;
    assert_eq!(gone.code, Some(2));
    assert!(gone.stderr.contains("not restricted"), "{}", gone.stderr);

    // A reset secret replaces the old one.
    let new_secret = secret_of(&ok(&config, &["reset-secret", "lab-manager"]).await);
    assert_ne!(new_secret, secret);
    assert_eq!(server.token("lab-manager", &secret).await, Err(StatusCode::UNAUTHORIZED));
    server.token("lab-manager", &new_secret).await.expect("the new secret logs in");

    // Deleted: no more tokens.
    ok(&config, &["delete-client", "lab-manager"]).await;
    assert_eq!(server.token("lab-manager", &new_secret).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(admin(&config, &["delete-client", "lab-manager"]).await.code, Some(2));
    assert_eq!(ok(&config, &["list-clients", "--json"]).await.trim(), "[]");
    server.stop().await;
}
