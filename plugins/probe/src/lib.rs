//! `probe`: an adversarial phasebox plugin for the host's sandbox tests.
//!
//! Each run performs exactly one action, chosen by the phase data
//! `{"attack": "<name>", ...params}`, and reports what the guest saw as a one-line summary:
//!
//! - `allowed: <detail>` when the action succeeded;
//! - `denied: <error>` when it failed with an ordinary error, in the words the guest got
//!   (for example `denied: Permission denied (os error 2)`).
//!
//! Ordinary errors never panic, so a test can tell "the sandbox said no" from "the plugin broke".
//! Some attacks never return on purpose (`spin`, `alloc-bomb`, `recurse`, `flood`, `panic`,
//! `exit`): their result is whatever the host does to stop them. Missing or ill-typed parameters
//! and unknown attacks are job errors. Control characters in a summary are escaped (`\n`), so it
//! is always a single line.
//!
//! | attack | params | on success |
//! |---|---|---|
//! | `read-file` | `path` | the first 200 characters |
//! | `write-file` | `path`, `content` | `wrote <n> bytes to <path>` |
//! | `list-dir` | `path` | entry names, sorted, joined by `,` |
//! | `symlink` | `target`, `link` | creates `link` → `target`, then reads through it: first 200 characters |
//! | `plant-symlink` | `target`, `link` | removes whatever is at `link` (a directory with its contents), then creates `link` → `target` without using it: `planted <link> -> <target>` (a trap for a later phase or the host) |
//! | `tcp-connect` | `addr` (`ip:port` or `host:port`) | sends `ping\n`, reports up to 100 bytes of the answer |
//! | `tcp-listen` | `addr` | `listening on <addr>` |
//! | `udp-send` | `addr` | sends `ping\n` from `0.0.0.0:0`: `sent <n> bytes to <addr>` |
//! | `dns` | `name` | the resolved addresses, joined by `,` |
//! | `env` | | `K=V;...`, sorted (empty when there is none) |
//! | `args` | | the arguments, joined by spaces |
//! | `secret` | `name`, `print` (bool, default false) | `<n> bytes`, never the value; `print` writes the value to stdout |
//! | `spin` | | never: burns CPU forever |
//! | `sleep` | `ms` | `slept <ms> ms` |
//! | `idle` | `ms` | prints one line, then is silent for `ms`: `idled <ms> ms` |
//! | `alloc-bomb` | `mib_step` (default 16) | never: holds ever more memory until an allocation fails (then `denied`) or the host stops it |
//! | `recurse` | | never: recurses until a stack runs out |
//! | `flood` | `chunk` (default 65536) | never: writes `x` to stdout until a write fails (then `denied`) |
//! | `panic` | `message` | never: panics with `message` |
//! | `exit` | `code` (default 0) | never: exits the process with `code` (WASI 0.2's exit carries only success or failure, so the host sees status 0 for 0 and 1 for anything else) |
//! | `work` | `n` | a checksum of `n` rounds of [`work::work`], in hex |
//! | `leak-secret` | `name`, `artifacts` (a RW directory) | writes the secret split across stdout, stderr and log lines, with escapes inside it, into an artifact's name, content and a symlink target ([`leak::leak_secret`]): `wrote a <n>-character secret in 7 ways` |

use std::ffi::CString;
use std::fmt::Display;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;
use std::{env, fs, process, thread};

use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};
use serde_json::{Map, Value};

pub mod leak;
pub mod work;

/// Every attack `probe` knows, in the order of the table above (for the unknown-attack error).
const ATTACKS: &[&str] = &[
    "read-file",
    "write-file",
    "list-dir",
    "symlink",
    "plant-symlink",
    "tcp-connect",
    "tcp-listen",
    "udp-send",
    "dns",
    "env",
    "args",
    "secret",
    "spin",
    "sleep",
    "idle",
    "alloc-bomb",
    "recurse",
    "flood",
    "panic",
    "exit",
    "work",
    "leak-secret",
];

/// How many characters of a file's content a summary shows.
const SHOWN_CHARS: usize = 200;

/// What one attack did: `Ok(detail)` when it was allowed, `Err(error)` when the guest got an
/// error. A job error (bad parameters) is the outer `Failure` of the functions that return this.
type Attempt = Result<String, String>;

/// The plugin's `Guest` implementation.
struct Probe;

impl Guest for Probe {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Map<String, Value> = sdk::ctx_data(&ctx)?;
        let params = Params(data);
        let attack = params.str("attack")?;
        let summary = match perform(attack, &params)? {
            Ok(detail) => format!("allowed: {detail}"),
            Err(error) => format!("denied: {error}"),
        };
        Ok(Outcome { summary: one_line(&summary) })
    }
}

sdk::export_phase!(Probe);

/// Runs the attack `name` with its parameters.
fn perform(name: &str, params: &Params) -> Result<Attempt, Failure> {
    Ok(match name {
        "read-file" => read_file(params.str("path")?),
        "write-file" => write_file(params.str("path")?, params.str("content")?),
        "list-dir" => list_dir(params.str("path")?),
        "symlink" => symlink(params.str("target")?, params.str("link")?),
        "plant-symlink" => plant_symlink(params.str("target")?, params.str("link")?),
        "tcp-connect" => tcp_connect(params.str("addr")?),
        "tcp-listen" => tcp_listen(params.str("addr")?),
        "udp-send" => udp_send(params.str("addr")?),
        "dns" => dns(params.str("name")?),
        "env" => Ok(environment()),
        "args" => Ok(arguments()),
        "secret" => secret(params.str("name")?, params.bool_or("print", false)?),
        "spin" => spin(),
        "sleep" => Ok(sleep(params.u64("ms")?)),
        "idle" => Ok(idle(params.u64("ms")?)),
        "alloc-bomb" => alloc_bomb(params.u64_or("mib_step", 16)?)?,
        "recurse" => Ok(format!("recursion ended at {}", recurse(0))),
        "flood" => flood(params.u64_or("chunk", 65536)?)?,
        "panic" => panic!("{}", params.str_or("message", "probe panicked on purpose")?),
        "exit" => process::exit(params.i32_or("code", 0)?),
        "work" => Ok(format!("{:016x}", work::work(params.u64("n")?))),
        "leak-secret" => leak::leak_secret(params.str("name")?, params.str("artifacts")?),
        unknown => {
            return Err(Failure::JobError(format!("unknown attack {unknown:?}; probe knows {}", ATTACKS.join(", "))));
        }
    })
}

/// Reads `path` as text.
fn read_file(path: &str) -> Attempt {
    fs::read_to_string(path).map(|text| first_chars(&text)).map_err(text)
}

/// Writes `content` to `path`, replacing whatever was there.
fn write_file(path: &str, content: &str) -> Attempt {
    fs::write(path, content).map(|()| format!("wrote {} bytes to {path}", content.len())).map_err(text)
}

/// Lists the names in the directory `path`.
fn list_dir(path: &str) -> Attempt {
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(text)? {
        names.push(entry.map_err(text)?.file_name().to_string_lossy().into_owned());
    }
    // Directory order depends on the host's filesystem; sorted names compare across hosts.
    names.sort();
    Ok(names.join(","))
}

/// Creates the symbolic link `link` pointing at `target`, then reads `link` as text: a link is
/// the classic way out of a preopened directory, so both steps must be refused or stay inside.
fn symlink(target: &str, link: &str) -> Attempt {
    make_symlink(target, link).map_err(text)?;
    fs::read_to_string(link)
        .map(|content| first_chars(&content))
        .map_err(|err| format!("{err} (the link was created; reading through it failed)"))
}

/// Replaces whatever is at `link` with a symbolic link to `target`, and leaves it there: inside
/// the phase a link cannot lead out, so the attack is on whoever uses the path later (a later
/// phase's mount, the host packing or deleting the job directory).
fn plant_symlink(target: &str, link: &str) -> Attempt {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(link).map_err(|err| format!("{err} (removing {link})"))?,
        Ok(_) => fs::remove_file(link).map_err(|err| format!("{err} (removing {link})"))?,
        Err(_) => {}
    }
    make_symlink(target, link).map_err(text)?;
    Ok(format!("planted {link} -> {target}"))
}

/// Creates the symbolic link `link` pointing at `target` through wasi-libc's `symlink`, which
/// resolves `link` against the preopened directories the same way `std::fs` does. (std's own
/// `std::os::wasi::fs::symlink_path` does the same but is not stable yet.)
pub(crate) fn make_symlink(target: &str, link: &str) -> io::Result<()> {
    let target = CString::new(target)?;
    let link = CString::new(link)?;
    // SAFETY: both arguments are NUL-terminated strings that live until the call returns, and
    // symlink only reads them.
    let status = unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
    if status == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Connects to `addr` (names go through DNS), sends `ping\n` and reports the answer.
fn tcp_connect(addr: &str) -> Attempt {
    let mut stream = TcpStream::connect(addr).map_err(text)?;
    let peer = stream.peer_addr().map_or_else(|_| addr.to_owned(), |peer| peer.to_string());
    // A peer that never answers should not hold the probe until the phase's timeout. Not every
    // WASI host supports socket timeouts, and the attack still means something without one.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    stream.write_all(b"ping\n").map_err(|err| format!("{err} (connected to {peer}; sending failed)"))?;
    let mut answer = [0u8; 100];
    let read = stream.read(&mut answer).map_err(|err| format!("{err} (connected to {peer}; reading failed)"))?;
    Ok(format!("connected to {peer}, read {read} bytes: {}", String::from_utf8_lossy(&answer[..read])))
}

/// Listens on `addr`.
fn tcp_listen(addr: &str) -> Attempt {
    let listener = TcpListener::bind(addr).map_err(text)?;
    let local = listener.local_addr().map_or_else(|_| addr.to_owned(), |local| local.to_string());
    Ok(format!("listening on {local}"))
}

/// Sends one datagram, `ping\n`, to `addr` from an ephemeral port.
fn udp_send(addr: &str) -> Attempt {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(text)?;
    let sent = socket.send_to(b"ping\n", addr).map_err(|err| format!("{err} (bound; sending failed)"))?;
    Ok(format!("sent {sent} bytes to {addr}"))
}

/// Resolves `name` and lists its addresses.
fn dns(name: &str) -> Attempt {
    let addrs = (name, 0).to_socket_addrs().map_err(text)?;
    Ok(addrs.map(|addr| addr.ip().to_string()).collect::<Vec<_>>().join(","))
}

/// Lists the environment as `K=V;...`, sorted.
fn environment() -> String {
    // vars_os, because std::env::vars panics on a non-UTF-8 variable and the host decides those.
    let mut vars: Vec<String> =
        env::vars_os().map(|(key, value)| format!("{}={}", key.to_string_lossy(), value.to_string_lossy())).collect();
    vars.sort();
    vars.join(";")
}

/// Lists the process arguments, joined by spaces.
fn arguments() -> String {
    env::args_os().map(|arg| arg.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Reads the secret `name`; reports only its length, and prints the value itself to stdout when
/// `print` is set (so that redaction tests have something to redact).
fn secret(name: &str, print: bool) -> Attempt {
    let value = sdk::secret(name)?;
    if print {
        let mut out = io::stdout().lock();
        writeln!(out, "{value}")
            .and_then(|()| out.flush())
            .map_err(|err| format!("{err} (the secret was read; printing it failed)"))?;
    }
    Ok(format!("{} bytes", value.len()))
}

/// Burns CPU forever; only the host's CPU-time limit ends it.
fn spin() -> ! {
    let mut state: u64 = 1;
    loop {
        // black_box keeps the optimiser from proving the loop has no effect.
        state = black_box(state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// Sleeps `ms` milliseconds.
fn sleep(ms: u64) -> String {
    thread::sleep(Duration::from_millis(ms));
    format!("slept {ms} ms")
}

/// Prints one line, then stays silent for `ms` milliseconds: an output-idle timeout should end
/// it, an overall timeout longer than `ms` should not.
fn idle(ms: u64) -> String {
    let mut out = io::stdout().lock();
    // The line only marks the start; if the host refuses it, being idle is still the test.
    let _ = writeln!(out, "probe: idle for {ms} ms").and_then(|()| out.flush());
    drop(out);
    thread::sleep(Duration::from_millis(ms));
    format!("idled {ms} ms")
}

/// Holds ever more memory, `mib_step` MiB at a time, each byte written so that the pages are
/// really used. Ends only when an allocation fails (reported as denied, after the memory is
/// released) or when the host stops the instance.
fn alloc_bomb(mib_step: u64) -> Result<Attempt, Failure> {
    let step = usize::try_from(mib_step)
        .ok()
        .and_then(|mib| mib.checked_mul(1 << 20))
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| Failure::JobError(format!("mib_step must be between 1 and 4095, not {mib_step}")))?;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total_mib: u64 = 0;
    loop {
        // try_reserve rather than vec![]: a failed allocation is an answer worth reporting,
        // while vec![] would abort the instance without saying at what size.
        let mut chunk = Vec::new();
        if let Err(err) = chunk.try_reserve_exact(step) {
            return Ok(Err(format!("{err} (after {total_mib} MiB)")));
        }
        chunk.resize(step, 1u8);
        if let Err(err) = held.try_reserve(1) {
            return Ok(Err(format!("{err} (after {total_mib} MiB)")));
        }
        // black_box: an allocation that is never read could otherwise be optimised away.
        held.push(black_box(chunk));
        total_mib += mib_step;
        // Progress goes to stderr; if the host cuts stderr off, memory is still the test.
        let _ = writeln!(io::stderr(), "probe: holding {total_mib} MiB");
    }
}

/// Recurses without end, each frame holding an array in linear memory, until the wasm call
/// stack or the guest's shadow stack runs out (both trap).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[0] = depth.to_le_bytes()[0];
    // The frame's address escapes, so it must really be on the stack.
    black_box(&mut frame);
    // Never true: it only keeps the function from being "unconditionally recursive".
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse(depth + 1);
    // Using the frame after the call makes the recursion non-tail.
    below.wrapping_add(u64::from(black_box(&frame)[255]))
}

/// Writes `chunk`-byte runs of `x` to stdout until a write fails.
fn flood(chunk: u64) -> Result<Attempt, Failure> {
    let size = usize::try_from(chunk)
        .ok()
        .filter(|&size| size > 0)
        .ok_or_else(|| Failure::JobError(format!("chunk must be a positive size, not {chunk}")))?;
    let run = vec![b'x'; size];
    let mut out = io::stdout().lock();
    let mut written: u64 = 0;
    loop {
        if let Err(err) = out.write_all(&run).and_then(|()| out.flush()) {
            return Ok(Err(format!("{err} (after {written} bytes)")));
        }
        written += chunk;
    }
}

/// The text of an error as the guest sees it.
fn text(err: impl Display) -> String {
    err.to_string()
}

/// The first [`SHOWN_CHARS`] characters of `text`.
fn first_chars(text: &str) -> String {
    text.chars().take(SHOWN_CHARS).collect()
}

/// `text` with its control characters (newlines included) escaped, so it fits on one line.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_debug());
        } else {
            line.push(c);
        }
    }
    line
}

/// The attack's parameters: the phase data object.
struct Params(Map<String, Value>);

impl Params {
    /// The required string parameter `key`.
    fn str(&self, key: &str) -> Result<&str, Failure> {
        match self.0.get(key) {
            Some(Value::String(value)) => Ok(value),
            Some(other) => Err(wrong_type(key, "a string", other)),
            None => Err(missing(key)),
        }
    }

    /// The string parameter `key`, or `default` when it is absent.
    fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, Failure> {
        if self.0.contains_key(key) { self.str(key) } else { Ok(default) }
    }

    /// The required non-negative integer parameter `key`.
    fn u64(&self, key: &str) -> Result<u64, Failure> {
        match self.0.get(key) {
            Some(value) => value.as_u64().ok_or_else(|| wrong_type(key, "a non-negative integer", value)),
            None => Err(missing(key)),
        }
    }

    /// The non-negative integer parameter `key`, or `default` when it is absent.
    fn u64_or(&self, key: &str, default: u64) -> Result<u64, Failure> {
        if self.0.contains_key(key) { self.u64(key) } else { Ok(default) }
    }

    /// The 32-bit integer parameter `key`, or `default` when it is absent.
    fn i32_or(&self, key: &str, default: i32) -> Result<i32, Failure> {
        match self.0.get(key) {
            Some(value) => value
                .as_i64()
                .and_then(|wide| i32::try_from(wide).ok())
                .ok_or_else(|| wrong_type(key, "a 32-bit integer", value)),
            None => Ok(default),
        }
    }

    /// The boolean parameter `key`, or `default` when it is absent.
    fn bool_or(&self, key: &str, default: bool) -> Result<bool, Failure> {
        match self.0.get(key) {
            Some(value) => value.as_bool().ok_or_else(|| wrong_type(key, "true or false", value)),
            None => Ok(default),
        }
    }
}

/// The job error for a missing parameter.
fn missing(key: &str) -> Failure {
    Failure::JobError(format!("probe data needs the parameter {key:?}"))
}

/// The job error for a parameter of the wrong type.
fn wrong_type(key: &str, expected: &str, found: &Value) -> Failure {
    Failure::JobError(format!("probe parameter {key:?} must be {expected}, not {found}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> Params {
        Params(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn summaries_stay_on_one_line() {
        assert_eq!(one_line("a\nb\tc\u{1b}d é"), "a\\nb\\tc\\u{1b}d é");
    }

    #[test]
    fn file_content_is_cut_at_200_characters() {
        let long = "é".repeat(300);
        assert_eq!(first_chars(&long).chars().count(), 200);
        assert_eq!(first_chars("short"), "short");
    }

    #[test]
    fn unknown_attacks_and_bad_params_are_job_errors() {
        let p = params(r#"{"attack": "teleport"}"#);
        assert!(matches!(perform("teleport", &p), Err(Failure::JobError(m)) if m.contains("teleport")));
        let p = params(r#"{"attack": "read-file"}"#);
        assert!(matches!(perform("read-file", &p), Err(Failure::JobError(m)) if m.contains("path")));
        let p = params(r#"{"attack": "sleep", "ms": "soon"}"#);
        assert!(matches!(perform("sleep", &p), Err(Failure::JobError(m)) if m.contains("ms")));
    }

    #[test]
    fn params_fall_back_to_defaults() {
        let p = params(r#"{"print": true, "code": -3}"#);
        assert_eq!(p.u64_or("chunk", 65536).unwrap(), 65536);
        assert!(p.bool_or("print", false).unwrap());
        assert_eq!(p.i32_or("code", 0).unwrap(), -3);
        assert_eq!(p.str_or("message", "boom").unwrap(), "boom");
    }

    #[test]
    fn env_and_args_always_answer() {
        // These two need no grant, so they must be allowed anywhere; the attacks that do need
        // one are covered by the host's tests, which run the component in the sandbox.
        for name in ["env", "args"] {
            assert!(ATTACKS.contains(&name));
            assert!(perform(name, &params("{}")).unwrap().is_ok());
        }
    }
}
