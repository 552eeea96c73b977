//! A Wu–Manber style skip filter in front of the Aho-Corasick automaton.
//!
//! Every pattern is at least `window` bytes long. For each text position `p`
//! the filter looks at the 3 bytes ending the window `p..p + window` and
//! looks up how far the window can move before those bytes could line up
//! with the same bytes in some pattern's first `window` bytes. Ordinary text
//! shares few 3-byte sequences with the encoded secrets, so most windows move
//! by close to `window - 2` bytes after one table lookup, instead of feeding
//! every byte through the automaton. Where the shift is 0 a pattern may start
//! at `p`, and the automaton confirms or rejects it with an anchored search.
//!
//! The table is indexed by a 16-bit hash of the 3 bytes; a collision only
//! makes a shift smaller (more conservative), never larger, so no match is
//! ever skipped.

/// Bytes in the hashed sequence.
const GRAM: usize = 3;
/// Table size (entries, one byte each).
const TABLE_BITS: u32 = 16;
/// The window is capped: longer windows allow longer shifts but fill the table
/// with more sequences.
const MAX_WINDOW: usize = 16;

pub(crate) struct SkipTable {
    window: usize,
    shift: Box<[u8]>,
}

#[inline(always)]
fn hash(gram: [u8; GRAM]) -> usize {
    let v = u32::from(gram[0]) | (u32::from(gram[1]) << 8) | (u32::from(gram[2]) << 16);
    (v.wrapping_mul(0x9E37_79B1) >> (32 - TABLE_BITS)) as usize
}

impl SkipTable {
    /// Builds the table for `patterns`, or `None` when the shortest pattern is
    /// too short for the filter to help (the caller then runs the automaton
    /// alone).
    pub(crate) fn new<'a>(patterns: impl Iterator<Item = &'a [u8]> + Clone) -> Option<Self> {
        let shortest = patterns.clone().map(<[u8]>::len).min()?;
        let window = shortest.min(MAX_WINDOW);
        if window < GRAM + 2 {
            return None;
        }
        let default = u8::try_from(window - GRAM + 1).unwrap_or(u8::MAX);
        let mut shift = vec![default; 1 << TABLE_BITS].into_boxed_slice();
        for pattern in patterns {
            for k in 0..=window - GRAM {
                let gram = [pattern[k], pattern[k + 1], pattern[k + 2]];
                let s = u8::try_from(window - GRAM - k).unwrap_or(u8::MAX);
                let slot = &mut shift[hash(gram)];
                *slot = (*slot).min(s);
            }
        }
        Some(Self { window, shift })
    }

    /// The first position `p >= from` at which a pattern may start, or `None`
    /// when no pattern can start anywhere in `from..hay.len()`.
    #[inline]
    pub(crate) fn candidate(&self, hay: &[u8], from: usize) -> Option<usize> {
        let w = self.window;
        let mut p = from;
        while let Some(end) = p.checked_add(w).filter(|&e| e <= hay.len()) {
            let gram = [hay[end - 3], hay[end - 2], hay[end - 1]];
            let s = self.shift[hash(gram)];
            if s == 0 {
                return Some(p);
            }
            p += usize::from(s);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_candidates(patterns: &[&[u8]], window: usize, hay: &[u8]) -> Vec<usize> {
        (0..hay.len())
            .filter(|&p| patterns.iter().any(|pat| hay.len() >= p + window && hay[p..p + window] == pat[..window]))
            .collect()
    }

    #[test]
    fn never_skips_a_pattern_start() {
        let patterns: Vec<&[u8]> = vec![b"secret-one", b"c2VjcmV0", b"736563726574", b"abcabcabc"];
        let table = SkipTable::new(patterns.iter().copied()).unwrap();
        assert_eq!(table.window, 8);
        let hay = b"xx secret-one abcabcabcabc c2VjcmV0 7365637265 736563726574 tail c2Vj";
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(p) = table.candidate(hay, from) {
            found.push(p);
            from = p + 1;
        }
        for p in naive_candidates(&patterns, table.window, hay) {
            assert!(found.contains(&p), "missed {p}: {found:?}");
        }
    }

    #[test]
    fn short_patterns_disable_the_filter() {
        assert!(SkipTable::new([&b"abcd"[..]].into_iter()).is_none());
        assert!(SkipTable::new(std::iter::empty()).is_none());
    }
}
