//! What one phase leaves in the job directory cannot open the host to a later phase: mounts are
//! opened when the phase starts, beneath the job directory, following no link; a guest cannot
//! make a link that leaves its directory; and writes into read-write mounts are bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use phasebox_sandbox::{
    Access, CancellationToken, Capabilities, FileRequest, Grant, GrantRequest, Limits, PhaseEnd, PhaseInput, Policy,
    SandboxError, Stop,
};
use serde_json::{Value, json};

use crate::common::{Ran, run_phase, rust_plugin, sandbox};

fn policy(limits: Limits) -> Policy {
    Policy { allow: Capabilities::everything(), limits, ..Policy::default() }
}

fn quick_limits() -> Limits {
    Limits { timeout: Duration::from_secs(30), output_timeout: Duration::from_secs(30), ..Limits::default() }
}

fn mount(path: &str, source: &str, access: Access) -> GrantRequest {
    GrantRequest { files: vec![FileRequest { path: path.into(), source: source.into(), access }], ..Default::default() }
}

/// A temporary directory holding the job directory `job/` (with `artifacts/loot/`) and, beside
/// it, `canary/` with one file: what a link planted in the job directory would reach.
struct Scene {
    tmp: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("job/artifacts/loot")).unwrap();
        std::fs::create_dir_all(tmp.path().join("canary")).unwrap();
        std::fs::write(tmp.path().join("canary/host-secret.txt"), "canary").unwrap();
        Scene { tmp }
    }

    fn job(&self) -> std::path::PathBuf {
        self.tmp.path().join("job")
    }

    /// The canary directory's names and the canary file's content, to compare before and after.
    fn canary(&self) -> (Vec<String>, String) {
        let dir = self.tmp.path().join("canary");
        let mut names: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        (names, std::fs::read_to_string(dir.join("host-secret.txt")).unwrap())
    }
}

/// Runs `probe` with an already resolved grant, as the job engine does: every phase's grant is
/// resolved when the job is planned, before any phase runs.
async fn probe_with(grant: &Grant, data: Value) -> Result<Ran, SandboxError> {
    let plugin = rust_plugin("probe");
    let input = PhaseInput {
        phase: "test".into(),
        job_id: "00000000-0000-4000-8000-000000000002".into(),
        data_json: data.to_string(),
        dut: Vec::new(),
    };
    let (report, events) =
        sandbox().run_phase_collecting(&plugin, grant, &input, &BTreeMap::new(), CancellationToken::new()).await?;
    Ok(Ran { report, events })
}

fn resolve(ask: &GrantRequest, job_dir: &Path) -> Grant {
    let plugin = rust_plugin("probe");
    Grant::resolve("test", &plugin.manifest().capabilities, &policy(quick_limits()), ask, job_dir).unwrap()
}

#[tokio::test]
async fn a_link_planted_by_one_phase_never_opens_the_host_to_a_later_one() {
    let scene = Scene::new();
    let job = scene.job();
    let before = scene.canary();
    // Planned up front, while `artifacts/loot` is still a plain directory.
    let later_ro = resolve(&mount("/artifacts", "artifacts/loot", Access::Ro), &job);
    let later_rw = resolve(&mount("/artifacts", "artifacts/loot", Access::Rw), &job);

    // Phase A, with /artifacts read-write, swaps `loot` for a link climbing out of the job.
    let ran = run_phase(
        &rust_plugin("probe"),
        &policy(quick_limits()),
        &mount("/artifacts", "artifacts", Access::Rw),
        &job,
        json!({"attack": "plant-symlink", "link": "/artifacts/loot", "target": "../../canary"}),
        &BTreeMap::new(),
        "sim-dut-1",
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let summary = ran.summary().to_owned();
    assert!(summary.starts_with("denied:"), "the guest could plant a climbing link: {summary}");
    assert!(
        ran.denials("files").iter().any(|d| d.contains("../../canary") && d.contains("..")),
        "{:?}",
        ran.denials("files")
    );

    // However such a link got there, a later phase mounting through it is refused by name.
    let loot = job.join("artifacts/loot");
    match loot.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&loot).unwrap(),
        Ok(_) => std::fs::remove_file(&loot).unwrap(),
        Err(_) => {}
    }
    std::os::unix::fs::symlink("../../canary", &loot).unwrap();
    for (grant, data) in [
        (&later_ro, json!({"attack": "list-dir", "path": "/artifacts"})),
        (&later_rw, json!({"attack": "write-file", "path": "/artifacts/pwned", "content": "x"})),
    ] {
        let err = match probe_with(grant, data).await {
            Err(e) => e.to_string(),
            Ok(ran) => panic!("the phase started through the link and ended {}", ran.report.end),
        };
        assert!(err.contains("phase test") && err.contains("/artifacts") && err.contains("symbolic link"), "{err}");
    }
    assert_eq!(scene.canary(), before, "the canary outside the job directory was touched");
}

#[tokio::test]
async fn links_made_in_a_phase_stay_in_their_directory() {
    let scene = Scene::new();
    let job = scene.job();
    let ask = mount("/artifacts", "artifacts", Access::Rw);
    for (target, allowed) in [
        ("loot", true),
        ("loot/inner.txt", true),
        ("/etc", false),
        ("..", false),
        ("../../canary", false),
        ("loot/../..", false),
    ] {
        let data = json!({"attack": "plant-symlink", "link": "/artifacts/mine", "target": target});
        let ran = run_phase(
            &rust_plugin("probe"),
            &policy(quick_limits()),
            &ask,
            &job,
            data,
            &BTreeMap::new(),
            "sim-dut-1",
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let summary = ran.summary();
        assert_eq!(summary.starts_with("allowed:"), allowed, "{target}: {summary}");
        if !allowed {
            assert!(summary.contains("not permitted"), "{target}: {summary}");
            assert!(job.join("artifacts/mine").symlink_metadata().is_err(), "{target}: the link was made");
        }
    }
}

#[tokio::test]
async fn writes_to_read_write_mounts_are_bounded() {
    let scene = Scene::new();
    let job = scene.job();
    let ask = mount("/artifacts", "artifacts", Access::Rw);
    let run = |data: Value, limits: Limits| {
        let job = job.clone();
        let ask = ask.clone();
        async move {
            run_phase(
                &rust_plugin("probe"),
                &policy(limits),
                &ask,
                &job,
                data,
                &BTreeMap::new(),
                "sim-dut-1",
                CancellationToken::new(),
            )
            .await
            .unwrap()
        }
    };
    let content = "x".repeat(4096);
    let write = json!({"attack": "write-file", "path": "/artifacts/big.txt", "content": content});

    // Under the limits the write goes through.
    let ran = run(write.clone(), Limits { disk: 8192, files: 10, ..quick_limits() }).await;
    ran.summary();
    assert_eq!(std::fs::metadata(job.join("artifacts/big.txt")).unwrap().len(), 4096);

    // Over the byte limit the phase ends with its own reason, and nothing past it was written.
    let ran = run(write.clone(), Limits { disk: 1000, ..quick_limits() }).await;
    assert_eq!(ran.report.end, PhaseEnd::Stopped(Stop::DiskLimit(1000)));
    assert!(ran.report.end.to_string().contains("disk limit"), "{}", ran.report.end);
    assert!(std::fs::metadata(job.join("artifacts/big.txt")).unwrap().len() <= 1000);

    // Over the file limit likewise: a new file is one entry too many.
    let new_file = json!({"attack": "write-file", "path": "/artifacts/new.txt", "content": "x"});
    let ran = run(new_file, Limits { files: 0, ..quick_limits() }).await;
    assert_eq!(ran.report.end, PhaseEnd::Stopped(Stop::FileLimit(0)));
    assert!(!job.join("artifacts/new.txt").exists());
    // Rewriting a file that exists creates nothing.
    let ran = run(write, Limits { files: 0, ..quick_limits() }).await;
    ran.summary();
}
