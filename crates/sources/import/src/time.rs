//! Times as the imported formats write them. A time without a zone is converted only with
//! the zone the user named (`--timezone`); it is never assumed to be UTC or local.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, TimeZone, Utc};
use mailaudit_model::Timestamp;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a time zone; use an IANA name such as Europe/Berlin, or UTC, +02:00, -0530")]
pub struct TimeZoneError(pub String);

/// The zone a file's local times were written in. A named zone follows its daylight-saving
/// rules, so a year of Exchange CSV written in Berlin converts right on both sides of each
/// change; a fixed offset is for files that were written in one offset throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportZone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl ImportZone {
    pub fn utc() -> Self {
        ImportZone::Named(chrono_tz::UTC)
    }

    fn local(&self, naive: &NaiveDateTime) -> LocalResult<DateTime<Utc>> {
        match self {
            ImportZone::Fixed(z) => z.from_local_datetime(naive).map(|d| d.with_timezone(&Utc)),
            ImportZone::Named(z) => z.from_local_datetime(naive).map(|d| d.with_timezone(&Utc)),
        }
    }
}

impl fmt::Display for ImportZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportZone::Fixed(z) => write!(f, "{z}"),
            ImportZone::Named(z) => write!(f, "{}", z.name()),
        }
    }
}

/// An IANA name (`Europe/Berlin`), or `UTC`, `Z`, `+02:00`, `+0200`, `-05:30`.
pub fn parse_timezone(text: &str) -> Result<ImportZone, TimeZoneError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("gmt")
    {
        return Ok(ImportZone::utc());
    }
    if let Ok(tz) = t.parse::<chrono_tz::Tz>() {
        return Ok(ImportZone::Named(tz));
    }
    parse_offset(t)
        .map(ImportZone::Fixed)
        .ok_or_else(|| TimeZoneError(text.into()))
}

fn parse_offset(t: &str) -> Option<FixedOffset> {
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
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
pub(crate) fn parse_time(text: &str, zone: Option<ImportZone>) -> Result<Timestamp, String> {
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
    match zone.local(&naive) {
        LocalResult::Single(dt) => Ok(to_timestamp(dt)),
        // The hour a clock goes back happens twice; which one the file meant is not
        // written anywhere, and an audit record must not guess.
        LocalResult::Ambiguous(..) => Err(format!(
            "`{t}` happened twice in {zone} (clocks went back); export with UTC offsets"
        )),
        LocalResult::None => Err(format!(
            "`{t}` does not exist in {zone} (clocks went forward)"
        )),
    }
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
        assert_eq!(parse_timezone("UTC").unwrap(), ImportZone::utc());
        let minus = FixedOffset::east_opt(-19800).unwrap();
        assert_eq!(parse_timezone("-05:30").unwrap(), ImportZone::Fixed(minus));
        for bad in ["Mars/Olympus", "+25:00", "2", ""] {
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

    #[test]
    fn a_named_zone_follows_daylight_saving_and_refuses_to_guess() {
        let berlin = parse_timezone("Europe/Berlin").unwrap();
        let winter: Timestamp = "2026-01-15T11:00:00Z".parse().unwrap();
        let summer: Timestamp = "2026-07-01T10:00:00Z".parse().unwrap();
        assert_eq!(
            parse_time("2026-01-15 12:00:00", Some(berlin)).unwrap(),
            winter
        );
        assert_eq!(
            parse_time("07/01/2026 12:00:00 PM", Some(berlin)).unwrap(),
            summer
        );
        let skipped = parse_time("2026-03-29 02:30:00", Some(berlin)).unwrap_err();
        assert!(
            skipped.contains("does not exist in Europe/Berlin"),
            "{skipped}"
        );
        let twice = parse_time("2026-10-25 02:30:00", Some(berlin)).unwrap_err();
        assert!(twice.contains("happened twice in Europe/Berlin"), "{twice}");
    }
}
