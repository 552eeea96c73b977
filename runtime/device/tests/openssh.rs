//! The exec handle against a real OpenSSH sshd, started on 127.0.0.1 with a throwaway host key,
//! a throwaway user key and its own config in a temporary directory.
//!
//! Needs `/usr/sbin/sshd` (Debian/Ubuntu: `apt-get install openssh-server`, see
//! `ci-openssh.sh`). Without it the test is skipped with a message, unless
//! `PHASEBOX_REQUIRE_SSHD=1`, which makes a missing sshd a failure (CI sets it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use phasebox_device::{Device, DeviceConfig, ErrorKind, ExecConfig, ExecRequest, SshExec, Stream};
use tokio::process::{Child, Command};

const SSHD: &str = "/usr/sbin/sshd";

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "phasebox-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed");
}

fn current_user() -> String {
    let output = std::process::Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    async fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        keygen(&path("host_key"));
        keygen(&path("user_key"));
        std::fs::copy(path("user_key.pub"), path("authorized_keys")).unwrap();
        // Privilege separation: a root sshd chroots its pre-auth child into /run/sshd.
        if current_user() == "root" && !Path::new("/run/sshd").is_dir() {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (sshd's privilege separation directory)");
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized}\n\
             PidFile none\n\
             StrictModes no\n\
             UsePAM no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers {user}\n\
             LogLevel VERBOSE\n",
            host_key = path("host_key").display(),
            authorized = path("authorized_keys").display(),
            user = current_user(),
        );
        std::fs::write(path("sshd_config"), config).unwrap();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("sshd.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("sshd starts");
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("sshd exited with {status}: {}", std::fs::read_to_string(path("sshd.log")).unwrap_or_default());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Sshd { child, port, dir };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sshd did not listen on port {port}");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn device_config(&self) -> DeviceConfig {
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
                host_key: Some(std::fs::read_to_string(self.path("host_key.pub")).unwrap().trim().to_owned()),
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

    async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn exec_and_copy_against_a_real_openssh_sshd() {
    let _ = tracing_subscriber::fmt().with_env_filter("phasebox=debug,warn").with_test_writer().try_init();
    if !Path::new(SSHD).exists() {
        assert!(
            std::env::var_os("PHASEBOX_REQUIRE_SSHD").is_none(),
            "{SSHD} is missing and PHASEBOX_REQUIRE_SSHD is set: run runtime/device/ci-openssh.sh"
        );
        eprintln!("SKIPPED: {SSHD} is not installed (runtime/device/ci-openssh.sh installs it)");
        return;
    }
    let sshd = Sshd::start().await;
    let device = Device::new(sshd.device_config()).unwrap();
    device.wait_until_reachable(Duration::from_secs(10)).await.unwrap();

    // Output streams in order, with the exit code.
    let mut process = device
        .exec(ExecRequest::new("echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; exit 7"))
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some((stream, data)) = process.next_output().await {
        chunks.push((stream, String::from_utf8(data.to_vec()).unwrap()));
    }
    assert_eq!(
        chunks,
        vec![(Stream::Stdout, "one\n".into()), (Stream::Stderr, "two\n".into()), (Stream::Stdout, "three\n".into())]
    );
    assert_eq!(process.wait().await.unwrap().code, Some(7));

    // The environment reaches the command through sshd (which refuses `env` requests here).
    let tricky = "it's \"quoted\" $HOME `id`; echo injected\nsecond line";
    let output = device
        .exec(ExecRequest::new("printf '<%s>' \"$TRICKY\"; sh -c 'printf \"<%s>\" \"$TRICKY\"'").env("TRICKY", tricky))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("<{tricky}><{tricky}>"));

    // copy_to / copy_from over the same connection.
    let data: Bytes = (0..(1 << 20) + 3).map(|i: u32| (i % 253) as u8).collect::<Vec<_>>().into();
    let remote = sshd.path("copied file.bin");
    device.copy_to(&remote.display().to_string(), data.clone()).await.unwrap();
    assert_eq!(std::fs::read(&remote).unwrap(), data);
    assert_eq!(device.copy_from(&remote.display().to_string()).await.unwrap(), data);
    let error = device.copy_from(&sshd.path("missing").display().to_string()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Failed);

    // A command past its time limit is killed: sshd delivers the KILL signal request to the
    // command's process group.
    let (fg, bg) = (sshd.path("fg.pid"), sshd.path("bg.pid"));
    let command = format!("sleep 30 & echo $! > '{}'; echo $$ > '{}'; wait", bg.display(), fg.display());
    let error = device
        .exec(ExecRequest::new(command).timeout(Duration::from_millis(800)))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    let pids: Vec<u32> =
        [fg, bg].iter().map(|file| std::fs::read_to_string(file).unwrap().trim().parse().unwrap()).collect();
    let mut gone = false;
    for _ in 0..60 {
        if pids.iter().all(|pid| process_gone(*pid)) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = sshd.stop().await;
    assert!(gone, "the timed-out command ({pids:?}) is still running; sshd log:\n{log}");
}
