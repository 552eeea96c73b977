//! Host resources a guest can make the host hold: each is bounded per phase, counted, and ends
//! the phase with its own reason; one phase that uses all it may hold leaves another its share.
//! The adversarial `hog` plugin holds ever more of one resource per run.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use phasebox_sandbox::{
    Access, CancellationToken, Capabilities, EngineConfig, FileRequest, Grant, GrantRequest, Limits, PhaseEnd,
    PhaseEvent, PhaseInput, Policy, Sandbox, Stop,
};
use serde_json::{Value, json};

use crate::common::{Ran, run_phase, rust_plugin};

fn limits() -> Limits {
    Limits { timeout: Duration::from_secs(60), output_timeout: Duration::from_secs(60), ..Limits::default() }
}

fn policy(limits: Limits) -> Policy {
    Policy { allow: Capabilities::everything_and_loopback(), limits, ..Policy::default() }
}

async fn hog(ask: &GrantRequest, job_dir: &Path, limits: Limits, data: Value) -> Ran {
    let plugin = rust_plugin("hog");
    run_phase(&plugin, &policy(limits), ask, job_dir, data, &BTreeMap::new(), "sim-dut-1", CancellationToken::new())
        .await
        .expect("phase starts")
}

/// A job directory with `scratch/file`, and the request that mounts `scratch` at `/scratch`.
fn scratch() -> (tempfile::TempDir, GrantRequest) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scratch")).unwrap();
    std::fs::write(dir.path().join("scratch/file"), "x").unwrap();
    let ask = GrantRequest {
        files: vec![FileRequest { path: "/scratch".into(), source: "scratch".into(), access: Access::Ro }],
        ..GrantRequest::default()
    };
    (dir, ask)
}

fn events_of(ran: &Ran, pick: impl Fn(&PhaseEvent) -> bool) -> usize {
    ran.events.iter().filter(|e| pick(e)).count()
}

#[tokio::test]
async fn open_files_stop_at_the_handle_limit() {
    let (dir, ask) = scratch();
    let limits = Limits { handles: 64, ..limits() };
    let ran = hog(&ask, dir.path(), limits, json!({"hog": "files", "path": "/scratch/file"})).await;
    assert_eq!(ran.report.end, PhaseEnd::Stopped(Stop::HandleLimit(64)), "{}", ran.report.end);
    assert!(ran.report.end.to_string().contains("held more than its limit of 64 handles"), "{}", ran.report.end);
}

#[tokio::test]
async fn open_sockets_stop_at_the_handle_limit() {
    // The server keeps every connection open, as a hostile peer of the guest would.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let mut ask = GrantRequest::default();
    ask.network.connect = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let limits = Limits { handles: 64, ..limits() };
    let ran = hog(&ask, Path::new("."), limits, json!({"hog": "sockets", "addr": format!("127.0.0.1:{port}")})).await;
    assert_eq!(ran.report.end, PhaseEnd::Stopped(Stop::HandleLimit(64)), "{}", ran.report.end);
}

#[tokio::test]
async fn http_header_maps_stop_at_the_memory_limit() {
    let memory = 64 << 20;
    let limits = Limits { memory, ..limits() };
    let ran = hog(&GrantRequest::default(), Path::new("."), limits, json!({"hog": "http-fields"})).await;
    match ran.report.end {
        // What the host held for the guest and the guest's own memory stay within the limit.
        PhaseEnd::Stopped(Stop::HttpMemoryLimit { limit, host, guest }) => {
            assert_eq!(limit, memory);
            assert!(host + guest > memory && host <= memory, "host {host}, guest {guest}");
        }
        other => panic!("expected the HTTP memory stop, got {other}"),
    }
}

#[tokio::test]
async fn test_results_count_against_the_output_limit() {
    let output = 1 << 20;
    let limits = Limits { output, ..limits() };
    let ran = hog(&GrantRequest::default(), Path::new("."), limits, json!({"hog": "cases"})).await;
    assert_eq!(ran.report.end, PhaseEnd::Stopped(Stop::ResultsLimit(output)), "{}", ran.report.end);
    // Each case carries a name of over 200 bytes: no more than the limit's worth arrived.
    let cases = events_of(&ran, |e| matches!(e, PhaseEvent::Case(_)));
    assert!(cases > 0 && cases * 200 <= output as usize, "{cases} cases");
}

#[tokio::test]
async fn denied_calls_count_against_the_output_limit() {
    let output = 1 << 20;
    let limits = Limits { output, ..limits() };
    let ran = hog(&GrantRequest::default(), Path::new("."), limits, json!({"hog": "denied"})).await;
    assert_eq!(ran.report.end, PhaseEnd::Stopped(Stop::EventsLimit(output)), "{}", ran.report.end);
    let denials = ran.denials("secrets").len();
    // Each denial record is `get NEVER_DECLARED: not granted to this phase` plus its frame.
    assert!(denials > 0 && denials * 64 <= output as usize, "{denials} denials");
}

/// Two DUTs' phases at once in one sandbox whose handle budget holds exactly both phases'
/// limits: the one that holds every handle it may does not take any from the other, which
/// starts and holds all it asked for.
#[tokio::test]
async fn a_phase_that_uses_all_its_handles_leaves_another_phase_its_own() {
    const HANDLES: u64 = 64;
    // Each phase reserves its handle limit and one per mount.
    let sandbox = Sandbox::new(EngineConfig {
        max_instances: 4,
        max_memory: 1 << 30,
        max_handles: Some(2 * (HANDLES + 1)),
        ..EngineConfig::default()
    })
    .expect("sandbox");
    phasebox_guests::build().expect("building the Rust guest plugins");
    let plugin = sandbox.load_file(&phasebox_guests::path("hog")).expect("loading hog");
    let policy = policy(Limits { handles: HANDLES, ..limits() });
    let run = |data: Value| {
        let (sandbox, plugin, policy) = (&sandbox, &plugin, &policy);
        async move {
            let (dir, ask) = scratch();
            let grant = Grant::resolve("test", &plugin.manifest().capabilities, policy, &ask, dir.path()).unwrap();
            let input = PhaseInput { phase: "test".into(), data_json: data.to_string(), ..PhaseInput::default() };
            let (report, _) = sandbox
                .run_phase_collecting(plugin, &grant, &input, &BTreeMap::new(), CancellationToken::new())
                .await
                .expect("phase starts");
            report.end
        }
    };
    let (greedy, modest) = tokio::join!(
        run(json!({"hog": "files", "path": "/scratch/file"})),
        run(json!({"hog": "files", "path": "/scratch/file", "count": HANDLES / 2})),
    );
    assert_eq!(greedy, PhaseEnd::Stopped(Stop::HandleLimit(HANDLES)), "{greedy}");
    assert_eq!(modest, PhaseEnd::Passed { summary: format!("held {}", HANDLES / 2) }, "{modest}");
}
