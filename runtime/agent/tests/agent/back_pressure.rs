//! Back-pressure: a server that stops answering holds the guest up; the agent's memory does
//! not grow with the job's output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use phasebox_agent::Observer;
use phasebox_job::{EventRecord, JobEvent};
use serde_json::{Value, json};

use crate::common::*;

const JOB_ID: &str = "0b7f6c1e-5d4a-4c3b-9a2f-1e0d9c8b7a65";

/// The most output the agent may have taken from a job whose log posts do not return: what
/// its bounded queues hold (the shipper's queue of small records, two batches of 256 KiB, the
/// outbox's few deliveries, the post in flight), with room to spare. A flooding guest left
/// unchecked writes this much in a fraction of a second.
const BOUND: u64 = 8 << 20;

/// A Testflinger server whose log posts hang until released.
#[derive(Default)]
struct Slow {
    claimed: Mutex<bool>,
    cancelled: Mutex<bool>,
    release: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    released: tokio::sync::Notify,
    log_posts: AtomicU64,
    final_result: Mutex<Option<Value>>,
}

async fn claim(State(s): State<Arc<Slow>>) -> Response {
    let mut claimed = s.claimed.lock().unwrap();
    if *claimed {
        return StatusCode::NO_CONTENT.into_response();
    }
    *claimed = true;
    axum::Json(json!({
        "job_id": JOB_ID,
        "job_queue": "qb",
        "allocate_data": {"attack": "flood", "phasebox": {"plugin": "probe"}},
    }))
    .into_response()
}

async fn log(State(s): State<Arc<Slow>>, Path((_id, _log)): Path<(String, String)>) -> StatusCode {
    s.log_posts.fetch_add(1, Ordering::SeqCst);
    let mut released = s.release.lock().unwrap().as_ref().expect("set up").subscribe();
    let _ = released.wait_for(|r| *r).await;
    StatusCode::OK
}

async fn result(State(s): State<Arc<Slow>>, method: Method, body: Bytes) -> Response {
    if method == Method::GET {
        let state = if *s.cancelled.lock().unwrap() { "cancelled" } else { "allocate" };
        return axum::Json(json!({ "job_state": state })).into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    // The final result: the statuses with the end state (a cancelled job ends `cancelled`).
    if body.get("status").is_some() && matches!(body["job_state"].as_str(), Some("complete" | "cancelled")) {
        *s.final_result.lock().unwrap() = Some(body);
        s.released.notify_one();
    }
    axum::Json(json!({})).into_response()
}

async fn anything(method: Method, uri: Uri) -> Response {
    if uri.path() == "/v1/oauth2/token" {
        return axum::Json(json!({"access_token": "fake-token", "token_type": "Bearer", "expires_in": 3600}))
            .into_response();
    }
    if method == Method::GET && uri.path().starts_with("/v1/agents/data/") {
        return axum::Json(json!({"state": "waiting", "comment": ""})).into_response();
    }
    axum::Json(json!({})).into_response()
}

/// Counts the output the agent took from the job (every record the engine handed its sink).
#[derive(Default)]
struct Progress {
    output_bytes: AtomicU64,
}

impl Observer for Progress {
    fn job_event(&self, _dut: &str, record: &EventRecord) {
        if let JobEvent::Output { data, .. } = &record.event {
            self.output_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_holds_the_guest_up_instead_of_filling_memory() {
    logging();
    let slow = Arc::new(Slow::default());
    let (release, _) = tokio::sync::watch::channel(false);
    *slow.release.lock().unwrap() = Some(release);
    let app = Router::new()
        .route("/v1/job", get(claim))
        .route("/v1/result/{id}/log/{log}", post(log))
        .route("/v1/result/{id}", get(result).post(result))
        .fallback(anything)
        .with_state(slow.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let setup = AgentSetup::new(&url, "testflinger", "", &[Dut::new("slow-dut", "qb")]);
    let progress = Arc::new(Progress::default());
    let agent = phasebox_agent::Agent::new(setup.config()).unwrap().with_observer(progress.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async move {
        let _ = stopped.await;
    }));

    // The first fragment is stuck at the server; the guest floods on.
    wait_until(Duration::from_secs(120), "a log post reaches the server", || async {
        slow.log_posts.load(Ordering::SeqCst) > 0
    })
    .await;
    // Long enough for an unchecked guest to write far past the bound.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let taken = progress.output_bytes.load(Ordering::SeqCst);
    assert!(taken <= BOUND, "the agent took {taken} bytes of output while the server did not answer");
    assert_eq!(slow.log_posts.load(Ordering::SeqCst), 1, "one post at a time: the rest waits in order");
    assert!(slow.final_result.lock().unwrap().is_none(), "the job is still running, held up");

    // The server answers again and cancels the job: everything flows, the job ends.
    *slow.cancelled.lock().unwrap() = true;
    slow.release.lock().unwrap().as_ref().unwrap().send_replace(true);
    tokio::time::timeout(Duration::from_secs(120), slow.released.notified()).await.expect("the job ended");
    assert!(progress.output_bytes.load(Ordering::SeqCst) > taken, "the guest went on once the server answered");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
