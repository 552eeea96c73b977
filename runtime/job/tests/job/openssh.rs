//! The `shell` and `reserve` plugins against a real OpenSSH sshd (see
//! `phasebox_dutsim::openssh`): test_cmds run with a declared secret in their environment, and
//! the key a reservation installs really lets its owner in. Skipped when sshd is not installed,
//! unless `PHASEBOX_REQUIRE_SSHD` is set (CI sets it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phasebox_device::{Device, ExecConfig, ExecRequest};
use phasebox_dutsim::openssh::{self, OpenSshd};
use phasebox_job::{CancellationToken, JobInputs, JobPlan, JobSpec, Phase, PluginSet, RunnerConfig, run_job};
use phasebox_redact::Secret;

const SECRET: &str = "sshd-secret-9d2f61";

#[tokio::test]
async fn shell_and_reserve_against_a_real_sshd() {
    if !openssh::available().expect("sshd") {
        eprintln!("SKIPPED: {} is not installed (runtime/device/ci-openssh.sh installs it)", openssh::SSHD);
        return;
    }
    let sshd = OpenSshd::start().await.unwrap();
    // The reservation's owner: a key pair of their own, installed by the reserve phase.
    let owner = sshd.path("owner_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "owner@lab", "-f"])
        .arg(&owner)
        .status()
        .unwrap();
    assert!(status.success());
    let owner_pub = std::fs::read_to_string(owner.with_extension("pub")).unwrap().trim().to_owned();

    phasebox_guests::build().unwrap();
    let plugin = |name: &str| format!("{:?}", phasebox_guests::path(name).display().to_string());
    let runner = format!(
        r#"
plugins = [{shell}, {reserve}]
[dut]
name = "real-sshd"
facts = {{ device_ip = "127.0.0.1", ssh_port = "{port}", authorized_keys = {keys:?} }}
[policy.allow]
results = true
secrets = ["*"]
exec = true
http = ["https://launchpad.net"]
"#,
        shell = plugin("shell"),
        reserve = plugin("reserve"),
        port = sshd.port(),
        keys = sshd.authorized_keys().display().to_string(),
    );
    let runner = RunnerConfig::from_toml(&runner, std::path::Path::new(".")).unwrap();
    let job = format!(
        "job_queue: real\ntest_data:\n  test_cmds: |\n    echo \"as $(id -un): token=$API_TOKEN\"\n  secrets:\n    \
         API_TOKEN: ci/token\nreserve_data:\n  ssh_keys: [\"{owner_pub}\"]\n  timeout: 1\n"
    );
    let plugins = PluginSet::load(&runner).unwrap();
    let spec = JobSpec::from_yaml(&job).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut plan = JobPlan::new(&spec, &runner, &plugins, &dir.path().join("job")).unwrap();
    plan.use_device(Arc::new(Device::new(sshd.device_config()).unwrap()));
    let secrets = BTreeMap::from([("API_TOKEN".to_owned(), Secret::new(SECRET.to_owned()))]);
    let mut events = Vec::new();
    let outcome = run_job(&plan, JobInputs { secrets, ..Default::default() }, &mut events, CancellationToken::new())
        .await
        .unwrap();

    let output = |phase| outcome.transcript.output(phase).unwrap();
    assert!(outcome.passed(), "{:?}\n{}\n{}", outcome.end_reason, output(Phase::Test), output(Phase::Reserve));
    let user = openssh::current_user();
    assert!(output(Phase::Test).contains(&format!("as {user}: token=**")), "{}", output(Phase::Test));
    assert!(!outcome.results.to_json().to_string().contains(SECRET) && !output(Phase::Test).contains(SECRET));
    let reserve = output(Phase::Reserve);
    assert!(reserve.contains(&format!("ssh -p {} {user}@127.0.0.1", sshd.port())), "{reserve}");

    // The owner's key now opens the device.
    let mut config = sshd.device_config();
    let Some(ExecConfig::Ssh(ssh)) = config.exec.as_mut() else { unreachable!() };
    ssh.key_file = owner.clone();
    let device = Device::new(config).unwrap();
    device.wait_until_reachable(Duration::from_secs(10)).await.unwrap();
    let out = device.exec(ExecRequest::new("echo owner-in")).await.unwrap().output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "owner-in\n");
    let keys = std::fs::read_to_string(sshd.authorized_keys()).unwrap();
    assert_eq!(keys.matches(&owner_pub).count(), 1, "installed once: {keys}");
    sshd.stop().await;
}
