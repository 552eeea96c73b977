//! Device handle throughput on the simulated device under test, beside the local alternative
//! measured in the same run. Prints a table; not a timed test.
//!
//! `cargo bench -p phasebox-job --bench device` (optionally `-- <exec iterations>`, default 200).
//!
//! - exec round trip: `true` on the device over SSH (a session per command, as plugins run
//!   them), beside spawning `sh -c true` locally;
//! - console throughput: the device prints 8 MiB on its console; read through the console handle;
//! - flash throughput: a 64 MiB image written through the flash handle from the host, and from a
//!   plugin in the sandbox (`device-probe`, 64 KiB chunks across the component boundary), beside
//!   `dd bs=1M conv=fsync` writing the same bytes to a file on the same disk (the handle syncs too).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use phasebox_device::{Device, ExecRequest};
use phasebox_dutsim::{DutSim, DutSimConfig};
use phasebox_job::{CancellationToken, JobInputs, JobPlan, JobSpec, NullSink, PluginSet, RunnerConfig, run_job};

const IMAGE_BYTES: usize = 64 << 20;
const CONSOLE_BYTES: usize = 8 << 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(name: &str, p50: String, p99: String, note: &str) {
    println!("| {name:<46} | {p50:>12} | {p99:>12} | {note:<34} |");
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn mbps(bytes: usize, d: Duration) -> String {
    format!("{:.1} MB/s", bytes as f64 / d.as_secs_f64() / 1e6)
}

fn main() {
    let iterations: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    phasebox_guests::build().expect("building guest plugins");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(iterations));
}

async fn run(iterations: usize) {
    let sim = DutSim::start(DutSimConfig {
        name: "bench-dut".into(),
        boot_delay: Duration::from_millis(50),
        storage_max_bytes: (IMAGE_BYTES as u64) * 2,
        ..Default::default()
    })
    .await
    .expect("simulator");
    assert!(sim.wait_booted(Duration::from_secs(10)).await, "the simulator boots");
    let device = Arc::new(Device::new(sim.device_config()).expect("device"));

    println!("phasebox device handles on the simulated DUT (SSH, TCP console, flash target), loopback");
    println!();
    println!("| {:<46} | {:>12} | {:>12} | {:<34} |", "measurement", "p50 / rate", "p99", "note");
    println!("|{:-<48}|{:->14}|{:->14}|{:-<36}|", "", "", "", "");

    // exec round trip, and the local alternative.
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations + 20 {
        let started = Instant::now();
        let out = device.exec(ExecRequest::new("true")).await.expect("exec").output().await.expect("output");
        assert!(out.status.success());
        if i >= 20 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    row("exec `true` over SSH (new session each)", ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)), "");
    if phasebox_dutsim::openssh::available().unwrap_or(false) {
        let sshd = phasebox_dutsim::openssh::OpenSshd::start().await.expect("sshd");
        let real = Device::new(sshd.device_config()).expect("device");
        real.wait_until_reachable(Duration::from_secs(10)).await.expect("sshd reachable");
        let mut times = Vec::with_capacity(iterations);
        for i in 0..iterations + 20 {
            let started = Instant::now();
            let out = real.exec(ExecRequest::new("true")).await.expect("exec").output().await.expect("output");
            assert!(out.status.success());
            if i >= 20 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        row(
            "exec `true` over SSH to OpenSSH sshd",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            "real sshd; includes the login shell's start-up",
        );
        sshd.stop().await;
    }
    let mut local = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let status = tokio::process::Command::new("sh").args(["-c", "true"]).status().await.expect("sh");
        assert!(status.success());
        local.push(started.elapsed());
    }
    local.sort();
    row(
        "spawn `sh -c true` locally",
        ms(percentile(&local, 0.5)),
        ms(percentile(&local, 0.99)),
        "the same command, no SSH",
    );

    // Console throughput: the device prints CONSOLE_BYTES of lines on its console.
    let mut console = device.console().await.expect("console");
    let line = "x".repeat(99);
    let script =
        format!("i=0; while [ $i -lt {} ]; do echo {line}; i=$((i+1)); done >> \"$DUT_CONSOLE\"", CONSOLE_BYTES / 100);
    let started = Instant::now();
    let out = device.exec(ExecRequest::new(script)).await.expect("exec").output().await.expect("output");
    assert!(out.status.success());
    let mut received = 0usize;
    // The console shows each "\n" as "\r\n": one more byte per line.
    let expected = CONSOLE_BYTES / 100 * 101;
    while received < expected {
        match console.read(1 << 16, Duration::from_secs(10)).await {
            Ok(data) if !data.is_empty() => received += data.len(),
            Ok(_) => {}
            Err(e) => panic!("console read after {received} bytes: {e}"),
        }
    }
    row(
        "console: device prints 8 MiB, read via handle",
        mbps(received, started.elapsed()),
        "-".into(),
        "includes the command writing it",
    );
    drop(console);

    // Flash: the host API.
    let image: Bytes = {
        let mut v = b"IMAGE_NAME=bench\n".to_vec();
        v.resize(IMAGE_BYTES, 0x5a);
        v.into()
    };
    let started = Instant::now();
    let mut writer = device.flash().await.expect("flash");
    for chunk in image.chunks(1 << 20) {
        writer.write(chunk).await.expect("write");
    }
    writer.finish().await.expect("finish");
    let host = started.elapsed();
    // One flash at a time per device: the writer holds the device's flash until dropped.
    drop(writer);
    row("flash 64 MiB via handle (host API)", mbps(IMAGE_BYTES, host), "-".into(), "fsync at the end");

    // Flash from a plugin in the sandbox.
    let plugin = format!("{:?}", phasebox_guests::path("device-probe").display().to_string());
    let runner = RunnerConfig::from_toml(
        &format!("plugins = [{plugin}]\n[policy.allow]\npower = true\nconsole = true\nexec = true\nflash = true\n[policy.limits]\nmemory = \"512MiB\"\n"),
        Path::new("."),
    )
    .expect("runner");
    let plugins = PluginSet::load(&runner).expect("plugins");
    let job = format!(
        "job_queue: bench\nallocate_data:\n  steps: [\"flash:{IMAGE_BYTES}\"]\n  phasebox:\n    plugin: device-probe\n"
    );
    let spec = JobSpec::from_yaml(&job).expect("job");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plan = JobPlan::new(&spec, &runner, &plugins, &dir.path().join("job")).expect("plan");
    plan.use_device(device.clone());
    let started = Instant::now();
    let outcome = run_job(&plan, JobInputs::default(), &mut NullSink, CancellationToken::new()).await.expect("job");
    let guest = started.elapsed();
    let output = outcome.transcript.output(phasebox_job::Phase::Allocate).unwrap();
    assert!(output.contains(&format!("flash:{IMAGE_BYTES} -> ok")), "{output}");
    row(
        "flash 64 MiB from a plugin (sandbox, 64 KiB)",
        mbps(IMAGE_BYTES, guest),
        "-".into(),
        "whole job: includes building image",
    );

    // dd, the same bytes to a file beside the flash target.
    let source = sim.dir().join("dd-source.img");
    let target = sim.dir().join("dd-target.img");
    std::fs::write(&source, &image).expect("source");
    let started = Instant::now();
    let status = std::process::Command::new("dd")
        .arg(format!("if={}", source.display()))
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .status()
        .expect("dd");
    assert!(status.success());
    row(
        "dd bs=1M conv=fsync, same bytes, same disk",
        mbps(IMAGE_BYTES, started.elapsed()),
        "-".into(),
        "the alternative",
    );
    sim.shutdown().await;
}
