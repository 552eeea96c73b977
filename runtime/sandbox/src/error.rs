//! Errors of the sandbox. Each one says which plugin, phase or grant it is about, so the lab
//! engineer reading it knows what to change.

use std::path::PathBuf;

/// Everything that can stop the sandbox from starting a phase. A phase that starts and then
/// fails is not an error: it ends with a [`PhaseEnd`](crate::PhaseEnd).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The wasmtime engine could not be configured.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),

    /// A file the sandbox needed could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The plugin is not a valid component, or it failed to compile.
    #[error("plugin {plugin}: not a loadable WebAssembly component: {reason}")]
    InvalidPlugin {
        /// The plugin's name or file.
        plugin: String,
        /// What wasmtime reported.
        reason: String,
    },

    /// The plugin's manifest is missing or malformed.
    #[error("plugin {plugin}: manifest: {reason}")]
    Manifest {
        /// The plugin's name or file.
        plugin: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The compile cache directory is unsafe to trust (wrong owner or permissions).
    #[error("compile cache {}: {reason}", path.display())]
    UnsafeCache {
        /// The cache directory.
        path: PathBuf,
        /// Why it is not trusted.
        reason: String,
    },

    /// The plugin imports an interface that the phase's effective grant does not include. It
    /// is refused before any of its code runs.
    #[error(
        "plugin {plugin} imports `{import}`, which needs the `{grant}` grant; the effective grant for phase {phase} does not include it ({why})"
    )]
    MissingGrant {
        /// The plugin's name.
        plugin: String,
        /// The phase it was to run.
        phase: String,
        /// The imported interface.
        import: String,
        /// The grant that would link it.
        grant: String,
        /// Which of the three documents left it out.
        why: String,
    },

    /// The plugin imports something the host does not provide at all.
    #[error("plugin {plugin} imports `{import}`, which phasebox does not provide")]
    UnknownImport {
        /// The plugin's name.
        plugin: String,
        /// The imported item.
        import: String,
    },

    /// The job asked for something the plugin does not declare or the policy does not allow.
    #[error("phase {phase}: the job asks for {what}, but {refused_by} does not allow it")]
    GrantRefused {
        /// The phase.
        phase: String,
        /// The request, e.g. `network connect example.com:443`.
        what: String,
        /// `the plugin's manifest` or `the operator's policy`.
        refused_by: String,
    },

    /// The job names an address or network inside a blocked range (loopback, private,
    /// link-local, metadata, ...), and no network in the operator's policy that covers it lies
    /// inside a blocked range: a policy of `*` or `0.0.0.0/0` never opens them.
    #[error(
        "phase {phase}: the job asks for {what}, inside a blocked range (loopback, private, link-local or metadata); \
         the operator's policy opens such a range only by naming a network inside it (e.g. `127.0.0.1:8080` or \
         `10.0.0.0/8`), and `*` or `0.0.0.0/0` does not"
    )]
    BlockedRangeNotNamed {
        /// The phase.
        phase: String,
        /// The request, e.g. `network connect 127.0.0.1:8080`.
        what: String,
    },

    /// A grant names a directory that cannot be mounted.
    #[error("phase {phase}: files grant {guest}: {reason}")]
    BadMount {
        /// The phase.
        phase: String,
        /// The guest path of the mount.
        guest: String,
        /// What is wrong.
        reason: String,
    },

    /// The instance could not be created (resource exhaustion, a start function that trapped).
    #[error("plugin {plugin}: cannot instantiate: {reason}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// What wasmtime reported.
        reason: String,
    },
}

impl SandboxError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
