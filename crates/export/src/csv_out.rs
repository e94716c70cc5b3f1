//! CSV for spreadsheets: a fixed header row first (even with no records), then one row per
//! record, with lists flattened into `"; "`-joined cells. Per-item columns (MessageIds,
//! Subjects, Uids) keep one entry per item in item order, empty where an item lacks it, so
//! that the n-th entries of each belong together. CSV is lossy (no item sizes or
//! unresolved reasons): it is for reading, never for importing back; JSON Lines is lossless.
//!
//! Formula-injection guard: a cell that begins with `=`, `+`, `-`, `@`, tab or CR gets a
//! leading apostrophe, so that Excel, LibreOffice and Google Sheets show it as text rather
//! than evaluate it (a subject such as `=HYPERLINK(...)` is an attack on the auditor). That
//! alters the cell, so it is done here and must never be done in another format. This
//! module must never quote by hand: the csv crate quotes commas, quotes and newlines.

use crate::ExportError;
use mailaudit_model::{AuditRecord, Item};
use std::io::Write;

/// The CSV header row, in column order.
pub const CSV_COLUMNS: [&str; 27] = [
    "Seq",
    "LastAccessed",
    "RecordedAt",
    "Operation",
    "OperationResult",
    "Reason",
    "LogonType",
    "External",
    "MailboxOwnerUPN",
    "LogonUserDisplayName",
    "ActingAs",
    "FolderPathName",
    "DestFolderPathName",
    "ItemCount",
    "MessageIds",
    "Subjects",
    "Uids",
    "ClientIPAddress",
    "ClientPort",
    "ClientProtocol",
    "ClientInfoString",
    "SessionId",
    "Tls",
    "Source",
    "SourceHost",
    "SourceReference",
    "Parameters",
];

pub(crate) fn start<W: Write>(out: W) -> Result<csv::Writer<W>, ExportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_COLUMNS)?;
    Ok(w)
}

pub(crate) fn write_record<W: Write>(
    w: &mut csv::Writer<W>,
    r: &AuditRecord,
) -> Result<(), ExportError> {
    let mut cells = row(r);
    cells.iter_mut().for_each(guard_formula);
    w.write_record(&cells)?;
    Ok(())
}

pub(crate) fn finish<W: Write>(mut w: csv::Writer<W>) -> Result<W, ExportError> {
    w.flush()?;
    w.into_inner().map_err(|e| ExportError::Io(e.into_error()))
}

fn row(r: &AuditRecord) -> [String; 27] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let opt_show = |v: Option<String>| v.unwrap_or_default();
    let params: Vec<String> = r
        .parameters
        .iter()
        .map(|p| format!("{}={}", p.name, p.value))
        .collect();
    [
        r.seq.to_string(),
        r.time.to_rfc3339(),
        r.recorded_at.to_rfc3339(),
        r.operation.as_str().to_string(),
        r.result.as_str().to_string(),
        opt(&r.reason),
        r.logon_type.as_str().to_string(),
        r.external.to_string(),
        r.mailbox.clone(),
        r.actor.clone(),
        opt(&r.acting_as),
        opt(&r.folder),
        opt(&r.destination_folder),
        r.items.len().to_string(),
        per_item(&r.items, |i| i.message_id.clone()),
        per_item(&r.items, |i| i.subject.clone()),
        per_item(&r.items, |i| i.uid.map(|u| u.to_string())),
        opt_show(r.client.ip.map(|ip| ip.to_string())),
        opt_show(r.client.port.map(|p| p.to_string())),
        opt(&r.client.protocol),
        opt(&r.client.name),
        opt(&r.client.session),
        opt_show(r.client.tls.map(|t| t.to_string())),
        r.provenance.source.clone(),
        opt(&r.provenance.host),
        opt(&r.provenance.reference),
        params.join("; "),
    ]
}

/// One entry per item, empty where the item lacks the field; an empty cell when none has it.
fn per_item(items: &[Item], field: impl Fn(&Item) -> Option<String>) -> String {
    let parts: Vec<String> = items.iter().map(|i| field(i).unwrap_or_default()).collect();
    if parts.iter().all(String::is_empty) {
        String::new()
    } else {
        parts.join("; ")
    }
}

fn guard_formula(cell: &mut String) {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        cell.insert(0, '\'');
    }
}
