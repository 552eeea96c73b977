#!/usr/bin/env bash
# Builds every phasebox plugin in this workspace and copies each component to
# dist/<plugin name>.wasm, after checking that its imports stay within its manifest.
#
#   plugins/build.sh            (from anywhere)
#
# Needs only rustup's wasm32-wasip2 target and python3: rustc links wasm32-wasip2 cdylibs into
# components itself, so no cargo-component, wasm-tools or adapter is involved.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# The plugin crates, by directory. Each directory's name is its plugin's name (as in its
# phasebox.toml) and its cdylib is that name with '-' turned into '_' (cargo's rule).
plugins=(hello probe http-probe hog shell noprovision flash reserve firmware cleanup device-probe)

# A no-op when the target is there already; a new machine has only the host target.
rustup target add wasm32-wasip2

# --locked: the committed Cargo.lock is what gets built, so components are reproducible.
# The target comes from .cargo/config.toml.
cargo build --release --locked

mkdir -p dist
for plugin in "${plugins[@]}"; do
    component="target/wasm32-wasip2/release/${plugin//-/_}.wasm"
    # The host refuses a component that imports something its grant leaves out, so an import
    # the manifest does not ask for is a bug worth failing the build over.
    python3 component-imports.py --manifest "${plugin}/phasebox.toml" "${component}" >/dev/null
    cp "${component}" "dist/${plugin}.wasm"
done

ls -l dist/*.wasm
