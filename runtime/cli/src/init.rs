//! `phasebox server init` and `phasebox agent init`: commented starting configurations (and the
//! server's keys), so a lab engineer edits files instead of assembling them.
//!
//! Nothing is overwritten: an existing file is an error naming it, so running init again on a
//! configured host changes nothing. Keys are written 0600; configuration files hold no secret.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use clap::Args;

use crate::Verdict;

const SERVER_TEMPLATE: &str = include_str!("../templates/server.toml");
const AGENT_TEMPLATE: &str = include_str!("../templates/agent.toml");
const RUNNER_TEMPLATE: &str = include_str!("../templates/runner.toml");
const DEVICE_EXAMPLE: &str = include_str!("../../../config/device.toml");

/// Where the configuration and the state go (the packaged layout by default).
#[derive(Args, Clone, Debug)]
pub struct Dirs {
    /// Where to write the configuration (and, for the server, its keys).
    #[arg(long, default_value = "/etc/phasebox")]
    pub config_dir: PathBuf,
    /// Where the configuration puts state: databases, blobs, spools, caches (created if
    /// missing, mode 0750).
    #[arg(long, default_value = "/var/lib/phasebox")]
    pub state_dir: PathBuf,
    /// The user the service runs as (the package's is `phasebox`): the keys and the state
    /// directory are given to it, so init can run as root while the service does not.
    #[arg(long)]
    pub owner: Option<String>,
}

/// The arguments of `phasebox agent init`.
#[derive(Args, Clone, Debug)]
pub struct AgentInit {
    #[command(flatten)]
    pub dirs: Dirs,
    /// The server's base URL.
    #[arg(long)]
    pub server: String,
    /// The agent's client id on the server.
    #[arg(long, default_value = "agent-host-01")]
    pub client_id: String,
    /// The first device under test's name.
    #[arg(long, default_value = "dut-1")]
    pub dut: String,
    /// The queue it takes jobs from.
    #[arg(long, default_value = "lab")]
    pub queue: String,
}

/// Writes `server.toml`, `secrets.key` and `jwt-signing.key` into the configuration directory.
pub fn server(dirs: &Dirs) -> anyhow::Result<Verdict> {
    let text = fill(SERVER_TEMPLATE, dirs, &[]);
    // Check first, so a clash leaves no half-written set behind.
    let files = ["server.toml", "secrets.key", "jwt-signing.key"].map(|f| dirs.config_dir.join(f));
    refuse_existing(&files)?;
    create_dir(&dirs.config_dir)?;
    let owner = dirs.owner.as_deref().map(user_ids).transpose()?;
    write_new(&files[0], text.as_bytes(), 0o644)?;
    let engine = base64::engine::general_purpose::STANDARD;
    write_new(&files[1], format!("{}\n", engine.encode(random::<32>()?)).as_bytes(), 0o600)?;
    write_new(&files[2], format!("{}\n", engine.encode(random::<48>()?)).as_bytes(), 0o600)?;
    for key in &files[1..] {
        give(key, owner)?;
    }
    state_dir(dirs, owner)?;
    for file in &files {
        println!("wrote {}", file.display());
    }
    println!(
        "next: `phasebox server --config {} --listen ADDRESS` (state goes to {}); see README, \"Install a lab\"",
        files[0].display(),
        dirs.state_dir.display()
    );
    Ok(Verdict::Success)
}

/// Writes `agent.toml`, `runner.toml` and a device template for the first DUT.
pub fn agent(args: &AgentInit) -> anyhow::Result<Verdict> {
    for (what, value) in [("--client-id", &args.client_id), ("--dut", &args.dut), ("--queue", &args.queue)] {
        anyhow::ensure!(
            !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{what} {value:?}: use letters, digits, '-', '_' and '.' only"
        );
    }
    anyhow::ensure!(!args.server.contains(['"', '\\', '\n']), "--server {:?} is not a URL", args.server);
    let vars =
        [("server", args.server.as_str()), ("client_id", &args.client_id), ("dut", &args.dut), ("queue", &args.queue)];
    let device = format!(
        "# The device configuration of {dut}: fill it in, then uncomment `device` in agent.toml.\n\
         # Below, commented out, the example for the simulated device.\n#\n{}",
        DEVICE_EXAMPLE
            .lines()
            .map(|l| if l.starts_with('#') || l.is_empty() { format!("{l}\n") } else { format!("# {l}\n") })
            .collect::<String>(),
        dut = args.dut
    );
    let files = [
        (args.dirs.config_dir.join("agent.toml"), fill(AGENT_TEMPLATE, &args.dirs, &vars)),
        (args.dirs.config_dir.join("runner.toml"), fill(RUNNER_TEMPLATE, &args.dirs, &vars)),
        (args.dirs.config_dir.join(format!("{}.device.toml", args.dut)), device),
    ];
    refuse_existing(&files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>())?;
    let owner = args.dirs.owner.as_deref().map(user_ids).transpose()?;
    create_dir(&args.dirs.config_dir)?;
    for (path, text) in &files {
        write_new(path, text.as_bytes(), 0o644)?;
        println!("wrote {}", path.display());
    }
    state_dir(&args.dirs, owner)?;
    println!(
        "next: create the agent's client on the server and put its secret into {} (mode 0600), fill in \
         {}, then `phasebox agent --config {}`",
        args.dirs.config_dir.join("agent.secret").display(),
        files[2].0.display(),
        files[0].0.display()
    );
    Ok(Verdict::Success)
}

/// The template with `{config_dir}`, `{state_dir}` and `vars` filled in.
fn fill(template: &str, dirs: &Dirs, vars: &[(&str, &str)]) -> String {
    let mut text = template
        .replace("{config_dir}", &dirs.config_dir.display().to_string())
        .replace("{state_dir}", &dirs.state_dir.display().to_string());
    for (name, value) in vars {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

fn refuse_existing(files: &[PathBuf]) -> anyhow::Result<()> {
    for file in files {
        anyhow::ensure!(
            std::fs::symlink_metadata(file).is_err(),
            "{} exists already: init writes a new configuration and never overwrites one",
            file.display()
        );
    }
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Creates the state directory (0750) when missing, and gives it to `owner`.
fn state_dir(dirs: &Dirs, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dirs.state_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dirs.state_dir)
            .with_context(|| format!("creating {}", dirs.state_dir.display()))?;
    }
    give(&dirs.state_dir, owner)
}

fn give(path: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let Some((uid, gid)) = owner else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to uid {uid}", path.display()))
}

/// The uid and gid of a local user (a system user, as the package creates, is in /etc/passwd).
fn user_ids(name: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == name)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .with_context(|| format!("--owner {name:?}: no such user in /etc/passwd"))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

fn random<const N: usize>() -> anyhow::Result<zeroize::Zeroizing<[u8; N]>> {
    let mut bytes = zeroize::Zeroizing::new([0u8; N]);
    getrandom::fill(&mut *bytes).map_err(|e| anyhow::anyhow!("no randomness for the keys: {e}"))?;
    Ok(bytes)
}
