//! What a command run through `exec` shows the plugin: its output with the values of the
//! secrets it was given (`secret-env`) masked, so the plugin never reads them back.

use phasebox_redact::{RedactError, Redactor, Secret, StreamRedactor, TaggedStreamRedactor};

use crate::events::Stream;

/// Redacts one command's stdout and stderr for the plugin: both merged in the order they
/// arrive (a value printed half on each is caught), then each stream on its own (a value split
/// within stdout around a write to stderr is caught too), in every encoding the redactor
/// knows. Holds back the last bytes of each stage until more output arrives or the command
/// ends ([`finish`](Self::finish)).
pub(crate) struct ExecOutputRedactor {
    merged: TaggedStreamRedactor<Stream>,
    stdout: StreamRedactor,
    stderr: StreamRedactor,
}

impl ExecOutputRedactor {
    /// A redactor for `secrets`; `None` when there are none.
    pub(crate) fn new<'a>(
        secrets: impl IntoIterator<Item = (&'a str, &'a Secret)>,
    ) -> Result<Option<Self>, RedactError> {
        let secrets: Vec<_> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Ok(None);
        }
        let redactor = Redactor::new(secrets)?;
        Ok(Some(ExecOutputRedactor {
            merged: redactor.tagged_stream(),
            stdout: redactor.stream(),
            stderr: redactor.stream(),
        }))
    }

    /// Takes a chunk of `stream`; returns the output that is final now, in order.
    pub(crate) fn push(&mut self, stream: Stream, chunk: &[u8]) -> Vec<(Stream, Vec<u8>)> {
        let released = self.merged.push(stream, chunk);
        self.own(released.into_iter().map(|r| (r.tag, r.bytes)))
    }

    /// The command ended: everything still held back.
    pub(crate) fn finish(self) -> Vec<(Stream, Vec<u8>)> {
        let ExecOutputRedactor { merged, mut stdout, mut stderr } = self;
        let released = merged.finish();
        let mut out = own_stage(&mut stdout, &mut stderr, released.into_iter().map(|r| (r.tag, r.bytes)));
        for (stream, rest) in [(Stream::Stdout, stdout.finish()), (Stream::Stderr, stderr.finish())] {
            if !rest.is_empty() {
                out.push((stream, rest));
            }
        }
        out
    }

    fn own(&mut self, pieces: impl Iterator<Item = (Stream, Vec<u8>)>) -> Vec<(Stream, Vec<u8>)> {
        own_stage(&mut self.stdout, &mut self.stderr, pieces)
    }
}

fn own_stage(
    stdout: &mut StreamRedactor,
    stderr: &mut StreamRedactor,
    pieces: impl Iterator<Item = (Stream, Vec<u8>)>,
) -> Vec<(Stream, Vec<u8>)> {
    pieces
        .filter_map(|(stream, bytes)| {
            let redactor = match stream {
                Stream::Stdout => &mut *stdout,
                Stream::Stderr => &mut *stderr,
            };
            let out = redactor.push(&bytes);
            (!out.is_empty()).then_some((stream, out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_masked_across_and_within_streams() {
        let secret = Secret::new("env-secret-value-77");
        let mut r = ExecOutputRedactor::new([("TOKEN", &secret)]).unwrap().unwrap();
        let mut out = Vec::new();
        out.extend(r.push(Stream::Stdout, b"a=env-secr"));
        out.extend(r.push(Stream::Stderr, b"et-value-77\n"));
        out.extend(r.push(Stream::Stdout, b"\nb=env-secret-"));
        out.extend(r.push(Stream::Stderr, b"noise\n"));
        out.extend(r.push(Stream::Stdout, b"value-77\nc=ZW52LXNlY3JldC12YWx1ZS03Nw==\n"));
        out.extend(r.finish());
        let all: Vec<u8> = out.iter().flat_map(|(_, b)| b.clone()).collect();
        let text = String::from_utf8(all).unwrap();
        assert!(!text.contains("env-secret") && !text.contains("ZW52LXNlY3JldC12YWx1ZS03Nw"), "{text}");
        assert_eq!(text.matches(&phasebox_redact::mask_token(&secret)).count(), 3, "{text}");
        assert!(ExecOutputRedactor::new([]).unwrap().is_none());
    }
}
