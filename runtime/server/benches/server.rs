//! Server benchmarks, printed as a table (run: `cargo bench --workspace --bench server`).
//!
//! * `GET /v1/` requests/s with 32 connections and with one: the HTTP layer alone, for scale;
//! * submit + claim + complete, jobs/s, with 1, 8 and 32 concurrent agents, each doing the
//!   whole cycle over HTTP on loopback: `POST /v1/job`, `GET /v1/job`, `POST /v1/result`
//!   (`job_state: complete`), with the p50 time of each request; beside it the same three
//!   writes called on the store directly, to separate the database's share from HTTP's.
//!   SQLite always; PostgreSQL when PHASEBOX_TEST_POSTGRES_URL is set, once with commits
//!   fsynced (the default) and once with `options[synchronous_commit]=off` in the URL;
//! * time from submit to an agent holding the job: long-poll (`wait=30`) p50/p95 beside an agent
//!   polling every 10 s, Testflinger's default `polling_interval`;
//! * log fragment ingest (`POST /v1/result/<id>/log/output`), MB/s.
//!
//! The throughput goals (2,000 jobs/s on SQLite, 1,000 on PostgreSQL, 32 agents, 2 cores) are
//! printed beside the figures.
//!
//! Arguments after `--` pick groups: `http`, `cycle`, `latency`, `logs`, `sqlite`, `postgres` (e.g.
//! `cargo bench --workspace --bench server -- cycle sqlite`); none runs everything.

use std::io::Write;
use std::time::{Duration, Instant};

use phasebox_server::auth::{self, Role};
use phasebox_server::{AppState, ServerConfig};
use serde_json::{Value, json};

const SECRET: &str = "bench-client-secret";
/// Jobs/s through submit + claim + complete with 32 agents on 2 cores, SQLite.
const SQLITE_GOAL: u32 = 2000;
/// The same on PostgreSQL, commits fsynced.
const POSTGRES_GOAL: u32 = 1000;

struct Server {
    base: String,
    state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), phasebox_server::ServerError>>,
    _dir: tempfile::TempDir,
}

/// A new database on the server of `base`; the URL keeps `base`'s connection parameters.
async fn fresh_postgres(base: &str) -> String {
    let admin = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(base).await.expect("PostgreSQL");
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).unwrap();
    let name = format!("phasebox_bench_{}", hex::encode(suffix));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    admin.close().await;
    phasebox_server::config::url_for_database(base, &name)
}

async fn start(postgres: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::in_dir(dir.path());
    if let Some(url) = postgres {
        config.database_url = fresh_postgres(url).await;
    }
    config.max_long_poll = std::time::Duration::from_secs(60);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = phasebox_server::build_state(config).await.unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(phasebox_server::serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Server { base, state, stop, task, _dir: dir }
}

impl Server {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// An agent client (token + `agent_name` cookie).
    async fn agent(&self, name: &str, queues: &[String]) -> Agent {
        auth::create_client(&self.state.store, name, SECRET, Role::Agent).await.unwrap();
        auth::bind_agent(&self.state.store, name, vec![name.to_owned()], queues.to_vec()).await.unwrap();
        let http = reqwest::Client::builder().cookie_store(true).pool_max_idle_per_host(64).build().unwrap();
        let token: Value = http
            .post(format!("{}/v1/oauth2/token", self.base))
            .basic_auth(name, Some(SECRET))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap().to_owned();
        let agent = Agent { base: self.base.clone(), http, token };
        let r = agent.post(&format!("/v1/agents/data/{name}"), &json!({"state": "waiting", "queues": queues})).await;
        assert!(r.status().is_success());
        agent
    }
}

#[derive(Clone)]
struct Agent {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Agent {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await.unwrap()
    }

    async fn claim(&self, query: &str) -> Option<Value> {
        let r = self.http.get(format!("{}/v1/job?{query}", self.base)).bearer_auth(&self.token).send().await.unwrap();
        if r.status() == reqwest::StatusCode::OK { Some(r.json().await.unwrap()) } else { None }
    }
}

async fn submit(http: &reqwest::Client, base: &str, queue: &str) -> String {
    let r: Value = http
        .post(format!("{base}/v1/job"))
        .json(&json!({"job_queue": queue}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["job_id"].as_str().unwrap().to_owned()
}

/// N agents, each looping submit → claim → complete; returns jobs/s and the p50 time of each
/// of the three requests (ms).
async fn cycle(server: &Server, agents: usize, jobs: usize) -> (f64, [f64; 3]) {
    let mut clients = Vec::new();
    for i in 0..agents {
        let queue = format!("q{i}");
        clients.push((server.agent(&format!("agent{i}"), std::slice::from_ref(&queue)).await, queue));
    }
    let per_agent = jobs / agents;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (agent, queue) in clients {
        tasks.push(tokio::spawn(async move {
            let submitter = reqwest::Client::new();
            let mut times = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..per_agent {
                let t0 = Instant::now();
                let id = submit(&submitter, &agent.base, &queue).await;
                let t1 = Instant::now();
                let job = agent.claim(&format!("queue={queue}")).await.expect("a job");
                let t2 = Instant::now();
                assert_eq!(job["job_id"].as_str(), Some(id.as_str()));
                let r = agent
                    .post(&format!("/v1/result/{id}"), &json!({"status": {"test": 0}, "job_state": "complete"}))
                    .await;
                assert!(r.status().is_success());
                let t3 = Instant::now();
                record_steps(&mut times, [t0, t1, t2, t3]);
            }
            times
        }));
    }
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for t in tasks {
        for (all, mine) in times.iter_mut().zip(t.await.unwrap()) {
            all.extend(mine);
        }
    }
    let rate = (per_agent * agents) as f64 / start.elapsed().as_secs_f64();
    (rate, times.map(|mut v| percentile(&mut v, 0.5)))
}

/// Adds the three steps between four instants to `times` (ms).
fn record_steps(times: &mut [Vec<f64>; 3], marks: [Instant; 4]) {
    for (step, pair) in times.iter_mut().zip(marks.windows(2)) {
        step.push(pair[1].duration_since(pair[0]).as_secs_f64() * 1000.0);
    }
}

/// The same cycle on the store directly (no HTTP): one task, `jobs` times insert → claim →
/// result `complete`; returns jobs/s and the p50 of each call (ms).
async fn store_cycle(server: &Server, jobs: usize) -> (f64, [f64; 3]) {
    use phasebox_server::store::{NewJob, ResultPatch};
    let store = &server.state.store;
    let queues = ["direct".to_owned()];
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let start = Instant::now();
    for _ in 0..jobs {
        let now = phasebox_server::clock::now_micros();
        let job = NewJob {
            job_id: uuid::Uuid::new_v4().to_string(),
            queue: queues[0].clone(),
            priority: 0,
            created_at: now,
            attachments_status: None,
            client_id: None,
            submitter: None,
            job_data: json!({"job_queue": "direct"}).to_string(),
            exclude_agents: Vec::new(),
            tags: Vec::new(),
        };
        let t0 = Instant::now();
        store.insert_job(&job).await.unwrap();
        let t1 = Instant::now();
        let claimed = store.claim(&queues, "direct-agent", now).await.unwrap().expect("a job");
        let t2 = Instant::now();
        let patch = ResultPatch {
            status: Some(json!({"test": 0})),
            job_state: Some("complete".to_owned()),
            ..ResultPatch::default()
        };
        assert!(store.update_result(&claimed.job_id, &patch, now).await.unwrap());
        let t3 = Instant::now();
        record_steps(&mut times, [t0, t1, t2, t3]);
    }
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    (rate, times.map(|mut v| percentile(&mut v, 0.5)))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// `GET /v1/` (no database) from `clients` concurrent connections: the HTTP layer's ceiling
/// on this machine, in requests/s.
async fn banner_rate(server: &Server, clients: usize, requests: usize) -> f64 {
    let per_client = requests / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..per_client {
                let r = http.get(format!("{base}/v1/")).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (per_client * clients) as f64 / start.elapsed().as_secs_f64()
}

/// Submit → claimed, with an agent already waiting in a long-poll.
async fn long_poll_latency(server: &Server, rounds: usize) -> Vec<f64> {
    let agent = server.agent("lp", &["lp".to_owned()]).await;
    let submitter = reqwest::Client::new();
    let mut out = Vec::new();
    for _ in 0..rounds {
        let a = agent.clone();
        let waiter = tokio::spawn(async move {
            let job = a.claim("queue=lp&wait=30").await.expect("job");
            (Instant::now(), job)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        submit(&submitter, &server.base, "lp").await;
        let (got, _) = waiter.await.unwrap();
        out.push(got.duration_since(t0).as_secs_f64() * 1000.0);
    }
    out
}

/// Submit → claimed, with agents polling every `interval` (each on its own queue, started at a
/// random phase relative to the submit, as in a real lab).
async fn polling_latency(server: &Server, pollers: usize, interval: Duration) -> Vec<f64> {
    let mut tasks = Vec::new();
    for i in 0..pollers {
        let queue = format!("poll{i}");
        let agent = server.agent(&format!("poller{i}"), std::slice::from_ref(&queue)).await;
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = [0u8; 2];
            getrandom::fill(&mut r).unwrap();
            let offset = interval.mul_f64(f64::from(u16::from_le_bytes(r)) / 65535.0);
            let submitted = tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let t0 = Instant::now();
                submit(&reqwest::Client::new(), &base, &queue).await;
                t0
            });
            let query = format!("queue=poll{i}");
            loop {
                if agent.claim(&query).await.is_some() {
                    let got = Instant::now();
                    let t0 = submitted.await.unwrap();
                    return got.duration_since(t0).as_secs_f64() * 1000.0;
                }
                tokio::time::sleep(interval).await;
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Log fragments of `size` bytes from `writers` concurrent connections; MB/s.
async fn log_ingest(server: &Server, writers: usize, size: usize, total: usize) -> f64 {
    let agent = server.agent(&format!("logger{size}"), &["logs".to_owned()]).await;
    let id = submit(&reqwest::Client::new(), &server.base, "logs").await;
    // Only the agent that claimed a job writes its logs.
    assert!(agent.claim("queue=logs").await.is_some());
    let chunk = "x".repeat(size - 1) + "\n";
    let per_writer = total / size / writers;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let agent = agent.clone();
        let id = id.clone();
        let chunk = chunk.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_writer {
                let body = json!({"fragment_number": w * per_writer + n, "timestamp": "2025-01-01T00:00:00+00:00",
                                  "phase": "test", "log_data": chunk});
                let r = agent.post(&format!("/v1/result/{id}/log/output"), &body).await;
                assert!(r.status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (per_writer * writers * size) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` adds `--bench`; everything else names groups to run.
    let picked: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let groups = ["http", "cycle", "latency", "logs"];
    let dbs = ["sqlite", "postgres"];
    let wants = |set: &[&str], name: &str| {
        let chosen: Vec<&String> = picked.iter().filter(|p| set.contains(&p.as_str())).collect();
        chosen.is_empty() || chosen.iter().any(|p| *p == name)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut out = std::io::stdout().lock();
        let postgres = std::env::var("PHASEBOX_TEST_POSTGRES_URL").ok();
        let mut backends: Vec<(&str, Option<String>)> = Vec::new();
        // Durability as configured by default: SQLite acknowledges a commit once it is in the
        // WAL file (fsync at checkpoints: safe against a crash of the server, not of the
        // machine); PostgreSQL acknowledges it once it is fsynced.
        if wants(&dbs, "sqlite") {
            backends.push(("SQLite", None));
        }
        if let Some(url) = postgres.as_deref().filter(|_| wants(&dbs, "postgres")) {
            backends.push(("PostgreSQL", Some(url.to_owned())));
        }
        // The same PostgreSQL with commits acknowledged before their fsync (an operator's choice,
        // set in the database URL), for the cycle only: what the server costs without the wait
        // for the disk.
        let relaxed = postgres
            .as_deref()
            .filter(|_| wants(&dbs, "postgres"))
            .map(|url| phasebox_server::config::url_with_parameter(url, "options[synchronous_commit]=off"));
        writeln!(out, "phasebox-server benchmarks (in-process server, HTTP over loopback)").unwrap();
        writeln!(out).unwrap();
        writeln!(out, "| measurement | backend | result | goal |").unwrap();
        writeln!(out, "|---|---|---|---|").unwrap();
        if wants(&groups, "http") {
            let server = start(None).await;
            let rate = banner_rate(&server, 32, 20_000).await;
            writeln!(out, "| `GET /v1/` (no database), 32 connections | - | {rate:.0} requests/s | - |").unwrap();
            // One connection, one request at a time: the HTTP round trip that each request of a
            // 1-agent cycle pays before any database work.
            let rate = banner_rate(&server, 1, 5_000).await;
            writeln!(
                out,
                "| `GET /v1/` (no database), 1 connection | - | {rate:.0} requests/s ({:.3} ms each) | - |",
                1000.0 / rate
            )
            .unwrap();
            server.shutdown().await;
        }
        let mut cycled: Vec<(&str, Option<String>)> = backends.clone();
        if let Some(url) = relaxed {
            cycled.push(("PostgreSQL, synchronous_commit=off", Some(url)));
        }
        for (name, url) in cycled.iter().filter(|_| wants(&groups, "cycle")) {
            let server = start(url.as_deref()).await;
            let (rate, [insert, claim, result]) = store_cycle(&server, 1000).await;
            writeln!(
                out,
                "| insert + claim + result on the store (no HTTP), 1 task | {name} | {rate:.0} jobs/s \
                 (p50 per call: insert {insert:.2} ms, claim {claim:.2} ms, result {result:.2} ms) | - |"
            )
            .unwrap();
            server.shutdown().await;
            for (agents, jobs) in [(1usize, 1000usize), (8, 2000), (32, 3200)] {
                let server = start(url.as_deref()).await;
                let (rate, [submit, claim, complete]) = cycle(&server, agents, jobs).await;
                // The goals are for a busy server (32 agents) with durable commits.
                let goal = match (agents, *name) {
                    (32, "SQLite") => format!("{SQLITE_GOAL} jobs/s"),
                    (32, "PostgreSQL") => format!("{POSTGRES_GOAL} jobs/s"),
                    _ => "-".to_owned(),
                };
                writeln!(
                    out,
                    "| submit + claim + complete, {agents} agent(s) | {name} | {rate:.0} jobs/s \
                     (p50 per request: submit {submit:.2} ms, claim {claim:.2} ms, complete {complete:.2} ms) | {goal} |"
                )
                .unwrap();
                out.flush().unwrap();
                server.shutdown().await;
            }
        }
        for (name, url) in backends.iter().filter(|_| wants(&groups, "latency") || wants(&groups, "logs")) {
            let server = start(url.as_deref()).await;
            if !wants(&groups, "latency") {
                run_logs(&mut out, &server, name).await;
                server.shutdown().await;
                continue;
            }
            let mut lp = long_poll_latency(&server, 100).await;
            let p50 = percentile(&mut lp, 0.5);
            let p95 = percentile(&mut lp, 0.95);
            writeln!(out, "| submit → claimed, long-poll (wait=30), p50 / p95 | {name} | {p50:.2} ms / {p95:.2} ms | - |").unwrap();
            out.flush().unwrap();
            if url.is_none() {
                let mut polled = polling_latency(&server, 16, Duration::from_secs(10)).await;
                let p50 = percentile(&mut polled, 0.5);
                let p95 = percentile(&mut polled, 0.95);
                writeln!(
                    out,
                    "| submit → claimed, polling every 10 s (Testflinger default), p50 / p95 | {name} | {p50:.0} ms / {p95:.0} ms | - |"
                )
                .unwrap();
            }
            if wants(&groups, "logs") {
                run_logs(&mut out, &server, name).await;
            }
            server.shutdown().await;
        }
    });
}

async fn run_logs(out: &mut impl Write, server: &Server, name: &str) {
    for (size, writers) in [(4096usize, 4usize), (65536, 4), (1 << 20, 2)] {
        let mbs = log_ingest(server, writers, size, 64 << 20).await;
        writeln!(
            out,
            "| log fragment ingest, {} KiB fragments, {writers} writers | {name} | {mbs:.1} MB/s | - |",
            size / 1024
        )
        .unwrap();
        out.flush().unwrap();
    }
}
