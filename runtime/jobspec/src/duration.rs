//! Durations in whole seconds, written as integers or as strings like `2h30m`.
//!
//! The grammar is Testflinger's (`common/src/testflinger_common/duration.py`, spec §1.4), so one
//! parser serves both `reserve_data.timeout` and phasebox's own timeouts:
//!
//! * a non-negative integer (seconds), or a string holding one (`"3600"`, `"+5"`, `"1_000"`);
//! * or a string that is a sequence of `<digits><unit>` with optional whitespace anywhere
//!   between the tokens (not inside a number or unit), units `s`/`sec`/`secs`, `m`/`min`/`mins`,
//!   `h`/`hour`/`hours`, `d`/`day`/`days`; case-insensitive; units may repeat and are summed
//!   (`1h1h` is 7200), as in Testflinger;
//! * the whole string must be consumed; empty and negative (`-…`) strings are rejected.
//!
//! [`format_duration`] writes the canonical form (`1d2h3m4s`, `0s`), which parses back to the
//! same number of seconds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time in whole seconds.
///
/// Serialises as an integer number of seconds (the form Testflinger stores); deserialises from
/// an integer or a duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    secs: u64,
}

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration { secs }
    }

    /// The number of seconds.
    pub const fn as_secs(self) -> u64 {
        self.secs
    }

    /// As a [`std::time::Duration`].
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }

    /// Parses a duration string (see the [module docs](self) for the grammar).
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        parse_duration(text).map(Duration::from_secs)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.to_std()
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.secs))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.secs)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(secs) => Ok(Duration::from_secs(secs)),
            Raw::Text(text) => Duration::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl DurationError {
    fn new(input: &str, reason: &'static str) -> Self {
        DurationError { input: input.to_owned(), reason }
    }

    /// The text that was rejected.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Why, in a few words.
    pub fn reason(&self) -> &str {
        self.reason
    }
}

const UNITS: &[(&str, u64)] = &[
    ("secs", 1),
    ("sec", 1),
    ("s", 1),
    ("mins", 60),
    ("min", 60),
    ("m", 60),
    ("hours", 3600),
    ("hour", 3600),
    ("h", 3600),
    ("days", 86400),
    ("day", 86400),
    ("d", 86400),
];

const EXPECTED: &str = "expected seconds or <number><unit>... with units s, m, h, d (e.g. 90s, 45m, 2h30m, 1d2h)";

/// Parses a duration string into seconds (see the [module docs](self)).
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let lowered = text.trim().to_ascii_lowercase();
    let s = lowered.as_str();
    if s.is_empty() {
        return Err(DurationError::new(text, "a duration cannot be empty"));
    }
    if s.starts_with('-') {
        return Err(DurationError::new(text, "a duration cannot be negative"));
    }
    if let Some(v) = crate::fields::python_int(s) {
        return u64::try_from(v).map_err(|_| DurationError::new(text, "too large"));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    let mut tokens = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(DurationError::new(text, EXPECTED));
        }
        let number: u64 = s[start..i].parse().map_err(|_| DurationError::new(text, "too large"))?;
        skip_ws(&mut i);
        let rest = &s[i..];
        let Some((unit, factor)) = UNITS.iter().find(|(u, _)| {
            rest.starts_with(u) && !rest[u.len()..].bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        }) else {
            return Err(DurationError::new(text, EXPECTED));
        };
        i += unit.len();
        total = number
            .checked_mul(*factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::new(text, "too large"))?;
        tokens += 1;
    }
    if tokens == 0 {
        return Err(DurationError::new(text, EXPECTED));
    }
    Ok(total)
}

/// Writes seconds in the canonical form: `0s`, `90` → `1m30s`, `9000` → `2h30m`, `93600` → `1d2h`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut rest = secs;
    let mut out = String::new();
    for (divisor, suffix) in [(86400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= divisor {
            out.push_str(&(rest / divisor).to_string());
            out.push(suffix);
            rest %= divisor;
        }
    }
    out
}
