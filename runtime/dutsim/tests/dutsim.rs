//! The simulated DUT through plain protocol clients: raw HTTP, raw TCP, OpenSSH's `ssh`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use phasebox_dutsim::{BootMode, DutSim, DutSimConfig, DutSimHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECOND: Duration = Duration::from_secs(1);

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_env_filter("phasebox=debug,warn").with_test_writer().try_init();
}

async fn start(config: DutSimConfig) -> DutSimHandle {
    init_tracing();
    DutSim::start(config).await.expect("dutsim starts")
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn http(sim: &DutSimHandle, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(sim.power_addr()).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: pdu\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// Reads console output until `needle` appears (or panics after `timeout`); returns all of it.
async fn read_until(console: &mut TcpStream, needle: &str, timeout: Duration) -> String {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, console.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            other => panic!("{needle:?} not seen ({other:?}); got {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Whatever the console prints within `wait`.
async fn drain(console: &mut TcpStream, wait: Duration) -> String {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, console.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

async fn ssh_accepts(sim: &DutSimHandle) -> bool {
    // A booted DUT greets with its SSH identification string; one that is off closes at once.
    let Ok(mut stream) = TcpStream::connect(sim.ssh_addr()).await else { return false };
    let mut banner = [0u8; 8];
    matches!(tokio::time::timeout(SECOND, stream.read_exact(&mut banner)).await, Ok(Ok(_)) if &banner == b"SSH-2.0-")
}

#[tokio::test]
async fn power_controller_speaks_the_documented_rest_shape() {
    let sim = start(DutSimConfig::default()).await;
    assert_eq!(http(&sim, "GET", "/power/status").await, (200, r#"{"state":"on"}"#.into()));
    assert_eq!(http(&sim, "POST", "/power/off").await, (200, r#"{"state":"off"}"#.into()));
    assert!(!sim.is_powered());
    assert_eq!(http(&sim, "GET", "/power/status").await, (200, r#"{"state":"off"}"#.into()));
    assert_eq!(http(&sim, "POST", "/power/on").await, (200, r#"{"state":"on"}"#.into()));
    assert_eq!(http(&sim, "POST", "/power/cycle").await, (200, r#"{"state":"on"}"#.into()));
    assert_eq!(http(&sim, "GET", "/power/on").await.0, 405);
    assert_eq!(http(&sim, "POST", "/power/status").await.0, 405);
    assert_eq!(http(&sim, "POST", "/power/explode").await.0, 404);
    assert_eq!(http(&sim, "GET", "/").await.0, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn console_boot_log_echo_and_silence_when_off() {
    let sim = start(DutSimConfig::default()).await;
    let mut console = TcpStream::connect(sim.console_addr()).await.unwrap();
    assert_eq!(http(&sim, "POST", "/power/cycle").await.0, 200);
    let boot = read_until(&mut console, "dutsim login: ", 5 * SECOND).await;
    let image = sim.booted_image().unwrap();
    assert!(boot.contains(&format!("Booting factory-image (sha256 {})\r\n", &image.sha256[..12])), "{boot:?}");
    assert!(boot.find("firmware").unwrap() < boot.find("Booting").unwrap());

    console.write_all(b"tester\r").await.unwrap();
    read_until(&mut console, "tester\r\nWelcome to factory-image", 5 * SECOND).await;
    console.write_all(b"echo hi there\r\n").await.unwrap();
    let answer = read_until(&mut console, "ubuntu@dutsim:~$ ", 5 * SECOND).await;
    assert!(answer.contains("echo hi there\r\nhi there\r\n"), "{answer:?}");
    console.write_all(b"frobnicate\r").await.unwrap();
    read_until(&mut console, "-sh: frobnicate: command not found", 5 * SECOND).await;

    // Off: silent, even when typed at.
    assert_eq!(http(&sim, "POST", "/power/off").await.0, 200);
    console.write_all(b"echo anyone?\r").await.unwrap();
    assert_eq!(drain(&mut console, Duration::from_millis(300)).await, "");
    // On again: the boot log is replayed.
    assert_eq!(http(&sim, "POST", "/power/on").await.0, 200);
    read_until(&mut console, "Booting factory-image", 5 * SECOND).await;
    // `reboot` on the console power-cycles.
    read_until(&mut console, "login: ", 5 * SECOND).await;
    console.write_all(b"root\rreboot\r").await.unwrap();
    read_until(&mut console, "Rebooting.", 5 * SECOND).await;
    read_until(&mut console, "Booting factory-image", 5 * SECOND).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn ssh_is_refused_while_off_and_until_boot_completes() {
    let sim = start(DutSimConfig { boot_delay: Duration::from_millis(700), ..DutSimConfig::default() }).await;
    assert!(ssh_accepts(&sim).await);
    assert_eq!(http(&sim, "POST", "/power/off").await.0, 200);
    assert!(!ssh_accepts(&sim).await);
    assert_eq!(sim.booted_image(), None);
    assert_eq!(http(&sim, "POST", "/power/on").await.0, 200);
    assert!(!ssh_accepts(&sim).await, "still booting");
    assert!(sim.wait_booted(5 * SECOND).await);
    assert!(ssh_accepts(&sim).await);
    sim.shutdown().await;
}

#[tokio::test]
async fn never_boot_mode_keeps_the_dut_down() {
    let sim = start(DutSimConfig::default()).await;
    let mut console = TcpStream::connect(sim.console_addr()).await.unwrap();
    sim.set_boot_mode(BootMode::Never);
    assert_eq!(http(&sim, "POST", "/power/cycle").await, (200, r#"{"state":"on"}"#.into()));
    let output = read_until(&mut console, "firmware", 5 * SECOND).await;
    let output = output + &drain(&mut console, Duration::from_millis(500)).await;
    assert!(!output.contains("Booting") && !output.contains("login:"), "{output:?}");
    assert!(!sim.wait_booted(Duration::from_millis(300)).await);
    assert!(!ssh_accepts(&sim).await);
    // Back to normal, it boots again.
    sim.set_boot_mode(BootMode::Normal);
    assert_eq!(http(&sim, "POST", "/power/cycle").await.0, 200);
    assert!(sim.wait_booted(5 * SECOND).await);

    // Starting in never mode: `start` returns while the DUT is still down.
    let down = start(DutSimConfig { boot_mode: BootMode::Never, ..DutSimConfig::default() }).await;
    assert!(down.is_powered() && down.booted_image().is_none());
    down.shutdown().await;
    sim.shutdown().await;
}

fn ssh_command(sim: &DutSimHandle, key: &Path, known_hosts: &Path, command: &str) -> tokio::process::Command {
    let mut ssh = tokio::process::Command::new("ssh");
    ssh.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(key)
        .arg("-p")
        .arg(sim.ssh_addr().port().to_string())
        .arg("ubuntu@127.0.0.1")
        .arg(command)
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    ssh
}

#[tokio::test]
async fn works_with_the_openssh_client() {
    if which("ssh").is_none() {
        assert!(
            std::env::var_os("PHASEBOX_REQUIRE_SSHD").is_none(),
            "ssh is missing: run runtime/device/ci-openssh.sh"
        );
        eprintln!("SKIPPED: OpenSSH's ssh client is not installed");
        return;
    }
    let sim = start(DutSimConfig::default()).await;
    let known_hosts = sim.dir().join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{} {}\n", sim.ssh_addr().port(), sim.host_public_key())).unwrap();

    let mut child = ssh_command(
        &sim,
        sim.agent_key_path(),
        &known_hosts,
        "echo out; echo err >&2; cat; echo \"$DUT_IMAGE\"; exit 3",
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(b"typed in\n").await.unwrap();
    let output = tokio::time::timeout(10 * SECOND, child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\ntyped in\nfactory-image\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("err\n"), "{output:?}");

    // The wrong key is refused.
    let other_key = sim.dir().join("other_key");
    let generated = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(generated.success());
    let output = ssh_command(&sim, &other_key, &known_hosts, "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    sim.shutdown().await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

#[tokio::test]
async fn a_fixed_directory_keeps_keys_and_storage_across_restarts() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = DutSimConfig { dir: Some(dir.path().to_owned()), ..DutSimConfig::default() };
    let first = start(config.clone()).await;
    let host_key = first.host_public_key().to_owned();
    let agent_key = std::fs::read(first.agent_key_path()).unwrap();
    std::fs::write(first.storage_path(), b"IMAGE_NAME=kept\n").unwrap();
    first.shutdown().await;
    assert!(dir.path().join("dut/storage.img").exists(), "a given directory is not removed");

    let second = start(config).await;
    assert_eq!(second.host_public_key(), host_key);
    assert_eq!(std::fs::read(second.agent_key_path()).unwrap(), agent_key);
    assert_eq!(second.booted_image().unwrap().name, "kept");
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(second.agent_key_path()).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600);
    second.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_running_commands_and_removes_its_temp_dir() {
    let sim = start(DutSimConfig::default()).await;
    let dir = sim.dir().to_owned();
    let device = phasebox_device::Device::new(sim.device_config()).unwrap();
    let mut process = device.exec(phasebox_device::ExecRequest::new("echo $$ > pid; sleep 30")).await.unwrap();
    for _ in 0..100 {
        if sim.running_commands() == 1 && sim.home_dir().join("pid").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid: u32 = std::fs::read_to_string(sim.home_dir().join("pid")).unwrap().trim().parse().unwrap();
    sim.shutdown().await;
    assert!(!dir.exists());
    let error = tokio::time::timeout(5 * SECOND, process.wait()).await.unwrap().unwrap_err();
    assert_eq!(error.kind(), phasebox_device::ErrorKind::Closed);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'), "{stat}");
}
