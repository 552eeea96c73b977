//! `phasebox demo`: a well-behaved plugin, then an adversarial one trying to reach past its
//! grant, in one process. Every attack has an expected verdict; the demo passes only if each
//! one came out as expected.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use phasebox_sandbox::Endpoint;
use phasebox_sandbox::events::{PhaseEvent, Stream};
use phasebox_sandbox::{
    Access, CancellationToken, Capabilities, EngineConfig, FileRequest, Grant, GrantRequest, Limits, PhaseEnd,
    PhaseInput, PhaseReport, Plugin, Policy, Sandbox, Secret,
};
use serde_json::{Value, json};

use crate::Verdict;

/// The verdict an attack is expected to get.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Allowed,
    Denied,
    Stopped,
    Crashed,
}

impl Expect {
    fn word(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
        }
    }
}

pub async fn run() -> anyhow::Result<Verdict> {
    println!("phasebox demo: phases as sandboxed WebAssembly components\n");
    println!("== loading the built-in plugins (compiled once, then taken from the compile cache)");
    let sandbox = Sandbox::new(EngineConfig {
        max_instances: 16,
        cache_dir: crate::default_cache_dir(),
        ..EngineConfig::default()
    })?;
    let hello = load(&sandbox, "hello")?;
    let probe = load(&sandbox, "probe")?;
    println!();

    let job = tempfile::tempdir()?;
    std::fs::create_dir_all(job.path().join("artifacts"))?;
    std::fs::write(job.path().join("artifacts/report.txt"), "firmware 1.2.3 flashed\n")?;
    let policy = Policy {
        allow: Capabilities::everything_and_loopback(),
        limits: Limits { timeout: Duration::from_secs(1), memory: 64 << 20, ..Limits::default() },
        ..Policy::default()
    };

    println!("== phase `test` with plugin hello and an empty grant");
    let (report, _) =
        run_phase(&sandbox, &hello, &policy, &GrantRequest::default(), job.path(), json!({}), true).await?;
    println!("   {} in {:.2} ms\n", report.end, report.elapsed.as_secs_f64() * 1e3);
    let mut all_as_expected = report.end.passed();

    let port = pong_server()?;
    let granted = format!("127.0.0.1:{port}");
    let ask = GrantRequest {
        files: vec![FileRequest { path: "/artifacts".into(), source: "artifacts".into(), access: Access::Ro }],
        secrets: vec!["DEMO_TOKEN".into()],
        network: phasebox_sandbox::NetworkRequest {
            connect: vec![Endpoint::parse(&granted)?],
            bind: false,
            udp: false,
        },
        ..GrantRequest::default()
    };
    println!("== plugin probe under this grant:");
    println!("   files    /artifacts  read-only");
    println!("   network  connect {granted}");
    println!("   secrets  DEMO_TOKEN");
    println!("   limits   1 s, 64 MiB\n");

    let attacks: Vec<(String, Value, Expect)> = vec![
        (
            "read /artifacts/report.txt".into(),
            json!({"attack": "read-file", "path": "/artifacts/report.txt"}),
            Expect::Allowed,
        ),
        (
            "write /artifacts/evil.sh (read-only)".into(),
            json!({"attack": "write-file", "path": "/artifacts/evil.sh", "content": "x"}),
            Expect::Denied,
        ),
        ("read /etc/passwd".into(), json!({"attack": "read-file", "path": "/etc/passwd"}), Expect::Denied),
        (
            "read /artifacts/../../etc/shadow".into(),
            json!({"attack": "read-file", "path": "/artifacts/../../etc/shadow"}),
            Expect::Denied,
        ),
        (format!("connect {granted} (granted)"), json!({"attack": "tcp-connect", "addr": granted}), Expect::Allowed),
        (
            format!("connect 127.0.0.1:{} (not granted)", port.wrapping_add(1)),
            json!({"attack": "tcp-connect", "addr": format!("127.0.0.1:{}", port.wrapping_add(1))}),
            Expect::Denied,
        ),
        (
            "connect 169.254.169.254:80 (metadata)".into(),
            json!({"attack": "tcp-connect", "addr": "169.254.169.254:80"}),
            Expect::Denied,
        ),
        ("resolve example.com".into(), json!({"attack": "dns", "name": "example.com"}), Expect::Denied),
        ("listen on 0.0.0.0:8080".into(), json!({"attack": "tcp-listen", "addr": "0.0.0.0:8080"}), Expect::Denied),
        ("read the host's environment".into(), json!({"attack": "env"}), Expect::Allowed),
        ("secret DEMO_TOKEN (declared)".into(), json!({"attack": "secret", "name": "DEMO_TOKEN"}), Expect::Allowed),
        (
            "secret AWS_SECRET_KEY (not declared)".into(),
            json!({"attack": "secret", "name": "AWS_SECRET_KEY"}),
            Expect::Denied,
        ),
        ("spin forever".into(), json!({"attack": "spin"}), Expect::Stopped),
        ("allocate without end".into(), json!({"attack": "alloc-bomb"}), Expect::Stopped),
        ("panic".into(), json!({"attack": "panic", "message": "probe gave up"}), Expect::Crashed),
    ];
    println!("   {:<44} {:<9} detail", "attempt", "verdict");
    for (label, data, expected) in attacks {
        let (report, host_denials) = run_phase(&sandbox, &probe, &policy, &ask, job.path(), data, false).await?;
        let (verdict, mut detail) = verdict_of(&report.end);
        // The host's reason says more than the errno the guest saw.
        if let Some(reason) = host_denials.last() {
            detail = reason.clone();
        }
        if detail.is_empty() {
            detail = "(nothing)".into();
        }
        let ok = verdict == expected;
        all_as_expected &= ok;
        let mark = if ok { "" } else { "   <-- unexpected" };
        println!("   {label:<44} {:<9} {}{mark}", verdict.word(), one_line(&detail));
    }
    println!();
    if all_as_expected {
        println!("Every attempt came out as its grant says: what was granted worked, nothing else did.");
        println!("(The environment read above is allowed but empty: a phase sees none of the host's.)\n");
    } else {
        println!("Some attempts did not come out as expected (marked above).\n");
    }

    let job_passed = whole_job().await?;
    Ok(if all_as_expected && job_passed { Verdict::Success } else { Verdict::NotPassed })
}

/// The demo job: plain Testflinger YAML with no plugin named. The engine picks the standard
/// plugins from the data: `flash` (the image at `url`, from the lab's image server), `firmware`
/// (fwupd on the device), `shell` (test_cmds, with the declared secret in their environment
/// only), `reserve` (a raw public key, held briefly) and `cleanup` (power off, as the device's
/// configuration says). `@IMAGES@` is the image server's address.
const DEMO_JOB: &str = r#"
job_queue: sim-dut
name: demo job on a simulated device
provision_data:
  url: @IMAGES@/images/noble-demo.img
firmware_update_data:
  version: latest
test_data:
  test_cmds: |
    echo "running on $(hostname) with image $DUT_IMAGE"
    echo "the token the test got: $DEMO_TOKEN"
    echo "the same token in base64: $(printf %s "$DEMO_TOKEN" | base64)"
    echo "demo: the token on the serial console: $DEMO_TOKEN" >> "$DUT_CONSOLE"
    mkdir -p artifacts && uname -a > artifacts/uname.txt
    uname -s
  secrets:
    DEMO_TOKEN: demo/token
reserve_data:
  ssh_keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmzMZkCALj10zQFPgqtRgWnEyYiWLxSJJN6rFF0k18S demo@lab
  timeout: 2
"#;

const DEMO_TOKEN: &str = "demo-token-0123456789";

/// The image the demo flashes: the simulator boots it and shows its name.
const DEMO_IMAGE: &[u8] = b"IMAGE_NAME=noble-demo\nphasebox demo image\n";

/// Runs [`DEMO_JOB`] the way a lab runs it: an embedded server (SQLite in a temporary
/// directory), an agent serving a simulated device under test (reached over SSH, its console
/// server and its power controller), the job submitted through the client and followed live
/// until it completes, then its results and artifacts fetched.
async fn whole_job() -> anyhow::Result<bool> {
    use phasebox_client::{Client, ClientConfig, Credentials};
    use phasebox_server::auth::{self, Role};

    println!("== a whole job: server, agent, simulated device under test, client");
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);

    // The server, on SQLite, with the demo's two clients.
    let mut server_config = phasebox_server::ServerConfig::in_dir(&path("server"));
    std::fs::create_dir_all(path("server"))?;
    write_private(&path("server/secrets.key"), phasebox_server::secrets::generate_key().as_str())?;
    server_config.secrets_key_file = Some(path("server/secrets.key"));
    let state = phasebox_server::build_state(server_config).await?;
    const AGENT_SECRET: &str = "demo-agent-secret-0123456789";
    const USER_SECRET: &str = "demo-user-secret-0123456789";
    auth::create_client(&state.store, "demo-agent", AGENT_SECRET, Role::Agent).await?;
    auth::bind_agent(&state.store, "demo-agent", vec!["sim-dut-1".into()], vec!["sim-dut".into()]).await?;
    auth::create_client(&state.store, "demo-user", USER_SECRET, Role::Contributor).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server_url = format!("http://{}", listener.local_addr()?);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let web = phasebox_web::router(state.clone());
    let server = tokio::spawn(phasebox_server::serve_with_routes(listener, state, web, async move {
        let _ = server_stopped.await;
    }));
    println!("   server  {server_url} (SQLite in a temporary directory)");
    println!("   web UI  {server_url}/ (log in as demo-user, secret {USER_SECRET})");

    // The simulated device and the lab's image server.
    let sim = phasebox_dutsim::DutSim::start(phasebox_dutsim::DutSimConfig {
        name: "sim-dut-1".into(),
        ..Default::default()
    })
    .await?;
    let images = phasebox_dutsim::files::FileServer::start(
        [("/images/noble-demo.img".to_owned(), DEMO_IMAGE.to_vec())].into_iter().collect(),
    )
    .await?;
    println!("   device  sim-dut-1: ssh {}, console {}, power {}", sim.ssh_addr(), sim.console_addr(), sim.power_url());
    println!("   images  {}", images.url());

    // The agent: one device, its runner (the standard plugins) and its device configuration.
    let mut device_config = sim.device_config();
    device_config.cleanup = phasebox_device::CleanupAction::PowerOff;
    std::fs::write(path("device.toml"), device_config.to_toml_string())?;
    std::fs::write(
        path("runner.toml"),
        format!(
            r#"builtin_plugins = ["flash", "firmware", "shell", "reserve", "cleanup"]
device = "device.toml"
[dut]
name = "sim-dut-1"
facts = {{ device_ip = "127.0.0.1", ssh_port = "{ssh_port}" }}
[policy.allow]
results = true
secrets = ["*"]
power = true
console = true
exec = true
flash = true
http = ["http://127.0.0.1:*"]
files = [{{ path = "/artifacts", source = "artifacts", access = "rw" }}]
"#,
            ssh_port = sim.ssh_addr().port(),
        ),
    )?;
    write_private(&path("agent.secret"), AGENT_SECRET)?;
    std::fs::write(
        path("agent.toml"),
        format!(
            "server = \"{server_url}\"\nspool_dir = \"spool\"\n[credentials]\nclient_id = \"demo-agent\"\n\
             secret_file = \"agent.secret\"\n\n[[dut]]\nname = \"sim-dut-1\"\nqueues = [\"sim-dut\"]\n\
             runner = \"runner.toml\"\n"
        ),
    )?;
    let agent = phasebox_agent::Agent::new(phasebox_agent::AgentConfig::from_file(&path("agent.toml"))?)?;
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent.run(async move {
        let _ = agent_stopped.await;
    }));
    println!("   agent   serving sim-dut-1 on queue sim-dut (long-poll claims)");

    // The user: store the secret, submit, follow live.
    let mut client_config = ClientConfig::new(server_url.clone());
    client_config.credentials = Some(Credentials::new("demo-user", USER_SECRET));
    let user = Client::new(client_config)?;
    user.put_secret("demo-user", "demo/token", &Secret::new(DEMO_TOKEN)).await?;
    let job = phasebox_job::JobSpec::from_yaml(&DEMO_JOB.replace("@IMAGES@", &images.url()))?.to_json();
    let job_id = user.submit_job(&job).await?;
    println!("   submitted job {job_id}; follow it live at {server_url}/jobs/{job_id}");
    println!("   following its output as `phasebox poll` does:\n");
    let verdict = crate::client::poll::follow(&user, &job_id, &crate::client::poll::Follow::new(0.2)).await?;

    let results = user.get_results(&job_id).await?;
    let out = std::env::temp_dir().join(format!("phasebox-demo-{}", std::process::id()));
    std::fs::create_dir_all(&out)?;
    let results_path = out.join("results.json");
    std::fs::write(&results_path, serde_json::to_string_pretty(&results)?)?;
    let artifacts_path = out.join("artifacts.tar.gz");
    let artifacts = user.download_artifacts(&job_id, &artifacts_path).await;
    println!();
    for phase in ["setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup"] {
        if let Some(status) = results.get(format!("{phase}_status")) {
            println!("   {phase:<16} status {status}");
        }
    }
    println!("   job state       {}", results.get("job_state").and_then(Value::as_str).unwrap_or("?"));
    println!("   results   {}", results_path.display());
    match artifacts {
        Ok(bytes) => println!("   artifacts {} ({bytes} bytes)", artifacts_path.display()),
        Err(e) => println!("   artifacts none ({e})"),
    }
    if !sim.is_powered() {
        println!("   the device is off after cleanup, as its configuration asks");
    }
    let output = user.get_log(&job_id, phasebox_client::LogType::Output, 0).await?.text();
    let serial = user.get_log(&job_id, phasebox_client::LogType::Serial, 0).await?.text();
    println!("   serial log, as `phasebox poll-serial` shows it:");
    for line in serial.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()) {
        println!("     serial│ {line}");
    }
    let leaked = [results.to_string(), output, serial].iter().any(|t| t.contains(DEMO_TOKEN));
    if leaked {
        println!("   the secret leaked into the results or logs");
    } else {
        println!(
            "   the secret appears nowhere in the output, serial log or results on the server: redacted on the agent"
        );
    }

    let _ = stop_agent.send(());
    agent.await??;
    let _ = stop_server.send(());
    server.await??;
    sim.shutdown().await;
    Ok(matches!(verdict, Verdict::Success) && !leaked)
}

/// Writes a credential file readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn load(sandbox: &Sandbox, name: &str) -> anyhow::Result<Arc<Plugin>> {
    let builtin = phasebox_builtin::get(name).with_context(|| format!("no built-in plugin {name}"))?;
    let plugin = builtin.load(sandbox)?;
    println!(
        "   plugin {:<6} sha256 {}…  {:>7} bytes  {:?} in {:.1} ms",
        plugin.name(),
        &plugin.sha256()[..16],
        plugin.size(),
        plugin.cache_outcome(),
        plugin.load_time().as_secs_f64() * 1e3
    );
    Ok(plugin)
}

async fn run_phase(
    sandbox: &Sandbox,
    plugin: &Plugin,
    policy: &Policy,
    ask: &GrantRequest,
    job_dir: &Path,
    data: Value,
    show_output: bool,
) -> anyhow::Result<(PhaseReport, Vec<String>)> {
    let grant = Grant::resolve("test", &plugin.manifest().capabilities, policy, ask, job_dir)?;
    let secrets: BTreeMap<String, Secret> = [("DEMO_TOKEN".to_string(), Secret::new("demo-token-0123456789"))].into();
    let input = PhaseInput {
        phase: "test".into(),
        job_id: "demo".into(),
        data_json: data.to_string(),
        dut: vec![("name".into(), "demo-dut".into())],
    };
    let (tx, mut rx) = phasebox_sandbox::channel();
    let printer = tokio::spawn(async move {
        let mut denials = Vec::new();
        while let Some(event) = rx.recv().await {
            if let PhaseEvent::Capability(c) = &event
                && !c.allowed
            {
                denials.push(format!("{} {}: {}", c.grant, c.call, c.reason.clone().unwrap_or_default()));
            }
            if !show_output {
                continue;
            }
            match event {
                PhaseEvent::Output { stream: Stream::Stdout, data, .. } => {
                    for line in String::from_utf8_lossy(&data).lines() {
                        println!("   | {line}");
                    }
                }
                PhaseEvent::Case(c) => println!("   case {}/{}: {:?}", c.suite, c.name, c.status),
                PhaseEvent::Measurement(m) => println!("   measurement {} = {} {}", m.name, m.value, m.unit),
                _ => {}
            }
        }
        denials
    });
    let report = sandbox
        .run_phase(plugin, &grant, &input, &secrets, tx, CancellationToken::new())
        .await
        .context("starting the phase")?;
    let denials = printer.await?;
    Ok((report, denials))
}

fn verdict_of(end: &PhaseEnd) -> (Expect, String) {
    match end {
        PhaseEnd::Passed { summary } => match summary.strip_prefix("denied: ") {
            Some(why) => (Expect::Denied, why.to_owned()),
            None => (Expect::Allowed, summary.strip_prefix("allowed: ").unwrap_or(summary).to_owned()),
        },
        PhaseEnd::Stopped(stop) => (Expect::Stopped, stop.to_string()),
        PhaseEnd::Trapped { trap, guest_message } => {
            // Rust prints `thread '…' panicked at file:line:` and the message on the next line.
            let mut lines = guest_message.lines();
            let panic_line = lines.by_ref().find(|l| l.contains("panicked at")).and_then(|_| lines.next());
            let panic_line = panic_line.or_else(|| guest_message.lines().next()).unwrap_or_default();
            (Expect::Crashed, format!("{trap}; guest said: {panic_line}"))
        }
        PhaseEnd::Exited { .. } => (Expect::Crashed, end.to_string()),
        PhaseEnd::Failed { .. } => (Expect::Denied, end.to_string()),
    }
}

fn one_line(s: &str) -> String {
    let line = s.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ");
    if line.chars().count() > 90 { format!("{}…", line.chars().take(89).collect::<String>()) } else { line }
}

/// A TCP service on loopback for the granted connection: answers `pong` and closes.
fn pong_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 64];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"pong\n");
        }
    });
    Ok(port)
}
