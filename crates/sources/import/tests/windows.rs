//! Windows events: a wevtutil XML export, and `.evtx` files written in the real binary
//! format by a test-only writer (`evtx/mod.rs`) and read back through the evtx crate.

mod evtx;

use evtx::{el, filetime, text, write_evtx, Node};
use mailaudit_model::{ImportedObservation, Item, Operation, OperationResult, Timestamp};
use mailaudit_source_import::{open, Context, Format, Parsed};
use std::io::BufReader;
use std::path::Path;

fn ctx(file: &str) -> Context {
    Context {
        file: file.into(),
        timezone: None,
        domain: Some("example.com".into()),
        year: None,
    }
}

fn read_path(format: Format, path: &Path, name: &str) -> Vec<Parsed> {
    let file = std::fs::File::open(path).unwrap();
    open(format, BufReader::new(file), ctx(name)).collect()
}

fn record(p: &Parsed) -> &ImportedObservation {
    match p {
        Parsed::Record(r) => r,
        other => panic!("expected a record, got {other:?}"),
    }
}

fn param<'a>(r: &'a ImportedObservation, name: &str) -> Option<&'a str> {
    r.observation
        .parameters
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn wevtutil_export_maps_1016_and_directory_changes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wevtutil.xml");
    let out = read_path(Format::WevtutilXml, &path, "wevtutil.xml");
    assert_eq!(out.len(), 6, "{out:#?}");

    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::MailboxLogin);
    assert_eq!(o.time, ts("2009-10-12T23:27:49Z"));
    assert_eq!(o.actor, "meera@example.com");
    assert_eq!(
        o.mailbox, "Ratish Kumar",
        "1016 names the mailbox by display name"
    );
    assert_eq!(o.result, OperationResult::Succeeded);
    assert_eq!(param(r, "unknown"), Some("result,folder,client"));
    assert_eq!(o.folder, None);
    assert_eq!(o.client, Default::default());
    assert_eq!(o.provenance.source, "import:wevtutil-xml");
    assert_eq!(o.provenance.host.as_deref(), Some("EX01.example.com"));
    assert_eq!(o.provenance.reference.as_deref(), Some("wevtutil.xml:1"));
    assert_eq!(param(r, "event_id"), Some("1016"));
    assert_eq!(param(r, "event_record_id"), Some("4711"));
    assert_eq!(r.source_key, "winevent:ex01.example.com:Application:4711");
    assert!(param(r, "original")
        .unwrap()
        .ends_with("this mailbox.</Message></RenderingInfo></Event>"));

    let r = record(&out[1]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::UpdateFolderPermissions);
    assert_eq!(o.time, ts("2014-02-03T10:15:00.123456Z"));
    assert_eq!(o.actor, "admin@example.com");
    assert_eq!(o.mailbox, "CN=Ratish Kumar,OU=Staff,DC=example,DC=com");
    assert_eq!(
        param(r, "data_AttributeLDAPDisplayName"),
        Some("msExchDelegateListLink")
    );
    assert_eq!(
        param(r, "data_AttributeValue"),
        Some("CN=Meera Raj,OU=Staff,DC=example,DC=com")
    );
    assert_eq!(param(r, "data_OperationType"), Some("%%14674"));
    assert_eq!(o.provenance.reference.as_deref(), Some("wevtutil.xml:2"));

    match &out[2] {
        Parsed::Skipped { reason, .. } => assert!(reason.contains("description"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match &out[3] {
        Parsed::Skipped { reason, .. } => assert!(reason.contains("4624"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Windows 2003: insertion strings without names.
    let r = record(&out[4]);
    assert_eq!(r.observation.operation, Operation::UpdateFolderPermissions);
    assert_eq!(r.observation.mailbox, "ratish@example.com");
    assert_eq!(r.observation.actor, "admin@example.com");
    assert_eq!(param(r, "user_sid"), Some("S-1-5-21-1-2-3-500"));
    match &out[5] {
        Parsed::Rejected { reference, reason } => {
            assert!(reference.starts_with("wevtutil.xml:"), "{reference}");
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

fn system(provider: &str, id: &str, time: &str, record_id: u64, channel: &str) -> Node {
    el(
        "System",
        &[],
        vec![
            el("Provider", &[("Name", provider)], vec![]),
            text("EventID", id),
            el("TimeCreated", &[("SystemTime", time)], vec![]),
            text("EventRecordID", &record_id.to_string()),
            text("Channel", channel),
            text("Computer", "EX01.example.com"),
        ],
    )
}

fn data(name: Option<&str>, value: &str) -> Node {
    match name {
        Some(n) => el("Data", &[("Name", n)], vec![Node::Text(value.into())]),
        None => text("Data", value),
    }
}

fn event(system: Node, data: Vec<Node>) -> Node {
    el(
        "Event",
        &[(
            "xmlns",
            "http://schemas.microsoft.com/win/2004/08/events/event",
        )],
        vec![system, el("EventData", &[], data)],
    )
}

fn sample_events() -> Vec<(u64, u64, Node)> {
    let t = 1_255_390_069; // 2009-10-12T23:27:49Z
    vec![
        (
            4711,
            filetime(t),
            event(
                system(
                    "MSExchangeIS Mailbox Store",
                    "1016",
                    "2009-10-12T23:27:49.0000000Z",
                    4711,
                    "Application",
                ),
                vec![
                    data(None, "EXAMPLE\\meera"),
                    data(None, "Ratish Kumar"),
                    data(None, "/o=Example/cn=Recipients/cn=ratish"),
                ],
            ),
        ),
        (
            4712,
            filetime(t + 60),
            event(
                system(
                    "MSExchange Store Driver",
                    "10102",
                    "2009-10-12T23:28:49.0000000Z",
                    4712,
                    "Exchange Auditing",
                ),
                vec![
                    data(Some("AccessingUser"), "EXAMPLE\\meera"),
                    data(Some("Mailbox"), "ratish@example.com"),
                    data(Some("Folder"), "Inbox/Board, \"private\""),
                    data(Some("Subject"), "Übernahme, \"vertraulich\""),
                    data(Some("MessageID"), "<deal@example.com>"),
                ],
            ),
        ),
        (
            4713,
            filetime(t + 120),
            event(
                system(
                    "Microsoft-Windows-Security-Auditing",
                    "4624",
                    "2009-10-12T23:29:49.0000000Z",
                    4713,
                    "Security",
                ),
                vec![data(Some("TargetUserName"), "meera")],
            ),
        ),
    ]
}

#[test]
fn evtx_file_in_the_real_format_read_through_the_evtx_crate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Application.evtx");
    std::fs::write(&path, write_evtx(&sample_events(), 2)).unwrap();
    let out = read_path(Format::Evtx, &path, "Application.evtx");
    assert_eq!(out.len(), 3, "{out:#?}");

    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::MailboxLogin);
    assert_eq!(o.time, ts("2009-10-12T23:27:49Z"));
    assert_eq!(o.actor, "meera@example.com");
    assert_eq!(o.mailbox, "Ratish Kumar");
    assert_eq!(param(r, "unknown"), Some("result,folder,client"));
    assert_eq!(o.provenance.source, "import:evtx");
    assert_eq!(
        o.provenance.reference.as_deref(),
        Some("Application.evtx:record 4711")
    );
    assert_eq!(o.provenance.host.as_deref(), Some("EX01.example.com"));
    // The same key as the same event exported by wevtutil would have.
    assert_eq!(r.source_key, "winevent:ex01.example.com:Application:4711");
    assert!(param(r, "original")
        .unwrap()
        .contains("<EventID>1016</EventID>"));

    // In the second chunk.
    let r = record(&out[1]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::MessageBind);
    assert_eq!(o.time, ts("2009-10-12T23:28:49Z"));
    assert_eq!(o.actor, "meera@example.com");
    assert_eq!(o.mailbox, "ratish@example.com");
    assert_eq!(o.folder.as_deref(), Some("Inbox/Board, \"private\""));
    assert_eq!(
        o.items,
        vec![Item {
            message_id: Some("<deal@example.com>".into()),
            subject: Some("Übernahme, \"vertraulich\"".into()),
            ..Item::default()
        }]
    );
    assert_eq!(
        param(r, "unknown"),
        Some("client"),
        "SP2 audits successful access only"
    );
    match &out[2] {
        Parsed::Skipped { reference, reason } => {
            assert_eq!(reference, "Application.evtx:record 4713");
            assert!(reason.contains("4624"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_truncated_evtx_chunk_is_named_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.evtx");
    let mut bytes = write_evtx(&sample_events(), 2);
    // Cut the second chunk in half.
    bytes.truncate(4096 + 65536 + 32768);
    std::fs::write(&path, &bytes).unwrap();
    let out = read_path(Format::Evtx, &path, "cut.evtx");
    assert_eq!(
        record(&out[0]).observation.operation,
        Operation::MailboxLogin
    );
    assert_eq!(
        record(&out[1]).observation.operation,
        Operation::MessageBind
    );
    assert_eq!(out.len(), 3, "{out:#?}");
    match &out[2] {
        Parsed::Rejected { reference, reason } => {
            assert_eq!(reference, "cut.evtx:chunk 1");
            assert!(
                reason.contains("32768 bytes into") && reason.contains("truncated"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_corrupted_record_checksum_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.evtx");
    let mut bytes = write_evtx(&sample_events(), 2);
    // Flip a byte inside the first chunk's records: its CRC32 no longer matches.
    bytes[4096 + 600] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let out = read_path(Format::Evtx, &path, "bad.evtx");
    match &out[0] {
        Parsed::Rejected { reference, reason } => {
            assert_eq!(reference, "bad.evtx:chunk 0");
            assert!(reason.contains("CRC32 invalid"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The second chunk is intact and still read.
    assert!(out.iter().any(|p| matches!(p, Parsed::Skipped { reference, .. } if reference == "bad.evtx:record 4713")), "{out:#?}");
}
