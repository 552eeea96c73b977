//! The process-wide engine: one wasmtime `Engine` with epoch interruption driven by a single
//! ticker thread, the pooling allocator sized from [`EngineConfig`] (or on-demand allocation
//! when pooling is off or cannot be set up), one `Linker` with every interface, the compile
//! cache, and the loaded plugins.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CompileCache;
use crate::error::SandboxError;
use crate::host::{self, PhaseState};
use crate::plugin::Plugin;
use crate::units::{serde_duration, serde_size};

/// How the engine is set up. Read from the agent's configuration; every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Use the pooling allocator (pre-reserved instance slots: faster phase starts).
    pub pooling: bool,
    /// How many phases may run at once in this process (pool slots). Further phases wait.
    pub max_instances: u32,
    /// The largest linear memory one instance may have; also caps each phase's memory limit.
    #[serde(with = "serde_size")]
    pub max_memory: u64,
    /// Where compiled plugins are cached; `None` keeps them in memory only. It must be this
    /// user's and writable by no one else, or the sandbox refuses to start.
    pub cache_dir: Option<PathBuf>,
    /// The key that proves the cache's artifacts were written by this user: a file kept outside
    /// the cache directory, this user's, mode `0600`, created when missing. `None`:
    /// `<cache_dir>.key`, beside the directory.
    pub cache_key_file: Option<PathBuf>,
    /// How often guest code checks its deadlines.
    #[serde(with = "serde_duration")]
    pub epoch_tick: Duration,
    /// Handles all running phases together may hold (see `Limits::handles`). Each phase
    /// reserves its own limit from this budget when it starts, so a phase that uses every
    /// handle it may hold never takes one from another DUT's phase; a phase waits for its
    /// reservation when the budget is spoken for. `None`: three quarters of the process's
    /// open-file limit (raised to its hard limit when the sandbox starts), the rest kept for
    /// the agent itself.
    pub max_handles: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 1000,
            max_memory: 4 << 30,
            cache_dir: None,
            cache_key_file: None,
            epoch_tick: Duration::from_millis(10),
            max_handles: None,
        }
    }
}

/// How instances are allocated, as it turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Pre-reserved pool slots.
    Pooling,
    /// Allocated on demand (pooling was off).
    OnDemand,
    /// Allocated on demand because the pool could not be set up (the reason).
    OnDemandFallback(String),
}

/// The sandbox: load plugins once, run phases many times.
pub struct Sandbox {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<PhaseState>,
    pub(crate) cache: Option<CompileCache>,
    pub(crate) config: EngineConfig,
    pub(crate) allocation: Allocation,
    pub(crate) pool_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// The process's handle budget, which running phases reserve their handle limits from.
    pub(crate) handle_budget: Arc<tokio::sync::Semaphore>,
    pub(crate) handle_budget_size: u64,
    pub(crate) plugins: Mutex<HashMap<String, Arc<Plugin>>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .field("allocation", &self.allocation)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine, starts its epoch ticker and links every interface.
    pub fn new(config: EngineConfig) -> Result<Self, SandboxError> {
        let (engine, allocation) = if config.pooling {
            match Engine::new(&wasm_config(&config, true)) {
                Ok(engine) => (engine, Allocation::Pooling),
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::warn!(%reason, "pooling allocator unavailable; allocating instances on demand");
                    let engine = Engine::new(&wasm_config(&config, false))
                        .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
                    (engine, Allocation::OnDemandFallback(reason))
                }
            }
        } else {
            let engine =
                Engine::new(&wasm_config(&config, false)).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
            (engine, Allocation::OnDemand)
        };
        start_ticker(&engine, config.epoch_tick);

        let mut linker = Linker::new(&engine);
        host::link(&mut linker).map_err(|e| SandboxError::Engine(format!("linking host interfaces: {e:#}")))?;
        let cache = config
            .cache_dir
            .as_ref()
            .map(|dir| CompileCache::open(dir, config.cache_key_file.as_deref()))
            .transpose()?;
        let pool_slots = (allocation == Allocation::Pooling)
            .then(|| Arc::new(tokio::sync::Semaphore::new(config.max_instances as usize)));
        let handle_budget_size = config.max_handles.unwrap_or_else(default_handle_budget).max(1);
        let handle_budget = Arc::new(tokio::sync::Semaphore::new(
            handle_budget_size.min(tokio::sync::Semaphore::MAX_PERMITS as u64) as usize,
        ));
        tracing::debug!(handles = handle_budget_size, "handle budget of running phases");
        Ok(Self {
            engine,
            linker,
            cache,
            config,
            allocation,
            pool_slots,
            handle_budget,
            handle_budget_size,
            plugins: Mutex::default(),
        })
    }

    /// The handles all running phases together may hold.
    pub fn handle_budget(&self) -> u64 {
        self.handle_budget_size
    }

    /// How instances are allocated.
    pub fn allocation(&self) -> &Allocation {
        &self.allocation
    }

    /// The engine configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The compile cache, when one is configured.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

fn wasm_config(config: &EngineConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    // Guests that recurse without end hit this and trap, instead of exhausting the host.
    c.max_wasm_stack(1 << 20);
    if pooling {
        let n = config.max_instances.max(1);
        let mut p = PoolingAllocationConfig::new();
        p.total_component_instances(n)
            // Python and JavaScript components hold dozens of core instances and several
            // memories and tables each; Rust and C hold one or two.
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(config.max_memory as usize)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .max_component_instance_size(1 << 20)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            // Reset only the pages a phase dirtied (where the kernel can say which), instead of
            // wiping the whole kept-resident region at every phase end: this halves the round
            // trip of a short phase.
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// One thread per engine advances the epoch; it ends when the engine is dropped.
fn start_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("phasebox-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Raises the process's open-file limit to its hard limit and returns three quarters of it:
/// the budget of handles phases may hold, the rest kept for the agent's own files, sockets and
/// connections.
fn default_handle_budget() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some_and(|max| limit.current.is_some_and(|cur| cur < max)) {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit to its hard limit"),
        }
    }
    // No limit at all: a budget no phase mix reaches before memory or time stops it.
    let files = limit.current.unwrap_or(1 << 20);
    files / 4 * 3
}
