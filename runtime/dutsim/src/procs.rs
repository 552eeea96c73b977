//! What other processes on this host can read about each other: for tests that a value never
//! shows in a process's arguments (`ps`, `/proc/<pid>/cmdline`, readable by every user).

use std::path::Path;

use phasebox_device::{Device, ExecRequest};

/// Runs a command with a secret value in its environment on `device`; while it runs, looks
/// for the value in every process's arguments on this host (where the simulated DUT's and a
/// local sshd's processes run) and in sshd's environment. `Err` says where the value showed,
/// or that the command did not see it.
pub async fn check_secret_env_stays_out_of_argv(device: &Device) -> Result<(), String> {
    let value = "argv-secret-5f2c91-value";
    let request = ExecRequest::new("echo started; sleep 2; printf '<%s>' \"$TOKEN\"").env("TOKEN", value);
    let mut process = device.exec(request).await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    while !out.contains("started") {
        let (_, data) = process.next_output().await.ok_or("the command ended before it printed")?;
        out.push_str(&String::from_utf8_lossy(&data));
    }
    // The command's shell is running (sleeping): its process and every other one is listed.
    let shown = arguments_holding(value);
    if !shown.is_empty() {
        return Err(format!("the value is in a process's arguments: {shown:?}"));
    }
    let shown = environments_holding("sshd", value);
    if !shown.is_empty() {
        return Err(format!("the value is in sshd's environment: {shown:?}"));
    }
    while let Some((_, data)) = process.next_output().await {
        out.push_str(&String::from_utf8_lossy(&data));
    }
    let status = process.wait().await.map_err(|e| e.to_string())?;
    if !status.success() || !out.ends_with(&format!("<{value}>")) {
        return Err(format!("the command did not see the value: {status}, output {out:?}"));
    }
    Ok(())
}

/// Every process (`pid: arguments`) whose command line holds `needle`.
pub fn arguments_holding(needle: &str) -> Vec<String> {
    processes(|pid, dir| {
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        contains(&cmdline, needle.as_bytes()).then(|| format!("{pid}: {}", String::from_utf8_lossy(&cmdline)))
    })
}

/// Every process whose name starts with `name` (`sshd`, say) and whose environment holds
/// `needle` (`pid: name`).
pub fn environments_holding(name: &str, needle: &str) -> Vec<String> {
    processes(|pid, dir| {
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        let environ = std::fs::read(dir.join("environ")).ok()?;
        (comm.starts_with(name) && contains(&environ, needle.as_bytes())).then(|| format!("{pid}: {}", comm.trim()))
    })
}

fn processes(mut check: impl FnMut(u32, &Path) -> Option<String>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            check(pid, &e.path())
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
