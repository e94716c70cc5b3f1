//! `Search-MailboxAuditLog -ShowDetails | Export-Csv`: one row per event, PowerShell's
//! `#TYPE` line first (unless `-NoTypeInformation`), every value quoted, fields that may
//! span lines. `LastAccessed` is the exporting machine's local time without a zone: it is
//! converted with `--timezone`, never guessed.
//!
//! Export-Csv flattens the list properties: `SourceItems` becomes a type name and
//! `SourceItemSubjectsList` one string joined with commas that subjects may contain too. So
//! the subject of a one-item operation (`ItemSubject`) becomes the item; a list is kept
//! whole in `source_item_subjects` and the item says it could not be split.

use crate::exchange;
use crate::{param, Context, Fields, Importer, Occurrences, Parsed, Tap};
use mailaudit_model::Item;
use std::io::Read;

pub(crate) struct ExchangeCsvImporter<R: Read> {
    reader: csv::Reader<Tap<R>>,
    headers: Option<Vec<String>>,
    record: csv::StringRecord,
    ctx: Context,
    source: String,
    occurrences: Occurrences,
    lines: Lines,
    done: bool,
}

impl<R: Read> ExchangeCsvImporter<R> {
    pub(crate) fn new(input: R, ctx: Context) -> Self {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            // PowerShell's `#TYPE …` line. Export-Csv quotes every value, so no record
            // starts with `#`.
            .comment(Some(b'#'))
            .from_reader(Tap::new(input));
        ExchangeCsvImporter {
            reader,
            headers: None,
            record: csv::StringRecord::new(),
            ctx,
            source: crate::Format::ExchangeCsv.source(),
            occurrences: Occurrences::default(),
            lines: Lines::default(),
            done: false,
        }
    }
}

/// Counts lines itself: the csv crate's line numbers do not match an editor's once comment
/// lines and quoted newlines are involved, and a reference must lead to the right line.
#[derive(Default)]
pub(crate) struct Lines {
    /// Newlines in the file before `counted_to`.
    newlines: u64,
    counted_to: u64,
}

/// Reads the next CSV row: `Ok(Some((line, raw)))` with its 1-based first line and its
/// bytes verbatim, `Ok(None)` at the end.
pub(crate) fn next_row<R: Read>(
    reader: &mut csv::Reader<Tap<R>>,
    record: &mut csv::StringRecord,
    lines: &mut Lines,
) -> Result<Option<(u64, String)>, (u64, String)> {
    let before = reader.position().byte();
    let read = reader.read_record(record);
    let end = reader.position().byte();
    let start = match &read {
        Ok(_) => record.position().map_or(before, |p| p.byte()),
        Err(e) => e.position().map_or(before, |p| p.byte()),
    };
    let tap = reader.get_ref();
    // The csv reader leaves the `\n` of a CRLF terminator to the next record.
    let leading = tap
        .slice(start, end)
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count() as u64;
    let start = start + leading;
    let newlines =
        |from: u64, to: u64| tap.slice(from, to).iter().filter(|b| **b == b'\n').count() as u64;
    lines.newlines += newlines(lines.counted_to, start);
    let line = lines.newlines + 1;
    lines.newlines += newlines(start, end);
    lines.counted_to = end;
    let raw = String::from_utf8_lossy(tap.slice(start, end))
        .trim_end_matches(['\r', '\n'])
        .to_string();
    reader.get_mut().discard(end);
    match read {
        Ok(false) => Ok(None),
        Ok(true) => Ok(Some((line, raw))),
        Err(e) => Err((line, e.to_string())),
    }
}

impl<R: Read> Iterator for ExchangeCsvImporter<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            if self.done {
                return None;
            }
            let (line, raw) = match next_row(&mut self.reader, &mut self.record, &mut self.lines) {
                Ok(Some(row)) => row,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err((line, e)) => {
                    // A broken row (invalid UTF-8, an unterminated quote) is named; the
                    // reader resumes at the next row.
                    return Some(Parsed::rejected(format!("{}:{line}", self.ctx.file), e));
                }
            };
            let reference = format!("{}:{line}", self.ctx.file);
            let Some(headers) = &self.headers else {
                self.headers = Some(self.record.iter().map(|h| h.trim().to_string()).collect());
                continue;
            };
            if self.record.iter().all(|v| v.trim().is_empty()) {
                continue;
            }
            if self.record.len() != headers.len() {
                return Some(Parsed::rejected(
                    reference,
                    format!(
                        "{} fields, but the header has {}",
                        self.record.len(),
                        headers.len()
                    ),
                ));
            }
            let list: Vec<(String, String)> = headers
                .iter()
                .cloned()
                .zip(self.record.iter().map(str::to_string))
                .collect();
            let fields = Fields { list: &list };
            let mut items = Vec::new();
            let mut extra = Vec::new();
            if let Some(subject) = fields.get(&["ItemSubject"]) {
                items.push(Item {
                    subject: Some(subject.to_string()),
                    ..Item::default()
                });
            } else if let Some(list) = fields.get(&["SourceItemSubjectsList"]) {
                extra.push(param("source_item_subjects", list));
                items.push(Item {
                    unresolved: Some(
                        "Export-Csv joins the subjects into one string (see source_item_subjects)"
                            .into(),
                    ),
                    ..Item::default()
                });
            }
            let event = exchange::Event {
                fields,
                items,
                reference,
                raw: &raw,
                extra,
            };
            return Some(exchange::map(
                event,
                &self.source,
                &self.ctx,
                &mut self.occurrences,
            ));
        }
    }
}

impl<R: Read> Importer for ExchangeCsvImporter<R> {
    fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }
}
