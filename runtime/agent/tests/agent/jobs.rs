//! Jobs end to end: the server's view of a job an agent ran.

use std::io::Read;
use std::time::{Duration, Instant};

use phasebox_client::{Client, ClientConfig, Credentials, Secret};
use phasebox_dutsim::{DutSim, DutSimConfig};
use phasebox_job::Phase;
use serde_json::{Value, json};

use crate::common::*;

const PHASES: [&str; 7] = ["setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup"];

/// A job that runs all seven phases with `hello`, except `allocate` when given.
fn seven_phases(queue: &str, allocate: Value) -> Value {
    json!({
        "job_queue": queue,
        "name": "seven phases",
        "provision_data": {"skip": false},
        "firmware_update_data": {"version": "latest"},
        "test_data": {"test_cmds": "true"},
        "allocate_data": allocate,
        "reserve_data": {"ssh_keys": ["lp:someone"]},
    })
}

fn probe(attack: Value) -> Value {
    let mut data = attack;
    data["phasebox"] = json!({"plugin": "probe"});
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_to_complete_over_long_poll_with_fragments_in_order_results_and_artifacts() {
    logging();
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::new("dut-a", "qa")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let client = server.anon();
    wait_until(Duration::from_secs(60), "dut-a registered", || async {
        server.agent_doc("dut-a").await.is_some_and(|d| d["state"] == "waiting")
    })
    .await;
    // Its queue is advertised, as `testflinger-cli list-queues` shows them.
    wait_until(Duration::from_secs(30), "queue qa advertised", || async {
        client.list_queues().await.is_ok_and(|q| q.contains_key("qa"))
    })
    .await;

    let job = seven_phases(
        "qa",
        probe(json!({"attack": "write-file", "path": "/artifacts/report.txt", "content": "all good\n"})),
    );
    let job_id = client.submit_job(&job).await.unwrap();
    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(10), "job finished", || async {
        agent.seen.finished.lock().unwrap().iter().any(|(_, _, j)| *j == job_id)
    })
    .await;

    for phase in PHASES {
        assert_eq!(results[format!("{phase}_status")], 0, "{phase}: {results:#}");
    }
    for phase in ["setup", "provision", "test", "cleanup"] {
        let out = results[format!("{phase}_output")].as_str().unwrap();
        assert!(out.contains(&format!("hello from {phase} of job {job_id} on dut-a")), "{phase}: {out}");
    }
    assert_eq!(results["device_info"]["agent_name"], "dut-a");

    // Every output fragment arrived, numbered from 0 in the order sent.
    let fragments = server.fragments(&job_id).await;
    let text = assert_in_order(&fragments);
    let setup_at = text.find("hello from setup").unwrap();
    let cleanup_at = text.find("hello from cleanup").unwrap();
    assert!(setup_at < cleanup_at, "{text}");

    // The artifacts, uploaded before the final result.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("artifacts.tar.gz");
    client.download_artifacts(&job_id, &archive).await.unwrap();
    let mut files = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut body = String::new();
        entry.read_to_string(&mut body).unwrap();
        files.push((entry.path().unwrap().display().to_string(), body));
    }
    assert!(files.iter().any(|(p, b)| p == "artifacts/report.txt" && b == "all good\n"), "{files:?}");

    // The server saw the states Testflinger's agent posts, in order, and the DUT is free again.
    let states: Vec<String> = server
        .state
        .store
        .events_after(&job_id, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "state")
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok()?["job_state"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(states, ["setup", "provision", "firmware_update", "test", "allocate", "reserve", "complete"]);
    wait_until(Duration::from_secs(10), "dut-a waiting again", || async {
        server.agent_doc("dut-a").await.is_some_and(|d| d["state"] == "waiting" && d["job_id"] == "")
    })
    .await;
    // Nothing is left behind: no record, no spool, no job directory.
    let left: Vec<_> = setup
        .files()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.ends_with("agent.toml") && !p.ends_with("agent.secret"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("runner-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    agent.stop().await;
    let doc = server.agent_doc("dut-a").await.unwrap();
    assert_eq!((doc["state"].as_str(), doc["comment"].as_str()), (Some("offline"), Some("phasebox agent: stopped")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_to_complete_with_testflinger_polling() {
    logging();
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), "testflinger", "", &[Dut::new("dut-tf", "qt")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let client = server.anon();
    let job_id = client.submit_job(&seven_phases("qt", json!({"allocate": true}))).await.unwrap();
    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    for phase in PHASES {
        assert_eq!(results[format!("{phase}_status")], 0, "{phase}: {results:#}");
    }
    assert_in_order(&server.fragments(&job_id).await);
    agent.stop().await;
}

async fn cancel_during_a_phase(protocol: &str) {
    logging();
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), protocol, "", &[Dut::new("dut-c", "qc")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let client = server.anon();
    let job = seven_phases("qc", probe(json!({"attack": "sleep", "ms": 60_000})));
    let job_id = client.submit_job(&job).await.unwrap();
    agent.seen.wait_for(Duration::from_secs(60), Seen::phase_started(Phase::Allocate)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let asked = Instant::now();
    client.cancel_job(&job_id).await.unwrap();
    let ended = agent.seen.wait_for(Duration::from_secs(30), Seen::phase_ended(Phase::Allocate)).await;
    let latency = ended.duration_since(asked);
    eprintln!("{protocol}: cancel → allocate phase ended: {latency:?}");
    assert!(latency < Duration::from_secs(5), "{protocol}: cancel took {latency:?}");

    wait_until(Duration::from_secs(30), "job finished", || async {
        agent.seen.finished.lock().unwrap().iter().any(|(_, _, j)| *j == job_id)
    })
    .await;
    let results = client.get_results(&job_id).await.unwrap();
    assert_eq!(results["job_state"], "cancelled", "{results:#}");
    assert_eq!(results["allocate_status"], 247, "{results:#}");
    assert_eq!(results["cleanup_status"], 0, "cleanup runs after a cancel: {results:#}");
    assert!(results.get("reserve_status").is_none(), "{results:#}");
    let out = results["allocate_output"].as_str().unwrap();
    assert!(out.contains("Job cancellation was requested, exiting."), "{out}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_ends_the_running_phase_promptly_with_long_poll() {
    cancel_during_a_phase("phasebox").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_ends_the_running_phase_promptly_with_testflinger_polling() {
    cancel_during_a_phase("testflinger").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_device_redacted_everywhere_and_never_touch_the_agents_disk() {
    logging();
    const TOKEN: &str = "s3cr3t-token-value-42";
    let sim = DutSim::start(DutSimConfig { name: "sim-s".into(), ..Default::default() }).await.unwrap();
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::on_sim("sim-s", "qs", &sim)]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let user = server.user();
    user.put_secret(USER_ID, "lab/token", &Secret::new(TOKEN)).await.unwrap();
    let job = json!({
        "job_queue": "qs",
        "test_data": {
            "test_cmds": "echo \"token=$API_TOKEN\"\necho \"image=$DUT_IMAGE\"",
            "secrets": {"API_TOKEN": "lab/token"},
        },
    });
    let job_id = user.submit_job(&job).await.unwrap();
    // While the job runs, nothing on the agent's disk holds the value.
    let watcher = {
        let files = setup.dir.path().to_owned();
        tokio::spawn(async move {
            for _ in 0..200 {
                assert_no_secret(&files, TOKEN);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let results = wait_state(&user, &job_id, &["complete"], Duration::from_secs(60)).await;
    watcher.await.unwrap();
    assert_eq!(results["test_status"], 0, "{results:#}");
    let out = results["test_output"].as_str().unwrap();
    assert!(out.contains("token=**") && out.contains("image=factory-image"), "{out}");
    assert!(!out.contains(TOKEN), "{out}");
    assert!(!output_text(&user, &job_id).await.contains(TOKEN));
    assert_no_secret(setup.dir.path(), TOKEN);
    // The device's cleanup action (power-off) ran after the job.
    wait_until(Duration::from_secs(10), "device powered off", || async { !sim.is_powered() }).await;
    agent.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_a_plugin_splits_escapes_or_writes_into_artifacts_never_reaches_the_server() {
    logging();
    const TOKEN: &str = "Sp1it-s3cret-Value+42";
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::new("dut-l", "ql")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let user = server.user();
    user.put_secret(USER_ID, "lab/token", &Secret::new(TOKEN)).await.unwrap();
    let job = json!({
        "job_queue": "ql",
        "test_data": {"test_cmds": "true", "secrets": {"TOKEN": "lab/token"}},
        "allocate_data": {
            "attack": "leak-secret", "name": "TOKEN", "artifacts": "/artifacts",
            "phasebox": {"plugin": "probe", "secrets": ["TOKEN"]},
        },
    });
    let job_id = user.submit_job(&job).await.unwrap();
    let results = wait_state(&user, &job_id, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["allocate_status"], 0, "{results:#}");
    // What the agent posted: output fragments, results, the artifacts archive.
    let mut posted = vec![
        ("output", output_text(&user, &job_id).await),
        ("results", results.to_string()),
        ("fragments", format!("{:?}", server.fragments(&job_id).await)),
    ];
    let archive = setup.dir.path().join("artifacts.tar.gz");
    user.download_artifacts(&job_id, &archive).await.unwrap();
    let mut text = String::new();
    let bytes = std::fs::read(&archive).unwrap();
    for entry in tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice())).entries().unwrap() {
        let mut entry = entry.unwrap();
        text.push_str(&String::from_utf8_lossy(&entry.path_bytes()));
        if let Some(target) = entry.link_name_bytes() {
            text.push_str(&String::from_utf8_lossy(&target));
        }
        entry.read_to_string(&mut text).unwrap();
    }
    posted.push(("artifacts", text));
    let secret = phasebox_redact::Secret::new(TOKEN);
    let token = phasebox_redact::mask_token(&secret);
    for (what, text) in &posted {
        for form in &phasebox_redact::encoded_forms(&secret) {
            let form = String::from_utf8_lossy(form.bytes());
            assert!(!text.contains(form.as_ref()), "the {what} the agent posted hold {form:?}:\n{text}");
        }
        assert!(!text.contains('\x1b'), "the {what} the agent posted hold an escape: {text:?}");
    }
    assert!(posted[0].1.matches(&token).count() >= 4, "every attempt is masked: {}", posted[0].1);
    assert!(posted[3].1.contains(&format!("token={token}")), "{}", posted[3].1);
    agent.stop().await;
}

fn assert_no_secret(dir: &std::path::Path, secret: &str) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{} holds the secret value", p.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_states_set_on_the_server_are_honoured() {
    logging();
    let server = TestServer::start().await;
    // The default 30 s long-poll: a state set on the server ends the waiting claim at once.
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::new("dut-m", "qm")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let client = server.anon();
    let mut admin = ClientConfig::new(server.url());
    admin.credentials = Some(Credentials::new(AGENT_ID, AGENT_SECRET));
    let admin = Client::new(admin).unwrap();
    wait_until(Duration::from_secs(60), "registered", || async {
        server.agent_doc("dut-m").await.is_some_and(|d| d["state"] == "waiting")
    })
    .await;

    // Maintenance: no job is taken.
    admin.post_agent_data("dut-m", &json!({"state": "maintenance", "comment": "new cable"})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job_id = client.submit_job(&json!({"job_queue": "qm"})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(client.job_state(&job_id).await.unwrap(), "waiting");
    // Back online: the job runs.
    admin.post_agent_data("dut-m", &json!({"state": "waiting", "comment": ""})).await.unwrap();
    wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;

    // Restart: the DUT is loaded again and takes jobs again.
    admin.post_agent_data("dut-m", &json!({"state": "restart", "comment": ""})).await.unwrap();
    wait_until(Duration::from_secs(30), "restarted", || async {
        server.agent_doc("dut-m").await.is_some_and(|d| d["state"] == "waiting")
    })
    .await;
    let job_id = client.submit_job(&json!({"job_queue": "qm"})).await.unwrap();
    wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_are_downloaded_once_complete_and_mounted_for_their_phase() {
    logging();
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::new("dut-at", "qa2")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let client = server.anon();
    let job = json!({
        "job_queue": "qa2",
        "firmware_update_data": {
            "attachments": [{"agent": "fw.bin"}],
            "attack": "read-file",
            "path": "/attachments/fw.bin",
            "phasebox": {"plugin": "probe"},
        },
    });
    let job_id = client.submit_job(&job).await.unwrap();
    // Not dispatched until the archive is there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.job_state(&job_id).await.unwrap(), "waiting");

    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let body = b"firmware 2.0\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "firmware_update/fw.bin", &body[..]).unwrap();
    let archive = archive.into_inner().unwrap().finish().unwrap();
    client.upload_attachments(&job_id, archive).await.unwrap();

    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["firmware_update_status"], 0, "{results:#}");
    let read = agent.seen.events.lock().unwrap().iter().find_map(|(_, _, r)| match &r.event {
        phasebox_job::JobEvent::PhaseEnd { phase: Phase::FirmwareUpdate, reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(read.as_deref().is_some_and(|r| r.contains("allowed: firmware 2.0")), "{read:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_the_runner_cannot_plan_ends_with_the_reason() {
    logging();
    let server = TestServer::start().await;
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::new("dut-r", "qr2")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let client = server.anon();
    let job = json!({"job_queue": "qr2", "test_data": {"test_cmds": "true", "phasebox": {"plugin": "no-such-plugin"}}});
    let job_id = client.submit_job(&job).await.unwrap();
    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["setup_status"], 100, "{results:#}");
    let out = results["setup_output"].as_str().unwrap();
    assert!(out.contains("phasebox agent: the job cannot start") && out.contains("no-such-plugin"), "{out}");
    // The DUT takes the next job.
    let next = client.submit_job(&json!({"job_queue": "qr2"})).await.unwrap();
    wait_state(&client, &next, &["complete"], Duration::from_secs(60)).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_dut_sends_heartbeats() {
    logging();
    let server = TestServer::start().await;
    let extra = "heartbeat = \"300ms\"\nlong_poll = \"1s\"";
    let setup = AgentSetup::new(&server.url(), "phasebox", extra, &[Dut::new("dut-h", "qh")]);
    server.bind(&setup).await;
    let agent = RunningAgent::start(&setup);
    let updated = || async { server.state.store.get_agent("dut-h").await.unwrap().map(|(_, at)| at) };
    wait_until(Duration::from_secs(60), "registered", || async { updated().await.is_some() }).await;
    let first = updated().await.unwrap();
    wait_until(Duration::from_secs(10), "heartbeat", || async { updated().await.unwrap() > first }).await;
    assert_eq!(server.agent_doc("dut-h").await.unwrap()["state"], "waiting");
    agent.stop().await;
}

/// A webhook receiver: records the body of every PUT, answers 200.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    while data.len() < end + 4 + length {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Ok(body) = serde_json::from_slice(&data[end + 4..end + 4 + length]) {
                        bodies.lock().unwrap().push(body);
                    }
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                    return;
                }
            });
        }
    });
    (url, seen, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_events_reach_the_jobs_webhook_and_never_hold_up_the_job() {
    logging();
    let (hook, seen, receiver) = webhook_receiver().await;
    // A server whose webhook host is the receiver.
    let dir = tempfile::tempdir().unwrap();
    let mut config = phasebox_server::ServerConfig::in_dir(dir.path());
    config.webhook_url = Some(hook.clone());
    let server = TestServer::start_in(dir, config, "127.0.0.1:0".parse().unwrap()).await;
    phasebox_server::auth::create_client(
        &server.state.store,
        AGENT_ID,
        AGENT_SECRET,
        phasebox_server::auth::Role::Agent,
    )
    .await
    .unwrap();
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[Dut::new("dut-w", "hooks")]);
    server.bind(&setup).await;
    let _agent = RunningAgent::start(&setup);
    let client = server.anon();
    let mut job = seven_phases("hooks", json!({}));
    job["job_status_webhook"] = json!(hook);
    let job_id = client.submit_job(&job).await.unwrap();
    wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(10), "the last status event forwarded", || async {
        seen.lock().unwrap().last().is_some_and(|b| {
            b["events"].as_array().is_some_and(|e| e.last().is_some_and(|last| last["event_name"] == "job_end"))
        })
    })
    .await;
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["agent_id"], "dut-w");
    assert_eq!(last["job_queue"], "hooks");
    let names: Vec<&str> =
        last["events"].as_array().unwrap().iter().map(|e| e["event_name"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"job_start"), "{names:?}");
    // allocate_data is empty, so allocate is skipped: no events for it.
    assert!(!names.iter().any(|n| n.starts_with("allocate")), "{names:?}");
    for phase in PHASES.iter().filter(|p| **p != "allocate") {
        let start = names.iter().position(|n| *n == format!("{phase}_start"));
        let success = names.iter().position(|n| *n == format!("{phase}_success"));
        assert!(start.is_some() && success > start, "{phase}: {names:?}");
    }
    assert_eq!(&names[names.len() - 2..], ["normal_exit", "job_end"], "{names:?}");
    // The list is cumulative: each post holds the one before it.
    let counts: Vec<usize> = seen.lock().unwrap().iter().map(|b| b["events"].as_array().unwrap().len()).collect();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{counts:?}");
    receiver.abort();

    // A webhook the server cannot forward to (no webhook host configured): the events are
    // dropped with a log, and the job's own output and results are not held up.
    let plain = TestServer::start().await;
    let setup = AgentSetup::new(&plain.url(), "phasebox", "", &[Dut::new("dut-x", "hooks")]);
    plain.bind(&setup).await;
    let _agent = RunningAgent::start(&setup);
    let mut job = seven_phases("hooks", json!({}));
    job["job_status_webhook"] = json!("http://127.0.0.1:9/hook");
    let job_id = plain.anon().submit_job(&job).await.unwrap();
    let results = wait_state(&plain.anon(), &job_id, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["test_status"], 0, "{results:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infrastructure_error_takes_the_device_offline() {
    logging();
    let server = TestServer::start().await;
    // No device configured: noprovision cannot reach the DUT, an infrastructure error.
    let mut dut = Dut::new("dut-q", "quarantine");
    dut.runner.plugins.push(phasebox_guests::path("noprovision"));
    let setup = AgentSetup::new(&server.url(), "phasebox", "", &[dut]);
    server.bind(&setup).await;
    let _agent = RunningAgent::start(&setup);
    let client = server.anon();
    let job = json!({
        "job_queue": "quarantine",
        "provision_data": {"skip": false, "phasebox": {"plugin": "noprovision"}},
        "test_data": {"test_cmds": "true"},
    });
    let job_id = client.submit_job(&job).await.unwrap();
    let results = wait_state(&client, &job_id, &["complete"], Duration::from_secs(60)).await;
    assert_eq!(results["provision_status"], 3, "{results:#}");
    assert!(results.get("test_status").is_none(), "a failed provision stops the job: {results:#}");
    wait_until(Duration::from_secs(10), "dut-q offline", || async {
        server.agent_doc("dut-q").await.is_some_and(|d| d["state"] == "offline")
    })
    .await;
    let doc = server.agent_doc("dut-q").await.unwrap();
    let expected = format!("Set to offline by agent. Recovery failed during job '{job_id}' execution.");
    assert!(doc["comment"].as_str().is_some_and(|c| c.contains(&expected)), "{doc:?}");
    let output = client.get_log(&job_id, phasebox_client::LogType::Output, 0).await.unwrap().text();
    assert!(output.contains("infrastructure error: the device is taken offline"), "{output}");
}
