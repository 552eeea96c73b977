//! [`Backoff`]: how long to wait before trying the server again.
//!
//! Every retry loop of the agent and the CLI (claims, state reads, spooled deliveries, the
//! event stream, attachment transfers, a DUT that cannot be loaded) waits by one rule: the
//! first wait after a failure, growing by a factor per consecutive failure up to a cap, and
//! back to the first after a success. The loops themselves differ in what they race the wait
//! against (a stop token, new work), so this is the schedule only, not a retry executor.

use std::time::Duration;

/// Capped exponential backoff: `first`, then `first × factor`, `first × factor²`, … at most
/// `max`, counting consecutive failures until [`reset`](Backoff::reset).
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    factor: f64,
    failures: u32,
}

impl Backoff {
    /// Waits of `first` doubling per consecutive failure, at most `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, factor: 2.0, failures: 0 }
    }

    /// Grows the wait by `factor` (at least 1) per failure instead of doubling it.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // Past 64 steps any factor ≥ 2 has long reached a cap given in seconds.
        let steps = (self.failures - 1).min(64);
        let grown = self.first.as_secs_f64() * self.factor.powi(steps as i32);
        if grown >= self.max.as_secs_f64() { self.max } else { Duration::from_secs_f64(grown).min(self.max) }
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures counted since the last [`reset`](Backoff::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_cap_and_start_over_after_a_reset() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30));
        let waits: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(waits, [s(1), s(2), s(4), s(8), s(16), s(30), s(30)]);
        assert_eq!(b.failures(), 7);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), s(30));
        b.reset();
        assert_eq!(b.next_delay(), s(1));
    }

    #[test]
    fn a_factor_grows_the_wait_more_slowly() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(60)).factor(1.3);
        assert_eq!(b.next_delay(), Duration::from_secs(10));
        assert_eq!(b.next_delay(), Duration::from_secs(13));
        // A factor below 1 would shrink the wait: it is taken as 1.
        let mut flat = Backoff::new(Duration::from_millis(500), Duration::from_secs(8)).factor(0.5);
        assert_eq!(flat.next_delay(), flat.next_delay());
    }
}
