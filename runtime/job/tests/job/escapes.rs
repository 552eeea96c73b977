//! A phase cannot reach the host through the job directory: not by planting a link for a later
//! phase's mount, and not by planting one for the engine's own packing of the artifacts.

use std::path::Path;

use crate::common::*;
use phasebox_job::*;

/// `canary/` beside the job directory (`<tmp>/job`), with one file: what a link planted in the
/// job directory would reach. Returns its names and the file's content.
fn plant_canary(tmp: &Path) -> (Vec<String>, String) {
    std::fs::create_dir_all(tmp.join("canary")).unwrap();
    std::fs::write(tmp.join("canary/host-secret.txt"), "canary").unwrap();
    canary(tmp)
}

fn canary(tmp: &Path) -> (Vec<String>, String) {
    let dir = tmp.join("canary");
    let mut names: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    (names, std::fs::read_to_string(dir.join("host-secret.txt")).unwrap())
}

/// Allocate lists `/loot`, mounted from `artifacts/loot`; firmware_update runs `firmware`.
fn loot_job(firmware: &str) -> String {
    format!(
        "job_queue: q\nfirmware_update_data:\n  {firmware}\n  phasebox: {{plugin: probe}}\n\
         allocate_data:\n  attack: list-dir\n  path: /loot\n  phasebox:\n    plugin: probe\n    \
         grants: {{files: [{{path: /loot, source: artifacts/loot, access: ro}}]}}\n\
         reserve_data: {{ssh_keys: ['lp:a']}}\n"
    )
}

fn reason(ran: &JobOutcome, phase: Phase) -> String {
    let record = ran.phase(phase);
    format!("status {:?}: {}", record.status, record.reason)
}

#[tokio::test]
async fn a_link_planted_for_a_later_mount_never_reaches_the_host() {
    let runner = probe_runner();
    // Firmware_update, with /artifacts read-write, swaps `loot` for a link to the canary.
    let job = loot_job("attack: plant-symlink\n  link: /artifacts/loot\n  target: ../../canary");
    let (job_plan, dir) = plan(&job, &runner).unwrap();
    let before = plant_canary(dir.path());
    let ran = run_job(&job_plan, JobInputs::default(), &mut NullSink, CancellationToken::new()).await.unwrap();
    let planted = reason(&ran, Phase::FirmwareUpdate);
    assert!(planted.contains("denied") && planted.contains("not permitted"), "the link was planted: {planted}");
    let allocate = reason(&ran, Phase::Allocate);
    assert_eq!(ran.status(Phase::Allocate), Some(100), "allocate saw the host: {allocate}");
    assert!(allocate.contains("phase allocate") && allocate.contains("/loot"), "{allocate}");
    assert!(!allocate.contains("host-secret"), "{allocate}");
    assert_eq!(canary(dir.path()), before);

    // However the link got there, the phase mounting through it is refused by name.
    let job = loot_job("attack: env");
    let (job_plan, dir) = plan(&job, &runner).unwrap();
    let before = plant_canary(dir.path());
    let loot = dir.path().join("job/artifacts/loot");
    std::fs::remove_dir(&loot).unwrap();
    std::os::unix::fs::symlink("../../canary", &loot).unwrap();
    let ran = run_job(&job_plan, JobInputs::default(), &mut NullSink, CancellationToken::new()).await.unwrap();
    let allocate = reason(&ran, Phase::Allocate);
    assert_eq!(ran.status(Phase::Allocate), Some(100), "allocate saw the host: {allocate}");
    assert!(
        allocate.contains("phase allocate") && allocate.contains("/loot") && allocate.contains("symbolic link"),
        "{allocate}"
    );
    assert_eq!(canary(dir.path()), before);
}

#[tokio::test]
async fn packing_and_releasing_follow_no_planted_link() {
    let runner = probe_runner();
    // A link the guest cannot make, planted on the host side before the job runs, and one the
    // guest may make (inside artifacts/): neither leads the packer outside.
    let job = "job_queue: q\nfirmware_update_data:\n  attack: plant-symlink\n  link: /artifacts/inside\n  \
               target: report.txt\n  phasebox: {plugin: probe}\n";
    let (job_plan, dir) = plan(job, &runner).unwrap();
    let before = plant_canary(dir.path());
    let artifacts = dir.path().join("job/artifacts");
    std::os::unix::fs::symlink("../../canary", artifacts.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("../../canary/host-secret.txt", artifacts.join("file-link")).unwrap();
    std::fs::write(artifacts.join("report.txt"), "ok").unwrap();
    // Releasing the attachments at the end gives write permission back: never through a link.
    std::os::unix::fs::symlink("../canary", dir.path().join("job/attachments")).unwrap();
    let secret = dir.path().join("canary/host-secret.txt");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let ran = run_job(&job_plan, JobInputs::default(), &mut NullSink, CancellationToken::new()).await.unwrap();
    assert_eq!(ran.status(Phase::FirmwareUpdate), Some(0), "{}", reason(&ran, Phase::FirmwareUpdate));
    let packed = ran.artifacts.as_ref().expect("artifacts packed");
    let bytes = std::fs::read(&packed.path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut content = String::new();
        let _ = std::io::Read::read_to_string(&mut entry, &mut content);
        assert!(!content.contains("canary"), "{:?} carries the canary", entry.path().unwrap());
    }
    let skipped: Vec<_> = packed.stats.skipped.iter().map(|s| s.path.display().to_string()).collect();
    assert_eq!(skipped, ["dir-link", "file-link"]);
    assert_eq!(packed.stats.symlinks, 1, "the link inside is kept as a link");
    assert_eq!(canary(dir.path()), before);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o400, "the canary's mode was changed");
}
