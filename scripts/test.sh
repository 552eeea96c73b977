#!/usr/bin/env bash
# Runs every test phasebox has: the host workspace (which builds the guest plugins for
# wasm32-wasip2 on first use) and the plugins' own unit tests. Installs the wasm target first.
set -euo pipefail
cd "$(dirname "$0")/.."

# On a checkout that has never been built, say what the long first run does before it starts.
if [ ! -d "${CARGO_TARGET_DIR:-target}/debug" ]; then
    echo "scripts/test.sh: first run here: installs the wasm32-wasip2 target and the example plugins' tools" \
        "(apt, npm, pip), compiles wasmtime, phasebox and the guest plugins, then runs every test;" \
        "about 40 minutes on a 2-core machine, a few minutes on later runs."
fi

if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi

# Guest plugins: build them once up front so test processes find them ready.
(cd plugins && cargo build --release --locked --quiet)
# Their unit tests run natively.
(cd plugins && cargo test --locked --quiet --target "$(rustc -vV | sed -n 's/^host: //p')")
# The C, JavaScript and Python example plugins, for runtime/sandbox/tests/sandbox/languages.rs: installs
# their pinned toolchains when missing and rebuilds only what changed.
if [ -x plugins/examples/build.sh ]; then
    plugins/examples/build.sh
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
    cargo test --workspace --doc --quiet
else
    cargo test --workspace --no-fail-fast "$@"
fi
