//! The example plugins in C, JavaScript and Python (`plugins/examples`) in the host: each one
//! passes when its grant covers what it does, and each capability it tries without a grant is
//! denied the way the Rust `probe` plugin sees it denied (the same error words, the same
//! capability events, the same refusals before the phase starts).
//!
//! The components come from `plugins/examples/build.sh` (`plugins/examples/dist/*.wasm`).
//! Without them these tests fail and say to run it, unless `PHASEBOX_SKIP_LANGUAGE_PLUGINS=1`
//! is set, for a machine that cannot install the non-Rust toolchains; then they say they
//! skipped.
//!
//! What each language can try: all three read files and secrets; JavaScript (through
//! `wasi:sockets`, imported by its world) and Python (through its `socket` module) open TCP
//! connections; C cannot, because wasi-libc's preview1 interface has no sockets, so its
//! component imports none and a job that asks network for it is refused by its manifest.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use phasebox_sandbox::Endpoint;
use phasebox_sandbox::events::CaseStatus;
use phasebox_sandbox::{
    Access, CancellationToken, Capabilities, FailureKind, FileRequest, GrantRequest, Limits, PhaseEnd, PhaseEvent,
    Plugin, Policy, SandboxError, Secret,
};
use serde_json::{Value, json};

use crate::common::{Ran, run_phase, rust_plugin, sandbox};
use crate::work::work;
use sha2::Sha256;

/// The secret the example plugins declare and read the signing key from.
const KEY_SECRET: &str = "SIGNING_KEY";
const KEY: &str = "lab-signing-key-7f3a9c";
/// What the job attaches: bytes that are not valid UTF-8 too, so no language reads it as text.
const FIRMWARE: &[u8] = b"\x7fFIRMWARE v1.2.3\n\x00\x01\x02\xff\xfe release build\n";

fn examples_dir() -> PathBuf {
    phasebox_guests::plugins_dir().join("examples")
}

/// Loads `dist/<name>.wasm`, or `None` when it is missing and skipping was asked for.
fn example(name: &str) -> Option<Arc<Plugin>> {
    let path = examples_dir().join("dist").join(format!("{name}.wasm"));
    if !path.exists() {
        if std::env::var("PHASEBOX_SKIP_LANGUAGE_PLUGINS").as_deref() == Ok("1") {
            eprintln!("skipped: {} is missing and PHASEBOX_SKIP_LANGUAGE_PLUGINS=1", path.display());
            return None;
        }
        panic!(
            "{} is missing: run plugins/examples/build.sh to build the C, JavaScript and Python \
             example plugins (or set PHASEBOX_SKIP_LANGUAGE_PLUGINS=1 to skip these tests)",
            path.display()
        );
    }
    Some(sandbox().load_file(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display())))
}

fn probe() -> Arc<Plugin> {
    rust_plugin("probe")
}

/// How a phase failed and which test cases it reported.
impl Ran {
    /// The message of a failure of `kind`.
    fn failure(&self, kind: FailureKind) -> &str {
        match &self.report.end {
            PhaseEnd::Failed { kind: k, message } if *k == kind => message,
            other => panic!("expected a {kind}, got {other}"),
        }
    }

    fn case(&self, name: &str) -> (CaseStatus, String) {
        self.events
            .iter()
            .find_map(|e| match e {
                PhaseEvent::Case(c) if c.name == name => {
                    assert_eq!(c.suite, "verify");
                    Some((c.status, c.message.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no test case {name} in {:?}", self.events))
    }
}

fn open_policy() -> Policy {
    let limits =
        Limits { timeout: Duration::from_secs(120), output_timeout: Duration::from_secs(120), ..Limits::default() };
    Policy { allow: Capabilities::everything_and_loopback(), limits, ..Policy::default() }
}

async fn run(
    plugin: &Plugin,
    policy: &Policy,
    ask: &GrantRequest,
    job_dir: &Path,
    data: Value,
    secrets: &BTreeMap<String, Secret>,
) -> Result<Ran, SandboxError> {
    run_phase(plugin, policy, ask, job_dir, data, secrets, "sim-dut-7", CancellationToken::new()).await
}

/// A job directory with `attachments/firmware.bin`.
fn job_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("attachments")).unwrap();
    std::fs::write(dir.path().join("attachments/firmware.bin"), FIRMWARE).unwrap();
    dir
}

fn attachments() -> GrantRequest {
    GrantRequest {
        files: vec![FileRequest { path: "/attachments".into(), source: "attachments".into(), access: Access::Ro }],
        ..GrantRequest::default()
    }
}

/// The grant a well-formed job gives: the attachments, read-only, and the signing key.
fn full_ask() -> GrantRequest {
    GrantRequest { secrets: vec![KEY_SECRET.into()], ..attachments() }
}

fn key() -> BTreeMap<String, Secret> {
    [(KEY_SECRET.to_string(), Secret::new(KEY))].into()
}

fn signature(contents: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(contents);
    hex::encode(mac.finalize().into_bytes())
}

fn signed_data() -> Value {
    json!({"attachment": "/attachments/firmware.bin", "signature": signature(FIRMWARE)})
}

/// The error words, without Rust's ` (os error N)` suffix that the other languages do not add.
fn words(error: &str) -> &str {
    error.split(" (os error").next().unwrap_or(error)
}

/// What the Rust `probe` plugin is told when it reads `path` under `ask`.
async fn rust_read_error(ask: &GrantRequest, job_dir: &Path, path: &str) -> String {
    let ran =
        run(&probe(), &open_policy(), ask, job_dir, json!({"attack": "read-file", "path": path}), &BTreeMap::new())
            .await
            .expect("probe starts");
    let summary = ran.summary();
    let error = summary.strip_prefix("denied: ").unwrap_or_else(|| panic!("probe was allowed {path}: {summary}"));
    words(error).to_owned()
}

/// A TCP server on 127.0.0.1 that accepts connections and closes them.
fn listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    port
}

async fn passes_when_granted(name: &str) {
    let Some(plugin) = example(name) else { return };
    let dir = job_dir();
    let ran = run(&plugin, &open_policy(), &full_ask(), dir.path(), signed_data(), &key()).await.unwrap();
    assert_eq!(ran.summary(), format!("/attachments/firmware.bin: {} bytes, signature verified", FIRMWARE.len()));
    assert_eq!(ran.case("read-attachment"), (CaseStatus::Pass, format!("{} bytes", FIRMWARE.len())));
    assert_eq!(ran.case("signature").0, CaseStatus::Pass);
    let size = ran.events.iter().find_map(|e| match e {
        PhaseEvent::Measurement(m) if m.name == "attachment.size" => Some((m.value, m.unit.clone())),
        _ => None,
    });
    assert_eq!(size, Some((FIRMWARE.len() as f64, "bytes".to_string())));
    assert!(
        ran.stdout().contains(&format!("{name}: checking /attachments/firmware.bin on sim-dut-7")),
        "{}",
        ran.stdout()
    );
    assert!(ran.events.iter().any(|e| matches!(e, PhaseEvent::Log { .. })), "no log line");
    // The key never shows in the output, and is redacted if a plugin prints it anyway.
    assert!(!ran.stdout().contains(KEY));

    // Without a signature the case is skipped and the phase still passes.
    let unsigned = json!({"attachment": "/attachments/firmware.bin"});
    let ran = run(&plugin, &open_policy(), &attachments(), dir.path(), unsigned, &BTreeMap::new()).await.unwrap();
    assert!(ran.summary().ends_with("not signed"), "{}", ran.summary());
    assert_eq!(ran.case("signature").0, CaseStatus::Skip);
}

async fn a_changed_attachment_is_a_test_failure(name: &str) {
    let Some(plugin) = example(name) else { return };
    let dir = job_dir();
    let forged = json!({"attachment": "/attachments/firmware.bin", "signature": signature(b"another image")});
    let ran = run(&plugin, &open_policy(), &full_ask(), dir.path(), forged, &key()).await.unwrap();
    assert!(ran.failure(FailureKind::TestFailure).contains("does not match its signature"));
    assert_eq!(ran.case("signature").0, CaseStatus::Fail);

    let ran = run(&plugin, &open_policy(), &full_ask(), dir.path(), json!({"signature": "00"}), &key()).await.unwrap();
    assert!(ran.failure(FailureKind::JobError).contains("needs `attachment`"));
}

async fn files_outside_the_mount_are_denied_as_for_rust(name: &str) {
    let Some(plugin) = example(name) else { return };
    let dir = job_dir();
    for (ask, path) in [
        (full_ask(), "/etc/passwd"),
        (full_ask(), "/attachments/../../../etc/passwd"),
        (full_ask(), "/proc/self/environ"),
        // Without a files grant not even the attachment exists.
        (GrantRequest { secrets: vec![KEY_SECRET.into()], ..GrantRequest::default() }, "/attachments/firmware.bin"),
    ] {
        let rust = rust_read_error(&ask, dir.path(), path).await;
        // Debian's wasi-libc (a 2022 snapshot) answers a path under no preopen itself, with
        // ENOTCAPABLE; the wasi-libc in Rust's std, CPython's and the JavaScript plugin's
        // lookup answer ENOENT. Either way the host was never asked: nothing outside the
        // preopens exists for the guest.
        let no_preopen = !path.starts_with("/attachments/") || ask.files.is_empty();
        let expected = if name == "verify-c" && no_preopen { "Capabilities insufficient" } else { rust.as_str() };
        let data = json!({"attachment": path, "signature": signature(FIRMWARE)});
        let ran = run(&plugin, &open_policy(), &ask, dir.path(), data, &key()).await.unwrap();
        let message = ran.failure(FailureKind::JobError);
        assert_eq!(message, format!("cannot read {path}: {expected}"), "{name} reading {path}");
        assert_eq!(ran.case("read-attachment").0, CaseStatus::Error);
    }
}

async fn an_undeclared_secret_is_not_granted(name: &str) {
    let Some(plugin) = example(name) else { return };
    let dir = job_dir();
    // The job provides the key but does not declare it for this phase.
    let ran = run(&plugin, &open_policy(), &attachments(), dir.path(), signed_data(), &key()).await.unwrap();
    let message = ran.failure(FailureKind::JobError);
    assert_eq!(message, format!("secret {KEY_SECRET}: not granted to this phase"));
    assert_eq!(ran.case("signature"), (CaseStatus::Error, message.to_owned()));
    // Declared but not provided: the same answer, as the host gives both the same error.
    let ran = run(&plugin, &open_policy(), &full_ask(), dir.path(), signed_data(), &BTreeMap::new()).await.unwrap();
    assert_eq!(ran.failure(FailureKind::JobError), message);
    // The probe is told the same by the host.
    let probe_ran = run(
        &probe(),
        &open_policy(),
        &attachments(),
        dir.path(),
        json!({"attack": "secret", "name": KEY_SECRET}),
        &key(),
    )
    .await
    .unwrap();
    assert!(
        probe_ran.summary().starts_with("denied:") && probe_ran.summary().contains("not granted"),
        "{}",
        probe_ran.summary()
    );

    // A secret the manifest does not declare cannot even be asked for.
    let ask = GrantRequest { secrets: vec!["OTHER".into()], ..attachments() };
    let err = run(&plugin, &open_policy(), &ask, dir.path(), signed_data(), &key()).await.err().expect("refused");
    assert!(
        matches!(&err, SandboxError::GrantRefused { refused_by, .. } if refused_by == "the plugin's manifest"),
        "{err}"
    );
}

async fn without_a_capability_its_interface_is_refused(name: &str) {
    let Some(plugin) = example(name) else { return };
    let dir = job_dir();
    let no_secrets = Policy { allow: Capabilities { secrets: vec![], ..Capabilities::everything() }, ..open_policy() };
    let err =
        run(&plugin, &no_secrets, &attachments(), dir.path(), signed_data(), &key()).await.err().expect("refused");
    assert!(matches!(err, SandboxError::MissingGrant { .. }), "{err}");
    assert!(err.to_string().contains("phasebox:plugin/secrets"), "{err}");
}

async fn work_matches_native_rust(name: &str) {
    let Some(plugin) = example(name) else { return };
    let dir = job_dir();
    for n in [0, 1, 200_000] {
        let ran =
            run(&plugin, &open_policy(), &GrantRequest::default(), dir.path(), json!({"work": n}), &BTreeMap::new())
                .await
                .unwrap();
        assert_eq!(ran.summary(), format!("work({n}) = {:016x}", work(n)), "{name}");
    }
}

/// JavaScript and Python: a connect to a granted endpoint succeeds, any other is denied with
/// the words and the capability event the Rust probe gets.
async fn network_only_to_granted_endpoints(name: &str) {
    let Some(plugin) = example(name) else { return };
    let dir = job_dir();
    let (granted, other) = (listener(), listener());
    let mut ask = full_ask();
    ask.network.connect = vec![Endpoint::parse(&format!("127.0.0.1:{granted}")).unwrap()];
    let mut data = signed_data();
    data["connect"] = json!(format!("127.0.0.1:{granted}"));
    let ran = run(&plugin, &open_policy(), &ask, dir.path(), data.clone(), &key()).await.unwrap();
    assert!(ran.summary().ends_with(&format!("127.0.0.1:{granted} reachable")), "{}", ran.summary());
    assert_eq!(ran.case("reachable").0, CaseStatus::Pass);

    data["connect"] = json!(format!("127.0.0.1:{other}"));
    let ran = run(&plugin, &open_policy(), &ask, dir.path(), data.clone(), &key()).await.unwrap();
    let probe_ran = run(
        &probe(),
        &open_policy(),
        &ask,
        dir.path(),
        json!({"attack": "tcp-connect", "addr": format!("127.0.0.1:{other}")}),
        &BTreeMap::new(),
    )
    .await
    .unwrap();
    let rust = words(probe_ran.summary().strip_prefix("denied: ").expect("probe denied"));
    assert_eq!(ran.failure(FailureKind::TestFailure), format!("cannot connect to 127.0.0.1:{other}: {rust}"));
    assert_eq!(ran.case("reachable").0, CaseStatus::Fail);
    let denials = ran.denials("network");
    assert!(denials.iter().any(|d| d.contains(&other.to_string())), "{denials:?}");
    assert_eq!(
        denials.iter().map(|d| d.replace(&other.to_string(), "PORT")).collect::<Vec<_>>(),
        probe_ran.denials("network").iter().map(|d| d.replace(&other.to_string(), "PORT")).collect::<Vec<_>>(),
        "the host's record of the denial differs from the Rust probe's"
    );

    // The component imports wasi:sockets, so a policy without `network` refuses it up front.
    let no_network = Policy {
        allow: Capabilities { network: Default::default(), dns: vec![], ..Capabilities::everything() },
        ..open_policy()
    };
    let err = run(&plugin, &no_network, &full_ask(), dir.path(), signed_data(), &key()).await.err().expect("refused");
    assert!(matches!(err, SandboxError::MissingGrant { .. }) && err.to_string().contains("wasi:sockets"), "{err}");
}

/// C: no sockets API at all, so no `wasi:sockets` import and no way to ask for the network.
async fn c_cannot_ask_for_the_network() {
    let Some(plugin) = example("verify-c") else { return };
    assert!(!plugin.imports().iter().any(|i| i.starts_with("wasi:sockets")), "{:?}", plugin.imports());
    let mut ask = full_ask();
    ask.network.connect = vec![Endpoint::parse("127.0.0.1:22").unwrap()];
    let dir = job_dir();
    let err = run(&plugin, &open_policy(), &ask, dir.path(), signed_data(), &key()).await.err().expect("refused");
    assert!(
        matches!(&err, SandboxError::GrantRefused { refused_by, .. } if refused_by == "the plugin's manifest"),
        "{err}"
    );
}

/// One module of tests per language, so a failure names its language.
macro_rules! language {
    ($lang:ident, $name:literal) => {
        mod $lang {
            #[tokio::test]
            async fn passes_when_granted() {
                super::passes_when_granted($name).await;
            }
            #[tokio::test]
            async fn a_changed_attachment_is_a_test_failure() {
                super::a_changed_attachment_is_a_test_failure($name).await;
            }
            #[tokio::test]
            async fn files_outside_the_mount_are_denied_as_for_rust() {
                super::files_outside_the_mount_are_denied_as_for_rust($name).await;
            }
            #[tokio::test]
            async fn an_undeclared_secret_is_not_granted() {
                super::an_undeclared_secret_is_not_granted($name).await;
            }
            #[tokio::test]
            async fn without_a_capability_its_interface_is_refused() {
                super::without_a_capability_its_interface_is_refused($name).await;
            }
            #[tokio::test]
            async fn work_matches_native_rust() {
                super::work_matches_native_rust($name).await;
            }
        }
    };
}

language!(c, "verify-c");
language!(js, "verify-js");
language!(python, "verify-python");

#[tokio::test]
async fn c_has_no_network_to_ask_for() {
    c_cannot_ask_for_the_network().await;
}

#[tokio::test]
async fn js_network_only_to_granted_endpoints() {
    network_only_to_granted_endpoints("verify-js").await;
}

#[tokio::test]
async fn python_network_only_to_granted_endpoints() {
    network_only_to_granted_endpoints("verify-python").await;
}
