//! Live terminal view of a running job: a [`JobSink`] for `phasebox run`.
//!
//! ```text
//! ── setup ─ hello · timeout 4h · output timeout 15m
//! hello from setup of job 0b9f… on sim-dut-1
//!   [info] hello from setup of job 0b9f… on sim-dut-1
//!   ✓ hello / greeting  0 ms
//!   · greeting.length = 62 bytes
//! ✓ setup passed (status 0) in 14 ms
//! – firmware_update skipped: the job has no firmware_update_data
//! ⠹ test: running 12.4 s, silent for 3.0 s
//! ```
//!
//! The renderer draws on its own thread: [`JobSink::event`] only queues the record, so a slow
//! terminal never holds up a guest. On a terminal it shows a spinner with the elapsed time once
//! a phase has been silent for a second, and uses colour unless `NO_COLOR` is set; into a file
//! or pipe it writes plain lines and no spinner. Allowed capability uses and log lines below
//! `info` are shown only when [`RenderOptions::verbose`] is set.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use phasebox_jobspec::Phase;
use phasebox_redact::visible_controls;
use phasebox_sandbox::units::format_duration;

use crate::events::{CaseStatus, EventRecord, JobEvent, JobSink, JobState, LogLevel, OutputStream, PhaseOutcome};

/// How the renderer draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// ANSI colours and styles.
    pub color: bool,
    /// A spinner line while a phase is silent (needs a terminal: it redraws its line).
    pub spinner: bool,
    /// Also show allowed capability uses and debug/trace log lines.
    pub verbose: bool,
}

impl RenderOptions {
    /// Colour and spinner when `stream` is a terminal (colour only if `NO_COLOR` is unset).
    pub fn detect(stream: &impl IsTerminal) -> Self {
        let tty = stream.is_terminal();
        Self { color: tty && std::env::var_os("NO_COLOR").is_none(), spinner: tty, verbose: false }
    }
}

/// Renders a job's events to a terminal (or any writer) as they come; see the
/// [module docs](self).
pub struct TerminalRenderer {
    tx: Option<Sender<EventRecord>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TerminalRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalRenderer").finish_non_exhaustive()
    }
}

impl TerminalRenderer {
    /// Renders to stderr, with the options [`RenderOptions::detect`] finds for it.
    pub fn stderr() -> Self {
        let options = RenderOptions::detect(&std::io::stderr());
        Self::new(std::io::stderr(), options)
    }

    /// Renders to `out`.
    pub fn new(out: impl Write + Send + 'static, options: RenderOptions) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("phasebox-render".into())
            .spawn(move || Painter::new(Box::new(out), options).run(rx))
            .expect("spawning the renderer thread");
        Self { tx: Some(tx), thread: Some(thread) }
    }

    /// Draws everything queued, then stops the renderer.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TerminalRenderer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl JobSink for TerminalRenderer {
    fn event(&mut self, record: &EventRecord) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(record.clone());
        }
    }
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
/// Silence after which the spinner appears.
const QUIET: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(100);
/// How long the start of a line waits for its end before it is shown anyway.
const PARTIAL_LINE: Duration = Duration::from_millis(250);

struct Painter {
    out: Box<dyn Write + Send>,
    options: RenderOptions,
    /// The running phase, when it started, and when it last wrote.
    running: Option<(Phase, Instant, Instant)>,
    /// Whether the cursor is at the start of a line.
    at_line_start: bool,
    /// Output after the last newline, not drawn yet (so that the plugin's log lines and
    /// results, drawn as whole lines, do not cut an output line in two), and since when.
    pending: Vec<(OutputStream, String)>,
    pending_since: Option<Instant>,
    /// The device console's current line: serial output is drawn as whole lines of its own,
    /// marked, so it never mixes into the plugin's output.
    serial_line: String,
    spinner_shown: bool,
    frame: usize,
}

impl Painter {
    fn new(out: Box<dyn Write + Send>, options: RenderOptions) -> Self {
        Self {
            out,
            options,
            running: None,
            at_line_start: true,
            pending: Vec::new(),
            pending_since: None,
            serial_line: String::new(),
            spinner_shown: false,
            frame: 0,
        }
    }

    fn run(mut self, rx: Receiver<EventRecord>) {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(record) => {
                    self.clear_spinner();
                    self.draw(&record.event);
                    let _ = self.out.flush();
                }
                Err(RecvTimeoutError::Timeout) => self.tick(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.clear_spinner();
        self.flush_pending();
        let _ = self.out.flush();
    }

    fn style(&self, code: &str, text: &str) -> String {
        if self.options.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    /// Writes whole lines, starting a new line first if output left the cursor mid-line.
    fn line(&mut self, text: &str) {
        if !self.at_line_start {
            let _ = self.out.write_all(b"\n");
        }
        let _ = writeln!(self.out, "{text}");
        self.at_line_start = true;
    }

    /// Draws one line of the device's console, marked as such; control characters other than
    /// tabs are dropped (a console prints carriage returns and terminal escapes).
    fn serial(&mut self, line: &str) {
        let clean: String = line.chars().filter(|c| !c.is_control() || *c == '\t').collect();
        if clean.trim().is_empty() {
            return;
        }
        let text = format!("  serial│ {clean}");
        self.line(&self.style("36", &text));
    }

    /// Draws the output held back, as it is (it may end mid-line).
    fn flush_pending(&mut self) {
        for (stream, data) in std::mem::take(&mut self.pending) {
            let text = match stream {
                OutputStream::Engine => self.style("1;33", &data),
                OutputStream::Stderr => self.style("31", &data),
                OutputStream::Stdout | OutputStream::Serial => data.clone(),
            };
            let _ = self.out.write_all(text.as_bytes());
            if !data.is_empty() {
                self.at_line_start = data.ends_with('\n');
            }
        }
        self.pending_since = None;
    }

    fn draw(&mut self, event: &JobEvent) {
        // What an event carries comes from a plugin, a device or a job: it is shown, never
        // obeyed by the terminal (controls made visible; the console's are dropped below).
        let mut event = event.clone();
        match &mut event {
            JobEvent::Output { stream: OutputStream::Serial, .. } => {}
            JobEvent::Output { data, .. } => {
                if let Cow::Owned(v) = visible_controls(data) {
                    *data = v;
                }
            }
            other => other.map_strings(&mut |s| {
                if let Cow::Owned(v) = visible_controls(s) {
                    *s = v;
                }
            }),
        }
        let event = &event;
        if matches!(event, JobEvent::PhaseStart { .. } | JobEvent::PhaseEnd { .. } | JobEvent::JobEnd { .. }) {
            self.flush_pending();
            let rest = std::mem::take(&mut self.serial_line);
            self.serial(&rest);
        }
        if let Some(phase) = event.phase()
            && let Some((running, _, last)) = &mut self.running
            && *running == phase
        {
            *last = Instant::now();
        }
        match event {
            JobEvent::JobStart { job_id, job_queue, name, device_info, .. } => {
                let dut = device_info.get("agent_name").and_then(|v| v.as_str()).unwrap_or("the device");
                let name = name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default();
                let text = format!("job {job_id}{name} (queue {job_queue}) on {dut}");
                self.line(&self.style("1", &text));
            }
            JobEvent::PhaseStart { phase, plugin, timeout_ms, output_timeout_ms, .. } => {
                self.running = Some((*phase, Instant::now(), Instant::now()));
                let head = self.style("1;36", &format!("── {phase} "));
                let rest = format!(
                    "─ {plugin} · timeout {} · output timeout {}",
                    format_duration(Duration::from_millis(*timeout_ms)),
                    format_duration(Duration::from_millis(*output_timeout_ms))
                );
                self.line(&format!("{head}{}", self.style("36", &rest)));
            }
            JobEvent::PhaseSkipped { phase, detail, .. } => {
                let text = format!("– {phase} skipped: {detail}");
                self.line(&self.style("2", &text));
            }
            JobEvent::Output { stream: OutputStream::Serial, data, .. } => {
                self.serial_line.push_str(data);
                while let Some(end) = self.serial_line.find('\n') {
                    let line: String = self.serial_line.drain(..=end).collect();
                    self.serial(&line);
                }
            }
            JobEvent::Output { stream, data, .. } => match data.rfind('\n') {
                Some(end) => {
                    let (lines, rest) = data.split_at(end + 1);
                    self.pending.push((*stream, lines.to_owned()));
                    self.flush_pending();
                    if !rest.is_empty() {
                        self.pending.push((*stream, rest.to_owned()));
                        self.pending_since = Some(Instant::now());
                    }
                }
                None if !data.is_empty() => {
                    self.pending.push((*stream, data.clone()));
                    self.pending_since.get_or_insert_with(Instant::now);
                }
                None => {}
            },
            JobEvent::Log { level, message, .. } => {
                if *level >= LogLevel::Info || self.options.verbose {
                    let word = format!("{level:?}").to_lowercase();
                    let code = match level {
                        LogLevel::Error => "31",
                        LogLevel::Warn => "33",
                        _ => "2",
                    };
                    let text = self.style(code, &format!("  [{word}] {message}"));
                    self.line(&text);
                }
            }
            JobEvent::Case { suite, name, status, duration_ms, message, .. } => {
                let (mark, code) = match status {
                    CaseStatus::Pass => ("✓", "32"),
                    CaseStatus::Fail => ("✗", "31"),
                    CaseStatus::Error => ("!", "31"),
                    CaseStatus::Skip => ("–", "2"),
                };
                let note = match (status, message) {
                    (CaseStatus::Pass, _) | (_, None) => String::new(),
                    (_, Some(m)) => format!(": {m}"),
                };
                let text = format!("  {mark} {suite} / {name}  {duration_ms} ms{note}");
                self.line(&self.style(code, &text));
            }
            JobEvent::Measurement { name, value, unit, .. } => {
                self.line(&format!("  · {name} = {value} {unit}"));
            }
            JobEvent::Capability { grant, call, allowed, reason, duration_ms, .. } => {
                if !allowed && duration_ms.is_some() {
                    // A device call that failed (the device was rebooting, say): the plugin
                    // decides whether that matters, so it is shown quietly.
                    let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                    let text = format!("  · {grant} {call} failed{why}");
                    self.line(&self.style("2", &text));
                } else if !allowed {
                    let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                    let text = format!("  ⚠ denied {grant} {call}{why}");
                    self.line(&self.style("33", &text));
                } else if self.options.verbose {
                    let took = duration_ms.map(|ms| format!(" ({ms} ms)")).unwrap_or_default();
                    let text = format!("  · {grant} {call}{took}");
                    self.line(&self.style("2", &text));
                }
            }
            JobEvent::PhaseEnd { phase, status, outcome, reason, elapsed_ms, .. } => {
                self.running = None;
                let took = human_ms(*elapsed_ms);
                let (mark, word, code) = match outcome {
                    _ if *status == 0 => ("✓", "passed", "1;32"),
                    PhaseOutcome::Timeout
                    | PhaseOutcome::JobTimeout
                    | PhaseOutcome::OutputTimeout
                    | PhaseOutcome::OutputLimit
                    | PhaseOutcome::MemoryLimit
                    | PhaseOutcome::DiskLimit
                    | PhaseOutcome::HandleLimit
                    | PhaseOutcome::Cancelled => ("■", "stopped", "1;33"),
                    _ => ("✗", "failed", "1;31"),
                };
                let detail = if *status == 0 { String::new() } else { format!(": {reason}") };
                let text = format!("{mark} {phase} {word} (status {status}) in {took}{detail}");
                self.line(&self.style(code, &text));
            }
            JobEvent::Artifacts { files, bytes, skipped } => {
                let left_out = if skipped.is_empty() { String::new() } else { format!(", {} left out", skipped.len()) };
                self.line(&format!("artifacts: {files} files, {bytes} bytes{left_out}"));
            }
            JobEvent::JobEnd { job_state, reason, statuses, elapsed_ms } => {
                let failed: Vec<String> =
                    statuses.iter().filter(|(_, s)| **s != 0).map(|(p, s)| format!("{p} {s}")).collect();
                let took = human_ms(*elapsed_ms);
                let (text, code) = match (job_state, failed.is_empty()) {
                    (JobState::Cancelled, _) => (format!("job cancelled after {took}"), "1;33"),
                    (JobState::Complete, true) => (format!("job complete: passed in {took}"), "1;32"),
                    (JobState::Complete, false) => {
                        (format!("job complete: failed ({}; {reason}) in {took}", failed.join(", ")), "1;31")
                    }
                };
                self.line(&self.style(code, &text));
            }
        }
    }

    fn tick(&mut self) {
        if self.pending_since.is_some_and(|t| t.elapsed() >= PARTIAL_LINE) {
            self.clear_spinner();
            self.flush_pending();
            let _ = self.out.flush();
        }
        let Some((phase, started, last)) = self.running else { return };
        if !self.options.spinner || !self.at_line_start || last.elapsed() < QUIET {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let text = format!(
            "{} {phase}: running {:.1} s, silent for {:.1} s",
            SPINNER[self.frame],
            started.elapsed().as_secs_f64(),
            last.elapsed().as_secs_f64()
        );
        let text = self.style("2", &text);
        let _ = write!(self.out, "\r\x1b[2K{text}");
        let _ = self.out.flush();
        self.spinner_shown = true;
    }

    fn clear_spinner(&mut self) {
        if self.spinner_shown {
            let _ = self.out.write_all(b"\r\x1b[2K");
            self.spinner_shown = false;
        }
    }
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
}
