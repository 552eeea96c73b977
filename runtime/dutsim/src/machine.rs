//! The simulated machine: power, boot, the console's line discipline, and the registry of
//! what must die when the power goes (running commands, SSH sessions).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::image::BootedImage;
use crate::{BootMode, Dirs, DutSimConfig};

/// Everything the machine's state changes under one lock, so that console output, power and
/// boot progress stay in order.
struct State {
    powered: bool,
    /// Bumped by every power change; a boot in progress stops when it no longer matches.
    generation: u64,
    booted: Option<BootedImage>,
    boot_mode: BootMode,
    /// The console line being typed.
    line: Vec<u8>,
    last_was_cr: bool,
    logged_in: bool,
}

pub(crate) struct Machine {
    pub(crate) name: String,
    pub(crate) user: String,
    pub(crate) dirs: Dirs,
    boot_delay: Duration,
    state: Mutex<State>,
    console: broadcast::Sender<Bytes>,
    sessions: Mutex<HashMap<u64, russh::server::Handle>>,
    /// Process group ids of running commands.
    processes: Mutex<HashMap<u64, u32>>,
    next_id: AtomicU64,
    pub(crate) token: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Machine {
    pub(crate) fn new(config: &DutSimConfig, dirs: Dirs, token: CancellationToken, tasks: TaskTracker) -> Arc<Self> {
        Arc::new(Machine {
            name: config.name.clone(),
            user: config.user.clone(),
            dirs,
            boot_delay: config.boot_delay,
            state: Mutex::new(State {
                powered: false,
                generation: 0,
                booted: None,
                boot_mode: config.boot_mode,
                line: Vec::new(),
                last_was_cr: false,
                logged_in: false,
            }),
            console: broadcast::channel(1024).0,
            sessions: Mutex::new(HashMap::new()),
            processes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            token,
            tasks,
        })
    }

    /// The next connection to one of the simulator's listeners, or `None` once the simulator
    /// shuts down. Accept errors (out of descriptors, say) are logged and retried.
    pub(crate) async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
        what: &str,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return None,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => return Some(accepted),
                    Err(e) => {
                        tracing::warn!(error = %e, "dutsim {what} accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    pub(crate) fn is_powered(&self) -> bool {
        lock(&self.state).powered
    }

    pub(crate) fn booted_image(&self) -> Option<BootedImage> {
        lock(&self.state).booted.clone()
    }

    pub(crate) fn set_boot_mode(&self, mode: BootMode) {
        lock(&self.state).boot_mode = mode;
    }

    pub(crate) fn subscribe_console(&self) -> broadcast::Receiver<Bytes> {
        self.console.subscribe()
    }

    /// What the running system writes to its console (`$DUT_CONSOLE`): shown while booted,
    /// with newlines as a terminal shows them.
    pub(crate) fn system_console_write(&self, data: &[u8]) {
        let state = lock(&self.state);
        if state.booted.is_some() {
            let text = String::from_utf8_lossy(data).replace("\r\n", "\n").replace('\n', "\r\n");
            self.emit(&state, text);
        }
    }

    /// Console output, sent while the state lock is held (so it is ordered with power changes).
    fn emit(&self, _state: &State, text: impl Into<String>) {
        let _ = self.console.send(Bytes::from(text.into()));
    }

    pub(crate) fn power_on(self: &Arc<Self>) {
        let generation = {
            let mut state = lock(&self.state);
            if state.powered {
                return;
            }
            state.powered = true;
            state.generation += 1;
            state.generation
        };
        tracing::info!(name = %self.name, "dutsim power on");
        let me = self.clone();
        self.tasks.spawn(async move { me.boot(generation).await });
    }

    pub(crate) fn power_off(&self) {
        {
            let mut state = lock(&self.state);
            if !state.powered {
                return;
            }
            state.powered = false;
            state.generation += 1;
            state.booted = None;
            state.logged_in = false;
            state.line.clear();
        }
        tracing::info!(name = %self.name, "dutsim power off");
        self.kill_all();
        let sessions: Vec<_> = lock(&self.sessions).drain().map(|(_, handle)| handle).collect();
        for handle in sessions {
            self.tasks.spawn(async move {
                let _ = handle.disconnect(russh::Disconnect::ByApplication, "power off".into(), String::new()).await;
            });
        }
    }

    pub(crate) fn power_cycle(self: &Arc<Self>) {
        self.power_off();
        self.power_on();
    }

    /// The boot sequence of one power-on; stops as soon as the power changes again.
    async fn boot(self: Arc<Self>, generation: u64) {
        let mode = {
            let state = lock(&self.state);
            if state.generation != generation {
                return;
            }
            self.emit(&state, format!("\r\n\r\nphasebox dutsim firmware 1.0 ({})\r\n", self.name));
            state.boot_mode
        };
        if mode == BootMode::Never {
            tracing::info!(name = %self.name, "dutsim: boot mode `never`, not booting");
            return;
        }
        for applied in crate::firmware::apply_pending(&self.dirs.firmware) {
            let state = lock(&self.state);
            self.emit(&state, format!("fwupd: applied firmware update: {applied}\r\n"));
        }
        let storage = tokio::fs::read(&self.dirs.storage).await.unwrap_or_default();
        let image = BootedImage::from_storage(&storage);
        drop(storage);
        {
            let state = lock(&self.state);
            if state.generation != generation {
                return;
            }
            self.emit(
                &state,
                format!("{}\r\n[    0.000000] Linux version 6.8.0-dutsim (phasebox) #1 SMP\r\n", image.boot_line()),
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(self.boot_delay) => {}
            _ = self.token.cancelled() => return,
        }
        let _ = tokio::fs::write(self.dirs.home.join("image-name"), format!("{}\n", image.name)).await;
        let mut state = lock(&self.state);
        if state.generation != generation {
            return;
        }
        tracing::info!(name = %self.name, image = %image.name, "dutsim booted");
        state.booted = Some(image);
        self.emit(
            &state,
            format!(
                "[    1.000000] systemd[1]: Reached target multi-user.target - Multi-User System.\r\n\r\n{} login: ",
                self.name
            ),
        );
    }

    /// Environment of a command: the booted image, or `None` when the machine is not booted.
    pub(crate) fn exec_env(&self) -> Option<Vec<(&'static str, String)>> {
        let state = lock(&self.state);
        let image = state.booted.as_ref()?;
        Some(vec![
            ("DUT_NAME", self.name.clone()),
            ("DUT_IMAGE", image.name.clone()),
            ("DUT_IMAGE_SHA256", image.sha256.clone()),
            ("DUT_CONSOLE", self.dirs.console_in.display().to_string()),
        ])
    }

    /// Waits until boot completes, at most `timeout`; whether it did.
    pub(crate) async fn wait_booted(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_booted() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    pub(crate) fn is_booted(&self) -> bool {
        lock(&self.state).booted.is_some()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register_session(&self, handle: russh::server::Handle) -> u64 {
        let id = self.next_id();
        lock(&self.sessions).insert(id, handle);
        id
    }

    pub(crate) fn unregister_session(&self, id: u64) {
        lock(&self.sessions).remove(&id);
    }

    pub(crate) fn register_process(&self, process_group: u32) -> u64 {
        let id = self.next_id();
        lock(&self.processes).insert(id, process_group);
        id
    }

    pub(crate) fn unregister_process(&self, id: u64) {
        lock(&self.processes).remove(&id);
    }

    pub(crate) fn running_commands(&self) -> usize {
        lock(&self.processes).len()
    }

    /// Kills every running command's process group.
    pub(crate) fn kill_all(&self) {
        for process_group in lock(&self.processes).values() {
            kill_group(*process_group, rustix::process::Signal::KILL);
        }
    }

    /// Bytes typed on the console: echoed and interpreted while booted, ignored otherwise.
    pub(crate) fn console_input(self: &Arc<Self>, data: &[u8]) {
        let mut reboot = false;
        {
            let mut state = lock(&self.state);
            if state.booted.is_none() {
                return;
            }
            let mut out = String::new();
            for &byte in data {
                match byte {
                    b'\n' if state.last_was_cr => state.last_was_cr = false,
                    b'\r' | b'\n' => {
                        state.last_was_cr = byte == b'\r';
                        out.push_str("\r\n");
                        let line = String::from_utf8_lossy(&std::mem::take(&mut state.line)).into_owned();
                        out.push_str(&self.respond(&mut state, line.trim(), &mut reboot));
                    }
                    0x08 | 0x7f => {
                        state.last_was_cr = false;
                        if state.line.pop().is_some() {
                            out.push_str("\x08 \x08");
                        }
                    }
                    0x03 => {
                        state.last_was_cr = false;
                        state.line.clear();
                        out.push_str("^C\r\n");
                        out.push_str(&self.prompt(&state));
                    }
                    0x20..=0x7e => {
                        state.last_was_cr = false;
                        state.line.push(byte);
                        out.push(byte as char);
                    }
                    _ => state.last_was_cr = false,
                }
            }
            self.emit(&state, out);
        }
        if reboot {
            let me = self.clone();
            self.tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                me.power_cycle();
            });
        }
    }

    fn prompt(&self, state: &State) -> String {
        if state.logged_in { format!("{}@{}:~$ ", self.user, self.name) } else { format!("{} login: ", self.name) }
    }

    /// The answer to one typed line (a login name, or one of a few commands).
    fn respond(&self, state: &mut State, line: &str, reboot: &mut bool) -> String {
        let image = state.booted.clone().expect("only called while booted");
        if !state.logged_in {
            if line.is_empty() {
                return self.prompt(state);
            }
            state.logged_in = true;
            return format!("Welcome to {} (phasebox dutsim)\r\n{}", image.name, self.prompt(state));
        }
        let answer = match line {
            "" => String::new(),
            "cat image-name" | "cat ~/image-name" => format!("{}\r\n", image.name),
            "cat /etc/os-release" => {
                format!(
                    "PRETTY_NAME=\"{}\"\r\nNAME=\"phasebox dutsim\"\r\nIMAGE_SHA256={}\r\n",
                    image.name, image.sha256
                )
            }
            "uname -a" => format!("Linux {} 6.8.0-dutsim #1 SMP {} GNU/Linux\r\n", self.name, std::env::consts::ARCH),
            "exit" | "logout" => {
                state.logged_in = false;
                format!("\r\n{} login: ", self.name)
            }
            "reboot" => {
                *reboot = true;
                return "Rebooting.\r\n".into();
            }
            "echo" => "\r\n".into(),
            _ if line.starts_with("echo ") => format!("{}\r\n", &line[5..]),
            _ => format!("-sh: {}: command not found\r\n", line.split_whitespace().next().unwrap_or(line)),
        };
        if state.logged_in { answer + &self.prompt(state) } else { answer }
    }
}

pub(crate) fn kill_group(process_group: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(process_group).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}
