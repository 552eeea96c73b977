//! Shared helpers: one sandbox per test process, the example runner config, runs of job text.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use flate2::Compression;
use flate2::write::GzEncoder;
use phasebox_job::{
    CancellationToken, EventRecord, JobError, JobInputs, JobOutcome, JobPlan, JobSink, JobSpec, PluginSet,
    RunnerConfig, run_job,
};
use phasebox_sandbox::{Capabilities, EngineConfig, Sandbox};

pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            phasebox_guests::build().expect("building guest plugins");
            let cache = phasebox_guests::out_dir().join("../phasebox-test-cache");
            Arc::new(
                Sandbox::new(EngineConfig {
                    max_instances: 32,
                    max_memory: 1 << 30,
                    cache_dir: Some(cache),
                    ..EngineConfig::default()
                })
                .expect("sandbox"),
            )
        })
        .clone()
}

pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// `config/runner.toml`: hello in every phase.
pub fn example_runner() -> RunnerConfig {
    sandbox();
    RunnerConfig::from_file(&config_dir().join("runner.toml")).expect("config/runner.toml")
}

/// The example runner plus the adversarial `probe` plugin, with a policy that allows
/// everything (so that what a phase gets is decided by the plugin and the job).
pub fn probe_runner() -> RunnerConfig {
    let mut runner = example_runner();
    runner.plugins.push(phasebox_guests::path("probe"));
    runner.policy.allow = Capabilities::everything_and_loopback();
    runner
}

pub fn plugins(runner: &RunnerConfig) -> PluginSet {
    PluginSet::load_into(sandbox(), runner).expect("loading plugins")
}

/// A finished job with its directory (kept alive for the artifacts).
pub struct Ran {
    pub outcome: JobOutcome,
    pub dir: tempfile::TempDir,
}

impl Ran {
    pub fn output(&self, phase: phasebox_job::Phase) -> String {
        self.outcome.transcript.output(phase).expect("the transcript is readable")
    }
}

pub fn plan(yaml: &str, runner: &RunnerConfig) -> Result<(JobPlan, tempfile::TempDir), JobError> {
    let spec = JobSpec::from_yaml(yaml).expect("valid job text");
    let dir = tempfile::tempdir().unwrap();
    let plan = JobPlan::new(&spec, runner, &plugins(runner), &dir.path().join("job"))?;
    Ok((plan, dir))
}

pub async fn run_with(
    yaml: &str,
    runner: &RunnerConfig,
    inputs: JobInputs,
    sink: &mut dyn JobSink,
    cancel: CancellationToken,
) -> Result<Ran, JobError> {
    let (plan, dir) = plan(yaml, runner)?;
    let outcome = run_job(&plan, inputs, sink, cancel).await?;
    Ok(Ran { outcome, dir })
}

pub async fn run(yaml: &str, runner: &RunnerConfig) -> Ran {
    let mut events = Vec::new();
    run_with(yaml, runner, JobInputs::default(), &mut events, CancellationToken::new()).await.expect("job runs")
}

/// A sink that shares what it receives with the test (the job holds the sink mutably).
#[derive(Clone, Default)]
pub struct Shared(pub Arc<Mutex<Vec<(std::time::Instant, EventRecord)>>>);

impl JobSink for Shared {
    fn event(&mut self, record: &EventRecord) {
        self.0.lock().unwrap().push((std::time::Instant::now(), record.clone()));
    }
}

/// A writer whose bytes the test can read afterwards.
#[derive(Clone, Default)]
pub struct Buffer(pub Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every bundled plugin (built first), as a runner configuration's `plugins` list.
pub fn bundled_plugins() -> String {
    phasebox_guests::build().unwrap();
    let paths: Vec<String> = phasebox_guests::PLUGINS
        .iter()
        .map(|n| format!("{:?}", phasebox_guests::path(n).display().to_string()))
        .collect();
    paths.join(", ")
}

/// A gzip-compressed tar of `(name, content)` regular files; names are written byte for byte
/// (the `tar` crate's safe setters refuse `..`, which hostile archives need).
pub fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}
