//! The exec handle against a real OpenSSH sshd, started on 127.0.0.1 with a throwaway host key,
//! a throwaway user key and its own config in a temporary directory.
//!
//! Needs `/usr/sbin/sshd` (Debian/Ubuntu: `apt-get install openssh-server`, see
//! `ci-openssh.sh`; the harness is `phasebox_dutsim::openssh`). Without it the test is skipped with a
//! message, unless `PHASEBOX_REQUIRE_SSHD=1`, which makes a missing sshd a failure (CI sets it).

use std::time::Duration;

use bytes::Bytes;
use phasebox_device::{Device, ErrorKind, ExecRequest, Stream};
use phasebox_dutsim::openssh::{self, OpenSshd};

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn exec_and_copy_against_a_real_openssh_sshd() {
    let _ = tracing_subscriber::fmt().with_env_filter("phasebox=debug,warn").with_test_writer().try_init();
    if !openssh::available().expect("sshd") {
        eprintln!("SKIPPED: {} is not installed (runtime/device/ci-openssh.sh installs it)", openssh::SSHD);
        return;
    }
    let sshd = OpenSshd::start().await.unwrap();
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
    // ... and never through the command line: no process on the host shows a value in its
    // arguments while the command runs.
    phasebox_dutsim::procs::check_secret_env_stays_out_of_argv(&device).await.unwrap();

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
