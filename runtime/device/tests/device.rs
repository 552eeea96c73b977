//! The device handles against the simulated DUT (`phasebox-dutsim`), which speaks the same
//! protocols as lab hardware: HTTP power, a TCP console, SSH.

use std::time::Duration;

use bytes::Bytes;
use phasebox_device::{
    CleanupAction, Device, DeviceConfig, ErrorKind, ExecRequest, Handle, Pattern, PowerCommands, PowerConfig,
    PowerState, SecretString, Stream,
};
use phasebox_dutsim::{DutSim, DutSimConfig, DutSimHandle};
use sha2::Digest;

const SECOND: Duration = Duration::from_secs(1);

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_env_filter("phasebox=debug,warn").with_test_writer().try_init();
}

async fn sim() -> DutSimHandle {
    init_tracing();
    DutSim::start(DutSimConfig::default()).await.expect("dutsim starts")
}

fn device(sim: &DutSimHandle) -> Device {
    Device::new(sim.device_config()).expect("the simulator's config is valid")
}

/// Waits (briefly) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn power_on_off_cycle_and_status() {
    let sim = sim().await;
    let device = device(&sim);
    assert_eq!(device.power_status().await.unwrap(), PowerState::On);
    assert_eq!(device.power_off().await.unwrap(), PowerState::Off);
    assert!(!sim.is_powered());
    assert_eq!(device.power_status().await.unwrap(), PowerState::Off);
    assert_eq!(device.power_on().await.unwrap(), PowerState::On);
    assert!(sim.is_powered());
    assert_eq!(device.power_cycle().await.unwrap(), PowerState::On);
    assert_eq!(device.power_status().await.unwrap(), PowerState::On);
    device.wait_until_reachable(5 * SECOND).await.unwrap();

    sim.shutdown().await;
}

#[tokio::test]
async fn console_shows_the_boot_line_with_the_image_and_answers() {
    let sim = sim().await;
    let device = device(&sim);
    let mut console = device.console().await.unwrap();
    device.power_cycle().await.unwrap();

    let boot = console.expect("Booting factory-image (sha256 ", 5 * SECOND).await.unwrap();
    assert!(boot.contains("phasebox dutsim firmware"), "{boot:?}");
    let hash = console.expect(Pattern::regex(r"[0-9a-f]{12}\)").unwrap(), 5 * SECOND).await.unwrap();
    let storage = std::fs::read(sim.storage_path()).unwrap();
    let expected = hex::encode(sha2::Sha256::digest(&storage));
    assert_eq!(hash, format!("{})", &expected[..12]));
    console.expect("dutsim login: ", 5 * SECOND).await.unwrap();

    console.write(b"ubuntu\r").await.unwrap();
    console.expect("ubuntu@dutsim:~$ ", 5 * SECOND).await.unwrap();
    console.write(b"cat image-name\r").await.unwrap();
    let answer = console.expect("$ ", 5 * SECOND).await.unwrap();
    assert!(answer.contains("cat image-name\r\nfactory-image\r\n"), "{answer:?}");

    // Nothing more arrives: read returns empty after its timeout.
    assert!(console.read(1024, Duration::from_millis(200)).await.unwrap().is_empty());
    // An expect that times out says what it saw last.
    console.write(b"echo hello there\r").await.unwrap();
    let error = console.expect("never printed", Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(error.to_string().starts_with("device dutsim: console expect: timed out"), "{error}");
    assert!(error.to_string().contains("hello there"), "{error}");
    sim.shutdown().await;
}

#[tokio::test]
async fn exec_streams_output_in_order_and_reports_exit_codes() {
    let sim = sim().await;
    let device = device(&sim);
    let mut process = device
        .exec(ExecRequest::new("echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; exit 3"))
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
    let status = process.wait().await.unwrap();
    assert_eq!((status.code, status.success()), (Some(3), false));

    let output =
        device.exec(ExecRequest::new("pwd; test \"$HOME\" = \"$(pwd)\"")).await.unwrap().output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, Bytes::from(format!("{}\n", sim.home_dir().display())));

    // Standard input reaches the command, and a killed command reports its signal.
    let output =
        device.exec(ExecRequest::new("cat; kill -TERM $$").stdin("from stdin")).await.unwrap().output().await.unwrap();
    assert_eq!(output.stdout, "from stdin");
    assert_eq!(output.status.signal.as_deref(), Some("TERM"));

    // Commands run concurrently over the one connection.
    let (a, b) = tokio::join!(
        async { device.exec(ExecRequest::new("sleep 0.3; echo a")).await.unwrap().output().await.unwrap() },
        async { device.exec(ExecRequest::new("sleep 0.3; echo b")).await.unwrap().output().await.unwrap() },
    );
    assert_eq!((a.stdout, b.stdout), (Bytes::from("a\n"), Bytes::from("b\n")));
    sim.shutdown().await;
}

#[tokio::test]
async fn environment_reaches_the_command_safely_quoted() {
    let sim = sim().await;
    let device = device(&sim);
    let tricky = [
        ("QUOTES", r#"it's a "test" with spaces"#),
        ("DOLLAR", "$HOME ${PATH} $(echo injected) `echo injected`"),
        ("SEMI", "a; echo injected; b && c | d > /tmp/x"),
        ("NEWLINE", "line one\nline two\\n'\"'"),
        ("EMPTY", ""),
    ];
    let mut request = ExecRequest::new("printf '<%s>' \"$QUOTES\" \"$DOLLAR\" \"$SEMI\" \"$NEWLINE\" \"$EMPTY\"");
    for (name, value) in tricky {
        request = request.env(name, value);
    }
    let output = device.exec(request).await.unwrap().output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let expected: String = tricky.iter().map(|(_, v)| format!("<{v}>")).collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    assert!(output.stderr.is_empty(), "{output:?}");

    // The variables are exported: child processes see them.
    let output = device
        .exec(ExecRequest::new("sh -c 'echo \"$SEMI\"'").env("SEMI", "x; y"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(output.stdout, "x; y\n");

    let error = device.exec(ExecRequest::new("true").env("NOT-A-NAME", "v")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert!(error.to_string().starts_with("device dutsim: exec run: invalid request:"), "{error}");
    sim.shutdown().await;
}

/// While a command with a secret in its environment runs, no process on the host (the DUT
/// here) has the value in its arguments; the command still sees it.
#[tokio::test]
async fn environment_values_never_appear_in_a_process_list() {
    let sim = sim().await;
    let device = device(&sim);
    phasebox_dutsim::procs::check_secret_env_stays_out_of_argv(&device).await.unwrap();
    sim.shutdown().await;
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for its (re)parent to reap it is dead too.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed() {
    let sim = sim().await;
    let device = device(&sim);
    let started = std::time::Instant::now();
    let mut process = device
        .exec(ExecRequest::new("sleep 30 & echo $! > bg.pid; echo $$ > fg.pid; echo started; wait").timeout(SECOND))
        .await
        .unwrap();
    assert_eq!(process.next_output().await.unwrap().1, "started\n");
    let error = process.wait().await.unwrap_err();
    assert!(started.elapsed() < 5 * SECOND);
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.to_string(), "device dutsim: exec run: timed out: no exit within 1s; the command was killed");

    for file in ["fg.pid", "bg.pid"] {
        let pid: u32 = std::fs::read_to_string(sim.home_dir().join(file)).unwrap().trim().parse().unwrap();
        eventually(&format!("{file} {pid} to die"), || process_gone(pid)).await;
    }
    eventually("the sim to forget the command", || sim.running_commands() == 0).await;

    // Dropping a running process kills it too.
    let process = device.exec(ExecRequest::new("echo $$ > dropped.pid; sleep 30")).await.unwrap();
    eventually("dropped.pid", || sim.home_dir().join("dropped.pid").exists()).await;
    drop(process);
    eventually("the dropped command to die", || sim.running_commands() == 0).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn copy_to_and_copy_from_round_trip() {
    let sim = sim().await;
    let device = device(&sim);
    let data: Bytes =
        (0..(3 << 20) + 17).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>().into();
    let error = device.copy_to("missing dir/x.bin", data.clone()).await.unwrap_err();
    assert!(error.to_string().starts_with("device dutsim: exec copy-to: failed:"), "{error}");
    device.exec(ExecRequest::new("mkdir 'dir with spaces'")).await.unwrap().wait().await.unwrap();
    let path = "dir with spaces/file 'quoted' $x.bin";
    device.copy_to(path, data.clone()).await.unwrap();
    assert_eq!(std::fs::read(sim.home_dir().join(path)).unwrap(), data);
    assert_eq!(device.copy_from(path).await.unwrap(), data);
    device.copy_to("empty", Bytes::new()).await.unwrap();
    assert_eq!(device.copy_from("empty").await.unwrap(), Bytes::new());

    let error = device.copy_from("no-such-file").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert!(error.to_string().starts_with("device dutsim: exec copy-from: failed:"), "{error}");
    assert!(error.to_string().contains("No such file"), "{error}");
    sim.shutdown().await;
}

#[tokio::test]
async fn copy_from_refuses_files_past_the_limit() {
    let sim = sim().await;
    let mut config = sim.device_config();
    let Some(phasebox_device::ExecConfig::Ssh(ssh)) = config.exec.as_mut() else { unreachable!() };
    ssh.max_copy_bytes = 1000;
    let device = Device::new(config).unwrap();
    device.copy_to("big", Bytes::from(vec![7u8; 5000])).await.unwrap();
    let error = device.copy_from("big").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LimitExceeded, "{error}");
    assert_eq!(device.copy_from("big").await.unwrap_err().kind(), ErrorKind::LimitExceeded);
    sim.shutdown().await;
}

#[tokio::test]
async fn flash_then_power_cycle_boots_the_new_image() {
    let sim = sim().await;
    let device = device(&sim);
    let mut image = b"IMAGE_NAME=phasebox-test-image-2\n".to_vec();
    image.extend((0..200_000u32).map(|i| (i % 251) as u8));
    let sha = hex::encode(sha2::Sha256::digest(&image));

    let mut writer = device.flash().await.unwrap();
    // One flash at a time.
    assert_eq!(device.flash().await.unwrap_err().kind(), ErrorKind::InvalidRequest);
    for chunk in image.chunks(65536) {
        writer.write(chunk).await.unwrap();
    }
    assert_eq!(writer.progress(), image.len() as u64);
    let report = writer.finish().await.unwrap();
    assert_eq!(writer.finish().await.unwrap_err().kind(), ErrorKind::InvalidRequest);
    assert_eq!((report.bytes, report.sha256.as_str()), (image.len() as u64, sha.as_str()));
    assert_eq!(std::fs::read(sim.storage_path()).unwrap(), image);

    // Still running the old image until it reboots.
    let before = device.exec(ExecRequest::new("echo $DUT_IMAGE")).await.unwrap().output().await.unwrap();
    assert_eq!(before.stdout, "factory-image\n");

    let mut console = device.console().await.unwrap();
    device.power_cycle().await.unwrap();
    console.expect(format!("Booting phasebox-test-image-2 (sha256 {})", &sha[..12]), 5 * SECOND).await.unwrap();
    console.expect("login:", 5 * SECOND).await.unwrap();
    device.wait_until_reachable(5 * SECOND).await.unwrap();
    let after = device
        .exec(ExecRequest::new("echo \"$DUT_IMAGE $DUT_IMAGE_SHA256\"; cat image-name"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&after.stdout), format!("phasebox-test-image-2 {sha}\nphasebox-test-image-2\n"));
    // A finished flash lets the next one start, even while its writer is still around.
    drop(device.flash().await.expect("the finished flash released the DUT"));
    drop(writer);
    sim.shutdown().await;
}

#[tokio::test]
async fn flash_refuses_more_than_max_bytes() {
    let sim = sim().await;
    let mut config = sim.device_config();
    config.flash.as_mut().unwrap().max_bytes = 1000;
    let device = Device::new(config).unwrap();
    let mut writer = device.flash().await.unwrap();
    writer.write(&[1u8; 600]).await.unwrap();
    let error = writer.write(&[2u8; 600]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LimitExceeded);
    assert_eq!(
        error.to_string(),
        "device dutsim: flash write: limit exceeded: the image is larger than this DUT's limit of 1000 bytes"
    );
    assert_eq!(writer.progress(), 600);
    assert_eq!(writer.finish().await.unwrap_err().kind(), ErrorKind::InvalidRequest);
    assert_eq!(std::fs::metadata(sim.storage_path()).unwrap().len(), 600, "nothing past the limit was written");
    // A failed flash lets the next one start, even while its writer is still around.
    drop(device.flash().await.expect("the failed flash released the DUT"));
    drop(writer);
    sim.shutdown().await;
}

#[tokio::test]
async fn errors_name_the_dut_and_the_handle() {
    let sim = sim().await;
    let device = device(&sim);
    let mut long = device.exec(ExecRequest::new("sleep 30")).await.unwrap();
    device.power_off().await.unwrap();
    // The running command dies with the power and its connection.
    let error = long.wait().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    assert!(error.to_string().starts_with("device dutsim: exec run: connection closed:"), "{error}");

    let error = device.exec(ExecRequest::new("true")).await.unwrap_err();
    assert_eq!((error.device(), error.handle(), error.operation()), ("dutsim", Handle::Exec, "run"));
    assert!(matches!(error.kind(), ErrorKind::Unreachable | ErrorKind::Closed), "{error}");
    let error = device.wait_until_reachable(Duration::from_millis(600)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(error.to_string().starts_with("device dutsim: exec wait-reachable: timed out: not reachable within 600ms"));

    // Nothing configured.
    let bare_config = DeviceConfig {
        power: None,
        console: None,
        flash: None,
        exec: None,
        cleanup: CleanupAction::None,
        ..sim.device_config()
    };
    let bare = Device::new(bare_config).unwrap();
    assert!(bare.handles().is_empty());
    let error = bare.power_cycle().await.unwrap_err();
    assert_eq!(error.to_string(), "device dutsim: power cycle: not configured: this DUT has no such handle");
    assert_eq!(bare.console().await.unwrap_err().handle(), Handle::Console);
    assert_eq!(bare.flash().await.unwrap_err().kind(), ErrorKind::NotConfigured);

    // A console server that is not there; the message does not name its address.
    let mut config = sim.device_config();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.console = Some(phasebox_device::ConsoleConfig::Tcp(phasebox_device::TcpConsole {
        address: unused.to_string(),
        connect_timeout: SECOND,
    }));
    let error = Device::new(config).unwrap().console().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unreachable);
    assert!(error.to_string().starts_with("device dutsim: console open: unreachable:"), "{error}");
    assert!(!error.to_string().contains(&unused.port().to_string()), "{error}");

    // An SSH server whose host key is not the configured one.
    device.power_on().await.unwrap();
    device.wait_until_reachable(5 * SECOND).await.unwrap();
    let mut config = sim.device_config();
    let Some(phasebox_device::ExecConfig::Ssh(ssh)) = config.exec.as_mut() else { unreachable!() };
    ssh.host_key =
        Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7g2MsR0pG6u3jn5YCw0ZXhq1I9r7o6uE7fdHqR8eZq other".into());
    let error = Device::new(config).unwrap().exec(ExecRequest::new("true")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Auth);
    assert_eq!(
        error.to_string(),
        "device dutsim: exec run: authentication failed: the SSH server's host key is not the configured one"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn power_by_commands_and_cleanup() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let q = |s: &std::path::Path| phasebox_device::shell_quote(&s.display().to_string());
    let log = dir.path().join("log");
    let config = DeviceConfig {
        name: "cmd-dut".into(),
        facts: Default::default(),
        cleanup: CleanupAction::Reset,
        power: Some(PowerConfig::Commands(PowerCommands {
            on: SecretString::new(format!("echo on > {0}; echo \"on $PHASEBOX_DEVICE\" >> {1}", q(&state), q(&log))),
            off: SecretString::new(format!("echo off > {0}; echo off >> {1}", q(&state), q(&log))),
            cycle: None,
            status: Some(SecretString::new(format!("cat {}", q(&state)))),
            timeout: SECOND,
            cycle_off_time: Duration::from_millis(10),
        })),
        console: None,
        exec: None,
        flash: None,
    };
    let device = Device::new(config.clone()).unwrap();
    assert_eq!(device.handles(), vec![Handle::Power]);
    assert_eq!(device.power_on().await.unwrap(), PowerState::On);
    assert_eq!(device.power_status().await.unwrap(), PowerState::On);
    assert_eq!(device.power_off().await.unwrap(), PowerState::Off);
    assert_eq!(device.power_status().await.unwrap(), PowerState::Off);
    device.cleanup().await.unwrap(); // reset: off, then on
    assert_eq!(device.power_status().await.unwrap(), PowerState::On);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "on cmd-dut\noff\noff\non cmd-dut\n");

    // Without a status command the state is unknown; a failing command fails without showing it.
    let mut failing = config.clone();
    let Some(PowerConfig::Commands(commands)) = failing.power.as_mut() else { unreachable!() };
    commands.status = None;
    commands.on = SecretString::new("echo 'ipmitool -P hunter2 failed' >&2; exit 4");
    commands.off = SecretString::new("sleep 10 # hunter2");
    let device = Device::new(failing).unwrap();
    assert_eq!(device.power_status().await.unwrap(), PowerState::Unknown);
    let error = device.power_on().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(
        error.to_string(),
        "device cmd-dut: power on: failed: the on command exited with exit status: 4 (details in the agent log)"
    );
    let started = std::time::Instant::now();
    let error = device.power_off().await.unwrap_err();
    assert!(started.elapsed() < 3 * SECOND);
    assert_eq!(error.to_string(), "device cmd-dut: power off: timed out: the off command did not finish within 1s");
}

#[tokio::test]
async fn debug_output_and_errors_never_show_secrets() {
    let sim = sim().await;
    let key_text = std::fs::read_to_string(sim.agent_key_path()).unwrap();
    let key_body = key_text.lines().nth(2).unwrap().to_owned();
    let mut config = sim.device_config();
    config.power = Some(PowerConfig::Commands(PowerCommands {
        on: SecretString::new("ipmitool -H 10.9.8.7 -U admin -P hunter2 chassis power on"),
        off: SecretString::new("ipmitool -H 10.9.8.7 -U admin -P hunter2 chassis power off"),
        cycle: Some(SecretString::new("snmpset -c private-community 10.9.8.7 outlet.7 i 3")),
        status: None,
        timeout: SECOND,
        cycle_off_time: Duration::ZERO,
    }));
    let device = Device::new(config.clone()).unwrap();
    let texts = [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{device:?}"),
        format!("{:?}", device.power_on().await.unwrap_err()),
        device.power_cycle().await.unwrap_err().to_string(),
    ];
    for text in &texts {
        for secret in ["hunter2", "private-community", "10.9.8.7", key_body.as_str()] {
            assert!(!text.contains(secret), "{secret:?} shown in {text}");
        }
    }
    assert!(texts[0].contains("<redacted>"), "{}", texts[0]);

    let mut config = sim.device_config();
    config.power = Some(PowerConfig::Http(phasebox_device::HttpPower {
        base_url: format!("http://admin:hunter2@{}/power", sim.power_addr()),
        timeout: SECOND,
    }));
    let device = Device::new(config.clone()).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    assert_eq!(device.power_status().await.unwrap(), PowerState::On, "basic auth is sent and ignored by the sim");
    sim.shutdown().await;
}

#[tokio::test]
async fn http_power_errors() {
    let sim = sim().await;
    let mut config = sim.device_config();
    config.power = Some(PowerConfig::Http(phasebox_device::HttpPower {
        base_url: format!("http://{}/no-such-outlet", sim.power_addr()),
        timeout: SECOND,
    }));
    let error = Device::new(config).unwrap().power_on().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(
        error.to_string(),
        "device dutsim: power on: failed: the power controller answered POST on with 404 Not Found"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let mut config = sim.device_config();
    config.power = Some(PowerConfig::Http(phasebox_device::HttpPower {
        base_url: format!("http://{silent}/power"),
        timeout: Duration::from_millis(300),
    }));
    let error = Device::new(config).unwrap().power_status().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(!error.to_string().contains(&silent.port().to_string()), "{error}");
    drop(listener);
    sim.shutdown().await;
}

#[test]
fn handles_can_live_behind_trait_objects() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<Device>();
    send_sync_static::<phasebox_device::ConsoleSession>();
    send_sync_static::<phasebox_device::ExecProcess>();
    send_sync_static::<phasebox_device::FlashWriter>();
    send_sync_static::<phasebox_device::DeviceError>();
}

#[test]
fn configs_parse_strictly() {
    let example = include_str!("../../../config/device.toml");
    let config = DeviceConfig::from_toml_str(example).expect("config/device.toml parses");
    assert_eq!(config.handles(), vec![Handle::Power, Handle::Console, Handle::Exec, Handle::Flash]);
    assert_eq!(config.cleanup, CleanupAction::PowerOff);

    let minimal = DeviceConfig::from_toml_str("name = \"bare\"\n").unwrap();
    assert!(minimal.handles().is_empty());
    assert_eq!(minimal.cleanup, CleanupAction::None);

    let commands = r#"
name = "rack2-pi4"
[facts]
arch = "arm64"
[power.commands]
on = "ipmitool -P hunter2 power on"
off = "ipmitool -P hunter2 power off"
timeout = "1m30s"
cycle_off_time = 0.5
"#;
    let config = DeviceConfig::from_toml_str(commands).unwrap();
    let Some(PowerConfig::Commands(c)) = &config.power else { panic!("commands") };
    assert_eq!((c.timeout, c.cycle_off_time), (Duration::from_secs(90), Duration::from_millis(500)));
    // A round trip through TOML keeps everything.
    let again = DeviceConfig::from_toml_str(&config.to_toml_string()).unwrap();
    assert_eq!(format!("{again:?}"), format!("{config:?}"));

    let error = |text: &str| DeviceConfig::from_toml_str(text).unwrap_err().to_string();
    let unknown = error("name = \"x\"\n[power.commands]\non = \"secret-cmd\"\noff = \"y\"\nof = \"secret-typo\"\n");
    assert!(unknown.contains("line 5") && unknown.contains("unknown field `of`"), "{unknown}");
    assert!(!unknown.contains("secret"), "a parse error must not quote the config: {unknown}");
    assert!(error("name = \"x\"\n[power.pdu]\n").contains("unknown variant `pdu`"));
    assert!(error("name = \"has space\"\n").contains("name"));
    let host_key = "name = \"x\"\n[exec.ssh]\nhost = \"h\"\nuser = \"u\"\nkey_file = \"/k\"\n";
    assert!(error(host_key).contains("exactly one of host_key"));
    assert!(error(&format!("{host_key}host_key = \"garbage\"\n")).contains("exec.ssh.host_key"));
    assert!(
        DeviceConfig::from_toml_str(&format!("{host_key}insecure_accept_any_host_key = true\n")).is_ok(),
        "the insecure choice must be explicit, and then it is accepted"
    );
    assert!(error("name = \"x\"\n[power.http]\nbase_url = \"https://pdu\"\n").contains("https is not supported"));
    assert!(error("name = \"x\"\n[console.tcp]\naddress = \"nohost\"\n").contains("console.tcp.address"));
    assert!(error("name = \"x\"\n[flash]\ntarget = \"relative.img\"\nmax_bytes = 1\n").contains("absolute"));
    assert!(error("name = \"x\"\ncleanup = \"reset\"\n").contains("need a [power] section"));
    assert!(error("name = \"x\"\ncleanup = \"explode\"\n").contains("unknown variant"));
}

#[tokio::test]
async fn a_missing_or_bad_key_file_is_a_config_error() {
    let sim = sim().await;
    let mut config = sim.device_config();
    let Some(phasebox_device::ExecConfig::Ssh(ssh)) = config.exec.as_mut() else { unreachable!() };
    ssh.key_file = sim.dir().join("no-such-key");
    let error = Device::new(config.clone()).unwrap_err();
    assert_eq!(error.field, "exec.ssh.key_file");
    assert!(error.to_string().starts_with("device config for dutsim: exec.ssh.key_file: cannot read"), "{error}");
    let Some(phasebox_device::ExecConfig::Ssh(ssh)) = config.exec.as_mut() else { unreachable!() };
    ssh.key_file = sim.storage_path().to_owned();
    assert!(Device::new(config).unwrap_err().to_string().contains("not a usable private key"));
    sim.shutdown().await;
}
