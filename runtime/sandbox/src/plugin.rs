//! Loading plugins: identify by sha256, find the manifest, compile (or load from the cache),
//! list imports, and keep a pre-instantiated form so a phase start costs an instantiation,
//! not a compile.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::bindings::PhasePre;
use crate::cache::CacheOutcome;
use crate::capability::{Capability, Linked};
use crate::engine::Sandbox;
use crate::error::SandboxError;
use crate::host::PhaseState;
use crate::manifest::{self, Manifest, ManifestSource};

/// A loaded plugin, ready to run any number of phases.
pub struct Plugin {
    pub(crate) sha256: String,
    pub(crate) manifest: Manifest,
    pub(crate) manifest_source: ManifestSource,
    pub(crate) imports: Vec<String>,
    pub(crate) exports: Vec<String>,
    pub(crate) size: usize,
    pub(crate) load_time: Duration,
    pub(crate) cache: CacheOutcome,
    pub(crate) pre: PhasePre<PhaseState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.manifest.plugin.name)
            .field("sha256", &self.sha256)
            .field("imports", &self.imports)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name from its manifest.
    pub fn name(&self) -> &str {
        &self.manifest.plugin.name
    }

    /// The sha256 of the component file, in lowercase hex: the plugin's identity.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the manifest came from.
    pub fn manifest_source(&self) -> &ManifestSource {
        &self.manifest_source
    }

    /// The interfaces the component imports, e.g. `wasi:cli/environment@0.2.6`.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The names the component exports.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    /// The component's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How long compiling (or loading from the cache) took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Whether it came from the compile cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The capability kinds its imports need, each with the import that needs it.
    pub fn needed_capabilities(&self) -> Vec<(Capability, &str)> {
        self.imports.iter().filter_map(|i| Capability::for_import(i).map(|c| (c, i.as_str()))).collect()
    }

    /// Refuses the plugin for `phase` when one of its imports needs a capability kind `linked`
    /// leaves out ([`check_imports`](crate::capability::check_imports)).
    pub fn check_imports(&self, phase: &str, linked: &Linked) -> Result<(), SandboxError> {
        crate::capability::check_imports(self.name(), phase, self.imports.iter().map(String::as_str), linked)
    }
}

/// The sha256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Sandbox {
    /// Loads a plugin from a file. Its manifest is the embedded one, or one beside the file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<Plugin>, SandboxError> {
        let bytes = std::fs::read(path).map_err(|e| SandboxError::io(path, e))?;
        self.load_bytes(&bytes, Some(path))
    }

    /// Loads a plugin from its bytes; `path` (if any) is where to look for a manifest beside it.
    /// Loading the same bytes twice returns the same plugin.
    pub fn load_bytes(&self, bytes: &[u8], path: Option<&Path>) -> Result<Arc<Plugin>, SandboxError> {
        let label = path.map(|p| p.display().to_string()).unwrap_or_else(|| "(bytes)".into());
        let sha256 = sha256_hex(bytes);
        if let Some(p) = self.plugins.lock().expect("plugin map poisoned").get(&sha256) {
            return Ok(p.clone());
        }
        if !wasmparser::Parser::is_component(bytes) {
            let reason = if wasmparser::Parser::is_core_wasm(bytes) {
                "a core WebAssembly module, not a component: build for wasm32-wasip2, or wrap it with `wasm-tools component new`"
            } else {
                "not a WebAssembly component"
            };
            return Err(SandboxError::InvalidPlugin { plugin: label, reason: reason.into() });
        }
        // A component too damaged to scan for its manifest is not loadable either.
        manifest::embedded(bytes).map_err(|reason| SandboxError::InvalidPlugin { plugin: label.clone(), reason })?;
        let (manifest, manifest_source) = manifest::find(bytes, path)
            .map_err(|reason| SandboxError::Manifest { plugin: label.clone(), reason })?
            .ok_or_else(|| SandboxError::Manifest {
                plugin: label.clone(),
                reason: format!(
                    "none found: embed one (`phasebox plugin embed`) or put `{}` or `phasebox.toml` beside it",
                    path.and_then(|p| p.file_stem())
                        .map(|s| format!("{}.phasebox.toml", s.to_string_lossy()))
                        .unwrap_or_default()
                ),
            })?;
        let name = manifest.plugin.name.clone();

        let started = Instant::now();
        let (component, cache) = self.compile(bytes, &sha256, &name)?;
        let load_time = started.elapsed();

        let ty = component.component_type();
        let mut imports = Vec::new();
        for (import, item) in ty.imports(&self.engine) {
            // A world's `use`d types appear as type imports; they carry no capability.
            if matches!(item.ty, ComponentItem::Type(_)) {
                continue;
            }
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) || Capability::for_import(import).is_none() {
                return Err(SandboxError::UnknownImport { plugin: name, import: import.to_owned() });
            }
            imports.push(import.to_owned());
        }
        let exports = ty.exports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(PhasePre::new)
            .map_err(|e| SandboxError::InvalidPlugin { plugin: name.clone(), reason: format!("{e:#}") })?;
        let plugin = Arc::new(Plugin {
            sha256: sha256.clone(),
            manifest,
            manifest_source,
            imports,
            exports,
            size: bytes.len(),
            load_time,
            cache,
            pre,
        });
        tracing::info!(plugin = %name, %sha256, ?cache, ms = load_time.as_millis() as u64, "plugin loaded");
        self.plugins.lock().expect("plugin map poisoned").insert(sha256, plugin.clone());
        Ok(plugin)
    }

    fn compile(&self, bytes: &[u8], sha256: &str, name: &str) -> Result<(Component, CacheOutcome), SandboxError> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.load(sha256, &self.engine)
        {
            return Ok((component, CacheOutcome::Hit));
        }
        let invalid =
            |e: wasmtime::Error| SandboxError::InvalidPlugin { plugin: name.to_owned(), reason: format!("{e:#}") };
        if wasmtime::Engine::detect_precompiled(bytes).is_some() {
            // Precompiled code skips validation; only the cache may supply it.
            return Err(SandboxError::InvalidPlugin {
                plugin: name.to_owned(),
                reason: "this is precompiled native code, not a WebAssembly component; load the .wasm instead".into(),
            });
        }
        let compiled = self.engine.precompile_component(bytes).map_err(invalid)?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.store(sha256, &self.engine, &compiled)
        {
            tracing::warn!(plugin = name, error = %e, "cannot store compiled plugin in the cache");
        }
        // SAFETY: `compiled` was produced just now by this engine from validated bytes.
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(invalid)?;
        Ok((component, CacheOutcome::Compiled))
    }
}
