#!/usr/bin/env bash
# Builds the example plugins in C, JavaScript and Python into dist/<name>.wasm, each with its
# phasebox.toml embedded, installing the pinned build tools first when they are missing:
#
#   plugins/examples/build.sh            build what changed (from anywhere)
#   plugins/examples/build.sh --force    rebuild all three
#   plugins/examples/build.sh --check    build all three twice and fail unless each build gives
#                                        the same sha256 both times
#   plugins/examples/build.sh --fresh-tools
#                                        first remove every installed tool (node_modules, the
#                                        Python venv, the C tool's build, their stamps) and
#                                        install them again with empty package caches, as on a
#                                        new machine; CI does this once per run
#
# Tools, all from the package registries at pinned versions:
#   C           Debian's clang 14, lld 14, wasi-libc and the wasm32 compiler-rt (apt), plus
#               tool/ (a small Rust program over the wit-bindgen-c, wit-component and
#               wasi-preview1-component-adapter-provider crates, locked by tool/Cargo.lock)
#   JavaScript  @bytecodealliance/componentize-js (npm, locked by js/package-lock.json)
#   Python      componentize-py (PyPI, pinned with its hash in python/requirements.txt)
#   JS, Python  fixed-env.c, built with the machine's cc into build/fixed-env.so (see below)
#
# All three builds are byte-reproducible: the same inputs give the same sha256 on any run and
# from any checkout directory (`--check` builds twice and compares). componentize-js and
# componentize-py snapshot an interpreter's memory after running the plugin's top level, and
# that snapshot holds whatever the interpreter saw of its build machine: random seeds, clock
# readings, file times and inode numbers, and the name of a randomly named work directory. Their
# builds therefore run the snapshotting tool under fixed-env.so (an LD_PRELOAD library that fixes
# the clock, entropy and file metadata the tool sees: fixed-env.c says how) and give each tool a
# fixed view of its paths; build_js and build_python say what each needs.
#
# A plugin is rebuilt only when one of its inputs (sources, manifest, WIT, lock files, tool
# versions) changed since its last build, so running this before every test run costs seconds.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
here=$(pwd)
wit_dir=$(cd ../../wit && pwd)

# ---- pinned versions ------------------------------------------------------------------------
# Debian bookworm's; each package's version is part of the C plugin's inputs.
apt_packages=(
    clang-14=1:14.0.6-12
    lld-14=1:14.0.6-12
    libclang-rt-14-dev-wasm32=1:14.0.6-12
    wasi-libc=0.0~git20220510.9886d3d-2
)
componentize_js_version=0.23.0 # must match js/package.json and js/package-lock.json
componentize_py_version=0.25.1 # must match python/requirements.txt

force=0
check=0
fresh=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --check) check=1 force=1 ;;
        --fresh-tools) fresh=1 force=1 ;;
        *)
            echo "usage: $0 [--force | --check | --fresh-tools]" >&2
            exit 2
            ;;
    esac
done

if [ $fresh -eq 1 ]; then
    # Nothing an earlier install left behind may be reused: not the installed trees, not their
    # stamps, not the package managers' download caches (npm and pip get empty ones below).
    rm -rf js/node_modules build tool/target dist
fi
mkdir -p build dist
host_triple=$(rustc -vV | sed -n 's/^host: //p')
tool="$here/tool/target/$host_triple/release/phasebox-plugin-tool"

step() { printf '== %s\n' "$*"; }

# ---- tools ----------------------------------------------------------------------------------

install_c_tools() {
    local missing=()
    for pinned in "${apt_packages[@]}"; do
        local name=${pinned%%=*} version=${pinned#*=}
        if [ "$(dpkg-query -W -f '${Version}' "$name" 2>/dev/null || true)" != "$version" ]; then
            missing+=("$pinned")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing ${missing[*]} (apt)"
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # The host build sets these for itself; they must not reach this build for another purpose.
    # The explicit --target keeps plugins/.cargo/config.toml (wasm32-wasip2) from applying.
    (
        cd tool
        env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
            cargo build --release --locked --quiet --target "$host_triple"
    )
}

install_js_tools() {
    # `npm ci` installs exactly what package-lock.json lists, checks each package's integrity
    # hash (sha512) and never rewrites the lock: the reproducible install, and the conventional
    # one. For this platform it installs only the per-platform packages whose os/cpu/libc match;
    # the others stay in the lock, unused.
    #
    # It refuses a lock that does not list every optional dependency of the locked packages.
    # The lock was once written while some of those (other platforms' builds of
    # componentize-qjs, jco-node-fs and rolldown) were declared but not yet published, and
    # the registry publishing them later broke every fresh install. The lock now lists all of
    # them, and a locked version's dependency list never changes, so nothing the registry
    # publishes later can make it incomplete again; should one of the tools ever name a
    # package that does not exist yet, `npm ci` says which and the message below says how to
    # update the lock. Runs only when the lock changed since the last install (always with
    # --fresh-tools, with an empty download cache).
    local stamp=js/node_modules/.phasebox-lock-sha256
    local want
    want=$(sha256sum js/package-lock.json | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        step "installing componentize-js $componentize_js_version (npm ci, from package-lock.json)"
        local cache=() log=build/npm-ci.log
        if [ $fresh -eq 1 ]; then
            mkdir -p build/npm-cache
            cache=(--cache "$here/build/npm-cache")
        fi
        if ! (cd js && npm ci --no-audit --no-fund --loglevel=error "${cache[@]}") >"$log" 2>&1; then
            cat "$log" >&2
            if grep -q 'Missing: .* from lock file' "$log"; then
                {
                    echo
                    echo "js/package-lock.json no longer lists everything the locked packages depend on:"
                    grep -o 'Missing: .* from lock file' "$log" | sed 's/^/    /'
                    echo "The npm registry has published packages (usually another platform's build of a"
                    echo "native tool) that a locked package names. Add them to the lock without changing"
                    echo "any locked version, check the diff adds only such packages, and commit it:"
                    echo "    (cd plugins/examples/js && npm install --package-lock-only --no-audit --no-fund)"
                } >&2
            fi
            exit 1
        fi
        echo "$want" >"$stamp"
    fi
    # The library needs seccomp, which some sandboxes and containers forbid. There the plugins
    # still build, only not reproducibly; --check then fails, as it should.
    if env LD_PRELOAD="$here/build/fixed-env.so" FIXED_ENV_ROOT=/nonexistent /bin/true 2>/dev/null; then
        preload="$here/build/fixed-env.so"
    else
        preload=""
        echo "warning: fixed-env.so cannot run here (seccomp unavailable?): JS and Python builds will not be reproducible" >&2
        if [ $check -eq 1 ]; then
            echo "--check needs fixed-env.so" >&2
            exit 1
        fi
    fi
}

install_python_tools() {
    local stamp=build/venv/.phasebox-requirements-sha256
    local want
    want=$(sha256sum python/requirements.txt | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        step "installing componentize-py $componentize_py_version (pip, hash-checked)"
        rm -rf build/venv
        python3 -m venv build/venv
        # --no-cache-dir: a wheel is fetched and hash-checked on every install, never taken
        # from an earlier run's cache.
        build/venv/bin/pip install --quiet --disable-pip-version-check --no-cache-dir \
            --require-hashes -r python/requirements.txt
        echo "$want" >"$stamp"
    fi
}

build_fixed_env() {
    local stamp=build/fixed-env.so.sha256
    local want
    want=$(sha256sum fixed-env.c | cut -d' ' -f1)
    if [ ! -f build/fixed-env.so ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        step "building fixed-env.so (cc)"
        cc -shared -fPIC -O2 -Wall -Wextra -Werror -o build/fixed-env.so fixed-env.c
        echo "$want" >"$stamp"
    fi
}

# ---- builds ---------------------------------------------------------------------------------

# The sha256 of everything a plugin's bytes depend on, so an unchanged plugin is not rebuilt.
inputs_hash() {
    local lang=$1
    {
        printf '%s\n' "${apt_packages[@]}" "$componentize_js_version" "$componentize_py_version"
        find "$lang" "$wit_dir" tool/Cargo.lock tool/src build.sh fixed-env.c \
            \( -path "$lang/node_modules" -o -name __pycache__ \) -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum
    } | sha256sum | cut -d' ' -f1
}

# Embeds the manifest, checks the imports against it and publishes dist/<name>.wasm.
finish() {
    local lang=$1 component=$2 name=$3
    "$tool" embed-manifest "$component" "$lang/phasebox.toml" "build/$name.wasm"
    # The host refuses a plugin that imports what its grant leaves out, so an import that the
    # manifest does not declare is a build error, not a surprise at run time.
    python3 ../component-imports.py --manifest "$lang/phasebox.toml" "build/$name.wasm" >/dev/null
    mv "build/$name.wasm" "dist/$name.wasm"
}

build_c() {
    local out=build/c
    rm -rf "$out"
    mkdir -p "$out"
    "$tool" c-bindings "$wit_dir" phase "$out"
    # -mexec-model=reactor: a library with exports and no main, which is what a phase is.
    # --strip-debug: no DWARF (and with it no build paths), a third of the size.
    clang-14 --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -std=c11 \
        -Wall -Wextra -Werror -I"$out" -Wl,--strip-debug \
        -o "$out/core.wasm" c/plugin.c c/json.c c/sha256.c "$out/phase.c" "$out/phase_component_type.o"
    "$tool" componentize "$out/core.wasm" "$out/component.wasm"
    finish c "$out/component.wasm" verify-c
}

build_js() {
    local out=build/js
    rm -rf "$out"
    mkdir -p "$out/wit/deps"
    # The plugin's world (js/wit/world.wit) includes phasebox's and imports two WASI interfaces
    # directly; its dependencies are phase.wit and the WASI packages of the version
    # componentize-js's engine imports, taken from the npm tree the lock file pinned.
    cp js/wit/world.wit "$out/wit/"
    mkdir -p "$out/wit/deps/phasebox-plugin"
    cp "$wit_dir/phase.wit" "$out/wit/deps/phasebox-plugin/"
    local wasi=js/node_modules/@bytecodealliance/jco/lib/wit/builtin/0.2.12
    for package in io clocks filesystem sockets; do
        cp -r "$wasi/wasi-$package" "$out/wit/deps/"
    done
    # -d http -d fetch-event: without them the engine imports wasi:http (and exports an
    # incoming handler), and the host would refuse the plugin unless it were granted `http`.
    #
    # Reproducibility. componentize-js hands the engine the initializer script's path, below
    # $TMPDIR/<12 hex digits of sha256(Math.random())>/, and the directory it runs in (as the
    # prefix to strip from script names), and Wizer snapshots the engine after it has run the
    # plugin's top level: both paths end up in the snapshot. So the build runs in one fixed
    # directory, /tmp/phasebox-componentize-js (a lock keeps two builds from sharing it), with
    # node's Math.random seeded, which gives the same paths on every build and from any
    # checkout. Wizer runs under fixed-env.so: the engine seeds Math.random and its hash tables
    # from WASI random and reads the clocks while it initialises (it reseeds Math.random on the
    # first call at run time, so a component's Math.random still differs from run to run).
    local wizer_bin
    wizer_bin=$(cd js && node --input-type=module -e "import w from '@bytecodealliance/wizer'; console.log(w)")
    local tmp=/tmp/phasebox-componentize-js
    # The engine also reads the scripts' file times, hence FIXED_ENV_ROOT. Wizer passes its
    # whole environment on to the engine, so the wrapper adds nothing to it (fixed-env.so
    # removes its two variables again, and env drops the PWD that sh exports).
    if [ -n "$preload" ]; then
        printf '#!/bin/sh\nexec env -u PWD LD_PRELOAD=%q FIXED_ENV_ROOT=%q %q "$@"\n' \
            "$preload" "$tmp" "$wizer_bin" >build/wizer-fixed-env
    else
        printf '#!/bin/sh\nexec %q "$@"\n' "$wizer_bin" >build/wizer-fixed-env
    fi
    chmod +x build/wizer-fixed-env
    (
        flock 9
        rm -rf "$tmp"
        mkdir -p "$tmp/src"
        cp js/*.js "$tmp/src/"
        cp -r "$out/wit" "$tmp/src/"
        cd "$tmp/src"
        TMPDIR=$tmp node --random-seed=1 "$here/js/node_modules/@bytecodealliance/componentize-js/src/cli.js" \
            plugin.js --wit wit --world-name plugin -d http -d fetch-event \
            --wizer-bin "$here/build/wizer-fixed-env" -o "$here/$out/component.wasm" >"$here/$out/componentize.log"
        cd "$here"
        rm -rf "$tmp"
    ) 9>"$tmp.lock"
    finish js "$out/component.wasm" verify-js
}

build_python() {
    local out=build/python
    rm -rf "$out"
    mkdir -p "$out/wit/deps/phasebox-plugin"
    # The plugin's world (python/wit/world.wit) names the phasebox imports it uses; its one
    # dependency is phase.wit.
    cp python/wit/world.wit "$out/wit/"
    cp "$wit_dir/phase.wit" "$out/wit/deps/phasebox-plugin/"
    # Everything the CPython inside componentize-py reads while it builds lives below one
    # directory, $fixed, which fixed-env.so reports with fixed file times and inode numbers:
    #   $fixed/app             a copy of the app's modules (CPython writes __pycache__ beside the
    #                          modules it imports, which must not land in the sources)
    #   $fixed/site            an empty virtualenv: VIRTUAL_ENV makes componentize-py add its
    #                          (empty) site-packages instead of asking the machine's `python3`
    #                          for its site-packages, whose contents would end up in the plugin
    #   $fixed/.tmpXXXXXX      componentize-py's own temporary directories (TMPDIR), where it
    #                          unpacks the standard library
    # Under fixed-env.so CPython's hash secret and `random` seed are fixed too (componentize-py
    # reseeds `random` on the first call at run time).
    local fixed="$here/$out/fixed"
    mkdir -p "$fixed/app" "$fixed/site/lib/site-packages"
    cp python/*.py "$fixed/app/"
    # -p: the app's own modules.
    env TMPDIR="$fixed" VIRTUAL_ENV="$fixed/site" FIXED_ENV_ROOT="$fixed" LD_PRELOAD="$preload" \
        build/venv/bin/componentize-py -d "$out/wit" -w plugin componentize -p "$fixed/app" app \
        -o "$out/component.wasm" >"$out/componentize.log"
    finish python "$out/component.wasm" verify-python
}

build_one() {
    local lang=$1 name=verify-$1
    local hash
    hash=$(inputs_hash "$lang")
    if [ $force -eq 0 ] && [ -f "dist/$name.wasm" ] && [ "$(cat "build/$name.inputs" 2>/dev/null || true)" = "$hash" ]; then
        echo "$name is up to date"
        return
    fi
    local started=$SECONDS
    step "building $name"
    "build_$lang"
    echo "$hash" >"build/$name.inputs"
    echo "$name built in $((SECONDS - started)) s"
}

# ---- main -----------------------------------------------------------------------------------

started=$SECONDS
install_c_tools
install_js_tools
install_python_tools
build_fixed_env
echo "tools ready in $((SECONDS - started)) s"

languages=(c js python)
for lang in "${languages[@]}"; do
    build_one "$lang"
done

if [ $check -eq 1 ]; then
    # Build each plugin a second time from the same inputs and compare the bytes.
    declare -A first
    for lang in "${languages[@]}"; do
        first[$lang]=$(sha256sum "dist/verify-$lang.wasm" | cut -d' ' -f1)
    done
    differ=()
    for lang in "${languages[@]}"; do
        "build_$lang"
        second=$(sha256sum "dist/verify-$lang.wasm" | cut -d' ' -f1)
        echo "verify-$lang: ${first[$lang]} then $second"
        [ "${first[$lang]}" = "$second" ] || differ+=("verify-$lang")
    done
    if [ ${#differ[@]} -gt 0 ]; then
        echo "not reproducible: ${differ[*]}" >&2
        exit 1
    fi
    echo "reproducible: each plugin built twice to the same sha256"
fi

(cd dist && for f in *.wasm; do printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)" "$f"; done)
