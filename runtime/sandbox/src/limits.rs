//! Limits of a running phase: memory (summed over all of the instance's memories, plus what
//! the host holds for the guest's HTTP requests), output bytes (stdout, stderr, log lines, test
//! results and capability events together), handles, output idleness, wall-clock time, bytes
//! written and entries created in read-write mounts, and the first reason a phase was ended.
//!
//! The [`Monitor`] is shared by the store's resource limiter, the output writers, the host
//! functions that report events, the epoch callback (which stops guest code) and the runner's
//! watchdog (which stops a guest blocked in a host call). Whoever notices a limit first records
//! why; everyone else reads that reason.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::events::PhaseEvent;
use crate::units::{format_size, serde_duration, serde_size};

/// Why the host ended a phase before the guest returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The phase's wall-clock timeout passed.
    Timeout(Duration),
    /// The phase wrote no output for its output timeout.
    OutputTimeout(Duration),
    /// The phase wrote more output than its limit.
    OutputLimit(u64),
    /// The phase asked for more memory than its limit.
    MemoryLimit {
        /// The limit.
        limit: u64,
        /// What the guest asked to grow to (all memories together).
        wanted: u64,
    },
    /// The phase wrote more bytes into its read-write mounts than its limit.
    DiskLimit(u64),
    /// The phase created more files, directories and links in its read-write mounts than its
    /// limit.
    FileLimit(u64),
    /// The phase reported more test results (cases and measurements) than its output limit
    /// holds, counted together with its output.
    ResultsLimit(u64),
    /// The phase caused more capability events (allowed and denied calls, device progress and
    /// serial data) than its output limit holds, counted together with its output.
    EventsLimit(u64),
    /// The phase held more handles (open files, sockets, streams, HTTP resources) at once than
    /// its limit.
    HandleLimit(u64),
    /// The phase made the host hold more for its HTTP requests (header maps, bodies, responses
    /// in flight) than its memory limit leaves beside its own memory.
    HttpMemoryLimit {
        /// The memory limit.
        limit: u64,
        /// What the host would have held for it.
        host: u64,
        /// The guest's own memory at that moment.
        guest: u64,
    },
    /// Whoever ran the phase cancelled it.
    Cancelled,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "timed out after {}", crate::units::format_duration(*d)),
            Self::OutputTimeout(d) => {
                write!(f, "no output for {} (output timeout)", crate::units::format_duration(*d))
            }
            Self::OutputLimit(n) => write!(f, "wrote more than its output limit of {}", format_size(*n)),
            Self::MemoryLimit { limit, wanted } => write!(
                f,
                "needed more memory than its limit of {} (asked for {} in all)",
                format_size(*limit),
                format_size(*wanted)
            ),
            Self::DiskLimit(n) => {
                write!(f, "wrote more than its disk limit of {} to its read-write mounts", format_size(*n))
            }
            Self::FileLimit(n) => {
                write!(f, "created more than its limit of {n} files, directories and links in its read-write mounts")
            }
            Self::ResultsLimit(n) => write!(
                f,
                "reported more test results than its output limit of {} (output, logs, results and events together)",
                format_size(*n)
            ),
            Self::EventsLimit(n) => write!(
                f,
                "caused more capability events than its output limit of {} (output, logs, results and events together)",
                format_size(*n)
            ),
            Self::HandleLimit(n) => {
                write!(
                    f,
                    "held more than its limit of {n} handles at once (open files, sockets, streams, HTTP resources)"
                )
            }
            Self::HttpMemoryLimit { limit, host, guest } => write!(
                f,
                "made the host hold {} for its HTTP requests beside its own {}, more than its memory limit of {}",
                format_size(*host),
                format_size(*guest),
                format_size(*limit)
            ),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// Shared limit state of one phase.
#[derive(Debug)]
pub struct Monitor {
    started: Instant,
    memory_limit: u64,
    output_limit: u64,
    disk_limit: u64,
    files_limit: u64,
    memory_in_use: AtomicU64,
    disk_written: AtomicU64,
    files_created: AtomicU64,
    /// Bytes the host holds for the guest's HTTP requests, as last counted.
    host_memory: AtomicU64,
    output_written: AtomicU64,
    /// Milliseconds since `started` at the last output.
    last_output_ms: AtomicU64,
    stop: Mutex<Option<Stop>>,
    stopped: Notify,
    stderr_tail: Mutex<Vec<u8>>,
}

const STDERR_TAIL: usize = 2048;

impl Monitor {
    /// Creates the monitor when the phase starts.
    pub fn new(memory_limit: u64, output_limit: u64) -> Self {
        Self {
            started: Instant::now(),
            memory_limit,
            output_limit,
            disk_limit: u64::MAX,
            files_limit: u64::MAX,
            memory_in_use: AtomicU64::new(0),
            disk_written: AtomicU64::new(0),
            files_created: AtomicU64::new(0),
            host_memory: AtomicU64::new(0),
            output_written: AtomicU64::new(0),
            last_output_ms: AtomicU64::new(0),
            stop: Mutex::new(None),
            stopped: Notify::new(),
            stderr_tail: Mutex::new(Vec::new()),
        }
    }

    /// Bounds what the phase may write into its read-write mounts: `bytes` written in all, and
    /// `files` entries (files, directories, links) created.
    pub fn with_disk_limits(mut self, bytes: u64, files: u64) -> Self {
        self.disk_limit = bytes;
        self.files_limit = files;
        self
    }

    /// Accounts for `n` bytes about to be written to a file; `false` (and the phase stops)
    /// when they would pass the limit, and then none of them may be written.
    pub(crate) fn write_bytes(&self, n: u64) -> bool {
        let before = self.disk_written.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.disk_limit {
            self.stop(Stop::DiskLimit(self.disk_limit));
            return false;
        }
        true
    }

    /// Accounts for one entry about to be created; `false` (and the phase stops) past the limit.
    pub(crate) fn create_entry(&self) -> bool {
        if self.files_created.fetch_add(1, Ordering::Relaxed) >= self.files_limit {
            self.stop(Stop::FileLimit(self.files_limit));
            return false;
        }
        true
    }

    /// Bytes written to read-write mounts so far (including a refused write).
    pub fn disk_written(&self) -> u64 {
        self.disk_written.load(Ordering::Relaxed)
    }

    /// Records a reason to stop, unless one was recorded first, and wakes the runner.
    pub fn stop(&self, why: Stop) {
        let mut stop = self.stop.lock().expect("monitor poisoned");
        if stop.is_none() {
            tracing::debug!(reason = %why, "phase stopping");
            *stop = Some(why);
            self.stopped.notify_waiters();
            self.stopped.notify_one();
        }
    }

    /// The first recorded reason to stop.
    pub fn stopped_because(&self) -> Option<Stop> {
        self.stop.lock().expect("monitor poisoned").clone()
    }

    /// Waits until something records a reason to stop.
    pub async fn wait_stopped(&self) {
        loop {
            let notified = self.stopped.notified();
            if self.stopped_because().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Time since the last output (or since the start, before any output).
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_output_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Time since the phase started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Accounts for `n` bytes of output; returns how many of them fit under the limit.
    pub(crate) fn output(&self, n: usize) -> usize {
        self.last_output_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let before = self.output_written.fetch_add(n as u64, Ordering::Relaxed);
        let room = self.output_limit.saturating_sub(before);
        if (n as u64) > room {
            self.stop(Stop::OutputLimit(self.output_limit));
        }
        (n as u64).min(room) as usize
    }

    /// Accounts for an event the host reports on the guest's behalf, against the output limit
    /// it shares with output; returns whether it fits. Output and log lines are counted where
    /// they are written; everything else (results, capability uses, device progress and serial
    /// data) is counted here, so a guest cannot grow the job's records past its output limit.
    pub(crate) fn admit(&self, event: &PhaseEvent) -> bool {
        // Roughly what the event takes in the job's records: its text plus the JSON around it.
        const FRAME: u64 = 128;
        let len = |s: &str| s.len() as u64;
        let (n, over) = match event {
            PhaseEvent::Output { .. } | PhaseEvent::Log { .. } => return true,
            PhaseEvent::Case(c) => (
                len(&c.suite) + len(&c.name) + c.message.as_deref().map_or(0, len) + FRAME,
                Stop::ResultsLimit(self.output_limit),
            ),
            PhaseEvent::Measurement(m) => (len(&m.name) + len(&m.unit) + FRAME, Stop::ResultsLimit(self.output_limit)),
            PhaseEvent::Capability(c) => (
                len(&c.grant) + len(&c.call) + c.reason.as_deref().map_or(0, len) + FRAME,
                Stop::EventsLimit(self.output_limit),
            ),
            PhaseEvent::Serial { data, .. } => (data.len() as u64 + FRAME, Stop::EventsLimit(self.output_limit)),
            PhaseEvent::Progress { handle, .. } => (len(handle) + FRAME, Stop::EventsLimit(self.output_limit)),
        };
        let before = self.output_written.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.output_limit {
            self.stop(over);
            return false;
        }
        true
    }

    /// Records what the host holds for the guest's HTTP requests; stops the phase when that
    /// and the guest's own memory together pass the memory limit. Returns whether it fits.
    pub(crate) fn hold_host_memory(&self, host: u64) -> bool {
        let guest = self.memory_in_use();
        if host.saturating_add(guest) > self.memory_limit {
            self.stop(Stop::HttpMemoryLimit { limit: self.memory_limit, host, guest });
            return false;
        }
        self.host_memory.store(host, Ordering::Relaxed);
        true
    }

    /// Marks activity that is not output but shows the phase is alive (a log line).
    pub(crate) fn touch(&self) {
        self.last_output_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Keeps the end of stderr, where a guest's panic message lands.
    pub(crate) fn keep_stderr(&self, bytes: &[u8]) {
        let mut tail = self.stderr_tail.lock().expect("monitor poisoned");
        tail.extend_from_slice(bytes);
        if tail.len() > STDERR_TAIL {
            let cut = tail.len() - STDERR_TAIL;
            tail.drain(..cut);
        }
    }

    /// The last lines the guest wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.stderr_tail.lock().expect("monitor poisoned")).trim().to_owned()
    }

    /// Total bytes written so far.
    pub fn output_written(&self) -> u64 {
        self.output_written.load(Ordering::Relaxed)
    }

    /// Peak memory currently held by all of the instance's memories.
    pub fn memory_in_use(&self) -> u64 {
        self.memory_in_use.load(Ordering::Relaxed)
    }
}

/// The store's resource limiter: caps the sum of all linear memories of the instance (a
/// component may hold several core instances, each with its own memory; wasmtime's own
/// `StoreLimits` would cap each one separately).
pub(crate) struct MemoryLimiter {
    pub(crate) monitor: std::sync::Arc<Monitor>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let grow = (desired - current) as u64;
        let in_use = self.monitor.memory_in_use.load(Ordering::Relaxed);
        let wanted = in_use + grow;
        // What the host holds for the guest's HTTP requests shares the limit.
        let host = self.monitor.host_memory.load(Ordering::Relaxed);
        if wanted.saturating_add(host) > self.monitor.memory_limit {
            self.monitor.stop(Stop::MemoryLimit { limit: self.monitor.memory_limit, wanted: wanted + host });
            // Refusing the growth makes memory.grow return -1; guests that cannot cope trap,
            // and the recorded reason explains the trap.
            return Ok(false);
        }
        self.monitor.memory_in_use.store(wanted, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }
}

/// Resource limits of one phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Total bytes of all the instance's linear memories together.
    #[serde(with = "serde_size", default = "Limits::default_memory")]
    pub memory: u64,
    /// Wall-clock time from the phase's start.
    #[serde(with = "serde_duration", default = "Limits::default_timeout")]
    pub timeout: Duration,
    /// Longest time without output (stdout, stderr or log) before the phase is ended.
    #[serde(with = "serde_duration", default = "Limits::default_output_timeout")]
    pub output_timeout: Duration,
    /// Total bytes of output the phase may write: stdout, stderr and log lines, and the test
    /// results and capability events it causes, together.
    #[serde(with = "serde_size", default = "Limits::default_output")]
    pub output: u64,
    /// Total bytes the phase may write into its read-write mounts (every write counts, also
    /// one that overwrites).
    #[serde(with = "serde_size", default = "Limits::default_disk")]
    pub disk: u64,
    /// How many files, directories and links the phase may create in its read-write mounts.
    #[serde(default = "Limits::default_files")]
    pub files: u64,
    /// Handles the phase may hold at once: open files and directories, sockets, streams,
    /// pollables and HTTP resources (header maps, requests, responses, bodies). Each may hold a
    /// host descriptor, so this also bounds the phase's share of the agent's open files.
    #[serde(default = "Limits::default_handles")]
    pub handles: u64,
}

impl Limits {
    fn default_memory() -> u64 {
        256 << 20
    }
    fn default_timeout() -> Duration {
        // Testflinger's default global timeout is 4 hours.
        Duration::from_secs(4 * 3600)
    }
    fn default_output_timeout() -> Duration {
        // Testflinger's default output timeout is 15 minutes.
        Duration::from_secs(15 * 60)
    }
    fn default_output() -> u64 {
        1 << 30
    }
    fn default_disk() -> u64 {
        // Room for a few OS images in a phase's artifacts, not for filling the agent's disk.
        16 << 30
    }
    fn default_files() -> u64 {
        100_000
    }
    fn default_handles() -> u64 {
        1024
    }

    /// The stricter of two limit sets, field by field.
    pub fn min(&self, other: &Limits) -> Limits {
        Limits {
            memory: self.memory.min(other.memory),
            timeout: self.timeout.min(other.timeout),
            output_timeout: self.output_timeout.min(other.output_timeout),
            output: self.output.min(other.output),
            disk: self.disk.min(other.disk),
            files: self.files.min(other.files),
            handles: self.handles.min(other.handles),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: Self::default_memory(),
            timeout: Self::default_timeout(),
            output_timeout: Self::default_output_timeout(),
            output: Self::default_output(),
            disk: Self::default_disk(),
            files: Self::default_files(),
            handles: Self::default_handles(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_is_summed_over_memories() {
        let monitor = std::sync::Arc::new(Monitor::new(10 << 20, 100));
        let mut l = MemoryLimiter { monitor: monitor.clone() };
        assert!(l.memory_growing(0, 6 << 20, None).unwrap());
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        assert!(!l.memory_growing(4 << 20, 5 << 20, None).unwrap());
        assert!(matches!(monitor.stopped_because(), Some(Stop::MemoryLimit { .. })));
    }

    #[test]
    fn output_limit_cuts_and_records() {
        let monitor = Monitor::new(1, 10);
        assert_eq!(monitor.output(6), 6);
        assert_eq!(monitor.output(6), 4);
        assert_eq!(monitor.stopped_because(), Some(Stop::OutputLimit(10)));
        assert_eq!(monitor.output(6), 0);
    }

    #[test]
    fn disk_limits_refuse_and_record() {
        let monitor = Monitor::new(1, 1).with_disk_limits(10, 2);
        assert!(monitor.write_bytes(6));
        assert!(!monitor.write_bytes(6));
        assert_eq!(monitor.stopped_because(), Some(Stop::DiskLimit(10)));
        let monitor = Monitor::new(1, 1).with_disk_limits(10, 2);
        assert!(monitor.create_entry() && monitor.create_entry());
        assert!(!monitor.create_entry());
        assert_eq!(monitor.stopped_because(), Some(Stop::FileLimit(2)));
        assert!(Stop::FileLimit(2).to_string().contains("limit of 2 files"));
    }

    #[test]
    fn results_and_events_share_the_output_limit() {
        use crate::events::{CapabilityUse, CaseStatus, TestCase};
        let monitor = Monitor::new(1, 1000);
        assert_eq!(monitor.output(800), 800);
        let case = |name: &str| {
            PhaseEvent::Case(TestCase {
                suite: "s".into(),
                name: name.into(),
                status: CaseStatus::Pass,
                duration_ms: 0,
                message: None,
            })
        };
        assert!(monitor.admit(&case("a")));
        assert!(!monitor.admit(&case(&"b".repeat(200))));
        assert_eq!(monitor.stopped_because(), Some(Stop::ResultsLimit(1000)));

        let monitor = Monitor::new(1, 300);
        let denied = PhaseEvent::Capability(CapabilityUse {
            grant: "secrets".into(),
            call: "get X".into(),
            allowed: false,
            reason: Some("not granted to this phase".into()),
            duration_ms: None,
        });
        assert!(monitor.admit(&denied));
        assert!(!monitor.admit(&denied));
        assert_eq!(monitor.stopped_because(), Some(Stop::EventsLimit(300)));
    }

    #[test]
    fn host_memory_shares_the_memory_limit() {
        let monitor = std::sync::Arc::new(Monitor::new(10 << 20, 100));
        let mut l = MemoryLimiter { monitor: monitor.clone() };
        assert!(l.memory_growing(0, 6 << 20, None).unwrap());
        assert!(monitor.hold_host_memory(3 << 20));
        assert!(!l.memory_growing(6 << 20, 8 << 20, None).unwrap());
        let monitor = Monitor::new(10 << 20, 100);
        assert!(!monitor.hold_host_memory(11 << 20));
        assert!(matches!(monitor.stopped_because(), Some(Stop::HttpMemoryLimit { host, .. }) if host == 11 << 20));
    }

    #[test]
    fn first_reason_wins() {
        let monitor = Monitor::new(1, 1);
        monitor.stop(Stop::Cancelled);
        monitor.stop(Stop::OutputLimit(1));
        assert_eq!(monitor.stopped_because(), Some(Stop::Cancelled));
    }
}
