//! Stage two of the job pipeline: a validated [`JobSpec`] and the runner's configuration become
//! a [`JobPlan`] — for every phase, what runs it (plugin), what it may touch (effective grant),
//! and how long it may take (timeouts). Every refusal that can be decided before a phase runs
//! is decided here.
//!
//! # The job directory
//!
//! Testflinger's agent gives each job a fresh rundir; so does the plan (the directory must be
//! new or empty). Its layout:
//!
//! ```text
//! <job_dir>/attachments/<phase>/   the job's attachments for that phase, read-only
//! <job_dir>/artifacts/             what phases leave for the job's submitter, packed after cleanup
//! <job_dir>/<source>/              any other directory a phase's grants ask for (e.g. scratch)
//! ```
//!
//! # Standard mounts
//!
//! Besides what a job asks for in `<phase>_data.phasebox.grants.files`, a phase gets:
//!
//! - `/attachments` ← `attachments/<phase>`, read-only, when the phase has attachments
//!   (`provision`, `firmware_update`, `test`, as in Testflinger). The job asked for it by
//!   listing attachments, so a plugin manifest or policy that does not allow the mount refuses
//!   the job.
//! - `/artifacts` ← `artifacts`, read-write, when the plugin's manifest and the operator's
//!   policy both allow it. It is offered, not asked for, so it is silently left out otherwise.
//!
//! A job's own request for the same guest path replaces the standard mount. Both count as the
//! job's request in the intersection: plugin declares ∩ policy allows ∩ job asks.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phasebox_jobspec::{JobSpec, Phase, PhaseboxBlock, PluginRef};
use phasebox_sandbox::{Access, FileRequest, Grant, GrantRequest, Origin, PhaseInput, Plugin, Sandbox};
use serde_json::{Map, Value};

use crate::config::RunnerConfig;
use crate::error::JobError;
use crate::events::{PhasePlanInfo, SkipReason};
use crate::plugins::PluginSet;
use crate::timeouts::{PhaseTimeouts, phase_timeouts};

/// Guest path of the standard attachments mount.
pub const ATTACHMENTS_MOUNT: &str = "/attachments";
/// Guest path of the standard artifacts mount.
pub const ARTIFACTS_MOUNT: &str = "/artifacts";
/// The attachments directory inside the job directory.
pub const ATTACHMENTS_DIR: &str = "attachments";
/// The artifacts directory inside the job directory.
pub const ARTIFACTS_DIR: &str = phasebox_archive::ARTIFACTS_DIR;

/// A job ready to run: every phase resolved. Built by [`JobPlan::new`]; run once with
/// [`run_job`](crate::run_job).
pub struct JobPlan {
    pub(crate) job_id: String,
    pub(crate) job_queue: String,
    pub(crate) name: Option<String>,
    pub(crate) job_dir: PathBuf,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) phases: Vec<PlannedPhase>,
    pub(crate) job_timeout: Duration,
    pub(crate) cleanup_budget: Duration,
    pub(crate) device_info: Map<String, Value>,
    pub(crate) attachment_phases: Vec<Phase>,
    /// Mount sources under `attachments/`, relative to the job directory, that must exist
    /// after the archive is unpacked (empty when the archive lacks them).
    pub(crate) attachment_sources: Vec<PathBuf>,
    /// The device under test, when one is attached: its console is recorded as each phase's
    /// serial log when the phase's plugin does not read the console itself.
    pub(crate) dut: Option<Arc<dyn phasebox_sandbox::device::Dut>>,
}

impl JobPlan {
    /// Gives every phase the job's device under test. Its handles are reachable only where a
    /// phase's grant links them (the plugin declares them and the policy allows them); without
    /// a device, each handle call fails with `not-configured`.
    ///
    /// The device's console is also recorded, redacted, as the serial log of every phase whose
    /// plugin is not granted the console (one that is records what it reads itself), as
    /// Testflinger's agent records a device's serial output beside each phase.
    pub fn attach_device(&mut self, dut: Arc<dyn phasebox_sandbox::device::Dut>) {
        self.dut = Some(dut.clone());
        for planned in &mut self.phases {
            if let PhaseAction::Run(run) = &mut planned.action {
                run.grant.set_device(dut.clone());
            }
        }
    }
}

impl JobPlan {
    /// Gives every phase the device `device` ([`attach_device`](Self::attach_device) through
    /// [`DeviceDut`](crate::DeviceDut)) and shows plugins its public facts besides the runner's
    /// (the runner's win on a clash), plus `cleanup_action` — the device configuration's
    /// `cleanup` (`power-off`, `reset`, `none`), which the standard `cleanup` plugin carries out.
    pub fn use_device(&mut self, device: Arc<phasebox_device::Device>) {
        let mut extra: Vec<(String, String)> = device.facts().into_iter().collect();
        extra.push(("cleanup_action".to_owned(), device.cleanup_action().to_string()));
        for planned in &mut self.phases {
            if let PhaseAction::Run(run) = &mut planned.action {
                for (key, value) in &extra {
                    if !run.input.dut.iter().any(|(k, _)| k == key) {
                        run.input.dut.push((key.clone(), value.clone()));
                    }
                }
            }
        }
        for (key, value) in device.facts() {
            self.device_info.entry(key).or_insert(Value::String(value));
        }
        self.attach_device(Arc::new(crate::DeviceDut(device)));
    }
}

impl std::fmt::Debug for JobPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobPlan")
            .field("job_id", &self.job_id)
            .field("job_dir", &self.job_dir)
            .field("phases", &self.phases)
            .field("job_timeout", &self.job_timeout)
            .field("cleanup_budget", &self.cleanup_budget)
            .finish_non_exhaustive()
    }
}

/// One of the seven phases in a plan.
#[derive(Debug)]
pub struct PlannedPhase {
    pub(crate) phase: Phase,
    pub(crate) action: PhaseAction,
}

/// Whether a planned phase runs.
#[derive(Debug)]
pub(crate) enum PhaseAction {
    Skip(SkipReason),
    Run(Box<PhaseRun>),
}

/// How a phase runs: plugin, effective grant, input and timeouts.
pub struct PhaseRun {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) grant: Grant,
    pub(crate) input: PhaseInput,
    pub(crate) timeouts: PhaseTimeouts,
    pub(crate) secrets: Vec<String>,
}

impl std::fmt::Debug for PhaseRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseRun")
            .field("plugin", &self.plugin.name())
            .field("timeouts", &self.timeouts)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl PlannedPhase {
    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Why it is skipped, or `None` when it runs.
    pub fn skip(&self) -> Option<SkipReason> {
        match &self.action {
            PhaseAction::Skip(r) => Some(*r),
            PhaseAction::Run(_) => None,
        }
    }

    /// How it runs, or `None` when it is skipped.
    pub fn run(&self) -> Option<&PhaseRun> {
        match &self.action {
            PhaseAction::Run(r) => Some(r),
            PhaseAction::Skip(_) => None,
        }
    }

    pub(crate) fn info(&self) -> PhasePlanInfo {
        match &self.action {
            PhaseAction::Skip(r) => {
                PhasePlanInfo { phase: self.phase, plugin: None, skip: Some(*r), detail: r.describe(self.phase) }
            }
            PhaseAction::Run(run) => PhasePlanInfo {
                phase: self.phase,
                plugin: Some(run.plugin.name().to_owned()),
                skip: None,
                detail: format!(
                    "timeout {} ({}), output timeout {} ({})",
                    phasebox_sandbox::units::format_duration(run.timeouts.timeout),
                    run.timeouts.timeout_source.describe(),
                    phasebox_sandbox::units::format_duration(run.timeouts.output_timeout),
                    run.timeouts.output_timeout_source.describe(),
                ),
            },
        }
    }
}

impl PhaseRun {
    /// The plugin that runs the phase.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The phase's effective grant (its limits are set when the phase starts).
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// What the plugin is told: phase, job id, `<phase>_data` (without its `phasebox` block)
    /// and the device's facts.
    pub fn input(&self) -> &PhaseInput {
        &self.input
    }

    /// The phase's own timeouts (the job's budget may shorten them when it starts).
    pub fn timeouts(&self) -> &PhaseTimeouts {
        &self.timeouts
    }

    /// The secret names the phase declares.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

impl JobPlan {
    /// Plans `spec` on a runner: resolves each phase's plugin (the job's choice, by name or
    /// sha256, else the runner's default), its effective grant (plugin manifest ∩ policy ∩ the
    /// job's request plus the [standard mounts](self#standard-mounts)), checks the plugin's
    /// imports against it, and computes its timeouts. Prepares `job_dir` (created if missing;
    /// it must be empty) with the [layout](self#the-job-directory) the grants mount.
    ///
    /// Refuses, naming the job and phase: a phase the job asks for with no plugin available;
    /// a plugin the runner does not have; a grant request the manifest or policy does not
    /// allow; a plugin whose imports the grant does not link; attachments that cannot be
    /// mounted; timeouts that are not positive.
    pub fn new(spec: &JobSpec, runner: &RunnerConfig, plugins: &PluginSet, job_dir: &Path) -> Result<Self, JobError> {
        let job_id = spec.job_id.clone().filter(|id| !id.is_empty()).unwrap_or_else(new_job_id);
        for (field, value) in [("global_timeout", spec.global_timeout), ("output_timeout", spec.output_timeout)] {
            if let Some(n) = value
                && n <= 0
            {
                return Err(JobError::InvalidJob {
                    job: job_id,
                    field: field.into(),
                    reason: format!("{n} is not a timeout: give a positive number of seconds"),
                });
            }
        }
        prepare_job_dir(&job_id, job_dir)?;

        let json = spec.to_json();
        let entries = spec.phases();
        let attachment_phases: Vec<Phase> = entries
            .iter()
            .filter(|e| e.runs() && phasebox_archive::TESTFLINGER_PHASES.contains(&e.phase.as_str()))
            .filter(|e| e.phase.data_key().and_then(|k| json.get(k)).is_some_and(|d| d.get("attachments").is_some()))
            .map(|e| e.phase)
            .collect();

        let mut planner = Planner {
            job_id: &job_id,
            spec,
            json: &json,
            runner,
            plugins,
            job_dir,
            attachment_phases: &attachment_phases,
            attachment_sources: Vec::new(),
        };
        let mut phases = Vec::with_capacity(entries.len());
        for entry in &entries {
            let action = match entry.skip {
                Some(reason) => PhaseAction::Skip(reason.into()),
                None => planner.phase(entry.phase, entry.phasebox)?,
            };
            phases.push(PlannedPhase { phase: entry.phase, action });
        }
        let attachment_sources = planner.attachment_sources;
        tracing::info!(
            job = %job_id,
            running = phases.iter().filter(|p| p.run().is_some()).count(),
            "job planned"
        );
        Ok(Self {
            job_id,
            job_queue: spec.job_queue.clone(),
            name: spec.name.clone(),
            job_dir: job_dir.to_owned(),
            sandbox: plugins.sandbox().clone(),
            phases,
            job_timeout: runner.job_timeout,
            cleanup_budget: runner.cleanup_budget,
            device_info: runner.dut.device_info(),
            attachment_phases,
            attachment_sources,
            dut: None,
        })
    }

    /// The job id (the job's own, or a new UUID when it has none).
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The queue the job was submitted to.
    pub fn job_queue(&self) -> &str {
        &self.job_queue
    }

    /// The job directory.
    pub fn job_dir(&self) -> &Path {
        &self.job_dir
    }

    /// The seven phases in Testflinger order.
    pub fn phases(&self) -> &[PlannedPhase] {
        &self.phases
    }

    /// The planned phase `phase`.
    pub fn phase(&self, phase: Phase) -> &PlannedPhase {
        self.phases.iter().find(|p| p.phase == phase).expect("a plan holds all seven phases")
    }

    /// The whole job's time budget.
    pub fn job_timeout(&self) -> Duration {
        self.job_timeout
    }

    /// The part of it kept for cleanup.
    pub fn cleanup_budget(&self) -> Duration {
        self.cleanup_budget
    }

    /// The phases that have attachments.
    pub fn attachment_phases(&self) -> &[Phase] {
        &self.attachment_phases
    }

    /// Testflinger's `device_info` for the results.
    pub fn device_info(&self) -> &Map<String, Value> {
        &self.device_info
    }

    /// The sandbox that runs the phases.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }
}

struct Planner<'a> {
    job_id: &'a str,
    spec: &'a JobSpec,
    json: &'a Value,
    runner: &'a RunnerConfig,
    plugins: &'a PluginSet,
    job_dir: &'a Path,
    attachment_phases: &'a [Phase],
    attachment_sources: Vec<PathBuf>,
}

impl Planner<'_> {
    fn phase(&mut self, phase: Phase, block: Option<&PhaseboxBlock>) -> Result<PhaseAction, JobError> {
        let job = || self.job_id.to_owned();
        let standard = crate::defaults::standard_plugin(phase, self.spec)
            .map(|name| PluginRef::Name(name.to_owned()))
            .filter(|r| self.plugins.resolve(r).is_some());
        let reference =
            block.and_then(|b| b.plugin.as_ref()).or_else(|| self.runner.defaults.get(&phase)).or(standard.as_ref());
        let Some(reference) = reference else {
            if matches!(phase, Phase::Setup | Phase::Cleanup) {
                return Ok(PhaseAction::Skip(SkipReason::NoPlugin));
            }
            return Err(JobError::NoPlugin {
                job: job(),
                phase,
                data_key: phase.data_key().unwrap_or_default().to_owned(),
            });
        };
        let plugin = self
            .plugins
            .resolve(reference)
            .ok_or_else(|| JobError::UnknownPlugin {
                job: job(),
                phase,
                plugin: reference.to_string(),
                available: self.plugins.describe(),
            })?
            .clone();
        let manifest = &plugin.manifest().capabilities;
        let policy = &self.runner.policy;

        let mut ask = request(block);
        // Testflinger hands `test_data.secrets` to the test phase's commands. A test plugin
        // that may read secrets gets them declared when the job declares none itself (no
        // `phasebox.secrets`), so a plain Testflinger job keeps working; a plugin that reads
        // none is not given any. A job that lists `phasebox.secrets` gets exactly those.
        if phase == Phase::Test
            && !manifest.secrets.is_empty()
            && block.is_none_or(|b| b.secrets.is_none())
            && let Some(map) = self.spec.test_data.as_ref().and_then(|t| t.secrets.as_ref())
        {
            for name in map.names() {
                if !ask.secrets.iter().any(|s| s == name) {
                    ask.secrets.push(name.to_owned());
                }
            }
        }
        // Origins the plugin's manifest derives from the phase's data (an image url, key
        // servers for lp:/gh: keys) are offered, like /artifacts, when the plugin may use HTTP
        // and the operator allows them; otherwise the plugin's request is denied at run time and
        // it says which grant is missing.
        for o in self.derived_origins(phase, &plugin) {
            if manifest.http.iter().any(|p| p.covers(&o))
                && policy.allow.http.iter().any(|p| p.covers(&o))
                && !ask.http.contains(&o)
            {
                ask.http.push(o);
            }
        }
        let asks_for = |ask: &GrantRequest, guest: &str| ask.files.iter().any(|f| f.path == guest);
        if self.attachment_phases.contains(&phase) && !asks_for(&ask, ATTACHMENTS_MOUNT) {
            let rule = FileRequest {
                path: ATTACHMENTS_MOUNT.into(),
                source: format!("{ATTACHMENTS_DIR}/{phase}"),
                access: Access::Ro,
            };
            let refusal = if !manifest.files.iter().any(|r| r.covers(&rule)) {
                Some(format!(
                    "the manifest of plugin {} does not declare files access to {ATTACHMENTS_MOUNT}",
                    plugin.name()
                ))
            } else if !policy.allow.files.iter().any(|r| r.covers(&rule)) {
                Some(format!("the operator's policy does not allow mounting `{}` at {ATTACHMENTS_MOUNT}", rule.source))
            } else {
                None
            };
            if let Some(reason) = refusal {
                return Err(JobError::AttachmentsNotGrantable { job: job(), phase, reason });
            }
            ask.files.push(rule);
        }
        if !asks_for(&ask, ARTIFACTS_MOUNT) {
            let rule = FileRequest { path: ARTIFACTS_MOUNT.into(), source: ARTIFACTS_DIR.into(), access: Access::Rw };
            let offered =
                manifest.files.iter().any(|r| r.covers(&rule)) && policy.allow.files.iter().any(|r| r.covers(&rule));
            if offered {
                ask.files.push(rule);
            }
        }
        for f in &ask.files {
            self.create_source(phase, f)?;
        }

        let grant = Grant::resolve(phase.as_str(), manifest, policy, &ask, self.job_dir)
            .map_err(|e| JobError::Grant { job: job(), phase, source: Box::new(e) })?;
        // The same check, in the same words, as the sandbox makes before the phase runs.
        plugin.check_imports(phase.as_str(), grant.linked()).map_err(|e| JobError::PluginNeedsGrant {
            job: job(),
            phase,
            source: Box::new(e),
        })?;
        let timeouts = phase_timeouts(self.spec, phase, block, &policy.limits);
        let input = PhaseInput {
            phase: phase.as_str().to_owned(),
            job_id: self.job_id.to_owned(),
            data_json: phase_data(self.json, phase),
            dut: self.runner.dut.plugin_facts(),
        };
        let secrets = ask.secrets.clone();
        Ok(PhaseAction::Run(Box::new(PhaseRun { plugin, grant, input, timeouts, secrets })))
    }

    /// The HTTP origins `plugin`'s manifest derives (`[[derive.http]]`) from `phase`'s data,
    /// e.g. the image URL of `provision_data.url` or the key servers of `reserve_data.ssh_keys`.
    fn derived_origins(&self, phase: Phase, plugin: &Plugin) -> Vec<Origin> {
        let rules = &plugin.manifest().derive.http;
        let Some(data) = phase.data_key().and_then(|k| self.json.get(k)) else { return Vec::new() };
        let facts = if rules.is_empty() { Vec::new() } else { self.runner.dut.plugin_facts() };
        let mut origins = Vec::new();
        for rule in rules {
            let found = rule.from.iter().try_fold(data, |v, key| v.get(key));
            let data: Vec<&str> = match found {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            origins.extend(data.into_iter().filter_map(|d| rule.origin(d, &facts)));
        }
        origins
    }

    /// Creates the job-directory subtree a mount names, so that the grant can be resolved
    /// before anything is unpacked into it. Sources under `attachments/` are remembered: the
    /// archive replaces that tree, and they are created again (empty) if it lacks them.
    fn create_source(&mut self, phase: Phase, f: &FileRequest) -> Result<(), JobError> {
        let rel = Path::new(&f.source);
        // The sandbox refuses such sources with a precise message; only never create them.
        if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Ok(());
        }
        let full = self.job_dir.join(rel);
        if rel.starts_with(ATTACHMENTS_DIR) {
            self.attachment_sources.push(rel.to_owned());
        }
        std::fs::create_dir_all(&full).map_err(|source| JobError::JobDir {
            job: format!("{} (phase {phase})", self.job_id),
            path: full.clone(),
            source,
        })
    }
}

/// The job's `<phase>_data.phasebox` block as the sandbox's grant request: its `grants`, parsed
/// when the job was read, and the `secrets` it declares.
fn request(block: Option<&PhaseboxBlock>) -> GrantRequest {
    let Some(block) = block else { return GrantRequest::default() };
    let mut ask = block.grants.clone().unwrap_or_default();
    ask.secrets = block.secrets.clone().unwrap_or_default();
    ask
}

/// `<phase>_data` as the plugin sees it: the job's JSON for the section, without its
/// `phasebox` block (which is for the engine); `{}` for setup and cleanup.
fn phase_data(json: &Value, phase: Phase) -> String {
    let Some(mut data) = phase.data_key().and_then(|k| json.get(k)).cloned() else {
        return "{}".into();
    };
    if let Value::Object(map) = &mut data {
        map.remove("phasebox");
    }
    data.to_string()
}

fn prepare_job_dir(job: &str, dir: &Path) -> Result<(), JobError> {
    let err = |path: &Path, source| JobError::JobDir { job: job.to_owned(), path: path.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let mut entries = std::fs::read_dir(dir).map_err(|e| err(dir, e))?;
    if entries.next().is_some() {
        return Err(err(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::DirectoryNotEmpty,
                "a job needs a new or empty directory (Testflinger gives each job a fresh rundir)",
            ),
        ));
    }
    let artifacts = dir.join(ARTIFACTS_DIR);
    std::fs::create_dir(&artifacts).map_err(|e| err(&artifacts, e))
}

/// A random (version 4) UUID for a job that has no id.
fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_uuid_v4() {
        let id = new_job_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, new_job_id());
    }

    #[test]
    fn phase_data_drops_the_phasebox_block() {
        let spec = JobSpec::from_yaml(
            "job_queue: q\ntest_data:\n  test_cmds: echo hi\n  phasebox: {timeout: 60}\nallocate_data: {allocate: true}\n",
        )
        .unwrap();
        let json = spec.to_json();
        assert_eq!(phase_data(&json, Phase::Test), r#"{"test_cmds":"echo hi"}"#);
        assert_eq!(phase_data(&json, Phase::Allocate), r#"{"allocate":true}"#);
        assert_eq!(phase_data(&json, Phase::Setup), "{}");
    }

    #[test]
    fn grant_requests_convert() {
        let spec = JobSpec::from_yaml(
            "job_queue: q\ntest_data:\n  test_cmds: x\n  secrets: {TOKEN: lab/token}\n  phasebox:\n    secrets: [TOKEN]\n    grants:\n      files: [{path: /scratch, source: scratch, access: rw}]\n      network: {connect: ['example.com:443', '10.1.0.0/16:22', 'dut:*'], udp: true}\n      http: ['https://example.com:443']\n      dns: [example.com]\n      env: {A: b}\n",
        )
        .unwrap();
        let ask = request(spec.phasebox(Phase::Test));
        assert_eq!(ask.secrets, ["TOKEN"]);
        assert_eq!(ask.files[0].source, "scratch");
        assert_eq!(ask.files[0].access, Access::Rw);
        assert_eq!(ask.network.connect.len(), 3);
        assert!(ask.network.udp && !ask.network.bind);
        assert_eq!(ask.http.len(), 1);
        assert_eq!(ask.dns.len(), 1);
        assert_eq!(ask.env["A"], "b");
    }
}
