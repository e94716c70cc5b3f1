//! OWA through IIS W3C extended logs. Our own parser: the columns are whatever the latest
//! `#Fields:` line says, and IIS writes a new header (possibly with other fields) whenever
//! logging restarts, so the mapping is re-read at every `#Fields:` line. Values never contain
//! spaces (IIS writes them as `+`); `-` means none. W3C times are UTC.
//!
//! Mailbox access is recognised in OWA URLs:
//! - Exchange 2000–2003 `/exchange/<mailbox>/<folder…>/<item>.EML`: `Cmd=open` of an item is
//!   a MessageBind (the item's subject is its file name), of a folder a FolderBind;
//! - Exchange 2007 and later `/owa/[<mailbox>/]?ae=Item…` (MessageBind) and `ae=Folder`
//!   (FolderBind), where folder and item are opaque ids kept as parameters and the item is
//!   marked unresolved.
//!
//! The actor is `cs-username`; the result comes from `sc-status`. Requests that are not
//! mailbox access (scripts, images, sign-in pages, anonymous requests) are skipped.

use crate::line_reader::LineReader;
use crate::time::parse_utc;
use crate::{
    account, digest, ip_port, original, param, present, Context, Importer, Occurrences, Parsed,
};
use mailaudit_model::{
    Client, ImportedObservation, Item, Observation, Operation, OperationResult, Provenance,
};
use std::io::BufRead;

pub(crate) struct IisImporter<R: BufRead> {
    lines: LineReader<R>,
    fields: Vec<String>,
    ctx: Context,
    source: String,
    occurrences: Occurrences,
}

impl<R: BufRead> IisImporter<R> {
    pub(crate) fn new(reader: R, ctx: Context) -> Self {
        IisImporter {
            lines: LineReader::new(reader),
            fields: Vec::new(),
            ctx,
            source: crate::Format::Iis.source(),
            occurrences: Occurrences::default(),
        }
    }
}

/// `%XX` and `+` decoding of a URL path segment or query value. Invalid escapes stay as
/// they are; the result is UTF-8, lossily.
pub(crate) fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// What an OWA request did, read from its URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OwaAccess {
    pub operation: Operation,
    pub mailbox: Option<String>,
    pub folder: Option<String>,
    pub item: Option<Item>,
    pub parameters: Vec<(String, String)>,
}

pub(crate) fn owa_access(stem: &str, query: &str) -> Option<OwaAccess> {
    let lower = stem.to_ascii_lowercase();
    if let Some(rest) = lower
        .strip_prefix("/exchange/")
        .map(|_| &stem["/exchange/".len()..])
    {
        let cmd = query_value(query, "Cmd").map(|c| c.to_ascii_lowercase());
        let mut segments: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(url_decode)
            .collect();
        if segments.is_empty() {
            return None;
        }
        let mailbox = segments.remove(0);
        let is_item = segments
            .last()
            .is_some_and(|s| s.to_ascii_lowercase().ends_with(".eml"));
        let opens = matches!(cmd.as_deref(), Some("open") | None);
        if is_item && opens {
            let name = segments.pop().unwrap_or_default();
            let subject = name[..name.len() - 4].to_string();
            return Some(OwaAccess {
                operation: Operation::MessageBind,
                mailbox: Some(mailbox),
                folder: (!segments.is_empty()).then(|| segments.join("/")),
                item: Some(Item {
                    subject: Some(subject),
                    unresolved: Some(
                        "OWA names the item by its file name only; no Message-ID".into(),
                    ),
                    ..Item::default()
                }),
                parameters: Vec::new(),
            });
        }
        if !is_item && matches!(cmd.as_deref(), Some("open") | Some("contents")) {
            return Some(OwaAccess {
                operation: Operation::FolderBind,
                mailbox: Some(mailbox),
                folder: (!segments.is_empty()).then(|| segments.join("/")),
                item: None,
                parameters: Vec::new(),
            });
        }
        return None;
    }
    if lower == "/owa/" || lower == "/owa" || lower.starts_with("/owa/") {
        let rest = &stem[4..];
        let first = rest.split('/').find(|s| !s.is_empty()).map(url_decode);
        // `/owa/alice@example.com/` opens another mailbox; `/owa/auth/…`, `/owa/14.3…/`
        // (scripts and images) are not mailbox access.
        let mailbox = first.filter(|s| s.contains('@'));
        let ae = query_value(query, "ae")?.to_ascii_lowercase();
        let id = query_value(query, "id").map(url_decode);
        let kind = query_value(query, "t").map(url_decode);
        let mut parameters = Vec::new();
        if let Some(k) = &kind {
            parameters.push(("owa_type".to_string(), k.clone()));
        }
        if let Some(i) = &id {
            parameters.push(("owa_id".to_string(), i.clone()));
        }
        return match ae.as_str() {
            "item" => Some(OwaAccess {
                operation: Operation::MessageBind,
                mailbox,
                folder: None,
                item: Some(Item {
                    unresolved: Some("OWA names the item by an opaque id (owa_id)".into()),
                    ..Item::default()
                }),
                parameters,
            }),
            "folder" => Some(OwaAccess {
                operation: Operation::FolderBind,
                mailbox,
                folder: None,
                item: None,
                parameters,
            }),
            _ => None,
        };
    }
    None
}

impl<R: BufRead> IisImporter<R> {
    fn field<'a>(&self, values: &[&'a str], name: &str) -> Option<&'a str> {
        let i = self
            .fields
            .iter()
            .position(|f| f.eq_ignore_ascii_case(name))?;
        present(values.get(i).copied())
    }

    fn record(&mut self, text: &str, reference: String) -> Parsed {
        let values: Vec<&str> = text.split(' ').collect();
        if values.len() != self.fields.len() {
            return Parsed::rejected(
                reference,
                format!(
                    "{} values, but the last #Fields: line names {}",
                    values.len(),
                    self.fields.len()
                ),
            );
        }
        let Some(stem) = self.field(&values, "cs-uri-stem") else {
            return Parsed::rejected(reference, "cs-uri-stem: missing");
        };
        let query = self.field(&values, "cs-uri-query").unwrap_or("");
        let Some(access) = owa_access(stem, query) else {
            return Parsed::skipped(reference, "not an OWA mailbox request");
        };
        let Some(user) = self.field(&values, "cs-username") else {
            return Parsed::skipped(reference, "anonymous request (no cs-username)");
        };
        let time = match (self.field(&values, "date"), self.field(&values, "time")) {
            (Some(d), Some(t)) => match parse_utc(&format!("{d} {t}")) {
                Ok(t) => t,
                Err(e) => return Parsed::rejected(reference, format!("date/time: {e}")),
            },
            _ => {
                return Parsed::rejected(reference, "date/time: missing from this line's #Fields:")
            }
        };
        let status = self.field(&values, "sc-status");
        let (result, reason) = match status.map(str::parse::<u16>) {
            Some(Ok(s)) if s < 400 => (OperationResult::Succeeded, None),
            Some(Ok(s)) => (OperationResult::Failed, Some(format!("HTTP {s}"))),
            Some(Err(_)) => {
                return Parsed::rejected(
                    reference,
                    format!("sc-status: `{}` is not a number", status.unwrap_or("")),
                )
            }
            None => (OperationResult::Succeeded, None),
        };
        let addr = match self.field(&values, "c-ip").map(ip_port) {
            Some(Ok(a)) => a,
            Some(Err(e)) => return Parsed::rejected(reference, format!("c-ip: {e}")),
            None => None,
        };
        let domain = self.ctx.domain.as_deref();
        let actor = account(&url_decode(user), domain);
        let mailbox = access
            .mailbox
            .as_deref()
            .map(|m| account(m, domain))
            .unwrap_or_else(|| actor.clone());
        let mut parameters: Vec<_> = access
            .parameters
            .iter()
            .map(|(k, v)| param(k, v.clone()))
            .collect();
        if let Some(s) = status {
            parameters.push(param("http_status", s));
        }
        if access.mailbox.is_none() {
            parameters.push(param(
                "mailbox_from",
                "cs-username (the URL names no mailbox)",
            ));
        }
        if status.is_none() {
            parameters.push(param("unknown", "result"));
        }
        parameters.extend(original(text));
        let key = self
            .occurrences
            .key(time, format!("iis:{}", digest(&[text])));
        Parsed::Record(Box::new(ImportedObservation {
            observation: Observation {
                time,
                operation: access.operation,
                result,
                reason,
                mailbox,
                actor,
                acting_as: None,
                administrative: false,
                folder: access.folder,
                destination_folder: None,
                items: access.item.into_iter().collect(),
                client: Client {
                    ip: addr.map(|(ip, _)| ip),
                    port: addr.and_then(|(_, p)| p),
                    protocol: Some("http".into()),
                    name: self.field(&values, "cs(User-Agent)").map(url_decode),
                    session: None,
                    tls: self.field(&values, "s-port").map(|p| p == "443"),
                },
                provenance: Provenance {
                    source: self.source.clone(),
                    host: self
                        .field(&values, "s-computername")
                        .or_else(|| self.field(&values, "s-sitename"))
                        .map(str::to_string),
                    reference: Some(reference),
                },
                parameters,
            },
            source_key: key,
            logon_type: None,
            external: None,
        }))
    }
}

impl<R: BufRead> Iterator for IisImporter<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            let (text, reference) = match self.lines.next_line(&self.ctx.file)? {
                Ok((bytes, reference)) => (String::from_utf8_lossy(bytes).into_owned(), reference),
                Err(rejected) => return Some(rejected),
            };
            if let Some(directive) = text.strip_prefix('#') {
                if let Some(fields) = directive.strip_prefix("Fields:") {
                    self.fields = fields.split_whitespace().map(str::to_string).collect();
                }
                continue;
            }
            if text.trim().is_empty() {
                continue;
            }
            if self.fields.is_empty() {
                return Some(Parsed::rejected(
                    reference,
                    "no #Fields: line before this one: cannot tell which value is which",
                ));
            }
            return Some(self.record(&text, reference));
        }
    }
}

impl<R: BufRead> Importer for IisImporter<R> {
    fn bytes_read(&self) -> u64 {
        self.lines.position()
    }
}
