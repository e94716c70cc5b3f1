//! Alert rules for mailaudit: the accesses that matter (non-owner access to VIPs, admin
//! impersonation, forwarding inbox rules, auditing weakened, mass deletion, failed logins,
//! logins from somewhere new, SendAs), evaluated on every record as it is appended.
//!
//! Pure and deterministic: no I/O and no clock of its own. Time windows run on the records'
//! times; `Engine::tick(now)` is the only way the wall clock gets in. Delivery is someone
//! else's job (`mailaudit-outputs`).

mod engine;
mod rules;
#[cfg(test)]
mod tests;

pub use engine::{kind_name, Alert, Engine, EngineState};
pub use rules::{
    validate, FailedBy, NonOwnerLogon, RuleConfig, RuleError, RuleKind, SeenWhat, Severity,
    Weakening,
};
