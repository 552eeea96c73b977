//! In-process wake-ups: one [`Notify`] per queue (long-poll claims wake the moment a job for
//! their queue is submitted), one per watched job (event streams wake on new events) and one
//! per agent (a long-poll claim wakes when the agent's data changes, e.g. an operator sets it
//! to maintenance).
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

type Notifiers = Mutex<HashMap<String, Arc<Notify>>>;

/// Per-queue, per-job and per-agent notifiers.
#[derive(Debug, Default)]
pub struct Hub {
    queues: Notifiers,
    jobs: Notifiers,
    agents: Notifiers,
}

/// A registration that removes its map entry when the last holder drops it.
#[derive(Debug)]
pub struct Watch<'a> {
    map: &'a Notifiers,
    key: String,
    /// The notifier.
    pub notify: Arc<Notify>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Two strong references left: ours and the map's.
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.key);
        }
    }
}

impl Hub {
    fn watch<'a>(map: &'a Notifiers, key: &str) -> Watch<'a> {
        let notify = map.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_owned()).or_default().clone();
        Watch { map, key: key.to_owned(), notify }
    }

    /// Registers interest in new jobs on `queue`.
    pub fn watch_queue(&self, queue: &str) -> Watch<'_> {
        Self::watch(&self.queues, queue)
    }

    /// Registers interest in new events of `job_id`.
    pub fn watch_job(&self, job_id: &str) -> Watch<'_> {
        Self::watch(&self.jobs, job_id)
    }

    /// Registers interest in changes to the data of agent `name`.
    pub fn watch_agent(&self, name: &str) -> Watch<'_> {
        Self::watch(&self.agents, name)
    }

    fn wake(map: &Notifiers, key: &str) {
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

    /// Agent `name`'s data changed.
    pub fn agent_changed(&self, name: &str) {
        Self::wake(&self.agents, name);
    }

    /// Number of queues with waiters.
    pub fn watched_queues(&self) -> usize {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
