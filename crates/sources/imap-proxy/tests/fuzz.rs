//! Property tests over the framer and the session state machine: random and mutated IMAP
//! streams, split at random points, must never panic, and the framer's boundaries must not
//! depend on how the bytes were split. Bounded (a few hundred cases) so CI runs it in seconds.

use mailaudit_model::Timestamp;
use mailaudit_source_imap_proxy::{
    ConnInfo, FrameEvent, FrameLimits, Framer, HeadAction, ProxyConfig, Session,
};
use proptest::prelude::*;
use std::sync::Arc;

const CLIENT: &[&[u8]] = &[
    b"a1 LOGIN alice pw\r\n",
    b"a2 AUTHENTICATE PLAIN\r\n",
    b"Y2Fyb2wAYWRtaW4AcHc=\r\n",
    b"a3 SELECT \"shared/bob/INBOX\"\r\n",
    b"a4 UID FETCH 1:3 (UID ENVELOPE BODY.PEEK[])\r\n",
    b"a5 APPEND INBOX {20}\r\nSubject: hi\r\n\r\nbody..\r\n",
    b"a6 APPEND INBOX ~{5+}\r\nab\0cd\r\n",
    b"a7 UID MOVE 1:* Trash\r\n",
    b"a8 STORE 1 +FLAGS (\\Deleted)\r\n",
    b"a9 EXPUNGE\r\n",
    b"b1 IDLE\r\n",
    b"DONE\r\n",
    b"b2 SETACL INBOX bob lr\r\n",
    b"b3 SEARCH CHARSET UTF-8 SUBJECT {4+}\r\nt\xc3\xa4x\r\n",
    b"b4 LOGOUT\r\n",
];

const SERVER: &[&[u8]] = &[
    b"* OK [CAPABILITY IMAP4rev1] ready\r\n",
    b"a1 OK Logged in\r\n",
    b"+ \r\n",
    b"a2 OK [CAPABILITY IMAP4rev1] Logged in\r\n",
    b"* NAMESPACE ((\"\" \"/\")) ((\"shared/\" \"/\")) NIL\r\n",
    b"* 3 EXISTS\r\n",
    b"a3 OK [READ-ONLY] done\r\n",
    b"* 1 FETCH (UID 1 BODY[] {31}\r\nSubject: x\r\nMessage-ID: <m@x>\r\n\r\n)\r\n",
    b"* 2 FETCH (UID 2 ENVELOPE (NIL \"s\" NIL NIL NIL NIL NIL NIL NIL \"<id@x>\"))\r\n",
    b"a4 OK fetched\r\n",
    b"a5 OK [APPENDUID 1 9] done\r\n",
    b"* OK [COPYUID 7 1:2 3:4] moved\r\n",
    b"* 1 EXPUNGE\r\n",
    b"* VANISHED 1:2\r\n",
    b"a7 NO [TRYCREATE] no\r\n",
    b"a9 BAD what\r\n",
    b"* BYE bye\r\n",
];

fn stream(parts: &[&[u8]], picks: &[usize]) -> Vec<u8> {
    picks
        .iter()
        .flat_map(|&i| parts[i % parts.len()].iter().copied())
        .collect()
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, byte, how) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = pos % bytes.len();
        match how % 4 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            // Digits and braces make literal announcements appear and vanish.
            _ => bytes.insert(at, b"{}0123456789+~\r\n"[usize::from(byte) % 16]),
        }
    }
    bytes
}

/// Frames `bytes` cut at `cuts`; returns the messages (end offsets in the whole stream) or
/// the offset of the error.
fn frame(bytes: &[u8], cuts: &[usize], limits: FrameLimits) -> (Vec<(usize, Vec<u8>)>, bool) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    let mut f = Framer::new(limits);
    let mut out = Vec::new();
    let mut ev = Vec::new();
    for w in points.windows(2) {
        ev.clear();
        if f.push(&bytes[w[0]..w[1]], &mut ev).is_err() {
            return (out, true);
        }
        for e in ev.drain(..) {
            if let FrameEvent::Message { end, copy, .. } = e {
                out.push((w[0] + end, copy));
            }
        }
    }
    (out, false)
}

fn session() -> Session {
    Session::new(
        Arc::new(ProxyConfig::default()),
        ConnInfo {
            id: "fuzz".into(),
            ..ConnInfo::default()
        },
    )
}

fn now() -> Timestamp {
    "2026-11-24T12:00:00Z".parse().expect("a time")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn framing_does_not_depend_on_where_the_stream_is_cut(
        picks in prop::collection::vec(0usize..64, 0..24),
        edits in prop::collection::vec((0usize..4096, any::<u8>(), any::<u8>()), 0..6),
        cuts in prop::collection::vec(0usize..8192, 0..12),
        keep in 1usize..64,
        header_only in any::<bool>(),
    ) {
        let bytes = mutate(stream(CLIENT, &picks), &edits);
        let limits = FrameLimits { max_line: 1 << 16, max_literal: 1 << 20, keep_literal: keep, header_only };
        let whole = frame(&bytes, &[], limits);
        let split = frame(&bytes, &cuts, limits);
        prop_assert_eq!(&whole, &split);
        // Boundaries are increasing and within the stream.
        let mut last = 0;
        for (end, _) in &whole.0 {
            prop_assert!(*end > last || (*end == last && last == 0));
            prop_assert!(*end <= bytes.len());
            last = *end;
        }
    }

    #[test]
    fn the_session_never_panics_on_any_conversation(
        client in prop::collection::vec(0usize..64, 0..20),
        server in prop::collection::vec(0usize..64, 0..20),
        edits in prop::collection::vec((0usize..4096, any::<u8>(), any::<u8>()), 0..8),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let limits = FrameLimits { max_line: 1 << 16, max_literal: 1 << 20, keep_literal: 48, header_only: true };
        let mut s = session();
        let mut c = mutate(stream(CLIENT, &client), &edits);
        c.extend_from_slice(&noise);
        let sv = mutate(stream(SERVER, &server), &edits);
        let (cmsgs, _) = frame(&c, &[], limits);
        let (smsgs, _) = frame(&sv, &[], limits);
        let mut si = smsgs.into_iter();
        for (_, copy) in cmsgs {
            match s.client_head(&copy, now()) {
                HeadAction::Hold { intent, .. } => {
                    prop_assert!(!intent.actor.is_empty() && !intent.mailbox.is_empty());
                    prop_assert!(intent.check(now()).is_ok());
                }
                HeadAction::Forward | HeadAction::Refuse { .. } => {}
            }
            s.client_message(&copy, 0, now());
            if let Some((_, reply)) = si.next() {
                for c in s.server_message(&reply, now()) {
                    if let Some(o) = c.observation {
                        prop_assert!(o.check(now()).is_ok(), "{:?}", o);
                    }
                }
            }
        }
        for c in s.close() {
            if let Some(o) = c.observation {
                prop_assert!(o.check(now()).is_ok(), "{:?}", o);
            }
        }
    }
}
