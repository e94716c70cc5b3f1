//! The record model of mailaudit: what a source observed (`Observation`), what the log keeps
//! (`AuditRecord`), the Exchange-named operations, logon types and results, and the versioned
//! canonical encoding that the Merkle log hashes.
//!
//! This crate does no I/O and knows nothing of storage, HTTP or the terminal. The canonical
//! encoding is a contract: a byte that changes here changes every leaf hash, so any change to
//! it needs a new version number, never an edit of version 1.

mod canonical;
mod imported;
mod observation;
mod operation;
mod record;
mod time;

pub use canonical::{encode_canonical, CANONICAL_VERSION};
pub use imported::ImportedObservation;
pub use observation::{
    clip, parse_observation_json, Observation, ObservationError, MAX_FIELD_LEN, MAX_ITEMS,
};
pub use operation::{LogonType, Operation, OperationResult, ParseEnumError};
pub use record::{AuditRecord, Client, Item, Parameter, Provenance};
pub use time::{Timestamp, TimestampError};
