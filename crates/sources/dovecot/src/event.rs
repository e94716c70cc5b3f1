//! Parses one Dovecot 2.3 exported event (`format = json`, as the `http-post` transport POSTs it
//! and the `log` transport writes it) into typed values. Pure parsing: it decides nothing about
//! audit operations, must never panic on any text, and treats every field as optional except
//! the event's name and one of its timestamps.

use mailaudit_model::Timestamp;
use serde_json::{Map, Value};
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

/// Parses the JSON text of one event.
pub(crate) fn parse_event(text: &str) -> Result<Event, EventError> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| EventError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Object(obj) = value else {
        return Err(EventError::NotAnEvent("not a JSON object".into()));
    };
    let name = match obj.get("event") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => return Err(EventError::NotAnEvent("\"event\" is not a name".into())),
        None => return Err(EventError::NotAnEvent("no \"event\" field".into())),
    };
    let empty = Map::new();
    let fields = match obj.get("fields") {
        Some(Value::Object(m)) => m,
        None => &empty,
        Some(_) => return Err(EventError::NotAnEvent("\"fields\" is not an object".into())),
    };
    let start = time_value(obj.get("start_time"), "start_time")?;
    let end = time_value(obj.get("end_time"), "end_time")?;
    let Some(time) = end.or(start) else {
        return Err(EventError::NotAnEvent(format!(
            "event {name} has neither start_time nor end_time"
        )));
    };
    let categories: Vec<String> = match obj.get("categories") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let host = match obj.get("hostname") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let f = Fields(fields);
    let service = f.str("service").or_else(|| f.str("protocol")).or_else(|| {
        categories
            .iter()
            .find_map(|c| c.strip_prefix("service:").map(str::to_string))
    });
    let c = Common {
        time,
        start,
        host,
        session: f.str("session"),
        user: f.str("user"),
        ip: f.str("remote_ip").and_then(|s| s.parse().ok()),
        port: f
            .int("remote_port")
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
        service,
    };
    Ok(match name.as_str() {
        "auth_request_finished" => Event::Auth(Box::new(AuthEvent {
            success: f.str("success").is_some_and(|s| s == "yes" || s == "true"),
            mechanism: f.str("mechanism"),
            original_user: f.str("original_user"),
            master_user: f.str("master_user"),
            login_user: f.str("login_user"),
            error: f.str("error"),
            transport: f.str("transport"),
            c,
        })),
        "imap_command_finished" => Event::ImapCommand(Box::new(ImapCommandEvent {
            cmd_name: f
                .str("cmd_name")
                .or_else(|| f.str("cmd_input_name"))
                .unwrap_or_default()
                .to_ascii_uppercase(),
            args: f.str("cmd_args").unwrap_or_default(),
            human_args: f.str("cmd_human_args"),
            reply_state: f.str("tagged_reply_state"),
            reply: f.str("tagged_reply"),
            mailbox: f.str("mailbox"),
            old_mailbox: f.str("old_mailbox"),
            new_mailbox: f.str("new_mailbox"),
            reason_codes: f.list("reason_code"),
            c,
        })),
        "mail_opened" | "mail_expunged" | "mail_expunge_requested" => {
            let m = Box::new(MailEvent {
                mailbox: f.str("mailbox"),
                uid: f
                    .int("uid")
                    .and_then(|u| u32::try_from(u).ok())
                    .filter(|u| *u != 0),
                cmd_name: f.str("cmd_name").map(|s| s.to_ascii_uppercase()),
                reason_codes: f.list("reason_code"),
                c,
            });
            match name.as_str() {
                "mail_opened" => Event::MailOpened(m),
                "mail_expunged" => Event::MailExpunged(m),
                _ => Event::MailExpungeRequested(m),
            }
        }
        "mail_delivery_finished" => Event::Delivery(Box::new(DeliveryEvent {
            rcpt_to: f.str("rcpt_to"),
            mail_from: f.str("mail_from"),
            message_id: f.str("message_id"),
            subject: f.str("message_subject"),
            message_from: f.str("message_from"),
            size: f.int("message_size").and_then(|s| u64::try_from(s).ok()),
            error: f.str("error"),
            c,
        })),
        "managesieve_command_finished" => Event::Sieve(Box::new(SieveEvent {
            cmd_name: f.str("cmd_name").unwrap_or_default().to_ascii_uppercase(),
            args: f.str("cmd_args").unwrap_or_default(),
            script_name: f.str("script_name"),
            error: f.str("error"),
            c,
        })),
        _ => Event::Other { name, time },
    })
}

/// An RFC 3339 string (`format_args = time-rfc3339`) or float seconds (`time-unix`).
fn time_value(v: Option<&Value>, what: &str) -> Result<Option<Timestamp>, EventError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|e| EventError::NotAnEvent(format!("{what}: {e}"))),
        Some(Value::Number(n)) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            // 0 ..= 9999-12-31T23:59:59Z
            if !(0.0..=253_402_300_799.0).contains(&secs) {
                return Err(EventError::NotAnEvent(format!("{what}: {n} is not a time")));
            }
            #[allow(clippy::cast_possible_truncation)]
            let us = (secs * 1_000_000.0).round() as i64;
            Ok(Some(Timestamp(us)))
        }
        Some(_) => Err(EventError::NotAnEvent(format!("{what} is not a time"))),
    }
}

/// Lenient typed access to an event's fields: a field of the wrong type is absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn str(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.0.get(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A string list (`reason_code`), also accepting a single string.
    fn list(&self, key: &str) -> Vec<String> {
        match self.0.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
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
