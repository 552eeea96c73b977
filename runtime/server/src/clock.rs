//! Time: the store keeps microseconds since the Unix epoch; the wire uses Testflinger's ISO forms.

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

fn datetime(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Testflinger's rendering of a stored (naive UTC) datetime: `2025-01-01T12:00:00Z`.
pub fn iso_z(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    datetime(micros).format(&fmt).unwrap_or_default()
}

/// Testflinger's rendering of `started_at` in `GET /v1/job` (a tz-aware datetime passed through
/// `isoformat(timespec="seconds") + "Z"`): `2025-01-01T12:00:00+00:00Z` (reference §7 item 10).
pub fn iso_offset_z(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00Z");
    datetime(micros).format(&fmt).unwrap_or_default()
}

/// Marshmallow's `DateTime` rendering: `2025-01-01T12:00:00.123456+00:00`.
pub fn iso_marshmallow(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00");
    datetime(micros).format(&fmt).unwrap_or_default()
}

/// Parses an ISO 8601 timestamp the way marshmallow's `DateTime` field does: RFC 3339, other
/// ISO 8601 forms, and naive date-times (taken as UTC). Returns microseconds since the epoch.
pub fn parse_iso(text: &str) -> Option<i64> {
    let text = text.trim();
    let parsed = OffsetDateTime::parse(text, &Rfc3339).or_else(|_| OffsetDateTime::parse(text, &Iso8601::DEFAULT)).ok();
    let dt = match parsed {
        Some(dt) => dt,
        None => {
            let naive = format_description!(
                version = 2,
                "[year]-[month]-[day][first [T] [ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
            );
            PrimitiveDateTime::parse(text, &naive).ok()?.assume_offset(UtcOffset::UTC)
        }
    };
    i64::try_from(dt.unix_timestamp_nanos() / 1_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = parse_iso("2025-01-01T12:00:00.123456+00:00").unwrap();
        assert_eq!(iso_z(t), "2025-01-01T12:00:00Z");
        assert_eq!(iso_offset_z(t), "2025-01-01T12:00:00+00:00Z");
        assert_eq!(iso_marshmallow(t), "2025-01-01T12:00:00.123456+00:00");
        assert_eq!(parse_iso("2025-01-01T12:00:00Z"), parse_iso("2025-01-01T12:00:00"));
        assert_eq!(parse_iso("2025-01-01 12:00:00.123456"), Some(t));
        assert_eq!(parse_iso("2025-01-01T14:00:00.123456+02:00"), Some(t));
        assert!(parse_iso("yesterday").is_none());
    }
}
