//! Exchange's `SearchResult.xml`, the shape of a mailbox audit log export, extended with the
//! attributes that make it lossless for mailaudit (`Seq`, `RecordedAt`, `Reason`,
//! `ClientPort`, `SessionId`, `Tls`, `Source`, `SourceHost`, `SourceReference`), and the
//! reader that turns such a document back into the identical records.
//!
//! Must never emit ill-formed XML, whatever a record holds. Values are escaped here, with tab,
//! LF and CR written as character references so that a parser's attribute-value
//! normalisation cannot turn them into spaces. Characters that XML 1.0 forbids outright (C0
//! controls other than tab, LF and CR; U+FFFE; U+FFFF) cannot be carried even by a character
//! reference, so they are replaced by U+FFFD: the one lossy step of this format. Must never
//! apply CSV's formula guard, and never hold more than one record while writing.
//!
//! The reader ignores attributes and elements it does not know (`MailboxGuid`, `Owner`,
//! `InternalLogonType`, Exchange's other columns) and names the `<Event>` by its 1-based
//! number, and the attribute, in every error.

use crate::ExportError;
use mailaudit_model::{AuditRecord, Client, Item, Parameter, Provenance};
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
use quick_xml::{Reader, Writer};
use std::fmt::Display;
use std::io::{self, BufRead, Write};
use std::str::FromStr;

const ROOT: &str = "SearchResults";

pub(crate) fn start<W: Write>(out: W) -> io::Result<Writer<W>> {
    let mut w = Writer::new_with_indent(out, b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))?;
    w.write_event(Event::Start(BytesStart::new(ROOT)))?;
    Ok(w)
}

pub(crate) fn finish<W: Write>(mut w: Writer<W>) -> io::Result<W> {
    w.write_event(Event::End(BytesEnd::new(ROOT)))?;
    let mut out = w.into_inner();
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(out)
}

pub(crate) fn write_event<W: Write>(w: &mut Writer<W>, r: &AuditRecord) -> io::Result<()> {
    let mut e = BytesStart::new("Event");
    let c = &r.client;
    let p = &r.provenance;
    attr(&mut e, "MailboxGuid", "");
    attr(&mut e, "Owner", &r.mailbox);
    attr(&mut e, "LastAccessed", &r.time.to_rfc3339());
    attr(&mut e, "Operation", r.operation.as_str());
    attr(&mut e, "OperationResult", r.result.as_str());
    attr(&mut e, "LogonType", r.logon_type.as_str());
    attr(&mut e, "ExternalAccess", &r.external.to_string());
    opt_attr(&mut e, "FolderPathName", r.folder.as_ref());
    opt_attr(&mut e, "DestFolderPathName", r.destination_folder.as_ref());
    opt_attr(&mut e, "ClientInfoString", c.name.as_ref());
    opt_attr(&mut e, "ClientIPAddress", c.ip.as_ref());
    opt_attr(&mut e, "ClientPort", c.port.as_ref());
    opt_attr(&mut e, "ClientProtocol", c.protocol.as_ref());
    opt_attr(&mut e, "SessionId", c.session.as_ref());
    opt_attr(&mut e, "Tls", c.tls.as_ref());
    attr(&mut e, "MailboxOwnerUPN", &r.mailbox);
    attr(&mut e, "LogonUserDisplayName", &r.actor);
    opt_attr(&mut e, "ActingAs", r.acting_as.as_ref());
    attr(&mut e, "InternalLogonType", "");
    attr(&mut e, "Seq", &r.seq.to_string());
    attr(&mut e, "RecordedAt", &r.recorded_at.to_rfc3339());
    opt_attr(&mut e, "Reason", r.reason.as_ref());
    attr(&mut e, "Source", &p.source);
    opt_attr(&mut e, "SourceHost", p.host.as_ref());
    opt_attr(&mut e, "SourceReference", p.reference.as_ref());
    if r.items.is_empty() && r.parameters.is_empty() {
        return w.write_event(Event::Empty(e));
    }
    w.write_event(Event::Start(e))?;
    if !r.items.is_empty() {
        w.write_event(Event::Start(BytesStart::new("SourceItems")))?;
        for item in &r.items {
            let mut e = BytesStart::new("ItemId");
            opt_attr(&mut e, "Uid", item.uid.as_ref());
            opt_attr(&mut e, "InternetMessageId", item.message_id.as_ref());
            opt_attr(&mut e, "Subject", item.subject.as_ref());
            opt_attr(&mut e, "Size", item.size.as_ref());
            opt_attr(&mut e, "FolderPathName", item.folder.as_ref());
            opt_attr(&mut e, "Unresolved", item.unresolved.as_ref());
            w.write_event(Event::Empty(e))?;
        }
        w.write_event(Event::End(BytesEnd::new("SourceItems")))?;
    }
    if !r.parameters.is_empty() {
        w.write_event(Event::Start(BytesStart::new("Parameters")))?;
        for param in &r.parameters {
            let mut e = BytesStart::new("Parameter");
            attr(&mut e, "Name", &param.name);
            attr(&mut e, "Value", &param.value);
            w.write_event(Event::Empty(e))?;
        }
        w.write_event(Event::End(BytesEnd::new("Parameters")))?;
    }
    w.write_event(Event::End(BytesEnd::new("Event")))
}

fn attr(e: &mut BytesStart, name: &str, value: &str) {
    let escaped = escape_attribute(value);
    e.push_attribute(Attribute::from((name.as_bytes(), escaped.as_bytes())));
}

fn opt_attr(e: &mut BytesStart, name: &str, value: Option<&impl ToString>) {
    if let Some(v) = value {
        attr(e, name, &v.to_string());
    }
}

/// Escapes an attribute value for a double-quoted attribute. Tab, LF and CR become character
/// references (literal ones would be normalised to spaces by a conforming parser); characters
/// XML 1.0 does not allow at all become U+FFFD, since no escape can carry them.
fn escape_attribute(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            ch => out.push(ch),
        }
    }
    out
}

/// Reads a `SearchResult.xml` written by this crate back into the records it was written
/// from. Every record is returned identical, except that characters XML cannot carry were
/// replaced by U+FFFD when it was written. Errors name the `<Event>` by its 1-based number
/// and the attribute at fault; a truncated document is an error, never a short list.
pub fn read_exchange_xml<R: BufRead>(input: R) -> Result<Vec<AuditRecord>, ExportError> {
    let mut reader = Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut records = Vec::new();
    let mut current: Option<AuditRecord> = None;
    let (mut events, mut items, mut params) = (0usize, 0usize, 0usize);
    let mut seen_root = false;
    // `next`: the error is at the top level, so in the element after the last Event, which
    // in this shape is the next Event; it is named by that number.
    let syntax = |events: usize, inside: bool, next: bool, position: u64, reason: String| {
        let (event, place) = match (events, inside, next) {
            (n, true, _) => (n, format!("Event {n}")),
            (n, false, true) => (n + 1, format!("Event {}", n + 1)),
            (0, false, false) => (0, "before the first Event".to_string()),
            (n, false, false) => (n, format!("after Event {n}")),
        };
        ExportError::XmlSyntax {
            event,
            place,
            position,
            reason,
        }
    };
    loop {
        buf.clear();
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(e) => {
                let (at, inside) = (reader.error_position(), current.is_some());
                return Err(syntax(events, inside, open.len() == 1, at, e.to_string()));
            }
        };
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                if open.pop().as_deref() == Some("Event") && open.len() == 1 {
                    records.extend(current.take());
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        match (open.last().map(String::as_str), name.as_str()) {
            (None, ROOT) => seen_root = true,
            (None, other) => {
                let reason = format!("the root element is <{other}>, expected <{ROOT}>");
                return Err(syntax(0, false, false, reader.buffer_position(), reason));
            }
            (Some(ROOT), "Event") => {
                events += 1;
                (items, params) = (0, 0);
                let record = read_event(&Attrs::of(&e, events, format!("Event {events}"))?)?;
                if empty {
                    records.push(record);
                } else {
                    current = Some(record);
                }
            }
            (Some("SourceItems"), "ItemId") => {
                if let Some(record) = current.as_mut() {
                    items += 1;
                    let place = format!("Event {events}, ItemId {items}");
                    record
                        .items
                        .push(read_item(&Attrs::of(&e, events, place)?)?);
                }
            }
            (Some("Parameters"), "Parameter") => {
                if let Some(record) = current.as_mut() {
                    params += 1;
                    let a = Attrs::of(&e, events, format!("Event {events}, Parameter {params}"))?;
                    record.parameters.push(Parameter {
                        name: a.req("Name")?,
                        value: a.req("Value")?,
                    });
                }
            }
            _ => {}
        }
        if !empty {
            open.push(name);
        }
    }
    if let Some(inner) = open.last() {
        let reason = format!("the document ends inside <{inner}>: it is truncated");
        let at = reader.buffer_position();
        return Err(syntax(events, current.is_some(), false, at, reason));
    }
    if !seen_root {
        let reason = format!("no <{ROOT}> element");
        return Err(syntax(0, false, false, reader.buffer_position(), reason));
    }
    Ok(records)
}

fn read_event(a: &Attrs) -> Result<AuditRecord, ExportError> {
    Ok(AuditRecord {
        seq: a.req("Seq")?,
        time: a.req("LastAccessed")?,
        recorded_at: a.req("RecordedAt")?,
        operation: a.req("Operation")?,
        result: a.req("OperationResult")?,
        reason: a.opt("Reason")?,
        logon_type: a.req("LogonType")?,
        external: a.req("ExternalAccess")?,
        mailbox: a.req("MailboxOwnerUPN")?,
        actor: a.req("LogonUserDisplayName")?,
        acting_as: a.opt("ActingAs")?,
        folder: a.opt("FolderPathName")?,
        destination_folder: a.opt("DestFolderPathName")?,
        items: Vec::new(),
        client: Client {
            ip: a.opt("ClientIPAddress")?,
            port: a.opt("ClientPort")?,
            protocol: a.opt("ClientProtocol")?,
            name: a.opt("ClientInfoString")?,
            session: a.opt("SessionId")?,
            tls: a.opt("Tls")?,
        },
        provenance: Provenance {
            source: a.req("Source")?,
            host: a.opt("SourceHost")?,
            reference: a.opt("SourceReference")?,
        },
        parameters: Vec::new(),
    })
}

fn read_item(a: &Attrs) -> Result<Item, ExportError> {
    Ok(Item {
        uid: a.opt("Uid")?,
        message_id: a.opt("InternetMessageId")?,
        subject: a.opt("Subject")?,
        size: a.opt("Size")?,
        folder: a.opt("FolderPathName")?,
        unresolved: a.opt("Unresolved")?,
    })
}

/// An element's attributes, unescaped, with where they came from for error messages.
struct Attrs {
    event: usize,
    place: String,
    list: Vec<(String, String)>,
}

impl Attrs {
    fn of(e: &BytesStart, event: usize, place: String) -> Result<Attrs, ExportError> {
        let mut attrs = Attrs {
            event,
            place,
            list: Vec::new(),
        };
        for a in e.attributes() {
            let a = a.map_err(|err| attrs.error("(syntax)", err.to_string()))?;
            let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let value = a
                .unescape_value()
                .map_err(|err| attrs.error(&key, err.to_string()))?;
            attrs.list.push((key, value.into_owned()));
        }
        Ok(attrs)
    }

    fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, ExportError>
    where
        T::Err: Display,
    {
        let Some((_, text)) = self.list.iter().find(|(k, _)| k == name) else {
            return Ok(None);
        };
        text.parse()
            .map(Some)
            .map_err(|e: T::Err| self.error(name, format!("`{text}`: {e}")))
    }

    fn req<T: FromStr>(&self, name: &str) -> Result<T, ExportError>
    where
        T::Err: Display,
    {
        self.opt(name)?
            .ok_or_else(|| self.error(name, "missing".to_string()))
    }

    fn error(&self, attribute: &str, reason: String) -> ExportError {
        ExportError::XmlAttribute {
            event: self.event,
            place: self.place.clone(),
            attribute: attribute.to_string(),
            reason,
        }
    }
}
