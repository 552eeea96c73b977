//! A hostile server: a fake Testflinger server on 127.0.0.1 that hands the agent jobs whose
//! `job_id` is a path. The agent must refuse them before using the id for anything.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::common::*;

/// What the fake server saw and hands out.
#[derive(Default)]
struct Fake {
    /// Requests received: `METHOD path?query`.
    requests: Mutex<Vec<String>>,
    /// The job ids to hand out, one per claim; then no more jobs.
    job_ids: Mutex<Vec<String>>,
}

async fn claim(State(fake): State<Arc<Fake>>, uri: Uri) -> Response {
    fake.requests.lock().unwrap().push(format!("GET {uri}"));
    let next = {
        let mut ids = fake.job_ids.lock().unwrap();
        (!ids.is_empty()).then(|| ids.remove(0))
    };
    match next {
        Some(id) => axum::Json(json!({
            "job_id": id,
            "job_queue": "qh",
            "test_data": {"test_cmds": "true"},
        }))
        .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn anything(State(fake): State<Arc<Fake>>, method: axum::http::Method, uri: Uri) -> Response {
    fake.requests.lock().unwrap().push(format!("{method} {uri}"));
    if uri.path() == "/v1/oauth2/token" {
        return axum::Json(json!({"access_token": "fake-token", "token_type": "Bearer", "expires_in": 3600}))
            .into_response();
    }
    if method == axum::http::Method::GET && uri.path().starts_with("/v1/agents/data/") {
        return axum::Json(json!({"state": "waiting", "comment": ""})).into_response();
    }
    axum::Json(json!({})).into_response()
}

/// A log line collector: every formatted tracing line goes into the shared buffer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Current-thread runtime: the agent's tasks run on the test's thread, under its log collector.
#[tokio::test(flavor = "current_thread")]
async fn a_job_id_that_is_a_path_is_refused_and_nothing_outside_the_work_directory_is_removed() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("phasebox_agent=info")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = Arc::new(Fake::default());
    let app = Router::new().route("/v1/job", get(claim)).fallback(anything).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });

    // The DUT's work directory is <dir>/spool/work/hostile-dut/.
    let setup = AgentSetup::new(&url, "testflinger", "", &[Dut::new("hostile-dut", "qh")]);
    let absolute = setup.dir.path().join("canary-absolute");
    let relative = setup.dir.path().join("canary-relative");
    for canary in [&absolute, &relative] {
        std::fs::create_dir_all(canary).unwrap();
        std::fs::write(canary.join("keep.txt"), "still here").unwrap();
    }
    let hostile = [absolute.display().to_string(), "../../../canary-relative".to_owned(), "..".to_owned()];
    *fake.job_ids.lock().unwrap() = hostile.to_vec();

    let agent = RunningAgent::start(&setup);
    let claims = || fake.requests.lock().unwrap().iter().filter(|r| r.starts_with("GET /v1/job")).count();
    let started = std::time::Instant::now();
    while claims() < 4 && absolute.exists() && relative.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the agent did not claim three hostile jobs and one more; requests: {:#?}\nlog:\n{}",
            fake.requests.lock().unwrap(),
            String::from_utf8_lossy(&lines.0.lock().unwrap())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.stop().await;
    let _ = stop_server.send(());
    server.await.unwrap();

    for canary in [&absolute, &relative] {
        assert_eq!(
            std::fs::read_to_string(canary.join("keep.txt")).ok().as_deref(),
            Some("still here"),
            "{} was removed by the agent",
            canary.display()
        );
    }
    assert!(setup.dir.path().join("agent.toml").exists(), "the agent's own directory is intact");
    let log = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
    for id in &hostile {
        let expected = format!("the server gave the job id {id:?}, which is not a UUID: the job is refused");
        assert!(log.contains(&expected), "no clear error for {id:?}:\n{log}");
    }
    // The hostile id never reached a URL or the server.
    let requests = fake.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| !r.contains("canary") && !r.contains("/v1/result/")),
        "the agent used a hostile id: {requests:#?}"
    );
}
