//! A real OpenSSH `sshd` as the exec handle of a device under test, for tests that must show
//! phasebox works against the SSH server labs run, not only against the simulator's.
//!
//! [`OpenSshd::start`] runs `/usr/sbin/sshd` on 127.0.0.1 (an ephemeral port) as the current
//! user, with a throwaway host key, a throwaway user key and its own configuration, all in a
//! temporary directory; its `AuthorizedKeysFile` is [`OpenSshd::authorized_keys`] there, so
//! nothing outside that directory changes. Debian/Ubuntu: `apt-get install openssh-server`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use phasebox_device::{DeviceConfig, ExecConfig, SshExec};
use tokio::process::{Child, Command};

use crate::DutSimError;

/// Where Debian and Ubuntu install sshd.
pub const SSHD: &str = "/usr/sbin/sshd";
/// Set (to anything) to make a missing sshd a failure rather than a skip; CI sets it.
pub const REQUIRE_ENV: &str = "PHASEBOX_REQUIRE_SSHD";

/// A running throwaway sshd; killed on drop.
pub struct OpenSshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for OpenSshd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSshd").field("port", &self.port).field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

/// The user tests run as (sshd accepts only that user).
pub fn current_user() -> String {
    let output = std::process::Command::new("id").arg("-un").output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&output).trim().to_owned()
}

/// Whether sshd can be started here. `Err` when it is missing and [`REQUIRE_ENV`] is set.
pub fn available() -> Result<bool, String> {
    if Path::new(SSHD).exists() {
        Ok(true)
    } else if std::env::var_os(REQUIRE_ENV).is_some() {
        Err(format!("{SSHD} is missing and {REQUIRE_ENV} is set: run runtime/device/ci-openssh.sh"))
    } else {
        Ok(false)
    }
}

fn keygen(path: &Path) -> Result<(), DutSimError> {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "phasebox-test", "-f"])
        .arg(path)
        .status()
        .map_err(crate::io_error("run ssh-keygen"))?;
    if status.success() {
        Ok(())
    } else {
        Err(crate::io_error("ssh-keygen")(std::io::Error::other(format!("exited with {status}"))))
    }
}

impl OpenSshd {
    /// Starts sshd and waits until it listens.
    pub async fn start() -> Result<OpenSshd, DutSimError> {
        let dir = tempfile::Builder::new().prefix("phasebox-sshd-").tempdir().map_err(crate::io_error("temp dir"))?;
        let path = |name: &str| dir.path().join(name);
        keygen(&path("host_key"))?;
        keygen(&path("user_key"))?;
        std::fs::copy(path("user_key.pub"), path("authorized_keys")).map_err(crate::io_error("authorized_keys"))?;
        // Privilege separation: a root sshd chroots its pre-auth child into /run/sshd.
        if current_user() == "root" && !Path::new("/run/sshd").is_dir() {
            std::fs::create_dir_all("/run/sshd").map_err(crate::io_error("create /run/sshd"))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(crate::io_error("pick a port"))?
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n\
             PidFile none\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
            host_key = path("host_key").display(),
            authorized = path("authorized_keys").display(),
            user = current_user(),
        );
        std::fs::write(path("sshd_config"), config).map_err(crate::io_error("sshd_config"))?;
        let log = std::fs::File::create(path("sshd.log")).map_err(crate::io_error("sshd.log"))?;
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(crate::io_error("start sshd"))?;
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(path("sshd.log")).unwrap_or_default();
                return Err(crate::io_error("sshd")(std::io::Error::other(format!("exited with {status}: {log}"))));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(OpenSshd { child, port, dir });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(crate::io_error("sshd")(std::io::Error::other(format!("did not listen on port {port}"))))
    }

    /// A file in sshd's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The port sshd listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file sshd reads authorized keys from.
    pub fn authorized_keys(&self) -> PathBuf {
        self.path("authorized_keys")
    }

    /// A device with only the exec handle, reaching this sshd with the throwaway user key and
    /// the pinned host key.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig {
            name: "real-sshd".into(),
            facts: Default::default(),
            cleanup: Default::default(),
            power: None,
            console: None,
            exec: Some(ExecConfig::Ssh(SshExec {
                host: "127.0.0.1".into(),
                port: self.port,
                user: current_user(),
                key_file: self.path("user_key"),
                host_key: std::fs::read_to_string(self.path("host_key.pub")).ok().map(|k| k.trim().to_owned()),
                host_key_file: None,
                insecure_accept_any_host_key: false,
                connect_timeout: Duration::from_secs(10),
                keepalive_interval: Duration::from_secs(15),
                copy_timeout: Duration::from_secs(60),
                max_copy_bytes: 64 << 20,
            })),
            flash: None,
        }
    }

    /// Stops sshd; returns its log.
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}
