//! JUnit XML export of a job's results, for CI dashboards (Jenkins, GitLab, …).
//!
//! ```xml
//! <testsuites name="phasebox job <id>" tests=… failures=… errors=… skipped=… time=…>
//!   <testsuite name="phasebox.phases" …>              one testcase per phase:
//!     <testcase classname="phasebox.phases" name="setup" time="0.012"/>
//!     <testcase … name="test"><failure message="…" type="test_failure">…</failure></testcase>
//!     <testcase … name="reserve"><skipped message="the job has no reserve_data"/></testcase>
//!   </testsuite>
//!   <testsuite name="hello" …>                         one per (phase, suite) reported
//!     <properties>
//!       <property name="phase" value="test"/>
//!       <property name="greeting.length (bytes)" value="62"/>   measurements
//!     </properties>
//!     <testcase classname="test.hello" name="greeting" time="0.000"/>
//!   </testsuite>
//! </testsuites>
//! ```
//!
//! The `phasebox.phases` suite makes a failed phase visible even when it reported no case
//! (a provision that failed, a phase that timed out): a status of 0 is a pass, a test failure a
//! `<failure>`, anything else an `<error>` whose `type` is the outcome (`timeout`,
//! `cancelled`, …), a skipped phase `<skipped>`. A measurement belongs to the suite its phase
//! last reported a case in; one reported before any case gets a suite named after the phase.
//! Text is escaped for XML, and characters XML 1.0 cannot carry become U+FFFD.

use std::fmt::Write as _;

use phasebox_jobspec::Phase;

use crate::events::{CaseStatus, PhaseOutcome};
use crate::results::{JobResults, MeasurementRecord};

/// Suite holding one testcase per phase.
pub const PHASES_SUITE: &str = "phasebox.phases";

#[derive(Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
    ms: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.tests += other.tests;
        self.failures += other.failures;
        self.errors += other.errors;
        self.skipped += other.skipped;
        self.ms += other.ms;
    }

    fn attrs(&self) -> String {
        format!(
            r#"tests="{}" failures="{}" errors="{}" skipped="{}" time="{}""#,
            self.tests,
            self.failures,
            self.errors,
            self.skipped,
            secs(self.ms)
        )
    }
}

/// The results as a JUnit XML document.
pub fn junit_xml(results: &JobResults) -> String {
    let mut suites = Vec::new();
    let mut total = Counts::default();

    // The phases themselves.
    let mut counts = Counts::default();
    let mut body = String::new();
    for phase in Phase::ALL {
        let Some(summary) = results.phasebox.phases.get(&phase) else { continue };
        let ms = summary.elapsed_ms.unwrap_or(0);
        counts.tests += 1;
        counts.ms += ms;
        let open = format!(r#"    <testcase classname="{PHASES_SUITE}" name="{}" time="{}""#, phase.as_str(), secs(ms));
        let reason = escape(&summary.reason);
        match (summary.skipped, summary.status, summary.outcome) {
            (Some(_), _, _) => {
                counts.skipped += 1;
                let _ = writeln!(body, r#"{open}><skipped message="{reason}"/></testcase>"#);
            }
            (None, Some(0), _) => {
                let _ = writeln!(body, "{open}/>");
            }
            (None, Some(status), Some(PhaseOutcome::TestFailure)) => {
                counts.failures += 1;
                let _ = writeln!(
                    body,
                    r#"{open}><failure message="{reason}" type="test_failure">status {status}: {reason}</failure></testcase>"#
                );
            }
            (None, status, outcome) => {
                counts.errors += 1;
                let kind = outcome.map(outcome_word).unwrap_or("not_ended");
                let status = status.map(|s| format!("status {s}: ")).unwrap_or_default();
                let _ = writeln!(
                    body,
                    r#"{open}><error message="{reason}" type="{kind}">{status}{reason}</error></testcase>"#
                );
            }
        }
    }
    suites.push((PHASES_SUITE.to_owned(), Vec::new(), counts, body));

    // The suites the plugins reported.
    for suite in &results.phasebox.suites {
        let mut counts = Counts::default();
        let mut body = String::new();
        for case in &suite.cases {
            counts.tests += 1;
            counts.ms += case.duration_ms;
            let open = format!(
                r#"    <testcase classname="{}.{}" name="{}" time="{}""#,
                suite.phase.as_str(),
                escape(&suite.name),
                escape(&case.name),
                secs(case.duration_ms)
            );
            let message = escape(case.message.as_deref().unwrap_or_default());
            let _ = match case.status {
                CaseStatus::Pass => writeln!(body, "{open}/>"),
                CaseStatus::Fail => {
                    counts.failures += 1;
                    writeln!(body, r#"{open}><failure message="{message}" type="fail">{message}</failure></testcase>"#)
                }
                CaseStatus::Error => {
                    counts.errors += 1;
                    writeln!(body, r#"{open}><error message="{message}" type="error">{message}</error></testcase>"#)
                }
                CaseStatus::Skip => {
                    counts.skipped += 1;
                    writeln!(body, r#"{open}><skipped message="{message}"/></testcase>"#)
                }
            };
        }
        let measurements = results
            .phasebox
            .measurements
            .iter()
            .filter(|m| m.phase == suite.phase && m.suite.as_deref() == Some(suite.name.as_str()))
            .collect();
        let props = properties(suite.phase, measurements);
        suites.push((suite.name.clone(), props, counts, body));
    }

    // Measurements reported before any case of their phase.
    for phase in Phase::ALL {
        let loose: Vec<_> =
            results.phasebox.measurements.iter().filter(|m| m.phase == phase && m.suite.is_none()).collect();
        if !loose.is_empty() {
            suites.push((phase.as_str().to_owned(), properties(phase, loose), Counts::default(), String::new()));
        }
    }

    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut inner = String::new();
    for (name, props, counts, body) in &suites {
        total.add(counts);
        let _ = writeln!(inner, r#"  <testsuite name="{}" {}>"#, escape(name), counts.attrs());
        if !props.is_empty() {
            inner.push_str("    <properties>\n");
            for (k, v) in props {
                let _ = writeln!(inner, r#"      <property name="{}" value="{}"/>"#, escape(k), escape(v));
            }
            inner.push_str("    </properties>\n");
        }
        inner.push_str(body);
        inner.push_str("  </testsuite>\n");
    }
    let _ = writeln!(xml, r#"<testsuites name="phasebox job {}" {}>"#, escape(&results.phasebox.job_id), total.attrs());
    xml.push_str(&inner);
    xml.push_str("</testsuites>\n");
    xml
}

fn properties(phase: Phase, measurements: Vec<&MeasurementRecord>) -> Vec<(String, String)> {
    let mut props = vec![("phase".to_owned(), phase.as_str().to_owned())];
    for m in measurements {
        let name = if m.unit.is_empty() { m.name.clone() } else { format!("{} ({})", m.name, m.unit) };
        props.push((name, m.value.map_or_else(|| "NaN".to_owned(), |v| v.to_string())));
    }
    props
}

fn outcome_word(o: PhaseOutcome) -> &'static str {
    match o {
        PhaseOutcome::Passed => "passed",
        PhaseOutcome::TestFailure => "test_failure",
        PhaseOutcome::JobError => "job_error",
        PhaseOutcome::InfraError => "infra_error",
        PhaseOutcome::Timeout => "timeout",
        PhaseOutcome::JobTimeout => "job_timeout",
        PhaseOutcome::OutputTimeout => "output_timeout",
        PhaseOutcome::OutputLimit => "output_limit",
        PhaseOutcome::MemoryLimit => "memory_limit",
        PhaseOutcome::DiskLimit => "disk_limit",
        PhaseOutcome::HandleLimit => "handle_limit",
        PhaseOutcome::Cancelled => "cancelled",
        PhaseOutcome::Crashed => "crashed",
        PhaseOutcome::Exited => "exited",
        PhaseOutcome::EngineError => "engine_error",
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Escapes text for an XML attribute or element; characters XML 1.0 cannot hold become U+FFFD.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape(r#"a<b>&"c"'d'"#), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
        assert_eq!(escape("x\u{1}y\nz"), "x\u{fffd}y&#10;z");
    }
}
