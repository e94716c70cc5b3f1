//! The milter source of mailaudit: turns what an MTA's milter sees of one authenticated
//! submission (SASL macros, client, envelope, headers, size) into one `Observation`:
//! `Send` by the owner, `SendAs` or `SendOnBehalf` by a delegate, and applies the hourly
//! rate rule per login.
//!
//! It must never panic on any input, never do I/O, never write to the store (the pipeline
//! does) and has no clock of its own (callers pass the time). The milter protocol itself lives
//! in the cli (`mailaudit milter`); this crate only decides.
//!
//! # Classification (who owns the `From:` address decides)
//!
//! - `From` is owned by the login's mailbox → `Send` against that mailbox (Owner).
//! - `From` is mailbox B's and `Sender` is the login's → `SendOnBehalf` against B.
//! - `From` is mailbox B's and there is no `Sender` (or it is B's, or a third party's) →
//!   `SendAs` against B.
//! - No SASL login (`{auth_authen}` empty or absent) → ignored and counted: a relay or an
//!   inbound message is not mailbox activity.
//!
//! An address belongs to the mailbox of the same name unless the configuration's
//! `[addresses]` says otherwise. The actor is the mailbox the login acts as; the pipeline then
//! classifies the logon type (Owner when actor and mailbox are one, else Delegate).
//!
//! # Malformed headers
//!
//! Never a reason to drop the record: no `From:` (or one without a parsable address) is
//! classified by the envelope sender, two `From:` headers or a `From:` with several
//! addresses by the first address the login does not own; each case is named in an
//! `anomaly` parameter. Encoded words are decoded; bytes that are not UTF-8 become U+FFFD.

mod config;
mod identity;

pub use config::{AddressBook, ConfigError, MilterConfig, RateConfig, DEFAULT_RATE_PER_HOUR};
pub use identity::{normalise_address, same_identity};

use mail_parser::{HeaderName, MessageParser};
use mailaudit_model::{
    Client, Item, Observation, Operation, OperationResult, Parameter, Provenance, Timestamp,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

/// The `provenance.source` of every record this source makes.
pub const SOURCE: &str = "milter";

/// The reason given on a record over the hourly limit.
pub const RATE_EXCEEDED: &str = "rate exceeded";

/// Longest value kept in a string field: the model's `Observation::check` refuses longer
/// ones, and a long subject must not cost the record.
use mailaudit_model::MAX_FIELD_LEN as MAX_FIELD;
/// Longest parameter value (the recipient list).
const MAX_PARAMETER: usize = 16 * MAX_FIELD;

/// Everything the milter saw of one message transaction.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    /// The HELO/EHLO name.
    pub helo: Option<String>,
    /// Macros by name without braces (`auth_authen`, `i`, `j`), latest value wins.
    pub macros: BTreeMap<String, String>,
    pub envelope_from: Option<String>,
    pub recipients: Vec<String>,
    /// Header fields in order, as received (names and values, unfolded or not).
    pub headers: Vec<(String, String)>,
    /// Bytes of the body as the milter received it.
    pub body_bytes: u64,
    /// The milter connection, to tell sessions apart in the log.
    pub session: Option<String>,
}

impl Submission {
    /// Records a macro; `{auth_authen}` and `auth_authen` are the same name.
    pub fn set_macro(&mut self, name: &str, value: &str) {
        let name = name.trim().trim_start_matches('{').trim_end_matches('}');
        self.macros.insert(name.to_string(), value.to_string());
    }

    pub fn macro_value(&self, name: &str) -> Option<&str> {
        self.macros
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Forgets the message, keeping what belongs to the connection (client, HELO, and the
    /// connection-stage macros), for the next transaction on the same connection.
    pub fn reset_message(&mut self) {
        self.envelope_from = None;
        self.recipients.clear();
        self.headers.clear();
        self.body_bytes = 0;
        for m in [
            "auth_authen",
            "auth_type",
            "auth_author",
            "i",
            "mail_addr",
            "rcpt_addr",
        ] {
            self.macros.remove(m);
        }
    }

    /// The message size as the MTA received it: header lines, the blank line, the body.
    pub fn size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + 2 + v.len() + 2)
            .sum();
        headers as u64 + 2 + self.body_bytes
    }
}

/// What the milter must answer at the end of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// A temporary failure (4xx): the client or Postfix retries later.
    Tempfail,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not mailbox activity: nothing to record.
    Ignore(&'static str),
    Record {
        observation: Box<Observation>,
        answer: Answer,
    },
}

/// Counters, shown in the milter's log. Nothing the source drops goes uncounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Messages that reached the end of DATA.
    pub messages: u64,
    pub recorded: u64,
    /// No SASL login: relays and inbound mail.
    pub ignored_unauthenticated: u64,
    /// Recorded with an `anomaly` parameter (no From, two From, …).
    pub malformed_headers: u64,
    pub over_rate: u64,
    /// Answered with a temporary failure by the rate rule (`--enforce-rate`).
    pub deferred_by_rate: u64,
    /// Transactions that ended before the end of DATA (client gone, RSET, rejected).
    pub aborted: u64,
    /// Records the store could not take (answered per `--on-store-failure`).
    pub store_failures: u64,
    /// Milter connections that broke with a protocol or I/O error.
    pub protocol_errors: u64,
}

/// Classifies submissions and keeps the per-login hourly windows.
#[derive(Debug)]
pub struct Classifier {
    book: AddressBook,
    rate: RateConfig,
    enforce_rate: bool,
    windows: HashMap<String, VecDeque<Timestamp>>,
    calls: u64,
    pub counters: Counters,
}

const HOUR_SECS: i64 = 3600;

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn param(name: &str, value: impl AsRef<str>, max: usize) -> Parameter {
    Parameter {
        name: name.to_string(),
        value: clip(value.as_ref(), max),
    }
}

/// What the headers say, after decoding.
#[derive(Debug, Default)]
struct Headers {
    from_fields: usize,
    from: Vec<String>,
    /// A From field was present but held no address.
    from_unparsable: Option<String>,
    sender: Option<String>,
    subject: Option<String>,
    message_id: Option<String>,
}

/// An address to classify by: something@somewhere, with no bytes that failed to decode
/// (U+FFFD) and no spaces. Anything else is not an address anyone owns.
fn is_address(a: &str) -> bool {
    a.split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !a.contains(['\u{fffd}', ' ', '\t'])
}

fn parse_headers(fields: &[(String, String)]) -> Headers {
    let mut block = String::new();
    for (name, value) in fields {
        // A name with a colon or a line break in it would change the block's meaning.
        if name.is_empty() || name.contains([':', '\r', '\n']) {
            continue;
        }
        block.push_str(name);
        block.push_str(": ");
        block.push_str(value);
        block.push_str("\r\n");
    }
    block.push_str("\r\n");
    let mut out = Headers {
        from_fields: fields
            .iter()
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("from"))
            .count(),
        ..Headers::default()
    };
    let Some(message) = MessageParser::new().parse_headers(block.as_bytes()) else {
        return out;
    };
    for value in message.header_values(HeaderName::From) {
        let addresses: Vec<String> = value
            .as_address()
            .map(|a| {
                a.iter()
                    .filter_map(|addr| addr.address())
                    .map(normalise_address)
                    .filter(|a| is_address(a))
                    .collect()
            })
            .unwrap_or_default();
        out.from.extend(addresses);
    }
    if out.from.is_empty() && out.from_fields > 0 {
        let raw = fields
            .iter()
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("from"))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        out.from_unparsable = Some(raw);
    }
    out.sender = message
        .sender()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(normalise_address)
        .filter(|a| is_address(a));
    out.subject = message.subject().map(|s| s.trim().to_string());
    out.message_id = message.message_id().map(|m| {
        format!(
            "<{}>",
            m.trim().trim_start_matches('<').trim_end_matches('>')
        )
    });
    out
}

impl Classifier {
    pub fn new(book: AddressBook, rate: RateConfig, enforce_rate: bool) -> Classifier {
        Classifier {
            book,
            rate,
            enforce_rate,
            windows: HashMap::new(),
            calls: 0,
            counters: Counters::default(),
        }
    }

    pub fn book(&self) -> &AddressBook {
        &self.book
    }

    /// The hourly limit for a login (by its name or by its mailbox's); 0 = none.
    pub fn limit_for(&self, login: &str, mailbox: &str) -> u32 {
        let find = |name: &str| {
            self.rate
                .per_login
                .iter()
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        find(login)
            .or_else(|| find(mailbox))
            .unwrap_or(self.rate.default_per_hour)
    }

    /// Decides what one finished message is. `now` is the time of the end of message.
    pub fn classify(&mut self, sub: &Submission, now: Timestamp) -> Verdict {
        self.counters.messages += 1;
        let Some(login) = sub.macro_value("auth_authen") else {
            self.counters.ignored_unauthenticated += 1;
            return Verdict::Ignore("unauthenticated");
        };
        let login = clip(login, MAX_FIELD);
        let actor = clip(&self.book.mailbox_of_login(&login), MAX_FIELD);
        let headers = parse_headers(&sub.headers);
        let owns = |address: &str| same_identity(&self.book.owner_of(address), &actor);

        let mut anomalies: Vec<String> = Vec::new();
        if headers.from_fields > 1 {
            anomalies.push(format!("{} From: headers", headers.from_fields));
        } else if headers.from.len() > 1 {
            anomalies.push(format!("From: lists {} addresses", headers.from.len()));
        }
        let envelope = sub
            .envelope_from
            .as_deref()
            .map(normalise_address)
            .filter(|a| is_address(a));
        // The address the message claims to be from: the first the login does not own, so
        // that a second From: cannot hide a SendAs behind the sender's own address.
        let from: Option<String> = match headers.from.iter().find(|a| !owns(a)) {
            Some(foreign) => Some(foreign.clone()),
            None => headers.from.first().cloned(),
        };
        let from = match from {
            Some(f) => Some(f),
            None => {
                anomalies.push(match &headers.from_unparsable {
                    Some(raw) => format!(
                        "From: header without an address ({}); classified by the envelope sender",
                        clip(raw, 200)
                    ),
                    None => "no From: header; classified by the envelope sender".to_string(),
                });
                envelope.clone()
            }
        };

        let (operation, mailbox) = match &from {
            None => (Operation::Send, actor.clone()),
            // A bare login (`alice`) learns its full address from the From it owns.
            Some(f) if owns(f) && !actor.contains('@') => (Operation::Send, self.book.owner_of(f)),
            Some(f) if owns(f) => (Operation::Send, actor.clone()),
            Some(f) => {
                let owner = self.book.owner_of(f);
                match &headers.sender {
                    Some(s) if owns(s) => (Operation::SendOnBehalf, owner),
                    _ => (Operation::SendAs, owner),
                }
            }
        };
        let mailbox = clip(&mailbox, MAX_FIELD);
        let window_key = login.to_lowercase();
        let actor = if operation == Operation::Send {
            mailbox.clone()
        } else {
            actor
        };

        // The rate rule: count this login's accepted messages in the last hour.
        let limit = self.limit_for(&login, &actor);
        let window = self.windows.entry(window_key).or_default();
        let since = now.plus_secs(-HOUR_SECS);
        while window.front().is_some_and(|t| *t <= since) {
            window.pop_front();
        }
        let over = limit > 0 && window.len() as u64 >= u64::from(limit);
        let answer = if over && self.enforce_rate {
            Answer::Tempfail
        } else {
            window.push_back(now);
            Answer::Accept
        };
        let sent_in_hour = window.len();
        self.calls += 1;
        if self.calls.is_multiple_of(4096) {
            self.windows
                .retain(|_, w| w.back().is_some_and(|t| *t > since));
        }

        let mut parameters = Vec::new();
        if let Some(t) = sub.macro_value("auth_type") {
            parameters.push(param("mechanism", t, MAX_FIELD));
        }
        if !login.eq_ignore_ascii_case(&actor) {
            parameters.push(param("login", &login, MAX_FIELD));
        }
        if let Some(a) = sub.macro_value("auth_author") {
            parameters.push(param("auth_author", a, MAX_FIELD));
        }
        if !headers.from.is_empty() {
            parameters.push(param("from", headers.from.join(", "), MAX_FIELD));
        }
        if let Some(s) = &headers.sender {
            parameters.push(param("sender", s, MAX_FIELD));
        }
        parameters.push(param(
            "envelope_from",
            sub.envelope_from
                .as_deref()
                .map(normalise_address)
                .unwrap_or_default(),
            MAX_FIELD,
        ));
        let recipients: Vec<String> = sub
            .recipients
            .iter()
            .map(|r| normalise_address(r))
            .collect();
        parameters.push(param("recipient_count", recipients.len().to_string(), 32));
        parameters.push(param("recipients", recipients.join(", "), MAX_PARAMETER));
        for a in &anomalies {
            parameters.push(param("anomaly", a, MAX_FIELD));
        }
        let (result, reason) = if over {
            self.counters.over_rate += 1;
            parameters.push(param(
                "rate",
                format!("{sent_in_hour} messages in the last hour; limit {limit}"),
                MAX_FIELD,
            ));
            parameters.push(param(
                "rate_action",
                if answer == Answer::Tempfail {
                    "deferred"
                } else {
                    "accepted"
                },
                32,
            ));
            if answer == Answer::Tempfail {
                self.counters.deferred_by_rate += 1;
            }
            (OperationResult::Failed, Some(RATE_EXCEEDED.to_string()))
        } else {
            (OperationResult::Succeeded, None)
        };
        if !anomalies.is_empty() {
            self.counters.malformed_headers += 1;
        }

        let item = Item {
            uid: None,
            message_id: headers.message_id.as_deref().map(|m| clip(m, MAX_FIELD)),
            subject: headers.subject.as_deref().map(|s| clip(s, MAX_FIELD)),
            size: Some(sub.size()),
            folder: None,
            unresolved: headers
                .message_id
                .is_none()
                .then(|| "the message has no Message-ID: header".to_string()),
        };
        let observation = Observation {
            time: now,
            operation,
            result,
            reason,
            mailbox,
            actor,
            acting_as: None,
            administrative: false,
            folder: None,
            destination_folder: None,
            items: vec![item],
            client: Client {
                ip: sub.client_ip,
                port: sub.client_port,
                protocol: Some("smtp".into()),
                name: sub.helo.as_deref().map(|h| clip(h, MAX_FIELD)),
                session: sub.session.as_deref().map(|s| clip(s, MAX_FIELD)),
                tls: sub.macro_value("tls_version").map(|_| true),
            },
            provenance: Provenance {
                source: SOURCE.into(),
                host: sub.macro_value("j").map(|h| clip(h, MAX_FIELD)),
                reference: sub
                    .macro_value("i")
                    .map(|q| clip(&format!("queue id {q}"), MAX_FIELD)),
            },
            parameters,
        };
        self.counters.recorded += 1;
        Verdict::Record {
            observation: Box::new(observation),
            answer,
        }
    }
}

#[cfg(test)]
mod tests;
