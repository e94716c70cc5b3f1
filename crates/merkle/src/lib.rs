//! mailaudit's Merkle log primitives: RFC 6962 hashing, an append-only frontier, inclusion and
//! consistency proofs, and C2SP signed-note checkpoints.
//!
//! This crate does no I/O and keeps no state beyond what a caller hands it: storage decides
//! where leaves, tiles and checkpoints live. It must never change a hash or an encoding once
//! shipped, because every checkpoint already signed commits to those exact bytes.

pub mod checkpoint;
mod error;
mod frontier;
mod hash;
mod proof;

pub use checkpoint::{Checkpoint, CheckpointError, SignerKey, VerifierKey};
pub use error::{MerkleError, ProofError};
pub use frontier::Frontier;
pub use hash::{empty_root, leaf_hash, node_hash, root_of, split_point, Hash};
pub use proof::{consistency_proof, inclusion_proof, verify_consistency, verify_inclusion};
