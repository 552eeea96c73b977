//! The one error type of this crate. Every variant names the job (and the phase, where there is
//! one) and says what to change, because the person reading it is a lab engineer or a job author
//! looking at a terminal, not at this code.
//!
//! An error means nothing ran: plans refuse before any phase, and [`run_job`](crate::run_job)
//! refuses (bad secrets, a missing or hostile attachments archive) before the first phase.
//! Anything that goes wrong once phases run is part of the [`JobOutcome`](crate::JobOutcome).

use std::path::PathBuf;

use phasebox_archive::ArchiveError;
use phasebox_jobspec::Phase;
use phasebox_redact::RedactError;
use phasebox_sandbox::SandboxError;

/// Why a job could not be planned, started, or its outputs written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The runner configuration could not be read or is invalid.
    #[error("runner config {}: {reason}", path.display())]
    Config {
        /// The configuration file (or `(inline)`).
        path: PathBuf,
        /// What is wrong, with the key where known.
        reason: String,
    },

    /// A job file could not be read.
    #[error("job file {}: {source}", path.display())]
    JobFile {
        /// The job file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A job file is not a valid Testflinger job.
    #[error("job file {}: {source}", path.display())]
    JobSpec {
        /// The job file.
        path: PathBuf,
        /// The field, position and problem.
        source: phasebox_jobspec::Error,
    },

    /// A job field has a value the engine cannot run with.
    #[error("job {job}: `{field}`: {reason}")]
    InvalidJob {
        /// The job id.
        job: String,
        /// The field, e.g. `global_timeout`.
        field: String,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// The sandbox engine could not be set up.
    #[error("cannot set up the sandbox: {0}")]
    Sandbox(#[source] Box<SandboxError>),

    /// A plugin named in the runner configuration could not be loaded.
    #[error("plugin {}: {source}", path.display())]
    PluginLoad {
        /// The plugin file.
        path: PathBuf,
        /// Why the sandbox refused it.
        source: Box<SandboxError>,
    },

    /// A plugin built into the binary did not load.
    #[error(transparent)]
    Builtin(#[from] phasebox_builtin::BuiltinError),

    /// Two different plugins of one runner have the same name, so a job naming it is ambiguous.
    #[error(
        "two different plugins are named `{name}` (sha256 {first} and {second}); plugin names in a \
         runner's plugin set must be unique: remove one from `plugins` in the runner config"
    )]
    DuplicatePlugin {
        /// The name.
        name: String,
        /// The sha256 of the plugin loaded first.
        first: String,
        /// The sha256 of the second.
        second: String,
    },

    /// A phase that the job asks for has no plugin: the job names none and the runner has no
    /// default for the phase.
    #[error(
        "job {job}: phase {phase} runs (the job has {data_key}) but no plugin is available for it: \
         name one in {data_key}.phasebox.plugin, or set `defaults.{phase}` in the runner config"
    )]
    NoPlugin {
        /// The job id.
        job: String,
        /// The phase.
        phase: Phase,
        /// The job key holding the phase's data, e.g. `test_data`.
        data_key: String,
    },

    /// The job names a plugin this runner does not have.
    #[error(
        "job {job}: phase {phase} asks for plugin `{plugin}`, which this runner does not have \
         (it has: {available}); use one of those, or add the plugin to `plugins` in the runner config"
    )]
    UnknownPlugin {
        /// The job id.
        job: String,
        /// The phase.
        phase: Phase,
        /// The plugin as the job named it (a name or `sha256:<hex>`).
        plugin: String,
        /// The plugins the runner has, as `name (sha256:<first 12 hex>)`.
        available: String,
    },

    /// The effective grant could not be formed: the job asks for something that the plugin's
    /// manifest or the operator's policy does not allow, or names a directory that cannot be
    /// mounted.
    #[error("job {job}: {source}")]
    Grant {
        /// The job id.
        job: String,
        /// The phase.
        phase: Phase,
        /// The sandbox's refusal, naming the request and which document refused it.
        source: Box<SandboxError>,
    },

    /// The plugin imports an interface that the phase's effective grant does not link; it
    /// would be refused when the phase starts, so it is refused now, in the sandbox's words.
    #[error("job {job}: {source}")]
    PluginNeedsGrant {
        /// The job id.
        job: String,
        /// The phase.
        phase: Phase,
        /// The sandbox's refusal, naming the import, the capability and which document left it out.
        source: Box<SandboxError>,
    },

    /// A phase has attachments, but its plugin or the policy does not allow mounting them.
    #[error(
        "job {job}: phase {phase} has attachments, but they cannot be mounted read-only at \
         /attachments: {reason}"
    )]
    AttachmentsNotGrantable {
        /// The job id.
        job: String,
        /// The phase.
        phase: Phase,
        /// Which document refuses the mount.
        reason: String,
    },

    /// The job directory could not be prepared or used.
    #[error("job {job}: job directory {}: {source}", path.display())]
    JobDir {
        /// The job id.
        job: String,
        /// The directory or file inside it.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A secret value cannot be redacted (it is too short), so the job is refused before it
    /// could leak it.
    #[error("job {job}: {source}; no phase was run")]
    Secret {
        /// The job id.
        job: String,
        /// The redactor's refusal, naming the secret (never its value).
        source: RedactError,
    },

    /// A phase declares a secret but no value was given for it.
    #[error(
        "job {job}: phase {phase} declares secret `{name}`, but no value was given for it; \
         provide it with the job's secrets (no phase was run)"
    )]
    MissingSecret {
        /// The job id.
        job: String,
        /// The phase that declares it.
        phase: Phase,
        /// The secret's name.
        name: String,
    },

    /// The job has attachments but no attachments archive was given to run it with.
    #[error(
        "job {job} has attachments ({phases}) but no attachments archive was given; pass the \
         tar.gz the job was submitted with (no phase was run)"
    )]
    MissingAttachments {
        /// The job id.
        job: String,
        /// The phases with attachments, comma separated.
        phases: String,
    },

    /// The attachments archive could not be read.
    #[error("job {job}: attachments archive {}: {source}; no phase was run", path.display())]
    AttachmentsFile {
        /// The job id.
        job: String,
        /// The archive file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The attachments archive was refused (a hostile or broken tarball). Nothing from it was
    /// left in the job directory.
    #[error("job {job}: attachments refused, no phase was run: {source}")]
    Attachments {
        /// The job id.
        job: String,
        /// What the unpacker refused, naming the archive entry.
        source: ArchiveError,
    },

    /// An output file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl JobError {
    /// The phase the error is about, when it is about one.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Self::NoPlugin { phase, .. }
            | Self::UnknownPlugin { phase, .. }
            | Self::Grant { phase, .. }
            | Self::PluginNeedsGrant { phase, .. }
            | Self::AttachmentsNotGrantable { phase, .. }
            | Self::MissingSecret { phase, .. } => Some(*phase),
            _ => None,
        }
    }
}
