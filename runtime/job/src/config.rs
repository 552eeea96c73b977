//! The runner's configuration: which plugins it has, which runs each phase by default, what a
//! job may be granted, the job's time budget, and the device under test.
//!
//! It is TOML (the example is `config/runner.toml`); unknown keys are errors, so a typo cannot
//! silently fall back to a default. Every key is optional:
//!
//! ```toml
//! builtin_plugins = ["shell", "cleanup"]      # plugins built into the binary, by name
//! plugins = ["../plugins/target/phasebox"]   # .wasm files, or directories of them
//! job_timeout = "24h"                          # the whole job, cleanup included
//! cleanup_budget = "5m"                        # kept out of job_timeout for cleanup
//!
//! [defaults]                                   # plugin per phase when the job names none
//! test = "hello"
//!
//! [engine]                                     # phasebox_sandbox::EngineConfig
//! max_instances = 16
//!
//! [policy.allow]                               # phasebox_sandbox::Policy
//! results = true
//!
//! [dut]
//! name = "rpi4-07"
//! facts = { device_ip = "10.0.0.5" }
//! ```
//!
//! Relative paths (`plugins`, `device`, `engine.cache_dir`, `engine.cache_key_file`) are relative
//! to the file's directory. Durations and sizes follow `phasebox_config::units`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phasebox_jobspec::{Phase, PluginRef};
use phasebox_sandbox::{EngineConfig, Policy, Sandbox};
use serde::{Deserialize, Serialize};

use crate::error::JobError;

/// The runner's configuration. See the [module docs](self) for the file format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Plugin files (`.wasm` components) or directories whose `*.wasm` files are all loaded.
    /// A job can run only plugins listed here, by name or by sha256: this list is the runner's
    /// allow-list of code. Default: none.
    #[serde(default)]
    pub plugins: Vec<PathBuf>,

    /// Plugins built into the binary to offer as well, by name (`phasebox plugin list`): the
    /// standard plugins (`noprovision`, `flash`, `shell`, `reserve`, `firmware`, `cleanup`) and
    /// `hello`. Like `plugins`, this list is the runner's allow-list of code. A file in
    /// `plugins` with the same name takes the place of the built-in one, so a lab can roll out
    /// a newer plugin without a new binary. Default: none.
    #[serde(default)]
    pub builtin_plugins: Vec<String>,

    /// The plugin that runs a phase when the job names none (`<phase>_data.phasebox.plugin`),
    /// by name or `sha256:<hex>`. The analogue of Testflinger's `<phase>_command`: `setup` and
    /// `cleanup` without a default are skipped (as Testflinger skips an empty command); any
    /// other phase the job asks for, without a plugin, refuses the job. Default: none.
    #[serde(default)]
    pub defaults: BTreeMap<Phase, PluginRef>,

    /// The longest a whole job may take, from its first phase to the end of cleanup. Phases
    /// are cut short so that `cleanup_budget` of it is left for cleanup. Testflinger has no
    /// whole-job limit (its `global_timeout` applies to each phase on its own, and so it does
    /// here); this one is the operator's. Default: 24 hours.
    #[serde(default = "default_job_timeout", with = "duration")]
    pub job_timeout: Duration,

    /// Time kept out of `job_timeout` for the cleanup phase: no other phase may run into it, and
    /// cleanup always gets at least this long, even after the job timed out or was cancelled.
    /// Must be shorter than `job_timeout`. Default: 5 minutes.
    #[serde(default = "default_cleanup_budget", with = "duration")]
    pub cleanup_budget: Duration,

    /// How the sandbox engine is set up (pooling, instance slots, memory, compile cache, epoch
    /// tick); see [`EngineConfig`]. Default: its defaults.
    #[serde(default)]
    pub engine: EngineConfig,

    /// What a job on this runner may be granted at most, the environment every phase gets,
    /// and the largest limits (`policy.limits.timeout` caps every phase's timeout as
    /// Testflinger's agent `global_timeout` does, `policy.limits.output_timeout` caps the
    /// output-idle timeout as its `output_timeout` does); see [`Policy`]. Default: grants
    /// nothing beyond logging.
    #[serde(default)]
    pub policy: Policy,

    /// The device under test.
    #[serde(default)]
    pub dut: DutConfig,

    /// How the host reaches the device under test: a device configuration file (see
    /// `config/device.toml`), relative to this file. Plugins get its handles (`power`,
    /// `console`, `exec`, `flash`) where their grants link them. Default: none, and every
    /// handle call fails with `not-configured`.
    #[serde(default)]
    pub device: Option<PathBuf>,
}

/// The device under test, as plugins and results see it. Only public facts belong here:
/// every plugin of every job reads them, and they appear in `device_info` of the results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutConfig {
    /// The device's name; plugins see it as the fact `name`, results as
    /// `device_info.agent_name`. Default: `dut`.
    #[serde(default = "default_dut_name")]
    pub name: String,
    /// More public facts, e.g. `device_ip`, `arch`; plugins see them as facts and results copy
    /// them into `device_info`. Default: none.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

impl Default for DutConfig {
    fn default() -> Self {
        Self { name: default_dut_name(), facts: BTreeMap::new() }
    }
}

impl DutConfig {
    /// The facts a plugin is given: `name` first, then the others.
    pub fn plugin_facts(&self) -> Vec<(String, String)> {
        let mut facts = vec![("name".to_owned(), self.name.clone())];
        facts.extend(self.facts.iter().filter(|(k, _)| k.as_str() != "name").map(|(k, v)| (k.clone(), v.clone())));
        facts
    }

    /// Testflinger's `device_info`: `agent_name` and the facts.
    pub fn device_info(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut info = serde_json::Map::new();
        for (k, v) in &self.facts {
            info.insert(k.clone(), v.clone().into());
        }
        info.insert("agent_name".into(), self.name.clone().into());
        info
    }
}

fn default_dut_name() -> String {
    "dut".into()
}

fn default_job_timeout() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_cleanup_budget() -> Duration {
    Duration::from_secs(5 * 60)
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            plugins: Vec::new(),
            builtin_plugins: Vec::new(),
            defaults: BTreeMap::new(),
            job_timeout: default_job_timeout(),
            cleanup_budget: default_cleanup_budget(),
            engine: EngineConfig::default(),
            policy: Policy::default(),
            dut: DutConfig::default(),
            device: None,
        }
    }
}

impl RunnerConfig {
    /// Reads a configuration file; relative paths in it are taken from the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, JobError> {
        let config: RunnerConfig = phasebox_config::load(path).map_err(|e| config_error(path, e))?;
        config.validate().map_err(|reason| JobError::Config { path: path.to_owned(), reason })?;
        Ok(config)
    }

    /// Parses configuration text; relative paths are taken from `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, JobError> {
        let inline = Path::new("(inline)");
        let config: RunnerConfig =
            phasebox_config::parse(text, inline, base_dir).map_err(|e| config_error(inline, e))?;
        config.validate().map_err(|reason| JobError::Config { path: inline.to_owned(), reason })?;
        Ok(config)
    }

    /// Checks what serde cannot: that the cleanup budget fits in the job timeout, and that each
    /// built-in plugin named exists.
    pub fn validate(&self) -> Result<(), String> {
        for name in &self.builtin_plugins {
            if !phasebox_builtin::runner().any(|b| b.name == name) {
                let offered: Vec<&str> = phasebox_builtin::runner().map(|b| b.name).collect();
                return Err(format!(
                    "builtin_plugins: no built-in plugin {name:?} (there are: {})",
                    offered.join(", ")
                ));
            }
        }
        if self.cleanup_budget >= self.job_timeout {
            return Err(format!(
                "cleanup_budget ({}) must be shorter than job_timeout ({}): it is kept out of it for cleanup",
                phasebox_config::units::format_duration(self.cleanup_budget),
                phasebox_config::units::format_duration(self.job_timeout)
            ));
        }
        if self.cleanup_budget.is_zero() {
            return Err("cleanup_budget must be longer than zero: cleanup always needs some time".into());
        }
        Ok(())
    }

    /// Renders the configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a runner config always serializes")
    }

    /// The plugin files to load: each file in `plugins`, and every `*.wasm` file (sorted) in
    /// each directory there.
    pub fn plugin_files(&self) -> Result<Vec<PathBuf>, JobError> {
        let mut files = Vec::new();
        for p in &self.plugins {
            let meta = std::fs::metadata(p).map_err(|e| JobError::PluginLoad {
                path: p.clone(),
                source: Box::new(phasebox_sandbox::SandboxError::Io { path: p.clone(), source: e }),
            })?;
            if !meta.is_dir() {
                files.push(p.clone());
                continue;
            }
            let read = std::fs::read_dir(p).map_err(|e| JobError::PluginLoad {
                path: p.clone(),
                source: Box::new(phasebox_sandbox::SandboxError::Io { path: p.clone(), source: e }),
            })?;
            let mut found: Vec<PathBuf> = read
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "wasm") && f.is_file())
                .collect();
            found.sort();
            files.extend(found);
        }
        Ok(files)
    }

    /// Builds the sandbox engine this configuration describes.
    pub fn sandbox(&self) -> Result<Sandbox, JobError> {
        Sandbox::new(self.engine.clone()).map_err(|e| JobError::Sandbox(Box::new(e)))
    }
}

impl Rebase for RunnerConfig {
    fn rebase(&mut self, base: &Path) {
        self.plugins.iter_mut().for_each(|p| rebase(p, base));
        let engine = &mut self.engine;
        for path in [&mut engine.cache_dir, &mut engine.cache_key_file, &mut self.device].into_iter().flatten() {
            rebase(path, base);
        }
    }
}

/// The engine's error for a configuration file that cannot be used.
fn config_error(path: &Path, error: phasebox_config::ConfigError) -> JobError {
    let reason = match error {
        phasebox_config::ConfigError::Parse { message, .. } => message.trim_end().to_owned(),
        phasebox_config::ConfigError::Read { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    JobError::Config { path: path.to_owned(), reason }
}

use phasebox_config::units::serde_duration as duration;
use phasebox_config::{Rebase, rebase};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_documented_defaults() {
        let c = RunnerConfig::from_toml("", Path::new("/etc/phasebox")).unwrap();
        assert_eq!(c, RunnerConfig::default());
        assert_eq!(c.job_timeout, Duration::from_secs(86_400));
        assert_eq!(c.cleanup_budget, Duration::from_secs(300));
        assert_eq!(c.dut.name, "dut");
    }

    #[test]
    fn relative_paths_follow_the_file_and_durations_parse() {
        let c = RunnerConfig::from_toml(
            "plugins = [\"p/hello.wasm\", \"/abs/x.wasm\"]\njob_timeout = \"2h\"\ncleanup_budget = 90\n\
             [defaults]\ntest = \"hello\"\nprovision = \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n\
             [engine]\ncache_dir = \"cache\"\n",
            Path::new("/etc/phasebox"),
        )
        .unwrap();
        assert_eq!(c.plugins, [PathBuf::from("/etc/phasebox/p/hello.wasm"), PathBuf::from("/abs/x.wasm")]);
        assert_eq!(c.engine.cache_dir.as_deref(), Some(Path::new("/etc/phasebox/cache")));
        assert_eq!(c.job_timeout, Duration::from_secs(7200));
        assert_eq!(c.cleanup_budget, Duration::from_secs(90));
        assert_eq!(c.defaults[&Phase::Test], PluginRef::Name("hello".into()));
        assert!(matches!(c.defaults[&Phase::Provision], PluginRef::Sha256(_)));
        let again = RunnerConfig::from_toml(&c.to_toml(), Path::new("/")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        for (text, needle) in [
            ("plugin = []", "plugin"),
            ("[defaults]\ntset = \"hello\"", "tset"),
            ("[defaults]\ntest = \"Hello World\"", "Hello World"),
            ("job_timeout = \"soon\"", "soon"),
            ("[dut]\nnmae = \"x\"", "nmae"),
            ("[policy.allow]\nresultz = true", "resultz"),
            ("job_timeout = \"1m\"\ncleanup_budget = \"5m\"", "cleanup_budget"),
        ] {
            let err = RunnerConfig::from_toml(text, Path::new(".")).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn dut_facts_and_device_info() {
        let dut = DutConfig { name: "rpi4-07".into(), facts: [("device_ip".into(), "10.0.0.5".into())].into() };
        assert_eq!(dut.plugin_facts()[0], ("name".to_string(), "rpi4-07".to_string()));
        let info = dut.device_info();
        assert_eq!(info["agent_name"], "rpi4-07");
        assert_eq!(info["device_ip"], "10.0.0.5");
    }
}
