//! [`TaggedStreamRedactor`]: one redaction stream over several interleaved channels.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use zeroize::Zeroize;

use crate::redactor::{Inner, append_wiping};

/// Redacts several channels (a process's stdout and stderr, its log lines) as the one stream
/// a reader sees them merged into, while still telling which channel each output byte came
/// from.
///
/// Each [`push`](Self::push) is one *segment*: a piece of one channel, named by its tag `T`.
/// The redactor matches across segment boundaries, so a secret written half on stdout and half
/// on stderr is caught. What comes out is a list of [`Released`] pieces in input order, each
/// belonging to one segment; the token replacing a match goes to the segment the match
/// starts in, and the matched bytes of later segments are dropped. A segment is
/// [`complete`](Released::complete) once all of it has been released (its last piece says
/// so, possibly an empty one), so a caller that needs whole units (a log line) can wait for
/// that.
///
/// Like [`StreamRedactor`](crate::StreamRedactor), it holds back the last
/// [`Redactor::hold_back`](crate::Redactor::hold_back) bytes, whatever segment they belong to,
/// until more input arrives or [`finish`](Self::finish); the released bytes, concatenated, are
/// exactly what [`Redactor::redact_bytes`](crate::Redactor::redact_bytes) gives for the
/// concatenated input. The held-back bytes are wiped when it is finished or dropped.
pub struct TaggedStreamRedactor<T> {
    inner: Arc<Inner>,
    pending: Vec<u8>,
    segments: VecDeque<Segment<T>>,
}

struct Segment<T> {
    tag: T,
    /// Bytes of it still in `pending`.
    left: usize,
}

/// A released piece of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released<T> {
    /// The segment's tag.
    pub tag: T,
    /// Its bytes, redacted.
    pub bytes: Vec<u8>,
    /// Whether this is the segment's last piece.
    pub complete: bool,
}

enum Piece {
    Text(Range<usize>),
    Match(Range<usize>, usize),
}

impl<T: Clone> TaggedStreamRedactor<T> {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        TaggedStreamRedactor { inner, pending: Vec::new(), segments: VecDeque::new() }
    }

    /// Takes the next segment and returns the pieces that are now final.
    pub fn push(&mut self, tag: T, chunk: &[u8]) -> Vec<Released<T>> {
        append_wiping(&mut self.pending, chunk);
        self.segments.push_back(Segment { tag, left: chunk.len() });
        let hold = self.inner.hold;
        let Some(safe) = self.pending.len().checked_sub(hold).filter(|s| *s > 0) else {
            return self.release(Vec::new(), 0);
        };
        self.release_final(safe)
    }

    /// Flushes the held-back bytes (redacted) and ends the stream; every segment completes.
    pub fn finish(mut self) -> Vec<Released<T>> {
        let len = self.pending.len();
        self.release_final(len)
    }

    /// How many bytes are currently held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Releases what lies before `safe` (see `Inner::emit_final` for why that is final), and
    /// whatever a match starting there covers.
    fn release_final(&mut self, safe: usize) -> Vec<Released<T>> {
        let mut pieces = Vec::new();
        let mut last = 0;
        for m in self.inner.matches(&self.pending, safe) {
            if m.start() >= safe {
                break;
            }
            if m.start() > last {
                pieces.push(Piece::Text(last..m.start()));
            }
            pieces.push(Piece::Match(m.start()..m.end(), m.pattern().as_usize()));
            last = m.end();
        }
        let keep_from = last.max(safe);
        if keep_from > last {
            pieces.push(Piece::Text(last..keep_from));
        }
        self.release(pieces, keep_from)
    }

    /// Hands out `pieces` (covering `pending[..keep_from]`) by segment, then drops those bytes.
    fn release(&mut self, pieces: Vec<Piece>, keep_from: usize) -> Vec<Released<T>> {
        let mut out = Out { released: Vec::new(), open: false };
        let segments = &mut self.segments;
        for piece in pieces {
            match piece {
                Piece::Text(range) => {
                    let mut at = range.start;
                    while at < range.end {
                        out.skip_empty(segments);
                        let seg = segments.front_mut().expect("every pending byte belongs to a segment");
                        let n = seg.left.min(range.end - at);
                        out.entry(&seg.tag).extend_from_slice(&self.pending[at..at + n]);
                        seg.left -= n;
                        at += n;
                        out.skip_empty(segments);
                    }
                }
                Piece::Match(range, pattern) => {
                    out.skip_empty(segments);
                    let seg = segments.front().expect("every pending byte belongs to a segment");
                    out.entry(&seg.tag).extend_from_slice(self.inner.token(pattern));
                    let mut n = range.len();
                    while n > 0 {
                        let seg = segments.front_mut().expect("every pending byte belongs to a segment");
                        let k = seg.left.min(n);
                        seg.left -= k;
                        n -= k;
                        out.skip_empty(segments);
                    }
                }
            }
        }
        out.skip_empty(segments);
        let len = self.pending.len();
        self.pending.copy_within(keep_from.., 0);
        let kept = len - keep_from;
        self.pending[kept..].zeroize();
        self.pending.truncate(kept);
        out.released
    }
}

/// The pieces of one release, and whether the last one belongs to the front segment.
struct Out<T> {
    released: Vec<Released<T>>,
    open: bool,
}

impl<T: Clone> Out<T> {
    /// The bytes of the front segment's piece (`tag`), started if needed.
    fn entry(&mut self, tag: &T) -> &mut Vec<u8> {
        if !self.open {
            self.released.push(Released { tag: tag.clone(), bytes: Vec::new(), complete: false });
            self.open = true;
        }
        &mut self.released.last_mut().expect("just pushed").bytes
    }

    /// Completes every front segment with nothing left.
    fn skip_empty(&mut self, segments: &mut VecDeque<Segment<T>>) {
        while segments.front().is_some_and(|s| s.left == 0) {
            let seg = segments.pop_front().expect("checked");
            match self.open {
                true => self.released.last_mut().expect("open").complete = true,
                false => self.released.push(Released { tag: seg.tag, bytes: Vec::new(), complete: true }),
            }
            self.open = false;
        }
    }
}

impl<T> Drop for TaggedStreamRedactor<T> {
    fn drop(&mut self) {
        self.pending.zeroize();
    }
}

impl<T> fmt::Debug for TaggedStreamRedactor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaggedStreamRedactor")
            .field("pending_len", &self.pending.len())
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}
