//! End-to-end overhead of the job engine in one process: plan a Testflinger job and run all its
//! phases in the sandbox, plugins preloaded. Prints a table; not a timed test.
//!
//! `cargo bench -p phasebox-job` (optionally `-- <iterations>`, default 300).
//!
//! The "no-op" plugin is `hello`: per phase it prints a line, logs it, reports a case and a
//! measurement, and returns — what a trivial phase does. Goal: a 7-phase job in ≤ 5 ms.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phasebox_job::{
    CancellationToken, JobInputs, JobPlan, JobSpec, NullSink, PluginSet, RunnerConfig, Secret, run_job, write_outputs,
};
use phasebox_sandbox::{EngineConfig, Sandbox};

const SEVEN_PHASES: &str = "job_queue: bench\n\
    provision_data: {url: 'http://images.example.com/noble.img.xz'}\n\
    firmware_update_data: {version: latest}\n\
    test_data: {test_cmds: 'true', secrets: {TOKEN: lab/token}}\n\
    allocate_data: {allocate: true}\n\
    reserve_data: {ssh_keys: ['lp:bench'], timeout: 60}\n";

const TWO_PHASES: &str = "job_queue: bench\n";

struct Case {
    name: &'static str,
    job: &'static str,
    secret: bool,
    write: bool,
    /// Plan only, do not run: what stage two costs on its own.
    plan_only: bool,
    goal: Option<Duration>,
}

fn main() {
    let iterations: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(300);
    phasebox_guests::build().expect("building guest plugins");
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/runner.toml");
    let runner = RunnerConfig::from_file(&config_path).expect("config/runner.toml");
    let sandbox =
        Arc::new(Sandbox::new(EngineConfig { max_instances: 16, ..EngineConfig::default() }).expect("sandbox"));
    let plugins = PluginSet::load_into(sandbox.clone(), &runner).expect("plugins");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");

    let case = |name, job, goal| Case { name, job, secret: false, write: false, plan_only: false, goal };
    let cases = [
        case("7-phase no-op job: plan + run", SEVEN_PHASES, Some(Duration::from_millis(5))),
        Case { secret: true, ..case("  … with a secret (redaction on)", SEVEN_PHASES, None) },
        Case { write: true, ..case("  … + write_outputs (json, junit, jsonl)", SEVEN_PHASES, None) },
        Case { plan_only: true, ..case("  … plan only (JobPlan::new)", SEVEN_PHASES, None) },
        case("2-phase job (setup, cleanup): plan + run", TWO_PHASES, None),
    ];

    println!("phasebox-job: end-to-end job overhead, one process, plugins preloaded");
    println!("allocation: {:?}; {iterations} iterations after 30 warm-up runs", sandbox.allocation());
    println!();
    println!("| {:<42} | {:>9} | {:>9} | {:>9} | {:>8} | {:<12} |", "case", "p50", "p99", "mean", "phases", "goal");
    println!("|{:-<44}|{:->11}|{:->11}|{:->11}|{:->10}|{:-<14}|", "", "", "", "", "", "");
    for case in &cases {
        let spec = JobSpec::from_yaml(case.job).expect("job");
        let mut samples = Vec::with_capacity(iterations);
        let mut phases = 0;
        for i in 0..iterations + 30 {
            let dir = tempfile::tempdir().expect("tempdir");
            let job_dir = dir.path().join("job");
            let out_dir = dir.path().join("out");
            let inputs = if case.secret {
                JobInputs {
                    secrets: [("TOKEN".to_owned(), Secret::new("bench-secret-value"))].into(),
                    attachments: None,
                }
            } else {
                JobInputs::default()
            };
            let started = Instant::now();
            let plan = JobPlan::new(&spec, &runner, &plugins, &job_dir).expect("plan");
            if case.plan_only {
                if i >= 30 {
                    samples.push(started.elapsed());
                }
                phases = plan.phases().iter().filter(|p| p.run().is_some()).count();
                continue;
            }
            let outcome =
                rt.block_on(run_job(&plan, inputs, &mut NullSink, CancellationToken::new())).expect("job runs");
            if case.write {
                write_outputs(&outcome, &out_dir).expect("outputs");
            }
            let took = started.elapsed();
            assert!(outcome.passed(), "{:?}", outcome.phases);
            phases = outcome.phases.iter().filter(|p| p.status.is_some()).count();
            if i >= 30 {
                samples.push(took);
            }
        }
        samples.sort();
        let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let goal = match case.goal {
            Some(g) if p(0.5) <= g => format!("≤ {} ms ok", g.as_millis()),
            Some(g) => format!("≤ {} ms MISS", g.as_millis()),
            None => String::new(),
        };
        println!(
            "| {:<42} | {:>9} | {:>9} | {:>9} | {:>8} | {:<12} |",
            case.name,
            ms(p(0.5)),
            ms(p(0.99)),
            ms(mean),
            phases,
            goal
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
