use super::*;

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";

type Headers<'a> = &'a [(&'a str, &'a str)];

fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_790_000_000 + secs)
}

fn sub(login: Option<&str>, headers: &[(&str, &str)]) -> Submission {
    let mut s = Submission {
        client_ip: Some("192.0.2.7".parse().unwrap()),
        client_port: Some(40_000),
        helo: Some("laptop.example.org".into()),
        envelope_from: Some("<bob@example.org>".into()),
        recipients: vec!["<carol@example.net>".into(), "<dave@example.net>".into()],
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body_bytes: 100,
        session: Some("milter#1".into()),
        ..Submission::default()
    };
    if let Some(l) = login {
        s.set_macro("{auth_authen}", l);
        s.set_macro("{auth_type}", "PLAIN");
    }
    s.set_macro("i", "4AbCdE");
    s.set_macro("j", "mx.example.org");
    s
}

fn classifier() -> Classifier {
    let config = MilterConfig::from_toml(
        "domain = \"example.org\"\n[addresses]\n\"sales@example.org\" = \"alice@example.org\"\n",
    )
    .unwrap();
    Classifier::new(AddressBook::new(&config), config.rate, false)
}

fn record(c: &mut Classifier, s: &Submission, now: Timestamp) -> (Observation, Answer) {
    match c.classify(s, now) {
        Verdict::Record {
            observation,
            answer,
        } => (*observation, answer),
        other => panic!("expected a record, got {other:?}"),
    }
}

fn p<'a>(o: &'a Observation, name: &str) -> Vec<&'a str> {
    o.parameters
        .iter()
        .filter(|p| p.name == name)
        .map(|p| p.value.as_str())
        .collect()
}

#[test]
fn classification_table() {
    // (login, headers, operation, mailbox, actor)
    let cases: &[(&str, Headers, Operation, &str, &str)] = &[
        (
            "alice",
            &[("From", "Alice <alice@example.org>")],
            Operation::Send,
            ALICE,
            ALICE,
        ),
        // An alias the configuration gives to alice is hers.
        (
            "alice@example.org",
            &[("From", "sales@example.org")],
            Operation::Send,
            ALICE,
            ALICE,
        ),
        (
            "bob",
            &[("From", "alice@example.org")],
            Operation::SendAs,
            ALICE,
            BOB,
        ),
        (
            "bob",
            &[("From", "sales@example.org")],
            Operation::SendAs,
            ALICE,
            BOB,
        ),
        (
            "bob",
            &[("From", "alice@example.org"), ("Sender", "bob@example.org")],
            Operation::SendOnBehalf,
            ALICE,
            BOB,
        ),
        // Sender = the From's owner: plain SendAs.
        (
            "bob",
            &[
                ("From", "alice@example.org"),
                ("Sender", "alice@example.org"),
            ],
            Operation::SendAs,
            ALICE,
            BOB,
        ),
        // A third party's Sender does not make it on behalf of the login.
        (
            "bob",
            &[
                ("From", "alice@example.org"),
                ("Sender", "carol@example.org"),
            ],
            Operation::SendAs,
            ALICE,
            BOB,
        ),
        // A Sender equal to the From on the login's own message: Send.
        (
            "BOB@Example.org",
            &[("From", "<Bob@example.org>"), ("Sender", "bob@example.org")],
            Operation::Send,
            BOB,
            BOB,
        ),
    ];
    for (login, headers, op, mailbox, actor) in cases {
        let mut c = classifier();
        let (o, answer) = record(&mut c, &sub(Some(login), headers), t(0));
        let what = format!("{login} {headers:?}");
        assert_eq!(o.operation, *op, "{what}");
        assert_eq!(o.mailbox, *mailbox, "{what}");
        assert_eq!(o.actor, *actor, "{what}");
        assert_eq!(o.result, OperationResult::Succeeded, "{what}");
        assert_eq!(answer, Answer::Accept, "{what}");
        assert!(p(&o, "anomaly").is_empty(), "{what}: {:?}", o.parameters);
    }
}

#[test]
fn a_record_carries_everything_the_milter_saw() {
    let mut c = classifier();
    let s = sub(
        Some("bob"),
        &[
            ("From", "=?UTF-8?Q?Alice_M=C3=BCller?= <alice@example.org>"),
            ("Sender", "bob@example.org"),
            ("Subject", "=?ISO-8859-1?Q?Gr=FC=DFe?= from the team"),
            ("Message-ID", "<m1@example.org>"),
        ],
    );
    let (o, _) = record(&mut c, &s, t(5));
    assert_eq!(o.time, t(5));
    assert_eq!(o.operation, Operation::SendOnBehalf);
    assert_eq!(o.items.len(), 1);
    let item = &o.items[0];
    assert_eq!(item.message_id.as_deref(), Some("<m1@example.org>"));
    assert_eq!(item.subject.as_deref(), Some("Grüße from the team"));
    assert_eq!(item.size, Some(s.size()));
    assert_eq!(item.unresolved, None);
    assert_eq!(o.client.ip, Some("192.0.2.7".parse().unwrap()));
    assert_eq!(o.client.port, Some(40_000));
    assert_eq!(o.client.protocol.as_deref(), Some("smtp"));
    assert_eq!(o.client.name.as_deref(), Some("laptop.example.org"));
    assert_eq!(o.provenance.source, "milter");
    assert_eq!(o.provenance.host.as_deref(), Some("mx.example.org"));
    assert_eq!(o.provenance.reference.as_deref(), Some("queue id 4AbCdE"));
    assert_eq!(p(&o, "mechanism"), ["PLAIN"]);
    assert_eq!(p(&o, "login"), ["bob"]);
    assert_eq!(p(&o, "from"), [ALICE]);
    assert_eq!(p(&o, "sender"), [BOB]);
    assert_eq!(p(&o, "envelope_from"), [BOB]);
    assert_eq!(p(&o, "recipient_count"), ["2"]);
    assert_eq!(p(&o, "recipients"), ["carol@example.net, dave@example.net"]);
    o.check(t(5)).expect("the model accepts the observation");
}

#[test]
fn unauthenticated_submissions_are_ignored_and_counted() {
    let mut c = classifier();
    let mut s = sub(None, &[("From", ALICE)]);
    assert_eq!(c.classify(&s, t(0)), Verdict::Ignore("unauthenticated"));
    s.set_macro("{auth_authen}", "  ");
    assert_eq!(c.classify(&s, t(0)), Verdict::Ignore("unauthenticated"));
    assert_eq!(c.counters.ignored_unauthenticated, 2);
    assert_eq!(c.counters.messages, 2);
    assert_eq!(c.counters.recorded, 0);
}

#[test]
fn malformed_headers_make_clear_records() {
    // (headers, operation, mailbox, anomaly contains)
    let garbage = "\u{fffd}\u{fffd}\u{fffd} <\u{fffd}>";
    let cases: &[(Headers, Operation, &str, &str)] = &[
        (
            &[("Subject", "hi")],
            Operation::Send,
            BOB,
            "no From: header",
        ),
        // Two From headers: the foreign one decides, whatever the order.
        (
            &[("From", BOB), ("From", ALICE)],
            Operation::SendAs,
            ALICE,
            "2 From: headers",
        ),
        (
            &[("From", ALICE), ("From", BOB)],
            Operation::SendAs,
            ALICE,
            "2 From: headers",
        ),
        (
            &[("From", "bob@example.org, alice@example.org")],
            Operation::SendAs,
            ALICE,
            "From: lists 2 addresses",
        ),
        (
            &[("From", garbage)],
            Operation::Send,
            BOB,
            "From: header without an address",
        ),
        (&[("From", "")], Operation::Send, BOB, "without an address"),
        (
            &[("From", "\u{fffd}\u{fffd} <\u{fffd}@example.org>")],
            Operation::Send,
            BOB,
            "without an address",
        ),
        (
            &[("From", "undisclosed-recipients:;")],
            Operation::Send,
            BOB,
            "without an address",
        ),
    ];
    for (headers, op, mailbox, anomaly) in cases {
        let mut c = classifier();
        let (o, answer) = record(&mut c, &sub(Some("bob"), headers), t(0));
        let what = format!("{headers:?}");
        assert_eq!(o.operation, *op, "{what}");
        assert_eq!(o.mailbox, *mailbox, "{what}");
        assert_eq!(answer, Answer::Accept);
        let found = p(&o, "anomaly");
        assert!(
            found.iter().any(|a| a.contains(anomaly)),
            "{what}: {found:?}"
        );
        assert_eq!(c.counters.malformed_headers, 1, "{what}");
        o.check(t(0)).expect("the model accepts the observation");
    }
}

#[test]
fn no_from_and_a_foreign_envelope_sender_is_send_as() {
    let mut c = classifier();
    let mut s = sub(Some("bob"), &[("Subject", "hi")]);
    s.envelope_from = Some("<alice@example.org>".into());
    let (o, _) = record(&mut c, &s, t(0));
    assert_eq!(o.operation, Operation::SendAs);
    assert_eq!(o.mailbox, ALICE);
    assert_eq!(
        o.items[0].unresolved.as_deref(),
        Some("the message has no Message-ID: header")
    );
}

#[test]
fn any_input_is_a_record_or_an_ignore_never_a_panic() {
    let nasty = [
        "\0\0",
        "=?utf-8?b?!!!?=",
        "=?x-unknown?q?abc?= <a@b>",
        "<<<>>>",
        "\"unterminated <alice@example.org",
        "a@",
        "@",
        "\r\n\r\n",
        "(comment",
    ];
    let mut c = classifier();
    for v in nasty {
        for name in ["From", "Sender", "Subject", "Message-ID", "", ":", "X\r\nY"] {
            let s = sub(Some("bob"), &[(name, v)]);
            if let Verdict::Record { observation, .. } = c.classify(&s, t(0)) {
                observation.check(t(0)).expect("valid observation");
            }
        }
    }
    let long = "x".repeat(100_000);
    let s = sub(
        Some(&long),
        &[("From", &format!("{long}@example.org")), ("Subject", &long)],
    );
    let (o, _) = record(&mut c, &s, t(0));
    o.check(t(0)).expect("long values are clipped");
}

#[test]
fn the_rate_rule_flags_then_forgets_after_an_hour() {
    let config = MilterConfig::from_toml(
        "[rate]\ndefault_per_hour = 3\nper_login = { \"carol@example.org\" = 1 }\n",
    )
    .unwrap();
    let mut c = Classifier::new(AddressBook::new(&config), config.rate, false);
    let alice = sub(Some(ALICE), &[("From", ALICE)]);
    let results: Vec<_> = (0..5)
        .map(|i| {
            let (o, a) = record(&mut c, &alice, t(i * 60));
            (o.result, o.reason, a)
        })
        .collect();
    for (i, (result, reason, answer)) in results.iter().enumerate() {
        assert_eq!(*answer, Answer::Accept);
        if i < 3 {
            assert_eq!(*result, OperationResult::Succeeded, "message {i}");
        } else {
            assert_eq!(*result, OperationResult::Failed, "message {i}");
            assert_eq!(reason.as_deref(), Some(RATE_EXCEEDED));
        }
    }
    let (o, _) = record(&mut c, &alice, t(5 * 60));
    assert_eq!(p(&o, "rate"), ["6 messages in the last hour; limit 3"]);
    assert_eq!(p(&o, "rate_action"), ["accepted"]);
    // An hour after the first three, only the later ones count.
    let (o, _) = record(&mut c, &alice, t(3600 + 2 * 60 + 1));
    assert_eq!(o.result, OperationResult::Failed, "4 in the window");
    let (o, _) = record(&mut c, &alice, t(3 * 3600));
    assert_eq!(o.result, OperationResult::Succeeded);
    // Per-login limit, by mailbox.
    let carol = sub(Some("carol@example.org"), &[("From", "carol@example.org")]);
    assert_eq!(
        record(&mut c, &carol, t(0)).0.result,
        OperationResult::Succeeded
    );
    assert_eq!(
        record(&mut c, &carol, t(1)).0.result,
        OperationResult::Failed
    );
    assert_eq!(c.counters.over_rate, 5);
    assert_eq!(c.counters.deferred_by_rate, 0);
}

#[test]
fn enforced_rate_defers_and_deferred_messages_do_not_count() {
    let rate = RateConfig {
        default_per_hour: 2,
        ..RateConfig::default()
    };
    let mut c = Classifier::new(AddressBook::default(), rate.clone(), true);
    // A bare login without a configured domain learns its address from its own From.
    let bare = sub(Some("alice"), &[("From", ALICE)]);
    let (o, _) = record(&mut c, &bare, t(0));
    assert_eq!((o.mailbox.as_str(), o.actor.as_str()), (ALICE, ALICE));
    let mut c = Classifier::new(AddressBook::default(), rate.clone(), true);
    let alice = sub(Some(ALICE), &[("From", ALICE)]);
    let answers: Vec<Answer> = (0..4).map(|i| record(&mut c, &alice, t(i)).1).collect();
    assert_eq!(
        answers,
        [
            Answer::Accept,
            Answer::Accept,
            Answer::Tempfail,
            Answer::Tempfail
        ]
    );
    let (o, _) = record(&mut c, &alice, t(10));
    assert_eq!(o.result, OperationResult::Failed);
    assert_eq!(p(&o, "rate_action"), ["deferred"]);
    assert_eq!(p(&o, "rate"), ["2 messages in the last hour; limit 2"]);
    // Once the first two leave the window, the next is accepted.
    assert_eq!(record(&mut c, &alice, t(3601)).1, Answer::Accept);
    assert_eq!(c.counters.deferred_by_rate, 3);
}

#[test]
fn reset_keeps_the_connection_and_forgets_the_message() {
    let mut s = sub(Some("bob"), &[("From", BOB)]);
    s.reset_message();
    assert_eq!(s.macro_value("auth_authen"), None);
    assert_eq!(s.macro_value("j"), Some("mx.example.org"));
    assert!(s.headers.is_empty() && s.recipients.is_empty());
    assert_eq!(s.client_ip, Some("192.0.2.7".parse().unwrap()));
}
