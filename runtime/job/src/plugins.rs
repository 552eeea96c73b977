//! The runner's plugin set: every plugin it may run, loaded (compiled and pre-instantiated)
//! once, found by name or by sha256.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use phasebox_jobspec::PluginRef;
use phasebox_sandbox::{Plugin, Sandbox};

use crate::config::RunnerConfig;
use crate::error::JobError;

/// The plugins a runner has, and the sandbox that runs them. Loading happens here, once; a job
/// plan only looks plugins up, so planning and starting a phase never compile anything.
pub struct PluginSet {
    sandbox: Arc<Sandbox>,
    by_name: BTreeMap<String, Arc<Plugin>>,
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSet").field("plugins", &self.describe()).finish_non_exhaustive()
    }
}

impl PluginSet {
    /// An empty set on `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
        Self { sandbox, by_name: BTreeMap::new() }
    }

    /// Builds the sandbox `config.engine` describes and loads every plugin of `config.plugins`.
    pub fn load(config: &RunnerConfig) -> Result<Self, JobError> {
        Self::load_into(Arc::new(config.sandbox()?), config)
    }

    /// Loads every plugin of `config.plugins`, then those of `config.builtin_plugins` that no
    /// file took the name of, into an existing sandbox (which may already hold compiled
    /// plugins: loading the same bytes again costs a hash, not a compile).
    pub fn load_into(sandbox: Arc<Sandbox>, config: &RunnerConfig) -> Result<Self, JobError> {
        let mut set = Self::new(sandbox);
        for file in config.plugin_files()? {
            set.add_file(&file)?;
        }
        for name in &config.builtin_plugins {
            if let Some(file) = set.by_name.get(name) {
                tracing::debug!(plugin = %name, sha256 = file.sha256(), "a plugin file replaces the built-in one");
                continue;
            }
            let builtin = phasebox_builtin::runner().find(|b| b.name == name).ok_or_else(|| JobError::Config {
                path: "(runner)".into(),
                reason: format!("builtin_plugins: no built-in plugin {name:?}"),
            })?;
            set.add(builtin.load(&set.sandbox)?)?;
        }
        Ok(set)
    }

    /// Loads one plugin file and adds it.
    pub fn add_file(&mut self, path: &Path) -> Result<Arc<Plugin>, JobError> {
        let plugin = self
            .sandbox
            .load_file(path)
            .map_err(|e| JobError::PluginLoad { path: path.to_owned(), source: Box::new(e) })?;
        self.add(plugin.clone())?;
        Ok(plugin)
    }

    /// Adds a loaded plugin. Adding the same plugin twice is a no-op; a different plugin with
    /// the name of one already present is refused.
    pub fn add(&mut self, plugin: Arc<Plugin>) -> Result<(), JobError> {
        if let Some(existing) = self.by_name.get(plugin.name()) {
            if existing.sha256() == plugin.sha256() {
                return Ok(());
            }
            return Err(JobError::DuplicatePlugin {
                name: plugin.name().to_owned(),
                first: existing.sha256().to_owned(),
                second: plugin.sha256().to_owned(),
            });
        }
        tracing::debug!(plugin = plugin.name(), sha256 = plugin.sha256(), "plugin added to the set");
        self.by_name.insert(plugin.name().to_owned(), plugin);
        Ok(())
    }

    /// The plugin a job's reference names, if the set has it.
    pub fn resolve(&self, reference: &PluginRef) -> Option<&Arc<Plugin>> {
        match reference {
            PluginRef::Name(name) => self.by_name.get(name),
            PluginRef::Sha256(hex) => self.by_name.values().find(|p| p.sha256() == hex),
        }
    }

    /// The plugins, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.by_name.values()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The sandbox the plugins were loaded into.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// `name (sha256:<12 hex>)` for each plugin, comma separated; `none` when empty.
    pub fn describe(&self) -> String {
        if self.by_name.is_empty() {
            return "none".into();
        }
        self.iter().map(|p| format!("{} (sha256:{})", p.name(), &p.sha256()[..12])).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phasebox_sandbox::manifest::{self, Manifest};

    fn config(text: &str, dir: &Path) -> RunnerConfig {
        let mut config = RunnerConfig::from_toml(text, dir).unwrap();
        config.engine.pooling = false;
        config
    }

    #[test]
    fn builtin_plugins_are_loaded_only_when_asked_and_a_file_replaces_one_by_name() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PluginSet::load(&config("", dir.path())).unwrap().is_empty());

        let builtin = PluginSet::load(&config("builtin_plugins = [\"shell\", \"hello\"]", dir.path())).unwrap();
        let names: Vec<&str> = builtin.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["hello", "shell"]);
        for unknown in ["probe", "nope"] {
            let text = format!("builtin_plugins = [{unknown:?}]");
            let err = RunnerConfig::from_toml(&text, dir.path()).unwrap_err().to_string();
            assert!(err.contains(&format!("no built-in plugin {unknown:?}")) && err.contains("shell"), "{err}");
        }
        let hello = builtin.resolve(&PluginRef::Name("hello".into())).unwrap().sha256().to_owned();

        // A newer hello as a file: it is the one the set offers, and the built-in one is not loaded.
        let source = phasebox_builtin::get("hello").unwrap();
        let mut newer = Manifest::parse(source.manifest).unwrap();
        newer.plugin.version = "9.9.9".into();
        std::fs::write(dir.path().join("hello.wasm"), manifest::embed(source.component, &newer).unwrap()).unwrap();
        let set = PluginSet::load(&config(
            "builtin_plugins = [\"shell\", \"hello\"]\nplugins = [\"hello.wasm\"]",
            dir.path(),
        ))
        .unwrap();
        let replaced = set.resolve(&PluginRef::Name("hello".into())).unwrap();
        assert_eq!(replaced.manifest().plugin.version, "9.9.9");
        assert!(set.resolve(&PluginRef::Sha256(hello)).is_none(), "the built-in hello stays out");
        assert_eq!(set.iter().count(), 2);
    }
}
