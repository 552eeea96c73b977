//! The exec handle: commands and file copies over SSH, with a key the agent holds.
//!
//! One SSH connection per DUT is opened on first use and shared by every command and copy;
//! it is re-opened when it has closed, and dropped whenever the DUT's power changes.
//!
//! # Environment variables
//!
//! SSH has an `env` channel request, but OpenSSH's sshd refuses every variable that its
//! `AcceptEnv` does not list, and the default lists only `LANG` and `LC_*`. The command line is
//! no place for a value either: it becomes the argument list of the DUT's shell process, which
//! every user of the DUT can read (`ps`, `/proc/<pid>/cmdline`) and an execve audit log records.
//! So the command line only *names* the variables, and their values travel on the SSH channel's
//! standard input, ahead of the command's own input. The command sent to the DUT is
//!
//! ```text
//! printf '\036phasebox-pid %s\n' "$$"
//! __pb_read() { IFS= read -r __pb_n || exit 125; ... }      # reads one value (see below)
//! __pb_read; NAME1=$__pb_v; export NAME1
//! __pb_read; NAME2=$__pb_v; export NAME2
//! unset -f __pb_read; unset __pb_n __pb_v __pb_i __pb_l
//! <the command>
//! ```
//!
//! run by the user's login shell (which must be POSIX). Each value is sent as its number of
//! lines, then its lines (a value may hold newlines; NUL is refused), each ending in `\n`;
//! `__pb_read` reads them with the shell's `read` builtin, which takes its input byte by byte
//! from a pipe, so the command then reads its own standard input from exactly where the values
//! end (or end of file, when it has none). Only builtins touch the values (`read`, `[`,
//! assignments), so no process is started with a value in its arguments; the exported
//! variables are in the command's environment (`/proc/<pid>/environ`, which only the same
//! user and root can read), as any environment variable is. Names must be
//! `[A-Za-z_][A-Za-z0-9_]*` and are part of the command line. The values are not written to
//! any file, on the agent or on the DUT; they travel inside the encrypted SSH channel. A
//! command run with values whose shell exits with status 125 before running it did not
//! receive them.
//!
//! # Killing a command
//!
//! The first line above makes the shell print its process id behind a marker that
//! [`ExecProcess`] strips from stdout. When a command passes its time limit (or its
//! `ExecProcess` is dropped), the client sends an SSH `KILL` signal request, then runs
//! `kill -KILL -- -<pid>` in a second session on the same connection — sshd makes every session's
//! shell a process group leader, so this ends the command with everything it started (except
//! what moved to a process group of its own) — and closes the channel.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::config::SshExec;
use crate::error::{ConfigError, DeviceError, ErrorKind};
use crate::power::Failure;
use crate::record::{Handle, Shared, Started};

/// A command to run on the DUT.
#[derive(Clone, Default)]
pub struct ExecRequest {
    /// The command, run by the DUT user's login shell (`sh -c`-like), so pipes, redirections and
    /// several lines work.
    pub command: String,
    /// Environment variables for the command, set in order (see the module docs for how they
    /// reach it). `Debug` shows their names only.
    pub env: Vec<(String, String)>,
    /// Time limit; when it passes the command is killed and [`ExecProcess::wait`] fails with
    /// [`ErrorKind::Timeout`]. `None`: no limit.
    pub timeout: Option<Duration>,
    /// Bytes for the command's standard input, which is closed after them. `None`: the command
    /// starts with its standard input already at end of file (as `ssh -n`).
    pub stdin: Option<Bytes>,
}

impl std::fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRequest")
            .field("command", &self.command)
            .field("env", &self.env.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("stdin", &self.stdin.as_ref().map(Bytes::len))
            .finish()
    }
}

impl ExecRequest {
    /// A request to run `command` with no environment, no time limit and no input.
    pub fn new(command: impl Into<String>) -> Self {
        ExecRequest { command: command.into(), ..Default::default() }
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the bytes for standard input.
    pub fn stdin(mut self, data: impl Into<Bytes>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// The command line sent to the DUT (the environment's names, read from stdin, then the
    /// command) and what goes to its standard input before the command's own (the values).
    /// Fails for an invalid variable name or a NUL byte.
    fn command_line(&self) -> Result<(String, Zeroizing<Vec<u8>>), String> {
        if self.command.contains('\0') {
            return Err("the command contains a NUL byte".into());
        }
        let mut line = String::from(PID_PREAMBLE);
        // Sized up front: growing would leave copies of values in freed memory.
        let mut values = Zeroizing::new(Vec::with_capacity(self.env.iter().map(|(_, v)| v.len() + 24).sum()));
        for (name, value) in &self.env {
            let mut chars = name.chars();
            let valid = chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            if value.contains('\0') {
                return Err(format!("the value of environment variable {name} contains a NUL byte"));
            }
            if values.is_empty() {
                line.push_str(READ_VALUE);
            }
            line.push_str(&format!("__pb_read; {name}=$__pb_v; export {name}\n"));
            values.extend_from_slice(format!("{}\n", value.split('\n').count()).as_bytes());
            for piece in value.split('\n') {
                values.extend_from_slice(piece.as_bytes());
                values.push(b'\n');
            }
        }
        if !values.is_empty() {
            line.push_str("unset -f __pb_read; unset __pb_n __pb_v __pb_i __pb_l\n");
        }
        line.push_str(&self.command);
        Ok((line, values))
    }
}

/// Defines `__pb_read`, which reads one value from standard input into `__pb_v` with shell
/// builtins only: its number of lines, then the lines, joined with newlines. Exits with 125
/// when the input ends early.
const READ_VALUE: &str = "__pb_read() { IFS= read -r __pb_n || exit 125; __pb_v=; __pb_i=0; \
while [ \"$__pb_i\" -lt \"$__pb_n\" ]; do IFS= read -r __pb_l || exit 125; \
if [ \"$__pb_i\" -gt 0 ]; then __pb_v=\"$__pb_v\n\"; fi; __pb_v=\"$__pb_v$__pb_l\"; \
__pb_i=$((__pb_i + 1)); done; }\n";

/// The first line of every command: the shell reports its process id (which sshd's `setsid`
/// makes a process group id too) on stdout, behind a marker the client strips, so that a
/// command past its time limit can be killed with its whole process group. OpenSSH's `signal`
/// channel request alone does not do that: sshd signals only the shell, and only for non-root
/// users (for root it answers "session signalling requires privilege separation").
const PID_PREAMBLE: &str = "printf '\\036phasebox-pid %s\\n' \"$$\"\n";
/// What the preamble prints, before the number.
const PID_MARKER: &[u8] = b"\x1ephasebox-pid ";

/// Quotes `value` for a POSIX shell: wraps it in single quotes, writing each `'` as `'\''`.
/// The result is one word whose value is exactly `value`, whatever it contains (`$`, `` ` ``,
/// `"`, `;`, spaces, newlines).
pub fn shell_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a command on the DUT ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    /// The exit code, when the command exited.
    pub code: Option<u32>,
    /// The signal name without `SIG` (`KILL`, `TERM`, …), when a signal ended it.
    pub signal: Option<String>,
}

impl ExitStatus {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("no exit status"),
        }
    }
}

/// A finished command's collected output ([`ExecProcess::output`]).
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Everything written to standard output.
    pub stdout: Bytes,
    /// Everything written to standard error.
    pub stderr: Bytes,
    /// How the command ended.
    pub status: ExitStatus,
    /// From the start of the request to the end of the command.
    pub duration: Duration,
}

/// Parses an OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
pub(crate) fn parse_host_key(line: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(line.trim()).map_err(|e| format!("not an OpenSSH public key line: {e}"))
}

/// The client side of the SSH connection: checks the server's host key.
struct Client {
    expected: Option<PublicKey>,
    device: String,
}

#[derive(Debug)]
enum ClientError {
    Ssh(russh::Error),
    HostKeyMismatch,
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, ClientError> {
        let Some(expected) = &self.expected else {
            return Ok(true); // insecure_accept_any_host_key
        };
        match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == expected.key_data() => Ok(true),
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                tracing::warn!(
                    device = %self.device,
                    offered = %key.fingerprint(Default::default()),
                    expected = %expected.fingerprint(Default::default()),
                    "SSH host key mismatch"
                );
                Err(ClientError::HostKeyMismatch)
            }
            PublicKeyOrCertificate::Certificate(_) => {
                tracing::warn!(device = %self.device, "SSH server offered a host certificate; a plain host key is configured");
                Err(ClientError::HostKeyMismatch)
            }
        }
    }
}

fn ssh_failure(e: ClientError) -> Failure {
    match e {
        ClientError::HostKeyMismatch | ClientError::Ssh(russh::Error::UnknownKey) => {
            (ErrorKind::Auth, "the SSH server's host key is not the configured one".into())
        }
        ClientError::Ssh(russh::Error::IO(e)) => {
            (ErrorKind::Unreachable, format!("could not reach the SSH server: {e}"))
        }
        ClientError::Ssh(russh::Error::Disconnect | russh::Error::HUP) => {
            (ErrorKind::Unreachable, "the SSH server closed the connection".into())
        }
        ClientError::Ssh(
            e @ (russh::Error::KeepaliveTimeout | russh::Error::InactivityTimeout | russh::Error::ConnectionTimeout),
        ) => (ErrorKind::Closed, format!("the SSH connection was lost: {e}")),
        ClientError::Ssh(e) => (ErrorKind::Failed, format!("SSH: {e}")),
    }
}

type Connection = Arc<client::Handle<Client>>;

/// The SSH side of one DUT: its settings, the agent's key, and the shared connection.
pub(crate) struct SshLink {
    config: SshExec,
    key: Arc<PrivateKey>,
    host_key: Option<PublicKey>,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl SshLink {
    /// Loads the private key (and the host key file, if one is configured).
    pub(crate) fn new(device: &str, config: &SshExec) -> Result<Self, ConfigError> {
        let key_text = Zeroizing::new(std::fs::read_to_string(&config.key_file).map_err(|e| {
            ConfigError::new(device, "exec.ssh.key_file", format!("cannot read {}: {e}", config.key_file.display()))
        })?);
        let key = russh::keys::decode_secret_key(&key_text, None).map_err(|e| {
            ConfigError::new(
                device,
                "exec.ssh.key_file",
                format!(
                    "{} is not a usable private key (passphrase-protected keys are not supported): {e}",
                    config.key_file.display()
                ),
            )
        })?;
        let host_key = match (&config.host_key, &config.host_key_file) {
            (Some(line), _) => {
                Some(parse_host_key(line).map_err(|m| ConfigError::new(device, "exec.ssh.host_key", m))?)
            }
            (None, Some(path)) => {
                let text =
                    read_host_key_file(path).map_err(|m| ConfigError::new(device, "exec.ssh.host_key_file", m))?;
                Some(parse_host_key(&text).map_err(|m| ConfigError::new(device, "exec.ssh.host_key_file", m))?)
            }
            (None, None) => None,
        };
        Ok(SshLink { config: config.clone(), key: Arc::new(key), host_key, connection: tokio::sync::Mutex::new(None) })
    }

    /// Forgets the shared connection (the DUT's power changed, or it failed).
    pub(crate) async fn invalidate(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.disconnect(russh::Disconnect::ByApplication, "", "en").await;
        }
    }

    /// Opens a new connection and logs in, within the connect timeout.
    async fn connect(&self, device: &str, limit: Duration) -> Result<Connection, Failure> {
        let config = client::Config {
            keepalive_interval: Some(self.config.keepalive_interval),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        let handler = Client { expected: self.host_key.clone(), device: device.to_owned() };
        let address = (self.config.host.clone(), self.config.port);
        let login = async {
            let mut handle = client::connect(Arc::new(config), address, handler).await.map_err(ssh_failure)?;
            let hash = if self.key.algorithm().is_rsa() {
                handle.best_supported_rsa_hash().await.map_err(|e| ssh_failure(e.into()))?.flatten()
            } else {
                None
            };
            let auth = handle
                .authenticate_publickey(self.config.user.clone(), PrivateKeyWithHashAlg::new(self.key.clone(), hash))
                .await
                .map_err(|e| ssh_failure(e.into()))?;
            if !auth.success() {
                return Err((ErrorKind::Auth, "the SSH server refused the agent's key".to_string()));
            }
            Ok(Arc::new(handle))
        };
        match tokio::time::timeout(limit, login).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(failure)) => {
                tracing::info!(device, host = %self.config.host, port = self.config.port, error = %failure.1, "SSH connection failed");
                Err(failure)
            }
            Err(_) => {
                Err((ErrorKind::Timeout, format!("could not connect and log in to the SSH server within {limit:?}")))
            }
        }
    }

    /// The shared connection, opened if there is none or it has closed.
    async fn connection(&self, device: &str) -> Result<Connection, Failure> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let connection = self.connect(device, self.config.connect_timeout).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Opens a session channel, on a fresh connection if the shared one turns out dead.
    async fn open_channel(&self, device: &str) -> Result<(russh::Channel<client::Msg>, Connection), Failure> {
        let limit = self.config.connect_timeout;
        let mut last = None;
        for _ in 0..2 {
            let connection = self.connection(device).await?;
            match tokio::time::timeout(limit, connection.channel_open_session()).await {
                Ok(Ok(channel)) => return Ok((channel, connection)),
                Ok(Err(e)) => last = Some(ssh_failure(e.into())),
                Err(_) => {
                    last = Some((ErrorKind::Timeout, format!("the SSH server did not open a session within {limit:?}")))
                }
            }
            // Later commands use a new connection; commands still running on this one keep it
            // (a server may refuse one more session, e.g. past OpenSSH's MaxSessions, while the
            // connection itself is fine).
            self.forget(&connection).await;
        }
        Err(last.expect("two attempts made"))
    }

    /// Removes `connection` from the cache (if it is still the cached one) without closing it.
    async fn forget(&self, connection: &Connection) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|cached| Arc::ptr_eq(cached, connection)) {
            *slot = None;
        }
    }

    /// Tries new connections until one works or `timeout` passes; the one that works replaces
    /// the cached connection (which is not closed: commands may still run on it).
    pub(crate) async fn wait_reachable(&self, device: &str, timeout: Duration) -> Result<u32, Failure> {
        let deadline = Instant::now() + timeout;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let failure = match self.connect(device, remaining.min(self.config.connect_timeout)).await {
                Ok(connection) => {
                    *self.connection.lock().await = Some(connection);
                    return Ok(attempts);
                }
                Err(failure) if failure.0 == ErrorKind::Auth => return Err(failure),
                Err(failure) => failure,
            };
            if Instant::now() + Duration::from_millis(250) >= deadline {
                return Err((
                    ErrorKind::Timeout,
                    format!("not reachable within {timeout:?} ({attempts} attempts; last: {})", failure.1),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts a command.
    pub(crate) async fn start(
        &self,
        shared: Arc<Shared>,
        operation: &'static str,
        record: bool,
        request: ExecRequest,
    ) -> Result<ExecProcess, DeviceError> {
        let started = Started::now();
        let fail = |(kind, detail): Failure| {
            let error = shared.error(Handle::Exec, operation, kind, detail);
            if record {
                shared.record(Handle::Exec, operation, started, false, error.to_string());
            }
            error
        };
        let (command, values) = request.command_line().map_err(|m| fail((ErrorKind::InvalidRequest, m)))?;
        let (channel, connection) = self.open_channel(&shared.name).await.map_err(fail)?;
        channel.exec(true, command.as_bytes()).await.map_err(|e| fail(ssh_failure(e.into())))?;
        let (read, write) = channel.split();
        let write = Arc::new(write);
        let stdin_task = {
            let write = write.clone();
            let stdin = request.stdin.clone();
            tokio::spawn(async move {
                // The environment's values first, then the command's own input.
                if !values.is_empty() && write.data(&values[..]).await.is_err() {
                    return;
                }
                drop(values);
                if let Some(data) = stdin
                    && !data.is_empty()
                    && write.data_bytes(data).await.is_err()
                {
                    return;
                }
                let _ = write.eof().await;
            })
        };
        Ok(ExecProcess {
            shared,
            operation,
            record,
            read,
            write,
            stdin_task,
            started,
            deadline: request.timeout.map(|t| Instant::now() + t),
            timeout: request.timeout,
            status: None,
            state: State::Running,
            output_bytes: 0,
            pid: None,
            marker: Some(BytesMut::new()),
            pending_end: None,
            connection,
        })
    }

    /// `copy_to`: writes `data` to `remote_path` with `cat`.
    pub(crate) async fn copy_to(&self, shared: Arc<Shared>, remote_path: &str, data: Bytes) -> Result<(), DeviceError> {
        let request = ExecRequest::new(format!("cat > {}", shell_quote(remote_path)))
            .stdin(data)
            .timeout(self.config.copy_timeout);
        let output = self.start(shared.clone(), "copy-to", false, request).await?.collect(0).await?;
        check_copy(&shared, "copy-to", &output)
    }

    /// `copy_from`: reads `remote_path` with `cat`, up to `max_copy_bytes`.
    pub(crate) async fn copy_from(&self, shared: Arc<Shared>, remote_path: &str) -> Result<Bytes, DeviceError> {
        let request =
            ExecRequest::new(format!("cat -- {}", shell_quote(remote_path))).timeout(self.config.copy_timeout);
        let limit = self.config.max_copy_bytes;
        let output = self.start(shared.clone(), "copy-from", false, request).await?.collect(limit).await?;
        check_copy(&shared, "copy-from", &output)?;
        Ok(output.stdout)
    }
}

fn read_host_key_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} holds no key", path.display()))
}

fn check_copy(shared: &Shared, operation: &'static str, output: &ExecOutput) -> Result<(), DeviceError> {
    if output.status.success() {
        return Ok(());
    }
    // `cat`'s complaint comes from the DUT ("No such file or directory"), not from the operator's
    // configuration: it is safe to pass on.
    let stderr = String::from_utf8_lossy(&output.stderr[..output.stderr.len().min(300)]);
    Err(shared.error(Handle::Exec, operation, ErrorKind::Failed, format!("{} ({})", stderr.trim(), output.status)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running,
    Exited,
    TimedOut,
    Lost(String),
    OverLimit,
}

/// A command running on the DUT.
///
/// Read its output with [`next_output`](Self::next_output), then learn how it ended with
/// [`wait`](Self::wait); or collect everything with [`output`](Self::output). If the time
/// limit passes, or the process is dropped before the command ended, the command is killed
/// (an SSH `KILL` signal request, then the channel is closed).
pub struct ExecProcess {
    shared: Arc<Shared>,
    operation: &'static str,
    record: bool,
    read: ChannelReadHalf,
    write: Arc<ChannelWriteHalf<client::Msg>>,
    stdin_task: JoinHandle<()>,
    started: Started,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    status: Option<ExitStatus>,
    state: State,
    output_bytes: u64,
    /// The remote shell's process id, once its marker line has been read.
    pid: Option<u32>,
    /// Stdout held back while looking for the marker line; `None` once it was handled.
    marker: Option<BytesMut>,
    /// An end that arrived while stdout was held back: concluded after the held output.
    pending_end: Option<State>,
    /// For killing: the connection the command runs on.
    connection: Connection,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("device", &self.shared.name)
            .field("state", &self.state)
            .field("status", &self.status)
            .finish()
    }
}

impl ExecProcess {
    /// The next chunk of output, in the order the DUT sent it; `None` once the command has ended
    /// (or its time limit passed, or the connection was lost: [`wait`](Self::wait) tells).
    pub async fn next_output(&mut self) -> Option<(Stream, Bytes)> {
        while self.state == State::Running {
            if let Some(end) = self.pending_end.take() {
                self.conclude(end);
                break;
            }
            let message = match self.deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, self.read.wait()).await {
                    Ok(message) => message,
                    Err(_) => {
                        self.kill().await;
                        self.conclude(State::TimedOut);
                        return None;
                    }
                },
                None => self.read.wait().await,
            };
            match message {
                Some(ChannelMsg::Data { data }) => {
                    let Some(data) = self.strip_marker(data) else { continue };
                    self.output_bytes += data.len() as u64;
                    return Some((Stream::Stdout, data));
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    self.output_bytes += data.len() as u64;
                    return Some((Stream::Stderr, data));
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    self.status = Some(ExitStatus { code: Some(exit_status), signal: None });
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    self.status = Some(ExitStatus { code: None, signal: Some(signal_text(&signal_name)) });
                }
                Some(ChannelMsg::Failure) => {
                    self.conclude(State::Lost("the SSH server refused to run the command".into()));
                }
                Some(ChannelMsg::Close) | None => {
                    let state = if self.status.is_some() {
                        State::Exited
                    } else {
                        State::Lost("the connection closed before the command reported how it ended".into())
                    };
                    if let Some(held) = self.marker.take().filter(|held| !held.is_empty()) {
                        self.pending_end = Some(state);
                        self.output_bytes += held.len() as u64;
                        return Some((Stream::Stdout, held.freeze()));
                    }
                    self.conclude(state);
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Removes the shell's process id line from the start of stdout. Returns what is left to
    /// pass on (`None`: nothing yet).
    fn strip_marker(&mut self, data: Bytes) -> Option<Bytes> {
        strip_marker(&mut self.marker, &mut self.pid, data)
    }

    /// Waits for the command to end, discarding output not yet read, and returns how it ended.
    ///
    /// Fails with [`ErrorKind::Timeout`] when the time limit passed (the command was killed) and
    /// with [`ErrorKind::Closed`] when the connection ended without an exit status (for example
    /// because the DUT lost power).
    ///
    /// Takes `&mut self` so that it can follow [`next_output`](Self::next_output) on a process
    /// held behind a reference; once the command has ended it returns the same answer again.
    pub async fn wait(&mut self) -> Result<ExitStatus, DeviceError> {
        while self.next_output().await.is_some() {}
        self.result()
    }

    /// Waits for the command to end and returns all of its output (kept in memory) with its
    /// exit status. Fails like [`wait`](Self::wait).
    pub async fn output(self) -> Result<ExecOutput, DeviceError> {
        self.collect(0).await
    }

    /// Collects the output; `limit` > 0 caps stdout (the command is killed past it).
    async fn collect(mut self, limit: u64) -> Result<ExecOutput, DeviceError> {
        let mut stdout = BytesMut::new();
        let mut stderr = BytesMut::new();
        while let Some((stream, data)) = self.next_output().await {
            match stream {
                Stream::Stdout => {
                    if limit > 0 && stdout.len() as u64 + data.len() as u64 > limit {
                        self.kill().await;
                        self.conclude(State::OverLimit);
                        break;
                    }
                    stdout.extend_from_slice(&data);
                }
                // stderr is diagnostics: keep its first 64 KiB.
                Stream::Stderr => {
                    let room = (64usize << 10).saturating_sub(stderr.len());
                    stderr.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
        let status = self.result()?;
        Ok(ExecOutput { stdout: stdout.freeze(), stderr: stderr.freeze(), status, duration: self.started.elapsed() })
    }

    fn result(&self) -> Result<ExitStatus, DeviceError> {
        let error = |kind, detail: String| Err(self.shared.error(Handle::Exec, self.operation, kind, detail));
        match &self.state {
            State::Exited => Ok(self.status.clone().expect("exited means a status")),
            State::TimedOut => error(
                ErrorKind::Timeout,
                format!("no exit within {:?}; the command was killed", self.timeout.unwrap_or_default()),
            ),
            State::OverLimit => error(ErrorKind::LimitExceeded, "the file is larger than the copy limit".into()),
            State::Lost(why) => error(ErrorKind::Closed, why.clone()),
            State::Running => unreachable!("next_output returns None only once the command has ended"),
        }
    }

    /// Leaves the running state, once, and records how the command ended.
    fn conclude(&mut self, state: State) {
        if self.state != State::Running {
            return;
        }
        self.state = state;
        self.stdin_task.abort();
        if self.record {
            let (ok, detail) = match self.result() {
                Ok(status) => (true, format!("{status}, {} bytes of output", self.output_bytes)),
                Err(e) => (false, e.to_string()),
            };
            self.shared.record(Handle::Exec, self.operation, self.started, ok, detail);
        }
    }

    /// Kills the command: an SSH `KILL` signal request, then its process group from a second
    /// session, then the channel is closed.
    async fn kill(&self) {
        kill_remote(self.write.clone(), self.connection.clone(), self.pid).await;
    }
}

/// Looks for the marker line at the start of stdout (`held` collects stdout until it is found
/// or ruled out) and records the process id it names. Returns the output to pass on.
fn strip_marker(held_slot: &mut Option<BytesMut>, pid: &mut Option<u32>, data: Bytes) -> Option<Bytes> {
    let Some(held) = held_slot.as_mut() else { return Some(data) };
    held.extend_from_slice(&data);
    let prefix = held.len().min(PID_MARKER.len());
    let newline = held.iter().position(|b| *b == b'\n');
    let too_long = newline.is_none_or(|n| n > 32) && held.len() > 32;
    if held[..prefix] != PID_MARKER[..prefix] || too_long {
        // Something else printed first (a chatty login script): pass everything on.
        return held_slot.take().map(BytesMut::freeze);
    }
    let newline = newline?;
    let line = held.split_to(newline + 1);
    *pid = std::str::from_utf8(&line[PID_MARKER.len()..newline]).ok().and_then(|p| p.trim().parse().ok());
    let rest = held_slot.take().expect("held").freeze();
    (!rest.is_empty()).then_some(rest)
}

async fn kill_remote(write: Arc<ChannelWriteHalf<client::Msg>>, connection: Connection, pid: Option<u32>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = write.signal(Sig::KILL).await;
        if let Some(pid) = pid.filter(|pid| *pid > 1)
            && let Ok(mut killer) = connection.channel_open_session().await
            && killer.exec(true, format!("kill -KILL -- -{pid} {pid} 2>/dev/null; true")).await.is_ok()
        {
            while let Some(message) = killer.wait().await {
                if matches!(message, ChannelMsg::Close) {
                    break;
                }
            }
        }
        let _ = write.close().await;
    })
    .await;
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if self.state != State::Running {
            return;
        }
        self.conclude(State::Lost("dropped before the command ended; it was killed".into()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(kill_remote(self.write.clone(), self.connection.clone(), self.pid));
        }
    }
}

fn signal_text(signal: &Sig) -> String {
    let text = format!("{signal:?}");
    // `Sig::Custom("USR2")` debug-prints as `Custom("USR2")`.
    text.strip_prefix("Custom(\"").and_then(|s| s.strip_suffix("\")")).map(str::to_owned).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$HOME; `id` \"x\""), "'$HOME; `id` \"x\"'");
    }

    #[test]
    fn command_lines_name_the_variables_and_values_go_to_stdin() {
        let plain = ExecRequest::new("uname -a");
        let (line, values) = plain.command_line().unwrap();
        assert_eq!(line, "printf '\\036phasebox-pid %s\\n' \"$$\"\nuname -a");
        assert!(values.is_empty());
        let with_env = ExecRequest::new("env").env("A", "v1").env("_B2", "x y\nline 2\n");
        let (line, values) = with_env.command_line().unwrap();
        assert_eq!(
            line,
            format!(
                "{PID_PREAMBLE}{READ_VALUE}__pb_read; A=$__pb_v; export A\n__pb_read; _B2=$__pb_v; export _B2\n\
                 unset -f __pb_read; unset __pb_n __pb_v __pb_i __pb_l\nenv"
            )
        );
        assert!(!line.contains("v1") && !line.contains("x y"), "no value in the command line: {line}");
        assert_eq!(&values[..], b"1\nv1\n3\nx y\nline 2\n\n");
        for bad in ["", "1A", "A-B", "A B", "\u{c9}"] {
            assert!(ExecRequest::new("true").env(bad, "v").command_line().is_err(), "{bad:?}");
        }
        assert!(ExecRequest::new("true").env("A", "a\0b").command_line().is_err());
    }

    /// The command line and the values, run by a real POSIX shell: the command sees every value
    /// exactly, then reads its own standard input.
    #[test]
    fn a_posix_shell_reads_the_values_and_then_the_commands_input() {
        let tricky = "it's \"quoted\" $HOME `id`; echo injected\n\n  second line \\n\t\n";
        let request = ExecRequest::new("printf '<%s>' \"$A\" \"$TRICKY\"; cat").env("A", "plain").env("TRICKY", tricky);
        let (line, values) = request.command_line().unwrap();
        for shell in ["/bin/sh", "/bin/bash", "/bin/dash"] {
            if !Path::new(shell).exists() {
                continue;
            }
            let mut child = std::process::Command::new(shell)
                .arg("-c")
                .arg(&line)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            std::io::Write::write_all(&mut stdin, &values).unwrap();
            std::io::Write::write_all(&mut stdin, b"the command's own input").unwrap();
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let (_, rest) = text.split_once('\n').expect("the pid line");
            assert_eq!(rest, format!("<plain><{tricky}>the command's own input"), "{shell}");
        }
    }

    #[test]
    fn the_pid_marker_is_stripped_from_stdout() {
        let run = |chunks: &[&[u8]]| {
            let (mut held, mut pid) = (Some(BytesMut::new()), None);
            let out: Vec<u8> = chunks
                .iter()
                .filter_map(|c| strip_marker(&mut held, &mut pid, Bytes::copy_from_slice(c)))
                .flat_map(|b| b.to_vec())
                .collect();
            (String::from_utf8(out).unwrap(), pid, held.map(|h| h.len()))
        };
        assert_eq!(run(&[b"\x1ephasebox-pid 42\nhello\n"]), ("hello\n".into(), Some(42), None));
        assert_eq!(run(&[b"\x1ephase", b"box-pid 7", b"\n", b"out"]), ("out".into(), Some(7), None));
        assert_eq!(run(&[b"\x1ephasebox-pid 9\n"]), (String::new(), Some(9), None));
        // Something else came first: everything passes, no pid.
        assert_eq!(run(&[b"motd\n\x1ephasebox-pid 9\n"]), ("motd\n\x1ephasebox-pid 9\n".into(), None, None));
        // Still undecided: held back.
        assert_eq!(run(&[b"\x1ephasebox-p"]), (String::new(), None, Some(11)));
    }

    #[test]
    fn debug_hides_env_values() {
        let request = ExecRequest::new("run-tests").env("TOKEN", "s3cr3t-value");
        let debug = format!("{request:?}");
        assert!(debug.contains("TOKEN") && !debug.contains("s3cr3t-value"), "{debug}");
    }
}
