//! Two server replicas on one PostgreSQL database: agents claiming through either, with plain
//! and long-poll claims mixed, get every job exactly once. Needs PHASEBOX_TEST_POSTGRES_URL
//! (skipped without it, failed under PHASEBOX_REQUIRE_POSTGRES=1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use phasebox_server::Store;
use phasebox_server::auth::{self, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{Db, SECRET, config_in, postgres_url};

const JOBS: usize = 500;
const AGENTS: usize = 8;
const QUEUE: &str = "shared";

struct Replica {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), phasebox_server::ServerError>>,
}

async fn replica(config: &phasebox_server::ServerConfig) -> Replica {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(phasebox_server::launch(listener, config.clone(), async move {
        let _ = stopped.await;
    }));
    Replica { base, stop, task }
}

/// Waits until `base` answers (its migrations ran and it listens).
async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/v1/")).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_dispatch_every_job_exactly_once() {
    if postgres_url().is_none() {
        eprintln!("skipped: PHASEBOX_TEST_POSTGRES_URL is not set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), Db::Postgres, false).await;
    // One replica first, so the two do not race to create the schema.
    let a = replica(&config).await;
    let http = reqwest::Client::new();
    wait_ready(&http, &a.base).await;
    let b = replica(&config).await;
    wait_ready(&http, &b.base).await;
    let bases = [a.base.clone(), b.base.clone()];

    let store = Store::connect(&config.database_url).await.unwrap();
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let name = format!("agent{i}");
        auth::create_client(&store, &name, SECRET, Role::Agent).await.unwrap();
        auth::bind_agent(&store, &name, vec![name.clone()], vec![QUEUE.to_owned()]).await.unwrap();
        let base = &bases[i % 2];
        let r = http.post(format!("{base}/v1/oauth2/token")).basic_auth(&name, Some(SECRET)).send().await.unwrap();
        let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{}/v1/agents/data/{name}", bases[(i + 1) % 2]))
            .bearer_auth(&token)
            .json(&json!({"state": "waiting", "queues": [QUEUE]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        agents.push((name, token));
    }

    // Agents start first, so submissions meet plain claims and waiting long-polls on both
    // replicas.
    let claimed: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for (i, (name, token)) in agents.into_iter().enumerate() {
        let (bases, claimed, count, http) = (bases.clone(), claimed.clone(), count.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while count.load(Ordering::SeqCst) < JOBS && Instant::now() < deadline {
                n += 1;
                let base = &bases[n % 2];
                // Half the agents long-poll on odd turns, the other half on even ones.
                let query =
                    if (n + i / 4) % 2 == 0 { format!("queue={QUEUE}") } else { format!("queue={QUEUE}&wait=2") };
                let r = http
                    .get(format!("{base}/v1/job?{query}"))
                    .bearer_auth(&token)
                    .header("cookie", format!("agent_name={name}"))
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::NO_CONTENT => {
                        if !query.contains("wait") {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    StatusCode::OK => {
                        let job: Value = r.json().await.unwrap();
                        let id = job["job_id"].as_str().unwrap().to_owned();
                        claimed.lock().await.push((id.clone(), name.clone(), n % 2));
                        count.fetch_add(1, Ordering::SeqCst);
                        // Complete it through the other replica.
                        let r = http
                            .post(format!("{}/v1/result/{id}", bases[(n + 1) % 2]))
                            .bearer_auth(&token)
                            .json(&json!({"status": {"test": 0}, "job_state": "complete"}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), StatusCode::OK);
                    }
                    s => panic!("claim answered {s}: {}", r.text().await.unwrap_or_default()),
                }
            }
        }));
    }

    let mut submitters = Vec::new();
    for s in 0..2 {
        let (bases, http) = (bases.clone(), http.clone());
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..JOBS / 2 {
                let base = &bases[(s + n) % 2];
                let r = http.post(format!("{base}/v1/job")).json(&json!({"job_queue": QUEUE})).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                ids.push(r.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut submitted = BTreeSet::new();
    for s in submitters {
        submitted.extend(s.await.unwrap());
    }
    assert_eq!(submitted.len(), JOBS);
    for t in tasks {
        t.await.unwrap();
    }

    let claimed = claimed.lock().await.clone();
    let mut by_job: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (job, agent, _) in &claimed {
        by_job.entry(job).or_default().push(agent);
    }
    let twice: Vec<_> = by_job.iter().filter(|(_, agents)| agents.len() > 1).collect();
    assert!(twice.is_empty(), "dispatched more than once: {twice:?}");
    assert_eq!(claimed.len(), JOBS, "every job dispatched");
    let ids: BTreeSet<String> = by_job.keys().map(|k| (*k).to_owned()).collect();
    assert_eq!(ids, submitted);
    // The store agrees on who got each; both replicas handed out jobs.
    for (job, agents) in &by_job {
        let record = store.get_job(job).await.unwrap().unwrap();
        assert_eq!(record.agent.as_deref(), Some(agents[0]), "{job}");
        assert_eq!(record.state, "complete", "{job}");
    }
    let claimers: BTreeSet<&str> = claimed.iter().map(|(_, a, _)| a.as_str()).collect();
    assert!(claimers.len() > 1, "only {claimers:?} claimed");
    let through: BTreeSet<usize> = claimed.iter().map(|(_, _, r)| *r).collect();
    assert_eq!(through.len(), 2, "claims went through one replica only");

    store.close().await;
    for r in [a, b] {
        let _ = r.stop.send(());
        r.task.await.unwrap().expect("replica stopped cleanly");
    }
}
