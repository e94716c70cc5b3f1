//! Bad input never panics, is counted, and does not disturb the good input around it:
//! truncated and garbled samples, unknown events, garbage, lines of other formats.

mod common;

use common::*;
use mailaudit_model::{Observation, Timestamp};
use mailaudit_source_dovecot::{DovecotConfig, DovecotError, DovecotSource, SourceStats};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ODD: &[&str] = &[
    "",
    "\u{0}",
    "\n",
    "é",
    "€",
    "😀",
    "<",
    ">",
    "(",
    ")",
    "{",
    "}",
    "\"",
    "\\",
    ":",
    ": ",
    ", ",
    "=",
    "uid=",
    "box=",
    "<1><s>",
    "*",
    "9999999999999999999999",
    "-1",
    "\u{202e}",
    "Info: ",
];

/// A garbled copy of `s`: characters replaced, removed or inserted, ranges duplicated.
fn garble(s: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<String> = s.chars().map(String::from).collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if at < chars.len() => chars[at] = ODD[rng.below(ODD.len())].to_string(),
            1 if at < chars.len() => {
                let end = (at + rng.below(20)).min(chars.len());
                chars.drain(at..end);
            }
            2 => chars.insert(at, ODD[rng.below(ODD.len())].to_string()),
            _ => {
                let end = (at + rng.below(30)).min(chars.len());
                let dup: Vec<String> = chars[at..end].to_vec();
                for (k, c) in dup.into_iter().enumerate() {
                    chars.insert(end + k, c);
                }
            }
        }
    }
    chars.concat()
}

/// Every observation must pass the model's own checks (non-empty names, field limits).
fn assert_valid(out: &[Observation]) {
    let far = Timestamp(i64::MAX / 2);
    for o in out {
        if let Err(e) = o.check(far) {
            panic!(
                "invalid observation ({e}): {}",
                serde_json::to_string(o).unwrap()
            );
        }
    }
}

#[test]
fn truncated_and_garbled_samples_never_panic() {
    let cfg = DovecotConfig::default();
    let mut src = DovecotSource::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0u64;
    let mut out = Vec::new();
    let mut feed =
        |src: &mut DovecotSource, text: &str, as_event: bool, out: &mut Vec<Observation>| {
            let r = if as_event {
                src.push_event_json(&cfg, text, "fuzz")
            } else {
                src.push_log_line(&cfg, text, "fuzz")
            };
            match r {
                Ok(o) => out.extend(o),
                Err(_) => errors += 1,
            }
        };
    let samples: Vec<&str> = EVENTS.lines().chain(LOG.lines()).collect();
    let base = ts("2026-11-22T13:49:00Z");
    for (n, s) in samples.iter().enumerate() {
        // Every prefix, cut at each character boundary, both as an event and as a log line.
        let cuts: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        for cut in cuts {
            feed(&mut src, &s[..cut], true, &mut out);
            feed(&mut src, &s[..cut], false, &mut out);
        }
        for _ in 0..300 {
            let g = garble(s, &mut rng);
            feed(&mut src, &g, rng.below(2) == 0, &mut out);
        }
        let at = base.plus_secs(i64::try_from(n).unwrap() + i64::try_from(rng.below(30)).unwrap());
        out.extend(src.flush_due(&cfg, at));
    }
    // Garbled times can lie anywhere: flush far ahead, then everything.
    out.extend(src.flush_due(&cfg, Timestamp(i64::MAX)));
    out.extend(src.flush_all(&cfg));
    assert_valid(&out);
    let stats = src.stats();
    assert_eq!(stats.malformed, errors, "every error is counted once");
    assert_eq!(stats.observations, out.len() as u64);
    assert!(
        stats.events > 0 && stats.ignored > 0 && stats.malformed > 0,
        "{stats:?}"
    );
}

enum Junk {
    Event(&'static str),
    Line(&'static str),
}

/// Bad or irrelevant inputs, and whether each is an error (true) or merely ignored.
const JUNK: &[(Junk, bool)] = &[
    // Truncated exporter bodies.
    (Junk::Event(r#"{"event":"imap_command_finished","hostname":"vm","start_time":"2026-11-22T13:49"#), true),
    (Junk::Event(r#"{"event":"mail_opened","fields":{"uid":1,"#), true),
    (Junk::Event(""), true),
    // JSON, but not an event.
    (Junk::Event(r#"{"fields":{}}"#), true),
    (Junk::Event("[]"), true),
    (Junk::Event(r#"{"event":"imap_command_finished"}"#), true),
    (Junk::Event(r#"{"event":"x","end_time":"not a time"}"#), true),
    // An event this source has no use for (its time is before the story: no year effects).
    (Junk::Event(r#"{"event":"push_notification_finished","hostname":"vm","end_time":"2026-11-22T13:49:00Z","fields":{"user":"carol","session":"zz"}}"#), false),
    (Junk::Event(r#"{"event":"dict_lookup_finished","end_time":1795355340.0,"fields":{}}"#), false),
    // Garbage lines.
    (Junk::Line(""), false),
    (Junk::Line("garbage"), false),
    (Junk::Line("\u{0}\u{1}\u{7f}binary"), false),
    (Junk::Line("Nov 22 13:49:12"), false),
    (Junk::Line("Nov 22 13:49:12 "), false),
    (Junk::Line("Nov 22 99:99:99 imap-login: Info: Login: user=<carol>"), false),
    // An exported event written by transport=log, cut short: it claims to be an event.
    (Junk::Line(r#"Nov 22 13:49:12 stats: Info: {"event":"imap_command_finished","fields":"#), true),
    // Other formats: tab-text exporter, levels other than Info, a pre-login abort.
    (Junk::Line("Nov 22 13:49:12 stats: Info: event:imap_command_finished\thostname:vm\tfields:x"), false),
    (Junk::Line("Nov 22 13:49:12 vm dovecot: master: Warning: Killed with signal 15 (by pid=1 uid=0 code=kill)"), false),
    (Junk::Line("Nov 22 13:49:12 imap(carol)<16055><drIEvt1gMs5/AAAB>: Error: Mailbox INBOX: Permission denied"), false),
    (Junk::Line("2026-11-22 13:49:12 imap-login: Info: Aborted login (no auth attempts in 0 secs): user=<>, rip=192.0.2.1, lip=192.0.2.2, session=<QQQQ>"), false),
    (Junk::Line("2026-11-22T13:49:12.5+00:00 vm dovecot[77]: auth: Info: passwd-file(carol,127.0.0.1,<x>): Password mismatch"), false),
];

#[test]
fn bad_inputs_between_good_ones_change_nothing_but_the_counters() {
    let cfg = DovecotConfig::default();
    let inputs = merged(Ties::EventsFirst);
    let (clean, clean_src) = run_batch(&cfg, &inputs, Ties::EventsFirst);

    let mut src = DovecotSource::new();
    let mut out = Vec::new();
    let (mut errors, mut ignored, mut events, mut lines) = (0u64, 0u64, 0u64, 0u64);
    for input in &inputs {
        for (junk, is_error) in JUNK {
            let r = match junk {
                Junk::Event(text) => src.push_event_json(&cfg, text, "junk"),
                Junk::Line(text) => {
                    lines += 1;
                    src.push_log_line(&cfg, text, "junk")
                }
            };
            match r {
                Ok(o) => {
                    assert!(!is_error, "{:?} should have been refused", text_of(junk));
                    assert!(o.is_empty(), "junk produced {o:?}");
                    ignored += 1;
                    if matches!(junk, Junk::Event(_)) {
                        events += 1;
                    }
                }
                Err(e) => {
                    assert!(
                        is_error,
                        "{:?} should have been ignored: {e}",
                        text_of(junk)
                    );
                    assert!(
                        e.to_string().starts_with("junk: "),
                        "the error names where: {e}"
                    );
                    errors += 1;
                }
            }
        }
        out.extend(push(&mut src, &cfg, input));
        out.extend(src.flush_due(&cfg, sort_time(input, Ties::EventsFirst)));
    }
    out.extend(src.flush_all(&cfg));
    assert_eq!(out, clean, "the story is unchanged by the junk around it");
    let c = clean_src.stats();
    assert_eq!(
        src.stats(),
        SourceStats {
            events: c.events + events,
            log_lines: c.log_lines + lines,
            observations: c.observations,
            ignored: c.ignored + ignored,
            malformed: c.malformed + errors,
        }
    );
}

fn text_of(j: &Junk) -> &'static str {
    match j {
        Junk::Event(t) | Junk::Line(t) => t,
    }
}

#[test]
fn errors_name_what_and_where() {
    let cfg = DovecotConfig::default();
    let mut src = DovecotSource::new();
    match src.push_event_json(&cfg, r#"{"event":"x","#, "http:12345") {
        Err(DovecotError::Json {
            reference,
            line,
            column,
            ..
        }) => {
            assert_eq!((reference.as_str(), line), ("http:12345", 1));
            assert!(column > 0);
        }
        other => panic!("{other:?}"),
    }
    match src.push_log_line(
        &cfg,
        r#"Nov 22 13:49:12 stats: Info: {"fields":{}}"#,
        "dovecot.log:17",
    ) {
        Err(e @ DovecotError::NotAnEvent { .. }) => {
            assert_eq!(
                e.to_string(),
                "dovecot.log:17: not a Dovecot event: no \"event\" field"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(src.stats().malformed, 2);
}

#[test]
fn one_session_cannot_hold_unbounded_state() {
    let cfg = DovecotConfig::default();
    let mut src = DovecotSource::new();
    // A log-only session expunging 50,010 messages within one window: the oldest lines beyond
    // the cap are settled early, nothing is lost.
    let n = 50_010u32;
    let mut out = Vec::new();
    for uid in 1..=n {
        let line = format!(
            "Nov 22 13:49:12 imap(carol)<9><CAP>: Info: expunge: box=INBOX, uid={uid}, msgid=<m{uid}@x.org>, size=1, from=a@x.org, subject=S, flags=()"
        );
        out.extend(src.push_log_line(&cfg, &line, "cap").unwrap());
    }
    let state = serde_json::to_value(&src).unwrap();
    let lines = state["state"]["sessions"]["CAP"]["lines"]
        .as_array()
        .unwrap()
        .len();
    assert!(lines <= 50_000, "{lines} lines buffered");
    out.extend(src.flush_all(&cfg));
    assert!(out
        .iter()
        .all(|o| o.operation == mailaudit_model::Operation::HardDelete));
    let uids: Vec<u32> = out
        .iter()
        .flat_map(|o| o.items.iter().filter_map(|i| i.uid))
        .collect();
    assert_eq!(
        uids,
        (1..=n).collect::<Vec<_>>(),
        "every message once, in order"
    );

    // 10,010 body fetches that never complete (no UIDs ever arrive): the oldest are emitted.
    let mut src = DovecotSource::new();
    let mut early = 0;
    for k in 0..10_010u32 {
        let t = format!(
            "2026-11-22T13:49:{:02}.{:06}Z",
            12 + k / 1_000_000,
            k % 1_000_000
        );
        let text = format!(
            r#"{{"event":"imap_command_finished","hostname":"vm","start_time":"{t}","end_time":"{t}","fields":{{"user":"carol","session":"F","cmd_name":"FETCH","cmd_args":"1:* (BODY[])","tagged_reply_state":"OK","reason_code":["imap:cmd_fetch","imap:fetch_body"],"mailbox":"INBOX"}}}}"#
        );
        early += src.push_event_json(&cfg, &text, "cap").unwrap().len();
    }
    assert_eq!(early, 10, "the drafts beyond the cap were emitted at once");
    assert_eq!(src.flush_all(&cfg).len(), 10_000);
}
