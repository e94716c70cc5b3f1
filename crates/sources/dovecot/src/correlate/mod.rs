//! The Dovecot source's correlation state: what each session is (who authenticated, how, from
//! where), the observations waiting for the log lines and sub-events that complete them, log
//! lines waiting for their command, and a bounded cache of message identities learnt from
//! `mail_log` lines. All of it serialises, so a follower can persist it with its output.
//!
//! It decides operations only through `classify`, must never panic on any input, never grow
//! without bound (caps below), and never emit one command twice: each session remembers what
//! it has already reported (login, logout) and every draft is released exactly once.

use crate::classify::{self, CommandClass, Place, StoreKind};
use crate::event::{
    self, AuthEvent, Common, DeliveryEvent, Event, EventError, ImapCommandEvent, MailEvent,
    SieveEvent,
};
use crate::imap::{self, FlagOp, SeqSet};
use crate::logline::{self, Level, LineHead, LoginFields, MailLogFields, MailLogKind, Message};
use crate::logtime;
use crate::{DovecotConfig, DovecotError, SourceStats};
use mailaudit_model::{
    Client, Item, Observation, Operation, OperationResult, Parameter, Provenance, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

mod build;
mod claims;
mod logonly;

use build::build;
use claims::{accepts_line, accepts_sub, insert_draft, is_complete, learn, take_line, take_sub};
use logonly::{group_lines, pop3_summary};

/// Drafts one session may hold; beyond this the oldest are emitted at once.
pub(crate) const MAX_DRAFTS_PER_SESSION: usize = 10_000;
/// Unclaimed log lines / sub-events one session may hold; beyond this the oldest are settled.
pub(crate) const MAX_BUFFERED_PER_SESSION: usize = 50_000;
/// Message identities (owner, folder, UID → Message-ID, Subject, size) kept from `mail_log`.
pub(crate) const CACHE_CAPACITY: usize = 4096;
/// How long a session is remembered after it ended (late login/disconnect lines are deduped).
pub(crate) const ENDED_GRACE_SECS: i64 = 600;
/// How long an idle session that never ended is remembered (long IDLE connections).
pub(crate) const IDLE_LIMIT_SECS: i64 = 2 * 24 * 3600;
/// The model's limits: larger operations are split, longer strings clipped.
use mailaudit_model::{MAX_FIELD_LEN as MAX_FIELD, MAX_ITEMS};

pub(crate) const NO_MESSAGE_ID: &str = "Dovecot logged no Message-ID for this message: its events name only the UID, and no mail_log line (save, copy, flag_change or expunge, with mail_log_fields msgid subject) about this UID was seen; see docs/dovecot.md";
const APPEND_HINT: &str = "Dovecot's events do not identify appended messages; mail_log's save line does (mail_log_events save); see docs/dovecot.md";
const POP3_RETR_HINT: &str = "POP3 in Dovecot 2.3 does not log which messages were retrieved";
const POP3_DEL_HINT: &str = "POP3 in Dovecot 2.3 does not log which messages were deleted unless mail_log_events includes expunge";
const DELIVER_HINT: &str =
    "Dovecot reported neither the Message-ID nor the Subject of this delivery";

/// Everything the source knows between inputs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    sessions: BTreeMap<String, Session>,
    cache: MsgCache,
    /// The latest event time seen: the year for year-less log stamps comes from here.
    latest_event: Option<Timestamp>,
    latest_line: Option<Timestamp>,
    next_seq: u64,
    pub(crate) stats: SourceStats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Session {
    /// Dovecot's session id, when the key is one (not a synthetic key for id-less lines).
    session_id: Option<String>,
    protocol: Option<String>,
    /// The mail user the session serves (for a master login: the impersonated user).
    user: Option<String>,
    master_user: Option<String>,
    ip: Option<IpAddr>,
    port: Option<u16>,
    tls: Option<bool>,
    client_name: Option<String>,
    host: Option<String>,
    selected: Option<String>,
    /// Command events arrive for this session: its log lines only complement them.
    command_events: bool,
    log_seen: bool,
    login_done: bool,
    failed_from_events: u32,
    logout_done: bool,
    ended: bool,
    last_activity: Option<Timestamp>,
    latest_event: Option<Timestamp>,
    drafts: VecDeque<Draft>,
    lines: Vec<Buffered>,
    subs: Vec<Sub>,
}

impl Session {
    fn touch(&mut self, t: Timestamp) {
        self.last_activity = Some(self.last_activity.map_or(t, |l| l.max(t)));
    }

    fn absorb(&mut self, c: &Common) {
        if c.ip.is_some() {
            self.ip = c.ip;
        }
        if c.port.is_some() {
            self.port = c.port;
        }
        if c.host.is_some() {
            self.host.clone_from(&c.host);
        }
        if self.protocol.is_none() {
            self.protocol = c.service.as_deref().map(classify::protocol);
        }
        if self.user.is_none() {
            self.user.clone_from(&c.user);
        }
        self.touch(c.time);
        self.latest_event = Some(self.latest_event.map_or(c.time, |l| l.max(c.time)));
    }

    fn absorb_line(
        &mut self,
        protocol: &str,
        user: Option<&str>,
        host: Option<&str>,
        t: Timestamp,
    ) {
        if self.protocol.is_none() && !protocol.is_empty() {
            self.protocol = Some(protocol.to_string());
        }
        self.absorb_line_rest(user, host, t);
    }

    /// `absorb_line` with the protocol named by `service`, computed only when still unknown.
    fn absorb_line_service(
        &mut self,
        service: &str,
        user: Option<&str>,
        host: Option<&str>,
        t: Timestamp,
    ) {
        if self.protocol.is_none() {
            let protocol = classify::protocol(service);
            if !protocol.is_empty() {
                self.protocol = Some(protocol);
            }
        }
        self.absorb_line_rest(user, host, t);
    }

    fn absorb_line_rest(&mut self, user: Option<&str>, host: Option<&str>, t: Timestamp) {
        if self.user.is_none() {
            self.user = user.map(str::to_string);
        }
        if self.host.is_none() {
            self.host = host.map(str::to_string);
        }
        self.log_seen = true;
        self.touch(t);
    }
}

/// An observation being assembled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Draft {
    seq: u64,
    time: Timestamp,
    start: Option<Timestamp>,
    deadline: Timestamp,
    /// Session-ending (logout): ordered after everything else of the session.
    terminal: bool,
    reference: String,
    host: Option<String>,
    event_user: Option<String>,
    ip: Option<IpAddr>,
    port: Option<u16>,
    result: OperationResult,
    reason: Option<String>,
    body: Body,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Body {
    Login {
        from_event: bool,
        failed: bool,
        actor: String,
        acting_as: Option<String>,
        mechanism: Option<String>,
        attempts: Option<u32>,
        tls: Option<bool>,
    },
    Logout {
        from_event: bool,
        line_time: Option<Timestamp>,
        disconnect: Option<String>,
    },
    Simple {
        op: Operation,
        folder: Option<String>,
        dest: Option<String>,
        params: Vec<Parameter>,
    },
    Fetch {
        cmd: String,
        folder: Option<String>,
        set: SeqSet,
        by_uid: bool,
        uids: Vec<u32>,
    },
    Store {
        folder: Option<String>,
        kind: StoreKind,
        op: FlagOp,
        flags: Vec<String>,
        change: String,
        set: SeqSet,
        by_uid: bool,
        lines: Vec<MailLogFields>,
    },
    CopyMove {
        cmd: String,
        is_move: bool,
        folder: Option<String>,
        dest: String,
        set: SeqSet,
        by_uid: bool,
        copies: Vec<MailLogFields>,
        expunge_lines: Vec<MailLogFields>,
        expunged: Vec<u32>,
    },
    Expunge {
        cmd: String,
        folder: Option<String>,
        set: Option<SeqSet>,
        lines: Vec<MailLogFields>,
        uids: Vec<u32>,
    },
    Append {
        folder: Option<String>,
        lines: Vec<MailLogFields>,
    },
    Deliver {
        owner: String,
        sender: String,
        folder: Option<String>,
        message_id: Option<String>,
        subject: Option<String>,
        size: Option<u64>,
        uid: Option<u32>,
        saved: bool,
        forwarded: Vec<String>,
    },
    /// Built from log lines alone (no command event): nothing more to wait for.
    Ready(Box<Ready>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ready {
    op: Operation,
    folder: Option<String>,
    dest: Option<String>,
    items: Vec<ItemSrc>,
    params: Vec<Parameter>,
    /// A final actor that is not the session's user (a delivery's sender, doveadm).
    actor: Option<String>,
    owner: Option<String>,
    administrative: bool,
}

/// What is known of one message before enrichment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ItemSrc {
    uid: Option<u32>,
    msgid: Option<String>,
    subject: Option<String>,
    size: Option<u64>,
    hint: Option<String>,
}

impl ItemSrc {
    fn uid(uid: u32) -> Self {
        ItemSrc {
            uid: Some(uid),
            ..ItemSrc::default()
        }
    }

    fn hinted(hint: &str) -> Self {
        ItemSrc {
            hint: Some(hint.to_string()),
            ..ItemSrc::default()
        }
    }
}

impl From<&MailLogFields> for ItemSrc {
    fn from(f: &MailLogFields) -> Self {
        ItemSrc {
            uid: f.uid,
            msgid: f.msgid.clone(),
            subject: f.subject.clone(),
            size: f.size,
            hint: None,
        }
    }
}

/// A log line waiting for its command (or, without command events, to become a record).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Buffered {
    time: Timestamp,
    deadline: Timestamp,
    reference: String,
    host: Option<String>,
    user: Option<String>,
    entry: Entry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Entry {
    MailLog(MailLogKind, MailLogFields),
    Created(String),
    Deleted(String),
    Renamed(String, String),
    Saved {
        msgid: String,
        folder: String,
    },
    Forwarded {
        msgid: String,
        to: String,
    },
    /// POP3 sessions have no command events: their `mail_opened`/`mail_expunged` wait here.
    Pop3Retr(u32),
    Pop3Expunged(u32),
}

/// A `mail_opened` / `mail_expunged` event waiting for its command.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sub {
    opened: bool,
    start: Option<Timestamp>,
    end: Timestamp,
    deadline: Timestamp,
    mailbox: Option<String>,
    uid: u32,
    cmd_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MsgInfo {
    msgid: Option<String>,
    subject: Option<String>,
    size: Option<u64>,
}

/// Message identities by (owner, folder, UID), oldest evicted first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MsgCache {
    map: BTreeMap<String, MsgInfo>,
    order: VecDeque<String>,
}

const SEP: char = '\u{1f}';

impl MsgCache {
    /// `format!("{owner}{SEP}{folder}{SEP}{uid:010}")`, without the formatting machinery.
    fn key(owner: &str, folder: &str, uid: u32) -> String {
        let mut k = String::with_capacity(owner.len() + folder.len() + 2 * SEP.len_utf8() + 10);
        k.push_str(owner);
        k.push(SEP);
        k.push_str(folder);
        k.push(SEP);
        let mut digits = [b'0'; 10];
        let mut n = uid;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        k.extend(digits.iter().map(|&b| char::from(b)));
        k
    }

    fn get(&self, owner: &str, folder: &str, uid: u32) -> Option<&MsgInfo> {
        self.map.get(&Self::key(owner, folder, uid))
    }

    fn put(&mut self, owner: &str, folder: &str, uid: u32, info: MsgInfo) {
        let key = Self::key(owner, folder, uid);
        if let Some(old) = self.map.get_mut(&key) {
            if info.msgid.is_some() {
                old.msgid = info.msgid;
            }
            if info.subject.is_some() {
                old.subject = info.subject;
            }
            if info.size.is_some() {
                old.size = info.size;
            }
            return;
        }
        self.map.insert(key.clone(), info);
        self.order.push_back(key);
        while self.map.len() > CACHE_CAPACITY {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }

    fn folder_keys(&self, owner: &str, folder: &str) -> Vec<String> {
        let prefix = format!("{owner}{SEP}{folder}{SEP}");
        self.map
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn rename(&mut self, owner: &str, from: &str, to: &str) {
        let old_prefix_len = format!("{owner}{SEP}{from}{SEP}").len();
        for key in self.folder_keys(owner, from) {
            if let (Some(info), Some(uid)) = (self.map.remove(&key), key.get(old_prefix_len..)) {
                let new_key = format!("{owner}{SEP}{to}{SEP}{uid}");
                if let Some(slot) = self.order.iter_mut().find(|k| **k == key) {
                    slot.clone_from(&new_key);
                }
                self.map.insert(new_key, info);
            }
        }
    }

    fn drop_folder(&mut self, owner: &str, folder: &str) {
        let keys = self.folder_keys(owner, folder);
        for key in &keys {
            self.map.remove(key);
        }
        if !keys.is_empty() {
            self.order.retain(|k| self.map.contains_key(k));
        }
    }
}

/// When a session's queue may release its front draft.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// Only when it is complete and nothing unclaimed is waiting.
    Ready,
    /// Also when its deadline has passed.
    At(Timestamp),
    /// Unconditionally.
    All,
}

fn window(cfg: &DovecotConfig) -> i64 {
    i64::try_from(cfg.correlation_window_secs)
        .unwrap_or(i64::MAX)
        .min(86_400)
}

fn max_time(a: Option<Timestamp>, b: Timestamp) -> Timestamp {
    a.map_or(b, |a| a.max(b))
}

fn event_time(ev: &Event) -> Timestamp {
    match ev {
        Event::Auth(a) => a.c.time,
        Event::ImapCommand(c) => c.c.time,
        Event::MailOpened(m) | Event::MailExpunged(m) | Event::MailExpungeRequested(m) => m.c.time,
        Event::Delivery(d) => d.c.time,
        Event::Sieve(s) => s.c.time,
        Event::Other { time, .. } => *time,
    }
}

/// The session key of an event: Dovecot's session id, else service and user.
fn event_key(c: &Common) -> Option<(String, bool)> {
    if let Some(s) = c.session.as_ref().filter(|s| !s.is_empty()) {
        return Some((s.clone(), true));
    }
    let user = c.user.as_ref()?;
    Some((
        format!("{}({user})", c.service.as_deref().unwrap_or("event")),
        false,
    ))
}

/// The session key of a log line: `<pid><session>`, else `service(user)<pid>`.
fn line_key(
    service: &str,
    user: Option<&str>,
    pid: Option<&str>,
    session: Option<&str>,
) -> Option<(String, bool)> {
    if let Some(s) = session {
        return Some((s.to_string(), true));
    }
    let user = user?;
    let pid = pid.unwrap_or_default();
    let mut k = String::with_capacity(service.len() + user.len() + pid.len() + 4);
    k.push_str(service);
    k.push('(');
    k.push_str(user);
    k.push_str(")<");
    k.push_str(pid);
    k.push('>');
    Some((k, false))
}

fn order_key(d: &Draft) -> (bool, Timestamp, Timestamp, u64) {
    (d.terminal, d.time, d.start.unwrap_or(d.time), d.seq)
}

fn resort(sess: &mut Session) {
    sess.drafts.make_contiguous().sort_by_key(order_key);
}

fn param(name: &str, value: impl Into<String>) -> Parameter {
    Parameter {
        name: name.to_string(),
        value: value.into(),
    }
}

impl State {
    fn next(&mut self) -> u64 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn session(&mut self, key: &str, real: bool) -> &mut Session {
        self.sessions
            .entry(key.to_string())
            .or_insert_with(|| Session {
                session_id: real.then(|| key.to_string()),
                ..Session::default()
            })
    }

    /// One exported event's JSON text.
    pub(crate) fn push_event(
        &mut self,
        cfg: &DovecotConfig,
        text: &str,
        reference: &str,
    ) -> Result<Vec<Observation>, DovecotError> {
        let out = self.event_text(cfg, text, reference)?;
        self.stats.observations += out.len() as u64;
        Ok(out)
    }

    /// One log line.
    pub(crate) fn push_line(
        &mut self,
        cfg: &DovecotConfig,
        line: &str,
        reference: &str,
    ) -> Result<Vec<Observation>, DovecotError> {
        self.stats.log_lines += 1;
        // The event parser trims the text itself; only the start decides here.
        let trimmed = line.trim_start();
        // `transport = file` writes bare JSON lines: an event all the same.
        let out = if trimmed.starts_with('{') {
            self.event_text(cfg, trimmed, reference)?
        } else {
            match logline::split_line(line) {
                Some(head) => self.on_line(cfg, head, reference)?,
                None => {
                    self.stats.ignored += 1;
                    Vec::new()
                }
            }
        };
        self.stats.observations += out.len() as u64;
        Ok(out)
    }

    pub(crate) fn flush_due(&mut self, cfg: &DovecotConfig, now: Timestamp) -> Vec<Observation> {
        let keys: Vec<String> = self.sessions.keys().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            self.expire(cfg, &key, Some(now));
            out.extend(self.release(cfg, &key, Due::At(now)));
            self.collect_garbage(&key, now);
        }
        out.sort_by_cached_key(|o| o.time);
        self.stats.observations += out.len() as u64;
        out
    }

    pub(crate) fn flush_all(&mut self, cfg: &DovecotConfig) -> Vec<Observation> {
        let keys: Vec<String> = self.sessions.keys().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            self.expire(cfg, &key, None);
            out.extend(self.release(cfg, &key, Due::All));
        }
        out.sort_by_cached_key(|o| o.time);
        self.stats.observations += out.len() as u64;
        out
    }

    fn event_text(
        &mut self,
        cfg: &DovecotConfig,
        text: &str,
        reference: &str,
    ) -> Result<Vec<Observation>, DovecotError> {
        match event::parse_event(text) {
            Ok(ev) => {
                self.stats.events += 1;
                Ok(self.on_event(cfg, ev, reference))
            }
            Err(e) => {
                self.stats.malformed += 1;
                Err(match e {
                    EventError::Json {
                        line,
                        column,
                        message,
                    } => DovecotError::Json {
                        reference: reference.to_string(),
                        line,
                        column,
                        message,
                    },
                    EventError::NotAnEvent(reason) => DovecotError::NotAnEvent {
                        reference: reference.to_string(),
                        reason,
                    },
                })
            }
        }
    }

    fn on_event(&mut self, cfg: &DovecotConfig, ev: Event, reference: &str) -> Vec<Observation> {
        // The year hint for log lines; a corrupt far-future stamp must not poison it.
        let t = event_time(&ev);
        if t <= Timestamp::now().plus_secs(86_400) {
            self.latest_event = Some(max_time(self.latest_event, t));
        }
        let key = match ev {
            Event::Auth(a) => self.on_auth(cfg, *a, reference),
            Event::ImapCommand(c) => self.on_imap(cfg, *c, reference),
            Event::MailOpened(m) => self.on_mail_event(cfg, *m, true, reference),
            Event::MailExpunged(m) | Event::MailExpungeRequested(m) => {
                self.on_mail_event(cfg, *m, false, reference)
            }
            Event::Delivery(d) => self.on_delivery(cfg, *d, reference),
            Event::Sieve(s) => self.on_sieve(cfg, *s, reference),
            Event::Other { .. } => {
                self.stats.ignored += 1;
                None
            }
        };
        match key {
            Some(k) => self.settle(cfg, &k),
            None => Vec::new(),
        }
    }

    /// After an input: enforce the caps, then release what is complete.
    fn settle(&mut self, cfg: &DovecotConfig, key: &str) -> Vec<Observation> {
        let Some(sess) = self.sessions.get_mut(key) else {
            return Vec::new();
        };
        let (drafts, buffered) = (sess.drafts.len(), sess.lines.len() + sess.subs.len());
        if buffered <= MAX_BUFFERED_PER_SESSION && drafts <= MAX_DRAFTS_PER_SESSION {
            // The common case: one lookup, straight to the release.
            return release_session(cfg, sess, &self.cache, &mut self.stats, Due::Ready);
        }
        let mut out = Vec::new();
        if buffered > MAX_BUFFERED_PER_SESSION {
            self.expire_oldest(cfg, key, buffered - MAX_BUFFERED_PER_SESSION);
        }
        if drafts > MAX_DRAFTS_PER_SESSION {
            let cache = &self.cache;
            if let Some(sess) = self.sessions.get_mut(key) {
                let excess: Vec<Draft> = sess
                    .drafts
                    .drain(..drafts - MAX_DRAFTS_PER_SESSION)
                    .collect();
                for d in excess {
                    out.extend(build(cfg, sess, d, cache));
                }
            }
        }
        let released = self.release(cfg, key, Due::Ready);
        if out.is_empty() {
            return released;
        }
        out.extend(released);
        out
    }

    fn on_auth(&mut self, cfg: &DovecotConfig, a: AuthEvent, reference: &str) -> Option<String> {
        let proto = classify::protocol(a.c.service.as_deref().unwrap_or_default());
        let who = classify::auth_identity(
            a.c.user.as_deref(),
            a.original_user.as_deref(),
            a.master_user.as_deref(),
            a.login_user.as_deref(),
        );
        let (Some((actor, acting_as)), true) = (who, classify::is_mailbox_protocol(&proto)) else {
            self.stats.ignored += 1;
            return None;
        };
        let (key, real) = match a.c.session.as_ref().filter(|s| !s.is_empty()) {
            Some(s) => (s.clone(), true),
            None => (format!("auth:{reference}"), false),
        };
        let seq = self.next();
        let win = window(cfg);
        let tls = a
            .transport
            .as_deref()
            .and_then(classify::tls_from_transport);
        let sess = self.session(&key, real);
        sess.absorb(&a.c);
        sess.protocol = Some(proto);
        if tls.is_some() {
            sess.tls = tls;
        }
        let failed = !a.success;
        if !failed {
            sess.master_user = acting_as.as_ref().map(|_| actor.clone());
            sess.user = Some(acting_as.clone().unwrap_or_else(|| actor.clone()));
        } else {
            sess.failed_from_events += 1;
        }
        let pending = sess.drafts.iter_mut().find(
            |d| matches!(d.body, Body::Login { from_event: false, failed: f, .. } if f == failed),
        );
        let body = Body::Login {
            from_event: true,
            failed,
            actor,
            acting_as,
            mechanism: a.mechanism.clone(),
            attempts: None,
            tls,
        };
        let reason = failed.then(|| {
            a.error
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "authentication failed".to_string())
        });
        if let Some(d) = pending {
            // The login line came first: the event is canonical, the line's TLS stays.
            let line_tls = match &d.body {
                Body::Login { tls, .. } => *tls,
                _ => None,
            };
            d.body = body;
            if let Body::Login { tls: t, .. } = &mut d.body {
                *t = t.or(line_tls);
            }
            d.time = a.c.time;
            d.start = a.c.start;
            d.deadline = a.c.time.plus_secs(win);
            d.reference = reference.to_string();
            d.host.clone_from(&a.c.host);
            d.ip = a.c.ip.or(d.ip);
            d.port = a.c.port.or(d.port);
            d.reason = reason;
            resort(sess);
        } else if failed || !sess.login_done {
            let d = Draft {
                seq,
                time: a.c.time,
                start: a.c.start,
                deadline: a.c.time.plus_secs(win),
                terminal: false,
                reference: reference.to_string(),
                host: a.c.host.clone(),
                event_user: None,
                ip: a.c.ip,
                port: a.c.port,
                result: if failed {
                    OperationResult::Failed
                } else {
                    OperationResult::Succeeded
                },
                reason,
                body,
            };
            insert_draft(sess, d);
        }
        if !failed {
            sess.login_done = true;
        }
        Some(key)
    }

    fn on_imap(
        &mut self,
        cfg: &DovecotConfig,
        c: ImapCommandEvent,
        reference: &str,
    ) -> Option<String> {
        let Some((key, real)) = event_key(&c.c) else {
            self.stats.ignored += 1;
            return None;
        };
        let (class, by_uid) = classify::classify_command(&c.cmd_name);
        let seq = self.next();
        let win = window(cfg);
        let sess = self.session(&key, real);
        sess.absorb(&c.c);
        if sess.protocol.is_none() {
            sess.protocol = Some("imap".to_string());
        }
        sess.command_events = true;
        let (result, reason) =
            classify::command_result(c.reply_state.as_deref(), c.reply.as_deref());
        let Some(body) = imap_body(&c, class, by_uid, result, sess) else {
            self.stats.ignored += 1;
            return Some(key);
        };
        let mut d = Draft {
            seq,
            time: c.c.time,
            start: c.c.start,
            deadline: c.c.time.plus_secs(win),
            terminal: false,
            reference: reference.to_string(),
            host: c.c.host.clone(),
            event_user: c.c.user.clone(),
            ip: c.c.ip,
            port: c.c.port,
            result,
            reason,
            body,
        };
        if class == CommandClass::Logout {
            sess.ended = true;
            d.terminal = true;
            if sess.logout_done {
                let pending = sess.drafts.iter_mut().find(|x| {
                    matches!(
                        x.body,
                        Body::Logout {
                            from_event: false,
                            ..
                        }
                    )
                });
                match pending {
                    Some(p) => {
                        *p = d;
                        resort(sess);
                    }
                    None => self.stats.ignored += 1,
                }
                return Some(key);
            }
            sess.logout_done = true;
        }
        insert_draft(sess, d);
        Some(key)
    }

    fn on_mail_event(
        &mut self,
        cfg: &DovecotConfig,
        m: MailEvent,
        opened: bool,
        reference: &str,
    ) -> Option<String> {
        let (Some((key, real)), Some(uid)) = (event_key(&m.c), m.uid) else {
            self.stats.ignored += 1;
            return None;
        };
        let win = window(cfg);
        let sess = self.session(&key, real);
        sess.absorb(&m.c);
        let has = |code: &str| m.reason_codes.iter().any(|r| r == code);
        if sess.protocol.as_deref() == Some("pop3") {
            let entry = match (opened, has("pop3:cmd_retr")) {
                (true, true) => Entry::Pop3Retr(uid),
                (true, false) => {
                    self.stats.ignored += 1;
                    return None;
                }
                (false, _) => Entry::Pop3Expunged(uid),
            };
            sess.lines.push(Buffered {
                time: m.c.time,
                deadline: m.c.time.plus_secs(win),
                reference: reference.to_string(),
                host: m.c.host.clone(),
                user: m.c.user.clone(),
                entry,
            });
            return Some(key);
        }
        if opened && !has("imap:fetch_body") {
            // Headers, envelopes, sizes, LMTP's own reads: not a MessageBind.
            self.stats.ignored += 1;
            return None;
        }
        let sub = Sub {
            opened,
            start: m.c.start,
            end: m.c.time,
            deadline: m.c.time.plus_secs(win),
            mailbox: m.mailbox,
            uid,
            cmd_name: m.cmd_name,
        };
        match sess.drafts.iter_mut().find(|d| accepts_sub(d, &sub)) {
            Some(d) => take_sub(d, &sub),
            None => sess.subs.push(sub),
        }
        Some(key)
    }

    fn on_delivery(
        &mut self,
        cfg: &DovecotConfig,
        e: DeliveryEvent,
        reference: &str,
    ) -> Option<String> {
        let owner = e.c.user.clone().or_else(|| e.rcpt_to.clone());
        let (Some((key, real)), Some(owner)) = (event_key(&e.c), owner) else {
            self.stats.ignored += 1;
            return None;
        };
        let sender = [&e.mail_from, &e.message_from]
            .into_iter()
            .flatten()
            .map(|s| s.trim().to_lowercase())
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "<>".to_string());
        let seq = self.next();
        let win = window(cfg);
        let sess = self.session(&key, real);
        sess.absorb(&e.c);
        if sess.protocol.is_none() {
            sess.protocol = Some("lmtp".to_string());
        }
        sess.command_events = true;
        let (result, reason) = match e.error.as_ref().filter(|s| !s.is_empty()) {
            Some(err) => (OperationResult::Failed, Some(err.clone())),
            None => (OperationResult::Succeeded, None),
        };
        let d = Draft {
            seq,
            time: e.c.time,
            start: e.c.start,
            deadline: e.c.time.plus_secs(win),
            terminal: false,
            reference: reference.to_string(),
            host: e.c.host.clone(),
            event_user: None,
            ip: e.c.ip,
            port: e.c.port,
            result,
            reason,
            body: Body::Deliver {
                owner,
                sender,
                folder: None,
                message_id: e.message_id,
                subject: e.subject,
                size: e.size,
                uid: None,
                saved: false,
                forwarded: Vec::new(),
            },
        };
        insert_draft(sess, d);
        Some(key)
    }

    fn on_sieve(&mut self, cfg: &DovecotConfig, s: SieveEvent, reference: &str) -> Option<String> {
        let cmd = s.cmd_name.to_ascii_uppercase();
        let key = event_key(&s.c);
        let (Some((key, real)), true) = (key, classify::sieve_changes_rules(&cmd)) else {
            self.stats.ignored += 1;
            return None;
        };
        let toks = imap::tokenize(&s.args);
        let script = s
            .script_name
            .clone()
            .or_else(|| toks.first().map(|t| t.text().to_string()))
            .unwrap_or_default();
        let mut params = vec![param("script_name", script), param("command", cmd.clone())];
        if cmd == "RENAMESCRIPT" {
            if let Some(new) = toks.get(1) {
                params.push(param("new_script_name", new.text()));
            }
        }
        let (result, reason) = match s.error.as_ref().filter(|e| !e.is_empty()) {
            Some(err) => (OperationResult::Failed, Some(err.clone())),
            None => (OperationResult::Succeeded, None),
        };
        let seq = self.next();
        let win = window(cfg);
        let sess = self.session(&key, real);
        sess.absorb(&s.c);
        sess.protocol = Some("managesieve".to_string());
        sess.command_events = true;
        let d = Draft {
            seq,
            time: s.c.time,
            start: s.c.start,
            deadline: s.c.time.plus_secs(win),
            terminal: false,
            reference: reference.to_string(),
            host: s.c.host.clone(),
            event_user: s.c.user.clone(),
            ip: s.c.ip,
            port: s.c.port,
            result,
            reason,
            body: Body::Simple {
                op: Operation::UpdateInboxRules,
                folder: None,
                dest: None,
                params,
            },
        };
        insert_draft(sess, d);
        Some(key)
    }

    fn on_line(
        &mut self,
        cfg: &DovecotConfig,
        line: LineHead<'_>,
        reference: &str,
    ) -> Result<Vec<Observation>, DovecotError> {
        let LineHead {
            time,
            host,
            service,
            user,
            pid,
            session,
            level,
            body,
        } = line;
        if body.starts_with('{') {
            return self.event_text(cfg, body, reference);
        }
        if level != Level::Info {
            self.stats.ignored += 1;
            return Ok(Vec::new());
        }
        let message = logline::classify(service, body);
        if matches!(message, Message::Other) {
            self.stats.ignored += 1;
            return Ok(Vec::new());
        }
        let hint = self
            .latest_event
            .or(self.latest_line)
            .unwrap_or_else(Timestamp::now);
        let Some(t) = logtime::resolve(time, hint) else {
            self.stats.ignored += 1;
            return Ok(Vec::new());
        };
        self.latest_line = Some(t);
        let ctx = LineCtx {
            time: t,
            host,
            service,
            user,
            reference,
        };
        let key = match message {
            Message::Login(f) => self.on_login_line(cfg, f, None, &ctx),
            Message::LoginFailed(f, attempts) => self.on_login_line(cfg, f, Some(attempts), &ctx),
            Message::MasterLogin {
                master,
                target,
                session,
            } => self.on_master_line(&master, &target, &session, t),
            Message::Disconnected { reason, pop3 } => {
                let key = line_key(service, ctx.user, pid, session);
                self.on_disconnect(cfg, key, reason, pop3, &ctx)
            }
            Message::IdSent(name) => {
                let key = line_key(service, ctx.user, pid, session);
                key.map(|(k, real)| {
                    let s = self.session(&k, real);
                    s.client_name = Some(name);
                    s.absorb_line_service(service, ctx.user, ctx.host, t);
                    k
                })
            }
            Message::MailLog(kind, f) => {
                let key = line_key(service, ctx.user, pid, session);
                self.on_entry(cfg, key, Entry::MailLog(kind, f), &ctx)
            }
            Message::MailboxCreated(n) => {
                let key = line_key(service, ctx.user, pid, session);
                self.on_entry(cfg, key, Entry::Created(n), &ctx)
            }
            Message::MailboxDeleted(n) => {
                let key = line_key(service, ctx.user, pid, session);
                self.on_entry(cfg, key, Entry::Deleted(n), &ctx)
            }
            Message::MailboxRenamed(a, b) => {
                let key = line_key(service, ctx.user, pid, session);
                self.on_entry(cfg, key, Entry::Renamed(a, b), &ctx)
            }
            Message::Saved { msgid, folder } => {
                let key = line_key(service, ctx.user, pid, session);
                self.on_entry(cfg, key, Entry::Saved { msgid, folder }, &ctx)
            }
            Message::Forwarded { msgid, to } => {
                let key = line_key(service, ctx.user, pid, session);
                self.on_entry(cfg, key, Entry::Forwarded { msgid, to }, &ctx)
            }
            Message::Event(_) | Message::Other => None,
        };
        Ok(match key {
            Some(k) => self.settle(cfg, &k),
            None => Vec::new(),
        })
    }

    /// A login line (`imap-login: Login: user=<…>`), or a failed one with its attempts. The
    /// auth event reports logins better (it knows master users); a line only becomes the
    /// record when no event reported the same login.
    fn on_login_line(
        &mut self,
        cfg: &DovecotConfig,
        f: LoginFields,
        failed_attempts: Option<u32>,
        ctx: &LineCtx,
    ) -> Option<String> {
        let failed = failed_attempts.is_some();
        let proto = classify::protocol(ctx.service);
        let (Some(user), true) = (f.user.clone(), classify::is_mailbox_protocol(&proto)) else {
            self.stats.ignored += 1;
            return None;
        };
        let (key, real) = match &f.session {
            Some(s) => (s.clone(), true),
            None => (format!("login:{}", ctx.reference), false),
        };
        let seq = self.next();
        let win = window(cfg);
        let sess = self.session(&key, real);
        sess.absorb_line(&proto, Some(&user), ctx.host, ctx.time);
        if failed {
            sess.ended = true;
        }
        if sess.ip.is_none() {
            sess.ip = f.ip;
        }
        if sess.tls.is_none() {
            sess.tls = f.tls;
        }
        let reported = if failed {
            sess.failed_from_events > 0
        } else {
            sess.login_done
        };
        if reported {
            // The auth event already reported this login: the line only confirmed it.
            return Some(key);
        }
        let (actor, acting_as) = match &sess.master_user {
            Some(m) if !failed && !m.eq_ignore_ascii_case(&user) => (m.clone(), Some(user)),
            _ => (user, None),
        };
        let d = Draft {
            seq,
            time: ctx.time,
            start: None,
            deadline: ctx.time.plus_secs(win),
            terminal: false,
            reference: ctx.reference.to_string(),
            host: ctx.host.map(str::to_string),
            event_user: None,
            ip: f.ip,
            port: f.port,
            result: if failed {
                OperationResult::Failed
            } else {
                OperationResult::Succeeded
            },
            reason: failed.then(|| "authentication failed".to_string()),
            body: Body::Login {
                from_event: false,
                failed,
                actor,
                acting_as,
                mechanism: f.method,
                attempts: failed_attempts,
                tls: f.tls,
            },
        };
        insert_draft(sess, d);
        if !failed {
            sess.login_done = true;
        }
        Some(key)
    }

    fn on_master_line(
        &mut self,
        master: &str,
        target: &str,
        session: &str,
        t: Timestamp,
    ) -> Option<String> {
        let sess = self.session(session, true);
        sess.touch(t);
        if master.eq_ignore_ascii_case(target) {
            return Some(session.to_string());
        }
        sess.master_user = Some(master.to_string());
        sess.user = Some(target.to_string());
        for d in &mut sess.drafts {
            if let Body::Login {
                from_event: false,
                actor,
                acting_as,
                ..
            } = &mut d.body
            {
                if actor.eq_ignore_ascii_case(target) {
                    *actor = master.to_string();
                    *acting_as = Some(target.to_string());
                }
            }
        }
        Some(session.to_string())
    }

    fn on_disconnect(
        &mut self,
        cfg: &DovecotConfig,
        key: Option<(String, bool)>,
        reason: String,
        pop3: Option<logline::Pop3Summary>,
        ctx: &LineCtx,
    ) -> Option<String> {
        let Some((key, real)) = key else {
            self.stats.ignored += 1;
            return None;
        };
        let win = window(cfg);
        let seq = self.next();
        let pop3_seq = (self.next(), self.next());
        let sess = self.session(&key, real);
        sess.absorb_line_service(ctx.service, ctx.user, ctx.host, ctx.time);
        sess.ended = true;
        if let Some(p) = pop3 {
            pop3_summary(sess, p, ctx, pop3_seq);
        }
        if sess.logout_done {
            return Some(key);
        }
        sess.logout_done = true;
        let d = Draft {
            seq,
            time: ctx.time,
            start: None,
            deadline: ctx.time.plus_secs(win),
            terminal: true,
            reference: ctx.reference.to_string(),
            host: ctx.host.map(str::to_string),
            event_user: ctx.user.map(str::to_string),
            ip: None,
            port: None,
            result: OperationResult::Succeeded,
            reason: None,
            body: Body::Logout {
                from_event: false,
                line_time: Some(ctx.time),
                disconnect: (reason != "Logged out").then_some(reason),
            },
        };
        insert_draft(sess, d);
        Some(key)
    }

    fn on_entry(
        &mut self,
        cfg: &DovecotConfig,
        key: Option<(String, bool)>,
        entry: Entry,
        ctx: &LineCtx,
    ) -> Option<String> {
        let Some((key, real)) = key else {
            self.stats.ignored += 1;
            return None;
        };
        if matches!(entry, Entry::MailLog(MailLogKind::Autoexpunge, _)) {
            // Dovecot's own retention, not anyone's action.
            self.stats.ignored += 1;
            return None;
        }
        let win = window(cfg);
        let user = match ctx.user {
            Some(u) => Some(u),
            None => self.sessions.get(&key).and_then(|s| s.user.as_deref()),
        };
        if let Some(u) = user {
            learn(cfg, &mut self.cache, u, &entry);
        }
        let sess = self.session(&key, real);
        sess.absorb_line_service(ctx.service, ctx.user, ctx.host, ctx.time);
        match sess.drafts.iter_mut().find(|d| accepts_line(d, &entry)) {
            Some(d) => take_line(d, entry),
            None => sess.lines.push(Buffered {
                time: ctx.time,
                deadline: ctx.time.plus_secs(win),
                reference: ctx.reference.to_string(),
                host: ctx.host.map(str::to_string),
                user: ctx.user.map(str::to_string),
                entry,
            }),
        }
        Some(key)
    }

    /// Releases a session's drafts from the front while `due` allows.
    fn release(&mut self, cfg: &DovecotConfig, key: &str, due: Due) -> Vec<Observation> {
        let Some(sess) = self.sessions.get_mut(key) else {
            return Vec::new();
        };
        release_session(cfg, sess, &self.cache, &mut self.stats, due)
    }

    /// Settles unclaimed sub-events and lines whose window has passed (all with `None`):
    /// dropped where command events tell the story, records of their own where only the log
    /// does.
    fn expire(&mut self, cfg: &DovecotConfig, key: &str, now: Option<Timestamp>) {
        let due = |t: Timestamp| now.is_none_or(|n| t <= n);
        let Some(sess) = self.sessions.get_mut(key) else {
            return;
        };
        let before = sess.subs.len();
        sess.subs.retain(|s| !due(s.deadline));
        self.stats.ignored += (before - sess.subs.len()) as u64;
        let n = sess.lines.iter().take_while(|b| due(b.deadline)).count();
        self.settle_lines(cfg, key, n);
    }

    /// Settles the `n` oldest buffered lines (and, over the cap, sub-events).
    fn expire_oldest(&mut self, cfg: &DovecotConfig, key: &str, n: usize) {
        let Some(sess) = self.sessions.get_mut(key) else {
            return;
        };
        let subs = n.min(sess.subs.len());
        sess.subs.drain(..subs);
        self.stats.ignored += subs as u64;
        let lines = (n - subs).min(sess.lines.len());
        self.settle_lines(cfg, key, lines);
    }

    fn settle_lines(&mut self, cfg: &DovecotConfig, key: &str, n: usize) {
        if n == 0 {
            return;
        }
        let mut seq = self.next_seq;
        let Some(sess) = self.sessions.get_mut(key) else {
            return;
        };
        let n = n.min(sess.lines.len());
        let lines: Vec<Buffered> = sess.lines.drain(..n).collect();
        if sess.command_events {
            self.stats.ignored += lines.len() as u64;
            return;
        }
        let mut ignored = 0u64;
        let readies = group_lines(cfg, sess, lines, &mut ignored);
        self.stats.ignored += ignored;
        for (meta, ready) in readies {
            seq = seq.wrapping_add(1);
            let d = Draft {
                seq,
                time: meta.time,
                start: None,
                deadline: meta.time,
                terminal: false,
                reference: meta.reference,
                host: meta.host,
                event_user: meta.user,
                ip: None,
                port: None,
                result: OperationResult::Succeeded,
                reason: None,
                body: Body::Ready(Box::new(ready)),
            };
            insert_draft(sess, d);
        }
        self.next_seq = seq;
    }

    fn collect_garbage(&mut self, key: &str, now: Timestamp) {
        let remove = self.sessions.get(key).is_some_and(|s| {
            let limit = if s.ended {
                ENDED_GRACE_SECS
            } else {
                IDLE_LIMIT_SECS
            };
            s.drafts.is_empty()
                && s.lines.is_empty()
                && s.subs.is_empty()
                && s.last_activity.is_none_or(|t| t.plus_secs(limit) <= now)
        });
        if remove {
            self.sessions.remove(key);
        }
    }
}

/// Releases a session's drafts from the front while `due` allows.
fn release_session(
    cfg: &DovecotConfig,
    sess: &mut Session,
    cache: &MsgCache,
    stats: &mut SourceStats,
    due: Due,
) -> Vec<Observation> {
    let mut out = Vec::new();
    while let Some(front) = sess.drafts.front() {
        let settled = sess.lines.is_empty() && sess.subs.is_empty();
        let go = match due {
            Due::All => true,
            Due::At(now) => {
                front.deadline <= now || (settled && is_complete(cfg, sess, front, cache))
            }
            Due::Ready => settled && is_complete(cfg, sess, front, cache),
        };
        if !go {
            break;
        }
        let Some(d) = sess.drafts.pop_front() else {
            break;
        };
        let obs = build(cfg, sess, d, cache);
        if obs.is_empty() {
            stats.ignored += 1;
        } else if out.is_empty() {
            out = obs;
        } else {
            out.extend(obs);
        }
    }
    out
}

/// What a log line brings besides its message.
struct LineCtx<'a> {
    time: Timestamp,
    host: Option<&'a str>,
    service: &'a str,
    user: Option<&'a str>,
    reference: &'a str,
}

/// Builds the draft body of an IMAP command; `None` when the command is not audited.
fn imap_body(
    c: &ImapCommandEvent,
    class: CommandClass,
    by_uid: bool,
    result: OperationResult,
    sess: &mut Session,
) -> Option<Body> {
    let toks = imap::tokenize(&c.args);
    let name_arg = |i: usize| toks.get(i).map(|t| imap::decode_mutf7(t.text()));
    let raw_arg = |i: usize| toks.get(i).map(|t| t.text().to_string());
    let selected = c.mailbox.clone().or_else(|| sess.selected.clone());
    let simple = |op: Operation, folder: Option<String>, dest: Option<String>, params| {
        Some(Body::Simple {
            op,
            folder,
            dest,
            params,
        })
    };
    match class {
        CommandClass::FolderBind => {
            let folder = c.mailbox.clone().or_else(|| name_arg(0));
            if result == OperationResult::Succeeded {
                sess.selected.clone_from(&folder);
            }
            simple(Operation::FolderBind, folder, None, Vec::new())
        }
        CommandClass::Fetch => {
            let reads_body = if c.reason_codes.is_empty() {
                imap::fetch_reads_body(&c.args)
            } else {
                c.reason_codes.iter().any(|r| r == "imap:fetch_body")
            };
            reads_body.then(|| Body::Fetch {
                cmd: c.cmd_name.clone(),
                folder: selected,
                set: imap::parse_set(&raw_arg(0).unwrap_or_default()),
                by_uid,
                uids: Vec::new(),
            })
        }
        CommandClass::Store => {
            let parsed = imap::parse_store(&c.args);
            Some(match parsed {
                Some(s) => Body::Store {
                    folder: selected,
                    kind: classify::store_kind(&s),
                    op: s.op,
                    flags: s.flags,
                    change: s.change,
                    set: s.set,
                    by_uid,
                    lines: Vec::new(),
                },
                None => Body::Store {
                    folder: selected,
                    kind: StoreKind::Update,
                    op: FlagOp::Replace,
                    flags: Vec::new(),
                    change: c.args.clone(),
                    set: imap::parse_set(""),
                    by_uid,
                    lines: Vec::new(),
                },
            })
        }
        CommandClass::Copy | CommandClass::Move => {
            if toks.len() < 2 {
                return None;
            }
            Some(Body::CopyMove {
                cmd: c.cmd_name.clone(),
                is_move: class == CommandClass::Move,
                folder: selected,
                dest: name_arg(toks.len() - 1).unwrap_or_default(),
                set: imap::parse_set(&raw_arg(0).unwrap_or_default()),
                by_uid,
                copies: Vec::new(),
                expunge_lines: Vec::new(),
                expunged: Vec::new(),
            })
        }
        CommandClass::Expunge => Some(Body::Expunge {
            cmd: c.cmd_name.clone(),
            folder: selected,
            set: by_uid.then(|| imap::parse_set(&raw_arg(0).unwrap_or_default())),
            lines: Vec::new(),
            uids: Vec::new(),
        }),
        CommandClass::Append => Some(Body::Append {
            folder: c.mailbox.clone().or_else(|| name_arg(0)),
            lines: Vec::new(),
        }),
        CommandClass::FolderCreate => simple(
            Operation::FolderCreate,
            c.mailbox.clone().or_else(|| name_arg(0)),
            None,
            Vec::new(),
        ),
        CommandClass::FolderDelete => simple(
            Operation::FolderDelete,
            c.mailbox.clone().or_else(|| name_arg(0)),
            None,
            Vec::new(),
        ),
        CommandClass::FolderRename => simple(
            Operation::FolderRename,
            c.old_mailbox.clone().or_else(|| name_arg(0)),
            c.new_mailbox.clone().or_else(|| name_arg(1)),
            Vec::new(),
        ),
        CommandClass::SetAcl | CommandClass::DeleteAcl => {
            let mut params = vec![param("identifier", raw_arg(1).unwrap_or_default())];
            if class == CommandClass::SetAcl {
                params.push(param("rights", raw_arg(2).unwrap_or_default()));
            }
            simple(
                Operation::UpdateFolderPermissions,
                name_arg(0).or_else(|| c.mailbox.clone()),
                None,
                params,
            )
        }
        CommandClass::Search => {
            let query = c.human_args.clone().unwrap_or_else(|| c.args.clone());
            simple(
                Operation::SearchQueryInitiated,
                selected,
                None,
                vec![param("query", query)],
            )
        }
        CommandClass::Logout => Some(Body::Logout {
            from_event: true,
            line_time: None,
            disconnect: None,
        }),
        CommandClass::Id => {
            if let Some(name) = imap::parse_id(&c.args) {
                sess.client_name = Some(name);
            }
            None
        }
        CommandClass::Ignored => None,
    }
}
