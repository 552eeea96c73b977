//! The `phasebox` command. Each verb is a thin call into a library crate; this file only parses
//! arguments, sets up logging and maps results to exit codes:
//!
//! - 0: the command did what was asked (for `run` and `demo`: the job passed);
//! - 1: it ran, and what it ran did not pass;
//! - 2: it could not run (bad arguments, unreadable files, a plugin that does not load).

mod admin;
mod agent;
mod builtin;
mod check;
mod client;
mod demo;
mod init;
mod inspect;
mod run;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// phasebox: run Testflinger jobs whose phases are sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "phasebox", version, about)]
struct Cli {
    /// Log more (`-v` info, `-vv` debug); logs go to stderr. `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo: a well-behaved plugin and an adversarial one under a grant, showing what
    /// was allowed and what was denied.
    Demo,
    /// Run one job locally, without a server: live output, then results, JUnit, the event log
    /// and artifacts in the out directory. Exits 0 only if the job passed.
    Run {
        /// The job definition (Testflinger YAML or JSON).
        job: PathBuf,
        /// The runner configuration (plugins, defaults per phase, policy, device); the built-in
        /// one (`phasebox config runner`), with the built-in plugins, when not given.
        /// (`--agent-config` is read as an older name of this flag.)
        #[arg(long, alias = "agent-config")]
        runner_config: Option<PathBuf>,
        /// Where to write results.json, junit.xml, events.jsonl and artifacts.tar.gz.
        #[arg(long, default_value = "phasebox-out")]
        out: PathBuf,
        /// The job's attachments, as a tar.gz in Testflinger's layout (`<phase>/<file>`).
        #[arg(long)]
        attachments: Option<PathBuf>,
        /// A secret the job may declare, read from a file: `NAME=PATH` (repeatable).
        #[arg(long = "secret-file", value_name = "NAME=PATH")]
        secret_files: Vec<String>,
    },
    /// Serve the Testflinger v1-compatible API (SQLite by default, PostgreSQL by URL) until
    /// SIGINT or SIGTERM; `admin` manages its clients and restricted queues.
    Server {
        /// The server configuration (TOML); defaults: SQLite in ./phasebox-server.db, blobs in
        /// ./phasebox-blobs.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: std::net::SocketAddr,
        /// Serve plain HTTP on an address other than loopback (not needed with TLS configured).
        #[arg(long)]
        allow_plain_http: bool,
        #[command(subcommand)]
        command: Option<server::ServerCommand>,
    },
    /// Serve the devices under test of an agent configuration (see config/agent.toml): claim
    /// jobs from the server and run them, until SIGINT or SIGTERM.
    Agent {
        /// The agent configuration (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<AgentCommand>,
    },
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Print a built-in configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Write a commented starting configuration: agent.toml with one device under test,
    /// runner.toml (the built-in plugins and a lab policy) and a device template; never
    /// overwrites a file.
    Init(init::AgentInit),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The runner configuration `phasebox run` uses without `--runner-config`: the built-in
    /// plugins, hello in every phase, and a policy for one local machine.
    Runner,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins built into this binary: name, version, sha256 and whether a runner
    /// configuration may offer it to jobs (`builtin_plugins`).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the built-in plugins, manifests embedded, to `DIR/<name>.wasm`.
    Export {
        /// The directory to write to (created if missing).
        dir: PathBuf,
    },
    /// Print a plugin's world, imports, declared capabilities and sha256.
    Inspect {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Embed a manifest (`phasebox.toml`) into a component, so the plugin is one file.
    Embed {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The manifest to embed.
        #[arg(long, short)]
        manifest: PathBuf,
        /// Where to write the component with its manifest.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Check whether a plugin would load and link under a policy: its world and version, each
    /// import against what the manifest declares and the policy allows, its declared
    /// capabilities, size, compile time, and whether the compiled artifact was cached. Exits 1
    /// when an import would be refused.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The operator's policy (TOML: `[allow]`, `[env]`, `[limits]`); without it, only the
        /// manifest is checked.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

/// What a verb reports back to `main`.
pub enum Verdict {
    /// It did what was asked.
    Success,
    /// It ran, and what it ran did not pass.
    NotPassed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Demo => runtime().and_then(|rt| rt.block_on(demo::run())),
        Command::Server { config, listen, allow_plain_http, command } => {
            runtime().and_then(|rt| rt.block_on(server::run(config, listen, allow_plain_http, command)))
        }
        Command::Run { job, runner_config, out, attachments, secret_files } => runtime()
            .and_then(|rt| rt.block_on(run::run(run::RunArgs { job, runner_config, out, attachments, secret_files }))),
        Command::Agent { command: Some(AgentCommand::Init(args)), .. } => init::agent(&args),
        Command::Agent { config: Some(config), command: None } => {
            runtime().and_then(|rt| rt.block_on(agent::run(&config)))
        }
        Command::Agent { config: None, command: None } => Err(anyhow::anyhow!("phasebox agent needs --config FILE")),
        Command::Client(command) => runtime().and_then(|rt| rt.block_on(client::run(command))),
        Command::Plugin { command: PluginCommand::List { json } } => builtin::list(json),
        Command::Plugin { command: PluginCommand::Export { dir } } => builtin::export(&dir),
        Command::Config { command: ConfigCommand::Runner } => builtin::print_runner_config(),
        Command::Plugin { command: PluginCommand::Inspect { file, json } } => inspect::inspect(&file, json),
        Command::Plugin { command: PluginCommand::Embed { file, manifest, output } } => {
            inspect::embed(&file, &manifest, &output)
        }
        Command::Plugin { command: PluginCommand::Check { file, policy } } => check::check(&file, policy.as_deref()),
    };
    match result {
        Ok(Verdict::Success) => ExitCode::SUCCESS,
        Ok(Verdict::NotPassed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("phasebox: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Where compiled plugins are cached: `$XDG_CACHE_HOME/phasebox` or `~/.cache/phasebox`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("phasebox"))
}
