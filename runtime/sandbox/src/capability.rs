//! Capability kinds: which interfaces a plugin may import, decided from its manifest and the
//! operator's policy alone, and the one check of a component's imports against that decision.
//!
//! [`Linked`] is the decision (manifest ∩ policy, per [`Capability`]); [`check_imports`] is the
//! check, with one wording, that the planner runs when a job is planned, the sandbox runs before
//! a phase's guest code does, and `phasebox plugin check` runs without any job.

use std::collections::BTreeMap;
use std::fmt;

use phasebox_grants::{EndpointPattern, FileRule, HostPattern, NetworkRule, OriginPattern};
use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// A kind of capability; each one links a set of interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `phasebox:plugin/log`. Declared by default (`log = true`); a manifest or policy that sets
    /// `log = false` leaves it unlinked. Log lines go through the redactor like output.
    Log,
    /// `phasebox:plugin/results`.
    Results,
    /// `phasebox:plugin/secrets`.
    Secrets,
    /// `wasi:filesystem/*`. Always linked (libc imports it unconditionally); only granted
    /// directories are preopened.
    Files,
    /// `wasi:sockets/*`.
    Network,
    /// `wasi:http/*`.
    Http,
    /// `phasebox:plugin/power` of the job's device.
    Power,
    /// `phasebox:plugin/console` of the job's device.
    Console,
    /// `phasebox:plugin/exec` on the job's device.
    Exec,
    /// `phasebox:plugin/flash` of the job's device.
    Flash,
    /// `wasi:cli`, `wasi:clocks`, `wasi:random`, `wasi:io` and `phasebox:plugin/types`: the
    /// basics every guest needs.
    Basic,
}

impl Capability {
    /// Every kind, in the order a grant lists them.
    pub const ALL: [Capability; 11] = [
        Self::Basic,
        Self::Log,
        Self::Files,
        Self::Results,
        Self::Secrets,
        Self::Network,
        Self::Http,
        Self::Power,
        Self::Console,
        Self::Exec,
        Self::Flash,
    ];

    /// The name used in manifests, policies and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Results => "results",
            Self::Secrets => "secrets",
            Self::Files => "files",
            Self::Network => "network",
            Self::Http => "http",
            Self::Power => "power",
            Self::Console => "console",
            Self::Exec => "exec",
            Self::Flash => "flash",
            Self::Basic => "basic",
        }
    }

    /// Which capability an imported interface (`namespace:package/interface@version`) needs,
    /// or `None` when phasebox does not provide it.
    pub fn for_import(import: &str) -> Option<Self> {
        let name = import.split('@').next().unwrap_or(import);
        let (package, _iface) = name.split_once('/').unwrap_or((name, ""));
        Some(match package {
            "wasi:cli" | "wasi:clocks" | "wasi:random" | "wasi:io" => Self::Basic,
            "wasi:filesystem" => Self::Files,
            "wasi:sockets" => Self::Network,
            "wasi:http" => Self::Http,
            "phasebox:plugin" => match name {
                "phasebox:plugin/types" => Self::Basic,
                "phasebox:plugin/log" => Self::Log,
                "phasebox:plugin/results" => Self::Results,
                "phasebox:plugin/secrets" => Self::Secrets,
                "phasebox:plugin/power" => Self::Power,
                "phasebox:plugin/console" => Self::Console,
                "phasebox:plugin/exec" => Self::Exec,
                "phasebox:plugin/flash" => Self::Flash,
                _ => return None,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a plugin declares or a policy allows, in one vocabulary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// May write log lines through `phasebox:plugin/log`. On unless a document turns it off.
    #[serde(default = "yes")]
    pub log: bool,
    /// May report test cases and measurements.
    #[serde(default)]
    pub results: bool,
    /// Secret names that may be read; `*` for any name the job declares.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Directories that may be mounted.
    #[serde(default)]
    pub files: Vec<FileRule>,
    /// Sockets.
    #[serde(default)]
    pub network: NetworkRule,
    /// HTTP origins that may be requested through wasi-http.
    #[serde(default)]
    pub http: Vec<OriginPattern>,
    /// Names that may be resolved.
    #[serde(default)]
    pub dns: Vec<HostPattern>,
    /// In a manifest: may receive environment variables (the operator's, and the job's where
    /// allowed). In a policy: a job may set environment variables of its own.
    #[serde(default)]
    pub env: bool,
    /// May switch the job's device on and off.
    #[serde(default)]
    pub power: bool,
    /// May use the job's device's serial console.
    #[serde(default)]
    pub console: bool,
    /// May run commands on the job's device.
    #[serde(default)]
    pub exec: bool,
    /// May write images to the job's device's storage.
    #[serde(default)]
    pub flash: bool,
}

fn yes() -> bool {
    true
}

/// Nothing but `log`, as a document that names nothing reads.
impl Default for Capabilities {
    fn default() -> Self {
        Self {
            log: true,
            results: false,
            secrets: Vec::new(),
            files: Vec::new(),
            network: NetworkRule::default(),
            http: Vec::new(),
            dns: Vec::new(),
            env: false,
            power: false,
            console: false,
            exec: false,
            flash: false,
        }
    }
}

impl Capabilities {
    /// A document that allows everything; for an operator who trusts every job on a queue, and
    /// for tests.
    pub fn everything() -> Self {
        Self {
            log: true,
            results: true,
            secrets: vec!["*".into()],
            files: vec![FileRule::any()],
            network: NetworkRule { connect: vec![EndpointPattern::ANY], bind: true, udp: true },
            http: vec![OriginPattern::ANY],
            dns: vec![HostPattern::Any],
            env: true,
            power: true,
            console: true,
            exec: true,
            flash: true,
        }
    }

    /// [`everything`](Self::everything), and loopback named (`127.0.0.0/8` and `[::1]` for
    /// sockets, `127.0.0.1` and `[::1]` for HTTP), so that a job may ask for a server on this machine by
    /// address: `*` alone never opens loopback. For local runs and tests.
    pub fn everything_and_loopback() -> Self {
        let mut all = Self::everything();
        for net in ["127.0.0.0/8", "[::1]"] {
            all.network.connect.push(EndpointPattern::parse(net).expect("valid"));
        }
        // An origin names one host, not a network.
        for host in ["127.0.0.1", "[::1]"] {
            all.http.push(OriginPattern::parse(&format!("*://{host}:*")).expect("valid"));
        }
        all
    }

    /// Whether this document declares (or allows) a capability kind at all.
    pub fn has(&self, cap: Capability) -> bool {
        match cap {
            Capability::Basic | Capability::Files => true,
            Capability::Log => self.log,
            Capability::Results => self.results,
            Capability::Secrets => !self.secrets.is_empty(),
            Capability::Network => !self.network.connect.is_empty() || self.network.bind || self.network.udp,
            Capability::Http => !self.http.is_empty(),
            Capability::Power => self.power,
            Capability::Console => self.console,
            Capability::Exec => self.exec,
            Capability::Flash => self.flash,
        }
    }

    pub(crate) fn allows_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == "*" || s == name)
    }
}

/// Which of the two documents left a capability kind out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The plugin's manifest does not declare it.
    NotDeclared(Capability),
    /// The operator's policy does not allow it.
    NotAllowed(Capability),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDeclared(cap) => write!(f, "the plugin's manifest does not declare `{cap}`"),
            Self::NotAllowed(cap) => write!(f, "the operator's policy does not allow `{cap}`"),
        }
    }
}

/// Which capability kinds a plugin's interfaces link under a policy: those its manifest declares
/// and the policy allows. Needs no job and no engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linked {
    refusals: BTreeMap<Capability, Refusal>,
}

impl Linked {
    /// Decides each kind: linked when `plugin` declares it and `allow` allows it.
    pub fn new(plugin: &Capabilities, allow: &Capabilities) -> Self {
        let refusals = Capability::ALL
            .into_iter()
            .filter_map(|cap| {
                let refusal = if !plugin.has(cap) {
                    Refusal::NotDeclared(cap)
                } else if !allow.has(cap) {
                    Refusal::NotAllowed(cap)
                } else {
                    return None;
                };
                Some((cap, refusal))
            })
            .collect();
        Self { refusals }
    }

    /// Whether `cap`'s interfaces are linked.
    pub fn contains(&self, cap: Capability) -> bool {
        !self.refusals.contains_key(&cap)
    }

    /// The linked kinds, in [`Capability::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        Capability::ALL.into_iter().filter(|c| self.contains(*c))
    }

    /// Why `cap` is not linked, or `None` when it is.
    pub fn refusal(&self, cap: Capability) -> Option<Refusal> {
        self.refusals.get(&cap).copied()
    }
}

/// Refuses a component whose imports need a capability kind `linked` leaves out, naming the
/// first such import, the kind and which document left it out. `imports` are the component's
/// imported interfaces (`namespace:package/interface@version`); one phasebox does not provide
/// at all is refused too.
pub fn check_imports<'a>(
    plugin: &str,
    phase: &str,
    imports: impl IntoIterator<Item = &'a str>,
    linked: &Linked,
) -> Result<(), SandboxError> {
    for import in imports {
        let Some(cap) = Capability::for_import(import) else {
            return Err(SandboxError::UnknownImport { plugin: plugin.to_owned(), import: import.to_owned() });
        };
        if let Some(refusal) = linked.refusal(cap) {
            return Err(SandboxError::MissingGrant {
                plugin: plugin.to_owned(),
                phase: phase.to_owned(),
                import: import.to_owned(),
                grant: cap.name().to_owned(),
                why: refusal.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(toml_text: &str) -> Capabilities {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn imports_map_to_capabilities() {
        assert_eq!(Capability::for_import("wasi:sockets/tcp@0.2.6"), Some(Capability::Network));
        assert_eq!(Capability::for_import("wasi:http/outgoing-handler@0.2.0"), Some(Capability::Http));
        assert_eq!(Capability::for_import("phasebox:plugin/secrets@0.1.0"), Some(Capability::Secrets));
        assert_eq!(Capability::for_import("phasebox:plugin/types@0.1.0"), Some(Capability::Basic));
        assert_eq!(Capability::for_import("wasi:cli/environment@0.2.12"), Some(Capability::Basic));
        assert_eq!(Capability::for_import("evil:thing/x"), None);
    }

    #[test]
    fn one_check_names_the_import_the_kind_and_the_document() {
        let plugin = caps("exec = true\nresults = true");
        let imports = ["wasi:cli/environment@0.2.12", "phasebox:plugin/results@0.1.0", "phasebox:plugin/exec@0.1.0"];
        let everything = Capabilities::everything();
        assert!(check_imports("p", "test", imports, &Linked::new(&plugin, &everything)).is_ok());

        // Device handles are checked like every other kind.
        let no_exec = Capabilities { exec: false, ..Capabilities::everything() };
        let err = check_imports("p", "test", imports, &Linked::new(&plugin, &no_exec)).unwrap_err().to_string();
        assert_eq!(
            err,
            "plugin p imports `phasebox:plugin/exec@0.1.0`, which needs the `exec` grant; the effective grant for \
             phase test does not include it (the operator's policy does not allow `exec`)"
        );
        let err = check_imports("p", "test", ["wasi:http/types@0.2.12"], &Linked::new(&plugin, &everything));
        assert!(err.unwrap_err().to_string().contains("the plugin's manifest does not declare `http`"));
        let err = check_imports("p", "test", ["evil:thing/x"], &Linked::new(&plugin, &everything));
        assert!(matches!(err, Err(SandboxError::UnknownImport { .. })));
    }

    #[test]
    fn log_is_linked_unless_a_document_turns_it_off() {
        let log = ["phasebox:plugin/log@0.1.0"];
        let everything = Capabilities::everything();
        assert!(Capabilities::default().log, "a manifest without `log` may log");
        assert!(check_imports("p", "test", log, &Linked::new(&caps(""), &everything)).is_ok());
        let quiet = caps("log = false");
        let err = check_imports("p", "test", log, &Linked::new(&quiet, &everything)).unwrap_err();
        assert!(err.to_string().contains("does not declare `log`"), "{err}");
        let err = check_imports("p", "test", log, &Linked::new(&caps(""), &quiet)).unwrap_err();
        assert!(err.to_string().contains("policy does not allow `log`"), "{err}");
    }
}
