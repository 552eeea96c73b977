//! The job's redactor, and the per-phase output streams that use it.
//!
//! One [`Redactor`] per job holds every secret value the job was given (whichever phase
//! declares it: a secret must not leave through any phase). Every string of every event is
//! redacted before any sink sees it; a phase's output and log lines as streams, so that a
//! secret written in pieces is still caught:
//!
//! 1. **What renders is what is matched.** Each of the plugin's streams (stdout, stderr, the
//!    serial console) first goes through a [`TerminalText`]: escape sequences, control
//!    characters other than `\n`, `\r`, `\t` and invisible formatting characters are dropped
//!    from the output, so `s3cr\x1b[0met` is matched (and shown) as `s3cret`. Log lines and
//!    every other string get the same treatment ([`rendered_text`]).
//! 2. **One merged view per phase.** Stdout, stderr and log lines go through one
//!    [`TaggedStreamRedactor`] in the order the plugin emitted them, as a reader of the
//!    phase's output sees them, so a secret written half on stdout and half on stderr (or in a
//!    log line) is caught; the token goes to the stream where the secret started.
//! 3. **Each stream on its own.** What comes out for stdout and for stderr then goes through a
//!    [`StreamRedactor`] of its own, as a reader of one stream sees it, so a secret split
//!    within stdout around a write to stderr is caught too. The serial console is a view of
//!    its own (stage 1 and 3 only).
//!
//! Each stage holds back the last bytes it has seen (a secret may be starting there) and
//! emits them when more arrives or the phase ends; a log line is emitted once all of it has
//! passed the merged view. Output events carry text, so the bytes a stream emits are also cut
//! at a UTF-8 character boundary, the rest of a character carried to the next chunk.

use std::collections::{BTreeMap, VecDeque};

use phasebox_jobspec::Phase;
use phasebox_redact::{Redactor, Released, Secret, StreamRedactor, TaggedStreamRedactor, TerminalText, rendered_text};

use crate::events::{JobEvent, LogLevel, OutputStream};

/// The redactor of one job; redacts nothing (but still drops terminal controls) when the job
/// has no secrets.
#[derive(Clone, Debug, Default)]
pub(crate) struct JobRedactor {
    inner: Option<Redactor>,
}

impl JobRedactor {
    /// Compiles every secret; refuses one shorter than the redactor's minimum, by name.
    pub(crate) fn new(secrets: &BTreeMap<String, Secret>) -> Result<Self, phasebox_redact::RedactError> {
        if secrets.is_empty() {
            return Ok(Self { inner: None });
        }
        Ok(Self { inner: Some(Redactor::new(secrets.iter().map(|(n, s)| (n.as_str(), s)))?) })
    }

    /// The underlying redactor, when the job has secrets.
    pub(crate) fn redactor(&self) -> Option<&Redactor> {
        self.inner.as_ref()
    }

    /// Redacts `s` in place: what it renders, with every secret form masked.
    pub(crate) fn redact(&self, s: &mut String) {
        if s.is_empty() {
            return;
        }
        let rendered = rendered_text(s);
        *s = match &self.inner {
            Some(r) => r.redact_str(&rendered),
            None => rendered,
        };
    }

    /// `s`, redacted.
    pub(crate) fn redacted(&self, s: &str) -> String {
        let mut s = s.to_owned();
        self.redact(&mut s);
        s
    }

    /// The output streams of one phase.
    pub(crate) fn phase_streams(&self, phase: Phase) -> PhaseStreams {
        PhaseStreams {
            phase,
            merged: self.inner.as_ref().map(Redactor::tagged_stream),
            stdout: Stream::new(self.inner.as_ref()),
            stderr: Stream::new(self.inner.as_ref()),
            serial: Stream::new(self.inner.as_ref()),
            logs: VecDeque::new(),
            next_log: 0,
        }
    }
}

/// Where a piece of the merged view came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Stdout,
    Stderr,
    /// The n-th log line of the phase.
    Log(u64),
}

/// One phase's output: the merged view of stdout, stderr and log lines, then each stream on
/// its own (see the [module docs](self)).
pub(crate) struct PhaseStreams {
    phase: Phase,
    merged: Option<TaggedStreamRedactor<Channel>>,
    stdout: Stream,
    stderr: Stream,
    serial: Stream,
    /// Log lines still passing through the merged view: number, level, bytes released so far.
    logs: VecDeque<(u64, LogLevel, Vec<u8>)>,
    next_log: u64,
}

/// One stream's own stages: what renders, its own redactor, UTF-8 decoding.
struct Stream {
    terminal: TerminalText,
    redactor: Option<StreamRedactor>,
    /// The start of a UTF-8 character whose remaining bytes have not arrived yet.
    carry: Vec<u8>,
}

impl Stream {
    fn new(redactor: Option<&Redactor>) -> Self {
        Stream { terminal: TerminalText::new(), redactor: redactor.map(Redactor::stream), carry: Vec::new() }
    }

    /// Redacts `bytes` on this stream's own and decodes what can be released.
    fn own(&mut self, bytes: &[u8]) -> String {
        match &mut self.redactor {
            Some(r) => decode(&mut self.carry, &r.push(bytes), false),
            None => decode(&mut self.carry, bytes, false),
        }
    }

    fn finish(&mut self) -> String {
        let rest = self.redactor.take().map(StreamRedactor::finish).unwrap_or_default();
        decode(&mut self.carry, &rest, true)
    }
}

impl PhaseStreams {
    /// Feeds a chunk of `stream` (stdout, stderr or serial); appends the events that can be
    /// released now.
    pub(crate) fn output(&mut self, stream: OutputStream, chunk: &[u8], events: &mut Vec<JobEvent>) {
        let (channel, text) = match stream {
            OutputStream::Serial => {
                let text = self.serial.terminal.push(chunk);
                let data = self.serial.own(text.as_bytes());
                self.emit_output(OutputStream::Serial, data, events);
                return;
            }
            OutputStream::Stderr => (Channel::Stderr, self.stderr.terminal.push(chunk)),
            OutputStream::Stdout | OutputStream::Engine => (Channel::Stdout, self.stdout.terminal.push(chunk)),
        };
        self.merged_push(channel, text.as_bytes(), events);
    }

    /// Feeds a log line of the plugin; appends the events that can be released now.
    pub(crate) fn log(&mut self, level: LogLevel, message: &str, events: &mut Vec<JobEvent>) {
        let n = self.next_log;
        self.next_log += 1;
        self.logs.push_back((n, level, Vec::new()));
        let text = rendered_text(message);
        self.merged_push(Channel::Log(n), text.as_bytes(), events);
    }

    /// Ends every stream; returns the events for what they still held.
    pub(crate) fn finish(mut self) -> Vec<JobEvent> {
        let mut events = Vec::new();
        if let Some(merged) = self.merged.take() {
            for piece in merged.finish() {
                self.released(piece, &mut events);
            }
        }
        for stream in [OutputStream::Stdout, OutputStream::Stderr, OutputStream::Serial] {
            let data = match stream {
                OutputStream::Stdout => self.stdout.finish(),
                OutputStream::Stderr => self.stderr.finish(),
                _ => self.serial.finish(),
            };
            self.emit_output(stream, data, &mut events);
        }
        events
    }

    fn merged_push(&mut self, channel: Channel, bytes: &[u8], events: &mut Vec<JobEvent>) {
        let pieces = match &mut self.merged {
            Some(merged) => merged.push(channel, bytes),
            None => vec![Released { tag: channel, bytes: bytes.to_vec(), complete: true }],
        };
        for piece in pieces {
            self.released(piece, events);
        }
    }

    /// A piece that passed the merged view: to its stream's own stage, or to its log line.
    fn released(&mut self, piece: Released<Channel>, events: &mut Vec<JobEvent>) {
        match piece.tag {
            Channel::Stdout => {
                let data = self.stdout.own(&piece.bytes);
                self.emit_output(OutputStream::Stdout, data, events);
            }
            Channel::Stderr => {
                let data = self.stderr.own(&piece.bytes);
                self.emit_output(OutputStream::Stderr, data, events);
            }
            Channel::Log(n) => {
                let Some(line) = self.logs.iter_mut().find(|(m, _, _)| *m == n) else { return };
                line.2.extend_from_slice(&piece.bytes);
                if piece.complete {
                    // Log lines complete in order: this one is the oldest waiting.
                    while self.logs.front().is_some_and(|(m, _, _)| *m <= n) {
                        let (_, level, bytes) = self.logs.pop_front().expect("checked");
                        let message = String::from_utf8_lossy(&bytes).into_owned();
                        events.push(JobEvent::Log { phase: self.phase, level, message });
                    }
                }
            }
        }
    }

    fn emit_output(&self, stream: OutputStream, data: String, events: &mut Vec<JobEvent>) {
        if !data.is_empty() {
            events.push(JobEvent::Output { phase: self.phase, stream, data });
        }
    }
}

/// Decodes `carry ++ bytes` as UTF-8: complete characters are returned (invalid bytes as
/// U+FFFD); an incomplete character at the end is kept in `carry`, unless `last`.
fn decode(carry: &mut Vec<u8>, bytes: &[u8], last: bool) -> String {
    let mut buf = std::mem::take(carry);
    buf.extend_from_slice(bytes);
    let mut out = String::with_capacity(buf.len());
    let mut rest = buf.as_slice();
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).expect("checked valid"));
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[bad..];
                    }
                    None if last => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        break;
                    }
                    None => {
                        carry.extend_from_slice(after);
                        break;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(value: &str) -> BTreeMap<String, Secret> {
        [("TOKEN".to_owned(), Secret::new(value))].into()
    }

    /// Everything the streams released, as (stream or "log", text).
    fn text_of(events: &[JobEvent]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| match e {
                JobEvent::Output { stream, data, .. } => (format!("{stream:?}").to_lowercase(), data.clone()),
                JobEvent::Log { message, .. } => ("log".to_owned(), message.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn joined(events: &[JobEvent]) -> String {
        text_of(events).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn short_secrets_are_refused_by_name() {
        let err = JobRedactor::new(&secrets("abc")).unwrap_err().to_string();
        assert!(err.contains("TOKEN") && !err.contains("abc"), "{err}");
    }

    #[test]
    fn a_secret_split_across_writes_is_caught() {
        let r = JobRedactor::new(&secrets("hunter2-very-secret")).unwrap();
        let mut streams = r.phase_streams(Phase::Test);
        let mut events = Vec::new();
        for piece in ["token: hun", "ter2-ve", "ry-sec", "ret\nbye\n"] {
            streams.output(OutputStream::Stdout, piece.as_bytes(), &mut events);
        }
        events.extend(streams.finish());
        let out = joined(&events);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.starts_with("token: **") && out.ends_with("**\nbye\n"), "{out}");
    }

    #[test]
    fn a_secret_split_across_stdout_stderr_and_a_log_line_is_caught() {
        let r = JobRedactor::new(&secrets("hunter2-very-secret")).unwrap();
        let mut streams = r.phase_streams(Phase::Test);
        let mut events = Vec::new();
        streams.output(OutputStream::Stdout, b"a: hunt", &mut events);
        streams.output(OutputStream::Stderr, b"er2-ve", &mut events);
        streams.log(LogLevel::Info, "ry-sec", &mut events);
        streams.output(OutputStream::Stdout, b"ret\n", &mut events);
        // Within stdout, around a write to stderr.
        streams.output(OutputStream::Stdout, b"b: hunter2-v", &mut events);
        streams.output(OutputStream::Stderr, b"(interleaved)\n", &mut events);
        streams.output(OutputStream::Stdout, b"ery-secret\n", &mut events);
        events.extend(streams.finish());
        let out = joined(&events);
        assert!(!out.contains("hunt") && !out.contains("secret") && !out.contains("ry-sec"), "{out}");
        let texts = text_of(&events);
        assert!(texts.iter().any(|(k, t)| k == "log" && t.is_empty()), "the log line is still emitted: {texts:?}");
        let stdout: String = texts.iter().filter(|(k, _)| k == "stdout").map(|(_, t)| t.as_str()).collect();
        assert!(stdout.starts_with("a: **") && stdout.contains("b: **"), "{stdout}");
    }

    #[test]
    fn escapes_inside_a_secret_do_not_hide_it() {
        let r = JobRedactor::new(&secrets("hunter2-very-secret")).unwrap();
        let mut streams = r.phase_streams(Phase::Test);
        let mut events = Vec::new();
        streams.output(OutputStream::Stdout, b"\x1b[31mhunter2\x1b[0m-very-\x1b", &mut events);
        streams.output(OutputStream::Stdout, b"[1msecret\x1b]52;c;aGk=\x07\n", &mut events);
        streams.log(LogLevel::Warn, "x hunter2\u{200b}-very-secret", &mut events);
        events.extend(streams.finish());
        let out = joined(&events);
        assert!(!out.contains("hunter2") && !out.contains('\x1b'), "{out:?}");
        let mut line = "s3cr\x1b[0met hunter2\x1b[0m-very-secret".to_owned();
        r.redact(&mut line);
        assert!(!line.contains("hunter2") && !line.contains('\x1b'), "{line:?}");
    }

    #[test]
    fn streams_are_decoded_without_splitting_characters() {
        let r = JobRedactor::default();
        let mut streams = r.phase_streams(Phase::Test);
        let mut events = Vec::new();
        let euro = "€".as_bytes();
        streams.output(OutputStream::Stdout, &euro[..1], &mut events);
        streams.output(OutputStream::Stderr, b"err", &mut events);
        streams.output(OutputStream::Stdout, &euro[1..], &mut events);
        streams.output(OutputStream::Stdout, b"\xffok", &mut events);
        events.extend(streams.finish());
        assert_eq!(
            text_of(&events),
            [("stderr".to_owned(), "err".to_owned()), ("stdout".into(), "€".into()), ("stdout".into(), "ok".into())]
        );
    }
}
