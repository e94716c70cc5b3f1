//! The Microsoft 365 unified audit log: the compliance portal's CSV export (`CreationDate,
//! UserIds, Operations, AuditData`, newer exports with more columns) and JSON Lines of
//! `AuditData` records (from `Search-UnifiedAuditLog`, whose objects carry `AuditData` as a
//! string, or the Management Activity API, whose records are the `AuditData` itself).
//!
//! Exchange mailbox records are read: record types 2 (ExchangeItem), 3 (ExchangeItemGroup)
//! and 50 (ExchangeItemAggregated: MailItemsAccessed, with `Folders[].FolderItems[]` and
//! `OperationProperties` MailAccessType Bind/Sync and IsThrottled). Other workloads are
//! skipped and counted by record type. The record's `Id` is its source key, so overlapping
//! exports of one tenant are merged without duplicates. Numeric logon types are mapped and
//! the original kept (`source_logon_type`).

use crate::exchange::{self, folder};
use crate::exchange_csv::{next_row, Lines};
use crate::line_reader::LineReader;
use crate::time::parse_utc;
use crate::{account, digest, ip_port, original, param, Context, Importer, Parsed, Tap};
use mailaudit_model::{
    Client, ImportedObservation, Item, LogonType, Observation, Operation, OperationResult,
    Provenance,
};
use serde_json::Value;
use std::io::{BufRead, Read};

enum Input<R: Read> {
    Csv {
        reader: Box<csv::Reader<Tap<R>>>,
        record: csv::StringRecord,
        audit_data: Option<usize>,
        lines: Lines,
    },
    Lines(LineReader<R>),
}

pub(crate) struct M365Importer<R: Read> {
    input: Input<R>,
    ctx: Context,
    source: String,
    done: bool,
}

impl<R: BufRead> M365Importer<R> {
    pub(crate) fn jsonl(input: R, ctx: Context) -> Self {
        M365Importer {
            input: Input::Lines(LineReader::new(input)),
            ctx,
            source: crate::Format::M365Jsonl.source(),
            done: false,
        }
    }

    pub(crate) fn csv(input: R, ctx: Context) -> Self {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(Tap::new(input));
        M365Importer {
            input: Input::Csv {
                reader: Box::new(reader),
                record: csv::StringRecord::new(),
                audit_data: None,
                lines: Lines::default(),
            },
            ctx,
            source: crate::Format::M365Csv.source(),
            done: false,
        }
    }
}

/// The MailboxAuditLogRecord logon types (0–6), and mailaudit's reading of each.
pub(crate) fn numeric_logon_type(n: i64) -> Option<(&'static str, Option<LogonType>)> {
    Some(match n {
        0 => ("Owner", Some(LogonType::Owner)),
        1 => ("Admin", Some(LogonType::Admin)),
        2 => ("Delegated", Some(LogonType::Delegate)),
        3 => ("Transport", Some(LogonType::Admin)),
        4 => ("SystemService", Some(LogonType::Admin)),
        5 => ("BestAccess", None),
        6 => ("DelegatedAdmin", Some(LogonType::Admin)),
        _ => return None,
    })
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn path_of(v: &Value) -> Option<String> {
    v.get("Path").and_then(Value::as_str).map(folder)
}

fn item_of(v: &Value, parent: Option<&str>) -> Item {
    Item {
        uid: None,
        message_id: str_of(v, "InternetMessageId").map(str::to_string),
        subject: str_of(v, "Subject").map(str::to_string),
        size: v.get("SizeInBytes").and_then(Value::as_u64),
        folder: v
            .get("ParentFolder")
            .and_then(path_of)
            .or_else(|| parent.map(str::to_string)),
        unresolved: None,
    }
}

/// Maps one `AuditData` object. `raw` is kept verbatim.
fn map(data: &Value, raw: &str, reference: &str, source: &str, ctx: &Context) -> Parsed {
    match build(data, raw, reference, source, ctx) {
        Ok(p) => p,
        Err(reason) => Parsed::rejected(reference, reason),
    }
}

fn build(
    data: &Value,
    raw: &str,
    reference: &str,
    source: &str,
    ctx: &Context,
) -> Result<Parsed, String> {
    if !data.is_object() {
        return Err("AuditData is not a JSON object".into());
    }
    let record_type = match data.get("RecordType") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(-1).to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => return Err("RecordType: missing".into()),
    };
    let kind = match record_type.as_str() {
        "2" | "ExchangeItem" => 2,
        "3" | "ExchangeItemGroup" => 3,
        "50" | "ExchangeItemAggregated" => 50,
        other => {
            let workload = str_of(data, "Workload").unwrap_or("unknown workload");
            return Ok(Parsed::skipped(
                reference,
                format!("{workload} record (RecordType {other}), not mailbox access"),
            ));
        }
    };
    let op_name = str_of(data, "Operation").ok_or("Operation: missing")?;
    let Some(mut op) = exchange::operation(op_name) else {
        return Ok(Parsed::skipped(
            reference,
            format!("Exchange operation {op_name} has no mailaudit equivalent"),
        ));
    };
    let time = parse_utc(str_of(data, "CreationTime").ok_or("CreationTime: missing")?)
        .map_err(|e| format!("CreationTime: {e}"))?;
    let mailbox = str_of(data, "MailboxOwnerUPN")
        .or_else(|| str_of(data, "MailboxOwnerSid"))
        .ok_or("MailboxOwnerUPN: missing")?;
    let actor = str_of(data, "UserId")
        .or_else(|| str_of(data, "LogonUserSid"))
        .ok_or("UserId: missing")?;
    let mut parameters = vec![
        param("exchange_operation", op_name),
        param("record_type", record_type.clone()),
    ];
    let mut unknown = Vec::new();
    let result = match str_of(data, "ResultStatus") {
        Some(t) => exchange::result(t).ok_or_else(|| {
            format!("ResultStatus: `{t}` is not Succeeded, Failed or PartiallySucceeded")
        })?,
        None => {
            unknown.push("result");
            OperationResult::Succeeded
        }
    };
    let logon = match data.get("LogonType") {
        Some(Value::Number(n)) => {
            let code = n.as_i64().unwrap_or(-1);
            let (name, mapped) = numeric_logon_type(code)
                .ok_or_else(|| format!("LogonType: {code} is not one of 0..6"))?;
            parameters.push(param("source_logon_type", format!("{code} {name}")));
            mapped
        }
        Some(Value::String(s)) => {
            parameters.push(param("source_logon_type", s.clone()));
            exchange::logon_type(s)
        }
        _ => {
            unknown.push("logon_type");
            None
        }
    };
    if let Some(Value::Number(n)) = data.get("InternalLogonType") {
        parameters.push(param("source_internal_logon_type", n.to_string()));
    }
    let external = data.get("ExternalAccess").and_then(Value::as_bool);
    let ip_text = str_of(data, "ClientIPAddress").or_else(|| str_of(data, "ClientIP"));
    let addr = match ip_text {
        Some(t) => ip_port(t).map_err(|e| format!("ClientIPAddress: {e}"))?,
        None => None,
    };
    let mut folder_path = None;
    let mut items = Vec::new();
    match kind {
        2 => {
            if let Some(item) = data.get("Item") {
                let parent = item.get("ParentFolder").and_then(path_of);
                folder_path = parent.clone();
                let mut it = item_of(item, None);
                if it.folder == folder_path {
                    it.folder = None;
                }
                items.push(it);
            }
        }
        3 => {
            folder_path = data.get("Folder").and_then(path_of);
            for v in data
                .get("AffectedItems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mut it = item_of(v, None);
                if it.folder == folder_path {
                    it.folder = None;
                }
                items.push(it);
            }
        }
        _ => {
            let folders = data.get("Folders").and_then(Value::as_array);
            let folders: Vec<&Value> = folders.into_iter().flatten().collect();
            if folders.len() == 1 {
                folder_path = path_of(folders[0]);
            }
            for f in &folders {
                let path = path_of(f);
                for v in f
                    .get("FolderItems")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let mut it = item_of(
                        v,
                        if folders.len() == 1 {
                            None
                        } else {
                            path.as_deref()
                        },
                    );
                    if it.folder == folder_path {
                        it.folder = None;
                    }
                    items.push(it);
                }
            }
            for p in data
                .get("OperationProperties")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(name), Some(value)) = (str_of(p, "Name"), str_of(p, "Value")) else {
                    continue;
                };
                match name {
                    "MailAccessType" => {
                        parameters.push(param("mail_access_type", value));
                        // A Sync downloads a folder; a Bind opens messages.
                        if value.eq_ignore_ascii_case("Sync") && op == Operation::MessageBind {
                            op = Operation::FolderBind;
                        }
                    }
                    "IsThrottled" => parameters.push(param("is_throttled", value)),
                    other => parameters.push(param(&format!("property_{other}"), value)),
                }
            }
            if let Some(n) = data.get("OperationCount").and_then(Value::as_u64) {
                parameters.push(param("operation_count", n.to_string()));
            }
        }
    }
    if let Some(dest) = data.get("DestFolder").and_then(path_of) {
        parameters.push(param("dest_folder", dest));
    }
    for (name, key) in [
        ("tenant", "OrganizationId"),
        ("logon_user_sid", "LogonUserSid"),
        ("mailbox_guid", "MailboxGuid"),
        ("record_id", "Id"),
    ] {
        if let Some(v) = str_of(data, key) {
            parameters.push(param(name, v));
        }
    }
    if !unknown.is_empty() {
        parameters.push(param("unknown", unknown.join(",")));
    }
    parameters.extend(original(raw));
    let key = match str_of(data, "Id") {
        Some(id) => format!("m365:{}", id.to_ascii_lowercase()),
        None => format!("m365-content:{}", digest(&[raw])),
    };
    let observation = Observation {
        time,
        operation: op,
        result,
        reason: None,
        mailbox: account(mailbox, ctx.domain.as_deref()),
        actor: account(actor, ctx.domain.as_deref()),
        acting_as: None,
        administrative: false,
        folder: folder_path,
        destination_folder: data.get("DestFolder").and_then(path_of),
        items,
        client: Client {
            ip: addr.map(|(ip, _)| ip),
            port: addr.and_then(|(_, p)| p),
            protocol: None,
            name: str_of(data, "ClientInfoString").map(str::to_string),
            session: str_of(data, "SessionId").map(str::to_string),
            tls: None,
        },
        provenance: Provenance {
            source: source.to_string(),
            host: str_of(data, "OriginatingServer").map(str::to_string),
            reference: Some(reference.to_string()),
        },
        parameters,
    };
    Ok(Parsed::Record(Box::new(ImportedObservation {
        observation,
        source_key: key,
        logon_type: logon,
        external,
    })))
}

/// A JSON Lines line: an `AuditData` record, or a `Search-UnifiedAuditLog` object whose
/// `AuditData` is that record as a string.
fn parse_line(text: &str) -> Result<(Value, Option<String>), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("AuditData") {
        Some(Value::String(inner)) => {
            let data =
                serde_json::from_str(inner).map_err(|e| format!("AuditData is not JSON: {e}"))?;
            Ok((data, Some(inner.clone())))
        }
        Some(obj @ Value::Object(_)) => Ok((obj.clone(), None)),
        _ => Ok((v, None)),
    }
}

impl<R: BufRead> Iterator for M365Importer<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            if self.done {
                return None;
            }
            match &mut self.input {
                Input::Lines(lines) => {
                    let (bytes, reference) = match lines.next_line(&self.ctx.file)? {
                        Ok(line) => line,
                        Err(rejected) => return Some(rejected),
                    };
                    let text = match std::str::from_utf8(bytes) {
                        Ok(t) => t,
                        Err(e) => {
                            return Some(Parsed::rejected(reference, format!("not UTF-8: {e}")))
                        }
                    };
                    // A byte-order mark on the first line (PowerShell writes one).
                    let text = text.trim_start_matches('\u{feff}');
                    if text.trim().is_empty() {
                        continue;
                    }
                    return Some(match parse_line(text) {
                        Ok((data, _)) => map(&data, text, &reference, &self.source, &self.ctx),
                        Err(e) => Parsed::rejected(reference, e),
                    });
                }
                Input::Csv {
                    reader,
                    record,
                    audit_data,
                    lines,
                } => {
                    let (line, raw) = match next_row(reader, record, lines) {
                        Ok(Some(row)) => row,
                        Ok(None) => {
                            self.done = true;
                            return None;
                        }
                        Err((line, e)) => {
                            return Some(Parsed::rejected(format!("{}:{line}", self.ctx.file), e))
                        }
                    };
                    let reference = format!("{}:{line}", self.ctx.file);
                    let Some(column) = *audit_data else {
                        let found = record.iter().position(|h| {
                            h.trim_start_matches('\u{feff}')
                                .trim()
                                .eq_ignore_ascii_case("AuditData")
                        });
                        match found {
                            Some(c) => *audit_data = Some(c),
                            None => {
                                self.done = true;
                                return Some(Parsed::rejected(
                                    reference,
                                    "the header has no AuditData column: not a Microsoft 365 audit log export",
                                ));
                            }
                        }
                        continue;
                    };
                    if record.iter().all(|v| v.trim().is_empty()) {
                        continue;
                    }
                    let Some(text) = record.get(column) else {
                        return Some(Parsed::rejected(
                            reference,
                            format!(
                                "{} fields; AuditData is column {}",
                                record.len(),
                                column + 1
                            ),
                        ));
                    };
                    return Some(match serde_json::from_str::<Value>(text) {
                        Ok(data) => map(&data, &raw, &reference, &self.source, &self.ctx),
                        Err(e) => {
                            Parsed::rejected(reference, format!("AuditData is not JSON: {e}"))
                        }
                    });
                }
            }
        }
    }
}

impl<R: BufRead> Importer for M365Importer<R> {
    fn bytes_read(&self) -> u64 {
        match &self.input {
            Input::Csv { reader, .. } => reader.position().byte(),
            Input::Lines(lines) => lines.position(),
        }
    }
}
