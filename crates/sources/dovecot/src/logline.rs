//! Parses one line of Dovecot's log (its own `log_path` file or syslog) into a typed value:
//! login and disconnect lines, `mail_log` plugin lines, LMTP/Sieve delivery lines and events
//! exported with `transport = log`. Pure parsing: it decides no audit operation, must never
//! panic on any text, and reports anything it does not recognise as `Message::Other`.

use crate::logtime::{split_time, LogTime};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A line split into Dovecot's parts.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub time: LogTime,
    /// The host, when the line came through syslog (`Nov 22 13:49:12 vm dovecot: ...`).
    pub host: Option<String>,
    /// `imap`, `imap-login`, `lmtp`, `stats`, `auth`...
    pub service: String,
    /// `imap(carol)`: the mail user the process serves.
    pub user: Option<String>,
    pub pid: Option<String>,
    /// `<pid><session>`: Dovecot's session id, as in the events' `session` field.
    pub session: Option<String>,
    pub level: Level,
    pub message: Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Debug,
    Warning,
    Error,
    Fatal,
    Panic,
}

/// The elements of a login process line (`login_log_format_elements`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LoginFields {
    pub user: Option<String>,
    pub method: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// `TLS` → true; `secured` (plaintext from localhost or `login_trusted_networks`) → false.
    pub tls: Option<bool>,
    pub session: Option<String>,
}

/// What a `mail_log` line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MailLogKind {
    Save,
    Copy,
    Expunge,
    Autoexpunge,
    Delete,
    Undelete,
    FlagChange,
}

/// One `mail_log` line: `copy from INBOX: box=Trash, uid=1, msgid=<…>, size=336, …`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct MailLogFields {
    /// `copy from X`: the source mailbox.
    pub source: Option<String>,
    #[serde(rename = "box")]
    pub mailbox: Option<String>,
    pub uid: Option<u32>,
    pub msgid: Option<String>,
    pub size: Option<u64>,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// As logged, e.g. `(\Seen \Recent)`.
    pub flags: Option<String>,
}

/// Counts from a POP3 session summary (`pop3_logout_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pop3Summary {
    pub retr: u64,
    pub del: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// `imap-login: Login: user=<carol>, method=PLAIN, rip=…, secured, session=<…>`
    Login(LoginFields),
    /// `imap-login: Disconnected: … (auth failed, 1 attempts in 9 secs): user=<carol>, …`
    LoginFailed(LoginFields, u32),
    /// `auth: passwd-file(postmaster,127.0.0.1,<session>): Master user logging in as carol`
    MasterLogin {
        master: String,
        target: String,
        session: String,
    },
    /// A mail process ended: `Disconnected: Logged out in=…` (reason `Logged out`).
    Disconnected {
        reason: String,
        pop3: Option<Pop3Summary>,
    },
    MailLog(MailLogKind, MailLogFields),
    MailboxCreated(String),
    MailboxDeleted(String),
    MailboxRenamed(String, String),
    /// LMTP/LDA: `msgid=<…>: saved mail to INBOX`, Sieve: `stored mail into mailbox 'X'`.
    Saved {
        msgid: String,
        folder: String,
    },
    /// Sieve: `sieve: msgid=<…>: forwarded to <x@y>`.
    Forwarded {
        msgid: String,
        to: String,
    },
    /// `imap_id_log`: `ID sent: name=Thunderbird, version=128.0`.
    IdSent(String),
    /// An event written by `transport = log`: the JSON text.
    Event(String),
    Other,
}

/// A line split into Dovecot's parts, borrowed from the text; `body` follows the level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineHead<'a> {
    pub time: LogTime,
    pub host: Option<&'a str>,
    pub service: &'a str,
    pub user: Option<&'a str>,
    pub pid: Option<&'a str>,
    pub session: Option<&'a str>,
    pub level: Level,
    pub body: &'a str,
}

/// Parses a line; `None` when it is not shaped like a Dovecot log line at all.
#[cfg(test)]
pub(crate) fn parse_line(line: &str) -> Option<LogLine> {
    let h = split_line(line)?;
    Some(LogLine {
        time: h.time,
        host: h.host.map(str::to_string),
        service: h.service.to_string(),
        user: h.user.map(str::to_string),
        pid: h.pid.map(str::to_string),
        session: h.session.map(str::to_string),
        level: h.level,
        message: classify(h.service, h.body),
    })
}

/// Splits a line into its prefix parts without classifying the message; `None` when it is
/// not shaped like a Dovecot log line at all.
pub(crate) fn split_line(line: &str) -> Option<LineHead<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (time, rest) = split_time(line)?;
    let (host, rest) = strip_syslog_host(rest);
    let (prefix, body) = split_once_colon_space(rest)?;
    let (service, user, pid, session) = parse_prefix(prefix)?;
    let (level, body) = split_level(body);
    Some(LineHead {
        time,
        host,
        service,
        user,
        pid,
        session,
        level,
        body,
    })
}

/// `s.split_once(": ")`, scanning for the colon byte.
fn split_once_colon_space(s: &str) -> Option<(&str, &str)> {
    let p = find_colon_space(s)?;
    Some((s.get(..p)?, s.get(p + 2..)?))
}

/// `s.find(": ")`, scanning for the colon byte.
fn find_colon_space(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(off) = b.get(i..)?.iter().position(|&c| c == b':') {
        let p = i + off;
        if b.get(p + 1) == Some(&b' ') {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// `vm dovecot[123]: imap-login: …` → (Some("vm"), "imap-login: …"); `dovecot: …` too.
fn strip_syslog_host(rest: &str) -> (Option<&str>, &str) {
    let mut words = rest.splitn(3, ' ');
    let first = words.next().unwrap_or_default();
    if is_dovecot_tag(first) {
        return (None, rest.get(first.len() + 1..).unwrap_or_default());
    }
    if let Some(second) = words.next() {
        if is_dovecot_tag(second) {
            let skip = first.len() + 1 + second.len() + 1;
            return (Some(first), rest.get(skip..).unwrap_or_default());
        }
    }
    (None, rest)
}

fn is_dovecot_tag(word: &str) -> bool {
    word.strip_suffix(':')
        .and_then(|w| w.strip_prefix("dovecot"))
        .is_some_and(|tail| {
            tail.is_empty()
                || (tail.starts_with('[')
                    && tail.ends_with(']')
                    && tail.len() > 2
                    && tail
                        .get(1..tail.len() - 1)
                        .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())))
        })
}

type Prefix<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// `imap(carol)<16055><drIEvt1gMs5/AAAB>`, `lmtp(16045)`, `imap-login`, `auth-worker(9)`.
fn parse_prefix(p: &str) -> Option<Prefix<'_>> {
    let end = p.find(['(', '<']).unwrap_or(p.len());
    let service = p.get(..end)?;
    if service.is_empty()
        || !service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let mut rest = p.get(end..)?;
    let mut user = None;
    let mut pid = None;
    if rest.starts_with('(') {
        // The user runs to the `)` before the angle brackets, or to the last `)`.
        let close = find_close_angle(rest).or_else(|| rest.rfind(')'))?;
        let inner = rest.get(1..close)?;
        rest = rest.get(close + 1..)?;
        if rest.is_empty() && !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
            pid = Some(inner);
        } else if !inner.is_empty() {
            user = Some(inner);
        }
    }
    // Only the first two groups are kept; a third or later one is checked and dropped.
    let mut first = None;
    let mut second = None;
    let mut count = 0usize;
    while let Some(r) = rest.strip_prefix('<') {
        let close = r.find('>')?;
        let g = r.get(..close)?;
        match count {
            0 => first = Some(g),
            1 => second = Some(g),
            _ => {}
        }
        count += 1;
        rest = r.get(close + 1..)?;
    }
    if !rest.is_empty() {
        return None;
    }
    let session = match count {
        0 => None,
        1 => first,
        _ => {
            pid = first;
            second
        }
    };
    Some((service, user, pid, session.filter(|s| !s.is_empty())))
}

/// `s.find(")<")`.
fn find_close_angle(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    b.windows(2).position(|w| w == b")<")
}

fn split_level(body: &str) -> (Level, &str) {
    for (label, level) in [
        ("Info: ", Level::Info),
        ("Debug: ", Level::Debug),
        ("Warning: ", Level::Warning),
        ("Error: ", Level::Error),
        ("Fatal: ", Level::Fatal),
        ("Panic: ", Level::Panic),
    ] {
        if let Some(m) = body.strip_prefix(label) {
            return (level, m);
        }
    }
    // Syslog carries the level out of band and writes no "Info: ".
    (Level::Info, body)
}

pub(crate) fn classify(service: &str, m: &str) -> Message {
    if m.starts_with('{') {
        return Message::Event(m.to_string());
    }
    if service.ends_with("-login") {
        if let Some(rest) = m.strip_prefix("Login: ") {
            return Message::Login(login_fields(rest));
        }
        if let Some(pos) = m.find("(auth failed, ") {
            let attempts = m
                .get(pos + "(auth failed, ".len()..)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let fields = m
                .find("): ")
                .and_then(|p| m.get(p + 3..))
                .map(login_fields)
                .unwrap_or_default();
            return Message::LoginFailed(fields, attempts);
        }
        return Message::Other;
    }
    if service == "auth" || service.starts_with("auth-") {
        return master_login(m).unwrap_or(Message::Other);
    }
    if let Some(rest) = m.strip_prefix("Disconnected") {
        if service == "lmtp" {
            return Message::Other;
        }
        return disconnected(rest);
    }
    if let Some(name) = m.strip_prefix("Mailbox created: ") {
        return Message::MailboxCreated(name.to_string());
    }
    if let Some(name) = m.strip_prefix("Mailbox deleted: ") {
        return Message::MailboxDeleted(name.to_string());
    }
    if let Some(names) = m.strip_prefix("Mailbox renamed: ") {
        if let Some((a, b)) = names.split_once(" -> ") {
            return Message::MailboxRenamed(a.to_string(), b.to_string());
        }
    }
    if let Some(id) = m.strip_prefix("ID sent: ") {
        return id_sent(id).map_or(Message::Other, Message::IdSent);
    }
    if let Some(d) = delivery(m) {
        return d;
    }
    mail_log(m).unwrap_or(Message::Other)
}

fn login_fields(s: &str) -> LoginFields {
    let mut f = LoginFields::default();
    let mut rest = s;
    // user=<…> may contain anything but is closed by ">, " or ">" at the end.
    if let Some(r) = rest.strip_prefix("user=<") {
        let close = r.find(">, ").or_else(|| r.rfind('>'));
        if let Some(close) = close {
            let u = r.get(..close).unwrap_or_default();
            if !u.is_empty() {
                f.user = Some(u.to_string());
            }
            rest = r.get(close + 1..).unwrap_or_default();
        }
    }
    for el in rest.split(", ") {
        let el = el.trim().trim_start_matches(',').trim();
        if let Some(v) = el.strip_prefix("method=") {
            f.method = Some(v.to_string());
        } else if let Some(v) = el.strip_prefix("rip=") {
            f.ip = v.parse().ok();
        } else if let Some(v) = el.strip_prefix("rport=") {
            f.port = v.parse().ok().filter(|p| *p != 0);
        } else if let Some(v) = el.strip_prefix("session=<") {
            f.session = v
                .strip_suffix('>')
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        } else if el == "secured" {
            f.tls = Some(false);
        } else if el == "TLS" || el.starts_with("TLS ") || el.starts_with("TLS:") {
            f.tls = Some(true);
        }
    }
    // The default format always writes %c; with rip= present and neither TLS nor
    // "secured", the connection was plaintext from an untrusted network.
    if f.tls.is_none() && f.ip.is_some() && f.method.is_some() {
        f.tls = Some(false);
    }
    f
}

fn master_login(m: &str) -> Option<Message> {
    let (left, target) = m.split_once("): Master user logging in as ")?;
    let inner = left.split_once('(')?.1;
    let mut parts = inner.split(',');
    let master = parts.next()?.to_string();
    let session = inner
        .rsplit_once(",<")?
        .1
        .strip_suffix('>')
        .filter(|s| !s.is_empty())?
        .to_string();
    Some(Message::MasterLogin {
        master,
        target: target.trim().to_string(),
        session,
    })
}

fn disconnected(rest: &str) -> Message {
    let text = rest.trim_start_matches(':').trim_start();
    let mut end = text.len();
    for marker in [" in=", " top=", " bytes="] {
        if let Some(p) = text.find(marker) {
            end = end.min(p);
        }
    }
    let reason = text.get(..end).unwrap_or(text).trim();
    let reason = if reason.is_empty() {
        "Disconnected".to_string()
    } else {
        reason.to_string()
    };
    let pop3 = text.find("retr=").map(|_| Pop3Summary {
        retr: counter(text, "retr="),
        del: counter(text, "del="),
    });
    Message::Disconnected { reason, pop3 }
}

/// `retr=3/1024` → 3.
fn counter(text: &str, key: &str) -> u64 {
    text.find(key)
        .and_then(|p| text.get(p + key.len()..))
        .and_then(|r| r.split(['/', ',', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn id_sent(s: &str) -> Option<String> {
    let mut name = None;
    let mut version = None;
    for el in s.split(", ") {
        if let Some(v) = el.strip_prefix("name=") {
            name = Some(v.to_string());
        } else if let Some(v) = el.strip_prefix("version=") {
            version = Some(v.to_string());
        }
    }
    match (name, version) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (n, _) => n,
    }
}

/// LMTP/LDA `deliver_log_format` and Sieve result lines.
fn delivery(m: &str) -> Option<Message> {
    let m = m.strip_prefix("sieve: ").unwrap_or(m);
    let rest = m.strip_prefix("msgid=")?;
    for (marker, saved) in [
        (": saved mail to ", true),
        (": stored mail into mailbox ", true),
        (": forwarded to ", false),
    ] {
        if let Some((msgid, target)) = rest.split_once(marker) {
            let msgid = msgid.to_string();
            return Some(if saved {
                Message::Saved {
                    msgid,
                    folder: target.trim().trim_matches('\'').to_string(),
                }
            } else {
                Message::Forwarded {
                    msgid,
                    to: target
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string(),
                }
            });
        }
    }
    None
}

const KEYS: [&str; 8] = [
    "box", "uid", "msgid", "size", "vsize", "from", "subject", "flags",
];

/// `s.starts_with(&format!("{key}="))`.
fn starts_with_key(s: &str, key: &str) -> bool {
    s.strip_prefix(key).is_some_and(|r| r.starts_with('='))
}

/// The first position of `, {k}=` in `s` for any `k` of `keys`.
fn find_later_key(s: &str, keys: &[&str]) -> Option<usize> {
    if keys.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(off) = b.get(i..)?.iter().position(|&c| c == b',') {
        let p = i + off;
        if b.get(p + 1) == Some(&b' ') {
            if let Some(after) = s.get(p + 2..) {
                if keys.iter().any(|k| starts_with_key(after, k)) {
                    return Some(p);
                }
            }
        }
        i = p + 1;
    }
    None
}

/// `save: box=…`, `copy from X: box=…`, `expunge: …`, `delete: …`, `flag_change: …`.
fn mail_log(m: &str) -> Option<Message> {
    // The description ends at the first ": " followed by a known field.
    let mut search = 0;
    let (desc, fields) = loop {
        let p = search + find_colon_space(m.get(search..)?)?;
        let after = m.get(p + 2..)?;
        if KEYS.iter().any(|k| starts_with_key(after, k)) {
            break (m.get(..p)?, after);
        }
        search = p + 2;
    };
    let (kind, source) = match desc {
        "save" | "append" => (MailLogKind::Save, None),
        "expunge" => (MailLogKind::Expunge, None),
        "autoexpunge" => (MailLogKind::Autoexpunge, None),
        "delete" => (MailLogKind::Delete, None),
        "undelete" => (MailLogKind::Undelete, None),
        "flag_change" => (MailLogKind::FlagChange, None),
        d => (
            MailLogKind::Copy,
            Some(d.strip_prefix("copy from ")?.to_string()),
        ),
    };
    let mut f = parse_fields(fields);
    f.source = source;
    Some(Message::MailLog(kind, f))
}

/// The fields in Dovecot's fixed order. A value runs to the next `, key=` of a later key;
/// the subject, which a sender controls, runs to the last `, flags=(`.
fn parse_fields(s: &str) -> MailLogFields {
    let mut f = MailLogFields::default();
    let mut rest = s;
    let mut next_key = 0;
    while let Some((ki, key)) = KEYS
        .iter()
        .enumerate()
        .skip(next_key)
        .find(|(_, k)| starts_with_key(rest, k))
    {
        let value_start = key.len() + 1;
        let mut end = rest.len();
        if *key == "subject" {
            if let Some(p) = rest.rfind(", flags=(") {
                end = p;
            }
        } else if let Some(p) = find_later_key(rest, KEYS.get(ki + 1..).unwrap_or_default()) {
            end = p;
        }
        let end = end.max(value_start.min(rest.len()));
        let value = rest.get(value_start..end).unwrap_or_default();
        match *key {
            "box" => f.mailbox = Some(value.to_string()),
            "uid" => f.uid = value.parse().ok().filter(|u| *u != 0),
            "msgid" => f.msgid = Some(value.to_string()).filter(|v| !v.is_empty()),
            "size" => f.size = value.parse().ok(),
            "from" => f.from = Some(value.to_string()).filter(|v| !v.is_empty()),
            "subject" => f.subject = Some(value.to_string()).filter(|v| !v.is_empty()),
            "flags" => f.flags = Some(value.to_string()),
            _ => {}
        }
        rest = rest.get(end..).unwrap_or_default();
        rest = rest.strip_prefix(", ").unwrap_or(rest);
        next_key = ki + 1;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(line: &str) -> Message {
        parse_line(line).unwrap().message
    }

    #[test]
    fn prefixes() {
        let l = parse_line(
            "Nov 22 13:49:12 imap(carol)<16055><drIEvt1gMs5/AAAB>: Info: Mailbox created: Trash",
        )
        .unwrap();
        assert_eq!(l.service, "imap");
        assert_eq!(l.user.as_deref(), Some("carol"));
        assert_eq!(l.pid.as_deref(), Some("16055"));
        assert_eq!(l.session.as_deref(), Some("drIEvt1gMs5/AAAB"));
        assert_eq!(l.message, Message::MailboxCreated("Trash".into()));
        let l = parse_line("Nov 22 13:49:12 lmtp(16045): Info: Connect from 127.0.0.1").unwrap();
        assert_eq!((l.user, l.pid.as_deref()), (None, Some("16045")));
        let l = parse_line("Nov 22 13:49:12 vm dovecot[77]: imap-login: Login: user=<a b>, method=PLAIN, rip=::1, TLS, session=<x>").unwrap();
        assert_eq!(l.host.as_deref(), Some("vm"));
        let Message::Login(f) = l.message else {
            panic!()
        };
        assert_eq!(f.user.as_deref(), Some("a b"));
        assert_eq!(f.tls, Some(true));
        assert_eq!(f.ip, "::1".parse().ok());
        assert!(parse_line("Nov 22 13:49:12 not a dovecot line").is_none());
    }

    #[test]
    fn login_lines() {
        let Message::Login(f) = msg("Nov 22 13:49:12 imap-login: Info: Login: user=<carol>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=16055, secured, session=<drIEvt1gMs5/AAAB>") else { panic!() };
        assert_eq!(f.user.as_deref(), Some("carol"));
        assert_eq!(f.method.as_deref(), Some("PLAIN"));
        assert_eq!(f.tls, Some(false));
        assert_eq!(f.session.as_deref(), Some("drIEvt1gMs5/AAAB"));
        let Message::LoginFailed(f, n) = msg("Nov 22 13:49:21 imap-login: Info: Disconnected: Connection closed (auth failed, 1 attempts in 9 secs): user=<carol>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<3DMGvt1gUM5/AAAB>") else { panic!() };
        assert_eq!(
            (f.user.as_deref(), n, f.session.as_deref()),
            (Some("carol"), 1, Some("3DMGvt1gUM5/AAAB"))
        );
    }

    #[test]
    fn mail_log_lines() {
        let Message::MailLog(k, f) = msg("Nov 22 13:49:12 imap(carol)<1><s>: Info: copy from INBOX: box=Trash, uid=1, msgid=<inv-2211@example.org>, size=336, from=frank@example.org, subject=Invoice 2211, flags=()") else { panic!() };
        assert_eq!(k, MailLogKind::Copy);
        assert_eq!(f.source.as_deref(), Some("INBOX"));
        assert_eq!(f.mailbox.as_deref(), Some("Trash"));
        assert_eq!(f.uid, Some(1));
        assert_eq!(f.msgid.as_deref(), Some("<inv-2211@example.org>"));
        assert_eq!(f.size, Some(336));
        assert_eq!(f.subject.as_deref(), Some("Invoice 2211"));
        assert_eq!(f.flags.as_deref(), Some("()"));
        // Commas in the subject and the mailbox name.
        let Message::MailLog(_, f) = msg("Nov 22 13:49:12 imap(c)<1><s>: Info: expunge: box=Q1, Q2, uid=5, msgid=<a@b>, subject=Hi, there, flags=(x), flags=(\\Seen)") else { panic!() };
        assert_eq!(f.mailbox.as_deref(), Some("Q1, Q2"));
        assert_eq!(f.subject.as_deref(), Some("Hi, there, flags=(x)"));
        assert_eq!(f.flags.as_deref(), Some("(\\Seen)"));
        let Message::MailLog(k, _) =
            msg("Nov 22 13:49:12 imap(c)<1><s>: Info: copy from a: b: box=x, uid=1")
        else {
            panic!()
        };
        assert_eq!(k, MailLogKind::Copy);
    }

    #[test]
    fn session_ends_and_deliveries() {
        assert_eq!(
            msg("Nov 22 13:49:18 pop3(dan)<16093><tuIkvt1gmrZ/AAAB>: Info: Disconnected: Logged out top=0/0, retr=2/680, del=1/2, size=680"),
            Message::Disconnected { reason: "Logged out".into(), pop3: Some(Pop3Summary { retr: 2, del: 1 }) }
        );
        assert_eq!(
            msg("Nov 22 13:49:18 imap(dan)<1><s>: Info: Disconnected for inactivity in=1 out=2"),
            Message::Disconnected {
                reason: "for inactivity".into(),
                pop3: None
            }
        );
        assert_eq!(
            msg("Nov 22 13:49:12 lmtp(carol)<16045><cYtjD9jyAmutPgAAg+zDdQ>: Info: msgid=<board-7@example.org>: saved mail to INBOX"),
            Message::Saved { msgid: "<board-7@example.org>".into(), folder: "INBOX".into() }
        );
        assert_eq!(
            msg("Nov 22 13:50:00 lmtp(carol)<1><s:T1>: Info: sieve: msgid=<x@y>: forwarded to <exfil@evil.example>"),
            Message::Forwarded { msgid: "<x@y>".into(), to: "exfil@evil.example".into() }
        );
        assert_eq!(
            msg("Nov 22 13:49:12 auth: Info: passwd-file(postmaster,127.0.0.1,<fzwFvt1gSM5/AAAB>): Master user logging in as carol"),
            Message::MasterLogin { master: "postmaster".into(), target: "carol".into(), session: "fzwFvt1gSM5/AAAB".into() }
        );
        assert_eq!(
            msg(r#"Nov 22 13:49:12 stats: Info: {"event":"x"}"#),
            Message::Event(r#"{"event":"x"}"#.into())
        );
    }
}
