//! What an installed binary offers without its source tree: the built-in plugins and runner
//! configuration, and `server init` / `agent init` writing configurations that load and run.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn phasebox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phasebox")).args(args).output().expect("running phasebox")
}

fn ok(args: &[&str]) -> String {
    let out = phasebox(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn plugin_list_prints_the_sha256_of_each_builtin_plugin_as_exported() {
    let dir = tempfile::tempdir().unwrap();
    let listed: serde_json::Value = serde_json::from_str(&ok(&["plugin", "list", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for standard in ["noprovision", "flash", "shell", "reserve", "firmware", "cleanup"] {
        assert!(names.contains(&standard), "{standard} is built in: {names:?}");
    }
    ok(&["plugin", "export", &dir.path().display().to_string()]);
    for plugin in listed {
        let file = dir.path().join(format!("{}.wasm", plugin["name"].as_str().unwrap()));
        let sha = phasebox_sandbox::sha256_hex(&std::fs::read(&file).unwrap());
        assert_eq!(plugin["sha256"], sha.as_str(), "{}", file.display());
    }
    let probe = listed.iter().find(|p| p["name"] == "probe").unwrap();
    assert_eq!(probe["offered_to_jobs"], false, "the adversarial demo plugin is not offered to jobs");
}

#[test]
fn the_builtin_runner_configuration_is_printable_and_loads_the_builtin_plugins() {
    let text = ok(&["config", "runner"]);
    let printed = phasebox_job::RunnerConfig::from_toml(&text, Path::new("/nowhere")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/runner.toml");
    assert_eq!(printed, phasebox_job::RunnerConfig::from_file(&example).unwrap());
    assert_eq!(printed.builtin_plugins, ["hello"]);
    assert!(printed.plugins.is_empty());
}

#[test]
fn server_init_writes_a_configuration_and_keys_the_server_starts_on() {
    let dir = tempfile::tempdir().unwrap();
    let (etc, state) = (dir.path().join("etc"), dir.path().join("state"));
    let dirs = ["--config-dir", etc.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    ok(&[&["server", "init"][..], &dirs].concat());
    for key in ["secrets.key", "jwt-signing.key"] {
        let mode = std::fs::metadata(etc.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let config = phasebox_server::ServerConfig::from_file(&etc.join("server.toml")).unwrap();
    assert!(config.secrets_key().unwrap().is_some(), "the secrets store is on");
    assert!(config.jwt_signing_key().unwrap().is_some_and(|k| k.len() >= 32));
    assert!(config.database_url.contains(state.to_str().unwrap()));

    // A second init changes nothing.
    let key = std::fs::read(etc.join("secrets.key")).unwrap();
    let again = phasebox(&[&["server", "init"][..], &dirs].concat());
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read(etc.join("secrets.key")).unwrap(), key);

    // The server starts on it and answers.
    let mut child = Command::new(env!("CARGO_BIN_EXE_phasebox"))
        .args(["server", "--config", etc.join("server.toml").to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{line}: {e}"));
    conn.write_all(b"GET /v1/agents/queues HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(state.join("server.db").exists(), "the database is under the state directory");
}

#[test]
fn agent_init_writes_configurations_that_load_with_the_builtin_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let (etc, state) = (dir.path().join("etc"), dir.path().join("state"));
    let args = [
        "agent",
        "init",
        "--config-dir",
        etc.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--server",
        "https://phasebox.lab.example.com",
        "--client-id",
        "agent-host-07",
        "--dut",
        "rpi4-07",
        "--queue",
        "rpi4",
    ];
    ok(&args);
    let agent = phasebox_agent::AgentConfig::from_file(&etc.join("agent.toml")).unwrap();
    assert_eq!(agent.server, "https://phasebox.lab.example.com");
    assert_eq!(agent.credentials.as_ref().unwrap().client_id, "agent-host-07");
    assert_eq!((agent.duts[0].name.as_str(), agent.duts[0].queues.as_slice()), ("rpi4-07", &["rpi4".to_owned()][..]));
    assert!(agent.spool_dir.starts_with(&state));

    let mut runner = phasebox_job::RunnerConfig::from_file(&agent.duts[0].runner).unwrap();
    runner.engine.cache_dir = None;
    runner.engine.pooling = false;
    let plugins = phasebox_job::PluginSet::load(&runner).unwrap();
    for standard in ["noprovision", "flash", "shell", "reserve", "firmware", "cleanup"] {
        assert!(plugins.iter().any(|p| p.name() == standard), "{standard}: {}", plugins.describe());
    }
    // The device template is all comments until filled in: it parses as an empty table.
    let device = std::fs::read_to_string(etc.join("rpi4-07.device.toml")).unwrap();
    assert!(device.lines().all(|l| l.is_empty() || l.starts_with('#')), "{device}");

    let again = phasebox(&args);
    assert_eq!(again.status.code(), Some(2));
    let bad =
        phasebox(&["agent", "init", "--server", "http://x", "--dut", "a\"b", "--config-dir", etc.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--dut"));
}
