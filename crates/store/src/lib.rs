//! The audit store: an append-only log of `AuditRecord`s, each a leaf of an RFC 6962 Merkle
//! tree, with signed checkpoints, queries, retention and verification.
//!
//! The `Store` trait hides the physical layout. Everything that makes the log provable
//! (`verify`, `proof`, checkpoints) is written against the trait and the canonical encoding,
//! never against rows, so another backend only has to return the same records. Nothing here
//! applies policy or knows about HTTP: records arrive already classified and filtered.

mod blob;
pub mod conformance;
mod coverage;
mod error;
mod log;
mod query;
mod sqlite;

pub use coverage::{coverage_ranges, CoverageEntry, CoverageGroup, CoverageRange};
pub use error::StoreError;
pub use log::{
    inclusion_proof, sign_checkpoint, verify, InclusionProof, VerifyError, VerifyProgress,
    VerifyReport, TILE_LEVEL,
};
pub use mailaudit_merkle::{Checkpoint, Hash, SignerKey, VerifierKey};
pub use query::{IpFilter, NonOwner, PageRequest, Query, SearchPage};
pub use sqlite::SqliteStore;

use mailaudit_merkle::Frontier;
use mailaudit_model::{AuditRecord, Timestamp};

/// A stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub id: u64,
    pub size: u64,
    pub note: String,
}

/// What the log holds at one index: the record, or only its leaf hash after retention.
#[derive(Debug, Clone)]
pub enum Leaf {
    Record {
        record: Box<AuditRecord>,
        /// The first 4 bytes of the leaf hash, written at append time. A locator, not a
        /// proof: it lets `verify` name the index that was edited.
        stored_prefix: [u8; 4],
    },
    Pruned(Hash),
}

/// A bearer token as stored: only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub created: Timestamp,
    pub revoked: bool,
}

/// The physical store. One conformance suite (`conformance`) holds every backend to the same
/// behaviour.
pub trait Store: Send {
    /// Appends records in one durable transaction: when this returns `Ok`, they are on disk.
    /// Assigns each record's `seq` (its leaf index) and returns the records as stored.
    /// `settings` are written in the same transaction: a policy change and the record of
    /// it, or a log follower's position and the records of the lines it read, land together
    /// or not at all.
    fn append(
        &mut self,
        records: Vec<AuditRecord>,
        settings: &[(&str, &str)],
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Like `append`, for imported history: `keys[i]` is a digest of the source key naming
    /// the original record `records[i]` was read from. A record whose key the store already
    /// holds, from an earlier append or earlier in this batch, is not appended, so importing
    /// a file twice, or two overlapping exports, adds each original record once. Returns, in
    /// input order, the record as stored or `None` for a duplicate. Keys live beside the log,
    /// not in it: the canonical encoding of a record does not change.
    fn append_keyed(
        &mut self,
        records: Vec<AuditRecord>,
        keys: &[Hash],
        settings: &[(&str, &str)],
    ) -> Result<Vec<Option<AuditRecord>>, StoreError>;

    fn get(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError>;

    /// Newest first. No result is ever capped: page through with the cursor.
    fn search(&self, query: &Query, page: &PageRequest) -> Result<SearchPage, StoreError>;

    /// Number of leaves in the log (records plus pruned leaves).
    fn size(&self) -> Result<u64, StoreError>;

    /// Calls `f` for every leaf in `[from, to)` in index order. Yields an error for a gap.
    fn scan(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(u64, Leaf) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The stored hash of the complete 2^TILE_LEVEL-leaf subtree with this index.
    fn tile(&self, index: u64) -> Result<Option<Hash>, StoreError>;

    fn frontier(&self) -> Result<Frontier, StoreError>;

    /// Signs the current tree head with `sign(size, root)` and stores the note, serialised
    /// with appends.
    fn add_checkpoint(
        &mut self,
        sign: &mut dyn FnMut(u64, Hash) -> Result<String, StoreError>,
    ) -> Result<StoredCheckpoint, StoreError>;

    /// All checkpoints in the order they were stored.
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// A versioned setting (the policy lives here). The version grows with every write, so a
    /// reader can tell cheaply whether to reload.
    fn setting(&self, key: &str) -> Result<Option<(u64, String)>, StoreError>;

    /// Removes the contents of records older than their cutoff, keeping their leaf hashes.
    /// `cutoff_for(mailbox)` gives the oldest time to keep for a mailbox. Returns how many
    /// records were pruned.
    fn prune(&mut self, cutoff_for: &dyn Fn(&str) -> Timestamp) -> Result<u64, StoreError>;

    fn put_token(&mut self, hash: &Hash, info: &TokenInfo) -> Result<(), StoreError>;
    fn token(&self, hash: &Hash) -> Result<Option<TokenInfo>, StoreError>;
    fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    fn revoke_token(&mut self, name: &str) -> Result<bool, StoreError>;

    /// Records the spans imported files cover; an entry for the same source, file and
    /// mailbox replaces the earlier one (a re-import of the file).
    fn add_coverage(&mut self, entries: &[CoverageEntry]) -> Result<(), StoreError>;
    /// Every coverage entry, by source, mailbox and start.
    fn coverage(&self) -> Result<Vec<CoverageEntry>, StoreError>;
}
