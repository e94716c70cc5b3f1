//! Where mailaudit's alerts and records go: alert deliveries (a signed webhook, email through
//! an SMTP relay, syslog RFC 5424 or CEF over UDP/TCP/TLS), record streams for SIEMs (JSON
//! Lines or Elastic Common Schema to a file, stdout or syslog), and per-mailbox daily audit
//! files.
//!
//! Everything here follows the store by `seq` from positions persisted in the data
//! directory's `outputs.sqlite`; nothing appends to the audit log. A live broadcast only
//! wakes the threads up, so a lagging subscriber or a restart loses nothing.

pub mod config;
pub mod daily;
pub mod db;
pub mod deliver;
pub mod format;
mod runner;
pub mod syslog;

pub use config::OutputsConfig;
pub use runner::{Outputs, RulesSource, Shared, Wake};

use mailaudit_alerts::RuleConfig;
use mailaudit_model::Parameter;

/// The parameters of the `AuditPolicyChange` record a rules change is recorded as, wherever
/// it is made (API or console): switching an alert off must leave a trace of what it was.
pub fn rules_change_parameters(before: &[RuleConfig], after: &[RuleConfig]) -> Vec<Parameter> {
    let json = |v: &[RuleConfig]| serde_json::to_string(v).unwrap_or_default();
    let param = |name: &str, value: String| Parameter {
        name: name.into(),
        value,
    };
    vec![
        param("change", r#"{"change":"alert_rules"}"#.into()),
        param("before", json(before)),
        param("after", json(after)),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("outputs configuration: {0}")]
    Config(String),
    #[error("outputs database: {0}")]
    Db(String),
    #[error("audit store: {0}")]
    Store(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Delivery(String),
}
#[cfg(test)]
mod tests;
