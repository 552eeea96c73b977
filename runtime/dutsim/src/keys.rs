//! The simulator's key pairs: its SSH host key and the agent's login key, generated on first
//! start and reused from its directory afterwards.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey};

use crate::{Dirs, DutSimError};

pub(crate) struct Keys {
    pub(crate) host: PrivateKey,
    pub(crate) host_public_line: String,
    pub(crate) agent_public: PublicKey,
}

impl Keys {
    pub(crate) fn load_or_create(dirs: &Dirs) -> Result<Self, DutSimError> {
        let host = load_or_create(&dirs.host_key, "host")?;
        let agent = load_or_create(&dirs.agent_key, "agent")?;
        let host_public_line = public_line(&host, "host")?;
        std::fs::write(&dirs.host_key_pub, format!("{host_public_line}\n"))
            .map_err(crate::io_error("write the host public key"))?;
        let agent_public_line = public_line(&agent, "agent")?;
        std::fs::write(dirs.agent_key.with_extension("pub"), format!("{agent_public_line}\n"))
            .map_err(crate::io_error("write the agent public key"))?;
        Ok(Keys { agent_public: agent.public_key().clone(), host, host_public_line })
    }
}

fn key_error(what: &str, message: impl ToString) -> DutSimError {
    DutSimError::Key { what: what.into(), message: message.to_string() }
}

fn public_line(key: &PrivateKey, what: &str) -> Result<String, DutSimError> {
    key.public_key().to_openssh().map_err(|e| key_error(what, e))
}

fn load_or_create(path: &Path, what: &str) -> Result<PrivateKey, DutSimError> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(crate::io_error(format!("read {}", path.display())))?;
        return russh::keys::decode_secret_key(&text, None).map_err(|e| key_error(what, e));
    }
    let mut key =
        PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).map_err(|e| key_error(what, e))?;
    key.set_comment(format!("phasebox-dutsim-{what}"));
    let pem = key.to_openssh(LineEnding::LF).map_err(|e| key_error(what, e))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(crate::io_error(format!("create {}", path.display())))?;
    file.write_all(pem.as_bytes()).map_err(crate::io_error(format!("write {}", path.display())))?;
    Ok(key)
}
