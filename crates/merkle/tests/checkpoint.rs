//! Checkpoints as signed notes: round trips, key strings and every kind of tampering.
//!
//! Keys are fixed (Go's published example key) or generated; these tests must never depend on
//! the clock or on anything outside the process.

use mailaudit_merkle::{leaf_hash, Checkpoint, CheckpointError, SignerKey, VerifierKey};

const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";

fn checkpoint() -> Checkpoint {
    Checkpoint {
        origin: "mailaudit.example/log".to_owned(),
        size: 1234,
        root: leaf_hash(b"root"),
        time: 1_700_000_000,
    }
}

#[test]
fn body_is_the_c2sp_checkpoint_text() {
    let cp = Checkpoint {
        origin: "example.com/log".to_owned(),
        size: 0,
        root: [0; 32],
        time: 42,
    };
    assert_eq!(
        cp.body(),
        "example.com/log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime 42\n"
    );
}

#[test]
fn sign_and_open_round_trip() {
    let signer = SignerKey::parse(SKEY).unwrap();
    let note = checkpoint().sign(&signer).unwrap();
    let (body, sig) = note.split_once("\n\n").unwrap();
    assert_eq!(format!("{body}\n"), checkpoint().body());
    assert!(sig.starts_with("\u{2014} PeterNeumann ") && sig.ends_with('\n'));
    assert_eq!(
        Checkpoint::open(&note, &signer.verifier()).unwrap(),
        checkpoint()
    );

    let fresh = SignerKey::generate("mailaudit-test").unwrap();
    let note = checkpoint().sign(&fresh).unwrap();
    assert_eq!(
        Checkpoint::open(&note, &fresh.verifier()).unwrap(),
        checkpoint()
    );
}

#[test]
fn key_strings_follow_the_signed_note_spec() {
    let signer = SignerKey::parse(SKEY).unwrap();
    assert_eq!(signer.to_string(), SKEY);
    assert_eq!(signer.name(), "PeterNeumann");
    let verifier = VerifierKey::parse(VKEY).unwrap();
    assert_eq!(verifier.to_string(), VKEY);
    assert_eq!(verifier.key_id(), 0xc74f20a3);
    assert_eq!(signer.verifier(), verifier);
    assert!(
        !format!("{signer:?}").contains("AYEKF"),
        "Debug must not leak the seed"
    );

    let fresh = SignerKey::generate("a.example/log").unwrap();
    let round = SignerKey::parse(&fresh.to_string()).unwrap();
    assert_eq!(round.verifier(), fresh.verifier());
    let v = fresh.verifier();
    assert_eq!(VerifierKey::parse(&v.to_string()).unwrap(), v);
    assert_eq!(v.name(), "a.example/log");
    assert_eq!(
        v.to_string()[..22],
        format!("a.example/log+{:08x}", v.key_id())
    );
}

#[test]
fn mangled_key_strings_are_rejected() {
    // Every proper substring and every single-byte change, as Go's note tests do.
    for key in [VKEY, SKEY] {
        let parse = |s: &str| {
            let ok = if key == VKEY {
                VerifierKey::parse(s).is_ok()
            } else {
                SignerKey::parse(s).is_ok()
            };
            assert!(!ok, "accepted {s:?}");
        };
        for i in 0..key.len() {
            for j in i + 1..=key.len() {
                if (i, j) != (0, key.len()) {
                    parse(&key[i..j]);
                }
            }
            let mut b = key.as_bytes().to_vec();
            b[i] = b[i].wrapping_add(1);
            parse(&String::from_utf8_lossy(&b));
        }
    }
    for name in ["", "a b", "a+b", "tab\tname"] {
        assert_eq!(
            SignerKey::generate(name).unwrap_err(),
            CheckpointError::InvalidKeyName(name.to_owned())
        );
    }
}

#[test]
fn any_flipped_bit_in_a_note_is_rejected() {
    let signer = SignerKey::parse(SKEY).unwrap();
    let note = checkpoint().sign(&signer).unwrap();
    let verifier = signer.verifier();
    let mut tried = 0;
    for i in 0..note.len() {
        for bit in 0..8 {
            let mut b = note.clone().into_bytes();
            b[i] ^= 1 << bit;
            // Text that is not UTF-8 cannot even be handed to `open`.
            if let Ok(text) = String::from_utf8(b) {
                tried += 1;
                assert!(
                    Checkpoint::open(&text, &verifier).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
    }
    assert!(
        tried > note.len() * 6,
        "only {tried} mutations were valid UTF-8"
    );
}

#[test]
fn truncated_notes_are_rejected() {
    let signer = SignerKey::parse(SKEY).unwrap();
    let note = checkpoint().sign(&signer).unwrap();
    for end in (0..note.len()).filter(|&end| note.is_char_boundary(end)) {
        assert!(
            Checkpoint::open(&note[..end], &signer.verifier()).is_err(),
            "{end}"
        );
    }
}

#[test]
fn other_signers_are_ignored_but_never_trusted() {
    let ours = SignerKey::parse(SKEY).unwrap();
    let other = SignerKey::generate("other").unwrap();
    let impostor = SignerKey::generate("PeterNeumann").unwrap();
    let by_other = checkpoint().sign(&other).unwrap();
    assert!(matches!(
        Checkpoint::open(&by_other, &ours.verifier()),
        Err(CheckpointError::UnknownKey { .. })
    ));
    // Same name, different key: a different key id, so still no signature by our key.
    let by_impostor = checkpoint().sign(&impostor).unwrap();
    assert!(matches!(
        Checkpoint::open(&by_impostor, &ours.verifier()),
        Err(CheckpointError::UnknownKey { .. })
    ));
    // A co-signature from an unknown witness does not get in the way.
    let ours_note = checkpoint().sign(&ours).unwrap();
    let other_line = by_other.rsplit_once("\n\n").unwrap().1;
    let both = format!("{ours_note}{other_line}");
    assert_eq!(
        Checkpoint::open(&both, &ours.verifier()).unwrap(),
        checkpoint()
    );
    // Our key's line grafted under another body must fail as a bad signature.
    let ours_line = ours_note.rsplit_once("\n\n").unwrap().1;
    let mut moved = checkpoint();
    moved.size += 1;
    let forged = format!("{}\n{ours_line}", moved.body());
    assert!(matches!(
        Checkpoint::open(&forged, &ours.verifier()),
        Err(CheckpointError::BadSignature { .. })
    ));
}

#[test]
fn invalid_origins_are_not_signed() {
    let signer = SignerKey::parse(SKEY).unwrap();
    for origin in ["", "two\nlines", "nul\0"] {
        let cp = Checkpoint {
            origin: origin.to_owned(),
            ..checkpoint()
        };
        assert_eq!(
            cp.sign(&signer),
            Err(CheckpointError::InvalidOrigin(origin.to_owned()))
        );
    }
}
