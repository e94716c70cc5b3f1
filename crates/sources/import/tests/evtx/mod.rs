//! A test-only writer of Windows EVTX files (the binary format of `.evtx`), from the public
//! descriptions of the format (MS-EVEN6 BinXML; the file and chunk layout as documented by
//! libevtx): a 4 KiB file header, 64 KiB chunks with their header and record CRC32s, and
//! event records whose BinXML spells every element out (no templates), which is what a
//! record may legally hold. It exists so that the importer is tested against the real
//! format read by the real evtx crate, without copying anyone's log file.

use std::collections::HashMap;

pub enum Node {
    Element {
        name: &'static str,
        attrs: Vec<(&'static str, String)>,
        children: Vec<Node>,
    },
    Text(String),
}

pub fn el(name: &'static str, attrs: &[(&'static str, &str)], children: Vec<Node>) -> Node {
    Node::Element {
        name,
        attrs: attrs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        children,
    }
}

pub fn text(name: &'static str, value: &str) -> Node {
    el(name, &[], vec![Node::Text(value.to_string())])
}

pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const CHUNK: usize = 65536;
const CHUNK_HEADER: usize = 512;

struct Chunk {
    data: Vec<u8>,
    pos: usize,
    names: HashMap<&'static str, u32>,
    first_id: Option<u64>,
    last_id: u64,
    last_offset: usize,
}

impl Chunk {
    fn new() -> Self {
        let mut data = vec![0u8; CHUNK];
        data[..8].copy_from_slice(b"ElfChnk\0");
        Chunk {
            data,
            pos: CHUNK_HEADER,
            names: HashMap::new(),
            first_id: None,
            last_id: 0,
            last_offset: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.data[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    /// A name reference: the offset of a name already in this chunk, or the name itself
    /// right after its offset.
    fn name(&mut self, name: &'static str) {
        if let Some(&offset) = self.names.get(name) {
            self.u32(offset);
            return;
        }
        let offset = (self.pos + 4) as u32;
        self.names.insert(name, offset);
        self.u32(offset);
        self.u32(0); // next string in the hash bucket
        let units: Vec<u16> = name.encode_utf16().collect();
        let hash = units.iter().fold(0u32, |h, u| {
            h.wrapping_mul(65599).wrapping_add(u32::from(*u))
        });
        self.u16(hash as u16);
        self.u16(units.len() as u16);
        for u in units {
            self.u16(u);
        }
        self.u16(0);
    }

    fn value(&mut self, s: &str) {
        let units: Vec<u16> = s.encode_utf16().collect();
        self.put(&[0x05, 0x01]);
        self.u16(units.len() as u16);
        for u in units {
            self.u16(u);
        }
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::Text(t) => self.value(t),
            Node::Element {
                name,
                attrs,
                children,
            } => {
                self.put(&[if attrs.is_empty() { 0x01 } else { 0x41 }]);
                let size_at = self.pos;
                self.u32(0);
                self.name(name);
                let attrs_at = self.pos;
                if !attrs.is_empty() {
                    self.u32(0);
                    for (i, (k, v)) in attrs.iter().enumerate() {
                        self.put(&[if i + 1 < attrs.len() { 0x46 } else { 0x06 }]);
                        self.name(k);
                        self.value(v);
                    }
                    let n = (self.pos - attrs_at - 4) as u32;
                    self.data[attrs_at..attrs_at + 4].copy_from_slice(&n.to_le_bytes());
                }
                if children.is_empty() {
                    self.put(&[0x03]);
                } else {
                    self.put(&[0x02]);
                    for c in children {
                        self.node(c);
                    }
                    self.put(&[0x04]);
                }
                let n = (self.pos - size_at - 4) as u32;
                self.data[size_at..size_at + 4].copy_from_slice(&n.to_le_bytes());
            }
        }
    }

    /// Appends a record; false when it does not fit.
    fn record(&mut self, id: u64, filetime: u64, root: &Node) -> bool {
        let (saved_pos, saved_names) = (self.pos, self.names.clone());
        if self.pos + 4096 > CHUNK {
            return false;
        }
        let start = self.pos;
        self.put(b"\x2a\x2a\0\0");
        self.u32(0);
        self.put(&id.to_le_bytes());
        self.put(&filetime.to_le_bytes());
        self.put(&[0x0f, 0x01, 0x01, 0x00]);
        self.node(root);
        self.put(&[0x00]);
        let size = (self.pos - start + 4) as u32;
        self.u32(size);
        if self.pos > CHUNK {
            self.pos = saved_pos;
            self.names = saved_names;
            return false;
        }
        self.data[start + 4..start + 8].copy_from_slice(&size.to_le_bytes());
        self.first_id.get_or_insert(id);
        self.last_id = id;
        self.last_offset = start;
        true
    }

    fn finish(mut self) -> Vec<u8> {
        let first = self.first_id.unwrap_or(0);
        let d = &mut self.data;
        d[8..16].copy_from_slice(&first.to_le_bytes());
        d[16..24].copy_from_slice(&self.last_id.to_le_bytes());
        d[24..32].copy_from_slice(&first.to_le_bytes());
        d[32..40].copy_from_slice(&self.last_id.to_le_bytes());
        d[40..44].copy_from_slice(&128u32.to_le_bytes());
        d[44..48].copy_from_slice(&(self.last_offset as u32).to_le_bytes());
        d[48..52].copy_from_slice(&(self.pos as u32).to_le_bytes());
        let events = crc32(&d[CHUNK_HEADER..self.pos]);
        d[52..56].copy_from_slice(&events.to_le_bytes());
        let mut header = d[..120].to_vec();
        header.extend_from_slice(&d[128..512]);
        let crc = crc32(&header);
        d[124..128].copy_from_slice(&crc.to_le_bytes());
        self.data
    }
}

/// Seconds since 1970 → FILETIME (100 ns since 1601).
pub fn filetime(unix_secs: i64) -> u64 {
    ((unix_secs + 11_644_473_600) * 10_000_000) as u64
}

/// Writes `records` (id, FILETIME, event) into an EVTX file: as many chunks as they need,
/// at most `per_chunk` records in each.
pub fn write_evtx(records: &[(u64, u64, Node)], per_chunk: usize) -> Vec<u8> {
    let mut chunks = Vec::new();
    let mut chunk = Chunk::new();
    let mut in_chunk = 0;
    for (id, ft, node) in records {
        if in_chunk == per_chunk || !chunk.record(*id, *ft, node) {
            chunks.push(std::mem::replace(&mut chunk, Chunk::new()).finish());
            in_chunk = 0;
            assert!(chunk.record(*id, *ft, node), "a record larger than a chunk");
        }
        in_chunk += 1;
    }
    chunks.push(chunk.finish());
    let mut file = vec![0u8; 4096];
    file[..8].copy_from_slice(b"ElfFile\0");
    let n = chunks.len() as u64;
    let next = records.last().map_or(1, |r| r.0 + 1);
    file[16..24].copy_from_slice(&(n - 1).to_le_bytes());
    file[24..32].copy_from_slice(&next.to_le_bytes());
    file[32..36].copy_from_slice(&128u32.to_le_bytes());
    file[36..38].copy_from_slice(&1u16.to_le_bytes());
    file[38..40].copy_from_slice(&3u16.to_le_bytes());
    file[40..42].copy_from_slice(&4096u16.to_le_bytes());
    file[42..44].copy_from_slice(&(n as u16).to_le_bytes());
    let crc = crc32(&file[..120]);
    file[124..128].copy_from_slice(&crc.to_le_bytes());
    for c in chunks {
        file.extend_from_slice(&c);
    }
    file
}
