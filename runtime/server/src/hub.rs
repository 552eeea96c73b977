//! In-process wake-ups: one [`Notify`] per queue (long-poll claims wake the moment a job for
//! their queue is submitted) and one per watched job (event streams wake on new events).
//!
//! Entries exist only while someone waits on them. With several server replicas on one
//! PostgreSQL database a submit on another replica is not seen here, so waiters also re-check
//! the store on a short interval ([`FALLBACK_POLL`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// How often a waiter re-checks the store even without a local wake-up.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Per-queue and per-job notifiers.
#[derive(Debug, Default)]
pub struct Hub {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    jobs: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A registration that removes its map entry when the last holder drops it.
#[derive(Debug)]
pub struct Watch<'a> {
    hub: &'a Hub,
    key: String,
    is_job: bool,
    /// The notifier.
    pub notify: Arc<Notify>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let map = if self.is_job { &self.hub.jobs } else { &self.hub.queues };
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        // Two strong references left: ours and the map's.
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.key);
        }
    }
}

impl Hub {
    fn watch<'a>(&'a self, key: &str, is_job: bool) -> Watch<'a> {
        let map = if is_job { &self.jobs } else { &self.queues };
        let notify = map.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_owned()).or_default().clone();
        Watch { hub: self, key: key.to_owned(), is_job, notify }
    }

    /// Registers interest in new jobs on `queue`.
    pub fn watch_queue(&self, queue: &str) -> Watch<'_> {
        self.watch(queue, false)
    }

    /// Registers interest in new events of `job_id`.
    pub fn watch_job(&self, job_id: &str) -> Watch<'_> {
        self.watch(job_id, true)
    }

    fn wake(map: &Mutex<HashMap<String, Arc<Notify>>>, key: &str) {
        if let Some(n) = map.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            n.notify_waiters();
        }
    }

    /// A job became claimable on `queue`.
    pub fn queue_changed(&self, queue: &str) {
        Self::wake(&self.queues, queue);
    }

    /// A job has new events.
    pub fn job_changed(&self, job_id: &str) {
        Self::wake(&self.jobs, job_id);
    }

    /// Number of queues with waiters.
    pub fn watched_queues(&self) -> usize {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
