//! Windows event logs: `.evtx` files (read with the evtx crate, chunk by chunk) and XML
//! exported with `wevtutil qe <log> /f:xml` (a sequence of `<Event>` elements, with
//! `/f:RenderedXml` also their message). Both give the same event XML, mapped here:
//!
//! - Exchange 2000/2003 event 1016 (MSExchangeIS): a logon to a mailbox by an account that
//!   is not its primary one. A MailboxLogin; the event has no folder, no result and no
//!   client, so those are marked `unknown`, never filled in.
//! - Exchange 2007 SP2 mailbox access auditing (the "Exchange Auditing" log): folder access
//!   10100, message access 10102, send as 10104, send on behalf 10106.
//! - Active Directory changes that alter who can reach a mailbox: 4662 (an operation on an
//!   object, kept when it names the Send-As or Receive-As extended right), 5136 (an attribute
//!   changed, kept for the mailbox rights and delegation attributes), 4738 (a user account
//!   changed) and the Windows 2003 events 642 (user account changed) and 668 (group type
//!   changed). Recorded as UpdateFolderPermissions on the object, every field kept.
//!
//! Any other event is skipped and counted. The source key is the computer, channel and
//! `EventRecordID`, so the same event read from an `.evtx` and from a wevtutil export is
//! stored once.

use crate::time::parse_utc;
use crate::{account, digest, original, param, Context, Importer, Parsed};
use mailaudit_model::{
    Client, ImportedObservation, Item, Observation, Operation, OperationResult, Parameter,
    Provenance,
};
use quick_xml::events::Event as XmlEvent;
use std::collections::VecDeque;
use std::io::{BufRead, Read, Seek};

/// One event's XML, reduced to what the mappings read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct WinEvent {
    pub provider: String,
    pub event_id: u32,
    pub channel: Option<String>,
    pub time: Option<String>,
    pub record_id: Option<u64>,
    pub computer: Option<String>,
    pub user_sid: Option<String>,
    /// `<Data Name="…">value</Data>`, or unnamed insertion strings in order.
    pub data: Vec<(Option<String>, String)>,
    /// The rendered message (`RenderingInfo/Message`), when exported with it.
    pub message: Option<String>,
}

impl WinEvent {
    fn named(&self, name: &str) -> Option<&str> {
        self.data
            .iter()
            .find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty() && *v != "-")
    }

    fn nth(&self, i: usize) -> Option<&str> {
        self.data
            .get(i)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty() && *v != "-")
    }

    /// `Key: value` lines of the rendered message (Exchange Auditing events).
    fn message_field(&self, key: &str) -> Option<&str> {
        self.message
            .as_deref()?
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim())
            })
            .filter(|v| !v.is_empty())
    }
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => name.into_owned(),
    }
}

/// Parses one `<Event>` element.
pub(crate) fn parse_event(xml: &str) -> Result<WinEvent, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut ev = WinEvent::default();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut data_name: Option<String> = None;
    let mut saw_id = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("event XML: {e} at byte {}", reader.error_position()))?;
        match event {
            XmlEvent::Start(ref e) | XmlEvent::Empty(ref e) => {
                let name = local(e.name().as_ref());
                let attr = |want: &str| -> Option<String> {
                    e.attributes().flatten().find_map(|a| {
                        if local(a.key.as_ref()) == want {
                            a.unescape_value().ok().map(|v| v.into_owned())
                        } else {
                            None
                        }
                    })
                };
                match name.as_str() {
                    "Provider" => {
                        ev.provider = attr("Name")
                            .or_else(|| attr("EventSourceName"))
                            .unwrap_or_default()
                    }
                    "TimeCreated" => ev.time = attr("SystemTime"),
                    "Security" => ev.user_sid = attr("UserID"),
                    "Data" => data_name = attr("Name"),
                    _ => {}
                }
                text.clear();
                if matches!(event, XmlEvent::Start(_)) {
                    path.push(name);
                } else if name == "Data" && path.last().is_some_and(|p| p == "EventData") {
                    // `<Data Name="x"/>`: an empty value, still in its place.
                    ev.data.push((data_name.take(), String::new()));
                }
            }
            XmlEvent::Text(t) => {
                let t = t.unescape().map_err(|e| format!("event XML: {e}"))?;
                text.push_str(&t);
            }
            XmlEvent::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            XmlEvent::End(_) => {
                let name = path.pop().unwrap_or_default();
                let value = std::mem::take(&mut text);
                match name.as_str() {
                    "EventID" => {
                        ev.event_id = value
                            .trim()
                            .parse()
                            .map_err(|_| format!("EventID: `{}` is not a number", value.trim()))?;
                        saw_id = true;
                    }
                    "EventRecordID" => ev.record_id = value.trim().parse().ok(),
                    "Computer" => ev.computer = Some(value.trim().to_string()),
                    "Channel" => ev.channel = Some(value.trim().to_string()),
                    "Data" if path.last().is_some_and(|p| p == "EventData") => {
                        ev.data.push((data_name.take(), value))
                    }
                    "Message" => ev.message = Some(value),
                    _ => {}
                }
            }
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    if !saw_id {
        return Err("EventID: missing".into());
    }
    Ok(ev)
}

const SEND_AS: &str = "ab721a54-1e2f-11d0-9819-00aa0040529b";
const RECEIVE_AS: &str = "ab721a56-1e2f-11d0-9819-00aa0040529b";
/// Directory attributes that decide who may open or send from a mailbox.
const MAILBOX_ATTRIBUTES: &[&str] = &[
    "msExchMailboxSecurityDescriptor",
    "msExchDelegateListLink",
    "publicDelegates",
    "nTSecurityDescriptor",
    "altRecipient",
    "msExchGenericForwardingAddress",
];

/// 1016's message: "… user DOMAIN\\meera logged on to ratish's mailbox, and is not …".
fn parse_1016_message(message: &str) -> Option<(String, String)> {
    let after_user = message.split_once(" user ")?.1;
    let (user, rest) = after_user.split_once(" logged on to ")?;
    let (mailbox, _) = rest.split_once(" mailbox")?;
    Some((user.trim().to_string(), mailbox.trim().to_string()))
}

pub(crate) fn map_event(
    ev: &WinEvent,
    raw: &str,
    reference: &str,
    source: &str,
    ctx: &Context,
) -> Parsed {
    match build(ev, raw, reference, source, ctx) {
        Ok(p) => p,
        Err(reason) => Parsed::rejected(reference, reason),
    }
}

fn build(
    ev: &WinEvent,
    raw: &str,
    reference: &str,
    source: &str,
    ctx: &Context,
) -> Result<Parsed, String> {
    let domain = ctx.domain.as_deref();
    let provider = ev.provider.as_str();
    let is_exchange = provider.starts_with("MSExchange");
    let is_security = provider == "Microsoft-Windows-Security-Auditing" || provider == "Security";
    let mut parameters = vec![
        param("event_id", ev.event_id.to_string()),
        param("event_provider", provider),
    ];
    let mut unknown: Vec<&str> = Vec::new();
    let mut items = Vec::new();
    let mut folder = None;
    let (operation, actor, mailbox) = match ev.event_id {
        1016 if is_exchange => {
            let (user, mailbox) = ev
                .message
                .as_deref()
                .and_then(parse_1016_message)
                .or_else(|| Some((ev.nth(0)?.to_string(), ev.nth(1)?.to_string())))
                .ok_or("event 1016 names neither the account nor the mailbox (no message, fewer than two insertion strings)")?;
            unknown.extend(["result", "folder", "client"]);
            (Operation::MailboxLogin, user, mailbox)
        }
        10100 | 10102 | 10104 | 10106 if is_exchange => {
            let op = match ev.event_id {
                10100 => Operation::FolderBind,
                10102 => Operation::MessageBind,
                10104 => Operation::SendAs,
                _ => Operation::SendOnBehalf,
            };
            let field = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| {
                        ev.named(&n.replace(' ', ""))
                            .or_else(|| ev.message_field(n))
                    })
                    .map(str::to_string)
            };
            let actor = field(&["Accessing User", "Accessing Account", "User"])
                .ok_or("the accessing user is missing")?;
            let mailbox = field(&["Mailbox", "Mailbox Owner", "Target Mailbox"])
                .ok_or("the mailbox is missing")?;
            folder = field(&["Folder", "Folder Name"]);
            if folder.is_none() {
                unknown.push("folder");
            }
            let subject = field(&["Subject"]);
            let message_id = field(&["Message ID", "Internet Message ID"]);
            if subject.is_some() || message_id.is_some() {
                items.push(Item {
                    subject,
                    message_id,
                    ..Item::default()
                });
            }
            // Access Auditing records successful access only ("success is what counts", in
            // Microsoft's SP2 announcement): the result is known; the client is not given.
            unknown.push("client");
            (op, actor, mailbox)
        }
        4662 | 566 if is_security => {
            let props = ev.named("Properties").unwrap_or("").to_ascii_lowercase();
            if !props.contains(SEND_AS) && !props.contains(RECEIVE_AS) {
                return Ok(Parsed::skipped(
                    reference,
                    format!(
                        "event {} names no mailbox right (Send-As, Receive-As)",
                        ev.event_id
                    ),
                ));
            }
            let right = if props.contains(SEND_AS) {
                "Send-As"
            } else {
                "Receive-As"
            };
            parameters.push(param("ad_right", right));
            let object = ev.named("ObjectName").ok_or("ObjectName: missing")?;
            (
                Operation::UpdateFolderPermissions,
                subject_of(ev)?,
                object.to_string(),
            )
        }
        5136 if is_security => {
            let attribute = ev
                .named("AttributeLDAPDisplayName")
                .ok_or("AttributeLDAPDisplayName: missing")?;
            if !MAILBOX_ATTRIBUTES
                .iter()
                .any(|a| a.eq_ignore_ascii_case(attribute))
            {
                return Ok(Parsed::skipped(
                    reference,
                    format!("event 5136 changes {attribute}, not a mailbox right"),
                ));
            }
            let object = ev.named("ObjectDN").ok_or("ObjectDN: missing")?;
            (
                Operation::UpdateFolderPermissions,
                subject_of(ev)?,
                object.to_string(),
            )
        }
        4738 | 642 | 668 if is_security => {
            let target = match (ev.named("TargetUserName"), ev.named("TargetDomainName")) {
                (Some(u), Some(d)) => format!("{d}\\{u}"),
                (Some(u), None) => u.to_string(),
                // Windows 2003 insertion strings: target account, its domain, its id,
                // then the caller's name and domain.
                _ => match (ev.nth(0), ev.nth(1)) {
                    (Some(u), Some(d)) => format!("{d}\\{u}"),
                    (Some(u), None) => u.to_string(),
                    _ => return Err("the changed account is missing".into()),
                },
            };
            let actor = subject_of(ev).or_else(|_| match (ev.nth(3), ev.nth(4)) {
                (Some(u), Some(d)) => Ok(format!("{d}\\{u}")),
                (Some(u), None) => Ok(u.to_string()),
                _ => Err("the account that made the change is missing".to_string()),
            })?;
            (Operation::UpdateFolderPermissions, actor, target)
        }
        id => {
            return Ok(Parsed::skipped(
                reference,
                format!("event {id} from {provider} is not mailbox audit data"),
            ))
        }
    };
    for (name, value) in &ev.data {
        if let Some(n) = name {
            if !value.trim().is_empty() {
                parameters.push(Parameter {
                    name: format!("data_{n}"),
                    value: value.clone(),
                });
            }
        }
    }
    if let Some(sid) = &ev.user_sid {
        parameters.push(param("user_sid", sid.as_str()));
    }
    if let Some(id) = ev.record_id {
        parameters.push(param("event_record_id", id.to_string()));
    }
    if !unknown.is_empty() {
        parameters.push(param("unknown", unknown.join(",")));
    }
    parameters.extend(original(raw));
    let time = parse_utc(ev.time.as_deref().ok_or("TimeCreated: missing")?)
        .or_else(|_| parse_evtx_time(ev.time.as_deref().unwrap_or("")))
        .map_err(|e| format!("TimeCreated: {e}"))?;
    let computer = ev.computer.clone().unwrap_or_default();
    let key = match ev.record_id {
        Some(id) => format!(
            "winevent:{}:{}:{}",
            computer.to_ascii_lowercase(),
            ev.channel.as_deref().unwrap_or(provider),
            id
        ),
        None => format!("winevent-content:{}", digest(&[raw])),
    };
    Ok(Parsed::Record(Box::new(ImportedObservation {
        observation: Observation {
            time,
            operation,
            result: OperationResult::Succeeded,
            reason: None,
            mailbox: account(&mailbox, domain),
            actor: account(&actor, domain),
            acting_as: None,
            administrative: false,
            folder,
            destination_folder: None,
            items,
            client: Client::default(),
            provenance: Provenance {
                source: source.to_string(),
                host: ev.computer.clone(),
                reference: Some(reference.to_string()),
            },
            parameters,
        },
        source_key: key,
        logon_type: None,
        external: None,
    })))
}

fn subject_of(ev: &WinEvent) -> Result<String, String> {
    match (ev.named("SubjectUserName"), ev.named("SubjectDomainName")) {
        (Some(u), Some(d)) => Ok(format!("{d}\\{u}")),
        (Some(u), None) => Ok(u.to_string()),
        _ => Err("SubjectUserName: missing".into()),
    }
}

/// `2009-10-12 23:27:49.123456 UTC`, as some tools print SystemTime.
fn parse_evtx_time(text: &str) -> Result<mailaudit_model::Timestamp, String> {
    let t = text.trim().trim_end_matches(" UTC");
    parse_utc(t)
}

/// `wevtutil qe … /f:xml` output: `<Event>` elements one after another (no root element),
/// read one at a time.
pub(crate) struct WevtutilImporter<R: BufRead> {
    reader: R,
    buf: Vec<u8>,
    /// Lines before `buf[0]`.
    line: u64,
    position: u64,
    events: u64,
    ctx: Context,
    source: String,
    done: bool,
}

impl<R: BufRead> WevtutilImporter<R> {
    pub(crate) fn new(reader: R, ctx: Context) -> Self {
        WevtutilImporter {
            reader,
            buf: Vec::new(),
            line: 0,
            position: 0,
            events: 0,
            ctx,
            source: crate::Format::WevtutilXml.source(),
            done: false,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl<R: BufRead> Iterator for WevtutilImporter<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        const END: &[u8] = b"</Event>";
        loop {
            if self.done {
                return None;
            }
            if let Some(end) = find(&self.buf, END) {
                let end = end + END.len();
                let chunk: Vec<u8> = self.buf.drain(..end).collect();
                let start = find(&chunk, b"<Event").unwrap_or(0);
                let line =
                    self.line + chunk[..start].iter().filter(|b| **b == b'\n').count() as u64 + 1;
                self.line += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                self.events += 1;
                let reference = format!("{}:{line}", self.ctx.file);
                let raw = String::from_utf8_lossy(&chunk[start..]).into_owned();
                return Some(match parse_event(&raw) {
                    Ok(ev) => map_event(&ev, &raw, &reference, &self.source, &self.ctx),
                    Err(e) => Parsed::rejected(reference, e),
                });
            }
            let (n, eof) = match self.reader.fill_buf() {
                Ok([]) => (0, true),
                Ok(bytes) => {
                    self.buf.extend_from_slice(bytes);
                    (bytes.len(), false)
                }
                Err(e) => {
                    self.done = true;
                    let at = format!("{}:{}", self.ctx.file, self.line + 1);
                    return Some(Parsed::rejected(at, format!("cannot read: {e}")));
                }
            };
            self.reader.consume(n);
            self.position += n as u64;
            if eof {
                self.done = true;
                let rest = String::from_utf8_lossy(&self.buf);
                let rest = rest.trim();
                if rest.contains("<Event") {
                    let at = find(&self.buf, b"<Event").unwrap_or(0);
                    let line = self.line
                        + self.buf[..at].iter().filter(|b| **b == b'\n').count() as u64
                        + 1;
                    return Some(Parsed::rejected(
                        format!("{}:{line}", self.ctx.file),
                        "the file ends inside an <Event>: it is truncated",
                    ));
                }
                return None;
            }
            // Never hold more than one event and what precedes it: an event larger than
            // this is refused rather than buffered without end.
            if self.buf.len() > 4 * crate::MAX_ORIGINAL && find(&self.buf, END).is_none() {
                self.done = true;
                return Some(Parsed::rejected(
                    format!("{}:{}", self.ctx.file, self.line + 1),
                    format!("no </Event> within {} bytes", self.buf.len()),
                ));
            }
        }
    }
}

impl<R: BufRead> Importer for WevtutilImporter<R> {
    fn bytes_read(&self) -> u64 {
        self.position
    }
}

/// `.evtx` files: the evtx crate reads them chunk by chunk (64 KiB each); the records of one
/// chunk are rendered to XML and mapped like wevtutil's. A damaged chunk or record is
/// rejected by name and the rest of the file is still read.
pub(crate) struct EvtxImporter<T: Read + Seek> {
    chunks: Option<evtx::IntoIterChunks<T>>,
    settings: std::sync::Arc<evtx::ParserSettings>,
    pending: VecDeque<Parsed>,
    chunk_number: u64,
    /// The file's length, to notice a last chunk cut short (the evtx crate stops before it
    /// without a word).
    length: Option<u64>,
    ctx: Context,
    source: String,
}

impl<T: Read + Seek> EvtxImporter<T> {
    pub(crate) fn new(mut input: T, ctx: Context) -> Self {
        let length = input
            .seek(std::io::SeekFrom::End(0))
            .and_then(|len| input.seek(std::io::SeekFrom::Start(0)).map(|_| len))
            .ok();
        let settings = evtx::ParserSettings::new()
            .num_threads(1)
            .validate_checksums(true);
        let mut pending = VecDeque::new();
        let chunks = match evtx::EvtxParser::from_read_seek(input) {
            Ok(p) => Some(p.with_configuration(settings.clone()).into_chunks()),
            Err(e) => {
                pending.push_back(Parsed::rejected(
                    format!("{}:file header", ctx.file),
                    format!("not a readable EVTX file: {}", crate::error_chain(&e)),
                ));
                None
            }
        };
        EvtxImporter {
            chunks,
            settings: std::sync::Arc::new(settings),
            pending,
            chunk_number: 0,
            length,
            ctx,
            source: crate::Format::Evtx.source(),
        }
    }

    fn read_chunk(&mut self, data: Result<evtx::EvtxChunkData, evtx::err::EvtxError>) {
        let n = self.chunk_number;
        self.chunk_number += 1;
        let mut data = match data {
            Ok(d) => d,
            Err(e) => {
                self.pending.push_back(Parsed::rejected(
                    format!("{}:chunk {n}", self.ctx.file),
                    format!("unreadable chunk: {}", crate::error_chain(&e)),
                ));
                return;
            }
        };
        let mut chunk = match data.parse(self.settings.clone()) {
            Ok(c) => c,
            Err(e) => {
                self.pending.push_back(Parsed::rejected(
                    format!("{}:chunk {n}", self.ctx.file),
                    format!("unreadable chunk: {}", crate::error_chain(&e)),
                ));
                return;
            }
        };
        for record in chunk.iter() {
            let parsed = match record.and_then(|r| r.into_xml()) {
                Ok(r) => {
                    let reference = format!("{}:record {}", self.ctx.file, r.event_record_id);
                    match parse_event(&r.data) {
                        Ok(mut ev) => {
                            ev.record_id = ev.record_id.or(Some(r.event_record_id));
                            if ev.time.is_none() {
                                ev.time = Some(r.timestamp.to_string());
                            }
                            map_event(&ev, &r.data, &reference, &self.source, &self.ctx)
                        }
                        Err(e) => Parsed::rejected(reference, e),
                    }
                }
                Err(e) => Parsed::rejected(
                    format!("{}:chunk {n}", self.ctx.file),
                    crate::error_chain(&e),
                ),
            };
            self.pending.push_back(parsed);
        }
    }
}

impl<T: Read + Seek> Iterator for EvtxImporter<T> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(p);
            }
            let next = self.chunks.as_mut()?.next();
            match next {
                Some(data) => self.read_chunk(data),
                None => {
                    self.chunks = None;
                    const HEADER: u64 = 4096;
                    const CHUNK: u64 = 65536;
                    if let Some(len) = self.length.filter(|l| *l > HEADER) {
                        let whole = (len - HEADER) / CHUNK;
                        let rest = (len - HEADER) % CHUNK;
                        if rest != 0 {
                            return Some(Parsed::rejected(
                                format!("{}:chunk {whole}", self.ctx.file),
                                format!(
                                    "the file ends {rest} bytes into this chunk of {CHUNK}: it is truncated, and its records cannot be read"
                                ),
                            ));
                        }
                    }
                    return None;
                }
            }
        }
    }
}

impl<T: Read + Seek> Importer for EvtxImporter<T> {
    fn bytes_read(&self) -> u64 {
        // EVTX: a 4 KiB header and 64 KiB chunks.
        4096 + self.chunk_number * 65536
    }
}
