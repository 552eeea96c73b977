//! Testflinger's own kind of test job on the standard `shell` plugin and a simulated device:
//! `ssh`/`scp` to `$DEVICE_IP`, attachments in Testflinger's layout, artifacts from the
//! working directory, one working directory per job, removed after it, and a device that the
//! last job's cleanup switched off is on again for a job that does not provision.

use std::sync::Arc;
use std::time::Duration;

use phasebox_dutsim::{DutSim, DutSimConfig, DutSimHandle};
use phasebox_job::{
    AttachmentsArchive, CancellationToken, JobInputs, JobOutcome, JobPlan, JobSpec, Phase, PluginSet, RunnerConfig,
    run_job,
};

/// A runner with the bundled plugins whose policy allows what `shell` asks for.
fn runner() -> RunnerConfig {
    let text = format!(
        r#"
plugins = [{plugins}]
[dut]
name = "sim-tf"
facts = {{ device_ip = "127.0.0.1" }}
[policy.allow]
results = true
secrets = ["*"]
files = [
  {{ path = "/attachments", source = "attachments", access = "ro" }},
  {{ path = "/artifacts", source = "artifacts", access = "rw" }},
]
exec = true
power = true
"#,
        plugins = crate::common::bundled_plugins(),
    );
    RunnerConfig::from_toml(&text, std::path::Path::new(".")).unwrap()
}

async fn run(sim: &DutSimHandle, job: &str, archive: Option<Vec<u8>>) -> (JobOutcome, tempfile::TempDir) {
    let runner = runner();
    let plugins = PluginSet::load(&runner).unwrap();
    let spec = JobSpec::from_yaml(job).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut plan = JobPlan::new(&spec, &runner, &plugins, &dir.path().join("job")).unwrap();
    let mut config = sim.device_config();
    // As labs often configure it: the device is switched off after every job.
    config.cleanup = phasebox_device::CleanupAction::PowerOff;
    plan.use_device(Arc::new(phasebox_device::Device::new(config).unwrap()));
    let inputs = JobInputs { attachments: archive.map(AttachmentsArchive::Bytes), ..Default::default() };
    let mut events = Vec::new();
    (run_job(&plan, inputs, &mut events, CancellationToken::new()).await.unwrap(), dir)
}

async fn sim() -> DutSimHandle {
    DutSim::start(DutSimConfig { name: "sim-tf".into(), boot_delay: Duration::from_millis(100), ..Default::default() })
        .await
        .unwrap()
}

/// The names in the job's artifacts archive.
fn artifact_names(outcome: &JobOutcome) -> Vec<String> {
    let Some(packed) = outcome.artifacts.as_ref() else { return Vec::new() };
    let file = std::fs::File::open(&packed.path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive.entries().unwrap().map(Result::unwrap);
    entries.filter(|e| e.header().entry_type().is_file()).map(|e| e.path().unwrap().display().to_string()).collect()
}

/// Testflinger's most common job: no provisioning, `cmds` as test_cmds.
fn noprovision_job(cmds: &str) -> String {
    let cmds: String = cmds.lines().map(|line| format!("    {line}\n")).collect();
    format!("job_queue: sim\nprovision_data:\n  skip: true\ntest_data:\n  test_cmds: |\n{cmds}")
}

fn test_output(outcome: &JobOutcome) -> String {
    outcome.transcript.output(Phase::Test).unwrap()
}

#[tokio::test]
async fn test_cmds_reach_the_device_with_ssh_and_scp_and_find_their_attachments() {
    let sim = sim().await;
    let job = r#"
job_queue: sim
provision_data:
  skip: true
test_data:
  attachments:
    - local: notes.txt
      agent: data/notes.txt
  test_cmds: |
    set -e
    ssh ubuntu@$DEVICE_IP 'uname -s > ~/uname.txt; echo on the device as $(whoami)'
    ssh -t -o StrictHostKeyChecking=no ubuntu@$DEVICE_IP true
    mkdir -p artifacts
    scp ubuntu@$DEVICE_IP:uname.txt artifacts/
    ssh ubuntu@$DEVICE_IP rm uname.txt
    cat attachments/test/data/notes.txt
    cp attachments/test/data/notes.txt artifacts/
"#;
    let archive = crate::common::tarball(&[("test/data/notes.txt", b"attached notes\n")]);
    let (outcome, _dir) = run(&sim, job, Some(archive)).await;
    let output = test_output(&outcome);
    assert!(outcome.passed(), "{:?}\n{output}", outcome.end_reason);
    assert!(output.contains("on the device as"), "{output}");
    assert!(output.contains("attached notes"), "{output}");
    let mut names = artifact_names(&outcome);
    names.sort();
    assert_eq!(names, ["artifacts/notes.txt", "artifacts/uname.txt"], "{output}");
    // Nothing of the job is left on the device.
    let jobs = sim.home_dir().join("phasebox-jobs");
    assert_eq!(std::fs::read_dir(&jobs).map(|d| d.count()).unwrap_or(0), 0, "the job's directory was left behind");
    sim.shutdown().await;
}

#[tokio::test]
async fn two_jobs_in_a_row_on_one_device_never_see_each_others_files() {
    let sim = sim().await;
    let first =
        noprovision_job("mkdir -p artifacts && echo from-A > artifacts/secret-from-A.txt && echo A > left-by-A.txt");
    let (outcome, _dir) = run(&sim, &first, None).await;
    assert!(outcome.passed(), "{:?}\n{}", outcome.end_reason, test_output(&outcome));
    assert_eq!(artifact_names(&outcome), ["artifacts/secret-from-A.txt"]);

    let second = noprovision_job("echo \"cwd holds: [$(ls -A)]\"\nmkdir -p artifacts && echo from-B > artifacts/b.txt");
    // Job A's cleanup switched the device off; job B does not provision, and finds it on.
    assert!(!sim.is_powered());
    let (outcome, _dir) = run(&sim, &second, None).await;
    let output = test_output(&outcome);
    assert!(outcome.passed(), "{:?}\n{output}\n{}", outcome.end_reason, outcome.results.to_json());
    assert!(output.contains("cwd holds: []"), "{output}");
    assert_eq!(artifact_names(&outcome), ["artifacts/b.txt"], "job B got job A's files");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_commands_see_testflinger_variables_and_their_exit_status_decides() {
    let sim = sim().await;
    let job = noprovision_job("echo \"device $DEVICE_IP agent $agent_id\"\nexit 3");
    let (outcome, _dir) = run(&sim, &job, None).await;
    let output = test_output(&outcome);
    assert!(!outcome.passed());
    assert!(output.contains("device 127.0.0.1 agent sim-tf"), "{output}");
    let status = outcome.results.to_json()["test_status"].as_i64();
    assert!(status.is_some_and(|s| s != 0), "test_status {status:?}\n{output}");
    sim.shutdown().await;
}
