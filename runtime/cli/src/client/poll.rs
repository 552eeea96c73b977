//! `poll`, `poll-serial`, and the follow loop of `submit --poll` and `reserve` (Testflinger's
//! `do_poll`, reference §4.5).
//!
//! Each round reads the job's state, then the log from the next unseen fragment number on,
//! prints that text to stdout and moves past the highest fragment number it contained, so
//! every fragment is printed once. While the job waits, the queue position is printed when it
//! changes; while it runs, a status line on stderr shows the phase and the time since it
//! started (rewritten in place on a terminal, one line per change otherwise). The loop ends
//! when the job is `complete` or `cancelled`.
//!
//! On a phasebox server the job's event stream says when to look again: a round follows each
//! burst of state, result and log events, so output shows as soon as it is posted, without
//! looking every `--interval` (which then only paces the queue position while the job waits).
//! A Testflinger server has no stream; against it, or once a stream breaks, the loop looks
//! every `--interval`, as Testflinger's CLI does.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use phasebox_client::{Client, ClientError, JobEventStream, LogQuery, LogType, PHASES, TERMINAL_STATES};
use serde_json::Value;

use super::PollArgs;
use super::jobs::no_data;
use crate::Verdict;

/// What to follow and how often to look.
pub struct Follow {
    pub interval: Duration,
    pub log_type: LogType,
    pub start_fragment: u64,
    pub start_timestamp: Option<String>,
    pub phase: Option<String>,
}

impl Follow {
    /// The whole output log, looking every `interval_secs`.
    pub fn new(interval_secs: f64) -> Self {
        Follow {
            interval: Duration::from_secs_f64(interval_secs.clamp(0.05, 600.0)),
            log_type: LogType::Output,
            start_fragment: 0,
            start_timestamp: None,
            phase: None,
        }
    }

    fn query(&self, start_fragment: u64) -> LogQuery {
        LogQuery { start_fragment, start_timestamp: self.start_timestamp.clone(), phase: self.phase.clone() }
    }
}

/// `poll` / `poll-serial`.
pub async fn poll(client: &Client, args: &PollArgs, log_type: LogType) -> anyhow::Result<Verdict> {
    let follow = Follow {
        interval: Follow::new(args.interval).interval,
        log_type,
        start_fragment: args.start_fragment,
        start_timestamp: args.start_timestamp.clone(),
        phase: args.phase.clone(),
    };
    if args.oneshot || args.json {
        let chunk = client
            .get_log_query(&args.job_id, log_type, &follow.query(args.start_fragment))
            .await
            .map_err(|e| no_data(e, &args.job_id, "No data found for that job id."))?;
        if args.json {
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            serde::Serialize::serialize(&chunk.raw, &mut serde_json::Serializer::with_formatter(&mut out, fmt))?;
            println!("{}", String::from_utf8_lossy(&out));
        } else {
            match chunk.last_fragment_number() {
                None => println!("Waiting on Output"),
                Some(n) => {
                    emit(&chunk.text());
                    println!("Last Fragment Number: {n}");
                }
            }
        }
        return Ok(Verdict::Success);
    }
    follow_job(client, &args.job_id, &follow).await
}

/// The follow loop for `submit --poll` and `reserve`.
pub async fn follow(client: &Client, job_id: &str, follow: &Follow) -> anyhow::Result<Verdict> {
    follow_job(client, job_id, follow).await
}

async fn follow_job(client: &Client, job_id: &str, follow: &Follow) -> anyhow::Result<Verdict> {
    client.get_job(job_id).await.map_err(|e| no_data(e, job_id, "No data found for that job id."))?;
    let mut wake = Wake::open(client, job_id).await;
    let mut next = follow.start_fragment;
    let mut position: Option<u64> = None;
    let mut line = StatusLine::new();
    let mut failures = 0u32;
    loop {
        let mut waiting = false;
        match round(client, job_id, follow, next).await {
            Ok((results, chunk)) => {
                failures = 0;
                if let Some(last) = chunk.last_fragment_number() {
                    let text = chunk.text();
                    if !text.is_empty() {
                        line.clear();
                        emit(&text);
                    }
                    next = next.max(last + 1);
                }
                let state = results.get("job_state").and_then(Value::as_str).unwrap_or("unknown").to_owned();
                if let Some(phase) = &follow.phase
                    && let Some(code) = results.get(format!("{phase}_status"))
                {
                    line.clear();
                    eprintln!(
                        "\nPhase '{}' completed with exit code: {code}",
                        phasebox_redact::visible_controls(phase)
                    );
                    eprintln!("Use 'phasebox poll {job_id} --start_fragment {next}' to continue polling.");
                    return Ok(if code.as_i64() == Some(0) { Verdict::Success } else { Verdict::NotPassed });
                }
                if TERMINAL_STATES.contains(&state.as_str()) {
                    line.finish(&state);
                    return Ok(verdict(&results));
                }
                if state == "waiting" {
                    if let Ok(Some(pos)) = client.job_position(job_id).await
                        && position != Some(pos)
                    {
                        position = Some(pos);
                        line.clear();
                        if pos == 0 {
                            println!(
                                "This job will be picked up after the current job is complete (it is next in line)"
                            );
                        } else {
                            println!(
                                "This job will be picked up after the current job and {pos} job(s) ahead of it in the queue are complete"
                            );
                        }
                    }
                    line.update("waiting", None);
                    waiting = true;
                } else {
                    line.update(&state, chunk.latest_phase());
                }
            }
            Err(e @ ClientError::NotFound { .. }) => return Err(no_data(e, job_id, "No data found for that job id.")),
            Err(e) if e.is_transient() => {
                failures += 1;
                if failures == 3 {
                    line.clear();
                    eprintln!("warning: {e}; still trying");
                }
                tracing::debug!(error = %e, "poll round failed; retrying");
                tokio::time::sleep(follow.interval).await;
                continue;
            }
            Err(e) => return Err(super::explain(e, Some(job_id))),
        }
        wake.wait(follow.interval, waiting).await;
    }
}

/// Event kinds after which a round has something new to show.
const WAKING_KINDS: [&str; 4] = ["claimed", "state", "result", "log"];

/// The longest a followed stream may stay silent before the loop looks anyway: a safety net
/// for a stream that stalls without breaking.
const STREAM_SILENCE: Duration = Duration::from_secs(30);

/// What tells the follow loop to look again.
enum Wake {
    /// The job's event stream (phasebox servers).
    Stream(JobEventStream),
    /// Every `--interval` (Testflinger servers, or after the stream ended or broke).
    Interval,
}

impl Wake {
    async fn open(client: &Client, job_id: &str) -> Wake {
        match client.job_events(job_id, None, &WAKING_KINDS).await {
            Ok(stream) => Wake::Stream(stream),
            Err(e) => {
                tracing::debug!(error = %e, "no event stream; looking every interval");
                Wake::Interval
            }
        }
    }

    /// Returns when the next round is due: after the next burst of events, or after
    /// `interval` without a stream. While the job waits, after `interval` at the latest too,
    /// since its queue position changes without an event of its own.
    async fn wait(&mut self, interval: Duration, waiting: bool) {
        let Wake::Stream(stream) = self else {
            tokio::time::sleep(interval).await;
            return;
        };
        let patience = if waiting { interval } else { STREAM_SILENCE.max(interval) };
        match tokio::time::timeout(patience, stream.next()).await {
            Err(_elapsed) => return,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) | Ok(Err(_)) => {
                // The stream ended (the job is over, which the next round shows) or broke.
                *self = Wake::Interval;
                return;
            }
        }
        // Take the rest of the burst already here, so that one round shows it all.
        while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::ZERO, stream.next()).await {}
    }
}

async fn round(
    client: &Client,
    job_id: &str,
    follow: &Follow,
    next: u64,
) -> Result<(Value, phasebox_client::LogChunk), ClientError> {
    // State first, then output: output posted before the job ended is in this round's read.
    let results = client.get_results(job_id).await?;
    let chunk = client.get_log_query(job_id, follow.log_type, &follow.query(next)).await?;
    Ok((results, chunk))
}

/// 0 for a complete job whose phases all exited 0; 1 when cancelled or a phase failed.
fn verdict(results: &Value) -> Verdict {
    let state = results.get("job_state").and_then(Value::as_str).unwrap_or("");
    let failed =
        PHASES.iter().any(|p| results.get(format!("{p}_status")).and_then(Value::as_i64).is_some_and(|c| c != 0));
    if state == "cancelled" || failed { Verdict::NotPassed } else { Verdict::Success }
}

/// Writes output text to stdout as it came (no newline added), with its control characters
/// made visible: the output comes from the job's plugins, its device and whatever agent ran it,
/// and must not drive the terminal (move the cursor over earlier lines, set the clipboard).
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(phasebox_redact::visible_controls(text).as_bytes());
    let _ = out.flush();
}

/// The phase and elapsed time on stderr: rewritten in place on a terminal, a line per change
/// otherwise.
struct StatusLine {
    tty: bool,
    shown: bool,
    last: Option<String>,
    running_since: Option<Instant>,
}

impl StatusLine {
    fn new() -> Self {
        StatusLine { tty: std::io::stderr().is_terminal(), shown: false, last: None, running_since: None }
    }

    fn update(&mut self, state: &str, latest_phase: Option<&str>) {
        // The state and phase names come from the server: shown, never obeyed.
        let state = &*phasebox_redact::visible_controls(state);
        let latest_phase = latest_phase.map(phasebox_redact::visible_controls);
        let latest_phase = latest_phase.as_deref();
        let text = if state == "waiting" {
            "waiting for a device to become available".to_owned()
        } else {
            let since = *self.running_since.get_or_insert_with(Instant::now);
            let phase = if PHASES.contains(&state) { state } else { latest_phase.unwrap_or(state) };
            format!("{phase} phase, running for {}", hms(since.elapsed()))
        };
        if self.tty {
            eprint!("\r\x1b[2K[{state}] {text}");
            let _ = std::io::stderr().flush();
            self.shown = true;
        } else if self.last.as_deref() != Some(state) {
            eprintln!("[{state}] {text}");
        }
        self.last = Some(state.to_owned());
    }

    fn clear(&mut self) {
        if self.tty && self.shown {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.shown = false;
        }
    }

    fn finish(&mut self, state: &str) {
        self.clear();
        let what = if state == "cancelled" { "Job cancelled" } else { "Job completed" };
        match self.running_since {
            Some(since) => eprintln!("{what} - Total time in use: {}", hms(since.elapsed())),
            None => eprintln!("{what}"),
        }
    }
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdicts_follow_state_and_statuses() {
        assert!(matches!(verdict(&json!({"job_state": "complete", "test_status": 0})), Verdict::Success));
        assert!(matches!(verdict(&json!({"job_state": "complete", "test_status": 1})), Verdict::NotPassed));
        assert!(matches!(verdict(&json!({"job_state": "cancelled"})), Verdict::NotPassed));
        assert_eq!(hms(Duration::from_secs(3723)), "01:02:03");
    }
}
