#!/usr/bin/env bash
# The installed phasebox, away from its source tree: builds the binary the way a lab does
# (`cargo install --locked --path runtime/cli` into a temporary prefix), then, with the checkout,
# cargo and rustup hidden and an empty environment, runs the demo to the end and a plain
# Testflinger job on the built-in plugins and runner configuration. With cargo-deb on PATH (or
# CARGO_DEB naming it) it also builds the Debian package, unpacks it into a temporary root
# (`dpkg-deb -x`, nothing installed system-wide), runs the binary from there and verifies the
# package's systemd units with `systemd-analyze verify`.
#
#   scripts/install-test.sh
#
# The build is `cargo install --debug` in the test build's target directory (or
# PHASEBOX_INSTALL_TARGET_DIR): what differs from a release install is the optimisation of
# phasebox's own crates, not what the binary carries or how it finds it, and the dependencies
# the tests compiled are reused, where a release build would compile wasmtime again (about 40
# minutes on 2 cores). PHASEBOX_INSTALL_RELEASE=1 builds the release binary instead. Without
# systemd-analyze the unit check is skipped, unless PHASEBOX_REQUIRE_SYSTEMD=1 (set by
# .ci/run) makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/run" "$work/home"

export CARGO_TARGET_DIR="${PHASEBOX_INSTALL_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}}"
profile=(--debug)
profile_name=dev
if [ "${PHASEBOX_INSTALL_RELEASE:-0}" = 1 ]; then
    profile=()
    profile_name=release
fi
started=$SECONDS
cargo install --locked "${profile[@]}" --path runtime/cli --root "$work/prefix" --quiet
echo "install-test: cargo install ${profile[*]} took $((SECONDS - started)) s"

# Runs a command from an empty directory with an empty environment whose PATH names no Rust
# toolchain; where unprivileged mount namespaces are allowed, the checkout and the toolchain's
# homes are also covered by empty directories, so nothing there can be read.
hidden=("$root" "${CARGO_HOME:-$HOME/.cargo}" "${RUSTUP_HOME:-$HOME/.rustup}")
isolated() {
    local bin_dir="$1"
    shift
    local -a cmd=(env -i PATH="$bin_dir:/usr/bin:/bin" HOME="$work/home" LANG=C.UTF-8 "$@")
    if unshare --mount --map-root-user true 2>/dev/null; then
        local mounts="" dir
        for dir in "${hidden[@]}"; do
            [ -d "$dir" ] && mounts+="mount -t tmpfs none '$dir' && "
        done
        (cd "$work/run" && unshare --mount --map-root-user sh -c "${mounts}exec \"\$@\"" sh "${cmd[@]}")
    else
        (cd "$work/run" && "${cmd[@]}")
    fi
}
if unshare --mount --map-root-user true 2>/dev/null; then
    echo "install-test: the checkout and the toolchain are hidden (mount namespace)"
else
    echo "install-test: no mount namespace here: the checkout stays readable; only PATH and the environment hide it"
fi

# Checks one installed binary: no toolchain in reach, then the demo and a plain job.
check_binary() {
    local bin_dir="$1"
    if isolated "$bin_dir" sh -c 'command -v cargo || command -v rustup' >/dev/null; then
        echo "install-test: cargo or rustup is reachable from the isolated environment" >&2
        exit 1
    fi
    isolated "$bin_dir" phasebox plugin list
    isolated "$bin_dir" phasebox demo >"$work/demo.out" 2>&1 || {
        cat "$work/demo.out"
        echo "install-test: the demo failed" >&2
        exit 1
    }
    grep -q "job state       complete" "$work/demo.out"
    grep -q "Every attempt came out as its grant says" "$work/demo.out"
    cp config/jobs/noprovision-test.yaml "$work/run/job.yaml"
    isolated "$bin_dir" phasebox run job.yaml --out out
    grep -q '"job_state": "complete"' "$work/run/out/results.json"
    rm -rf "$work/run/out" "$work/run/job.yaml"
}
check_binary "$work/prefix/bin"
echo "install-test: cargo-installed binary: demo and job passed"

# The units are verified from the package when there is one, else from packaging/systemd/ beside
# the installed binary.
unit_root="$work/deb"
cargo_deb="${CARGO_DEB:-$(command -v cargo-deb || true)}"
if [ -z "$cargo_deb" ]; then
    echo "install-test: cargo-deb not found: the Debian package is not built (.ci/run installs it)"
    mkdir -p "$unit_root/usr/bin" "$unit_root/lib/systemd/system"
    cp "$work/prefix/bin/phasebox" "$unit_root/usr/bin/"
    cp packaging/systemd/*.service "$unit_root/lib/systemd/system/"
else
    started=$SECONDS
    # The package carries the binary cargo install just built (cargo-deb takes it from
    # target/<profile>/).
    "$cargo_deb" --package phasebox-cli --no-build --profile "$profile_name" --fast --quiet --output "$work/phasebox.deb"
    echo "install-test: cargo deb took $((SECONDS - started)) s"
    dpkg-deb --info "$work/phasebox.deb" >/dev/null
    dpkg-deb -x "$work/phasebox.deb" "$work/deb"
    for file in usr/bin/phasebox lib/systemd/system/phasebox-server.service lib/systemd/system/phasebox-agent.service \
        usr/share/doc/phasebox/examples/agent.toml; do
        [ -f "$work/deb/$file" ] || { echo "install-test: the package lacks $file" >&2; exit 1; }
    done
    check_binary "$work/deb/usr/bin"
    echo "install-test: packaged binary: demo and job passed"
fi

if ! command -v systemd-analyze >/dev/null; then
    if [ "${PHASEBOX_REQUIRE_SYSTEMD:-0}" = 1 ]; then
        echo "install-test: systemd-analyze is missing and PHASEBOX_REQUIRE_SYSTEMD=1" >&2
        exit 1
    fi
    echo "install-test: systemd-analyze not found: the units are not verified"
    exit 0
fi
# verify resolves the units' dependencies (sysinit.target, ...) and ExecStart= under --root: the
# host's unit files are copied beside the package's. It exits 0 on unknown keys, so any message
# fails the check.
cp -an /lib/systemd/system/. "$unit_root/lib/systemd/system/"
units=("$unit_root/lib/systemd/system/phasebox-server.service" "$unit_root/lib/systemd/system/phasebox-agent.service")
if ! messages="$(systemd-analyze verify --root="$unit_root" "${units[@]}" 2>&1)" || [ -n "$messages" ]; then
    echo "$messages" >&2
    echo "install-test: systemd-analyze verify found problems in the units" >&2
    exit 1
fi
echo "install-test: systemd units verified"
