//! Bad input to `POST /api/v1/observations`: every bad line is reported with its line number
//! and field, the good lines of the same body are stored, and oversized bodies are refused.

use crate::util::*;

/// (line, field) of every error in an ingest reply.
fn errors(reply: &Json) -> Vec<(u64, String)> {
    reply["errors"]
        .arr()
        .iter()
        .map(|e| {
            (
                e["line"].u64().expect("an error has a line"),
                e["field"].str().expect("an error has a field").to_string(),
            )
        })
        .collect()
}

fn reason_of(reply: &Json, line: u64) -> String {
    reply["errors"]
        .arr()
        .iter()
        .find(|e| e["line"].u64() == Some(line))
        .and_then(|e| e["reason"].str())
        .unwrap_or_default()
        .to_string()
}

/// References of the stored records of a mailbox, through the API.
fn stored_references(server: &Server, token: &str, mailbox: &str) -> Vec<String> {
    let page = get(
        &server.url(&format!(
            "/api/v1/records?mailbox={}&limit=1000",
            enc(mailbox)
        )),
        token,
    )
    .json();
    page["records"]
        .arr()
        .iter()
        .filter_map(|r| r["provenance"]["reference"].str().map(String::from))
        .collect()
}

/// How many leaves the log holds, from the unauthenticated health endpoint (which is not
/// itself recorded).
fn log_size(server: &Server) -> u64 {
    let h = request("GET", &server.url("/api/v1/health"), None, None);
    assert_eq!(h.status, 200, "{}", h.body);
    h.json()["records"].u64().expect("health reports records")
}

#[test]
fn a_mixed_batch_reports_each_bad_line_and_stores_the_good_ones() {
    let dir = init_dir();
    let admin = token(dir.path(), "admin", "ingest-admin");
    let server = Server::start(dir.path(), &["--max-body-bytes", "4096"]);
    let mailbox = "alice@example.com";
    let good = |r: &str| Obs::new("MessageBind", mailbox, "bob@example.com").reference(r);
    let template = good("bad").json();
    let truncated = &template[..template.find(",\"mailbox\"").unwrap()];
    let unknown_operation = template.replace("\"MessageBind\"", "\"ReadMail\"");
    let impossible_time = Obs {
        time: "2026-02-30T10:00:00Z".into(),
        ..good("bad")
    }
    .json();
    let negative_uid = template.replace("\"uid\":7", "\"uid\":-1");
    assert_ne!(negative_uid, template);

    let mut body = Vec::new();
    for line in [
        good("good-line-1").json().as_str(), // 1
        "",                                  // 2
        truncated,                           // 3
        &unknown_operation,                  // 4
        "   ",                               // 5
        &impossible_time,                    // 6
        &negative_uid,                       // 7
        &good("good-line-8").json(),         // 8
    ] {
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    // 9: not UTF-8 (a Latin-1 "é" in a subject).
    let mut latin1 = good("bad-latin1").subject("cafX").json().into_bytes();
    let x = latin1.iter().position(|b| *b == b'X').expect("the marker");
    latin1[x] = 0xE9;
    body.extend_from_slice(&latin1);
    body.push(b'\n');
    body.extend_from_slice(good("good-line-10").json().as_bytes());
    assert!(body.len() < 4096, "the batch fits the body limit");

    let resp = request(
        "POST",
        &server.url("/api/v1/observations"),
        Some(&admin),
        Some(&body),
    );
    assert_eq!(resp.status, 422, "{}", resp.body);
    let reply = resp.json();
    assert_eq!(
        errors(&reply),
        vec![
            (3, ".".to_string()),
            (4, "operation".into()),
            (6, "time".into()),
            (7, "items[0].uid".into()),
            (9, ".".into()),
        ],
        "{}",
        resp.body
    );
    assert!(reason_of(&reply, 3).contains("EOF"), "{}", resp.body);
    assert!(reason_of(&reply, 4).contains("ReadMail"), "{}", resp.body);
    assert!(reason_of(&reply, 6).contains("RFC 3339"), "{}", resp.body);
    assert!(reason_of(&reply, 9).contains("UTF-8"), "{}", resp.body);
    assert_eq!(reply["rejected"].u64(), Some(5), "{}", resp.body);
    assert_eq!(reply["stored"].u64(), Some(3), "{}", resp.body);
    let lines: Vec<_> = reply["results"]
        .arr()
        .iter()
        .map(|r| (r["line"].u64(), r["outcome"].str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (Some(1), Some("stored")),
            (Some(8), Some("stored")),
            (Some(10), Some("stored")),
        ]
    );

    let mut refs = stored_references(&server, &admin, mailbox);
    refs.sort();
    assert_eq!(refs, vec!["good-line-1", "good-line-10", "good-line-8"]);
}

#[test]
fn a_body_over_the_limit_gets_413_and_a_batch_of_only_bad_lines_stores_nothing() {
    let dir = init_dir();
    let admin = token(dir.path(), "admin", "ingest-admin");
    let server = Server::start(dir.path(), &["--max-body-bytes", "4096"]);
    let mailbox = "carol@example.com";

    let big: Vec<Obs> = (0..40)
        .map(|i| Obs::new("MessageBind", mailbox, "bob@example.com").reference(format!("big-{i}")))
        .collect();
    let body = ndjson(&big);
    assert!(body.len() > 4096);
    let size = log_size(&server);
    let resp = post_observations(&server, &admin, &body);
    assert_eq!(resp.status, 413, "{}", resp.body);
    let error = resp.json()["error"].str().unwrap_or_default().to_string();
    assert!(error.contains("4096"), "the error names the limit: {error}");
    assert_eq!(
        log_size(&server),
        size,
        "nothing of a refused body is stored"
    );

    let template = Obs::new("MessageBind", mailbox, "bob@example.com").json();
    let bad = [
        template.replace("\"MessageBind\"", "\"Peek\""),
        template.replace("\"uid\":7", "\"uid\":-7"),
        "{\"time\":".to_string(),
    ]
    .join("\n");
    let resp = post_observations(&server, &admin, &bad);
    assert_eq!(resp.status, 422, "{}", resp.body);
    let reply = resp.json();
    assert_eq!(reply["stored"].u64(), Some(0), "{}", resp.body);
    assert_eq!(reply["rejected"].u64(), Some(3), "{}", resp.body);
    assert_eq!(
        errors(&reply).iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        log_size(&server),
        size,
        "a batch of bad lines stores nothing"
    );
    assert!(stored_references(&server, &admin, mailbox).is_empty());

    // Within the limit, the same kind of batch is accepted.
    let resp = post_observations(&server, &admin, &ndjson(&big[..5]));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(stored_references(&server, &admin, mailbox).len(), 5);
}
