//! The canonical encoding of an `AuditRecord`: the exact bytes the Merkle log hashes.
//!
//! Version 1, documented in `docs/records.md`: a version byte, then every field in a fixed
//! order. Integers are big-endian; a string is a u32 length and its UTF-8 bytes; an optional
//! value is 0x00, or 0x01 and the value; a list is a u32 count and its elements. It depends
//! on no row layout, so any store that returns the same record yields the same leaf.

use crate::{AuditRecord, Client, Item, Provenance};

pub const CANONICAL_VERSION: u8 = 1;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn len(&mut self, n: usize) {
        // Observations are checked to far below 4 GiB per field; saturate rather than wrap.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn bool(&mut self, b: bool) {
        self.u8(u8::from(b));
    }
    fn opt<T>(&mut self, v: &Option<T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
        }
    }
    fn opt_str(&mut self, v: &Option<String>) {
        self.opt(v, |w, s| w.str(s));
    }
}

/// Encodes a record canonically (version 1).
pub fn encode_canonical(r: &AuditRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.u8(CANONICAL_VERSION);
    w.u64(r.seq);
    w.i64(r.time.micros());
    w.i64(r.recorded_at.micros());
    w.str(r.operation.as_str());
    w.str(r.result.as_str());
    w.opt_str(&r.reason);
    w.str(r.logon_type.as_str());
    w.bool(r.external);
    w.str(&r.mailbox);
    w.str(&r.actor);
    w.opt_str(&r.acting_as);
    w.opt_str(&r.folder);
    w.opt_str(&r.destination_folder);
    w.len(r.items.len());
    for item in &r.items {
        item_into(&mut w, item);
    }
    client_into(&mut w, &r.client);
    provenance_into(&mut w, &r.provenance);
    w.len(r.parameters.len());
    for p in &r.parameters {
        w.str(&p.name);
        w.str(&p.value);
    }
    w.0
}

fn item_into(w: &mut Writer, i: &Item) {
    w.opt(&i.uid, |w, v| w.u32(*v));
    w.opt_str(&i.message_id);
    w.opt_str(&i.subject);
    w.opt(&i.size, |w, v| w.u64(*v));
    w.opt_str(&i.folder);
    w.opt_str(&i.unresolved);
}

fn client_into(w: &mut Writer, c: &Client) {
    // The textual form of an address is canonical in Rust's std (RFC 5952 for IPv6).
    w.opt(&c.ip, |w, ip| w.str(&ip.to_string()));
    w.opt(&c.port, |w, p| w.u16(*p));
    w.opt_str(&c.protocol);
    w.opt_str(&c.name);
    w.opt_str(&c.session);
    w.opt(&c.tls, |w, b| w.bool(*b));
}

fn provenance_into(w: &mut Writer, p: &Provenance) {
    w.str(&p.source);
    w.opt_str(&p.host);
    w.opt_str(&p.reference);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogonType, Operation, OperationResult, Parameter, Timestamp};

    pub(crate) fn sample() -> AuditRecord {
        AuditRecord {
            seq: 3,
            time: Timestamp(1_700_000_000_000_000),
            recorded_at: Timestamp(1_700_000_000_000_001),
            operation: Operation::MessageBind,
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
                message_id: Some("<q1@example.com>".into()),
                subject: Some("Quarterly numbers".into()),
                size: Some(109),
                folder: None,
                unresolved: None,
            }],
            client: Client {
                ip: "192.0.2.7".parse().ok(),
                port: Some(50123),
                protocol: Some("imap".into()),
                name: Some("Thunderbird".into()),
                session: Some("s1".into()),
                tls: Some(true),
            },
            provenance: Provenance {
                source: "api".into(),
                host: None,
                reference: None,
            },
            parameters: vec![Parameter {
                name: "k".into(),
                value: "v".into(),
            }],
        }
    }

    /// Pins version 1: if this hash changes, every existing log stops verifying.
    #[test]
    fn version_1_is_stable() {
        let bytes = encode_canonical(&sample());
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes.len(), 256);
        let hex: String = bytes[..17].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "01000000000000000300060a24181e4000");
    }

    #[test]
    fn every_field_changes_the_encoding() {
        let base = encode_canonical(&sample());
        let mutants: &[fn(&mut AuditRecord)] = &[
            |r| r.seq += 1,
            |r| r.time.0 += 1,
            |r| r.recorded_at.0 += 1,
            |r| r.operation = Operation::Move,
            |r| r.result = OperationResult::Failed,
            |r| r.reason = Some(String::new()),
            |r| r.logon_type = LogonType::Admin,
            |r| r.external = true,
            |r| r.mailbox.push('x'),
            |r| r.actor.push('x'),
            |r| r.acting_as = Some("x".into()),
            |r| r.folder = None,
            |r| r.destination_folder = Some("INBOX".into()),
            |r| r.items[0].uid = Some(8),
            |r| r.items[0].subject = None,
            |r| r.items.push(Item::default()),
            |r| r.client.port = None,
            |r| r.client.tls = Some(false),
            |r| r.provenance.reference = Some("x".into()),
            |r| r.parameters[0].value.push('x'),
        ];
        for (i, m) in mutants.iter().enumerate() {
            let mut r = sample();
            m(&mut r);
            assert_ne!(encode_canonical(&r), base, "mutant {i} encoded identically");
        }
    }

    /// Field boundaries cannot be shifted: "ab"+"c" and "a"+"bc" differ.
    #[test]
    fn strings_are_length_prefixed() {
        let mut a = sample();
        a.mailbox = "ab".into();
        a.actor = "c".into();
        let mut b = sample();
        b.mailbox = "a".into();
        b.actor = "bc".into();
        assert_ne!(encode_canonical(&a), encode_canonical(&b));
    }
}
