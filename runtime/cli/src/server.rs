//! `phasebox server [--config FILE] [--listen ADDR]`: the Testflinger v1-compatible server, and
//! `phasebox server admin …` to manage its clients and restricted queues.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Subcommand;
use phasebox_server::ServerConfig;

use crate::Verdict;
use crate::admin::{self, AdminCommand};

/// Subcommands of `phasebox server` (without one, it serves).
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Write a commented starting configuration (server.toml) and the server's keys
    /// (secrets.key, jwt-signing.key, mode 0600) into the configuration directory; never
    /// overwrites a file.
    Init {
        #[command(flatten)]
        dirs: crate::init::Dirs,
    },
    /// Manage clients and restricted queues in the configured database (`--config`).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

/// Serves until SIGINT or SIGTERM, or runs an admin command. Plain HTTP is served on loopback
/// only unless `allow_plain_http` is set: tokens and secrets cross this connection. With TLS
/// configured (`tls_cert_file`, `tls_key_file`) any address is fine.
pub async fn run(
    config: Option<PathBuf>,
    listen: SocketAddr,
    allow_plain_http: bool,
    command: Option<ServerCommand>,
) -> anyhow::Result<Verdict> {
    if let Some(ServerCommand::Init { dirs }) = &command {
        return crate::init::server(dirs);
    }
    let config = match &config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    match command {
        Some(ServerCommand::Admin { command }) => return admin::run(&config, command).await,
        Some(ServerCommand::Init { .. }) | None => {}
    }
    let tls = config.tls_enabled();
    if !tls && !listen.ip().is_loopback() && !allow_plain_http {
        anyhow::bail!(
            "refusing to serve plain HTTP on {listen}: tokens and secrets would cross the network unencrypted; \
             configure tls_cert_file and tls_key_file, listen on 127.0.0.1 behind a TLS proxy, or pass \
             --allow-plain-http"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let scheme = if tls { "https" } else { "http" };
    eprintln!("phasebox server listening on {scheme}://{}", listener.local_addr()?);
    eprintln!("phasebox web interface on {scheme}://{}/", listener.local_addr()?);
    if let Some(metrics) = config.metrics_listen {
        eprintln!("phasebox server metrics on http://{metrics}/metrics");
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    phasebox_server::launch_with_routes(listener, config, phasebox_web::router, shutdown).await?;
    Ok(Verdict::Success)
}
