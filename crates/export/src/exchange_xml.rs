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
    ExchangeXmlReader::new(input)
        .map(|event| event.and_then(|e| e.to_record()))
        .collect()
}

/// One `<Event>` of a `SearchResult.xml`, as written: its attributes unescaped, its
/// `<SourceItems>` and `<Parameters>` children, and the bytes of the element verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeXmlEvent {
    /// 1-based, in document order.
    pub number: usize,
    /// Byte offset of the `<Event` in the document.
    pub position: u64,
    pub attributes: Vec<(String, String)>,
    /// The attributes of each `<ItemId>` under `<SourceItems>`.
    pub items: Vec<Vec<(String, String)>>,
    /// The attributes of each `<Parameter>` under `<Parameters>`.
    pub parameters: Vec<Vec<(String, String)>>,
    /// The element exactly as it appears in the document (lossily decoded as UTF-8).
    pub raw: String,
}

impl ExchangeXmlEvent {
    /// The unescaped value of an attribute of the `<Event>` itself.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find(&self.attributes, name)
    }

    /// The record this crate wrote the event from. Requires mailaudit's own attributes
    /// (`Seq`, `RecordedAt`, `Source`…): a document Exchange wrote has to be mapped instead.
    pub fn to_record(&self) -> Result<AuditRecord, ExportError> {
        let n = self.number;
        let a = Attrs::from_list(n, format!("Event {n}"), &self.attributes);
        let mut record = read_event(&a)?;
        for (i, item) in self.items.iter().enumerate() {
            let a = Attrs::from_list(n, format!("Event {n}, ItemId {}", i + 1), item);
            record.items.push(read_item(&a)?);
        }
        for (i, param) in self.parameters.iter().enumerate() {
            let a = Attrs::from_list(n, format!("Event {n}, Parameter {}", i + 1), param);
            record.parameters.push(Parameter {
                name: a.req("Name")?,
                value: a.req("Value")?,
            });
        }
        Ok(record)
    }
}

fn find<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Keeps a copy of the bytes the XML parser consumes while `on`, so that an event can be
/// kept verbatim without holding more than that event.
struct Recording<R> {
    inner: R,
    on: bool,
    bytes: Vec<u8>,
}

impl<R: BufRead> io::Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.on {
            self.bytes.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Recording<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if self.on {
            // `fill_buf` after `fill_buf` returns the buffered bytes again without I/O.
            if let Ok(buffered) = self.inner.fill_buf() {
                let n = amt.min(buffered.len());
                self.bytes.extend_from_slice(&buffered[..n]);
            }
        }
        self.inner.consume(amt)
    }
}

/// Streams the `<Event>`s of a `SearchResult.xml`, one at a time, in constant memory. Errors
/// name the event by number; after a syntax error (the document cannot be resynchronised)
/// the iterator ends.
pub struct ExchangeXmlReader<R: BufRead> {
    reader: Reader<Recording<R>>,
    buf: Vec<u8>,
    open: Vec<String>,
    current: Option<ExchangeXmlEvent>,
    /// The current event's attributes were unreadable: skip its children.
    broken: bool,
    events: usize,
    seen_root: bool,
    done: bool,
}

impl<R: BufRead> ExchangeXmlReader<R> {
    pub fn new(input: R) -> Self {
        ExchangeXmlReader {
            reader: Reader::from_reader(Recording {
                inner: input,
                on: false,
                bytes: Vec::new(),
            }),
            buf: Vec::new(),
            open: Vec::new(),
            current: None,
            broken: false,
            events: 0,
            seen_root: false,
            done: false,
        }
    }

    /// Bytes of the document consumed so far (for progress).
    pub fn position(&self) -> u64 {
        self.reader.buffer_position()
    }

    fn syntax(&self, next: bool, position: u64, reason: String) -> ExportError {
        // `next`: the error is at the top level, so in the element after the last Event,
        // which in this shape is the next Event; it is named by that number.
        let (events, inside) = (self.events, self.current.is_some() || self.broken);
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
    }

    fn fail(&mut self, e: ExportError) -> Option<Result<ExchangeXmlEvent, ExportError>> {
        self.done = true;
        Some(Err(e))
    }

    fn take_raw(&mut self) -> String {
        let rec = self.reader.get_mut();
        let text = String::from_utf8_lossy(&rec.bytes);
        let trimmed = text.trim();
        let raw = if trimmed.starts_with('<') {
            trimmed.to_string()
        } else {
            format!("<{trimmed}")
        };
        rec.bytes.clear();
        raw
    }
}

impl<R: BufRead> Iterator for ExchangeXmlReader<R> {
    type Item = Result<ExchangeXmlEvent, ExportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            // Between events (directly inside the root), start a fresh verbatim copy.
            if self.current.is_none() && !self.broken {
                let rec = self.reader.get_mut();
                rec.bytes.clear();
                rec.on = self.open.len() == 1;
            }
            self.buf.clear();
            let start_pos = self.reader.buffer_position();
            let event = match self.reader.read_event_into(&mut self.buf) {
                Ok(event) => event.into_owned(),
                Err(e) => {
                    let at = self.reader.error_position();
                    let err = self.syntax(self.open.len() == 1, at, e.to_string());
                    return self.fail(err);
                }
            };
            let (e, empty) = match event {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(_) => {
                    if self.open.pop().as_deref() == Some("Event") && self.open.len() == 1 {
                        if self.broken {
                            self.broken = false;
                            continue;
                        }
                        if let Some(mut done) = self.current.take() {
                            done.raw = self.take_raw();
                            self.reader.get_mut().on = false;
                            return Some(Ok(done));
                        }
                    }
                    continue;
                }
                Event::Eof => {
                    self.done = true;
                    if let Some(inner) = self.open.last() {
                        let reason = format!("the document ends inside <{inner}>: it is truncated");
                        let at = self.reader.buffer_position();
                        return Some(Err(self.syntax(false, at, reason)));
                    }
                    if !self.seen_root {
                        let reason = format!("no <{ROOT}> element");
                        let at = self.reader.buffer_position();
                        return Some(Err(self.syntax(false, at, reason)));
                    }
                    return None;
                }
                _ => continue,
            };
            let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            if !empty {
                self.open.push(name.clone());
            }
            let parent = if empty {
                self.open.last()
            } else {
                self.open.iter().rev().nth(1)
            };
            match (parent.map(String::as_str), name.as_str()) {
                (None, ROOT) => self.seen_root = true,
                (None, other) => {
                    let reason = format!("the root element is <{other}>, expected <{ROOT}>");
                    let at = self.reader.buffer_position();
                    let err = self.syntax(false, at, reason);
                    return self.fail(err);
                }
                (Some(ROOT), "Event") => {
                    self.events += 1;
                    let n = self.events;
                    let attributes = match attributes_of(&e, n, format!("Event {n}")) {
                        Ok(list) => list,
                        Err(err) => {
                            self.broken = !empty;
                            self.reader.get_mut().on = false;
                            return Some(Err(err));
                        }
                    };
                    let event = ExchangeXmlEvent {
                        number: n,
                        position: start_pos,
                        attributes,
                        items: Vec::new(),
                        parameters: Vec::new(),
                        raw: String::new(),
                    };
                    if empty {
                        let mut event = event;
                        event.raw = self.take_raw();
                        self.reader.get_mut().on = false;
                        return Some(Ok(event));
                    }
                    self.current = Some(event);
                }
                (Some("SourceItems"), "ItemId") | (Some("Parameters"), "Parameter") => {
                    let n = self.events;
                    if let Some(current) = self.current.as_mut() {
                        let is_item = name == "ItemId";
                        let index = if is_item {
                            current.items.len() + 1
                        } else {
                            current.parameters.len() + 1
                        };
                        let place = format!("Event {n}, {name} {index}");
                        match attributes_of(&e, n, place) {
                            Ok(list) if is_item => current.items.push(list),
                            Ok(list) => current.parameters.push(list),
                            Err(err) => {
                                self.current = None;
                                self.broken = true;
                                self.reader.get_mut().on = false;
                                return Some(Err(err));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn attributes_of(
    e: &BytesStart,
    event: usize,
    place: String,
) -> Result<Vec<(String, String)>, ExportError> {
    let mut list = Vec::new();
    for a in e.attributes() {
        let error = |attribute: &str, reason: String| ExportError::XmlAttribute {
            event,
            place: place.clone(),
            attribute: attribute.to_string(),
            reason,
        };
        let a = a.map_err(|err| error("(syntax)", err.to_string()))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|err| error(&key, err.to_string()))?;
        list.push((key, value.into_owned()));
    }
    Ok(list)
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
struct Attrs<'a> {
    event: usize,
    place: String,
    list: &'a [(String, String)],
}

impl<'a> Attrs<'a> {
    fn from_list(event: usize, place: String, list: &'a [(String, String)]) -> Self {
        Attrs { event, place, list }
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
