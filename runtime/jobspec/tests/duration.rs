//! Duration parsing and formatting.

use phasebox_jobspec::duration::{format_duration, parse_duration};
use phasebox_jobspec::{Duration, JobSpec};
use proptest::prelude::*;

#[test]
fn parse_table() {
    for (text, secs) in [
        ("90s", 90),
        ("1h", 3600),
        ("45m", 2700),
        ("2h30m", 9000),
        ("1d2h", 93600),
        ("2d5h30m", 192_600),
        ("3600", 3600),
        ("0", 0),
        ("0s", 0),
        ("+5", 5),
        ("1_000", 1000),
        ("  1H 30M ", 5400),
        ("30sec", 30),
        ("30secs", 30),
        ("5 mins", 300),
        ("5min", 300),
        ("1 hour", 3600),
        ("3hours", 10_800),
        ("2days", 172_800),
        ("1day", 86_400),
        ("1h1h", 7200),
        ("1d 2h 3m 4s", 93_784),
    ] {
        assert_eq!(parse_duration(text), Ok(secs), "{text:?}");
        assert_eq!(text.parse::<Duration>().map(Duration::as_secs), Ok(secs), "{text:?}");
    }
}

#[test]
fn parse_errors() {
    for text in [
        "",
        "   ",
        "-30",
        "-30m",
        "invalid",
        "h",
        "1h30",
        "1ms",
        "1.5h",
        "1 000",
        "5minutes",
        "1w",
        "1h-30m",
        "99999999999999999999",
        "999999999999999999d",
        "18446744073709551615s1s",
    ] {
        let err = parse_duration(text).expect_err(text);
        assert_eq!(err.input(), text);
        assert!(err.to_string().starts_with("invalid duration"), "{err}");
    }
}

#[test]
fn format_table() {
    for (secs, text) in [
        (0, "0s"),
        (59, "59s"),
        (90, "1m30s"),
        (3600, "1h"),
        (9000, "2h30m"),
        (93_600, "1d2h"),
        (93_784, "1d2h3m4s"),
        (86_401, "1d1s"),
    ] {
        assert_eq!(format_duration(secs), text);
        assert_eq!(Duration::from_secs(secs).to_string(), text);
    }
}

#[test]
fn serde_forms() {
    let d: Duration = serde_json::from_str("\"2h30m\"").unwrap();
    assert_eq!(d.as_secs(), 9000);
    let d: Duration = serde_json::from_str("90").unwrap();
    assert_eq!(d.to_std(), std::time::Duration::from_secs(90));
    assert_eq!(serde_json::to_string(&Duration::from_secs(9000)).unwrap(), "9000");
    assert!(serde_json::from_str::<Duration>("\"soon\"").is_err());
}

#[test]
fn duration_errors_name_the_field() {
    let err = JobSpec::from_yaml("job_queue: q\nallocate_data:\n  phasebox:\n    output_timeout: 1w\n").unwrap_err();
    assert_eq!(err.path(), "allocate_data.phasebox.output_timeout");
    assert!(
        err.to_string()
            .starts_with("allocate_data.phasebox.output_timeout at line 4, column 21: invalid duration \"1w\""),
        "{err}"
    );
}

fn unit() -> impl Strategy<Value = (&'static str, u64)> {
    prop::sample::select(vec![
        ("s", 1),
        ("sec", 1),
        ("secs", 1),
        ("m", 60),
        ("min", 60),
        ("mins", 60),
        ("h", 3600),
        ("hour", 3600),
        ("hours", 3600),
        ("d", 86_400),
        ("day", 86_400),
        ("days", 86_400),
    ])
}

proptest! {
    #[test]
    fn format_then_parse_round_trips(secs in any::<u64>()) {
        let text = format_duration(secs);
        prop_assert_eq!(parse_duration(&text), Ok(secs));
        prop_assert_eq!(text.parse::<Duration>().unwrap(), Duration::from_secs(secs));
    }

    #[test]
    fn parse_then_format_is_canonical(
        parts in prop::collection::vec((0u64..100_000, unit(), " {0,2}", any::<bool>()), 1..6)
    ) {
        let mut text = String::new();
        let mut want = 0u64;
        for (n, (unit, factor), space, upper) in &parts {
            let unit = if *upper { unit.to_ascii_uppercase() } else { unit.to_string() };
            text.push_str(&format!("{n}{space}{unit}{space}"));
            want += n * factor;
        }
        let secs = parse_duration(&text).unwrap();
        prop_assert_eq!(secs, want);
        prop_assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
    }

    #[test]
    fn plain_seconds_parse(secs in any::<u64>()) {
        prop_assert_eq!(parse_duration(&secs.to_string()), Ok(secs));
    }
}
