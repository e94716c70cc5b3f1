//! Each format's fixture (written for these tests from the formats' public documentation)
//! read record by record, every field asserted.

use mailaudit_model::{
    ImportedObservation, Item, LogonType, Operation, OperationResult, Parameter, Timestamp,
};
use mailaudit_source_import::{open, parse_timezone, Context, Format, Parsed};
use std::io::BufReader;
use std::path::Path;

fn read(format: Format, name: &str, tz: Option<&str>, domain: Option<&str>) -> Vec<Parsed> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let file = std::fs::File::open(&path).unwrap();
    let ctx = Context {
        file: name.to_string(),
        timezone: tz.map(|t| parse_timezone(t).unwrap()),
        domain: domain.map(str::to_string),
        year: None,
    };
    open(format, BufReader::new(file), ctx).collect()
}

fn record(p: &Parsed) -> &ImportedObservation {
    match p {
        Parsed::Record(r) => r,
        other => panic!("expected a record, got {other:?}"),
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn param<'a>(r: &'a ImportedObservation, name: &str) -> Option<&'a str> {
    r.observation
        .parameters
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

fn names(r: &ImportedObservation) -> Vec<&str> {
    r.observation
        .parameters
        .iter()
        .map(|p: &Parameter| p.name.as_str())
        .collect()
}

fn rejected(p: &Parsed) -> (&str, &str) {
    match p {
        Parsed::Rejected { reference, reason } => (reference, reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn skipped(p: &Parsed) -> (&str, &str) {
    match p {
        Parsed::Skipped { reference, reason } => (reference, reason),
        other => panic!("expected a skip, got {other:?}"),
    }
}

#[test]
fn exchange_csv_local_times_multiline_quotes_ipv6() {
    let out = read(
        Format::ExchangeCsv,
        "exchange-audit.csv",
        Some("+02:00"),
        None,
    );
    assert_eq!(out.len(), 4, "{out:#?}");

    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.time, ts("2009-10-12T21:27:49Z"));
    assert_eq!(o.operation, Operation::SoftDelete);
    assert_eq!(o.result, OperationResult::Succeeded);
    assert_eq!(o.mailbox, "ratish@example.com");
    assert_eq!(o.actor, "Meera Raj");
    assert_eq!(r.logon_type, Some(LogonType::Delegate));
    assert_eq!(r.external, Some(false));
    assert_eq!(o.folder.as_deref(), Some("Inbox"));
    assert_eq!(o.destination_folder, None);
    assert_eq!(
        o.items,
        vec![Item {
            subject: Some("Résumé, \"final\" – Q3\r\nsecond line".into()),
            ..Item::default()
        }]
    );
    assert_eq!(o.client.ip, Some("2001:db8::17".parse().unwrap()));
    assert_eq!(o.client.port, None);
    assert_eq!(o.client.name.as_deref(), Some("Client=MSExchangeRPC"));
    assert_eq!(o.provenance.source, "import:exchange-csv");
    assert_eq!(o.provenance.host.as_deref(), Some("EX01 (15.01.2507.006)"));
    assert_eq!(
        o.provenance.reference.as_deref(),
        Some("exchange-audit.csv:3")
    );
    assert_eq!(param(r, "exchange_operation"), Some("SoftDelete"));
    assert_eq!(param(r, "source_logon_type"), Some("Delegate"));
    assert_eq!(param(r, "logon_user_sid"), Some("S-1-5-21-1-2-3-1107"));
    assert_eq!(param(r, "client_process"), Some("OUTLOOK.EXE"));
    let original = param(r, "original").unwrap();
    assert!(original.starts_with("\"6f1c1a2e-0000-4000-8000-000000000001\",\"SoftDelete\""));
    assert!(original.contains("\"Résumé, \"\"final\"\" – Q3\r\nsecond line\""));
    assert!(original.ends_with("\"True\",\"New\""), "{original}");
    assert!(r.source_key.starts_with("exchange:"));

    let r = record(&out[1]);
    let o = &r.observation;
    assert_eq!(o.time, ts("2009-10-13T06:05:00Z"));
    assert_eq!(o.operation, Operation::FolderBind);
    assert_eq!(r.logon_type, Some(LogonType::Admin));
    assert_eq!(r.external, Some(true));
    assert_eq!(o.folder.as_deref(), Some("Sent Items"));
    assert_eq!(o.client.ip, Some("2001:db8::5".parse().unwrap()));
    assert_eq!(o.client.port, Some(49152));
    assert_eq!(
        o.actor,
        "NT AUTHORITY\\SYSTEM (Microsoft.Exchange.ServiceHost)"
    );
    assert_eq!(
        param(r, "source_item_subjects"),
        Some("Budget, 2010, Plan, Travel")
    );
    assert_eq!(o.items.len(), 1);
    assert!(o.items[0]
        .unresolved
        .as_deref()
        .unwrap()
        .contains("one string"));
    assert_eq!(
        o.provenance.reference.as_deref(),
        Some("exchange-audit.csv:5")
    );

    let (at, why) = rejected(&out[2]);
    assert_eq!(at, "exchange-audit.csv:6");
    assert!(
        why.contains("ClientIPAddress") && why.contains("not-an-ip"),
        "{why}"
    );
    let (at, why) = skipped(&out[3]);
    assert_eq!(at, "exchange-audit.csv:7");
    assert!(why.contains("ApplyRecord"), "{why}");
}

#[test]
fn exchange_csv_without_a_zone_is_refused_not_guessed() {
    let out = read(Format::ExchangeCsv, "exchange-audit.csv", None, None);
    let (at, why) = rejected(&out[0]);
    assert_eq!(at, "exchange-audit.csv:3");
    assert!(why.contains("--timezone"), "{why}");
}

#[test]
fn exchange_xml_from_exchange_with_its_spellings() {
    let out = read(Format::ExchangeXml, "SearchResult.xml", None, None);
    assert_eq!(out.len(), 3, "{out:#?}");
    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.time, ts("2013-05-14T16:41:12.346345Z"));
    assert_eq!(o.operation, Operation::HardDelete);
    assert_eq!(o.mailbox, "ratish@example.com");
    assert_eq!(o.actor, "Meera Raj");
    assert_eq!(r.logon_type, Some(LogonType::Delegate));
    assert_eq!(r.external, Some(false));
    assert_eq!(o.folder.as_deref(), Some("Deleted Items"));
    assert_eq!(o.client.ip, Some("2001:db8::9".parse().unwrap()));
    assert_eq!(o.client.port, Some(50123));
    assert_eq!(
        o.items,
        vec![
            Item {
                message_id: Some("<q3@example.com>".into()),
                subject: Some("Q3 figures, \"draft\" & notes – Zürich".into()),
                folder: Some("Deleted Items".into()),
                ..Item::default()
            },
            Item {
                subject: Some("Lunch?".into()),
                folder: Some("Inbox\\Team".into()),
                ..Item::default()
            },
        ]
    );
    assert_eq!(
        o.provenance.reference.as_deref(),
        Some("SearchResult.xml:event 1")
    );
    assert_eq!(o.provenance.host.as_deref(), Some("EX01 (15.00.0516.032)"));
    assert_eq!(param(r, "client_machine"), Some("WKS-17"));
    let original = param(r, "original").unwrap();
    assert!(original.starts_with("<Event MailboxGuid="), "{original}");
    assert!(
        original.ends_with("</SourceItems>\n  </Event>"),
        "{original}"
    );
    assert!(original.contains("&quot;draft&quot; &amp; notes"));

    let r = record(&out[1]);
    assert_eq!(r.observation.operation, Operation::SendAs);
    assert_eq!(r.observation.result, OperationResult::Failed);
    assert_eq!(r.logon_type, Some(LogonType::Admin));
    assert_eq!(r.external, Some(true));
    assert_eq!(r.observation.client.ip, Some("192.0.2.44".parse().unwrap()));
    assert!(r.observation.items.is_empty());
    assert!(param(r, "original").unwrap().ends_with("/>"));

    let (at, why) = rejected(&out[2]);
    assert_eq!(at, "SearchResult.xml:event 3");
    assert!(
        why.contains("OperationResult") && why.contains("Maybe"),
        "{why}"
    );
}

#[test]
fn m365_csv_mail_items_accessed_and_other_workloads() {
    let out = read(Format::M365Csv, "m365-audit.csv", None, None);
    assert_eq!(out.len(), 4, "{out:#?}");
    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.time, ts("2023-03-01T08:15:30Z"));
    assert_eq!(o.operation, Operation::MessageBind);
    assert_eq!(o.mailbox, "ceo@contoso.example");
    assert_eq!(o.actor, "attacker@contoso.example");
    assert_eq!(r.logon_type, Some(LogonType::Delegate));
    assert_eq!(r.external, Some(false));
    assert_eq!(o.folder, None, "two folders: each item names its own");
    assert_eq!(
        o.items,
        vec![
            Item {
                message_id: Some("<wire-1@contoso.example>".into()),
                size: Some(48211),
                folder: Some("Inbox".into()),
                ..Item::default()
            },
            Item {
                message_id: Some("<wire-2@contoso.example>".into()),
                folder: Some("Inbox".into()),
                ..Item::default()
            },
            Item {
                message_id: Some("<board@contoso.example>".into()),
                folder: Some("Inbox\\Board, \"Private\"".into()),
                ..Item::default()
            },
        ]
    );
    assert_eq!(o.client.ip, Some("2001:db8::44".parse().unwrap()));
    assert_eq!(o.client.port, Some(61522));
    assert_eq!(
        o.client.session.as_deref(),
        Some("0b5e7f2c-1111-2222-3333-444455556666")
    );
    assert_eq!(param(r, "source_logon_type"), Some("2 Delegated"));
    assert_eq!(param(r, "mail_access_type"), Some("Bind"));
    assert_eq!(param(r, "is_throttled"), Some("False"));
    assert_eq!(param(r, "operation_count"), Some("3"));
    assert_eq!(param(r, "record_type"), Some("50"));
    assert_eq!(
        param(r, "tenant"),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(o.provenance.reference.as_deref(), Some("m365-audit.csv:2"));
    assert_eq!(r.source_key, "m365:5b1c0c6e-7a55-4d1f-9e0a-1c2d3e4f5a01");
    assert!(param(r, "original")
        .unwrap()
        .starts_with("\"2023-03-01T08:15:30.0000000Z\",\"attacker@contoso.example\""));

    let r = record(&out[1]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::SoftDelete);
    assert_eq!(r.logon_type, Some(LogonType::Owner));
    assert_eq!(o.folder.as_deref(), Some("Inbox"));
    assert_eq!(
        o.items,
        vec![Item {
            message_id: Some("<bonus@contoso.example>".into()),
            subject: Some("Bonus, \"2023\" — Überblick".into()),
            size: Some(1200),
            ..Item::default()
        }]
    );
    assert_eq!(o.client.ip, Some("198.51.100.20".parse().unwrap()));
    // The pretty-printed AuditData of the first row spans many lines: the second row's
    // reference is the line it really starts on.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/m365-audit.csv"),
    )
    .unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("\"2023-03-01T08:20:00"))
        .unwrap()
        + 1;
    assert!(line > 10, "{line}");
    assert_eq!(
        o.provenance.reference.as_deref(),
        Some(format!("m365-audit.csv:{line}").as_str())
    );

    let (_, why) = skipped(&out[2]);
    assert!(
        why.contains("AzureActiveDirectory") && why.contains("15"),
        "{why}"
    );
    let (_, why) = rejected(&out[3]);
    assert!(why.contains("AuditData is not JSON"), "{why}");
}

#[test]
fn m365_jsonl_groups_sync_and_wrapped_records() {
    let out = read(Format::M365Jsonl, "m365-audit.jsonl", None, None);
    assert_eq!(out.len(), 5, "{out:#?}");
    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::MoveToDeletedItems);
    assert_eq!(o.result, OperationResult::PartiallySucceeded);
    assert_eq!(o.folder.as_deref(), Some("Inbox"));
    assert_eq!(o.destination_folder.as_deref(), Some("Deleted Items"));
    assert_eq!(o.actor, "assistant@contoso.example");
    assert_eq!(r.logon_type, Some(LogonType::Delegate));
    assert_eq!(o.client.ip, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(o.client.port, Some(4431));
    assert_eq!(
        o.items,
        vec![
            Item {
                message_id: Some("<a1@contoso.example>".into()),
                subject: Some("Agenda".into()),
                ..Item::default()
            },
            Item {
                message_id: Some("<a2@contoso.example>".into()),
                subject: Some("Minutes, draft".into()),
                folder: Some("Inbox\\Archive".into()),
                ..Item::default()
            },
        ]
    );
    assert_eq!(
        o.provenance.reference.as_deref(),
        Some("m365-audit.jsonl:1")
    );

    let r = record(&out[1]);
    assert_eq!(
        r.observation.operation,
        Operation::FolderBind,
        "a Sync reads a folder"
    );
    assert_eq!(r.observation.folder.as_deref(), Some("Inbox"));
    assert!(r.observation.items.is_empty());
    assert_eq!(r.logon_type, Some(LogonType::Admin));
    assert_eq!(param(r, "source_logon_type"), Some("6 DelegatedAdmin"));
    assert_eq!(param(r, "is_throttled"), Some("True"));
    assert_eq!(param(r, "mail_access_type"), Some("Sync"));
    assert!(!names(r).contains(&"unknown"));

    let (at, why) = rejected(&out[2]);
    assert_eq!(at, "m365-audit.jsonl:4");
    assert!(why.contains("LogonType: 9"), "{why}");
    let (at, why) = rejected(&out[3]);
    assert_eq!(at, "m365-audit.jsonl:5");
    assert!(why.contains("not JSON"), "{why}");

    // Search-UnifiedAuditLog's object, AuditData as a string: the same record as the CSV's
    // second row, with the same key, so the two exports merge.
    let r = record(&out[4]);
    assert_eq!(r.source_key, "m365:6c2d1d7f-8b66-4e20-af1b-2d3e4f5a6b02");
    assert_eq!(r.observation.operation, Operation::SoftDelete);
    assert_eq!(r.observation.time, ts("2023-03-01T08:20:00Z"));
    let csv = read(Format::M365Csv, "m365-audit.csv", None, None);
    assert_eq!(record(&csv[1]).source_key, r.source_key);
}

#[test]
fn iis_owa_requests_with_changing_fields() {
    let out = read(Format::Iis, "owa-iis.log", None, Some("example.com"));
    assert_eq!(out.len(), 10, "{out:#?}");
    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.time, ts("2009-10-12T23:27:49Z"));
    assert_eq!(o.operation, Operation::MessageBind);
    assert_eq!(o.result, OperationResult::Succeeded);
    assert_eq!(o.mailbox, "ratish@example.com");
    assert_eq!(o.actor, "meera@example.com");
    assert_eq!(
        r.logon_type, None,
        "IIS does not say; the pipeline classifies"
    );
    assert_eq!(o.folder.as_deref(), Some("Sent Items"));
    assert_eq!(o.items.len(), 1);
    assert_eq!(
        o.items[0].subject.as_deref(),
        Some("RE: Exchange 2007 KnowHow")
    );
    assert!(o.items[0].unresolved.is_some());
    assert_eq!(o.client.ip, Some("121.221.151.10".parse().unwrap()));
    assert_eq!(o.client.protocol.as_deref(), Some("http"));
    assert_eq!(o.client.tls, Some(false));
    assert_eq!(o.provenance.host.as_deref(), Some("W3SVC101"));
    assert_eq!(o.provenance.reference.as_deref(), Some("owa-iis.log:5"));
    assert_eq!(param(r, "http_status"), Some("200"));
    assert!(param(r, "original")
        .unwrap()
        .starts_with("2009-10-12 23:27:49 W3SVC101"));

    let r = record(&out[1]);
    assert_eq!(r.observation.operation, Operation::FolderBind);
    assert_eq!(r.observation.folder.as_deref(), Some("Inbox"));
    assert!(r.observation.items.is_empty());

    let (_, why) = skipped(&out[2]);
    assert!(why.contains("anonymous"), "{why}");
    let (_, why) = skipped(&out[3]);
    assert!(why.contains("not an OWA"), "{why}");

    let r = record(&out[4]);
    assert_eq!(r.observation.result, OperationResult::Failed);
    assert_eq!(r.observation.reason.as_deref(), Some("HTTP 403"));
    assert_eq!(
        r.observation.items[0].subject.as_deref(),
        Some("Salary, \"final\" übersicht")
    );

    // After the second #Fields: line, with another order and a User-Agent column.
    let r = record(&out[5]);
    let o = &r.observation;
    assert_eq!(o.time, ts("2014-02-03T10:00:01Z"));
    assert_eq!(o.operation, Operation::MessageBind);
    assert_eq!(
        o.mailbox, "eve@example.com",
        "no mailbox in the URL: the user's own"
    );
    assert_eq!(param(r, "owa_id"), Some("RgAAAAD+Qz"));
    assert_eq!(param(r, "owa_type"), Some("IPM.Note"));
    assert_eq!(o.client.ip, Some("2001:db8::77".parse().unwrap()));
    assert_eq!(
        o.client.name.as_deref(),
        Some("Mozilla/5.0 (Windows NT 6.1)")
    );
    assert_eq!(o.client.tls, Some(true));
    assert_eq!(o.provenance.host, None);
    let r = record(&out[6]);
    assert_eq!(r.observation.operation, Operation::FolderBind);
    assert_eq!(r.observation.mailbox, "ceo@example.com");
    let (at, why) = rejected(&out[7]);
    assert_eq!(at, "owa-iis.log:16");
    assert!(why.contains("13 values") && why.contains("14"), "{why}");
    // Two identical requests in the same second are two records with distinct keys.
    let (a, b) = (record(&out[8]), record(&out[9]));
    assert_eq!(b.source_key, format!("{}#1", a.source_key));
}

#[test]
fn empty_files_yield_nothing() {
    for format in Format::ALL {
        let out = read(format, "empty.csv", Some("UTC"), None);
        match format {
            // An XML document must have its root element: an empty file is not one.
            Format::ExchangeXml => {
                assert_eq!(out.len(), 1);
                assert!(rejected(&out[0]).1.contains("no <SearchResults>"));
            }
            // Nor is an empty file an EVTX file: it has no file header.
            Format::Evtx => {
                assert_eq!(out.len(), 1);
                assert!(rejected(&out[0]).1.contains("not a readable EVTX file"));
            }
            _ => assert!(out.is_empty(), "{format}: {out:?}"),
        }
    }
}

fn read_file(format: Format, path: &Path, name: &str) -> Vec<Parsed> {
    let file = std::fs::File::open(path).unwrap();
    let ctx = Context {
        file: name.to_string(),
        timezone: None,
        domain: None,
        year: None,
    };
    open(format, BufReader::new(file), ctx).collect()
}

/// A MailItemsAccessed record listing thousands of messages: far beyond one parameter's
/// 64 KiB. It is kept, whole: the original continues in `original_2`, `original_3`…
#[test]
fn a_huge_record_is_kept_whole() {
    let items: Vec<String> = (0..5000)
        .map(|i| format!("{{\"InternetMessageId\":\"<m{i}-ünïcode@contoso.example>\"}}"))
        .collect();
    let line = format!(
        "{{\"CreationTime\":\"2023-03-01T08:15:30\",\"Id\":\"big\",\"Operation\":\"MailItemsAccessed\",\"RecordType\":50,\"ResultStatus\":\"Succeeded\",\"UserId\":\"a@contoso.example\",\"LogonType\":2,\"MailboxOwnerUPN\":\"ceo@contoso.example\",\"Folders\":[{{\"Path\":\"\\\\Inbox\",\"FolderItems\":[{}]}}]}}",
        items.join(",")
    );
    assert!(line.len() > 3 * 65536);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let out = read_file(Format::M365Jsonl, &path, "big.jsonl");
    assert_eq!(out.len(), 1);
    let r = record(&out[0]);
    assert_eq!(r.observation.items.len(), 5000);
    assert_eq!(
        r.observation.items[4999].message_id.as_deref(),
        Some("<m4999-ünïcode@contoso.example>")
    );
    let parts: Vec<&Parameter> = r
        .observation
        .parameters
        .iter()
        .filter(|p| p.name == "original" || p.name.starts_with("original_"))
        .collect();
    // Cuts fall on character boundaries, so a part may be a byte or so short of 64 KiB.
    let least = line.len().div_ceil(65536);
    assert!(
        parts.len() == least || parts.len() == least + 1,
        "{} parts",
        parts.len()
    );
    assert!(parts.iter().all(|p| p.value.len() <= 65536));
    assert_eq!(parts[1].name, "original_2");
    let whole: String = parts.iter().map(|p| p.value.as_str()).collect();
    assert_eq!(whole, line);
}

/// Half a million IIS lines (about 100 MB), generated here: every one is read, in order,
/// with the right line number, one at a time.
#[test]
fn a_huge_file_streams_through() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.log");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        out,
        "#Fields: date time cs-method cs-uri-stem cs-uri-query cs-username c-ip sc-status"
    )
    .unwrap();
    let n = 500_000u64;
    for i in 0..n {
        writeln!(
            out,
            "2014-02-03 10:{:02}:{:02} GET /exchange/ratish@example.com/Inbox/Note+{i}.EML Cmd=open EXAMPLE\\meera 2001:db8::{:x} 200",
            (i / 60) % 60,
            i % 60,
            i % 65535
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    assert!(std::fs::metadata(&path).unwrap().len() > 50_000_000);
    let file = std::fs::File::open(&path).unwrap();
    let ctx = Context {
        file: "huge.log".into(),
        timezone: None,
        domain: None,
        year: None,
    };
    let mut count = 0u64;
    let mut last = None;
    for p in open(Format::Iis, BufReader::new(file), ctx) {
        let r = record(&p);
        count += 1;
        last = r.observation.items[0]
            .subject
            .clone()
            .zip(r.observation.provenance.reference.clone());
    }
    assert_eq!(count, n);
    assert_eq!(
        last,
        Some((format!("Note {}", n - 1), format!("huge.log:{}", n + 1)))
    );
}
