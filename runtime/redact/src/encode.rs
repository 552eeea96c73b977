//! Every form in which a secret value can show up in output.
//!
//! [`encoded_forms`] expands one [`Secret`] into the deduplicated list of byte
//! strings the [`Redactor`](crate::Redactor) searches for. It is public so that
//! callers (and tests) can check their own output against exactly the set the
//! redactor uses.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use zeroize::Zeroizing;

use crate::Secret;

/// Lines of a multi-line secret with fewer than this many characters (not
/// counting surrounding whitespace) are not matched on their own: they would
/// hit too much innocent text.
pub const MIN_LINE_CHARS: usize = 6;

/// Which base64 alphabet an encoding uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Base64Alphabet {
    /// RFC 4648 §4: `A–Z a–z 0–9 + /`.
    Standard,
    /// RFC 4648 §5: `A–Z a–z 0–9 - _`.
    UrlSafe,
    /// The standard alphabet with `/` written as `\/`, as a JSON encoder that
    /// escapes slashes (PHP's `json_encode`, for one) writes a base64 string.
    StandardSlashEscaped,
}

/// How a base64-encoded secret is bounded on the right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Base64Ending {
    /// More encoded bytes follow the secret: only the characters that depend on
    /// the secret's bits alone (the stable core) are matched.
    Continued,
    /// The secret is the last thing encoded and the encoder omits `=` padding:
    /// the final character carries the secret's last bits plus zero fill.
    Final,
    /// The secret is the last thing encoded and the encoder pads with `=`.
    FinalPadded,
}

/// Which characters a percent-encoder leaves alone (besides ASCII letters and
/// digits, which every style keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PercentSafe {
    /// RFC 3986 unreserved: `- . _ ~`.
    Rfc3986,
    /// JavaScript `encodeURIComponent`: `- . _ ~ ! * ' ( )`.
    UriComponent,
    /// JavaScript `encodeURI`: `encodeURIComponent`'s set plus
    /// `; , / ? : @ & = + $ #`.
    Uri,
    /// WHATWG `application/x-www-form-urlencoded`: `* - . _`.
    Form,
    /// Python's `urllib.parse.quote` default: `- . _ ~ /`.
    Path,
}

/// One percent-encoding (URL encoding) convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PercentStyle {
    /// Characters kept as they are.
    pub safe: PercentSafe,
    /// `%2F` (true) or `%2f` (false).
    pub upper_hex: bool,
    /// Space written as `+` (true) or `%20` (false).
    pub space_as_plus: bool,
}

/// One JSON string-escaping convention. The all-`false` style is exactly what
/// `serde_json` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JsonStyle {
    /// `/` written as `\/`.
    pub escape_slash: bool,
    /// Every non-ASCII character (and DEL) written as `\uXXXX`, astral
    /// characters as a surrogate pair (Python's `ensure_ascii`).
    pub ascii_only: bool,
    /// Control characters always as `\u00XX`, never the short `\n`, `\t`, ...
    pub unicode_controls: bool,
    /// Hex digits of `\u` escapes in upper case.
    pub upper_hex: bool,
    /// `<`, `>`, `&`, U+2028 and U+2029 written as `\u` escapes (Go's
    /// `encoding/json` default).
    pub html_safe: bool,
}

/// How a secret (or a part of it) was turned into the bytes that appear in
/// output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// The value itself, as UTF-8.
    Plain,
    /// Base64 of the value.
    Base64 {
        /// The alphabet.
        alphabet: Base64Alphabet,
        /// The value's byte offset modulo 3 within the encoded stream.
        offset: u8,
        /// What follows the value in the encoded stream.
        ending: Base64Ending,
    },
    /// Hex of the value's bytes, lower case.
    HexLower,
    /// Hex of the value's bytes, upper case.
    HexUpper,
    /// Percent-encoding (URL encoding) of the value's bytes.
    Percent(PercentStyle),
    /// The value escaped for the inside of a JSON string.
    Json(JsonStyle),
}

/// Which part of a secret value an encoded form was made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Part {
    /// The whole value.
    Whole,
    /// The whole value with every `\n` written as `\r\n` (serial consoles and
    /// Windows tools do this to multi-line values).
    WholeCrlf,
    /// Line `index` (from 0) of a multi-line value, without its line ending.
    Line {
        /// The line's index within the value.
        index: usize,
    },
    /// Line `index` of a multi-line value with surrounding whitespace trimmed.
    TrimmedLine {
        /// The line's index within the value.
        index: usize,
    },
}

/// One byte string to search for, with where it came from.
pub struct EncodedForm {
    part: Part,
    encoding: Encoding,
    bytes: Zeroizing<Vec<u8>>,
}

impl EncodedForm {
    /// The part of the secret value this form encodes.
    pub fn part(&self) -> Part {
        self.part
    }

    /// The encoding that produced it. When several encodings produce the same
    /// bytes, the first one in generation order is kept.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The bytes themselves. They are as sensitive as the secret.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for EncodedForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedForm")
            .field("part", &self.part)
            .field("encoding", &self.encoding)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// The deduplicated encoded forms of one secret, in generation order. The
/// bytes are wiped on drop; `Debug` shows only the count.
pub struct EncodedForms {
    forms: Vec<EncodedForm>,
}

impl EncodedForms {
    /// How many distinct forms there are.
    pub fn len(&self) -> usize {
        self.forms.len()
    }

    /// True when there are none (only for a secret with no characters).
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The forms, in generation order.
    pub fn iter(&self) -> std::slice::Iter<'_, EncodedForm> {
        self.forms.iter()
    }

    /// The longest form in bytes (0 when there are none).
    pub fn max_len(&self) -> usize {
        self.forms.iter().map(|f| f.bytes.len()).max().unwrap_or(0)
    }
}

impl<'a> IntoIterator for &'a EncodedForms {
    type Item = &'a EncodedForm;
    type IntoIter = std::slice::Iter<'a, EncodedForm>;

    fn into_iter(self) -> Self::IntoIter {
        self.forms.iter()
    }
}

impl fmt::Debug for EncodedForms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedForms").field("count", &self.forms.len()).finish_non_exhaustive()
    }
}

/// Every encoding applied to each part of a secret, in generation order.
pub fn all_encodings() -> Vec<Encoding> {
    let mut out = vec![Encoding::Plain];
    for alphabet in [Base64Alphabet::Standard, Base64Alphabet::UrlSafe, Base64Alphabet::StandardSlashEscaped] {
        for offset in 0..3 {
            for ending in [Base64Ending::FinalPadded, Base64Ending::Final, Base64Ending::Continued] {
                out.push(Encoding::Base64 { alphabet, offset, ending });
            }
        }
    }
    out.push(Encoding::HexLower);
    out.push(Encoding::HexUpper);
    for safe in
        [PercentSafe::Rfc3986, PercentSafe::UriComponent, PercentSafe::Uri, PercentSafe::Form, PercentSafe::Path]
    {
        for upper_hex in [true, false] {
            for space_as_plus in [false, true] {
                out.push(Encoding::Percent(PercentStyle { safe, upper_hex, space_as_plus }));
            }
        }
    }
    for bits in 0u8..32 {
        out.push(Encoding::Json(JsonStyle {
            escape_slash: bits & 1 != 0,
            ascii_only: bits & 2 != 0,
            unicode_controls: bits & 4 != 0,
            upper_hex: bits & 8 != 0,
            html_safe: bits & 16 != 0,
        }));
    }
    out
}

/// The parts of `value` that are matched on their own: the whole value, its
/// CRLF form, and for a multi-line value each line (and trimmed line) that has
/// at least [`MIN_LINE_CHARS`] characters besides surrounding whitespace.
pub(crate) fn parts(value: &str) -> Vec<(Part, Zeroizing<String>)> {
    let mut out = vec![(Part::Whole, Zeroizing::new(value.to_owned()))];
    if !value.contains('\n') {
        return out;
    }
    if !value.contains('\r') {
        out.push((Part::WholeCrlf, Zeroizing::new(value.replace('\n', "\r\n"))));
    }
    for (index, line) in value.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Whitespace says nothing about the secret: judge a line by what is
        // left once it is trimmed.
        let trimmed = line.trim();
        if trimmed.chars().count() < MIN_LINE_CHARS {
            continue;
        }
        out.push((Part::Line { index }, Zeroizing::new(line.to_owned())));
        if trimmed.len() != line.len() {
            out.push((Part::TrimmedLine { index }, Zeroizing::new(trimmed.to_owned())));
        }
    }
    out
}

/// Applies one encoding to `value`.
///
/// For [`Encoding::Base64`] the result is the part of the encoded stream that
/// is determined by `value` alone, given its offset and ending (see the crate
/// docs); it can be empty for a very short value.
pub fn encode(value: &str, encoding: Encoding) -> Vec<u8> {
    let bytes = value.as_bytes();
    match encoding {
        Encoding::Plain => bytes.to_vec(),
        Encoding::Base64 { alphabet, offset, ending } => {
            base64_aligned(bytes, usize::from(offset % 3), alphabet, ending)
        }
        Encoding::HexLower => hex(bytes, LOWER_HEX),
        Encoding::HexUpper => hex(bytes, UPPER_HEX),
        Encoding::Percent(style) => percent(bytes, style),
        Encoding::Json(style) => json(value, style),
    }
}

/// Expands `secret` into every distinct form the redactor matches.
pub fn encoded_forms(secret: &Secret) -> EncodedForms {
    let encodings = all_encodings();
    let mut seen = Dedup::default();
    let mut forms: Vec<EncodedForm> = Vec::new();
    for (part, text) in parts(secret.expose()) {
        for &encoding in &encodings {
            let bytes = Zeroizing::new(encode(&text, encoding));
            if bytes.is_empty() || !seen.is_new(&bytes, forms.len(), |i| forms[i].bytes()) {
                continue;
            }
            forms.push(EncodedForm { part, encoding, bytes });
        }
    }
    EncodedForms { forms }
}

/// Remembers which byte strings were already produced without keeping a copy
/// of them (a plain `HashSet<Vec<u8>>` would hold unwiped secret material):
/// it maps a hash to the indices of the items with that hash, and compares
/// candidates against the caller's own list.
#[derive(Default)]
pub(crate) struct Dedup {
    hasher: RandomState,
    buckets: HashMap<u64, Vec<usize>>,
}

impl Dedup {
    /// True (and remembered as item `index`) when `candidate` equals none of
    /// the items remembered so far, which `item` looks up by index.
    pub(crate) fn is_new<'a>(&mut self, candidate: &[u8], index: usize, item: impl Fn(usize) -> &'a [u8]) -> bool {
        let bucket = self.buckets.entry(self.hasher.hash_one(candidate)).or_default();
        if bucket.iter().any(|&i| item(i) == candidate) {
            return false;
        }
        bucket.push(index);
        true
    }
}

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";
const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(bytes: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 0xf)]);
    }
    out
}

const B64_STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The base64 characters that depend only on `bytes`, when `bytes` starts at
/// byte `offset` (0, 1 or 2) of a 3-byte group of a longer stream.
///
/// Character `i` of the stream carries bits `6i .. 6i+6`; the value occupies
/// bits `8·offset .. 8·(offset+len)`. A character is kept when all of its bits
/// are the value's. With [`Base64Ending::Final`] the value ends the stream, so
/// the last, partly filled character is fixed too (the encoder fills it with
/// zero bits), and [`Base64Ending::FinalPadded`] adds the `=` padding.
fn base64_aligned(bytes: &[u8], offset: usize, alphabet: Base64Alphabet, ending: Base64Ending) -> Vec<u8> {
    let table = match alphabet {
        Base64Alphabet::Standard | Base64Alphabet::StandardSlashEscaped => B64_STANDARD,
        Base64Alphabet::UrlSafe => B64_URL_SAFE,
    };
    let total_bits = 8 * (offset + bytes.len());
    let first = (8 * offset).div_ceil(6);
    let end = match ending {
        Base64Ending::Continued => total_bits / 6,
        Base64Ending::Final | Base64Ending::FinalPadded => total_bits.div_ceil(6),
    };
    let bit = |i: usize| -> u8 {
        // Bit i of the stream (0 = most significant bit of the first byte);
        // bits before the value are the unknown neighbours, read as zero, and
        // bits past its end are the encoder's zero fill.
        let byte = i / 8;
        if byte < offset || byte >= offset + bytes.len() { 0 } else { (bytes[byte - offset] >> (7 - i % 8)) & 1 }
    };
    let mut out = Vec::with_capacity((end.saturating_sub(first)) * 2 + 2);
    for c in first..end {
        let mut v = 0u8;
        for k in 0..6 {
            v = (v << 1) | bit(6 * c + k);
        }
        let ch = table[usize::from(v)];
        if ch == b'/' && alphabet == Base64Alphabet::StandardSlashEscaped {
            out.extend_from_slice(b"\\/");
        } else {
            out.push(ch);
        }
    }
    if ending == Base64Ending::FinalPadded && !out.is_empty() {
        let pad = (3 - (offset + bytes.len()) % 3) % 3;
        out.extend(std::iter::repeat_n(b'=', pad));
    }
    out
}

fn percent(bytes: &[u8], style: PercentStyle) -> Vec<u8> {
    let digits = if style.upper_hex { UPPER_HEX } else { LOWER_HEX };
    let extra: &[u8] = match style.safe {
        PercentSafe::Rfc3986 => b"-._~",
        PercentSafe::UriComponent => b"-._~!*'()",
        PercentSafe::Uri => b"-._~!*'();,/?:@&=+$#",
        PercentSafe::Form => b"*-._",
        PercentSafe::Path => b"-._~/",
    };
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || extra.contains(&b) {
            out.push(b);
        } else if b == b' ' && style.space_as_plus {
            out.push(b'+');
        } else {
            out.push(b'%');
            out.push(digits[usize::from(b >> 4)]);
            out.push(digits[usize::from(b & 0xf)]);
        }
    }
    out
}

fn json(value: &str, style: JsonStyle) -> Vec<u8> {
    let digits = if style.upper_hex { UPPER_HEX } else { LOWER_HEX };
    let unicode = |out: &mut Vec<u8>, unit: u16| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(digits[usize::from((unit >> shift) & 0xf)]);
        }
    };
    let mut out = Vec::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' if style.escape_slash => out.extend_from_slice(b"\\/"),
            '\u{8}' if !style.unicode_controls => out.extend_from_slice(b"\\b"),
            '\u{c}' if !style.unicode_controls => out.extend_from_slice(b"\\f"),
            '\n' if !style.unicode_controls => out.extend_from_slice(b"\\n"),
            '\r' if !style.unicode_controls => out.extend_from_slice(b"\\r"),
            '\t' if !style.unicode_controls => out.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style.html_safe => {
                let mut units = [0u16; 2];
                unicode(&mut out, c.encode_utf16(&mut units)[0]);
            }
            c if u32::from(c) < 0x20 || (style.ascii_only && u32::from(c) >= 0x7f) => {
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    unicode(&mut out, unit);
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(value: &str, alphabet: Base64Alphabet, offset: u8, ending: Base64Ending) -> String {
        String::from_utf8(encode(value, Encoding::Base64 { alphabet, offset, ending })).unwrap()
    }

    #[test]
    fn base64_offset_zero_matches_plain_encoding() {
        use Base64Alphabet::Standard;
        // "secret1" -> c2VjcmV0MQ==
        assert_eq!(b64("secret1", Standard, 0, Base64Ending::FinalPadded), "c2VjcmV0MQ==");
        assert_eq!(b64("secret1", Standard, 0, Base64Ending::Final), "c2VjcmV0MQ");
        // The last 'Q' depends on the byte after the value.
        assert_eq!(b64("secret1", Standard, 0, Base64Ending::Continued), "c2VjcmV0M");
    }

    #[test]
    fn base64_offsets_one_and_two_drop_boundary_characters() {
        use Base64Alphabet::Standard;
        // "x" + "secret" = eHNlY3JldA== ; the value's stable core starts at
        // character 2.
        assert_eq!(b64("secret", Standard, 1, Base64Ending::FinalPadded), "NlY3JldA==");
        assert_eq!(b64("secret", Standard, 1, Base64Ending::Continued), "NlY3Jld");
        // "xy" + "secret" = eHlzZWNyZXQ= ; starts at character 3.
        assert_eq!(b64("secret", Standard, 2, Base64Ending::FinalPadded), "zZWNyZXQ=");
        assert_eq!(b64("secret", Standard, 2, Base64Ending::Continued), "zZWNyZX");
    }

    #[test]
    fn base64_url_safe_and_slash_escaped() {
        // U+FBFF is EF AF BF: "76+/" standard, "76-_" URL-safe.
        let v = "\u{fbff}";
        let std = b64(v, Base64Alphabet::Standard, 0, Base64Ending::FinalPadded);
        assert_eq!(std, "76+/");
        let url = b64(v, Base64Alphabet::UrlSafe, 0, Base64Ending::FinalPadded);
        assert_eq!(url, "76-_");
        let esc = b64(v, Base64Alphabet::StandardSlashEscaped, 0, Base64Ending::FinalPadded);
        assert_eq!(esc, "76+\\/");
    }

    #[test]
    fn hex_both_cases() {
        assert_eq!(encode("Ab\u{ff}", Encoding::HexLower), b"4162c3bf");
        assert_eq!(encode("Ab\u{ff}", Encoding::HexUpper), b"4162C3BF");
    }

    #[test]
    fn percent_styles() {
        let v = "a b/c+~é";
        let style = |safe, upper_hex, space_as_plus| {
            String::from_utf8(encode(v, Encoding::Percent(PercentStyle { safe, upper_hex, space_as_plus }))).unwrap()
        };
        assert_eq!(style(PercentSafe::Rfc3986, true, false), "a%20b%2Fc%2B~%C3%A9");
        assert_eq!(style(PercentSafe::Rfc3986, false, false), "a%20b%2fc%2b~%c3%a9");
        assert_eq!(style(PercentSafe::Form, true, true), "a+b%2Fc%2B%7E%C3%A9");
        assert_eq!(style(PercentSafe::Path, true, false), "a%20b/c%2B~%C3%A9");
        assert_eq!(style(PercentSafe::Uri, true, false), "a%20b/c+~%C3%A9");
    }

    #[test]
    fn json_styles() {
        let v = "q\"\\/\n\u{1}é😀<";
        let style = |bits: u8| {
            String::from_utf8(encode(
                v,
                Encoding::Json(JsonStyle {
                    escape_slash: bits & 1 != 0,
                    ascii_only: bits & 2 != 0,
                    unicode_controls: bits & 4 != 0,
                    upper_hex: bits & 8 != 0,
                    html_safe: bits & 16 != 0,
                }),
            ))
            .unwrap()
        };
        assert_eq!(style(0), "q\\\"\\\\/\\n\\u0001é😀<");
        assert_eq!(style(1), "q\\\"\\\\\\/\\n\\u0001é😀<");
        assert_eq!(style(2), "q\\\"\\\\/\\n\\u0001\\u00e9\\ud83d\\ude00<");
        assert_eq!(style(2 | 4 | 8 | 16), "q\\\"\\\\/\\u000A\\u0001\\u00E9\\uD83D\\uDE00\\u003C");
    }

    #[test]
    fn forms_are_deduplicated() {
        let forms = encoded_forms(&Secret::new("abcdef123456"));
        let mut all: Vec<&[u8]> = forms.iter().map(EncodedForm::bytes).collect();
        let before = all.len();
        all.sort();
        all.dedup();
        assert_eq!(before, all.len());
        // An alphanumeric value is its own percent and JSON encoding.
        assert!(!forms.iter().any(|f| matches!(f.encoding(), Encoding::Percent(_) | Encoding::Json(_))));
    }

    #[test]
    fn multi_line_parts() {
        let p = parts("first-line\r\n  short\n  indented line  \nend");
        let names: Vec<Part> = p.iter().map(|(part, _)| *part).collect();
        assert_eq!(
            names,
            vec![Part::Whole, Part::Line { index: 0 }, Part::Line { index: 2 }, Part::TrimmedLine { index: 2 },]
        );
        assert_eq!(p[3].1.as_str(), "indented line");
        let q = parts("line-one\nline-two");
        assert_eq!(q[1].0, Part::WholeCrlf);
        assert_eq!(q[1].1.as_str(), "line-one\r\nline-two");
    }
}
