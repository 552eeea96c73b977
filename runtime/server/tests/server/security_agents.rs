//! Agent credentials are bound to their agent names and queues (issue 12 item 11): a stolen or
//! hostile agent credential cannot pose as another agent, take another queue's jobs (and their
//! owners' secrets), or write into a job another agent claimed; only admins make agent clients.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{SECRET, TestServer, backends};
use phasebox_server::auth::{self, Role};

fn message(r: &crate::common::Reply) -> String {
    r.json()["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn item11_an_agent_credential_acts_only_as_its_agents_on_its_queues() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let lab = s.agent("lab-dut", &["lab"]).await;
        let rogue = s.agent("rogue-dut", &["scratch"]).await;
        let owner = s.client("alice", Role::Contributor).await;
        let put = owner.put("/v1/secrets/alice/token", json!({"value": "alice-secret-value"})).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.text);
        let job = json!({"job_queue": "lab", "test_data": {"test_cmds": "true", "secrets": {"T": "token"}}});
        let id = owner.submit(job.clone()).await;

        // Posing as the lab's agent: its data, and a claim with its name in the cookie.
        let r = rogue.post("/v1/agents/data/lab-dut", json!({"state": "waiting", "queues": ["lab"]})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: registered as another agent: {}", r.text);
        assert!(message(&r).contains("may not act as agent \"lab-dut\""), "{}", r.text);
        let forged = rogue
            .req(reqwest::Method::GET, "/v1/job?queue=lab")
            .header("cookie", "agent_name=lab-dut")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{db:?}: claimed under another agent's name");
        // Its own name, another queue: the job and its owner's secret stay out of reach.
        let r = rogue.get("/v1/job?queue=lab").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: claimed from an unbound queue: {}", r.text);
        assert!(message(&r).contains("may not take jobs from queue \"lab\""), "{}", r.text);
        assert!(!r.text.contains("alice-secret-value"));
        let r = rogue.post("/v1/agents/provision_logs/lab-dut", json!({"job_id": id, "exit_code": 0})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: provision log of another agent");

        let claimed = lab.claim(&["lab"]).await.expect("the bound agent claims");
        assert_eq!(claimed["test_data"]["secrets"]["T"], "alice-secret-value");

        // Writing into a job another agent claimed.
        let writes = [
            rogue.post(&format!("/v1/result/{id}"), json!({"job_state": "complete", "status": {"test": 0}})).await,
            rogue
                .post(
                    &format!("/v1/result/{id}/log/output"),
                    json!({"fragment_number": 0, "timestamp": "2025-01-01T00:00:00+00:00", "phase": "test",
                           "log_data": "forged"}),
                )
                .await,
            rogue.upload(&format!("/v1/result/{id}/artifact"), b"forged".to_vec()).await,
            rogue.post(&format!("/v1/job/{id}/events"), json!({"job_status_webhook": "http://127.0.0.1:9/"})).await,
            rogue.get(&format!("/v1/job/{id}/attachments")).await,
            rogue.get(&format!("/v1/result/{id}")).await,
        ];
        for (i, r) in writes.iter().enumerate() {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: write {i} into another agent's job: {}", r.text);
        }
        let result = owner.get(&format!("/v1/result/{id}")).await.json();
        assert_eq!(result["job_state"], "running", "{db:?}: {result}");
        assert!(result.get("test_output").is_none(), "{db:?}: {result}");
        // The claiming agent writes as before.
        let r = lab.post(&format!("/v1/result/{id}"), json!({"job_state": "complete", "status": {"test": 0}})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(owner.get(&format!("/v1/result/{id}")).await.json()["job_state"], "complete");
        s.stop().await;
    }
}

#[tokio::test]
async fn item11_only_admins_make_or_change_agent_clients() {
    let s = TestServer::start().await;
    let manager = s.client("boss", Role::Manager).await;
    let admin = s.client("root", Role::Admin).await;
    let _existing = s.agent("lab-dut", &["lab"]).await;
    let new_agent = json!({"client_secret": "a-long-client-secret", "role": "agent"});
    let r = manager.put("/v1/client-permissions/sneaky-agent", new_agent.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a manager created an agent client: {}", r.text);
    assert!(s.store.get_client("sneaky-agent").await.unwrap().is_none());
    let r = manager.put("/v1/client-permissions/lab-dut", json!({"client_secret": "another-long-secret"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a manager reset an agent's secret: {}", r.text);
    let r = manager.put("/v1/client-permissions/carol", json!({"client_secret": SECRET})).await;
    assert_eq!(r.status, StatusCode::OK, "managers still manage contributors: {}", r.text);
    let r = manager.put("/v1/client-permissions/carol", json!({"role": "agent"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a manager made a contributor an agent: {}", r.text);

    // An admin makes one, bound to its agent and queue.
    let bound = json!({"client_secret": SECRET, "role": "agent", "agent_names": ["new-dut"], "agent_queues": ["new"]});
    let r = admin.put("/v1/client-permissions/new-agent", bound).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let shown = admin.get("/v1/client-permissions/new-agent").await.json();
    assert_eq!((shown["agent_names"].clone(), shown["agent_queues"].clone()), (json!(["new-dut"]), json!(["new"])));
    let agent = s.login("new-agent").await;
    assert_eq!(agent.post("/v1/agents/data/new-dut", json!({"queues": ["new"]})).await.status, StatusCode::OK);
    assert!(agent.claim(&["new"]).await.is_none());
    // The binding is read at each request: narrowing it takes effect at once.
    auth::bind_agent(&s.store, "new-agent", vec!["new-dut".into()], vec![]).await.unwrap();
    assert_eq!(agent.get("/v1/job?queue=new").await.status, StatusCode::FORBIDDEN);
    let e = auth::bind_agent(&s.store, "carol", vec!["x".into()], vec![]).await.unwrap_err();
    assert!(e.to_string().contains("not agent"), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn item11_an_agent_describes_only_its_own_queues_and_images() {
    let s = TestServer::start().await;
    let rogue = s.agent("rogue-dut", &["scratch"]).await;
    let r = rogue.post("/v1/agents/queues", json!({"lab": "hijacked description"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "described another agent's queue: {}", r.text);
    let r = rogue.post("/v1/agents/images", json!({"lab": {"noble": "url: http://127.0.0.1:9/evil.img"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "replaced another queue's images: {}", r.text);
    assert!(message(&r).contains("may not take jobs from queue \"lab\""), "{}", r.text);
    // Its own queue, as before.
    let r = rogue.post("/v1/agents/queues", json!({"scratch": "the rogue's own"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = rogue.post("/v1/agents/images", json!({"scratch": {"noble": "url: http://127.0.0.1:9/ok.img"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.stop().await;
}

#[tokio::test]
async fn item12_agent_documents_do_not_reveal_the_id_of_a_running_anonymous_job() {
    let s = TestServer::start().await;
    let lab = s.agent("lab-dut", &["lab"]).await;
    let anonymous = s.anon();
    let id = anonymous.submit(json!({"job_queue": "lab", "test_data": {"test_cmds": "true"}})).await;
    lab.claim(&["lab"]).await.expect("the agent claims");
    let r = lab.post("/v1/agents/data/lab-dut", json!({"state": "test", "job_id": id})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Another client listing agents learns nothing that would let it read or cancel the job.
    let mallory = s.client("mallory", Role::Contributor).await;
    for doc in [mallory.get("/v1/agents/data").await.text, mallory.get("/v1/agents/data/lab-dut").await.text] {
        assert!(!doc.contains(&id), "an agent document shows the anonymous job's id: {doc}");
    }
    // An admin still sees which job each agent runs.
    let admin = s.client("root", Role::Admin).await;
    assert!(admin.get("/v1/agents/data/lab-dut").await.text.contains(&id));
    s.stop().await;
}
