//! Paths the recorded story does not take, with inputs shaped exactly like Dovecot 2.3.19's
//! (same event fields, same log line formats as tests/fixtures): POP3 retrievals and
//! deletions, COPY by sequence number, APPEND, DELETE, failed commands, IMAP ID, UID STORE
//! without log, moves across mailboxes, renamed folders, `transport = log` lines, master
//! users in the log alone, Sieve redirects on delivery.

mod common;

use common::*;
use mailaudit_model::{Item, Observation, Operation, OperationResult, Parameter};
use mailaudit_source_dovecot::{DovecotConfig, DovecotSource};
use serde_json::{json, Value};

const NO_MESSAGE_ID: &str = "Dovecot logged no Message-ID for this message: its events name only the UID, and no mail_log line (save, copy, flag_change or expunge, with mail_log_fields msgid subject) about this UID was seen; see docs/dovecot.md";
const POP3_RETR: &str = "POP3 in Dovecot 2.3 does not log which messages were retrieved";

fn at(s: &str) -> String {
    format!("2026-11-22T13:50:{s}Z")
}

fn auth(session: &str, service: &str, user: &str, end: &str, transport: &str) -> String {
    json!({"event":"auth_request_finished","hostname":"vm","start_time":at(end),"end_time":at(end),
        "categories":["service:auth","auth"],
        "fields":{"success":"yes","policy_result":"ok","mechanism":"PLAIN","transport":transport,
            "service":service,"session":session,"remote_ip":"192.0.2.9","remote_port":40000,
            "original_user":user,"user":user,"translated_user":user}})
    .to_string()
}

#[allow(clippy::too_many_arguments)]
fn cmd(
    session: &str,
    user: &str,
    name: &str,
    args: &str,
    mailbox: Option<&str>,
    (start, end): (&str, &str),
    reply: &str,
    reasons: &[&str],
) -> String {
    let mut fields = json!({"user":user,"remote_ip":"192.0.2.9","remote_port":40000,"session":session,
        "cmd_name":name,"cmd_input_name":name,"cmd_args":args,"cmd_human_args":args,
        "tagged_reply_state":reply.split(' ').next().unwrap(),"tagged_reply":reply,"reason_code":reasons});
    if let Some(m) = mailbox {
        fields["mailbox"] = Value::from(m);
    }
    json!({"event":"imap_command_finished","hostname":"vm","start_time":at(start),"end_time":at(end),
        "categories":["service:imap","imap"],"fields":fields})
    .to_string()
}

#[allow(clippy::too_many_arguments)]
fn mail(
    event: &str,
    session: &str,
    user: &str,
    mailbox: &str,
    uid: u32,
    cmd: &str,
    t: &str,
    reasons: &[&str],
) -> String {
    json!({"event":event,"hostname":"vm","start_time":at(t),"end_time":at(t),
        "categories":["service:imap","storage","imap","maildir","mailbox","mail"],
        "fields":{"user":user,"session":session,"cmd_name":cmd,"reason_code":reasons,
            "mailbox":mailbox,"uid":uid,"seq":1}})
    .to_string()
}

enum In {
    E(String),
    L(String),
}

fn feed(cfg: &DovecotConfig, inputs: &[In]) -> Vec<Observation> {
    let mut src = DovecotSource::new();
    let mut out = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let r = match input {
            In::E(t) => src.push_event_json(cfg, t, &format!("in:{i}")),
            In::L(t) => src.push_log_line(cfg, t, &format!("in:{i}")),
        };
        out.extend(r.unwrap());
    }
    out.extend(src.flush_all(cfg));
    assert_eq!(src.stats().malformed, 0);
    out
}

fn params(o: &Observation) -> Vec<(String, String)> {
    o.parameters
        .iter()
        .map(|Parameter { name, value }| (name.clone(), value.clone()))
        .collect()
}

fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn item(uid: Option<u32>, msgid: &str, subject: &str, size: u64) -> Item {
    Item {
        uid,
        message_id: Some(msgid.into()),
        subject: Some(subject.into()),
        size: Some(size),
        ..Item::default()
    }
}

fn unresolved(uid: Option<u32>, why: &str) -> Item {
    Item {
        uid,
        unresolved: Some(why.into()),
        ..Item::default()
    }
}

#[test]
fn pop3_summary_counts_retrievals_and_names_deletions_from_mail_log() {
    let cfg = DovecotConfig::default();
    let out = feed(
        &cfg,
        &[
            In::E(auth("P0P", "pop3", "dan", "00.100000", "TLS")),
            In::L("Nov 22 13:50:00 pop3-login: Info: Login: user=<dan>, method=PLAIN, rip=192.0.2.9, lip=192.0.2.1, mpid=200, TLS, session=<P0P>".into()),
            In::L("Nov 22 13:50:01 pop3(dan)<200><P0P>: Info: expunge: box=INBOX, uid=7, msgid=<old@x.org>, size=10, from=a@x.org, subject=Old, flags=(\\Deleted)".into()),
            In::L("Nov 22 13:50:01 pop3(dan)<200><P0P>: Info: Disconnected: Logged out top=0/0, retr=2/680, del=1/2, size=680".into()),
        ],
    );
    let ops: Vec<Operation> = out.iter().map(|o| o.operation).collect();
    assert_eq!(
        ops,
        [
            Operation::MailboxLogin,
            Operation::MessageBind,
            Operation::HardDelete,
            Operation::MailboxLogout
        ]
    );
    assert_eq!(out[0].client.tls, Some(true), "auth transport TLS");
    assert_eq!(out[1].folder.as_deref(), Some("INBOX"));
    assert_eq!(
        out[1].items,
        vec![unresolved(None, POP3_RETR), unresolved(None, POP3_RETR)]
    );
    assert_eq!(params(&out[1]), p(&[("count", "2")]));
    assert_eq!(out[2].items, vec![item(Some(7), "<old@x.org>", "Old", 10)]);
    assert_eq!(params(&out[2]), p(&[("count", "1")]));
    assert!(out.iter().all(|o| o.actor == "dan" && o.mailbox == "dan"));
    // The summary line has whole seconds; the session's last event is earlier.
    assert_eq!(out[3].time, ts(&at("01")));
}

#[test]
fn imap_commands_the_story_does_not_use() {
    let cfg = DovecotConfig::default();
    let s = "S1";
    let c = |name: &str, args: &str, mb: Option<&str>, t: (&str, &str), reply: &str, r: &[&str]| {
        In::E(cmd(s, "carol", name, args, mb, t, reply, r))
    };
    let out = feed(
        &cfg,
        &[
            In::E(auth(s, "imap", "carol", "00.000100", "insecure")),
            c("ID", r#"("name" "Thunderbird" "version" "128.0")"#, None, ("00.000200", "00.000300"), "OK ID completed.", &["imap:cmd_id"]),
            c("SELECT", "Nope", None, ("00.001000", "00.001100"), "NO [NONEXISTENT] Mailbox doesn't exist: Nope", &["imap:cmd_select"]),
            c("SELECT", "INBOX", Some("INBOX"), ("00.002000", "00.002100"), "OK [READ-WRITE] Select completed", &["imap:cmd_select"]),
            c("COPY", "1:2 Archive", Some("INBOX"), ("00.003000", "00.003500"), "OK Copy completed.", &["imap:cmd_copy"]),
            In::L("Nov 22 13:50:00 imap(carol)<300><S1>: Info: copy from INBOX: box=Archive, uid=5, msgid=<a@x.org>, size=100, from=a@x.org, subject=Alpha, flags=()".into()),
            In::L("Nov 22 13:50:00 imap(carol)<300><S1>: Info: copy from INBOX: box=Archive, uid=6, msgid=<b@x.org>, size=200, from=b@x.org, subject=Beta, flags=()".into()),
            c("APPEND", "Sent (\\Seen) {12}", Some("Sent"), ("00.004000", "00.004500"), "OK [APPENDUID 1 9] Append completed.", &["imap:cmd_append"]),
            In::L("Nov 22 13:50:00 imap(carol)<300><S1>: Info: save: box=Sent, uid=9, msgid=<s@x.org>, size=12, from=carol@example.com, subject=Hi, flags=(\\Seen)".into()),
            c("DELETE", "Old", Some("Old"), ("00.005000", "00.005500"), "OK Delete completed.", &["imap:cmd_delete"]),
            In::L("Nov 22 13:50:00 imap(carol)<300><S1>: Info: Mailbox deleted: Old".into()),
            c("EXPUNGE", "", Some("INBOX"), ("00.006000", "00.006100"), "OK Expunge completed.", &["imap:cmd_expunge"]),
            c("UID STORE", "4,8 +FLAGS (\\Seen)", Some("INBOX"), ("00.007000", "00.007100"), "OK Store completed.", &["imap:cmd_store"]),
            c("NOOP", "", None, ("00.008000", "00.008100"), "OK NOOP completed.", &["imap:cmd_noop"]),
        ],
    );
    let ops: Vec<Operation> = out.iter().map(|o| o.operation).collect();
    assert_eq!(
        ops,
        [
            Operation::MailboxLogin,
            Operation::FolderBind,
            Operation::FolderBind,
            Operation::Copy,
            Operation::Create,
            Operation::FolderDelete,
            Operation::Update,
        ],
        "an EXPUNGE that removed nothing and a NOOP report nothing"
    );
    assert_eq!(out[0].client.tls, Some(false), "auth transport insecure");
    assert_eq!(out[0].client.name, None, "ID came after the login");
    assert!(out[1..]
        .iter()
        .all(|o| o.client.name.as_deref() == Some("Thunderbird 128.0")));
    assert_eq!(out[1].result, OperationResult::Failed);
    assert_eq!(
        out[1].reason.as_deref(),
        Some("NO [NONEXISTENT] Mailbox doesn't exist: Nope")
    );
    assert_eq!(out[1].folder.as_deref(), Some("Nope"));
    // COPY by sequence numbers: the source UIDs are unknown, the copies are named.
    assert_eq!(
        (
            out[3].folder.as_deref(),
            out[3].destination_folder.as_deref()
        ),
        (Some("INBOX"), Some("Archive"))
    );
    assert_eq!(
        out[3].items,
        vec![
            item(None, "<a@x.org>", "Alpha", 100),
            item(None, "<b@x.org>", "Beta", 200)
        ]
    );
    assert_eq!(params(&out[3]), p(&[("destination_uids", "5,6")]));
    assert_eq!(out[4].folder.as_deref(), Some("Sent"));
    assert_eq!(out[4].items, vec![item(Some(9), "<s@x.org>", "Hi", 12)]);
    assert_eq!(out[5].folder.as_deref(), Some("Old"));
    // UID STORE without log lines: the UIDs asked for, not resolved.
    assert_eq!(
        out[6].items,
        vec![
            unresolved(Some(4), NO_MESSAGE_ID),
            unresolved(Some(8), NO_MESSAGE_ID)
        ]
    );
    assert_eq!(params(&out[6]), p(&[("flags", "+FLAGS (\\Seen)")]));
}

#[test]
fn a_delegate_moving_into_his_own_trash_moves_out_of_the_owners_mailbox() {
    let cfg = DovecotConfig::default();
    let out = feed(
        &cfg,
        &[
            In::E(auth("D1", "imap", "dan", "00.000100", "trusted")),
            In::E(cmd("D1", "dan", "SELECT", "shared/carol/INBOX", Some("shared/carol/INBOX"), ("00.001000", "00.001100"), "OK Select completed", &[])),
            In::E(mail("mail_expunged", "D1", "dan", "shared/carol/INBOX", 3, "UID MOVE", "00.002050", &["imap:cmd_uid_move"])),
            In::E(cmd("D1", "dan", "UID MOVE", "3 Trash", Some("shared/carol/INBOX"), ("00.002000", "00.002100"), "OK Move completed.", &[])),
            In::L("Nov 22 13:50:00 imap(dan)<400><D1>: Info: copy from shared/carol/INBOX: box=Trash, uid=11, msgid=<c@x.org>, size=5, from=c@x.org, subject=Gamma, flags=()".into()),
        ],
    );
    let mv = out
        .iter()
        .find(|o| o.operation == Operation::Move)
        .expect("a Move, not MoveToDeletedItems");
    assert_eq!((mv.actor.as_str(), mv.mailbox.as_str()), ("dan", "carol"));
    assert_eq!(
        (mv.folder.as_deref(), mv.destination_folder.as_deref()),
        (Some("INBOX"), Some("Trash"))
    );
    assert_eq!(mv.items, vec![item(Some(3), "<c@x.org>", "Gamma", 5)]);
    assert_eq!(
        params(mv),
        p(&[("destination_mailbox", "dan"), ("destination_uids", "11")])
    );
}

#[test]
fn message_identities_follow_a_renamed_folder() {
    let cfg = DovecotConfig::default();
    let s = "R1";
    let out = feed(
        &cfg,
        &[
            In::E(auth(s, "imap", "carol", "00.000100", "TLS")),
            In::L("Nov 22 13:50:00 imap(carol)<500><R1>: Info: save: box=Projects, uid=3, msgid=<p@x.org>, size=30, from=p@x.org, subject=Plan, flags=()".into()),
            In::E(cmd(s, "carol", "RENAME", "Projects Zeus", None, ("01.000000", "01.000100"), "OK Rename completed.", &[])),
            In::L("Nov 22 13:50:01 imap(carol)<500><R1>: Info: Mailbox renamed: Projects -> Zeus".into()),
            In::E(cmd(s, "carol", "SELECT", "Zeus", Some("Zeus"), ("02.000000", "02.000100"), "OK Select completed", &[])),
            In::E(mail("mail_opened", s, "carol", "Zeus", 3, "UID FETCH", "03.000050", &["imap:cmd_fetch", "imap:fetch_body"])),
            In::E(cmd(s, "carol", "UID FETCH", "3 (BODY.PEEK[])", Some("Zeus"), ("03.000000", "03.000100"), "OK Fetch completed.", &["imap:cmd_fetch", "imap:fetch_body"])),
        ],
    );
    let read = out
        .iter()
        .find(|o| o.operation == Operation::MessageBind)
        .unwrap();
    assert_eq!(read.folder.as_deref(), Some("Zeus"));
    assert_eq!(read.items, vec![item(Some(3), "<p@x.org>", "Plan", 30)]);
    let rename = out
        .iter()
        .find(|o| o.operation == Operation::FolderRename)
        .unwrap();
    assert_eq!(
        (
            rename.folder.as_deref(),
            rename.destination_folder.as_deref()
        ),
        (Some("Projects"), Some("Zeus"))
    );
}

#[test]
fn events_written_by_transport_log_are_the_same_events() {
    // `transport = log`: the stats process writes each formatted event as an Info line.
    let cfg = DovecotConfig::default();
    let mut via_http = DovecotSource::new();
    let mut via_log = DovecotSource::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for input in events() {
        let Input::Event { text, reference } = input else {
            unreachable!()
        };
        a.extend(via_http.push_event_json(&cfg, &text, &reference).unwrap());
        let line = format!("Nov 22 13:49:12 stats: Info: {text}");
        b.extend(via_log.push_log_line(&cfg, &line, &reference).unwrap());
    }
    a.extend(via_http.flush_all(&cfg));
    b.extend(via_log.flush_all(&cfg));
    assert_eq!(a.len(), 27);
    assert_eq!(a, b);
    assert_eq!(via_log.stats().events, 40);
    assert_eq!(via_log.stats().log_lines, 40);
    // Bare JSON lines (`transport = file`) too, and syslog's form of the log line.
    let mut via_file = DovecotSource::new();
    let mut c = Vec::new();
    for (i, input) in events().into_iter().enumerate() {
        let Input::Event { text, reference } = input else {
            unreachable!()
        };
        let line = if i % 2 == 0 {
            text
        } else {
            format!("Nov 22 13:49:12 vm dovecot[812]: stats: {text}")
        };
        c.extend(via_file.push_log_line(&cfg, &line, &reference).unwrap());
    }
    c.extend(via_file.flush_all(&cfg));
    assert_eq!(a, c);
}

#[test]
fn unix_time_events_parse() {
    let cfg = DovecotConfig::default();
    let mut src = DovecotSource::new();
    let text = r#"{"event":"auth_request_finished","hostname":"vm","start_time":1795355352.281780,"end_time":1795355352.281944,"fields":{"success":"yes","mechanism":"PLAIN","transport":"trusted","service":"imap","session":"U1","remote_ip":"127.0.0.1","remote_port":52786,"original_user":"carol","user":"carol"}}"#;
    let out = src.push_event_json(&cfg, text, "u").unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].time,
        mailaudit_model::Timestamp(1_795_355_352_281_944)
    );
}

#[test]
fn a_master_user_in_the_log_alone() {
    // With auth_verbose, the auth process names the master user before the login line.
    let cfg = DovecotConfig::default();
    let out = feed(
        &cfg,
        &[
            In::L("Nov 22 13:49:12 auth: Info: passwd-file(postmaster,127.0.0.1,<fzwFvt1gSM5/AAAB>): Master user logging in as carol".into()),
            In::L("Nov 22 13:49:12 imap-login: Info: Login: user=<carol>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=16079, secured, session=<fzwFvt1gSM5/AAAB>".into()),
            In::L("Nov 22 13:49:12 imap(carol)<16079><fzwFvt1gSM5/AAAB>: Info: expunge: box=Trash, uid=1, msgid=<inv-2211@example.org>, size=336, from=frank@example.org, subject=Invoice 2211, flags=(\\Deleted \\Seen \\Recent)".into()),
            In::L("Nov 22 13:49:12 imap(carol)<16079><fzwFvt1gSM5/AAAB>: Info: Disconnected: Logged out in=104 out=1453".into()),
        ],
    );
    let ops: Vec<Operation> = out.iter().map(|o| o.operation).collect();
    assert_eq!(
        ops,
        [
            Operation::MailboxLogin,
            Operation::HardDelete,
            Operation::MailboxLogout
        ]
    );
    for o in &out {
        assert_eq!(
            (o.actor.as_str(), o.acting_as.as_deref(), o.mailbox.as_str()),
            ("postmaster", Some("carol"), "carol")
        );
    }
    assert_eq!(
        out[1].items,
        vec![item(Some(1), "<inv-2211@example.org>", "Invoice 2211", 336)]
    );
}

#[test]
fn a_sieve_redirect_shows_on_the_delivery() {
    let cfg = DovecotConfig::default();
    let delivery = json!({"event":"mail_delivery_finished","hostname":"vm","start_time":at("00.100000"),"end_time":at("00.200000"),
        "categories":["lmtp","smtp-server","service:lmtp","local-delivery"],
        "fields":{"protocol":"lmtp","remote_ip":"127.0.0.1","remote_port":44341,"session":"L1:T1","mail_from":"boss@example.com",
            "rcpt_to":"carol","user":"carol","message_id":"<f@example.com>","message_subject":"Salaries","message_size":900}})
    .to_string();
    let out = feed(
        &cfg,
        &[
            In::E(delivery),
            In::L("Nov 22 13:50:00 lmtp(carol)<600><L1:T1>: Info: sieve: msgid=<f@example.com>: forwarded to <exfil@evil.example>".into()),
            In::L("Nov 22 13:50:00 lmtp(carol)<600><L1:T1>: Info: save: box=INBOX, uid=12, msgid=<f@example.com>, size=900, from=boss@example.com, subject=Salaries, flags=()".into()),
            In::L("Nov 22 13:50:00 lmtp(carol)<600><L1:T1>: Info: sieve: msgid=<f@example.com>: stored mail into mailbox 'INBOX'".into()),
        ],
    );
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!(
        (d.operation, d.actor.as_str(), d.mailbox.as_str()),
        (Operation::Deliver, "carol", "carol")
    );
    assert_eq!(
        d.items,
        vec![item(Some(12), "<f@example.com>", "Salaries", 900)]
    );
    assert_eq!(
        params(d),
        p(&[
            ("envelope_sender", "boss@example.com"),
            ("forwarded_to", "exfil@evil.example")
        ])
    );
}

#[test]
fn a_sieve_redirect_in_the_log_alone() {
    // Without the event the sender is the From header as mail_log wrote it.
    let cfg = DovecotConfig::default();
    let out = feed(
        &cfg,
        &[
            In::L("Nov 22 13:50:00 lmtp(carol)<600><L2:T1>: Info: sieve: msgid=<g@example.com>: forwarded to <exfil@evil.example>".into()),
            In::L("Nov 22 13:50:00 lmtp(carol)<600><L2:T1>: Info: save: box=INBOX, uid=13, msgid=<g@example.com>, size=901, from=Boss <boss@example.com>, subject=Bonus, flags=()".into()),
            In::L("Nov 22 13:50:00 lmtp(carol)<600><L2:T1>: Info: sieve: msgid=<g@example.com>: stored mail into mailbox 'INBOX'".into()),
        ],
    );
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!(
        (d.operation, d.actor.as_str(), d.mailbox.as_str()),
        (Operation::Deliver, "carol", "carol")
    );
    assert_eq!(
        d.items,
        vec![item(Some(13), "<g@example.com>", "Bonus", 901)]
    );
    assert_eq!(
        params(d),
        p(&[
            ("envelope_sender", "boss@example.com"),
            ("forwarded_to", "exfil@evil.example")
        ])
    );
}
