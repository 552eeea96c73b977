//! A simulated device under test (DUT) that speaks the same protocols as real lab hardware:
//!
//! - **SSH** (a russh server on `127.0.0.1`): accepts the configured user with one public key;
//!   each `exec` request runs `sh -c <command>` as a local process in the DUT's home directory
//!   (`HOME` points there too), streaming stdout and stderr back and reporting the exit status or
//!   signal. `env` requests are refused, like OpenSSH's default `AcceptEnv`; a `signal` request
//!   signals the command's process group; closing the channel kills it. Works with the
//!   `phasebox-device` client and with OpenSSH's `ssh`.
//! - **A serial console** over raw TCP (as ser2net serves one): while powered on it prints a
//!   boot log naming the image it boots — `Booting <image name> (sha256 <12 hex>)` — then a
//!   login prompt; it echoes what is typed and answers a few commands (`cat image-name`,
//!   `cat /etc/os-release`, `echo …`, `uname -a`, `reboot`). While off it is silent.
//! - **A power controller** over HTTP: `POST /power/on|off|cycle`, `GET /power/status` →
//!   `{"state": "on" | "off"}`. Power off kills every running command, drops every SSH session
//!   and makes SSH refuse new connections; power on replays the boot log, and SSH accepts
//!   connections once boot (after [`DutSimConfig::boot_delay`]) completes.
//! - **Storage**: an image file that the device's flash handle writes. At boot the simulator
//!   reads it: the image's name is the value of its first `IMAGE_NAME=` line within the first
//!   4 KiB (else `raw image`), and its identity is the SHA-256 of the whole file. The booted
//!   image is what the console prints, what commands see in `$DUT_IMAGE` and
//!   `$DUT_IMAGE_SHA256`, and what the file `image-name` in the home directory holds.
//!   Commands see the simulated `/dev/console` as `$DUT_CONSOLE`: what they append to it
//!   appears on the serial console, as a real system's kernel and services print there.
//!
//! - **Firmware** managed through a simulated `fwupdmgr` (see the `firmware` module): updates
//!   are staged by `fwupdmgr update` and applied at the next boot.
//!
//! [`DutSim::start`] starts all of it and returns a [`DutSimHandle`] with the addresses and a
//! [`phasebox_device::DeviceConfig`] pointing at the simulator, with a throwaway key pair
//! generated for it. [`BootMode::Never`] makes power-on never finish booting, for tests of a
//! DUT that does not come back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use phasebox_dutsim::{DutSim, DutSimConfig};
//!
//! let sim = DutSim::start(DutSimConfig::default()).await?;
//! let device = phasebox_device::Device::new(sim.device_config())?;
//! device.power_cycle().await?;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod console;
pub mod files;
mod firmware;
mod image;
mod keys;
mod machine;
pub mod openssh;
mod power;
pub mod procs;
mod ssh;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phasebox_device::{
    CleanupAction, ConsoleConfig, DeviceConfig, ExecConfig, FlashConfig, HttpPower, PowerConfig, SshExec, TcpConsole,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use image::{BootedImage, image_name};
use machine::Machine;

/// What power-on does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootMode {
    /// Boot the image in storage: boot log, login prompt, SSH.
    #[default]
    Normal,
    /// Never finish booting: the console prints the firmware banner and then nothing; SSH keeps
    /// refusing connections. For tests of a DUT that does not come back.
    Never,
}

/// How to start a simulated DUT.
#[derive(Debug, Clone)]
pub struct DutSimConfig {
    /// The DUT's name: the device config's `name`, the console's host name. Default `dutsim`.
    pub name: String,
    /// Directory for the simulator's files (`agent/` with the agent's key, `dut/` with storage,
    /// host key and home). Existing keys and storage there are reused, so a fixed directory keeps
    /// the DUT's identity across restarts. `None` (the default): a temporary directory, removed
    /// when the handle is shut down or dropped.
    pub dir: Option<PathBuf>,
    /// The SSH user name that is accepted. Default `ubuntu`.
    pub user: String,
    /// Port for SSH on 127.0.0.1; 0 (the default) picks a free one.
    pub ssh_port: u16,
    /// Port for the console on 127.0.0.1; 0 (the default) picks a free one.
    pub console_port: u16,
    /// Port for the power controller on 127.0.0.1; 0 (the default) picks a free one.
    pub power_port: u16,
    /// Time from "Booting …" to the login prompt and SSH accepting connections. Default 0.
    pub boot_delay: Duration,
    /// What power-on does. Default [`BootMode::Normal`].
    pub boot_mode: BootMode,
    /// Whether the DUT is powered on when the simulator starts; [`DutSim::start`] then returns
    /// once it has booted. Default `true`.
    pub powered_on: bool,
    /// The storage's content when the simulator creates it (an existing storage file is kept).
    /// Default: an image named `factory-image`.
    pub initial_image: Vec<u8>,
    /// The flash limit put in the device config. Default 64 MiB.
    pub storage_max_bytes: u64,
}

impl Default for DutSimConfig {
    fn default() -> Self {
        DutSimConfig {
            name: "dutsim".into(),
            dir: None,
            user: "ubuntu".into(),
            ssh_port: 0,
            console_port: 0,
            power_port: 0,
            boot_delay: Duration::ZERO,
            boot_mode: BootMode::Normal,
            powered_on: true,
            initial_image: b"IMAGE_NAME=factory-image\nthe simulated DUT's factory image\n".to_vec(),
            storage_max_bytes: 64 << 20,
        }
    }
}

/// Starting the simulator failed.
#[derive(Debug, thiserror::Error)]
pub enum DutSimError {
    /// A file or socket operation failed.
    #[error("dutsim: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A key could not be generated, read or written.
    #[error("dutsim: key {what}: {message}")]
    Key {
        /// Which key.
        what: String,
        /// What went wrong.
        message: String,
    },
}

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DutSimError {
    let what = what.into();
    move |source| DutSimError::Io { what, source }
}

/// The simulator's entry point.
#[derive(Debug)]
pub struct DutSim;

/// The simulator's files.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub(crate) root: PathBuf,
    pub(crate) agent_key: PathBuf,
    pub(crate) host_key_pub: PathBuf,
    pub(crate) host_key: PathBuf,
    pub(crate) storage: PathBuf,
    pub(crate) home: PathBuf,
    /// Commands of the simulated system (`fwupdmgr`), first on the `PATH` of every command.
    pub(crate) bin: PathBuf,
    /// Simulated firmware state (see [`firmware`]).
    pub(crate) firmware: PathBuf,
    /// The simulated `/dev/console`: what commands append here appears on the serial console.
    pub(crate) console_in: PathBuf,
}

impl Dirs {
    fn new(root: &Path) -> Self {
        Dirs {
            root: root.to_owned(),
            agent_key: root.join("agent/id_ed25519"),
            host_key_pub: root.join("agent/host_key.pub"),
            host_key: root.join("dut/host_key"),
            storage: root.join("dut/storage.img"),
            home: root.join("dut/home"),
            bin: root.join("dut/bin"),
            firmware: root.join("dut/firmware"),
            console_in: root.join("dut/console"),
        }
    }
}

impl DutSim {
    /// Starts a simulated DUT: creates its files and keys, binds its three listeners on
    /// 127.0.0.1 and, if [`DutSimConfig::powered_on`], boots it.
    pub async fn start(config: DutSimConfig) -> Result<DutSimHandle, DutSimError> {
        let (tempdir, root) = match &config.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp =
                    tempfile::Builder::new().prefix("phasebox-dutsim-").tempdir().map_err(io_error("temp dir"))?;
                let root = temp.path().to_owned();
                (Some(temp), root)
            }
        };
        let dirs = Dirs::new(&root);
        for dir in [root.join("agent"), root.join("dut"), dirs.home.clone()] {
            std::fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        }
        firmware::install(&dirs.firmware, &dirs.bin).map_err(io_error("set up the simulated firmware"))?;
        let keys = keys::Keys::load_or_create(&dirs)?;
        if !dirs.storage.exists() {
            std::fs::write(&dirs.storage, &config.initial_image).map_err(io_error("write the initial storage"))?;
        }

        let bind = |port: u16, what: &'static str| async move {
            TcpListener::bind(("127.0.0.1", port)).await.map_err(io_error(format!("bind the {what} port {port}")))
        };
        let ssh_listener = bind(config.ssh_port, "SSH").await?;
        let console_listener = bind(config.console_port, "console").await?;
        let power_listener = bind(config.power_port, "power").await?;
        let local = |l: &TcpListener| l.local_addr().map_err(io_error("local address"));
        let (ssh_addr, console_addr, power_addr) =
            (local(&ssh_listener)?, local(&console_listener)?, local(&power_listener)?);

        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let machine = Machine::new(&config, dirs.clone(), token.clone(), tasks.clone());
        tasks.spawn(ssh::serve(
            ssh_listener,
            machine.clone(),
            keys.host.clone(),
            keys.agent_public.clone(),
            config.user.clone(),
        ));
        tasks.spawn(console::serve(console_listener, machine.clone()));
        tasks.spawn(console::feed_system_console(machine.clone(), token.clone()));
        tasks.spawn(power::serve(power_listener, machine.clone()));
        if config.powered_on {
            // "Already on": the DUT is up by the time `start` returns.
            machine.power_on();
            if config.boot_mode == BootMode::Normal {
                machine.wait_booted(config.boot_delay + Duration::from_secs(10)).await;
            }
        }

        let device_config = DeviceConfig {
            name: config.name.clone(),
            facts: BTreeMap::from([
                ("arch".to_string(), std::env::consts::ARCH.to_string()),
                ("serial".to_string(), format!("SIM-{:05}", ssh_addr.port())),
                ("model".to_string(), "phasebox dutsim".to_string()),
            ]),
            cleanup: CleanupAction::PowerOff,
            power: Some(PowerConfig::Http(HttpPower {
                base_url: format!("http://{power_addr}/power"),
                timeout: Duration::from_secs(5),
            })),
            console: Some(ConsoleConfig::Tcp(TcpConsole {
                address: console_addr.to_string(),
                connect_timeout: Duration::from_secs(5),
            })),
            exec: Some(ExecConfig::Ssh(SshExec {
                host: "127.0.0.1".into(),
                port: ssh_addr.port(),
                user: config.user.clone(),
                key_file: dirs.agent_key.clone(),
                host_key: Some(keys.host_public_line.clone()),
                host_key_file: None,
                insecure_accept_any_host_key: false,
                connect_timeout: Duration::from_secs(5),
                keepalive_interval: Duration::from_secs(15),
                copy_timeout: Duration::from_secs(120),
                max_copy_bytes: 256 << 20,
            })),
            flash: Some(FlashConfig { target: dirs.storage.clone(), max_bytes: config.storage_max_bytes }),
        };
        tracing::info!(name = %config.name, %ssh_addr, %console_addr, %power_addr, dir = %root.display(), "dutsim started");
        Ok(DutSimHandle {
            machine,
            tasks,
            token,
            ssh_addr,
            console_addr,
            power_addr,
            device_config,
            host_public_line: keys.host_public_line,
            dirs,
            tempdir,
        })
    }
}

/// A running simulated DUT. [`shutdown`](Self::shutdown) stops it; dropping the handle stops
/// it too (without waiting for its tasks).
pub struct DutSimHandle {
    machine: Arc<Machine>,
    tasks: TaskTracker,
    token: CancellationToken,
    ssh_addr: SocketAddr,
    console_addr: SocketAddr,
    power_addr: SocketAddr,
    device_config: DeviceConfig,
    host_public_line: String,
    dirs: Dirs,
    tempdir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for DutSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DutSimHandle")
            .field("name", &self.device_config.name)
            .field("ssh", &self.ssh_addr)
            .field("console", &self.console_addr)
            .field("power", &self.power_addr)
            .field("dir", &self.dirs.root)
            .finish()
    }
}

impl DutSimHandle {
    /// A device config pointing at this simulator: HTTP power, TCP console, SSH with the
    /// generated agent key and the simulator's host key, flash to its storage file.
    pub fn device_config(&self) -> DeviceConfig {
        self.device_config.clone()
    }

    /// The SSH server's address.
    pub fn ssh_addr(&self) -> SocketAddr {
        self.ssh_addr
    }

    /// The console server's address.
    pub fn console_addr(&self) -> SocketAddr {
        self.console_addr
    }

    /// The power controller's address.
    pub fn power_addr(&self) -> SocketAddr {
        self.power_addr
    }

    /// The power controller's base URL (`http://127.0.0.1:<port>/power`).
    pub fn power_url(&self) -> String {
        format!("http://{}/power", self.power_addr)
    }

    /// The simulator's directory.
    pub fn dir(&self) -> &Path {
        &self.dirs.root
    }

    /// The DUT's home directory, where commands run.
    pub fn home_dir(&self) -> &Path {
        &self.dirs.home
    }

    /// The storage image file (the flash target).
    pub fn storage_path(&self) -> &Path {
        &self.dirs.storage
    }

    /// The agent's private key file (the device config's `key_file`).
    pub fn agent_key_path(&self) -> &Path {
        &self.dirs.agent_key
    }

    /// The SSH server's host public key as an OpenSSH line (also in `agent/host_key.pub`).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_line
    }

    /// Whether the DUT is powered on.
    pub fn is_powered(&self) -> bool {
        self.machine.is_powered()
    }

    /// The image the DUT booted, once boot has completed; `None` while off or booting.
    pub fn booted_image(&self) -> Option<BootedImage> {
        self.machine.booted_image()
    }

    /// Waits until the DUT has booted, at most `timeout`; whether it did.
    pub async fn wait_booted(&self, timeout: Duration) -> bool {
        self.machine.wait_booted(timeout).await
    }

    /// Changes what the next power-on does.
    pub fn set_boot_mode(&self, mode: BootMode) {
        self.machine.set_boot_mode(mode);
    }

    /// How many commands are running on the DUT right now.
    pub fn running_commands(&self) -> usize {
        self.machine.running_commands()
    }

    /// Stops the simulator: kills running commands, closes every connection and listener,
    /// waits for its tasks and removes a temporary directory.
    pub async fn shutdown(mut self) {
        self.machine.power_off();
        self.token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(temp) = self.tempdir.take() {
            let _ = temp.close();
        }
    }
}

impl Drop for DutSimHandle {
    fn drop(&mut self) {
        self.machine.kill_all();
        self.token.cancel();
    }
}
