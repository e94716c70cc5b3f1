//! RFC 6962 inclusion and consistency proofs: generation over a subtree hash oracle, and the
//! RFC 9162 section 2.1.3.2 / 2.1.4.2 verification algorithms.
//!
//! Verification must never accept a proof of the wrong length or one that does not rebuild the
//! exact root(s) given; generation must never ask the oracle for a range outside [0, size).

use crate::hash::split_point;
use crate::{empty_root, node_hash, Hash, MerkleError, ProofError};

/// RFC 6962 `PATH(index, D[0:size])`, leaf-side sibling first.
///
/// `mth(start, end)` must return the MTH of leaves [start, end). It is only asked for perfect,
/// aligned subtrees and for ranges that end at `size`, so tiles can answer most requests.
pub fn inclusion_proof<E>(
    index: u64,
    size: u64,
    mth: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProofError<E>> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size }.into());
    }
    // Walk from the root down to the leaf, collecting the sibling at each split; RFC 6962
    // lists them from the leaf up, hence the final reverse.
    let (mut start, mut end) = (0, size);
    let mut proof = Vec::new();
    while end - start > 1 {
        let mid = start + split_point(end - start);
        if index < mid {
            proof.push(mth(mid, end).map_err(ProofError::Oracle)?);
            end = mid;
        } else {
            proof.push(mth(start, mid).map_err(ProofError::Oracle)?);
            start = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// RFC 6962 `PROOF(old_size, D[0:new_size])`; empty when `old_size` is 0 or equals `new_size`.
///
/// Oracle ranges are perfect aligned subtrees or ranges ending at `new_size` or `old_size`.
pub fn consistency_proof<E>(
    old_size: u64,
    new_size: u64,
    mth: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProofError<E>> {
    if old_size > new_size {
        return Err(MerkleError::SizeOrder { old_size, new_size }.into());
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // Invariant: start < old_size <= end. The old root is a node of the new tree only while
    // we have never stepped right; once we have, its subtree hash must be in the proof.
    let (mut start, mut end) = (0, new_size);
    let mut is_old_root = true;
    let mut proof = Vec::new();
    while old_size < end {
        let mid = start + split_point(end - start);
        if old_size <= mid {
            proof.push(mth(mid, end).map_err(ProofError::Oracle)?);
            end = mid;
        } else {
            proof.push(mth(start, mid).map_err(ProofError::Oracle)?);
            start = mid;
            is_old_root = false;
        }
    }
    if !is_old_root {
        proof.push(mth(start, end).map_err(ProofError::Oracle)?);
    }
    proof.reverse();
    Ok(proof)
}

/// Number of hashes in the inclusion proof for `index` in a tree of `size` leaves: the levels
/// below the node where the paths to `index` and `size - 1` diverge, plus the left-hand
/// subtrees passed on the way down the right border above it.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    (inner + (index >> inner).count_ones()) as usize
}

/// Number of hashes in a consistency proof for 0 < old_size < new_size: the inclusion proof of
/// the old tree's last perfect subtree, plus that subtree itself unless it is the old root.
fn consistency_len(old_size: u64, new_size: u64) -> usize {
    let shift = old_size.trailing_zeros();
    let seed = usize::from(!old_size.is_power_of_two());
    seed + inclusion_len((old_size - 1) >> shift, ((new_size - 1) >> shift) + 1)
}

/// RFC 9162 section 2.1.3.2. The length is checked first, so a short or padded proof is named
/// as such rather than as a root mismatch.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(MerkleError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            // On the right border the tree may skip levels; climb past them.
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    debug_assert_eq!(s, 0, "the length check fixes the number of steps");
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 section 2.1.4.2, with the same up-front length check. Equal sizes need equal roots
/// and an empty proof; old size 0 needs `empty_root()` as the old root and an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizeOrder { old_size, new_size });
    }
    let expected = if old_size == 0 || old_size == new_size {
        0
    } else {
        consistency_len(old_size, new_size)
    };
    if proof.len() != expected {
        return Err(MerkleError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    if old_size == 0 {
        // Any tree extends the empty one, but a wrong old root still means a confused caller.
        if *old_root != empty_root() {
            return Err(MerkleError::OldRootMismatch);
        }
        return Ok(());
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }
    // A power-of-two old tree is itself a node of the new tree, so the proof omits it.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        proof
            .split_first()
            .ok_or(MerkleError::ProofLength { expected, got: 0 })?
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    // Levels where the old tree's last node is a right child are inside the seed subtree.
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut old_r, mut new_r) = (*seed, *seed);
    for c in rest {
        if f & 1 == 1 || f == s {
            old_r = node_hash(c, &old_r);
            new_r = node_hash(c, &new_r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            new_r = node_hash(&new_r, c);
        }
        f >>= 1;
        s >>= 1;
    }
    debug_assert_eq!(s, 0, "the length check fixes the number of steps");
    if old_r != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    if new_r != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}
