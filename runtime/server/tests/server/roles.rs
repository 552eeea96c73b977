//! The endpoint × role matrix of reference §3.3: each role either passes the role check (any
//! answer but the role refusal) or gets 403 with `Specified action requires role: …`.
//! Anonymous callers act as contributors (anonymous access on, as Testflinger with OIDC off).
//! Passing the role check is not access: job owners and agent bindings are checked next
//! (`security_*`), and answer with 401/403 of their own. phasebox: plugin uploads are for admins.

use phasebox_server::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::TestServer;

const A: u8 = 1;
const C: u8 = 2;
const M: u8 = 4;
const AD: u8 = 8;
const USERS: u8 = C | M | AD;
const ANY: u8 = A | C | M | AD;

#[tokio::test]
async fn role_matrix() {
    let s = TestServer::start().await;
    let job = s.anon().submit(json!({"job_queue": "q"})).await;
    s.anon().post(&format!("/v1/job/{job}/action"), json!({"action": "cancel"})).await;
    let sha = "0".repeat(64);
    let rows: Vec<(Method, String, u8)> = vec![
        (Method::POST, "/v1/job".into(), USERS),
        (Method::GET, "/v1/job?queue=q".into(), A),
        (Method::GET, "/v1/job/search".into(), USERS),
        (Method::GET, format!("/v1/job/{job}"), USERS),
        (Method::GET, format!("/v1/job/{job}/position"), USERS),
        (Method::POST, format!("/v1/job/{job}/action"), USERS),
        (Method::GET, format!("/v1/job/{job}/attachments"), A),
        (Method::POST, format!("/v1/job/{job}/attachments"), USERS),
        (Method::POST, format!("/v1/job/{job}/events"), A),
        (Method::POST, format!("/v1/result/{job}"), A),
        (Method::GET, format!("/v1/result/{job}"), ANY),
        (Method::POST, format!("/v1/result/{job}/artifact"), A),
        (Method::GET, format!("/v1/result/{job}/artifact"), USERS),
        (Method::POST, format!("/v1/result/{job}/log/output"), A),
        (Method::GET, format!("/v1/result/{job}/log/output"), USERS),
        (Method::GET, "/v1/agents/queues".into(), USERS),
        (Method::POST, "/v1/agents/queues".into(), A | M | AD),
        (Method::GET, "/v1/agents/images/q".into(), USERS),
        (Method::POST, "/v1/agents/images".into(), A | M | AD),
        (Method::GET, "/v1/agents/data".into(), USERS),
        (Method::GET, "/v1/agents/data/dut".into(), ANY),
        (Method::POST, "/v1/agents/data/dut".into(), A | M | AD),
        (Method::POST, "/v1/agents/provision_logs/dut".into(), A),
        (Method::GET, "/v1/queues/wait_times".into(), USERS),
        (Method::GET, "/v1/queues/q/agents".into(), USERS),
        (Method::GET, "/v1/queues/q/jobs".into(), USERS),
        (Method::GET, "/v1/restricted-queues".into(), USERS),
        (Method::GET, "/v1/restricted-queues/q".into(), USERS),
        (Method::POST, "/v1/restricted-queues/q".into(), M | AD),
        (Method::DELETE, "/v1/restricted-queues/q".into(), M | AD),
        (Method::GET, "/v1/client-permissions".into(), M | AD),
        (Method::GET, "/v1/client-permissions/someone".into(), M | AD),
        (Method::PUT, "/v1/client-permissions/someone".into(), M | AD),
        (Method::DELETE, "/v1/client-permissions/someone".into(), AD),
        (Method::PUT, "/v1/secrets/{me}/path".into(), USERS),
        (Method::DELETE, "/v1/secrets/{me}/path".into(), USERS),
        (Method::POST, "/v1/oauth2/revoke".into(), AD),
        (Method::GET, format!("/phasebox/v1/job/{job}/events"), ANY),
        (Method::POST, "/phasebox/v1/plugins".into(), AD),
        (Method::PUT, format!("/phasebox/v1/plugins/{sha}"), AD),
        (Method::GET, format!("/phasebox/v1/plugins/{sha}"), ANY),
    ];
    let callers = [
        ("r-agent", Some(Role::Agent), A),
        ("r-contributor", Some(Role::Contributor), C),
        ("r-manager", Some(Role::Manager), M),
        ("r-admin", Some(Role::Admin), AD),
        ("anonymous", None, C),
    ];
    let mut failures = Vec::new();
    for (name, role, bit) in callers {
        let api = match role {
            Some(r) => s.client(name, r).await,
            None => s.anon(),
        };
        for (method, path, allowed) in &rows {
            let path = path.replace("{me}", name);
            let r = api.send(api.req(method.clone(), &path).json(&json!({}))).await;
            let expect_forbidden = allowed & bit == 0;
            let role_refusal = r.status == StatusCode::FORBIDDEN
                && serde_json::from_str::<serde_json::Value>(&r.text)
                    .ok()
                    .and_then(|j| j["message"].as_str().map(|m| m.starts_with("Specified action requires role: ")))
                    .unwrap_or(false);
            if expect_forbidden && !role_refusal {
                failures.push(format!("{name} {method} {path}: expected 403, got {} {}", r.status, r.text));
            } else if !expect_forbidden && role_refusal {
                failures.push(format!("{name} {method} {path}: expected access, got 403 {}", r.text));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    s.stop().await;
}

#[tokio::test]
async fn anonymous_access_off_requires_tokens() {
    let s = TestServer::start_with(crate::common::Options {
        edit: Box::new(|c| c.anonymous_access = false),
        ..Default::default()
    })
    .await;
    let r = s.anon().post("/v1/job", json!({"job_queue": "q"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["message"], "Authentication is required for specified endpoint");
    let r = s
        .anon()
        .req(Method::POST, "/v1/job")
        .header("authorization", "Basic abc")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.anon().get("/v1").await.status, StatusCode::OK, "the banner needs no token");
    let c = s.client("c", Role::Contributor).await;
    c.submit(json!({"job_queue": "q"})).await;
    s.stop().await;
}

#[tokio::test]
async fn non_bearer_header_is_403_with_anonymous_access() {
    let s = TestServer::start().await;
    let r = s
        .anon()
        .req(Method::POST, "/v1/job")
        .header("authorization", "Basic abc")
        .json(&json!({"job_queue": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    s.stop().await;
}
