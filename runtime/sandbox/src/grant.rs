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
//! document grants nothing.
//!
//! Interfaces are linked per capability kind ([`Capability`]): a plugin may import an
//! interface only when its manifest declares that kind and the policy allows it; the job's
//! request then decides what the interface reaches (which names, addresses, secrets).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use phasebox_grants::{Access, GrantRequest, Host};
use serde::{Deserialize, Serialize};

pub use crate::capability::{Capabilities, Capability, Linked};
use crate::error::SandboxError;
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

/// One directory mounted into the guest. It is named, not opened: a phase opens it when it
/// starts, beneath `job_dir` and without following any link (see [`Mount::host`]), because
/// what the subtree holds may have changed since the grant was resolved (an earlier phase
/// writes to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where the guest sees it.
    pub guest: String,
    /// The job directory the source lies in.
    pub job_dir: PathBuf,
    /// The subtree of the job directory: one or more plain names, no `.`, `..` or root.
    pub source: PathBuf,
    /// Its access.
    pub access: Access,
}

impl Mount {
    /// The directory on the host, for messages. Never open it by this path: a component may
    /// have been replaced by a symlink; the sandbox opens each component without following one.
    pub fn host(&self) -> PathBuf {
        self.job_dir.join(&self.source)
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
        let refuse = |what: String, by_plugin: bool| SandboxError::GrantRefused {
            phase: phase.to_owned(),
            what,
            refused_by: if by_plugin { "the plugin's manifest" } else { "the operator's policy" }.to_owned(),
        };
        let allow = &policy.allow;

        let linked = Linked::new(plugin, allow);

        let mut secrets = BTreeSet::new();
        for name in &ask.secrets {
            if !plugin.allows_secret(name) {
                return Err(refuse(format!("secret {name}"), true));
            }
            if !allow.allows_secret(name) {
                return Err(refuse(format!("secret {name}"), false));
            }
            secrets.insert(name.clone());
        }

        let mut mounts = Vec::new();
        for f in &ask.files {
            let what = format!("files {} ({}, {:?})", f.path, f.source, f.access);
            if !plugin.files.iter().any(|r| r.covers(f)) {
                return Err(refuse(what, true));
            }
            if !allow.files.iter().any(|r| r.covers(f)) {
                return Err(refuse(what, false));
            }
            let (job_dir, source) = mount_source(phase, &f.path, job_dir, &f.source)?;
            mounts.push(Mount { guest: f.path.clone(), job_dir, source, access: f.access });
        }

        // A blocked range opens only where the operator's policy itself names a network inside
        // it; `*` or `0.0.0.0/0` in the policy covers the request but names nothing.
        let unnamed_blocked = |what: String| SandboxError::BlockedRangeNotNamed { phase: phase.to_owned(), what };
        for e in &ask.network.connect {
            if !plugin.network.connect.iter().any(|p| p.covers(e)) {
                return Err(refuse(format!("network connect {e}"), true));
            }
            if !allow.network.connect.iter().any(|p| p.covers(e)) {
                return Err(refuse(format!("network connect {e}"), false));
            }
            if e.host.names_blocked() && !allow.network.connect.iter().any(|p| p.covers(e) && p.host.names_blocked()) {
                return Err(unnamed_blocked(format!("network connect {e}")));
            }
        }
        for (flag, name, p, a) in [
            (ask.network.bind, "network bind", plugin.network.bind, allow.network.bind),
            (ask.network.udp, "network udp", plugin.network.udp, allow.network.udp),
        ] {
            if flag && !p {
                return Err(refuse(name.into(), true));
            }
            if flag && !a {
                return Err(refuse(name.into(), false));
            }
        }
        for o in &ask.http {
            if !plugin.http.iter().any(|p| p.covers(o)) {
                return Err(refuse(format!("http {o}"), true));
            }
            if !allow.http.iter().any(|p| p.covers(o)) {
                return Err(refuse(format!("http {o}"), false));
            }
            if o.host.names_blocked() && !allow.http.iter().any(|p| p.covers(o) && p.endpoint.host.names_blocked()) {
                return Err(unnamed_blocked(format!("http {o}")));
            }
        }
        for d in &ask.dns {
            let host = Host::Name(d.clone());
            if !plugin.dns.iter().any(|p| p.covers(&host)) {
                return Err(refuse(format!("dns {d}"), true));
            }
            if !allow.dns.iter().any(|p| p.covers(&host)) {
                return Err(refuse(format!("dns {d}"), false));
            }
        }
        let network = NetworkPolicy::new(
            ask.network.connect.clone(),
            ask.network.bind,
            ask.network.udp,
            ask.dns.clone(),
            ask.http.clone(),
        );

        if !ask.env.is_empty() {
            let names = ask.env.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            if !plugin.env {
                return Err(refuse(format!("environment variables ({names})"), true));
            }
            if !allow.env {
                return Err(refuse(format!("environment variables ({names})"), false));
            }
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

/// Checks a files `source`: plain names only (no `.`, `..`, empty component or root, so never
/// the whole job directory), naming a directory inside `job_dir` that can be reached without
/// following any link. Returns the job directory (canonical: it is the operator's path) and
/// the source as a relative path. The phase opens it again, the same way, when it starts.
fn mount_source(phase: &str, guest: &str, job_dir: &Path, source: &str) -> Result<(PathBuf, PathBuf), SandboxError> {
    let bad = |reason: String| SandboxError::BadMount { phase: phase.to_owned(), guest: guest.to_owned(), reason };
    if !guest.starts_with('/') {
        return Err(bad("the guest path must be absolute, e.g. `/attachments`".into()));
    }
    // Split by hand: `Path::components` drops `.` and empty components, so `./` or `a/./b` would
    // pass for something they are not written as.
    if source.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad(format!(
            "source `{source}` must name a subtree of the job directory by plain names (e.g. `artifacts` \
             or `attachments/test`): no `.`, `..`, empty or absolute components, and never the whole job \
             directory"
        )));
    }
    let root = job_dir.canonicalize().map_err(|e| bad(format!("job directory {}: {e}", job_dir.display())))?;
    let rel = PathBuf::from(source);
    crate::files::open_beneath(&root, &rel).map_err(|e| bad(format!("source `{source}`: {e}")))?;
    Ok((root, rel))
}

#[cfg(test)]
mod tests {
    use phasebox_grants::{Endpoint, EndpointPattern, FileRequest, FileRule, NetworkRule, Origin, OriginPattern};

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
    fn mounts_stay_inside_the_job_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("job/attachments/test")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("job/link")).unwrap();
        let job = dir.path().join("job");
        let everything = Capabilities::everything();
        let policy = Policy {
            allow: Capabilities {
                files: vec![FileRule { path: "*".into(), source: Some("attachments".into()), access: Access::Ro }],
                ..Capabilities::default()
            },
            ..Policy::default()
        };
        // Built directly, past the grammar's checks: the sandbox checks the source again.
        let ask = |source: &str, access| GrantRequest {
            files: vec![FileRequest { path: "/attachments".into(), source: source.into(), access }],
            ..Default::default()
        };
        let g = Grant::resolve("test", &everything, &policy, &ask("attachments/test", Access::Ro), &job).unwrap();
        assert_eq!(g.mounts()[0].host(), job.canonicalize().unwrap().join("attachments/test"));
        // read-write is more than the policy allows
        assert!(Grant::resolve("test", &everything, &policy, &ask("attachments/test", Access::Rw), &job).is_err());
        let open = Policy { allow: everything.clone(), ..Policy::default() };
        for bad in ["../outside", "/etc", "link", "attachments/../../outside", "missing"] {
            let err = Grant::resolve("test", &everything, &open, &ask(bad, Access::Ro), &job).unwrap_err();
            assert!(matches!(err, SandboxError::BadMount { .. }), "{bad}: {err}");
        }
        // A link is refused even when it stays inside: mounts never follow one.
        std::os::unix::fs::symlink("attachments", job.join("inner-link")).unwrap();
        let err = Grant::resolve("test", &everything, &open, &ask("inner-link/test", Access::Ro), &job).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn the_whole_job_directory_is_never_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let open = Policy { allow: Capabilities::everything(), ..Policy::default() };
        for source in [".", "./", "a/..", "", "a/./b", "a//b", "a/b/", "./a"] {
            let ask = GrantRequest {
                files: vec![FileRequest { path: "/job".into(), source: source.into(), access: Access::Rw }],
                ..Default::default()
            };
            let err = Grant::resolve("setup", &Capabilities::everything(), &open, &ask, dir.path()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, SandboxError::BadMount { .. }), "{source:?}: {text}");
            assert!(text.contains("phase setup") && text.contains("/job") && text.contains("plain names"), "{text}");
        }
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
    fn only_a_policy_that_names_a_blocked_range_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = Capabilities::everything();
        let allowing = |endpoints: &[&str], origins: &[&str]| Policy {
            allow: Capabilities {
                network: NetworkRule {
                    connect: endpoints.iter().map(|e| EndpointPattern::parse(e).unwrap()).collect(),
                    ..NetworkRule::default()
                },
                http: origins.iter().map(|o| OriginPattern::parse(o).unwrap()).collect(),
                ..Capabilities::default()
            },
            ..Policy::default()
        };
        let asking = |endpoint: &str| {
            let mut ask = GrantRequest::default();
            ask.network.connect = vec![Endpoint::parse(endpoint).unwrap()];
            ask
        };
        let asking_http =
            |origin: &str| GrantRequest { http: vec![Origin::parse(origin).unwrap()], ..Default::default() };
        for broad in [&["*"][..], &["0.0.0.0/0", "[::/0]"], &["0.0.0.0/0:*", "[::/0]:*"]] {
            let policy = allowing(broad, &["*", "http://*:*", "https://*:*"]);
            for named in [
                "127.0.0.1:8080",
                "127.0.0.0/8",
                "[::1]:22",
                "169.254.169.254:80",
                "10.1.0.0/16:22",
                "[::ffff:127.0.0.1]:80",
            ] {
                let err = Grant::resolve("test", &plugin, &policy, &asking(named), dir.path()).unwrap_err();
                assert!(matches!(err, SandboxError::BlockedRangeNotNamed { .. }), "{broad:?} {named}: {err}");
            }
            for origin in ["http://127.0.0.1:8080", "http://169.254.169.254", "https://[::1]:443"] {
                let err = Grant::resolve("test", &plugin, &policy, &asking_http(origin), dir.path()).unwrap_err();
                assert!(matches!(err, SandboxError::BlockedRangeNotNamed { .. }), "{broad:?} {origin}: {err}");
            }
            // What a broad policy covers and names nothing blocked stays grantable.
            assert!(Grant::resolve("test", &plugin, &policy, &asking("93.184.216.34:443"), dir.path()).is_ok());
            assert!(Grant::resolve("test", &plugin, &policy, &asking("0.0.0.0/0:443"), dir.path()).is_ok());
        }
        let policy = allowing(&["127.0.0.0/8", "10.0.0.0/8:22"], &["http://127.0.0.1:8080"]);
        for named in ["127.0.0.1:8080", "10.1.0.0/16:22"] {
            assert!(Grant::resolve("test", &plugin, &policy, &asking(named), dir.path()).is_ok(), "{named}");
        }
        assert!(Grant::resolve("test", &plugin, &policy, &asking_http("http://127.0.0.1:8080"), dir.path()).is_ok());
        let policy = allowing(&["127.0.0.1:8080"], &[]);
        assert!(Grant::resolve("test", &plugin, &policy, &asking("127.0.0.1:8080"), dir.path()).is_ok());
        assert!(Grant::resolve("test", &plugin, &policy, &asking("127.0.0.1:8081"), dir.path()).is_err());
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
