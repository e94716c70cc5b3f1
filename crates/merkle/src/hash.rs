//! RFC 6962 hashing: leaf and interior node hashes and the Merkle Tree Hash of a leaf list.
//!
//! It must never drop or change the 0x00/0x01 domain prefixes: they are what stop a leaf from
//! being passed off as an interior node (a second-preimage attack on the tree).

use sha2::{Digest, Sha256};

use crate::Frontier;

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(data)
        .finalize()
        .into()
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The MTH of the empty tree, SHA-256 of no bytes (RFC 6962 section 2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// RFC 6962 MTH over a slice of leaf hashes.
pub fn root_of(leaves: &[Hash]) -> Hash {
    // The frontier folds in O(n) time and O(log n) memory, with no recursion to bound.
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf, |_, _, _| {});
    }
    frontier.root()
}

/// The largest power of two strictly below `n`, where RFC 6962 splits a tree of `n >= 2` leaves.
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}
