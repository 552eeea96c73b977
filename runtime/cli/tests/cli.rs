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
    // The whole job on the simulated device: the declared secret reached the command and was
    // redacted on the way out, in plain and base64 form.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the token the test got: **") && !stderr.contains("demo-token-0123456789"), "{stderr}");
    assert!(stdout.contains("the secret appears nowhere in the results or events"), "{stdout}");
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
