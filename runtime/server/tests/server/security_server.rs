//! Server-wide hardening (issue 12 items 4, 10, 15, 17, 18, 22): a YAML body cannot make the
//! server allocate without bound, the generated signing key never sits in the database, the
//! plugin registry takes only components from admins within a quota, log lines cannot be forged,
//! tokens die with their client, and `/metrics` on the API listener needs a login.

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Db, Options, TestServer, backends, config_in};
use phasebox_server::auth::{self, Role};

#[tokio::test]
async fn item4_yaml_aliases_are_bounded_by_the_bytes_they_expand_to() {
    let s = TestServer::start().await;
    // About 1 MiB of body that names a 1 MiB scalar 64 times: few nodes, 64 MiB of text.
    let long = "x".repeat(1 << 20);
    let mut body = format!("job_queue: q\nallocate_data:\n  a: &a {long}\n  b: [");
    body.push_str(&vec!["*a"; 64].join(", "));
    body.push_str("]\n");
    let r = s
        .anon()
        .send(s.anon().req(reqwest::Method::POST, "/v1/job").header("content-type", "application/yaml").body(body))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", &r.text[..r.text.len().min(300)]);
    let limit = format!("{} bytes", phasebox_jobspec::MAX_EXPANDED_BYTES);
    assert!(r.text.contains(&limit), "the refusal names the limit: {}", &r.text[..r.text.len().min(300)]);
    assert_eq!(s.anon().get("/v1/").await.status, StatusCode::OK, "the server still answers");
    s.stop().await;
}

/// The generated key's file in the blob directory.
fn key_file(s: &TestServer) -> std::path::PathBuf {
    s.config.blob_dir.join(phasebox_server::keyfile::GENERATED_JWT_KEY_FILE)
}

async fn settings_rows(s: &TestServer) -> i64 {
    let sql = "SELECT COUNT(*) FROM settings WHERE key = 'jwt_signing_key'";
    let url = &s.config.database_url;
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

#[tokio::test]
async fn item10_the_generated_signing_key_stays_out_of_the_database() {
    use std::os::unix::fs::PermissionsExt;
    for db in backends() {
        let no_key = |c: &mut phasebox_server::ServerConfig| c.jwt_signing_key_file = None;
        let s = TestServer::start_with(Options { db, edit: Box::new(no_key), ..Options::default() }).await;
        let client = s.client("alice", Role::Contributor).await;
        assert_eq!(client.get("/v1/agents/queues").await.status, StatusCode::OK, "{db:?}: its tokens work");
        // The attack: whoever reads a database backup mints admin tokens with the key found in it.
        assert_eq!(settings_rows(&s).await, 0, "{db:?}: the signing key is in the database");
        let meta = std::fs::metadata(key_file(&s)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{db:?}");

        // A deployment that kept the key in the database: it is deleted at start, and tokens
        // minted with it are refused.
        let (dir, config) = s.stop().await;
        let legacy = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let insert = "INSERT INTO settings (key, value) VALUES ('jwt_signing_key', $1) \
                      ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        match db {
            Db::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&config.database_url).await.unwrap();
                sqlx::query(insert).bind(legacy).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Db::Postgres => {
                let pool = sqlx::PgPool::connect(&config.database_url).await.unwrap();
                sqlx::query(insert).bind(legacy).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
        let s = TestServer::start_in(dir, config).await;
        assert_eq!(settings_rows(&s).await, 0, "{db:?}: the legacy key is still in the database");
        let key = phasebox_server::jwt::JwtKey::new(zeroize::Zeroizing::new(legacy.as_bytes().to_vec()));
        let now = phasebox_server::clock::now_micros() / 1_000_000;
        let minted = key.issue(&json!({"client_id": "alice", "role": "admin"}), now, 600);
        let r = s.anon().with_token(&minted).get("/v1/client-permissions").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: a token minted with the old key: {}", r.text);
        s.stop().await;
    }
}

#[tokio::test]
async fn item10_a_generated_key_file_open_to_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path(), Db::Sqlite, false).await;
    config.jwt_signing_key_file = None;
    let file = config.blob_dir.join(phasebox_server::keyfile::GENERATED_JWT_KEY_FILE);
    std::fs::create_dir_all(&config.blob_dir).unwrap();
    std::fs::write(&file, "planted-key-planted-key-planted-key-0123").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = phasebox_server::build_state(config).await.unwrap_err().to_string();
    assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
}

#[tokio::test]
async fn configured_key_files_open_to_others_are_refused_like_the_generated_one() {
    use std::os::unix::fs::PermissionsExt;
    // The attack: a key file any local user can read lets them mint tokens (signing key) or
    // decrypt every stored secret (secrets key). The server used to read both without a check.
    for (file, what) in [("jwt.key", "JWT signing key file"), ("secrets.key", "secrets key file")] {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), Db::Sqlite, true).await;
        let path = dir.path().join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = phasebox_server::build_state(config).await.unwrap_err().to_string();
        assert!(e.contains(what) && e.contains("mode 640") && e.contains("chmod 600"), "{e}");
        assert!(!e.contains(phasebox_testkit::JWT_KEY), "key material in {e}");
    }
}

/// An empty WebAssembly component, and the same with a custom section (a second hash).
const COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
const COMPONENT_2: &[u8] = b"\0asm\x0d\x00\x01\x00\x00\x04\x03abc";
const CORE_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

#[tokio::test]
async fn item15_only_admins_upload_valid_components_within_the_quota() {
    let s = TestServer::start_with(Options { edit: Box::new(|c| c.max_plugins = 1), ..Options::default() }).await;
    let post = |api: &crate::common::Api, body: &'static [u8]| {
        let api = api.clone();
        async move { api.send(api.req(reqwest::Method::POST, "/phasebox/v1/plugins").body(body)).await }
    };
    // The attack: anyone fills the registry (and the disk) with anything.
    let r = post(&s.anon(), COMPONENT).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "anonymous upload: {}", r.text);
    let contributor = s.client("alice", Role::Contributor).await;
    assert_eq!(post(&contributor, COMPONENT).await.status, StatusCode::FORBIDDEN, "a contributor's upload");
    let manager = s.client("boss", Role::Manager).await;
    assert_eq!(post(&manager, COMPONENT).await.status, StatusCode::FORBIDDEN, "a manager's upload");

    let admin = s.client("root", Role::Admin).await;
    let r = post(&admin, b"#!/bin/sh\nrm -rf /\n").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("not a WebAssembly component"), "{}", r.text);
    let r = post(&admin, CORE_MODULE).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("core WebAssembly module"), "{}", r.text);
    let r = post(&admin, b"\0asm\x0d\x00\x01\x00\x07\x05").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "a truncated component: {}", r.text);

    let r = post(&admin, COMPONENT).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(post(&admin, COMPONENT).await.status, StatusCode::OK, "the same component again takes no room");
    let r = post(&admin, COMPONENT_2).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "past max_plugins: {}", r.text);
    assert!(r.text.contains("max_plugins = 1"), "{}", r.text);
    let listed = std::fs::read_dir(s.config.blob_dir.join("plugins")).unwrap().count();
    assert_eq!(listed, 1, "only the accepted component is stored");
    s.stop().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn item17_untrusted_strings_cannot_forge_log_lines() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test's runtime has one thread: the server's tasks log through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = TestServer::start().await;
    let forged = "nobody\n2099-01-01T00:00:00Z  INFO phasebox_server: token issued client_id=root role=admin";
    let r =
        s.anon().http.post(s.url("/v1/oauth2/token")).basic_auth(forged, Some("wrong-secret")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("2099-01-01")), "a forged log line:\n{text}");
    assert!(text.contains(r#"client_id="nobody\n2099"#), "the client id is quoted:\n{text}");
}

#[tokio::test]
async fn item18_tokens_die_with_their_client_and_follow_its_role() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let bob = s.client("bob", Role::Contributor).await;
        let carol = s.client("carol", Role::Contributor).await;
        assert_eq!(bob.submit(json!({"job_queue": "q"})).await.len(), 36);
        // Demoted to agent: its token no longer submits jobs.
        auth::grant_role(&s.store, "carol", Role::Agent).await.unwrap();
        let r = carol.post("/v1/job", json!({"job_queue": "q"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: a demoted client's token: {}", r.text);
        // Deleted: its token is void at once, not at its expiry.
        auth::delete_client(&s.store, "bob").await.unwrap();
        let r = bob.post("/v1/job", json!({"job_queue": "q"})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db:?}: a deleted client's token: {}", r.text);
        assert!(r.json()["message"].as_str().unwrap().contains("no longer exists"), "{}", r.text);
        assert_eq!(bob.get("/v1/agents/queues").await.status, StatusCode::UNAUTHORIZED);
        s.stop().await;
    }
}

#[tokio::test]
async fn item22_metrics_on_the_api_listener_need_a_login() {
    let s = TestServer::start().await;
    s.anon().submit(json!({"job_queue": "q"})).await;
    let r = s.anon().get("/metrics").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "anonymous scrape: {}", r.text);
    let scraper = s.client("prometheus", Role::Contributor).await;
    let r = scraper.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.lines().any(|l| l == "phasebox_queue_depth{queue=\"q\"} 1"), "{}", r.text);
    s.stop().await;
}
