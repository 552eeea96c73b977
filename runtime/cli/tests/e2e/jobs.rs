//! Fifty jobs of ten kinds, submitted and followed with the CLI while both agents take them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::lab::*;

/// The secret one kind of job declares, and its value, which must appear nowhere.
const SECRET_PATH: &str = "lab/token";
const SECRET_VALUE: &str = "tok-e2e-5f1c9a7b3d";
/// A public key for reservations; each job adds its own comment.
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmzMZkCALj10zQFPgqtRgWnEyYiWLxSJJN6rFF0k18S";
/// The image attached to jobs that flash from their attachments.
const ATTACHED_IMAGE: &str = "e2e-attached-image";

const JOBS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// provision by noprovision (the device answers), then test_cmds.
    NoProvision,
    /// flash from the image server, then test_cmds.
    FlashUrl,
    /// flash from an attached image (uploaded by `submit`, beside another file), then test_cmds.
    FlashAttached,
    /// test_cmds that exit non-zero.
    Failing,
    /// firmware_update alone.
    Firmware,
    /// a one-second reservation with a raw public key.
    Reserve,
    /// test_cmds that leave a file in artifacts/ on the device.
    ShellArtifact,
    /// the probe plugin in allocate, writing a file to /artifacts.
    ProbeArtifact,
    /// test_cmds with a declared secret, submitted by its owner.
    Secret,
    /// flash, firmware_update, test and reserve in one job.
    Everything,
}

const KINDS: [Kind; 10] = [
    Kind::NoProvision,
    Kind::FlashUrl,
    Kind::FlashAttached,
    Kind::Failing,
    Kind::Firmware,
    Kind::Reserve,
    Kind::ShellArtifact,
    Kind::ProbeArtifact,
    Kind::Secret,
    Kind::Everything,
];

/// One job of the fifty.
struct Job {
    n: usize,
    kind: Kind,
    /// The job as submitted.
    body: Value,
    /// (phase, status): exactly the statuses the results must show.
    statuses: Vec<(&'static str, i64)>,
    /// What the output must hold.
    output: Vec<String>,
    /// The artifact files (path in the tarball, content).
    artifacts: Vec<(String, String)>,
}

fn key(n: usize) -> String {
    format!("{KEY} e2e-job-{n}@lab")
}

impl Job {
    fn new(n: usize, image_url: &str) -> Job {
        let kind = KINDS[n % KINDS.len()];
        // Every shell job starts by removing what an earlier job left in artifacts/ on the
        // device, so that only the ShellArtifact jobs have artifacts.
        let cmds = |body: &str| format!("rm -rf artifacts\n{body}");
        let test = |body: &str| json!({"test_cmds": cmds(body)});
        let mut statuses = vec![("cleanup", 0)];
        let mut output = Vec::new();
        let mut artifacts = Vec::new();
        let mut body = json!({"job_queue": QUEUE, "name": format!("e2e job {n} ({kind:?})")});
        match kind {
            Kind::NoProvision => {
                body["provision_data"] = json!({"skip": false});
                body["test_data"] = test(&format!("echo \"job {n}: noprovision on $DUT_NAME\""));
                statuses.extend([("provision", 0), ("test", 0)]);
                output.push(format!("job {n}: noprovision on sim-"));
            }
            Kind::FlashUrl => {
                body["provision_data"] = json!({"url": image_url});
                body["test_data"] = test(&format!("echo \"job {n}: booted $DUT_IMAGE\""));
                statuses.extend([("provision", 0), ("test", 0)]);
                output.extend([format!("writing {image_url} to sim-"), format!("job {n}: booted {URL_IMAGE}\n")]);
            }
            Kind::FlashAttached => {
                // Two files attached; `use_attachment` names the image, as in a Testflinger muxpi
                // job.
                body["provision_data"] = json!({
                    "attachments": [{"local": "attached.img"}, {"local": "attached-notes.txt"}],
                    "use_attachment": "attached.img",
                });
                body["test_data"] = test(&format!("echo \"job {n}: booted $DUT_IMAGE\""));
                statuses.extend([("provision", 0), ("test", 0)]);
                output.push(format!("job {n}: booted {ATTACHED_IMAGE}\n"));
            }
            Kind::Failing => {
                body["test_data"] = test(&format!("echo \"job {n}: about to fail\"\nexit 7"));
                statuses.push(("test", 1));
                output.push(format!("job {n}: about to fail\n"));
            }
            Kind::Firmware => {
                body["firmware_update_data"] = json!({"version": "latest"});
                statuses.push(("firmware_update", 0));
                output.push("System Firmware".into());
            }
            Kind::Reserve => {
                body["reserve_data"] = json!({"ssh_keys": [key(n)], "timeout": 1});
                statuses.push(("reserve", 0));
                output.extend(["installed 1 key(s)".into(), "You can now connect to".into()]);
            }
            Kind::ShellArtifact => {
                body["test_data"] = test(&format!(
                    "mkdir artifacts && echo \"report of job {n}\" > artifacts/report-{n}.txt && echo \"job {n}: reported\""
                ));
                statuses.push(("test", 0));
                output.push(format!("job {n}: reported\n"));
                artifacts.push((format!("artifacts/report-{n}.txt"), format!("report of job {n}\n")));
            }
            Kind::ProbeArtifact => {
                body["allocate_data"] = json!({
                    "attack": "write-file",
                    "path": format!("/artifacts/probe-{n}.txt"),
                    "content": format!("probe of job {n}\n"),
                    "phasebox": {"plugin": "probe"},
                });
                statuses.push(("allocate", 0));
                artifacts.push((format!("artifacts/probe-{n}.txt"), format!("probe of job {n}\n")));
            }
            Kind::Secret => {
                body["test_data"] = json!({
                    "test_cmds": cmds(&format!("echo \"job {n}: token=$API_TOKEN\"")),
                    "secrets": {"API_TOKEN": SECRET_PATH},
                });
                statuses.push(("test", 0));
                output.push(format!("job {n}: token=**"));
            }
            Kind::Everything => {
                body["provision_data"] = json!({"url": image_url});
                body["firmware_update_data"] = json!({"version": "latest"});
                body["test_data"] = test(&format!("echo \"job {n}: everything on $DUT_IMAGE\""));
                body["reserve_data"] = json!({"ssh_keys": [key(n)], "timeout": 1});
                statuses.extend([("provision", 0), ("firmware_update", 0), ("test", 0), ("reserve", 0)]);
                output.extend([
                    format!("job {n}: everything on {URL_IMAGE}\n"),
                    "System Firmware".into(),
                    "You can now connect to".into(),
                ]);
            }
        }
        Job { n, kind, body, statuses, output, artifacts }
    }

    /// The submitter's credentials: the secret's owner for Secret jobs, anonymous otherwise.
    fn env(&self) -> Vec<(&'static str, &'static str)> {
        match self.kind {
            Kind::Secret => vec![("PHASEBOX_CLIENT_ID", USER), ("PHASEBOX_SECRET_KEY", CLIENT_SECRET)],
            _ => vec![],
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_jobs_of_mixed_kinds_complete_with_their_results_output_and_artifacts() {
    let lab = Arc::new(Lab::start(Setup::default()).await);
    let image_url = format!("{}/images/e2e.img", lab.images.url());
    let jobs_dir = lab.dir().join("home/jobs");
    std::fs::write(
        jobs_dir.join("attached.img"),
        format!("IMAGE_NAME={ATTACHED_IMAGE}\nan image submitted with its job\n"),
    )
    .unwrap();
    std::fs::write(jobs_dir.join("attached-notes.txt"), "IMAGE_NAME=not-the-image\nnotes beside the image\n").unwrap();

    // The secret, written by its owner with the CLI.
    let owner = [("PHASEBOX_CLIENT_ID", USER), ("PHASEBOX_SECRET_KEY", CLIENT_SECRET)];
    let run = lab.cli(&["secret", "write", SECRET_PATH, SECRET_VALUE], &owner).await;
    assert!(run.ok().stdout.starts_with(&format!("Secret '{SECRET_PATH}' written successfully\n")), "{}", run.stdout);

    // Submit all fifty, a few CLI processes at a time.
    let jobs: Vec<Arc<Job>> = (0..JOBS).map(|n| Arc::new(Job::new(n, &image_url))).collect();
    let permits = Arc::new(Semaphore::new(6));
    let mut submits = tokio::task::JoinSet::new();
    for job in &jobs {
        let (lab, job, permits) = (lab.clone(), job.clone(), permits.clone());
        submits.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            (job.n, lab.submit(&job.body, &job.env()).await)
        });
    }
    let ids: BTreeMap<usize, String> = submits.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), JOBS);

    // Follow each to its end with `poll`, then read its results and artifacts.
    let mut checks = tokio::task::JoinSet::new();
    for job in &jobs {
        let (lab, job, permits, id) = (lab.clone(), job.clone(), permits.clone(), ids[&job.n].clone());
        checks.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            check(&lab, &job, &id).await
        });
    }
    let ran_on: BTreeMap<usize, String> = checks.join_all().await.into_iter().collect();

    // Both agents took jobs.
    let duts: BTreeSet<&str> = ran_on.values().map(String::as_str).collect();
    eprintln!(
        "jobs per device: {:?}",
        duts.iter().map(|d| (d, ran_on.values().filter(|v| v == d).count())).collect::<Vec<_>>()
    );
    for (agent, names) in AGENTS {
        assert!(names.iter().any(|n| duts.contains(n)), "{agent} ran none of the jobs: {ran_on:?}");
    }
    // The reservations' keys are on the devices that ran them.
    for job in jobs.iter().filter(|j| matches!(j.kind, Kind::Reserve | Kind::Everything)) {
        let keys = std::fs::read_to_string(lab.sim(&ran_on[&job.n]).home_dir().join(".ssh/authorized_keys")).unwrap();
        assert!(keys.lines().any(|l| l == key(job.n)), "job {}: {keys}", job.n);
    }
    // The secret's value is nowhere in the lab: not in the server's database or blobs, the
    // agents' spools and job directories, the CLI's files, or any process's log.
    for (path, bytes) in lab.files() {
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET_VALUE), "{} holds the secret value", path.display());
    }
}

/// Checks one job; returns the device that ran it.
async fn check(lab: &Lab, job: &Job, id: &str) -> (usize, String) {
    let what = format!("job {} ({:?}, {id})", job.n, job.kind);
    // `poll` prints the whole output once and exits 0 for a job that passed, 1 otherwise.
    let poll = lab.poll(id, Duration::from_secs(180)).await;
    let results = lab.results(id).await;
    assert_eq!(results["job_state"], "complete", "{what}: {results:#}");
    assert_eq!(statuses(&results), expect(&job.statuses), "{what}: {results:#}");
    let passed = job.statuses.iter().all(|(_, s)| *s == 0);
    poll.code(if passed { 0 } else { 1 });
    for needle in &job.output {
        assert!(poll.stdout.contains(needle.as_str()), "{what}: {needle:?} not in the output:\n{}", poll.stdout);
    }
    for text in [&poll.stdout, &poll.stderr, &results.to_string()] {
        assert!(!text.contains(SECRET_VALUE), "{what}: the secret leaked:\n{text}");
    }
    // The output `poll` printed is the phases' outputs, in phase order, each once.
    let phases: String = phasebox_client::PHASES
        .iter()
        .filter_map(|p| results.get(format!("{p}_output")).and_then(Value::as_str))
        .collect();
    assert_eq!(polled_output(&poll.stdout), phases, "{what}: poll's output against the results' outputs");

    let dut = results["device_info"]["agent_name"].as_str().unwrap_or_default().to_owned();
    assert!(lab.sims.contains_key(dut.as_str()), "{what}: ran on {dut:?}");

    let artifacts = lab.artifacts(id).await;
    if job.artifacts.is_empty() {
        assert_eq!(artifacts, None, "{what}: no artifacts expected");
    } else {
        assert_eq!(artifacts.as_ref(), Some(&job.artifacts), "{what}");
    }
    (job.n, dut)
}
