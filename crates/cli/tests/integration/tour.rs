//! The README's five-minute tour, step by step, with the real `curl`.

use crate::util::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How soon a stored observation must be searchable (the requirement).
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// Runs `curl -sS ARGS` and returns (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
        .args(args);
    let out = run(cmd);
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .expect("curl prints the status after the body");
    (
        code.trim().parse().expect("an HTTP status code"),
        body.to_string(),
    )
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// POSTs one observation with curl, as the tour does (one JSON object spread over several
/// lines), and returns the reply.
fn curl_post(server: &Server, token: &str, file: &Path, obs: &Obs) -> Json {
    let pretty = obs
        .json()
        .replace(",\"mailbox\"", ",\n    \"mailbox\"")
        .replace(",\"items\"", ",\n    \"items\"")
        .replace(",\"client\"", ",\n    \"client\"");
    assert_eq!(pretty.lines().count(), 4, "{pretty}");
    std::fs::write(file, pretty).expect("writing the observation");
    let data = format!("@{}", file.display());
    let (code, body) = curl(&[
        "-H",
        &bearer(token),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &data,
        &server.url("/api/v1/observations"),
    ]);
    assert_eq!(code, 200, "{body}");
    Json::parse(&body).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {body}"))
}

/// The seq of the one observation a reply says was stored.
#[track_caller]
fn stored_seq(reply: &Json) -> u64 {
    assert_eq!(reply["stored"].u64(), Some(1), "{reply:?}");
    assert_eq!(
        reply["results"][0]["outcome"].str(),
        Some("stored"),
        "{reply:?}"
    );
    reply["results"][0]["seq"].u64().expect("a seq")
}

/// `mailaudit ARGS` with the data directory in `MAILAUDIT_DATA_DIR`, as the tour sets it.
fn tour_cli(data: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(bin());
    cmd.env("MAILAUDIT_DATA_DIR", data).args(args);
    run(cmd)
}

fn find(records: &[Json], seq: u64) -> Option<&Json> {
    records.iter().find(|r| r["seq"].u64() == Some(seq))
}

#[test]
fn five_minute_tour() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("mailaudit-data");
    let init = tour_cli(&data, &["init"]).ok();
    assert!(init.stdout.contains("verifier key: "), "{}", init.stdout);
    assert!(data.join("signing.pub").exists());

    let admin = tour_cli(
        &data,
        &["token", "create", "--role", "admin", "--name", "tour"],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    assert!(
        admin.starts_with("mat_"),
        "the token alone on stdout: {admin}"
    );
    let feeder = token(&data, "ingest", "feeder");
    let server = Server::start(&data, &[]);
    let file = tmp.path().join("observation.json");
    let records_url = server.url("/api/v1/records?mailbox=alice@example.com&non_owner=all");

    // A delegate, bob, opens a message in alice's mailbox.
    let delegate = Obs::new("MessageBind", "alice@example.com", "bob@example.com")
        .subject("Quarterly numbers")
        .reference("tour-delegate");
    let reply = curl_post(&server, &admin, &file, &delegate);
    let posted = Instant::now();
    let seq = stored_seq(&reply);

    // Within one second it is found by the CLI on the same data directory, while the
    // server runs...
    let via_cli = loop {
        let out = tour_cli(
            &data,
            &[
                "search",
                "--mailbox",
                "alice@example.com",
                "--non-owner",
                "all",
                "--json",
            ],
        )
        .ok();
        let page = Json::parse(&out.stdout).expect("search --json prints a JSON page");
        if let Some(r) = find(page["records"].arr(), seq) {
            break r.clone();
        }
        assert!(
            posted.elapsed() <= VISIBLE_WITHIN,
            "the stored observation was not found by `mailaudit search` within {VISIBLE_WITHIN:?}"
        );
    };
    let cli_seen = posted.elapsed();
    // ...and by the API.
    let via_api = loop {
        let (code, body) = curl(&["-H", &bearer(&admin), &records_url]);
        assert_eq!(code, 200, "{body}");
        let page = Json::parse(&body).expect("a JSON page");
        if let Some(r) = find(page["records"].arr(), seq) {
            break r.clone();
        }
        assert!(
            posted.elapsed() <= VISIBLE_WITHIN,
            "the stored observation was not found by GET /api/v1/records within {VISIBLE_WITHIN:?}"
        );
    };
    let api_seen = posted.elapsed();
    assert!(
        cli_seen <= VISIBLE_WITHIN && api_seen <= VISIBLE_WITHIN,
        "visible after {cli_seen:?} (CLI) and {api_seen:?} (API); must be within {VISIBLE_WITHIN:?}"
    );
    for r in [&via_cli, &via_api] {
        assert_eq!(r["logon_type"].str(), Some("Delegate"), "{r:?}");
        assert_eq!(r["operation"].str(), Some("MessageBind"));
        assert_eq!(r["mailbox"].str(), Some("alice@example.com"));
        assert_eq!(r["actor"].str(), Some("bob@example.com"));
        assert_eq!(r["items"][0]["subject"].str(), Some("Quarterly numbers"));
        assert_eq!(r["provenance"]["reference"].str(), Some("tour-delegate"));
    }
    assert_eq!(
        via_cli, via_api,
        "the CLI and the API return the same record"
    );

    // An administrator impersonating alice is an Admin logon.
    let admin_obs = Obs::new("MessageBind", "alice@example.com", "admin@example.com")
        .acting_as("alice@example.com")
        .reference("tour-admin");
    let admin_seq = stored_seq(&curl_post(&server, &admin, &file, &admin_obs));
    // alice herself deleting a message is an Owner logon, audited by default.
    let owner_obs =
        Obs::new("HardDelete", "alice@example.com", "alice@example.com").reference("tour-owner");
    let owner_seq = stored_seq(&curl_post(&server, &admin, &file, &owner_obs));
    for (seq, logon, actor) in [
        (admin_seq, "Admin", "admin@example.com"),
        (owner_seq, "Owner", "alice@example.com"),
    ] {
        let (code, body) = curl(&[
            "-H",
            &bearer(&admin),
            &server.url(&format!("/api/v1/records/{seq}")),
        ]);
        assert_eq!(code, 200, "{body}");
        let r = Json::parse(&body).unwrap();
        assert_eq!(r["logon_type"].str(), Some(logon), "{body}");
        assert_eq!(r["actor"].str(), Some(actor), "{body}");
    }

    // alice opening her own message is not audited for owners by default: answered as
    // skipped, and not stored.
    let own_read = Obs::new("MessageBind", "alice@example.com", "alice@example.com")
        .reference("tour-owner-read");
    let reply = curl_post(&server, &admin, &file, &own_read);
    assert_eq!(reply["stored"].u64(), Some(0), "{reply:?}");
    assert_eq!(reply["skipped"].u64(), Some(1), "{reply:?}");
    assert_eq!(reply["results"][0]["outcome"].str(), Some("skipped"));
    assert_eq!(reply["results"][0]["reason"].str(), Some("not_audited"));
    let alice = search_all(&data, &["--mailbox", "alice@example.com"]);
    let refs: Vec<_> = alice
        .iter()
        .filter_map(|r| r["provenance"]["reference"].str())
        .collect();
    assert!(refs.contains(&"tour-owner"), "{refs:?}");
    assert!(
        !refs.contains(&"tour-owner-read"),
        "a skipped observation must not be stored: {refs:?}"
    );

    // Searching needs a token, and one that may read.
    let (code, body) = curl(&[&records_url]);
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(&["-H", &bearer(&feeder), &records_url]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("ingest"),
        "the refusal names the role: {body}"
    );
    let (code, _) = curl(&["-H", "Authorization: Bearer mat_not-a-token", &records_url]);
    assert_eq!(code, 401);

    // The API searches above are themselves in the log, with the token as the actor.
    let searches = search_all(&data, &["--operation", "AuditLogSearch"]);
    let api_searches: Vec<_> = searches
        .iter()
        .filter(|r| r["actor"].str() == Some("token:tour") && r.param("query").is_some())
        .collect();
    assert!(
        !api_searches.is_empty(),
        "no AuditLogSearch record of a search by token:tour among {searches:?}"
    );
    for r in &api_searches {
        assert_eq!(r["mailbox"].str(), Some("alice@example.com"), "{r:?}");
        assert!(
            r.param("query")
                .is_some_and(|q| q.contains("mailbox=alice@example.com")),
            "the search record keeps the query: {r:?}"
        );
        assert_eq!(r["client"]["protocol"].str(), Some("http"), "{r:?}");
    }
    // Prove nothing was altered, and hand out a proof of bob's access.
    let checkpoint = tour_cli(&data, &["checkpoint"]).ok();
    assert!(
        checkpoint.stdout.contains("\u{2014} "),
        "a signed note: {}",
        checkpoint.stdout
    );
    let verify = tour_cli(&data, &["verify"]).ok();
    assert!(verify.stdout.starts_with("OK: "), "{}", verify.stdout);
    let proof = tmp.path().join("proof.json");
    tour_cli(
        &data,
        &["proof", &seq.to_string(), "-o", proof.to_str().unwrap()],
    )
    .ok();
    let key = std::fs::read_to_string(data.join("signing.pub")).unwrap();
    let checked = tour_cli(
        &data,
        &["verify-proof", proof.to_str().unwrap(), "--key", key.trim()],
    )
    .ok();
    assert!(
        checked.stdout.starts_with(&format!(
            "OK: record {seq} (MessageBind on alice@example.com by bob@example.com"
        )),
        "{}",
        checked.stdout
    );

    // Reading one record by id is recorded too.
    assert!(
        searches
            .iter()
            .any(|r| r["actor"].str() == Some("token:tour")
                && r.param("record") == Some(admin_seq.to_string().as_str())),
        "GET /api/v1/records/{admin_seq} is not in the log: {searches:?}"
    );
}
