//! The outbox: everything a DUT posts to the server — agent state, job states, log fragments,
//! results, artifacts, provision logs — goes through one ordered queue per DUT, so the server
//! sees it in the order it happened.
//!
//! One task per DUT delivers the queue. While the server answers, each delivery is posted as
//! it comes. When a delivery fails for a reason that may pass (the server is unreachable, times
//! out, answers 5xx, or refuses the agent's credentials), it and everything after it are written
//! to the DUT's [spool](crate::spool) instead, and delivered from there, oldest first, with
//! capped exponential backoff (1 s doubling to 30 s) until the spool is empty again. The spool
//! survives restarts: a new agent process delivers what an old one left. A delivery the server
//! refuses outright (400, 404, 413, 422) would be refused again; it is logged and dropped.

use std::time::Duration;

use phasebox_client::{Backoff, Client, ClientError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;
use crate::spool::Spool;

enum Msg {
    Deliver(Delivery),
    /// Answered once every delivery pushed before it has been made or spooled.
    Barrier(oneshot::Sender<()>),
    /// Try the spool now; answered with whether it is empty.
    Drain(oneshot::Sender<bool>),
}

/// A handle to a DUT's outbox task. Cloning is cheap; the task ends when every handle is gone
/// and the queue is done.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Msg>,
}

/// How many messages wait for the outbox task at most (a log fragment is at most a batch of
/// the shipper's); when it is full, whoever pushes waits for the server.
pub(crate) const OUTBOX_QUEUE: usize = 4;

/// Waits between attempts at the spool: 1 s doubling to 30 s while nothing gets through.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

impl Outbox {
    /// Starts the outbox task of `dut`. Once `hurry` is cancelled (the agent is out of time at
    /// shutdown) the task stops posting: what is left goes to the spool.
    pub(crate) fn start(
        client: Client,
        spool: Spool,
        dut: String,
        hurry: CancellationToken,
    ) -> (Outbox, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(OUTBOX_QUEUE);
        let task = Task { client, spool, dut, hurry, retry_at: None, backoff: RETRY };
        let handle = tokio::spawn(task.run(rx));
        (Outbox { tx }, handle)
    }

    /// Queues a delivery, waiting while the queue is full (the deliveries before it are being
    /// posted).
    pub(crate) async fn push(&self, delivery: Delivery) {
        if let Err(mpsc::error::SendError(Msg::Deliver(d))) = self.tx.send(Msg::Deliver(delivery)).await {
            tracing::error!(delivery = %d.describe(), "the outbox is gone; delivery lost");
        }
    }

    /// Waits until everything pushed so far has been delivered or written to the spool.
    pub(crate) async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Tries to deliver the spool now; `true` when nothing is left waiting.
    pub(crate) async fn drain(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Drain(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

struct Task {
    client: Client,
    spool: Spool,
    dut: String,
    hurry: CancellationToken,
    /// When to try the spool again (set while it is not empty).
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        if !self.spool.is_empty() {
            self.retry_at = Some(Instant::now());
        }
        loop {
            let retry_at = self.retry_at;
            // Either order keeps deliveries in order: while the spool is not empty, new ones
            // are appended to it.
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                () = sleep_until(retry_at), if retry_at.is_some() && !self.hurry.is_cancelled() => {
                    self.drain_spool().await;
                    continue;
                }
            };
            match msg {
                None => break,
                Some(Msg::Deliver(d)) => self.deliver(d).await,
                Some(Msg::Barrier(reply)) => {
                    let _ = reply.send(());
                }
                Some(Msg::Drain(reply)) => {
                    if !self.hurry.is_cancelled() {
                        self.drain_spool().await;
                    }
                    let _ = reply.send(self.spool.is_empty());
                }
            }
        }
        if !self.spool.is_empty() && !self.hurry.is_cancelled() {
            self.drain_spool().await;
        }
        if !self.spool.is_empty() {
            tracing::info!(dut = %self.dut, deliveries = self.spool.len(), "deliveries left in the spool for the next start");
        }
    }

    /// Posts `d`, or spools it when the spool already holds older deliveries or the post
    /// fails for a reason that may pass.
    async fn deliver(&mut self, d: Delivery) {
        if !self.spool.is_empty() || self.hurry.is_cancelled() {
            self.spool_it(d);
            return;
        }
        let result = tokio::select! {
            r = d.post(&self.client) => r,
            // Out of time: keep it for the next start (it may arrive twice).
            () = self.hurry.cancelled() => {
                self.spool_it(d);
                return;
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if d.worth_retrying(&e) => {
                tracing::warn!(dut = %self.dut, delivery = %d.describe(), error = %e, "server unavailable; spooling");
                self.spool_it(d);
                self.backoff.reset();
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
            }
            Err(e) => self.drop_refused(&d, &e),
        }
    }

    fn spool_it(&mut self, d: Delivery) {
        let what = d.describe();
        if let Err(e) = self.spool.append(d) {
            tracing::error!(dut = %self.dut, delivery = %what, error = %e, "cannot spool; delivery lost");
        } else if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        }
    }

    fn drop_refused(&self, d: &Delivery, e: &ClientError) {
        tracing::error!(dut = %self.dut, delivery = %d.describe(), error = %e, "the server refused a delivery; dropped");
    }

    /// Delivers the spool oldest first until it is empty or a delivery fails for a reason
    /// that may pass (then the next attempt is scheduled with backoff).
    async fn drain_spool(&mut self) {
        let mut delivered = 0usize;
        while let Some((seq, d)) = self.spool.front() {
            if self.hurry.is_cancelled() {
                break;
            }
            let result = tokio::select! {
                r = d.post(&self.client) => r,
                () = self.hurry.cancelled() => break,
            };
            match result {
                Ok(()) => {
                    self.spool.remove(seq);
                    delivered += 1;
                }
                Err(e) if d.worth_retrying(&e) => {
                    if delivered > 0 {
                        self.backoff.reset();
                    }
                    let retry_in = self.backoff.next_delay();
                    self.retry_at = Some(Instant::now() + retry_in);
                    tracing::debug!(
                        dut = %self.dut, waiting = self.spool.len(), ?retry_in, error = %e,
                        "server still unavailable"
                    );
                    if delivered > 0 {
                        tracing::info!(dut = %self.dut, delivered, "spooled deliveries made");
                    }
                    return;
                }
                Err(e) => {
                    self.drop_refused(&d, &e);
                    self.spool.remove(seq);
                }
            }
        }
        if delivered > 0 {
            tracing::info!(dut = %self.dut, delivered, "spooled deliveries made");
        }
        if self.spool.is_empty() {
            self.retry_at = None;
            self.backoff.reset();
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
