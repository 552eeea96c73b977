//! Builds the guest plugins of `plugins/` for the tests and the benchmarks, and hands out their
//! paths. A dev-dependency only: the `phasebox` binary carries its plugins built in
//! (`phasebox-builtin`) and never builds anything at run time.
//!
//! Guest crates target `wasm32-wasip2` and live in their own cargo workspace, so the host
//! build never compiles them. Tests and benchmarks call [`build`], which runs
//! `cargo build --release` in `plugins/` (adding the `wasm32-wasip2` target through rustup
//! first when it is missing), then writes each component with its `phasebox.toml` embedded to
//! `plugins/target/phasebox/<name>.wasm`. Cargo's own lock serializes concurrent builds, and
//! outputs are replaced atomically, so many test processes may call it at once.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use phasebox_sandbox::manifest::{self, Manifest};

/// The plugins this crate builds: crate directory under `plugins/` and output name.
pub const PLUGINS: &[&str] = &[
    "hello",
    "probe",
    "http-probe",
    "hog",
    "shell",
    "noprovision",
    "flash",
    "reserve",
    "firmware",
    "cleanup",
    "device-probe",
];

/// Why the guests could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}); its output is above")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A manifest was malformed.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The `plugins/` directory of this source tree.
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins")
}

/// Where [`build`] puts the components with their manifests embedded.
pub fn out_dir() -> PathBuf {
    plugins_dir().join("target/phasebox")
}

/// The path of a built plugin (call [`build`] first).
pub fn path(name: &str) -> PathBuf {
    out_dir().join(format!("{name}.wasm"))
}

/// Builds every guest plugin once per process and returns the directory holding them.
pub fn build() -> Result<PathBuf, &'static BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    match BUILT.get_or_init(build_now) {
        Ok(dir) => Ok(dir.clone()),
        Err(e) => Err(e),
    }
}

fn build_now() -> Result<PathBuf, BuildError> {
    let dir = plugins_dir();
    ensure_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&dir).args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"]);
    // Settings meant for the host build must not leak into the guest build.
    for var in
        ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS"]
    {
        cmd.env_remove(var);
    }
    run(&mut cmd, &format!("{cargo} build --release --target wasm32-wasip2 (in plugins/)"))?;

    let out = out_dir();
    std::fs::create_dir_all(&out).map_err(|source| BuildError::Io { path: out.clone(), source })?;
    for name in PLUGINS {
        let wasm = dir.join(format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")));
        let toml_path = dir.join(name).join("phasebox.toml");
        let bytes = std::fs::read(&wasm).map_err(|source| BuildError::Io { path: wasm.clone(), source })?;
        let text =
            std::fs::read_to_string(&toml_path).map_err(|source| BuildError::Io { path: toml_path.clone(), source })?;
        let manifest =
            Manifest::parse(&text).map_err(|reason| BuildError::Manifest { path: toml_path.clone(), reason })?;
        let embedded =
            manifest::embed(&bytes, &manifest).map_err(|reason| BuildError::Manifest { path: wasm.clone(), reason })?;
        let dest = path(name);
        let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &embedded)
            .and_then(|()| std::fs::rename(&tmp, &dest))
            .map_err(|source| BuildError::Io { path: dest.clone(), source })?;
    }
    Ok(out)
}

/// Adds the wasm32-wasip2 target when rustup manages the toolchain and lacks it.
fn ensure_target() -> Result<(), BuildError> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") => Ok(()),
        Ok(_) => {
            run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]), "rustup target add wasm32-wasip2")
        }
        // No rustup: the toolchain was installed some other way; let cargo report a missing target.
        Err(_) => Ok(()),
    }
}

fn run(cmd: &mut Command, label: &str) -> Result<(), BuildError> {
    tracing::info!(command = label, "building guest plugins");
    let status = cmd.status().map_err(|source| BuildError::Spawn { command: label.into(), source })?;
    if status.success() { Ok(()) } else { Err(BuildError::Failed { command: label.into(), status }) }
}
