//! Faults: an agent killed with SIGKILL mid-phase and started again; the server stopped for
//! 30 s in the middle of a job.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::lab::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_phase_and_restarted_ends_the_job_clearly_and_keeps_its_output() {
    let mut lab = Lab::start(Setup::default()).await;
    let id = lab.submit(&json!({"job_queue": "sim-a1", "test_data": {"test_cmds": counting(600, "0.05")}}), &[]).await;
    lab.wait_output(&id, "line 10\n", Duration::from_secs(60)).await;
    assert_eq!(lab.sim("sim-a1").running_commands(), 1);

    lab.kill_agent("agent-a").await;
    let before = lab.output(&id).await;
    assert!(numbered_lines(&before).len() >= 10, "{before}");
    // The device notices its session is gone and stops the command.
    lab.wait_until(Duration::from_secs(30), "the command on sim-a1 stopped", || async {
        lab.sim("sim-a1").running_commands() == 0
    })
    .await;

    // The other agent keeps taking work meanwhile.
    let other = lab.submit(&json!({"job_queue": QUEUE, "test_data": {"test_cmds": "echo still served"}}), &[]).await;
    lab.poll(&other, Duration::from_secs(60)).await.ok();
    let results = lab.results(&other).await;
    let dut = results["device_info"]["agent_name"].as_str().unwrap();
    assert!(dut.starts_with("sim-b"), "a job taken while agent-a was dead ran on {dut}: {results:#}");

    // Restarted on its spool, the agent reports the job it was running as ended, after
    // everything it had delivered.
    lab.start_agent("agent-a");
    let poll = lab.poll(&id, Duration::from_secs(90)).await;
    poll.code(1);
    let results = lab.results(&id).await;
    assert_eq!(results["job_state"], "complete", "{results:#}");
    assert_eq!(statuses(&results), expect(&[("test", 100)]), "{results:#}");
    let after = lab.output(&id).await;
    assert!(after.starts_with(&before), "what was delivered before the kill is kept:\n{before}\n---\n{after}");
    assert_eq!(polled_output(&poll.stdout), after);
    let lines = numbered_lines(&after);
    assert_eq!(lines, (1..=lines.len() as u32).collect::<Vec<_>>(), "every line once, in order");
    let last = after.lines().rfind(|l| !l.is_empty()).unwrap_or_default();
    assert!(
        last.starts_with("phasebox agent: the agent stopped while this job was running (in its test phase)"),
        "the job's last line says why it ended:\n{after}"
    );

    // All of agent-a's devices wait for work again, and take it.
    lab.wait_all_waiting().await;
    assert_eq!(lab.cli(&["agent-status", "sim-a1"], &[]).await.ok().stdout, "waiting\n");
    let next = lab.submit(&json!({"job_queue": "sim-a1", "test_data": {"test_cmds": "echo next job"}}), &[]).await;
    lab.poll(&next, Duration::from_secs(60)).await.ok();
    assert_eq!(statuses(&lab.results(&next).await), expect(&[("test", 0), ("cleanup", 0)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_outlives_the_server_stopped_for_30_seconds_and_all_its_output_arrives_in_order() {
    let mut lab = Lab::start(Setup::default()).await;
    // About 50 s of output, a line every quarter second.
    let id = lab.submit(&json!({"job_queue": QUEUE, "test_data": {"test_cmds": counting(200, "0.25")}}), &[]).await;
    // `poll` follows the job throughout, retrying while the server is away.
    let mut follow = lab.command(&["poll", "--interval", "0.5", &id], &[]);
    follow.stdout(Stdio::piped()).stderr(Stdio::piped());
    let follow = follow.spawn().unwrap();
    lab.wait_output(&id, "line 8\n", Duration::from_secs(60)).await;

    lab.stop_server().await;
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The job ran on meanwhile.
    assert_eq!(lab.sims.values().map(|s| s.running_commands()).sum::<usize>(), 1, "the job's command still runs");
    lab.start_server().await;
    eprintln!("the server was away for {:?}", down.elapsed());

    let poll = tokio::time::timeout(Duration::from_secs(150), follow.wait_with_output())
        .await
        .expect("poll ended within 150 s of the server's return")
        .unwrap();
    let stdout = String::from_utf8_lossy(&poll.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&poll.stderr).into_owned();
    assert_eq!(poll.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let all: Vec<u32> = (1..=200).collect();
    assert_eq!(numbered_lines(&stdout), all, "poll printed every line once, in order");
    assert!(stderr.contains("still trying"), "poll noticed the server was away: {stderr}");

    let results = lab.results(&id).await;
    assert_eq!(results["job_state"], "complete", "{results:#}");
    assert_eq!(statuses(&results), expect(&[("test", 0), ("cleanup", 0)]), "{results:#}");
    assert_eq!(numbered_lines(results["test_output"].as_str().unwrap()), all);
    assert_eq!(lab.output(&id).await, polled_output(&stdout), "the server's log is what poll printed");
}
