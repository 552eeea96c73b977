//! Streaming secret redaction for everything that leaves the job engine:
//! phase output, serial output, result JSON and the event stream.
//!
//! # Use
//!
//! ```
//! use phasebox_redact::{Redactor, Secret};
//!
//! let redactor = Redactor::new([("DUT_PASSWORD", Secret::new("tr0ub4dor&3"))])?;
//!
//! // One StreamRedactor per channel; feed it whatever pieces arrive.
//! let mut serial = redactor.stream();
//! let mut out = serial.push(b"login: root\npassword: tr0ub");
//! out.extend(serial.push(b"4dor&3\n# "));
//! out.extend(serial.finish());
//! assert_eq!(out, b"login: root\npassword: **882a2a**\n# ");
//!
//! // One-shot text, e.g. result JSON.
//! let json = redactor.redact_str(r#"{"url":"https://x/?p=tr0ub4dor%263"}"#);
//! assert_eq!(json, r#"{"url":"https://x/?p=**882a2a**"}"#);
//! # Ok::<(), phasebox_redact::RedactError>(())
//! ```
//!
//! Several channels that a reader sees merged (a process's stdout and stderr, its log lines)
//! go through one [`TaggedStreamRedactor`], so a secret written half on each is caught, while
//! each output piece still says which channel it belongs to:
//!
//! ```
//! use phasebox_redact::{Redactor, Secret, TerminalText};
//!
//! let redactor = Redactor::new([("TOKEN", Secret::new("tr0ub4dor&3"))])?;
//! let mut merged = redactor.tagged_stream();
//! let mut pieces = merged.push("stdout", b"token: tr0ub");
//! pieces.extend(merged.push("stderr", b"4dor&3\n"));
//! pieces.extend(merged.finish());
//! let stdout: Vec<u8> = pieces.iter().filter(|p| p.tag == "stdout").flat_map(|p| p.bytes.clone()).collect();
//! assert_eq!(stdout, b"token: **882a2a**");
//!
//! // Match what a terminal shows, not the bytes that make it show it.
//! let mut terminal = TerminalText::new();
//! let shown = terminal.push(b"tr0ub\x1b[0m4dor&3");
//! assert_eq!(redactor.redact_str(&shown), "**882a2a**");
//! # Ok::<(), phasebox_redact::RedactError>(())
//! ```
//!
//! # What is matched
//!
//! For each secret, [`encoded_forms`] lists every byte string searched for,
//! deduplicated (identical byte strings are generated once):
//!
//! * the value itself;
//! * base64, in the standard and URL-safe alphabets (and the standard one with
//!   `/` escaped as `\/`), at each of the three alignments, with and without
//!   `=` padding (see below);
//! * lower- and upper-case hex;
//! * percent (URL) encoding in the common conventions: RFC 3986,
//!   `encodeURIComponent`, `encodeURI`, form encoding and Python's `quote`,
//!   each with `%2F` or `%2f`, and space as `%20` or `+`;
//! * JSON string escaping as `serde_json` writes it, and with `\/`, with
//!   `\uXXXX` for non-ASCII characters (surrogate pairs beyond the BMP), with
//!   `\u00XX` instead of `\n`-style short escapes, upper-case hex, and Go's
//!   HTML-safe `\u003c` forms, in every combination;
//! * for a multi-line value: the value with `\r\n` line endings, and each line
//!   of at least 6 characters on its own (also with surrounding whitespace
//!   trimmed), each again in all of the encodings above.
//!
//! Every form of one secret is replaced by the same token,
//! `**<first 6 hex digits of sha256(value)>**` ([`mask_token`]), the masking
//! format Testflinger uses. Values shorter than [`MIN_SECRET_CHARS`]
//! characters are refused with [`RedactError::TooShort`], which names the
//! secret, never its value.
//!
//! # Design
//!
//! **One automaton.** All forms of all secrets go into a single Aho-Corasick
//! automaton with leftmost-longest semantics: matching runs left to right, and
//! where several patterns start at the same position the longest wins (so a
//! padded base64 form beats its unpadded prefix, and a whole multi-line value
//! beats its first line). One pass over the data finds every secret in every
//! encoding, so the cost hardly depends on how many patterns there are; a
//! per-pattern find-and-replace costs one pass per pattern.
//!
//! **A skip filter in front.** Every pattern is at least 6 bytes long, so
//! most text positions can be ruled out without running the automaton: a
//! Wu–Manber table keyed by 3-byte sequences says how far the search may jump
//! (typically 4–14 bytes per lookup), and only where a pattern could start
//! does the automaton check, anchored at that position. Text that keeps
//! almost matching (hex dumps next to hex-encoded secrets) would make those
//! checks pile up, so after a budget of failed checks the automaton scans the
//! rest on its own. Either way the matches are exactly the automaton's
//! leftmost-longest ones; the filter only makes them cheaper to find (about
//! 1 GB/s per core with 20 secrets in every encoding, see the `redact`
//! benchmark).
//!
//! **Why a held-back tail.** Output must flow live, but a secret can be split
//! across any number of writes (serial consoles deliver a byte at a time).
//! After each write, a [`StreamRedactor`] emits everything that can no longer
//! be part of a match and keeps only the last `L - 1` bytes, `L` being the
//! longest pattern: a match that starts earlier than that ends inside what has
//! been seen, and so do all its longer alternatives, so the decision there is
//! final. Holding back less could let the start of a secret out before its end
//! arrives; holding back more would delay output for nothing. The stream's
//! output is byte-for-byte what [`Redactor::redact_bytes`] gives for the whole
//! input at once. The held-back bytes are wiped when the stream ends or is
//! dropped.
//!
//! **Why alignments.** Base64 turns each 3-byte group into 4 characters. When
//! a secret sits inside a longer encoded blob (a token inside a base64 JSON
//! document, a password inside an HTTP basic-auth header), its first byte can
//! be at offset 0, 1 or 2 of a group, and each offset gives entirely
//! different characters. The characters at its edges also mix in bits of the
//! neighbouring bytes, which are unknown. So for each offset the redactor
//! computes the *stable core*: only the characters all of whose 6 bits come
//! from the secret (character `i` covers bits `6i..6i+6`; the secret covers
//! bits `8·offset..8·(offset+len)`). That drops 0, 2 or 3 characters at the
//! start and up to 1 at the end. When the secret ends the blob, the last
//! partial character is fixed (the encoder fills it with zero bits), so that
//! form, with and without `=` padding, is matched too and, being longer, wins.
//!
//! **Text.** Every pattern is valid UTF-8, so in valid UTF-8 text a match
//! always starts and ends on a character boundary and replacing it by the
//! ASCII token keeps the text valid; [`Redactor::redact_str`] relies on that
//! (and widens a match to character boundaries rather than split one).
//!
//! **What renders.** A secret with an escape sequence inside it (`s3cr\x1b[0met`) or a
//! zero-width character shows whole on a terminal but is not a byte-for-byte match.
//! [`TerminalText`] turns a stream into what a terminal renders (escape sequences, control
//! characters and invisible formatting characters dropped); redacting that, and emitting it
//! instead of the raw bytes, makes what a reader sees what was matched.
//! [`visible_controls`] is the other half, for text printed to a terminal: it shows control
//! characters (`^[`) rather than letting them act.
//!
//! # Limits
//!
//! Forms not listed above are not caught: base64 wrapped across lines, hex
//! with separators, encodings nested in other encodings (other than `\/` in
//! base64), mixed-case hex within one value. The compiled automaton encodes
//! the patterns and lives as long as the [`Redactor`]; it is not wiped.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod encode;
mod redactor;
mod secret;
mod skip;
mod tagged;
mod terminal;

pub use encode::{
    Base64Alphabet, Base64Ending, EncodedForm, EncodedForms, Encoding, JsonStyle, MIN_LINE_CHARS, Part, PercentSafe,
    PercentStyle, all_encodings, encode, encoded_forms,
};
pub use redactor::{MIN_SECRET_CHARS, RedactError, Redactor, StreamRedactor, mask_token};
pub use secret::Secret;
pub use tagged::{Released, TaggedStreamRedactor};
pub use terminal::{TerminalText, rendered_text, visible_controls};
