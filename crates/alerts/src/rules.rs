//! Rule configuration as people write it (TOML `[[rules]]` tables, or JSON over the API),
//! validated into rules the engine can run. Validation names the rule and the field.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How serious an alert is; maps to syslog severity and CEF severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Which non-owner accesses a `non_owner_access` rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonOwnerLogon {
    Delegate,
    Admin,
    /// Delegate, admin, or an owner-type logon from another domain.
    #[default]
    Any,
}

/// What a `failed_logins` rule counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedBy {
    #[default]
    Mailbox,
    Ip,
}

/// What a `first_seen` rule watches for each mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenWhat {
    #[default]
    Ip,
    Client,
}

/// The changes an `audit_weakened` rule reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weakening {
    FolderPermission,
    BypassAdded,
    AuditDisabled,
    ActionsNarrowed,
    RetentionShortened,
}

impl Weakening {
    pub const ALL: [Weakening; 5] = [
        Weakening::FolderPermission,
        Weakening::BypassAdded,
        Weakening::AuditDisabled,
        Weakening::ActionsNarrowed,
        Weakening::RetentionShortened,
    ];
}

/// What a rule looks for. Field defaults are the safe, useful ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleKind {
    /// Someone other than the owner acted in a listed mailbox (or any, when `mailboxes` is
    /// empty).
    NonOwnerAccess {
        #[serde(default)]
        logon: NonOwnerLogon,
        #[serde(default)]
        mailboxes: BTreeSet<String>,
    },
    /// An admin acted as a mailbox's user (master user, SASL authorization identity).
    AdminImpersonation {
        #[serde(default)]
        mailboxes: BTreeSet<String>,
    },
    /// An inbox rule was created or changed that forwards or redirects mail.
    InboxRuleForwarding {
        /// Domains counted as inside besides the mailbox's own.
        #[serde(default)]
        internal_domains: BTreeSet<String>,
        /// Only alert when a target is outside.
        #[serde(default)]
        external_only: bool,
    },
    /// Folder permission granted, bypass added, audit disabled, action sets narrowed or
    /// retention shortened.
    AuditWeakened {
        #[serde(default = "all_weakenings")]
        events: BTreeSet<Weakening>,
    },
    /// At least `threshold` deleted items (SoftDelete, HardDelete, MoveToDeletedItems) by one
    /// actor within `window_secs`.
    Deletions { threshold: u64, window_secs: u64 },
    /// At least `threshold` failed logins to one mailbox (or from one IP) within `window_secs`.
    FailedLogins {
        threshold: u64,
        window_secs: u64,
        #[serde(default)]
        by: FailedBy,
    },
    /// A successful login from an IP (or client) never seen before for that mailbox. The
    /// first value a mailbox is ever seen with is learned silently unless
    /// `alert_on_first_login` is set.
    FirstSeen {
        #[serde(default)]
        what: SeenWhat,
        #[serde(default)]
        alert_on_first_login: bool,
    },
    /// SendAs or SendOnBehalf of a listed mailbox (or any, when empty).
    SendAs {
        #[serde(default)]
        mailboxes: BTreeSet<String>,
    },
}

fn all_weakenings() -> BTreeSet<Weakening> {
    Weakening::ALL.into_iter().collect()
}

fn default_suppress() -> u64 {
    300
}

fn default_true() -> bool {
    true
}

/// One rule as configured. (Unknown fields are refused by `RuleKind`, which receives every
/// field not named here; serde cannot deny them on a struct that flattens.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleConfig {
    /// Unique; alerts and their ids carry it.
    pub name: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Defaults by kind (impersonation and audit weakening are high).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Matches of the same rule and key within this many seconds of an alert are folded
    /// into one follow-up alert with their count, instead of one alert each. 0 = never fold.
    #[serde(default = "default_suppress")]
    pub suppress_secs: u64,
    /// Holds the first alert for this many seconds, folding matches within them into it, so
    /// that a burst is one alert with its count, at the price of that much latency. 0 (the
    /// default) delivers at once. At most `suppress_secs`.
    #[serde(default)]
    pub group_secs: u64,
    #[serde(flatten)]
    pub kind: RuleKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule {index}: `name` must not be empty")]
    EmptyName { index: usize },
    #[error("rule `{0}` is defined twice; names must be unique")]
    Duplicate(String),
    #[error("rule `{rule}`: `{field}` must be at least 1")]
    Zero { rule: String, field: &'static str },
    #[error("rule `{rule}`: `group_secs` ({group}) must not exceed `suppress_secs` ({suppress})")]
    GroupLonger {
        rule: String,
        group: u64,
        suppress: u64,
    },
    #[error("rule `{rule}`: `events` is empty, so it could never fire")]
    NoEvents { rule: String },
}

impl RuleConfig {
    pub fn severity(&self) -> Severity {
        self.severity.unwrap_or(match self.kind {
            RuleKind::AdminImpersonation { .. } | RuleKind::AuditWeakened { .. } => Severity::High,
            RuleKind::InboxRuleForwarding { .. } | RuleKind::Deletions { .. } => Severity::High,
            RuleKind::NonOwnerAccess { .. } | RuleKind::SendAs { .. } => Severity::Medium,
            RuleKind::FailedLogins { .. } | RuleKind::FirstSeen { .. } => Severity::Medium,
        })
    }
}

/// Checks a rule set: unique non-empty names, thresholds and windows of at least 1.
/// Mailbox lists are lower-cased, as records' mailboxes are.
pub fn validate(rules: Vec<RuleConfig>) -> Result<Vec<RuleConfig>, RuleError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(rules.len());
    for (index, mut rule) in rules.into_iter().enumerate() {
        rule.name = rule.name.trim().to_string();
        if rule.name.is_empty() {
            return Err(RuleError::EmptyName { index });
        }
        if !names.insert(rule.name.clone()) {
            return Err(RuleError::Duplicate(rule.name));
        }
        if rule.group_secs > rule.suppress_secs {
            return Err(RuleError::GroupLonger {
                rule: rule.name,
                group: rule.group_secs,
                suppress: rule.suppress_secs,
            });
        }
        let zero = |field| RuleError::Zero {
            rule: rule.name.clone(),
            field,
        };
        match &mut rule.kind {
            RuleKind::Deletions {
                threshold,
                window_secs,
            }
            | RuleKind::FailedLogins {
                threshold,
                window_secs,
                ..
            } => {
                if *threshold == 0 {
                    return Err(zero("threshold"));
                }
                if *window_secs == 0 {
                    return Err(zero("window_secs"));
                }
            }
            RuleKind::AuditWeakened { events } if events.is_empty() => {
                return Err(RuleError::NoEvents { rule: rule.name });
            }
            RuleKind::NonOwnerAccess { mailboxes, .. }
            | RuleKind::AdminImpersonation { mailboxes }
            | RuleKind::SendAs { mailboxes } => {
                *mailboxes = mailboxes.iter().map(|m| m.trim().to_lowercase()).collect();
            }
            RuleKind::InboxRuleForwarding {
                internal_domains, ..
            } => {
                *internal_domains = internal_domains
                    .iter()
                    .map(|m| m.trim().to_lowercase())
                    .collect();
            }
            _ => {}
        }
        out.push(rule);
    }
    Ok(out)
}
