//! The `phasebox` binary's exit-code contract: 0 when what it ran passed, 1 when it ran and did
//! not pass, 2 when it could not run.

use std::path::Path;
use std::process::{Command, Output};

fn phasebox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phasebox")).args(args).output().expect("running phasebox")
}

fn config(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config").join(path).display().to_string()
}

#[test]
fn demo_passes() {
    let out = phasebox(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Every attempt came out as its grant says"), "{stdout}");
    assert!(!stdout.contains("unexpected"), "{stdout}");
    // The whole job through an embedded server, an agent and the simulated device: it completed,
    // the declared secret reached the command and the console and was redacted on the agent, in
    // plain and base64 form, and its artifacts came back.
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("the token the test got: **") && !all.contains("demo-token-0123456789"), "{all}");
    assert!(all.contains("serial│ ") && all.contains("the token on the serial console: **"), "{all}");
    assert!(stdout.contains("job state       complete"), "{stdout}");
    // The web interface is served beside the API: the demo names the job's page.
    assert!(
        stdout.contains("web UI  http://127.0.0.1:") && stdout.contains("follow it live at http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("artifacts.tar.gz ("), "{stdout}");
    assert!(stdout.contains("the secret appears nowhere in the output, serial log or results"), "{stdout}");
}

#[test]
fn run_writes_results_and_exits_by_verdict() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().display().to_string();
    let ran = phasebox(&["run", &config("jobs/hello.yaml"), "--out", &out]);
    assert_eq!(ran.status.code(), Some(0), "{}", String::from_utf8_lossy(&ran.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(results["test_status"], 0);
    assert_eq!(results["job_state"], "complete");
    assert!(out_dir.path().join("junit.xml").exists() && out_dir.path().join("events.jsonl").exists());

    let failed = phasebox(&["run", &config("jobs/firmware-update-fails.yaml"), "--out", &out]);
    assert_eq!(failed.status.code(), Some(1), "{}", String::from_utf8_lossy(&failed.stderr));
}

#[test]
fn run_shows_a_plugins_terminal_controls_instead_of_obeying_them() {
    phasebox_guests::build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The example runner, with `probe` beside `hello` and a policy that lets it load.
    let mut runner = phasebox_job::RunnerConfig::from_file(Path::new(&config("runner.toml"))).unwrap();
    runner.plugins = vec![phasebox_guests::path("hello"), phasebox_guests::path("probe")];
    runner.policy.allow = phasebox_sandbox::Capabilities::everything();
    let runner_path = dir.path().join("runner.toml");
    std::fs::write(&runner_path, runner.to_toml()).unwrap();
    // The plugin panics with an OSC 52 clipboard write and a cursor movement over the line
    // above in its message: it reaches stderr, the phase's end reason and the engine's line.
    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        "job_queue: q\nallocate_data:\n  attack: panic\n  \
         message: \"clip\\x1b]52;c;cHduZWQ=\\x07 up\\x1b[1A\\x1b[2Kallowed \\u202e\"\n  phasebox: {plugin: probe}\n",
    )
    .unwrap();
    let out = dir.path().join("out").display().to_string();
    let ran = phasebox(&[
        "run",
        &job.display().to_string(),
        "--runner-config",
        &runner_path.display().to_string(),
        "--out",
        &out,
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert_eq!(ran.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("clip") && stderr.contains("allowed"), "the message is shown: {stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(['\x1b', '\x07', '\u{202e}']), "a control reached the terminal: {text:?}");
    }
}

#[test]
fn a_malformed_job_is_an_error_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.yaml");
    std::fs::write(&job, "job_queue: q\ntest_data:\n  test_cmds: [1, 2]\n").unwrap();
    let out = phasebox(&["run", &job.display().to_string(), "--out", &dir.path().join("out").display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("test_data.test_cmds") && stderr.contains("line 3"), "{stderr}");
    assert!(!dir.path().join("out").exists(), "nothing may run for a malformed job");
}

#[test]
fn inspect_prints_world_imports_capabilities_and_sha256() {
    phasebox_guests::build().unwrap();
    let file = phasebox_guests::path("probe");
    let out = phasebox(&["plugin", "inspect", &file.display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sha = phasebox_sandbox::sha256_hex(&std::fs::read(&file).unwrap());
    for needle in
        ["world      phasebox:plugin/phase@0.1.0", "wasi:sockets/tcp", "needs `network`", "[capabilities", &sha]
    {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
}

#[test]
fn server_answers_testflinger_clients_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://{}\"\nblob_dir = \"{}\"\n",
            dir.path().join("db.sqlite").display(),
            dir.path().join("blobs").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_phasebox"))
        .args(["server", "--config", &config.display().to_string(), "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /v1/agents/queues HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // SIGTERM ends it cleanly.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let refused = phasebox(&["server", "--listen", "0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing to serve plain HTTP"));
}
