//! Malformed and oversized bodies get a clear 4xx and leave nothing half-stored; a restart
//! keeps every piece of data.

use phasebox_server::auth::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Options, TestServer, backends};

#[tokio::test]
async fn malformed_bodies_are_clear_4xx() {
    let s = TestServer::start().await;
    let anon = s.anon();
    let agent = s.agent("dut", &["q"]).await;
    let id = anon.submit(json!({"job_queue": "q"})).await;
    agent.claim(&["q"]).await.expect("claimed: the agent writes into the job it claimed");
    let cases: Vec<(&crate::common::Api, String, &str, StatusCode)> = vec![
        (&anon, "/v1/job".into(), "{not json", StatusCode::BAD_REQUEST),
        (&anon, "/v1/job".into(), "[1, 2]", StatusCode::UNPROCESSABLE_ENTITY),
        (&anon, "/v1/job".into(), "", StatusCode::BAD_REQUEST),
        (&anon, "/v1/job".into(), "{\"job_queue\": \"q\", \"job_queue\": \"r\"}", StatusCode::UNPROCESSABLE_ENTITY),
        (&anon, format!("/v1/job/{id}/action"), "nope", StatusCode::BAD_REQUEST),
        (&agent, format!("/v1/result/{id}"), "{", StatusCode::BAD_REQUEST),
        (&agent, format!("/v1/result/{id}"), "\"text\"", StatusCode::UNPROCESSABLE_ENTITY),
        (&agent, format!("/v1/result/{id}/log/output"), "{}", StatusCode::UNPROCESSABLE_ENTITY),
        (&agent, "/v1/agents/data/dut".into(), "{\"queues\": \"q\"}", StatusCode::UNPROCESSABLE_ENTITY),
        (&anon, "/v1/oauth2/refresh".into(), "{]", StatusCode::BAD_REQUEST),
    ];
    for (api, path, body, status) in cases {
        let r = api.post_raw(&path, body.to_owned()).await;
        assert_eq!(r.status, status, "{path} {body:?}: {}", r.text);
        assert!(r.json()["message"].is_string(), "{path}: {}", r.text);
    }
    let r = anon.get("/v1/job/not-a-uuid").await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::BAD_REQUEST, "Invalid job id\n"));
    let r = agent.post(&format!("/v1/result/{id}/log/stdout"), json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Not multipart.
    let r = anon.post(&format!("/v1/job/{id}/attachments"), json!({})).await;
    assert!(r.status.is_client_error());
    // Only the one valid job exists.
    assert_eq!(s.store.search(&[], false, &[]).await.unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_store_nothing() {
    let s = TestServer::start_with(Options {
        edit: Box::new(|c| {
            c.max_json_bytes = 64 * 1024;
            c.max_attachment_bytes = 100_000;
            c.max_artifact_bytes = 100_000;
            c.max_plugin_bytes = 100_000;
            c.max_result_bytes = 32 * 1024;
        }),
        ..Options::default()
    })
    .await;
    let anon = s.anon();
    let agent = s.agent("dut", &["q"]).await;
    let big_job = json!({"job_queue": "q", "name": "x".repeat(70 * 1024)});
    let r = anon.post("/v1/job", big_job).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.store.search(&[], false, &[]).await.unwrap().len(), 0);

    let id = anon.submit(json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "a"}]}})).await;
    let r = anon.upload(&format!("/v1/job/{id}/attachments"), vec![7u8; 150_000]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    let job = s.store.get_job(&id).await.unwrap().unwrap();
    assert_eq!(job.attachments_status.as_deref(), Some("waiting"));
    assert!(agent.claim(&["q"]).await.is_none());
    assert!(!s.config.blob_dir.join("attachments").join(&id).exists(), "no attachments stored");
    let tmp = s.config.blob_dir.join("tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "no temporary file left");
    // Within the limit it works.
    assert_eq!(anon.upload(&format!("/v1/job/{id}/attachments"), vec![7u8; 90_000]).await.status, StatusCode::OK);
    agent.claim(&["q"]).await.expect("claimed: the agent writes into the job it claimed");

    let r = agent.upload(&format!("/v1/result/{id}/artifact"), vec![1u8; 150_000]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(anon.get(&format!("/v1/result/{id}/artifact")).await.status, StatusCode::NO_CONTENT);

    let r = agent.post(&format!("/v1/result/{id}"), json!({"device_info": {"x": "y".repeat(40 * 1024)}})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["message"], "Payload too large");
    assert_eq!(anon.get(&format!("/v1/result/{id}")).await.json().get("device_info"), None);

    let admin = s.client("root", Role::Admin).await;
    let r = admin.send(admin.req(reqwest::Method::POST, "/phasebox/v1/plugins").body(vec![0u8; 150_000])).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(std::fs::read_dir(s.config.blob_dir.join("plugins")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_everything() {
    let s = TestServer::start_with(Options {
        edit: Box::new(|c| c.jwt_signing_key_file = None), // the key made and kept in `blob_dir`
        ..Options::default()
    })
    .await;
    let alice = s.client("alice", Role::Contributor).await;
    let agent = s.agent("dut", &["q"]).await;
    agent.post("/v1/agents/queues", json!({"q": "the queue"})).await;
    alice.put("/v1/secrets/alice/k", json!({"value": "kept-secret"})).await;
    let done = alice.submit(json!({"job_queue": "q", "tags": ["t"]})).await;
    agent.claim(&["q"]).await.unwrap();
    agent
        .post(
            &format!("/v1/result/{done}/log/output"),
            json!({"fragment_number": 0, "timestamp": "2025-01-01T00:00:00Z", "phase": "test", "log_data": "out"}),
        )
        .await;
    agent.upload(&format!("/v1/result/{done}/artifact"), b"artifact-bytes".to_vec()).await;
    agent.post(&format!("/v1/result/{done}"), json!({"status": {"test": 0}, "job_state": "complete"})).await;
    let waiting = alice.submit(json!({"job_queue": "q", "test_data": {"secrets": {"K": "k"}}})).await;
    let before_result = alice.get(&format!("/v1/result/{done}")).await.json();
    let before_agent = alice.get("/v1/agents/data/dut").await.json();

    let (dir, config) = s.stop().await;
    let s = TestServer::start_in(dir, config).await;
    // Old access tokens still verify (same key), the data is all there.
    assert_eq!(alice.clone_for(&s).get(&format!("/v1/result/{done}")).await.json(), before_result);
    let anon = s.anon();
    assert_eq!(anon.get("/v1/agents/data/dut").await.json(), before_agent);
    assert_eq!(anon.get("/v1/agents/queues").await.json(), json!({"q": "the queue"}));
    assert_eq!(alice.clone_for(&s).get(&format!("/v1/job/{waiting}/position")).await.text, "0");
    assert_eq!(alice.clone_for(&s).get(&format!("/v1/result/{done}/artifact")).await.text, "artifact-bytes");
    assert_eq!(anon.get("/v1/job/search?tags=t").await.json()[0]["job_id"], done.as_str());
    let agent = s.login("dut").await;
    agent.post("/v1/agents/data/dut", json!({"state": "waiting"})).await;
    let job = agent.claim(&["q"]).await.unwrap();
    assert_eq!(job["test_data"]["secrets"]["K"], "kept-secret", "secrets decrypt after a restart");
    s.stop().await;
}

/// Writes abandoned half-way (a client that disconnects drops its handler wherever it is) are
/// all or nothing, and the store stays usable.
#[tokio::test]
async fn cancelled_writes_are_all_or_nothing() {
    use phasebox_server::store::{NewJob, ResultPatch};

    for db in backends() {
        let s = TestServer::start_on(db).await;
        let store = s.store.clone();
        let queue = vec!["q".to_owned()];
        let job = |i: usize| NewJob {
            job_id: format!("00000000-0000-4000-8000-{i:012}"),
            queue: "q".into(),
            priority: 0,
            created_at: phasebox_server::clock::now_micros(),
            attachments_status: None,
            client_id: None,
            submitter: None,
            job_data: "{}".into(),
            exclude_agents: vec!["nobody".into()],
            tags: vec!["t".into()],
        };
        for i in 0..60 {
            // Each write gets a little longer before it is dropped: before, during or after its
            // statements run.
            let patience = std::time::Duration::from_micros(15 * i as u64);
            let now = phasebox_server::clock::now_micros();
            let new = job(i);
            let _ = tokio::time::timeout(patience, store.insert_job(&new)).await;
            let _ = tokio::time::timeout(patience, store.claim(&queue, "dut", now)).await;
            let patch = ResultPatch { job_state: Some("complete".into()), ..ResultPatch::default() };
            let _ = tokio::time::timeout(patience, store.update_result(&new.job_id, &patch, now)).await;
        }
        // Whatever ran, ran whole; and the writer works.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        store.insert_job(&job(99)).await.expect("the store still takes writes");
        let jobs = store.search(&[], false, &[]).await.unwrap();
        let mut claimed = 0;
        for j in &jobs {
            let events = store.events_after(&j.job_id, 0, 100).await.unwrap();
            let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds.first(), Some(&"submitted"), "{db:?} {}: {kinds:?}", j.job_id);
            assert_eq!(store.search(&["t".into()], false, &[]).await.unwrap().len(), jobs.len(), "{db:?}: tags");
            let record = store.get_job(&j.job_id).await.unwrap().unwrap();
            let was_claimed = kinds.contains(&"claimed");
            assert_eq!(was_claimed, record.agent.is_some(), "{db:?} {}: {kinds:?} {record:?}", j.job_id);
            claimed += usize::from(was_claimed);
            assert_eq!(kinds.contains(&"state"), record.state == "complete", "{db:?} {}: {kinds:?}", j.job_id);
        }
        assert_eq!(store.wait_times(&queue).await.unwrap().len(), claimed, "{db:?}: one wait time per claim");
        s.stop().await;
    }
}

impl crate::common::Api {
    /// The same credentials against another server address.
    pub fn clone_for(&self, s: &TestServer) -> crate::common::Api {
        crate::common::Api { base: format!("http://{}", s.addr), ..self.clone() }
    }
}

/// PostgreSQL session settings given in `database_url` (`options[NAME]=VALUE`) reach every
/// connection the store writes with: with `synchronous_commit=off` the job cycle works, and
/// with `default_transaction_read_only=on` the server refuses to start (its migrations cannot
/// write) instead of running without the setting.
#[tokio::test]
async fn postgres_session_settings_come_from_the_url() {
    use phasebox_server::Store;
    use phasebox_server::store::NewJob;
    if crate::common::postgres_url().is_none() {
        eprintln!("skipped: PHASEBOX_TEST_POSTGRES_URL is not set");
        return;
    }
    use phasebox_server::config::url_with_parameter;
    let base = crate::common::fresh_postgres_url().await;

    let read_only = url_with_parameter(&base, "options[default_transaction_read_only]=on");
    let Err(err) = Store::connect(&read_only).await else { panic!("a read-only session cannot run migrations") };
    assert!(err.to_string().contains("read-only"), "{err}");

    let relaxed = url_with_parameter(&base, "options[synchronous_commit]=off");
    let store = Store::connect(&relaxed).await.unwrap();
    let now = phasebox_server::clock::now_micros();
    let job = NewJob {
        job_id: "00000000-0000-4000-8000-000000000001".into(),
        queue: "q".into(),
        priority: 0,
        created_at: now,
        attachments_status: None,
        client_id: None,
        submitter: None,
        job_data: "{}".into(),
        exclude_agents: vec![],
        tags: vec![],
    };
    store.insert_job(&job).await.unwrap();
    let claimed = store.claim(&["q".to_owned()], "dut", now).await.unwrap().expect("the job");
    assert_eq!(claimed.job_id, job.job_id);
    assert!(store.claim(&["q".to_owned()], "dut", now).await.unwrap().is_none(), "claimed once only");
    store.close().await;
}
