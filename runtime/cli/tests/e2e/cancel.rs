//! `phasebox cancel` while a job provisions (on one agent) and while one tests (on the other).

use std::time::{Duration, Instant};

use phasebox_dutsim::BootMode;
use serde_json::{Value, json};

use crate::lab::*;

/// Cancels `id` with the CLI: the server says so at once (`poll` ends, a second cancel is
/// refused), and the agent stops the running phase, runs cleanup and reports, promptly.
/// Returns the results.
async fn cancel(lab: &Lab, id: &str) -> Value {
    let asked = Instant::now();
    lab.cli(&["cancel", id], &[]).await.ok();
    let poll = lab.poll(id, Duration::from_secs(60)).await;
    poll.code(1);
    assert!(poll.stderr.contains("Job cancelled"), "{}", poll.stderr);
    assert_eq!(lab.cli(&["status", id], &[]).await.ok().stdout, "cancelled\n");
    lab.cli(&["cancel", id], &[]).await.fails(2, "Invalid job ID specified or the job is already completed/cancelled.");
    let client = lab.client();
    lab.wait_until(Duration::from_secs(60), &format!("{id} reported after its cleanup"), || async {
        client.get_results(id).await.is_ok_and(|r| r.get("cleanup_status").is_some())
    })
    .await;
    let took = asked.elapsed();
    eprintln!("{id}: cancel → cleanup reported in {took:?}");
    assert!(took < Duration::from_secs(30), "the job ended {took:?} after the cancel");
    let results = lab.results(id).await;
    assert_eq!(results["job_state"], "cancelled", "{results:#}");
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_provision_or_test_ends_the_job_and_the_devices_work_on() {
    let lab = Lab::start(Setup::default()).await;
    let image_url = format!("{}/images/e2e.img", lab.images.url());

    // sim-a1 (agent-a) will not come back from its power-on: provision waits for it.
    lab.sim("sim-a1").set_boot_mode(BootMode::Never);
    let provisioning = lab
        .submit(
            &json!({
                "job_queue": "sim-a1",
                "provision_data": {"url": image_url},
                "test_data": {"test_cmds": "echo never tested"},
            }),
            &[],
        )
        .await;
    // sim-b1 (agent-b) runs a test that would take minutes.
    let testing = lab
        .submit(
            &json!({
                "job_queue": "sim-b1",
                "test_data": {"test_cmds": "echo 'test started'\nsleep 300\necho 'test finished'"},
            }),
            &[],
        )
        .await;

    lab.wait_output(&provisioning, "powering sim-a1 on", Duration::from_secs(60)).await;
    assert_eq!(lab.cli(&["status", &provisioning], &[]).await.ok().stdout, "provision\n");
    lab.wait_output(&testing, "test started", Duration::from_secs(60)).await;
    assert_eq!(lab.cli(&["status", &testing], &[]).await.ok().stdout, "test\n");
    assert_eq!(lab.sim("sim-b1").running_commands(), 1, "the test runs on sim-b1");

    let (provision, test) = tokio::join!(cancel(&lab, &provisioning), cancel(&lab, &testing));

    // Provision stopped (247, as Testflinger's agent reports a killed phase); nothing after it
    // ran but cleanup.
    assert_eq!(statuses(&provision), expect(&[("provision", 247), ("cleanup", 0)]), "{provision:#}");
    let out = provision["provision_output"].as_str().unwrap();
    assert!(out.contains("Job cancellation was requested, exiting."), "{out}");
    assert!(!lab.output(&provisioning).await.contains("never tested"));

    // The test stopped, and with it the command on the device.
    assert_eq!(statuses(&test), expect(&[("test", 247), ("cleanup", 0)]), "{test:#}");
    let out = test["test_output"].as_str().unwrap();
    assert!(out.contains("test started") && out.contains("Job cancellation was requested, exiting."), "{out}");
    assert!(!out.contains("test finished"), "{out}");
    lab.wait_until(Duration::from_secs(30), "the command on sim-b1 killed", || async {
        lab.sim("sim-b1").running_commands() == 0
    })
    .await;

    // Both devices take the next job: sim-a1 once it boots again.
    lab.sim("sim-a1").set_boot_mode(BootMode::Normal);
    phasebox_device::Device::new(lab.sim("sim-a1").device_config()).unwrap().power_cycle().await.unwrap();
    assert!(lab.sim("sim-a1").wait_booted(Duration::from_secs(30)).await);
    for dut in ["sim-a1", "sim-b1"] {
        let id = lab
            .submit(
                &json!({"job_queue": dut, "provision_data": {"skip": false}, "test_data": {"test_cmds": "echo next job"}}),
                &[],
            )
            .await;
        lab.poll(&id, Duration::from_secs(60)).await.ok();
        let results = lab.results(&id).await;
        assert_eq!(results["device_info"]["agent_name"], dut);
        assert_eq!(statuses(&results), expect(&[("provision", 0), ("test", 0), ("cleanup", 0)]), "{results:#}");
    }
}
