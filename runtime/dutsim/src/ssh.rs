//! The simulated DUT's SSH server: public-key login for one user, `exec` only.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::machine::{Machine, kill_group};

/// Accepts SSH connections until the machine's token is cancelled. While the machine is not
/// booted, connections are closed at once, as by a host whose sshd is not running.
pub(crate) async fn serve(
    listener: TcpListener,
    machine: Arc<Machine>,
    host_key: PrivateKey,
    authorized: PublicKey,
    user: String,
) {
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        nodelay: true,
        ..Default::default()
    });
    let authorized = Arc::new(authorized);
    loop {
        let Some((socket, peer)) = machine.accept(&listener, "ssh").await else { return };
        if !machine.is_booted() {
            tracing::debug!(%peer, "dutsim ssh: not booted, closing the connection");
            drop(socket);
            continue;
        }
        // russh applies `nodelay` only to sockets it accepts itself: without it, the exit
        // status of a short command waits ~40 ms for the client's delayed ACK (Nagle).
        let _ = socket.set_nodelay(true);
        let handler = Connection {
            machine: machine.clone(),
            user: user.clone(),
            authorized: authorized.clone(),
            channels: HashMap::new(),
            running: HashMap::new(),
        };
        let config = config.clone();
        let machine = machine.clone();
        machine.tasks.clone().spawn(async move {
            let session = match russh::server::run_stream(config, socket, handler).await {
                Ok(session) => session,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "dutsim ssh handshake failed");
                    return;
                }
            };
            let id = machine.register_session(session.handle());
            tokio::select! {
                result = session => if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "dutsim ssh session ended with an error");
                },
                _ = machine.token.cancelled() => {}
            }
            machine.unregister_session(id);
        });
    }
}

/// One SSH connection.
struct Connection {
    machine: Arc<Machine>,
    user: String,
    authorized: Arc<PublicKey>,
    /// Session channels opened and not yet given a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Process groups of the commands running on this connection's channels.
    running: HashMap<ChannelId, Arc<RunningCommand>>,
}

struct RunningCommand {
    process_group: u32,
    done: std::sync::atomic::AtomicBool,
}

impl RunningCommand {
    fn signal(&self, signal: rustix::process::Signal) {
        if !self.done.load(std::sync::atomic::Ordering::Acquire) {
            kill_group(self.process_group, signal);
        }
    }
}

impl Connection {
    fn accepts(&self, user: &str, key: &PublicKey) -> bool {
        user == self.user && key.key_data() == self.authorized.key_data()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        Ok(if self.accepts(user, offer.public_key) { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(if self.accepts(user, key.public_key) { Auth::Accept } else { Auth::reject() })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.machine.is_booted() {
            self.channels.insert(channel.id(), channel);
            reply.accept().await;
        } else {
            drop(reply); // rejects the channel
        }
        Ok(())
    }

    async fn exec_request(&mut self, id: ChannelId, data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        let (Some(channel), Some(env)) = (self.channels.remove(&id), self.machine.exec_env()) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        let command = String::from_utf8_lossy(data).into_owned();
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .current_dir(&self.machine.dirs.home)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.machine.dirs.bin.display()
                ),
            )
            .env("HOME", &self.machine.dirs.home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .env("SHELL", "/bin/sh")
            .env("LANG", "C.UTF-8")
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!(error = %e, "dutsim ssh: could not start sh");
                session.channel_failure(id)?;
                return Ok(());
            }
        };
        let process_group = child.id().unwrap_or_default();
        let running = Arc::new(RunningCommand { process_group, done: false.into() });
        self.running.insert(id, running.clone());
        session.channel_success(id)?;
        tracing::debug!(channel = ?id, process_group, "dutsim ssh exec");
        let machine = self.machine.clone();
        let handle = session.handle();
        let registration = machine.register_process(process_group);
        self.machine.tasks.spawn(async move {
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("piped");
            let stderr = child.stderr.take().expect("piped");
            let (mut read, write) = channel.split();

            let output = async {
                let out = pump(stdout, |data| write.data_bytes(data));
                let err = pump(stderr, |data| write.extended_data_bytes(1, data));
                tokio::join!(out, err);
                child.wait().await
            };
            let input = async {
                let mut stdin = stdin;
                loop {
                    match read.wait().await {
                        Some(ChannelMsg::Data { data }) => {
                            if let Some(pipe) = stdin.as_mut()
                                && pipe.write_all(&data).await.is_err()
                            {
                                stdin = None;
                            }
                        }
                        Some(ChannelMsg::Eof) => stdin = None,
                        Some(ChannelMsg::Close) | None => return,
                        Some(_) => {}
                    }
                }
            };
            let status = tokio::select! {
                status = output => status.ok(),
                () = input => {
                    // The client closed the channel (or the connection went): the command goes too.
                    kill_group(process_group, rustix::process::Signal::KILL);
                    None
                }
                () = machine.token.cancelled() => {
                    kill_group(process_group, rustix::process::Signal::KILL);
                    None
                }
            };
            running.done.store(true, std::sync::atomic::Ordering::Release);
            // Nothing the command started outlives it.
            kill_group(process_group, rustix::process::Signal::KILL);
            machine.unregister_process(registration);
            if let Some(status) = status {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => {
                        let _ = write.exit_status(code as u32).await;
                    }
                    (None, Some(signal)) => {
                        let _ =
                            handle.exit_signal_request(id, sig_of(signal), false, String::new(), String::new()).await;
                    }
                    (None, None) => {}
                }
                let _ = write.eof().await;
            }
            let _ = write.close().await;
        });
        Ok(())
    }

    async fn signal(&mut self, id: ChannelId, signal: Sig, _session: &mut Session) -> Result<(), Self::Error> {
        if let (Some(running), Some(signal)) = (self.running.get(&id), signal_of(&signal)) {
            tracing::debug!(channel = ?id, ?signal, "dutsim ssh: signal request");
            running.signal(signal);
        }
        Ok(())
    }

    async fn channel_close(&mut self, id: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        if let Some(running) = self.running.remove(&id) {
            running.signal(rustix::process::Signal::KILL);
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Like OpenSSH without AcceptEnv: environment requests are refused.
        session.channel_failure(id)?;
        Ok(())
    }

    async fn shell_request(&mut self, id: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.signal(rustix::process::Signal::KILL);
        }
    }
}

/// Copies a pipe to the channel in chunks until end of file (or until the channel is gone).
async fn pump<R, F, Fut>(mut pipe: R, mut send: F)
where
    R: AsyncRead + Unpin,
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), russh::Error>>,
{
    let mut buffer = vec![0u8; 32 << 10];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if send(Bytes::copy_from_slice(&buffer[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn signal_of(signal: &Sig) -> Option<rustix::process::Signal> {
    use rustix::process::Signal;
    Some(match signal {
        Sig::ABRT => Signal::ABORT,
        Sig::ALRM => Signal::ALARM,
        Sig::FPE => Signal::FPE,
        Sig::HUP => Signal::HUP,
        Sig::ILL => Signal::ILL,
        Sig::INT => Signal::INT,
        Sig::KILL => Signal::KILL,
        Sig::PIPE => Signal::PIPE,
        Sig::QUIT => Signal::QUIT,
        Sig::SEGV => Signal::SEGV,
        Sig::TERM => Signal::TERM,
        Sig::USR1 => Signal::USR1,
        Sig::Custom(_) => return None,
    })
}

fn sig_of(signal: i32) -> Sig {
    use rustix::process::Signal;
    let known = [
        (Signal::ABORT, Sig::ABRT),
        (Signal::ALARM, Sig::ALRM),
        (Signal::FPE, Sig::FPE),
        (Signal::HUP, Sig::HUP),
        (Signal::ILL, Sig::ILL),
        (Signal::INT, Sig::INT),
        (Signal::KILL, Sig::KILL),
        (Signal::PIPE, Sig::PIPE),
        (Signal::QUIT, Sig::QUIT),
        (Signal::SEGV, Sig::SEGV),
        (Signal::TERM, Sig::TERM),
        (Signal::USR1, Sig::USR1),
    ];
    known
        .into_iter()
        .find(|(s, _)| s.as_raw() == signal)
        .map(|(_, sig)| sig)
        .unwrap_or_else(|| Sig::Custom(format!("SIG{signal}")))
}
