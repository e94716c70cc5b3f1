//! Verbosity presets: `policy presets` shows what each switches on; `policy preset` sets
//! all action sets in one recorded change, live for a running server.

use crate::util::*;

fn outcome(server: &Server, token: &str, obs: &Obs) -> String {
    let r = post_observations(server, token, &obs.json()).json();
    let o = &r["results"][0];
    match o["outcome"].str() {
        Some("skipped") => format!("skipped:{}", o["reason"].str().unwrap_or("")),
        Some(other) => other.to_string(),
        None => panic!("no outcome: {r:?}"),
    }
}

#[test]
fn presets_are_listed_and_applied_as_one_recorded_change() {
    let dir = init_dir();
    let listed = mailaudit(dir.path(), &["policy", "presets"]).ok().stdout;
    assert!(listed.contains("minimal — admin access only\n  AuditAdmin    : MailboxLogin, MailboxLogout, FolderBind"), "{listed}");
    assert!(
        listed.contains("  AuditDelegate : (nothing)\n  AuditOwner    : (nothing)\n"),
        "{listed}"
    );
    assert!(
        listed.contains("full — everything, including owners' reads"),
        "{listed}"
    );
    let bad = mailaudit(dir.path(), &["policy", "preset", "verbose"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains(
            "unknown preset `verbose`; expected one of: minimal, cross-mailbox, standard, full"
        ),
        "{}",
        bad.stderr
    );

    let token = token(dir.path(), "admin", "t");
    let server = Server::start(dir.path(), &[]);
    let delegate = Obs::new("MessageBind", "alice@example.com", "bob@example.com");
    let admin = Obs::new("MessageBind", "alice@example.com", "root@example.com")
        .acting_as("alice@example.com");
    let owner_read = Obs::new("MessageBind", "alice@example.com", "alice@example.com");
    assert_eq!(outcome(&server, &token, &delegate), "stored");
    assert_eq!(outcome(&server, &token, &owner_read), "skipped:not_audited");

    let out = mailaudit(
        dir.path(),
        &[
            "policy",
            "preset",
            "minimal",
            "--mailbox",
            "alice@example.com",
        ],
    )
    .ok();
    assert!(
        out.stderr.contains("recorded as AuditPolicyChange"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .contains("AuditDelegate      : {}\nAuditOwner         : {}\n"),
        "{}",
        out.stdout
    );
    // Live: the running server applies it to the next observation.
    assert_eq!(outcome(&server, &token, &delegate), "skipped:not_audited");
    assert_eq!(outcome(&server, &token, &admin), "stored");
    // Other mailboxes keep the defaults.
    assert_eq!(
        outcome(
            &server,
            &token,
            &Obs::new("MessageBind", "carol@example.com", "bob@example.com")
        ),
        "stored"
    );

    mailaudit(
        dir.path(),
        &["policy", "preset", "full", "--mailbox", "alice@example.com"],
    )
    .ok();
    assert_eq!(outcome(&server, &token, &owner_read), "stored");

    // The same change over the API, for another mailbox.
    let resp = request(
        "POST",
        &server.url("/api/v1/policy/changes"),
        Some(&token),
        Some(br#"{"change":"action_sets","mailbox":"dave@example.com","preset":"minimal","owner":[],"delegate":[],"admin":["MessageBind"]}"#),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        outcome(
            &server,
            &token,
            &Obs::new("MessageBind", "dave@example.com", "bob@example.com")
        ),
        "skipped:not_audited"
    );
    let resp = request(
        "POST",
        &server.url("/api/v1/policy/changes"),
        Some(&token),
        Some(br#"{"change":"action_sets","owner":["AuditLogSearch"],"delegate":[],"admin":[]}"#),
    );
    assert_eq!(resp.status, 400);
    assert!(
        resp.body
            .contains("AuditLogSearch is an operation of the audit system itself"),
        "{}",
        resp.body
    );

    let changes = search_all(
        dir.path(),
        &[
            "--operation",
            "AuditPolicyChange",
            "--mailbox",
            "alice@example.com",
        ],
    );
    assert_eq!(changes.len(), 2, "one record per preset applied");
    let minimal = changes
        .iter()
        .find(|c| {
            c.param("change")
                .is_some_and(|v| v.contains("\"preset\":\"minimal\""))
        })
        .expect("the minimal preset's record");
    assert_eq!(minimal["mailbox"].str(), Some("alice@example.com"));
    assert!(
        minimal
            .param("before")
            .unwrap()
            .contains("\"delegate\":[\"MailboxLogin\""),
        "{:?}",
        minimal.param("before")
    );
    assert!(
        minimal.param("after").unwrap().contains("\"delegate\":[]"),
        "{:?}",
        minimal.param("after")
    );
    drop(server);
}
