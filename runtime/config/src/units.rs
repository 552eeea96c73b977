//! Durations and sizes as operators write them in configuration files, plugin manifests and
//! sandbox policies.
//!
//! **Durations**: a number of seconds (`90`, `0.5`), or one or more `<number><unit>` parts with
//! units `ms`, `s`, `m`, `h`, `d`, optionally separated by spaces (`"500ms"`, `"1.5s"`,
//! `"2h30m"`, `"1m 30s"`). Numbers may have a decimal fraction; the value is exact to the
//! nanosecond (no floating point). Empty, negative and overflowing values are errors.
//!
//! **Sizes**: a number of bytes (`1048576`), or a whole number with `B`, `KiB`, `MiB`, `GiB`
//! (`K`, `M`, `G` are the same binary units): `"64MiB"`, `"1 GiB"`.
//!
//! [`format_duration`] and [`format_size`] write the canonical form, which parses back to the
//! same value. The serde adapters ([`serde_duration`], [`serde_size`]) read a number or a text
//! and write the canonical text.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration (see the [module docs](self) for the grammar).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("a duration is empty".into());
    }
    let invalid = || format!("`{s}` is not a duration like `90`, `1.5s`, `15m` or `2h30m`");
    let mut nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(invalid());
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            // A bare number is seconds, and only as the whole text.
            "" if number_len == s.len() => NANOS_PER_SEC,
            "" => return Err(format!("`{s}`: a unit (ms, s, m, h or d) must follow {number}")),
            "ms" => NANOS_PER_SEC / 1000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "d" => 86_400 * NANOS_PER_SEC,
            other => return Err(format!("`{s}`: unknown unit `{other}` (use ms, s, m, h or d)")),
        };
        let part = decimal_times(number, unit_nanos).ok_or_else(invalid)?;
        nanos = nanos.checked_add(part).ok_or_else(|| format!("`{s}`: duration too large"))?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| format!("`{s}`: duration too large"))?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// `number` (digits with at most one `.`) times `unit`, truncated to a whole number; `None` when
/// the number is malformed or the product overflows.
fn decimal_times(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 9 {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
    whole.checked_mul(unit)?.checked_add(fraction.checked_mul(unit)? / scale)
}

/// Formats a duration the way [`parse_duration`] reads it: `0s`, `1d2h3m4s`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        let fraction = format!("{:09}", d.subsec_nanos());
        return format!("{}.{}s", d.as_secs(), fraction.trim_end_matches('0'));
    }
    if d.subsec_millis() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Parses a size (see the [module docs](self) for the grammar).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size like `64MiB` or `1GiB`"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}`: size too large"))
}

/// Formats a size the way [`parse_size`] reads it: `64MiB`, `1000B`.
pub fn format_size(n: u64) -> String {
    for (unit, len) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= len && n.is_multiple_of(len) {
            return format!("{}{unit}", n / len);
        }
    }
    format!("{n}B")
}

/// serde adapters for a [`Duration`] field, so a file can write `timeout = "2h30m"`,
/// `timeout = 90` or `timeout = 0.5`: `#[serde(with = "phasebox_config::units::serde_duration")]`.
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Fraction(f64),
        Text(String),
    }

    /// Writes a duration as its canonical text, e.g. `"2h30m"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Reads whole or fractional seconds, or a duration text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Fraction(f) => Duration::try_from_secs_f64(f)
                .map_err(|_| D::Error::custom(format!("{f} is not a number of seconds a duration can hold"))),
            Raw::Text(t) => super::parse_duration(&t).map_err(D::Error::custom),
        }
    }
}

/// serde adapters for a size field in bytes, so a file can write `memory = "256MiB"` or
/// `memory = 268435456`: `#[serde(with = "phasebox_config::units::serde_size")]`.
pub mod serde_size {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }

    /// Writes a size as its canonical text, e.g. `"64MiB"`.
    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_size(*n))
    }

    /// Reads bytes or a size text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(t) => super::parse_size(&t).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_documented_form() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("90", ms(90_000)),
            ("0.5", ms(500)),
            ("90s", ms(90_000)),
            ("1.5s", ms(1_500)),
            ("500ms", ms(500)),
            ("15m", ms(900_000)),
            ("2h30m", ms(9_000_000)),
            ("1m 30s", ms(90_000)),
            ("1d2h", ms(93_600_000)),
            (" 10s ", ms(10_000)),
            (".25s", ms(250)),
            ("0.000000001s", Duration::from_nanos(1)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn malformed_durations_are_refused_with_the_text() {
        for bad in ["", "h", "2x", "-3s", "1.2.3s", "5 m", "10 20s", "1m-", "ten", ".s", "99999999999999999999d"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains(bad.trim()), "{bad:?}: {error}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for d in [0, 1, 59, 61, 3_600, 9_000, 93_600] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        for d in [Duration::from_millis(1_500), Duration::from_millis(250), Duration::from_micros(1_500)] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{}", format_duration(d));
        }
        assert_eq!(format_duration(Duration::from_secs(9_000)), "2h30m");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn serde_reads_numbers_and_texts() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct Limits {
            #[serde(with = "serde_duration")]
            timeout: Duration,
            #[serde(with = "serde_size")]
            memory: u64,
        }
        for (text, timeout) in [("timeout = 90", 90_000), ("timeout = 0.5", 500), ("timeout = \"1m30s\"", 90_000)] {
            let limits: Limits = toml::from_str(&format!("{text}\nmemory = \"64MiB\"")).unwrap();
            assert_eq!(limits.timeout, Duration::from_millis(timeout));
            assert_eq!(limits.memory, 64 << 20);
        }
        let written = toml::to_string(&Limits { timeout: Duration::from_secs(90), memory: 1 << 30 }).unwrap();
        assert_eq!(written, "timeout = \"1m30s\"\nmemory = \"1GiB\"\n");
        let error = toml::from_str::<Limits>("timeout = \"-1s\"\nmemory = 1").err().unwrap().to_string();
        assert!(error.contains("-1s"), "{error}");
    }
}
