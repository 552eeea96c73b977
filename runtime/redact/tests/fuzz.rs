//! Fuzzing the redactor with property tests, beyond `properties.rs` (which covers random
//! secrets in random UTF-8 text): here the text around the secrets is arbitrary bytes, the
//! secrets are arbitrary strings (too short ones included, and secrets that are prefixes,
//! suffixes or repetitions of each other), their forms are cut at arbitrary points and fed in
//! arbitrary pieces, empty ones included.
//!
//! Invariants, for every input:
//! - no panic; a secret shorter than `MIN_SECRET_CHARS` characters is refused, any other
//!   accepted;
//! - streaming in any pieces gives exactly the one-shot redaction, and a stream never holds
//!   back more than `hold_back()` bytes;
//! - bounded output: every match is at least 6 bytes and becomes a 10-byte token, so the
//!   output is at most the input plus 4 bytes per 6 bytes of input;
//! - no encoded form of any secret survives in what the redactor passed through (the text
//!   between its tokens);
//! - valid UTF-8 in, valid UTF-8 out, the same as `redact_str`.
//!
//! CI runs a bounded number of cases per property; `PROPTEST_CASES=N` sets the number for a
//! long run (SECURITY.md). Failing inputs are written to `fuzz.proptest-regressions` beside
//! this file and replayed first on every run: commit them.

use phasebox_redact::{MIN_SECRET_CHARS, Redactor, Secret, encoded_forms, mask_token};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

/// Cases per property when `PROPTEST_CASES` is not set: a few seconds per property in CI.
const CI_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CI_CASES;
    }
    config
}

/// Secrets: arbitrary strings, log-like ASCII, and values derived from an earlier secret
/// (prefix, suffix, doubled, with a line break) so that patterns overlap and nest.
#[derive(Clone, Debug)]
enum SecretSpec {
    Value(String),
    Derived(Index, Derive),
}

#[derive(Clone, Debug)]
enum Derive {
    Prefix(usize),
    Suffix(usize),
    Doubled,
    TwoLines(String),
}

fn secret_spec() -> impl Strategy<Value = SecretSpec> {
    prop_oneof![
        3 => any::<String>().prop_map(SecretSpec::Value),
        3 => "[ -~]{4,40}".prop_map(SecretSpec::Value),
        1 => (any::<Index>(), 5usize..20).prop_map(|(i, n)| SecretSpec::Derived(i, Derive::Prefix(n))),
        1 => (any::<Index>(), 5usize..20).prop_map(|(i, n)| SecretSpec::Derived(i, Derive::Suffix(n))),
        1 => any::<Index>().prop_map(|i| SecretSpec::Derived(i, Derive::Doubled)),
        1 => (any::<Index>(), "[ -~]{6,12}").prop_map(|(i, l)| SecretSpec::Derived(i, Derive::TwoLines(l))),
    ]
}

fn secrets_of(specs: &[SecretSpec]) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    for spec in specs {
        let value = match spec {
            SecretSpec::Value(v) => v.clone(),
            SecretSpec::Derived(_, _) if values.is_empty() => "first-secret".to_owned(),
            SecretSpec::Derived(i, how) => {
                let base = &values[i.index(values.len())];
                let chars: Vec<char> = base.chars().collect();
                match how {
                    Derive::Prefix(n) => chars[..(*n).min(chars.len())].iter().collect(),
                    Derive::Suffix(n) => chars[chars.len().saturating_sub(*n)..].iter().collect(),
                    Derive::Doubled => base.repeat(2),
                    Derive::TwoLines(line) => format!("{base}\n{line}"),
                }
            }
        };
        values.push(value);
    }
    values
}

/// A piece of the input: random bytes, or (part of) an encoded form of one of the secrets.
#[derive(Clone, Debug)]
enum Piece {
    Bytes(Vec<u8>),
    Form { secret: Index, form: Index, cut: Option<(Index, Index)> },
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Bytes),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(secret, form)| Piece::Form { secret, form, cut: None }),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(secret, form, a, b)| Piece::Form { secret, form, cut: Some((a, b)) }),
    ]
}

fn input_of(secrets: &[String], pieces: &[Piece]) -> Vec<u8> {
    let forms: Vec<Vec<Vec<u8>>> = secrets
        .iter()
        .map(|s| encoded_forms(&Secret::new(s.as_str())).iter().map(|f| f.bytes().to_vec()).collect())
        .collect();
    let mut input = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Bytes(b) => input.extend_from_slice(b),
            Piece::Form { secret, form, cut } => {
                let of_secret = &forms[secret.index(forms.len())];
                let form = &of_secret[form.index(of_secret.len())];
                match cut {
                    None => input.extend_from_slice(form),
                    Some((a, b)) => {
                        let (a, b) = (a.index(form.len() + 1), b.index(form.len() + 1));
                        input.extend_from_slice(&form[a.min(b)..a.max(b)]);
                    }
                }
            }
        }
    }
    input
}

/// Feeds `input` to a stream cut at `cuts` (positions, in any order, repeats giving empty
/// pieces), checking the held-back bound after every push.
fn stream(r: &Redactor, input: &[u8], cuts: &[Index]) -> Result<Vec<u8>, TestCaseError> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    at.sort_unstable();
    at.push(input.len());
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut from = 0;
    for to in at {
        s.push_into(&input[from..to], &mut out);
        prop_assert!(s.pending_len() <= r.hold_back(), "holds {} > {}", s.pending_len(), r.hold_back());
        from = to;
    }
    s.finish_into(&mut out);
    Ok(out)
}

/// The pieces of `out` between occurrences of any of `tokens`.
fn split_at_tokens<'a>(out: &'a [u8], tokens: &[Vec<u8>]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let (mut start, mut at) = (0, 0);
    while at < out.len() {
        match tokens.iter().find(|t| out[at..].starts_with(t)) {
            Some(token) => {
                pieces.push(&out[start..at]);
                at += token.len();
                start = at;
            }
            None => at += 1,
        }
    }
    pieces.push(&out[start..]);
    pieces
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Builds the redactor, checking the length rule; `None` when a secret was (rightly) refused.
fn redactor(secrets: &[String]) -> Result<Option<Redactor>, TestCaseError> {
    let built = Redactor::new(secrets.iter().enumerate().map(|(i, s)| (format!("S{i}"), Secret::new(s.as_str()))));
    let too_short = secrets.iter().position(|s| s.chars().count() < MIN_SECRET_CHARS);
    match (built, too_short) {
        (Ok(r), None) => Ok(Some(r)),
        (Err(e), Some(i)) => {
            prop_assert!(e.to_string().contains(&format!("S{i}")), "the error names the secret: {}", e);
            Ok(None)
        }
        (Ok(_), Some(i)) => Err(TestCaseError::fail(format!("secret S{i} is too short but was accepted"))),
        (Err(e), None) => Err(TestCaseError::fail(format!("valid secrets refused: {e}"))),
    }
}

/// The invariants that hold for any input.
fn check(r: &Redactor, secrets: &[String], input: &[u8], cuts: &[Index]) -> Result<Vec<u8>, TestCaseError> {
    let once = r.redact_bytes(input);
    let streamed = stream(r, input, cuts)?;
    prop_assert_eq!(&streamed, &once, "streaming differs from one-shot redaction");
    let bound = input.len() + 4 * (input.len() / MIN_SECRET_CHARS);
    prop_assert!(once.len() <= bound, "{} bytes out for {} in", once.len(), input.len());
    // Between the tokens the redactor put in: a token next to input text can spell a secret
    // (`**c911c9**` then `AAAa0` shows `*AAAa0`) without any of it having passed through.
    let tokens: Vec<Vec<u8>> = secrets.iter().map(|s| mask_token(&Secret::new(s.as_str())).into_bytes()).collect();
    let passed_through = split_at_tokens(&once, &tokens);
    for secret in secrets {
        for form in &encoded_forms(&Secret::new(secret.as_str())) {
            prop_assert!(
                !passed_through.iter().any(|text| contains(text, form.bytes())),
                "{:?} of a secret survives",
                form.encoding()
            );
        }
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let out = String::from_utf8(once.clone());
        prop_assert!(out.is_ok(), "valid UTF-8 in, invalid out");
        prop_assert_eq!(out.unwrap(), r.redact_str(text));
    }
    Ok(once)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_redact_forms_in_arbitrary_bytes(
        specs in prop::collection::vec(secret_spec(), 1..6),
        pieces in prop::collection::vec(piece(), 0..16),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let secrets = secrets_of(&specs);
        let Some(r) = redactor(&secrets)? else { return Ok(()) };
        let input = input_of(&secrets, &pieces);
        check(&r, &secrets, &input, &cuts)?;
    }

    #[test]
    fn fuzz_redact_arbitrary_bytes(
        specs in prop::collection::vec(secret_spec(), 1..4),
        input in prop::collection::vec(any::<u8>(), 0..4096),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let secrets = secrets_of(&specs);
        let Some(r) = redactor(&secrets)? else { return Ok(()) };
        check(&r, &secrets, &input, &cuts)?;
    }

    #[test]
    fn fuzz_redact_arbitrary_text(
        specs in prop::collection::vec(secret_spec(), 1..4),
        text in any::<String>(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let secrets = secrets_of(&specs);
        let Some(r) = redactor(&secrets)? else { return Ok(()) };
        check(&r, &secrets, text.as_bytes(), &cuts)?;
    }
}
