//! The README's story, recorded from a real Dovecot 2.3.19 (tests/fixtures, copied from
//! samples/dovecot-2.3.19), fed through the source three ways: events and log interleaved
//! (both tie orders), events only (the http-post path), log only. Every expected observation
//! is written out field by field; nothing else may be emitted.

mod common;

use common::*;
use mailaudit_model::{Observation, Operation};
use mailaudit_source_dovecot::{DovecotConfig, SourceStats};

const NO_MESSAGE_ID: &str = "Dovecot logged no Message-ID for this message: its events name only the UID, and no mail_log line (save, copy, flag_change or expunge, with mail_log_fields msgid subject) about this UID was seen; see docs/dovecot.md";
const SET_1_UNKNOWN: &str = "Dovecot's events do not say which messages the set 1 named, and no mail_log line identified them; see docs/dovecot.md";
const NO_FLAG_CHANGE_LOGGED: &str = "Dovecot logged no flag change for the set 1: no flag changed (already set, or the folder's ACL does not allow it), or mail_log_events lacks flag_change/delete/undelete; see docs/dovecot.md";

const LMTP: &str = "cYtjD9jyAmutPgAAg+zDdQ";
const LMTP_T2: &str = "cYtjD9jyAmutPgAAg+zDdQ:T2";
const CAROL: &str = "drIEvt1gMs5/AAAB";
const DAN: &str = "1wkFvt1gPs5/AAAB";
const ADMIN: &str = "fzwFvt1gSM5/AAAB";
const WRONG_PW: &str = "3DMGvt1gUM5/AAAB";
const POP3: &str = "tuIkvt1gmrZ/AAAB";
const SIEVE: &str = "y0Jivt1gjIl/AAAB";

fn ev(n: u32) -> String {
    format!("exporter-http-post.jsonl:{n}")
}

fn log(n: u32) -> String {
    format!("dovecot.log:{n}")
}

fn t(s: &str) -> String {
    format!("2026-11-22T13:49:{s}Z")
}

/// The story with events and log: everything the log adds (UIDs of deliveries, Message-IDs
/// and subjects, the new UID in Trash, the POP3 and ManageSieve logouts) is resolved.
fn expected_full() -> Vec<Observation> {
    use Operation::*;
    let imap = |o: Observation, port, session| o.client(Some(port), "imap", session, Some(false));
    vec![
        // 1. Two deliveries over LMTP, done to carol's mailbox (she is the actor; the
        //    envelope sender is a parameter); the UID comes from mail_log's save line.
        obs(&t("12.270208"), Deliver, "carol", "carol", &ev(2))
            .param("envelope_sender", "erin@example.org")
            .folder("INBOX")
            .item(1, "<board-7@example.org>", "Board minutes", 332)
            .client(Some(44340), "lmtp", LMTP, None),
        obs(&t("12.273919"), Deliver, "carol", "carol", &ev(4))
            .param("envelope_sender", "frank@example.org")
            .folder("INBOX")
            .item(2, "<inv-2211@example.org>", "Invoice 2211", 336)
            .client(Some(44340), "lmtp", LMTP_T2, None),
        // 2. carol, owner.
        imap(
            obs(&t("12.281944"), MailboxLogin, "carol", "carol", &ev(6)),
            52786,
            CAROL,
        )
        .param("mechanism", "PLAIN"),
        imap(
            obs(
                &t("12.288118"),
                UpdateFolderPermissions,
                "carol",
                "carol",
                &ev(7),
            ),
            52786,
            CAROL,
        )
        .folder("INBOX")
        .param("identifier", "dan")
        .param("rights", "lrs"),
        imap(
            obs(&t("12.288983"), FolderBind, "carol", "carol", &ev(8)),
            52786,
            CAROL,
        )
        .folder("INBOX"),
        imap(
            obs(&t("12.289528"), MessageBind, "carol", "carol", &ev(10)),
            52786,
            CAROL,
        )
        .folder("INBOX")
        .item(1, "<board-7@example.org>", "Board minutes", 332),
        // (FETCH 1:2 (ENVELOPE) reads headers only: no MessageBind.)
        imap(
            obs(
                &t("12.295073"),
                MoveToDeletedItems,
                "carol",
                "carol",
                &ev(16),
            ),
            52786,
            CAROL,
        )
        .folder("INBOX")
        .dest("Trash")
        .item(2, "<inv-2211@example.org>", "Invoice 2211", 336)
        .param("destination_uids", "1"),
        imap(
            obs(&t("12.297043"), FolderCreate, "carol", "carol", &ev(17)),
            52786,
            CAROL,
        )
        .folder("Projects"),
        imap(
            obs(&t("12.297739"), FolderRename, "carol", "carol", &ev(18)),
            52786,
            CAROL,
        )
        .folder("Projects")
        .dest("Archive"),
        imap(
            obs(
                &t("12.298189"),
                SearchQueryInitiated,
                "carol",
                "carol",
                &ev(19),
            ),
            52786,
            CAROL,
        )
        .folder("INBOX")
        .param("query", "SUBJECT board"),
        imap(
            obs(&t("12.299679"), MailboxLogout, "carol", "carol", &ev(20)),
            52786,
            CAROL,
        ),
        // 3. dan, delegate, in shared/carol/INBOX: the mailbox is carol's.
        imap(
            obs(&t("12.304251"), MailboxLogin, "dan", "dan", &ev(21)),
            52798,
            DAN,
        )
        .param("mechanism", "PLAIN"),
        imap(
            obs(&t("12.310512"), FolderBind, "dan", "carol", &ev(22)),
            52798,
            DAN,
        )
        .folder("INBOX"),
        imap(
            obs(&t("12.311317"), MessageBind, "dan", "carol", &ev(23)),
            52798,
            DAN,
        )
        .folder("INBOX")
        .item(1, "<board-7@example.org>", "Board minutes", 332),
        // dan has no `w` right: Dovecot answers OK but changes nothing and logs no
        // flag_change. The attempt is recorded; which message it named is unknown.
        imap(
            obs(&t("12.311719"), Update, "dan", "carol", &ev(26)),
            52798,
            DAN,
        )
        .folder("INBOX")
        .unresolved(None, NO_FLAG_CHANGE_LOGGED)
        .param("flags", "+FLAGS (\\Flagged)"),
        imap(
            obs(&t("12.311719"), MailboxLogout, "dan", "dan", &ev(25)),
            52798,
            DAN,
        ),
        // 4. postmaster, master user, as carol.
        imap(
            obs(
                &t("12.364104"),
                MailboxLogin,
                "postmaster",
                "carol",
                &ev(27),
            ),
            52808,
            ADMIN,
        )
        .acting_as("carol")
        .param("mechanism", "PLAIN"),
        imap(
            obs(&t("12.370341"), FolderBind, "postmaster", "carol", &ev(28)),
            52808,
            ADMIN,
        )
        .acting_as("carol")
        .folder("Trash"),
        imap(
            obs(&t("12.371314"), MessageBind, "postmaster", "carol", &ev(30)),
            52808,
            ADMIN,
        )
        .acting_as("carol")
        .folder("Trash")
        .item(1, "<inv-2211@example.org>", "Invoice 2211", 336),
        imap(
            obs(&t("12.372348"), SoftDelete, "postmaster", "carol", &ev(31)),
            52808,
            ADMIN,
        )
        .acting_as("carol")
        .folder("Trash")
        .item(1, "<inv-2211@example.org>", "Invoice 2211", 336)
        .param("flags", "+FLAGS (\\Deleted)"),
        imap(
            obs(&t("12.373557"), HardDelete, "postmaster", "carol", &ev(34)),
            52808,
            ADMIN,
        )
        .acting_as("carol")
        .folder("Trash")
        .item(1, "<inv-2211@example.org>", "Invoice 2211", 336),
        imap(
            obs(
                &t("12.374264"),
                MailboxLogout,
                "postmaster",
                "carol",
                &ev(35),
            ),
            52808,
            ADMIN,
        )
        .acting_as("carol"),
        // 5. A wrong password (the event has no `success`), and dan over POP3.
        imap(
            obs(&t("12.380535"), MailboxLogin, "carol", "carol", &ev(36)),
            52816,
            WRONG_PW,
        )
        .failed("authentication failed")
        .param("mechanism", "PLAIN"),
        obs(&t("18.395848"), MailboxLogin, "dan", "dan", &ev(37))
            .client(Some(46746), "pop3", POP3, Some(false))
            .param("mechanism", "PLAIN"),
        // retr=0, del=0: only the logout. The line has whole seconds; it is placed at the
        // session's last event.
        obs(&t("18.395848"), MailboxLogout, "dan", "dan", &log(25)).client(
            Some(46746),
            "pop3",
            POP3,
            Some(false),
        ),
        // 6. carol over ManageSieve.
        obs(&t("18.413758"), MailboxLogin, "carol", "carol", &ev(38))
            .client(Some(35212), "managesieve", SIEVE, Some(false))
            .param("mechanism", "PLAIN"),
        obs(&t("18.420861"), UpdateInboxRules, "carol", "carol", &ev(39))
            .client(Some(35212), "managesieve", SIEVE, Some(false))
            .param("script_name", "forward")
            .param("command", "PUTSCRIPT"),
        obs(&t("18.421579"), UpdateInboxRules, "carol", "carol", &ev(40))
            .client(Some(35212), "managesieve", SIEVE, Some(false))
            .param("script_name", "forward")
            .param("command", "SETACTIVE"),
        obs(&t("18.421579"), MailboxLogout, "carol", "carol", &log(27)).client(
            Some(35212),
            "managesieve",
            SIEVE,
            Some(false),
        ),
    ]
}

/// The same story from the events alone. What the log would have added is missing, and
/// each gap says why:
/// - deliveries have no UID (mail_delivery_finished carries none);
/// - MessageBind, MoveToDeletedItems and HardDelete items have UIDs but no Message-ID or
///   Subject (`unresolved`), and the move no `destination_uids`;
/// - STOREs by sequence number name no message at all (`unresolved`, no UID);
/// - POP3 and ManageSieve sessions have no logout (Dovecot 2.3.19 exports no event for it).
fn expected_http() -> Vec<Observation> {
    let mut v = expected_full();
    v.retain(|o| {
        o.provenance
            .reference
            .as_deref()
            .is_some_and(|r| r.starts_with("exporter"))
    });
    for o in &mut v {
        let r = o.provenance.reference.clone().unwrap_or_default();
        let n: u32 = r.rsplit(':').next().unwrap().parse().unwrap();
        match n {
            2 | 4 => o.items[0].uid = None,
            10 | 23 | 30 | 34 => {
                let uid = o.items[0].uid;
                o.items = Vec::new();
                *o = o.clone().unresolved(uid, NO_MESSAGE_ID);
            }
            16 => {
                o.items = Vec::new();
                o.parameters = Vec::new();
                *o = o.clone().unresolved(Some(2), NO_MESSAGE_ID);
            }
            26 | 31 => {
                o.items = Vec::new();
                *o = o.clone().unresolved(None, SET_1_UNKNOWN);
            }
            _ => {}
        }
    }
    v
}

fn order(v: Vec<Observation>) -> Vec<Observation> {
    let mut v = sorted(v);
    // Among equal times a logout goes last.
    v.sort_by_key(|o| (o.time, o.operation == Operation::MailboxLogout));
    v
}

#[test]
fn events_and_log_interleaved_in_batch_mode() {
    let cfg = DovecotConfig::default();
    let (out, src) = run_batch(&cfg, &merged(Ties::EventsFirst), Ties::EventsFirst);
    assert_session_order(&out);
    assert_same(&order(out), &order(expected_full()), "events+log, batch");
    assert_eq!(
        src.stats(),
        SourceStats {
            events: 40,
            log_lines: 28,
            observations: 29,
            // 6 events: 2 smtp_server_transaction_finished, LMTP's own mail_opened, the
            // ENVELOPE fetch and its 2 header-only mail_opened; 3 lines: master start-up, LMTP
            // connect and disconnect; 4 lines no command needed: LMTP's and Trash's automatic
            // "Mailbox created", and the two \Seen flag_change lines that came after their
            // FETCH had been resolved from earlier lines.
            ignored: 13,
            malformed: 0,
        }
    );
}

#[test]
fn log_lines_before_events_give_the_same_story() {
    // Lines written at the start of their second, before the events of that second, and no
    // flush until the end: the events find their lines already waiting.
    let cfg = DovecotConfig::default();
    let (out, src) = run_then_flush(&cfg, &merged(Ties::LinesFirst));
    assert_session_order(&out);
    assert_same(&order(out), &order(expected_full()), "log first");
    assert_eq!(src.stats().observations, 29);
    assert_eq!(src.stats().malformed, 0);
}

#[test]
fn events_only_the_http_post_path() {
    let cfg = DovecotConfig::default();
    let (out, src) = run_batch(&cfg, &events(), Ties::EventsFirst);
    assert_session_order(&out);
    assert_same(&order(out), &order(expected_http()), "events only");
    assert_eq!(
        src.stats(),
        SourceStats {
            events: 40,
            log_lines: 0,
            observations: 27,
            ignored: 6,
            malformed: 0,
        }
    );
}

/// The log alone (mail_log, no event exporter): what Dovecot's log says, one record per
/// command-shaped run of lines. Blind spots, by Dovecot's design: reads (no MessageBind but
/// the \Seen flag change), SETACL and SEARCH, the master user (postmaster's session shows as
/// carol's own), ManageSieve script changes, ports.
#[test]
fn log_only() {
    use Operation::*;
    let cfg = DovecotConfig::default();
    let (out, src) = run_then_flush(&cfg, &lines());
    // Year-less stamps take their year from the clock here (no events): compare in 2026.
    let out: Vec<Observation> = out
        .into_iter()
        .map(|mut o| {
            let s = o.time.to_rfc3339();
            o.time = ts(&format!("2026{}", &s[4..]));
            o
        })
        .collect();
    let imap = |o: Observation, session| o.client(None, "imap", session, Some(false)).no_host();
    let lmtp = |o: Observation, session| o.client(None, "lmtp", session, None).no_ip().no_host();
    let at12 = t("12");
    let expected = vec![
        lmtp(
            obs(&at12, Deliver, "carol", "carol", &log(4))
                .param("envelope_sender", "erin@example.org"),
            LMTP,
        )
        .folder("INBOX")
        .item(1, "<board-7@example.org>", "Board minutes", 332),
        lmtp(
            obs(&at12, Deliver, "carol", "carol", &log(6))
                .param("envelope_sender", "frank@example.org"),
            LMTP_T2,
        )
        .folder("INBOX")
        .item(2, "<inv-2211@example.org>", "Invoice 2211", 336),
        imap(obs(&at12, MailboxLogin, "carol", "carol", &log(9)), CAROL)
            .param("mechanism", "PLAIN"),
        imap(obs(&at12, Update, "carol", "carol", &log(10)), CAROL)
            .folder("INBOX")
            .item(1, "<board-7@example.org>", "Board minutes", 332)
            .param("flags_after", "(\\Seen \\Recent)"),
        imap(obs(&at12, FolderCreate, "carol", "carol", &log(11)), CAROL).folder("Trash"),
        imap(
            obs(&at12, MoveToDeletedItems, "carol", "carol", &log(12)),
            CAROL,
        )
        .folder("INBOX")
        .dest("Trash")
        .item(2, "<inv-2211@example.org>", "Invoice 2211", 336)
        .param("destination_uids", "1"),
        imap(obs(&at12, FolderCreate, "carol", "carol", &log(14)), CAROL).folder("Projects"),
        imap(obs(&at12, FolderRename, "carol", "carol", &log(15)), CAROL)
            .folder("Projects")
            .dest("Archive"),
        imap(obs(&at12, MailboxLogout, "carol", "carol", &log(16)), CAROL),
        imap(obs(&at12, MailboxLogin, "dan", "dan", &log(17)), DAN).param("mechanism", "PLAIN"),
        imap(obs(&at12, MailboxLogout, "dan", "dan", &log(18)), DAN),
        imap(obs(&at12, MailboxLogin, "carol", "carol", &log(19)), ADMIN)
            .param("mechanism", "PLAIN"),
        imap(obs(&at12, Update, "carol", "carol", &log(20)), ADMIN)
            .folder("Trash")
            .item(1, "<inv-2211@example.org>", "Invoice 2211", 336)
            .param("flags_after", "(\\Seen \\Recent)"),
        imap(obs(&at12, SoftDelete, "carol", "carol", &log(21)), ADMIN)
            .folder("Trash")
            .item(1, "<inv-2211@example.org>", "Invoice 2211", 336),
        imap(obs(&at12, HardDelete, "carol", "carol", &log(22)), ADMIN)
            .folder("Trash")
            .item(1, "<inv-2211@example.org>", "Invoice 2211", 336),
        imap(obs(&at12, MailboxLogout, "carol", "carol", &log(23)), ADMIN),
        obs(&t("18"), MailboxLogin, "dan", "dan", &log(24))
            .client(None, "pop3", POP3, Some(false))
            .no_host()
            .param("mechanism", "PLAIN"),
        obs(&t("18"), MailboxLogout, "dan", "dan", &log(25))
            .client(None, "pop3", POP3, Some(false))
            .no_host(),
        obs(&t("18"), MailboxLogin, "carol", "carol", &log(26))
            .client(None, "managesieve", SIEVE, Some(false))
            .no_host()
            .param("mechanism", "PLAIN"),
        obs(&t("18"), MailboxLogout, "carol", "carol", &log(27))
            .client(None, "managesieve", SIEVE, Some(false))
            .no_host(),
        imap(
            obs(&t("21"), MailboxLogin, "carol", "carol", &log(28)),
            WRONG_PW,
        )
        .failed("authentication failed")
        .param("mechanism", "PLAIN")
        .param("attempts", "1"),
    ];
    assert_session_order(&out);
    assert_same(&order(out), &order(expected), "log only");
    assert_eq!(
        src.stats(),
        SourceStats {
            events: 0,
            log_lines: 28,
            observations: 21,
            // master start-up, LMTP connect and disconnect, LMTP's automatic INBOX creation.
            ignored: 4,
            malformed: 0,
        }
    );
}

#[test]
fn default_domain_qualifies_every_login_but_not_senders() {
    let cfg = DovecotConfig {
        default_domain: Some("example.com".into()),
        ..DovecotConfig::default()
    };
    let (out, _) = run_batch(&cfg, &merged(Ties::EventsFirst), Ties::EventsFirst);
    let qualify = |s: &str| {
        if s.contains('@') {
            s.to_string()
        } else {
            format!("{s}@example.com")
        }
    };
    let expected: Vec<Observation> = expected_full()
        .into_iter()
        .map(|mut o| {
            o.mailbox = qualify(&o.mailbox);
            o.actor = qualify(&o.actor);
            o.acting_as = o.acting_as.as_deref().map(qualify);
            o
        })
        .collect();
    assert_same(&order(out), &order(expected), "default_domain");
}

#[test]
fn push_returns_only_what_is_complete_and_flush_all_the_rest() {
    // Events only, no flush_due: whatever push returned was complete on arrival (logins,
    // folder operations, logouts); the rest waits for its window and comes from flush_all.
    let cfg = DovecotConfig::default();
    let mut src = mailaudit_source_dovecot::DovecotSource::new();
    let mut pushed = Vec::new();
    for input in events() {
        pushed.extend(push(&mut src, &cfg, &input));
    }
    let flushed = src.flush_all(&cfg);
    let waited: Vec<Operation> = flushed.iter().map(|o| o.operation).collect();
    assert!(pushed.iter().all(|o| o.items.is_empty()), "{pushed:#?}");
    assert!(waited.contains(&Operation::MessageBind) && waited.contains(&Operation::Deliver));
    let mut all = pushed;
    all.extend(flushed);
    assert_same(&order(all), &order(expected_http()), "push + flush_all");
    assert!(
        src.flush_all(&cfg).is_empty(),
        "flush_all twice emits nothing twice"
    );
}
