//! Checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes with Ed25519 keys, in the text
//! formats of Go's golang.org/x/mod/sumdb/note so other transparency tooling can check our logs.
//!
//! `Checkpoint::open` must never return a checkpoint whose text was not covered by a verified
//! signature of the caller's key, and `SignerKey` must never reveal its seed except through its
//! deliberate `Display` (the secret key string); its `Debug` redacts it.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::Hash;

const ALG_ED25519: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";
const SIGNER_PREFIX: &str = "PRIVATE+KEY+";
/// Go's limit, so a hostile note cannot make us parse signatures forever.
const MAX_SIGNATURES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("invalid key name {0:?}: need non-empty, no spaces, control characters or '+'")]
    InvalidKeyName(String),
    #[error("malformed {kind} key: {reason}")]
    MalformedKey {
        kind: &'static str,
        reason: &'static str,
    },
    #[error("{kind} key id {stated:08x} should be {computed:08x} for this name and key")]
    KeyIdMismatch {
        kind: &'static str,
        stated: u32,
        computed: u32,
    },
    #[error("cannot get randomness for a new key: {0}")]
    Random(getrandom::Error),
    #[error("invalid origin {0:?}: it must be non-empty with no control characters")]
    InvalidOrigin(String),
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    #[error("malformed note line {line}: {reason}")]
    MalformedLine { line: usize, reason: &'static str },
    #[error("invalid signature by key {name}+{id:08x}")]
    BadSignature { name: String, id: u32 },
    #[error("note has no signature by key {name}+{id:08x}")]
    UnknownKey { name: String, id: u32 },
}

/// Per signed-note: a name may not be empty, contain whitespace or '+' (the key string
/// separator); control characters would make every note carrying it malformed.
fn check_name(name: &str) -> Result<(), CheckpointError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '+';
    if name.is_empty() || name.contains(bad) {
        return Err(CheckpointError::InvalidKeyName(name.to_owned()));
    }
    Ok(())
}

/// C2SP signed-note key ID: first 4 bytes of SHA-256(name || "\n" || 0x01 || public key).
fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let digest = Sha256::new()
        .chain_update(name)
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits `name+hexid+base64(0x01 || 32 bytes)`, the shared tail of both key strings.
fn split_key<'a>(
    s: &'a str,
    kind: &'static str,
) -> Result<(&'a str, u32, [u8; 32]), CheckpointError> {
    let malformed = |reason| CheckpointError::MalformedKey { kind, reason };
    // At most three parts: the base64 key material may itself contain '+'.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("expected <name>+<key id>+<key>"));
    };
    check_name(name)?;
    // No sign can sneak past from_str_radix: '+' was the separator and u32 refuses '-'.
    let id = u32::from_str_radix(id, 16)
        .ok()
        .filter(|_| id.len() == 8)
        .ok_or(malformed("key id is not 8 hex digits"))?;
    let raw = STANDARD
        .decode(key)
        .map_err(|_| malformed("key is not standard base64"))?;
    match raw.split_first() {
        Some((&ALG_ED25519, bytes)) => {
            let bytes = bytes
                .try_into()
                .map_err(|_| malformed("Ed25519 key is not 32 bytes"))?;
            Ok((name, id, bytes))
        }
        _ => Err(malformed("key algorithm is not Ed25519 (0x01)")),
    }
}

fn encode_key(bytes: &[u8; 32]) -> String {
    let mut raw = [ALG_ED25519; 33];
    raw[1..].copy_from_slice(bytes);
    STANDARD.encode(raw)
}

/// A log's Ed25519 signing key and its name.
pub struct SignerKey {
    name: String,
    id: u32,
    key: SigningKey,
}

impl SignerKey {
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(CheckpointError::Random)?;
        Ok(Self::from_seed(name, &seed))
    }

    fn from_seed(name: &str, seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, &key.verifying_key());
        Self {
            name: name.to_owned(),
            id,
            key,
        }
    }

    /// Parses Go note's `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.
    pub fn parse(s: &str) -> Result<Self, CheckpointError> {
        let rest = s
            .strip_prefix(SIGNER_PREFIX)
            .ok_or(CheckpointError::MalformedKey {
                kind: "signer",
                reason: "missing PRIVATE+KEY+ prefix",
            })?;
        let (name, stated, seed) = split_key(rest, "signer")?;
        let key = Self::from_seed(name, &seed);
        if key.id != stated {
            return Err(CheckpointError::KeyIdMismatch {
                kind: "signer",
                stated,
                computed: key.id,
            });
        }
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }
}

/// The secret key string; treat its output as a secret.
impl fmt::Display for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = encode_key(self.key.as_bytes());
        write!(f, "{SIGNER_PREFIX}{}+{:08x}+{key}", self.name, self.id)
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKey")
            .field("name", &self.name)
            .field("id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

/// A log's public key: `<name>+<8 hex digits key id>+<base64(0x01 || public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    pub fn parse(s: &str) -> Result<Self, CheckpointError> {
        let (name, stated, bytes) = split_key(s, "verifier")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| CheckpointError::MalformedKey {
            kind: "verifier",
            reason: "not an Ed25519 public key",
        })?;
        let computed = key_id(name, &key);
        if computed != stated {
            return Err(CheckpointError::KeyIdMismatch {
                kind: "verifier",
                stated,
                computed,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            id: computed,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = encode_key(self.key.as_bytes());
        write!(f, "{}+{:08x}+{key}", self.name, self.id)
    }
}

/// A signed tree head: `time` comes from our `time <unix seconds>` extension line, so heads
/// signed while the log is idle still differ and are ordered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time: u64,
}

impl Checkpoint {
    /// The C2SP tlog-checkpoint body, every line ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root),
            self.time
        )
    }

    /// The full signed note. Fails only for an origin that would make the note unreadable.
    pub fn sign(&self, key: &SignerKey) -> Result<String, CheckpointError> {
        if self.origin.is_empty() || self.origin.contains(char::is_control) {
            return Err(CheckpointError::InvalidOrigin(self.origin.clone()));
        }
        Ok(sign_note(&self.body(), key))
    }

    /// Parses and verifies a signed note: at least one signature by `key` that verifies, and a
    /// well-formed body. Other signers' lines are ignored.
    pub fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, CheckpointError> {
        parse_body(open_note(note, key)?)
    }
}

fn sign_note(text: &str, key: &SignerKey) -> String {
    let mut blob = [0u8; 68];
    blob[..4].copy_from_slice(&key.id.to_be_bytes());
    blob[4..].copy_from_slice(&key.key.sign(text.as_bytes()).to_bytes());
    let b64 = STANDARD.encode(blob);
    format!("{text}\n{SIG_PREFIX}{} {b64}\n", key.name)
}

fn malformed_line(line: usize, reason: &'static str) -> CheckpointError {
    CheckpointError::MalformedLine { line, reason }
}

/// Checks the signed-note framing and `key`'s signatures, returning the signed text.
fn open_note<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, CheckpointError> {
    // Go's reader rejects these too; refusing them keeps both sides agreeing on what was signed.
    if let Some(at) = note.find(|c: char| c.is_ascii_control() && c != '\n') {
        let line = note[..at].matches('\n').count() + 1;
        return Err(malformed_line(line, "control character"));
    }
    // The signature block follows the last blank line, so the text may not end in one.
    let split = note.rfind("\n\n").ok_or(CheckpointError::MalformedNote(
        "no blank line before the signatures",
    ))?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(CheckpointError::MalformedNote(
            "signature block is empty or does not end in a newline",
        ));
    }
    let first_line = text.matches('\n').count() + 2;
    let mut verified = false;
    for (i, line) in sigs.split_terminator('\n').enumerate() {
        let n = first_line + i;
        if i >= MAX_SIGNATURES {
            return Err(malformed_line(n, "more than 100 signatures"));
        }
        let (name, b64) = line
            .strip_prefix(SIG_PREFIX)
            .and_then(|rest| rest.split_once(' '))
            .ok_or(malformed_line(n, "not `— <name> <signature>`"))?;
        check_name(name).map_err(|_| malformed_line(n, "invalid key name"))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| malformed_line(n, "signature is not standard base64"))?;
        let Some((id, sig)) = blob.split_first_chunk::<4>().filter(|(_, s)| !s.is_empty()) else {
            return Err(malformed_line(n, "signature too short"));
        };
        if name != key.name || u32::from_be_bytes(*id) != key.id {
            continue;
        }
        let bad = || CheckpointError::BadSignature {
            name: key.name.clone(),
            id: key.id,
        };
        let sig = Signature::from_slice(sig).map_err(|_| bad())?;
        // Strict verification refuses malleated signatures, which honest signers never make.
        key.key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| bad())?;
        verified = true;
    }
    if !verified {
        return Err(CheckpointError::UnknownKey {
            name: key.name.clone(),
            id: key.id,
        });
    }
    Ok(text)
}

/// Canonical decimal only, so one checkpoint has exactly one text.
fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
    let mut lines = text.split_terminator('\n');
    let mut next = |n: usize| lines.next().ok_or(malformed_line(n, "missing"));
    let origin = next(1)?;
    if origin.is_empty() {
        return Err(malformed_line(1, "empty origin"));
    }
    let size = parse_decimal(next(2)?).ok_or(malformed_line(2, "tree size is not a decimal"))?;
    let root = STANDARD
        .decode(next(3)?)
        .ok()
        .and_then(|raw| Hash::try_from(raw).ok())
        .ok_or(malformed_line(3, "root is not 32 bytes of standard base64"))?;
    let mut time = None;
    for (i, line) in lines.enumerate() {
        let n = i + 4;
        if line.is_empty() {
            return Err(malformed_line(n, "empty extension line"));
        }
        // Extension lines we do not know are signed but carry nothing we act on.
        if let Some(value) = line.strip_prefix("time ") {
            if time.is_some() {
                return Err(malformed_line(n, "second time line"));
            }
            time = Some(parse_decimal(value).ok_or(malformed_line(n, "time is not a decimal"))?);
        }
    }
    let time = time.ok_or(CheckpointError::MalformedNote("no `time` extension line"))?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key and note of Go's golang.org/x/mod/sumdb/note tests.
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn matches_go_note_byte_for_byte() {
        let signer = SignerKey::parse(SKEY).unwrap();
        let note = format!("{TEXT}\n{SIG}");
        assert_eq!(sign_note(TEXT, &signer), note);
        let verifier = VerifierKey::parse(VKEY).unwrap();
        assert_eq!(open_note(&note, &verifier).unwrap(), TEXT);
    }

    fn signed(body: &str) -> (String, VerifierKey) {
        let signer = SignerKey::parse(SKEY).unwrap();
        (sign_note(body, &signer), signer.verifier())
    }

    #[test]
    fn malformed_bodies_name_their_line() {
        let root = STANDARD.encode([7u8; 32]);
        let cases = [
            (format!("o\n01\n{root}\ntime 1\n"), Some(2)),
            (format!("o\n1\n{root}\n\ntime 1\n"), Some(4)),
            (format!("o\n1\n{root}x\ntime 1\n"), Some(3)),
            (format!("o\n1\n{root}\ntime 1\ntime 2\n"), Some(5)),
            (format!("o\n1\n{root}\ntime -1\n"), Some(4)),
            (format!("o\n1\n{root}\nother 5\n"), None),
            ("o\n1\n".to_owned(), Some(3)),
        ];
        for (body, line) in cases {
            let (note, key) = signed(&body);
            let err = Checkpoint::open(&note, &key).unwrap_err();
            match line {
                Some(want) => assert!(
                    matches!(err, CheckpointError::MalformedLine { line, .. } if line == want),
                    "{body:?}: {err}"
                ),
                None => assert!(matches!(err, CheckpointError::MalformedNote(_)), "{err}"),
            }
        }
        let body = format!("o\n18446744073709551615\n{root}\nx-ext 1\ntime 0\n");
        let (note, key) = signed(&body);
        let cp = Checkpoint::open(&note, &key).unwrap();
        assert_eq!((cp.size, cp.time, cp.root), (u64::MAX, 0, [7; 32]));
    }
}
