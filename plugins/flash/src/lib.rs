//! `flash`: provisions the device under test with an image.
//!
//! Power off, write the image to the device's storage through the `flash` handle, power on,
//! then wait until the device answers a command over `exec`. The image comes from the phase's
//! attachments (`provision_data.attachments`, unpacked read-only at `/attachments`), named by
//! `provision_data.image` (a file name under `/attachments`) or, when there is exactly one
//! attached file, that file.
//!
//! A device that does not come back within `boot_timeout` (seconds, default 300) is an
//! infrastructure error: the lab's problem, not the job's.

use std::io::Read;
use std::time::{Duration, Instant};

use phasebox_plugin_sdk::{self as sdk, DeviceError, Failure, Guest, Outcome, PhaseContext};
use serde::Deserialize;

/// Where attachments are mounted.
const ATTACHMENTS: &str = "/attachments";
/// Bytes per write: large enough to keep the host busy, small enough to report progress.
const CHUNK: usize = 1 << 20;

/// The part of `provision_data` this plugin reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    /// The image's file name under `/attachments`.
    image: Option<String>,
    /// Seconds to wait for the device to answer after power on.
    boot_timeout: Option<u64>,
}

struct Flash;

impl Guest for Flash {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Data = sdk::ctx_data(&ctx)?;
        let path = image_path(data.image.as_deref())?;
        let mut image =
            std::fs::File::open(&path).map_err(|e| Failure::JobError(format!("cannot open the image {path}: {e}")))?;
        let name = sdk::fact(&ctx, "name").unwrap_or("the device").to_owned();

        println!("powering {name} off");
        sdk::power::off().map_err(|e| infra("power off", e))?;

        println!("writing {path} to {name}");
        let started = Instant::now();
        let writer = sdk::flash::open().map_err(|e| infra("flash open", e))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = image.read(&mut buf).map_err(|e| Failure::JobError(format!("reading {path}: {e}")))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]).map_err(|e| infra("flash write", e))?;
        }
        let report = writer.finish().map_err(|e| infra("flash finish", e))?;
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        println!("wrote {} bytes (sha256 {}) in {secs:.1} s", report.bytes, report.sha256);
        sdk::measure("flash.throughput", report.bytes as f64 / secs / 1e6, "MB/s");

        println!("powering {name} on");
        sdk::power::on().map_err(|e| infra("power on", e))?;
        let boot_timeout = Duration::from_secs(data.boot_timeout.unwrap_or(300));
        let booted = wait_until_answering(boot_timeout)
            .map_err(|why| Failure::InfraError(format!("{name} did not come back after flashing: {why}")))?;
        println!("{name} answers after {:.1} s", booted.as_secs_f64());
        sdk::measure("boot.time", booted.as_secs_f64(), "s");
        Ok(Outcome { summary: format!("flashed {path} ({} bytes) and {name} came back", report.bytes) })
    }
}

/// Finds the image among the attachments.
fn image_path(named: Option<&str>) -> Result<String, Failure> {
    if let Some(name) = named {
        return Ok(format!("{ATTACHMENTS}/{}", name.trim_start_matches('/')));
    }
    let files: Vec<String> = std::fs::read_dir(ATTACHMENTS)
        .map_err(|e| Failure::JobError(format!("no attachments to flash ({ATTACHMENTS}: {e})")))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| format!("{ATTACHMENTS}/{}", e.file_name().to_string_lossy()))
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::JobError("no image among the attachments".into())),
        _ => Err(Failure::JobError("several attachments: name the image in provision_data.image".into())),
    }
}

/// Tries a command until the device answers it or the time is up.
fn wait_until_answering(timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::from("no attempt");
    while started.elapsed() < timeout {
        match sdk::exec::run_streaming("true", &[], &[], Duration::from_secs(10), |_, _| {}) {
            Ok(0) => return Ok(started.elapsed()),
            Ok(code) => last = format!("`true` exited with {code}"),
            Err(e) => last = format!("{e:?}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("no answer within {} s (last: {last})", timeout.as_secs()))
}

fn infra(step: &str, e: DeviceError) -> Failure {
    Failure::InfraError(format!("{step} failed: {e:?}"))
}

sdk::export_phase!(Flash);
