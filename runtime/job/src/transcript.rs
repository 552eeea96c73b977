//! The job's transcript on disk: what a job said is kept in its job directory while it runs,
//! not in memory, so a chatty job costs disk, never the host's RAM.
//!
//! ```text
//! <job_dir>/transcript/events.jsonl        every event, one JSON line each (as events.jsonl)
//! <job_dir>/transcript/<phase>.output      the phase's joined output: stdout, stderr, engine lines
//! <job_dir>/transcript/<phase>.serial      the device's serial console during the phase
//! ```
//!
//! Nothing here is unredacted: the engine writes each event after its redactor has seen it,
//! the text files are the output events' text (redacted as streams) put through the job's
//! redactor once more as one stream per file — the joined text can hold a secret that no
//! single stream held (half on stdout, half on stderr) — and what the redactor holds back
//! while it waits to see whether a secret starts there stays in memory until it is decided.
//!
//! [`write_outputs`](crate::write_outputs) builds `results.json` and `events.jsonl` from these
//! files; a caller that wants the text reads it back ([`JobTranscript::output`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use phasebox_jobspec::Phase;
use phasebox_redact::{Redactor, StreamRedactor};

use crate::events::{EventRecord, JobEvent, OutputStream};

/// The transcript's directory in the job directory.
pub const TRANSCRIPT_DIR: &str = "transcript";

/// Which text of a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PhaseText {
    /// `<phase>_output`: stdout, stderr and the engine's lines, in the order they came.
    Output,
    /// `<phase>_serial`: the device's serial console.
    Serial,
}

impl PhaseText {
    fn of(stream: OutputStream) -> Self {
        if stream == OutputStream::Serial { PhaseText::Serial } else { PhaseText::Output }
    }

    fn extension(self) -> &'static str {
        match self {
            PhaseText::Output => "output",
            PhaseText::Serial => "serial",
        }
    }
}

/// A finished job's transcript (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobTranscript {
    dir: PathBuf,
}

impl JobTranscript {
    /// The transcript directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `events.jsonl`: every event of the job, in order.
    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// The file holding a phase's text (absent when the phase wrote none).
    pub fn text_path(&self, phase: Phase, text: PhaseText) -> PathBuf {
        self.dir.join(format!("{phase}.{}", text.extension()))
    }

    /// Every event, read back into memory (for tests and small jobs).
    pub fn events(&self) -> io::Result<Vec<EventRecord>> {
        let text = std::fs::read_to_string(self.events_path())?;
        EventRecord::parse_jsonl(&text).map_err(io::Error::other)
    }

    /// A phase's joined output, read back into memory; empty when it wrote none.
    pub fn output(&self, phase: Phase) -> io::Result<String> {
        self.text(phase, PhaseText::Output)
    }

    /// A phase's serial log, read back into memory; empty when there was none.
    pub fn serial(&self, phase: Phase) -> io::Result<String> {
        self.text(phase, PhaseText::Serial)
    }

    fn text(&self, phase: Phase, text: PhaseText) -> io::Result<String> {
        match std::fs::read_to_string(self.text_path(phase, text)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            other => other,
        }
    }

    /// Opens a phase's text to stream it; `None` when the phase wrote none.
    pub fn open(&self, phase: Phase, text: PhaseText) -> io::Result<Option<File>> {
        match File::open(self.text_path(phase, text)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One text file being written, through the job's redactor as one stream.
struct TextFile {
    out: BufWriter<File>,
    redactor: Option<StreamRedactor>,
    buf: Vec<u8>,
}

/// Writes the transcript as the engine emits events. After a write error (logged once) later
/// writes are skipped.
pub(crate) struct TranscriptWriter {
    transcript: JobTranscript,
    events: BufWriter<File>,
    texts: BTreeMap<(Phase, PhaseText), TextFile>,
    redactor: Option<Redactor>,
    error: Option<io::Error>,
}

impl TranscriptWriter {
    /// Creates `<job_dir>/transcript/` (which must not exist yet) and its event log.
    pub(crate) fn create(job_dir: &Path, redactor: Option<&Redactor>) -> io::Result<Self> {
        let dir = job_dir.join(TRANSCRIPT_DIR);
        std::fs::create_dir(&dir)?;
        let transcript = JobTranscript { dir };
        let events = BufWriter::new(create_new(&transcript.events_path())?);
        Ok(TranscriptWriter { transcript, events, texts: BTreeMap::new(), redactor: redactor.cloned(), error: None })
    }

    /// Appends one (redacted) event, and its text to its phase's file.
    pub(crate) fn record(&mut self, record: &EventRecord) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.try_record(record) {
            tracing::warn!(dir = %self.transcript.dir.display(), error = %e, "cannot write the job's transcript");
            self.error = Some(e);
        }
    }

    fn try_record(&mut self, record: &EventRecord) -> io::Result<()> {
        let mut line = record.to_json_line();
        line.push('\n');
        self.events.write_all(line.as_bytes())?;
        match &record.event {
            JobEvent::Output { phase, stream, data } if !data.is_empty() => {
                let key = (*phase, PhaseText::of(*stream));
                let file = match self.texts.get_mut(&key) {
                    Some(f) => f,
                    None => {
                        let out = BufWriter::new(create_new(&self.transcript.text_path(key.0, key.1))?);
                        let redactor = self.redactor.as_ref().map(Redactor::stream);
                        self.texts.entry(key).or_insert(TextFile { out, redactor, buf: Vec::new() })
                    }
                };
                match &mut file.redactor {
                    Some(r) => {
                        file.buf.clear();
                        r.push_into(data.as_bytes(), &mut file.buf);
                        file.out.write_all(&file.buf)?;
                    }
                    None => file.out.write_all(data.as_bytes())?,
                }
            }
            JobEvent::PhaseEnd { phase, .. } => {
                self.events.flush()?;
                for text in [PhaseText::Output, PhaseText::Serial] {
                    if let Some(file) = self.texts.remove(&(*phase, text)) {
                        finish_text(file)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Flushes everything. A write error (logged when it happened) leaves the transcript
    /// with what was written before it: the job's result does not depend on it.
    pub(crate) fn finish(mut self) -> JobTranscript {
        if self.error.is_none() {
            let texts = std::mem::take(&mut self.texts);
            if let Err(e) = self.events.flush().and_then(|()| texts.into_values().try_for_each(finish_text)) {
                tracing::warn!(dir = %self.transcript.dir.display(), error = %e, "cannot write the job's transcript");
            }
        }
        self.transcript
    }
}

fn finish_text(mut file: TextFile) -> io::Result<()> {
    if let Some(r) = file.redactor.take() {
        file.buf.clear();
        r.finish_into(&mut file.buf);
        file.out.write_all(&file.buf)?;
    }
    file.out.flush()
}

/// Created anew, never opened through whatever a phase may have left at that name.
fn create_new(path: &Path) -> io::Result<File> {
    File::options().write(true).create_new(true).open(path)
}

/// Copies `from` into `out` as the contents of a JSON string (escaped, without the quotes),
/// a piece at a time.
pub(crate) fn copy_json_string_contents(mut from: impl Read, out: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        let n = from.read(&mut buf[filled..])?;
        let end = filled + n;
        let valid = match std::str::from_utf8(&buf[..end]) {
            Ok(s) => s.len(),
            // The rest of a character that the next read completes.
            Err(e) if e.error_len().is_none() && n > 0 => e.valid_up_to(),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let text = std::str::from_utf8(&buf[..valid]).expect("checked above");
        let quoted = serde_json::to_string(text).map_err(io::Error::other)?;
        out.write_all(&quoted.as_bytes()[1..quoted.len() - 1])?;
        buf.copy_within(valid..end, 0);
        filled = end - valid;
        if n == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::rfc3339;

    fn output(seq: u64, phase: Phase, stream: OutputStream, data: &str) -> EventRecord {
        EventRecord {
            seq,
            time: rfc3339(std::time::SystemTime::now()),
            event: JobEvent::Output { phase, stream, data: data.into() },
        }
    }

    #[test]
    fn a_secret_split_across_streams_never_reaches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let redactor = Redactor::new([("TOKEN", &phasebox_redact::Secret::new("hunter2-s3cret"))]).unwrap();
        let mut w = TranscriptWriter::create(dir.path(), Some(&redactor)).unwrap();
        w.record(&output(0, Phase::Test, OutputStream::Stdout, "key: hunter2"));
        w.record(&output(1, Phase::Test, OutputStream::Stderr, "-s3cret\n"));
        w.record(&output(2, Phase::Test, OutputStream::Serial, "boot\n"));
        let t = w.finish();
        let text = t.output(Phase::Test).unwrap();
        assert!(text.starts_with("key: **") && !text.contains("hunter2"), "{text:?}");
        assert_eq!(t.serial(Phase::Test).unwrap(), "boot\n");
        assert_eq!(t.output(Phase::Setup).unwrap(), "");
        assert_eq!(t.events().unwrap().len(), 3);
        for entry in std::fs::read_dir(t.dir()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains("hunter2-s3cret"));
        }
    }

    #[test]
    fn json_string_contents_are_escaped_piecewise() {
        // Multi-byte characters across the 64 KiB read boundary, quotes and controls.
        let mut text = "é\"\\\n".repeat(30_000);
        text.push('\u{1F600}');
        let mut out = b"\"".to_vec();
        copy_json_string_contents(text.as_bytes(), &mut out).unwrap();
        out.push(b'"');
        assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), text);
    }
}
