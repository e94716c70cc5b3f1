//! Exports from the CLI and the API: Exchange's SearchResult.xml is well-formed and has
//! Exchange's names, CSV has its header and one row per record, JSON Lines has one record
//! per line, strings survive escaping, and every export is itself recorded.

use crate::util::*;
use std::path::Path;
use std::process::Command;

/// Quotes, a comma, an ampersand, angle brackets and non-ASCII text, but no newline.
const TRICKY: &str = "Q3 \"final\", R&D <draft> & Übersicht — 日本語 ✓";
/// A spreadsheet formula: CSV must neutralise it, the other formats must not touch it.
const FORMULA: &str = "=HYPERLINK(\"http://evil.example/\",\"open\")";

/// How many leaves the log holds (the health endpoint is not itself recorded).
fn log_size(server: &Server) -> u64 {
    request("GET", &server.url("/api/v1/health"), None, None).json()["records"]
        .u64()
        .expect("health reports records")
}

/// Parses a file with Python's XML parser (a full, conforming parse) and returns the element
/// and attribute names it holds, the ItemId subjects, and the number of Events.
fn parse_xml(file: &Path) -> Json {
    const SCRIPT: &str = r#"
import json, sys, xml.dom.minidom
doc = xml.dom.minidom.parse(sys.argv[1])
names, subjects = set(), []
def walk(n):
    if n.nodeType == n.ELEMENT_NODE:
        names.add(n.tagName)
        names.update(n.attributes.keys())
        if n.tagName == "ItemId" and n.hasAttribute("Subject"):
            subjects.append(n.getAttribute("Subject"))
    for c in n.childNodes:
        walk(c)
walk(doc.documentElement)
print(json.dumps({"root": doc.documentElement.tagName, "names": sorted(names),
                  "subjects": subjects, "events": len(doc.getElementsByTagName("Event"))}))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SCRIPT]).arg(file);
    let out = run(cmd);
    assert_eq!(
        out.code, 0,
        "the export is not well-formed XML:\n{}",
        out.stderr
    );
    Json::parse(out.stdout.trim()).expect("the script prints JSON")
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn exports_are_well_formed_complete_and_recorded() {
    let dir = init_dir();
    let data = dir.path();
    let admin = token(data, "admin", "export-admin");
    let auditor = token(data, "auditor", "exporter");
    let server = Server::start(data, &[]);

    let mut batch = vec![
        Obs::new("MessageBind", "alice@example.com", "bob@example.com").subject(TRICKY),
        Obs::new("MessageBind", "alice@example.com", "bob@example.com").subject(FORMULA),
        Obs::new("HardDelete", "alice@example.com", "alice@example.com").subject("plain"),
        Obs::new("MessageBind", "alice@example.com", "admin@example.com")
            .acting_as("alice@example.com"),
    ];
    batch.extend((0..6).map(|i| {
        Obs::new("MessageBind", "carol@example.com", "dan@example.com").subject(&format!("n{i}"))
    }));
    let resp = post_observations(&server, &admin, &ndjson(&batch));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["stored"].u64(), Some(batch.len() as u64));

    // CSV from the CLI: the header row, then one row per record.
    let csv_file = dir.path().join("audit.csv");
    let records = log_size(&server);
    let out = mailaudit(
        data,
        &[
            "export",
            "--format",
            "csv",
            "-o",
            csv_file.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(
        out.stderr.contains(&format!("exported {records} records")),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(&csv_file).unwrap();
    assert!(text.starts_with("Seq,LastAccessed,"), "{text}");
    let header_line = text.lines().next().unwrap().to_string();
    let rows = parse_csv(&text);
    let header = &rows[0];
    assert_eq!(
        rows.len() as u64 - 1,
        records,
        "one row per record:\n{text}"
    );
    assert!(rows.iter().all(|r| r.len() == header.len()), "{text}");
    let subjects = column(header, "Subjects");
    let all_subjects: Vec<&str> = rows[1..].iter().map(|r| r[subjects].as_str()).collect();
    assert!(all_subjects.contains(&TRICKY), "{all_subjects:?}");
    let guarded = format!("'{FORMULA}");
    assert!(
        all_subjects.contains(&guarded.as_str()),
        "a formula is shown as text in CSV: {all_subjects:?}"
    );
    let logons = column(header, "LogonType");
    for logon in ["Delegate", "Owner", "Admin"] {
        assert!(rows.iter().any(|r| r[logons] == logon), "{logon}: {text}");
    }

    // The export itself is in the log.
    let exports = search_all(data, &["--operation", "AuditLogExport"]);
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0].param("format"), Some("csv"), "{:?}", exports[0]);
    assert_eq!(
        exports[0].param("total"),
        Some(records.to_string().as_str())
    );
    assert!(exports[0]["actor"]
        .str()
        .is_some_and(|a| a.starts_with("local:")));

    // Exchange's SearchResult.xml, parsed by a real XML parser.
    let xml_file = dir.path().join("SearchResult.xml");
    let records = log_size(&server);
    mailaudit(
        data,
        &[
            "export",
            "--format",
            "exchange-xml",
            "-o",
            xml_file.to_str().unwrap(),
        ],
    )
    .ok();
    let xml = parse_xml(&xml_file);
    assert_eq!(xml["root"].str(), Some("SearchResults"));
    assert_eq!(xml["events"].u64(), Some(records));
    let names: Vec<&str> = xml["names"].arr().iter().filter_map(|n| n.str()).collect();
    for name in [
        "Event",
        "Operation",
        "OperationResult",
        "LogonType",
        "MailboxOwnerUPN",
        "LastAccessed",
        "FolderPathName",
        "ClientIPAddress",
        "ClientInfoString",
        "SourceItems",
    ] {
        assert!(names.contains(&name), "no {name} in {names:?}");
    }
    let xml_subjects: Vec<&str> = xml["subjects"]
        .arr()
        .iter()
        .filter_map(|s| s.str())
        .collect();
    assert!(xml_subjects.contains(&TRICKY), "{xml_subjects:?}");
    assert!(
        xml_subjects.contains(&FORMULA),
        "XML keeps the subject as it was: {xml_subjects:?}"
    );

    // JSON Lines: as many records as the search finds, each one valid JSON.
    let page = mailaudit(
        data,
        &[
            "search",
            "--operation",
            "MessageBind",
            "--json",
            "--limit",
            "1",
        ],
    )
    .ok();
    let total = Json::parse(&page.stdout).unwrap()["total"]
        .u64()
        .expect("a total");
    assert_eq!(total, 9);
    let jsonl_file = dir.path().join("audit.jsonl");
    mailaudit(
        data,
        &[
            "export",
            "--operation",
            "MessageBind",
            "-o",
            jsonl_file.to_str().unwrap(),
        ],
    )
    .ok();
    let text = std::fs::read_to_string(&jsonl_file).unwrap();
    let lines: Vec<Json> = text
        .lines()
        .map(|l| Json::parse(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len() as u64, total, "{text}");
    assert!(lines
        .iter()
        .all(|r| r["operation"].str() == Some("MessageBind")));
    let jsonl_subjects: Vec<&str> = lines
        .iter()
        .filter_map(|r| r["items"][0]["subject"].str())
        .collect();
    assert!(jsonl_subjects.contains(&TRICKY), "{jsonl_subjects:?}");
    assert!(jsonl_subjects.contains(&FORMULA), "{jsonl_subjects:?}");
    let exports = search_all(data, &["--operation", "AuditLogExport"]);
    let formats: Vec<_> = exports.iter().filter_map(|r| r.param("format")).collect();
    assert_eq!(
        formats,
        vec!["jsonl", "exchange-xml", "csv"],
        "newest first"
    );

    // CSV from the API, by an auditor.
    let records = log_size(&server);
    let resp = get(&server.url("/api/v1/export?format=csv"), &auditor);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/csv")),
        "{:?}",
        resp.headers
    );
    assert_eq!(resp.body.lines().next(), Some(header_line.as_str()));
    let rows = parse_csv(&resp.body);
    assert_eq!(rows.len() as u64 - 1, records);
    assert_eq!(
        resp.header("x-total-count"),
        Some(records.to_string().as_str())
    );
    let page = get(
        &server.url("/api/v1/records?operation=AuditLogExport&actor=token%3Aexporter"),
        &admin,
    )
    .json();
    assert_eq!(page["total"].u64(), Some(1), "{page:?}");
    assert_eq!(page["records"][0].param("format"), Some("csv"));
}
