//! The compact on-disk form of a record's items and parameters in the embedded backend.
//! It is a storage detail, not the canonical encoding: the hash never sees these bytes.
//! Decoding treats the bytes as untrusted (they may have been edited) and never panics.

use mailaudit_model::{Item, Parameter};

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

const UID: u8 = 1;
const MESSAGE_ID: u8 = 2;
const SUBJECT: u8 = 4;
const SIZE: u8 = 8;
const FOLDER: u8 = 16;
const UNRESOLVED: u8 = 32;

pub(crate) fn encode_items(items: &[Item]) -> Option<Vec<u8>> {
    if items.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(items.len() * 48);
    put_varint(&mut out, items.len() as u64);
    for i in items {
        let flags = [
            (i.uid.is_some(), UID),
            (i.message_id.is_some(), MESSAGE_ID),
            (i.subject.is_some(), SUBJECT),
            (i.size.is_some(), SIZE),
            (i.folder.is_some(), FOLDER),
            (i.unresolved.is_some(), UNRESOLVED),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .fold(0u8, |acc, (_, bit)| acc | bit);
        out.push(flags);
        if let Some(v) = i.uid {
            put_varint(&mut out, u64::from(v));
        }
        if let Some(v) = &i.message_id {
            put_str(&mut out, v);
        }
        if let Some(v) = &i.subject {
            put_str(&mut out, v);
        }
        if let Some(v) = i.size {
            put_varint(&mut out, v);
        }
        if let Some(v) = &i.folder {
            put_str(&mut out, v);
        }
        if let Some(v) = &i.unresolved {
            put_str(&mut out, v);
        }
    }
    Some(out)
}

pub(crate) fn encode_parameters(params: &[Parameter]) -> Option<Vec<u8>> {
    if params.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    put_varint(&mut out, params.len() as u64);
    for p in params {
        put_str(&mut out, &p.name);
        put_str(&mut out, &p.value);
    }
    Some(out)
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

pub(crate) fn decode_items(bytes: Option<&[u8]>) -> Result<Vec<Item>, String> {
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
        if has(UID) {
            item.uid = Some(u32::try_from(r.varint()?).map_err(|_| "uid out of range")?);
        }
        if has(MESSAGE_ID) {
            item.message_id = Some(r.str()?);
        }
        if has(SUBJECT) {
            item.subject = Some(r.str()?);
        }
        if has(SIZE) {
            item.size = Some(r.varint()?);
        }
        if has(FOLDER) {
            item.folder = Some(r.str()?);
        }
        if has(UNRESOLVED) {
            item.unresolved = Some(r.str()?);
        }
        items.push(item);
    }
    r.done()?;
    Ok(items)
}

pub(crate) fn decode_parameters(bytes: Option<&[u8]>) -> Result<Vec<Parameter>, String> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let mut r = Reader { bytes, pos: 0 };
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Parameter {
            name: r.str()?,
            value: r.str()?,
        });
    }
    r.done()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_garbage_is_an_error() {
        let items = vec![
            Item {
                uid: Some(u32::MAX),
                message_id: Some("<a@b>".into()),
                subject: Some("Ünïcode & more".into()),
                size: Some(1 << 40),
                folder: None,
                unresolved: None,
            },
            Item {
                unresolved: Some("expunged before lookup".into()),
                ..Default::default()
            },
        ];
        let bytes = encode_items(&items).unwrap();
        assert_eq!(decode_items(Some(&bytes)).unwrap(), items);
        for cut in 0..bytes.len() {
            assert!(decode_items(Some(&bytes[..cut])).is_err(), "cut at {cut}");
        }
        assert!(decode_items(Some(&[0xff; 12])).is_err());
    }
}
