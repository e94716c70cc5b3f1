//! `mailaudit import dovecot` over a real Dovecot 2.3.19 log (the sample story, events
//! exported with `transport = log` plus `mail_log` lines): history becomes the same records
//! the live paths make, searchable and verifiable.

use crate::util::*;

/// The log captured from a real Dovecot 2.3.19 running the sample story.
fn captured_log() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../synth/fixtures/dovecot-2.3.19-transport-log.log")
}

#[test]
fn importing_a_dovecot_log_records_its_story() {
    let dir = init_dir();
    // Owners' reads and folder operations are off by default; the history should show all.
    mailaudit(
        dir.path(),
        &[
            "policy",
            "set",
            "--audit-owner",
            "+FolderBind,+MessageBind,+Copy,+Move,+Create,+SearchQueryInitiated,+FolderCreate,+FolderRename,+Deliver",
        ],
    )
    .ok();
    let log = captured_log();
    let out = mailaudit(
        dir.path(),
        &[
            "import",
            "dovecot",
            log.to_str().expect("a UTF-8 path"),
            "--dovecot-domain",
            "example.com",
        ],
    )
    .ok();
    assert!(
        out.stdout
            .contains("imported 67 lines from 1 file(s): 29 observations"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("0 malformed"), "{}", out.all());

    let records = search_all(dir.path(), &[]);
    let find = |op: &str, actor: &str, mailbox: &str| {
        records
            .iter()
            .filter(|r| {
                r.get("operation").and_then(Json::str) == Some(op)
                    && r.get("actor").and_then(Json::str) == Some(actor)
                    && r.get("mailbox").and_then(Json::str) == Some(mailbox)
            })
            .collect::<Vec<_>>()
    };
    // The admin who logged in as carol through the master user is the actor, as an Admin.
    let admin_read = find("MessageBind", "postmaster@example.com", "carol@example.com");
    assert_eq!(admin_read.len(), 1, "{records:?}");
    let r = admin_read[0];
    assert_eq!(r.get("logon_type").and_then(Json::str), Some("Admin"));
    assert_eq!(
        r.get("acting_as").and_then(Json::str),
        Some("carol@example.com")
    );
    assert_eq!(r.get("folder").and_then(Json::str), Some("Trash"));
    let item = &r.get("items").map(Json::arr).unwrap_or_default()[0];
    assert_eq!(
        item.get("message_id").and_then(Json::str),
        Some("<inv-2211@example.org>")
    );
    assert_eq!(
        item.get("subject").and_then(Json::str),
        Some("Invoice 2211")
    );
    // The delegate reached carol's INBOX through the shared namespace.
    let delegate = find("MessageBind", "dan@example.com", "carol@example.com");
    assert_eq!(delegate.len(), 1, "{records:?}");
    assert_eq!(
        delegate[0].get("logon_type").and_then(Json::str),
        Some("Delegate")
    );
    assert_eq!(delegate[0].get("folder").and_then(Json::str), Some("INBOX"));
    // The failed login, the ACL grant and the Sieve upload are there.
    let failed = find("MailboxLogin", "carol@example.com", "carol@example.com")
        .into_iter()
        .filter(|r| r.get("result").and_then(Json::str) == Some("Failed"))
        .count();
    assert_eq!(failed, 1, "{records:?}");
    let acl = find(
        "UpdateFolderPermissions",
        "carol@example.com",
        "carol@example.com",
    );
    assert_eq!(acl.len(), 1);
    assert_eq!(acl[0].param("identifier"), Some("dan"));
    assert_eq!(acl[0].param("rights"), Some("lrs"));
    assert_eq!(
        find("UpdateInboxRules", "carol@example.com", "carol@example.com").len(),
        2,
        "PUTSCRIPT and SETACTIVE"
    );
    // Deliveries are done to the owner's mailbox, with the sender as a parameter.
    let delivered = find("Deliver", "carol@example.com", "carol@example.com");
    assert_eq!(delivered.len(), 2, "{records:?}");
    assert!(delivered
        .iter()
        .any(|d| d.param("envelope_sender") == Some("erin@example.org")));
    // Every imported record points back to its line.
    assert!(records
        .iter()
        .filter(|r| r
            .get("provenance")
            .and_then(|p| p.get("source"))
            .and_then(Json::str)
            == Some("dovecot"))
        .all(|r| r
            .get("provenance")
            .and_then(|p| p.get("reference"))
            .and_then(Json::str)
            .is_some_and(|s| s.contains("dovecot-2.3.19-transport-log.log:"))));
    mailaudit(dir.path(), &["checkpoint"]).ok();
    let verify = mailaudit(dir.path(), &["verify"]).ok();
    assert!(verify.stdout.starts_with("OK"), "{}", verify.stdout);
}
