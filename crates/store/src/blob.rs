//! The compact on-disk form of a record's items and parameters in the embedded backend.
//! It is a storage detail, not the canonical encoding: the hash never sees these bytes.
//! Decoding treats the bytes as untrusted (they may have been edited) and never panics.

use crate::StoreError;
use mailaudit_model::{AuditRecord, Item, Parameter, Timestamp};

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bit set of the fields that are present.
fn presence<T: Copy + Default + std::ops::BitOr<Output = T>>(fields: &[(bool, T)]) -> T {
    fields
        .iter()
        .filter(|(present, _)| *present)
        .fold(T::default(), |acc, (_, bit)| acc | *bit)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Kinds of interned strings. Mailboxes and actors share one kind: they are the same
/// addresses, and a search by name resolves to one id for both columns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub(crate) enum Kind {
    Identity = 1,
    Folder = 2,
    Ip = 3,
    Protocol = 4,
    Client = 5,
    Session = 6,
    Source = 7,
    Name = 8,
    Subject = 9,
    MessageDomain = 10,
}

const UID: u8 = 1;
const MESSAGE_ID: u8 = 2;
const SUBJECT: u8 = 4;
const SIZE: u8 = 8;
const FOLDER: u8 = 16;
const UNRESOLVED: u8 = 32;
/// The Message-ID is `<local@domain>`: the local part is kept inline and the domain, which
/// repeats across every message of a sending system, is interned.
const MESSAGE_ID_SPLIT: u8 = 64;

/// Splits `<local@domain>` so that joining the parts gives back exactly the input.
fn split_message_id(id: &str) -> Option<(&str, &str)> {
    let inner = id.strip_prefix('<')?.strip_suffix('>')?;
    let (local, domain) = inner.rsplit_once('@')?;
    (!domain.is_empty() && !domain.contains(['<', '>'])).then_some((local, domain))
}

pub(crate) type Intern<'a> = dyn FnMut(Kind, &str) -> Result<i64, StoreError> + 'a;
pub(crate) type Resolve<'a> = dyn FnMut(i64) -> Result<String, String> + 'a;

/// Encodes items; subjects, folders and Message-ID domains become interned ids.
pub(crate) fn encode_items(
    items: &[Item],
    intern: &mut Intern<'_>,
) -> Result<Option<Vec<u8>>, StoreError> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(items.len() * 32);
    put_varint(&mut out, items.len() as u64);
    for i in items {
        let split = i.message_id.as_deref().and_then(split_message_id);
        let flags = presence(&[
            (i.uid.is_some(), UID),
            (i.message_id.is_some() && split.is_none(), MESSAGE_ID),
            (split.is_some(), MESSAGE_ID_SPLIT),
            (i.subject.is_some(), SUBJECT),
            (i.size.is_some(), SIZE),
            (i.folder.is_some(), FOLDER),
            (i.unresolved.is_some(), UNRESOLVED),
        ]);
        out.push(flags);
        if let Some(v) = i.uid {
            put_varint(&mut out, u64::from(v));
        }
        match (split, &i.message_id) {
            (Some((local, domain)), _) => {
                put_str(&mut out, local);
                put_varint(&mut out, intern(Kind::MessageDomain, domain)? as u64);
            }
            (None, Some(v)) => put_str(&mut out, v),
            (None, None) => {}
        }
        if let Some(v) = &i.subject {
            put_varint(&mut out, intern(Kind::Subject, v)? as u64);
        }
        if let Some(v) = i.size {
            put_varint(&mut out, v);
        }
        if let Some(v) = &i.folder {
            put_varint(&mut out, intern(Kind::Folder, v)? as u64);
        }
        if let Some(v) = &i.unresolved {
            put_str(&mut out, v);
        }
    }
    Ok(Some(out))
}

/// The fields of a record that are never filtered on, packed into one column: each NULL
/// column costs a byte of row header, and most of these are absent from most records.
const ACTING_AS: u16 = 1;
const PORT: u16 = 2;
const CLIENT_NAME: u16 = 4;
const SESSION: u16 = 8;
const TLS: u16 = 16;
const HOST: u16 = 32;
const REFERENCE_TEXT: u16 = 64;
const REFERENCE_SPLIT: u16 = 128;
const REASON: u16 = 256;
const PARAMETERS: u16 = 512;
/// `recorded_at` differs from its commit's (kept once per commit in `batches`).
const RECORDED_DELTA: u16 = 1024;

/// `dovecot.log:1234` is stored as an interned prefix and a number; anything that would not
/// print back identically (leading zeros, no digits) stays text.
fn split_reference(r: &str) -> Option<(&str, u64)> {
    let (prefix, digits) = r.rsplit_once(':')?;
    let n: u64 = digits.parse().ok()?;
    (!prefix.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && n.to_string() == digits)
        .then_some((prefix, n))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// What `extra` holds, decoded.
pub(crate) struct Extra {
    /// `recorded_at - time`, or `None` when it is the commit's `recorded_at`.
    pub recorded_delta: Option<i64>,
    pub source: String,
    pub acting_as: Option<String>,
    pub port: Option<u16>,
    pub client_name: Option<String>,
    pub session: Option<String>,
    pub tls: Option<bool>,
    pub host: Option<String>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub parameters: Vec<Parameter>,
}

/// `commit_recorded_at` is the `recorded_at` kept once for the commit the record is in.
pub(crate) fn encode_extra(
    r: &AuditRecord,
    commit_recorded_at: Timestamp,
    intern: &mut Intern<'_>,
) -> Result<Vec<u8>, StoreError> {
    let own_time = r.recorded_at != commit_recorded_at;
    let split = r.provenance.reference.as_deref().and_then(split_reference);
    let flags = presence(&[
        (r.acting_as.is_some(), ACTING_AS),
        (r.client.port.is_some(), PORT),
        (r.client.name.is_some(), CLIENT_NAME),
        (r.client.session.is_some(), SESSION),
        (r.client.tls.is_some(), TLS),
        (r.provenance.host.is_some(), HOST),
        (
            r.provenance.reference.is_some() && split.is_none(),
            REFERENCE_TEXT,
        ),
        (split.is_some(), REFERENCE_SPLIT),
        (r.reason.is_some(), REASON),
        (!r.parameters.is_empty(), PARAMETERS),
        (own_time, RECORDED_DELTA),
    ]);
    let mut out = Vec::with_capacity(24);
    put_varint(&mut out, u64::from(flags));
    if own_time {
        put_varint(
            &mut out,
            zigzag(r.recorded_at.micros().wrapping_sub(r.time.micros())),
        );
    }
    put_varint(&mut out, intern(Kind::Source, &r.provenance.source)? as u64);
    if let Some(v) = &r.acting_as {
        put_varint(&mut out, intern(Kind::Identity, v)? as u64);
    }
    if let Some(v) = r.client.port {
        put_varint(&mut out, u64::from(v));
    }
    if let Some(v) = &r.client.name {
        put_varint(&mut out, intern(Kind::Client, v)? as u64);
    }
    if let Some(v) = &r.client.session {
        put_varint(&mut out, intern(Kind::Session, v)? as u64);
    }
    if let Some(v) = r.client.tls {
        out.push(u8::from(v));
    }
    if let Some(v) = &r.provenance.host {
        put_varint(&mut out, intern(Kind::Source, v)? as u64);
    }
    match (split, &r.provenance.reference) {
        (Some((prefix, n)), _) => {
            put_varint(&mut out, intern(Kind::Source, prefix)? as u64);
            put_varint(&mut out, n);
        }
        (None, Some(text)) => put_str(&mut out, text),
        (None, None) => {}
    }
    if let Some(v) = &r.reason {
        put_str(&mut out, v);
    }
    if !r.parameters.is_empty() {
        put_varint(&mut out, r.parameters.len() as u64);
        for p in &r.parameters {
            put_str(&mut out, &p.name);
            put_str(&mut out, &p.value);
        }
    }
    Ok(out)
}

pub(crate) fn decode_extra(bytes: &[u8], resolve: &mut Resolve<'_>) -> Result<Extra, String> {
    let mut r = Reader { bytes, pos: 0 };
    let flags = u16::try_from(r.varint()?).map_err(|_| "flags out of range")?;
    let has = |bit: u16| flags & bit != 0;
    let mut id = |r: &mut Reader<'_>| -> Result<String, String> {
        let id = i64::try_from(r.varint()?).map_err(|_| "string id out of range")?;
        resolve(id)
    };
    let recorded_delta = has(RECORDED_DELTA)
        .then(|| r.varint().map(unzigzag))
        .transpose()?;
    let source = id(&mut r)?;
    let acting_as = has(ACTING_AS).then(|| id(&mut r)).transpose()?;
    let port = has(PORT)
        .then(|| {
            r.varint()
                .and_then(|p| u16::try_from(p).map_err(|_| format!("port {p}")))
        })
        .transpose()?;
    let client_name = has(CLIENT_NAME).then(|| id(&mut r)).transpose()?;
    let session = has(SESSION).then(|| id(&mut r)).transpose()?;
    let tls = has(TLS).then(|| r.byte().map(|b| b != 0)).transpose()?;
    let host = has(HOST).then(|| id(&mut r)).transpose()?;
    let mut reference = has(REFERENCE_SPLIT)
        .then(|| -> Result<String, String> {
            let prefix = id(&mut r)?;
            Ok(format!("{prefix}:{}", r.varint()?))
        })
        .transpose()?;
    if has(REFERENCE_TEXT) {
        reference = Some(r.str()?);
    }
    let reason = has(REASON).then(|| r.str()).transpose()?;
    let mut parameters = Vec::new();
    if has(PARAMETERS) {
        let n = r.count()?;
        for _ in 0..n {
            parameters.push(Parameter {
                name: r.str()?,
                value: r.str()?,
            });
        }
    }
    r.done()?;
    Ok(Extra {
        recorded_delta,
        source,
        acting_as,
        port,
        client_name,
        session,
        tls,
        host,
        reference,
        reason,
        parameters,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn str(&mut self) -> Result<String, String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.bytes.get(self.pos..end).ok_or("truncated string")?;
        self.pos = end;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".into())
    }
    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        // Every element takes at least one byte, so a count beyond what is left is a lie.
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(format!("count {n} exceeds the data"));
        }
        Ok(n as usize)
    }
    fn done(&self) -> Result<(), String> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err("trailing bytes".into())
        }
    }
}

pub(crate) fn decode_items(
    bytes: Option<&[u8]>,
    resolve: &mut Resolve<'_>,
) -> Result<Vec<Item>, String> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let mut r = Reader { bytes, pos: 0 };
    let n = r.count()?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.byte()?;
        let has = |bit: u8| flags & bit != 0;
        let mut item = Item::default();
        let mut id = |r: &mut Reader<'_>| -> Result<String, String> {
            let id = i64::try_from(r.varint()?).map_err(|_| "string id out of range")?;
            resolve(id)
        };
        if has(UID) {
            item.uid = Some(u32::try_from(r.varint()?).map_err(|_| "uid out of range")?);
        }
        if has(MESSAGE_ID) {
            item.message_id = Some(r.str()?);
        }
        if has(MESSAGE_ID_SPLIT) {
            let local = r.str()?;
            item.message_id = Some(format!("<{local}@{}>", id(&mut r)?));
        }
        if has(SUBJECT) {
            item.subject = Some(id(&mut r)?);
        }
        if has(SIZE) {
            item.size = Some(r.varint()?);
        }
        if has(FOLDER) {
            item.folder = Some(id(&mut r)?);
        }
        if has(UNRESOLVED) {
            item.unresolved = Some(r.str()?);
        }
        items.push(item);
    }
    r.done()?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn items_round_trip_and_garbage_is_an_error() {
        let items = vec![
            Item {
                uid: Some(u32::MAX),
                message_id: Some("<a.b@c.example>".into()),
                subject: Some("Ünïcode & more".into()),
                size: Some(1 << 40),
                folder: Some("Archive".into()),
                unresolved: None,
            },
            Item {
                message_id: Some("not <bracketed@x".into()),
                unresolved: Some("expunged before lookup".into()),
                ..Default::default()
            },
            Item {
                message_id: Some("<@>".into()),
                ..Default::default()
            },
        ];
        let mut dict: HashMap<String, i64> = HashMap::new();
        let bytes = encode_items(&items, &mut |_, v| {
            let n = dict.len() as i64;
            Ok(*dict.entry(v.to_string()).or_insert(n))
        })
        .unwrap()
        .unwrap();
        let names: HashMap<i64, String> = dict.iter().map(|(k, v)| (*v, k.clone())).collect();
        let mut resolve = |id: i64| {
            names
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("no string {id}"))
        };
        assert_eq!(decode_items(Some(&bytes), &mut resolve).unwrap(), items);
        for cut in 0..bytes.len() {
            assert!(
                decode_items(Some(&bytes[..cut]), &mut resolve).is_err(),
                "cut at {cut}"
            );
        }
        assert!(decode_items(Some(&[0xff; 12]), &mut resolve).is_err());
    }

    #[test]
    fn extra_round_trips_every_sample_and_garbage_is_an_error() {
        let mut dict: HashMap<String, i64> = HashMap::new();
        for r in crate::conformance::sample_records(40) {
            let commit = Timestamp::from_secs(1_750_000_000 + 5 * 60 + 1);
            let bytes = encode_extra(&r, commit, &mut |_, v| {
                let n = dict.len() as i64;
                Ok(*dict.entry(v.to_string()).or_insert(n))
            })
            .unwrap();
            let names: HashMap<i64, String> = dict.iter().map(|(k, v)| (*v, k.clone())).collect();
            let mut resolve = |id: i64| {
                names
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| format!("no string {id}"))
            };
            let e = decode_extra(&bytes, &mut resolve).unwrap();
            let recorded = e.recorded_delta.map_or(commit, |d| r.time.plus_micros(d));
            assert_eq!(recorded, r.recorded_at);
            assert_eq!(e.source, r.provenance.source);
            assert_eq!(e.reference, r.provenance.reference);
            assert_eq!(
                (e.acting_as, e.port, e.tls),
                (r.acting_as, r.client.port, r.client.tls)
            );
            assert_eq!(
                (e.client_name, e.session),
                (r.client.name, r.client.session)
            );
            assert_eq!((e.reason, e.parameters), (r.reason, r.parameters));
            for cut in 0..bytes.len() {
                assert!(
                    decode_extra(&bytes[..cut], &mut resolve).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }
}
