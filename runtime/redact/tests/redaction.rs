//! Example-based tests of the redactor: one per encoding, streaming edge
//! cases, errors and `Debug` output. Encodings are produced here with
//! independent implementations (the `base64`, `hex`, `percent-encoding` and
//! `serde_json` crates) wherever one exists.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use phasebox_redact::{MIN_SECRET_CHARS, RedactError, Redactor, Secret, encoded_forms, mask_token};

const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

fn redactor(secrets: &[(&str, &str)]) -> Redactor {
    Redactor::new(secrets.iter().map(|&(name, value)| (name, Secret::new(value)))).expect("valid secrets")
}

fn token(value: &str) -> String {
    mask_token(&Secret::new(value))
}

/// Streams `input` through `r` in pieces of `size` bytes.
fn stream_in_pieces(r: &Redactor, input: &[u8], size: usize) -> Vec<u8> {
    let mut s = r.stream();
    let mut out = Vec::new();
    for piece in input.chunks(size) {
        s.push_into(piece, &mut out);
    }
    s.finish_into(&mut out);
    out
}

/// Asserts that `input` redacts to `expected`, one-shot and streamed in
/// several piece sizes.
fn assert_redacts(r: &Redactor, input: &str, expected: &str) {
    assert_eq!(r.redact_str(input), expected, "redact_str of {input:?}");
    for size in [1, 2, 3, 7, 64, 4096] {
        let out = stream_in_pieces(r, input.as_bytes(), size);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "stream in {size}-byte pieces of {input:?}");
    }
}

const PW: &str = "s3cr3t/P@ss word+é";

#[test]
fn token_is_first_six_hex_of_sha256() {
    // sha256("password123") = ef92b778bafe771e...
    assert_eq!(token("password123"), "**ef92b7**");
}

#[test]
fn plain_value() {
    let r = redactor(&[("PW", PW)]);
    let t = token(PW);
    assert_redacts(&r, &format!("pw={PW}; again {PW}"), &format!("pw={t}; again {t}"));
}

#[test]
fn base64_all_alphabets_paddings_and_alignments() {
    let r = redactor(&[("PW", PW)]);
    let t = token(PW);
    let engines = [
        ("standard", &STANDARD),
        ("standard-no-pad", &STANDARD_NO_PAD),
        ("url-safe", &URL_SAFE),
        ("url-safe-no-pad", &URL_SAFE_NO_PAD),
    ];
    for (name, engine) in engines {
        for offset in 0..3 {
            for trailing in 0..3 {
                // The secret at byte `offset` of a stream with `trailing` bytes
                // after it.
                let mut data = b"{\"user\":\"admin\",\"pw\":\""[..offset].to_vec();
                data.extend_from_slice(PW.as_bytes());
                data.extend_from_slice(&b"\"}xyz"[..trailing]);
                let encoded = engine.encode(&data);
                let out = r.redact_str(&encoded);
                assert!(out.contains(&t), "{name} offset {offset} trailing {trailing}: {encoded} -> {out}");
                // Only the characters mixing in neighbouring bits survive: at
                // most 3 before the token and 1 (+ padding) after, or the
                // encoding of the neighbouring bytes themselves.
                let before = out.find(&t).unwrap();
                let after = out.len() - before - t.len();
                assert!(before <= 3, "{name} {offset}/{trailing}: {out}");
                if trailing == 0 {
                    assert_eq!(after, 0, "{name} {offset}: final form not matched: {out}");
                } else {
                    assert!(after <= 4 + 2, "{name} {offset}/{trailing}: {out}");
                }
                // Streamed, byte by byte.
                let streamed = stream_in_pieces(&r, encoded.as_bytes(), 1);
                assert_eq!(String::from_utf8(streamed).unwrap(), out);
            }
        }
    }
}

#[test]
fn base64_inside_json_with_escaped_slashes() {
    // A value whose standard base64 contains '/', written by a JSON encoder
    // that escapes slashes.
    let value = "\u{3ff}\u{3ff}\u{3ff}secret";
    let encoded = STANDARD.encode(value);
    assert!(encoded.contains('/'));
    let escaped = encoded.replace('/', "\\/");
    let r = redactor(&[("V", value)]);
    assert_redacts(&r, &format!("{{\"blob\":\"{escaped}\"}}"), &format!("{{\"blob\":\"{}\"}}", token(value)));
}

#[test]
fn hex_lower_and_upper() {
    let r = redactor(&[("PW", PW)]);
    let t = token(PW);
    let lower = hex::encode(PW);
    let upper = hex::encode_upper(PW);
    assert_redacts(&r, &format!("a {lower} b {upper} c"), &format!("a {t} b {t} c"));
}

#[test]
fn url_encoding_upper_lower_and_plus() {
    let r = redactor(&[("PW", PW)]);
    let t = token(PW);
    let upper = utf8_percent_encode(PW, RFC3986).to_string();
    assert!(upper.contains("%2F"));
    let lower = lowercase_percent(&upper);
    assert!(lower.contains("%2f"));
    let form = utf8_percent_encode(PW, FORM).to_string().replace("%20", "+");
    assert!(form.contains('+'));
    // JavaScript encodeURIComponent keeps ' ( ) ! * as well.
    for encoded in [upper, lower, form] {
        assert_redacts(&r, &format!("GET /login?u=admin&p={encoded}&x=1"), &format!("GET /login?u=admin&p={t}&x=1"));
    }
}

fn lowercase_percent(s: &str) -> String {
    let mut out = String::new();
    let mut hex_left = 0;
    for c in s.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

#[test]
fn json_escaping() {
    let value = "pa\"ss\\wo/rd\n\u{1}é😀<";
    let r = redactor(&[("V", value)]);
    let t = token(value);
    let serde = serde_json::to_string(value).unwrap();
    let inner = &serde[1..serde.len() - 1];
    let slash = inner.replace('/', "\\/");
    let ascii = "pa\\\"ss\\\\wo/rd\\n\\u0001\\u00e9\\ud83d\\ude00<";
    let ascii_upper = "pa\\\"ss\\\\wo\\/rd\\n\\u0001\\u00E9\\uD83D\\uDE00<";
    let go = "pa\\\"ss\\\\wo/rd\\n\\u0001é😀\\u003c";
    for encoded in [inner, &slash, ascii, ascii_upper, go] {
        // The JSON reading back to the value is what makes it a real encoding.
        let back: String = serde_json::from_str(&format!("\"{encoded}\"")).unwrap();
        assert_eq!(back, value);
        assert_redacts(&r, &format!("{{\"password\":\"{encoded}\"}}"), &format!("{{\"password\":\"{t}\"}}"));
    }
}

#[test]
fn multi_line_secret_whole_lines_and_encoded_lines() {
    let key = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEA1x\n  b3BlbnNzaC1rZXktdjE  \nok\n-----END KEY-----";
    let r = redactor(&[("SSH_KEY", key)]);
    let t = token(key);
    // Whole value, with either line ending.
    assert_redacts(&r, &format!("<{key}>"), &format!("<{t}>"));
    assert_redacts(&r, &format!("<{}>", key.replace('\n', "\r\n")), &format!("<{t}>"));
    // A line on its own, e.g. echoed by a serial console, is masked with the
    // secret's token.
    assert_redacts(&r, "console> MIIEowIBAAKCAQEA1x\r\nconsole> ", &format!("console> {t}\r\nconsole> "));
    // Trimmed line, and an encoded line.
    assert_redacts(&r, "x=b3BlbnNzaC1rZXktdjE;", &format!("x={t};"));
    let hex_line = hex::encode("MIIEowIBAAKCAQEA1x");
    assert_redacts(&r, &format!("[{hex_line}]"), &format!("[{t}]"));
    // Lines shorter than 6 characters are not patterns on their own.
    assert_redacts(&r, "ok\n", "ok\n");
    // Whole value inside JSON: the escaped newlines are matched as a whole.
    let json = serde_json::to_string(key).unwrap();
    assert_redacts(&r, &json, &format!("\"{t}\""));
}

#[test]
fn secret_at_very_start_and_end() {
    let r = redactor(&[("PW", PW)]);
    let t = token(PW);
    assert_redacts(&r, PW, &t);
    assert_redacts(&r, &format!("{PW} tail"), &format!("{t} tail"));
    assert_redacts(&r, &format!("head {PW}"), &format!("head {t}"));
    assert_redacts(&r, &format!("{PW}{PW}"), &format!("{t}{t}"));
}

#[test]
fn one_byte_chunks_with_multiple_secrets() {
    let r = redactor(&[("A", "alpha-secret"), ("B", "bravo-secret-2"), ("C", PW)]);
    let input =
        format!("x alpha-secret y {} z {} w bravo-secret-2", STANDARD.encode("bravo-secret-2"), hex::encode(PW));
    let expected = format!(
        "x {} y {} z {} w {}",
        token("alpha-secret"),
        token("bravo-secret-2"),
        token(PW),
        token("bravo-secret-2")
    );
    assert_redacts(&r, &input, &expected);
}

#[test]
fn stream_holds_back_only_the_minimum_and_flows_live() {
    let r = redactor(&[("PW", PW)]);
    let hold = r.hold_back();
    let max_form = encoded_forms(&Secret::new(PW)).max_len();
    assert_eq!(hold, max_form - 1);
    let mut s = r.stream();
    let text = "x".repeat(10_000);
    let out = s.push(text.as_bytes());
    assert_eq!(out.len(), text.len() - hold);
    assert_eq!(s.pending_len(), hold);
    // Next piece: everything but the last `hold` bytes comes out.
    let out2 = s.push(b"more text");
    assert_eq!(out2.len(), 9);
    let rest = s.finish();
    assert_eq!(rest.len(), hold);
}

#[test]
fn longest_match_wins_and_leftmost_first() {
    let r = redactor(&[("SHORT", "abcdef"), ("LONG", "abcdefghij"), ("MID", "defghijk")]);
    // At position 0 both SHORT and LONG match: LONG (longer) wins. MID starts
    // later and overlaps, so it is not matched separately.
    assert_redacts(&r, "abcdefghijk", &format!("{}k", token("abcdefghij")));
    // Leftmost wins even when a later match would be longer.
    assert_redacts(&r, "abcdefghi", &format!("{}ghi", token("abcdef")));
}

#[test]
fn same_token_for_every_encoding() {
    let r = redactor(&[("PW", PW)]);
    let t = token(PW);
    for form in &encoded_forms(&Secret::new(PW)) {
        let out = r.redact_bytes(form.bytes());
        assert_eq!(out, t.as_bytes(), "{:?}", form);
    }
}

#[test]
fn too_short_secret_is_refused_by_name() {
    let err = Redactor::new([("LONG_ENOUGH", Secret::new("abcdefgh")), ("DUT_PIN", Secret::new("12345"))]).unwrap_err();
    assert!(matches!(&err, RedactError::TooShort { name } if name == "DUT_PIN"));
    let msg = err.to_string();
    assert!(msg.contains("DUT_PIN"), "{msg}");
    assert!(msg.contains(&MIN_SECRET_CHARS.to_string()), "{msg}");
    assert!(!msg.contains("12345"), "{msg}");
    assert!(!format!("{err:?}").contains("12345"));
    // Six characters (not bytes) is enough.
    assert!(Redactor::new([("OK", Secret::new("ééé123"))]).is_ok());
    assert!(Redactor::new([("NO", Secret::new("éééé1"))]).is_err());
}

#[test]
fn debug_never_leaks() {
    let s = Secret::new("hunter2hunter2");
    assert_eq!(format!("{s:?}"), "Secret(**redacted**)");
    assert_eq!(s.to_string(), "Secret(**redacted**)");
    let r = Redactor::new([("PW", &s)]).unwrap();
    let debug = format!("{r:?} {r:#?}");
    assert!(debug.contains("secrets: 1"), "{debug}");
    for form in &encoded_forms(&s) {
        let f = String::from_utf8_lossy(form.bytes());
        assert!(!debug.contains(f.as_ref()), "{debug} leaks {f}");
    }
    assert!(!debug.contains("hunter"));
    let mut stream = r.stream();
    stream.push(b"hunter2hunt");
    let debug = format!("{stream:?} {:?}", encoded_forms(&s));
    assert!(!debug.contains("hunt"), "{debug}");
}

#[test]
fn redact_str_keeps_utf8_valid() {
    let value = "ключ-секрет";
    let r = redactor(&[("K", value)]);
    let t = token(value);
    let input = format!("日本語{value}ü{}😀", hex::encode(value));
    assert_redacts(&r, &input, &format!("日本語{t}ü{t}😀"));
}

#[test]
fn no_secrets_passes_everything_through() {
    let r = Redactor::new(Vec::<(String, Secret)>::new()).unwrap();
    assert_eq!(r.hold_back(), 0);
    assert_redacts(&r, "anything at all", "anything at all");
}

#[test]
fn identical_values_share_patterns_and_token() {
    let r = redactor(&[("A", "same-value"), ("B", "same-value")]);
    assert_eq!(r.secret_count(), 1);
    let single = redactor(&[("A", "same-value")]);
    assert_eq!(r.pattern_count(), single.pattern_count());
}

#[test]
fn redactor_is_send_sync_and_clone_shares() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Redactor>();
    assert_send_sync::<phasebox_redact::StreamRedactor>();
    let r = redactor(&[("PW", PW)]);
    let r2 = r.clone();
    let handle = std::thread::spawn(move || r2.redact_str(PW));
    assert_eq!(handle.join().unwrap(), token(PW));
}
