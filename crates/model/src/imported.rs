//! An observation read from another system's audit history (an importer's output).
//!
//! Imported history already carries the judgement of the system that recorded it: Exchange
//! says whether an access was Owner, Delegate or Admin, and a re-import of a file must not
//! add its records twice. So an import carries, next to the `Observation`, the logon type
//! the original system reported (when it did) and a stable source key that names the
//! original record independently of the file it was read from.

use crate::{LogonType, Observation};

/// One record of imported history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedObservation {
    pub observation: Observation,
    /// Names the original record, stable across files and re-imports (an M365 record `Id`,
    /// a digest of an Exchange event's fields, `file-digest:line`…). Two imports with the
    /// same key are the same record: the store keeps the first and counts the rest as
    /// duplicates.
    pub source_key: String,
    /// The logon type the original system reported. `None` lets the pipeline classify as
    /// it does for live sources.
    pub logon_type: Option<LogonType>,
    /// Whether the original system called the access external. `None`: derived from the
    /// domains, as for live sources.
    pub external: Option<bool>,
}
