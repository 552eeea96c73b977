//! phasebox additions: long-poll claims, event streams, plugins, metrics; and claims under
//! concurrency.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::common::{Options, TestServer, backends};
use phasebox_server::auth::Role;

#[tokio::test]
async fn long_poll_wakes_on_submit() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let agent = s.agent("dut", &["other", "q"]).await;
        let waiter = {
            let agent = agent.clone();
            tokio::spawn(async move {
                let r = agent.get("/v1/job?queue=other&queue=q&wait=20").await;
                (r.status, r.text, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let submitted = Instant::now();
        let id = s.anon().submit(json!({"job_queue": "q"})).await;
        let (status, text, got) = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains(&id));
        let latency = got.duration_since(submitted);
        assert!(latency < Duration::from_millis(500), "woke after {latency:?}");
        s.stop().await;
    }
}

/// An operator setting an agent offline, to maintenance or to restart ends its waiting
/// long-poll claim with 204 at once, and while the state holds a long-poll hands it no job; a
/// plain claim is answered as Testflinger's server does.
#[tokio::test]
async fn long_poll_ends_when_the_agent_is_set_to_maintenance() {
    for state in ["maintenance", "offline", "restart"] {
        let s = TestServer::start().await;
        let agent = s.agent("dut", &["q"]).await;
        let waiter = {
            let agent = agent.clone();
            tokio::spawn(async move { agent.get("/v1/job?queue=q&wait=20").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = agent.post("/v1/agents/data/dut", json!({"state": state, "comment": "new cable"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = tokio::time::timeout(Duration::from_secs(3), waiter).await.expect("woken at once").unwrap();
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{state}: {}", r.text);

        let id = s.anon().submit(json!({"job_queue": "q"})).await;
        let r = agent.get("/v1/job?queue=q&wait=1").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{state}: a held agent got a job by long-poll");
        assert_eq!(s.anon().get(&format!("/v1/result/{id}")).await.json()["job_state"], "waiting");

        agent.post("/v1/agents/data/dut", json!({"state": "waiting", "comment": ""})).await;
        let r = agent.get("/v1/job?queue=q&wait=5").await;
        assert_eq!(r.status, StatusCode::OK, "{state}: back to waiting, the job is handed out");
        assert_eq!(r.json()["job_id"], id.as_str());
        s.stop().await;
    }
}

#[tokio::test]
async fn long_poll_times_out_with_204_and_wakes_on_attachments() {
    let s = TestServer::start().await;
    let agent = s.agent("dut", &["q"]).await;
    let t = Instant::now();
    let r = agent.get("/v1/job?queue=q&wait=1").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(t.elapsed() >= Duration::from_millis(950) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let id = s.anon().submit(json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "a"}]}})).await;
    let waiter = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.get("/v1/job?queue=q&wait=20").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.anon().upload(&format!("/v1/job/{id}/attachments"), vec![1, 2, 3]).await;
    let r = tokio::time::timeout(Duration::from_secs(3), waiter).await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["job_id"], id.as_str());
    s.stop().await;
}

#[tokio::test]
async fn shutdown_ends_long_polls_and_streams() {
    let s = TestServer::start().await;
    let agent = s.agent("dut", &["q"]).await;
    let id = s.anon().submit(json!({"job_queue": "other"})).await;
    let poll = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.get("/v1/job?queue=q&wait=60").await })
    };
    let stream = {
        let anon = s.anon();
        tokio::spawn(async move { anon.get(&format!("/phasebox/v1/job/{id}/events")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), s.stop()).await.expect("prompt shutdown");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(poll.await.unwrap().status, StatusCode::NO_CONTENT);
    let events = stream.await.unwrap();
    assert!(events.text.contains("event: submitted"));
}

async fn read_events(resp: reqwest::Response, until: &str) -> Vec<(i64, String, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("event in time") {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = 0;
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().unwrap_or(0);
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if kind.is_empty() {
                continue;
            }
            let done = kind == until;
            out.push((id, kind, serde_json::from_str(&data).unwrap_or(Value::Null)));
            if done {
                return out;
            }
        }
    }
    out
}

/// The events of job `id`'s stream opened with `query` (`""` or `?…`), up to `end`.
async fn job_events(api: &crate::common::Api, id: &str, query: &str) -> Vec<(i64, String, Value)> {
    let resp = api.req(reqwest::Method::GET, &format!("/phasebox/v1/job/{id}/events{query}")).send().await.unwrap();
    read_events(resp, "end").await
}

#[tokio::test]
async fn event_stream_live_and_resumable() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let anon = s.anon();
        let agent = s.agent("dut", &["q"]).await;
        let id = anon.submit(json!({"job_queue": "q"})).await;
        let live = anon.req(reqwest::Method::GET, &format!("/phasebox/v1/job/{id}/events")).send().await.unwrap();
        assert_eq!(live.status(), StatusCode::OK);
        assert!(live.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let reader = tokio::spawn(read_events(live, "end"));
        agent.claim(&["q"]).await.unwrap();
        agent.post(&format!("/v1/result/{id}"), json!({"job_state": "test"})).await;
        agent
            .post(
                &format!("/v1/result/{id}/log/output"),
                json!({"fragment_number": 0, "timestamp": "2025-01-01T00:00:00Z", "phase": "test", "log_data": "line\n"}),
            )
            .await;
        agent.post(&format!("/v1/result/{id}"), json!({"status": {"test": 0}, "job_state": "complete"})).await;
        let events = reader.await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["submitted", "claimed", "state", "log", "state", "end"]);
        assert_eq!(events[3].2["log_data"], "line\n");
        assert_eq!(events[4].2["job_state"], "complete");
        let ids: Vec<i64> = events[..5].iter().map(|e| e.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

        // Resume after the claim: the rest only (query and Last-Event-ID agree).
        let rest = job_events(&anon, &id, &format!("?after={}", ids[1])).await;
        assert_eq!(rest.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), ["state", "log", "state", "end"]);
        let resumed = anon
            .req(reqwest::Method::GET, &format!("/phasebox/v1/job/{id}/events"))
            .header("Last-Event-ID", ids[3].to_string())
            .send()
            .await
            .unwrap();
        let rest = read_events(resumed, "end").await;
        assert_eq!(rest.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), ["state", "end"]);

        // Only some kinds: the others are not sent, `end` always is; ids stay the event's own.
        for query in ["kind=state", "kind=state&kind=claimed", "kind=claimed,%20state"] {
            let got = job_events(&anon, &id, &format!("?{query}")).await;
            let kinds: Vec<&str> = got.iter().map(|e| e.1.as_str()).collect();
            if query == "kind=state" {
                assert_eq!(kinds, ["state", "state", "end"]);
                assert_eq!((got[0].0, got[1].0), (ids[2], ids[4]));
            } else {
                assert_eq!(kinds, ["claimed", "state", "state", "end"], "{query}");
            }
        }
        let got = job_events(&anon, &id, &format!("?kind=state&after={}", ids[2])).await;
        assert_eq!(got.iter().map(|e| (e.0, e.1.as_str())).collect::<Vec<_>>(), [(ids[4], "state"), (0, "end")]);
        let r = anon.get(&format!("/phasebox/v1/job/{id}/events?kind=logs")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let message = serde_json::from_str::<Value>(&r.text).unwrap()["message"].as_str().unwrap_or("").to_owned();
        assert!(message.starts_with("unknown event kind \"logs\" (one of: submitted,"), "{}", r.text);
        assert_eq!(
            anon.get(&format!("/phasebox/v1/job/{}/events", uuid::Uuid::new_v4())).await.status,
            StatusCode::NOT_FOUND
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn plugin_registry_by_sha256() {
    let s = TestServer::start().await;
    let anon = s.anon();
    // Uploads are for admins; downloads for anyone.
    let admin = s.client("root", Role::Admin).await;
    // An empty component with one custom section.
    let component = b"\0asm\x0d\0\x01\0\0\x08\x07example".to_vec();
    let sha = hex::encode(sha2::Sha256::digest(&component));
    let r = admin.send(admin.req(reqwest::Method::POST, "/phasebox/v1/plugins").body(component.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!({"sha256": sha, "size": component.len()}));
    let agent = s.agent("dut", &["q"]).await;
    let resp = agent.req(reqwest::Method::GET, &format!("/phasebox/v1/plugins/{sha}")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/wasm");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), component);
    let other = "ab".repeat(32);
    let r = admin
        .send(admin.req(reqwest::Method::PUT, &format!("/phasebox/v1/plugins/{other}")).body(component.clone()))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(anon.get(&format!("/phasebox/v1/plugins/{other}")).await.status, StatusCode::NOT_FOUND);
    let r = admin.send(admin.req(reqwest::Method::PUT, &format!("/phasebox/v1/plugins/{sha}")).body(component)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(anon.get("/phasebox/v1/plugins/zz").await.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn metrics_text() {
    let s = TestServer::start().await;
    let agent = s.agent("dut", &["q"]).await;
    s.anon().submit(json!({"job_queue": "q"})).await;
    s.anon().submit(json!({"job_queue": "q"})).await;
    agent.claim(&["q"]).await.unwrap();
    let r = agent.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    for line in [
        "phasebox_queue_depth{queue=\"q\"} 1",
        "phasebox_jobs{state=\"running\"} 1",
        "phasebox_jobs{state=\"waiting\"} 1",
        "phasebox_claim_latency_seconds_count 1",
        "phasebox_jobs_submitted_total{queue=\"q\"} 2",
        "# TYPE phasebox_claim_latency_seconds histogram",
    ] {
        assert!(r.text.lines().any(|l| l == line), "missing {line:?} in\n{}", r.text);
    }
    assert!(r.text.contains("phasebox_http_requests_total{method=\"POST\",route=\"/v1/job\",status=\"200\"} 2"));
    s.stop().await;
}

#[tokio::test]
async fn metrics_on_a_separate_listener() {
    // A free port for the metrics listener (the server binds it itself).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let at: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s =
        TestServer::start_with(Options { edit: Box::new(move |c| c.metrics_listen = Some(at)), ..Options::default() })
            .await;
    s.anon().submit(json!({"job_queue": "q"})).await;
    // The API listener no longer serves it, and the API document leaves it out.
    let r = s.anon().get("/metrics").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(s.anon().get("/phasebox/v1/openapi.json").await.json()["paths"].get("/metrics").is_none());
    let metrics = reqwest::get(format!("http://{at}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.lines().any(|l| l == "phasebox_queue_depth{queue=\"q\"} 1"), "{text}");
    assert!(!text.contains("route=\"/metrics\""), "metrics scrapes are not counted as API requests");
    // Nothing but /metrics there.
    assert_eq!(reqwest::get(format!("http://{at}/v1/")).await.unwrap().status(), StatusCode::NOT_FOUND);
    s.stop().await;
    // It stops with the server.
    assert!(reqwest::get(format!("http://{at}/metrics")).await.is_err());
}

#[tokio::test]
async fn metrics_listener_that_cannot_bind_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::config_in(dir.path(), crate::common::Db::Sqlite, false).await;
    config.metrics_listen = Some(taken.local_addr().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = phasebox_server::launch(listener, config, async {}).await.unwrap_err();
    assert!(e.to_string().contains("for /metrics"), "{e}");
}

#[tokio::test]
async fn concurrent_claims_never_double_dispatch() {
    for db in backends() {
        let s = TestServer::start_on(db).await;
        let anon = s.anon();
        let mut agents = Vec::new();
        for i in 0..8 {
            agents.push(s.agent(&format!("dut{i}"), &["q"]).await);
        }
        let mut ids = HashSet::new();
        for _ in 0..120 {
            ids.insert(anon.submit(json!({"job_queue": "q"})).await);
        }
        let mut tasks = Vec::new();
        for agent in agents {
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) = agent.claim(&["q"]).await {
                    got.push(job["job_id"].as_str().unwrap().to_owned());
                }
                got
            }));
        }
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        let unique: HashSet<_> = claimed.iter().cloned().collect();
        assert_eq!(claimed.len(), 120, "every job claimed once");
        assert_eq!(unique, ids);
        s.stop().await;
    }
}
