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

    /// Loads every plugin of `config.plugins` into an existing sandbox (which may already hold
    /// compiled plugins: loading the same bytes again costs a hash, not a compile).
    pub fn load_into(sandbox: Arc<Sandbox>, config: &RunnerConfig) -> Result<Self, JobError> {
        let mut set = Self::new(sandbox);
        for file in config.plugin_files()? {
            set.add_file(&file)?;
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
