//! Tampering with the store file, as an attacker with write access to the database would,
//! is caught by `mailaudit verify`, which names where; retention does not break verification;
//! and inclusion proofs check offline.

use crate::util::*;
use rusqlite::Connection;
use std::path::Path;
use tempfile::TempDir;

const RECORDS: u64 = 600;
/// The size of the older checkpoint signed half-way.
const HALF: u64 = 300;

/// A store of 600 delegate MessageBind records (more than two 256-leaf tiles) posted to a
/// real server, with a checkpoint at 300 and one at 600, that verifies.
fn base_store() -> TempDir {
    let dir = init_dir();
    let admin = token(dir.path(), "admin", "tamper-admin");
    let server = Server::start(dir.path(), &[]);
    let obs = |i: u64| {
        Obs::new("MessageBind", "alice@example.com", "bob@example.com")
            .subject(&format!("message {i}"))
            .reference(format!("tamper-{i}"))
    };
    for range in [0..HALF / 2, HALF / 2..HALF] {
        let batch: Vec<Obs> = range.map(obs).collect();
        let resp = post_observations(&server, &admin, &ndjson(&batch));
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    // A checkpoint signed by the CLI while the server runs.
    let cp = mailaudit(dir.path(), &["checkpoint"]).ok();
    assert!(cp.stdout.contains(&format!("\n{HALF}\n")), "{}", cp.stdout);
    let batch: Vec<Obs> = (HALF..RECORDS).map(obs).collect();
    let resp = post_observations(&server, &admin, &ndjson(&batch));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["stored"].u64(), Some(RECORDS - HALF));
    server.kill();
    mailaudit(dir.path(), &["checkpoint"]).ok();
    let verify = mailaudit(dir.path(), &["verify"]).ok();
    assert!(
        verify
            .stdout
            .starts_with("OK: 600 leaves (600 records, 0 pruned"),
        "{}",
        verify.stdout
    );
    dir
}

/// Runs `mailaudit verify` on a fresh copy of `base` after `attack` changed its database.
fn verify_after(base: &Path, attack: &dyn Fn(&Connection)) -> Out {
    let copy = TempDir::new().unwrap();
    copy_dir(base, copy.path());
    let conn = open_db(copy.path());
    attack(&conn);
    conn.close().expect("closing the database");
    mailaudit(copy.path(), &["verify"])
}

/// Something an attacker does to the database.
type Attack = Box<dyn Fn(&Connection)>;

fn sql(statements: &'static str) -> Attack {
    Box::new(move |c: &Connection| {
        c.execute_batch(statements)
            .unwrap_or_else(|e| panic!("{statements}: {e}"))
    })
}

/// The last checkpoint's (id, note).
fn last_checkpoint(c: &Connection) -> (i64, String) {
    c.query_row(
        "SELECT id, note FROM checkpoints ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("a checkpoint")
}

#[test]
fn verify_names_what_was_tampered_with() {
    let base = base_store();
    let last_id = last_checkpoint(&open_db(base.path())).0;

    // (what the attacker did, how it is done, what `verify` must say)
    let cases: Vec<(&str, Attack, String)> = vec![
        (
            "move a record's time by a second",
            sql("UPDATE records SET time_s = time_s + 1 WHERE seq = 123"),
            "index 123:".into(),
        ),
        (
            "make a delegate's access look like the owner's own",
            sql("UPDATE records SET mailbox = actor WHERE seq = 321"),
            "index 321:".into(),
        ),
        (
            "hide which message was opened (not yet in a full tile)",
            sql("UPDATE records SET items = NULL WHERE seq = 555"),
            "index 555:".into(),
        ),
        (
            "delete a record",
            sql("DELETE FROM records WHERE seq = 200"),
            "index 200:".into(),
        ),
        (
            "swap two records, leaf hash prefixes included",
            sql(
                "CREATE TEMP TABLE a AS SELECT * FROM records WHERE seq = 10;
                 CREATE TEMP TABLE b AS SELECT * FROM records WHERE seq = 20;
                 DELETE FROM records WHERE seq IN (10, 20);
                 UPDATE temp.a SET seq = 20;
                 UPDATE temp.b SET seq = 10;
                 INSERT INTO records SELECT * FROM temp.a;
                 INSERT INTO records SELECT * FROM temp.b;",
            ),
            "index 10:".into(),
        ),
        (
            "cut off the records after 500, which a checkpoint covers",
            sql("DELETE FROM records WHERE seq >= 500"),
            "index 500:".into(),
        ),
        (
            "forge the latest checkpoint's root",
            Box::new(|c: &Connection| {
                let (id, note) = last_checkpoint(c);
                let mut lines: Vec<String> = note.split('\n').map(String::from).collect();
                let root = &mut lines[2];
                let first = if root.starts_with('A') { "B" } else { "A" };
                root.replace_range(0..1, first);
                let forged = lines.join("\n");
                assert_ne!(forged, note);
                c.execute(
                    "UPDATE checkpoints SET note = ?1 WHERE id = ?2",
                    rusqlite::params![forged, id],
                )
                .unwrap();
            }),
            format!("checkpoint #{last_id}"),
        ),
        (
            "replay the older checkpoint as the newest",
            Box::new(|c: &Connection| {
                let n = c
                    .execute(
                        "INSERT INTO checkpoints(size, created, note)
                         SELECT size, created, note FROM checkpoints WHERE size = ?1",
                        [HALF as i64],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            }),
            "replay".into(),
        ),
    ];

    let mut failures = Vec::new();
    for (attack, how, expected) in &cases {
        let out = verify_after(base.path(), how.as_ref());
        if out.code != 1 || !out.stdout.contains(expected.as_str()) {
            failures.push(format!(
                "{attack}: expected exit 1 and {expected:?}, got exit {}:\n{}{}",
                out.code, out.stdout, out.stderr
            ));
        }
    }
    // The same copying, with no attack, verifies.
    let untouched = verify_after(base.path(), &|_| {});
    if untouched.code != 0 || !untouched.stdout.starts_with("OK") {
        failures.push(format!("untouched copy: {}", untouched.all()));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn verify_with_another_logs_key_fails() {
    let dir = init_dir();
    let other = init_dir();
    let admin = token(dir.path(), "admin", "key-admin");
    let server = Server::start(dir.path(), &[]);
    let batch: Vec<Obs> = (0..5)
        .map(|_| Obs::new("MessageBind", "alice@example.com", "bob@example.com"))
        .collect();
    assert_eq!(
        post_observations(&server, &admin, &ndjson(&batch)).status,
        200
    );
    server.kill();
    mailaudit(dir.path(), &["checkpoint"]).ok();
    let own = dir.path().join("signing.pub");
    mailaudit(dir.path(), &["verify", "--key", own.to_str().unwrap()]).ok();
    let foreign = other.path().join("signing.pub");
    let out = mailaudit(dir.path(), &["verify", "--key", foreign.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("FAILED") && out.stdout.contains("checkpoint"),
        "{}",
        out.stdout
    );
}

#[test]
fn retention_removes_contents_but_the_log_still_verifies() {
    let dir = init_dir();
    let data = dir.path();
    let admin = token(data, "admin", "retention-admin");
    let server = Server::start(data, &[]);
    let three_days_ago = ago(3 * 86_400);
    let mut batch: Vec<Obs> = (0..8)
        .map(|i| {
            Obs::new("MessageBind", "alice@example.com", "bob@example.com")
                .time(three_days_ago.clone())
                .reference(format!("old-{i}"))
        })
        .collect();
    batch.extend((0..4).map(|i| {
        Obs::new("MessageBind", "alice@example.com", "bob@example.com")
            .reference(format!("new-{i}"))
    }));
    let resp = post_observations(&server, &admin, &ndjson(&batch));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["stored"].u64(), Some(12));
    server.kill();
    mailaudit(data, &["checkpoint"]).ok();

    // Nothing is old enough under the default retention.
    let prune = mailaudit(data, &["prune"]).ok();
    assert!(
        prune.stdout.contains("pruned 0 records"),
        "{}",
        prune.stdout
    );
    mailaudit(data, &["policy", "set", "--audit-log-age-limit", "1"]).ok();
    let prune = mailaudit(data, &["prune"]).ok();
    assert!(
        prune.stdout.contains("pruned 8 records"),
        "{}",
        prune.stdout
    );

    let mut refs: Vec<String> = search_all(data, &["--mailbox", "alice@example.com"])
        .iter()
        .filter_map(|r| r["provenance"]["reference"].str().map(String::from))
        .collect();
    refs.sort();
    assert_eq!(refs, vec!["new-0", "new-1", "new-2", "new-3"]);

    // A checkpoint over the pruned log, too: verify re-derives both from the kept hashes.
    mailaudit(data, &["checkpoint"]).ok();
    let verify = mailaudit(data, &["verify"]).ok();
    assert!(
        verify.stdout.starts_with("OK:") && verify.stdout.contains("8 pruned by retention"),
        "{}",
        verify.stdout
    );

    // The kept hashes are what is verified: altering one is caught.
    let out = verify_after(
        data,
        sql("UPDATE pruned SET leaf = zeroblob(32) WHERE seq = 3").as_ref(),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
}

#[test]
fn an_inclusion_proof_checks_offline_and_fails_for_an_edited_record() {
    let dir = init_dir();
    let data = dir.path();
    let admin = token(data, "admin", "proof-admin");
    let server = Server::start(data, &[]);
    let batch: Vec<Obs> = (0..10)
        .map(|i| {
            Obs::new("MessageBind", "alice@example.com", "bob@example.com")
                .subject(&format!("subject {i}"))
        })
        .collect();
    assert_eq!(
        post_observations(&server, &admin, &ndjson(&batch)).status,
        200
    );
    server.kill();
    mailaudit(data, &["checkpoint"]).ok();

    let proof = dir.path().join("p.json");
    mailaudit(data, &["proof", "5", "-o", proof.to_str().unwrap()]).ok();
    let key = data.join("signing.pub");
    let key = key.to_str().unwrap();
    let ok = mailaudit(
        data,
        &["verify-proof", proof.to_str().unwrap(), "--key", key],
    )
    .ok();
    assert!(ok.stdout.starts_with("OK: record 5 "), "{}", ok.stdout);

    let text = std::fs::read_to_string(&proof).unwrap();
    let original = "\"subject\": \"subject 5\"";
    assert!(text.contains(original), "{text}");
    let edited = dir.path().join("edited.json");
    std::fs::write(
        &edited,
        text.replace(original, "\"subject\": \"subject 5, edited\""),
    )
    .unwrap();
    let out = mailaudit(
        data,
        &["verify-proof", edited.to_str().unwrap(), "--key", key],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);

    // Nor does the untouched proof check against another log's key.
    let other = init_dir();
    let foreign = other.path().join("signing.pub");
    let out = mailaudit(
        data,
        &[
            "verify-proof",
            proof.to_str().unwrap(),
            "--key",
            foreign.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.all());
}
