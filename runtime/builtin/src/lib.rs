//! The plugins built into the `phasebox` binary, so an installed binary runs jobs and the demo
//! with no plugin files, no source tree and no Rust toolchain.
//!
//! `build.rs` compiles `plugins/<name>/` for wasm32-wasip2 when this crate is built (it needs
//! that target: `rustup target add wasm32-wasip2`) and includes each component with its
//! `phasebox.toml`. The manifest is embedded into the component here, the same way
//! `phasebox plugin embed` does, so a built-in plugin and the file the plugin build writes have
//! the same bytes and the same sha256.
//!
//! Two groups:
//! - [`runner`]: the standard plugins (`noprovision`, `flash`, `shell`, `reserve`, `firmware`,
//!   `cleanup`; see `phasebox_job::defaults`) and `hello`, which a runner configuration may
//!   name in `builtin_plugins`;
//! - the demo's adversarial `probe`, reachable only by name through [`get`]: it asks for every
//!   capability to show the denials, so no runner offers it to jobs.

#![deny(missing_docs)]

use std::sync::Arc;

use phasebox_sandbox::manifest::{self, Manifest};
use phasebox_sandbox::{Plugin, Sandbox, SandboxError};

/// One built-in plugin: its component as compiled and its manifest's text.
#[derive(Clone, Copy)]
pub struct Builtin {
    /// The plugin's name (its crate directory under `plugins/`, and its manifest's name).
    pub name: &'static str,
    /// The component, without its manifest.
    pub component: &'static [u8],
    /// Its `phasebox.toml`.
    pub manifest: &'static str,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin").field("name", &self.name).field("component_bytes", &self.component.len()).finish()
    }
}

/// Every built-in plugin, in build order.
pub static ALL: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The built-in plugins a runner configuration may name in `builtin_plugins`.
const RUNNER: &[&str] = &["noprovision", "flash", "shell", "reserve", "firmware", "cleanup", "hello"];

/// Why a built-in plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    /// Its manifest did not parse or could not be embedded (a build of a broken source tree).
    #[error("built-in plugin {name}: manifest: {reason}")]
    Manifest {
        /// The plugin.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The sandbox refused it.
    #[error("built-in plugin {name}: {source}")]
    Load {
        /// The plugin.
        name: &'static str,
        /// Why.
        source: Box<SandboxError>,
    },
}

/// The built-in plugin named `name`.
pub fn get(name: &str) -> Option<&'static Builtin> {
    ALL.iter().find(|b| b.name == name)
}

/// The built-in plugins a runner offers to jobs: the standard plugins and `hello`.
pub fn runner() -> impl Iterator<Item = &'static Builtin> {
    ALL.iter().filter(|b| RUNNER.contains(&b.name))
}

impl Builtin {
    /// Its parsed manifest.
    pub fn manifest(&self) -> Result<Manifest, BuiltinError> {
        Manifest::parse(self.manifest).map_err(|reason| BuiltinError::Manifest { name: self.name, reason })
    }

    /// The component with its manifest embedded: the plugin as a file would hold it.
    pub fn bytes(&self) -> Result<Vec<u8>, BuiltinError> {
        manifest::embed(self.component, &self.manifest()?)
            .map_err(|reason| BuiltinError::Manifest { name: self.name, reason })
    }

    /// Whether a runner configuration may name it in `builtin_plugins`.
    pub fn offered_to_jobs(&self) -> bool {
        RUNNER.contains(&self.name)
    }

    /// Loads it into `sandbox` (compiling it, or taking it from the compile cache).
    pub fn load(&self, sandbox: &Sandbox) -> Result<Arc<Plugin>, BuiltinError> {
        sandbox
            .load_bytes(&self.bytes()?, None)
            .map_err(|e| BuiltinError::Load { name: self.name, source: Box::new(e) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_carries_a_manifest_of_its_own_name() {
        assert_eq!(ALL.len(), 8);
        for builtin in ALL {
            let bytes = builtin.bytes().unwrap();
            let text = manifest::embedded(&bytes).unwrap().expect("the manifest is embedded");
            assert_eq!(Manifest::parse(&text).unwrap().plugin.name, builtin.name);
        }
    }

    #[test]
    fn runners_get_the_standard_plugins_and_hello_but_not_probe() {
        let names: Vec<_> = runner().map(|b| b.name).collect();
        assert_eq!(names, ["noprovision", "flash", "shell", "reserve", "firmware", "cleanup", "hello"]);
        assert!(get("probe").is_some_and(|p| !p.offered_to_jobs()));
        assert!(get("hog").is_none());
    }
}
