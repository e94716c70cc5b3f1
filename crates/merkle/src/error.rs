//! The errors of tree hashing and proofs, named so a caller can tell a bad request from a bad proof.
//!
//! It must never carry secret material or whole proofs: these messages end up in logs.

use thiserror::Error;

/// Why a proof failed to verify, a frontier failed to decode, or a proof request was invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizeOrder { old_size: u64, new_size: u64 },
    #[error("proof has {got} hashes but a proof for these sizes has {expected}")]
    ProofLength { expected: usize, got: usize },
    #[error("proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("proof does not lead to the expected old root hash")]
    OldRootMismatch,
    #[error("frontier encoding is {len} bytes, not 8 plus a multiple of 32")]
    FrontierLength { len: usize },
    #[error("frontier of size {size} needs {expected} hashes but has {got}")]
    FrontierHashCount {
        size: u64,
        expected: u32,
        got: usize,
    },
    #[error("frontier size {size} is beyond the supported maximum of 2^63 - 1")]
    FrontierTooLarge { size: u64 },
}

/// Why proof generation failed: the request itself, or the caller's subtree hash oracle.
#[derive(Debug, Error)]
pub enum ProofError<E> {
    #[error(transparent)]
    Argument(#[from] MerkleError),
    /// Shown rather than chained as `source()`, so any `E: Display + Debug` works, anyhow's too.
    #[error("subtree hash oracle failed: {0}")]
    Oracle(E),
}
