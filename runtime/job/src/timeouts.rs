//! The timeout tree: job → phase → output-idle.
//!
//! ```text
//! job_timeout (runner config, default 24 h)            whole job, cleanup included
//! ├─ setup … reserve: min(phase timeout, time left − cleanup_budget)
//! │   └─ output-idle timeout
//! └─ cleanup: min(phase timeout, max(cleanup_budget, time left))
//! ```
//!
//! **Phase timeout** (each phase, [`phase_timeouts`]): the phase's own
//! `<phase>_data.phasebox.timeout` if the job sets one; else for `reserve`
//! `reserve_data.timeout` (default 1 h) plus [`RESERVE_GRACE`]; else the job's
//! `global_timeout` (default 4 h). Capped by the operator's `policy.limits.timeout`, which plays
//! the part of the agent's own `global_timeout` (Testflinger takes `min(job, agent)`).
//! This keeps Testflinger's meaning of `global_timeout`: despite its name its timer restarts at
//! every phase (reference §2.5, quirk 4), and it does not apply to `reserve`.
//!
//! **Output-idle timeout** (each phase): the phase's own `phasebox.output_timeout` if set; for
//! `test`, else the job's `output_timeout` (default 900 s), as in Testflinger; for the other
//! phases, which Testflinger does not watch, the operator's `policy.limits.output_timeout`
//! (default 15 min). Always capped by that policy limit. Output, log lines and reported results
//! all count as activity. A reserve plugin that holds a device for hours must log now and then,
//! or the operator raises the policy's limit.
//!
//! **Job timeout** (phasebox's addition: Testflinger has no whole-job limit): the runner's
//! `job_timeout`, counted from the first phase. Before a phase other than cleanup starts, the
//! time left minus the `cleanup_budget` must be positive, or the phase (and every later one
//! but cleanup) is not run; a phase that starts gets at most that much. Cleanup always runs,
//! with at least `cleanup_budget`, even when the job timed out or was cancelled: this is how
//! Testflinger's agent runs cleanup in a `finally` block, with a bound so that a job cannot
//! hold the device past its budget by more than the cleanup budget.

use std::time::Duration;

use phasebox_jobspec::{DEFAULT_GLOBAL_TIMEOUT, DEFAULT_OUTPUT_TIMEOUT, JobSpec, Phase, PhaseboxBlock};
use phasebox_sandbox::Limits;
use serde::Serialize;

/// Added to the reservation time to get the reserve phase's timeout: time for the plugin to
/// set the reservation up and end it.
pub const RESERVE_GRACE: Duration = Duration::from_secs(5 * 60);

/// Where a phase's timeout value came from (shown in the terminal and the event log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutSource {
    /// `<phase>_data.phasebox.timeout` or `.output_timeout`.
    Phasebox,
    /// The job's `global_timeout`.
    GlobalTimeout,
    /// Testflinger's default `global_timeout`, 4 hours.
    DefaultGlobalTimeout,
    /// `reserve_data.timeout` (default 1 hour) plus [`RESERVE_GRACE`].
    Reservation,
    /// The job's `output_timeout` (test phase).
    OutputTimeout,
    /// Testflinger's default `output_timeout`, 900 seconds (test phase).
    DefaultOutputTimeout,
    /// The operator's `policy.limits`.
    Policy,
}

impl TimeoutSource {
    /// The source in words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Phasebox => "the phase's phasebox block",
            Self::GlobalTimeout => "the job's global_timeout",
            Self::DefaultGlobalTimeout => "Testflinger's default global_timeout",
            Self::Reservation => "reserve_data.timeout",
            Self::OutputTimeout => "the job's output_timeout",
            Self::DefaultOutputTimeout => "Testflinger's default output_timeout",
            Self::Policy => "the runner's policy",
        }
    }
}

/// A phase's own timeouts, before the job's budget shortens them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseTimeouts {
    /// Wall-clock limit of the phase.
    pub timeout: Duration,
    /// Where it came from.
    pub timeout_source: TimeoutSource,
    /// Longest silence before the phase is ended.
    pub output_timeout: Duration,
    /// Where it came from.
    pub output_timeout_source: TimeoutSource,
}

/// The timeouts of `phase` of `spec` (see the [module docs](self)), capped by `policy`.
pub fn phase_timeouts(spec: &JobSpec, phase: Phase, block: Option<&PhaseboxBlock>, policy: &Limits) -> PhaseTimeouts {
    let secs = |n: i64| Duration::from_secs(n.max(1) as u64);
    let (timeout, timeout_source) = match block.and_then(|b| b.timeout) {
        Some(d) => (d.to_std(), TimeoutSource::Phasebox),
        None if phase == Phase::Reserve => {
            let reservation = spec.reserve_data.as_ref().map(|r| r.effective_timeout());
            let reservation = Duration::from_secs(reservation.unwrap_or(phasebox_jobspec::DEFAULT_RESERVE_TIMEOUT));
            (reservation + RESERVE_GRACE, TimeoutSource::Reservation)
        }
        None => match spec.global_timeout {
            Some(n) => (secs(n), TimeoutSource::GlobalTimeout),
            None => (Duration::from_secs(DEFAULT_GLOBAL_TIMEOUT), TimeoutSource::DefaultGlobalTimeout),
        },
    };
    let (output_timeout, output_timeout_source) = match block.and_then(|b| b.output_timeout) {
        Some(d) => (d.to_std(), TimeoutSource::Phasebox),
        None if phase == Phase::Test => match spec.output_timeout {
            Some(n) => (secs(n), TimeoutSource::OutputTimeout),
            None => (Duration::from_secs(DEFAULT_OUTPUT_TIMEOUT), TimeoutSource::DefaultOutputTimeout),
        },
        None => (policy.output_timeout, TimeoutSource::Policy),
    };
    let cap = |(d, source): (Duration, TimeoutSource), limit: Duration| {
        if limit < d { (limit, TimeoutSource::Policy) } else { (d, source) }
    };
    let (timeout, timeout_source) = cap((timeout, timeout_source), policy.timeout);
    let (output_timeout, output_timeout_source) = cap((output_timeout, output_timeout_source), policy.output_timeout);
    PhaseTimeouts { timeout, timeout_source, output_timeout, output_timeout_source }
}

/// How long a phase may run given what is left of the job: `(timeout, cut_by_the_job)`, or
/// `None` when a phase other than cleanup may not start any more.
pub(crate) fn budget(
    phase: Phase,
    own: Duration,
    left: Duration,
    cleanup_budget: Duration,
) -> Option<(Duration, bool)> {
    let room = if phase == Phase::Cleanup { left.max(cleanup_budget) } else { left.saturating_sub(cleanup_budget) };
    if room.is_zero() {
        return None;
    }
    Some(if room < own { (room, true) } else { (own, false) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> JobSpec {
        JobSpec::from_yaml(yaml).unwrap()
    }

    const H: u64 = 3600;

    #[test]
    fn testflinger_defaults_and_global_timeout_per_phase() {
        let policy = Limits::default();
        let spec = job("job_queue: q\ntest_data: {test_cmds: x}\n");
        let t = phase_timeouts(&spec, Phase::Test, None, &policy);
        assert_eq!((t.timeout, t.timeout_source), (Duration::from_secs(4 * H), TimeoutSource::DefaultGlobalTimeout));
        assert_eq!(
            (t.output_timeout, t.output_timeout_source),
            (Duration::from_secs(900), TimeoutSource::DefaultOutputTimeout)
        );
        let spec = job("job_queue: q\nglobal_timeout: 60\noutput_timeout: 30\ntest_data: {test_cmds: x}\n");
        let t = phase_timeouts(&spec, Phase::Setup, None, &policy);
        assert_eq!((t.timeout, t.timeout_source), (Duration::from_secs(60), TimeoutSource::GlobalTimeout));
        // Testflinger watches output in the test phase only; elsewhere the policy's limit.
        assert_eq!(t.output_timeout_source, TimeoutSource::Policy);
        let t = phase_timeouts(&spec, Phase::Test, None, &policy);
        assert_eq!(
            (t.output_timeout, t.output_timeout_source),
            (Duration::from_secs(30), TimeoutSource::OutputTimeout)
        );
    }

    #[test]
    fn phasebox_block_wins_and_policy_caps() {
        let spec = job(
            "job_queue: q\nglobal_timeout: 60\ntest_data:\n  test_cmds: x\n  phasebox: {timeout: 2h, output_timeout: 20m}\n",
        );
        let block = spec.phasebox(Phase::Test);
        let t = phase_timeouts(&spec, Phase::Test, block, &Limits::default());
        assert_eq!((t.timeout, t.timeout_source), (Duration::from_secs(2 * H), TimeoutSource::Phasebox));
        // The default policy allows 15 minutes of silence at most.
        assert_eq!((t.output_timeout, t.output_timeout_source), (Duration::from_secs(900), TimeoutSource::Policy));
        let strict = Limits { timeout: Duration::from_secs(600), ..Limits::default() };
        let t = phase_timeouts(&spec, Phase::Test, block, &strict);
        assert_eq!((t.timeout, t.timeout_source), (Duration::from_secs(600), TimeoutSource::Policy));
    }

    #[test]
    fn reserve_uses_its_reservation_not_global_timeout() {
        let spec = job("job_queue: q\nglobal_timeout: 60\nreserve_data: {ssh_keys: ['lp:a'], timeout: 2h}\n");
        let t = phase_timeouts(&spec, Phase::Reserve, None, &Limits::default());
        assert_eq!(t.timeout, Duration::from_secs(2 * H) + RESERVE_GRACE);
        assert_eq!(t.timeout_source, TimeoutSource::Reservation);
    }

    #[test]
    fn the_job_budget_keeps_time_for_cleanup() {
        let s = Duration::from_secs;
        // plenty left: the phase's own timeout
        assert_eq!(budget(Phase::Test, s(10), s(100), s(5)), Some((s(10), false)));
        // little left: cut to what is left minus the cleanup budget
        assert_eq!(budget(Phase::Test, s(10), s(8), s(5)), Some((s(3), true)));
        // nothing but the cleanup budget left: the phase does not start
        assert_eq!(budget(Phase::Test, s(10), s(5), s(5)), None);
        // cleanup gets its budget even when the job's time is gone
        assert_eq!(budget(Phase::Cleanup, s(10), s(0), s(5)), Some((s(5), true)));
        assert_eq!(budget(Phase::Cleanup, s(10), s(60), s(5)), Some((s(10), false)));
    }
}
