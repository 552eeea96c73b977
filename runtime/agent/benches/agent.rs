//! The agent's costs through a real server over loopback HTTP, printed as a table:
//!
//! - job pickup latency: from submitting a job to its setup phase starting on the agent;
//! - end-to-end time of a 7-phase no-op job (`hello` in every phase): from submitting it to
//!   `complete` on the server, and the overhead on top of the engine's own run time;
//!
//! each with phasebox's long-poll claims and with Testflinger-style polling at Testflinger's
//! default interval (10 s), in the same run; and
//!
//! - the agent process's resident memory with 50 DUTs idle, and with 50 jobs running (one per
//!   DUT, each sleeping in a sandboxed phase). The agent runs in a child process (this binary
//!   again), so the figure is the agent's alone;
//! - its peak resident memory with 50 DUTs each running a job that prints 100 MB as fast as it
//!   can, against a server that takes half a second to answer each log post: the agent's
//!   queues are bounded and the engine keeps output on disk, so the guests wait for the
//!   server and the figure stays under a stated bound however long the jobs run.
//!
//! `cargo bench -p phasebox-agent --bench agent` (`-- --quick` for fewer samples, `-- --chatty`
//! for the chatty-jobs figure alone).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phasebox_agent::{Agent, AgentConfig, Observer};
use phasebox_client::{Client, ClientConfig};
use phasebox_job::{EventRecord, JobEvent, Phase, RunnerConfig};
use phasebox_sandbox::Capabilities;
use phasebox_server::ServerConfig;
use phasebox_server::auth::{self, Role};
use serde_json::{Value, json};

const AGENT_ID: &str = "bench-agent";
const AGENT_SECRET: &str = "bench-agent-secret-0123";
const CHILD: &str = "PHASEBOX_AGENT_BENCH_CHILD";

fn main() {
    if let Ok(config) = std::env::var(CHILD) {
        child_agent(Path::new(&config));
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(quick));
}

/// The agent alone, until its stdin closes.
fn child_agent(config: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let agent = Agent::new(AgentConfig::from_file(config).unwrap()).unwrap();
        agent
            .run(async {
                use tokio::io::AsyncReadExt;
                let mut sink = Vec::new();
                let _ = tokio::io::stdin().read_to_end(&mut sink).await;
            })
            .await
            .unwrap();
    });
}

struct Server {
    url: String,
    state: phasebox_server::AppState,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::in_dir(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = phasebox_server::build_state(config).await.unwrap();
    tokio::spawn(phasebox_server::serve(listener, state.clone(), std::future::pending()));
    auth::create_client(&state.store, AGENT_ID, AGENT_SECRET, Role::Agent).await.unwrap();
    // The DUTs of `agent_config` (up to the largest count a bench runs) on the bench's queues.
    let names: Vec<String> = (0..256).map(|i| format!("dut-{i}")).collect();
    let queues = vec!["bench-phasebox".to_owned(), "bench-testflinger".to_owned(), "rss".to_owned()];
    auth::bind_agent(&state.store, AGENT_ID, names, queues).await.unwrap();
    Server { url, state, _dir: dir }
}

fn runner() -> RunnerConfig {
    phasebox_guests::build().expect("building the guest plugins");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/runner.toml");
    let mut runner = RunnerConfig::from_file(&config).unwrap();
    runner.plugins = vec![phasebox_guests::path("hello"), phasebox_guests::path("probe")];
    runner.engine.cache_dir = Some(phasebox_guests::out_dir().join("../phasebox-bench-cache"));
    runner.engine.max_instances = 128;
    runner.policy.allow = Capabilities::everything();
    runner
}

/// Writes an agent configuration with `duts` DUTs (`dut-0`, … on `queue`) into `dir`.
fn agent_config(dir: &Path, url: &str, protocol: &str, poll: &str, duts: usize, queue: &str) -> PathBuf {
    agent_config_with(dir, url, protocol, poll, duts, queue, &runner())
}

/// [`agent_config`] with its own runner configuration.
fn agent_config_with(
    dir: &Path,
    url: &str,
    protocol: &str,
    poll: &str,
    duts: usize,
    queue: &str,
    runner: &RunnerConfig,
) -> PathBuf {
    std::fs::write(dir.join("runner.toml"), runner.to_toml()).unwrap();
    std::fs::write(dir.join("agent.secret"), AGENT_SECRET).unwrap();
    let mut text = format!(
        "server = \"{url}\"\nprotocol = \"{protocol}\"\nspool_dir = \"spool\"\npoll_interval = \"{poll}\"\n\
         [credentials]\nclient_id = \"{AGENT_ID}\"\nsecret_file = \"agent.secret\"\n"
    );
    for i in 0..duts {
        text.push_str(&format!("[[dut]]\nname = \"dut-{i}\"\nqueues = [\"{queue}\"]\nrunner = \"runner.toml\"\n"));
    }
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[derive(Default)]
struct Times {
    setup_started: Mutex<Vec<Instant>>,
    engine_ms: Mutex<Vec<u64>>,
}

impl Observer for Times {
    fn job_event(&self, _dut: &str, record: &EventRecord) {
        match &record.event {
            JobEvent::PhaseStart { phase: Phase::Setup, .. } => {
                self.setup_started.lock().unwrap().push(Instant::now());
            }
            JobEvent::JobEnd { elapsed_ms, .. } => self.engine_ms.lock().unwrap().push(*elapsed_ms),
            _ => {}
        }
    }
}

/// One figure of a sample.
type Metric = dyn Fn(&Sample) -> Duration;

struct Sample {
    pickup: Duration,
    total: Duration,
    engine: Duration,
}

fn seven_phases(queue: &str) -> Value {
    json!({
        "job_queue": queue,
        "provision_data": {"skip": false},
        "firmware_update_data": {"version": "latest"},
        "test_data": {"test_cmds": "true"},
        "allocate_data": {"allocate": true},
        "reserve_data": {"ssh_keys": ["lp:someone"]},
    })
}

/// A pseudo-random fraction in [0, 1), so submissions fall anywhere in a polling interval.
fn fraction(i: u64) -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    let mut x = nanos ^ (i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x % 10_000) as f64 / 10_000.0
}

async fn measure(server: &Server, protocol: &str, samples: usize, spread: Duration) -> Vec<Sample> {
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("bench-{protocol}");
    let config = agent_config(dir.path(), &server.url, protocol, "10s", 1, &queue);
    let times = Arc::new(Times::default());
    let agent = Agent::new(AgentConfig::from_file(&config).unwrap()).unwrap().with_observer(times.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    let client = Client::new(ClientConfig::new(server.url.clone())).unwrap();
    // Registered and waiting (and a first job through, so the plugins are loaded and warm).
    let warm = client.submit_job(&seven_phases(&queue)).await.unwrap();
    wait_complete(server, &warm).await;

    let mut out = Vec::new();
    for i in 0..samples {
        tokio::time::sleep(Duration::from_millis(100) + spread.mul_f64(fraction(i as u64))).await;
        let seen = times.setup_started.lock().unwrap().len();
        let engine_seen = times.engine_ms.lock().unwrap().len();
        let submitted = Instant::now();
        let job_id = client.submit_job(&seven_phases(&queue)).await.unwrap();
        let done = wait_complete(server, &job_id).await;
        let started = times.setup_started.lock().unwrap()[seen];
        let engine = Duration::from_millis(times.engine_ms.lock().unwrap()[engine_seen]);
        out.push(Sample { pickup: started - submitted, total: done - submitted, engine });
        eprint!(".");
    }
    eprintln!();
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    out
}

/// Waits until the server has the job `complete`; returns when it saw it (checked every
/// 0.5 ms against the store, in-process).
async fn wait_complete(server: &Server, job_id: &str) -> Instant {
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let job = server.state.store.get_job(job_id).await.unwrap();
        if job.is_some_and(|j| j.state == "complete") {
            return Instant::now();
        }
        assert!(Instant::now() < limit, "job {job_id} did not complete");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// RSS of an agent process serving `duts` DUTs: idle, then with one sleeping job on each.
async fn memory(server: &Server, duts: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), &server.url, "phasebox", "10s", duts, "rss");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let all_in = |state: &'static str| async move {
        let limit = Instant::now() + Duration::from_secs(300);
        loop {
            let agents = server.state.store.list_agents().await.unwrap();
            let n = agents.iter().filter(|(d, _)| d.get("state").and_then(Value::as_str) == Some(state)).count();
            if n >= duts {
                return;
            }
            assert!(Instant::now() < limit, "only {n} of {duts} DUTs in state {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    all_in("waiting").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);

    let client = Client::new(ClientConfig::new(server.url.clone())).unwrap();
    let job = json!({
        "job_queue": "rss",
        "allocate_data": {"attack": "sleep", "ms": 8000, "phasebox": {"plugin": "probe"}},
    });
    let mut ids = Vec::new();
    for _ in 0..duts {
        ids.push(client.submit_job(&job).await.unwrap());
    }
    all_in("allocate").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = rss_kib(pid);
    for id in &ids {
        wait_complete(server, id).await;
    }
    drop(child.stdin.take());
    let _ = child.wait();
    (idle, running)
}

async fn run(quick: bool) {
    if std::env::args().any(|a| a == "--chatty") {
        let window = if quick { Duration::from_secs(10) } else { Duration::from_secs(30) };
        print_chatty(&chatty(50, window).await);
        return;
    }
    let server = server().await;
    let (n_long, n_poll) = if quick { (5, 2) } else { (30, 6) };
    eprintln!("long-poll: {n_long} jobs");
    let long = measure(&server, "phasebox", n_long, Duration::ZERO).await;
    eprintln!("Testflinger-style polling every 10 s: {n_poll} jobs, submitted at random points of the interval");
    let poll = measure(&server, "testflinger", n_poll, Duration::from_secs(10)).await;
    eprintln!("memory: 50 DUTs");
    let (idle, running) = memory(&server, 50).await;
    let window = if quick { Duration::from_secs(10) } else { Duration::from_secs(30) };
    eprintln!("memory: 50 DUTs printing 100 MB each against a slow server, for {window:?}");
    let chatty = chatty(50, window).await;

    let col = |v: &[Sample], f: &Metric, p: f64| ms(pct(v.iter().map(f).collect(), p));
    let overhead = |s: &Sample| s.total.saturating_sub(s.engine);
    println!();
    println!("phasebox agent: server + agent in one machine over loopback HTTP (SQLite)");
    println!();
    println!("{:<58} {:>10} {:>20}", "", "long-poll", "polling every 10 s");
    let rows: [(&str, &Metric); 4] = [
        ("job pickup (submit → setup phase starts)", &|s| s.pickup),
        ("7-phase no-op job, submit → complete on the server", &|s| s.total),
        ("  the engine's own run of the 7 phases", &|s| s.engine),
        ("  end-to-end overhead (total − engine)", &overhead),
    ];
    for (label, f) in rows {
        for (p, name) in [(0.5, "p50"), (0.9, "p90")] {
            println!("{:<58} {:>10} {:>20}", format!("{label} {name}"), col(&long, f, p), col(&poll, f, p));
        }
    }
    println!("{:<58} {:>10} {:>20}", "samples", long.len(), poll.len());
    println!();
    println!("goals: pickup p50 ≤ 20 ms, end-to-end overhead ≤ 100 ms (long-poll)");
    println!();
    println!(
        "agent process RSS, 50 DUTs idle           {:>8.1} MiB ({:.0} KiB per DUT)",
        idle as f64 / 1024.0,
        idle as f64 / 50.0
    );
    println!(
        "agent process RSS, 50 jobs running        {:>8.1} MiB ({:.0} KiB per running job over idle)",
        running as f64 / 1024.0,
        running.saturating_sub(idle) as f64 / 50.0
    );
    print_chatty(&chatty);
}

fn print_chatty(chatty: &Chatty) {
    println!();
    println!("50 DUTs, each job printing 100 MB; the server answers each log post after {SLOW_POST:?}");
    println!("{:<58} {:>12} {:>12}", "", "measured", "bound");
    println!(
        "{:<58} {:>8.1} MiB {:>8} MiB",
        "agent process peak RSS",
        chatty.peak_kib as f64 / 1024.0,
        CHATTY_BOUND_MIB
    );
    println!(
        "{:<58} {:>8.1} MiB {:>12}",
        format!("output the server received in {:?}", chatty.window),
        chatty.received as f64 / (1 << 20) as f64,
        "-"
    );
    assert!(chatty.peak_kib <= CHATTY_BOUND_MIB << 10, "the agent's memory passed its bound");
}

/// How long the slow server takes to answer each log post.
const SLOW_POST: Duration = Duration::from_millis(500);
/// The stated bound of the agent's RSS with 50 chatty jobs: the idle agent and its compiled
/// plugins, plus per DUT a guest instance and what its bounded queues hold (a few MiB).
const CHATTY_BOUND_MIB: u64 = 512;

struct Chatty {
    peak_kib: u64,
    received: u64,
    window: Duration,
}

/// A Testflinger server that hands every DUT a job printing 100 MB and answers log posts
/// slowly; the agent (a child process) serves `duts` DUTs for `window`; its peak RSS.
async fn chatty(duts: usize, window: Duration) -> Chatty {
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::extract::State;
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};

    #[derive(Default)]
    struct Slow {
        jobs: AtomicU64,
        received: AtomicU64,
    }
    async fn handle(State(s): State<Arc<Slow>>, method: Method, uri: Uri, body: axum::body::Bytes) -> Response {
        let path = uri.path();
        if path == "/v1/oauth2/token" {
            return axum::Json(json!({"access_token": "t", "token_type": "Bearer", "expires_in": 3600}))
                .into_response();
        }
        if method == Method::GET && path.starts_with("/v1/agents/data/") {
            return axum::Json(json!({"state": "waiting", "comment": ""})).into_response();
        }
        if method == Method::GET && path == "/v1/job" {
            let n = s.jobs.fetch_add(1, Ordering::SeqCst);
            return axum::Json(json!({
                "job_id": format!("00000000-0000-4000-8000-{n:012}"),
                "job_queue": "chatty",
                "allocate_data": {"attack": "flood", "phasebox": {"plugin": "probe"}},
            }))
            .into_response();
        }
        if method == Method::GET && path.starts_with("/v1/result/") {
            return axum::Json(json!({"job_state": "allocate"})).into_response();
        }
        if path.contains("/log/") {
            tokio::time::sleep(SLOW_POST).await;
            let text = serde_json::from_slice::<Value>(&body).ok();
            let len = text.as_ref().and_then(|v| v["log_data"].as_str()).map_or(0, str::len);
            s.received.fetch_add(len as u64, Ordering::SeqCst);
            return StatusCode::OK.into_response();
        }
        axum::Json(json!({})).into_response()
    }

    let slow = Arc::new(Slow::default());
    let app = axum::Router::new().fallback(handle).with_state(slow.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let mut chatty_runner = runner();
    chatty_runner.policy.limits.output = 100_000_000;
    let config = agent_config_with(dir.path(), &url, "testflinger", "1s", duts, "chatty", &chatty_runner);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < window {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    Chatty { peak_kib: peak, received: slow.received.load(Ordering::SeqCst), window }
}
