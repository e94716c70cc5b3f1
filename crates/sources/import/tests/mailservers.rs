//! Cyrus auditlog lines joined to login lines, and Zimbra's mailbox.log and audit.log.

use mailaudit_model::{ImportedObservation, Item, Operation, OperationResult, Timestamp};
use mailaudit_source_import::{open, parse_timezone, Context, Format, Parsed};
use std::io::BufReader;
use std::path::Path;

fn read(format: Format, name: &str, tz: Option<&str>, year: Option<i32>) -> Vec<Parsed> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let file = std::fs::File::open(path).unwrap();
    let ctx = Context {
        file: name.into(),
        timezone: tz.map(|t| parse_timezone(t).unwrap()),
        domain: Some("example.com".into()),
        year,
    };
    open(format, BufReader::new(file), ctx).collect()
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
fn cyrus_audit_lines_join_their_login() {
    let out = read(Format::Cyrus, "cyrus.log", None, None);
    assert_eq!(out.len(), 5, "{out:#?}");
    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::HardDelete);
    assert_eq!(o.time, ts("2009-10-12T21:27:49Z"));
    assert_eq!(o.mailbox, "ratish@example.com");
    assert_eq!(o.actor, "meera@example.com");
    assert_eq!(o.folder.as_deref(), Some("Projects/Zeus"));
    assert_eq!(
        o.items,
        vec![Item {
            uid: Some(42),
            ..Item::default()
        }]
    );
    assert_eq!(o.client.ip, Some("2001:db8::7".parse().unwrap()));
    assert_eq!(o.client.name.as_deref(), Some("client.example.com"));
    assert_eq!(o.client.session.as_deref(), Some("mail-1234-1255383000-1"));
    assert_eq!(o.provenance.host.as_deref(), Some("mail"));
    assert_eq!(o.provenance.reference.as_deref(), Some("cyrus.log:2"));
    assert_eq!(param(r, "guid"), Some("0123abcd"));

    let r = record(&out[1]);
    assert_eq!(r.observation.operation, Operation::UpdateFolderPermissions);
    assert_eq!(r.observation.folder.as_deref(), Some("INBOX"));
    assert_eq!(param(r, "acl"), Some("ratish\tlrswipkxtecda\tmeera\tlrs\t"));
    assert_eq!(param(r, "oldacl"), Some("ratish\tlrswipkxtecda\t"));

    let r = record(&out[2]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::Deliver);
    assert_eq!(o.actor, "sales@example.net");
    assert_eq!(o.client.protocol.as_deref(), Some("lmtp"));
    assert_eq!(
        o.items,
        vec![Item {
            uid: Some(43),
            message_id: Some("<offer, \"final\"@example.net>".into()),
            size: Some(2048),
            ..Item::default()
        }]
    );
    match &out[3] {
        Parsed::Rejected { reference, reason } => {
            assert_eq!(reference, "cyrus.log:5");
            assert!(reason.contains("--year"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match &out[4] {
        Parsed::Skipped { reason, .. } => assert!(reason.contains("unexpunge"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // With the year (and zone) the BSD line is read, and its session has no login line.
    let out = read(Format::Cyrus, "cyrus.log", Some("+02:00"), Some(2009));
    match &out[3] {
        Parsed::Rejected { reason, .. } => {
            assert!(
                reason.contains("no login line for session mail-1300-1-1"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn zimbra_name_is_the_mailbox_and_aname_the_actor() {
    let out = read(Format::Zimbra, "zimbra-mailbox.log", Some("+02:00"), None);
    assert_eq!(out.len(), 6, "{out:#?}");
    let r = record(&out[0]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::MoveToDeletedItems);
    assert_eq!(o.time, ts("2009-10-12T21:27:49.123Z"));
    assert_eq!(o.mailbox, "ratish@example.com");
    assert_eq!(o.actor, "meera@example.com");
    assert_eq!(o.destination_folder.as_deref(), Some("Trash"));
    assert_eq!(o.client.ip, Some("2001:db8::9".parse().unwrap()));
    assert_eq!(
        o.client.name.as_deref(),
        Some("ZimbraWebClient - FF3.0 (Linux)")
    );
    assert_eq!(param(r, "zimbra_mailbox_id"), Some("5"));
    assert_eq!(
        o.provenance.reference.as_deref(),
        Some("zimbra-mailbox.log:1")
    );

    let r = record(&out[1]);
    assert_eq!(r.observation.operation, Operation::Create);
    assert_eq!(
        r.observation.actor, "ratish@example.com",
        "no aname: the owner acted"
    );
    assert_eq!(r.observation.folder.as_deref(), Some("Inbox"));
    assert_eq!(
        r.observation.items[0].message_id.as_deref(),
        Some("<q3@example.com>")
    );

    assert!(matches!(&out[2], Parsed::Skipped { reason, .. } if reason.contains("not a mailop")));
    assert!(matches!(&out[3], Parsed::Skipped { reason, .. } if reason.contains("continuation")));

    let r = record(&out[4]);
    let o = &r.observation;
    assert_eq!(o.operation, Operation::MailboxLogin);
    assert_eq!(o.actor, "admin@example.com");
    assert_eq!(o.acting_as.as_deref(), Some("ratish@example.com"));
    assert!(o.administrative);
    assert_eq!(o.client.name.as_deref(), Some("zmprov"));

    let r = record(&out[5]);
    assert_eq!(r.observation.operation, Operation::MailboxLogin);
    assert_eq!(r.observation.result, OperationResult::Failed);
    assert_eq!(
        r.observation.reason.as_deref(),
        Some("authentication failed for [ratish@example.com], invalid password")
    );
    assert_eq!(r.observation.client.ip, Some("192.0.2.66".parse().unwrap()));

    // Without a zone, Zimbra's local times are refused, not guessed.
    let out = read(Format::Zimbra, "zimbra-mailbox.log", None, None);
    assert!(matches!(&out[0], Parsed::Rejected { reason, .. } if reason.contains("--timezone")));
}
