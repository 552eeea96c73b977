//! Compiles the built-in plugins (`plugins/<name>/`) for wasm32-wasip2 and writes
//! `$OUT_DIR/builtin.rs`, which includes each component and its manifest in the library.
//!
//! The guest build has its own target directory under `OUT_DIR` (as wasmtime's
//! `crates/test-programs/artifacts` does), so the host's settings never reach it, and it reruns
//! only when the plugins' sources change: a host build that touches no plugin costs nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugins built in, by crate directory under `plugins/` (which is also the plugin's name).
/// src/lib.rs says which of them a runner loads.
const BUILTIN: &[&str] = &["noprovision", "flash", "shell", "reserve", "firmware", "cleanup", "hello", "probe"];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..");
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    // Only the sources: plugins/target changes on every guest build and must not trigger one.
    for path in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "sdk"].iter().map(|p| plugins.join(p)) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for name in BUILTIN {
        println!("cargo:rerun-if-changed={}", plugins.join(name).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    require_target(&rustc);

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out_dir.join("guests");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--locked", "--quiet", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for name in BUILTIN {
        cmd.args(["-p", name]);
    }
    // The host build's settings (flags, wrappers such as clippy's, profiles, its target) are not
    // the guests'.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || matches!(
                &*key,
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_MAKEFLAGS"
                    | "RUSTDOCFLAGS"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run `{cargo} build` in {}: {e}", plugins.display()));
    if !status.success() {
        panic!(
            "building the built-in plugins failed ({status}): `cargo build --release --locked --target {TARGET}` \
             in {}; its output is above",
            plugins.display()
        );
    }

    let mut code = String::from("&[\n");
    for name in BUILTIN {
        let wasm = target_dir.join(format!("{TARGET}/release/{}.wasm", name.replace('-', "_")));
        let manifest = plugins.join(name).join("phasebox.toml");
        assert!(wasm.is_file(), "the guest build wrote no {}", wasm.display());
        code.push_str(&format!(
            "    Builtin {{ name: {name:?}, component: include_bytes!({wasm:?}), manifest: include_str!({manifest:?}) }},\n",
            wasm = wasm.display().to_string(),
            manifest = canonical(&manifest).display().to_string(),
        ));
    }
    code.push_str("]\n");
    std::fs::write(out_dir.join("builtin.rs"), code).expect("writing builtin.rs");
}

/// Makes sure the Rust toolchain has the wasm32-wasip2 standard library: a toolchain managed
/// by rustup gets it added (what a first `cargo run` on a fresh machine needs, so the README's
/// one command stays one command); otherwise the build fails saying what to install.
fn require_target(rustc: &str) {
    if target_installed(rustc) {
        return;
    }
    // Set by rustup's proxies: the toolchain this build runs with.
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        println!("cargo::warning=adding the {TARGET} target to the {toolchain} toolchain (rustup target add)");
        let added = Command::new("rustup")
            .args(["target", "add", TARGET, "--toolchain", &toolchain])
            .status()
            .is_ok_and(|status| status.success());
        if added && target_installed(rustc) {
            return;
        }
    }
    panic!(
        "\n\nphasebox builds its built-in plugins for {TARGET}, and this Rust toolchain lacks that target.\n\
         Install it with:\n\n    rustup target add {TARGET}\n\n\
         (without rustup: install your distribution's Rust standard library for {TARGET})\n\n"
    );
}

fn target_installed(rustc: &str) -> bool {
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    libdir.as_deref().is_some_and(|dir| dir.is_dir() && has_std(dir))
}

fn has_std(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        .unwrap_or(false)
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
