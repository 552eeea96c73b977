//! Property tests: random secrets, embedded in random text in random
//! encodings, streamed in random pieces, never come out in any encoding; text
//! without secrets comes out unchanged.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use phasebox_redact::{Redactor, Secret, encoded_forms, mask_token};
use proptest::prelude::*;

const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

/// 6–64 bytes of printable ASCII, or 6–16 arbitrary characters (at most 64
/// bytes of UTF-8).
fn secret_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(0x20u8..0x7f, 6..=64).prop_map(|b| String::from_utf8(b).expect("ASCII")),
        proptest::collection::vec(any::<char>(), 6..=16).prop_map(|c| c.into_iter().collect()),
    ]
}

/// Surrounding text: log-like printable ASCII with line breaks, or arbitrary
/// characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\n'), 1 => Just(b'\r')],
            0..200
        )
        .prop_map(|b| String::from_utf8(b).expect("ASCII")),
        1 => proptest::collection::vec(any::<char>(), 0..80).prop_map(|c| c.into_iter().collect()),
    ]
}

/// How the secret is embedded, encoded by independent implementations where
/// one exists; `Listed(i)` picks the library's own i-th encoded form.
#[derive(Clone, Debug)]
enum Embed {
    Plain,
    /// Base64 of `before + secret + after` (so every alignment and ending
    /// occurs), in one of the four engines.
    Base64 {
        engine: usize,
        before: Vec<u8>,
        after: Vec<u8>,
    },
    HexLower,
    HexUpper,
    PercentUpper,
    PercentLower,
    Form,
    Json,
    JsonSlash,
    Listed(prop::sample::Index),
}

fn embed() -> impl Strategy<Value = Embed> {
    prop_oneof![
        Just(Embed::Plain),
        (0usize..4, proptest::collection::vec(any::<u8>(), 0..6), proptest::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(engine, before, after)| Embed::Base64 { engine, before, after }),
        Just(Embed::HexLower),
        Just(Embed::HexUpper),
        Just(Embed::PercentUpper),
        Just(Embed::PercentLower),
        Just(Embed::Form),
        Just(Embed::Json),
        Just(Embed::JsonSlash),
        any::<prop::sample::Index>().prop_map(Embed::Listed),
    ]
}

fn apply(embed: &Embed, secret: &str) -> Vec<u8> {
    match embed {
        Embed::Plain => secret.as_bytes().to_vec(),
        Embed::Base64 { engine, before, after } => {
            let mut data = before.clone();
            data.extend_from_slice(secret.as_bytes());
            data.extend_from_slice(after);
            let engine = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD][*engine];
            engine.encode(data).into_bytes()
        }
        Embed::HexLower => hex::encode(secret).into_bytes(),
        Embed::HexUpper => hex::encode_upper(secret).into_bytes(),
        Embed::PercentUpper => utf8_percent_encode(secret, RFC3986).to_string().into_bytes(),
        Embed::PercentLower => {
            let upper = utf8_percent_encode(secret, RFC3986).to_string();
            let mut out = Vec::new();
            let mut hex_left = 0;
            for b in upper.bytes() {
                if hex_left > 0 {
                    out.push(b.to_ascii_lowercase());
                    hex_left -= 1;
                } else {
                    hex_left = if b == b'%' { 2 } else { 0 };
                    out.push(b);
                }
            }
            out
        }
        Embed::Form => utf8_percent_encode(secret, FORM).to_string().replace("%20", "+").into_bytes(),
        Embed::Json | Embed::JsonSlash => {
            let json = serde_json::to_string(secret).expect("string");
            let inner = &json[1..json.len() - 1];
            if matches!(embed, Embed::JsonSlash) {
                inner.replace('/', "\\/").into_bytes()
            } else {
                inner.as_bytes().to_vec()
            }
        }
        Embed::Listed(index) => {
            let forms = encoded_forms(&Secret::new(secret));
            let forms: Vec<_> = forms.iter().collect();
            forms[index.index(forms.len())].bytes().to_vec()
        }
    }
}

/// Piece sizes to cut the stream into (cycled), or all single bytes.
fn pieces() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        3 => proptest::collection::vec(1usize..48, 1..24),
        1 => Just(vec![1]),
        1 => Just(vec![65536]),
    ]
}

fn stream(r: &Redactor, input: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.extend(s.push(piece));
        rest = tail;
    }
    out.extend(s.finish());
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reference redaction: aho-corasick's own leftmost-longest `replace_all`
/// over the same forms, first secret first.
fn reference(secrets: &[String], input: &[u8]) -> Vec<u8> {
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    for secret in secrets {
        let secret = Secret::new(secret.as_str());
        for form in &encoded_forms(&secret) {
            if !patterns.iter().any(|p| p == form.bytes()) {
                patterns.push(form.bytes().to_vec());
                tokens.push(mask_token(&secret));
            }
        }
    }
    let ac = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&patterns).unwrap();
    ac.replace_all_bytes(input, &tokens)
}

/// Bytes that keep almost matching: pieces (mostly prefixes, which are what
/// make a match look possible) of the secrets' forms, and random bytes.
fn near_misses(secrets: &[String], pieces: &[(prop::sample::Index, prop::sample::Index, u8)]) -> Vec<u8> {
    let forms: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|s| encoded_forms(&Secret::new(s.as_str())).iter().map(|f| f.bytes().to_vec()).collect::<Vec<_>>())
        .collect();
    let mut out = Vec::new();
    for (which, cut, byte) in pieces {
        let form = &forms[which.index(forms.len())];
        match byte % 4 {
            0 => out.extend_from_slice(form),
            1 => out.extend_from_slice(&form[cut.index(form.len())..]),
            _ => out.extend_from_slice(&form[..cut.index(form.len())]),
        }
        out.push(*byte);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn embedded_secrets_never_come_out(
        secrets in proptest::collection::vec(secret_value(), 1..=3),
        parts in proptest::collection::vec((text(), 0usize..3, embed()), 1..=4),
        tail in text(),
        sizes in pieces(),
    ) {
        let redactor = Redactor::new(
            secrets.iter().enumerate().map(|(i, s)| (format!("S{i}"), Secret::new(s.as_str()))),
        ).unwrap();
        let mut input = Vec::new();
        for (before, which, how) in &parts {
            input.extend_from_slice(before.as_bytes());
            input.extend(apply(how, &secrets[which % secrets.len()]));
        }
        input.extend_from_slice(tail.as_bytes());

        let out = stream(&redactor, &input, &sizes);
        // Streaming is exactly one-shot redaction.
        prop_assert_eq!(&out, &redactor.redact_bytes(&input));
        // Valid UTF-8 in, valid UTF-8 out.
        let input_str = String::from_utf8(input.clone()).expect("inputs are UTF-8");
        let out_str = String::from_utf8(out.clone());
        prop_assert!(out_str.is_ok());
        prop_assert_eq!(out_str.unwrap(), redactor.redact_str(&input_str));
        // No encoded form of any secret survives.
        for secret in &secrets {
            for form in &encoded_forms(&Secret::new(secret.as_str())) {
                prop_assert!(
                    !contains(&out, form.bytes()),
                    "{:?} of {:?} survives in {:?}",
                    form, secret, String::from_utf8_lossy(&out)
                );
            }
        }
        // The same, for forms computed here independently of the library.
        for secret in &secrets {
            for independent in [
                secret.as_bytes().to_vec(),
                hex::encode(secret).into_bytes(),
                hex::encode_upper(secret).into_bytes(),
                STANDARD.encode(secret).into_bytes(),
                URL_SAFE_NO_PAD.encode(secret).into_bytes(),
                apply(&Embed::Json, secret),
                apply(&Embed::PercentLower, secret),
                apply(&Embed::Form, secret),
            ] {
                prop_assert!(!contains(&out, &independent));
            }
        }
        // Every embedded occurrence left a token behind.
        let tokens = secrets
            .iter()
            .map(|s| mask_token(&Secret::new(s.as_str())))
            .collect::<Vec<_>>();
        prop_assert!(tokens.iter().any(|t| contains(&out, t.as_bytes())));
    }

    #[test]
    fn text_without_secrets_is_unchanged(
        secrets in proptest::collection::vec(secret_value(), 1..=3),
        input in text(),
        sizes in pieces(),
    ) {
        let forms: Vec<_> = secrets.iter().map(|s| encoded_forms(&Secret::new(s.as_str()))).collect();
        prop_assume!(forms.iter().flatten().all(|f| !contains(input.as_bytes(), f.bytes())));
        let redactor = Redactor::new(
            secrets.iter().enumerate().map(|(i, s)| (format!("S{i}"), Secret::new(s.as_str()))),
        ).unwrap();
        prop_assert_eq!(stream(&redactor, input.as_bytes(), &sizes), input.as_bytes());
        prop_assert_eq!(redactor.redact_str(&input), input);
    }

    #[test]
    fn same_matches_as_plain_aho_corasick(
        secrets in proptest::collection::vec(secret_value(), 1..=3),
        pieces in proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()),
            1..40,
        ),
        sizes in pieces(),
    ) {
        let input = near_misses(&secrets, &pieces);
        let redactor = Redactor::new(
            secrets.iter().enumerate().map(|(i, s)| (format!("S{i}"), Secret::new(s.as_str()))),
        ).unwrap();
        let expected = reference(&secrets, &input);
        prop_assert_eq!(&redactor.redact_bytes(&input), &expected);
        prop_assert_eq!(&stream(&redactor, &input, &sizes), &expected);
    }
}
