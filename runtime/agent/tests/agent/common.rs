//! Harness: a real phasebox server in-process on 127.0.0.1 (stoppable and restartable on the
//! same port and database), a real agent on configuration files in a temporary directory, the
//! bundled plugins, and simulated devices.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phasebox_agent::{Agent, AgentConfig, AgentError, Observer};
use phasebox_client::{Client, LogType};
use phasebox_job::{EventRecord, JobEvent, Phase, RunnerConfig};
use phasebox_sandbox::Capabilities;
use phasebox_server::ServerConfig;
use phasebox_server::auth::{self, Role};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The agent's client id and secret on every test server.
pub const AGENT_ID: &str = "agent-host";
pub const AGENT_SECRET: &str = "agent-secret-0123456789";
/// A contributor that can own secrets.
pub const USER_ID: &str = "lab-user";
pub const USER_SECRET: &str = "user-secret-0123456789";

pub use phasebox_testkit::logging;

/// The kit's server, with the agent tests' two clients.
pub struct TestServer(phasebox_testkit::TestServer);

impl std::ops::Deref for TestServer {
    type Target = phasebox_testkit::TestServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl TestServer {
    /// A fresh server with an agent client and a contributor.
    pub async fn start() -> TestServer {
        let server = phasebox_testkit::TestServer::start().await;
        auth::create_client(&server.store, AGENT_ID, AGENT_SECRET, Role::Agent).await.unwrap();
        auth::create_client(&server.store, USER_ID, USER_SECRET, Role::Contributor).await.unwrap();
        TestServer(server)
    }

    /// Starts on an existing directory and configuration, listening on `addr`.
    pub async fn start_in(dir: TempDir, config: ServerConfig, addr: SocketAddr) -> TestServer {
        TestServer(phasebox_testkit::TestServer::start_in(dir, config, addr).await)
    }

    /// Stops the server; returns what it needs to start again on the same port and database.
    pub async fn stop(self) -> (TempDir, ServerConfig, SocketAddr) {
        self.0.stop().await
    }

    /// An anonymous client (a contributor: submits and cancels jobs).
    pub fn anon(&self) -> Client {
        self.anon_client()
    }

    /// The contributor `USER_ID`, who can own secrets.
    pub fn user(&self) -> Client {
        self.client_for(USER_ID, USER_SECRET)
    }

    /// The log fragments of a job in the order the server received them: (type, number, phase,
    /// text).
    pub async fn fragments(&self, job_id: &str) -> Vec<(String, i64, String, String)> {
        let events = self.state.store.events_after(job_id, 0, 100_000).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.kind == "log")
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                (
                    v["log_type"].as_str().unwrap().to_owned(),
                    v["fragment_number"].as_i64().unwrap(),
                    v["phase"].as_str().unwrap().to_owned(),
                    v["log_data"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Binds the agent credential to the devices of `setup` too (as an admin does for a real
    /// agent: its agent names and queues).
    pub async fn bind(&self, setup: &AgentSetup) {
        let client = self.state.store.get_client(AGENT_ID).await.unwrap().expect("the agent client");
        let (mut names, mut queues) = (client.agent_names, client.agent_queues);
        for (name, queue) in &setup.duts {
            names.push(name.clone());
            queues.push(queue.clone());
        }
        auth::bind_agent(&self.state.store, AGENT_ID, names, queues).await.unwrap();
    }

    /// The agent document of `name`.
    pub async fn agent_doc(&self, name: &str) -> Option<serde_json::Map<String, Value>> {
        self.state.store.get_agent(name).await.unwrap().map(|(doc, _)| doc)
    }
}

/// Asserts that the `output` fragments were received numbered 0, 1, 2, … with no gap and no
/// repeat; returns the text in that order.
pub fn assert_in_order(fragments: &[(String, i64, String, String)]) -> String {
    let output: Vec<_> = fragments.iter().filter(|f| f.0 == "output").collect();
    let numbers: Vec<i64> = output.iter().map(|f| f.1).collect();
    let expected: Vec<i64> = (0..numbers.len() as i64).collect();
    assert_eq!(numbers, expected, "output fragments in the order received");
    output.iter().map(|f| f.3.as_str()).collect()
}

/// The plugins and policy the tests run: `hello` in every phase, `probe` and `shell` on request
/// (a job names them per phase), the bundled test compile cache.
pub fn runner_config(test_plugin: &str) -> RunnerConfig {
    phasebox_guests::build().expect("building guest plugins");
    let mut runner = RunnerConfig::from_file(&config_dir().join("runner.toml")).expect("config/runner.toml");
    runner.plugins = ["hello", "probe", "shell"].iter().map(|p| phasebox_guests::path(p)).collect();
    runner.defaults.insert(Phase::Test, phasebox_jobspec::PluginRef::Name(test_plugin.into()));
    runner.engine.cache_dir = Some(phasebox_guests::out_dir().join("../phasebox-test-cache"));
    runner.engine.max_instances = 64;
    runner.policy.allow = Capabilities::everything_and_loopback();
    runner.cleanup_budget = Duration::from_secs(30);
    runner
}

pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// One `[[dut]]` of a test agent.
pub struct Dut {
    pub name: String,
    pub queue: String,
    pub runner: RunnerConfig,
    /// A device configuration's TOML text.
    pub device: Option<String>,
}

impl Dut {
    pub fn new(name: &str, queue: &str) -> Dut {
        Dut { name: name.into(), queue: queue.into(), runner: runner_config("hello"), device: None }
    }

    /// A DUT backed by a simulated device, its test phase run by `shell`.
    pub fn on_sim(name: &str, queue: &str, sim: &phasebox_dutsim::DutSimHandle) -> Dut {
        Dut {
            name: name.into(),
            queue: queue.into(),
            runner: runner_config("shell"),
            device: Some(sim.device_config().to_toml_string()),
        }
    }
}

/// An agent configuration in its own directory (spool, work, runner and device files).
pub struct AgentSetup {
    pub dir: TempDir,
    pub path: PathBuf,
    /// Each device's agent name and queue.
    pub duts: Vec<(String, String)>,
}

impl AgentSetup {
    /// Writes the configuration files; `extra` are more top-level keys.
    pub fn new(server: &str, protocol: &str, extra: &str, duts: &[Dut]) -> AgentSetup {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("agent.secret");
        std::fs::write(&secret, format!("{AGENT_SECRET}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut text = format!(
            "server = \"{server}\"\nprotocol = \"{protocol}\"\nspool_dir = \"spool\"\npoll_interval = \"200ms\"\n\
             cancel_poll = \"200ms\"\n{extra}\n[credentials]\nclient_id = \"{AGENT_ID}\"\nsecret_file = \"agent.secret\"\n"
        );
        for dut in duts {
            let runner = dir.path().join(format!("runner-{}.toml", dut.name));
            std::fs::write(&runner, dut.runner.to_toml()).unwrap();
            text.push_str(&format!(
                "\n[[dut]]\nname = \"{}\"\nqueues = [\"{}\"]\nrunner = \"{}\"\nlocation = \"test bench\"\n",
                dut.name,
                dut.queue,
                runner.display()
            ));
            if let Some(device) = &dut.device {
                let path = dir.path().join(format!("device-{}.toml", dut.name));
                std::fs::write(&path, device).unwrap();
                text.push_str(&format!("device = \"{}\"\n", path.display()));
            }
        }
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        AgentSetup { dir, path, duts: duts.iter().map(|d| (d.name.clone(), d.queue.clone())).collect() }
    }

    pub fn config(&self) -> AgentConfig {
        AgentConfig::from_file(&self.path).unwrap()
    }

    /// Every file under the agent's directory, with its bytes (spool, work dirs, records).
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_owned()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(b) = std::fs::read(&p) {
                    out.push((p, b));
                }
            }
        }
        out
    }
}

/// What the agent's jobs did, with when.
#[derive(Default)]
pub struct Seen {
    pub events: Mutex<Vec<(Instant, String, EventRecord)>>,
    pub finished: Mutex<Vec<(Instant, String, String)>>,
}

impl Observer for Seen {
    fn job_event(&self, dut: &str, record: &EventRecord) {
        self.events.lock().unwrap().push((Instant::now(), dut.to_owned(), record.clone()));
    }
    fn job_finished(&self, dut: &str, job_id: &str) {
        self.finished.lock().unwrap().push((Instant::now(), dut.to_owned(), job_id.to_owned()));
    }
}

impl Seen {
    /// When an event matching `f` was seen, waiting up to `limit`.
    pub async fn wait_for(&self, limit: Duration, f: impl Fn(&str, &JobEvent) -> bool) -> Instant {
        let started = Instant::now();
        loop {
            if let Some(at) = self.events.lock().unwrap().iter().find(|(_, d, r)| f(d, &r.event)).map(|(at, _, _)| *at)
            {
                return at;
            }
            assert!(started.elapsed() < limit, "no such event within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn phase_started(phase: Phase) -> impl Fn(&str, &JobEvent) -> bool {
        move |_, e| matches!(e, JobEvent::PhaseStart { phase: p, .. } if *p == phase)
    }

    pub fn phase_ended(phase: Phase) -> impl Fn(&str, &JobEvent) -> bool {
        move |_, e| matches!(e, JobEvent::PhaseEnd { phase: p, .. } if *p == phase)
    }
}

/// An agent running on the test's runtime.
pub struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
    pub seen: Arc<Seen>,
}

impl RunningAgent {
    pub fn start(setup: &AgentSetup) -> RunningAgent {
        let seen = Arc::new(Seen::default());
        let agent = Agent::new(setup.config()).unwrap().with_observer(seen.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = rx.await;
        }));
        RunningAgent { stop: Some(tx), task, seen }
    }

    /// Stops it as SIGTERM does and waits for it to exit.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// An agent on a runtime of its own, so the test can kill it: every task dropped at once, as if
/// the process died.
pub struct KillableAgent {
    rt: Option<tokio::runtime::Runtime>,
    pub seen: Arc<Seen>,
}

impl KillableAgent {
    pub fn start(setup: &AgentSetup) -> KillableAgent {
        let seen = Arc::new(Seen::default());
        let agent = Agent::new(setup.config()).unwrap().with_observer(seen.clone());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.spawn(agent.run(std::future::pending()));
        KillableAgent { rt: Some(rt), seen }
    }

    pub fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for KillableAgent {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits until `job_id` is in one of `states` on the server; returns its results.
pub async fn wait_state(client: &Client, job_id: &str, states: &[&str], limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        if let Ok(results) = client.get_results(job_id).await
            && results["job_state"].as_str().is_some_and(|s| states.contains(&s))
        {
            return results;
        }
        assert!(started.elapsed() < limit, "job {job_id} not in {states:?} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `f` holds, checking every 20 ms.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole output log of a job, as `GET /v1/result/<id>/log/output` gives it.
pub async fn output_text(client: &Client, job_id: &str) -> String {
    client.get_log(job_id, LogType::Output, 0).await.unwrap().text()
}
