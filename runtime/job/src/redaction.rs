//! The job's redactor, and the per-phase output streams that use it.
//!
//! One [`Redactor`] per job holds every secret value the job was given (whichever phase
//! declares it: a secret must not leave through any phase). Output is redacted as a stream,
//! one [`StreamRedactor`] per phase and stream, so that a secret written in pieces is still
//! caught; every other string of every event is redacted whole before any sink sees it.
//!
//! A stream redactor holds back the last bytes it has seen (a secret may be starting there)
//! and emits them when more arrives or the phase ends. Output events carry text, so the bytes
//! it emits are also cut at a UTF-8 character boundary, the rest of a character carried to the
//! next chunk; bytes that are not UTF-8 become U+FFFD.

use std::collections::BTreeMap;

use phasebox_redact::{Redactor, Secret, StreamRedactor};

use crate::events::OutputStream;

/// The redactor of one job; does nothing when the job has no secrets.
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

    /// Redacts `s` in place.
    pub(crate) fn redact(&self, s: &mut String) {
        if let Some(r) = &self.inner
            && !s.is_empty()
        {
            *s = r.redact_str(s);
        }
    }

    /// `s`, redacted.
    pub(crate) fn redacted(&self, s: &str) -> String {
        let mut s = s.to_owned();
        self.redact(&mut s);
        s
    }

    /// The output streams of one phase.
    pub(crate) fn phase_streams(&self) -> PhaseStreams {
        PhaseStreams { redactor: self.inner.clone(), streams: Vec::new() }
    }
}

/// One phase's output streams, each redacted and decoded on its own.
pub(crate) struct PhaseStreams {
    redactor: Option<Redactor>,
    streams: Vec<(OutputStream, Stream)>,
}

struct Stream {
    redactor: Option<StreamRedactor>,
    /// The start of a UTF-8 character whose remaining bytes have not arrived yet.
    carry: Vec<u8>,
}

impl PhaseStreams {
    /// Feeds a chunk of `stream`; returns the text that can be released now (may be empty).
    pub(crate) fn push(&mut self, stream: OutputStream, chunk: &[u8]) -> String {
        let s = self.stream(stream);
        let bytes = match &mut s.redactor {
            Some(r) => r.push(chunk),
            None => chunk.to_vec(),
        };
        decode(&mut s.carry, &bytes, false)
    }

    /// Ends every stream; returns what each still held.
    pub(crate) fn finish(self) -> Vec<(OutputStream, String)> {
        self.streams
            .into_iter()
            .filter_map(|(which, mut s)| {
                let rest = s.redactor.take().map(StreamRedactor::finish).unwrap_or_default();
                let text = decode(&mut s.carry, &rest, true);
                (!text.is_empty()).then_some((which, text))
            })
            .collect()
    }

    fn stream(&mut self, which: OutputStream) -> &mut Stream {
        let i = match self.streams.iter().position(|(w, _)| *w == which) {
            Some(i) => i,
            None => {
                let redactor = self.redactor.as_ref().map(Redactor::stream);
                self.streams.push((which, Stream { redactor, carry: Vec::new() }));
                self.streams.len() - 1
            }
        };
        &mut self.streams[i].1
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

    #[test]
    fn short_secrets_are_refused_by_name() {
        let err = JobRedactor::new(&secrets("abc")).unwrap_err().to_string();
        assert!(err.contains("TOKEN") && !err.contains("abc"), "{err}");
    }

    #[test]
    fn a_secret_split_across_writes_is_caught() {
        let r = JobRedactor::new(&secrets("hunter2-very-secret")).unwrap();
        let mut streams = r.phase_streams();
        let mut out = String::new();
        for piece in ["token: hun", "ter2-ve", "ry-sec", "ret\nbye\n"] {
            out.push_str(&streams.push(OutputStream::Stdout, piece.as_bytes()));
        }
        for (_, rest) in streams.finish() {
            out.push_str(&rest);
        }
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.starts_with("token: **") && out.ends_with("**\nbye\n"), "{out}");
    }

    #[test]
    fn streams_are_independent_and_characters_are_not_split() {
        let r = JobRedactor::default();
        let mut streams = r.phase_streams();
        let euro = "€".as_bytes();
        assert_eq!(streams.push(OutputStream::Stdout, &euro[..1]), "");
        assert_eq!(streams.push(OutputStream::Stderr, b"err"), "err");
        assert_eq!(streams.push(OutputStream::Stdout, &euro[1..]), "€");
        assert_eq!(streams.push(OutputStream::Stdout, b"\xffok"), "\u{fffd}ok");
        assert_eq!(streams.push(OutputStream::Stdout, &euro[..2]), "");
        assert_eq!(streams.finish(), [(OutputStream::Stdout, "\u{fffd}".to_owned())]);
    }
}
