//! The per-connection state machine: fed the compact copies of client commands and server
//! replies (see `frame`), it keeps who is logged in, the selected folder, the namespaces and
//! the commands in flight, and turns each tagged completion into at most one `Observation`.
//! Pure: no I/O, no clock of its own (callers pass the time); any input is accepted without
//! panicking, and what the codec cannot parse is counted and still recorded as far as the
//! command line is understood.

use crate::config::ProxyConfig;
use crate::names::{self, Head, Kind};
use imap_codec::decode::Decoder;
use imap_codec::imap_types::{
    auth::AuthenticateData,
    command::{Command, CommandBody},
    core::{AString, IString, NString},
    extensions::{binary::LiteralOrLiteral8, uidplus::UidElement},
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section},
    flag::StoreType,
    mailbox::Mailbox,
    response::{Code, Data, Response, Status, StatusKind},
    sequence::{SeqOrUid, Sequence, SequenceSet},
};
use imap_codec::{AuthenticateDataCodec, CommandCodec, ResponseCodec};
use mailaudit_model::{
    Client, Item, Observation, Operation, OperationResult, Parameter, Provenance, Timestamp,
};
use std::net::IpAddr;
use std::sync::Arc;

/// Longest string put into a record field (the model refuses longer ones); a fetch of more
/// messages than a record carries is recorded with the first ones and a count.
use mailaudit_model::{MAX_FIELD_LEN as MAX_FIELD, MAX_ITEMS};

/// Where the connection comes from.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// TLS between the client and the proxy.
    pub tls: bool,
    /// The proxy's name for this connection (in `client.session` and the reference).
    pub id: String,
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub commands: u64,
    pub responses: u64,
    /// Client messages the codec could not parse (recorded from the command line alone).
    pub unparsed_commands: u64,
    /// Server messages the codec could not parse (passed through, not interpreted).
    pub unparsed_responses: u64,
    pub observations: u64,
}

/// What the proxy must do with a command whose first line just arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadAction {
    /// Not a recordable command (or not a command): forward it now.
    Forward,
    /// A recordable command: forward it only once `intent` (the record as far as known now,
    /// kept until the server's reply) is durable.
    Hold {
        tag: String,
        intent: Box<Observation>,
    },
    /// Answer the client with `reply` and never forward the command.
    Refuse { tag: String, reply: String },
}

/// A command the server completed, and its record (none when it reports nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub tag: String,
    pub observation: Option<Observation>,
    /// A COMPRESS the server accepted: both directions are raw deflate after this reply.
    pub starts_compression: bool,
}

#[derive(Debug, Clone, Default)]
struct Identity {
    actor: String,
    acting_as: Option<String>,
}

impl Identity {
    fn target(&self) -> &str {
        self.acting_as.as_deref().unwrap_or(&self.actor)
    }
}

/// A message the server reported, built up from its FETCH responses.
#[derive(Debug, Clone, Default)]
struct Fetched {
    seq: u32,
    uid: Option<u32>,
    message_id: Option<String>,
    subject: Option<String>,
    size: Option<u64>,
    body: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    tag: String,
    head: Head,
    time: Timestamp,
    folder: Option<String>,
    dest: Option<String>,
    set: Option<String>,
    set_uids: Option<Vec<u32>>,
    body_fetch: bool,
    flags: Option<String>,
    soft_delete: bool,
    query: Option<String>,
    extra: Vec<Parameter>,
    login: Option<(Identity, String)>,
    append: Option<Fetched>,
    fetched: Vec<Fetched>,
    expunged: u32,
    vanished: Vec<u32>,
    copy_uids: Option<(Vec<u32>, Vec<u32>)>,
    append_uid: Option<u32>,
    parsed: bool,
}

/// The state of one proxied connection.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<ProxyConfig>,
    conn: ConnInfo,
    user: Option<Identity>,
    selected: Option<String>,
    /// Messages marked \Deleted in the selected folder by this session (CLOSE expunges them).
    deleted_marked: bool,
    pending: Vec<Pending>,
    /// The tag of an AUTHENTICATE waiting for the client's next data line.
    auth_waiting: Option<String>,
    idle_tag: Option<String>,
    other_prefixes: Vec<(String, Option<char>)>,
    shared_prefixes: Vec<String>,
    client_name: Option<String>,
    stats: SessionStats,
    /// The caller inflates a compressed stream, so COMPRESS may be forwarded.
    inflates: bool,
}

impl Session {
    pub fn new(cfg: Arc<ProxyConfig>, conn: ConnInfo) -> Self {
        let other_prefixes = cfg
            .other_users_prefixes
            .iter()
            .map(|p| (p.clone(), cfg.separator))
            .collect();
        Session {
            cfg,
            conn,
            user: None,
            selected: None,
            deleted_marked: false,
            pending: Vec::new(),
            auth_waiting: None,
            idle_tag: None,
            other_prefixes,
            shared_prefixes: Vec::new(),
            client_name: None,
            stats: SessionStats::default(),
            inflates: false,
        }
    }

    /// Lets COMPRESS through: the caller inflates a copy of both directions once the server
    /// accepts it (`Completion::starts_compression`).
    pub fn with_compression(mut self) -> Self {
        self.inflates = true;
        self
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Who is logged in (the accountable actor), for log lines.
    pub fn actor(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.actor.as_str())
    }

    /// The first line of a client message arrived: decides whether it must wait for a
    /// durable intent. `line` is its compact copy.
    pub fn client_head(&mut self, line: &[u8], now: Timestamp) -> HeadAction {
        if self.auth_waiting.is_some() || self.idle_tag.is_some() {
            return HeadAction::Forward;
        }
        let Some(head) = names::head(line) else {
            return HeadAction::Forward;
        };
        if head.kind == Kind::Compress && !self.inflates {
            // Compressed bytes could not be parsed, so the proxy does not let compression
            // start (docs/imap-proxy.md).
            return HeadAction::Refuse {
                reply: format!(
                    "{} NO [CANNOT] COMPRESS is not available through the auditing proxy\r\n",
                    head.tag
                ),
                tag: head.tag,
            };
        }
        if head.kind == Kind::StartTls {
            // TLS between client and server would hide every later command from the audit.
            return HeadAction::Refuse {
                reply: format!(
                    "{} NO [CANNOT] STARTTLS is not available through the auditing proxy; use its TLS port\r\n",
                    head.tag
                ),
                tag: head.tag,
            };
        }
        if !head.recordable() {
            return HeadAction::Forward;
        }
        let p = self.pending_from_head(&head, now);
        let mut intent = self.observe(&p, None);
        let Some(mut obs) = intent.take() else {
            return HeadAction::Forward;
        };
        obs.result = OperationResult::Failed;
        obs.reason = Some(
            "outcome unknown: the proxy stopped before the server replied to this command"
                .to_string(),
        );
        HeadAction::Hold {
            tag: head.tag,
            intent: Box::new(obs),
        }
    }

    fn pending_from_head(&self, head: &Head, now: Timestamp) -> Pending {
        Pending {
            tag: head.tag.clone(),
            head: head.clone(),
            time: now,
            folder: head.folder.clone(),
            dest: head.dest.clone(),
            set: head.set.clone(),
            set_uids: None,
            body_fetch: head.body_fetch,
            flags: None,
            soft_delete: false,
            query: None,
            extra: Vec::new(),
            login: head
                .login_user
                .as_deref()
                .map(|u| (self.login_identity(u, None), "LOGIN".to_string())),
            append: None,
            fetched: Vec::new(),
            expunged: 0,
            vanished: Vec::new(),
            copy_uids: None,
            append_uid: None,
            parsed: false,
        }
    }

    /// A whole client message arrived (its compact copy).
    pub fn client_message(&mut self, copy: &[u8], literal_bytes: u64, now: Timestamp) {
        if let Some(tag) = self.auth_waiting.take() {
            self.auth_data(&tag, copy);
            return;
        }
        if self.idle_tag.is_some() {
            return; // DONE; the tagged reply ends the IDLE.
        }
        self.stats.commands += 1;
        let Some(head) = names::head(copy) else {
            self.stats.unparsed_commands += 1;
            return;
        };
        let mut p = self.pending_from_head(&head, now);
        match CommandCodec::default().decode(copy) {
            Ok((b"", cmd)) => {
                p.parsed = true;
                self.fill_from_command(&mut p, cmd, literal_bytes);
            }
            _ => {
                self.stats.unparsed_commands += 1;
                tracing::debug!(conn = %self.conn.id, "unparsed command: {}", names::printable(copy, 200));
            }
        }
        match head.kind {
            Kind::Idle => self.idle_tag = Some(head.tag.clone()),
            Kind::Authenticate if p.login.is_none() => {
                self.auth_waiting = Some(head.tag.clone());
            }
            _ => {}
        }
        // A tag reused while in flight replaces the older command (the server sees both;
        // the older one's reply cannot be told apart).
        self.pending.retain(|q| q.tag != p.tag);
        self.pending.push(p);
    }

    fn auth_data(&mut self, tag: &str, copy: &[u8]) {
        let Ok((_, data)) = AuthenticateDataCodec::default().decode(copy) else {
            return;
        };
        let AuthenticateData::Continue(secret) = data else {
            return;
        };
        let identity = plain_identity(self, secret.declassify());
        if let Some(p) = self.pending.iter_mut().find(|p| p.tag == tag) {
            if let Some(id) = identity {
                p.login = Some((id, "PLAIN".to_string()));
            } else {
                // A mechanism with more than one step: keep reading its lines.
                self.auth_waiting = Some(tag.to_string());
            }
        }
    }

    fn login_identity(&self, user: &str, authzid: Option<&str>) -> Identity {
        let sep = self.cfg.master_user_separator.as_deref().unwrap_or("");
        if let Some(authzid) = authzid.filter(|a| !a.is_empty()) {
            if !authzid.eq_ignore_ascii_case(user) {
                return Identity {
                    actor: self.cfg.identity(user),
                    acting_as: Some(self.cfg.identity(authzid)),
                };
            }
        }
        if !sep.is_empty() {
            if let Some((target, master)) = user.split_once(sep) {
                if !master.is_empty() && !target.is_empty() {
                    return Identity {
                        actor: self.cfg.identity(master),
                        acting_as: Some(self.cfg.identity(target)),
                    };
                }
            }
        }
        Identity {
            actor: self.cfg.identity(user),
            acting_as: None,
        }
    }

    fn fill_from_command(&mut self, p: &mut Pending, cmd: Command<'_>, literal_bytes: u64) {
        match cmd.body {
            CommandBody::Login { username, .. } => {
                let user = astring(&username);
                p.login = Some((self.login_identity(&user, None), "LOGIN".into()));
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let mech = mechanism.as_ref().to_ascii_uppercase();
                if let Some(ir) = initial_response {
                    if mech == "PLAIN" {
                        p.login = plain_identity(self, ir.declassify()).map(|i| (i, mech.clone()));
                    }
                }
                if p.login.is_none() && mech != "PLAIN" {
                    p.extra.push(param("mechanism", &mech));
                }
            }
            CommandBody::Select { mailbox, .. } | CommandBody::Examine { mailbox, .. } => {
                p.folder = Some(mailbox_name(&mailbox));
            }
            CommandBody::Create { mailbox } | CommandBody::Delete { mailbox } => {
                p.folder = Some(mailbox_name(&mailbox));
            }
            CommandBody::Rename { from, to } => {
                p.folder = Some(mailbox_name(&from));
                p.dest = Some(mailbox_name(&to));
            }
            CommandBody::Append {
                mailbox, message, ..
            } => {
                p.folder = Some(mailbox_name(&mailbox));
                let data: &[u8] = match &message {
                    LiteralOrLiteral8::Literal(l) => l.as_ref(),
                    LiteralOrLiteral8::Literal8(l) => l.data.as_ref(),
                };
                let (message_id, subject) = header_fields(data);
                p.append = Some(Fetched {
                    message_id,
                    subject,
                    size: Some(literal_bytes),
                    ..Fetched::default()
                });
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                p.body_fetch = match &macro_or_item_names {
                    MacroOrMessageDataItemNames::Macro(_) => false,
                    MacroOrMessageDataItemNames::MessageDataItemNames(items) => {
                        items.iter().any(reads_body)
                    }
                };
                self.set_of(p, &sequence_set, uid);
            }
            CommandBody::Store {
                sequence_set,
                kind,
                flags,
                uid,
                ..
            } => {
                let names: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
                let deleted = names.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"));
                p.soft_delete = deleted && !matches!(kind, StoreType::Remove);
                let sign = match kind {
                    StoreType::Add => "+",
                    StoreType::Remove => "-",
                    StoreType::Replace => "",
                };
                p.flags = Some(format!("{sign}FLAGS ({})", names.join(" ")));
                self.set_of(p, &sequence_set, uid);
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            }
            | CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                p.dest = Some(mailbox_name(&mailbox));
                p.folder = self.selected.clone();
                self.set_of(p, &sequence_set, uid);
            }
            CommandBody::ExpungeUid { sequence_set } => {
                self.set_of(p, &sequence_set, true);
            }
            CommandBody::Search { .. } | CommandBody::Sort { .. } | CommandBody::Thread { .. } => {
                p.query = p.head.args.clone();
            }
            CommandBody::Id {
                parameters: Some(params),
            } => {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(key, _)| key.as_ref().eq_ignore_ascii_case(k.as_bytes()))
                        .and_then(|(_, v)| nstring(v))
                };
                let name = match (get("name"), get("version")) {
                    (Some(n), Some(v)) => Some(format!("{n} {v}")),
                    (n, _) => n,
                };
                if name.is_some() {
                    self.client_name = name.map(|n| clip(n, 256));
                }
            }
            _ => {}
        }
    }

    fn set_of(&self, p: &mut Pending, set: &SequenceSet, uid: bool) {
        if uid {
            p.set_uids = expand(set, 10 * MAX_ITEMS);
        }
    }

    /// A whole server message arrived (its compact copy). Returns the commands it completed.
    pub fn server_message(&mut self, copy: &[u8], now: Timestamp) -> Vec<Completion> {
        self.stats.responses += 1;
        let resp = match ResponseCodec::default().decode(copy) {
            Ok((b"", r)) => r,
            _ => {
                self.stats.unparsed_responses += 1;
                // A tagged reply the codec cannot read still ends its command.
                return self.fallback_tagged(copy, now);
            }
        };
        match resp {
            Response::Status(Status::Tagged(t)) => {
                let tag = t.tag.as_ref().to_string();
                let code = t.body.code.as_ref().map(code_text);
                if let Some(Code::AppendUid { uid, .. }) = &t.body.code {
                    if let Some(p) = self.pending.iter_mut().find(|p| p.tag == tag) {
                        p.append_uid = Some(uid.get());
                    }
                }
                if let Some(Code::CopyUid {
                    source,
                    destination,
                    ..
                }) = &t.body.code
                {
                    if let Some(p) = self.pending.iter_mut().find(|p| p.tag == tag) {
                        p.copy_uids = Some((uid_set(source), uid_set(destination)));
                    }
                }
                let kind = match t.body.kind {
                    StatusKind::Ok => "OK",
                    StatusKind::No => "NO",
                    StatusKind::Bad => "BAD",
                };
                let text = match code {
                    Some(c) => format!("{kind} [{c}] {}", t.body.text.as_ref()),
                    None => format!("{kind} {}", t.body.text.as_ref()),
                };
                self.complete(&tag, t.body.kind == StatusKind::Ok, &text)
                    .into_iter()
                    .collect()
            }
            Response::Status(Status::Untagged(s)) => {
                if let Some(Code::CopyUid {
                    source,
                    destination,
                    ..
                }) = &s.code
                {
                    // MOVE reports COPYUID in an untagged OK.
                    if let Some(p) = self
                        .pending
                        .iter_mut()
                        .rev()
                        .find(|p| p.head.kind == Kind::Move)
                    {
                        p.copy_uids = Some((uid_set(source), uid_set(destination)));
                    }
                }
                Vec::new()
            }
            Response::Status(Status::Bye(_)) => Vec::new(),
            Response::CommandContinuationRequest(_) => Vec::new(),
            Response::Data(d) => {
                self.data(d);
                Vec::new()
            }
        }
    }

    fn fallback_tagged(&mut self, copy: &[u8], now: Timestamp) -> Vec<Completion> {
        let _ = now;
        let text = String::from_utf8_lossy(copy);
        let mut words = text.splitn(3, ' ');
        let (Some(tag), Some(kind)) = (words.next(), words.next()) else {
            return Vec::new();
        };
        if tag == "*" || tag == "+" || !self.pending.iter().any(|p| p.tag == tag) {
            return Vec::new();
        }
        let kind = kind.trim().to_ascii_uppercase();
        if !matches!(kind.as_str(), "OK" | "NO" | "BAD") {
            return Vec::new();
        }
        let tag = tag.to_string();
        let reason = text
            .get(tag.len() + 1..)
            .unwrap_or_default()
            .trim_end()
            .to_string();
        self.complete(&tag, kind == "OK", &reason)
            .into_iter()
            .collect()
    }

    fn data(&mut self, d: Data<'_>) {
        match d {
            Data::Fetch { seq, items } => {
                let mut f = Fetched {
                    seq: seq.get(),
                    ..Fetched::default()
                };
                for item in items.into_inner() {
                    match item {
                        MessageDataItem::Uid(u) => f.uid = Some(u.get()),
                        MessageDataItem::Rfc822Size(s) => f.size = Some(u64::from(s)),
                        MessageDataItem::Envelope(e) => {
                            f.subject = f
                                .subject
                                .take()
                                .or_else(|| nstring(&e.subject).map(readable_subject));
                            f.message_id = f.message_id.take().or_else(|| nstring(&e.message_id));
                        }
                        MessageDataItem::BodyExt { section, data, .. } => {
                            let is_body = !matches!(
                                section,
                                Some(
                                    Section::Header(_)
                                        | Section::HeaderFields(..)
                                        | Section::HeaderFieldsNot(..)
                                        | Section::Mime(_)
                                )
                            );
                            f.body |= is_body;
                            if let Some(bytes) = data.into_option() {
                                self.headers_into(&mut f, &bytes);
                            }
                        }
                        MessageDataItem::Rfc822(data) | MessageDataItem::Rfc822Header(data) => {
                            if let Some(bytes) = data.into_option() {
                                self.headers_into(&mut f, &bytes);
                            }
                            f.body = true;
                        }
                        MessageDataItem::Rfc822Text(_) | MessageDataItem::Binary { .. } => {
                            f.body = true;
                        }
                        _ => {}
                    }
                }
                // Body-carrying responses belong to a body fetch; the others (flags) to a
                // STORE or a fetch of metadata.
                let target = self.pending.iter_mut().rev().find(|p| {
                    (p.head.kind == Kind::Fetch && (p.body_fetch || !f.body))
                        || (p.head.kind == Kind::Store && !f.body)
                });
                if let Some(p) = target {
                    if p.fetched.len() < MAX_ITEMS {
                        p.fetched.push(f);
                    }
                }
            }
            Data::Expunge(_) => {
                if let Some(p) = self
                    .pending
                    .iter_mut()
                    .rev()
                    .find(|p| matches!(p.head.kind, Kind::Expunge | Kind::Close | Kind::Move))
                {
                    p.expunged += 1;
                }
            }
            Data::Vanished { known_uids, .. } => {
                if let Some(p) = self
                    .pending
                    .iter_mut()
                    .rev()
                    .find(|p| matches!(p.head.kind, Kind::Expunge | Kind::Close | Kind::Move))
                {
                    if let Some(u) = expand(&known_uids, MAX_ITEMS) {
                        p.vanished.extend(u);
                    }
                }
            }
            Data::Namespace { other, shared, .. } => {
                let others: Vec<(String, Option<char>)> = other
                    .iter()
                    .map(|n| (istring(&n.prefix), n.delimiter.as_ref().map(|d| d.inner())))
                    .filter(|(p, _)| !p.is_empty())
                    .collect();
                if !others.is_empty() {
                    self.other_prefixes = others;
                }
                self.shared_prefixes = shared
                    .iter()
                    .map(|n| istring(&n.prefix))
                    .filter(|p| !p.is_empty())
                    .collect();
            }
            _ => {}
        }
    }

    fn headers_into(&self, f: &mut Fetched, bytes: &[u8]) {
        let (mid, subject) = header_fields(bytes);
        f.message_id = f.message_id.take().or(mid);
        f.subject = f.subject.take().or(subject);
    }

    /// The connection ended: commands still in flight get no reply.
    pub fn close(&mut self) -> Vec<Completion> {
        let tags: Vec<String> = self.pending.iter().map(|p| p.tag.clone()).collect();
        tags.into_iter()
            .filter_map(|t| self.complete(&t, false, "connection closed before the server replied"))
            .collect()
    }

    fn complete(&mut self, tag: &str, ok: bool, reply: &str) -> Option<Completion> {
        let idx = self.pending.iter().position(|p| p.tag == tag)?;
        let p = self.pending.remove(idx);
        if self.auth_waiting.as_deref() == Some(tag) {
            self.auth_waiting = None;
        }
        if self.idle_tag.as_deref() == Some(tag) {
            self.idle_tag = None;
        }
        let obs = self.observe(&p, Some((ok, reply)));
        // Session state follows the server's verdict.
        match p.head.kind {
            Kind::Login | Kind::Authenticate if ok => {
                if let Some((id, _)) = &p.login {
                    self.user = Some(id.clone());
                }
            }
            Kind::Select | Kind::Examine => {
                self.selected = if ok { p.folder.clone() } else { None };
                self.deleted_marked = false;
            }
            Kind::Close | Kind::Unselect if ok => {
                self.selected = None;
                self.deleted_marked = false;
            }
            Kind::Store if ok && p.soft_delete => self.deleted_marked = true,
            Kind::Expunge if ok => self.deleted_marked = false,
            _ => {}
        }
        if obs.is_some() {
            self.stats.observations += 1;
        }
        Some(Completion {
            tag: tag.to_string(),
            observation: obs,
            starts_compression: ok && p.head.kind == Kind::Compress,
        })
    }

    /// Whose mailbox a folder is in, and the folder's name there.
    fn place(&self, folder: &str) -> (Option<String>, String) {
        if let Some((owner, _)) = self
            .cfg
            .owners
            .iter()
            .filter(|(prefix, _)| folder.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
        {
            return (Some(self.cfg.identity(owner)), folder.to_string());
        }
        for (prefix, delim) in &self.other_prefixes {
            if let Some(rest) = folder.strip_prefix(prefix.as_str()) {
                let delim = delim.unwrap_or('/');
                let (who, inner) = rest.split_once(delim).unwrap_or((rest, ""));
                if !who.is_empty() {
                    let inner = if inner.is_empty() { "INBOX" } else { inner };
                    return (Some(self.cfg.identity(who)), normalize_inbox(inner));
                }
            }
        }
        for prefix in &self.shared_prefixes {
            if folder.starts_with(prefix.as_str()) {
                return (
                    Some(self.cfg.identity(&self.cfg.public_folders_owner)),
                    folder.to_string(),
                );
            }
        }
        (None, normalize_inbox(folder))
    }

    /// Builds the record of a command; `reply` is (ok, tagged reply) once known.
    fn observe(&self, p: &Pending, reply: Option<(bool, &str)>) -> Option<Observation> {
        let ok = reply.is_none_or(|(ok, _)| ok);
        let (result, reason) = match reply {
            Some((true, _)) | None => (OperationResult::Succeeded, None),
            Some((false, text)) => (
                OperationResult::Failed,
                Some(clip(text.to_string(), MAX_FIELD)),
            ),
        };
        let mut params = p.extra.clone();
        let who: Identity;
        let mut mailbox: String;
        let mut folder = None;
        let mut dest = None;
        let mut items = Vec::new();
        let op = match p.head.kind {
            Kind::Login | Kind::Authenticate => {
                let (id, mech) = match &p.login {
                    Some((id, mech)) => (id.clone(), mech.clone()),
                    None => (
                        Identity {
                            actor: "unknown".to_string(),
                            acting_as: None,
                        },
                        p.head.mechanism.clone().unwrap_or_default(),
                    ),
                };
                if !mech.is_empty() && !params.iter().any(|q| q.name == "mechanism") {
                    params.push(param("mechanism", &mech));
                }
                mailbox = id.target().to_string();
                who = id;
                Operation::MailboxLogin
            }
            kind => {
                who = self.user.clone()?;
                mailbox = self.cfg.identity(who.target());
                let base = match kind {
                    Kind::Copy | Kind::Move | Kind::Store | Kind::Fetch | Kind::Search => {
                        p.folder.clone().or_else(|| self.selected.clone())
                    }
                    Kind::Expunge | Kind::Close => self.selected.clone(),
                    Kind::Logout => None,
                    _ => p.folder.clone(),
                };
                if let Some(name) = base {
                    let (owner, inner) = self.place(&name);
                    if let Some(owner) = owner {
                        mailbox = owner;
                    }
                    folder = Some(inner);
                }
                if let Some(d) = &p.dest {
                    let (owner, inner) = self.place(d);
                    match owner {
                        Some(o) if o != mailbox => {
                            params.push(param("destination_mailbox", &o));
                            dest = Some(inner);
                        }
                        _ => dest = Some(inner),
                    }
                }
                match kind {
                    Kind::Select | Kind::Examine => Operation::FolderBind,
                    Kind::Fetch => {
                        if reply.is_some() && !p.body_fetch {
                            return None;
                        }
                        items = self.fetched_items(p);
                        Operation::MessageBind
                    }
                    Kind::Store => {
                        if let Some(f) = &p.flags {
                            params.push(param("flags", f));
                        }
                        items = self.store_items(p);
                        if p.soft_delete {
                            Operation::SoftDelete
                        } else {
                            Operation::Update
                        }
                    }
                    Kind::Copy | Kind::Move => {
                        items = self.copy_items(p, &mut params);
                        let to_trash = dest.as_deref().is_some_and(|d| self.cfg.is_trash(d));
                        if to_trash {
                            Operation::MoveToDeletedItems
                        } else if kind == Kind::Move {
                            Operation::Move
                        } else {
                            Operation::Copy
                        }
                    }
                    Kind::Expunge | Kind::Close => {
                        if reply.is_some() && ok {
                            let removed = p.expunged as usize + p.vanished.len();
                            let close_after_delete = kind == Kind::Close && self.deleted_marked;
                            if removed == 0 && !close_after_delete {
                                return None;
                            }
                        }
                        items = self.expunge_items(p, &mut params);
                        Operation::HardDelete
                    }
                    Kind::Append => {
                        let mut f = p.append.clone().unwrap_or_default();
                        f.uid = p.append_uid;
                        if p.append.is_some() {
                            items.push(item(&f, None));
                        }
                        Operation::Create
                    }
                    Kind::Create => Operation::FolderCreate,
                    Kind::Delete => Operation::FolderDelete,
                    Kind::Rename => Operation::FolderRename,
                    Kind::SetAcl | Kind::DeleteAcl => {
                        if let Some(id) = &p.head.acl_identifier {
                            params.push(param("identifier", id));
                        }
                        if let Some(r) = &p.head.acl_rights {
                            params.push(param("rights", r));
                        }
                        Operation::UpdateFolderPermissions
                    }
                    Kind::Search => {
                        if let Some(q) = p.query.as_ref().or(p.head.args.as_ref()) {
                            params.push(param("query", q));
                        }
                        Operation::SearchQueryInitiated
                    }
                    Kind::Logout => Operation::MailboxLogout,
                    _ => return None,
                }
            }
        };
        if !p.parsed && reply.is_some() {
            params.push(param(
                "parsed",
                "command line only (the IMAP codec could not parse the whole command)",
            ));
        }
        if mailbox.is_empty() {
            mailbox = "unknown".to_string();
        }
        Some(Observation {
            time: p.time,
            operation: op,
            result,
            reason,
            mailbox: clip(mailbox, MAX_FIELD),
            actor: clip(who.actor.clone(), MAX_FIELD),
            acting_as: who.acting_as.clone().map(|a| clip(a, MAX_FIELD)),
            administrative: false,
            folder: folder.map(|f| clip(f, MAX_FIELD)),
            destination_folder: dest.map(|f| clip(f, MAX_FIELD)),
            items,
            client: Client {
                ip: self.conn.ip,
                port: self.conn.port,
                protocol: Some("imap".to_string()),
                name: self.client_name.clone(),
                session: Some(clip(self.conn.id.clone(), MAX_FIELD)),
                tls: Some(self.conn.tls),
            },
            provenance: Provenance {
                source: "imap-proxy".to_string(),
                host: self.cfg.upstream_name.clone().map(|h| clip(h, MAX_FIELD)),
                reference: Some(clip(
                    format!("{} {} {}", self.conn.id, p.tag, p.head.name),
                    MAX_FIELD,
                )),
            },
            parameters: params,
        })
    }

    fn fetched_items(&self, p: &Pending) -> Vec<Item> {
        if p.fetched.is_empty() {
            return match &p.set_uids {
                Some(uids) => uids
                    .iter()
                    .take(MAX_ITEMS)
                    .map(|u| Item {
                        uid: Some(*u),
                        unresolved: Some("the server returned no FETCH response for it".into()),
                        ..Item::default()
                    })
                    .collect(),
                None => Vec::new(),
            };
        }
        p.fetched
            .iter()
            .filter(|f| f.body || !p.body_fetch)
            .map(|f| item(f, None))
            .collect()
    }

    fn store_items(&self, p: &Pending) -> Vec<Item> {
        let from_server: Vec<Item> = p
            .fetched
            .iter()
            .filter(|f| f.uid.is_some())
            .map(|f| item(f, Some("a STORE reply names the message by UID only")))
            .collect();
        if !from_server.is_empty() {
            return from_server;
        }
        self.set_items(
            p,
            "the STORE named messages by sequence number; the server echoed no UIDs",
        )
    }

    fn set_items(&self, p: &Pending, why: &str) -> Vec<Item> {
        match &p.set_uids {
            Some(uids) => uids
                .iter()
                .take(MAX_ITEMS)
                .map(|u| Item {
                    uid: Some(*u),
                    unresolved: Some("the command names the message by UID only".into()),
                    ..Item::default()
                })
                .collect(),
            None => vec![Item {
                unresolved: Some(clip(
                    format!("{why} (set {})", p.set.as_deref().unwrap_or("?")),
                    MAX_FIELD,
                )),
                ..Item::default()
            }],
        }
    }

    fn copy_items(&self, p: &Pending, params: &mut Vec<Parameter>) -> Vec<Item> {
        if let Some((src, dst)) = &p.copy_uids {
            let list: Vec<String> = dst.iter().map(u32::to_string).collect();
            params.push(param("destination_uids", &list.join(",")));
            return src
                .iter()
                .take(MAX_ITEMS)
                .map(|u| Item {
                    uid: Some(*u),
                    unresolved: Some("COPYUID names the message by UID only".into()),
                    ..Item::default()
                })
                .collect();
        }
        self.set_items(
            p,
            "the command named messages by sequence number and the server sent no COPYUID",
        )
    }

    fn expunge_items(&self, p: &Pending, params: &mut Vec<Parameter>) -> Vec<Item> {
        if !p.vanished.is_empty() {
            return p
                .vanished
                .iter()
                .take(MAX_ITEMS)
                .map(|u| Item {
                    uid: Some(*u),
                    unresolved: Some("VANISHED names the message by UID only".into()),
                    ..Item::default()
                })
                .collect();
        }
        params.push(param("expunged", &p.expunged.to_string()));
        if let Some(uids) = &p.set_uids {
            return uids
                .iter()
                .take(MAX_ITEMS)
                .map(|u| Item {
                    uid: Some(*u),
                    unresolved: Some("UID EXPUNGE names the message by UID only".into()),
                    ..Item::default()
                })
                .collect();
        }
        Vec::new()
    }
}

fn item(f: &Fetched, why: Option<&str>) -> Item {
    let unresolved = if f.message_id.is_none() && f.subject.is_none() {
        Some(
            why.unwrap_or("the server's reply carried neither ENVELOPE nor the header fields")
                .to_string(),
        )
    } else {
        None
    };
    let unresolved = match (unresolved, f.uid) {
        (Some(u), None) if f.seq > 0 => Some(format!("{u}; sequence number {}", f.seq)),
        (u, _) => u,
    };
    Item {
        uid: f.uid,
        message_id: f.message_id.clone().map(|s| clip(s, MAX_FIELD)),
        subject: f.subject.clone().map(|s| clip(s, MAX_FIELD)),
        size: f.size,
        folder: None,
        unresolved,
    }
}

fn plain_identity(s: &Session, data: &[u8]) -> Option<Identity> {
    // authzid NUL authcid NUL password
    let mut parts = data.split(|&b| b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    parts.next()?;
    let authzid = String::from_utf8_lossy(authzid);
    let authcid = String::from_utf8_lossy(authcid);
    if authcid.trim().is_empty() {
        return None;
    }
    Some(s.login_identity(&authcid, Some(&authzid)))
}

fn reads_body(item: &MessageDataItemName<'_>) -> bool {
    match item {
        MessageDataItemName::BodyExt { section, .. } => !matches!(
            section,
            Some(
                Section::Header(_)
                    | Section::HeaderFields(..)
                    | Section::HeaderFieldsNot(..)
                    | Section::Mime(_)
            )
        ),
        MessageDataItemName::Rfc822
        | MessageDataItemName::Rfc822Text
        | MessageDataItemName::Binary { .. } => true,
        _ => false,
    }
}

fn param(name: &str, value: &str) -> Parameter {
    Parameter {
        name: name.to_string(),
        value: clip(value.to_string(), 16 * MAX_FIELD),
    }
}

pub(crate) use mailaudit_model::clip;

fn normalize_inbox(folder: &str) -> String {
    if folder.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        folder.to_string()
    }
}

fn astring(a: &AString<'_>) -> String {
    String::from_utf8_lossy(a.as_ref()).into_owned()
}

fn istring(a: &IString<'_>) -> String {
    String::from_utf8_lossy(a.as_ref()).into_owned()
}

fn nstring(n: &NString<'_>) -> Option<String> {
    n.0.as_ref()
        .map(|s| String::from_utf8_lossy(s.as_ref()).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

fn code_text(c: &Code<'_>) -> String {
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::response::{StatusBody, Tagged};
    // The codec writes the code as the server sent it; cut it out of a minimal reply.
    let probe = Response::Status(Status::Tagged(Tagged {
        tag: imap_codec::imap_types::core::Tag::unvalidated("t"),
        body: StatusBody {
            kind: StatusKind::Ok,
            code: Some(c.clone()),
            text: imap_codec::imap_types::core::Text::unvalidated("x"),
        },
    }));
    let bytes = ResponseCodec::default().encode(&probe).dump();
    let text = String::from_utf8_lossy(&bytes);
    text.split_once('[')
        .and_then(|(_, r)| r.rsplit_once(']'))
        .map(|(c, _)| c.to_string())
        .unwrap_or_default()
}

fn uid_set(set: &imap_codec::imap_types::extensions::uidplus::UidSet) -> Vec<u32> {
    let mut out = Vec::new();
    for e in set.0.as_ref() {
        match e {
            UidElement::Single(u) => out.push(u.get()),
            UidElement::Range(a, b) => {
                let (a, b) = (a.get().min(b.get()), a.get().max(b.get()));
                if (b - a) as usize + out.len() > MAX_ITEMS {
                    return out;
                }
                out.extend(a..=b);
            }
        }
    }
    out
}

/// A sequence set as a list, or none when it has `*` or more than `max` members.
fn expand(set: &SequenceSet, max: usize) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for s in set.0.as_ref() {
        match s {
            Sequence::Single(SeqOrUid::Value(v)) => out.push(v.get()),
            Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b)) => {
                let (a, b) = (a.get().min(b.get()), a.get().max(b.get()));
                if (b - a) as usize + out.len() >= max {
                    return None;
                }
                out.extend(a..=b);
            }
            _ => return None,
        }
        if out.len() > max {
            return None;
        }
    }
    Some(out)
}

/// A Subject as a person reads it, RFC 2047 encoded words (`=?UTF-8?B?…?=`) decoded, as the
/// milter and Dovecot's mail_log record it: a search for its text must find it whichever
/// source saw the message.
fn readable_subject(raw: String) -> String {
    if !raw.contains("=?") {
        return raw;
    }
    let header = format!("Subject: {raw}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse(header.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or(raw)
}

/// Message-ID and Subject from the start of a message (or its header), unfolded.
pub(crate) fn header_fields(bytes: &[u8]) -> (Option<String>, Option<String>) {
    let mut message_id = None;
    let mut subject = None;
    let mut current: Option<(String, String)> = None;
    let mut finish = |cur: Option<(String, String)>| {
        if let Some((name, value)) = cur {
            let value = value.trim().to_string();
            if value.is_empty() {
                return;
            }
            if name.eq_ignore_ascii_case("message-id") && message_id.is_none() {
                message_id = Some(value);
            } else if name.eq_ignore_ascii_case("subject") && subject.is_none() {
                subject = Some(readable_subject(value));
            }
        }
    };
    for raw in bytes.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(text.trim());
            }
            continue;
        }
        finish(current.take());
        current = text
            .split_once(':')
            .map(|(n, v)| (n.trim().to_string(), v.to_string()));
    }
    finish(current);
    (message_id, subject)
}

#[cfg(test)]
mod tests {

    #[test]
    fn subjects_are_stored_as_people_read_them() {
        let (_, subject) =
            header_fields(b"Message-ID: <a@b>\r\nSubject: =?UTF-8?B?w4RwZmVs?= und\r\n =?ISO-8859-1?Q?Birnen_=E4?=\r\n\r\nbody");
        assert_eq!(subject.as_deref(), Some("\u{c4}pfel und Birnen \u{e4}"));
        let (_, plain) = header_fields(b"Subject: Plans =? not a word\r\n\r\n");
        assert_eq!(plain.as_deref(), Some("Plans =? not a word"));
    }
    use super::*;

    fn now() -> Timestamp {
        "2026-11-24T12:00:00Z".parse().unwrap()
    }

    fn session() -> Session {
        let cfg = ProxyConfig {
            default_domain: Some("example.com".into()),
            ..ProxyConfig::default()
        };
        Session::new(
            Arc::new(cfg),
            ConnInfo {
                id: "c1".into(),
                ..ConnInfo::default()
            },
        )
    }

    /// Feeds one command and its replies; returns the completed command's record.
    fn exchange(s: &mut Session, cmd: &[u8], replies: &[&[u8]]) -> Option<Observation> {
        let _ = s.client_head(cmd, now());
        s.client_message(cmd, 0, now());
        let mut out = None;
        for r in replies {
            for c in s.server_message(r, now()) {
                out = c.observation;
            }
        }
        out
    }

    #[test]
    fn starttls_and_compress_without_inflation_are_refused_not_forwarded() {
        let mut s = session();
        for cmd in [&b"a STARTTLS\r\n"[..], b"b COMPRESS DEFLATE\r\n"] {
            match s.client_head(cmd, now()) {
                HeadAction::Refuse { reply, .. } => assert!(reply.contains(" NO [CANNOT] ")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn master_user_login_and_plain_authzid_are_impersonation() {
        let mut s = session();
        let o = exchange(&mut s, b"a LOGIN carol*admin pw\r\n", &[b"a OK done\r\n"]).unwrap();
        assert_eq!(o.actor, "admin@example.com");
        assert_eq!(o.acting_as.as_deref(), Some("carol@example.com"));
        assert_eq!(o.mailbox, "carol@example.com");
        let mut s = session();
        // SASL-IR: "carol\0admin\0pw"
        let o = exchange(
            &mut s,
            b"a AUTHENTICATE PLAIN Y2Fyb2wAYWRtaW4AcHc=\r\n",
            &[b"a NO [AUTHENTICATIONFAILED] no\r\n"],
        )
        .unwrap();
        assert_eq!(o.result, OperationResult::Failed);
        assert_eq!(o.actor, "admin@example.com");
        assert_eq!(o.acting_as.as_deref(), Some("carol@example.com"));
        assert_eq!(o.reason.as_deref(), Some("NO [AUTHENTICATIONFAILED] no"));
    }

    #[test]
    fn a_header_fetch_is_not_a_read_and_a_body_fetch_names_its_messages() {
        let mut s = session();
        exchange(&mut s, b"a LOGIN bob pw\r\n", &[b"a OK\r\n"]);
        exchange(
            &mut s,
            b"b SELECT shared/alice/Projects\r\n",
            &[b"b OK\r\n"],
        );
        let none = exchange(
            &mut s,
            b"c UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
            &[
                b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {12}\r\nSubject: x\r\n)\r\n",
                b"c OK\r\n",
            ],
        );
        assert_eq!(none, None);
        let o = exchange(
            &mut s,
            b"d UID FETCH 4 (BODY.PEEK[])\r\n",
            &[
                b"* 1 FETCH (UID 4 BODY[] {39}\r\nMessage-ID: <a@b>\r\nSubject: Plans\r\n\r\nhi)\r\n",
                b"d OK\r\n",
            ],
        )
        .unwrap();
        assert_eq!(o.operation, Operation::MessageBind);
        assert_eq!(o.actor, "bob@example.com");
        assert_eq!(o.mailbox, "alice@example.com");
        assert_eq!(o.folder.as_deref(), Some("Projects"));
        assert_eq!(o.items.len(), 1);
        assert_eq!(o.items[0].uid, Some(4));
        assert_eq!(o.items[0].message_id.as_deref(), Some("<a@b>"));
        assert_eq!(o.items[0].subject.as_deref(), Some("Plans"));
    }

    #[test]
    fn an_unknown_command_is_still_recorded_from_its_line() {
        let mut s = session();
        exchange(&mut s, b"a LOGIN alice pw\r\n", &[b"a OK\r\n"]);
        let o = exchange(&mut s, b"b SETACL Work bob lrs\r\n", &[b"b OK\r\n"]).unwrap();
        assert_eq!(o.operation, Operation::UpdateFolderPermissions);
        assert_eq!(o.folder.as_deref(), Some("Work"));
        assert!(o
            .parameters
            .iter()
            .any(|p| p.name == "rights" && p.value == "lrs"));
        assert!(o.parameters.iter().any(|p| p.name == "parsed"));
        assert_eq!(s.stats().unparsed_commands, 1);
    }
}
