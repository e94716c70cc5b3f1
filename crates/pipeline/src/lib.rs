//! The pipeline: an `Observation` becomes a classified `AuditRecord`, the policy decides
//! whether it is kept, the store appends it durably, and subscribers see it.
//!
//! Sources never write to the store; they hand observations to an `Auditor` (in-process, as
//! the CLI does) or to a `WriterHandle` (the server's single writer thread, which merges
//! concurrent batches into one durable commit). The policy is re-read from the store whenever
//! its version changes, checked before every batch, so a change made by any process applies
//! to the next observation without a restart.

mod auditor;
mod writer;

pub use auditor::{
    load_policy, normalise, source_key_hash, Actor, Auditor, ImportOutcome, IngestOutcome,
    PipelineError, Stats, POLICY_SETTING,
};
pub use writer::{WriterConfig, WriterHandle};
