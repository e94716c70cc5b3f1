//! Audit policy and classification: who acted in which capacity (`classify`) and whether the
//! policy wants that recorded (`Policy::decide`).
//!
//! Everything here is a pure function over typed values: no I/O, no clock, no storage. The
//! pipeline loads a `Policy` from the store and calls these on every observation, which is
//! what lets a policy change apply to the very next event without a restart.

mod classify;
mod policy;
mod preset;

pub use classify::{classify, domain_of, same_identity, Classification};
pub use policy::{
    default_actions, ActionEdit, Decision, EffectivePolicy, MailboxPolicy, Policy, PolicyChange,
    PolicyError, SkipReason, DEFAULT_RETENTION_DAYS,
};
pub use preset::Preset;
