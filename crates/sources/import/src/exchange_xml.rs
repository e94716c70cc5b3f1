//! `SearchResult.xml`: Exchange's mailbox audit export, and mailaudit's own exchange-xml
//! export. Read with `mailaudit_export::ExchangeXmlReader`, one `<Event>` at a time.
//!
//! An event mailaudit wrote (it carries `Seq`, `RecordedAt` and `Source`) is restored as the
//! identical record: same fields, same provenance, same parameters; only its place in this
//! log (`seq`, `recorded_at`) is new. Its source key is the digest of its canonical
//! encoding as exported, so exporting and importing again adds nothing. Any other event is
//! mapped as Exchange wrote it (`exchange.rs`).

use crate::exchange::{self, folder};
use crate::{Context, Fields, Importer, Occurrences, Parsed};
use mailaudit_export::{ExchangeXmlEvent, ExchangeXmlReader};
use mailaudit_model::{encode_canonical, AuditRecord, ImportedObservation, Item, Observation};
use std::io::BufRead;

pub(crate) struct ExchangeXmlImporter<R: BufRead> {
    reader: ExchangeXmlReader<R>,
    ctx: Context,
    source: String,
    occurrences: Occurrences,
}

impl<R: BufRead> ExchangeXmlImporter<R> {
    pub(crate) fn new(input: R, ctx: Context) -> Self {
        ExchangeXmlImporter {
            reader: ExchangeXmlReader::new(input),
            ctx,
            source: crate::Format::ExchangeXml.source(),
            occurrences: Occurrences::default(),
        }
    }

    fn reference(&self, e: &ExchangeXmlEvent) -> String {
        format!("{}:event {}", self.ctx.file, e.number)
    }

    fn mailaudit_record(&self, e: &ExchangeXmlEvent) -> Parsed {
        let record = match e.to_record() {
            Ok(r) => r,
            Err(err) => return Parsed::rejected(self.reference(e), err.to_string()),
        };
        let key = mailaudit_record_key(&record);
        let observation = Observation {
            time: record.time,
            operation: record.operation,
            result: record.result,
            reason: record.reason,
            mailbox: record.mailbox,
            actor: record.actor,
            acting_as: record.acting_as,
            administrative: false,
            folder: record.folder,
            destination_folder: record.destination_folder,
            items: record.items,
            client: record.client,
            provenance: record.provenance,
            parameters: record.parameters,
        };
        Parsed::Record(Box::new(ImportedObservation {
            observation,
            source_key: key,
            logon_type: Some(record.logon_type),
            external: Some(record.external),
        }))
    }
}

/// The source key of a record mailaudit exported: its seq in the log it came from and the
/// SHA-256 of its canonical encoding there. With the seq, an import into the very log the
/// export came from can see that the record is already there (`is_mailaudit_key`).
pub fn mailaudit_record_key(record: &AuditRecord) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(encode_canonical(record));
    format!("mailaudit:{}:{}", record.seq, hex::encode(hash))
}

/// The original seq named by a key from `mailaudit_record_key`.
pub fn mailaudit_key_seq(key: &str) -> Option<u64> {
    key.strip_prefix("mailaudit:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

fn item(attrs: &[(String, String)]) -> Item {
    let f = Fields { list: attrs };
    Item {
        uid: None,
        message_id: f
            .get(&["InternetMessageId", "MessageId"])
            .map(str::to_string),
        subject: f.get(&["Subject"]).map(str::to_string),
        size: f.get(&["Size", "SizeInBytes"]).and_then(|s| s.parse().ok()),
        folder: f
            .get(&["FolderPathName", "ParentFolderPathName"])
            .map(folder),
        unresolved: None,
    }
}

impl<R: BufRead> Iterator for ExchangeXmlImporter<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        let e = match self.reader.next()? {
            Ok(e) => e,
            Err(err) => {
                let reference = format!("{}:byte {}", self.ctx.file, self.reader.position());
                return Some(Parsed::rejected(reference, err.to_string()));
            }
        };
        let ours = ["Seq", "RecordedAt", "Source"]
            .iter()
            .all(|a| e.attribute(a).is_some());
        if ours {
            return Some(self.mailaudit_record(&e));
        }
        let items = e.items.iter().map(|a| item(a)).collect();
        let reference = self.reference(&e);
        let event = exchange::Event {
            fields: Fields {
                list: &e.attributes,
            },
            items,
            reference,
            raw: &e.raw,
            extra: Vec::new(),
        };
        Some(exchange::map(
            event,
            &self.source,
            &self.ctx,
            &mut self.occurrences,
        ))
    }
}

impl<R: BufRead> Importer for ExchangeXmlImporter<R> {
    fn bytes_read(&self) -> u64 {
        self.reader.position()
    }
}
