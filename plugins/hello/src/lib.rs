//! `hello`: the smallest useful phasebox plugin, and the engine tests' well-behaved guest.
//!
//! It prints `hello from <phase> of job <job-id> on <dut name>` to stdout, logs the same line,
//! reports one test case (suite `hello`, case `greeting`) and one measurement
//! (`greeting.length`, in bytes), and returns the greeting as its summary.
//!
//! Its data may ask it to fail, so engine tests can see each failure kind end to end:
//! `{"fail": "test"}` reports the case as failed and returns a test failure, `{"fail": "job"}`
//! and `{"fail": "infra"}` return a job or infrastructure error before reporting anything.

use std::time::Instant;

use phasebox_plugin_sdk::{self as sdk, Failure, Guest, Outcome, PhaseContext, results::Status};
use serde::Deserialize;

/// The phase data `hello` understands. Every field is optional (`{}` greets and passes), and
/// other fields are ignored so that engine tests can put their own markers in the data.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    /// Fail on purpose, with this kind of failure.
    fail: Option<FailKind>,
}

/// The failure kinds a job can ask `hello` for, named as in its data.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum FailKind {
    /// Return `Failure::TestFailure`.
    Test,
    /// Return `Failure::JobError`.
    Job,
    /// Return `Failure::InfraError`.
    Infra,
}

/// The plugin's `Guest` implementation.
struct Hello;

impl Guest for Hello {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let started = Instant::now();
        let data: Data = sdk::ctx_data(&ctx)?;
        let greeting = greeting(&ctx);
        println!("{greeting}");
        sdk::log::info(&greeting);

        match data.fail {
            // A job or lab problem means the test never ran, so no result is reported for it.
            Some(FailKind::Job) => {
                return Err(Failure::JobError(format!(
                    "hello was asked to fail with a job error in job {}",
                    ctx.job_id
                )));
            }
            Some(FailKind::Infra) => {
                return Err(Failure::InfraError(format!(
                    "hello was asked to fail with an infrastructure error in job {}",
                    ctx.job_id
                )));
            }
            Some(FailKind::Test) | None => {}
        }

        let failing = matches!(data.fail, Some(FailKind::Test));
        let (status, message) =
            if failing { (Status::Fail, "asked to fail by the job's data") } else { (Status::Pass, greeting.as_str()) };
        sdk::report_case("hello", "greeting", status, started.elapsed(), Some(message));
        // A greeting is at most a few hundred bytes, so the f64 conversion is exact.
        sdk::measure("greeting.length", greeting.len() as f64, "bytes");

        if failing {
            sdk::log::error("the greeting test failed on purpose");
            return Err(Failure::TestFailure("hello was asked to fail its greeting test".to_owned()));
        }
        Ok(Outcome { summary: greeting })
    }
}

/// The line `hello` prints, logs and returns.
fn greeting(ctx: &PhaseContext) -> String {
    let dut = sdk::fact(ctx, "name").unwrap_or("an unnamed device");
    format!("hello from {} of job {} on {dut}", ctx.phase, ctx.job_id)
}

sdk::export_phase!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::DutFact;

    #[test]
    fn greeting_names_phase_job_and_device() {
        let mut ctx = PhaseContext {
            phase: "test".to_owned(),
            job_id: "0b9f".to_owned(),
            data: "{}".to_owned(),
            dut: vec![DutFact { key: "name".to_owned(), value: "rpi4-07".to_owned() }],
        };
        assert_eq!(greeting(&ctx), "hello from test of job 0b9f on rpi4-07");
        ctx.dut.clear();
        assert_eq!(greeting(&ctx), "hello from test of job 0b9f on an unnamed device");
    }
}
