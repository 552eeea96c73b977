//! [`AgentError`]: why the agent, or one of its DUTs, cannot work.

use std::path::PathBuf;

/// Why the agent could not start, or why one DUT is out of service.
///
/// No message carries a client secret, token or secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The agent configuration file is unreadable or invalid.
    #[error("agent config {}: {reason}", path.display())]
    Config {
        /// The file (or `(inline)`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The client secret cannot be read.
    #[error("agent credentials: {reason}")]
    Credentials {
        /// What is wrong (never the secret).
        reason: String,
    },
    /// The server client cannot be set up (address, CA file, plain HTTP refused).
    #[error("server client: {0}")]
    Client(#[from] phasebox_client::ClientError),
    /// One DUT's runner or device configuration, or its plugins, cannot be loaded.
    #[error("dut {dut}: {reason}")]
    Dut {
        /// The DUT.
        dut: String,
        /// What is wrong.
        reason: String,
    },
    /// A file or directory of the spool or work area cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AgentError::Io { path: path.into(), source }
    }
}
