//! Phase start-up, process spawn, plugin load and memory per concurrent phase, measured in one
//! run and printed as one markdown table.
//!
//! Run it with `cargo bench -p phasebox-sandbox --bench sandbox` (release). Run without `--bench`
//! (as `cargo test --all-targets` does) it takes a quick pass with tiny counts, only to show it
//! still works.
//!
//! Plain `std::time`: each timed row does its warm-up iterations first, then many measured
//! ones, and reports the 50th and 99th percentiles (nearest rank).
//!
//! 1. **Phase start, pooling.** What a phase start costs the agent, from calling
//!    [`Sandbox::run_phase`] until the guest's entry point runs. The ideal probe is the first
//!    event of a plugin whose first action is output, but `hello` reads the monotonic clock (a
//!    host call) before it prints, so the row that carries the goal is the complete `run_phase`
//!    of `probe {"attack":"args"}`, which does next to nothing (parses its data, one
//!    `get-arguments` call, returns): this is also the no-op round trip, and an upper bound on
//!    the start (it includes the instance's teardown). For reference, the time until `hello`'s
//!    first output event arrives at the consumer task, the time the host stamped on that event
//!    (`at`, no scheduler wake-up in it) and `hello`'s complete `run_phase` (one print, one log,
//!    one case, one measurement) are shown too. 2000 iterations after 200 warm-ups.
//! 2. **The same with pooling off** (`EngineConfig { pooling: false, .. }`), on its own
//!    [`Sandbox`]: what the pooling allocator saves.
//! 3. **Process spawn.** `sh -c true` through `std::process::Command`, waited for: what the
//!    sandbox replaces. The ratio spawn / phase start is the goal here, not the absolute time.
//! 4. **Plugin load.** Per bundled plugin: its size, the time to compile it (a fresh
//!    [`Sandbox`] on a fresh, empty cache directory; [`Plugin::load_time`]), and the time to load
//!    it from the compile cache (a second fresh [`Sandbox`] on the same directory; the cache
//!    must report a hit). This is what an agent pays once per plugin, at first use and after a
//!    restart.
//! 5. **1,000 concurrent phases** in this process (`probe {"attack":"idle","ms":3000}`: it
//!    prints one line, then sleeps, so its first event marks "started"; `sleep` prints nothing
//!    and could not be counted). Host RSS (`VmRSS`) after one warm-up phase, and its peak over
//!    samples taken while all phases sleep; the difference / 1000 is the host memory one
//!    concurrent phase costs (guest linear memory, stacks, store and host state together). Also
//!    the time from the first `run_phase` call until the last phase's first event, and how many
//!    phases had started before the first one ended (they must all overlap). If the pool cannot
//!    hold 1000 instances on this machine, the row falls back to on-demand allocation and says
//!    so.
//!
//! Goals: phase start ≤ 50 µs (p50) and ≥ 20× faster than a process spawn; ≤ 2 MB of host
//! memory per concurrent phase. Sizes use decimal units (1 MB = 10⁶ bytes).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use phasebox_sandbox::{
    Allocation, CacheOutcome, CancellationToken, Capabilities, EngineConfig, Grant, GrantRequest, Limits, PhaseEvent,
    PhaseInput, Plugin, Policy, Sandbox,
};

/// Phase start goal: p50 at most this.
const START_GOAL: Duration = Duration::from_micros(50);
/// A phase start must be at least this many times faster than a process spawn.
const SPAWN_RATIO_GOAL: f64 = 20.0;
/// Host memory per concurrent phase: at most this many bytes.
const MEMORY_GOAL: u64 = 2_000_000;

/// How much work each row does.
struct Counts {
    warmup: usize,
    iterations: usize,
    spawn_warmup: usize,
    spawns: usize,
    concurrent: usize,
    sleep_ms: u64,
}

impl Counts {
    const BENCH: Self =
        Self { warmup: 200, iterations: 2000, spawn_warmup: 50, spawns: 500, concurrent: 1000, sleep_ms: 3000 };
    const QUICK: Self = Self { warmup: 5, iterations: 20, spawn_warmup: 2, spawns: 10, concurrent: 20, sleep_ms: 300 };
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let bench = std::env::args().any(|a| a == "--bench");
    let counts = if bench { Counts::BENCH } else { Counts::QUICK };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    phasebox_guests::build().expect("building guest plugins");
    let cache_root = tempfile::tempdir().expect("cache directory");
    // The cache's key goes beside the cache directory: inside the temporary directory too.
    let cache = cache_root.path().join("compiled");
    let mut table = Table::default();

    let loads = load_rows(&cache);
    let pooled = runtime.block_on(start_rows(&counts, &cache, true));
    let on_demand = runtime.block_on(start_rows(&counts, &cache, false));
    let spawn = spawn_row(&counts);
    let concurrent = runtime.block_on(concurrent_row(&counts, &cache));

    pooled.add_to(&mut table, "1");
    on_demand.add_to(&mut table, "2");
    let ratio = |p: fn(&Stats) -> Duration| p(&spawn).as_secs_f64() / p(&pooled.noop).as_secs_f64();
    let (ratio50, ratio99) = (ratio(|s| s.p50), ratio(|s| s.p99));
    table.row(
        "3",
        format!("process spawn `sh -c true`, waited for (n = {})", spawn.n),
        fmt_dur(spawn.p50),
        fmt_dur(spawn.p99),
        "—",
        "—".into(),
    );
    table.row(
        "3",
        "ratio spawn / phase start (row 1, pooling; p50 over p50, p99 over p99)",
        format!("{ratio50:.1}×"),
        format!("{ratio99:.1}×"),
        "≥ 20× (p50)",
        met(ratio50 >= SPAWN_RATIO_GOAL),
    );
    for load in &loads {
        load.add_to(&mut table);
    }
    concurrent.add_to(&mut table);

    println!("## phasebox sandbox benchmark\n");
    println!(
        "- machine: {}, nproc {}, {} RAM, Linux {}",
        cpu_model(),
        nproc(),
        total_memory(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    if std::backtrace::Backtrace::capture().status() == std::backtrace::BacktraceStatus::Captured {
        // wasmtime builds an error in every store drop; with backtraces on, that costs a capture.
        println!("- backtraces are on (RUST_BACKTRACE / RUST_LIB_BACKTRACE): every store drop captures one");
    }
    println!(
        "- build: {}; {} warm-ups + {} iterations per timed row, {} process spawns{}\n",
        if cfg!(debug_assertions) { "debug (unoptimised)" } else { "release" },
        counts.warmup,
        counts.iterations,
        counts.spawns,
        if bench { "" } else { " (quick pass: run with `cargo bench` for real numbers)" },
    );
    table.print();
}

// ---------------------------------------------------------------------------------------------
// Rows 1 and 2: phase start.

/// One plugin and phase data, with its resolved grant and input.
struct Phase {
    plugin: Arc<Plugin>,
    grant: Grant,
    input: PhaseInput,
}

impl Phase {
    fn new(plugin: Arc<Plugin>, data: &str, job_dir: &Path) -> Self {
        let grant =
            Grant::resolve("test", &plugin.manifest().capabilities, &policy(), &GrantRequest::default(), job_dir)
                .expect("resolving the grant");
        let input = PhaseInput {
            phase: "test".into(),
            job_id: "00000000-0000-4000-8000-000000000001".into(),
            data_json: data.into(),
            dut: vec![("name".into(), "bench-dut-1".into())],
        };
        Self { plugin, grant, input }
    }
}

/// Every capability allowed (the grant is then decided by each plugin's manifest); limits far
/// beyond what any phase here takes.
fn policy() -> Policy {
    let limits =
        Limits { timeout: Duration::from_secs(120), output_timeout: Duration::from_secs(60), ..Limits::default() };
    Policy { allow: Capabilities::everything(), limits, ..Policy::default() }
}

/// The timings of one phase.
struct Timing {
    /// Until `run_phase` returned.
    complete: Duration,
    /// Until the consumer task received the first event.
    first_event: Option<Duration>,
    /// Until the time the host stamped on the first output event.
    first_stamp: Option<Duration>,
}

/// Runs one phase with its events drained by another task; panics unless it passes.
async fn run_timed(sandbox: &Sandbox, phase: &Phase) -> Timing {
    let (tx, mut rx) = phasebox_sandbox::channel();
    let drain = tokio::spawn(async move {
        let mut first = None;
        while let Some(event) = rx.recv().await {
            if first.is_none() {
                let stamp = match event {
                    PhaseEvent::Output { at, .. } => Some(at),
                    _ => None,
                };
                first = Some((Instant::now(), stamp));
            }
        }
        first
    });
    let (wall, start) = (SystemTime::now(), Instant::now());
    let report = sandbox
        .run_phase(&phase.plugin, &phase.grant, &phase.input, &BTreeMap::new(), tx, CancellationToken::new())
        .await
        .expect("the phase starts");
    let complete = start.elapsed();
    assert!(report.end.passed(), "{}: {}", phase.plugin.name(), report.end);
    let first = drain.await.expect("the drain task");
    Timing {
        complete,
        first_event: first.map(|(at, _)| at - start),
        first_stamp: first.and_then(|(_, stamp)| stamp?.duration_since(wall).ok()),
    }
}

/// Runs `phase` `warmup` times, then `iterations` times measured.
async fn time_phase(sandbox: &Sandbox, phase: &Phase, counts: &Counts) -> Vec<Timing> {
    for _ in 0..counts.warmup {
        run_timed(sandbox, phase).await;
    }
    let mut timings = Vec::with_capacity(counts.iterations);
    for _ in 0..counts.iterations {
        timings.push(run_timed(sandbox, phase).await);
    }
    timings
}

/// Rows 1 or 2.
struct StartRows {
    allocation: Allocation,
    noop: Stats,
    hello_first_event: Stats,
    hello_first_stamp: Stats,
    hello_complete: Stats,
}

async fn start_rows(counts: &Counts, cache: &Path, pooling: bool) -> StartRows {
    let sandbox = Sandbox::new(EngineConfig { pooling, cache_dir: Some(cache.into()), ..EngineConfig::default() })
        .expect("sandbox");
    let job_dir = tempfile::tempdir().expect("job directory");
    let load = |name| sandbox.load_file(&phasebox_guests::path(name)).expect("loading a plugin");
    let noop = Phase::new(load("probe"), r#"{"attack":"args"}"#, job_dir.path());
    let hello = Phase::new(load("hello"), "{}", job_dir.path());

    let noop = time_phase(&sandbox, &noop, counts).await;
    let hello = time_phase(&sandbox, &hello, counts).await;
    let pick = |f: fn(&Timing) -> Option<Duration>| {
        Stats::of(hello.iter().map(|t| f(t).expect("hello's first event is its output")).collect())
    };
    StartRows {
        allocation: sandbox.allocation().clone(),
        noop: Stats::of(noop.iter().map(|t| t.complete).collect()),
        hello_first_event: pick(|t| t.first_event),
        hello_first_stamp: pick(|t| t.first_stamp),
        hello_complete: Stats::of(hello.iter().map(|t| t.complete).collect()),
    }
}

impl StartRows {
    fn add_to(&self, table: &mut Table, n: &str) {
        let how = match &self.allocation {
            Allocation::Pooling => "pooling".to_owned(),
            Allocation::OnDemand => "pooling off".to_owned(),
            Allocation::OnDemandFallback(reason) => format!("pooling unavailable, on demand: {reason}"),
        };
        table.row(
            n,
            format!(
                "phase start, {how}: complete `run_phase` of probe `{{\"attack\":\"args\"}}` = no-op round trip \
                 (hello reads the clock before it prints)"
            ),
            fmt_dur(self.noop.p50),
            fmt_dur(self.noop.p99),
            "≤ 50 µs (p50)",
            met(self.noop.p50 <= START_GOAL),
        );
        for (what, stats) in [
            ("hello: first output event received by the consumer task", &self.hello_first_event),
            ("hello: first output event, host's `at` stamp", &self.hello_first_stamp),
            ("hello: complete `run_phase` (print, log, case, measurement)", &self.hello_complete),
        ] {
            table.row(n, format!("{how}, {what}"), fmt_dur(stats.p50), fmt_dur(stats.p99), "—", "—".into());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Row 3: process spawn.

fn spawn_row(counts: &Counts) -> Stats {
    let spawn = || {
        let start = Instant::now();
        let status = Command::new("sh").args(["-c", "true"]).status().expect("spawning sh");
        assert!(status.success(), "sh -c true: {status}");
        start.elapsed()
    };
    for _ in 0..counts.spawn_warmup {
        spawn();
    }
    Stats::of((0..counts.spawns).map(|_| spawn()).collect())
}

// ---------------------------------------------------------------------------------------------
// Row 4: plugin load.

struct LoadRow {
    name: &'static str,
    size: usize,
    compile: Duration,
    cached: Duration,
    hit: bool,
}

/// Compiles every plugin into `cache` (which must be empty), then loads each from it.
fn load_rows(cache: &Path) -> Vec<LoadRow> {
    let load_all = || {
        let sandbox =
            Sandbox::new(EngineConfig { cache_dir: Some(cache.into()), ..EngineConfig::default() }).expect("sandbox");
        phasebox_guests::PLUGINS
            .iter()
            .map(|name| sandbox.load_file(&phasebox_guests::path(name)).expect("loading a plugin"))
            .collect::<Vec<_>>()
    };
    let compiled = load_all();
    let cached = load_all();
    phasebox_guests::PLUGINS
        .iter()
        .zip(compiled.iter().zip(&cached))
        .map(|(name, (compiled, cached))| {
            assert_eq!(compiled.cache_outcome(), CacheOutcome::Compiled, "{name}: the cache directory was not empty");
            LoadRow {
                name,
                size: compiled.size(),
                compile: compiled.load_time(),
                cached: cached.load_time(),
                hit: cached.cache_outcome() == CacheOutcome::Hit,
            }
        })
        .collect()
}

impl LoadRow {
    fn add_to(&self, table: &mut Table) {
        let name = self.name;
        table.row("4", format!("{name}: component size"), fmt_bytes(self.size as u64), "—", "—", "—".into());
        table.row("4", format!("{name}: compile (empty cache)"), fmt_dur(self.compile), "—", "—", "—".into());
        let outcome = if self.hit { "hit" } else { "MISS: compiled again" };
        table.row(
            "4",
            format!("{name}: load from the compile cache ({outcome})"),
            fmt_dur(self.cached),
            "—",
            "—",
            "—".into(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row 5: concurrent phases.

struct ConcurrentRow {
    phases: usize,
    sleep_ms: u64,
    allocation: String,
    rss_before: u64,
    rss_peak: u64,
    samples: usize,
    start_all: Duration,
    overlapped: usize,
    all_ended: Duration,
}

async fn concurrent_row(counts: &Counts, cache: &Path) -> ConcurrentRow {
    let config = |pooling| EngineConfig {
        pooling,
        max_instances: (counts.concurrent as u32).max(1000),
        cache_dir: Some(cache.into()),
        ..EngineConfig::default()
    };
    let sandbox = Sandbox::new(config(true)).expect("sandbox");
    let allocation = match sandbox.allocation() {
        Allocation::Pooling => "pooling".to_owned(),
        other => format!("on demand (pooling unavailable: {other:?})"),
    };
    match run_concurrent(Arc::new(sandbox), counts).await {
        Ok(mut row) => {
            row.allocation = allocation;
            row
        }
        Err(error) => {
            let sandbox = Sandbox::new(config(false)).expect("sandbox");
            let mut row = run_concurrent(Arc::new(sandbox), counts).await.expect("on-demand phases");
            row.allocation = format!("on demand (pooling failed: {error})");
            row
        }
    }
}

/// Starts `counts.concurrent` idle phases at once; `Err` when any of them did not pass.
async fn run_concurrent(sandbox: Arc<Sandbox>, counts: &Counts) -> Result<ConcurrentRow, String> {
    let job_dir = tempfile::tempdir().expect("job directory");
    let plugin = sandbox.load_file(&phasebox_guests::path("probe")).expect("loading probe");
    let warmup = Phase::new(plugin.clone(), r#"{"attack":"idle","ms":1}"#, job_dir.path());
    run_timed(&sandbox, &warmup).await;
    let rss_before = rss();

    let data = format!(r#"{{"attack":"idle","ms":{}}}"#, counts.sleep_ms);
    let phase = Arc::new(Phase::new(plugin, &data, job_dir.path()));
    let started = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let started_at_first_end = Arc::new(OnceLock::new());
    let start = Instant::now();
    let tasks: Vec<_> = (0..counts.concurrent)
        .map(|_| {
            let (sandbox, phase) = (sandbox.clone(), phase.clone());
            let (started, ended, at_first_end) = (started.clone(), ended.clone(), started_at_first_end.clone());
            tokio::spawn(async move {
                let (tx, mut rx) = phasebox_sandbox::channel();
                let counter = started.clone();
                let drain = tokio::spawn(async move {
                    let mut first = None;
                    while rx.recv().await.is_some() {
                        if first.is_none() {
                            first = Some(Instant::now());
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    first
                });
                let report = sandbox
                    .run_phase(
                        &phase.plugin,
                        &phase.grant,
                        &phase.input,
                        &BTreeMap::new(),
                        tx,
                        CancellationToken::new(),
                    )
                    .await;
                if ended.fetch_add(1, Ordering::SeqCst) == 0 {
                    let _ = at_first_end.set(started.load(Ordering::SeqCst));
                }
                let first = drain.await.expect("the drain task");
                match report {
                    Ok(report) if report.end.passed() => first.ok_or_else(|| "a phase printed nothing".to_owned()),
                    Ok(report) => Err(format!("a phase ended: {}", report.end)),
                    Err(e) => Err(format!("a phase did not start: {e}")),
                }
            })
        })
        .collect();

    // Sample the RSS while no phase has ended yet; keep the peak of the samples taken while all
    // of them were sleeping (or of all samples, should they never all have started).
    let (mut peak_all, mut peak, mut samples) = (0, 0, 0);
    while ended.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_millis(counts.sleep_ms * 2) {
        let now = rss();
        let all_started = started.load(Ordering::SeqCst) == counts.concurrent;
        if all_started && ended.load(Ordering::SeqCst) == 0 {
            peak = peak.max(now);
            samples += 1;
        }
        peak_all = peak_all.max(now);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let mut last_start = Duration::ZERO;
    for task in tasks {
        let first = task.await.expect("a phase task")?;
        last_start = last_start.max(first - start);
    }
    let all_ended = start.elapsed();
    Ok(ConcurrentRow {
        phases: counts.concurrent,
        sleep_ms: counts.sleep_ms,
        allocation: String::new(),
        rss_before,
        rss_peak: if samples > 0 { peak } else { peak_all },
        samples,
        start_all: last_start,
        overlapped: started_at_first_end.get().copied().unwrap_or(0),
        all_ended,
    })
}

impl ConcurrentRow {
    fn add_to(&self, table: &mut Table) {
        let n = self.phases;
        let how = &self.allocation;
        let delta = self.rss_peak.saturating_sub(self.rss_before);
        let per_phase = delta / n as u64;
        table.row(
            "5",
            format!(
                "{n} concurrent probe `idle` phases (print, then sleep {} ms), {how}: time from the first \
                 `run_phase` call to the last phase's first event",
                self.sleep_ms
            ),
            fmt_dur(self.start_all),
            "—",
            "—",
            "—".into(),
        );
        table.row(
            "5",
            format!("{n} concurrent: phases started before the first one ended (all must overlap)"),
            format!("{}/{n}", self.overlapped),
            "—",
            format!("{n}/{n}"),
            met(self.overlapped == n),
        );
        table.row(
            "5",
            format!(
                "{n} concurrent: host RSS before → peak ({} samples while all slept; all ended after {})",
                self.samples,
                fmt_dur(self.all_ended)
            ),
            format!("{} → {}", fmt_bytes(self.rss_before), fmt_bytes(self.rss_peak)),
            "—",
            "—",
            "—".into(),
        );
        table.row(
            "5",
            format!("{n} concurrent: host memory per concurrent phase (RSS delta / {n})"),
            fmt_bytes(per_phase),
            "—",
            "≤ 2 MB",
            met(self.samples > 0 && per_phase <= MEMORY_GOAL),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics, the table, and the machine.

/// Percentiles of a sample (nearest rank).
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Self { n: samples.len(), p50: rank(0.50), p99: rank(0.99) }
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(
        &mut self,
        n: &str,
        what: impl Into<String>,
        value: impl Into<String>,
        p99: impl Into<String>,
        goal: impl Into<String>,
        status: String,
    ) {
        self.rows.push([n.into(), what.into(), value.into(), p99.into(), goal.into(), status]);
    }

    fn print(&self) {
        println!("| # | measurement | p50 / value | p99 | goal | status |");
        println!("|---|---|---|---|---|---|");
        for row in &self.rows {
            println!("| {} |", row.join(" | "));
        }
    }
}

fn met(ok: bool) -> String {
    if ok { "met" } else { "missed" }.into()
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
    if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.2} MB", n / 1e6)
    } else {
        format!("{:.1} GB", n / 1e9)
    }
}

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    proc_kib("/proc/self/status", "VmRSS:") * 1024
}

fn total_memory() -> String {
    fmt_bytes(proc_kib("/proc/meminfo", "MemTotal:") * 1024)
}

/// A `<key> <n> kB` line of a /proc file.
fn proc_kib(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn nproc() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}
