//! `phasebox plugin check FILE [--policy FILE]`: whether a plugin would load and link under an
//! operator's policy, before any job depends on it, and what loading it costs.
//!
//! For each interface the component imports it says which capability that needs and whether
//! the phase would get it: the host links an import only when the plugin's manifest declares
//! the capability *and* the policy allows it, and refuses a plugin with an import it would not
//! link before any of its code runs. The verdict is the sandbox's own check
//! ([`phasebox_sandbox::check_imports`]), the one the planner and the phase run make, in the
//! same words, device handles included. Without `--policy` only the manifest is checked (what the
//! plugin could get under a policy that allows everything). It also prints the world, the
//! declared capabilities, the size, and how long the compile took or whether the compiled
//! artifact was already in the cache (the 12–18 MB JavaScript and Python components take
//! seconds to compile and under a tenth of a second to load once cached).
//!
//! Exits 0 when every import would link, 1 when one would be refused, 2 when the plugin or the
//! policy cannot be read.

use std::path::Path;

use anyhow::Context;
use phasebox_sandbox::manifest::ManifestSource;
use phasebox_sandbox::{CacheOutcome, Capabilities, Capability, EngineConfig, Linked, Policy, Refusal, Sandbox};

use crate::Verdict;

/// Checks `file` against the policy in `policy_path` (TOML, as `phasebox_sandbox::Policy`).
pub fn check(file: &Path, policy_path: Option<&Path>) -> anyhow::Result<Verdict> {
    let policy: Option<Policy> = policy_path.map(read_policy).transpose()?;
    let sandbox = Sandbox::new(EngineConfig {
        pooling: false,
        cache_dir: crate::default_cache_dir(),
        ..EngineConfig::default()
    })?;
    let plugin = sandbox.load_file(file)?;
    let manifest = plugin.manifest();
    let declared = &manifest.capabilities;

    println!("plugin     {} {}", manifest.plugin.name, manifest.plugin.version);
    println!("file       {} ({})", file.display(), size(plugin.size()));
    println!("sha256     {}", plugin.sha256());
    println!("world      {}", world(plugin.imports(), plugin.exports()));
    println!(
        "manifest   {}",
        match plugin.manifest_source() {
            ManifestSource::Embedded => "embedded".to_owned(),
            ManifestSource::File(p) => p.display().to_string(),
        }
    );
    let ms = plugin.load_time().as_secs_f64() * 1e3;
    match (plugin.cache_outcome(), sandbox.cache()) {
        (CacheOutcome::Hit, Some(cache)) => {
            println!("compiled   cached: loaded in {ms:.1} ms from {}", cache.dir().display())
        }
        (_, Some(cache)) => println!(
            "compiled   not cached: compiled in {ms:.1} ms; now cached in {} ({})",
            cache.dir().display(),
            if cache.contains(plugin.sha256(), sandbox.engine()) { "stored" } else { "could not store it" }
        ),
        (_, None) => println!("compiled   in {ms:.1} ms (no cache directory: set HOME or XDG_CACHE_HOME)"),
    }

    let against = match policy_path {
        Some(p) => format!("the manifest and the policy {}", p.display()),
        None => "the manifest (no --policy given: as if the policy allowed everything)".to_owned(),
    };
    println!("imports    against {against}");
    let allow = policy.as_ref().map_or_else(Capabilities::everything, |p| p.allow.clone());
    let linked = Linked::new(declared, &allow);
    let mut refused = 0;
    for (cap, import) in plugin.needed_capabilities() {
        let verdict = match linked.refusal(cap) {
            None => "linked".to_owned(),
            Some(refusal) => {
                refused += 1;
                format!("refused: {refusal}")
            }
        };
        println!("  {import:<44} needs {:<10} {verdict}", format!("`{cap}`"));
    }

    println!("declared capabilities");
    let mut table = toml::Table::new();
    table.insert("capabilities".into(), toml::Value::try_from(declared)?);
    for line in toml::to_string_pretty(&table)?.lines().filter(|l| !l.trim().is_empty()) {
        println!("  {line}");
    }
    if policy.is_some() {
        // Kinds the plugin declares but the policy does not allow: harmless while the plugin
        // does not import them, but a job asking for them will be refused.
        let narrowed: Vec<_> = Capability::ALL
            .into_iter()
            .filter(|&c| matches!(linked.refusal(c), Some(Refusal::NotAllowed(_))))
            .map(|c| format!("`{c}`"))
            .collect();
        if !narrowed.is_empty() {
            println!("policy     declared but not allowed: {}", narrowed.join(", "));
        }
    }

    let phases = match manifest.plugin.phases.as_slice() {
        [] => "any".to_owned(),
        phases => phases.join("/"),
    };
    if let Err(refusal) = plugin.check_imports(&phases, &linked) {
        println!("verdict    refused: {refused} import(s) would not be linked, so no phase of it would start");
        println!("           {refusal}");
        Ok(Verdict::NotPassed)
    } else {
        println!("verdict    loads and links");
        Ok(Verdict::Success)
    }
}

fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a policy: {e}", path.display()))
}

/// The world a component targets, named by its export and the phasebox package version of its
/// imports.
fn world(imports: &[String], exports: &[String]) -> String {
    let version = imports
        .iter()
        .find_map(|i| i.strip_prefix("phasebox:plugin/").and_then(|rest| rest.split_once('@')).map(|(_, v)| v));
    match (exports.iter().any(|e| e == "run"), version) {
        (true, Some(v)) => format!("phasebox:plugin/phase@{v}"),
        (true, None) => "phasebox:plugin/phase (imports no phasebox interface)".into(),
        (false, _) => format!("not the phase world: exports {}", exports.join(", ")),
    }
}

fn size(bytes: usize) -> String {
    let b = bytes as f64;
    if b < 1e6 { format!("{bytes} bytes, {:.1} kB", b / 1e3) } else { format!("{bytes} bytes, {:.1} MB", b / 1e6) }
}
