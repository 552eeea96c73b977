//! `device-probe`: a test plugin that calls the device handles as its phase data says, so host
//! tests can check each handle granted and not granted.
//!
//! Phase data: `{"steps": ["<handle>:<argument>", ...]}`, run in order:
//!
//! | step | does | reports |
//! |---|---|---|
//! | `power:on` / `power:off` / `power:cycle` / `power:status` | the power call | the state after it |
//! | `console:<text>` | opens the console, writes `<text>` and a newline, expects `<text>` back | the bytes matched |
//! | `exec:<command>` | runs the command | its exit status and stdout |
//! | `exec-secret:<NAME>:<command>` | runs the command with the declared secret `NAME` in its environment (`secret-env`) | its exit status, stdout and stderr, as the plugin read them |
//! | `flash:<n>` | writes `n` bytes of a recognisable image | the host's report (bytes, sha256) |
//! | `scan:<reversed text>` | searches the plugin's whole linear memory for the text (given reversed, so the forward text is never in memory unless something else put it there) | `found` or `absent` |
//!
//! Each step prints `<step> -> ok: <detail>` or `<step> -> error: <device error>`; the summary
//! joins the results with ` | `. Unknown steps are job errors.

use std::time::Duration;

use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    steps: Vec<String>,
}

struct DeviceProbe;

impl Guest for DeviceProbe {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Data = sdk::ctx_data(&ctx)?;
        let mut results = Vec::new();
        for step in &data.steps {
            let (handle, arg) = step.split_once(':').unwrap_or((step, ""));
            let result = match handle {
                "power" => power(arg)?,
                "console" => console(arg),
                "exec" => sdk::exec::run_captured(arg, &[], Duration::from_secs(60))
                    .map(|c| format!("status {} stdout {:?}", c.status, c.stdout_text().trim())),
                "exec-secret" => exec_secret(arg),
                "scan" => Ok(scan(arg)),
                "flash" => flash(arg.parse().map_err(|_| Failure::JobError(format!("{step}: not a size")))?),
                _ => return Err(Failure::JobError(format!("unknown step {step:?}"))),
            };
            let line = match result {
                Ok(detail) => format!("{step} -> ok: {detail}"),
                Err(e) => format!("{step} -> error: {}", sdk::describe(&e)),
            };
            println!("{line}");
            results.push(line);
        }
        Ok(Outcome { summary: results.join(" | ") })
    }
}

fn power(action: &str) -> Result<Result<String, sdk::DeviceError>, Failure> {
    let done = match action {
        "on" => sdk::power::on(),
        "off" => sdk::power::off(),
        "cycle" => sdk::power::cycle(),
        "status" => Ok(()),
        other => return Err(Failure::JobError(format!("unknown power action {other:?}"))),
    };
    Ok(done.and_then(|()| sdk::power::status()).map(|s| format!("{s:?}")))
}

fn exec_secret(arg: &str) -> Result<String, sdk::DeviceError> {
    let (name, command) = arg.split_once(':').unwrap_or((arg, ""));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let status =
        sdk::exec::run_streaming(command, &[], &[name.to_owned()], Duration::from_secs(60), |channel, data| {
            match channel {
                sdk::exec::Channel::Stdout => stdout.extend_from_slice(data),
                sdk::exec::Channel::Stderr => stderr.extend_from_slice(data),
            }
        })?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(format!("status {status} stdout {:?} stderr {:?}", text(&stdout), text(&stderr)))
}

fn console(text: &str) -> Result<String, sdk::DeviceError> {
    let session = sdk::console::open()?;
    session.write(format!("{text}\n").as_bytes())?;
    session.expect(text, 10_000)
}

fn flash(size: usize) -> Result<String, sdk::DeviceError> {
    let writer = sdk::flash::open()?;
    let mut image = b"IMAGE_NAME=device-probe\n".to_vec();
    image.resize(size.max(image.len()), b'.');
    for chunk in image.chunks(64 * 1024) {
        writer.write(chunk)?;
    }
    writer.finish().map(|r| format!("{} bytes sha256 {}", r.bytes, r.sha256))
}

/// Whether the reverse of `reversed` occurs anywhere in this instance's linear memory.
fn scan(reversed: &str) -> String {
    let needle = reversed.as_bytes();
    if needle.is_empty() {
        return "absent".into();
    }
    #[cfg(target_arch = "wasm32")]
    let end = core::arch::wasm32::memory_size(0) * 65536;
    #[cfg(not(target_arch = "wasm32"))]
    let end = 0usize;
    let n = needle.len();
    // Address 0 is never part of the data; start past it. Volatile reads: the compiler must not
    // assume anything about memory it did not write.
    for start in 8..end.saturating_sub(n) {
        // SAFETY: every address below the memory size is mapped in a wasm linear memory.
        let at = |i: usize| unsafe { std::ptr::read_volatile((start + i) as *const u8) };
        if (0..n).all(|i| at(i) == needle[n - 1 - i]) {
            return "found".into();
        }
    }
    "absent".into()
}

sdk::export_phase!(DeviceProbe);
