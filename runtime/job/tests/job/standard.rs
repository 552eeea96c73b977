//! A plain Testflinger job — no plugin named anywhere — runs on a simulated device with the
//! standard plugins: `flash` downloads the image through a granted origin, `firmware` updates
//! the device's firmware through fwupd, `shell` runs test_cmds with a declared secret (redacted
//! in output and console), `reserve` installs keys (raw and `gh:` from a key server) and holds
//! briefly, `cleanup` powers the device off as its configuration says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phasebox_device::CleanupAction;
use phasebox_dutsim::files::FileServer;
use phasebox_dutsim::{DutSim, DutSimConfig, DutSimHandle};
use phasebox_job::{
    CancellationToken, JobInputs, JobOutcome, JobPlan, JobSpec, Phase, PluginSet, RunnerConfig, run_job,
};
use phasebox_redact::Secret;

const IMAGE: &[u8] = b"IMAGE_NAME=noble-standard\nthe rest of the image\n";
const SECRET: &str = "tok-3f9a7c1e55d2";
const CAROL: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmzMZkCALj10zQFPgqtRgWnEyYiWLxSJJN6rFF0k18S carol@lab";
const BOB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB bob@gh";

/// The lab's image and key server.
async fn serve(files: BTreeMap<String, Vec<u8>>) -> (u16, FileServer) {
    let server = FileServer::start(files).await.unwrap();
    (server.addr().port(), server)
}

/// A runner with every bundled plugin, no `[defaults]`, and a policy that allows the device
/// handles and HTTP to 127.0.0.1 only.
fn runner(port: u16, http: &str) -> RunnerConfig {
    let text = format!(
        r#"
plugins = [{plugins}]
[dut]
name = "sim-std"
facts = {{ device_ip = "127.0.0.1", ssh_import_gh = "http://127.0.0.1:{port}/gh/{{user}}.keys" }}
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
http = [{http}]
dns = ["*"]
"#,
        plugins = crate::common::bundled_plugins(),
    );
    RunnerConfig::from_toml(&text, std::path::Path::new(".")).unwrap()
}

fn job(port: u16) -> String {
    format!(
        r#"
job_queue: sim
provision_data:
  url: http://127.0.0.1:{port}/images/noble.img
firmware_update_data:
  version: latest
test_data:
  test_cmds: |
    echo "running $DUT_IMAGE"
    echo "token=$API_TOKEN"
    mkdir -p artifacts/logs && echo "report for $DUT_IMAGE" > artifacts/logs/report.txt
  secrets:
    API_TOKEN: ci/token
reserve_data:
  ssh_keys:
    - gh:bob
    - "{CAROL}"
  timeout: 1
"#
    )
}

/// Runs `job` on the simulator; the job directory lives as long as the returned guard.
async fn run(sim: &DutSimHandle, runner: &RunnerConfig, job: &str) -> (JobOutcome, tempfile::TempDir) {
    let plugins = PluginSet::load(runner).unwrap();
    let spec = JobSpec::from_yaml(job).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut plan = JobPlan::new(&spec, runner, &plugins, &dir.path().join("job")).unwrap();
    let mut config = sim.device_config();
    config.cleanup = CleanupAction::PowerOff;
    plan.use_device(Arc::new(phasebox_device::Device::new(config).unwrap()));
    let secrets = BTreeMap::from([("API_TOKEN".to_owned(), Secret::new(SECRET.to_owned()))]);
    let inputs = JobInputs { secrets, ..Default::default() };
    let mut events = Vec::new();
    (run_job(&plan, inputs, &mut events, CancellationToken::new()).await.unwrap(), dir)
}

async fn sim() -> DutSimHandle {
    DutSim::start(DutSimConfig { name: "sim-std".into(), boot_delay: Duration::from_millis(200), ..Default::default() })
        .await
        .unwrap()
}

fn files() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("/images/noble.img".to_owned(), IMAGE.to_vec()),
        ("/gh/bob.keys".to_owned(), format!("{BOB}\n").into_bytes()),
    ])
}

#[tokio::test]
async fn a_plain_testflinger_job_runs_on_the_standard_plugins() {
    let (port, server) = serve(files()).await;
    let sim = sim().await;
    let (outcome, _job_dir) = run(&sim, &runner(port, "\"http://127.0.0.1:*\""), &job(port)).await;
    let text = outcome.results.to_json().to_string();
    assert!(outcome.passed(), "{:?}\n{text}", outcome.end_reason);

    let plugin = |phase| outcome.results.phasebox.phases[&phase].plugin.clone();
    assert_eq!(plugin(Phase::Provision).as_deref(), Some("flash"));
    assert_eq!(plugin(Phase::FirmwareUpdate).as_deref(), Some("firmware"));
    assert_eq!(plugin(Phase::Test).as_deref(), Some("shell"));
    assert_eq!(plugin(Phase::Reserve).as_deref(), Some("reserve"));
    assert_eq!(plugin(Phase::Cleanup).as_deref(), Some("cleanup"));
    assert_eq!(plugin(Phase::Setup), None, "setup has no standard plugin");

    // flash: the downloaded image is what the device booted.
    let output = |phase| outcome.transcript.output(phase).unwrap();
    assert!(output(Phase::Test).contains("running noble-standard"), "{}", output(Phase::Test));
    // firmware: the offered update was applied by the restart.
    let firmware = outcome.results.phasebox.suites.iter().find(|s| s.name == "firmware").expect("firmware suite");
    let system = firmware.cases.iter().find(|c| c.name == "System Firmware").expect("system firmware case");
    assert_eq!(system.message.as_deref(), Some("1.0.0 → 1.1.0 (offered 1.1.0)"));
    // shell: the secret reached the command, and nothing the job emitted shows it.
    assert!(output(Phase::Test).contains("token=**"), "{}", output(Phase::Test));
    assert!(!text.contains(SECRET), "the secret leaked into the results");
    // reserve: both keys installed once, connect line printed.
    let keys = std::fs::read_to_string(sim.home_dir().join(".ssh/authorized_keys")).unwrap();
    assert_eq!(keys.lines().collect::<Vec<_>>(), [BOB, CAROL]);
    assert!(output(Phase::Reserve).contains("You can now connect to"), "{}", output(Phase::Reserve));
    // shell: what test_cmds left in artifacts/ on the device is in the job's artifacts.
    let packed = outcome.artifacts.as_ref().expect("artifacts packed");
    let listing = std::process::Command::new("tar").arg("-tzf").arg(&packed.path).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("artifacts/logs/report.txt"), "{listing}\n{}", output(Phase::Test));
    // cleanup: powered off, as the device configuration says.
    assert!(!sim.is_powered(), "cleanup powers the device off");
    sim.shutdown().await;
    drop(server);
}

#[tokio::test]
async fn key_imports_without_an_http_grant_fail_naming_the_grant() {
    let (port, server) = serve(files()).await;
    let sim = sim().await;
    // The policy allows HTTP to one other origin only: the key server is not offered.
    let job = job(port).replace("version: latest", "version: latest\n  phasebox:\n    plugin: firmware");
    let (outcome, _job_dir) = run(&sim, &runner(port, "\"http://127.0.0.1:1\""), &job).await;
    // The image server is not allowed either, so provision fails first; run reserve alone.
    assert_eq!(outcome.status(Phase::Provision), Some(2), "a refused image url is a job error");
    let reason = &outcome.results.phasebox.phases[&Phase::Provision].reason;
    assert!(reason.contains("cannot download the image") && reason.contains("HttpRequestDenied"), "{reason}");

    let reserve_only = "job_queue: sim\nreserve_data:\n  ssh_keys: [gh:bob]\n  timeout: 1\n";
    let (outcome, _job_dir) = run(&sim, &runner(port, "\"http://127.0.0.1:1\""), reserve_only).await;
    assert_eq!(outcome.status(Phase::Reserve), Some(2), "{:?}", outcome.results.phasebox.phases[&Phase::Reserve]);
    let reason = &outcome.results.phasebox.phases[&Phase::Reserve].reason;
    assert!(reason.contains("gh:bob") && reason.contains("not granted http access"), "{reason}");
    assert!(!sim.home_dir().join(".ssh/authorized_keys").exists(), "nothing installed");

    // An unreachable key server is as clear.
    drop(server);
    let (outcome, _job_dir) = run(&sim, &runner(port, "\"http://127.0.0.1:*\""), reserve_only).await;
    let reason = &outcome.results.phasebox.phases[&Phase::Reserve].reason;
    assert!(reason.contains("gh:bob: cannot import keys from GitHub"), "{reason}");
    sim.shutdown().await;
}

/// The origins a phase is offered come from its plugin's manifest (`[[derive.http]]`): `flash`
/// derives the image's, `reserve` the key servers' (the mirror a device fact names, or Launchpad,
/// which this policy does not allow). A plugin that declares none is offered none from the same
/// data, though its manifest and the policy allow HTTP: it gets what the job asks for.
#[test]
fn derived_origins_come_from_the_plugins_manifest() {
    let runner = runner(8080, "\"http://127.0.0.1:*\"");
    let job = &format!(
        "job_queue: sim\nprovision_data: {{url: 'http://127.0.0.1:8081/noble.img'}}\n\
         reserve_data:\n  ssh_keys: [gh:bob, lp:al, '{CAROL}']\n  timeout: 1\n"
    );
    let origins = |job: &str, phase| {
        let (plan, _dir) = crate::common::plan(job, &runner).unwrap();
        let run = plan.phase(phase).run().expect("the phase runs");
        run.grant().http_origins().iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    assert_eq!(origins(job, Phase::Provision), ["http://127.0.0.1:8081"]);
    assert_eq!(origins(job, Phase::Reserve), ["http://127.0.0.1:8080"]);
    // `http-probe` declares no derivation: it gets what the job asks for and nothing more.
    let probing = job.replace(
        "timeout: 1\n",
        "timeout: 1\n  phasebox: {plugin: http-probe, grants: {http: ['http://127.0.0.1:9']}}\n",
    );
    assert_eq!(origins(&probing, Phase::Reserve), ["http://127.0.0.1:9"]);
}

/// A job whose allocate phase runs `device-probe` with `steps` (allocate_data is free-form in
/// Testflinger's schema, so it can carry them).
fn probe_job(steps: &[&str]) -> String {
    let steps: Vec<String> = steps.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "job_queue: sim\ntest_data:\n  test_cmds: 'true'\n  secrets:\n    API_TOKEN: ci/token\n\
         allocate_data:\n  steps: [{}]\n  phasebox:\n    plugin: device-probe\n",
        steps.join(", ")
    )
}

#[tokio::test]
async fn console_output_is_redacted_like_the_phase_output() {
    let sim = sim().await;
    assert!(sim.wait_booted(Duration::from_secs(10)).await);
    let (outcome, _job_dir) =
        run(&sim, &runner(1, "\"http://127.0.0.1:1\""), &probe_job(&[&format!("console:echo {SECRET}")])).await;
    assert_eq!(outcome.status(Phase::Allocate), Some(0), "{:?}", outcome.results.phasebox.phases[&Phase::Allocate]);
    let serial = outcome.transcript.serial(Phase::Allocate).unwrap();
    assert!(serial.contains("echo **"), "the console log shows the command, redacted: {serial:?}");
    let text = outcome.results.to_json().to_string();
    assert!(!text.contains(SECRET), "the secret leaked through the console log");

    // The first job's cleanup powered the device off.
    phasebox_device::Device::new(sim.device_config()).unwrap().power_on().await.unwrap();
    assert!(sim.wait_booted(Duration::from_secs(10)).await);
    // What the device itself prints on its console while a plugin that does not read the
    // console runs is recorded by the engine as the phase's serial log, redacted the same way.
    let job = "job_queue: sim\ntest_data:\n  test_cmds: |\n    echo \"console: $API_TOKEN\" >> \"$DUT_CONSOLE\"\n    \
               sleep 0.5\n  secrets:\n    API_TOKEN: ci/token\n";
    let (outcome, _job_dir) = run(&sim, &runner(1, "\"http://127.0.0.1:1\""), job).await;
    assert_eq!(outcome.status(Phase::Test), Some(0));
    let serial = outcome.transcript.serial(Phase::Test).unwrap();
    assert!(serial.contains("console: **"), "the device's console during the test phase: {serial:?}");
    assert!(!outcome.results.to_json().to_string().contains(SECRET), "the secret leaked through the serial log");
    sim.shutdown().await;
}

#[tokio::test]
async fn each_device_handle_works_when_granted_and_is_refused_when_not() {
    let sim = sim().await;
    assert!(sim.wait_booted(Duration::from_secs(10)).await);
    let steps = ["power:status", "console:echo handle-check", "exec:echo from-dut", "flash:4096", "power:cycle"];
    let (outcome, _job_dir) = run(&sim, &runner(1, "\"http://127.0.0.1:1\""), &probe_job(&steps)).await;
    let output = outcome.transcript.output(Phase::Allocate).unwrap();
    assert_eq!(outcome.status(Phase::Allocate), Some(0), "{output}");
    for step in steps {
        assert!(output.contains(&format!("{step} -> ok")), "{step}: {output}");
    }
    assert!(output.contains("status 0 stdout \"from-dut\""), "{output}");
    // Cleanup powered the device off; on again, it boots what the probe flashed.
    assert!(!sim.is_powered());
    phasebox_device::Device::new(sim.device_config()).unwrap().power_on().await.unwrap();
    assert!(sim.wait_booted(Duration::from_secs(10)).await);
    assert_eq!(sim.booted_image().map(|b| b.name).as_deref(), Some("device-probe"), "the flashed image boots");

    // Every call is in the event stream: which handle, which call, the outcome, the duration.
    let calls: Vec<String> = outcome
        .transcript
        .events()
        .unwrap()
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .filter(|v| v.to_string().contains("\"capability\""))
        .map(|v| v.to_string())
        .collect();
    for handle in ["power", "console", "exec", "flash"] {
        assert!(calls.iter().any(|c| c.contains(&format!("\"{handle}\""))), "no {handle} call recorded: {calls:?}");
    }

    // Without a handle in the policy, the plugin (which imports it) does not load: the plan says
    // which import and which grant.
    for (handle, import) in [
        ("power", "phasebox:plugin/power"),
        ("console", "phasebox:plugin/console"),
        ("exec", "phasebox:plugin/exec"),
        ("flash", "phasebox:plugin/flash"),
    ] {
        let mut runner = runner(1, "\"http://127.0.0.1:1\"");
        match handle {
            "power" => runner.policy.allow.power = false,
            "console" => runner.policy.allow.console = false,
            "exec" => runner.policy.allow.exec = false,
            _ => runner.policy.allow.flash = false,
        }
        let plugins = PluginSet::load(&runner).unwrap();
        let spec = JobSpec::from_yaml(&probe_job(&steps)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = JobPlan::new(&spec, &runner, &plugins, &dir.path().join("job")).unwrap_err().to_string();
        assert!(err.contains(import) && err.contains(handle) && err.contains("policy"), "{handle}: {err}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn power_commands_and_the_ssh_key_never_reach_the_plugin() {
    let sim = sim().await;
    assert!(sim.wait_booted(Duration::from_secs(10)).await);
    let dir = tempfile::tempdir().unwrap();
    let state = phasebox_device::shell_quote(&dir.path().join("state").display().to_string());
    const MARKER: &str = "PWRCMD-7f3a9c2e";
    let mut config = sim.device_config();
    config.power = Some(phasebox_device::PowerConfig::Commands(phasebox_device::PowerCommands {
        on: phasebox_device::SecretString::new(format!("echo on > {state} # {MARKER}")),
        off: phasebox_device::SecretString::new(format!("echo off > {state} # {MARKER}")),
        cycle: None,
        status: Some(phasebox_device::SecretString::new(format!("cat {state} # {MARKER}"))),
        timeout: Duration::from_secs(5),
        cycle_off_time: Duration::from_millis(10),
    }));
    let key = std::fs::read_to_string(sim.agent_key_path()).unwrap();
    let key_line = key.lines().nth(1).expect("an OpenSSH private key has a base64 body").to_owned();
    let reversed = |s: &str| s.chars().rev().collect::<String>();
    let steps = [
        "power:cycle".to_owned(),
        "exec:echo reached".to_owned(),
        format!("scan:{}", reversed(MARKER)),
        format!("scan:{}", reversed(&key_line)),
        // The control: the device's name is a fact, so the plugin holds it.
        format!("scan:{}", reversed("sim-std")),
    ];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();

    let runner = runner(1, "\"http://127.0.0.1:1\"");
    let plugins = PluginSet::load(&runner).unwrap();
    let spec = JobSpec::from_yaml(&probe_job(&steps)).unwrap();
    let job_dir = tempfile::tempdir().unwrap();
    let mut plan = JobPlan::new(&spec, &runner, &plugins, &job_dir.path().join("job")).unwrap();
    plan.use_device(Arc::new(phasebox_device::Device::new(config).unwrap()));
    let secrets = BTreeMap::from([("API_TOKEN".to_owned(), Secret::new(SECRET.to_owned()))]);
    let mut events = Vec::new();
    let outcome = run_job(&plan, JobInputs { secrets, ..Default::default() }, &mut events, CancellationToken::new())
        .await
        .unwrap();

    let output = outcome.transcript.output(Phase::Allocate).unwrap();
    assert!(output.contains("power:cycle -> ok: State::On"), "{output}");
    assert!(output.contains("exec:echo reached -> ok: status 0"), "{output}");
    let scans: Vec<&str> = output.lines().filter(|l| l.starts_with("scan:")).collect();
    assert_eq!(scans.len(), 3, "{output}");
    assert!(scans[0].ends_with("absent"), "power command in plugin memory: {}", scans[0]);
    assert!(scans[1].ends_with("absent"), "ssh key in plugin memory: {}", scans[1]);
    assert!(scans[2].ends_with("found"), "the scan finds what is there: {}", scans[2]);
    // The results and every file of the transcript (events, each phase's texts).
    let mut everything = outcome.results.to_json().to_string();
    for entry in std::fs::read_dir(outcome.transcript.dir()).unwrap() {
        everything.push_str(&String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()));
    }
    assert!(!everything.contains(MARKER), "a power command reached the job's records");
    assert!(!everything.contains(&key_line), "the ssh key reached the job's records");
    sim.shutdown().await;
}

#[tokio::test]
async fn exec_reaches_only_the_device_and_gives_no_network() {
    let sim = sim().await;
    assert!(sim.wait_booted(Duration::from_secs(10)).await);
    // The same job runs a command on the device through exec, and tries to reach the device's
    // SSH port directly from the sandbox: exec names no host, and the grant gives no sockets.
    let ssh = sim.ssh_addr();
    let job = format!(
        "job_queue: sim\ntest_data:\n  test_cmds: 'echo \"on $DUT_NAME\"'\n\
         allocate_data:\n  attack: tcp-connect\n  addr: \"{ssh}\"\n  phasebox:\n    plugin: probe\n"
    );
    // The policy gives sockets to one unrelated address, so the probe (which imports sockets)
    // loads, and its connection to the device is refused by the sandbox.
    let mut runner = runner(1, "\"http://127.0.0.1:1\"");
    runner.policy.allow.network.connect.push(phasebox_sandbox::EndpointPattern::parse("192.0.2.1:9").unwrap());
    let (outcome, _job_dir) = run(&sim, &runner, &job).await;
    let test = outcome.transcript.output(Phase::Test).unwrap();
    assert!(test.contains("on sim-std"), "exec ran on the device: {test}");
    let allocate = &outcome.results.phasebox.phases[&Phase::Allocate];
    assert!(allocate.reason.contains("denied"), "a direct connection is denied: {allocate:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reservation_holds_until_cancelled_and_cleanup_still_runs() {
    let sim = sim().await;
    assert!(sim.wait_booted(Duration::from_secs(10)).await);
    let runner = runner(1, "\"http://127.0.0.1:1\"");
    let plugins = PluginSet::load(&runner).unwrap();
    let job = format!("job_queue: sim\nreserve_data:\n  ssh_keys: [\"{CAROL}\"]\n  timeout: 3600\n");
    let spec = JobSpec::from_yaml(&job).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut plan = JobPlan::new(&spec, &runner, &plugins, &dir.path().join("job")).unwrap();
    let mut config = sim.device_config();
    config.cleanup = CleanupAction::PowerOff;
    plan.use_device(Arc::new(phasebox_device::Device::new(config).unwrap()));
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        let keys = sim.home_dir().join(".ssh/authorized_keys");
        tokio::spawn(async move {
            // Cancel once the reservation is in place.
            while !std::fs::read_to_string(&keys).is_ok_and(|k| k.contains("carol@lab")) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
            std::time::Instant::now()
        })
    };
    let mut events = Vec::new();
    let outcome = run_job(&plan, JobInputs::default(), &mut events, cancel).await.unwrap();
    let cancelled_at = canceller.await.unwrap();
    assert_eq!(outcome.job_state, phasebox_job::JobState::Cancelled);
    let reserve = &outcome.results.phasebox.phases[&Phase::Reserve];
    assert!(reserve.elapsed_ms.unwrap() < 60_000, "the hold ended on cancel: {reserve:?}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(30), "the job ended soon after the cancel");
    assert_eq!(outcome.status(Phase::Cleanup), Some(0), "cleanup runs after a cancel");
    assert!(!sim.is_powered(), "and powers the device off");
    sim.shutdown().await;
}
