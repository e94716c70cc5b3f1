//! Rules tested at their edges: N-1, N and N+1 events; events just inside and just outside
//! the window; folding of a burst into one follow-up with its count.

use crate::*;
use mailaudit_model::{
    AuditRecord, Client, Item, LogonType, Operation, OperationResult, Parameter, Provenance,
    Timestamp,
};

const T0: i64 = 1_790_000_000; // seconds

fn rec(
    seq: u64,
    secs: f64,
    op: Operation,
    logon: LogonType,
    actor: &str,
    mailbox: &str,
) -> AuditRecord {
    AuditRecord {
        seq,
        time: Timestamp::from_micros(T0 * 1_000_000 + (secs * 1_000_000.0) as i64),
        recorded_at: Timestamp::from_secs(T0),
        operation: op,
        result: OperationResult::Succeeded,
        reason: None,
        logon_type: logon,
        external: false,
        mailbox: mailbox.into(),
        actor: actor.into(),
        acting_as: None,
        folder: Some("INBOX".into()),
        destination_folder: None,
        items: vec![],
        client: Client {
            ip: Some("192.0.2.7".parse().unwrap()),
            ..Default::default()
        },
        provenance: Provenance {
            source: "test".into(),
            ..Default::default()
        },
        parameters: vec![],
    }
}

fn engine(toml_text: &str) -> Engine {
    #[derive(serde::Deserialize)]
    struct File {
        rules: Vec<RuleConfig>,
    }
    let f: File = toml::from_str(toml_text).unwrap();
    Engine::new(f.rules).unwrap()
}

fn run(e: &mut Engine, records: &[AuditRecord]) -> Vec<Alert> {
    records.iter().flat_map(|r| e.observe(r)).collect()
}

fn failed_login(seq: u64, secs: f64, mailbox: &str, ip: &str) -> AuditRecord {
    let mut r = rec(
        seq,
        secs,
        Operation::MailboxLogin,
        LogonType::Owner,
        mailbox,
        mailbox,
    );
    r.result = OperationResult::Failed;
    r.client.ip = Some(ip.parse().unwrap());
    r
}

const FAILED: &str = r#"
[[rules]]
name = "brute"
kind = "failed_logins"
threshold = 5
window_secs = 60
suppress_secs = 0
"#;

#[test]
fn failed_logins_fire_at_n_not_at_n_minus_1() {
    for (n, expected) in [(4, 0), (5, 1)] {
        let mut e = engine(FAILED);
        let recs: Vec<_> = (0..n)
            .map(|i| failed_login(i, i as f64, "alice@example.com", "198.51.100.1"))
            .collect();
        let alerts = run(&mut e, &recs);
        assert_eq!(alerts.len(), expected, "{n} failed logins");
        if expected == 1 {
            let a = &alerts[0];
            assert_eq!(a.rule, "brute");
            assert_eq!(a.kind, "failed_logins");
            assert_eq!(a.records, vec![0, 1, 2, 3, 4]);
            assert_eq!(a.count, 5);
            assert_eq!(a.id, "brute:0");
            assert_eq!(a.mailbox.as_deref(), Some("alice@example.com"));
            assert_eq!(a.severity, Severity::Medium);
            assert_eq!(
                a.summary,
                "brute: 5 failed logins to mailbox alice@example.com within 60s"
            );
        }
    }
}

#[test]
fn n_plus_1_without_folding_starts_a_new_count() {
    let mut e = engine(FAILED);
    let recs: Vec<_> = (0..6)
        .map(|i| failed_login(i, i as f64, "alice@example.com", "198.51.100.1"))
        .collect();
    let alerts = run(&mut e, &recs);
    assert_eq!(alerts.len(), 1, "the 6th starts a new count of 1");
    let more: Vec<_> = (6..10)
        .map(|i| failed_login(i, i as f64, "alice@example.com", "198.51.100.1"))
        .collect();
    let alerts = run(&mut e, &more);
    assert_eq!(alerts.len(), 1, "the 10th completes the second five");
    assert_eq!(alerts[0].records, vec![5, 6, 7, 8, 9]);
}

#[test]
fn n_plus_1_with_folding_is_counted_into_the_follow_up() {
    let mut e = engine(&FAILED.replace("suppress_secs = 0", "suppress_secs = 600"));
    let recs: Vec<_> = (0..6)
        .map(|i| failed_login(i, i as f64, "alice@example.com", "198.51.100.1"))
        .collect();
    let alerts = run(&mut e, &recs);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].count, 5);
    // The alert fired at the 5th failure (4 s); folding lasts 600 s from there.
    assert!(e
        .tick(Timestamp::from_micros((T0 + 604) * 1_000_000 - 1))
        .is_empty());
    let follow = e.tick(Timestamp::from_secs(T0 + 604));
    assert_eq!(follow.len(), 1);
    assert_eq!(follow[0].id, "brute:0:repeat");
    assert_eq!(follow[0].repeat_of.as_deref(), Some("brute:0"));
    assert_eq!(follow[0].records, vec![5]);
    assert_eq!(follow[0].count, 1);
}

#[test]
fn window_edges_just_inside_and_just_outside() {
    // Five failures where the first and last are exactly 60 s apart count together;
    // 60 s and one microsecond apart they do not.
    for (last, expected) in [(60.0, 1), (60.000001, 0)] {
        let mut e = engine(FAILED);
        let mut recs: Vec<_> = (0..4)
            .map(|i| failed_login(i, i as f64, "alice@example.com", "198.51.100.1"))
            .collect();
        recs.push(failed_login(4, last, "alice@example.com", "198.51.100.1"));
        assert_eq!(run(&mut e, &recs).len(), expected, "last at {last}s");
    }
}

#[test]
fn failed_logins_by_ip_count_across_mailboxes_and_keep_ips_apart() {
    let mut e = engine(&FAILED.replace("suppress_secs = 0", "by = \"ip\""));
    let mut recs: Vec<_> = (0..4)
        .map(|i| failed_login(i, i as f64, &format!("u{i}@example.com"), "203.0.113.9"))
        .collect();
    recs.push(failed_login(4, 4.0, "x@example.com", "203.0.113.10"));
    assert!(run(&mut e, &recs).is_empty());
    let a = e.observe(&failed_login(5, 5.0, "y@example.com", "203.0.113.9"));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].records, vec![0, 1, 2, 3, 5]);
    assert_eq!(a[0].ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(
        a[0].summary,
        "brute: 5 failed logins from 203.0.113.9 within 60s"
    );
}

#[test]
fn deletions_count_items_by_actor() {
    let rules = r#"
[[rules]]
name = "mass-delete"
kind = "deletions"
threshold = 10
window_secs = 300
"#;
    let del = |seq, secs, items: usize, op| {
        let mut r = rec(
            seq,
            secs,
            op,
            LogonType::Delegate,
            "mallory@example.com",
            "ceo@example.com",
        );
        r.items = (0..items)
            .map(|i| Item {
                uid: Some(i as u32),
                ..Default::default()
            })
            .collect();
        r
    };
    // 9 items (N-1): nothing. The 10th (N) in a third kind of deletion fires.
    let mut e = engine(rules);
    assert!(run(
        &mut e,
        &[
            del(0, 0.0, 4, Operation::SoftDelete),
            del(1, 1.0, 5, Operation::HardDelete)
        ]
    )
    .is_empty());
    let a = e.observe(&del(2, 2.0, 1, Operation::MoveToDeletedItems));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].count, 10);
    assert_eq!(a[0].records, vec![0, 1, 2]);
    assert_eq!(a[0].severity, Severity::High);
    assert_eq!(
        a[0].summary,
        "mass-delete: mallory@example.com deleted 10 items within 300s"
    );
    // A Move is not a deletion; a failed deletion deleted nothing.
    let mut e = engine(rules);
    let mut failed = del(3, 3.0, 20, Operation::HardDelete);
    failed.result = OperationResult::Failed;
    assert!(run(&mut e, &[del(0, 0.0, 20, Operation::Move), failed]).is_empty());
    // Another actor's deletions do not add up with mallory's.
    let mut e = engine(rules);
    let mut other = del(1, 1.0, 5, Operation::SoftDelete);
    other.actor = "bob@example.com".into();
    assert!(run(&mut e, &[del(0, 0.0, 5, Operation::SoftDelete), other]).is_empty());
}

const VIP: &str = r#"
[[rules]]
name = "vip"
kind = "non_owner_access"
mailboxes = ["CEO@example.com"]
suppress_secs = 60
"#;

#[test]
fn a_burst_is_one_alert_then_one_follow_up_with_its_count() {
    let mut e = engine(VIP);
    let burst: Vec<_> = (0..50)
        .map(|i| {
            rec(
                i,
                i as f64 * 0.5,
                Operation::MessageBind,
                LogonType::Delegate,
                "bob@example.com",
                "ceo@example.com",
            )
        })
        .collect();
    let alerts = run(&mut e, &burst);
    assert_eq!(alerts.len(), 1, "one alert at once, the rest folded");
    assert_eq!(alerts[0].id, "vip:0");
    assert_eq!(alerts[0].count, 1);
    assert_eq!(
        alerts[0].summary,
        "vip: bob@example.com (Delegate) opened message in ceo@example.com folder INBOX"
    );
    let follow = e.tick(Timestamp::from_secs(T0 + 60));
    assert_eq!(follow.len(), 1);
    assert_eq!(follow[0].count, 49);
    assert_eq!(follow[0].records, (1..50).collect::<Vec<_>>());
    assert!(follow[0]
        .summary
        .starts_with("vip: 49 more times within 60s of alert vip:0"));
    // Nothing more to say.
    assert!(e.tick(Timestamp::from_secs(T0 + 120)).is_empty());
}

#[test]
fn folding_window_edges() {
    // A repeat just inside the window folds; exactly at its end it is a new alert, and the
    // follow-up of the first comes before it.
    let mut e = engine(VIP);
    let at = |seq, secs| {
        rec(
            seq,
            secs,
            Operation::FolderBind,
            LogonType::Admin,
            "root",
            "ceo@example.com",
        )
    };
    assert_eq!(e.observe(&at(0, 0.0)).len(), 1);
    assert!(e.observe(&at(1, 59.999999)).is_empty());
    let a = e.observe(&at(2, 60.0));
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].id.as_str(), a[0].count), ("vip:0:repeat", 1));
    assert_eq!((a[1].id.as_str(), a[1].count), ("vip:2", 1));
    // A different actor is a different key: not folded.
    let mut other = at(3, 61.0);
    other.actor = "admin2".into();
    assert_eq!(e.observe(&other).len(), 1);
}

#[test]
fn non_owner_rules_match_only_what_they_name() {
    let mut e = engine(VIP);
    let owner = rec(
        0,
        0.0,
        Operation::MessageBind,
        LogonType::Owner,
        "ceo@example.com",
        "ceo@example.com",
    );
    let other_mailbox = rec(
        1,
        0.0,
        Operation::MessageBind,
        LogonType::Delegate,
        "bob@example.com",
        "carol@example.com",
    );
    assert!(run(&mut e, &[owner.clone(), other_mailbox]).is_empty());
    let mut external_owner = owner;
    external_owner.external = true;
    assert_eq!(
        e.observe(&external_owner).len(),
        1,
        "an external actor is non-owner"
    );

    let admins_only = VIP.replace(
        "kind = \"non_owner_access\"",
        "kind = \"non_owner_access\"\nlogon = \"admin\"",
    );
    let mut e = engine(&admins_only);
    let delegate = rec(
        0,
        0.0,
        Operation::MessageBind,
        LogonType::Delegate,
        "bob@example.com",
        "ceo@example.com",
    );
    let admin = rec(
        1,
        0.0,
        Operation::MessageBind,
        LogonType::Admin,
        "root",
        "ceo@example.com",
    );
    let a = run(&mut e, &[delegate, admin]);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].records, vec![1]);
}

#[test]
fn impersonation_send_as_and_forwarding() {
    let rules = r#"
[[rules]]
name = "imp"
kind = "admin_impersonation"
[[rules]]
name = "sendas"
kind = "send_as"
mailboxes = ["ceo@example.com"]
[[rules]]
name = "fwd"
kind = "inbox_rule_forwarding"
internal_domains = ["example.org"]
"#;
    let mut e = engine(rules);
    let mut imp = rec(
        0,
        0.0,
        Operation::MailboxLogin,
        LogonType::Admin,
        "root",
        "alice@example.com",
    );
    imp.acting_as = Some("alice@example.com".into());
    let a = e.observe(&imp);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].summary,
        "imp: root impersonated alice@example.com (signed in to mailbox) in alice@example.com"
    );
    assert_eq!(a[0].severity, Severity::High);

    let s1 = rec(
        1,
        1.0,
        Operation::SendOnBehalf,
        LogonType::Delegate,
        "pa@example.com",
        "ceo@example.com",
    );
    let s2 = rec(
        2,
        1.0,
        Operation::SendAs,
        LogonType::Delegate,
        "pa@example.com",
        "cfo@example.com",
    );
    let a = run(&mut e, &[s1, s2]);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].summary,
        "sendas: pa@example.com sent on behalf of ceo@example.com"
    );

    let rule = |seq, target: &str| {
        let mut r = rec(
            seq,
            2.0,
            Operation::UpdateInboxRules,
            LogonType::Owner,
            "alice@example.com",
            "alice@example.com",
        );
        r.parameters = vec![
            Parameter {
                name: "script".into(),
                value: "redirect ...".into(),
            },
            Parameter {
                name: "forwards_to".into(),
                value: target.into(),
            },
        ];
        r
    };
    let a = e.observe(&rule(3, "bob@example.com"));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].severity, Severity::High);
    assert_eq!(a[0].summary, "fwd: alice@example.com set an inbox rule in alice@example.com forwarding to bob@example.com");
    assert!(
        e.observe(&rule(4, "x@example.org")).len() == 1,
        "internal, still a forward"
    );
    let a = e.observe(&rule(5, "exfil@evil.example"));
    assert_eq!(a[0].severity, Severity::Critical);
    assert!(a[0]
        .summary
        .contains("OUTSIDE the domain to exfil@evil.example"));
    let mut plain = rule(6, "");
    plain.parameters.truncate(1);
    assert!(e.observe(&plain).is_empty(), "a rule that does not forward");

    let mut e = engine(&rules.replace(
        "internal_domains = [\"example.org\"]",
        "external_only = true",
    ));
    assert!(e.observe(&rule(7, "bob@example.com")).is_empty());
    assert_eq!(e.observe(&rule(8, "exfil@evil.example")).len(), 1);
}

fn policy_change(seq: u64, before: &str, after: &str) -> AuditRecord {
    let mut r = rec(
        seq,
        0.0,
        Operation::AuditPolicyChange,
        LogonType::Admin,
        "token:ops",
        "ceo@example.com",
    );
    r.parameters = vec![
        Parameter {
            name: "change".into(),
            value: "{}".into(),
        },
        Parameter {
            name: "before".into(),
            value: before.into(),
        },
        Parameter {
            name: "after".into(),
            value: after.into(),
        },
    ];
    r
}

#[test]
fn auditing_weakened() {
    let mut e =
        engine("[[rules]]\nname = \"weak\"\nkind = \"audit_weakened\"\nsuppress_secs = 0\n");
    let on = r#"{"enabled":true,"retention_days":180,"owner":["MailboxLogin"],"delegate":["FolderBind","MessageBind"],"admin":["MessageBind"]}"#;
    let off = r#"{"enabled":false,"retention_days":180,"owner":["MailboxLogin"],"delegate":["FolderBind","MessageBind"],"admin":["MessageBind"]}"#;
    let narrower = r#"{"enabled":true,"retention_days":30,"owner":["MailboxLogin"],"delegate":["FolderBind"],"admin":["MessageBind"]}"#;
    let wider = r#"{"enabled":true,"retention_days":365,"owner":["MailboxLogin","MessageBind"],"delegate":["FolderBind","MessageBind"],"admin":["MessageBind"]}"#;
    let a = e.observe(&policy_change(0, on, off));
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].summary,
        "weak: token:ops disabled auditing for ceo@example.com"
    );
    let a = e.observe(&policy_change(1, on, narrower));
    assert_eq!(a.len(), 2);
    assert_eq!(
        a[0].summary,
        "weak: token:ops narrowed the audited actions of ceo@example.com: delegate -MessageBind"
    );
    assert_eq!(
        a[1].summary,
        "weak: token:ops shortened the retention of ceo@example.com from 180 to 30 days"
    );
    assert!(
        e.observe(&policy_change(2, on, wider)).is_empty(),
        "widening is not weakening"
    );

    let mut bypass = rec(
        3,
        0.0,
        Operation::AuditBypassChange,
        LogonType::Admin,
        "token:ops",
        "svc-backup",
    );
    bypass.parameters = vec![Parameter {
        name: "change".into(),
        value: r#"{"change":"bypass_add","actor":"svc-backup"}"#.into(),
    }];
    let a = e.observe(&bypass);
    assert_eq!(a.len(), 1);
    assert!(a[0]
        .summary
        .contains("added an audit bypass for svc-backup"));
    bypass.parameters[0].value = r#"{"change":"bypass_remove","actor":"svc-backup"}"#.into();
    assert!(e.observe(&bypass).is_empty());

    let perm = rec(
        4,
        0.0,
        Operation::UpdateFolderPermissions,
        LogonType::Owner,
        "alice@example.com",
        "alice@example.com",
    );
    assert_eq!(e.observe(&perm).len(), 1);
}

#[test]
fn first_seen_learns_the_first_and_alerts_on_new_ones_only() {
    let mut e = engine("[[rules]]\nname = \"new-ip\"\nkind = \"first_seen\"\n");
    let login = |seq, ip: &str| {
        let mut r = rec(
            seq,
            seq as f64,
            Operation::MailboxLogin,
            LogonType::Owner,
            "alice@example.com",
            "alice@example.com",
        );
        r.client.ip = Some(ip.parse().unwrap());
        r
    };
    assert!(e.observe(&login(0, "192.0.2.1")).is_empty(), "learned");
    assert!(e.observe(&login(1, "192.0.2.1")).is_empty(), "seen");
    let a = e.observe(&login(2, "203.0.113.50"));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].summary, "new-ip: alice@example.com signed in to alice@example.com from IP 203.0.113.50, never seen for this mailbox");
    let mut failed = login(3, "198.51.100.1");
    failed.result = OperationResult::Failed;
    assert!(
        e.observe(&failed).is_empty(),
        "a failed login is not a sign-in"
    );

    // The state survives a restart (serialised and restored).
    let saved = serde_json::to_string(e.state()).unwrap();
    let mut e2 = engine("[[rules]]\nname = \"new-ip\"\nkind = \"first_seen\"\n")
        .with_state(serde_json::from_str(&saved).unwrap());
    assert!(e2.observe(&login(4, "203.0.113.50")).is_empty());
    assert_eq!(e2.observe(&login(5, "203.0.113.51")).len(), 1);
}

#[test]
fn a_replay_gives_the_same_alerts() {
    let mut e1 = engine(VIP);
    let recs: Vec<_> = (0..10)
        .map(|i| {
            rec(
                i,
                i as f64 * 20.0,
                Operation::FolderBind,
                LogonType::Admin,
                "root",
                "ceo@example.com",
            )
        })
        .collect();
    let mut a1 = run(&mut e1, &recs);
    a1.extend(e1.tick(Timestamp::from_secs(T0 + 1000)));
    let mut e2 = engine(VIP);
    let mut a2 = run(&mut e2, &recs);
    a2.extend(e2.tick(Timestamp::from_secs(T0 + 1000)));
    assert_eq!(a1, a2);
    let ids: Vec<_> = a1.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "vip:0",
            "vip:0:repeat",
            "vip:3",
            "vip:3:repeat",
            "vip:6",
            "vip:6:repeat",
            "vip:9"
        ]
    );
}

#[test]
fn bad_rules_are_refused_with_their_name() {
    let parse = |t: &str| -> Result<Vec<RuleConfig>, String> {
        #[derive(serde::Deserialize)]
        struct File {
            rules: Vec<RuleConfig>,
        }
        let f: File = toml::from_str(t).map_err(|e| e.to_string())?;
        validate(f.rules).map_err(|e| e.to_string())
    };
    let e =
        parse("[[rules]]\nname = \"d\"\nkind = \"deletions\"\nthreshold = 0\nwindow_secs = 5\n")
            .unwrap_err();
    assert_eq!(e, "rule `d`: `threshold` must be at least 1");
    let e = parse("[[rules]]\nname = \"a\"\nkind = \"send_as\"\n[[rules]]\nname = \"a\"\nkind = \"send_as\"\n").unwrap_err();
    assert_eq!(e, "rule `a` is defined twice; names must be unique");
    let e = parse("[[rules]]\nname = \"a\"\nkind = \"send_as\"\nmailbox = [\"x\"]\n").unwrap_err();
    assert!(e.contains("mailbox"), "{e}");
    let e = parse("[[rules]]\nname = \"a\"\nkind = \"sendas\"\n").unwrap_err();
    assert!(e.contains("sendas"), "{e}");
}

#[test]
fn a_match_that_arrives_out_of_order_folds_too() {
    let mut e = engine(VIP);
    let at = |seq, secs| {
        rec(
            seq,
            secs,
            Operation::FolderBind,
            LogonType::Admin,
            "root",
            "ceo@example.com",
        )
    };
    assert_eq!(e.observe(&at(0, 100.0)).len(), 1);
    // Stamped 30 s before the alert by a source whose clock is behind: folded.
    assert!(e.observe(&at(1, 70.0)).is_empty());
    // 60 s before it is a separate event.
    assert_eq!(
        e.observe(&at(2, 40.0)).len(),
        2,
        "follow-up of the first, then a new alert"
    );
}

#[test]
fn with_group_secs_a_burst_is_exactly_one_alert_with_its_count() {
    let grouped = VIP.replace("suppress_secs = 60", "suppress_secs = 60\ngroup_secs = 60");
    let mut e = engine(&grouped);
    let burst: Vec<_> = (0..50)
        .map(|i| {
            rec(
                i,
                i as f64 * 0.5,
                Operation::MessageBind,
                LogonType::Delegate,
                "bob@example.com",
                "ceo@example.com",
            )
        })
        .collect();
    assert!(run(&mut e, &burst).is_empty(), "held back");
    assert!(e
        .tick(Timestamp::from_micros((T0 + 60) * 1_000_000 - 1))
        .is_empty());
    let a = e.tick(Timestamp::from_secs(T0 + 60));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].id, "vip:0");
    assert_eq!(a[0].count, 50);
    assert_eq!(a[0].records, (0..50).collect::<Vec<_>>());
    assert_eq!(a[0].time, burst[49].time);
    assert!(
        e.tick(Timestamp::from_secs(T0 + 600)).is_empty(),
        "no follow-up: nothing left"
    );

    // A shorter group: matches within it join the alert, later ones the follow-up.
    let mut e = engine(&VIP.replace("suppress_secs = 60", "suppress_secs = 60\ngroup_secs = 10"));
    assert!(run(&mut e, &burst[..40]).is_empty());
    let a = e.tick(Timestamp::from_secs(T0 + 10));
    assert_eq!((a.len(), a[0].count), (1, 20), "0 s to 9.5 s");
    let f = e.tick(Timestamp::from_secs(T0 + 60));
    assert_eq!((f.len(), f[0].count, f[0].records[0]), (1, 20, 20));

    let err = Engine::new(vec![RuleConfig {
        group_secs: 61,
        ..engine(&grouped).rules()[0].clone()
    }])
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "rule `vip`: `group_secs` (61) must not exceed `suppress_secs` (60)"
    );
}
