//! Testflinger compatibility checklist, server items 1–28 (reference §8).

use base64::Engine;
use phasebox_server::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Options, TestServer, backends};

const UUID4: &str = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$";

#[tokio::test]
async fn item01_root_banner() {
    let s = TestServer::start().await;
    for path in ["/v1", "/v1/"] {
        let r = s.anon().get(path).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.text.starts_with("Testflinger Server v"), "{}", r.text);
    }
    s.stop().await;
}

#[tokio::test]
async fn item02_anonymous_is_contributor() {
    let uuid4 = regex::Regex::new(UUID4).unwrap();
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let r = s.anon().post("/v1/job", json!({"job_queue": "q"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let id = r.json()["job_id"].as_str().unwrap().to_owned();
        assert!(uuid4.is_match(&id), "{id}");
        s.stop().await;
    }
}

#[tokio::test]
async fn item03_oidc_auth_init_is_404() {
    let s = TestServer::start().await;
    let r = s.anon().post("/oidc/auth-init", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn item04_token_endpoint() {
    let s = TestServer::start().await;
    phasebox_server::auth::create_client(&s.store, "alice", crate::common::SECRET, Role::Contributor).await.unwrap();
    let http = reqwest::Client::new();
    let r = http.post(s.url("/v1/oauth2/token")).basic_auth("alice", Some(crate::common::SECRET)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let refresh = body["refresh_token"].as_str().unwrap();
    assert_eq!(refresh.len(), 48);
    let token = body["access_token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["sub"], "access_token");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    assert_eq!(claims["permissions"]["client_id"], "alice");
    assert_eq!(claims["permissions"]["role"], "contributor");

    for (user, pass) in [("alice", "wrong-secret-wrong"), ("nobody", crate::common::SECRET)] {
        let r = http.post(s.url("/v1/oauth2/token")).basic_auth(user, Some(pass)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.text().await.unwrap(), "Invalid client id or client key");
    }
    let r = http.post(s.url("/v1/oauth2/token")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn item05_refresh_tokens() {
    let s = TestServer::start().await;
    let admin = s.client("boss", Role::Admin).await;
    phasebox_server::auth::create_client(&s.store, "bob", crate::common::SECRET, Role::Agent).await.unwrap();
    let http = reqwest::Client::new();
    let body: Value = http
        .post(s.url("/v1/oauth2/token"))
        .basic_auth("bob", Some(crate::common::SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    let r = s.anon().post("/v1/oauth2/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 600);
    assert!(j["access_token"].as_str().unwrap().contains('.'));
    assert!(j.get("refresh_token").is_none());

    let r = s.anon().post("/v1/oauth2/refresh", json!({"refresh_token": "nope"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["message"], "Invalid refresh token.");
    let r = s.anon().post("/v1/oauth2/refresh", json!({})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let r = admin.post("/v1/oauth2/revoke", json!({"refresh_token": refresh})).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"status": "OK"})));
    let r = admin.post("/v1/oauth2/revoke", json!({"refresh_token": refresh})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s.anon().post("/v1/oauth2/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["message"], "Refresh token revoked.");
    s.stop().await;
}

#[tokio::test]
async fn item06_expired_is_401_bad_signature_is_403() {
    let s = TestServer::start().await;
    let now = phasebox_server::clock::now_micros() / 1_000_000;
    // Tokens name an existing client (the server looks it up on each request).
    phasebox_server::auth::create_client(&s.store, "x", crate::common::SECRET, Role::Contributor).await.unwrap();
    let perms = json!({"client_id": "x", "role": "contributor"});
    let expired = s.forge(perms.clone(), now - 700, 600);
    let r = s.anon().with_token(&expired).post("/v1/job", json!({"job_queue": "q"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["message"], "Token has expired");

    let other =
        phasebox_server::jwt::JwtKey::new(zeroize::Zeroizing::new(b"some-other-key-some-other-key-123".to_vec()));
    let forged = other.issue(&perms, now, 600);
    let r = s.anon().with_token(&forged).post("/v1/job", json!({"job_queue": "q"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["message"], "Invalid Token signature");

    let r = s.anon().with_token("garbage").post("/v1/job", json!({"job_queue": "q"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let good = s.forge(perms, now, 600);
    let r = s.anon().with_token(&good).post("/v1/job", json!({"job_queue": "q"})).await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn item07_wrong_role_is_403_with_message() {
    let s = TestServer::start().await;
    let agent = s.client("agent1", Role::Agent).await;
    let r = agent.post("/v1/job", json!({"job_queue": "q"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["message"], "Specified action requires role: admin, manager, contributor");
    let r = s.anon().get("/v1/job?queue=q").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["message"], "Specified action requires role: agent");
    s.stop().await;
}

#[tokio::test]
async fn item08_job_schema() {
    let s = TestServer::start().await;
    let api = s.anon();
    let r = api.post("/v1/job", json!({"job_queue": "q", "bogus": 1})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let j = r.json();
    assert_eq!(j["message"], "Validation error");
    assert!(j["detail"]["json"]["bogus"].is_array(), "{j}");
    for bad in [json!({}), json!({"job_queue": ""})] {
        let r = api.post("/v1/job", bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.json()["detail"]["json"].get("job_queue").is_some(), "{}", r.text);
    }
    let r = api.post("/v1/job", json!({"job_queue": "q", "job_id": "not-a-uuid"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["message"], "Invalid job_id specified");
    let r = api.post("/v1/job", json!({"job_queue": "q", "test_data": {"test_cmds": ["a", "b"]}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["detail"]["json"]["test_data"]["test_cmds"].is_array(), "{}", r.text);

    let id = api.submit(json!({"job_queue": "q", "reserve_data": {"timeout": "2h30m"}})).await;
    let r = api.get(&format!("/v1/job/{id}")).await;
    assert_eq!(r.json()["reserve_data"]["timeout"], 9000);
    // Resubmission with a chosen id.
    let chosen = "0b1c6a52-8d3c-4f2e-9a61-3f5d2b7c9e10";
    assert_eq!(api.submit(json!({"job_queue": "q", "job_id": chosen})).await, chosen);
    s.stop().await;
}

#[tokio::test]
async fn item09_provision_data_inference() {
    let s = TestServer::start().await;
    let api = s.anon();
    let url = "http://images.example.com/x.img";
    let id = api.submit(json!({"job_queue": "q", "provision_data": {"url": url}})).await;
    assert_eq!(api.get(&format!("/v1/job/{id}")).await.json()["provision_data"], json!({"url": url}));
    let r = api.post("/v1/job", json!({"job_queue": "q", "provision_data": {"media": "sd"}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let id = api.submit(json!({"job_queue": "q", "provision_data": {"skip": false}})).await;
    assert_eq!(api.get(&format!("/v1/job/{id}")).await.json()["provision_data"], json!({"skip": false}));
    s.stop().await;
}

#[tokio::test]
async fn item10_priority_restricted_and_reservation_checks() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let _agent = s.agent("dut1", &["q", "locked"]).await;
    let r = anon.post("/v1/job", json!({"job_queue": "q", "job_priority": 5})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let carol = s.client("carol", Role::Contributor).await;
    let r = carol.post("/v1/job", json!({"job_queue": "q", "job_priority": 5})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["message"].is_string());
    phasebox_server::auth::set_limits(
        &s.store,
        "carol",
        [("q".to_owned(), 10)].into(),
        [("*".to_owned(), 30_000)].into(),
    )
    .await
    .unwrap();
    let carol = s.login("carol").await;
    carol.submit(json!({"job_queue": "q", "job_priority": 5})).await;
    let r = carol.post("/v1/job", json!({"job_queue": "q", "job_priority": 11})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    anon.submit(json!({"job_queue": "q", "reserve_data": {"timeout": 21600}})).await;
    let r = anon.post("/v1/job", json!({"job_queue": "q", "reserve_data": {"timeout": 21601}})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    carol.submit(json!({"job_queue": "q", "reserve_data": {"timeout": 30000}})).await;
    let r = carol.post("/v1/job", json!({"job_queue": "q", "reserve_data": {"timeout": 30001}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let manager = s.client("mgr", Role::Manager).await;
    let r = manager.post("/v1/restricted-queues/locked", json!({"client_id": "carol"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = anon.post("/v1/job", json!({"job_queue": "locked"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let dave = s.client("dave", Role::Contributor).await;
    let r = dave.post("/v1/job", json!({"job_queue": "locked"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Permissions travel in the token: carol needs a fresh one.
    let carol = s.login("carol").await;
    carol.submit(json!({"job_queue": "locked"})).await;
    s.stop().await;
}

#[tokio::test]
async fn item11_exclude_agents() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let _a = s.agent("a1", &["q"]).await;
    let _b = s.agent("a2", &["q"]).await;
    let r = anon.post("/v1/job", json!({"job_queue": "q", "exclude_agents": ["a1", "a2"]})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["message"], "There are no agents on the specified queue that are allowed to run this job");
    anon.submit(json!({"job_queue": "q", "exclude_agents": ["a1"]})).await;
    let id = anon.submit(json!({"job_queue": "q"})).await;
    assert_eq!(anon.get(&format!("/v1/job/{id}")).await.json()["exclude_agents"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn item12_jobs_with_secrets() {
    let s = TestServer::start().await;
    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "env", "secrets": {"TOKEN": "ci/token"}}});
    let r = s.anon().post("/v1/job", job.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["message"], "Missing client ID (user not authenticated)");
    let alice = s.client("alice", Role::Contributor).await;
    let r = alice.post("/v1/job", job.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["message"], "Inaccessible secret paths: ci/token");
    let r = alice.put("/v1/secrets/alice/ci/token", json!({"value": "s3cr3t-value"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = alice.submit(job.clone()).await;
    let agent = s.agent("dut", &["q"]).await;
    let claimed = agent.claim(&["q"]).await.unwrap();
    assert_eq!(claimed["job_id"], id.as_str());
    assert_eq!(claimed["client_id"], "alice");
    // The submitted job shows paths only.
    assert_eq!(alice.get(&format!("/v1/job/{id}")).await.json()["test_data"]["secrets"]["TOKEN"], "ci/token");
    s.stop().await;

    let s = TestServer::start_with(Options { secrets: false, ..Options::default() }).await;
    let alice = s.client("alice", Role::Contributor).await;
    let r = alice.post("/v1/job", job).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["message"], "No secrets store");
    s.stop().await;
}

#[tokio::test]
async fn item13_agent_claim() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let alice = s.client("alice", Role::Contributor).await;
        alice.put("/v1/secrets/alice/present", json!({"value": "value-one"})).await;
        alice.put("/v1/secrets/alice/gone", json!({"value": "value-two"})).await;
        let agent = s.agent("dut", &["q"]).await;
        let bare = s.login("dut").await.with_token(agent.token.as_deref().unwrap());
        let bare = crate::common::Api { http: reqwest::Client::new(), ..bare };
        let r = agent.get("/v1/job").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = bare.get("/v1/job?queue=q").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no cookie");
        let r = alice.get("/v1/job?queue=q").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = agent.get("/v1/job?queue=q").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(r.text.is_empty());

        let id = alice
            .submit(
                json!({"job_queue": "q", "test_data": {"test_cmds": "x", "secrets": {"A": "present", "B": "gone"}}}),
            )
            .await;
        alice.delete("/v1/secrets/alice/gone", None).await;
        let job = agent.claim(&["q"]).await.unwrap();
        assert_eq!(job["job_id"], id.as_str());
        assert!(job["started_at"].as_str().unwrap().ends_with("+00:00Z"), "{job}");
        assert_eq!(job["exclude_agents"], json!([]));
        assert_eq!(job["test_data"]["secrets"], json!({"A": "value-one", "B": ""}));
        s.stop().await;
    }
}

#[tokio::test]
async fn item14_agent_registration() {
    let s = TestServer::start().await;
    let agent = s.client("dut", Role::Agent).await;
    let r = agent.post("/v1/agents/data/dut", json!({"state": "waiting", "comment": ""})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": "OK"}));
    let cookie = r.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.starts_with("agent_name=dut;") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let r = agent.post("/v1/agents/data/dut", json!({"state": "waiting", "colour": "red"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["detail"]["json"]["colour"].is_array());
    for i in 0..105 {
        agent.post("/v1/agents/data/dut", json!({"log": [format!("line {i}")]})).await;
    }
    let (doc, _) = s.store.get_agent("dut").await.unwrap().unwrap();
    let log = doc["log"].as_array().unwrap();
    assert_eq!(log.len(), 100);
    assert_eq!(log[0], "line 5");
    assert_eq!(log[99], "line 104");
    s.stop().await;
}

#[tokio::test]
async fn item15_pop_order() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let _other = s.agent("other", &["a", "b"]).await;
        let agent = s.agent("dut", &["a", "b"]).await;
        let anon = s.anon();
        s.client("mgr", Role::Manager).await;
        phasebox_server::auth::set_limits(&s.store, "mgr", [("*".to_owned(), 100)].into(), Default::default())
            .await
            .unwrap();
        let mgr = s.login("mgr").await;
        let low1 = anon.submit(json!({"job_queue": "a"})).await;
        let excluded = anon.submit(json!({"job_queue": "b", "job_priority": 0, "exclude_agents": ["dut"]})).await;
        let waiting_attachments =
            anon.submit(json!({"job_queue": "a", "test_data": {"attachments": [{"agent": "f"}]}})).await;
        let low2 = anon.submit(json!({"job_queue": "b"})).await;
        let high = mgr.submit(json!({"job_queue": "b", "job_priority": 50})).await;
        let mid = mgr.submit(json!({"job_queue": "a", "job_priority": 10})).await;
        let mut order = Vec::new();
        while let Some(job) = agent.claim(&["a", "b"]).await {
            order.push(job["job_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(order, [high, mid, low1.clone(), low2]);
        let r = anon.get(&format!("/v1/result/{low1}")).await;
        assert_eq!(r.json()["job_state"], "running");
        for id in [&excluded, &waiting_attachments] {
            assert_eq!(anon.get(&format!("/v1/result/{id}")).await.json()["job_state"], "waiting");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn item16_position() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let a = anon.submit(json!({"job_queue": "q"})).await;
    let b = anon.submit(json!({"job_queue": "q"})).await;
    let other = anon.submit(json!({"job_queue": "other"})).await;
    for (id, pos) in [(&a, "0"), (&b, "1"), (&other, "0")] {
        let r = anon.get(&format!("/v1/job/{id}/position")).await;
        assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, pos));
    }
    let agent = s.agent("dut", &["q"]).await;
    agent.claim(&["q"]).await.unwrap();
    let r = anon.get(&format!("/v1/job/{a}/position")).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.text, "Job not found or already started\n");
    assert_eq!(anon.get(&format!("/v1/job/{b}/position")).await.text, "0");
    let r = anon.get("/v1/job/nope/position").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn item17_cancel() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let id = anon.submit(json!({"job_queue": "q"})).await;
    let r = anon.post(&format!("/v1/job/{id}/action"), json!({"action": "cancel"})).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "OK"));
    assert_eq!(anon.get(&format!("/v1/result/{id}")).await.json()["job_state"], "cancelled");
    let r = anon.post(&format!("/v1/job/{id}/action"), json!({"action": "cancel"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = anon.post(&format!("/v1/job/{id}/action"), json!({"action": "pause"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let done = anon.submit(json!({"job_queue": "q"})).await;
    let agent = s.agent("dut", &["q"]).await;
    agent.claim(&["q"]).await.unwrap();
    agent.post(&format!("/v1/result/{done}"), json!({"job_state": "complete"})).await;
    let r = anon.post(&format!("/v1/job/{done}/action"), json!({"action": "cancel"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn item18_results() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let agent = s.agent("dut", &["q"]).await;
    let id = anon.submit(json!({"job_queue": "q"})).await;
    agent.claim(&["q"]).await.unwrap();
    let path = format!("/v1/result/{id}");
    let r = agent.post(&path, json!({"job_state": "test", "test_output": "x"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r =
        agent.post(&path, json!({"status": {"setup": 0, "test": 1}, "device_info": {"device_ip": "10.0.0.5"}})).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "OK"));
    let big = format!("{{\"device_info\": {{\"blob\": \"{}\"}}}}", "x".repeat(16 * 1024 * 1024));
    let r = agent.post_raw(&path, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    agent
        .post(
            &format!("/v1/result/{id}/log/output"),
            json!({"fragment_number": 0, "timestamp": "2025-01-01T12:00:00+00:00", "phase": "test", "log_data": "hello "}),
        )
        .await;
    agent
        .post(
            &format!("/v1/result/{id}/log/output"),
            json!({"fragment_number": 1, "timestamp": "2025-01-01T12:00:01+00:00", "phase": "test", "log_data": "world"}),
        )
        .await;
    agent
        .post(
            &format!("/v1/result/{id}/log/serial"),
            json!({"fragment_number": 0, "timestamp": "2025-01-01T12:00:01+00:00", "phase": "setup", "log_data": "boot"}),
        )
        .await;
    agent.post(&path, json!({"status": {"setup": 0, "test": 1}, "job_state": "complete"})).await;
    let j = anon.get(&path).await.json();
    assert_eq!(
        j,
        json!({"job_state": "complete", "setup_status": 0, "test_status": 1, "test_output": "hello world",
               "setup_serial": "boot", "device_info": {"device_ip": "10.0.0.5"}})
    );
    let r = anon.get(&format!("/v1/result/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    s.stop().await;
}

#[tokio::test]
async fn item19_log_fragments() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let agent = s.agent("dut", &["q"]).await;
    let id = anon.submit(json!({"job_queue": "q"})).await;
    agent.claim(&["q"]).await.expect("claimed: only the claiming agent posts its log");
    let post = |n: i64, phase: &str, ts: &str, data: &str| json!({"fragment_number": n, "timestamp": ts, "phase": phase, "log_data": data});
    for (n, phase, ts, data) in [
        (0, "setup", "2025-01-01T12:00:00+00:00", "a"),
        (1, "setup", "2025-01-01T12:00:10+00:00", "b"),
        (2, "test", "2025-01-01T12:00:20+00:00", "c"),
        (3, "test", "2025-01-01T12:00:30.5+00:00", "d"),
    ] {
        let r = agent.post(&format!("/v1/result/{id}/log/output"), post(n, phase, ts, data)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = agent.post(&format!("/v1/result/{id}/log/output"), post(4, "nope", "2025-01-01T00:00:00Z", "x")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let base = format!("/v1/result/{id}/log/output");
    let all = anon.get(&base).await.json();
    assert_eq!(all["output"].as_object().unwrap().len(), 7);
    assert_eq!(all["output"]["setup"], json!({"last_fragment_number": 1, "log_data": "ab"}));
    assert_eq!(all["output"]["test"], json!({"last_fragment_number": 3, "log_data": "cd"}));
    assert_eq!(all["output"]["cleanup"], json!({"last_fragment_number": -1, "log_data": ""}));
    let from2 = anon.get(&format!("{base}?start_fragment=2")).await.json();
    assert_eq!(from2["output"]["setup"]["last_fragment_number"], -1);
    assert_eq!(from2["output"]["test"]["log_data"], "cd");
    let by_time = anon.get(&format!("{base}?start_timestamp=2025-01-01T12:00:25%2B00:00")).await.json();
    assert_eq!(by_time["output"]["test"], json!({"last_fragment_number": 3, "log_data": "d"}));
    let phase = anon.get(&format!("{base}?phase=setup")).await.json();
    assert_eq!(phase["output"].as_object().unwrap().len(), 1);
    for bad in ["?start_fragment=-1", "?start_fragment=x", "?phase=nope", "?start_timestamp=yesterday"] {
        let r = anon.get(&format!("{base}{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.json()["message"].is_object());
    }
    // Persistent: reading again gives the same.
    assert_eq!(anon.get(&base).await.json(), all);
    let serial = anon.get(&format!("/v1/result/{id}/log/serial")).await.json();
    assert_eq!(serial["serial"]["setup"]["last_fragment_number"], -1);
    s.stop().await;
}

#[tokio::test]
async fn item20_attachments() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let anon = s.anon();
        let agent = s.agent("dut", &["q"]).await;
        let id = anon.submit(json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "file.bin"}]}})).await;
        assert!(agent.claim(&["q"]).await.is_none(), "not dispatched before the upload");
        let r = agent.get(&format!("/v1/job/{id}/attachments")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "only the agent that claimed the job reads them");
        let archive: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let r = anon.upload(&format!("/v1/job/{id}/attachments"), archive.clone()).await;
        assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "OK"));
        let r = anon.upload(&format!("/v1/job/{id}/attachments"), archive.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "re-POST");
        let job = agent.claim(&["q"]).await.expect("dispatched after the upload");
        assert_eq!(job["attachments_status"], "complete");
        let resp = agent.req(reqwest::Method::GET, &format!("/v1/job/{id}/attachments")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/gzip");
        assert_eq!(resp.bytes().await.unwrap().to_vec(), archive);
        let r = anon.upload(&format!("/v1/job/{id}/attachments"), vec![1, 2, 3]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "not waiting any more");
        let plain = anon.submit(json!({"job_queue": "q"})).await;
        let r = anon.upload(&format!("/v1/job/{plain}/attachments"), vec![1]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.text, format!("Job {plain} not awaiting attachments\n"));
        s.stop().await;
    }
}

#[tokio::test]
async fn item21_artifacts() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let agent = s.agent("dut", &["q"]).await;
    let id = anon.submit(json!({"job_queue": "q"})).await;
    agent.claim(&["q"]).await.expect("claimed: only the claiming agent uploads its artifact");
    let path = format!("/v1/result/{id}/artifact");
    assert_eq!(anon.get(&path).await.status, StatusCode::NO_CONTENT);
    let bytes = b"\x1f\x8b fake tarball".to_vec();
    let r = agent.upload(&path, bytes.clone()).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "OK"));
    let resp = anon.req(reqwest::Method::GET, &path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-disposition"].to_str().unwrap().contains("artifact.tar.gz"));
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    s.stop().await;
}

#[tokio::test]
async fn item22_queue_agents() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let r = anon.get("/v1/queues/q/agents").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let _a = s.agent("dut", &["q"]).await;
    let r = anon.get("/v1/queues/q/agents").await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    assert_eq!(list[0]["name"], "dut");
    assert_eq!(list[0]["state"], "waiting");
    assert_eq!(anon.get("/v1/queues/q/jobs").await.status, StatusCode::NO_CONTENT);
    // Listings show the ids of jobs submitted with credentials (an anonymous job's id is its
    // credential: listings hide it, see security_jobs).
    let user = s.client("user", Role::Contributor).await;
    let id = user.submit(json!({"job_queue": "q"})).await;
    let jobs = anon.get("/v1/queues/q/jobs").await.json();
    assert_eq!(jobs[0]["job_id"], id.as_str());
    assert_eq!(jobs[0]["job_state"], "waiting");
    assert_eq!(jobs[0]["job_queue"], "q");
    s.stop().await;
}

#[tokio::test]
async fn item23_agent_data() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let agent = s.agent("dut", &["q", "locked"]).await;
    agent.post("/v1/agents/data/dut", json!({"comment": "fine", "location": "lab 1"})).await;
    let mgr = s.client("mgr", Role::Manager).await;
    s.client("owner", Role::Contributor).await;
    mgr.post("/v1/restricted-queues/locked", json!({"client_id": "owner"})).await;
    let j = anon.get("/v1/agents/data/dut").await.json();
    assert_eq!(j["state"], "waiting");
    assert_eq!(j["comment"], "fine");
    assert!(j["updated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(j["restricted_to"], json!({"locked": ["owner"]}));
    assert!(j.get("log").is_none());
    let r = anon.get("/v1/agents/data/ghost").await;
    assert_eq!((r.status, r.json()), (StatusCode::NOT_FOUND, json!({})));
    let list = anon.get("/v1/agents/data").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Provision logs update the streak.
    for code in [0, 0, 1] {
        let r =
            agent.post("/v1/agents/provision_logs/dut", json!({"job_id": "j", "exit_code": code, "detail": "d"})).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let j = anon.get("/v1/agents/data/dut").await.json();
    assert_eq!((j["provision_streak_type"].clone(), j["provision_streak_count"].clone()), (json!("fail"), json!(1)));
    // An agent name the credential is bound to but that never registered.
    phasebox_server::auth::bind_agent(&s.store, "dut", vec!["dut".into(), "ghost".into()], vec!["q".into()])
        .await
        .unwrap();
    let r = agent.post("/v1/agents/provision_logs/ghost", json!({"job_id": "j", "exit_code": 0})).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::NOT_FOUND, "Agent not found\n"));
    s.stop().await;
}

#[tokio::test]
async fn item24_queues_and_images() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let agent = s.agent("dut", &["q", "r"]).await;
    let r = agent.post("/v1/agents/queues", json!({"q": "the q", "r": "the r"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(anon.get("/v1/agents/queues").await.json(), json!({"q": "the q", "r": "the r"}));
    let r = agent.post("/v1/agents/queues", json!({"q": 3})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = agent.post("/v1/agents/images", json!({"q": {"jammy": "url: http://x/jammy.img"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(anon.get("/v1/agents/images/q").await.json(), json!({"jammy": "url: http://x/jammy.img"}));
    assert_eq!(anon.get("/v1/agents/images/unknown").await.json(), json!({}));
    for bad in [json!({"q": [{"jammy": "url: x"}]}), json!({"q": {"a.b": "x"}}), json!({"q": {"$x": "x"}})] {
        let r = agent.post("/v1/agents/images", bad.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    s.stop().await;
}

#[tokio::test]
async fn item25_secrets_api() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let alice = s.client("alice", Role::Contributor).await;
        let r = alice.put("/v1/secrets/alice/a/b", json!({"value": "v1"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let expires = r.json()["expires_at"].as_str().unwrap().to_owned();
        assert!(expires.ends_with("+00:00"), "{expires}");
        let r = alice.put("/v1/secrets/alice/forever", json!({"value": "v", "expire_after": null})).await;
        assert_eq!(r.json(), json!({"expires_at": null}));
        assert_eq!(alice.put("/v1/secrets/bob/a", json!({"value": "v"})).await.status, StatusCode::FORBIDDEN);
        assert_eq!(s.anon().put("/v1/secrets/alice/a", json!({"value": "v"})).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            alice.put("/v1/secrets/alice/a.b", json!({"value": "v"})).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            alice.put("/v1/secrets/alice/a//b", json!({"value": "v"})).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let r = alice.put("/v1/secrets/alice/e", json!({"value": "v", "ephemeral": true, "expire_after": 10})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            alice.put("/v1/secrets/alice/e", json!({"value": ""})).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        // Single use: the first job gets it, the second gets "".
        alice.put("/v1/secrets/alice/once", json!({"value": "only-once", "ephemeral": true})).await;
        let job = json!({"job_queue": "q", "test_data": {"secrets": {"X": "once"}}});
        alice.submit(job.clone()).await;
        alice.submit(job).await;
        let agent = s.agent("dut", &["q"]).await;
        assert_eq!(agent.claim(&["q"]).await.unwrap()["test_data"]["secrets"]["X"], "only-once");
        assert_eq!(agent.claim(&["q"]).await.unwrap()["test_data"]["secrets"]["X"], "");

        // Expired secrets are gone.
        alice.put("/v1/secrets/alice/short", json!({"value": "v", "expire_after": 1})).await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let r = alice.post("/v1/job", json!({"job_queue": "q", "test_data": {"secrets": {"X": "short"}}})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

        assert_eq!(alice.delete("/v1/secrets/alice/a/b", None).await.text, "OK");
        assert_eq!(alice.delete("/v1/secrets/alice/a/b", None).await.status, StatusCode::OK, "missing is fine");
        assert_eq!(alice.delete("/v1/secrets/bob/a/b", None).await.status, StatusCode::FORBIDDEN);
        s.stop().await;
    }
}

#[tokio::test]
async fn item26_restricted_queues_and_client_permissions() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let _agent = s.agent("dut", &["locked"]).await;
    let mgr = s.client("mgr", Role::Manager).await;
    let admin = s.client("root", Role::Admin).await;
    s.client("owner", Role::Contributor).await;
    assert_eq!(
        mgr.post("/v1/restricted-queues/locked", json!({"client_id": "ghost"})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        mgr.post("/v1/restricted-queues/nowhere", json!({"client_id": "owner"})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(mgr.post("/v1/restricted-queues/locked", json!({})).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mgr.post("/v1/restricted-queues/locked", json!({"client_id": "owner"})).await.text, "OK");
    assert_eq!(anon.get("/v1/restricted-queues").await.json(), json!([{"queue": "locked", "owners": ["owner"]}]));
    assert_eq!(anon.get("/v1/restricted-queues/locked").await.json(), json!({"queue": "locked", "owners": ["owner"]}));
    assert_eq!(anon.get("/v1/restricted-queues/other").await.status, StatusCode::NOT_FOUND);
    assert_eq!(mgr.delete("/v1/restricted-queues/locked", Some(json!({"client_id": "owner"}))).await.text, "OK");
    assert_eq!(anon.get("/v1/restricted-queues").await.json(), json!([]));
    assert_eq!(
        mgr.delete("/v1/restricted-queues/locked", Some(json!({"client_id": "owner"}))).await.status,
        StatusCode::NOT_FOUND
    );

    // Client permissions.
    let r = mgr.put("/v1/client-permissions/new", json!({"role": "contributor"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a new client needs a secret");
    let r = mgr
        .put("/v1/client-permissions/new", json!({"client_secret": "a-long-client-secret", "max_priority": {"q": 5}}))
        .await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "Created permissions for client 'new'"));
    // Only admins make agent clients (phasebox).
    let r = mgr.put("/v1/client-permissions/new", json!({"role": "agent"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let root = s.client("root-admin", Role::Admin).await;
    let r = root.put("/v1/client-permissions/new", json!({"role": "agent"})).await;
    assert_eq!(r.text, "Updated permissions for client 'new'");
    let j = mgr.get("/v1/client-permissions/new").await.json();
    assert_eq!(j["role"], "agent");
    assert_eq!(j["max_priority"], json!({"q": 5}));
    assert!(j.get("client_secret_hash").is_none() && j.get("secret_hash").is_none());
    assert_eq!(mgr.put("/v1/client-permissions/new", json!({"role": "admin"})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(mgr.put("/v1/client-permissions/root", json!({"max_priority": {}})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.put("/v1/client-permissions/new", json!({"role": "admin"})).await.status, StatusCode::OK);
    assert_eq!(
        admin.put("/v1/client-permissions/testflinger-admin", json!({"role": "admin"})).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        admin.delete("/v1/client-permissions/testflinger-admin", None).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        mgr.put("/v1/client-permissions/x", json!({"client_secret": "short"})).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(mgr.delete("/v1/client-permissions/new", None).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.delete("/v1/client-permissions/new", None).await.text, "OK");
    assert_eq!(admin.delete("/v1/client-permissions/new", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(mgr.get("/v1/client-permissions/new").await.status, StatusCode::NOT_FOUND);
    let list = mgr.get("/v1/client-permissions").await.json();
    assert!(list.as_array().unwrap().iter().any(|c| c["client_id"] == "mgr"));
    s.stop().await;
}

#[tokio::test]
async fn item27_events_forwarded_only_to_webhook_host() {
    use axum::routing::put;
    // A webhook receiver on loopback.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(Option<String>, Value)>();
    let app = axum::Router::new().route(
        "/hook",
        put(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
            let tx = seen_tx.clone();
            async move {
                let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
                let _ = tx.send((auth, body));
                (StatusCode::ACCEPTED, "got it")
            }
        }),
    );
    let hook_task = tokio::spawn(async move { axum::serve(hook, app).await });

    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "hook-token\n").unwrap();
    let token_path = token.path().to_owned();
    let webhook_url = format!("http://{hook_addr}");
    let s = TestServer::start_with(Options {
        edit: Box::new(move |c| {
            c.webhook_url = Some(webhook_url);
            c.webhook_auth_file = Some(token_path);
        }),
        ..Options::default()
    })
    .await;
    let agent = s.agent("dut", &["q"]).await;
    let id = s.anon().submit(json!({"job_queue": "q", "job_status_webhook": format!("http://{hook_addr}/hook")})).await;
    agent.claim(&["q"]).await.expect("claimed: only the claiming agent posts its events");
    let events = json!([{"event_name": "job_start", "timestamp": "2025-01-01T00:00:00Z", "detail": "x"}]);
    let body = json!({"agent_id": "dut", "job_queue": "q", "job_status_webhook": format!("http://{hook_addr}/hook"), "events": events});
    let r = agent.post(&format!("/v1/job/{id}/events"), body.clone()).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::ACCEPTED, "got it"));
    let (auth, seen) = seen_rx.recv().await.unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer hook-token"));
    assert_eq!(seen, json!({"agent_id": "dut", "job_queue": "q", "events": events}));

    let mut evil = body.clone();
    evil["job_status_webhook"] = json!("http://127.0.0.2:9/steal");
    let r = agent.post(&format!("/v1/job/{id}/events"), evil).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["message"].is_string());
    let r = agent.post(&format!("/v1/job/{}/events", uuid::Uuid::new_v4()), body.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let mut missing = body.clone();
    missing.as_object_mut().unwrap().remove("job_status_webhook");
    assert_eq!(agent.post(&format!("/v1/job/{id}/events"), missing).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    s.stop().await;
    hook_task.abort();

    let s = TestServer::start().await;
    let agent = s.agent("dut", &["q"]).await;
    let id = s.anon().submit(json!({"job_queue": "q"})).await;
    agent.claim(&["q"]).await.expect("claimed");
    let r = agent.post(&format!("/v1/job/{id}/events"), body).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "Webhook URL not configured"));
    s.stop().await;
}

#[tokio::test]
async fn item28_error_bodies() {
    let s = TestServer::start().await;
    let r = s.anon().get("/v1/client-permissions").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["message"].as_str().unwrap().starts_with("Specified action requires role"));
    let r = s.anon().post("/v1/job", json!({"job_queue": 5})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let j = r.json();
    assert_eq!(j["message"], "Validation error");
    assert!(j["detail"]["json"]["job_queue"].is_array());
    let r = s.anon().req(reqwest::Method::DELETE, "/v1/job").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["message"], "Method Not Allowed");
    let r = s.anon().get("/v1/nothing-here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text.starts_with("Not found: "));
    s.stop().await;
}
