//! Parses one Dovecot 2.3 exported event (`format = json`, as the `http-post` transport POSTs it
//! and the `log` transport writes it) into typed values. Pure parsing: it decides nothing about
//! audit operations, must never panic on any text, and treats every field as optional except
//! the event's name and one of its timestamps.

use mailaudit_model::Timestamp;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// Why a text is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventError {
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    NotAnEvent(String),
}

/// What every event may say about where and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Common {
    /// `end_time`, else `start_time`: when Dovecot finished (and exported) it.
    pub time: Timestamp,
    pub start: Option<Timestamp>,
    pub host: Option<String>,
    pub session: Option<String>,
    pub user: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// `service` (auth), `protocol` (lmtp) or a `service:NAME` category.
    pub service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthEvent {
    pub c: Common,
    pub success: bool,
    pub mechanism: Option<String>,
    pub original_user: Option<String>,
    pub master_user: Option<String>,
    pub login_user: Option<String>,
    pub error: Option<String>,
    /// `insecure`, `trusted`/`secured` (plaintext from a trusted network) or `TLS`.
    pub transport: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImapCommandEvent {
    pub c: Common,
    /// Upper-cased, e.g. `UID MOVE`.
    pub cmd_name: String,
    pub args: String,
    pub human_args: Option<String>,
    pub reply_state: Option<String>,
    pub reply: Option<String>,
    pub mailbox: Option<String>,
    pub old_mailbox: Option<String>,
    pub new_mailbox: Option<String>,
    pub reason_codes: Vec<String>,
}

/// `mail_opened`, `mail_expunged`, `mail_expunge_requested`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MailEvent {
    pub c: Common,
    pub mailbox: Option<String>,
    pub uid: Option<u32>,
    pub cmd_name: Option<String>,
    pub reason_codes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryEvent {
    pub c: Common,
    pub rcpt_to: Option<String>,
    pub mail_from: Option<String>,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub message_from: Option<String>,
    pub size: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SieveEvent {
    pub c: Common,
    pub cmd_name: String,
    pub args: String,
    pub script_name: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Auth(Box<AuthEvent>),
    ImapCommand(Box<ImapCommandEvent>),
    MailOpened(Box<MailEvent>),
    MailExpunged(Box<MailEvent>),
    MailExpungeRequested(Box<MailEvent>),
    Delivery(Box<DeliveryEvent>),
    Sieve(Box<SieveEvent>),
    /// A well-formed event this source has no use for.
    Other {
        name: String,
        time: Timestamp,
    },
}

/// A JSON value read leniently and without building a tree: strings stay borrowed from the
/// text where they can, and a field of an unexpected type is kept as `Other` (absent to the
/// getters below) rather than failing the whole event.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Null,
    Other,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// A list of strings (`categories`, `reason_code`); a single string is a list of one, and
/// anything else an empty list.
#[derive(Debug, Default)]
struct StrList<'a>(Vec<Cow<'a, str>>);

struct StrListVisitor;

impl<'de> Visitor<'de> for StrListVisitor {
    type Value = StrList<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Scalar<'de>>()? {
            if let Scalar::Str(s) = v {
                out.push(s);
            }
        }
        Ok(StrList(out))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(StrList(vec![Cow::Borrowed(v)]))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(StrList(vec![Cow::Owned(v.to_string())]))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(StrList::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(StrList::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(StrList::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(StrList::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(StrList::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(StrList::default())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrListVisitor)
    }
}

/// The fields this source reads; every other field is skipped without being built.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawFields<'a> {
    #[serde(borrow)]
    service: Option<Scalar<'a>>,
    #[serde(borrow)]
    protocol: Option<Scalar<'a>>,
    #[serde(borrow)]
    session: Option<Scalar<'a>>,
    #[serde(borrow)]
    user: Option<Scalar<'a>>,
    #[serde(borrow)]
    remote_ip: Option<Scalar<'a>>,
    #[serde(borrow)]
    remote_port: Option<Scalar<'a>>,
    #[serde(borrow)]
    success: Option<Scalar<'a>>,
    #[serde(borrow)]
    mechanism: Option<Scalar<'a>>,
    #[serde(borrow)]
    original_user: Option<Scalar<'a>>,
    #[serde(borrow)]
    master_user: Option<Scalar<'a>>,
    #[serde(borrow)]
    login_user: Option<Scalar<'a>>,
    #[serde(borrow)]
    error: Option<Scalar<'a>>,
    #[serde(borrow)]
    transport: Option<Scalar<'a>>,
    #[serde(borrow)]
    cmd_name: Option<Scalar<'a>>,
    #[serde(borrow)]
    cmd_input_name: Option<Scalar<'a>>,
    #[serde(borrow)]
    cmd_args: Option<Scalar<'a>>,
    #[serde(borrow)]
    cmd_human_args: Option<Scalar<'a>>,
    #[serde(borrow)]
    tagged_reply_state: Option<Scalar<'a>>,
    #[serde(borrow)]
    tagged_reply: Option<Scalar<'a>>,
    #[serde(borrow)]
    mailbox: Option<Scalar<'a>>,
    #[serde(borrow)]
    old_mailbox: Option<Scalar<'a>>,
    #[serde(borrow)]
    new_mailbox: Option<Scalar<'a>>,
    #[serde(borrow)]
    reason_code: Option<StrList<'a>>,
    #[serde(borrow)]
    uid: Option<Scalar<'a>>,
    #[serde(borrow)]
    rcpt_to: Option<Scalar<'a>>,
    #[serde(borrow)]
    mail_from: Option<Scalar<'a>>,
    #[serde(borrow)]
    message_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    message_subject: Option<Scalar<'a>>,
    #[serde(borrow)]
    message_from: Option<Scalar<'a>>,
    #[serde(borrow)]
    message_size: Option<Scalar<'a>>,
    #[serde(borrow)]
    script_name: Option<Scalar<'a>>,
}

/// `fields` as it was found: absent, an object, or something else (an error).
#[derive(Debug, Default)]
enum FieldsValue<'a> {
    #[default]
    Absent,
    Object(Box<RawFields<'a>>),
    NotObject,
}

impl<'de: 'a, 'a> Deserialize<'de> for FieldsValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldsValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the event's fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawFields::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|f| FieldsValue::Object(Box::new(f)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FieldsValue::NotObject)
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(FieldsValue::NotObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(FieldsValue::NotObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(FieldsValue::NotObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(FieldsValue::NotObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(FieldsValue::NotObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(FieldsValue::NotObject)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(FieldsValue::Absent)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawEvent<'a> {
    #[serde(borrow)]
    event: Option<Scalar<'a>>,
    #[serde(borrow)]
    hostname: Option<Scalar<'a>>,
    #[serde(borrow)]
    start_time: Option<Scalar<'a>>,
    #[serde(borrow)]
    end_time: Option<Scalar<'a>>,
    #[serde(borrow)]
    categories: Option<StrList<'a>>,
    #[serde(borrow)]
    fields: FieldsValue<'a>,
}

/// Parses the JSON text of one event.
pub(crate) fn parse_event(text: &str) -> Result<Event, EventError> {
    let text = text.trim();
    if !text.starts_with('{') {
        // Anything but an object is no event; a broken one is a JSON error (below).
        if serde_json::from_str::<IgnoredAny>(text).is_ok() {
            return Err(EventError::NotAnEvent("not a JSON object".into()));
        }
    }
    let raw: RawEvent<'_> = serde_json::from_str(text).map_err(|e| EventError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let name = match &raw.event {
        Some(Scalar::Str(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => return Err(EventError::NotAnEvent("\"event\" is not a name".into())),
        None => return Err(EventError::NotAnEvent("no \"event\" field".into())),
    };
    let empty = RawFields::default();
    let fields = match &raw.fields {
        FieldsValue::Object(m) => m.as_ref(),
        FieldsValue::Absent => &empty,
        FieldsValue::NotObject => {
            return Err(EventError::NotAnEvent("\"fields\" is not an object".into()))
        }
    };
    let start = time_value(raw.start_time.as_ref(), "start_time")?;
    let end = time_value(raw.end_time.as_ref(), "end_time")?;
    let Some(time) = end.or(start) else {
        return Err(EventError::NotAnEvent(format!(
            "event {name} has neither start_time nor end_time"
        )));
    };
    let host = match &raw.hostname {
        Some(Scalar::Str(s)) if !s.is_empty() => Some(s.to_string()),
        _ => None,
    };
    let f = fields;
    let service = text_of(&f.service)
        .or_else(|| text_of(&f.protocol))
        .or_else(|| {
            raw.categories.as_ref().and_then(|c| {
                c.0.iter()
                    .find_map(|c| c.strip_prefix("service:").map(str::to_string))
            })
        });
    let c = Common {
        time,
        start,
        host,
        session: text_of(&f.session),
        user: text_of(&f.user),
        ip: text_of(&f.remote_ip).and_then(|s| s.parse().ok()),
        port: int_of(&f.remote_port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
        service,
    };
    Ok(match name.as_str() {
        "auth_request_finished" => Event::Auth(Box::new(AuthEvent {
            success: text_of(&f.success).is_some_and(|s| s == "yes" || s == "true"),
            mechanism: text_of(&f.mechanism),
            original_user: text_of(&f.original_user),
            master_user: text_of(&f.master_user),
            login_user: text_of(&f.login_user),
            error: text_of(&f.error),
            transport: text_of(&f.transport),
            c,
        })),
        "imap_command_finished" => Event::ImapCommand(Box::new(ImapCommandEvent {
            cmd_name: text_of(&f.cmd_name)
                .or_else(|| text_of(&f.cmd_input_name))
                .unwrap_or_default()
                .to_ascii_uppercase(),
            args: text_of(&f.cmd_args).unwrap_or_default(),
            human_args: text_of(&f.cmd_human_args),
            reply_state: text_of(&f.tagged_reply_state),
            reply: text_of(&f.tagged_reply),
            mailbox: text_of(&f.mailbox),
            old_mailbox: text_of(&f.old_mailbox),
            new_mailbox: text_of(&f.new_mailbox),
            reason_codes: list_of(&f.reason_code),
            c,
        })),
        "mail_opened" | "mail_expunged" | "mail_expunge_requested" => {
            let m = Box::new(MailEvent {
                mailbox: text_of(&f.mailbox),
                uid: int_of(&f.uid)
                    .and_then(|u| u32::try_from(u).ok())
                    .filter(|u| *u != 0),
                cmd_name: text_of(&f.cmd_name).map(|s| s.to_ascii_uppercase()),
                reason_codes: list_of(&f.reason_code),
                c,
            });
            match name.as_str() {
                "mail_opened" => Event::MailOpened(m),
                "mail_expunged" => Event::MailExpunged(m),
                _ => Event::MailExpungeRequested(m),
            }
        }
        "mail_delivery_finished" => Event::Delivery(Box::new(DeliveryEvent {
            rcpt_to: text_of(&f.rcpt_to),
            mail_from: text_of(&f.mail_from),
            message_id: text_of(&f.message_id),
            subject: text_of(&f.message_subject),
            message_from: text_of(&f.message_from),
            size: int_of(&f.message_size).and_then(|s| u64::try_from(s).ok()),
            error: text_of(&f.error),
            c,
        })),
        "managesieve_command_finished" => Event::Sieve(Box::new(SieveEvent {
            cmd_name: text_of(&f.cmd_name)
                .unwrap_or_default()
                .to_ascii_uppercase(),
            args: text_of(&f.cmd_args).unwrap_or_default(),
            script_name: text_of(&f.script_name),
            error: text_of(&f.error),
            c,
        })),
        _ => Event::Other { name, time },
    })
}

/// An RFC 3339 string (`format_args = time-rfc3339`) or float seconds (`time-unix`).
fn time_value(v: Option<&Scalar<'_>>, what: &str) -> Result<Option<Timestamp>, EventError> {
    let secs = match v {
        None | Some(Scalar::Null) => return Ok(None),
        Some(Scalar::Str(s)) => {
            return s
                .parse::<Timestamp>()
                .map(Some)
                .map_err(|e| EventError::NotAnEvent(format!("{what}: {e}")))
        }
        Some(Scalar::Int(n)) => *n as f64,
        Some(Scalar::UInt(n)) => *n as f64,
        Some(Scalar::Float(n)) => *n,
        Some(Scalar::Other) => return Err(EventError::NotAnEvent(format!("{what} is not a time"))),
    };
    // 0 ..= 9999-12-31T23:59:59Z
    if !(0.0..=253_402_300_799.0).contains(&secs) {
        return Err(EventError::NotAnEvent(format!(
            "{what}: {secs} is not a time"
        )));
    }
    #[allow(clippy::cast_possible_truncation)]
    let us = (secs * 1_000_000.0).round() as i64;
    Ok(Some(Timestamp(us)))
}

/// A field as text: a string, or a number written out; other types are absent.
fn text_of(v: &Option<Scalar<'_>>) -> Option<String> {
    match v.as_ref()? {
        Scalar::Str(s) => Some(s.to_string()),
        Scalar::Int(n) => Some(n.to_string()),
        Scalar::UInt(n) => Some(n.to_string()),
        Scalar::Float(n) => Some(n.to_string()),
        Scalar::Null | Scalar::Other => None,
    }
}

/// A field as an integer: a whole number, or a string holding one.
fn int_of(v: &Option<Scalar<'_>>) -> Option<i64> {
    match v.as_ref()? {
        Scalar::Int(n) => Some(*n),
        Scalar::UInt(n) => i64::try_from(*n).ok(),
        Scalar::Str(s) => s.trim().parse().ok(),
        Scalar::Float(_) | Scalar::Null | Scalar::Other => None,
    }
}

fn list_of(v: &Option<StrList<'_>>) -> Vec<String> {
    v.as_ref()
        .map(|l| l.0.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_auth_event_parses() {
        let text = r#"{"event":"auth_request_finished","hostname":"vm","start_time":"2026-11-22T13:49:12.317119Z","end_time":"2026-11-22T13:49:12.364104Z","categories":["service:auth","auth"],"fields":{"duration":46897,"success":"yes","mechanism":"PLAIN","transport":"trusted","service":"imap","session":"fzwFvt1gSM5/AAAB","remote_ip":"127.0.0.1","remote_port":52808,"original_user":"postmaster","user":"carol","login_user":"","master_user":"postmaster"}}"#;
        let Ok(Event::Auth(a)) = parse_event(text) else {
            panic!("not an auth event");
        };
        assert!(a.success);
        assert_eq!(a.c.time, "2026-11-22T13:49:12.364104Z".parse().unwrap());
        assert_eq!(a.c.session.as_deref(), Some("fzwFvt1gSM5/AAAB"));
        assert_eq!(a.c.port, Some(52808));
        assert_eq!(a.c.service.as_deref(), Some("imap"));
        assert_eq!(a.master_user.as_deref(), Some("postmaster"));
        assert_eq!(a.login_user.as_deref(), Some(""));
    }

    #[test]
    fn unix_times_and_missing_pieces() {
        let e = parse_event(r#"{"event":"x","end_time":1700000000.5}"#).unwrap();
        assert_eq!(
            e,
            Event::Other {
                name: "x".into(),
                time: Timestamp(1_700_000_000_500_000)
            }
        );
        assert!(matches!(
            parse_event(r#"{"event":"x"}"#),
            Err(EventError::NotAnEvent(_))
        ));
        assert!(matches!(
            parse_event(r#"{"event":"x","end_time":-5}"#),
            Err(EventError::NotAnEvent(_))
        ));
        assert!(matches!(
            parse_event(r#"{"event":"x","end_time":"yesterday"}"#),
            Err(EventError::NotAnEvent(_))
        ));
        assert!(matches!(parse_event("[1]"), Err(EventError::NotAnEvent(_))));
        assert!(matches!(
            parse_event(r#"{"event":"x","#),
            Err(EventError::Json { .. })
        ));
    }
}
