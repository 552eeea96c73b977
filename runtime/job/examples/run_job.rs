//! The library calls behind `phasebox run JOB.yaml [--agent-config FILE] [--out DIR]`, as a
//! small program: plan, run with the terminal view, Ctrl-C to cancel (twice to abandon
//! cleanup too), write the outputs, exit 0 only if the job passed.
//!
//! `cargo run -p phasebox-job --example run_job -- config/jobs/hello.yaml config/runner.toml out`
//!
//! Secrets come from the environment as `PHASEBOX_SECRET_<NAME>` (a real CLI would read a file
//! or prompt); the attachments archive from `PHASEBOX_ATTACHMENTS`.

use std::path::PathBuf;
use std::process::ExitCode;

use phasebox_job::{
    AttachmentsArchive, CancellationToken, JobInputs, JobPlan, PluginSet, RunnerConfig, Secret, TerminalRenderer,
    load_job, run_job, write_outputs,
};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [job, config, out] = match args.as_slice() {
        [j, c, o] => [PathBuf::from(j), PathBuf::from(c), PathBuf::from(o)],
        _ => {
            eprintln!("usage: run_job JOB.yaml RUNNER.toml OUT_DIR");
            return ExitCode::from(2);
        }
    };
    match run(job, config, out).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(job: PathBuf, config: PathBuf, out: PathBuf) -> Result<bool, phasebox_job::JobError> {
    let runner = RunnerConfig::from_file(&config)?;
    let plugins = PluginSet::load(&runner)?;
    let spec = load_job(&job)?;
    let job_dir = tempfile::tempdir().map_err(|e| phasebox_job::JobError::Output { path: "tmp".into(), source: e })?;
    let plan = JobPlan::new(&spec, &runner, &plugins, job_dir.path())?;

    let secrets = std::env::vars()
        .filter_map(|(k, v)| k.strip_prefix("PHASEBOX_SECRET_").map(|name| (name.to_owned(), Secret::new(v))))
        .collect();
    let attachments = std::env::var_os("PHASEBOX_ATTACHMENTS").map(|p| AttachmentsArchive::Path(p.into()));

    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling (cleanup still runs; Ctrl-C again to abandon it)");
            on_signal.cancel();
        }
    });
    let mut terminal = TerminalRenderer::stderr();
    let outcome = tokio::select! {
        outcome = run_job(&plan, JobInputs { secrets, attachments }, &mut terminal, cancel) => outcome?,
        _ = async {
            // The first Ctrl-C is the cancel above; a second one drops the job, cleanup included.
            let _ = tokio::signal::ctrl_c().await;
            let _ = tokio::signal::ctrl_c().await;
        } => {
            eprintln!("abandoned");
            return Ok(false);
        }
    };
    terminal.finish();
    let written = write_outputs(&outcome, &out)?;
    eprintln!("results: {}", written.results.display());
    Ok(outcome.passed())
}
