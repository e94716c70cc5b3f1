//! What a source saw, before classification and policy. Sources build these; the pipeline
//! turns them into `AuditRecord`s. Parsing JSON reports the exact field that is wrong.

use crate::{Client, Item, Operation, OperationResult, Parameter, Provenance, Timestamp};
use serde::{Deserialize, Serialize};

/// One thing that happened to a mailbox, as a source observed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    pub time: Timestamp,
    pub operation: Operation,
    #[serde(default = "succeeded")]
    pub result: OperationResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mailbox: String,
    pub actor: String,
    /// Set when the actor impersonated another identity (master user, SASL authzid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_as: Option<String>,
    /// The access went through an administrative tool (doveadm, an admin console).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub administrative: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_folder: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
    #[serde(default)]
    pub client: Client,
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
}

fn succeeded() -> OperationResult {
    OperationResult::Succeeded
}

/// Why an observation was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ObservationError {
    /// A JSON path such as `items[2].uid`, or `.` for the whole document.
    pub field: String,
    pub reason: String,
}

/// Longest string accepted in any field. Keeps one record from being megabytes of subject.
pub const MAX_FIELD_LEN: usize = 4096;
/// Most items one record may carry; a larger operation is split by the source.
pub const MAX_ITEMS: usize = 100_000;

/// `s` cut to at most `max` bytes at a character boundary: how sources keep a long subject
/// or Message-ID within `MAX_FIELD_LEN` instead of losing the record to `check`.
pub fn clip(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}
/// How far ahead of mailaudit's clock an observation may claim to be.
pub const MAX_CLOCK_SKEW_SECS: i64 = 24 * 3600;

/// Parses and checks one observation from JSON, naming the field that is wrong.
pub fn parse_observation_json(text: &str, now: Timestamp) -> Result<Observation, ObservationError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let obs: Observation = serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = e.path().to_string();
        // JSON that breaks off before a key is read leaves an unknown segment, shown as `?`:
        // name the enclosing value instead (`.` for the whole document).
        let unknown = e.path().iter().rev();
        for _ in unknown.take_while(|s| matches!(s, serde_path_to_error::Segment::Unknown)) {
            path.pop();
            if path.ends_with('.') {
                path.pop();
            }
        }
        let inner = e.into_inner();
        ObservationError {
            field: if path.is_empty() { ".".into() } else { path },
            reason: inner.to_string(),
        }
    })?;
    obs.check(now)?;
    Ok(obs)
}

impl Observation {
    /// Checks what serde's types cannot: empty names, absurd sizes, times in the future.
    pub fn check(&self, now: Timestamp) -> Result<(), ObservationError> {
        let err = |field: &str, reason: String| ObservationError {
            field: field.to_string(),
            reason,
        };
        if self.time > now.plus_secs(MAX_CLOCK_SKEW_SECS) {
            return Err(err(
                "time",
                format!(
                    "{} is more than 24 hours ahead of this server's clock ({})",
                    self.time, now
                ),
            ));
        }
        for (field, value) in [("mailbox", &self.mailbox), ("actor", &self.actor)] {
            if value.trim().is_empty() {
                return Err(err(field, "must not be empty".into()));
            }
        }
        if self.provenance.source.trim().is_empty() {
            return Err(err("provenance.source", "must not be empty".into()));
        }
        if self.items.len() > MAX_ITEMS {
            return Err(err(
                "items",
                format!("{} items; at most {MAX_ITEMS} per record", self.items.len()),
            ));
        }
        // The field's name is only built when it is needed for an error: this runs on every
        // observation ingested.
        let long = |value: Option<&str>, field: &dyn Fn() -> String| match value {
            Some(v) if v.len() > MAX_FIELD_LEN => Err(err(
                &field(),
                format!("{} bytes; at most {MAX_FIELD_LEN}", v.len()),
            )),
            _ => Ok(()),
        };
        let named = |name: &'static str| move || name.to_string();
        long(Some(&self.mailbox), &named("mailbox"))?;
        long(Some(&self.actor), &named("actor"))?;
        long(self.acting_as.as_deref(), &named("acting_as"))?;
        long(self.reason.as_deref(), &named("reason"))?;
        long(self.folder.as_deref(), &named("folder"))?;
        long(
            self.destination_folder.as_deref(),
            &named("destination_folder"),
        )?;
        long(self.client.name.as_deref(), &named("client.name"))?;
        long(self.client.protocol.as_deref(), &named("client.protocol"))?;
        long(self.client.session.as_deref(), &named("client.session"))?;
        long(self.provenance.host.as_deref(), &named("provenance.host"))?;
        long(
            self.provenance.reference.as_deref(),
            &named("provenance.reference"),
        )?;
        for (i, item) in self.items.iter().enumerate() {
            long(item.message_id.as_deref(), &|| {
                format!("items[{i}].message_id")
            })?;
            long(item.subject.as_deref(), &|| format!("items[{i}].subject"))?;
            long(item.folder.as_deref(), &|| format!("items[{i}].folder"))?;
            long(item.unresolved.as_deref(), &|| {
                format!("items[{i}].unresolved")
            })?;
        }
        for (i, p) in self.parameters.iter().enumerate() {
            if p.value.len() > 16 * MAX_FIELD_LEN {
                return Err(err(
                    &format!("parameters[{i}].value"),
                    format!("{} bytes; at most {}", p.value.len(), 16 * MAX_FIELD_LEN),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("short".into(), 10), "short");
        // "ä" is two bytes: a cut inside it backs off to before it.
        assert_eq!(clip("a\u{e4}b".into(), 2), "a");
        assert_eq!(clip("a\u{e4}b".into(), 3), "a\u{e4}");
    }

    use super::*;

    fn now() -> Timestamp {
        "2026-11-24T12:00:00Z".parse().unwrap()
    }

    const GOOD: &str = r#"{"time":"2026-11-24T10:00:00Z","operation":"MessageBind",
        "mailbox":"alice@example.com","actor":"bob@example.com","folder":"INBOX",
        "items":[{"uid":7,"message_id":"<q1@example.com>","subject":"Quarterly numbers"}],
        "client":{"ip":"192.0.2.7","protocol":"imap"},"provenance":{"source":"api"}}"#;

    #[test]
    fn parses_a_good_observation() {
        let obs = parse_observation_json(GOOD, now()).unwrap();
        assert_eq!(obs.operation, Operation::MessageBind);
        assert_eq!(obs.result, OperationResult::Succeeded);
        assert_eq!(obs.items[0].uid, Some(7));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("MessageBind", "ReadMail"),
                "operation",
                "unknown variant",
            ),
            (
                GOOD.replace("2026-11-24T10:00:00Z", "2026-02-30T10:00:00Z"),
                "time",
                "RFC 3339",
            ),
            (
                GOOD.replace("\"uid\":7", "\"uid\":-1"),
                "items[0].uid",
                "invalid value",
            ),
            (
                GOOD.replace("192.0.2.7", "300.1.1.1"),
                "client.ip",
                "invalid IP",
            ),
            (
                GOOD.replace("\"folder\"", "\"fodler\""),
                "fodler",
                "unknown field",
            ),
            (
                GOOD.replace("2026-11-24T10", "2027-11-24T10"),
                "time",
                "ahead",
            ),
            (
                GOOD.replace("\"alice@example.com\"", "\"  \""),
                "mailbox",
                "empty",
            ),
            (
                GOOD.replace("Quarterly numbers", &"x".repeat(MAX_FIELD_LEN + 1)),
                "items[0].subject",
                "at most 4096",
            ),
            (
                GOOD.replace("bob@example.com", &"b".repeat(MAX_FIELD_LEN + 1)),
                "actor",
                "at most 4096",
            ),
        ];
        for (text, field, reason) in cases {
            let e = parse_observation_json(&text, now()).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(reason), "{e} should mention {reason}");
        }
    }

    #[test]
    fn broken_json_is_an_error_not_a_panic() {
        let e = parse_observation_json(&GOOD[..40], now()).unwrap_err();
        assert!(e.reason.contains("EOF"), "{e}");
    }
}
