//! Files in and out: reading a job file, and writing a finished job's outputs to a directory.

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
/// events were emitted. Call it before the job directory is removed: the artifacts archive is
/// copied from there.
pub fn write_outputs(outcome: &JobOutcome, out_dir: &Path) -> Result<WrittenOutputs, JobError> {
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, JobError> {
        let path = out_dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| JobError::Output { path: path.clone(), source })?;
        Ok(path)
    };
    std::fs::create_dir_all(out_dir).map_err(|source| JobError::Output { path: out_dir.to_owned(), source })?;
    let mut results = outcome.results.to_json_pretty();
    results.push('\n');
    let results = write("results.json", results.as_bytes())?;
    let junit = write("junit.xml", junit_xml(&outcome.results).as_bytes())?;
    let mut lines = String::new();
    for record in &outcome.events {
        lines.push_str(&record.to_json_line());
        lines.push('\n');
    }
    let events = write("events.jsonl", lines.as_bytes())?;
    let artifacts = match &outcome.artifacts {
        Some(packed) => {
            let dest = out_dir.join("artifacts.tar.gz");
            std::fs::copy(&packed.path, &dest).map_err(|source| JobError::Output { path: dest.clone(), source })?;
            Some(dest)
        }
        None => None,
    };
    tracing::info!(dir = %out_dir.display(), "job outputs written");
    Ok(WrittenOutputs { results, junit, events, artifacts })
}
