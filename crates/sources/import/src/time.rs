//! Times as the imported formats write them. A time without a zone is converted only with
//! the zone the user named (`--timezone`); it is never assumed to be UTC or local.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use mailaudit_model::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a time zone offset; use UTC, Z, +02:00 or -0530")]
pub struct TimeZoneError(pub String);

/// `UTC`, `Z`, `+02:00`, `+0200`, `-05:30`.
pub fn parse_timezone(text: &str) -> Result<FixedOffset, TimeZoneError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("gmt")
    {
        return FixedOffset::east_opt(0).ok_or_else(|| TimeZoneError(text.into()));
    }
    let err = || TimeZoneError(text.into());
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(err()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let hours: i32 = digits[..2].parse().map_err(|_| err())?;
    let minutes: i32 = digits[2..].parse().map_err(|_| err())?;
    if hours > 14 || minutes > 59 {
        return Err(err());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(err)
}

fn to_timestamp(dt: DateTime<Utc>) -> Timestamp {
    Timestamp::from_micros(dt.timestamp_micros())
}

/// Formats without a zone that Exchange and PowerShell write, in en-US and ISO order.
const LOCAL_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %I:%M %p",
];

/// A time that may or may not carry its zone. Naive times need `zone`.
pub(crate) fn parse_time(text: &str, zone: Option<FixedOffset>) -> Result<Timestamp, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the time is empty".into());
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(to_timestamp(dt.with_timezone(&Utc)));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%m/%d/%Y %I:%M:%S %p %:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, f) {
            return Ok(to_timestamp(dt.with_timezone(&Utc)));
        }
    }
    let naive = LOCAL_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        .ok_or_else(|| {
            format!("`{t}` is not a time this importer reads (ISO 8601 or M/d/yyyy h:mm:ss AM/PM)")
        })?;
    let zone = zone.ok_or_else(|| {
        format!("`{t}` has no time zone; pass --timezone with the offset the file was written in")
    })?;
    zone.from_local_datetime(&naive)
        .single()
        .map(|dt| to_timestamp(dt.with_timezone(&Utc)))
        .ok_or_else(|| format!("`{t}` does not exist in {zone}"))
}

/// A time the format defines as UTC although it does not say so (Microsoft 365's
/// `CreationTime`, IIS W3C `date` + `time`).
pub(crate) fn parse_utc(text: &str) -> Result<Timestamp, String> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(to_timestamp(dt.with_timezone(&Utc)));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(to_timestamp(naive.and_utc()));
        }
    }
    Err(format!("`{t}` is not an ISO 8601 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_and_local_times() {
        let plus2 = parse_timezone("+02:00").unwrap();
        assert_eq!(parse_timezone("+0200").unwrap(), plus2);
        assert_eq!(parse_timezone("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_timezone("-05:30").unwrap().local_minus_utc(), -19800);
        for bad in ["Europe/Paris", "+25:00", "2", ""] {
            assert!(parse_timezone(bad).is_err(), "{bad}");
        }
        let utc: Timestamp = "2009-10-12T21:27:49Z".parse().unwrap();
        assert_eq!(
            parse_time("10/12/2009 11:27:49 PM", Some(plus2)).unwrap(),
            utc
        );
        assert_eq!(parse_time("2009-10-12 23:27:49", Some(plus2)).unwrap(), utc);
        assert_eq!(parse_time("2009-10-12T23:27:49+02:00", None).unwrap(), utc);
        let e = parse_time("10/12/2009 11:27:49 PM", None).unwrap_err();
        assert!(e.contains("--timezone"), "{e}");
        assert!(parse_time("yesterday", Some(plus2))
            .unwrap_err()
            .contains("not a time"));
        assert_eq!(parse_utc("2009-10-12T21:27:49").unwrap(), utc);
        assert_eq!(parse_utc("2009-10-12 21:27:49").unwrap(), utc);
    }
}
