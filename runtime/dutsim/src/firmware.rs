//! Simulated firmware, managed the way fwupd manages real firmware: a `fwupdmgr` command on the
//! DUT's `PATH` lists the devices (`get-devices --json`), offers updates (`get-updates --json`),
//! stages them (`update`), and the next boot applies what was staged — as a capsule update
//! takes effect only after a restart.
//!
//! State lives in `dut/firmware/<device id>/` with the files `name`, `version`, `offered` (an
//! update available) and `pending` (staged, applied at boot). A fresh simulator has a system
//! firmware at 1.0.0 with 1.1.0 offered, and an embedded controller at 0.9.4 with nothing offered.

use std::path::Path;

/// The `fwupdmgr` script. `@FIRMWARE@` is replaced by the state directory.
const FWUPDMGR: &str = r#"#!/bin/sh
# phasebox dutsim: a simulated fwupdmgr (a subset of its commands and of its JSON).
dir='@FIRMWARE@'
json_devices() { # $1: "all" or "offered"
    sep=''
    printf '{\n  "Devices" : ['
    for d in "$dir"/*/; do
        d=${d%/}; id=${d##*/}
        [ "$1" = offered ] && [ ! -f "$d/offered" ] && continue
        printf '%s\n    {\n      "Name" : "%s",\n      "DeviceId" : "%s",\n      "Version" : "%s",\n      "Flags" : [ "updatable" ]' \
            "$sep" "$(cat "$d/name")" "$id" "$(cat "$d/version")"
        if [ "$1" = offered ]; then
            printf ',\n      "Releases" : [ { "Version" : "%s" } ]' "$(cat "$d/offered")"
        fi
        printf '\n    }'
        sep=','
    done
    printf '\n  ]\n}\n'
}
case "$1" in
    --version) echo "client version:	1.9.16 (phasebox dutsim)"; exit 0 ;;
    get-devices) json_devices all; exit 0 ;;
    refresh) echo "Successfully downloaded new metadata: 0 local devices supported"; exit 0 ;;
    get-updates)
        if ls "$dir"/*/offered >/dev/null 2>&1; then json_devices offered; exit 0; fi
        echo "No updatable devices" >&2; exit 2 ;;
    update)
        n=0
        for f in "$dir"/*/offered; do
            [ -f "$f" ] || continue
            d=${f%/offered}
            mv "$f" "$d/pending"
            echo "Staged $(cat "$d/name") $(cat "$d/pending"): restart to apply"
            n=$((n + 1))
        done
        if [ "$n" -eq 0 ]; then echo "No updatable devices" >&2; exit 2; fi
        echo "Successfully installed firmware"; exit 0 ;;
    *) echo "fwupdmgr (dutsim): unsupported command: $*" >&2; exit 1 ;;
esac
"#;

/// Creates the firmware state (unless it exists) and the `fwupdmgr` command in `bin`.
pub(crate) fn install(state: &Path, bin: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !state.exists() {
        for (id, name, version, offered) in [
            ("sim-system-fw", "System Firmware", "1.0.0", Some("1.1.0")),
            ("sim-ec", "Embedded Controller", "0.9.4", None),
        ] {
            let d = state.join(id);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("name"), name)?;
            std::fs::write(d.join("version"), version)?;
            if let Some(v) = offered {
                std::fs::write(d.join("offered"), v)?;
            }
        }
    }
    std::fs::create_dir_all(bin)?;
    let script = bin.join("fwupdmgr");
    let text = FWUPDMGR.replace("@FIRMWARE@", &state.to_string_lossy().replace('\'', "'\\''"));
    std::fs::write(&script, text)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
}

/// Applies staged updates: what a restart does. Returns the devices updated.
pub(crate) fn apply_pending(state: &Path) -> Vec<String> {
    let mut applied = Vec::new();
    let Ok(entries) = std::fs::read_dir(state) else { return applied };
    for entry in entries.flatten() {
        let d = entry.path();
        if let Ok(version) = std::fs::read_to_string(d.join("pending"))
            && std::fs::write(d.join("version"), version.trim()).is_ok()
        {
            let _ = std::fs::remove_file(d.join("pending"));
            let name = std::fs::read_to_string(d.join("name")).unwrap_or_default();
            applied.push(format!("{name} {}", version.trim()));
        }
    }
    applied.sort();
    applied
}
