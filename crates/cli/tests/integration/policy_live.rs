//! Policy changes reach a running server at once, from the CLI and from the API, and every
//! change is itself in the log.

use crate::util::*;

/// Posts one observation and returns the line's outcome object (`{"outcome": ...}`).
#[track_caller]
fn outcome(server: &Server, token: &str, obs: &Obs) -> Json {
    let resp = post_observations(server, token, &obs.json());
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["results"][0].clone()
}

#[track_caller]
fn assert_skipped(o: &Json, reason: &str) {
    assert_eq!(o["outcome"].str(), Some("skipped"), "{o:?}");
    assert_eq!(o["reason"].str(), Some(reason), "{o:?}");
}

#[track_caller]
fn assert_stored(o: &Json) -> u64 {
    assert_eq!(o["outcome"].str(), Some("stored"), "{o:?}");
    o["seq"].u64().expect("a stored outcome has a seq")
}

/// The `AuditOwner` line of `mailaudit policy show --mailbox MAILBOX`.
fn audit_owner_line(dir: &std::path::Path, mailbox: &str) -> String {
    let out = mailaudit(dir, &["policy", "show", "--mailbox", mailbox]).ok();
    out.stdout
        .lines()
        .find(|l| l.starts_with("AuditOwner"))
        .unwrap_or_else(|| panic!("no AuditOwner line in:\n{}", out.stdout))
        .to_string()
}

/// The owner action set in a `before`/`after` parameter (an effective policy as JSON).
fn owner_set(policy_json: &str) -> Vec<String> {
    let p = Json::parse(policy_json).unwrap_or_else(|e| panic!("{e}: {policy_json}"));
    p["owner"]
        .arr()
        .iter()
        .filter_map(|o| o.str().map(String::from))
        .collect()
}

#[track_caller]
fn assert_policy_change_recorded(dir: &std::path::Path, mailbox: &str, actor_prefix: &str) {
    let changes = search_all(
        dir,
        &["--operation", "AuditPolicyChange", "--mailbox", mailbox],
    );
    assert_eq!(changes.len(), 1, "one change of {mailbox}: {changes:?}");
    let c = &changes[0];
    assert!(
        c["actor"]
            .str()
            .is_some_and(|a| a.starts_with(actor_prefix)),
        "{c:?}"
    );
    let before = owner_set(c.param("before").expect("a before parameter"));
    let after = owner_set(c.param("after").expect("an after parameter"));
    assert!(!before.iter().any(|o| o == "MessageBind"), "{before:?}");
    assert!(after.iter().any(|o| o == "MessageBind"), "{after:?}");
}

#[test]
fn policy_changes_apply_to_the_next_observation_without_a_restart() {
    let dir = init_dir();
    let data = dir.path();
    let admin = token(data, "admin", "policy-admin");
    let server = Server::start(data, &[]);
    let owner_read = |mailbox: &str| Obs::new("MessageBind", mailbox, mailbox);

    // By default an owner opening a message is not audited.
    for m in ["alice@example.com", "carol@example.com", "dave@example.com"] {
        assert_skipped(&outcome(&server, &admin, &owner_read(m)), "not_audited");
    }
    let line = audit_owner_line(data, "alice@example.com");
    assert!(!line.contains("MessageBind"), "{line}");

    // Through the CLI, for alice, while the server runs.
    let set = mailaudit(
        data,
        &[
            "policy",
            "set",
            "--mailbox",
            "alice@example.com",
            "--audit-owner",
            "+MessageBind",
        ],
    )
    .ok();
    assert!(set.stderr.contains("AuditPolicyChange"), "{}", set.stderr);
    let seq = assert_stored(&outcome(&server, &admin, &owner_read("alice@example.com")));
    let r = get(&server.url(&format!("/api/v1/records/{seq}")), &admin).json();
    assert_eq!(r["logon_type"].str(), Some("Owner"), "{r:?}");
    assert_eq!(r["mailbox"].str(), Some("alice@example.com"));
    let line = audit_owner_line(data, "alice@example.com");
    assert!(line.contains("MessageBind"), "{line}");

    // Through the API, for carol.
    let resp = request(
        "PUT",
        &server.url("/api/v1/policy/mailboxes/carol@example.com"),
        Some(&admin),
        Some(br#"{"owner":{"add":["MessageBind"]}}"#),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.json()["effective"]["owner"]
            .arr()
            .iter()
            .any(|o| o.str() == Some("MessageBind")),
        "{}",
        resp.body
    );
    assert_stored(&outcome(&server, &admin, &owner_read("carol@example.com")));
    let line = audit_owner_line(data, "carol@example.com");
    assert!(line.contains("MessageBind"), "{line}");

    // Each change touched only its own mailbox.
    assert_skipped(
        &outcome(&server, &admin, &owner_read("dave@example.com")),
        "not_audited",
    );

    // Both changes are in the log, with the policy before and after.
    assert_policy_change_recorded(data, "alice@example.com", "local:");
    assert_policy_change_recorded(data, "carol@example.com", "token:policy-admin");

    // A bypassed actor's next access is not recorded; the bypass itself is.
    let bob = || Obs::new("MessageBind", "alice@example.com", "bob@example.com");
    assert_stored(&outcome(&server, &admin, &bob()));
    let add = mailaudit(data, &["bypass", "add", "bob@example.com"]).ok();
    assert!(add.stdout.contains("AuditBypassChange"), "{}", add.stdout);
    assert_skipped(&outcome(&server, &admin, &bob()), "bypassed");
    let list = mailaudit(data, &["bypass", "list"]).ok();
    assert!(list.stdout.contains("bob@example.com"), "{}", list.stdout);
    let changes = search_all(data, &["--operation", "AuditBypassChange"]);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let c = &changes[0];
    assert_eq!(c["mailbox"].str(), Some("bob@example.com"), "{c:?}");
    assert!(
        !c.param("before").unwrap_or("").contains("bob@example.com"),
        "{c:?}"
    );
    assert!(
        c.param("after").unwrap_or("").contains("bob@example.com"),
        "{c:?}"
    );
    // Others are still recorded.
    assert_stored(&outcome(
        &server,
        &admin,
        &Obs::new("MessageBind", "alice@example.com", "eve@example.com"),
    ));
}
