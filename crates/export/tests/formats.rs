//! Each format with zero, one and several records, nasty strings included, read back with an
//! independent parser (csv, quick-xml, serde_json) and, for XML, with `read_exchange_xml`.

use mailaudit_export::{read_exchange_xml, ExportError, ExportWriter, Format, CSV_COLUMNS};
use mailaudit_model::{
    AuditRecord, Client, Item, LogonType, Operation, OperationResult, Parameter, Provenance,
    Timestamp,
};
use quick_xml::events::Event;
use std::collections::BTreeSet;

const NASTY: &str = "Re: \"Q3\", numbers & <targets>\nline two\r\n\ttabbed 🦀 ünïcödé";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn minimal(seq: u64) -> AuditRecord {
    AuditRecord {
        seq,
        time: ts("2026-11-24T10:00:00.000001Z"),
        recorded_at: ts("2026-11-24T10:00:01Z"),
        operation: Operation::MailboxLogin,
        result: OperationResult::Succeeded,
        reason: None,
        logon_type: LogonType::Owner,
        external: false,
        mailbox: "alice@example.com".into(),
        actor: "alice@example.com".into(),
        acting_as: None,
        folder: None,
        destination_folder: None,
        items: vec![],
        client: Client::default(),
        provenance: Provenance {
            source: "dovecot".into(),
            host: None,
            reference: None,
        },
        parameters: vec![],
    }
}

fn nasty(seq: u64) -> AuditRecord {
    AuditRecord {
        operation: Operation::Move,
        result: OperationResult::PartiallySucceeded,
        reason: Some("quota, \"exceeded\"\nretry".into()),
        logon_type: LogonType::Delegate,
        external: true,
        actor: "Bob \"the auditor\" <bob@other.example>".into(),
        acting_as: Some("=cmd|' /C calc'!A0".into()),
        folder: Some("INBOX/Déjà vu & <more>".into()),
        destination_folder: Some("Archive,2026".into()),
        items: vec![
            Item {
                uid: Some(7),
                message_id: Some("<q1@example.com>".into()),
                subject: Some(NASTY.into()),
                size: Some(123_456),
                folder: Some("INBOX".into()),
                unresolved: None,
            },
            Item {
                uid: Some(8),
                subject: Some("=HYPERLINK(\"http://evil.example\")".into()),
                ..Item::default()
            },
            Item {
                unresolved: Some("expunged before lookup".into()),
                ..Item::default()
            },
            Item::default(),
        ],
        client: Client {
            ip: Some("2001:db8::7".parse().unwrap()),
            port: Some(993),
            protocol: Some("imap".into()),
            name: Some("Thunderbird 128 😀".into()),
            session: Some("s-1".into()),
            tls: Some(true),
        },
        provenance: Provenance {
            source: "imap-proxy".into(),
            host: Some("mx1".into()),
            reference: Some("dovecot.log:1234".into()),
        },
        parameters: vec![
            Parameter {
                name: "query".into(),
                value: "from:\"a, b\" & <c>".into(),
            },
            Parameter {
                name: "empty".into(),
                value: String::new(),
            },
        ],
        ..minimal(seq)
    }
}

fn with_empty_strings(seq: u64) -> AuditRecord {
    AuditRecord {
        operation: Operation::AuditLogExport,
        logon_type: LogonType::Admin,
        reason: Some(String::new()),
        folder: Some(" spaced ".into()),
        client: Client {
            ip: Some("192.0.2.7".parse().unwrap()),
            tls: Some(false),
            ..Client::default()
        },
        parameters: vec![Parameter {
            name: "-n".into(),
            value: "@x".into(),
        }],
        ..minimal(seq)
    }
}

fn sets() -> Vec<Vec<AuditRecord>> {
    vec![
        vec![],
        vec![nasty(1)],
        vec![minimal(1), nasty(2), with_empty_strings(3), nasty(4)],
    ]
}

fn export(format: Format, records: &[AuditRecord]) -> String {
    let mut w = ExportWriter::new(format, Vec::new()).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    assert_eq!(w.count(), records.len() as u64);
    String::from_utf8(w.finish().unwrap()).unwrap()
}

#[test]
fn format_names_parse_and_unknown_ones_list_the_choices() {
    for f in Format::ALL {
        assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
        assert!(!f.content_type().is_empty() && !f.file_extension().is_empty());
    }
    assert_eq!("JSONL".parse::<Format>().unwrap(), Format::JsonLines);
    let e = "xlsx".parse::<Format>().unwrap_err().to_string();
    assert!(
        e.contains("`xlsx`") && e.contains("csv, jsonl, exchange-xml"),
        "{e}"
    );
}

#[test]
fn json_lines_parse_back_identical() {
    for records in sets() {
        let text = export(Format::JsonLines, &records);
        assert_eq!(text.lines().count(), records.len());
        let back: Vec<AuditRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, records);
    }
}

#[test]
fn csv_has_the_header_first_and_parses_back() {
    assert_eq!(export(Format::Csv, &[]).trim_end(), CSV_COLUMNS.join(","));
    for records in sets() {
        let text = export(Format::Csv, &records);
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            rd.headers().unwrap().iter().collect::<Vec<_>>(),
            CSV_COLUMNS
        );
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), records.len());
        for (row, r) in rows.iter().zip(&records) {
            let cell =
                |name: &str| row[CSV_COLUMNS.iter().position(|c| *c == name).unwrap()].to_string();
            assert_eq!(row.len(), CSV_COLUMNS.len());
            assert_eq!(cell("Seq"), r.seq.to_string());
            assert_eq!(cell("LastAccessed"), r.time.to_rfc3339());
            assert_eq!(cell("Operation"), r.operation.as_str());
            assert_eq!(cell("LogonUserDisplayName"), r.actor);
            assert_eq!(cell("ItemCount"), r.items.len().to_string());
            assert_eq!(cell("Reason"), r.reason.clone().unwrap_or_default());
        }
    }
    let text = export(Format::Csv, &[nasty(1), with_empty_strings(2)]);
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    let col = |name: &str| CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
    let row = &rows[0];
    assert_eq!(
        &row[col("Subjects")],
        format!("{NASTY}; =HYPERLINK(\"http://evil.example\"); ; ")
    );
    assert_eq!(&row[col("MessageIds")], "<q1@example.com>; ; ; ");
    assert_eq!(&row[col("Uids")], "7; 8; ; ");
    assert_eq!(&row[col("ActingAs")], "'=cmd|' /C calc'!A0");
    assert_eq!(&row[col("ClientIPAddress")], "2001:db8::7");
    assert_eq!(&row[col("Tls")], "true");
    assert_eq!(&row[col("Parameters")], "query=from:\"a, b\" & <c>; empty=");
    assert_eq!(&rows[1][col("Parameters")], "'-n=@x");
    assert_eq!(&rows[1][col("Subjects")], "");
    let mut formula = minimal(3);
    formula.items = vec![Item {
        subject: Some("=1+1".into()),
        ..Item::default()
    }];
    let text = export(Format::Csv, &[formula]);
    assert!(text.lines().nth(1).unwrap().contains(",'=1+1,"), "{text}");
}

/// Parses the whole document with quick-xml, returning each element's name and attribute
/// names, and checking that every element is closed and every attribute value unescapes.
fn elements(xml: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut rd = quick_xml::Reader::from_str(xml);
    let (mut out, mut depth) = (Vec::new(), 0i32);
    loop {
        let (e, opens) = match rd.read_event().unwrap() {
            Event::Start(e) => (e, 1),
            Event::Empty(e) => (e, 0),
            Event::End(_) => {
                depth -= 1;
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        depth += opens;
        let attrs = e.attributes().map(|a| {
            let a = a.unwrap();
            a.unescape_value().unwrap();
            String::from_utf8(a.key.as_ref().to_vec()).unwrap()
        });
        let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
        out.push((name, attrs.collect()));
    }
    assert_eq!(depth, 0, "unclosed elements");
    out
}

#[test]
fn exchange_xml_is_well_formed_and_reads_back_identical() {
    for records in sets() {
        let xml = export(Format::ExchangeXml, &records);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<SearchResults>"));
        let els = elements(&xml);
        assert_eq!(els[0].0, "SearchResults");
        let events: Vec<_> = els.iter().filter(|(n, _)| n == "Event").collect();
        assert_eq!(events.len(), records.len());
        for (_, attrs) in &events {
            for name in [
                "Operation",
                "OperationResult",
                "LogonType",
                "MailboxOwnerUPN",
                "LastAccessed",
                "Owner",
                "ExternalAccess",
                "LogonUserDisplayName",
                "Seq",
            ] {
                assert!(attrs.contains(name), "{name} missing: {xml}");
            }
        }
        assert_eq!(read_exchange_xml(xml.as_bytes()).unwrap(), records);
    }
    let xml = export(Format::ExchangeXml, &[nasty(1), minimal(2)]);
    let els = elements(&xml);
    let event = &els.iter().find(|(n, _)| n == "Event").unwrap().1;
    for name in ["FolderPathName", "ClientIPAddress", "ClientInfoString"] {
        assert!(event.contains(name), "{name}");
    }
    assert!(els.iter().any(|(n, _)| n == "SourceItems"));
    assert_eq!(els.iter().filter(|(n, _)| n == "ItemId").count(), 4);
    assert_eq!(els.iter().filter(|(n, _)| n == "SourceItems").count(), 1);
    assert!(xml.contains("Subject=\"=HYPERLINK(&quot;http://evil.example&quot;)\""));
    assert!(xml.contains("&#10;line two&#13;&#10;&#9;tabbed 🦀"));
    let plain = &els.iter().filter(|(n, _)| n == "Event").nth(1).unwrap().1;
    assert!(!plain.contains("FolderPathName") && !plain.contains("ActingAs"));
}

#[test]
fn control_characters_become_replacement_characters_only_in_xml() {
    let mut r = nasty(9);
    r.items[0].subject = Some("bell\u{7} nul\u{0} esc\u{1b} del\u{7f} \u{ffff}".into());
    r.actor = "form\u{c}feed".into();
    let xml = export(Format::ExchangeXml, std::slice::from_ref(&r));
    assert!(!xml.chars().any(
        |c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{ffff}')
    ));
    elements(&xml);
    let back = read_exchange_xml(xml.as_bytes()).unwrap();
    let mut expected = r.clone();
    expected.items[0].subject =
        Some("bell\u{fffd} nul\u{fffd} esc\u{fffd} del\u{7f} \u{fffd}".into());
    expected.actor = "form\u{fffd}feed".into();
    assert_eq!(back, vec![expected]);
    let json = export(Format::JsonLines, std::slice::from_ref(&r));
    assert_eq!(
        serde_json::from_str::<AuditRecord>(json.trim_end()).unwrap(),
        r
    );
    let csv = export(Format::Csv, std::slice::from_ref(&r));
    assert!(csv.contains("bell\u{7} nul\u{0}"));
}

fn read_err(xml: &str) -> ExportError {
    read_exchange_xml(xml.as_bytes()).unwrap_err()
}

#[test]
fn reader_errors_name_the_event_and_attribute() {
    let xml = export(Format::ExchangeXml, &[minimal(1), nasty(2), minimal(3)]);
    let cuts = [
        (xml.find("Thunderbird").unwrap(), 2, "Event 2 "),
        (xml.find("</SourceItems>").unwrap(), 2, "Event 2 "),
        (xml.len() - 20, 3, "Event 3 "),
        (xml.len() - 18, 3, "after Event 3 "),
        (xml.find("<Event").unwrap() + 10, 1, "Event 1 "),
    ];
    for (end, n, place) in cuts {
        let e = read_err(&xml[..end]);
        assert!(
            matches!(e, ExportError::XmlSyntax { event, .. } if event == n),
            "{e}"
        );
        assert!(
            e.to_string().starts_with(&format!("Exchange XML, {place}")),
            "{e}"
        );
    }

    let bad = xml.replacen("LogonType=\"Delegate\"", "LogonType=\"Intern\"", 1);
    let e = read_err(&bad);
    assert!(
        matches!(&e, ExportError::XmlAttribute { event: 2, attribute, .. } if attribute == "LogonType"),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("Event 2, attribute LogonType") && text.contains("Intern"),
        "{text}"
    );

    let e = read_err(&xml.replacen("Uid=\"8\"", "Uid=\"-8\"", 1));
    assert!(
        e.to_string().contains("Event 2, ItemId 2, attribute Uid"),
        "{e}"
    );
    let e = read_err(&xml.replacen(" Seq=\"3\"", "", 1));
    assert_eq!(
        e.to_string(),
        "Exchange XML, Event 3, attribute Seq: missing"
    );
    let e = read_err("<?xml version=\"1.0\"?><Results/>");
    assert!(e.to_string().contains("<Results>"), "{e}");
    assert!(read_err("").to_string().contains("no <SearchResults>"));
    assert!(read_exchange_xml(&b"<SearchResults/>"[..])
        .unwrap()
        .is_empty());
}

#[test]
fn streaming_reader_keeps_each_event_verbatim() {
    let records = [nasty(1), minimal(2), nasty(3)];
    let xml = export(Format::ExchangeXml, &records);
    let events: Vec<_> = mailaudit_export::ExchangeXmlReader::new(xml.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 3);
    let mut from = 0;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.number, i + 1);
        let at = from + xml[from..].find("<Event ").unwrap();
        let end_tag = xml[at..].find("</Event>").map(|p| p + "</Event>".len());
        let empty = xml[at..].find("/>").map(|p| p + 2);
        let end = at
            + match (end_tag, empty) {
                (Some(t), Some(m)) if e.items.is_empty() && e.parameters.is_empty() => t.min(m),
                (Some(t), _) => t,
                (None, Some(m)) => m,
                (None, None) => panic!("no end"),
            };
        assert_eq!(e.raw, &xml[at..end], "event {}", i + 1);
        assert_eq!(e.to_record().unwrap(), records[i]);
        assert_eq!(e.attribute("Owner"), Some(records[i].mailbox.as_str()));
        from = end;
    }
}
