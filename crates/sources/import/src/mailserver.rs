//! Cyrus IMAP and Zimbra logs.
//!
//! **Cyrus** (`auditlog: yes`): `auditlog:` lines (append, expunge, create, delete, rename,
//! acl…) carry a `sessionid=<…>` that the `login:` line of the same session also carries;
//! the login line names the user and the client address, so each audit line is joined to
//! it. An audit line whose session has no login line in the file is rejected by line, never
//! given an invented actor. Times come from the syslog prefix: RFC 3339 as rsyslog writes
//! by default, or the BSD `Oct 12 23:27:49` form, which needs `--year` (and `--timezone`).
//!
//! **Zimbra** `mailbox.log`: the context `[name=…;aname=…;ip=…;ua=…;]` names the mailbox
//! acted on (`name`) and, when someone else acted, the authenticated account (`aname`); the
//! `mailop` lines say what was done. `audit.log`: `security - cmd=Auth` (a login, failed
//! when it carries `error=`) and `cmd=DelegateAuth … by=` (an admin signing in as the user).
//! Zimbra writes local times without a zone: `--timezone` is required.

use crate::line_reader::LineReader;
use crate::time::parse_time;
use crate::time::ImportZone;
use crate::{account, digest, ip_port, original, param, Context, Importer, Occurrences, Parsed};
use mailaudit_model::{
    Client, ImportedObservation, Item, Observation, Operation, OperationResult, Parameter,
    Provenance, Timestamp,
};
use std::collections::{HashMap, VecDeque};
use std::io::BufRead;

/// Sessions remembered for the join: the oldest are forgotten beyond this many, so that
/// memory stays bounded on any file.
const MAX_SESSIONS: usize = 100_000;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Cyrus,
    Zimbra,
}

pub(crate) struct LineImporter<R: BufRead> {
    kind: Kind,
    lines: LineReader<R>,
    ctx: Context,
    source: String,
    occurrences: Occurrences,
    sessions: HashMap<String, Login>,
    order: VecDeque<String>,
}

#[derive(Clone)]
struct Login {
    user: String,
    ip: Option<std::net::IpAddr>,
    host: Option<String>,
}

impl<R: BufRead> LineImporter<R> {
    pub(crate) fn new(kind: Kind, reader: R, ctx: Context) -> Self {
        let format = match kind {
            Kind::Cyrus => crate::Format::Cyrus,
            Kind::Zimbra => crate::Format::Zimbra,
        };
        LineImporter {
            kind,
            lines: LineReader::new(reader),
            ctx,
            source: format.source(),
            occurrences: Occurrences::default(),
            sessions: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

/// `key=<value>` fields of a Cyrus line (values may contain spaces and `<>`: a value runs to
/// the `>` that precedes the next ` key=<` or the end).
fn cyrus_fields(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=<") {
        let key_start = rest[..eq].rfind(' ').map_or(0, |i| i + 1);
        let key = &rest[key_start..eq];
        let after = &rest[eq + 2..];
        // The value ends at the last `>` before the next ` word=<`.
        let next = after
            .match_indices(' ')
            .find(|(i, _)| {
                let tail = &after[i + 1..];
                tail.find("=<")
                    .is_some_and(|p| !tail[..p].contains(' ') && after[..*i].ends_with('>'))
            })
            .map(|(i, _)| i);
        let (value, remaining) = match next {
            Some(i) => (&after[..i - 1], &after[i..]),
            None => (after.trim_end().strip_suffix('>').unwrap_or(after), ""),
        };
        out.push((key, value));
        rest = remaining;
    }
    out
}

fn field<'a>(fields: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .filter(|v| !v.is_empty())
}

/// A syslog line's time and the rest after `host program[pid]: `.
fn syslog_time(
    text: &str,
    zone: Option<ImportZone>,
    year: Option<i32>,
) -> Result<(Timestamp, String, &str), String> {
    // RFC 3339 (rsyslog's default file format): `2009-10-12T23:27:49.123+02:00 host prog[pid]: …`
    let mut parts = text.splitn(4, ' ');
    let first = parts.next().unwrap_or("");
    if first.len() >= 19 && first.as_bytes().get(4) == Some(&b'-') {
        let time = parse_time(first, zone)?;
        let host = parts.next().unwrap_or("").to_string();
        let program = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("");
        if !program.ends_with(':') || rest.is_empty() {
            return Err("no `program[pid]:` after the host".to_string());
        }
        return Ok((time, host, rest));
    }
    // BSD: `Oct 12 23:27:49 host prog[pid]: …`
    let mut parts = text.splitn(6, ' ').filter(|p| !p.is_empty());
    let (Some(mon), Some(day), Some(clock), Some(host), Some(rest)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("not a syslog line".into());
    };
    let year = year.ok_or("a BSD syslog time has no year; pass --year (or log RFC 3339 times)")?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == mon)
    .ok_or_else(|| format!("`{mon}` is not a month"))?;
    let stamp = format!(
        "{year}-{:02}-{:02} {clock}",
        month + 1,
        day.parse::<u32>()
            .map_err(|_| format!("`{day}` is not a day"))?
    );
    let time = parse_time(&stamp, zone)?;
    let rest = text
        .split_once(&format!(" {host} "))
        .map(|(_, r)| r)
        .unwrap_or(rest);
    let rest = rest.split_once(": ").map(|(_, r)| r).unwrap_or("");
    Ok((time, host.to_string(), rest))
}

/// `user.ratish.Sent` / `user/ratish/Sent` / `example.com!user.ratish` → (mailbox, folder).
fn cyrus_mailbox(name: &str, domain: Option<&str>) -> (String, Option<String>) {
    let (dom, name) = match name.split_once('!') {
        Some((d, n)) => (Some(d), n),
        None => (domain, name),
    };
    let sep = if name.starts_with("user/") { '/' } else { '.' };
    let Some(rest) = name.strip_prefix("user").and_then(|r| r.strip_prefix(sep)) else {
        // A shared folder: no owner.
        return (name.to_string(), None);
    };
    let (user, folder) = match rest.split_once(sep) {
        Some((u, f)) => (u, Some(f.replace(sep, "/"))),
        None => (rest, Some("INBOX".to_string())),
    };
    let mailbox = match dom {
        Some(d) => format!("{user}@{d}"),
        None => user.to_string(),
    };
    (mailbox, folder)
}

impl<R: BufRead> LineImporter<R> {
    fn remember(&mut self, session: String, login: Login) {
        if self.sessions.insert(session.clone(), login).is_none() {
            self.order.push_back(session);
            if self.order.len() > MAX_SESSIONS {
                if let Some(old) = self.order.pop_front() {
                    self.sessions.remove(&old);
                }
            }
        }
    }

    fn cyrus(&mut self, text: &str, reference: &str) -> Option<Parsed> {
        let (time, host, rest) = match syslog_time(text, self.ctx.timezone, self.ctx.year) {
            Ok(t) => t,
            Err(e) => return Some(Parsed::rejected(reference, e)),
        };
        if let Some(login) = rest.strip_prefix("login: ") {
            // `login: client.example.com [192.0.2.7] meera plaintext+TLS User logged in SESSIONID=<…>`
            let session = login
                .split_once("SESSIONID=<")
                .and_then(|(_, s)| s.split_once('>'))
                .map(|(s, _)| s.to_string())?;
            let (client_host, after) = login.split_once(" [")?;
            let (ip, after) = after.split_once("] ")?;
            let user = after.split_whitespace().next()?;
            let ip = ip_port(ip).ok().flatten().map(|(ip, _)| ip);
            self.remember(
                session,
                Login {
                    user: user.to_string(),
                    ip,
                    host: Some(client_host.to_string()),
                },
            );
            return None;
        }
        let audit = rest.strip_prefix("auditlog: ")?;
        let (action, fields_text) = audit.split_once(' ').unwrap_or((audit, ""));
        let fields = cyrus_fields(fields_text);
        let program = text.contains(" lmtpd[") || text.contains(" lmtp[");
        let domain = self.ctx.domain.clone();
        let mailbox_name = field(&fields, "mailbox").or_else(|| field(&fields, "oldmailbox"));
        let Some(mailbox_name) = mailbox_name else {
            return Some(Parsed::rejected(
                reference,
                format!("auditlog {action}: no mailbox=<…>"),
            ));
        };
        let (mailbox, folder) = cyrus_mailbox(mailbox_name, domain.as_deref());
        let mut destination = None;
        let mut items = Vec::new();
        let operation = match action {
            "append" if program => Operation::Deliver,
            "append" => Operation::Create,
            "expunge" => Operation::HardDelete,
            "create" => Operation::FolderCreate,
            "delete" => Operation::FolderDelete,
            "rename" => {
                destination = field(&fields, "newmailbox").map(|n| {
                    cyrus_mailbox(n, domain.as_deref())
                        .1
                        .unwrap_or_else(|| n.to_string())
                });
                Operation::FolderRename
            }
            "acl" => Operation::UpdateFolderPermissions,
            other => {
                return Some(Parsed::skipped(
                    reference,
                    format!("Cyrus auditlog {other} has no mailaudit equivalent"),
                ))
            }
        };
        if field(&fields, "uid").is_some() || field(&fields, "message-id").is_some() {
            items.push(Item {
                uid: field(&fields, "uid").and_then(|u| u.parse().ok()),
                message_id: field(&fields, "message-id").map(str::to_string),
                size: field(&fields, "size").and_then(|s| s.parse().ok()),
                ..Item::default()
            });
        }
        let session = field(&fields, "sessionid").unwrap_or("");
        let login = if operation == Operation::Deliver {
            // Delivery has no logged-in user: the sender, when named, acted.
            None
        } else {
            match self.sessions.get(session) {
                Some(l) => Some(l.clone()),
                None => {
                    return Some(Parsed::rejected(
                        reference,
                        format!(
                        "auditlog {action}: no login line for session {session} before this line"
                    ),
                    ))
                }
            }
        };
        let actor = match (&login, operation) {
            (Some(l), _) => account(&l.user, domain.as_deref()),
            (None, _) => field(&fields, "from").map_or_else(|| "lmtp".to_string(), str::to_string),
        };
        let mut parameters: Vec<Parameter> = vec![param("cyrus_action", action)];
        for key in ["uniqueid", "mboxid", "guid", "oldacl", "acl", "sessionid"] {
            if let Some(v) = field(&fields, key) {
                parameters.push(param(key, v));
            }
        }
        parameters.extend(original(text));
        let key = self
            .occurrences
            .key(time, format!("cyrus:{}", digest(&[text])));
        Some(Parsed::Record(Box::new(ImportedObservation {
            observation: Observation {
                time,
                operation,
                result: OperationResult::Succeeded,
                reason: None,
                mailbox,
                actor,
                acting_as: None,
                administrative: false,
                folder,
                destination_folder: destination,
                items,
                client: Client {
                    ip: login.as_ref().and_then(|l| l.ip),
                    protocol: Some(if program { "lmtp" } else { "imap" }.into()),
                    name: login.and_then(|l| l.host),
                    session: (!session.is_empty()).then(|| session.to_string()),
                    ..Client::default()
                },
                provenance: Provenance {
                    source: self.source.clone(),
                    host: Some(host),
                    reference: Some(reference.to_string()),
                },
                parameters,
            },
            source_key: key,
            logon_type: None,
            external: None,
        })))
    }

    fn zimbra(&mut self, text: &str, reference: &str) -> Option<Parsed> {
        // `2009-10-12 23:27:49,123 INFO  [thread] [name=…;aname=…;ip=…;] category - message`
        let stamp = text.get(..23)?;
        if stamp.as_bytes().get(4).is_none_or(|b| *b != b'-') {
            return Some(Parsed::skipped(
                reference,
                "continuation line (not a log entry)",
            ));
        }
        let time = match parse_time(&stamp.replacen(',', ".", 1), self.ctx.timezone) {
            Ok(t) => t,
            Err(e) => return Some(Parsed::rejected(reference, e)),
        };
        let Some(open) = text.find("] [") else {
            return Some(Parsed::skipped(reference, "no account context"));
        };
        let after = &text[open + 3..];
        let (context, message) = after.split_once("] ")?;
        let ctx_fields: Vec<(&str, &str)> = context
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let get = |k: &str| {
            ctx_fields
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| *v)
        };
        let (category, body) = message.split_once(" - ").unwrap_or((message, ""));
        let domain = self.ctx.domain.clone();
        let mut items = Vec::new();
        let mut folder = None;
        let mut destination = None;
        let mut result = OperationResult::Succeeded;
        let mut reason = None;
        let mut acting_as = None;
        let mut administrative = false;
        let (operation, mailbox, actor) = match category.trim() {
            "mailop" => {
                let name = get("name")?;
                let actor = get("aname").unwrap_or(name);
                let op = if body.starts_with("Adding Message") {
                    let id = body
                        .split("Message-ID=")
                        .nth(1)
                        .map(|s| s.split(',').next().unwrap_or(s).trim().to_string());
                    folder = body.split("folderName=").nth(1).map(|s| {
                        s.trim_end_matches('.')
                            .split(',')
                            .next()
                            .unwrap_or(s)
                            .to_string()
                    });
                    items.push(Item {
                        message_id: id,
                        ..Item::default()
                    });
                    Operation::Create
                } else if body.starts_with("Moving Message") {
                    let to = body
                        .split(" to Folder ")
                        .nth(1)
                        .map(|s| s.split(" (id=").next().unwrap_or(s).to_string());
                    let trash = to.as_deref() == Some("Trash");
                    destination = to;
                    if trash {
                        Operation::MoveToDeletedItems
                    } else {
                        Operation::Move
                    }
                } else if body.starts_with("Deleting Message") || body.starts_with("Deleting items")
                {
                    Operation::HardDelete
                } else if body.starts_with("Creating folder") {
                    Operation::FolderCreate
                } else {
                    return Some(Parsed::skipped(
                        reference,
                        "a Zimbra mailop this importer does not map",
                    ));
                };
                (op, name.to_string(), actor.to_string())
            }
            "security" => {
                let fields: Vec<(&str, &str)> = body
                    .split(';')
                    .filter_map(|kv| kv.trim().split_once('='))
                    .collect();
                let sget = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
                let account_name = sget("account").or_else(|| get("name"))?;
                if let Some(e) = sget("error") {
                    result = OperationResult::Failed;
                    reason = Some(e.to_string());
                }
                match sget("cmd") {
                    Some("Auth") => (
                        Operation::MailboxLogin,
                        account_name.to_string(),
                        account_name.to_string(),
                    ),
                    Some("DelegateAuth") => {
                        let by = sget("by").or_else(|| get("aname"))?;
                        acting_as = Some(account_name.to_string());
                        administrative = true;
                        (
                            Operation::MailboxLogin,
                            account_name.to_string(),
                            by.to_string(),
                        )
                    }
                    other => {
                        return Some(Parsed::skipped(
                            reference,
                            format!(
                                "Zimbra security cmd={} is not mailbox access",
                                other.unwrap_or("?")
                            ),
                        ))
                    }
                }
            }
            _ => return Some(Parsed::skipped(reference, "not a mailop or security line")),
        };
        let ip = get("ip")
            .or_else(|| get("oip"))
            .and_then(|i| ip_port(i).ok().flatten());
        let mut parameters = vec![param("zimbra_category", category.trim())];
        if let Some(mid) = get("mid") {
            parameters.push(param("zimbra_mailbox_id", mid));
        }
        parameters.extend(original(text));
        let key = self
            .occurrences
            .key(time, format!("zimbra:{}", digest(&[text])));
        Some(Parsed::Record(Box::new(ImportedObservation {
            observation: Observation {
                time,
                operation,
                result,
                reason,
                mailbox: account(&mailbox, domain.as_deref()),
                actor: account(&actor, domain.as_deref()),
                acting_as,
                administrative,
                folder,
                destination_folder: destination,
                items,
                client: Client {
                    ip: ip.map(|(i, _)| i),
                    port: ip.and_then(|(_, p)| p),
                    name: get("ua").map(str::to_string),
                    ..Client::default()
                },
                provenance: Provenance {
                    source: self.source.clone(),
                    host: None,
                    reference: Some(reference.to_string()),
                },
                parameters,
            },
            source_key: key,
            logon_type: None,
            external: None,
        })))
    }
}

impl<R: BufRead> Iterator for LineImporter<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            let (text, reference) = match self.lines.next_line(&self.ctx.file)? {
                Ok((bytes, reference)) => (String::from_utf8_lossy(bytes).into_owned(), reference),
                Err(rejected) => return Some(rejected),
            };
            if text.trim().is_empty() {
                continue;
            }
            let parsed = match self.kind {
                Kind::Cyrus => self.cyrus(&text, &reference),
                Kind::Zimbra => self.zimbra(&text, &reference),
            };
            match parsed {
                Some(p) => return Some(p),
                // A login line (kept for the join) or a line of another kind.
                None => continue,
            }
        }
    }
}

impl<R: BufRead> Importer for LineImporter<R> {
    fn bytes_read(&self) -> u64 {
        self.lines.position()
    }
}
