//! A job belongs to its submitter (issue 12 items 3 and 12): another client, anonymous or
//! logged in, can neither supply its inputs nor read, follow or cancel it; admins can. A job
//! submitted without credentials has its id as its only credential: listings do not show it,
//! and its attachments are accepted once.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Api, TestServer, backends};
use phasebox_server::auth::Role;

fn with_attachments(queue: &str) -> serde_json::Value {
    json!({"job_queue": queue, "test_data": {"attachments": [{"agent": "file.bin"}], "test_cmds": "true"}})
}

/// The attachments the agent that claimed job `id` downloads.
async fn downloaded(agent: &Api, id: &str) -> Vec<u8> {
    let resp = agent.req(reqwest::Method::GET, &format!("/v1/job/{id}/attachments")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn item3_only_the_submitter_uploads_the_attachments_of_its_job() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let alice = s.client("alice", Role::Contributor).await;
        let mallory = s.client("mallory", Role::Contributor).await;
        let agent = s.agent("dut", &["q"]).await;
        let id = alice.submit(with_attachments("q")).await;
        let path = format!("/v1/job/{id}/attachments");

        // The attack: a stranger supplies the inputs of alice's waiting job, which would then
        // run them with alice's secrets.
        let r = s.anon().upload(&path, b"evil".to_vec()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db:?}: anonymous upload: {}", r.text);
        assert!(r.json()["message"].as_str().unwrap().contains("submitted with credentials"), "{}", r.text);
        let r = mallory.upload(&path, b"evil".to_vec()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: another client's upload: {}", r.text);
        assert!(r.json()["message"].as_str().unwrap().contains("belongs to another client"), "{}", r.text);
        assert!(agent.claim(&["q"]).await.is_none(), "{db:?}: still waiting for its attachments");

        let r = alice.upload(&path, b"alice's inputs".to_vec()).await;
        assert_eq!(r.status, StatusCode::OK, "{db:?}: {}", r.text);
        let job = agent.claim(&["q"]).await.expect("dispatched after the owner's upload");
        assert_eq!(job["job_id"], id.as_str());
        assert_eq!(downloaded(&agent, &id).await, b"alice's inputs");
        s.stop().await;
    }
}

#[tokio::test]
async fn item3_an_anonymous_job_takes_one_upload_and_listings_hide_its_id() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let owner = s.anon();
        let stranger = s.anon();
        let agent = s.agent("dut", &["q"]).await;
        let id = owner.submit(with_attachments("q")).await;

        // The id of an anonymous job is its credential: listings do not hand it out...
        let listed = stranger.get("/v1/queues/q/jobs").await.json();
        assert_eq!(listed[0]["job_state"], "waiting", "{db:?}: {listed}");
        assert!(listed[0]["job_id"].is_null(), "{db:?}: anonymous job id listed: {listed}");
        let found = stranger.get("/v1/job/search?state=active").await.json();
        assert!(found[0]["job_id"].is_null(), "{db:?}: anonymous job id in a search: {found}");
        let admin = s.client("root", Role::Admin).await;
        assert_eq!(admin.get("/v1/queues/q/jobs").await.json()[0]["job_id"], id.as_str(), "admins see it");

        // ...and the first upload is the only one that counts.
        let path = format!("/v1/job/{id}/attachments");
        assert_eq!(owner.upload(&path, b"first".to_vec()).await.status, StatusCode::OK);
        let again = stranger.upload(&path, b"second".to_vec()).await;
        assert_eq!(again.status, StatusCode::OK, "{db:?}: Testflinger answers a repeated upload with 200");
        agent.claim(&["q"]).await.expect("dispatched");
        assert_eq!(downloaded(&agent, &id).await, b"first", "{db:?}: a later upload replaced the inputs");
        s.stop().await;
    }
}

#[tokio::test]
async fn item12_job_data_results_artifacts_output_and_cancel_belong_to_the_submitter() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let alice = s.client("alice", Role::Contributor).await;
        let bob = s.client("bob", Role::Contributor).await;
        let manager = s.client("boss", Role::Manager).await;
        let admin = s.client("root", Role::Admin).await;
        let agent = s.agent("dut", &["q"]).await;
        let id = alice.submit(json!({"job_queue": "q", "test_data": {"test_cmds": "true"}})).await;
        let waiting_reads = [format!("/v1/job/{id}/position")];
        for path in &waiting_reads {
            assert_eq!(bob.get(path).await.status, StatusCode::FORBIDDEN, "{db:?}: {path}");
            assert_eq!(alice.get(path).await.status, StatusCode::OK, "{db:?}: {path}");
        }
        agent.claim(&["q"]).await.expect("claimed");
        let fragment = json!({"fragment_number": 0, "timestamp": "2025-01-01T00:00:00+00:00", "phase": "test",
                              "log_data": "alice's output"});
        assert_eq!(agent.post(&format!("/v1/result/{id}/log/output"), fragment).await.status, StatusCode::OK);
        assert_eq!(
            agent.post(&format!("/v1/result/{id}"), json!({"status": {"test": 0}})).await.status,
            StatusCode::OK
        );
        assert_eq!(
            agent.upload(&format!("/v1/result/{id}/artifact"), b"tarball".to_vec()).await.status,
            StatusCode::OK
        );

        let reads = [
            format!("/v1/job/{id}"),
            format!("/v1/result/{id}"),
            format!("/v1/result/{id}/log/output"),
            format!("/v1/result/{id}/artifact"),
            format!("/phasebox/v1/job/{id}/events?kind=submitted"),
        ];
        for path in &reads {
            let r = bob.get(path).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: another client reads {path}: {}", r.text);
            let r = manager.get(path).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?}: a manager reads {path}: {}", r.text);
            let r = s.anon().get(path).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db:?}: anonymous read of {path}: {}", r.text);
        }
        for path in &reads[..4] {
            let r = alice.get(path).await;
            assert_eq!(r.status, StatusCode::OK, "{db:?}: the submitter reads {path}");
            assert_eq!(admin.get(path).await.status, StatusCode::OK, "{db:?}: an admin reads {path}");
        }
        assert!(alice.get(&reads[1]).await.text.contains("alice's output"));

        let cancel = format!("/v1/job/{id}/action");
        for (who, expected) in [(&bob, StatusCode::FORBIDDEN), (&manager, StatusCode::FORBIDDEN)] {
            assert_eq!(who.post(&cancel, json!({"action": "cancel"})).await.status, expected, "{db:?}");
        }
        assert_eq!(s.anon().post(&cancel, json!({"action": "cancel"})).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(alice.get(&reads[1]).await.json()["job_state"], "running", "{db:?}: nobody else cancelled it");
        assert_eq!(alice.post(&cancel, json!({"action": "cancel"})).await.status, StatusCode::OK);
        assert_eq!(alice.get(&reads[1]).await.json()["job_state"], "cancelled");
        s.stop().await;
    }
}
