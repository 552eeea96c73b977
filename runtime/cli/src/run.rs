//! `phasebox run JOB.yaml [--runner-config FILE] [--out DIR]`: one job, locally, no server.

use std::path::PathBuf;

use anyhow::Context;
use phasebox_job::{
    AttachmentsArchive, CancellationToken, JobInputs, JobPlan, PluginSet, RunnerConfig, Secret, TerminalRenderer,
    load_job, run_job, write_outputs,
};

use crate::Verdict;

/// The arguments of `phasebox run`.
pub struct RunArgs {
    /// The job file.
    pub job: PathBuf,
    /// The runner (agent) configuration; the built-in default when absent.
    pub runner_config: Option<PathBuf>,
    /// Where results, JUnit, the event log and artifacts go.
    pub out: PathBuf,
    /// A tar.gz of attachments in Testflinger's layout (`<phase>/<file>`).
    pub attachments: Option<PathBuf>,
    /// Files holding secret values, `NAME=path`.
    pub secret_files: Vec<String>,
}

/// The runner configuration `phasebox run` uses without `--runner-config`: `config/runner.toml`,
/// built in, with the built-in plugins (`phasebox config runner` prints it).
pub const DEFAULT_RUNNER_CONFIG: &str = include_str!("../../../config/runner.toml");

pub async fn run(args: RunArgs) -> anyhow::Result<Verdict> {
    let runner = match &args.runner_config {
        Some(path) => RunnerConfig::from_file(path)?,
        // It names no relative path, so the base directory is never used.
        None => RunnerConfig::from_toml(DEFAULT_RUNNER_CONFIG, std::path::Path::new("."))?,
    };
    let plugins = PluginSet::load(&runner)?;
    let spec = load_job(&args.job)?;
    let job_dir = tempfile::Builder::new().prefix("phasebox-job-").tempdir().context("creating the job directory")?;
    let mut plan = JobPlan::new(&spec, &runner, &plugins, job_dir.path())?;
    if let Some(path) = &runner.device {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config = phasebox_device::DeviceConfig::from_toml_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let device = phasebox_device::Device::new(config).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        plan.use_device(std::sync::Arc::new(device));
    }

    // Secrets come from files (never from the command line, where other users could see
    // them); a job names them in test_data.secrets.
    let mut secrets = std::collections::BTreeMap::new();
    for entry in &args.secret_files {
        let (name, path) = entry.split_once('=').context("--secret-file takes NAME=PATH")?;
        let value = std::fs::read_to_string(path).with_context(|| format!("reading secret {name} from {path}"))?;
        secrets.insert(name.to_owned(), Secret::new(value.trim_end_matches(['\n', '\r'])));
    }
    let attachments = args.attachments.clone().map(AttachmentsArchive::Path);

    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling: cleanup still runs (Ctrl-C again to abandon it)");
            on_signal.cancel();
        }
    });
    let mut terminal = TerminalRenderer::stderr();
    let outcome = tokio::select! {
        outcome = run_job(&plan, JobInputs { secrets, attachments }, &mut terminal, cancel) => outcome?,
        () = async {
            let _ = tokio::signal::ctrl_c().await;
            let _ = tokio::signal::ctrl_c().await;
        } => anyhow::bail!("abandoned: the job was dropped before cleanup finished"),
    };
    terminal.finish();
    let written = write_outputs(&outcome, &args.out)?;
    eprintln!("results    {}", written.results.display());
    eprintln!("junit      {}", written.junit.display());
    eprintln!("events     {}", written.events.display());
    if let Some(a) = &written.artifacts {
        eprintln!("artifacts  {}", a.display());
    }
    Ok(if outcome.passed() { Verdict::Success } else { Verdict::NotPassed })
}
