//! `phasebox server [--config FILE] [--listen ADDR]`: the Testflinger v1-compatible server.

use std::net::SocketAddr;
use std::path::PathBuf;

use phasebox_server::ServerConfig;

use crate::Verdict;

/// Serves until SIGINT or SIGTERM. Plain HTTP is served on loopback only unless
/// `allow_plain_http` is set: tokens and secrets cross this connection.
pub async fn run(config: Option<PathBuf>, listen: SocketAddr, allow_plain_http: bool) -> anyhow::Result<Verdict> {
    if !listen.ip().is_loopback() && !allow_plain_http {
        anyhow::bail!(
            "refusing to serve plain HTTP on {listen}: tokens and secrets would cross the network unencrypted; \
             listen on 127.0.0.1 behind a TLS proxy, or pass --allow-plain-http"
        );
    }
    let config = match &config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("phasebox server listening on http://{}", listener.local_addr()?);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    phasebox_server::launch(listener, config, shutdown).await?;
    Ok(Verdict::Success)
}
