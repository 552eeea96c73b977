//! `phasebox plugin inspect` and `phasebox plugin embed`.

use std::path::Path;

use anyhow::Context;
use phasebox_sandbox::manifest::{self, Manifest, ManifestSource};
use phasebox_sandbox::{EngineConfig, Sandbox};

use crate::Verdict;

/// Prints what a plugin is, what it imports and what it declares.
pub fn inspect(file: &Path, json: bool) -> anyhow::Result<Verdict> {
    let sandbox = Sandbox::new(EngineConfig {
        pooling: false,
        cache_dir: crate::default_cache_dir(),
        ..EngineConfig::default()
    })?;
    let plugin = sandbox.load_file(file)?;
    let world = world_of(plugin.imports(), plugin.exports());
    let imports: Vec<(String, &str)> =
        plugin.needed_capabilities().into_iter().map(|(cap, import)| (import.to_owned(), cap.name())).collect();
    let source = match plugin.manifest_source() {
        ManifestSource::Embedded => "embedded".to_owned(),
        ManifestSource::File(p) => p.display().to_string(),
    };
    if json {
        let value = serde_json::json!({
            "file": file.display().to_string(),
            "sha256": plugin.sha256(),
            "size": plugin.size(),
            "world": world,
            "exports": plugin.exports(),
            "imports": imports.iter().map(|(i, c)| serde_json::json!({"import": i, "capability": c})).collect::<Vec<_>>(),
            "manifest_source": source,
            "manifest": plugin.manifest(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(Verdict::Success);
    }
    let m = &plugin.manifest().plugin;
    println!("plugin     {} {}", m.name, m.version);
    if !m.description.is_empty() {
        println!("           {}", m.description);
    }
    println!("file       {} ({} bytes)", file.display(), plugin.size());
    println!("sha256     {}", plugin.sha256());
    println!("world      {world}");
    println!("exports    {}", plugin.exports().join(", "));
    println!("imports");
    for (import, cap) in &imports {
        println!("  {import:<48} needs `{cap}`");
    }
    println!("manifest   {source}");
    println!("declared capabilities");
    let caps = toml_table(&plugin.manifest().capabilities)?;
    for line in caps.lines().filter(|l| !l.trim().is_empty()) {
        println!("  {line}");
    }
    Ok(Verdict::Success)
}

/// Embeds a manifest file into a component.
pub fn embed(file: &Path, manifest_path: &Path, output: &Path) -> anyhow::Result<Verdict> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let text =
        std::fs::read_to_string(manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest = Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    let out = manifest::embed(&bytes, &manifest).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    std::fs::write(output, &out).with_context(|| format!("writing {}", output.display()))?;
    println!("{} ({} bytes, sha256 {})", output.display(), out.len(), phasebox_sandbox::sha256_hex(&out));
    Ok(Verdict::Success)
}

/// Names the world a component targets, from what it exports and which phasebox package
/// version it imports.
fn world_of(imports: &[String], exports: &[String]) -> String {
    let version = imports.iter().find_map(|i| {
        i.strip_prefix("phasebox:plugin/").and_then(|rest| rest.split_once('@')).map(|(_, v)| v.to_owned())
    });
    match (exports.iter().any(|e| e == "run"), version) {
        (true, Some(v)) => format!("phasebox:plugin/phase@{v}"),
        (true, None) => "phasebox:plugin/phase (imports no phasebox interface)".into(),
        (false, _) => format!("not the phase world: exports {}", exports.join(", ")),
    }
}

fn toml_table<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    let mut table = toml::Table::new();
    table.insert("capabilities".into(), toml::Value::try_from(value)?);
    Ok(toml::to_string_pretty(&table)?)
}
