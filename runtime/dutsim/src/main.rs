//! `phasebox-dutsim [DIR]`: runs a simulated DUT on fixed ports until interrupted, matching
//! `config/device.toml` (name dutsim-01; SSH 127.0.0.1:18022, console :18023, power :18080;
//! files in DIR, default /tmp/phasebox-dutsim). Its device config is written to DIR/device.toml.

use std::path::PathBuf;

use phasebox_dutsim::{DutSim, DutSimConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args_os().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/phasebox-dutsim"));
    if args.next().is_some() || dir.to_string_lossy().starts_with('-') {
        return Err("usage: phasebox-dutsim [DIR]".into());
    }
    let sim = DutSim::start(DutSimConfig {
        name: "dutsim-01".into(),
        dir: Some(dir.clone()),
        ssh_port: 18022,
        console_port: 18023,
        power_port: 18080,
        ..DutSimConfig::default()
    })
    .await?;
    let config_path = dir.join("device.toml");
    std::fs::write(&config_path, sim.device_config().to_toml_string())?;
    tracing::info!(config = %config_path.display(), "dutsim-01 is running; Ctrl-C or SIGTERM stops it");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
