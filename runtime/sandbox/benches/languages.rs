//! What a plugin's language costs: per example plugin (C, JavaScript, Python from
//! `plugins/examples/dist`, and the Rust `probe` for reference) its size, compile time, load time
//! from the compile cache, cached phase start, and the time of one CPU-bound workload beside the
//! same workload compiled natively in this process. Printed as one markdown table.
//!
//! Run it with `cargo bench -p phasebox-sandbox --bench languages` after
//! `plugins/examples/build.sh`. Run without `--bench` (as `cargo test --all-targets` does) it
//! takes a quick pass with tiny counts, only to show it still works. Missing example components
//! are an error, unless `PHASEBOX_SKIP_LANGUAGE_PLUGINS=1`, as in `tests/sandbox/languages.rs`.
//!
//! - **compile**: a fresh [`Sandbox`] on an empty cache directory loads the file
//!   ([`Plugin::load_time`], cache miss): validation, Cranelift, and writing the cache entry.
//! - **load from cache**: a second fresh [`Sandbox`] on the same directory (a cache hit): what
//!   an agent pays per plugin after a restart.
//! - **cached start**: the whole [`Sandbox::run_phase`] of a phase that does nothing (the
//!   examples' `{"work": 0}`, probe's `args` attack) on the plugin loaded from the cache: a
//!   fresh instance, the call, and its teardown. p50 and p99 after warm-ups. The goal, ≤ 5 ms
//!   for the 12–18 MB JavaScript and Python components, is checked on the p50.
//! - **work**: `run_phase` of `{"work": N}` (probe: the `work` attack), median of a few runs,
//!   beside the native `work(N)` (`plugins/probe/src/work.rs`, compiled natively), and their
//!   ratio. Each phase also returns the checksum, which must equal the native one.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The `probe` plugin's CPU workload, compiled natively from the plugin's own source (whose unit
// tests, built here without a test harness, would otherwise be dead code).
#[path = "../../../plugins/probe/src/work.rs"]
#[allow(dead_code, unused_imports)]
mod work;

use phasebox_sandbox::{
    CacheOutcome, CancellationToken, Capabilities, EngineConfig, Grant, GrantRequest, Limits, PhaseEnd, PhaseInput,
    Plugin, Policy, Sandbox,
};
use work::work;

/// Cached phase start goal for the JavaScript and Python components (p50).
const START_GOAL: Duration = Duration::from_millis(5);

struct Counts {
    start_warmup: usize,
    starts: usize,
    work_rounds: u64,
    work_runs: usize,
}

impl Counts {
    const BENCH: Self = Self { start_warmup: 20, starts: 200, work_rounds: 1_000_000, work_runs: 5 };
    const QUICK: Self = Self { start_warmup: 1, starts: 3, work_rounds: 10_000, work_runs: 1 };
}

/// One plugin to measure.
struct Subject {
    language: &'static str,
    path: PathBuf,
    /// Phase data that does nothing.
    noop: String,
    /// Phase data that runs `work(n)`.
    work: fn(u64) -> String,
    /// The checksum out of a passed phase's summary.
    checksum: fn(&str) -> Option<&str>,
}

fn subjects() -> Vec<Subject> {
    phasebox_guests::build().expect("building the Rust guest plugins");
    let dist = phasebox_guests::plugins_dir().join("examples/dist");
    let example = |language, name: &str| Subject {
        language,
        path: dist.join(format!("{name}.wasm")),
        noop: r#"{"work":0}"#.into(),
        work: |n| format!(r#"{{"work":{n}}}"#),
        checksum: |s| s.rsplit_once(" = ").map(|(_, c)| c),
    };
    vec![
        Subject {
            language: "Rust (probe)",
            path: phasebox_guests::path("probe"),
            noop: r#"{"attack":"args"}"#.into(),
            work: |n| format!(r#"{{"attack":"work","n":{n}}}"#),
            checksum: |s| s.strip_prefix("allowed: "),
        },
        example("C", "verify-c"),
        example("JavaScript", "verify-js"),
        example("Python", "verify-python"),
    ]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let counts = if bench { Counts::BENCH } else { Counts::QUICK };
    let mut subjects = subjects();
    let missing: Vec<_> = subjects.iter().filter(|s| !s.path.exists()).map(|s| s.path.display().to_string()).collect();
    if !missing.is_empty() {
        if std::env::var("PHASEBOX_SKIP_LANGUAGE_PLUGINS").as_deref() == Ok("1") {
            println!("skipped {}: missing and PHASEBOX_SKIP_LANGUAGE_PLUGINS=1", missing.join(", "));
            subjects.retain(|s| s.path.exists());
        } else {
            eprintln!(
                "missing {}: run plugins/examples/build.sh first (or set PHASEBOX_SKIP_LANGUAGE_PLUGINS=1)",
                missing.join(", ")
            );
            std::process::exit(1);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let cache = tempfile::tempdir().expect("cache directory");
    // The cache's key goes beside the cache directory: inside the temporary directory too.
    let config =
        EngineConfig { max_instances: 16, cache_dir: Some(cache.path().join("compiled")), ..EngineConfig::default() };

    // Compile every plugin on one sandbox, then load them all from the cache on another: the
    // second sandbox is the one the phases run on, as an agent's would after a restart.
    let compiling = Sandbox::new(config.clone()).expect("sandbox");
    let compiled: Vec<Arc<Plugin>> =
        subjects.iter().map(|s| load(&compiling, &s.path, CacheOutcome::Compiled)).collect();
    drop(compiling);
    let sandbox = Sandbox::new(config).expect("sandbox");
    let cached: Vec<Arc<Plugin>> = subjects.iter().map(|s| load(&sandbox, &s.path, CacheOutcome::Hit)).collect();

    let native = time_native(counts.work_rounds, counts.work_runs);
    let native_checksum = format!("{:016x}", work(counts.work_rounds));

    println!("## phasebox plugin languages benchmark\n");
    println!("- machine: nproc {}, build: {}", nproc(), if cfg!(debug_assertions) { "debug" } else { "release" });
    println!(
        "- cached start: {} warm-ups + {} phases; work: N = {}, median of {} run(s){}\n",
        counts.start_warmup,
        counts.starts,
        counts.work_rounds,
        counts.work_runs,
        if bench { "" } else { " (quick pass: run with `cargo bench` for real numbers)" }
    );
    println!(
        "| language | component | size | compile | load from cache | cached start p50 / p99 | goal | work(N) | × native |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((subject, first), plugin) in subjects.iter().zip(&compiled).zip(&cached) {
        let starts = runtime.block_on(async {
            let mut times = Vec::with_capacity(counts.starts);
            for i in 0..counts.start_warmup + counts.starts {
                let (elapsed, _) = run(&sandbox, plugin, &subject.noop).await;
                if i >= counts.start_warmup {
                    times.push(elapsed);
                }
            }
            times.sort();
            times
        });
        let (p50, p99) = (percentile(&starts, 50), percentile(&starts, 99));
        let goal = match subject.language {
            "JavaScript" | "Python" => {
                format!("≤ {} ms: {}", START_GOAL.as_millis(), if p50 <= START_GOAL { "met" } else { "missed" })
            }
            _ => "—".into(),
        };
        let work_time = runtime.block_on(async {
            let mut times = Vec::with_capacity(counts.work_runs);
            for _ in 0..counts.work_runs {
                let (elapsed, summary) = run(&sandbox, plugin, &(subject.work)(counts.work_rounds)).await;
                assert_eq!(
                    (subject.checksum)(&summary),
                    Some(native_checksum.as_str()),
                    "{}: work({}) gave `{summary}`",
                    subject.language,
                    counts.work_rounds
                );
                times.push(elapsed);
            }
            times.sort();
            times[times.len() / 2]
        });
        println!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {:.1}× |",
            subject.language,
            subject.path.file_name().unwrap_or_default().to_string_lossy(),
            fmt_bytes(plugin.size() as u64),
            fmt_dur(first.load_time()),
            fmt_dur(plugin.load_time()),
            fmt_dur(p50),
            fmt_dur(p99),
            goal,
            fmt_dur(work_time),
            work_time.as_secs_f64() / native.as_secs_f64(),
        );
    }
    println!("| Rust, native | (this process) | — | — | — | — | — | {} | 1.0× |", fmt_dur(native));
}

fn load(sandbox: &Sandbox, path: &Path, expected: CacheOutcome) -> Arc<Plugin> {
    let plugin = sandbox.load_file(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    assert_eq!(plugin.cache_outcome(), expected, "{}", path.display());
    plugin
}

/// Runs one phase with its events drained by another task; panics unless it passes. Returns
/// how long `run_phase` took and the summary.
async fn run(sandbox: &Sandbox, plugin: &Plugin, data: &str) -> (Duration, String) {
    let limits =
        Limits { timeout: Duration::from_secs(300), output_timeout: Duration::from_secs(300), ..Limits::default() };
    let policy = Policy { allow: Capabilities::everything(), limits, ..Policy::default() };
    let grant =
        Grant::resolve("test", &plugin.manifest().capabilities, &policy, &GrantRequest::default(), Path::new("."))
            .expect("resolving the grant");
    let input = PhaseInput {
        phase: "test".into(),
        job_id: "00000000-0000-4000-8000-000000000006".into(),
        data_json: data.into(),
        dut: vec![("name".into(), "bench-dut".into())],
    };
    let (tx, mut rx) = phasebox_sandbox::channel();
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let started = Instant::now();
    let report = sandbox
        .run_phase(plugin, &grant, &input, &BTreeMap::new(), tx, CancellationToken::new())
        .await
        .expect("the phase starts");
    let elapsed = started.elapsed();
    drain.await.expect("event drain");
    match report.end {
        PhaseEnd::Passed { summary } => (elapsed, summary),
        other => panic!("{} with {data}: {other}", plugin.name()),
    }
}

/// The median time of `work(n)` compiled natively.
fn time_native(n: u64, runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            black_box(work(black_box(n)));
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e6 { format!("{:.1} kB", n / 1e3) } else { format!("{:.1} MB", n / 1e6) }
}

fn nproc() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}
