//! `mailaudit import <format>` through the real binary: every importer's fixture lands in
//! the store, a second import adds nothing, the log verifies, coverage shows what the files
//! span, and an exchange-xml export imports back as the identical records.

use crate::util::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sources/import/tests/fixtures")
        .join(name)
}

/// (format, fixture, extra arguments, records it adds for the default policy, records
/// already present from an earlier file, rejected). The JSON Lines export overlaps the CSV
/// by one record (the same `Id`): it is merged, not added twice.
type Case = (
    &'static str,
    &'static str,
    &'static [&'static str],
    u64,
    u64,
    u64,
);
const IMPORTS: &[Case] = &[
    (
        "exchange-csv",
        "exchange-audit.csv",
        &["--timezone", "+02:00"],
        2,
        0,
        1,
    ),
    ("exchange-xml", "SearchResult.xml", &[], 2, 0, 1),
    ("m365-csv", "m365-audit.csv", &[], 2, 0, 1),
    ("m365-jsonl", "m365-audit.jsonl", &[], 2, 1, 2),
    ("iis", "owa-iis.log", &["--domain", "example.com"], 7, 0, 1),
    (
        "wevtutil-xml",
        "wevtutil.xml",
        &["--domain", "example.com"],
        3,
        0,
        1,
    ),
    ("cyrus", "cyrus.log", &[], 3, 0, 1),
    (
        "zimbra",
        "zimbra-mailbox.log",
        &["--timezone", "+02:00"],
        4,
        0,
        0,
    ),
];

fn import(dir: &Path, format: &str, name: &str, extra: &[&str]) -> Out {
    let path = fixture(name);
    let mut args = vec!["import", format, path.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    mailaudit(dir, &args)
}

/// The records as `search --json` prints them, without what a new log necessarily assigns
/// anew (`seq`, `recorded_at`), for those whose provenance names an importer.
fn imported_records(dir: &Path) -> Vec<String> {
    let out = mailaudit(dir, &["search", "--all", "--json"]).ok();
    let mut lines: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| {
            Json::parse(l)
                .ok()
                .and_then(|j| {
                    j.get("provenance")?
                        .get("source")?
                        .str()
                        .map(str::to_string)
                })
                .is_some_and(|s| s.starts_with("import:"))
        })
        .map(|l| {
            let j = Json::parse(l).expect("JSON");
            let seq = j.get("seq").and_then(Json::u64).expect("seq");
            let at = j
                .get("recorded_at")
                .and_then(Json::str)
                .expect("recorded_at");
            l.replacen(&format!("\"seq\":{seq},"), "", 1).replacen(
                &format!("\"recorded_at\":\"{at}\","),
                "",
                1,
            )
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn every_format_imports_once_and_verifies() {
    let dir = init_dir();
    let mut expected = 0;
    for (format, name, extra, stored, present, rejected) in IMPORTS {
        let out = import(dir.path(), format, name, extra);
        let code = if *rejected > 0 { 1 } else { 0 };
        assert_eq!(
            out.code,
            code,
            "rejections make the exit code 1\n{}",
            out.all()
        );
        assert!(
            out.stdout.contains(&format!(
                "({format}): {stored} imported, {present} already present"
            )),
            "{}",
            out.all()
        );
        assert!(
            out.stdout.contains(&format!("{rejected} rejected")),
            "{}",
            out.all()
        );
        assert_eq!(
            out.stderr.matches("rejected ").count() as u64,
            *rejected,
            "each rejection is named\n{}",
            out.stderr
        );
        expected += stored;
    }
    let first = imported_records(dir.path());
    assert_eq!(first.len() as u64, expected);
    // Named rejections, with the file and line or event.
    let out = import(
        dir.path(),
        "exchange-csv",
        "exchange-audit.csv",
        &["--timezone", "+02:00"],
    );
    assert!(
        out.stderr
            .contains("exchange-audit.csv:6: ClientIPAddress: `not-an-ip` is not an IP address"),
        "{}",
        out.stderr
    );

    // Everything again: nothing new.
    for (format, name, extra, stored, present, _) in IMPORTS {
        let out = import(dir.path(), format, name, extra);
        assert!(
            out.stdout.contains(&format!(
                "({format}): 0 imported, {} already present",
                stored + present
            )),
            "{}",
            out.all()
        );
    }
    assert_eq!(imported_records(dir.path()), first);
    let out = mailaudit(dir.path(), &["verify"]).ok();
    assert!(out.stdout.starts_with("OK:"), "{}", out.all());

    // Field by field through the store: the CSV's local time converted, the original kept.
    let records = search_all(dir.path(), &["--mailbox", "ratish@example.com"]);
    let soft = records
        .iter()
        .find(|r| r.get("operation").and_then(Json::str) == Some("SoftDelete"))
        .expect("the SoftDelete from the CSV");
    assert_eq!(soft["time"].str(), Some("2009-10-12T21:27:49.000000Z"));
    assert_eq!(soft["logon_type"].str(), Some("Delegate"));
    assert_eq!(soft["client"]["ip"].str(), Some("2001:db8::17"));
    assert_eq!(
        soft["provenance"]["source"].str(),
        Some("import:exchange-csv")
    );
    assert!(soft["provenance"]["reference"]
        .str()
        .is_some_and(|r| r.ends_with("exchange-audit.csv:3")));
    assert!(soft
        .param("original")
        .is_some_and(|o| o.contains("\"Résumé, \"\"final\"\" – Q3\r\nsecond line\"")));

    let out = mailaudit(dir.path(), &["coverage", "--mailbox", "ratish@example.com"]).ok();
    assert!(
        out.stdout.contains("import:exchange-csv ratish@example.com\n  covered  2009-10-12T21:27:49.000000Z .. 2009-10-13T06:05:00.000000Z  (2 records from 1 file(s))"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("import:iis ratish@example.com"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("ceo@"), "{}", out.stdout);

    // Today's policy filters the history only when asked: the owners' own folder and
    // message opens in the OWA log are then skipped, and said to be.
    let filtered = init_dir();
    let out = import(
        filtered.path(),
        "iis",
        "owa-iis.log",
        &["--domain", "example.com", "--apply-policy"],
    );
    assert!(
        out.stdout
            .contains("(iis): 4 imported, 0 already present, 5 skipped"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout
            .contains("skipped 3: not audited by policy (not_audited)"),
        "{}",
        out.all()
    );
}

#[test]
fn exchange_xml_export_imports_back_identically() {
    let a = init_dir();
    for (format, name, extra, _, _, _) in IMPORTS {
        import(a.path(), format, name, extra);
    }
    let original = imported_records(a.path());
    assert_eq!(original.len(), 25);
    let xml = a.path().join("export.xml");
    mailaudit(
        a.path(),
        &[
            "export",
            "--format",
            "exchange-xml",
            "--output",
            xml.to_str().expect("UTF-8"),
        ],
    )
    .ok();

    let b = init_dir();
    let xml_arg = xml.to_str().expect("UTF-8");
    let out = mailaudit(b.path(), &["import", "exchange-xml", xml_arg]).ok();
    // The export also holds A's searches (audit-system records): they come along too.
    assert!(
        out.stdout
            .contains(" imported, 0 already present, 0 skipped, 0 rejected"),
        "{}",
        out.all()
    );
    assert_eq!(imported_records(b.path()), original);

    // Once more into B, and into A where the records came from: nothing new.
    let again = mailaudit(b.path(), &["import", "exchange-xml", xml_arg]).ok();
    assert!(again.stdout.contains(": 0 imported, "), "{}", again.all());
    let home = mailaudit(a.path(), &["import", "exchange-xml", xml_arg]).ok();
    assert!(home.stdout.contains(": 0 imported, "), "{}", home.all());
    assert_eq!(imported_records(a.path()), original);
    for dir in [a.path(), b.path()] {
        let out = mailaudit(dir, &["verify"]).ok();
        assert!(out.stdout.starts_with("OK:"), "{}", out.all());
    }
}

#[test]
fn coverage_shows_gaps_through_the_cli_and_the_api() {
    let dir = init_dir();
    let path = fixture("m365-audit.jsonl");
    // Two exports a day apart: the second is the same records shifted by a day, so the
    // mailbox is covered on two separate days with a gap between them.
    let shifted = dir.path().join("next-day.jsonl");
    let text = std::fs::read_to_string(&path).expect("fixture");
    std::fs::write(
        &shifted,
        text.replace("2023-03-01T", "2023-03-02T")
            .replace("-4d1f-", "-4d1e-")
            .replace("-4e20-", "-4e21-")
            .replace("-4f31-", "-4f32-")
            .replace("-4042-", "-4043-")
            .replace("-4153-", "-4154-"),
    )
    .expect("write");
    for file in [&path, &shifted] {
        mailaudit(
            dir.path(),
            &["import", "m365-jsonl", file.to_str().expect("UTF-8")],
        );
    }
    let out = mailaudit(dir.path(), &["coverage"]).ok();
    assert!(
        out.stdout.contains(
            "import:m365-jsonl ceo@contoso.example\n  covered  2023-03-01T08:20:00.000000Z .. 2023-03-01T09:05:00.000000Z  (3 records from 1 file(s))\n  gap      2023-03-01T09:05:00.000000Z .. 2023-03-02T08:20:00.000000Z\n  covered  2023-03-02T08:20:00.000000Z .. 2023-03-02T09:05:00.000000Z"
        ),
        "{}",
        out.stdout
    );

    let admin = token(dir.path(), "admin", "cov-admin");
    let ingest = token(dir.path(), "ingest", "cov-ingest");
    let server = Server::start(dir.path(), &[]);
    let resp = get(
        &server.url("/api/v1/coverage?mailbox=CEO@contoso.example"),
        &admin,
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    let groups = json["groups"].arr();
    assert_eq!(groups.len(), 1, "{}", resp.body);
    assert_eq!(groups[0]["mailbox"].str(), Some("ceo@contoso.example"));
    assert_eq!(groups[0]["source"].str(), Some("import:m365-jsonl"));
    let ranges = groups[0]["ranges"].arr();
    assert_eq!(ranges.len(), 2, "{}", resp.body);
    assert_eq!(ranges[0]["last"].str(), Some("2023-03-01T09:05:00.000000Z"));
    assert_eq!(
        ranges[1]["first"].str(),
        Some("2023-03-02T08:20:00.000000Z")
    );
    assert_eq!(json["files"].arr().len(), 2);
    // Coverage names mailboxes: not for an ingest token.
    assert_eq!(get(&server.url("/api/v1/coverage"), &ingest).status, 403);
    server.kill();
}

#[path = "../../../sources/import/tests/evtx/mod.rs"]
mod evtx_writer;

/// An `.evtx` in the real binary format (the test-only writer) through the binary: the
/// 1016 event it holds is the same event as the wevtutil fixture's first one (computer,
/// channel, record id), so importing both stores it once.
#[test]
fn evtx_and_wevtutil_of_the_same_event_merge() {
    use evtx_writer::{el, filetime, text, write_evtx};
    let dir = init_dir();
    let event = el(
        "Event",
        &[(
            "xmlns",
            "http://schemas.microsoft.com/win/2004/08/events/event",
        )],
        vec![
            el(
                "System",
                &[],
                vec![
                    el(
                        "Provider",
                        &[("Name", "MSExchangeIS Mailbox Store")],
                        vec![],
                    ),
                    text("EventID", "1016"),
                    el(
                        "TimeCreated",
                        &[("SystemTime", "2009-10-12T23:27:49.0000000Z")],
                        vec![],
                    ),
                    text("EventRecordID", "4711"),
                    text("Channel", "Application"),
                    text("Computer", "EX01.example.com"),
                ],
            ),
            el(
                "EventData",
                &[],
                vec![text("Data", "EXAMPLE\\meera"), text("Data", "Ratish Kumar")],
            ),
        ],
    );
    let path = dir.path().join("Application.evtx");
    std::fs::write(
        &path,
        write_evtx(&[(4711, filetime(1_255_390_069), event)], 10),
    )
    .expect("write evtx");
    let p = path.to_str().expect("UTF-8");
    let out = mailaudit(
        dir.path(),
        &["import", "evtx", "--domain", "example.com", p],
    )
    .ok();
    assert!(
        out.stdout
            .contains("(evtx): 1 imported, 0 already present, 0 skipped, 0 rejected"),
        "{}",
        out.all()
    );
    let again = mailaudit(
        dir.path(),
        &["import", "evtx", "--domain", "example.com", p],
    )
    .ok();
    assert!(
        again
            .stdout
            .contains("(evtx): 0 imported, 1 already present"),
        "{}",
        again.all()
    );
    let out = import(
        dir.path(),
        "wevtutil-xml",
        "wevtutil.xml",
        &["--domain", "example.com"],
    );
    assert!(
        out.stdout
            .contains("(wevtutil-xml): 2 imported, 1 already present"),
        "{}",
        out.all()
    );
    let records = search_all(dir.path(), &["--operation", "MailboxLogin"]);
    let logins: Vec<_> = records
        .iter()
        .filter(|r| {
            r["provenance"]["source"]
                .str()
                .is_some_and(|s| s.starts_with("import:"))
        })
        .collect();
    assert_eq!(logins.len(), 1, "{records:?}");
    assert_eq!(logins[0]["actor"].str(), Some("meera@example.com"));
    assert_eq!(logins[0]["mailbox"].str(), Some("ratish kumar"));
    assert_eq!(
        logins[0]["provenance"]["reference"]
            .str()
            .map(|r| r.ends_with("Application.evtx:record 4711")),
        Some(true)
    );
    assert_eq!(logins[0].param("unknown"), Some("result,folder,client"));
    mailaudit(dir.path(), &["verify"]).ok();
}
