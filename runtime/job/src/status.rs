//! Phase status codes: the integers Testflinger records per phase (`<phase>_status`).
//!
//! Testflinger's agent records `returncode % 256` of the phase command: 0 is a pass, anything
//! else a failure, 247 a phase it killed (`-9 % 256`, timeout or cancel), 100 an exception in
//! the agent, 46 a failed recovery (the agent then takes itself offline). A plugin returns a
//! typed outcome instead of an exit code, so phasebox maps each way a phase can end to a code:
//!
//! | code | [`PhaseOutcome`] | meaning |
//! |---:|---|---|
//! | 0 | `passed` | the plugin returned an outcome (or called `exit(0)`) |
//! | 1 | `test_failure` | what was tested did not pass (the usual failing-test exit code) |
//! | 2 | `job_error` | the job's fault: bad data, a missing file, a wrong request |
//! | 3 | `infra_error` | the lab's fault: retry elsewhere or look at the device |
//! | 247 | `timeout`, `job_timeout`, `output_timeout`, `output_limit`, `memory_limit`, `handle_limit`, `disk_limit`, `cancelled` | the engine ended the phase (Testflinger's code for a killed phase) |
//! | 101 | `crashed` | the plugin trapped: a panic (Rust's exit code for one), an out-of-bounds access, a stack overflow |
//! | 100 | `engine_error` | the engine could not start the phase (Testflinger's code for an agent-side exception) |
//! | n | `exited` | the plugin called `exit(n)`; WASI 0.2 carries only success (0) or failure (1) |
//!
//! 46 is never produced: whether an infrastructure error should take a device offline is for
//! the agent to decide, from the outcome, not for a status code to trigger.

use std::time::Duration;

use phasebox_sandbox::{FailureKind, PhaseEnd, Stop};

use crate::events::PhaseOutcome;

/// The plugin returned an outcome.
pub const PASSED: i32 = 0;
/// The plugin reported a test failure.
pub const TEST_FAILURE: i32 = 1;
/// The plugin reported a job error.
pub const JOB_ERROR: i32 = 2;
/// The plugin reported an infrastructure error.
pub const INFRA_ERROR: i32 = 3;
/// The engine could not start the phase (Testflinger: an exception in the agent).
pub const ENGINE_ERROR: i32 = 100;
/// The plugin crashed (trapped).
pub const CRASHED: i32 = 101;
/// The engine ended the phase: a timeout, a limit or a cancel (Testflinger: killed, `-9 % 256`).
pub const STOPPED: i32 = 247;

/// The status code and outcome of a phase that ended with `end`. `job_clipped` says that the
/// phase's timeout had been shortened to what was left of the job's budget, so a timeout is
/// the job's, not the phase's.
pub fn classify(end: &PhaseEnd, job_clipped: bool) -> (i32, PhaseOutcome) {
    match end {
        PhaseEnd::Passed { .. } => (PASSED, PhaseOutcome::Passed),
        PhaseEnd::Failed { kind: FailureKind::TestFailure, .. } => (TEST_FAILURE, PhaseOutcome::TestFailure),
        PhaseEnd::Failed { kind: FailureKind::JobError, .. } => (JOB_ERROR, PhaseOutcome::JobError),
        PhaseEnd::Failed { kind: FailureKind::InfraError, .. } => (INFRA_ERROR, PhaseOutcome::InfraError),
        PhaseEnd::Stopped(stop) => (
            STOPPED,
            match stop {
                Stop::Timeout(_) if job_clipped => PhaseOutcome::JobTimeout,
                Stop::Timeout(_) => PhaseOutcome::Timeout,
                Stop::OutputTimeout(_) => PhaseOutcome::OutputTimeout,
                // Results and capability events share the output limit with output.
                Stop::OutputLimit(_) | Stop::ResultsLimit(_) | Stop::EventsLimit(_) => PhaseOutcome::OutputLimit,
                Stop::MemoryLimit { .. } | Stop::HttpMemoryLimit { .. } => PhaseOutcome::MemoryLimit,
                Stop::HandleLimit(_) => PhaseOutcome::HandleLimit,
                Stop::DiskLimit(_) | Stop::FileLimit(_) => PhaseOutcome::DiskLimit,
                Stop::Cancelled => PhaseOutcome::Cancelled,
            },
        ),
        PhaseEnd::Trapped { .. } => (CRASHED, PhaseOutcome::Crashed),
        PhaseEnd::Exited { code } => (code.rem_euclid(256), PhaseOutcome::Exited),
    }
}

/// Seconds as Testflinger prints them in its stop lines (`900s`), or milliseconds when the
/// duration is not whole seconds.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        let failed = |kind| PhaseEnd::Failed { kind, message: String::new() };
        assert_eq!(classify(&PhaseEnd::Passed { summary: String::new() }, false).0, 0);
        assert_eq!(classify(&failed(FailureKind::TestFailure), false).0, 1);
        assert_eq!(classify(&failed(FailureKind::JobError), false).0, 2);
        assert_eq!(classify(&failed(FailureKind::InfraError), false).0, 3);
        let t = PhaseEnd::Stopped(Stop::Timeout(Duration::from_secs(1)));
        assert_eq!(classify(&t, false), (247, PhaseOutcome::Timeout));
        assert_eq!(classify(&t, true), (247, PhaseOutcome::JobTimeout));
        let idle = PhaseEnd::Stopped(Stop::OutputTimeout(Duration::from_secs(1)));
        assert_eq!(classify(&idle, false), (247, PhaseOutcome::OutputTimeout));
        assert_eq!(classify(&PhaseEnd::Stopped(Stop::Cancelled), false), (247, PhaseOutcome::Cancelled));
        for disk in [Stop::DiskLimit(1), Stop::FileLimit(1)] {
            assert_eq!(classify(&PhaseEnd::Stopped(disk), false), (247, PhaseOutcome::DiskLimit));
        }
        let trap = PhaseEnd::Trapped { trap: "unreachable".into(), guest_message: String::new() };
        assert_eq!(classify(&trap, false), (101, PhaseOutcome::Crashed));
        assert_eq!(classify(&PhaseEnd::Exited { code: 0 }, false), (0, PhaseOutcome::Exited));
        assert_eq!(classify(&PhaseEnd::Exited { code: -9 }, false), (247, PhaseOutcome::Exited));
    }

    #[test]
    fn stop_line_durations() {
        assert_eq!(secs(Duration::from_secs(900)), "900s");
        assert_eq!(secs(Duration::from_millis(1500)), "1500ms");
    }
}
