//! Whole jobs on a simulated device under test, reached over SSH, its console server and its
//! power controller: `flash` writes the attached image and the device boots it; a device that
//! never comes back is an infrastructure error and cleanup still runs.

use std::sync::Arc;

use phasebox_dutsim::{BootMode, DutSim, DutSimConfig};
use phasebox_job::{AttachmentsArchive, CancellationToken, JobInputs, JobPlan, JobSpec, Phase, RunnerConfig, run_job};

const JOB: &str = r#"
job_queue: sim
provision_data:
  use_attachment: new.img
  media: sd
  attachments:
    - local: build/new.img
      agent: new.img
  phasebox:
    plugin: flash
test_data:
  test_cmds: |
    echo "booted image: $DUT_IMAGE"
"#;

fn runner() -> RunnerConfig {
    phasebox_guests::build().unwrap();
    let plugin = |name: &str| format!("{:?}", phasebox_guests::path(name).display().to_string());
    let text = format!(
        r#"
plugins = [{flash}, {shell}, {hello}]
[defaults]
test = "shell"
cleanup = "hello"
[dut]
name = "sim-dut"
[policy.allow]
results = true
secrets = ["*"]
files = [{{ path = "/attachments", source = "attachments", access = "ro" }}]
power = true
flash = true
exec = true
# flash can download images, so it imports wasi:http: the policy must allow some origin.
http = ["http://127.0.0.1:*"]
"#,
        flash = plugin("flash"),
        shell = plugin("shell"),
        hello = plugin("hello"),
    );
    RunnerConfig::from_toml(&text, std::path::Path::new(".")).unwrap()
}

/// The outcome, with the job's directory (which holds its transcript).
async fn run_on(sim: &phasebox_dutsim::DutSimHandle, image: &[u8]) -> (phasebox_job::JobOutcome, tempfile::TempDir) {
    let runner = runner();
    let plugins = phasebox_job::PluginSet::load(&runner).unwrap();
    let spec = JobSpec::from_yaml(JOB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut plan = JobPlan::new(&spec, &runner, &plugins, &dir.path().join("job")).unwrap();
    let device = phasebox_device::Device::new(sim.device_config()).unwrap();
    plan.use_device(Arc::new(device));
    let archive = crate::common::tarball(&[("provision/new.img", image)]);
    let inputs = JobInputs { attachments: Some(AttachmentsArchive::Bytes(archive)), ..Default::default() };
    let mut events = Vec::new();
    (run_job(&plan, inputs, &mut events, CancellationToken::new()).await.unwrap(), dir)
}

#[tokio::test]
async fn flash_writes_the_image_and_the_device_boots_it() {
    let sim = DutSim::start(DutSimConfig { name: "sim-dut".into(), ..Default::default() }).await.unwrap();
    let (outcome, _dir) = run_on(&sim, b"IMAGE_NAME=noble-demo\nimage body\n").await;
    assert!(outcome.passed(), "{:?}", outcome.end_reason);
    assert_eq!(outcome.status(Phase::Provision), Some(0));
    let test_output = outcome.transcript.output(Phase::Test).unwrap();
    assert!(test_output.contains("booted image: noble-demo"), "{test_output}");
    assert_eq!(sim.booted_image().map(|b| b.name), Some("noble-demo".to_string()));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_device_that_never_comes_back_is_an_infra_error_and_cleanup_runs() {
    let sim = DutSim::start(DutSimConfig { name: "sim-dut".into(), ..Default::default() }).await.unwrap();
    sim.set_boot_mode(BootMode::Never);
    // A short boot timeout keeps the test quick: the plugin reads it from the device's facts.
    let mut runner = runner();
    runner.dut.facts.insert("boot_timeout".into(), "2".into());
    let plugins = phasebox_job::PluginSet::load(&runner).unwrap();
    let spec = JobSpec::from_yaml(JOB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut plan = JobPlan::new(&spec, &runner, &plugins, &dir.path().join("job")).unwrap();
    plan.use_device(Arc::new(phasebox_device::Device::new(sim.device_config()).unwrap()));
    let archive = crate::common::tarball(&[("provision/new.img", b"IMAGE_NAME=never\n")]);
    let inputs = JobInputs { attachments: Some(AttachmentsArchive::Bytes(archive)), ..Default::default() };
    let mut events = Vec::new();
    let outcome = run_job(&plan, inputs, &mut events, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome.status(Phase::Provision), Some(3), "infra error");
    assert_eq!(outcome.status(Phase::Test), None, "a failed provision stops the job");
    assert_eq!(outcome.status(Phase::Cleanup), Some(0), "cleanup still runs");
    sim.shutdown().await;
}
