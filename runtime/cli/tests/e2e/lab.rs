//! The lab: a `phasebox server` process on a fixed port of 127.0.0.1 with a SQLite database in a
//! temporary directory (stoppable and restartable on the same port and data), two
//! `phasebox agent` processes serving three simulated devices each, an image server, and the
//! `phasebox` CLI. The lab writes only into temporary directories (the agents share the test
//! plugins' compile cache beside the built plugins, as the agent tests do); its processes are
//! killed when it is dropped, and their logs are printed when a test fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use phasebox_client::{Client, ClientConfig, LogType};
use phasebox_device::CleanupAction;
use phasebox_dutsim::files::FileServer;
use phasebox_dutsim::{DutSim, DutSimConfig, DutSimHandle};
use phasebox_server::ServerConfig;
use phasebox_server::auth::{self, Role};
use serde_json::Value;
use tempfile::TempDir;

/// The queue every device serves; each also serves a queue named after itself.
pub const QUEUE: &str = "e2e";
/// The two agent processes and the devices each serves (device names are the agents' names on
/// the server, and their own queues).
pub const AGENTS: [(&str, [&str; 3]); 2] =
    [("agent-a", ["sim-a1", "sim-a2", "sim-a3"]), ("agent-b", ["sim-b1", "sim-b2", "sim-b3"])];
/// Contributors: `lab-user` owns secrets, `owner` may use restricted queues, `stranger` not.
pub const USER: &str = "lab-user";
pub const OWNER: &str = "owner";
pub const STRANGER: &str = "stranger";
/// An admin: the lab's helpers read every job (a job submitted with credentials belongs to its
/// submitter and the admins).
pub const ADMIN: &str = "lab-admin";
/// Every client's secret key (the agents' included).
pub const CLIENT_SECRET: &str = "e2e-client-secret-0123456789";
/// The image the image server serves at `/images/e2e.img`.
pub const URL_IMAGE: &str = "e2e-url-image";

/// How to set the lab up.
#[derive(Default)]
pub struct Setup {
    /// (queue, owner): queues restricted on the server before it first starts.
    pub restricted: Vec<(&'static str, &'static str)>,
}

/// A child process of the lab, killed (SIGKILL) when dropped.
struct Proc {
    child: tokio::process::Child,
}

impl Proc {
    /// Starts `phasebox ARGS` in `cwd`, appending stdout and stderr to `log`.
    fn spawn(args: &[&str], cwd: &Path, home: &Path, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_phasebox"))
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("xdg"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("phasebox starts");
        Proc { child }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `limit`).
    async fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running") as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped (`id()` returned it).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("pid {pid} did not exit within {limit:?} of SIGTERM"),
        }
    }

    /// SIGKILL, then waits for the exit.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// The result of one CLI run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: std::process::Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts exit 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.code(0)
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts exit `code` with `needle` in stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) -> &Self {
        self.code(code);
        assert!(self.stderr.contains(needle), "expected {needle:?} in stderr:\n{}", self.stderr);
        self
    }
}

/// A running lab.
pub struct Lab {
    /// Processes first: dropped (killed) before the devices they use.
    server: Option<Proc>,
    agents: BTreeMap<&'static str, Proc>,
    pub addr: SocketAddr,
    pub sims: BTreeMap<&'static str, DutSimHandle>,
    pub images: FileServer,
    dir: TempDir,
    jobs: std::sync::atomic::AtomicUsize,
}

impl Lab {
    /// Starts the devices, the image server, the server (after creating its clients and
    /// restricting `setup.restricted`) and both agents; returns once every device waits for
    /// work on the server.
    pub async fn start(setup: Setup) -> Lab {
        phasebox_guests::build().expect("building the guest plugins");
        let dir = tempfile::Builder::new().prefix("phasebox-e2e-").tempdir().unwrap();
        for sub in ["server", "home", "home/jobs", "home/out", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut sims = BTreeMap::new();
        for (_, duts) in AGENTS {
            for name in duts {
                let config =
                    DutSimConfig { name: name.into(), boot_delay: Duration::from_millis(200), ..Default::default() };
                sims.insert(name, DutSim::start(config).await.unwrap());
            }
        }
        let images = FileServer::start(BTreeMap::from([(
            "/images/e2e.img".to_owned(),
            format!("IMAGE_NAME={URL_IMAGE}\nthe image the image server serves\n").into_bytes(),
        )]))
        .await
        .unwrap();

        // A port of our own, kept across server restarts.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let server_dir = dir.path().join("server");
        let key = phasebox_server::secrets::generate_key();
        phasebox_testkit::write_secret(&server_dir.join("secrets.key"), key.as_str());
        phasebox_testkit::write_secret(&server_dir.join("jwt.key"), "e2e-jwt-signing-key-0123456789abcdef-0123456789");
        let quoted = |name: &str| format!("{:?}", server_dir.join(name).display().to_string());
        let config_text = format!(
            "database_url = \"sqlite://{}\"\nblob_dir = {}\nsecrets_key_file = {}\njwt_signing_key_file = {}\n",
            server_dir.join("server.db").display(),
            quoted("blobs"),
            quoted("secrets.key"),
            quoted("jwt.key"),
        );
        std::fs::write(server_dir.join("server.toml"), &config_text).unwrap();
        seed(&ServerConfig::from_toml(&config_text).unwrap(), &setup).await;

        let mut lab = Lab { server: None, agents: BTreeMap::new(), addr, sims, images, dir, jobs: Default::default() };
        lab.start_server().await;
        for (agent, duts) in AGENTS {
            lab.write_agent(agent, &duts);
            lab.start_agent(agent);
        }
        lab.wait_all_waiting().await;
        lab
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The simulated device `name`.
    pub fn sim(&self, name: &str) -> &DutSimHandle {
        &self.sims[name]
    }

    /// Starts `phasebox server` on the lab's port and database; returns once it accepts
    /// connections.
    pub async fn start_server(&mut self) {
        assert!(self.server.is_none(), "the server runs already");
        let server_dir = self.dir().join("server");
        let listen = self.addr.to_string();
        let mut proc = Proc::spawn(
            &["server", "--config", "server.toml", "--listen", &listen],
            &server_dir,
            &self.dir().join("home"),
            &self.dir().join("logs/server.log"),
        );
        let started = Instant::now();
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if let Some(status) = proc.exited() {
                panic!("the server exited with {status} before listening");
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the server did not listen within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.server = Some(proc);
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub async fn stop_server(&mut self) {
        let proc = self.server.take().expect("the server runs");
        let status = proc.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "the server exited with {status}");
    }

    /// Writes an agent's configuration, runner and device files into its directory.
    fn write_agent(&self, agent: &str, duts: &[&str]) {
        let dir = self.dir().join(agent);
        std::fs::create_dir_all(&dir).unwrap();
        phasebox_testkit::write_secret(&dir.join("agent.secret"), &format!("{CLIENT_SECRET}\n"));
        let mut text = format!(
            "server = \"{url}\"\nprotocol = \"phasebox\"\nspool_dir = \"spool\"\npoll_interval = \"500ms\"\n\
             long_poll = \"20s\"\ncancel_poll = \"200ms\"\ngrace_period = \"10s\"\n\n\
             [credentials]\nclient_id = \"{agent}\"\nsecret_file = \"agent.secret\"\n",
            url = self.url(),
        );
        for dut in duts {
            std::fs::write(dir.join(format!("runner-{dut}.toml")), runner_config(dut)).unwrap();
            let mut device = self.sims[dut].device_config();
            // Between jobs the devices stay as the last job left them.
            device.cleanup = CleanupAction::None;
            std::fs::write(dir.join(format!("device-{dut}.toml")), device.to_toml_string()).unwrap();
            text.push_str(&format!(
                "\n[[dut]]\nname = \"{dut}\"\nqueues = [\"{QUEUE}\", \"{dut}\"]\nrunner = \"runner-{dut}.toml\"\n\
                 device = \"device-{dut}.toml\"\nlocation = \"e2e bench\"\n"
            ));
        }
        std::fs::write(dir.join("agent.toml"), text).unwrap();
    }

    /// Starts (or restarts, on the same spool) `phasebox agent` for `agent`.
    pub fn start_agent(&mut self, agent: &'static str) {
        assert!(!self.agents.contains_key(agent), "{agent} runs already");
        let dir = self.dir().join(agent);
        let proc = Proc::spawn(
            &["agent", "--config", "agent.toml"],
            &dir,
            &self.dir().join("home"),
            &self.dir().join(format!("logs/{agent}.log")),
        );
        self.agents.insert(agent, proc);
    }

    /// Kills `agent` with SIGKILL, as a crash would.
    pub async fn kill_agent(&mut self, agent: &str) {
        self.agents.remove(agent).expect("the agent runs").kill().await;
    }

    /// Waits until every device is registered and waiting for work.
    pub async fn wait_all_waiting(&self) {
        let client = self.client();
        for (_, duts) in AGENTS {
            for dut in duts {
                self.wait_until(Duration::from_secs(120), &format!("{dut} waiting"), || async {
                    client.agent_data(dut).await.is_ok_and(|d| d.state() == "waiting")
                })
                .await;
            }
        }
    }

    /// Waits until `f` holds, checking every 100 ms; fails the test, naming `what`, after
    /// `limit`.
    pub async fn wait_until<F, Fut>(&self, limit: Duration, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        while !f().await {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An anonymous API client, for waiting on the server's view.
    pub fn client(&self) -> Client {
        let mut config = ClientConfig::new(self.url());
        config.credentials = Some(phasebox_client::Credentials::new(ADMIN, CLIENT_SECRET));
        Client::new(config).unwrap()
    }

    /// The environment that logs `phasebox` in as the lab's admin.
    pub fn admin_env() -> [(&'static str, &'static str); 2] {
        [("PHASEBOX_CLIENT_ID", ADMIN), ("PHASEBOX_SECRET_KEY", CLIENT_SECRET)]
    }

    /// The whole output log of a job as the server has it (empty when it cannot say).
    pub async fn output(&self, job_id: &str) -> String {
        self.client().get_log(job_id, LogType::Output, 0).await.map(|c| c.text()).unwrap_or_default()
    }

    /// Waits until the job's output holds `needle`.
    pub async fn wait_output(&self, job_id: &str, needle: &str, limit: Duration) {
        self.wait_until(limit, &format!("{needle:?} in the output of {job_id}"), || async {
            self.output(job_id).await.contains(needle)
        })
        .await;
    }

    /// `phasebox ARGS --server <lab>` with `env`, in the lab's home directory; at most 60 s.
    pub async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.cli_within(args, env, Duration::from_secs(60)).await
    }

    /// [`Lab::cli`] with a time limit of its own.
    pub async fn cli_within(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
        let out = tokio::time::timeout(limit, self.command(args, env).output())
            .await
            .unwrap_or_else(|_| panic!("phasebox {args:?} did not finish within {limit:?}"))
            .expect("phasebox runs");
        Run::from(out)
    }

    /// The command [`Lab::cli`] runs, to spawn it alongside the test (stdout and stderr piped;
    /// killed when dropped).
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let home = self.dir().join("home");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_phasebox"));
        cmd.args(args)
            .args(["--server", &self.url()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("xdg"))
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Writes `job` as a JSON job file in the lab's job directory; returns its path.
    pub fn job_file(&self, job: &Value) -> String {
        let n = self.jobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir().join(format!("home/jobs/job-{n}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(job).unwrap()).unwrap();
        path.display().to_string()
    }

    /// `phasebox submit --quiet` of `job` with `env`; returns the job id.
    pub async fn submit(&self, job: &Value, env: &[(&str, &str)]) -> String {
        let file = self.job_file(job);
        let run = self.cli(&["submit", "--quiet", &file], env).await;
        run.ok();
        let id = run.stdout.trim().to_owned();
        assert_eq!(id.len(), 36, "a job id: {}", run.stdout);
        id
    }

    /// `phasebox results` of a job, parsed.
    pub async fn results(&self, job_id: &str) -> Value {
        let run = self.cli(&["results", job_id], &Self::admin_env()).await;
        serde_json::from_str(&run.ok().stdout).unwrap()
    }

    /// `phasebox poll` of a job until it ends (at most `limit`).
    pub async fn poll(&self, job_id: &str, limit: Duration) -> Run {
        self.cli_within(&["poll", "--interval", "0.3", job_id], &Self::admin_env(), limit).await
    }

    /// `phasebox artifacts` of a job: the files of the tarball (path, content), or `None` when
    /// the job has none.
    pub async fn artifacts(&self, job_id: &str) -> Option<Vec<(String, String)>> {
        let file = self.dir().join(format!("home/out/{job_id}.tgz"));
        let run = self.cli(&["artifacts", "--filename", &file.display().to_string(), job_id], &Self::admin_env()).await;
        if run.code == Some(2) && run.stderr.contains("No artifacts tarball found for that job id.") {
            return None;
        }
        assert_eq!(
            run.ok().stdout,
            format!("Downloading artifacts tarball...\nArtifacts downloaded to {}\n", file.display())
        );
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap()));
        let mut files = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type().is_file() {
                let mut body = String::new();
                entry.read_to_string(&mut body).unwrap();
                files.push((entry.path().unwrap().display().to_string(), body));
            }
        }
        files.sort();
        Some(files)
    }

    /// Every file under the lab's directory, with its bytes: configuration, databases, spools,
    /// job directories, logs.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir().to_owned()];
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

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for entry in std::fs::read_dir(self.dir().join("logs")).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(150)..];
                eprintln!("==== {} (last {} lines)\n{}", entry.path().display(), tail.len(), tail.join("\n"));
            }
        }
    }
}

/// The server's clients and restricted queues, written to its database before it first starts.
async fn seed(config: &ServerConfig, setup: &Setup) {
    let state = phasebox_server::build_state(config.clone()).await.expect("the server's store");
    for (agent, duts) in AGENTS {
        auth::create_client(&state.store, agent, CLIENT_SECRET, Role::Agent).await.unwrap();
        // Each agent acts as its devices, on the lab's queue and each device's own.
        let names: Vec<String> = duts.iter().map(|d| (*d).to_owned()).collect();
        let queues: Vec<String> = std::iter::once(QUEUE.to_owned()).chain(names.iter().cloned()).collect();
        auth::bind_agent(&state.store, agent, names, queues).await.unwrap();
    }
    for user in [USER, OWNER, STRANGER] {
        auth::create_client(&state.store, user, CLIENT_SECRET, Role::Contributor).await.unwrap();
    }
    auth::create_client(&state.store, ADMIN, CLIENT_SECRET, Role::Admin).await.unwrap();
    for (queue, owner) in &setup.restricted {
        state.store.restrict_queue(queue, owner).await.unwrap();
    }
    state.store.close().await;
}

/// A device's runner: every bundled plugin, the standard plugins chosen from the job's data,
/// and a policy allowing the device handles, the job's directories, declared secrets and HTTP
/// to 127.0.0.1 (the image server), and nothing more on the network.
fn runner_config(dut: &str) -> String {
    let plugins: Vec<String> = phasebox_guests::PLUGINS
        .iter()
        .map(|n| format!("{:?}", phasebox_guests::path(n).display().to_string()))
        .collect();
    let cache = phasebox_guests::out_dir().join("../phasebox-test-cache");
    format!(
        r#"plugins = [{plugins}]
cleanup_budget = "30s"

[engine]
max_instances = 8
cache_dir = {cache:?}

[dut]
name = "{dut}"
facts = {{ device_ip = "127.0.0.1" }}

[policy.allow]
results = true
secrets = ["*"]
files = [
  {{ path = "/attachments", source = "attachments", access = "ro" }},
  {{ path = "/artifacts", source = "artifacts", access = "rw" }},
]
power = true
console = true
flash = true
exec = true
http = ["http://127.0.0.1:*"]
dns = ["*"]
# Sockets to one unrelated address only: enough for `probe`, which imports them, to load.
network = {{ connect = ["192.0.2.1:9"], bind = false, udp = false }}
"#,
        plugins = plugins.join(", "),
        cache = cache.display().to_string(),
    )
}

/// The numbers of the `line <n>` lines of `text`, in order.
pub fn numbered_lines(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok()).collect()
}

/// `test_cmds` printing `line 1` … `line <n>`, one every `pause` seconds.
pub fn counting(n: u32, pause: &str) -> String {
    format!("for i in $(seq 1 {n}); do echo \"line $i\"; sleep {pause}; done")
}

/// The results' `<phase>_status` values that are present.
pub fn statuses(results: &Value) -> BTreeMap<String, i64> {
    phasebox_client::PHASES
        .iter()
        .filter_map(|p| Some((p.to_string(), results.get(format!("{p}_status"))?.as_i64()?)))
        .collect()
}

/// `pairs` as [`statuses`] gives them.
pub fn expect(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(p, s)| (p.to_string(), *s)).collect()
}

/// What `poll` printed of the job's output: its stdout without the queue position lines it
/// prints while the job waits.
pub fn polled_output(stdout: &str) -> String {
    stdout.split_inclusive('\n').filter(|l| !l.starts_with("This job will be picked up after ")).collect()
}
