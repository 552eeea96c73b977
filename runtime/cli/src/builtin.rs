//! `phasebox plugin list`, `phasebox plugin export` and `phasebox config runner`: what is built
//! into the binary.

use std::path::Path;

use anyhow::Context;

use crate::Verdict;

/// Prints each built-in plugin: name, version, sha256 (of the component with its manifest, as
/// a runner loads it and as `plugin export` writes it), size and who may run it.
pub fn list(json: bool) -> anyhow::Result<Verdict> {
    let mut rows = Vec::new();
    for builtin in phasebox_builtin::ALL {
        let bytes = builtin.bytes()?;
        rows.push((builtin, builtin.manifest()?, phasebox_sandbox::sha256_hex(&bytes), bytes.len()));
    }
    if json {
        let value: Vec<_> = rows
            .iter()
            .map(|(b, m, sha256, size)| {
                serde_json::json!({
                    "name": b.name, "version": m.plugin.version, "sha256": sha256, "size": size,
                    "offered_to_jobs": b.offered_to_jobs(), "description": m.plugin.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(Verdict::Success);
    }
    println!("{:<12} {:<8} {:<64} {:>8}  use", "name", "version", "sha256", "bytes");
    for (b, m, sha256, size) in &rows {
        let used = if b.offered_to_jobs() { "jobs (builtin_plugins)" } else { "demo only" };
        println!("{:<12} {:<8} {sha256} {size:>8}  {used}", b.name, m.plugin.version);
    }
    Ok(Verdict::Success)
}

/// Writes each built-in plugin, manifest embedded, to `dir/<name>.wasm`: to inspect it, to
/// upload it to a server's registry, or to start a plugin directory from.
pub fn export(dir: &Path) -> anyhow::Result<Verdict> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for builtin in phasebox_builtin::ALL {
        let path = dir.join(format!("{}.wasm", builtin.name));
        std::fs::write(&path, builtin.bytes()?).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(Verdict::Success)
}

/// Prints the built-in runner configuration `phasebox run` uses without `--runner-config`.
pub fn print_runner_config() -> anyhow::Result<Verdict> {
    print!("{}", crate::run::DEFAULT_RUNNER_CONFIG);
    Ok(Verdict::Success)
}
