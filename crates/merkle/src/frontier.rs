//! The frontier (compact range) of an append-only tree: enough to append and to compute the root
//! without keeping the leaves, and small enough to persist after every batch.
//!
//! It must never hold a hash count other than popcount(size), nor accept bytes that break that,
//! because a wrong frontier silently forks the log: every later root would be wrong.

use crate::{empty_root, node_hash, Hash, MerkleError};

/// The roots of the perfect subtrees covering leaves [0, size), largest first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

/// A bound far beyond any real log that keeps `size + 1` and every shift in `push` in range.
const MAX_SIZE: u64 = (1 << 63) - 1;

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree roots, largest first; exposed so callers can inspect or log them.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash. Calls `on_complete(level, index, hash)` for each perfect subtree
    /// completed by this append at level >= 1 (level = log2 of its leaf count, index = its
    /// position at that level), so a caller can persist e.g. every level-8 (256-leaf) tile hash.
    pub fn push(&mut self, leaf: Hash, mut on_complete: impl FnMut(u32, u64, &Hash)) {
        let position = self.size;
        let mut hash = leaf;
        let mut level = 0u32;
        // Each trailing one bit of the old size is a perfect subtree exactly as tall as the one
        // being built, so the two merge; the first zero bit is where the new subtree stops.
        while (position >> level) & 1 == 1 {
            let Some(left) = self.hashes.pop() else {
                break; // unreachable while hashes.len() == popcount(size)
            };
            hash = node_hash(&left, &hash);
            level += 1;
            on_complete(level, position >> level, &hash);
        }
        self.hashes.push(hash);
        // Cannot overflow: from_bytes caps size at MAX_SIZE and 2^63 appends never happen.
        self.size += 1;
    }

    /// RFC 6962 MTH of all leaves so far; `empty_root()` when there are none.
    pub fn root(&self) -> Hash {
        // The smallest subtrees hang off the right edge, so fold from the right.
        let mut rest = self.hashes.iter().rev();
        match rest.next() {
            None => empty_root(),
            Some(last) => rest.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// 8-byte big-endian size followed by the hashes, largest subtree first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.hashes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for hash in &self.hashes {
            out.extend_from_slice(hash);
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, MerkleError> {
        let bad_length = MerkleError::FrontierLength { len: b.len() };
        let (size, rest) = b.split_first_chunk::<8>().ok_or(bad_length.clone())?;
        let size = u64::from_be_bytes(*size);
        let (chunks, remainder) = rest.as_chunks::<32>();
        if !remainder.is_empty() {
            return Err(bad_length);
        }
        if size > MAX_SIZE {
            return Err(MerkleError::FrontierTooLarge { size });
        }
        if chunks.len() != size.count_ones() as usize {
            return Err(MerkleError::FrontierHashCount {
                size,
                expected: size.count_ones(),
                got: chunks.len(),
            });
        }
        Ok(Self {
            size,
            hashes: chunks.to_vec(),
        })
    }
}
