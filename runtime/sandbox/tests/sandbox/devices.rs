//! Device handles both ways, with a test double standing in for the device: granted, the
//! `shell` and `noprovision` plugins reach it; not granted, they do not load; granted without a
//! device, each call fails with `not-configured`. Secrets named in `secret-env` reach the
//! command's environment without the plugin seeing them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use phasebox_sandbox::device::{
    BoxFuture, ConsoleIo, DeviceFailure, Dut, ExecCommand, ExecEvent, ExecIo, FlashIo, PowerAction, PowerState,
};
use phasebox_sandbox::events::Stream;
use phasebox_sandbox::{
    CancellationToken, Capabilities, FailureKind, Grant, GrantRequest, PhaseEnd, PhaseEvent, PhaseInput, Policy,
    SandboxError, Secret,
};
use serde_json::json;

use crate::common::{rust_plugin, sandbox};

/// A device that runs nothing: it answers each command with one line naming it and the
/// environment variable names it got, exits with the status a trailing `exit N` asks for, and
/// remembers the environment values so the test can check what reached the "device". A command
/// that runs a script copied to the device earlier (as `shell` runs `tf_cmd_script`) is named
/// by the script's last line.
#[derive(Default)]
struct FakeDut {
    seen_env: Mutex<Vec<(String, String)>>,
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

struct FakeProcess {
    events: Vec<ExecEvent>,
}

impl ExecIo for FakeProcess {
    fn next(&mut self) -> BoxFuture<'_, Result<ExecEvent, DeviceFailure>> {
        let event = if self.events.is_empty() { ExecEvent::Exited(0) } else { self.events.remove(0) };
        Box::pin(async move { Ok(event) })
    }
}

impl Dut for FakeDut {
    fn power(&self, _: PowerAction) -> BoxFuture<'_, Result<PowerState, DeviceFailure>> {
        Box::pin(async { Ok(PowerState::On) })
    }
    fn console(&self) -> BoxFuture<'_, Result<Box<dyn ConsoleIo>, DeviceFailure>> {
        Box::pin(async { Err(DeviceFailure::NotConfigured) })
    }
    fn exec(&self, command: ExecCommand) -> BoxFuture<'_, Result<Box<dyn ExecIo>, DeviceFailure>> {
        let names: Vec<&str> = command.env.iter().map(|(k, _)| k.as_str()).collect();
        let script = self.files.lock().unwrap().iter().find_map(|(path, body)| {
            let name = path.rsplit('/').next()?;
            command.command.ends_with(&format!("../{name}")).then(|| String::from_utf8_lossy(body).into_owned())
        });
        let ran = script.as_deref().and_then(|s| s.lines().last()).unwrap_or(&command.command).to_owned();
        let line = format!("ran {ran:?} with env {names:?}\n");
        self.seen_env.lock().unwrap().extend(command.env.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())));
        let code = ran.rsplit_once("exit ").and_then(|(_, n)| n.trim().parse().ok()).unwrap_or(0);
        let mut events = vec![ExecEvent::Output(Stream::Stdout, Bytes::from(line))];
        if command.command == "print-env-values" {
            // Each value: half on stdout and half on stderr, then split within stdout around a
            // write to stderr, then whole in base64.
            for (_, value) in &command.env {
                let value = value.expose().as_bytes();
                let (first, second) = value.split_at(value.len() / 2);
                let out = |b: &[u8]| ExecEvent::Output(Stream::Stdout, Bytes::copy_from_slice(b));
                let err = |b: &[u8]| ExecEvent::Output(Stream::Stderr, Bytes::copy_from_slice(b));
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(value);
                events.extend([out(b"a="), out(first), err(second), out(b"\nb="), out(first), err(b"noise\n")]);
                events.extend([out(second), out(format!("\nc={b64}\n").as_bytes())]);
            }
        }
        events.push(ExecEvent::Exited(code));
        Box::pin(async move { Ok(Box::new(FakeProcess { events }) as Box<dyn ExecIo>) })
    }
    fn copy_to(&self, path: String, data: Vec<u8>) -> BoxFuture<'_, Result<(), DeviceFailure>> {
        self.files.lock().unwrap().insert(path, data);
        Box::pin(async { Ok(()) })
    }
    fn copy_from(&self, _: String) -> BoxFuture<'_, Result<Vec<u8>, DeviceFailure>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn flash(&self) -> BoxFuture<'_, Result<Box<dyn FlashIo>, DeviceFailure>> {
        Box::pin(async { Err(DeviceFailure::NotConfigured) })
    }
}

struct Ran {
    end: PhaseEnd,
    stdout: String,
    device_calls: Vec<String>,
}

async fn run(
    plugin: &str,
    policy: &Policy,
    device: Option<Arc<FakeDut>>,
    data: serde_json::Value,
) -> Result<Ran, SandboxError> {
    let plugin = rust_plugin(plugin);
    let dir = tempfile::tempdir().unwrap();
    // The phase declares the one secret, when its plugin may read secrets at all.
    let declared = if plugin.manifest().capabilities.secrets.is_empty() { vec![] } else { vec!["API_TOKEN".into()] };
    let ask = GrantRequest { secrets: declared, ..Default::default() };
    let mut grant = Grant::resolve("test", &plugin.manifest().capabilities, policy, &ask, dir.path())?;
    if let Some(d) = device {
        grant.set_device(d);
    }
    let secrets: BTreeMap<String, Secret> = [("API_TOKEN".to_string(), Secret::new("s3cret-token-value"))].into();
    let input = PhaseInput { phase: "test".into(), job_id: "job".into(), data_json: data.to_string(), dut: vec![] };
    let (report, events) =
        sandbox().run_phase_collecting(&plugin, &grant, &input, &secrets, CancellationToken::new()).await?;
    let mut stdout = String::new();
    let mut device_calls = Vec::new();
    for e in events {
        match e {
            PhaseEvent::Output { data, .. } => stdout.push_str(&String::from_utf8_lossy(&data)),
            PhaseEvent::Capability(c) if c.grant == "exec" => {
                assert!(c.duration_ms.is_some(), "device calls carry their duration");
                device_calls.push(c.call);
            }
            _ => {}
        }
    }
    Ok(Ran { end: report.end, stdout, device_calls })
}

fn open_policy() -> Policy {
    Policy { allow: Capabilities::everything(), ..Policy::default() }
}

#[tokio::test]
async fn shell_runs_test_cmds_on_the_device_with_secrets_in_its_environment() {
    let dut = Arc::new(FakeDut::default());
    let data = json!({"test_cmds": "make check", "secrets": {"API_TOKEN": "lab/token"}});
    let ran = run("shell", &open_policy(), Some(dut.clone()), data).await.unwrap();
    assert!(ran.end.passed(), "{}", ran.end);
    assert!(
        ran.stdout.contains("ran \"make check\" with env [\"DEVICE_IP\", \"agent_id\", \"API_TOKEN\"]"),
        "{}",
        ran.stdout
    );
    assert!(!ran.stdout.contains("s3cret-token-value"));
    let seen = dut.seen_env.lock().unwrap().clone();
    assert!(seen.contains(&("API_TOKEN".to_string(), "s3cret-token-value".to_string())), "{seen:?}");
    // The commands travel as a script, then run from the job's own directory on the device.
    assert!(
        ran.device_calls.iter().any(|c| c.starts_with("copy-to phasebox-jobs/job/tf_cmd_script")),
        "{:?}",
        ran.device_calls
    );
    assert!(ran.device_calls.iter().any(|c| c.contains("exec ../tf_cmd_script")), "{:?}", ran.device_calls);
}

#[tokio::test]
async fn the_plugin_never_reads_a_secret_env_value_in_the_commands_output() {
    let dut = Arc::new(FakeDut::default());
    let reversed: String = "s3cret-token-value".chars().rev().collect();
    let data = json!({"steps": ["exec-secret:API_TOKEN:print-env-values", format!("scan:{reversed}")]});
    let ran = run("device-probe", &open_policy(), Some(dut.clone()), data).await.unwrap();
    assert!(ran.end.passed(), "{}", ran.end);
    assert_eq!(*dut.seen_env.lock().unwrap(), [("API_TOKEN".to_string(), "s3cret-token-value".to_string())]);
    // What the plugin read and reports: every form masked, in each place it was printed.
    let summary = ran.end.to_string();
    let token = phasebox_redact::mask_token(&Secret::new("s3cret-token-value"));
    for form in ["s3cret", "token-value", "czNjcmV0LXRva2VuLXZhbHVl"] {
        assert!(!summary.contains(form), "the plugin read {form:?}: {summary}");
    }
    for shown in [format!("a={token}"), format!("b={token}"), format!("c={token}")] {
        assert!(summary.contains(&shown), "{shown}: {summary}");
    }
    assert!(
        summary.contains(&format!("scan:{reversed} -> ok: absent")),
        "the value is nowhere in its memory: {summary}"
    );
}

#[tokio::test]
async fn a_failing_command_is_a_test_failure() {
    let ran =
        run("shell", &open_policy(), Some(Arc::new(FakeDut::default())), json!({"test_cmds": "exit 3"})).await.unwrap();
    assert!(
        matches!(&ran.end, PhaseEnd::Failed { kind: FailureKind::TestFailure, message } if message.contains("status 3"))
    );
}

#[tokio::test]
async fn an_undeclared_secret_does_not_reach_the_device() {
    let dut = Arc::new(FakeDut::default());
    let data = json!({"test_cmds": "env", "secrets": {"OTHER": "lab/other"}});
    let ran = run("shell", &open_policy(), Some(dut.clone()), data).await.unwrap();
    assert!(
        matches!(&ran.end, PhaseEnd::Failed { kind: FailureKind::InfraError, message } if message.contains("not granted")),
        "{}",
        ran.end
    );
    assert!(dut.seen_env.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_the_exec_grant_the_plugin_does_not_load() {
    let policy = Policy { allow: Capabilities { exec: false, ..Capabilities::everything() }, ..Policy::default() };
    let err = run("noprovision", &policy, Some(Arc::new(FakeDut::default())), json!({})).await.err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("phasebox:plugin/exec") && msg.contains("`exec` grant"), "{msg}");
}

#[tokio::test]
async fn granted_without_a_device_each_call_is_not_configured() {
    let ran = run("noprovision", &open_policy(), None, json!({})).await.unwrap();
    assert!(
        matches!(&ran.end, PhaseEnd::Failed { kind: FailureKind::InfraError, message } if message.contains("no such handle configured")),
        "{}",
        ran.end
    );
    let ran = run("noprovision", &open_policy(), Some(Arc::new(FakeDut::default())), json!({})).await.unwrap();
    assert!(ran.end.passed(), "{}", ran.end);
}
