//! Plugin manifests: what a plugin is and what it may ask for.
//!
//! A manifest is TOML (see `plugins/README.md` for every field):
//!
//! ```toml
//! [plugin]
//! name = "hello"
//! version = "0.1.0"
//! description = "Greets the device under test"
//! phases = ["test"]
//!
//! [capabilities]
//! results = true
//! ```
//!
//! It travels inside the component as a custom section named [`SECTION`] (so a plugin is one
//! file and its sha256 covers its declarations), written by [`embed`] or
//! `phasebox plugin embed`. A plugin without the section may ship it beside the `.wasm` as
//! `<file stem>.phasebox.toml` or `phasebox.toml` in the same directory. An embedded manifest
//! always wins, so a file placed beside a plugin cannot widen what the plugin declares.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use phasebox_grants::Derive;

use crate::grant::Capabilities;

/// The custom section that carries the manifest inside a component.
pub const SECTION: &str = "phasebox-manifest";

/// A plugin's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Who the plugin is.
    pub plugin: PluginInfo,
    /// What it may ask for.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Origins it derives from its phase's data (`[[derive.http]]`), offered to its phases.
    #[serde(default, skip_serializing_if = "Derive::is_empty")]
    pub derive: Derive,
}

/// The `[plugin]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginInfo {
    /// The plugin's name, e.g. `flash`; jobs and agent configs refer to it by this name.
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// One line on what it does.
    #[serde(default)]
    pub description: String,
    /// The phases it is meant for (informational).
    #[serde(default)]
    pub phases: Vec<String>,
}

/// Where a manifest came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestSource {
    /// The component's own custom section.
    Embedded,
    /// A file beside the component.
    File(PathBuf),
}

impl Manifest {
    /// Parses manifest text, refusing unknown keys.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        let name = &m.plugin.name;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(format!("plugin name `{name}` must be lowercase letters, digits, `-` and `_`"));
        }
        Ok(m)
    }

    /// Renders the manifest as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a manifest always serializes")
    }
}

/// Finds the manifest for the component `bytes` loaded from `path`: its custom section first,
/// then the files beside it. `Ok(None)` when there is none.
pub fn find(bytes: &[u8], path: Option<&Path>) -> Result<Option<(Manifest, ManifestSource)>, String> {
    if let Some(text) = embedded(bytes)? {
        return Manifest::parse(&text).map(|m| Some((m, ManifestSource::Embedded)));
    }
    let Some(path) = path else { return Ok(None) };
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    for candidate in [dir.join(format!("{stem}.phasebox.toml")), dir.join("phasebox.toml")] {
        match std::fs::read_to_string(&candidate) {
            Ok(text) => {
                let m = Manifest::parse(&text).map_err(|e| format!("{}: {e}", candidate.display()))?;
                return Ok(Some((m, ManifestSource::File(candidate))));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", candidate.display())),
        }
    }
    Ok(None)
}

/// The manifest text embedded at the top level of a component, if any. Sections inside nested
/// core modules are ignored: only the component's own section speaks for it.
pub fn embedded(bytes: &[u8]) -> Result<Option<String>, String> {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    let mut found = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid WebAssembly binary: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(reader) if depth == 0 && reader.name() == SECTION => {
                if found.is_some() {
                    return Err(format!("more than one `{SECTION}` section"));
                }
                let text =
                    std::str::from_utf8(reader.data()).map_err(|_| format!("the `{SECTION}` section is not UTF-8"))?;
                found = Some(text.to_owned());
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Returns `component` with `manifest` embedded as its [`SECTION`] custom section, replacing
/// none: embedding into a component that already has one is an error.
pub fn embed(component: &[u8], manifest: &Manifest) -> Result<Vec<u8>, String> {
    if embedded(component)?.is_some() {
        return Err(format!("the component already has a `{SECTION}` section"));
    }
    let section = wasm_encoder::CustomSection { name: SECTION.into(), data: manifest.to_toml().into_bytes().into() };
    let mut out = component.to_vec();
    wasm_encoder::ComponentSection::append_to_component(&section, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
        [plugin]
        name = "hello"
        version = "0.1.0"
        [capabilities]
        results = true
        network = { connect = ["example.com:443"] }
    "#;

    // The smallest valid component: magic, version 0x0d, layer 1.
    const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let m = Manifest::parse(HELLO).unwrap();
        assert_eq!(m.plugin.name, "hello");
        assert!(m.capabilities.results);
        let err = Manifest::parse(&HELLO.replace("results", "resultz")).unwrap_err();
        assert!(err.contains("resultz"), "{err}");
        assert!(Manifest::parse("[plugin]\nname = \"Bad Name\"").is_err());
    }

    #[test]
    fn derive_rules_parse_and_round_trip() {
        let text = format!(
            "{HELLO}\n[[derive.http]]\nfrom = \"ssh_keys\"\nprefix = \"gh:\"\nurl = \"https://github.com/{{value}}.keys\"\n"
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.derive.http[0].from, ["ssh_keys"]);
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        assert!(Manifest::parse(HELLO).unwrap().derive.is_empty());
        let err = Manifest::parse(&text.replace("https://github.com/", "github.com/")).unwrap_err();
        assert!(err.contains("derive.http") && err.contains("github.com/{value}.keys"), "{err}");
        let err = Manifest::parse(&format!("{HELLO}\n[derive]\nftp = []\n")).unwrap_err();
        assert!(err.contains("ftp"), "{err}");
    }

    #[test]
    fn embeds_and_finds() {
        let m = Manifest::parse(HELLO).unwrap();
        let with = embed(EMPTY_COMPONENT, &m).unwrap();
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(&with).unwrap();
        let (found, source) = find(&with, None).unwrap().unwrap();
        assert_eq!(found, m);
        assert_eq!(source, ManifestSource::Embedded);
        assert!(embed(&with, &m).is_err(), "a second manifest must be refused");
        assert!(find(EMPTY_COMPONENT, None).unwrap().is_none());
    }

    #[test]
    fn file_beside_is_used_only_without_an_embedded_one() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("hello.wasm");
        std::fs::write(
            dir.path().join("hello.phasebox.toml"),
            HELLO.replace("hello\"\n        version", "beside\"\n        version"),
        )
        .unwrap();
        let (m, source) = find(EMPTY_COMPONENT, Some(&wasm)).unwrap().unwrap();
        assert_eq!(m.plugin.name, "beside");
        assert!(matches!(source, ManifestSource::File(_)));
        let with = embed(EMPTY_COMPONENT, &Manifest::parse(HELLO).unwrap()).unwrap();
        assert_eq!(find(&with, Some(&wasm)).unwrap().unwrap().0.plugin.name, "hello");
    }
}
