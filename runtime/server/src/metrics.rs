//! Prometheus metrics in the text exposition format: request counts, claim latency
//! (submission → claim), long-poll waiters, and — read from the store at scrape time — queue
//! depth per queue and jobs per state.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::store::{Store, StoreError};

/// Upper bounds (seconds) of the claim latency histogram.
const BUCKETS: [f64; 14] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    submitted: Mutex<BTreeMap<String, u64>>,
    long_poll_waiters: AtomicI64,
}

/// Decrements the waiter gauge when dropped.
#[derive(Debug)]
pub struct WaiterGuard<'a>(&'a Metrics);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.long_poll_waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// A job was claimed `micros` after submission.
    pub fn claimed(&self, micros: i64) {
        let micros = micros.max(0) as u64;
        let secs = micros as f64 / 1e6;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A job was submitted to `queue`.
    pub fn submitted(&self, queue: &str) {
        *self.submitted.lock().unwrap_or_else(|e| e.into_inner()).entry(queue.to_owned()).or_default() += 1;
    }

    /// A request finished.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// An agent starts a long-poll wait.
    pub fn waiter(&self) -> WaiterGuard<'_> {
        self.long_poll_waiters.fetch_add(1, Ordering::Relaxed);
        WaiterGuard(self)
    }

    /// The exposition text.
    pub async fn render(&self, store: &Store) -> Result<String, StoreError> {
        let depths = store.queue_depths().await?;
        let states = store.count_by_state().await?;
        let mut out = String::new();
        let _ = writeln!(out, "# HELP phasebox_queue_depth Jobs waiting in each queue.");
        let _ = writeln!(out, "# TYPE phasebox_queue_depth gauge");
        for (queue, n) in depths {
            let _ = writeln!(out, "phasebox_queue_depth{{queue=\"{}\"}} {n}", escape(&queue));
        }
        let _ = writeln!(out, "# HELP phasebox_jobs Jobs in the store by state.");
        let _ = writeln!(out, "# TYPE phasebox_jobs gauge");
        for (state, n) in states {
            let _ = writeln!(out, "phasebox_jobs{{state=\"{}\"}} {n}", escape(&state));
        }
        let _ = writeln!(out, "# HELP phasebox_jobs_submitted_total Jobs submitted since start, by queue.");
        let _ = writeln!(out, "# TYPE phasebox_jobs_submitted_total counter");
        for (queue, n) in self.submitted.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "phasebox_jobs_submitted_total{{queue=\"{}\"}} {n}", escape(queue));
        }
        let _ = writeln!(out, "# HELP phasebox_claim_latency_seconds Time from a job's submission to its claim.");
        let _ = writeln!(out, "# TYPE phasebox_claim_latency_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "phasebox_claim_latency_seconds_bucket{{le=\"{b}\"}} {n}");
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "phasebox_claim_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "phasebox_claim_latency_seconds_sum {sum}");
        let _ = writeln!(out, "phasebox_claim_latency_seconds_count {count}");
        let _ = writeln!(out, "# HELP phasebox_long_poll_waiters Agents waiting in a long-poll claim.");
        let _ = writeln!(out, "# TYPE phasebox_long_poll_waiters gauge");
        let _ = writeln!(out, "phasebox_long_poll_waiters {}", self.long_poll_waiters.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP phasebox_http_requests_total HTTP requests by method, route and status.");
        let _ = writeln!(out, "# TYPE phasebox_http_requests_total counter");
        for ((method, route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "phasebox_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        Ok(out)
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
