//! Restricted queues: only their owners may submit to them.

use std::time::Duration;

use serde_json::json;

use crate::lab::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_restricted_queue_refuses_clients_without_rights_and_runs_its_owners_jobs() {
    // sim-b3's own queue belongs to `owner`; sim-b3 then serves that queue only.
    let lab = Lab::start(Setup { restricted: vec![("sim-b3", OWNER)] }).await;
    let job = json!({"job_queue": "sim-b3", "test_data": {"test_cmds": "echo \"owner's job on $DUT_NAME\""}});
    let file = lab.job_file(&job);

    let anonymous = lab.cli(&["submit", &file], &[]).await;
    anonymous.fails(2, "Authentication required to push to restricted queue sim-b3");
    let stranger = [("PHASEBOX_CLIENT_ID", STRANGER), ("PHASEBOX_SECRET_KEY", CLIENT_SECRET)];
    let refused = lab.cli(&["submit", &file], &stranger).await;
    refused.fails(2, "Not authorized to push to restricted queue sim-b3");
    for run in [&anonymous, &refused] {
        assert!(!run.stdout.contains("job_id"), "no job was made: {}", run.stdout);
    }
    let queued = lab.client().queue_jobs("sim-b3").await.unwrap();
    assert!(queued.is_empty(), "nothing was queued: {queued:?}");

    // The owner's job runs, on sim-b3: `submit --poll` follows it to the end.
    let owner = [("PHASEBOX_CLIENT_ID", OWNER), ("PHASEBOX_SECRET_KEY", CLIENT_SECRET)];
    let run = lab.cli(&["submit", "--poll", "--interval", "0.3", &file], &owner).await;
    run.ok();
    let id = run.stdout.lines().find_map(|l| l.strip_prefix("job_id: ")).expect("a job id line").trim().to_owned();
    assert!(run.stdout.starts_with("Job submitted successfully!\n"), "{}", run.stdout);
    assert_eq!(run.stdout.matches("owner's job on sim-b3\n").count(), 1, "{}", run.stdout);
    assert!(run.stderr.contains("Job completed"), "{}", run.stderr);
    let shown: serde_json::Value = serde_json::from_str(&lab.cli(&["show", &id], &owner).await.ok().stdout).unwrap();
    assert_eq!(shown["job_queue"], "sim-b3");
    let results = lab.results(&id).await;
    assert_eq!(results["device_info"]["agent_name"], "sim-b3");
    assert_eq!(statuses(&results), expect(&[("test", 0), ("cleanup", 0)]), "{results:#}");

    // The stranger's jobs go to the shared queue, which sim-b3 no longer serves.
    let mut ids = Vec::new();
    for n in 0..6 {
        let job = json!({"job_queue": QUEUE, "test_data": {"test_cmds": format!("echo shared {n}")}});
        ids.push(lab.submit(&job, &stranger).await);
    }
    for id in ids {
        lab.poll(&id, Duration::from_secs(60)).await.ok();
        let dut = lab.results(&id).await["device_info"]["agent_name"].as_str().unwrap().to_owned();
        assert_ne!(dut, "sim-b3", "{id} ran on the restricted device");
    }
}
