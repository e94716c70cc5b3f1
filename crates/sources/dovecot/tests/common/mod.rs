//! Shared helpers for the Dovecot source's tests: the recorded sample (copied from
//! samples/dovecot-2.3.19) and ways to feed it. Test code; it may panic on bad fixtures.
#![allow(dead_code)]

use mailaudit_model::{Observation, Timestamp};
use mailaudit_source_dovecot::{DovecotConfig, DovecotSource};

pub const EVENTS: &str = include_str!("../fixtures/exporter-http-post.jsonl");
pub const LOG: &str = include_str!("../fixtures/dovecot.log");

/// One input of the sample: an exporter event or a log line, with its reference.
#[derive(Debug, Clone)]
pub enum Input {
    Event { text: String, reference: String },
    Line { text: String, reference: String },
}

impl Input {
    pub fn reference(&self) -> &str {
        match self {
            Input::Event { reference, .. } | Input::Line { reference, .. } => reference,
        }
    }
}

/// Where a log line sorts among events of the same second: its stamp has whole seconds, so
/// it was written somewhere within [second, second + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ties {
    /// Lines at the start of their second: before the events of that second.
    LinesFirst,
    /// Lines at the end of their second: after the events of that second.
    EventsFirst,
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The time an event ends (its `end_time`).
pub fn event_time(text: &str) -> Timestamp {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    ts(v["end_time"].as_str().unwrap())
}

/// The time of a sample log line (`Nov 22 13:49:12`; the sample was recorded in 2026, UTC).
pub fn line_time(text: &str) -> Timestamp {
    let stamp = &text[..15];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == &stamp[..3]).unwrap() + 1;
    let day: u32 = stamp[4..6].trim().parse().unwrap();
    ts(&format!("2026-{month:02}-{day:02}T{}Z", &stamp[7..15]))
}

pub fn events() -> Vec<Input> {
    EVENTS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Input::Event {
            text: l.to_string(),
            reference: format!("exporter-http-post.jsonl:{}", i + 1),
        })
        .collect()
}

pub fn lines() -> Vec<Input> {
    LOG.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Input::Line {
            text: l.to_string(),
            reference: format!("dovecot.log:{}", i + 1),
        })
        .collect()
}

/// The sort time of an input under the tie rule.
pub fn sort_time(input: &Input, ties: Ties) -> Timestamp {
    match input {
        Input::Event { text, .. } => event_time(text),
        Input::Line { text, .. } => match ties {
            Ties::LinesFirst => line_time(text),
            Ties::EventsFirst => line_time(text).plus_micros(999_999),
        },
    }
}

/// Both streams merged by time; within a stream the original order is kept (the exporter
/// POSTs out of time order, and that is part of what is tested).
pub fn merged(ties: Ties) -> Vec<Input> {
    let ev = events();
    let ln = lines();
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < ev.len() || j < ln.len() {
        let take_event = match (ev.get(i), ln.get(j)) {
            (Some(e), Some(l)) => sort_time(e, ties) <= sort_time(l, ties),
            (Some(_), None) => true,
            _ => false,
        };
        if take_event {
            out.push(ev[i].clone());
            i += 1;
        } else {
            out.push(ln[j].clone());
            j += 1;
        }
    }
    out
}

pub fn push(src: &mut DovecotSource, cfg: &DovecotConfig, input: &Input) -> Vec<Observation> {
    match input {
        Input::Event { text, reference } => src.push_event_json(cfg, text, reference).unwrap(),
        Input::Line { text, reference } => src.push_log_line(cfg, text, reference).unwrap(),
    }
}

/// Feeds inputs as an importer would: after each, `flush_due` with that input's time; at the
/// end `flush_all`.
pub fn run_batch(
    cfg: &DovecotConfig,
    inputs: &[Input],
    ties: Ties,
) -> (Vec<Observation>, DovecotSource) {
    let mut src = DovecotSource::new();
    let mut out = Vec::new();
    for input in inputs {
        out.extend(push(&mut src, cfg, input));
        out.extend(src.flush_due(cfg, sort_time(input, ties)));
    }
    out.extend(src.flush_all(cfg));
    (out, src)
}

/// Feeds inputs without any `flush_due`, then `flush_all`.
pub fn run_then_flush(cfg: &DovecotConfig, inputs: &[Input]) -> (Vec<Observation>, DovecotSource) {
    let mut src = DovecotSource::new();
    let mut out = Vec::new();
    for input in inputs {
        out.extend(push(&mut src, cfg, input));
    }
    out.extend(src.flush_all(cfg));
    (out, src)
}

use mailaudit_model::{Client, Item, Operation, OperationResult, Parameter, Provenance};

/// An expected observation, built field by field.
pub fn obs(time: &str, op: Operation, actor: &str, mailbox: &str, reference: &str) -> Observation {
    Observation {
        time: ts(time),
        operation: op,
        result: OperationResult::Succeeded,
        reason: None,
        mailbox: mailbox.into(),
        actor: actor.into(),
        acting_as: None,
        administrative: false,
        folder: None,
        destination_folder: None,
        items: Vec::new(),
        client: Client::default(),
        provenance: Provenance {
            source: "dovecot".into(),
            host: Some("vm".into()),
            reference: Some(reference.into()),
        },
        parameters: Vec::new(),
    }
}

pub trait Build {
    fn acting_as(self, who: &str) -> Self;
    fn folder(self, f: &str) -> Self;
    fn dest(self, f: &str) -> Self;
    fn failed(self, reason: &str) -> Self;
    fn client(self, port: Option<u16>, protocol: &str, session: &str, tls: Option<bool>) -> Self;
    fn no_ip(self) -> Self;
    fn no_host(self) -> Self;
    fn param(self, name: &str, value: &str) -> Self;
    fn item(self, uid: u32, message_id: &str, subject: &str, size: u64) -> Self;
    fn item_no_uid(self, message_id: &str, subject: &str, size: u64) -> Self;
    fn unresolved(self, uid: Option<u32>, why: &str) -> Self;
}

impl Build for Observation {
    fn acting_as(mut self, who: &str) -> Self {
        self.acting_as = Some(who.into());
        self
    }
    fn folder(mut self, f: &str) -> Self {
        self.folder = Some(f.into());
        self
    }
    fn dest(mut self, f: &str) -> Self {
        self.destination_folder = Some(f.into());
        self
    }
    fn failed(mut self, reason: &str) -> Self {
        self.result = OperationResult::Failed;
        self.reason = Some(reason.into());
        self
    }
    fn client(
        mut self,
        port: Option<u16>,
        protocol: &str,
        session: &str,
        tls: Option<bool>,
    ) -> Self {
        self.client = Client {
            ip: "127.0.0.1".parse().ok(),
            port,
            protocol: Some(protocol.into()),
            name: None,
            session: Some(session.into()),
            tls,
        };
        self
    }
    fn no_ip(mut self) -> Self {
        self.client.ip = None;
        self
    }
    fn no_host(mut self) -> Self {
        self.provenance.host = None;
        self
    }
    fn param(mut self, name: &str, value: &str) -> Self {
        self.parameters.push(Parameter {
            name: name.into(),
            value: value.into(),
        });
        self
    }
    fn item(mut self, uid: u32, message_id: &str, subject: &str, size: u64) -> Self {
        self.items.push(Item {
            uid: Some(uid),
            message_id: Some(message_id.into()),
            subject: Some(subject.into()),
            size: Some(size),
            folder: None,
            unresolved: None,
        });
        self
    }
    fn item_no_uid(mut self, message_id: &str, subject: &str, size: u64) -> Self {
        self.items.push(Item {
            uid: None,
            message_id: Some(message_id.into()),
            subject: Some(subject.into()),
            size: Some(size),
            folder: None,
            unresolved: None,
        });
        self
    }
    fn unresolved(mut self, uid: Option<u32>, why: &str) -> Self {
        self.items.push(Item {
            uid,
            unresolved: Some(why.into()),
            ..Item::default()
        });
        self
    }
}

/// Sorts by (time, reference): the order of a merged, time-ordered audit log.
pub fn sorted(mut v: Vec<Observation>) -> Vec<Observation> {
    v.sort_by(|a, b| (a.time, &a.provenance.reference).cmp(&(b.time, &b.provenance.reference)));
    v
}

/// Compares field by field, naming the first difference.
pub fn assert_same(actual: &[Observation], expected: &[Observation], what: &str) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(
            a,
            e,
            "{what}: observation {i} differs\nactual:   {}\nexpected: {}",
            serde_json::to_string(a).unwrap(),
            serde_json::to_string(e).unwrap()
        );
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} observations, expected {}; extra: {:#?}",
        actual.len(),
        expected.len(),
        if actual.len() > expected.len() {
            &actual[expected.len()..]
        } else {
            &[]
        }
    );
}

/// Within each Dovecot session, observations come out in time order and a logout last.
pub fn assert_session_order(out: &[Observation]) {
    let mut sessions: std::collections::BTreeMap<String, Vec<&Observation>> = Default::default();
    for o in out {
        sessions
            .entry(o.client.session.clone().unwrap_or_default())
            .or_default()
            .push(o);
    }
    for (s, list) in sessions {
        for pair in list.windows(2) {
            assert!(
                pair[0].time <= pair[1].time,
                "session {s}: {:?} after {:?}",
                pair[1].operation,
                pair[0].operation
            );
            assert_ne!(
                pair[0].operation,
                Operation::MailboxLogout,
                "session {s}: something after the logout"
            );
        }
    }
}
