//! Files in and out: reading a job file, and writing a finished job's outputs to a directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use phasebox_jobspec::JobSpec;

use crate::error::JobError;
use crate::junit::junit_xml;
use crate::run::JobOutcome;

/// Reads and validates a job file (YAML or JSON, as Testflinger's CLI accepts).
pub fn load_job(path: &Path) -> Result<JobSpec, JobError> {
    let text = std::fs::read_to_string(path).map_err(|source| JobError::JobFile { path: path.to_owned(), source })?;
    JobSpec::parse(&text).map_err(|source| JobError::JobSpec { path: path.to_owned(), source })
}

/// The files [`write_outputs`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenOutputs {
    /// `results.json`: Testflinger's result shape plus the `phasebox` key.
    pub results: PathBuf,
    /// `junit.xml`.
    pub junit: PathBuf,
    /// `events.jsonl`: the event stream, one record per line.
    pub events: PathBuf,
    /// `artifacts.tar.gz`, when the job left artifacts.
    pub artifacts: Option<PathBuf>,
}

/// Writes `results.json`, `junit.xml`, `events.jsonl` and (when there are artifacts)
/// `artifacts.tar.gz` into `out_dir`, creating it. Everything written was redacted when the
/// events were emitted. Call it before the job directory is removed: the transcript and the
/// artifacts archive are copied from there.
pub fn write_outputs(outcome: &JobOutcome, out_dir: &Path) -> Result<WrittenOutputs, JobError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| JobError::Output { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(err(out_dir))?;
    // Streamed from the transcript: a job's output is never held whole in memory.
    let results = out_dir.join("results.json");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&results).map_err(err(&results))?);
    outcome
        .results
        .write_json_pretty(&outcome.transcript, &mut file)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.flush())
        .map_err(err(&results))?;
    let junit = out_dir.join("junit.xml");
    std::fs::write(&junit, junit_xml(&outcome.results)).map_err(err(&junit))?;
    let events = out_dir.join("events.jsonl");
    std::fs::copy(outcome.transcript.events_path(), &events).map_err(err(&events))?;
    let artifacts = match &outcome.artifacts {
        Some(packed) => {
            let dest = out_dir.join("artifacts.tar.gz");
            std::fs::copy(&packed.path, &dest).map_err(err(&dest))?;
            Some(dest)
        }
        None => None,
    };
    tracing::info!(dir = %out_dir.display(), "job outputs written");
    Ok(WrittenOutputs { results, junit, events, artifacts })
}
