//! Faults: the server away mid-job, the agent killed mid-phase, a broken DUT, SIGTERM.

use std::time::{Duration, Instant};

use phasebox_dutsim::{DutSim, DutSimConfig};
use phasebox_job::{JobEvent, OutputStream, Phase};
use serde_json::json;

use crate::common::*;

/// `test_cmds` printing `line 1` … `line <n>`, one every `pause` seconds.
fn counting(queue: &str, n: u32, pause: &str) -> serde_json::Value {
    json!({
        "job_queue": queue,
        "test_data": {"test_cmds": format!("for i in $(seq 1 {n}); do echo \"line $i\"; sleep {pause}; done")},
    })
}

fn lines(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn output_arrives_complete_and_in_order_across_a_server_restart() {
    logging();
    let sim = DutSim::start(DutSimConfig { name: "sim-r".into(), ..Default::default() }).await.unwrap();
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::on_sim("sim-r", "qr", &sim)]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let job_id = server.anon().submit_job(&counting("qr", 60, "0.1")).await.unwrap();
    // Some output has reached the server.
    wait_until(Duration::from_secs(60), "first lines delivered", || async {
        server.fragments(&job_id).await.iter().any(|f| f.3.contains("line 3"))
    })
    .await;

    let (dir, config, addr) = server.stop().await;
    let down = Instant::now();
    // While the server is away, output goes to the spool.
    let outbox = setup.dir.path().join("spool/sim-r/outbox");
    wait_until(Duration::from_secs(30), "output spooled", || async {
        std::fs::read_dir(&outbox).map(|d| d.count() >= 2).unwrap_or(false)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = TestServer::start_in(dir, config, addr).await;
    eprintln!("server was down {:?}", down.elapsed());

    let client = server.anon();
    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(90)).await;
    assert_eq!(results["test_status"], 0, "{results:#}");
    let fragments = server.fragments(&job_id).await;
    let text = assert_in_order(&fragments);
    assert_eq!(lines(&text), (1..=60).collect::<Vec<_>>(), "{text}");
    assert_eq!(lines(results["test_output"].as_str().unwrap()), (1..=60).collect::<Vec<_>>());
    // The spool is empty again.
    wait_until(Duration::from_secs(10), "spool emptied", || async {
        std::fs::read_dir(setup.dir.path().join("spool/sim-r/outbox")).map(|d| d.count() == 0).unwrap_or(true)
    })
    .await;
    agent.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_phase_reports_the_job_on_restart_and_cleans_the_device_up() {
    logging();
    let sim = DutSim::start(DutSimConfig { name: "sim-k".into(), ..Default::default() }).await.unwrap();
    let server = TestServer::start().await;
    let client = server.anon();
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::on_sim("sim-k", "qk", &sim)]);
    server.bind(&setup).await;
    let agent = KillableAgent::start(&setup);
    let job_id = client.submit_job(&counting("qk", 600, "0.05")).await.unwrap();
    agent.seen.wait_for(Duration::from_secs(60), Seen::phase_started(Phase::Test)).await;
    wait_until(Duration::from_secs(30), "some test output delivered", || async {
        server.fragments(&job_id).await.iter().any(|f| f.2 == "test" && f.3.contains("line 5"))
    })
    .await;
    agent.kill();
    let before = server.fragments(&job_id).await;
    assert!(sim.is_powered());

    // A new agent on the same spool: the job is reported ended, the device cleaned up.
    let agent = RunningAgent::start(&setup);
    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["test_status"], 100, "{results:#}");
    let after = server.fragments(&job_id).await;
    assert_eq!(&after[..before.len()], &before[..], "what was delivered before the kill is still there");
    let numbers: Vec<i64> = after.iter().filter(|f| f.0 == "output").map(|f| f.1).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "fragment numbers keep increasing: {numbers:?}");
    let last = &after.last().unwrap().3;
    assert!(last.contains("the agent stopped while this job was running (in its test phase)"), "{last}");
    wait_until(Duration::from_secs(30), "device powered off by the cleanup", || async { !sim.is_powered() }).await;
    wait_until(Duration::from_secs(30), "the DUT waits for work", || async {
        server.agent_doc("sim-k").await.is_some_and(|d| d["state"] == "waiting" && d["job_id"] == "")
    })
    .await;
    assert!(!setup.dir.path().join("spool/sim-k/current-job.json").exists());

    // And it takes new work.
    let next = client.submit_job(&json!({"job_queue": "qk"})).await.unwrap();
    let results = wait_state(&client, &next, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["setup_status"], 0, "{results:#}");
    agent.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dut_with_a_broken_device_config_does_not_stop_another() {
    logging();
    let server = TestServer::start().await;
    let client = server.anon();
    let good = Dut::new("good", "q-good");
    let mut bad = Dut::new("bad", "q-bad");
    bad.device = Some("this is [not a device config".into());
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[good, bad]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);

    let job_id = client.submit_job(&json!({"job_queue": "q-good", "test_data": {"test_cmds": "true"}})).await.unwrap();
    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["test_status"], 0, "{results:#}");

    wait_until(Duration::from_secs(30), "bad is offline with the reason", || async {
        server.agent_doc("bad").await.is_some_and(|d| {
            d["state"] == "offline" && d["comment"].as_str().is_some_and(|c| c.contains("configuration error"))
        })
    })
    .await;
    let stuck = client.submit_job(&json!({"job_queue": "q-bad"})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(client.job_state(&stuck).await.unwrap(), "waiting");
    // The good one keeps working.
    let again = client.submit_job(&json!({"job_queue": "q-good"})).await.unwrap();
    wait_state(&client, &again, &["complete"], Duration::from_secs(60)).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cancels_a_running_job_within_the_grace_period_and_reports_it() {
    logging();
    let server = TestServer::start().await;
    let client = server.anon();
    let setup = AgentSetup::new(&server.url(), "phasebox", "grace_period = \"2s\"", &[Dut::new("dut-t", "qt")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let job = json!({
        "job_queue": "qt",
        "allocate_data": {"attack": "sleep", "ms": 60_000, "phasebox": {"plugin": "probe"}},
    });
    let job_id = client.submit_job(&job).await.unwrap();
    agent.seen.wait_for(Duration::from_secs(60), Seen::phase_started(Phase::Allocate)).await;
    let seen = agent.seen.clone();

    let stopping = Instant::now();
    agent.stop().await;
    let took = stopping.elapsed();
    eprintln!("stopped in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let results = client.get_results(&job_id).await.unwrap();
    assert_eq!(results["job_state"], "cancelled", "{results:#}");
    assert_eq!(results["allocate_status"], 247, "{results:#}");
    assert_eq!(results["cleanup_status"], 0, "{results:#}");
    let out = results["allocate_output"].as_str().unwrap();
    assert!(out.contains("phasebox agent: the agent is stopping: the job is cancelled"), "{out}");
    assert!(out.contains("Job cancellation was requested, exiting."), "{out}");
    let doc = server.agent_doc("dut-t").await.unwrap();
    assert_eq!(doc["state"], "offline");
    // Output the job wrote before the stop was delivered.
    let saw_output = seen.events.lock().unwrap().iter().any(|(_, _, r)| {
        matches!(&r.event, JobEvent::Output { phase: Phase::Cleanup, stream: OutputStream::Stdout, .. })
    });
    assert!(saw_output);
    assert!(!setup.dir.path().join("spool/dut-t/current-job.json").exists());
}
