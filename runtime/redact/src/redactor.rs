//! [`Redactor`] (one per job) and [`StreamRedactor`] (one per channel).

use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, Match, MatchKind, StartKind};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::Secret;
use crate::encode::{Dedup, encoded_forms};
use crate::skip::SkipTable;
use crate::tagged::TaggedStreamRedactor;

/// Secrets shorter than this many characters are refused: they would match
/// too much innocent text, and their masked output would hint at the value.
pub const MIN_SECRET_CHARS: usize = 6;

/// Why a [`Redactor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// A secret value has fewer than [`MIN_SECRET_CHARS`] characters.
    #[error(
        "secret `{name}` is too short to be redacted: values must have at least {min} characters",
        min = MIN_SECRET_CHARS
    )]
    TooShort {
        /// The name the secret was given; never its value.
        name: String,
    },
    /// The matcher could not be built (the patterns exceed its size limits).
    #[error("could not build the secret matcher: {0}")]
    Build(#[from] aho_corasick::BuildError),
}

/// The redaction token for `secret`: `**` + the first 6 hex digits of the
/// SHA-256 of its value + `**` (the masking format Testflinger uses). Every
/// encoding of one secret is replaced by the same token, so a reader can tell
/// which secret was there without learning anything usable about it.
pub fn mask_token(secret: &Secret) -> String {
    let digest = Sha256::digest(secret.expose().as_bytes());
    let mut out = String::with_capacity(10);
    out.push_str("**");
    for b in &digest[..3] {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str("**");
    out
}

/// Failed candidate checks a search tolerates (plus one per 32 bytes scanned)
/// before it stops using the skip filter and lets the automaton scan the rest:
/// text that looks like the secrets' encodings (hex dumps, base64 blobs) makes
/// the filter propose many candidates, and past this point scanning straight
/// through is cheaper than checking them one by one.
const MISS_BUDGET: usize = 64;

pub(crate) struct Inner {
    matcher: AhoCorasick,
    skip: Option<SkipTable>,
    /// Pattern index -> index into `tokens`.
    pattern_secret: Vec<usize>,
    tokens: Vec<Box<[u8]>>,
    /// Bytes a stream holds back: longest pattern - 1.
    pub(crate) hold: usize,
    secrets: usize,
}

/// The set of secrets of one job, compiled into a single matcher.
///
/// Build it once per job with [`Redactor::new`]; it is cheap to clone (the
/// compiled matcher is shared) and `Send + Sync`. Use [`Redactor::stream`] for
/// each output channel and [`Redactor::redact_str`] for one-shot text.
///
/// `Debug` shows only counts, never a pattern.
#[derive(Clone)]
pub struct Redactor {
    pub(crate) inner: Arc<Inner>,
}

impl Redactor {
    /// Compiles every encoded form (see [`encoded_forms`]) of every secret into
    /// one leftmost-longest Aho-Corasick automaton (plus the skip filter that
    /// lets searches jump over text no pattern can start in).
    ///
    /// Secrets are `(name, value)` pairs; the name is only used in errors.
    /// Fails with [`RedactError::TooShort`] naming the first secret whose value
    /// has fewer than [`MIN_SECRET_CHARS`] characters.
    ///
    /// The automaton's tables necessarily encode the patterns; they live as
    /// long as the `Redactor` and are not wiped. Intermediate copies of the
    /// patterns are.
    pub fn new<I, N, S>(secrets: I) -> Result<Self, RedactError>
    where
        I: IntoIterator<Item = (N, S)>,
        N: Into<String>,
        S: std::borrow::Borrow<Secret>,
    {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut pattern_secret = Vec::new();
        let mut tokens: Vec<Box<[u8]>> = Vec::new();
        let mut seen = Dedup::default();
        for (name, secret) in secrets {
            let secret = secret.borrow();
            if secret.char_len() < MIN_SECRET_CHARS {
                return Err(RedactError::TooShort { name: name.into() });
            }
            let token = mask_token(secret).into_bytes().into_boxed_slice();
            // Secrets with the same token (identical values) share an entry.
            let index = match tokens.iter().position(|t| *t == token) {
                Some(i) => i,
                None => {
                    tokens.push(token);
                    tokens.len() - 1
                }
            };
            for form in &encoded_forms(secret) {
                if seen.is_new(form.bytes(), patterns.len(), |i| &patterns[i]) {
                    patterns.push(Zeroizing::new(form.bytes().to_vec()));
                    pattern_secret.push(index);
                }
            }
        }
        // The contiguous NFA: compact (a full DFA is hundreds of bytes per
        // pattern byte) and, behind the skip filter, no slower in practice.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .start_kind(StartKind::Both)
            .prefilter(false)
            .build(patterns.iter().map(|p| p.as_slice()))?;
        let skip = SkipTable::new(patterns.iter().map(|p| p.as_slice()));
        let hold = patterns.iter().map(|p| p.len()).max().unwrap_or(0).saturating_sub(1);
        Ok(Self { inner: Arc::new(Inner { matcher, skip, pattern_secret, hold, secrets: tokens.len(), tokens }) })
    }

    /// A fresh streaming redactor for one channel.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor { inner: Arc::clone(&self.inner), pending: Vec::new() }
    }

    /// A fresh redactor for several channels merged into one stream (see
    /// [`TaggedStreamRedactor`]).
    pub fn tagged_stream<T: Clone>(&self) -> TaggedStreamRedactor<T> {
        TaggedStreamRedactor::new(Arc::clone(&self.inner))
    }

    /// Number of distinct secret values.
    pub fn secret_count(&self) -> usize {
        self.inner.secrets
    }

    /// Number of distinct byte patterns searched for (all encodings of all
    /// secrets).
    pub fn pattern_count(&self) -> usize {
        self.inner.pattern_secret.len()
    }

    /// Bytes a [`StreamRedactor`] holds back between writes: the longest
    /// pattern's length minus one.
    pub fn hold_back(&self) -> usize {
        self.inner.hold
    }

    /// Redacts a whole byte string at once.
    pub fn redact_bytes(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        self.inner.replace_all(input, &mut out);
        out
    }

    /// Redacts a whole string at once (for result JSON and other one-shot
    /// text). Valid UTF-8 in, valid UTF-8 out: every pattern is itself valid
    /// UTF-8, so matches fall on character boundaries; should one ever not, it
    /// is widened to the enclosing characters (redacting more, never less).
    pub fn redact_str(&self, s: &str) -> String {
        let inner = &*self.inner;
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for m in inner.matches(s.as_bytes(), s.len()) {
            let mut start = m.start();
            while !s.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = m.end();
            while !s.is_char_boundary(end) {
                end += 1;
            }
            if start < last {
                // Overlaps the previous (widened) match: extend it.
                last = last.max(end);
                continue;
            }
            out.push_str(&s[last..start]);
            out.push_str(inner.token_str(m.pattern().as_usize()));
            last = end;
        }
        out.push_str(&s[last..]);
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.inner.secrets)
            .field("patterns", &self.inner.pattern_secret.len())
            .field("hold_back", &self.inner.hold)
            .finish()
    }
}

impl Inner {
    pub(crate) fn token(&self, pattern: usize) -> &[u8] {
        &self.tokens[self.pattern_secret[pattern]]
    }

    fn token_str(&self, pattern: usize) -> &str {
        // Tokens are built from ASCII in `mask_token`.
        std::str::from_utf8(self.token(pattern)).unwrap_or("**redacted**")
    }

    /// The leftmost-longest, non-overlapping matches in `hay`, left to right,
    /// that start before `limit` (what `AhoCorasick::find_iter` gives, found
    /// faster; it may also yield a match starting at or after `limit`).
    pub(crate) fn matches<'a>(&'a self, hay: &'a [u8], limit: usize) -> impl Iterator<Item = Match> + 'a {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let m = self.find_from(hay, pos, limit)?;
            pos = m.end();
            Some(m)
        })
    }

    /// The leftmost-longest match starting at or after `from`, when one
    /// starts before `limit` (otherwise `None`, or a match at or after
    /// `limit`).
    fn find_from(&self, hay: &[u8], from: usize, limit: usize) -> Option<Match> {
        let Some(skip) = &self.skip else {
            return self.matcher.find(Input::new(hay).span(from..hay.len()));
        };
        let mut at = from;
        let mut misses = 0;
        while let Some(p) = skip.candidate(hay, at).filter(|&p| p < limit) {
            // Leftmost-longest, anchored at p: the longest pattern starting
            // exactly there. Positions before p were ruled out.
            let input = Input::new(hay).span(p..hay.len()).anchored(Anchored::Yes);
            if let Some(m) = self.matcher.find(input) {
                return Some(m);
            }
            misses += 1;
            if misses > MISS_BUDGET + (p - from) / 32 {
                return self.matcher.find(Input::new(hay).span(p + 1..hay.len()));
            }
            at = p + 1;
        }
        None
    }

    /// Replaces every match in `input`, appending to `out`.
    fn replace_all(&self, input: &[u8], out: &mut Vec<u8>) {
        let mut last = 0;
        for m in self.matches(input, input.len()) {
            out.extend_from_slice(&input[last..m.start()]);
            out.extend_from_slice(self.token(m.pattern().as_usize()));
            last = m.end();
        }
        out.extend_from_slice(&input[last..]);
    }
}

/// Redacts one output channel, write by write.
///
/// Feed it the channel's bytes in whatever pieces they arrive; a secret split
/// across any number of pieces is still caught. After each
/// [`push`](Self::push) it has emitted everything except the last
/// [`Redactor::hold_back`] bytes (fewer when a match ran past them), which
/// could still be the start of a secret. [`finish`](Self::finish) flushes
/// them. The output is exactly what [`Redactor::redact_bytes`] gives for the
/// concatenated input.
///
/// The held-back bytes are wiped when the stream is finished or dropped.
pub struct StreamRedactor {
    inner: Arc<Inner>,
    pending: Vec<u8>,
}

impl StreamRedactor {
    /// Takes the next piece of the channel and returns the output that is now
    /// final.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.pending.len());
        self.push_into(chunk, &mut out);
        out
    }

    /// Like [`push`](Self::push), appending the final output to `out`.
    pub fn push_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let hold = self.inner.hold;
        if self.pending.is_empty() && chunk.len() > hold {
            // Common case: nothing held back; search the chunk in place and
            // keep only its tail.
            let keep_from = self.inner.emit_final(chunk, hold, out);
            append_wiping(&mut self.pending, &chunk[keep_from..]);
            return;
        }
        append_wiping(&mut self.pending, chunk);
        if self.pending.len() <= hold {
            return;
        }
        let keep_from = self.inner.emit_final(&self.pending, hold, out);
        // Shift the held-back tail to the front, then wipe the bytes it
        // vacated so no secret fragment lingers in spare capacity.
        let len = self.pending.len();
        self.pending.copy_within(keep_from.., 0);
        let kept = len - keep_from;
        self.pending[kept..].zeroize();
        self.pending.truncate(kept);
    }

    /// Flushes the held-back bytes (redacted) and ends the stream.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending.len());
        self.finish_into(&mut out);
        out
    }

    /// Like [`finish`](Self::finish), appending to `out`.
    pub fn finish_into(self, out: &mut Vec<u8>) {
        self.inner.replace_all(&self.pending, out);
        // `Drop` wipes `pending`.
    }

    /// How many bytes are currently held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

impl Inner {
    /// Emits the part of `buf` that can no longer change as more input
    /// arrives, returning the index where the held-back tail starts.
    ///
    /// Let `safe = buf.len() - hold`. A match that starts before `safe` ends
    /// within `buf` whatever comes next (no pattern is longer than
    /// `hold + 1`), and so do all longer alternatives at that start, so
    /// leftmost-longest decides it exactly as it would on the whole stream.
    /// Positions from `safe` on may start a match that needs later bytes, so
    /// they are kept unless a match already covered them.
    fn emit_final(&self, buf: &[u8], hold: usize, out: &mut Vec<u8>) -> usize {
        let safe = buf.len() - hold;
        let mut last = 0;
        for m in self.matches(buf, safe) {
            if m.start() >= safe {
                break;
            }
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(self.token(m.pattern().as_usize()));
            last = m.end();
        }
        let keep_from = last.max(safe);
        out.extend_from_slice(&buf[last..keep_from]);
        keep_from
    }
}

/// Appends `chunk` to `buf`; when that needs a bigger allocation, the old one is
/// wiped before it is freed (it may hold the start of a secret).
pub(crate) fn append_wiping(buf: &mut Vec<u8>, chunk: &[u8]) {
    if buf.capacity() - buf.len() >= chunk.len() {
        buf.extend_from_slice(chunk);
        return;
    }
    let mut grown = Vec::with_capacity((buf.len() + chunk.len()).next_power_of_two());
    grown.extend_from_slice(buf);
    grown.extend_from_slice(chunk);
    buf.zeroize();
    *buf = grown;
}

impl Drop for StreamRedactor {
    fn drop(&mut self) {
        self.pending.zeroize();
    }
}

impl fmt::Debug for StreamRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRedactor").field("pending_len", &self.pending.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: aho-corasick's own leftmost-longest iterator.
    fn reference(r: &Redactor, hay: &[u8]) -> Vec<(usize, usize)> {
        r.inner.matcher.find_iter(hay).map(|m| (m.start(), m.end())).collect()
    }

    fn ours(r: &Redactor, hay: &[u8]) -> Vec<(usize, usize)> {
        r.inner.matches(hay, hay.len()).map(|m| (m.start(), m.end())).collect()
    }

    #[test]
    fn skip_filter_and_fallback_agree_with_the_automaton() {
        let r =
            Redactor::new([("A", Secret::new("aaaaaaaaaaab")), ("B", Secret::new("correct horse battery"))]).unwrap();
        assert!(r.inner.skip.is_some());
        // Every window of a long run of 'a' is a candidate that fails: the
        // miss budget runs out and the automaton takes over.
        let mut hay = vec![b'a'; 20_000];
        hay.extend_from_slice(b"b correct horse battery aaaaaaaaaaab");
        hay.extend(std::iter::repeat_n(b'a', 5000));
        hay.extend_from_slice(b"aaaaaaaaaaab");
        let expected = reference(&r, &hay);
        assert_eq!(expected.len(), 4);
        assert_eq!(ours(&r, &hay), expected);
        for start in [0, 1, 19_990, 20_001] {
            assert_eq!(ours(&r, &hay[start..]), reference(&r, &hay[start..]));
        }
    }
}
