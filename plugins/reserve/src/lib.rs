//! `reserve`: Testflinger's reservation. Installs the reservation's ssh keys on the device under
//! test, prints how to connect, and holds the device for `reserve_data.timeout` seconds (default
//! 3600). Cancelling the job ends the hold at once (the host stops the phase).
//!
//! Keys (`reserve_data.ssh_keys`):
//! - `lp:<user>`: the user's keys on Launchpad (`https://launchpad.net/~<user>/+sshkeys`);
//! - `gh:<user>`: the user's keys on GitHub (`https://github.com/<user>.keys`);
//! - an OpenSSH public key line, installed as given.
//!
//! Imports go through `wasi:http`, so the phase's grant must name the key server's origin; a
//! refused or unreachable server is a clear job error naming the key. Operators with a key
//! mirror set the facts `ssh_import_lp` / `ssh_import_gh` to a URL with `{user}` in it.
//!
//! Keys are appended to `~/.ssh/authorized_keys` on the device (or the path in the fact
//! `authorized_keys`), each once. The connect line uses the facts `device_ip` (or `ssh_host`)
//! and `ssh_port`, and the device's own `id -un`.

use std::time::{Duration, Instant};

use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Testflinger's default reservation time.
const DEFAULT_TIMEOUT: u64 = 3600;
/// Largest key list a key server may send back.
const MAX_KEYS_BYTES: u64 = 256 * 1024;
/// Key types accepted on the device.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The part of `reserve_data` this plugin reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    ssh_keys: Vec<String>,
    timeout: Option<u64>,
}

struct Reserve;

impl Guest for Reserve {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: Data = sdk::ctx_data(&ctx)?;
        let name = sdk::fact(&ctx, "name").unwrap_or("the device").to_owned();
        let timeout = data.timeout.unwrap_or(DEFAULT_TIMEOUT);

        let mut keys = Vec::new();
        for entry in &data.ssh_keys {
            let found = resolve(&ctx, entry)?;
            println!("{entry}: {} key(s)", found.len());
            keys.extend(found);
        }
        if !keys.is_empty() {
            install(&ctx, &keys)?;
        }
        let user = sdk::exec::run_captured("id -un", &[], Duration::from_secs(30))
            .map_err(|e| Failure::InfraError(format!("{name} does not answer over exec: {}", sdk::describe(&e))))?
            .stdout_text()
            .trim()
            .to_owned();
        let host = sdk::fact(&ctx, "device_ip").or_else(|| sdk::fact(&ctx, "ssh_host")).unwrap_or(&name).to_owned();
        let port = sdk::fact(&ctx, "ssh_port").filter(|p| *p != "22").map(|p| format!(" -p {p}")).unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        println!("*** TESTFLINGER SYSTEM RESERVED ***");
        println!("You can now connect to {user}@{host}");
        println!("  ssh{port} {user}@{host}");
        println!("Current time:           {}", rfc3339(now));
        // A timeout past the calendar's end (a hostile or mistyped job) shows as `never`.
        let expires = i64::try_from(timeout).ok().and_then(|t| now.checked_add(time::Duration::seconds(t)));
        println!("Reservation expires at: {}", expires.map_or_else(|| "never".to_owned(), rfc3339));
        println!("Reservation will automatically timeout in {timeout} seconds");
        println!("To end the reservation sooner use: phasebox cancel {}", ctx.job_id);
        sdk::log::info(&format!("{name} reserved for {timeout} s with {} key(s)", keys.len()));

        // Sleep in short steps so the output shows the reservation is alive; a cancel stops the
        // phase from the host side whatever the guest is doing.
        let started = Instant::now();
        let hold = Duration::from_secs(timeout);
        while started.elapsed() < hold {
            std::thread::sleep((hold - started.elapsed()).min(Duration::from_secs(60)));
        }
        println!("reservation of {name} ended after {timeout} s");
        Ok(Outcome { summary: format!("{name} reserved for {timeout} s for {user}") })
    }
}

/// The public keys one `ssh_keys` entry stands for.
fn resolve(ctx: &PhaseContext, entry: &str) -> Result<Vec<String>, Failure> {
    let (url, source) = if let Some(user) = entry.strip_prefix("lp:") {
        (template(ctx, "ssh_import_lp", "https://launchpad.net/~{user}/+sshkeys", user)?, "Launchpad")
    } else if let Some(user) = entry.strip_prefix("gh:") {
        (template(ctx, "ssh_import_gh", "https://github.com/{user}.keys", user)?, "GitHub")
    } else {
        return match public_key(entry) {
            Some(key) => Ok(vec![key]),
            None => Err(Failure::JobError(format!("{entry:?} is not an lp:/gh: id or an OpenSSH public key"))),
        };
    };
    let fetch = || -> Result<Vec<u8>, sdk::http::Error> {
        let response = sdk::http::get(&url)?;
        let status = response.status();
        let body = response.read_all(MAX_KEYS_BYTES)?;
        if status == 200 { Ok(body) } else { Err(sdk::http::Error::Failed(format!("the server answered {status}"))) }
    };
    let body = fetch().map_err(|e| match e {
        sdk::http::Error::Denied => Failure::JobError(format!(
            "{entry}: cannot import keys from {source}: the reserve phase is not granted http access to {url} \
             (ask for it in reserve_data.phasebox.grants.http, and the operator's policy must allow it)"
        )),
        other => Failure::JobError(format!("{entry}: cannot import keys from {source} ({url}): {other}")),
    })?;
    let text = String::from_utf8_lossy(&body);
    let keys: Vec<String> = text.lines().filter_map(public_key).collect();
    if keys.is_empty() {
        return Err(Failure::JobError(format!("{entry}: {source} has no ssh keys for this user")));
    }
    Ok(keys)
}

/// The key server URL for `user`: the operator's template from the fact `fact`, or `default`.
fn template(ctx: &PhaseContext, fact: &str, default: &str, user: &str) -> Result<String, Failure> {
    // User names go into a URL path: keep them to what Launchpad and GitHub allow.
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(Failure::JobError(format!("{user:?} is not a Launchpad or GitHub user name")));
    }
    Ok(sdk::fact(ctx, fact).unwrap_or(default).replace("{user}", user))
}

/// `line` as an authorized_keys line, when it is one public key: a known type, a base64 blob,
/// an optional comment, nothing that could start a second line or an option.
fn public_key(line: &str) -> Option<String> {
    let line = line.trim();
    let mut parts = line.splitn(3, ' ');
    let (kind, blob) = (parts.next()?, parts.next()?);
    let comment = parts.next().unwrap_or("");
    let base64 = |c: char| c.is_ascii_alphanumeric() || "+/=".contains(c);
    let clean = KEY_TYPES.contains(&kind)
        && blob.len() >= 16
        && blob.chars().all(base64)
        && comment.chars().all(|c| !c.is_control());
    clean.then(|| line.to_owned())
}

/// Appends each key to the device's authorized_keys, unless it is there already.
fn install(ctx: &PhaseContext, keys: &[String]) -> Result<(), Failure> {
    let file = sdk::fact(ctx, "authorized_keys").unwrap_or("$HOME/.ssh/authorized_keys");
    // Keys travel as an environment variable (the host quotes it), never spliced into the script.
    let script = format!(
        "umask 077; f=\"{file}\"; mkdir -p \"$(dirname \"$f\")\" && touch \"$f\" || exit 3; \
         printf '%s\\n' \"$PHASEBOX_KEYS\" | while IFS= read -r k; do \
         [ -n \"$k\" ] || continue; grep -qxF -- \"$k\" \"$f\" || printf '%s\\n' \"$k\" >> \"$f\" || exit 4; done"
    );
    let env = [("PHASEBOX_KEYS".to_owned(), keys.join("\n"))];
    let out = sdk::exec::run_captured(&script, &env, Duration::from_secs(60))
        .map_err(|e| Failure::InfraError(format!("installing ssh keys failed: {}", sdk::describe(&e))))?;
    if out.status != 0 {
        return Err(Failure::InfraError(format!(
            "installing ssh keys failed with status {}: {}",
            out.status,
            out.stderr_text()
        )));
    }
    println!("installed {} key(s) in {file}", keys.len());
    Ok(())
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`: whole seconds, as a user reads and types it.
fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

sdk::export_phase!(Reserve);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rfc3339() {
        let at = |secs| rfc3339(OffsetDateTime::from_unix_timestamp(secs).unwrap());
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_392_000 + 3_723), "2026-11-23T01:02:03Z");
        let fraction = OffsetDateTime::from_unix_timestamp_nanos(1_500_000_000).unwrap();
        assert_eq!(rfc3339(fraction), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn only_single_line_public_keys_pass() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmzMZkCALj10zQFPgqtRgWnEyYiWLxSJJN6rFF0k18S alice@host";
        assert_eq!(public_key(key).as_deref(), Some(key));
        assert!(public_key("command=\"sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmz").is_none());
        assert!(public_key("ssh-ed25519 AAAA$(reboot)AAAAAAAAAAAA").is_none());
        assert!(public_key("-----BEGIN OPENSSH PRIVATE KEY-----").is_none());
        assert!(public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmz a\u{1b}b").is_none());
    }
}
