//! The testflinger-cli verbs of the `phasebox` binary against a real phasebox server started
//! in-process on 127.0.0.1, with the test acting as the agent through phasebox-client.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use phasebox_client::{Client, ClientConfig, Credentials, LogFragment, LogType};
use phasebox_server::AppState;
use phasebox_server::auth::{self, Role};
use serde_json::{Value, json};
use tempfile::TempDir;

const SECRET: &str = "a-long-client-secret-for-cli";

/// A server on 127.0.0.1:0 and a private HOME / XDG_CONFIG_HOME for the binary.
struct Lab {
    url: String,
    state: AppState,
    home: TempDir,
    _server: phasebox_testkit::TestServer,
}

impl Lab {
    async fn start() -> Lab {
        let server = phasebox_testkit::TestServer::start().await;
        Lab { url: server.url(), state: server.state.clone(), home: tempfile::tempdir().unwrap(), _server: server }
    }

    fn config_dir(&self) -> PathBuf {
        self.home.path().join("xdg")
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_phasebox"));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config_dir())
            .env("PHASEBOX_SERVER", &self.url)
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `phasebox ARGS` to completion.
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args, env).output())
            .await
            .expect("phasebox finished in time")
            .expect("phasebox runs");
        Run::from(out)
    }

    async fn create_client(&self, id: &str, role: Role) {
        auth::create_client(&self.state.store, id, SECRET, role).await.unwrap();
    }

    /// An agent registered on `queues`, as the test's stand-in for the phasebox agent.
    async fn agent(&self, name: &str, queues: &[&str]) -> Client {
        self.create_client(name, Role::Agent).await;
        let queue_names: Vec<String> = queues.iter().map(|q| (*q).to_owned()).collect();
        auth::bind_agent(&self.state.store, name, vec![name.to_owned()], queue_names).await.unwrap();
        let mut config = ClientConfig::new(&self.url);
        config.credentials = Some(Credentials::new(name, SECRET));
        let agent = Client::new(config).unwrap();
        agent.post_agent_data(name, &json!({"state": "waiting", "queues": queues})).await.unwrap();
        agent
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    fn fails(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(self.code, Some(code), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "expected {needle:?} in stderr:\n{}", self.stderr);
        self
    }
}

fn job_id_of(stdout: &str) -> String {
    stdout.lines().find_map(|l| l.strip_prefix("job_id: ")).expect("a job id line").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_status_cancel() {
    let lab = Lab::start().await;
    let _agent = lab.agent("dut-1", &["q"]).await;
    let job = lab.write("job.yaml", "job_queue: q\ntest_data:\n  test_cmds: echo hello\n");

    let r = lab.run(&["submit", &job], &[]).await;
    r.ok();
    assert!(r.stdout.starts_with("Job submitted successfully!\njob_id: "), "{}", r.stdout);
    let id = job_id_of(&r.stdout);
    assert_eq!(lab.run(&["status", &id], &[]).await.ok().stdout, "waiting\n");
    let shown: Value = serde_json::from_str(&lab.run(&["show", &id], &[]).await.ok().stdout).unwrap();
    assert_eq!(shown["test_data"]["test_cmds"], "echo hello");

    lab.run(&["cancel", &id], &[]).await.ok();
    assert_eq!(lab.run(&["status", &id], &[]).await.ok().stdout, "cancelled\n");
    lab.run(&["cancel", &id], &[])
        .await
        .fails(2, "Invalid job ID specified or the job is already completed/cancelled.");

    // --quiet prints the id alone; the job comes from stdin.
    let mut quiet = lab.command(&["submit", "--quiet", "-"], &[]);
    quiet.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = quiet.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"{\"job_queue\": \"q\"}").await.unwrap();
    }
    let r = Run::from(child.wait_with_output().await.unwrap());
    r.ok();
    let quiet_id = r.stdout.trim();
    assert_eq!(quiet_id.len(), 36, "{}", r.stdout);
    assert_eq!(lab.run(&["status", quiet_id], &[]).await.ok().stdout, "waiting\n");

    // Unknown jobs and queues, invalid jobs, plain HTTP elsewhere: clear errors, exit 2.
    let unknown = "00000000-0000-4000-8000-000000000000";
    lab.run(&["status", unknown], &[]).await.fails(2, "No data found for that job id.");
    lab.run(&["results", unknown], &[]).await.fails(2, "No results found for that job id.");
    let nobody = lab.write("nobody.yaml", "job_queue: empty-queue\n");
    lab.run(&["submit", &nobody], &[]).await.fails(2, "Queue 'empty-queue' does not exist.");
    let bad = lab.write("bad.yaml", "job_queue: q\ntest_data:\n  test_cmds: [1, 2]\n");
    lab.run(&["submit", &bad], &[]).await.fails(2, "test_data.test_cmds");
    lab.run(&["status", unknown, "--server", "http://192.0.2.7:5000"], &[]).await.fails(2, "refusing plain http://");
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_waits_only_when_asked_for_offline_queues() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-off", &["sleepy"]).await;
    agent.post_agent_data("dut-off", &json!({"state": "offline"})).await.unwrap();
    let job = lab.write("job.yaml", "job_queue: sleepy\n");
    lab.run(&["submit", &job], &[]).await.fails(2, "No online agents available for queue sleepy");
    let r = lab.run(&["submit", "--wait-for-available-agents", &job], &[]).await;
    r.ok();
    assert!(r.stderr.contains("Waiting for agents to become available"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_prints_every_fragment_once() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-p", &["pq"]).await;
    let user = Client::new(ClientConfig::new(&lab.url)).unwrap();
    let id = user.submit_job(&json!({"job_queue": "pq", "test_data": {"test_cmds": "x"}})).await.unwrap();

    // Waiting: the queue position, no output yet.
    let r = lab.run(&["poll", "--oneshot", &id], &[]).await;
    assert_eq!(r.ok().stdout, "Waiting on Output\n");

    let job = agent.claim_job(&["pq".into()], None).await.unwrap().unwrap();
    assert_eq!(job.job_id, id);
    for (n, phase, text) in [(0, "setup", "line-0\n"), (1, "setup", "line-1\n"), (2, "test", "line-2\n")] {
        agent.post_log_fragment(&id, LogType::Output, &LogFragment::now(n, phase, text)).await.unwrap();
    }
    let r = lab.run(&["poll", "-o", &id], &[]).await;
    assert_eq!(r.ok().stdout, "line-0\nline-1\nline-2\nLast Fragment Number: 2\n");
    let r = lab.run(&["poll", "-o", "--start_fragment", "2", &id], &[]).await;
    assert_eq!(r.ok().stdout, "line-2\nLast Fragment Number: 2\n");
    let r = lab.run(&["poll", "--json", "-p", "setup", &id], &[]).await;
    let raw: Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(raw["output"]["setup"]["last_fragment_number"], 1);

    // Live: fragments keep arriving while `poll` follows; each is printed exactly once.
    let mut child = lab.command(&["poll", "--interval", "0.05", &id], &[]);
    child.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = child.spawn().unwrap();
    for n in 3..30u64 {
        let phase = if n < 20 { "test" } else { "cleanup" };
        agent
            .post_log_fragment(&id, LogType::Output, &LogFragment::now(n, phase, format!("line-{n}\n")))
            .await
            .unwrap();
        if n % 5 == 0 {
            agent.post_job_state(&id, phase).await.unwrap();
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    }
    agent
        .post_result(&id, &json!({"status": {"setup": 0, "test": 0, "cleanup": 0}, "job_state": "complete"}))
        .await
        .unwrap();
    let r = Run::from(tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap());
    r.ok();
    let expected: String = (0..30).map(|n| format!("line-{n}\n")).collect();
    assert_eq!(r.stdout, expected, "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("Job completed"), "{}", r.stderr);
}

/// Runs `poll` with `args` (against `server`, the lab's own when `None`) on a job that is
/// running; once it has shown the job running, posts `count` output fragments and the job's
/// completion. Returns what `poll` printed and what it should have printed.
async fn poll_while_the_job_runs(
    lab: &Lab,
    agent: &Client,
    id: &str,
    args: &[&str],
    server: Option<&str>,
    count: u64,
) -> (Run, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};

    let mut cmd = lab.command(args, &[]);
    if let Some(url) = server {
        cmd.env("PHASEBOX_SERVER", url);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The status line: poll has looked at the job once, and now waits for what comes next.
    while !seen.contains("[running]") {
        assert!(stderr.read_line(&mut seen).await.unwrap() > 0, "poll ended early: {seen}");
    }
    for n in 0..count {
        agent
            .post_log_fragment(id, LogType::Output, &LogFragment::now(n, "test", format!("line-{n}\n")))
            .await
            .unwrap();
    }
    agent.post_result(id, &json!({"status": {"test": 0}, "job_state": "complete"})).await.unwrap();
    let mut r =
        Run::from(tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap());
    stderr.read_to_string(&mut seen).await.unwrap();
    r.stderr = seen;
    (r, (0..count).map(|n| format!("line-{n}\n")).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_follows_the_event_stream_instead_of_waiting_out_the_interval() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-s", &["sq"]).await;
    let user = Client::new(ClientConfig::new(&lab.url)).unwrap();
    let id = user.submit_job(&json!({"job_queue": "sq", "test_data": {"test_cmds": "x"}})).await.unwrap();
    agent.claim_job(&["sq".into()], None).await.unwrap().unwrap();
    // Ten minutes between looks: only the event stream can show the output and the end in time.
    let (r, expected) = poll_while_the_job_runs(&lab, &agent, &id, &["poll", "--interval", "600", &id], None, 12).await;
    let r = r.ok();
    assert_eq!(r.stdout, expected, "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("Job completed"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_looks_every_interval_on_a_server_without_the_event_stream() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-t", &["tq"]).await;
    let user = Client::new(ClientConfig::new(&lab.url)).unwrap();
    let id = user.submit_job(&json!({"job_queue": "tq", "test_data": {"test_cmds": "x"}})).await.unwrap();
    agent.claim_job(&["tq".into()], None).await.unwrap().unwrap();
    let (testflinger, refused) = without_event_stream(lab.url.trim_start_matches("http://").to_owned()).await;
    let args = ["poll", "--interval", "0.05", &id];
    let (r, expected) = poll_while_the_job_runs(&lab, &agent, &id, &args, Some(&testflinger), 12).await;
    let r = r.ok();
    assert_eq!(r.stdout, expected, "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("Job completed"), "{}", r.stderr);
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst) >= 1, "poll never asked for the event stream");
}

/// A proxy on 127.0.0.1 to the server at `upstream` (`host:port`) that answers phasebox's event
/// stream with 404, as a Testflinger server does. Returns its URL and how many stream requests
/// it refused. One request per connection (`poll` sends only GETs): each forwarded request asks
/// the server to close the connection after answering, so the next one comes through here too.
async fn without_event_stream(upstream: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("");
                if path.starts_with("/phasebox/v1/job/") && path.contains("/events") {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = client
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let head = format!("{}\r\nconnection: close\r\n\r\n", head.trim_end_matches("\r\n"));
                if server.write_all(head.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy(&mut server, &mut client).await;
                }
            });
        }
    });
    (url, refused)
}

/// Output a hostile plugin or agent could post: an OSC 52 clipboard write, cursor movement
/// that rewrites the line above, a bell, a lone carriage return, a bidirectional override.
const HOSTILE_OUTPUT: &str = "ok\x1b]52;c;cHduZWQ=\x07\n\x1b[1A\x1b[2Kallowed\rx\u{202e}y\n\ttabbed\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn poll_shows_terminal_controls_instead_of_obeying_them() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-c", &["cq"]).await;
    let user = Client::new(ClientConfig::new(&lab.url)).unwrap();
    let id = user.submit_job(&json!({"job_queue": "cq", "test_data": {"test_cmds": "x"}})).await.unwrap();
    agent.claim_job(&["cq".into()], None).await.unwrap().unwrap();
    agent.post_log_fragment(&id, LogType::Output, &LogFragment::now(0, "test", HOSTILE_OUTPUT)).await.unwrap();
    agent.post_result(&id, &json!({"status": {"test": 0}, "job_state": "complete"})).await.unwrap();

    let expected = "ok^[]52;c;cHduZWQ=^G\n^[[1A^[[2Kallowed^Mx\\u{202e}y\n\ttabbed\r\n";
    for args in [&["poll", "-o", &id][..], &["poll", "--interval", "0.05", &id][..]] {
        let r = lab.run(args, &[]).await;
        r.ok();
        assert!(r.stdout.starts_with(expected), "{args:?}: {:?}", r.stdout);
        for text in [&r.stdout, &r.stderr] {
            assert!(
                !text.contains(['\x1b', '\x07', '\u{202e}']) && !text.replace("\r\n", "").contains('\r'),
                "{args:?}: a control reached the terminal: {text:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_poll_shows_the_queue_position_and_follows_to_the_end() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-s", &["sq"]).await;
    let user = Client::new(ClientConfig::new(&lab.url)).unwrap();
    let ahead = user.submit_job(&json!({"job_queue": "sq"})).await.unwrap();
    let job = lab.write("job.yaml", "job_queue: sq\ntest_data:\n  test_cmds: run\n");
    let mut cmd = lab.command(&["submit", "--poll", "--interval", "0.05", &job], &[]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();

    // Act as the agent: take the first job, then ours once it has been seen waiting.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let first = agent.claim_job(&["sq".into()], None).await.unwrap().unwrap();
    assert_eq!(first.job_id, ahead);
    let second = loop {
        if let Some(j) = agent.claim_job(&["sq".into()], None).await.unwrap() {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = second.job_id;
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.post_job_state(&id, "test").await.unwrap();
    agent.post_log_fragment(&id, LogType::Output, &LogFragment::now(0, "test", "tests ran\n")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.post_result(&id, &json!({"status": {"test": 1}, "job_state": "complete"})).await.unwrap();

    let r = Run::from(tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap());
    // The job ran and a phase failed: exit 1.
    assert_eq!(r.code, Some(1), "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(job_id_of(&r.stdout), id);
    assert!(
        r.stdout.contains("after the current job and 1 job(s) ahead of it in the queue are complete"),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.matches("tests ran\n").count(), 1, "{}", r.stdout);
    assert!(r.stderr.contains("[test] test phase, running for 00:00:0"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn results_and_artifacts_of_a_completed_job() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-r", &["rq"]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload.txt"), "attached\n").unwrap();
    let job = lab.write(
        "job.yaml",
        &format!(
            "job_queue: rq\ntest_data:\n  test_cmds: cat payload.txt\n  attachments:\n    - local: {}\n",
            dir.path().join("payload.txt").display()
        ),
    );
    let id = job_id_of(&lab.run(&["submit", &job], &[]).await.ok().stdout);
    let claimed = agent.claim_job(&["rq".into()], None).await.unwrap().expect("dispatched after upload");
    assert_eq!(claimed.other["test_data"]["attachments"], json!([{"agent": "payload.txt"}]));
    let archive = agent.get_attachments(&id).await.unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive.as_ref()));
    let names: Vec<String> = tar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert_eq!(names, ["test/payload.txt"]);

    agent.post_log_fragment(&id, LogType::Output, &LogFragment::now(0, "test", "attached\n")).await.unwrap();
    let artifact = dir.path().join("artifacts.tar.gz");
    std::fs::write(&artifact, b"artifact bytes").unwrap();
    agent.post_artifact(&id, &artifact).await.unwrap();
    agent.post_result(&id, &json!({"status": {"test": 0}, "job_state": "complete"})).await.unwrap();

    let results: Value = serde_json::from_str(&lab.run(&["results", &id], &[]).await.ok().stdout).unwrap();
    assert_eq!((results["job_state"].as_str(), results["test_status"].as_i64()), (Some("complete"), Some(0)));
    assert_eq!(results["test_output"], "attached\n");
    let r = lab.run(&["artifacts", "--filename", "out.tgz", &id], &[]).await;
    assert_eq!(r.ok().stdout, "Downloading artifacts tarball...\nArtifacts downloaded to out.tgz\n");
    assert_eq!(std::fs::read(lab.home.path().join("out.tgz")).unwrap(), b"artifact bytes");
    // A finished job: poll prints the output and exits 0 at once.
    assert_eq!(lab.run(&["poll", &id], &[]).await.ok().stdout, "attached\n");

    let plain = job_id_of(&lab.run(&["submit", &lab.write("p.yaml", "job_queue: rq\n")], &[]).await.ok().stdout);
    lab.run(&["artifacts", &plain], &[]).await.fails(2, "No artifacts tarball found for that job id.");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_keeps_a_private_refresh_token_used_by_later_verbs() {
    let lab = Lab::start().await;
    lab.create_client("erin", Role::Contributor).await;
    let creds = [("TESTFLINGER_CLIENT_ID", "erin"), ("TESTFLINGER_SECRET_KEY", SECRET)];
    let r = lab.run(&["login"], &creds).await;
    assert_eq!(r.ok().stdout, "Successfully authenticated as user 'erin'\n");
    let file = lab.config_dir().join("phasebox/client.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("refresh_token") && text.contains("erin"), "{text}");
    assert!(!text.contains(SECRET), "the secret key is never stored");

    // Later verbs log in with the stored refresh token, without the secret key.
    let r = lab.run(&["secret", "write", "lab/token", "s3cr3t-value-123"], &[]).await;
    assert!(r.ok().stdout.starts_with("Secret 'lab/token' written successfully\nIt expires at "), "{}", r.stdout);
    assert!(!r.stdout.contains("s3cr3t-value-123") && !r.stderr.contains("s3cr3t-value-123"));
    let r = lab.run(&["secret", "write", "lab/once", "--single-use", "-"], &[]).await;
    // stdin is empty here: refused.
    r.fails(2, "empty");
    lab.run(&["secret", "delete", "lab/token"], &[]).await.ok();

    // Even at trace level no secret, token or secret value reaches the log.
    let refresh = text.lines().find_map(|l| l.strip_prefix("refresh_token = ")).unwrap().trim_matches('"').to_owned();
    let r = lab.run(&["-vv", "secret", "write", "lab/traced", "traced-value-456"], &[("RUST_LOG", "trace")]).await;
    r.ok();
    assert!(r.stderr.len() > 200, "trace logging is on: {}", r.stderr);
    for leak in [refresh.as_str(), "traced-value-456", "Bearer ", SECRET] {
        assert!(!r.stderr.contains(leak), "{leak:?} leaked into:\n{}", r.stderr);
    }
    let r = lab.run(&["-vv", "login"], &[("RUST_LOG", "trace"), creds[0], creds[1]]).await;
    r.ok();
    assert!(!r.stderr.contains(SECRET) && !r.stderr.contains("Basic "), "{}", r.stderr);
    // A private settings file draws no warning.
    assert!(!lab.run(&["list-queues"], &[]).await.ok().stderr.contains("other users"));

    // A settings file others can read is refused, as the agent and the server refuse their
    // secret files: its tokens may already be in other hands.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = lab.run(&["secret", "delete", "lab/once"], &[]).await;
    r.fails(2, "chmod 600");
    assert!(r.stderr.contains("lets other users read or change it"), "{}", r.stderr);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.run(&["secret", "delete", "lab/once"], &[]).await.ok();

    // Wrong credentials: a clear error that does not echo the key.
    let bad = [("TESTFLINGER_CLIENT_ID", "erin"), ("TESTFLINGER_SECRET_KEY", "not-the-right-secret")];
    let r = lab.run(&["login"], &bad).await;
    r.fails(2, "check the client id and secret key");
    assert!(!r.stderr.contains("not-the-right-secret"));
    // Without any credentials login says what to do.
    let empty = lab.home.path().join("empty");
    lab.run(&["login"], &[("XDG_CONFIG_HOME", empty.to_str().unwrap())]).await.fails(2, "Please provide credentials");
    // Anonymous secret writes need authentication.
    lab.run(&["secret", "write", "x", "y"], &[("XDG_CONFIG_HOME", empty.to_str().unwrap())])
        .await
        .fails(2, "Authentication is required");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restricted_queue_refuses_others_with_a_clear_message() {
    let lab = Lab::start().await;
    let _agent = lab.agent("dut-x", &["private"]).await;
    lab.create_client("owner", Role::Contributor).await;
    lab.create_client("stranger", Role::Contributor).await;
    lab.state.store.restrict_queue("private", "owner").await.unwrap();
    let job = lab.write("job.yaml", "job_queue: private\n");

    lab.run(&["submit", &job], &[]).await.fails(2, "Authentication required to push to restricted queue private");
    let r = lab.run(&["submit", &job], &[]).await;
    assert!(r.stderr.contains("phasebox login"), "{}", r.stderr);
    let stranger = [("TESTFLINGER_CLIENT_ID", "stranger"), ("TESTFLINGER_SECRET_KEY", SECRET)];
    let r = lab.run(&["submit", &job], &stranger).await;
    r.fails(2, "Not authorized to push to restricted queue private");
    assert!(r.stderr.contains("sufficient permissions"), "{}", r.stderr);
    let owner = [("PHASEBOX_CLIENT_ID", "owner"), ("PHASEBOX_SECRET_KEY", SECRET)];
    lab.run(&["submit", "-q", &job], &owner).await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn queues_and_agents_as_testflinger_cli_prints_them() {
    let lab = Lab::start().await;
    let agent = lab.agent("dut-a", &["alpha"]).await;
    agent.post_queues(&json!({"alpha": "the alpha queue"})).await.unwrap();
    let busy = lab.agent("dut-b", &["alpha"]).await;
    busy.post_agent_data("dut-b", &json!({"state": "test"})).await.unwrap();
    let user = Client::new(ClientConfig::new(&lab.url)).unwrap();
    user.submit_job(&json!({"job_queue": "alpha"})).await.unwrap();

    let r = lab.run(&["list-queues"], &[]).await;
    assert_eq!(r.ok().stdout, "Advertised queues on this server:\n alpha - the alpha queue\n");
    assert_eq!(lab.run(&["list-queues", "--json"], &[]).await.ok().stdout, "{\"alpha\":\"the alpha queue\"}\n");
    assert_eq!(lab.run(&["agent-status", "dut-b"], &[]).await.ok().stdout, "test\n");
    let j: Value = serde_json::from_str(&lab.run(&["agent-status", "dut-a", "--json"], &[]).await.ok().stdout).unwrap();
    assert_eq!((j["agent"].as_str(), j["status"].as_str()), (Some("dut-a"), Some("waiting")));
    lab.run(&["agent-status", "ghost"], &[]).await.fails(2, "Agent 'ghost' does not exist.");
    let r = lab.run(&["queue-status", "alpha"], &[]).await;
    assert_eq!(
        r.ok().stdout,
        "Agents in queue: 2\nAvailable:       1\nBusy:            1\nOffline:         0\n\
         Jobs waiting:    1\nJobs running:    0\nJobs completed:  0\n"
    );
    let r = lab.run(&["queue-status", "alpha", "--list-jobs", "--json"], &[]).await;
    let status: Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!((status["agents"].as_array().unwrap().len(), status["jobs_waiting"].as_array().unwrap().len()), (2, 1));
    let r = lab.run(&["list-agents", "-q", "alpha"], &[]).await;
    assert!(r.ok().stdout.contains("dut-a") && r.stdout.contains("dut-b"), "{}", r.stdout);
    let r = lab.run(&["reserve", "-q", "alpha", "-k", "lp:someone", "--distro", "noble", "--dry-run"], &[]).await;
    let printed = r.ok().stdout.split_once("submitted:\n").unwrap().1.to_owned();
    let job: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(job["reserve_data"], json!({"ssh_keys": ["lp:someone"], "timeout": 3600}));
    assert_eq!(job["provision_data"], json!({"distro": "noble"}));
}
