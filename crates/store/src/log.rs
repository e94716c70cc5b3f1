//! What makes the log provable, written against the `Store` trait and the canonical encoding
//! only (never against rows): signing checkpoints, re-deriving the whole tree in `verify`,
//! and inclusion proofs that a third party checks offline with the public key.

use crate::{Leaf, Store, StoreError, StoredCheckpoint};
use mailaudit_merkle::{
    inclusion_proof as merkle_inclusion, leaf_hash, node_hash, root_of, verify_inclusion,
    Checkpoint, Frontier, Hash, SignerKey, VerifierKey,
};
use mailaudit_model::{encode_canonical, AuditRecord};
use serde::{Deserialize, Serialize};

/// Subtrees of 2^8 = 256 leaves are stored ("tiles"): proofs then read at most one tile's
/// records plus stored hashes, whatever the size of the log.
pub const TILE_LEVEL: u32 = 8;
const TILE: u64 = 1 << TILE_LEVEL;

/// Signs the current tree head now. The `time` line is kept strictly increasing so that
/// every checkpoint differs from the last, which is what lets `verify` reject a replay.
pub fn sign_checkpoint(
    store: &mut dyn Store,
    key: &SignerKey,
    origin: &str,
) -> Result<StoredCheckpoint, StoreError> {
    let last_time = match store.checkpoints()?.last() {
        Some(c) => Checkpoint::open(&c.note, &key.verifier())
            .map(|c| c.time)
            .unwrap_or(0),
        None => 0,
    };
    let now = u64::try_from(chrono_now_secs()).unwrap_or(0);
    let time = now.max(last_time + 1);
    store.add_checkpoint(&mut |size, root| {
        Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            time,
        }
        .sign(key)
        .map_err(|e| StoreError::Invalid(format!("signing a checkpoint: {e}")))
    })
}

fn chrono_now_secs() -> i64 {
    mailaudit_model::Timestamp::now().micros() / 1_000_000
}

/// The first thing `verify` found wrong, with the leaf index where it can be named.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("checkpoint #{id}: {reason}")]
    Checkpoint { id: u64, reason: String },
    #[error("index {index}: {reason}")]
    Leaf { index: u64, reason: String },
    #[error("index {index}: the record is missing (deleted outside retention)")]
    Missing { index: u64 },
    #[error("indices {first}..{last}: the records no longer hash to the root signed in checkpoint #{checkpoint} (tree size {size}); a record in this range was altered, removed, reordered or inserted")]
    Root {
        checkpoint: u64,
        size: u64,
        first: u64,
        last: u64,
    },
    #[error("index {index}: records were cut off: checkpoint #{checkpoint} signed a tree of {size} leaves but only {index} remain")]
    Truncated {
        index: u64,
        checkpoint: u64,
        size: u64,
    },
    #[error("the stored Merkle state ({stored}) differs from the tree re-derived from the records ({derived})")]
    State { stored: String, derived: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl VerifyError {
    /// The first leaf index named by the error, if any.
    pub fn index(&self) -> Option<u64> {
        match self {
            VerifyError::Leaf { index, .. }
            | VerifyError::Missing { index }
            | VerifyError::Truncated { index, .. } => Some(*index),
            VerifyError::Root { first, .. } => Some(*first),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct VerifyProgress {
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub leaves: u64,
    pub records: u64,
    pub pruned: u64,
    pub checkpoints: u64,
    pub root: String,
    pub latest_checkpoint_size: Option<u64>,
}

/// Re-derives every leaf and the tree from what is stored, checks every checkpoint's
/// signature and root, that checkpoints only grow, and that none was replayed.
pub fn verify(
    store: &dyn Store,
    key: &VerifierKey,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Result<VerifyReport, VerifyError> {
    // Checkpoints first, then the tree: the tree only grows, so every checkpoint read is
    // covered by the tree read after it, even while a server appends and signs meanwhile.
    let stored_checkpoints = store.checkpoints()?;
    let stored_frontier = store.frontier()?;
    let size = stored_frontier.size();

    let mut checkpoints: Vec<(u64, Checkpoint)> = Vec::new();
    let mut seen_notes = std::collections::HashMap::new();
    for c in stored_checkpoints {
        let cp = Checkpoint::open(&c.note, key).map_err(|e| VerifyError::Checkpoint {
            id: c.id,
            reason: format!("signature or format is not valid: {e}"),
        })?;
        if cp.size != c.size {
            return Err(VerifyError::Checkpoint {
                id: c.id,
                reason: format!("stored as size {} but signed for size {}", c.size, cp.size),
            });
        }
        if let Some(prev) = seen_notes.insert(c.note.clone(), c.id) {
            return Err(VerifyError::Checkpoint {
                id: c.id,
                reason: format!("is a replay of checkpoint #{prev}"),
            });
        }
        if let Some((pid, prev)) = checkpoints.last() {
            if cp.time < prev.time || cp.size < prev.size {
                return Err(VerifyError::Checkpoint {
                    id: c.id,
                    reason: format!(
                        "goes back in time or size (size {} at {} after checkpoint #{pid} with size {} at {}): a replayed older checkpoint",
                        cp.size, cp.time, prev.size, prev.time
                    ),
                });
            }
        }
        if cp.size > size {
            return Err(VerifyError::Truncated {
                index: size,
                checkpoint: c.id,
                size: cp.size,
            });
        }
        checkpoints.push((c.id, cp));
    }

    let mut derived = Frontier::new();
    let mut next_cp = 0usize;
    let mut verified_upto = 0u64;
    let mut records = 0u64;
    let mut pruned = 0u64;
    let check_roots = |derived: &Frontier,
                       next_cp: &mut usize,
                       verified_upto: &mut u64|
     -> Result<(), VerifyError> {
        while let Some((id, cp)) = checkpoints.get(*next_cp) {
            if cp.size != derived.size() {
                break;
            }
            if derived.root() != cp.root {
                return Err(VerifyError::Root {
                    checkpoint: *id,
                    size: cp.size,
                    first: *verified_upto,
                    last: cp.size.saturating_sub(1),
                });
            }
            *verified_upto = cp.size;
            *next_cp += 1;
        }
        Ok(())
    };
    check_roots(&derived, &mut next_cp, &mut verified_upto)?;
    let mut tile_error: Option<VerifyError> = None;
    let mut leaf_error: Option<VerifyError> = None;
    // A failure found inside the scan callback; the callback stops the scan with a
    // placeholder store error and the real one is returned from here.
    let mut failure: Option<VerifyError> = None;
    let scanned = store.scan(0, size, &mut |index, leaf| {
        let hash = match leaf {
            Leaf::Record {
                record,
                stored_prefix,
            } => {
                records += 1;
                let h = leaf_hash(&encode_canonical(&record));
                if h[..4] != stored_prefix && leaf_error.is_none() {
                    leaf_error = Some(VerifyError::Leaf {
                        index,
                        reason: "the record differs from what was hashed when it was appended (a field was edited, or records were swapped)".into(),
                    });
                }
                h
            }
            Leaf::Pruned(h) => {
                pruned += 1;
                h
            }
        };
        let mut completed = Vec::new();
        derived.push(hash, |level, idx, h| {
            if level == TILE_LEVEL {
                completed.push((idx, *h));
            }
        });
        for (idx, h) in completed {
            if store.tile(idx)? != Some(h) && tile_error.is_none() {
                tile_error = Some(VerifyError::Leaf {
                    index: idx * TILE,
                    reason: format!(
                        "leaves {}..{} do not hash to the stored subtree hash",
                        idx * TILE,
                        idx * TILE + TILE - 1
                    ),
                });
            }
        }
        if let Err(e) = check_roots(&derived, &mut next_cp, &mut verified_upto) {
            // The leaf locator names the index more precisely than the root range does.
            failure = Some(leaf_error.take().unwrap_or(e));
            return Err(StoreError::Invalid("verification stopped".into()));
        }
        if index.is_multiple_of(65_536) {
            progress(VerifyProgress {
                done: index,
                total: size,
            });
        }
        Ok(())
    });
    if let Some(f) = failure {
        return Err(f);
    }
    match scanned {
        Ok(()) => {}
        Err(StoreError::Missing(index)) => return Err(VerifyError::Missing { index }),
        Err(StoreError::Corrupt { seq, what }) => {
            return Err(VerifyError::Leaf {
                index: seq,
                reason: format!("stored data is unreadable: {what}"),
            })
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(e) = leaf_error.or(tile_error) {
        return Err(e);
    }
    progress(VerifyProgress {
        done: size,
        total: size,
    });
    if derived.root() != stored_frontier.root() {
        return Err(VerifyError::State {
            stored: hex::encode(stored_frontier.root()),
            derived: hex::encode(derived.root()),
        });
    }
    Ok(VerifyReport {
        leaves: size,
        records,
        pruned,
        checkpoints: checkpoints.len() as u64,
        root: hex::encode(derived.root()),
        latest_checkpoint_size: checkpoints.last().map(|(_, c)| c.size),
    })
}

/// An inclusion proof for one record, with the signed checkpoint it is proved against:
/// everything a third party needs, with the public key, to check it offline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionProof {
    pub format: String,
    pub record: AuditRecord,
    pub leaf_index: u64,
    pub leaf_hash: String,
    pub tree_size: u64,
    pub proof: Vec<String>,
    pub checkpoint: String,
}

pub const PROOF_FORMAT: &str = "mailaudit-inclusion-proof-v1";

/// Leaf hashes of `[a, b)` re-derived from the records (or kept pruned hashes).
fn leaves_of(store: &dyn Store, a: u64, b: u64) -> Result<Vec<Hash>, StoreError> {
    let mut out = Vec::with_capacity((b - a) as usize);
    store.scan(a, b, &mut |_, leaf| {
        out.push(match leaf {
            Leaf::Record { record, .. } => leaf_hash(&encode_canonical(&record)),
            Leaf::Pruned(h) => h,
        });
        Ok(())
    })?;
    Ok(out)
}

/// RFC 6962 MTH of `[a, b)`: whole aligned tiles come from stored hashes, the rest from
/// re-derived leaves.
fn subtree_hash(store: &dyn Store, a: u64, b: u64) -> Result<Hash, StoreError> {
    let n = b - a;
    if n <= TILE {
        return Ok(root_of(&leaves_of(store, a, b)?));
    }
    if n.is_power_of_two() && a.is_multiple_of(TILE) {
        let mut tiles = Vec::with_capacity((n / TILE) as usize);
        for i in a / TILE..b / TILE {
            tiles.push(store.tile(i)?.ok_or_else(|| {
                StoreError::Invalid(format!("tile {i} is missing; run `mailaudit verify`"))
            })?);
        }
        // Complete subtrees of equal size fold like leaves.
        return Ok(mailaudit_merkle::root_of(&tiles));
    }
    let k = mailaudit_merkle::split_point(n);
    Ok(node_hash(
        &subtree_hash(store, a, a + k)?,
        &subtree_hash(store, a + k, b)?,
    ))
}

/// Builds the inclusion proof of record `seq` against a stored checkpoint covering it.
pub fn inclusion_proof(
    store: &dyn Store,
    seq: u64,
    checkpoint: &StoredCheckpoint,
) -> Result<InclusionProof, StoreError> {
    if seq >= checkpoint.size {
        return Err(StoreError::Invalid(format!(
            "record {seq} is not covered by checkpoint #{} (size {})",
            checkpoint.id, checkpoint.size
        )));
    }
    let record = store.get(seq)?.ok_or_else(|| {
        StoreError::Invalid(format!(
            "record {seq} does not exist or its contents were removed by retention"
        ))
    })?;
    let leaf = leaf_hash(&encode_canonical(&record));
    let proof = merkle_inclusion(seq, checkpoint.size, &mut |a, b| subtree_hash(store, a, b))
        .map_err(|e| StoreError::Invalid(format!("building the proof: {e}")))?;
    Ok(InclusionProof {
        format: PROOF_FORMAT.into(),
        record,
        leaf_index: seq,
        leaf_hash: hex::encode(leaf),
        tree_size: checkpoint.size,
        proof: proof.iter().map(hex::encode).collect(),
        checkpoint: checkpoint.note.clone(),
    })
}

impl InclusionProof {
    /// Checks the proof offline: the checkpoint's signature, that the record hashes to the
    /// leaf, and that the leaf is in the signed tree.
    pub fn verify(&self, key: &VerifierKey) -> Result<Checkpoint, String> {
        if self.format != PROOF_FORMAT {
            return Err(format!("unknown proof format `{}`", self.format));
        }
        let cp = Checkpoint::open(&self.checkpoint, key).map_err(|e| format!("checkpoint: {e}"))?;
        if cp.size != self.tree_size {
            return Err(format!(
                "the proof is for a tree of {} leaves but the checkpoint signs {}",
                self.tree_size, cp.size
            ));
        }
        if self.record.seq != self.leaf_index {
            return Err("the record's seq differs from the proof's leaf index".into());
        }
        let leaf = leaf_hash(&encode_canonical(&self.record));
        if hex::encode(leaf) != self.leaf_hash {
            return Err("the record does not hash to the proof's leaf hash: it was altered".into());
        }
        let path = self
            .proof
            .iter()
            .enumerate()
            .map(|(i, h)| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
                    .ok_or_else(|| format!("proof hash {i} is not 32 bytes of hex"))
            })
            .collect::<Result<Vec<Hash>, String>>()?;
        verify_inclusion(&leaf, self.leaf_index, self.tree_size, &path, &cp.root)
            .map_err(|e| format!("the inclusion proof does not lead to the signed root: {e}"))?;
        Ok(cp)
    }
}
