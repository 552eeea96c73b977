//! `flash`: provisions the device under test with an image.
//!
//! Power off, write the image to the device's storage through the `flash` handle, power on,
//! then wait until the device answers a command over `exec`. The image comes from
//! `provision_data.url` (fetched through `wasi:http`: the phase's grant must name its origin; the
//! request is made before the device is touched, so a refused or missing image leaves the device
//! as it was), or from the phase's attachments (`provision_data.attachments`, unpacked read-only
//! at `/attachments`), named by `provision_data.use_attachment` (a file name under
//! `/attachments`, as in Testflinger's muxpi jobs) or, when there is exactly one attached file,
//! that file. Because it can download, the plugin imports `wasi:http`: the operator's policy must
//! allow HTTP to at least one origin (the image servers) for it to load, even for jobs that
//! attach their image.
//!
//! A device that does not come back within its boot timeout (the device fact `boot_timeout`, in
//! seconds, default 300: how long a device takes to boot is the operator's knowledge, and
//! Testflinger's provision schemas admit no such key) is an infrastructure error: the lab's
//! problem, not the job's.

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
    /// The image's file name under `/attachments`: Testflinger's `use_attachment` (muxpi), the
    /// only key for it that a job's `provision_data` may carry.
    #[serde(rename = "use_attachment", alias = "image")]
    image: Option<String>,
    /// Where to download the image from (Testflinger's `url` of cm3, muxpi and oem types).
    url: Option<String>,
}

struct Flash;

impl Guest for Flash {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Data = sdk::ctx_data(&ctx)?;
        let name = sdk::fact(&ctx, "name").unwrap_or("the device").to_owned();
        // Open the source first: nothing is switched off for an image that cannot be read.
        let (source, mut image) = match (&data.url, &data.image) {
            (Some(url), None) => {
                let response = sdk::http::get(url)
                    .map_err(|e| Failure::JobError(format!("cannot download the image {url}: {e}")))?;
                if response.status() != 200 {
                    return Err(Failure::JobError(format!(
                        "cannot download the image {url}: the server answered {}",
                        response.status()
                    )));
                }
                (url.clone(), Image::Http(response))
            }
            _ => {
                let path = image_path(data.image.as_deref())?;
                let file = std::fs::File::open(&path)
                    .map_err(|e| Failure::JobError(format!("cannot open the image {path}: {e}")))?;
                (path, Image::File(file))
            }
        };

        println!("powering {name} off");
        sdk::power::off().map_err(|e| infra("power off", e))?;

        println!("writing {source} to {name}");
        let started = Instant::now();
        let writer = sdk::flash::open().map_err(|e| infra("flash open", e))?;
        while let Some(chunk) = image.next_chunk().map_err(|e| Failure::JobError(format!("reading {source}: {e}")))? {
            writer.write(&chunk).map_err(|e| infra("flash write", e))?;
        }
        let report = writer.finish().map_err(|e| infra("flash finish", e))?;
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        println!("wrote {} bytes (sha256 {}) in {secs:.1} s", report.bytes, report.sha256);
        sdk::measure("flash.throughput", report.bytes as f64 / secs / 1e6, "MB/s");

        println!("powering {name} on");
        sdk::power::on().map_err(|e| infra("power on", e))?;
        let boot_timeout =
            Duration::from_secs(sdk::fact(&ctx, "boot_timeout").and_then(|t| t.parse().ok()).unwrap_or(300));
        let booted = sdk::exec::wait_until_answering(boot_timeout)
            .map_err(|why| Failure::InfraError(format!("{name} did not come back after flashing: {why}")))?;
        println!("{name} answers after {:.1} s", booted.as_secs_f64());
        sdk::measure("boot.time", booted.as_secs_f64(), "s");
        Ok(Outcome { summary: format!("flashed {source} ({} bytes) and {name} came back", report.bytes) })
    }
}

/// Where the image's bytes come from.
enum Image {
    File(std::fs::File),
    Http(sdk::http::Response),
}

impl Image {
    /// The next chunk, or `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Image::File(file) => {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(n);
                Ok((n > 0).then_some(buf))
            }
            Image::Http(response) => response.read().map_err(|e| e.to_string()),
        }
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
        _ => Err(Failure::JobError("several attachments: name the image in provision_data.use_attachment".into())),
    }
}

fn infra(step: &str, e: DeviceError) -> Failure {
    Failure::InfraError(format!("{step} failed: {}", sdk::describe(&e)))
}

sdk::export_phase!(Flash);
