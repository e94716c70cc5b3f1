//! Timestamps with microsecond precision, the resolution every store keeps exactly, so that
//! a record read back encodes to the same canonical bytes it was hashed from.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Microseconds since the Unix epoch, UTC. Serialised as RFC 3339 (`2026-11-24T10:00:00.000001Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("not an RFC 3339 timestamp ({0}); expected e.g. 2026-11-24T10:00:00Z")]
    Syntax(String),
    #[error("out of range: before 1970 or after 9999")]
    Range,
}

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    pub fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    pub fn plus_micros(self, us: i64) -> Self {
        Timestamp(self.0.saturating_add(us))
    }

    pub fn plus_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }

    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(self.0).single()
    }

    /// RFC 3339 with microseconds, always `Z`.
    pub fn to_rfc3339(self) -> String {
        match self.to_datetime() {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Micros, true),
            None => format!("@{}us", self.0),
        }
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let dt = DateTime::parse_from_rfc3339(s.trim())
            .map_err(|e| TimestampError::Syntax(e.to_string()))?;
        let us = dt.with_timezone(&Utc).timestamp_micros();
        if us < 0 {
            return Err(TimestampError::Range);
        }
        Ok(Timestamp(us))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_microseconds() {
        let t: Timestamp = "2026-11-24T10:00:00.123456Z".parse().unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-24T10:00:00.123456Z");
        let with_offset: Timestamp = "2026-11-24T11:00:00.123456+01:00".parse().unwrap();
        assert_eq!(with_offset, t);
    }

    #[test]
    fn rejects_impossible_dates() {
        assert!(matches!(
            "2026-02-30T10:00:00Z".parse::<Timestamp>(),
            Err(TimestampError::Syntax(_))
        ));
        assert!(matches!(
            "yesterday".parse::<Timestamp>(),
            Err(TimestampError::Syntax(_))
        ));
        assert_eq!(
            "1969-12-31T23:59:59Z".parse::<Timestamp>(),
            Err(TimestampError::Range)
        );
    }
}
