//! The conformance suite every `Store` backend must pass. A backend's tests call
//! `store_conformance_tests!` with a constructor of a fresh, empty store; a later backend
//! (columnar segments, PostgreSQL) runs the very same checks.
//!
//! These functions panic on failure: they are test code, exported so every backend shares it.

use crate::{Leaf, NonOwner, PageRequest, Query, Store, TokenInfo};
use mailaudit_merkle::{leaf_hash, root_of};
use mailaudit_model::{
    encode_canonical, AuditRecord, Client, Item, LogonType, Operation, OperationResult, Parameter,
    Provenance, Timestamp,
};

/// Varied records: every logon type, results, external actors, IPv4 and IPv6, items with and
/// without subjects, equal timestamps (to exercise the seq tie-break).
pub fn sample_records(n: usize) -> Vec<AuditRecord> {
    let ops = [
        Operation::MailboxLogin,
        Operation::MessageBind,
        Operation::Move,
        Operation::HardDelete,
        Operation::SendAs,
        Operation::FolderBind,
    ];
    (0..n)
        .map(|i| {
            let mailbox = format!("user{}@example.com", i % 5);
            let (actor, logon, external) = match i % 7 {
                0 => (
                    format!("user{}@example.com", (i + 1) % 5),
                    LogonType::Delegate,
                    false,
                ),
                1 => ("admin@example.com".to_string(), LogonType::Admin, false),
                2 => (
                    "eve@partner.example.net".to_string(),
                    LogonType::Delegate,
                    true,
                ),
                _ => (mailbox.clone(), LogonType::Owner, false),
            };
            let op = ops[i % ops.len()];
            AuditRecord {
                seq: 0,
                // Pairs share a time (the seq tie-break); fractions of a second vary.
                time: Timestamp::from_secs(1_750_000_000 + (i as i64 / 2) * 60)
                    .plus_micros(((i as i64 / 2) % 3) * 250_000),
                recorded_at: Timestamp::from_secs(1_750_000_000 + i as i64 * 60 + 1),
                operation: op,
                result: if i % 11 == 0 {
                    OperationResult::Failed
                } else {
                    OperationResult::Succeeded
                },
                reason: (i % 11 == 0).then(|| "authentication failed".to_string()),
                logon_type: logon,
                external,
                mailbox,
                actor,
                acting_as: (logon == LogonType::Admin).then(|| format!("user{}", i % 5)),
                folder: (i % 3 != 0).then(|| ["INBOX", "Sent", "Projects/Zeus"][i % 3].to_string()),
                destination_folder: (op == Operation::Move).then(|| "Archive".to_string()),
                items: (0..(i % 4))
                    .map(|k| Item {
                        uid: Some((i * 10 + k) as u32),
                        message_id: Some(format!("<m{i}.{k}@example.com>")),
                        subject: (k % 2 == 0).then(|| format!("Invoice {i} & co, \"Q{k}\"")),
                        size: Some(1000 + k as u64),
                        folder: None,
                        unresolved: None,
                    })
                    .collect(),
                client: Client {
                    ip: Some(if i % 4 == 0 {
                        format!("2001:db8::{:x}", i % 9).parse().unwrap()
                    } else {
                        format!("198.51.100.{}", i % 13).parse().unwrap()
                    }),
                    port: Some(40000 + i as u16),
                    protocol: Some(if i % 5 == 0 { "pop3" } else { "imap" }.into()),
                    name: (i % 2 == 0).then(|| "Thunderbird 128".to_string()),
                    session: Some(format!("s{}", i / 3)),
                    tls: Some(i % 6 != 0),
                },
                provenance: Provenance {
                    source: "dovecot".into(),
                    host: Some("mx1.example.com".into()),
                    // Mostly `file:line`; some that only survive as text (leading zero).
                    reference: Some(if i % 5 == 0 {
                        format!("event:0{i}")
                    } else {
                        format!("dovecot.log:{i}")
                    }),
                },
                parameters: if i % 9 == 0 {
                    vec![Parameter {
                        name: "note".into(),
                        value: format!("p{i}"),
                    }]
                } else {
                    vec![]
                },
            }
        })
        .collect()
}

fn newest_first(records: &mut [AuditRecord]) {
    records.sort_by(|a, b| b.time.cmp(&a.time).then(b.seq.cmp(&a.seq)));
}

/// Appended records come back identical, with consecutive seqs, and the Merkle root is the
/// RFC 6962 root of their canonical encodings.
pub fn round_trip(store: &mut dyn Store) {
    let mut input = sample_records(300);
    // The usual case: one commit whose records share `recorded_at`.
    for r in &mut input[..100] {
        r.recorded_at = Timestamp::from_secs(1_760_000_000);
    }
    let mut stored = store.append(input[..100].to_vec(), &[]).unwrap();
    stored.extend(store.append(input[100..].to_vec(), &[]).unwrap());
    assert_eq!(store.size().unwrap(), 300);
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        let mut expected = input[i].clone();
        expected.seq = i as u64;
        assert_eq!(r, &expected);
        assert_eq!(store.get(i as u64).unwrap().as_ref(), Some(&expected));
    }
    assert_eq!(store.get(300).unwrap(), None);
    let leaves: Vec<_> = stored
        .iter()
        .map(|r| leaf_hash(&encode_canonical(r)))
        .collect();
    assert_eq!(store.frontier().unwrap().root(), root_of(&leaves));
    assert_eq!(store.tile(0).unwrap(), Some(root_of(&leaves[..256])));
    assert_eq!(store.tile(1).unwrap(), None);
}

/// Source keys make imports idempotent: a key already stored, or repeated within a batch,
/// adds nothing; fresh records in the same batch are stored with consecutive seqs; plain
/// appends are unaffected; the tree covers exactly the stored records; settings still land.
pub fn source_keys_deduplicate(store: &mut dyn Store) {
    let input = sample_records(6);
    let key = |i: u8| [i; 32];
    let first = store
        .append_keyed(
            input[..3].to_vec(),
            &[key(1), key(2), key(3)],
            &[("import:a", "1")],
        )
        .unwrap();
    let seqs: Vec<_> = first.iter().map(|r| r.as_ref().map(|r| r.seq)).collect();
    assert_eq!(seqs, vec![Some(0), Some(1), Some(2)]);
    // The same file again: nothing new, the setting is still written.
    let again = store
        .append_keyed(
            input[..3].to_vec(),
            &[key(1), key(2), key(3)],
            &[("import:a", "2")],
        )
        .unwrap();
    assert_eq!(again, vec![None, None, None]);
    assert_eq!(store.size().unwrap(), 3);
    assert_eq!(
        store.setting("import:a").unwrap().map(|(_, v)| v),
        Some("2".into())
    );
    // An overlapping export: one old key, one new, and a key repeated inside the batch.
    store.append(vec![input[3].clone()], &[]).unwrap();
    let overlap = store
        .append_keyed(
            vec![input[2].clone(), input[4].clone(), input[5].clone()],
            &[key(3), key(4), key(4)],
            &[],
        )
        .unwrap();
    let mut expected = input[4].clone();
    expected.seq = 4;
    assert_eq!(overlap, vec![None, Some(expected.clone()), None]);
    assert_eq!(store.size().unwrap(), 5);
    assert_eq!(store.get(4).unwrap(), Some(expected));
    let mut leaves = Vec::new();
    store
        .scan(0, 5, &mut |_, leaf| {
            if let crate::Leaf::Record { record, .. } = leaf {
                leaves.push(leaf_hash(&encode_canonical(&record)));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(leaves.len(), 5);
    assert_eq!(store.frontier().unwrap().root(), root_of(&leaves));
    // A mismatch between records and keys is refused, not guessed at.
    assert!(store
        .append_keyed(input[..2].to_vec(), &[key(9)], &[])
        .is_err());
    assert_eq!(store.size().unwrap(), 5);
}

/// Coverage entries are kept per source, file and mailbox (a re-import replaces its entry)
/// and merge into ranges with the gaps between them visible.
pub fn coverage_of_imports(store: &mut dyn Store) {
    use crate::{coverage_ranges, CoverageEntry, CoverageRange};
    let t = |d: i64| Timestamp::from_secs(1_700_000_000 + d * 86_400);
    let entry = |file: &str, mailbox: &str, first: i64, last: i64, records: u64| CoverageEntry {
        source: "import:exchange-csv".into(),
        file: file.into(),
        mailbox: mailbox.into(),
        first: t(first),
        last: t(last),
        records,
        imported_at: t(100),
    };
    assert!(store.coverage().unwrap().is_empty());
    store
        .add_coverage(&[
            entry("jan.csv", "a@example.com", 0, 10, 5),
            entry("jan.csv", "b@example.com", 1, 2, 1),
        ])
        .unwrap();
    store
        .add_coverage(&[
            entry("feb.csv", "a@example.com", 8, 20, 7),
            entry("apr.csv", "a@example.com", 40, 50, 3),
        ])
        .unwrap();
    // The same file again (re-imported): replaced, not added.
    store
        .add_coverage(&[entry("jan.csv", "a@example.com", 0, 10, 5)])
        .unwrap();
    let all = store.coverage().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], entry("jan.csv", "a@example.com", 0, 10, 5));
    let groups = coverage_ranges(&all);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].mailbox, "a@example.com");
    assert_eq!(
        groups[0].ranges,
        vec![
            CoverageRange {
                first: t(0),
                last: t(20),
                records: 12,
                files: 2
            },
            CoverageRange {
                first: t(40),
                last: t(50),
                records: 3,
                files: 1
            },
        ]
    );
    assert_eq!(groups[1].ranges.len(), 1);
}

/// Every filter agrees with `Query::matches`, totals are exact, and paging visits every
/// match exactly once, newest first.
pub fn search_matches_filter(store: &mut dyn Store) {
    let stored = store.append(sample_records(200), &[]).unwrap();
    let t = |s: i64| Timestamp::from_secs(1_750_000_000 + s * 60);
    let queries = vec![
        Query::default(),
        Query {
            mailboxes: vec!["USER1@example.com".into()],
            ..Default::default()
        },
        Query {
            actors: vec!["admin@example.com".into()],
            from: Some(t(10)),
            to: Some(t(60)),
            ..Default::default()
        },
        // An actor who is an owner of one mailbox and a delegate of another.
        Query {
            actors: vec!["user3@example.com".into()],
            ..Default::default()
        },
        Query {
            actors: vec!["user3@example.com".into()],
            mailboxes: vec!["user2@example.com".into()],
            ..Default::default()
        },
        // Bounds inside a second.
        Query {
            from: Some(t(12).plus_micros(250_000)),
            to: Some(t(40).plus_micros(500_001)),
            ..Default::default()
        },
        Query {
            operations: vec![Operation::MessageBind, Operation::Move],
            logon_types: vec![LogonType::Delegate],
            ..Default::default()
        },
        Query {
            non_owner: Some(NonOwner::All),
            mailboxes: vec!["user2@example.com".into()],
            ..Default::default()
        },
        Query {
            non_owner: Some(NonOwner::External),
            ..Default::default()
        },
        Query {
            non_owner: Some(NonOwner::AdminsAndDelegates),
            ..Default::default()
        },
        Query {
            non_owner: Some(NonOwner::Admins),
            ..Default::default()
        },
        Query {
            results: vec![OperationResult::Failed],
            ..Default::default()
        },
        Query {
            ips: vec![
                "198.51.100.0/30".parse().unwrap(),
                "2001:db8::3".parse().unwrap(),
            ],
            ..Default::default()
        },
        Query {
            protocols: vec!["POP3".into()],
            ..Default::default()
        },
        Query {
            folders: vec!["Archive".into(), "Sent".into()],
            ..Default::default()
        },
        Query {
            text: Some("invoice 1".into()),
            ..Default::default()
        },
        Query {
            text: Some("<M5.1@".into()),
            ..Default::default()
        },
        Query {
            mailboxes: vec!["nobody@example.com".into()],
            ..Default::default()
        },
        Query {
            below_seq: Some(150),
            logon_types: vec![LogonType::Owner],
            ..Default::default()
        },
        // Nothing but a snapshot bound, and nothing at all: the unfiltered log.
        Query {
            below_seq: Some(150),
            ..Default::default()
        },
        Query::default(),
    ];
    for q in queries {
        let mut expected: Vec<_> = stored.iter().filter(|r| q.matches(r)).cloned().collect();
        newest_first(&mut expected);
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .search(
                    &q,
                    &PageRequest {
                        limit: 7,
                        cursor: cursor.clone(),
                        with_total: true,
                    },
                )
                .unwrap();
            assert_eq!(page.total, Some(expected.len() as u64), "{q:?}");
            assert!(page.records.len() <= 7);
            got.extend(page.records);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, expected, "{q:?}");
    }
    assert!(store
        .search(
            &Query::default(),
            &PageRequest {
                cursor: Some("garbage".into()),
                ..Default::default()
            }
        )
        .is_err());
}

/// Retention removes contents but keeps leaf hashes: the size and root do not change.
pub fn prune_keeps_the_tree(store: &mut dyn Store) {
    let stored = store.append(sample_records(300), &[]).unwrap();
    let root = store.frontier().unwrap().root();
    let cutoff = Timestamp::from_secs(1_750_000_000 + 50 * 60);
    // user0 keeps everything; the rest keep from `cutoff` on.
    let pruned = store
        .prune(&|m: &str| {
            if m == "user0@example.com" {
                Timestamp(0)
            } else {
                cutoff
            }
        })
        .unwrap();
    let expected: Vec<_> = stored
        .iter()
        .filter(|r| r.mailbox != "user0@example.com" && r.time < cutoff)
        .collect();
    assert_eq!(pruned, expected.len() as u64);
    assert!(pruned > 0);
    assert_eq!(store.size().unwrap(), 300);
    assert_eq!(store.frontier().unwrap().root(), root);
    for r in &expected {
        assert_eq!(store.get(r.seq).unwrap(), None);
    }
    let mut seen = 0;
    store
        .scan(0, 300, &mut |i, leaf| {
            let want = leaf_hash(&encode_canonical(&stored[i as usize]));
            let got = match leaf {
                Leaf::Record { record, .. } => leaf_hash(&encode_canonical(&record)),
                Leaf::Pruned(h) => h,
            };
            assert_eq!(got, want, "leaf {i}");
            seen += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, 300);
    let total = store
        .search(&Query::default(), &PageRequest::default())
        .unwrap()
        .total;
    assert_eq!(total, Some(300 - pruned));
    // Below a snapshot bound the total also leaves out what retention removed.
    let kept_below = (0..200u64)
        .filter(|seq| store.get(*seq).unwrap().is_some())
        .count() as u64;
    assert!(kept_below < 200);
    let total = store
        .search(
            &Query {
                below_seq: Some(200),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .unwrap()
        .total;
    assert_eq!(total, Some(kept_below));
}

/// A setting written with an append is versioned; checkpoints come back in order.
pub fn settings_and_checkpoints(store: &mut dyn Store) {
    assert_eq!(store.setting("policy").unwrap(), None);
    store
        .append(sample_records(1), &[("policy", "{\"a\":1}")])
        .unwrap();
    store
        .append(sample_records(1), &[("policy", "{\"a\":2}")])
        .unwrap();
    assert_eq!(
        store.setting("policy").unwrap(),
        Some((2, "{\"a\":2}".to_string()))
    );
    let a = store
        .add_checkpoint(&mut |size, _| Ok(format!("cp {size}")))
        .unwrap();
    store.append(sample_records(3), &[]).unwrap();
    let b = store
        .add_checkpoint(&mut |size, _| Ok(format!("cp {size}")))
        .unwrap();
    assert_eq!((a.size, b.size), (2, 5));
    let all = store.checkpoints().unwrap();
    assert_eq!(all, vec![a, b]);
}

pub fn tokens(store: &mut dyn Store) {
    let info = TokenInfo {
        name: "ingest-1".into(),
        role: "ingest".into(),
        created: Timestamp::from_secs(1),
        revoked: false,
    };
    let hash = [7u8; 32];
    store.put_token(&hash, &info).unwrap();
    assert_eq!(store.token(&hash).unwrap(), Some(info.clone()));
    assert_eq!(store.token(&[8u8; 32]).unwrap(), None);
    assert!(
        store.put_token(&[9u8; 32], &info).is_err(),
        "names are unique"
    );
    assert!(store.revoke_token("ingest-1").unwrap());
    assert!(store.token(&hash).unwrap().unwrap().revoked);
    assert!(!store.revoke_token("nope").unwrap());
    assert_eq!(store.tokens().unwrap().len(), 1);
}

/// Generates one `#[test]` per conformance check for a backend. `$make` is an expression
/// returning a value that derefs mutably to a fresh, empty store.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        #[test]
        fn conformance_round_trip() {
            let mut s = $make;
            $crate::conformance::round_trip(&mut *s);
        }
        #[test]
        fn conformance_search_matches_filter() {
            let mut s = $make;
            $crate::conformance::search_matches_filter(&mut *s);
        }
        #[test]
        fn conformance_prune_keeps_the_tree() {
            let mut s = $make;
            $crate::conformance::prune_keeps_the_tree(&mut *s);
        }
        #[test]
        fn conformance_settings_and_checkpoints() {
            let mut s = $make;
            $crate::conformance::settings_and_checkpoints(&mut *s);
        }
        #[test]
        fn conformance_source_keys_deduplicate() {
            let mut s = $make;
            $crate::conformance::source_keys_deduplicate(&mut *s);
        }
        #[test]
        fn conformance_coverage_of_imports() {
            let mut s = $make;
            $crate::conformance::coverage_of_imports(&mut *s);
        }
        #[test]
        fn conformance_tokens() {
            let mut s = $make;
            $crate::conformance::tokens(&mut *s);
        }
    };
}
