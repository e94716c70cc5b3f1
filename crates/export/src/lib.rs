//! Writes mailaudit records out for people and other tools: CSV for spreadsheets, JSON Lines
//! (each record's own serde form, lossless) and Exchange's `SearchResult.xml`, plus a reader
//! for that XML so that an importer can take it back in.
//!
//! Writing streams: a header on creation, one record per `write`, a footer on `finish`. This
//! crate must never hold all records in memory while writing, never change a record's
//! meaning (the CSV formula guard and the XML control-character replacement are the only
//! alterations, each confined to its own format), and never panic on any string a record
//! may hold. It does no I/O of its own beyond the writer or reader it is handed.

mod csv_out;
mod exchange_xml;

use mailaudit_model::AuditRecord;
use std::fmt;
use std::io::Write;
use std::str::FromStr;

pub use csv_out::CSV_COLUMNS;
pub use exchange_xml::{read_exchange_xml, ExchangeXmlEvent, ExchangeXmlReader};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
    ExchangeXml,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Csv, Format::JsonLines, Format::ExchangeXml];

    /// The name used on the command line and in URLs: `csv`, `jsonl`, `exchange-xml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
            Format::ExchangeXml => "exchange-xml",
        }
    }

    /// The HTTP `Content-Type` of an export in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/x-ndjson",
            Format::ExchangeXml => "application/xml; charset=utf-8",
        }
    }

    /// The file name extension, without the dot.
    pub fn file_extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
            Format::ExchangeXml => "xml",
        }
    }
}

impl FromStr for Format {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ExportError::UnknownFormat(s.to_string()))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an export could not be written or an Exchange XML document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export format `{0}`; expected one of: csv, jsonl, exchange-xml")]
    UnknownFormat(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The XML itself is broken or truncated. `event` is the 1-based number of the `<Event>`
    /// being read, or of the last one read (0: none yet); `place` says which in words.
    #[error("Exchange XML, {place} (byte {position}): {reason}")]
    XmlSyntax {
        event: usize,
        place: String,
        position: u64,
        reason: String,
    },
    /// An attribute is missing or has a value that does not parse. `place` names the
    /// element: `Event 3`, `Event 3, ItemId 2`, `Event 3, Parameter 1`.
    #[error("Exchange XML, {place}, attribute {attribute}: {reason}")]
    XmlAttribute {
        event: usize,
        place: String,
        attribute: String,
        reason: String,
    },
}

/// Streaming writer: header on creation, one record at a time, footer on finish. Never
/// buffers all records. After an error the output is incomplete and should be discarded.
/// Hand it a buffered writer (`BufWriter`) when writing to a file or socket.
pub struct ExportWriter<W: Write> {
    sink: Sink<W>,
    count: u64,
}

enum Sink<W: Write> {
    Csv(Box<csv::Writer<W>>),
    JsonLines(W),
    ExchangeXml(quick_xml::Writer<W>),
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export, writing the format's header (CSV header row, XML declaration and
    /// root element; nothing for JSON Lines).
    pub fn new(format: Format, out: W) -> Result<Self, ExportError> {
        let sink = match format {
            Format::Csv => Sink::Csv(Box::new(csv_out::start(out)?)),
            Format::JsonLines => Sink::JsonLines(out),
            Format::ExchangeXml => Sink::ExchangeXml(exchange_xml::start(out)?),
        };
        Ok(ExportWriter { sink, count: 0 })
    }

    /// Writes one record.
    pub fn write(&mut self, record: &AuditRecord) -> Result<(), ExportError> {
        match &mut self.sink {
            Sink::Csv(w) => csv_out::write_record(w, record)?,
            Sink::JsonLines(w) => {
                serde_json::to_writer(&mut *w, record)?;
                w.write_all(b"\n")?;
            }
            Sink::ExchangeXml(w) => exchange_xml::write_event(w, record)?,
        }
        self.count += 1;
        Ok(())
    }

    /// Writes the footer, flushes, and hands back the underlying writer.
    pub fn finish(self) -> Result<W, ExportError> {
        match self.sink {
            Sink::Csv(w) => csv_out::finish(*w),
            Sink::JsonLines(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Sink::ExchangeXml(w) => Ok(exchange_xml::finish(w)?),
        }
    }

    /// How many records have been written so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}
