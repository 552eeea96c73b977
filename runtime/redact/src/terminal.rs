//! [`TerminalText`]: what a terminal would show of a byte stream, for matching what renders.

/// Turns a byte stream into the text a terminal renders from it: printable characters, line
/// feeds, carriage returns and tabs. Escape sequences (CSI such as SGR colours and cursor
/// movement, OSC such as clipboard writes and titles, DCS, SOS/PM/APC strings, two-byte `ESC`
/// sequences), every other C0 and C1 control character and invisible formatting characters
/// (zero-width spaces and joiners, bidirectional overrides, soft hyphens, byte order marks) are
/// dropped; bytes that are not UTF-8 are dropped or become U+FFFD (as a terminal shows them).
///
/// Redact the result, not the raw bytes: `s3cr\x1b[0met` renders as `s3cret` but does not
/// contain it, and a zero-width space inside a secret hides it the same way. Feed a channel in
/// whatever pieces it arrives; a sequence or character split across pieces is handled (the
/// parser keeps its state). Parsing follows the DEC ANSI parser state machine
/// ([`anstyle_parse`]), as terminal emulators do.
#[derive(Default)]
pub struct TerminalText {
    parser: anstyle_parse::Parser,
    text: Rendered,
}

#[derive(Default)]
struct Rendered(String);

impl anstyle_parse::Perform for Rendered {
    fn print(&mut self, c: char) {
        if !c.is_control() && !is_invisible_format(c) {
            self.0.push(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        if matches!(byte, b'\n' | b'\r' | b'\t') {
            self.0.push(char::from(byte));
        }
    }
}

impl TerminalText {
    /// A parser in its ground state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next piece of the stream; returns the text it renders (an escape sequence or
    /// character still incomplete at its end is kept for the next piece).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        for b in bytes {
            self.parser.advance(&mut self.text, *b);
        }
        std::mem::take(&mut self.text.0)
    }
}

impl std::fmt::Debug for TerminalText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalText").finish_non_exhaustive()
    }
}

/// The text `s` renders on a terminal (see [`TerminalText`]).
pub fn rendered_text(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t') || is_invisible_format(c)) {
        return s.to_owned();
    }
    TerminalText::new().push(s.as_bytes())
}

/// `s` made safe to write to a terminal as it is: every control character except `\n` and `\t`
/// (and `\r` directly before `\n`) is shown in caret notation (`\x1b` as `^[`, `\x07` as
/// `^G`, DEL as `^?`), C1 controls and invisible formatting characters (bidirectional
/// overrides, zero-width characters) as `\u{..}`. So text from a plugin, a device or a server
/// can neither move the cursor, nor rewrite earlier lines, nor set the clipboard or the
/// window title, nor hide or reorder what it shows; the escapes stay visible for whoever
/// reads it.
pub fn visible_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\n' && c != '\t') || is_invisible_format(c);
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => out.push('\r'),
            c if !unsafe_char(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Format characters (Unicode category Cf) that render as nothing, so they can hide a secret
/// in plain sight: soft hyphen, Arabic letter mark, Mongolian vowel separator, zero-width
/// space/joiners, directional marks, embeddings and overrides, word joiner and invisible
/// operators, directional isolates, deprecated format characters, byte order mark, interlinear
/// annotation marks, tag characters.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(input: &[u8], size: usize) -> String {
        let mut t = TerminalText::new();
        input.chunks(size).map(|c| t.push(c)).collect()
    }

    #[test]
    fn escape_sequences_and_controls_do_not_render() {
        let cases: &[(&[u8], &str)] = &[
            (b"s3cr\x1b[0met", "s3cret"),
            (b"\x1b[1;31mred\x1b[m plain", "red plain"),
            (b"a\x1b]52;c;c2VjcmV0\x07b", "ab"),
            (b"a\x1b]0;title\x1b\\b", "ab"),
            (b"a\x1bPq#0;2;0;0;0\x1b\\b", "ab"),
            (b"up\x1b[2A\x1b[2Kdenied", "updenied"),
            (b"bell\x07 back\x08space\x7f", "bell backspace"),
            (b"tab\tcr\r\nlf\n", "tab\tcr\r\nlf\n"),
            ("c1 \u{9b}31m csi".as_bytes(), "c1 31m csi"),
            ("zero\u{200b}width\u{202e}".as_bytes(), "zerowidth"),
            (b"bad \xff utf8 \xc3(", "bad  utf8 \u{fffd}"),
            ("\u{e9}t\u{e9}".as_bytes(), "\u{e9}t\u{e9}"),
        ];
        for (input, expected) in cases {
            for size in [1, 2, 3, 64] {
                assert_eq!(streamed(input, size), *expected, "{input:?} in {size}-byte pieces");
            }
        }
    }

    #[test]
    fn controls_are_made_visible() {
        assert_eq!(visible_controls("plain\n\ttab\r\n"), "plain\n\ttab\r\n");
        assert_eq!(
            visible_controls("a\x1b]52;c;aGk=\x07b\x1b[2A\x1b[2Kc\rd\u{7f}"),
            "a^[]52;c;aGk=^Gb^[[2A^[[2Kc^Md^?"
        );
        assert_eq!(visible_controls("\u{9b}31m \u{202e}x"), "\\u{9b}31m \\u{202e}x");
    }

    #[test]
    fn plain_text_is_kept_as_is() {
        assert_eq!(rendered_text("plain line\n\ttabbed"), "plain line\n\ttabbed");
        assert_eq!(rendered_text("s3cr\u{1b}[0met"), "s3cret");
    }
}
