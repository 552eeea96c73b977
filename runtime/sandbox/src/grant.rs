//! Grants: what a phase may touch.
//!
//! Three parties write three documents in the same vocabulary ([`Capabilities`]):
//!
//! - the plugin's manifest declares what the plugin may ask for (patterns, `*` allowed);
//! - the operator's [`Policy`] for a queue says what a job there may be granted at most;
//! - the job's [`GrantRequest`] for a phase asks for concrete things.
//!
//! [`Grant::resolve`] intersects them: a request is granted only when both the manifest and the
//! policy cover it, and anything the job asks for that either one does not cover is refused with
//! an error naming it, before the phase runs. Everything is denied by default: an empty
//! document grants nothing (but `log`). Each capability module decides its own part (`files`,
//! `network`, `http`, secrets in `host`) through `Documents`; this module composes them.
//!
//! Interfaces are linked per capability kind ([`Capability`]): a plugin may import an
//! interface only when its manifest declares that kind and the policy allows it; the job's
//! request then decides what the interface reaches (which names, addresses, secrets).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use phasebox_grants::GrantRequest;
use serde::{Deserialize, Serialize};

pub use crate::capability::{Capabilities, Capability, Linked};
use crate::error::SandboxError;
pub use crate::files::Mount;
pub use crate::limits::Limits;
use crate::network::NetworkPolicy;

/// The operator's policy for a queue: what a job there may be granted at most, what every
/// phase gets in its environment, and the largest limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The most a job may be granted.
    #[serde(default)]
    pub allow: Capabilities,
    /// Environment variables every phase receives (when its plugin declares `env`). They win
    /// over a job's variables of the same name; a job may set its own only when `allow.env`
    /// is true.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The largest limits a job may ask for; also the defaults.
    #[serde(default)]
    pub limits: Limits,
}

/// The two documents a job's request is checked against, for one phase: each capability
/// module's `grant` asks them whether they cover what the job asks for.
pub(crate) struct Documents<'a> {
    pub(crate) phase: &'a str,
    pub(crate) plugin: &'a Capabilities,
    pub(crate) allow: &'a Capabilities,
}

impl Documents<'_> {
    /// `Ok` when the plugin's manifest and the operator's policy both cover the request (each
    /// asked through `covers`); otherwise the refusal naming `what` and the first that does not.
    pub(crate) fn require(
        &self,
        what: impl Fn() -> String,
        covers: impl Fn(&Capabilities) -> bool,
    ) -> Result<(), SandboxError> {
        for (doc, refused_by) in [(self.plugin, "the plugin's manifest"), (self.allow, "the operator's policy")] {
            if !covers(doc) {
                return Err(SandboxError::GrantRefused {
                    phase: self.phase.to_owned(),
                    what: what(),
                    refused_by: refused_by.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The refusal of a request that names a blocked range the policy does not name.
    pub(crate) fn blocked_range_not_named(&self, what: String) -> SandboxError {
        SandboxError::BlockedRangeNotNamed { phase: self.phase.to_owned(), what }
    }
}

/// A phase's effective grant: what it may touch, fully resolved. Built by [`Grant::resolve`];
/// its fields can be read but not widened.
#[derive(Clone, Debug)]
pub struct Grant {
    pub(crate) linked: Linked,
    pub(crate) secrets: BTreeSet<String>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) network: Arc<NetworkPolicy>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) args: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) device: Option<DeviceHandle>,
}

/// The job's device under test, as a grant carries it.
#[derive(Clone)]
pub struct DeviceHandle(pub(crate) Arc<dyn crate::device::Dut>);

impl std::fmt::Debug for DeviceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // How the device is reached is the operator's secret; the grant only says it has one.
        f.write_str("DeviceHandle")
    }
}

impl Grant {
    /// Intersects the plugin's manifest, the operator's policy and the job's request for
    /// `phase`. `job_dir` is the job's directory; every `files` source must lie inside it.
    pub fn resolve(
        phase: &str,
        plugin: &Capabilities,
        policy: &Policy,
        ask: &GrantRequest,
        job_dir: &Path,
    ) -> Result<Self, SandboxError> {
        let allow = &policy.allow;
        let docs = Documents { phase, plugin, allow };
        let linked = Linked::new(plugin, allow);
        let secrets = crate::host::grant_secrets(&docs, &ask.secrets)?;
        let mounts = crate::files::grant(&docs, &ask.files, job_dir)?;
        let http = crate::http::grant(&docs, &ask.http)?;
        let network = crate::network::grant(&docs, &ask.network, &ask.dns, http)?;

        if !ask.env.is_empty() {
            let names =
                || format!("environment variables ({})", ask.env.keys().cloned().collect::<Vec<_>>().join(", "));
            docs.require(names, |d| d.env)?;
        }
        let mut env = Vec::new();
        if plugin.env {
            // The operator's variables win over the job's.
            let mut merged = ask.env.clone();
            merged.extend(policy.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            env.extend(merged);
        }

        let limits = policy.limits.clone();

        Ok(Self { linked, secrets, mounts, network, env, args: vec![phase.to_owned()], limits, device: None })
    }

    /// The interface kinds this grant links.
    pub fn interfaces(&self) -> impl Iterator<Item = Capability> + '_ {
        self.linked.iter()
    }

    /// Which interface kinds this grant links, and why the others are not.
    pub fn linked(&self) -> &Linked {
        &self.linked
    }

    /// The HTTP origins the phase may reach.
    pub fn http_origins(&self) -> &[phasebox_grants::Origin] {
        self.network.http_origins()
    }

    /// The secret names the phase may read.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(String::as_str)
    }

    /// The mounted directories.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The phase's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Narrows the limits (the job engine shortens the timeout to what is left of the job's):
    /// each limit becomes the stricter of the grant's and `limits`', so this never widens what
    /// the policy allowed.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = self.limits.min(&limits);
    }

    /// Gives the phase the job's device under test. Its handles (`power`, `console`, `exec`,
    /// `flash`) are reachable only when this grant also links the interface; without a device,
    /// each call fails with `not-configured`.
    pub fn set_device(&mut self, device: Arc<dyn crate::device::Dut>) {
        self.device = Some(DeviceHandle(device));
    }

    /// Why a capability kind is not linked, or `None` when it is.
    pub fn refusal(&self, cap: Capability) -> Option<String> {
        self.linked.refusal(cap).map(|r| r.to_string())
    }

    pub(crate) fn network(&self) -> &Arc<NetworkPolicy> {
        &self.network
    }
}

#[cfg(test)]
mod tests {
    use phasebox_grants::Endpoint;

    use super::*;

    fn caps(toml_text: &str) -> Capabilities {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn empty_documents_grant_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let g =
            Grant::resolve("test", &Capabilities::default(), &Policy::default(), &GrantRequest::default(), dir.path())
                .unwrap();
        let linked: Vec<_> = g.interfaces().collect();
        assert_eq!(linked, [Capability::Basic, Capability::Log, Capability::Files]);
        assert!(g.mounts().is_empty() && g.secrets.is_empty() && g.env.is_empty());
        assert!(!g.network.has_sockets() && !g.network.has_dns() && !g.network.has_http() && !g.network.has_udp());
        assert!(g.refusal(Capability::Secrets).unwrap().contains("manifest"));
    }

    #[test]
    fn a_request_needs_both_manifest_and_policy() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = caps(r#"network = { connect = ["*.example.com:443"] }"#);
        let policy = Policy { allow: caps(r#"network = { connect = ["api.example.com:*"] }"#), ..Policy::default() };
        let mut ask = GrantRequest::default();
        ask.network.connect = vec![Endpoint::parse("api.example.com:443").unwrap()];
        assert!(Grant::resolve("test", &plugin, &policy, &ask, dir.path()).is_ok());

        ask.network.connect = vec![Endpoint::parse("api.example.com:80").unwrap()];
        let err = Grant::resolve("test", &plugin, &policy, &ask, dir.path()).unwrap_err().to_string();
        assert!(err.contains("api.example.com:80") && err.contains("plugin's manifest"), "{err}");

        ask.network.connect = vec![Endpoint::parse("www.example.com:443").unwrap()];
        let err = Grant::resolve("test", &plugin, &policy, &ask, dir.path()).unwrap_err().to_string();
        assert!(err.contains("operator's policy"), "{err}");
    }

    #[test]
    fn secrets_intersect_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = caps(r#"secrets = ["*"]"#);
        let policy = Policy { allow: caps(r#"secrets = ["API_TOKEN"]"#), ..Policy::default() };
        let ask = GrantRequest { secrets: vec!["API_TOKEN".into()], ..Default::default() };
        let g = Grant::resolve("test", &plugin, &policy, &ask, dir.path()).unwrap();
        assert_eq!(g.secret_names().collect::<Vec<_>>(), ["API_TOKEN"]);
        let ask = GrantRequest { secrets: vec!["OTHER".into()], ..Default::default() };
        assert!(Grant::resolve("test", &plugin, &policy, &ask, dir.path()).is_err());
    }

    #[test]
    fn env_needs_the_plugin_to_declare_it() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy {
            allow: Capabilities::everything(),
            env: [("LAB".into(), "x".into())].into(),
            ..Default::default()
        };
        let ask = GrantRequest { env: [("A".into(), "1".into())].into(), ..Default::default() };
        let g = Grant::resolve("test", &caps("env = true"), &policy, &ask, dir.path()).unwrap();
        assert_eq!(g.env, [("A".to_string(), "1".to_string()), ("LAB".to_string(), "x".to_string())]);
        assert!(Grant::resolve("test", &caps(""), &policy, &ask, dir.path()).is_err());
    }

    #[test]
    fn job_env_needs_the_policy_and_never_overrides_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let mut policy = Policy {
            allow: Capabilities { env: false, ..Capabilities::everything() },
            env: [("LAB".into(), "operator".into())].into(),
            ..Default::default()
        };
        let plugin = caps("env = true");
        // Without `allow.env` the job may not set variables; the operator's still arrive.
        let ask = GrantRequest { env: [("A".into(), "1".into())].into(), ..Default::default() };
        let err = Grant::resolve("test", &plugin, &policy, &ask, dir.path()).unwrap_err().to_string();
        assert!(err.contains("environment variables (A)") && err.contains("operator's policy"), "{err}");
        let g = Grant::resolve("test", &plugin, &policy, &GrantRequest::default(), dir.path()).unwrap();
        assert_eq!(g.env, [("LAB".to_string(), "operator".to_string())]);
        // With it, the job's variables join the operator's, which win a clash.
        policy.allow.env = true;
        let ask =
            GrantRequest { env: [("LAB".into(), "job".into()), ("A".into(), "1".into())].into(), ..Default::default() };
        let g = Grant::resolve("test", &plugin, &policy, &ask, dir.path()).unwrap();
        assert_eq!(g.env, [("A".to_string(), "1".to_string()), ("LAB".to_string(), "operator".to_string())]);
    }

    #[test]
    fn set_limits_never_widens_the_policys_limits() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy {
            allow: Capabilities::everything(),
            limits: Limits { memory: 64 << 20, timeout: std::time::Duration::from_secs(60), ..Limits::default() },
            ..Policy::default()
        };
        let mut g =
            Grant::resolve("test", &Capabilities::everything(), &policy, &GrantRequest::default(), dir.path()).unwrap();
        // The engine passes the job's remaining time with otherwise default (larger) limits.
        g.set_limits(Limits { timeout: std::time::Duration::from_secs(30), ..Limits::default() });
        assert_eq!(g.limits().memory, 64 << 20, "the policy's memory limit stays");
        assert_eq!(g.limits().timeout, std::time::Duration::from_secs(30), "a shorter timeout narrows");
        g.set_limits(Limits::default());
        assert_eq!(g.limits().timeout, std::time::Duration::from_secs(30), "a longer one does not widen");
    }
}
