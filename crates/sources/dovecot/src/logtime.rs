//! The timestamp at the start of a Dovecot log line: `log_timestamp`'s default `Nov 22 13:49:12`
//! (no year), `2026-11-22 13:49:12`, or a syslog RFC 3339 stamp. Pure parsing; it must never
//! panic on any text and never pick a year by itself: the caller passes the reference time.

use chrono::{Datelike, NaiveDate};
use mailaudit_model::Timestamp;

/// A log line's time as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogTime {
    /// The stamp names its year (and maybe its offset; naive stamps are taken as UTC).
    Full(Timestamp),
    /// `Nov 22 13:49:12`: the year must come from context.
    NoYear {
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        micros: u32,
    },
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Splits the leading timestamp off a line: the time and the rest after one space.
pub(crate) fn split_time(line: &str) -> Option<(LogTime, &str)> {
    let head = line.get(..5)?;
    if head.as_bytes().get(..4)?.iter().all(u8::is_ascii_digit) && head.ends_with('-') {
        split_iso(line)
    } else {
        split_syslog(line)
    }
}

/// Resolves a year-less time to the latest candidate year (reference's, or one either side)
/// that does not put the line more than a day after `reference`: logs are read after they
/// are written, so December lines read in January land in the old year, and a January line
/// after a December event lands in the new one.
pub(crate) fn resolve(time: LogTime, reference: Timestamp) -> Option<Timestamp> {
    match time {
        LogTime::Full(t) => Some(t),
        LogTime::NoYear {
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => {
            let ref_year = reference.to_datetime()?.year();
            let latest_allowed = reference.plus_secs(86_400);
            [ref_year + 1, ref_year, ref_year - 1]
                .into_iter()
                .filter_map(|year| build(year, month, day, hour, minute, second, micros, 0))
                .find(|t| *t <= latest_allowed)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
    offset_secs: i64,
) -> Option<Timestamp> {
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_micro_opt(
        hour,
        minute,
        second.min(59),
        micros,
    )?;
    let us = naive
        .and_utc()
        .timestamp_micros()
        .checked_sub(offset_secs.checked_mul(1_000_000)?)?;
    (us >= 0).then_some(Timestamp(us))
}

fn digits(s: &str, min: usize, max: usize) -> Option<u32> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `HH:MM:SS` with an optional `.fraction`; returns (h, m, s, µs).
fn clock(s: &str) -> Option<(u32, u32, u32, u32)> {
    let (hms, frac) = match s.split_once(['.', ',']) {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let mut parts = hms.split(':');
    let h = digits(parts.next()?, 2, 2)?;
    let m = digits(parts.next()?, 2, 2)?;
    let sec = digits(parts.next()?, 2, 2)?;
    if parts.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let micros = match frac {
        None => 0,
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let six: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
            six.parse().ok()?
        }
    };
    Some((h, m, sec, micros))
}

fn split_syslog(line: &str) -> Option<(LogTime, &str)> {
    let month_txt = line.get(..3)?;
    let month = u32::try_from(MONTHS.iter().position(|m| *m == month_txt)?).ok()? + 1;
    let rest = line.get(3..)?.strip_prefix(' ')?.trim_start_matches(' ');
    let (day_txt, rest) = rest.split_once(' ')?;
    let day = digits(day_txt, 1, 2)?;
    let (clock_txt, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (hour, minute, second, micros) = clock(clock_txt)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    Some((
        LogTime::NoYear {
            month,
            day,
            hour,
            minute,
            second,
            micros,
        },
        rest,
    ))
}

/// `2026-11-22 13:49:12[.f]`, `2026-11-22T13:49:12[.f][Z|±HH:MM|±HHMM]`.
fn split_iso(line: &str) -> Option<(LogTime, &str)> {
    let date = line.get(..10)?;
    let mut dp = date.split('-');
    let year = i32::try_from(digits(dp.next()?, 4, 4)?).ok()?;
    let month = digits(dp.next()?, 2, 2)?;
    let day = digits(dp.next()?, 2, 2)?;
    let sep = line.get(10..11)?;
    let after = line.get(11..)?;
    let (time_txt, rest) = after.split_once(' ').unwrap_or((after, ""));
    if sep != "T" && sep != " " {
        return None;
    }
    // Offset: a trailing Z, or +/- after the clock.
    let (clock_txt, offset_secs) = if let Some(c) = time_txt.strip_suffix('Z') {
        (c, 0)
    } else if let Some(pos) = time_txt.rfind(['+', '-']) {
        let (c, zone) = time_txt.split_at(pos);
        let sign: i64 = if zone.starts_with('-') { -1 } else { 1 };
        let z = zone.get(1..)?.replace(':', "");
        let hh = i64::from(digits(z.get(..2)?, 2, 2)?);
        let mm = i64::from(digits(z.get(2..)?, 2, 2)?);
        (c, sign * (hh * 3600 + mm * 60))
    } else {
        (time_txt, 0)
    };
    let (hour, minute, second, micros) = clock(clock_txt)?;
    let t = build(year, month, day, hour, minute, second, micros, offset_secs)?;
    Some((LogTime::Full(t), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn syslog_stamps_take_the_latest_year_not_after_the_reference() {
        let (t, rest) = split_time("Nov 22 13:49:12 imap-login: Info: x").unwrap();
        assert_eq!(rest, "imap-login: Info: x");
        assert_eq!(
            resolve(t, ts("2026-11-22T13:49:12.5Z")),
            Some(ts("2026-11-22T13:49:12Z"))
        );
        // A December line read in January belongs to the previous year, a January line
        // after a December event to the next.
        let (t, _) = split_time("Dec 31 23:59:59 x").unwrap();
        assert_eq!(
            resolve(t, ts("2027-01-01T00:00:03Z")),
            Some(ts("2026-12-31T23:59:59Z"))
        );
        let (t, _) = split_time("Jan  1 00:00:02 x").unwrap();
        assert_eq!(
            resolve(t, ts("2026-12-31T23:59:59Z")),
            Some(ts("2027-01-01T00:00:02Z"))
        );
        // Read from the clock long after: the most recent past Nov 22.
        let (t, _) = split_time("Nov 22 13:49:12 x").unwrap();
        assert_eq!(
            resolve(t, ts("2027-06-01T00:00:00Z")),
            Some(ts("2026-11-22T13:49:12Z"))
        );
        let (t, rest) = split_time("Nov  2 01:02:03.250 master: x").unwrap();
        assert_eq!(rest, "master: x");
        assert_eq!(
            resolve(t, ts("2026-11-02T00:00:00Z")),
            Some(ts("2026-11-02T01:02:03.25Z"))
        );
    }

    #[test]
    fn iso_stamps_carry_their_year_and_offset() {
        let (t, rest) = split_time("2026-11-22 13:49:12 imap: x").unwrap();
        assert_eq!(t, LogTime::Full(ts("2026-11-22T13:49:12Z")));
        assert_eq!(rest, "imap: x");
        let (t, rest) = split_time("2026-11-22T14:49:12.123456+01:00 vm dovecot: x").unwrap();
        assert_eq!(t, LogTime::Full(ts("2026-11-22T13:49:12.123456Z")));
        assert_eq!(rest, "vm dovecot: x");
    }

    #[test]
    fn garbage_is_not_a_time() {
        for s in [
            "",
            "Nov",
            "Nov 2",
            "Foo 22 13:49:12 x",
            "Nov 22 25:00:00 x",
            "Nov 99 13:49:12 x",
            "2026-13-40 10:00:00 x",
            "2026-11-22X10:00:00",
            "2026-11-22T10:00:00+5",
            "é€Nov 22",
        ] {
            let parsed = split_time(s);
            assert!(
                parsed.is_none()
                    || resolve(parsed.unwrap().0, ts("2026-01-01T00:00:00Z")).is_none(),
                "{s:?}"
            );
        }
    }
}
