//! What the sandbox tests share: one sandbox per test process, the bundled Rust plugins, and
//! what a phase did.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use phasebox_sandbox::events::Stream;
use phasebox_sandbox::{
    CancellationToken, EngineConfig, Grant, GrantRequest, PhaseEnd, PhaseEvent, PhaseInput, PhaseReport, Plugin,
    Policy, Sandbox, SandboxError, Secret,
};
use serde_json::Value;

/// The process's sandbox. Compiled plugins are cached beside the plugins' build, so the
/// JavaScript and Python components (seconds to compile) cost that once per machine.
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let cache = phasebox_guests::plugins_dir().join("target/phasebox-test-cache");
        Sandbox::new(EngineConfig {
            max_instances: 32,
            max_memory: 1 << 30,
            cache_dir: Some(cache),
            ..EngineConfig::default()
        })
        .expect("sandbox")
    })
}

/// One of the bundled Rust plugins (`plugins/<name>`), built on first use.
pub fn rust_plugin(name: &str) -> Arc<Plugin> {
    phasebox_guests::build().expect("building the Rust guest plugins");
    sandbox().load_file(&phasebox_guests::path(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Runs `plugin` as the test phase of a job whose directory is `job_dir`, the grant resolved
/// from its manifest, `policy` and `ask`; `dut` are the device facts it sees.
#[allow(clippy::too_many_arguments)]
pub async fn run_phase(
    plugin: &Plugin,
    policy: &Policy,
    ask: &GrantRequest,
    job_dir: &Path,
    data: Value,
    secrets: &BTreeMap<String, Secret>,
    dut: &str,
    cancel: CancellationToken,
) -> Result<Ran, SandboxError> {
    let grant = Grant::resolve("test", &plugin.manifest().capabilities, policy, ask, job_dir)?;
    let input = PhaseInput {
        phase: "test".into(),
        job_id: "00000000-0000-4000-8000-000000000001".into(),
        data_json: data.to_string(),
        dut: vec![("name".into(), dut.into())],
    };
    let (report, events) = sandbox().run_phase_collecting(plugin, &grant, &input, secrets, cancel).await?;
    Ok(Ran { report, events })
}

/// What a phase did: how it ended and every event it gave.
pub struct Ran {
    pub report: PhaseReport,
    pub events: Vec<PhaseEvent>,
}

impl Ran {
    /// The summary of a phase that passed; panics naming how it ended otherwise.
    pub fn summary(&self) -> &str {
        match &self.report.end {
            PhaseEnd::Passed { summary } => summary,
            other => panic!("the phase did not pass: {other}"),
        }
    }

    /// Everything the phase wrote to stdout.
    pub fn stdout(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                PhaseEvent::Output { stream: Stream::Stdout, data, .. } => {
                    Some(String::from_utf8_lossy(data).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// The calls denied under `grant`, as `call: reason`.
    pub fn denials(&self, grant: &str) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PhaseEvent::Capability(c) if c.grant == grant && !c.allowed => {
                    Some(format!("{}: {}", c.call, c.reason.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .collect()
    }
}
