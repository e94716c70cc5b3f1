//! Importers: other systems' audit history turned into mailaudit observations.
//!
//! One streaming parser per format (`Format`): each reads records one at a time from a
//! `BufRead` and yields `Parsed` values, so memory stays constant however large the file.
//! Every record becomes an `ImportedObservation` carrying a stable source key (re-imports
//! and overlapping exports add nothing), the logon type the original system reported, and
//! provenance: `import:<format>`, `file:line` (or event number / record id), and the original
//! record verbatim in the `original` parameter. A record that cannot be mapped is `Rejected`
//! with its place and reason; a record of a kind this importer does not audit (another
//! workload, a request that is not mailbox access) is `Skipped` with a reason. Neither stops
//! the rest of the file.
//!
//! This crate does no I/O of its own beyond the reader it is handed, and never invents a
//! value: what a format does not say stays empty, and `unknown` parameters name it.

mod exchange;
mod exchange_csv;
mod exchange_xml;
mod iis;
mod line_reader;
mod m365;
mod mailserver;
mod time;
mod windows;

pub use exchange_xml::{mailaudit_key_seq, mailaudit_record_key};
pub use time::{parse_timezone, ImportZone, TimeZoneError};

use mailaudit_model::{ImportedObservation, Parameter, Timestamp};
use std::fmt;
use std::io::{BufRead, Seek};
use std::str::FromStr;

/// Most bytes of an original record kept in one parameter: the model's limit for one
/// parameter value (`Observation::check`, 16 × 4096 bytes).
pub const MAX_ORIGINAL: usize = 16 * 4096;

/// A format `mailaudit import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// `Search-MailboxAuditLog -ShowDetails | Export-Csv`.
    ExchangeCsv,
    /// Exchange's `SearchResult.xml`, and mailaudit's own exchange-xml export.
    ExchangeXml,
    /// The Microsoft 365 audit log search CSV (`CreationDate,UserIds,Operations,AuditData`).
    M365Csv,
    /// JSON Lines of Microsoft 365 `AuditData` records.
    M365Jsonl,
    /// IIS W3C extended logs of OWA.
    Iis,
    /// Windows event logs as `.evtx` files.
    Evtx,
    /// Windows events exported with `wevtutil qe <log> /f:xml` (or `/f:RenderedXml`).
    WevtutilXml,
    /// Cyrus IMAP `auditlog:` lines joined to their `login:` lines.
    Cyrus,
    /// Zimbra `mailbox.log` and `audit.log`.
    Zimbra,
}

impl Format {
    pub const ALL: [Format; 9] = [
        Format::ExchangeCsv,
        Format::ExchangeXml,
        Format::M365Csv,
        Format::M365Jsonl,
        Format::Iis,
        Format::Evtx,
        Format::WevtutilXml,
        Format::Cyrus,
        Format::Zimbra,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::ExchangeCsv => "exchange-csv",
            Format::ExchangeXml => "exchange-xml",
            Format::M365Csv => "m365-csv",
            Format::M365Jsonl => "m365-jsonl",
            Format::Iis => "iis",
            Format::Evtx => "evtx",
            Format::WevtutilXml => "wevtutil-xml",
            Format::Cyrus => "cyrus",
            Format::Zimbra => "zimbra",
        }
    }

    /// `import:<format>`, the provenance source of every record read in this format.
    pub fn source(self) -> String {
        format!("import:{}", self.as_str())
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown import format `{0}`; expected one of: exchange-csv, exchange-xml, m365-csv, m365-jsonl, iis, evtx, wevtutil-xml, cyrus, zimbra")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// What an importer needs to know besides the bytes.
#[derive(Debug, Clone)]
pub struct Context {
    /// The file's name as shown in references (`SearchResult.xml:event 3`).
    pub file: String,
    /// For formats whose times carry no zone (Exchange CSV, IIS when not UTC): the zone
    /// they were written in. `None` refuses such times rather than guess.
    pub timezone: Option<ImportZone>,
    /// Mailbox domain for bare names (`DOMAIN\meera` or `meera` → `meera@<domain>`). `None`
    /// keeps names as the file has them.
    pub domain: Option<String>,
    /// The year of BSD syslog times (`Oct 12 23:27:49`), which do not carry one.
    pub year: Option<i32>,
}

/// One unit of an importer's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Record(Box<ImportedObservation>),
    /// Not mailbox audit data (another workload, a static file request): counted by reason.
    Skipped {
        reference: String,
        reason: String,
    },
    /// Should have been a record but could not be read: named by place and reason.
    Rejected {
        reference: String,
        reason: String,
    },
}

impl Parsed {
    fn rejected(reference: impl Into<String>, reason: impl Into<String>) -> Self {
        Parsed::Rejected {
            reference: reference.into(),
            reason: reason.into(),
        }
    }

    fn skipped(reference: impl Into<String>, reason: impl Into<String>) -> Self {
        Parsed::Skipped {
            reference: reference.into(),
            reason: reason.into(),
        }
    }
}

/// A streaming importer over one file: an iterator of `Parsed` plus how far it has read.
pub trait Importer: Iterator<Item = Parsed> {
    /// Bytes consumed so far, for progress.
    fn bytes_read(&self) -> u64;
}

/// Opens the importer for `format` over `input`. Every record it yields has passed
/// `Observation::check` (sizes, empty names, times in the future); one that fails is
/// `Rejected` naming the field. Seeking is only used by `.evtx` files (their header points
/// at chunks); every other format is read front to back once.
pub fn open<'a, R: BufRead + Seek + 'a>(
    format: Format,
    input: R,
    ctx: Context,
) -> Box<dyn Importer + 'a> {
    let inner: Box<dyn Importer + 'a> = match format {
        Format::ExchangeXml => Box::new(exchange_xml::ExchangeXmlImporter::new(input, ctx)),
        Format::ExchangeCsv => Box::new(exchange_csv::ExchangeCsvImporter::new(input, ctx)),
        Format::M365Csv => Box::new(m365::M365Importer::csv(input, ctx)),
        Format::M365Jsonl => Box::new(m365::M365Importer::jsonl(input, ctx)),
        Format::Iis => Box::new(iis::IisImporter::new(input, ctx)),
        Format::Evtx => Box::new(windows::EvtxImporter::new(input, ctx)),
        Format::WevtutilXml => Box::new(windows::WevtutilImporter::new(input, ctx)),
        Format::Cyrus => Box::new(mailserver::LineImporter::new(
            mailserver::Kind::Cyrus,
            input,
            ctx,
        )),
        Format::Zimbra => Box::new(mailserver::LineImporter::new(
            mailserver::Kind::Zimbra,
            input,
            ctx,
        )),
    };
    Box::new(Checked {
        inner,
        now: Timestamp::now(),
    })
}

struct Checked<'a> {
    inner: Box<dyn Importer + 'a>,
    now: Timestamp,
}

impl Iterator for Checked<'_> {
    type Item = Parsed;
    fn next(&mut self) -> Option<Parsed> {
        let p = self.inner.next()?;
        if let Parsed::Record(r) = &p {
            if let Err(e) = r.observation.check(self.now) {
                let reference = r
                    .observation
                    .provenance
                    .reference
                    .clone()
                    .unwrap_or_default();
                return Some(Parsed::rejected(reference, e.to_string()));
            }
        }
        Some(p)
    }
}

impl Importer for Checked<'_> {
    fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }
}

/// The `original` parameter: the record as the file has it. One parameter holds at most
/// `MAX_ORIGINAL` bytes (the model's limit); a larger record (a MailItemsAccessed record
/// listing thousands of messages) continues in `original_2`, `original_3`… cut at character
/// boundaries, so that it is kept whole and the record is not refused.
fn original(text: &str) -> Vec<Parameter> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let mut cut = rest.len().min(MAX_ORIGINAL);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = match parts.len() {
            0 => "original".to_string(),
            n => format!("original_{}", n + 1),
        };
        parts.push(Parameter {
            name,
            value: rest[..cut].to_string(),
        });
        rest = &rest[cut..];
        if rest.is_empty() {
            return parts;
        }
    }
}

fn param(name: &str, value: impl Into<String>) -> Parameter {
    Parameter {
        name: name.to_string(),
        value: value.into(),
    }
}

/// SHA-256 of `parts`, each length-prefixed so that no two different lists collide.
fn digest(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Distinguishes records that are identical in every field within one file (two equal IIS
/// requests in the same second): the second gets `#1`, the third `#2`. Only records with the
/// same timestamp can be identical, and files are written in time order, so only the keys
/// of the current timestamp are held: memory stays bounded.
#[derive(Default)]
struct Occurrences {
    time: Option<Timestamp>,
    seen: std::collections::HashMap<String, u32>,
}

impl Occurrences {
    fn key(&mut self, time: Timestamp, key: String) -> String {
        if self.time != Some(time) {
            self.time = Some(time);
            self.seen.clear();
        }
        let n = self.seen.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            key
        } else {
            format!("{key}#{}", *n - 1)
        }
    }
}

/// With a configured domain, `DOMAIN\user` and `user` become `user@domain`; without one,
/// the name stays as the file has it (never guessed).
fn account(name: &str, domain: Option<&str>) -> String {
    let name = name.trim();
    // Display names (`Ratish Kumar`) and directory names (`CN=…`) are not logins.
    let login_like = !name.contains(char::is_whitespace) && !name.contains('=');
    match domain {
        Some(d) if login_like && !name.contains('@') => {
            let bare = name.rsplit_once('\\').map_or(name, |(_, u)| u);
            if bare.is_empty() {
                name.to_string()
            } else {
                format!("{bare}@{d}")
            }
        }
        _ => name.to_string(),
    }
}

/// An address as logs write it: `192.0.2.7`, `192.0.2.7:52100`, `2001:db8::7`,
/// `[2001:db8::7]:443`. `None` for `-` or empty; an error names a value that is none of these.
fn ip_port(text: &str) -> Result<Option<(std::net::IpAddr, Option<u16>)>, String> {
    use std::net::{IpAddr, SocketAddr};
    let t = text.trim();
    if t.is_empty() || t == "-" {
        return Ok(None);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Some((ip, None)));
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(Some((sa.ip(), Some(sa.port()))));
    }
    // `[2001:db8::7]` without a port.
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if let Ok(ip) = inner.parse::<IpAddr>() {
            return Ok(Some((ip, None)));
        }
    }
    Err(format!("`{t}` is not an IP address"))
}

/// A non-empty value, with `-` (the W3C and PowerShell "none") as empty.
fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty() && *v != "-")
}

/// Keeps the bytes a `Read` has produced since the last `discard`, so that a CSV record can
/// be kept verbatim by its byte range without reading the file twice.
struct Tap<R> {
    inner: R,
    /// File offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
}

impl<R> Tap<R> {
    fn new(inner: R) -> Self {
        Tap {
            inner,
            base: 0,
            bytes: Vec::new(),
        }
    }

    /// The bytes in `[start, end)` of the file, as far as they are still held.
    fn slice(&self, start: u64, end: u64) -> &[u8] {
        let from = start.saturating_sub(self.base) as usize;
        let to = (end.saturating_sub(self.base) as usize).min(self.bytes.len());
        self.bytes.get(from.min(to)..to).unwrap_or_default()
    }

    /// Forgets everything before file offset `pos`.
    fn discard(&mut self, pos: u64) {
        let n = (pos.saturating_sub(self.base) as usize).min(self.bytes.len());
        self.bytes.drain(..n);
        self.base += n as u64;
    }
}

impl<R: std::io::Read> std::io::Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// A record's fields by name, matched without regard to case and under every spelling
/// the format has used.
struct Fields<'a> {
    list: &'a [(String, String)],
}

impl<'a> Fields<'a> {
    /// The first of `names` that is present and not empty.
    fn get(&self, names: &[&str]) -> Option<&'a str> {
        names.iter().find_map(|n| {
            self.list
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .and_then(|(_, v)| present(Some(v.as_str())))
        })
    }
}

/// An error with its causes, for a message that says what actually went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
