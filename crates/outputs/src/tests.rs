//! Formats, daily-file naming and pruning, signatures, backoff, the outbox, configuration
//! errors.

use crate::config::{Backoff, OutputsConfig};
use crate::db::OutputsDb;
use crate::{daily, deliver, format};
use mailaudit_alerts::{Alert, Severity};
use mailaudit_model::{
    AuditRecord, Client, Item, LogonType, Operation, OperationResult, Provenance, Timestamp,
};

fn record(time: &str, op: Operation) -> AuditRecord {
    AuditRecord {
        seq: 42,
        time: time.parse().unwrap(),
        recorded_at: "2026-01-14T23:00:01Z".parse().unwrap(),
        operation: op,
        result: OperationResult::Succeeded,
        reason: None,
        logon_type: LogonType::Delegate,
        external: false,
        mailbox: "alice@example.com".into(),
        actor: "bob@example.com".into(),
        acting_as: None,
        folder: Some("INBOX".into()),
        destination_folder: None,
        items: vec![Item {
            uid: Some(7),
            message_id: Some("<m7@example.com>".into()),
            subject: Some("Plans\nfor Q3".into()),
            ..Default::default()
        }],
        client: Client {
            ip: Some("192.0.2.7".parse().unwrap()),
            port: Some(50123),
            protocol: Some("imap".into()),
            name: Some("Thunderbird".into()),
            ..Default::default()
        },
        provenance: Provenance {
            source: "dovecot".into(),
            host: Some("mx1".into()),
            reference: Some("dovecot.log:12".into()),
        },
        parameters: vec![],
    }
}

fn alert() -> Alert {
    Alert {
        id: "vip:42".into(),
        rule: "vip|pipe".into(),
        kind: "non_owner_access".into(),
        severity: Severity::High,
        time: "2026-01-14T23:00:00Z".parse().unwrap(),
        records: vec![42, 43],
        count: 2,
        mailbox: Some("ceo@example.com".into()),
        actor: Some("bob=\"x\"]".into()),
        ip: Some("192.0.2.7".into()),
        summary: "vip: bob opened\nthe CEO's mailbox".into(),
        repeat_of: None,
    }
}

#[test]
fn daily_files_turn_over_at_midnight_in_the_zone_winter_and_summer() {
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let root = std::path::Path::new("/r");
    let name = |t: &str| {
        daily::file_for(root, tz, &record(t, Operation::FolderBind))
            .unwrap()
            .display()
            .to_string()
    };
    // Winter: UTC+1.
    assert_eq!(
        name("2026-01-14T22:59:59.999999Z"),
        "/r/example.com/alice/AUDIT-260114.log"
    );
    assert_eq!(
        name("2026-01-14T23:00:00Z"),
        "/r/example.com/alice/AUDIT-260115.log"
    );
    // Summer: UTC+2.
    assert_eq!(
        name("2026-07-14T21:59:59Z"),
        "/r/example.com/alice/AUDIT-260714.log"
    );
    assert_eq!(
        name("2026-07-14T22:00:00Z"),
        "/r/example.com/alice/AUDIT-260715.log"
    );
    // UTC itself.
    let utc: chrono_tz::Tz = "UTC".parse().unwrap();
    assert!(daily::file_for(
        root,
        utc,
        &record("2026-01-14T23:00:00Z", Operation::FolderBind)
    )
    .unwrap()
    .ends_with("AUDIT-260114.log"));
}

#[test]
fn mailbox_names_cannot_escape_the_root() {
    assert_eq!(
        daily::dirs("../../etc@.."),
        ("_".into(), "_.._.._etc".into())
    );
    assert_eq!(
        daily::dirs("a/b@ex/ample"),
        ("ex_ample".into(), "a_b".into())
    );
    assert_eq!(daily::dirs("carol"), ("_local".into(), "carol".into()));
    assert_eq!(daily::dirs("*"), ("_system".into(), "_all".into()));
}

#[test]
fn daily_files_are_written_one_line_each_and_pruned_by_retention() {
    let dir = tempfile::TempDir::new().unwrap();
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let recs = [
        record("2026-01-12T12:00:00Z", Operation::SoftDelete),
        record("2026-01-14T22:59:59Z", Operation::MessageBind),
        record("2026-01-14T23:00:00Z", Operation::FolderBind),
    ];
    assert_eq!(daily::write(dir.path(), tz, &recs).unwrap(), 3);
    let mbox = dir.path().join("example.com").join("alice");
    let day14 = std::fs::read_to_string(mbox.join("AUDIT-260114.log")).unwrap();
    assert_eq!(
        day14,
        "2026-01-14 23:59:59.000000 +0100 #42 MessageBind Succeeded Delegate bob@example.com folder=\"INBOX\" ip=192.0.2.7 proto=imap client=\"Thunderbird\" [uid=7 <m7@example.com> \"Plans for Q3\"]\n"
    );
    // The 15th (Berlin) ends at 2026-01-15T23:00:00Z. With 90 minutes' retention it goes at
    // 2026-01-16T00:30:00Z, not a microsecond before; the 12th and the 14th went already.
    let just_before = Timestamp::from_micros(
        "2026-01-16T00:30:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .micros()
            - 1,
    );
    let removed = daily::prune(dir.path(), tz, 90 * 60, just_before).unwrap();
    let mut names: Vec<String> = removed
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["AUDIT-260112.log", "AUDIT-260114.log"]);
    assert!(mbox.join("AUDIT-260115.log").exists());
    let removed = daily::prune(
        dir.path(),
        tz,
        90 * 60,
        "2026-01-16T00:30:00Z".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(removed.len(), 1);
    // Days: kept for a whole day after the day ended.
    daily::write(dir.path(), tz, &recs[2..]).unwrap();
    assert!(daily::prune(
        dir.path(),
        tz,
        86_400,
        "2026-01-16T22:59:59Z".parse().unwrap()
    )
    .unwrap()
    .is_empty());
    assert_eq!(
        daily::prune(
            dir.path(),
            tz,
            86_400,
            "2026-01-16T23:00:00Z".parse().unwrap()
        )
        .unwrap()
        .len(),
        1
    );
}

#[test]
fn retention_is_minutes_or_days() {
    use crate::config::parse_retention;
    assert_eq!(parse_retention("90m").unwrap(), 5400);
    assert_eq!(parse_retention("30d").unwrap(), 30 * 86_400);
    for bad in ["", "30", "0d", "-1d", "2w", "d"] {
        assert!(parse_retention(bad).is_err(), "{bad}");
    }
}

#[test]
fn webhook_signature_is_hmac_sha256_of_timestamp_dot_body() {
    // Computed independently: python3 -c "import hmac,hashlib;
    // print(hmac.new(b'key', b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())"
    assert_eq!(
        deliver::sign(b"key", 1_700_000_000, r#"{"a":1}"#),
        "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
    );
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = Backoff {
        initial_ms: 100,
        max_ms: 800,
    };
    let d: Vec<u64> = (1..=6).map(|n| b.delay_ms(n)).collect();
    assert_eq!(d, [100, 200, 400, 800, 800, 800]);
    assert_eq!(Backoff::default().delay_ms(100), 60_000);
}

#[test]
fn cef_and_rfc5424_escape_what_they_must() {
    let a = alert();
    let cef = format::cef(&a);
    assert!(cef.starts_with(&format!("CEF:0|mailaudit|mailaudit|{}|non_owner_access|vip\\|pipe|8|rt=1768431600000 externalId=vip:42 msg=vip: bob opened\\nthe CEO's mailbox cnt=2 cs1Label=rule cs1=vip|pipe cs2Label=records cs2=42,43 suser=bob\\=\"x\"]", env!("CARGO_PKG_VERSION"))), "{cef}");
    let msg = format::alert_syslog(&a, 10, "mx1", false);
    assert_eq!(
        msg,
        format!(
            "<83>1 2026-01-14T23:00:00.000000Z mx1 mailaudit {} alert [mailaudit@32473 id=\"vip:42\" rule=\"vip|pipe\" kind=\"non_owner_access\" severity=\"high\" count=\"2\" records=\"42,43\" mailbox=\"ceo@example.com\" actor=\"bob=\\\"x\\\"\\]\" ip=\"192.0.2.7\"] vip: bob opened the CEO's mailbox",
            std::process::id()
        )
    );
}

#[test]
fn ecs_maps_the_fields_ecs_has_and_keeps_the_rest() {
    let mut r = record("2026-01-14T23:00:00Z", Operation::MailboxLogin);
    r.result = OperationResult::Failed;
    r.acting_as = Some("alice@example.com".into());
    let e = format::ecs(&r);
    assert_eq!(e["@timestamp"], "2026-01-14T23:00:00.000000Z");
    assert_eq!(e["event"]["action"], "MailboxLogin");
    assert_eq!(e["event"]["outcome"], "failure");
    assert_eq!(
        e["event"]["category"],
        serde_json::json!(["authentication", "email"])
    );
    assert_eq!(e["event"]["sequence"], 42);
    assert_eq!(e["event"]["provider"], "dovecot");
    assert_eq!(e["user"]["name"], "bob@example.com");
    assert_eq!(e["user"]["domain"], "example.com");
    assert_eq!(e["user"]["target"]["name"], "alice@example.com");
    assert_eq!(e["user"]["effective"]["name"], "alice@example.com");
    assert_eq!(e["source"]["ip"], "192.0.2.7");
    assert_eq!(e["source"]["port"], 50123);
    assert_eq!(e["network"]["protocol"], "imap");
    assert_eq!(e["user_agent"]["original"], "Thunderbird");
    assert_eq!(e["host"]["name"], "mx1");
    assert_eq!(e["email"]["message_id"], "<m7@example.com>");
    assert_eq!(
        e["related"]["user"],
        serde_json::json!(["bob@example.com", "alice@example.com"])
    );
    assert_eq!(e["mailaudit"]["logon_type"], "Delegate");
    assert_eq!(e["mailaudit"]["folder"], "INBOX");
    assert_eq!(e["mailaudit"]["provenance"]["reference"], "dovecot.log:12");
}

#[test]
fn the_outbox_takes_each_alert_once_and_hands_it_out_in_order() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut db = OutputsDb::open(dir.path()).unwrap();
    let mut a1 = alert();
    a1.id = "r:1".into();
    let mut a2 = alert();
    a2.id = "r:2".into();
    a2.severity = Severity::Low;
    let outputs = |a: &Alert| -> Vec<String> {
        let mut o = vec!["all".to_string()];
        if a.severity >= Severity::High {
            o.push("high".into());
        }
        o
    };
    assert_eq!(
        db.enqueue(&[a1.clone(), a2.clone()], &outputs, &[("p", "2")])
            .unwrap(),
        2
    );
    // A replay inserts nothing twice.
    assert_eq!(
        db.enqueue(&[a1.clone(), a2.clone()], &outputs, &[("p", "2")])
            .unwrap(),
        0
    );
    assert_eq!(db.get("p").unwrap().as_deref(), Some("2"));
    let head = db.head("all").unwrap().unwrap();
    assert_eq!(head.alert.id, "r:1");
    assert_eq!(db.failed("all", head.n, "down").unwrap(), 1);
    assert_eq!(db.failed("all", head.n, "still down").unwrap(), 2);
    assert_eq!(
        db.head("all").unwrap().unwrap().alert.id,
        "r:1",
        "the head waits"
    );
    db.delivered("all", head.n).unwrap();
    assert_eq!(db.head("all").unwrap().unwrap().alert.id, "r:2");
    let high = db.head("high").unwrap().unwrap();
    assert_eq!(high.alert.id, "r:1");
    db.delivered("high", high.n).unwrap();
    assert!(db.head("high").unwrap().is_none());
    // Reopened (a restart): the same queue.
    drop(db);
    let db = OutputsDb::open(dir.path()).unwrap();
    assert_eq!(db.head("all").unwrap().unwrap().alert.id, "r:2");
    let status = db.status().unwrap();
    assert_eq!(
        (
            status[0].output.as_str(),
            status[0].pending,
            status[0].delivered
        ),
        ("all", 1, 1)
    );
    assert_eq!(
        (
            status[1].output.as_str(),
            status[1].pending,
            status[1].delivered
        ),
        ("high", 0, 1)
    );
}

#[test]
fn configuration_errors_say_where() {
    let err = |t: &str| {
        OutputsConfig::from_toml(t, "m.toml")
            .unwrap_err()
            .to_string()
    };
    assert!(err("[[webhook]]\nname = \"w\"\nurl = \"http://x\"\n")
        .contains("webhook `w`: set `secret` or `secret_file`"));
    assert!(
        err("[[webhook]]\nname = \"w\"\nurl = \"ftp://x\"\nsecret = \"s\"\n")
            .contains("url must start with http:// or https://")
    );
    let e = err("[[syslog]]\nname = \"s\"\naddress = \"127.0.0.1:514\"\nfacilty = \"auth\"\n");
    assert!(e.contains("m.toml") && e.contains("facilty"), "{e}");
    assert!(
        err("[daily_files]\nroot = \"/x\"\ntime_zone = \"Mars/Olympus\"\n")
            .contains("daily_files.time_zone")
    );
    assert!(
        err("[[syslog]]\nname = \"s\"\naddress = \"127.0.0.1:514\"\nfacility = \"local9\"\n")
            .contains("facility `local9`")
    );
    assert!(err("[[stream]]\nname = \"s\"\nto = \"file\"\n")
        .contains("stream `s`: to = \"file\" needs `path`"));
    assert!(
        err("[[email]]\nname = \"a\"\nrelay = \"x\"\nfrom = \"a@b\"\nto = []\n")
            .contains("`to` is empty")
    );
    assert!(err("[[syslog]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[syslog]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n").contains("output name `a` is used twice"));
}

/// Answers one HTTP request with `status` and returns its head and body.
fn answer_once(listener: &std::net::TcpListener, status: &str) -> (String, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let (s, _) = listener.accept().unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut head = String::new();
    let mut len = 0;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l == "\r\n" {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        head.push_str(&l);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let mut w = s;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops"
    )
    .unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn a_webhook_error_status_is_a_failed_delivery_and_2xx_a_delivered_one() {
    use crate::deliver::Deliver;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config: crate::config::WebhookConfig = toml::from_str(&format!(
        "name = \"w\"\nurl = \"http://127.0.0.1:{port}/in\"\nsecret = \"k\"\n"
    ))
    .unwrap();
    let mut hook = deliver::Webhook::new(config).unwrap();
    let a = alert();
    let body = serde_json::to_string(&a).unwrap();
    let server = std::thread::spawn(move || {
        let first = answer_once(&listener, "503 Service Unavailable");
        let second = answer_once(&listener, "204 No Content");
        (first, second)
    });
    let err = hook.deliver(&a, &body).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("webhook http://127.0.0.1:{port}/in: HTTP 503 oops")
    );
    hook.deliver(&a, &body).unwrap();
    let ((head, got), _) = server.join().unwrap();
    assert!(head.starts_with("POST /in HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Idempotency-Key: vip:42\r\n"), "{head}");
    let ts: i64 = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Mailaudit-Timestamp: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        head.contains(&format!(
            "X-Mailaudit-Signature: {}\r\n",
            deliver::sign(b"k", ts, &got)
        )),
        "{head}"
    );
    assert_eq!(got, body);
}

#[test]
fn an_unreachable_relay_names_itself() {
    use crate::deliver::Deliver;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config: crate::config::EmailConfig = toml::from_str(&format!(
        "name = \"m\"\nrelay = \"127.0.0.1\"\nport = {port}\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n"
    ))
    .unwrap();
    let mut mail = deliver::Email::new(config).unwrap();
    let err = mail.deliver(&alert(), "{}").unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("email `m` via 127.0.0.1:{port}: ")),
        "{err}"
    );
}
