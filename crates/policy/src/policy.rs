//! The audit policy: organisation defaults (exactly DESIGN.md's table), per-mailbox overrides
//! edited the way `Set-Mailbox -AuditOwner @{Add=…}` edits them, retention, and bypass.
//!
//! Operations of the audit system itself are never subject to policy: they are always
//! recorded, so that switching auditing off or bypassing it leaves a trace.

use crate::same_identity;
use mailaudit_model::{LogonType, Operation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const DEFAULT_RETENTION_DAYS: u32 = 180;
const MAX_RETENTION_DAYS: u32 = 365 * 100;

/// The actions audited by default for a logon type (DESIGN.md, "Default audited actions").
pub fn default_actions(logon: LogonType) -> BTreeSet<Operation> {
    use Operation::*;
    let ops: &[Operation] = match logon {
        LogonType::Admin => {
            return Operation::ALL
                .iter()
                .copied()
                .filter(|o| !o.is_audit_system())
                .collect()
        }
        LogonType::Delegate => &[
            MailboxLogin,
            FolderBind,
            MessageBind,
            Create,
            Update,
            Copy,
            Move,
            MoveToDeletedItems,
            SoftDelete,
            HardDelete,
            SendAs,
            SendOnBehalf,
            UpdateFolderPermissions,
            UpdateInboxRules,
        ],
        LogonType::Owner => &[
            MailboxLogin,
            MoveToDeletedItems,
            SoftDelete,
            HardDelete,
            Update,
            UpdateFolderPermissions,
            UpdateCalendarDelegation,
            UpdateInboxRules,
            Send,
        ],
    };
    ops.iter().copied().collect()
}

/// Per-mailbox settings. `None` follows the organisation default, so a later change of the
/// default reaches every mailbox that never had its own set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<BTreeSet<Operation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<BTreeSet<Operation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<BTreeSet<Operation>>,
}

impl MailboxPolicy {
    fn set_for(&mut self, logon: LogonType) -> &mut Option<BTreeSet<Operation>> {
        match logon {
            LogonType::Owner => &mut self.owner,
            LogonType::Delegate => &mut self.delegate,
            LogonType::Admin => &mut self.admin,
        }
    }
    fn is_default(&self) -> bool {
        self == &MailboxPolicy::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Organisation default for `AuditEnabled`.
    pub enabled: bool,
    pub retention_days: u32,
    pub owner: BTreeSet<Operation>,
    pub delegate: BTreeSet<Operation>,
    pub admin: BTreeSet<Operation>,
    /// Keyed by lower-cased mailbox name.
    #[serde(default)]
    pub mailboxes: BTreeMap<String, MailboxPolicy>,
    /// Actors whose mailbox access is not recorded (Exchange's bypass association).
    #[serde(default)]
    pub bypass: BTreeSet<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            retention_days: DEFAULT_RETENTION_DAYS,
            owner: default_actions(LogonType::Owner),
            delegate: default_actions(LogonType::Delegate),
            admin: default_actions(LogonType::Admin),
            mailboxes: BTreeMap::new(),
            bypass: BTreeSet::new(),
        }
    }
}

/// A mailbox's policy with the defaults filled in: what `Get-Mailbox | fl Audit*` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectivePolicy {
    pub mailbox: Option<String>,
    pub enabled: bool,
    pub retention_days: u32,
    pub owner: BTreeSet<Operation>,
    pub delegate: BTreeSet<Operation>,
    pub admin: BTreeSet<Operation>,
    /// The logon types whose action set follows the organisation default.
    pub default_audit_set: Vec<LogonType>,
}

/// How to edit an action set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionEdit {
    Replace(BTreeSet<Operation>),
    Add(BTreeSet<Operation>),
    Remove(BTreeSet<Operation>),
    /// Back to the organisation default (per mailbox) or to DESIGN.md's table (organisation).
    Default,
}

/// One change, as a person asked for it. `mailbox: None` means the organisation defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyChange {
    Enabled {
        #[serde(default)]
        mailbox: Option<String>,
        enabled: bool,
    },
    Actions {
        #[serde(default)]
        mailbox: Option<String>,
        logon_type: LogonType,
        edit: ActionEdit,
    },
    Retention {
        #[serde(default)]
        mailbox: Option<String>,
        days: u32,
    },
    BypassAdd {
        actor: String,
    },
    /// Sets all three action sets at once (a verbosity preset), as one recorded change.
    ActionSets {
        #[serde(default)]
        mailbox: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preset: Option<String>,
        owner: BTreeSet<Operation>,
        delegate: BTreeSet<Operation>,
        admin: BTreeSet<Operation>,
    },
    BypassRemove {
        actor: String,
    },
}

impl PolicyChange {
    pub fn is_bypass(&self) -> bool {
        matches!(
            self,
            PolicyChange::BypassAdd { .. } | PolicyChange::BypassRemove { .. }
        )
    }

    /// The mailbox the change is about, or `None` for organisation-wide changes and bypass.
    pub fn mailbox(&self) -> Option<&str> {
        match self {
            PolicyChange::Enabled { mailbox, .. }
            | PolicyChange::Actions { mailbox, .. }
            | PolicyChange::Retention { mailbox, .. }
            | PolicyChange::ActionSets { mailbox, .. } => mailbox.as_deref(),
            PolicyChange::BypassAdd { .. } | PolicyChange::BypassRemove { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0} is an operation of the audit system itself and is always recorded; it cannot be added to or removed from an action set")]
    AuditSystemOperation(Operation),
    #[error("retention must be between 1 and {MAX_RETENTION_DAYS} days, not {0}")]
    Retention(u32),
    #[error("{0} is not in the bypass list")]
    NotBypassed(String),
    #[error("a name must not be empty")]
    EmptyName,
}

/// Why an observation was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    MailboxDisabled,
    Bypassed,
    NotAudited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Record,
    Skip(SkipReason),
}

fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

impl Policy {
    fn set_for(&mut self, logon: LogonType) -> &mut BTreeSet<Operation> {
        match logon {
            LogonType::Owner => &mut self.owner,
            LogonType::Delegate => &mut self.delegate,
            LogonType::Admin => &mut self.admin,
        }
    }

    fn org_set(&self, logon: LogonType) -> &BTreeSet<Operation> {
        match logon {
            LogonType::Owner => &self.owner,
            LogonType::Delegate => &self.delegate,
            LogonType::Admin => &self.admin,
        }
    }

    /// The effective settings for one mailbox, or the organisation's for `None`.
    pub fn effective(&self, mailbox: Option<&str>) -> EffectivePolicy {
        let own = mailbox.and_then(|m| self.mailboxes.get(&key(m)));
        let pick = |logon: LogonType| {
            let over = own.and_then(|o| match logon {
                LogonType::Owner => o.owner.clone(),
                LogonType::Delegate => o.delegate.clone(),
                LogonType::Admin => o.admin.clone(),
            });
            (
                over.is_none(),
                over.unwrap_or_else(|| self.org_set(logon).clone()),
            )
        };
        let (d_admin, admin) = pick(LogonType::Admin);
        let (d_delegate, delegate) = pick(LogonType::Delegate);
        let (d_owner, owner) = pick(LogonType::Owner);
        let default_audit_set = [
            (d_admin, LogonType::Admin),
            (d_delegate, LogonType::Delegate),
            (d_owner, LogonType::Owner),
        ]
        .into_iter()
        .filter_map(|(d, l)| d.then_some(l))
        .collect();
        EffectivePolicy {
            mailbox: mailbox.map(key),
            enabled: own.and_then(|o| o.enabled).unwrap_or(self.enabled),
            retention_days: own
                .and_then(|o| o.retention_days)
                .unwrap_or(self.retention_days),
            owner,
            delegate,
            admin,
            default_audit_set,
        }
    }

    pub fn is_bypassed(&self, actor: &str) -> bool {
        self.bypass.iter().any(|b| same_identity(b, actor))
    }

    /// Whether an operation by `actor` on `mailbox` in the given capacity is to be recorded.
    pub fn decide(
        &self,
        mailbox: &str,
        actor: &str,
        operation: Operation,
        logon: LogonType,
    ) -> Decision {
        if operation.is_audit_system() {
            return Decision::Record;
        }
        if self.is_bypassed(actor) {
            return Decision::Skip(SkipReason::Bypassed);
        }
        let own = self.mailboxes.get(&key(mailbox));
        if !own.and_then(|o| o.enabled).unwrap_or(self.enabled) {
            return Decision::Skip(SkipReason::MailboxDisabled);
        }
        let set = own
            .and_then(|o| match logon {
                LogonType::Owner => o.owner.as_ref(),
                LogonType::Delegate => o.delegate.as_ref(),
                LogonType::Admin => o.admin.as_ref(),
            })
            .unwrap_or_else(|| self.org_set(logon));
        if set.contains(&operation) {
            Decision::Record
        } else {
            Decision::Skip(SkipReason::NotAudited)
        }
    }

    /// The retention of each mailbox with its own, and the organisation's for the rest.
    pub fn retention_overrides(&self) -> impl Iterator<Item = (&str, u32)> {
        self.mailboxes
            .iter()
            .filter_map(|(m, p)| p.retention_days.map(|d| (m.as_str(), d)))
    }

    /// Applies a change and returns the new policy; `self` is untouched on error.
    pub fn apply(&self, change: &PolicyChange) -> Result<Policy, PolicyError> {
        let mut next = self.clone();
        match change {
            PolicyChange::Enabled { mailbox, enabled } => match mailbox {
                None => next.enabled = *enabled,
                Some(m) => next.mailbox_entry(m)?.enabled = Some(*enabled),
            },
            PolicyChange::Retention { mailbox, days } => {
                if *days == 0 || *days > MAX_RETENTION_DAYS {
                    return Err(PolicyError::Retention(*days));
                }
                match mailbox {
                    None => next.retention_days = *days,
                    Some(m) => next.mailbox_entry(m)?.retention_days = Some(*days),
                }
            }
            PolicyChange::Actions {
                mailbox,
                logon_type,
                edit,
            } => {
                let named = match edit {
                    ActionEdit::Replace(s) | ActionEdit::Add(s) | ActionEdit::Remove(s) => Some(s),
                    ActionEdit::Default => None,
                };
                if let Some(op) = named.and_then(|s| s.iter().find(|o| o.is_audit_system())) {
                    return Err(PolicyError::AuditSystemOperation(*op));
                }
                let current = self.effective(mailbox.as_deref());
                let start = match logon_type {
                    LogonType::Owner => current.owner,
                    LogonType::Delegate => current.delegate,
                    LogonType::Admin => current.admin,
                };
                let edited = match edit {
                    ActionEdit::Replace(s) => Some(s.clone()),
                    ActionEdit::Add(s) => Some(start.union(s).copied().collect()),
                    ActionEdit::Remove(s) => Some(start.difference(s).copied().collect()),
                    ActionEdit::Default => None,
                };
                match mailbox {
                    None => {
                        *next.set_for(*logon_type) =
                            edited.unwrap_or_else(|| default_actions(*logon_type))
                    }
                    Some(m) => *next.mailbox_entry(m)?.set_for(*logon_type) = edited,
                }
            }
            PolicyChange::ActionSets {
                mailbox,
                owner,
                delegate,
                admin,
                ..
            } => {
                let mut all = owner.iter().chain(delegate).chain(admin);
                if let Some(op) = all.find(|o| o.is_audit_system()) {
                    return Err(PolicyError::AuditSystemOperation(*op));
                }
                for (logon, set) in [
                    (LogonType::Owner, owner),
                    (LogonType::Delegate, delegate),
                    (LogonType::Admin, admin),
                ] {
                    match mailbox {
                        None => *next.set_for(logon) = set.clone(),
                        Some(m) => *next.mailbox_entry(m)?.set_for(logon) = Some(set.clone()),
                    }
                }
            }
            PolicyChange::BypassAdd { actor } => {
                if actor.trim().is_empty() {
                    return Err(PolicyError::EmptyName);
                }
                next.bypass.insert(key(actor));
            }
            PolicyChange::BypassRemove { actor } => {
                if !next.bypass.remove(&key(actor)) {
                    return Err(PolicyError::NotBypassed(actor.clone()));
                }
            }
        }
        next.mailboxes.retain(|_, p| !p.is_default());
        Ok(next)
    }

    fn mailbox_entry(&mut self, mailbox: &str) -> Result<&mut MailboxPolicy, PolicyError> {
        if mailbox.trim().is_empty() {
            return Err(PolicyError::EmptyName);
        }
        Ok(self.mailboxes.entry(key(mailbox)).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LogonType::*;
    use Operation::*;

    #[test]
    fn defaults_are_the_design_table() {
        let p = Policy::default();
        assert!(p.enabled);
        assert_eq!(p.retention_days, 180);
        // Admin: every operation.
        for op in Operation::ALL.iter().filter(|o| !o.is_audit_system()) {
            assert_eq!(p.decide("a", "x", *op, Admin), Decision::Record, "{op}");
        }
        let table = [
            (Delegate, MessageBind, true),
            (Delegate, SendOnBehalf, true),
            (Delegate, SearchQueryInitiated, false),
            (Delegate, Send, false),
            (Owner, MailboxLogin, true),
            (Owner, HardDelete, true),
            (Owner, UpdateCalendarDelegation, true),
            (Owner, Send, true),
            (Owner, MessageBind, false),
            (Owner, FolderBind, false),
            (Owner, Copy, false),
            (Owner, SearchQueryInitiated, false),
        ];
        for (logon, op, on) in table {
            let want = if on {
                Decision::Record
            } else {
                Decision::Skip(SkipReason::NotAudited)
            };
            assert_eq!(p.decide("alice", "alice", op, logon), want, "{logon} {op}");
        }
        assert_eq!(p.delegate.len(), 14);
        assert_eq!(p.owner.len(), 9);
    }

    #[test]
    fn add_and_remove_edit_the_current_set_like_set_mailbox() {
        let p = Policy::default();
        let p = p
            .apply(&PolicyChange::Actions {
                mailbox: Some("Alice@example.com".into()),
                logon_type: Owner,
                edit: ActionEdit::Add([MessageBind].into()),
            })
            .unwrap();
        let e = p.effective(Some("alice@example.com"));
        assert!(e.owner.contains(&MessageBind) && e.owner.contains(&HardDelete));
        assert_eq!(e.default_audit_set, vec![Admin, Delegate]);
        // Other mailboxes are untouched.
        assert_eq!(
            p.decide("bob@example.com", "bob@example.com", MessageBind, Owner),
            Decision::Skip(SkipReason::NotAudited)
        );
        let p = p
            .apply(&PolicyChange::Actions {
                mailbox: Some("alice@example.com".into()),
                logon_type: Owner,
                edit: ActionEdit::Remove([HardDelete].into()),
            })
            .unwrap();
        let e = p.effective(Some("alice@example.com"));
        assert!(e.owner.contains(&MessageBind) && !e.owner.contains(&HardDelete));
        // Back to default removes the override entirely.
        let p = p
            .apply(&PolicyChange::Actions {
                mailbox: Some("alice@example.com".into()),
                logon_type: Owner,
                edit: ActionEdit::Default,
            })
            .unwrap();
        assert!(p.mailboxes.is_empty());
    }

    #[test]
    fn disabled_mailbox_and_bypass_skip_but_audit_system_operations_never_do() {
        let p = Policy::default()
            .apply(&PolicyChange::Enabled {
                mailbox: Some("alice".into()),
                enabled: false,
            })
            .unwrap()
            .apply(&PolicyChange::BypassAdd {
                actor: "Backup@example.com".into(),
            })
            .unwrap();
        assert_eq!(
            p.decide("alice", "bob", MessageBind, Delegate),
            Decision::Skip(SkipReason::MailboxDisabled)
        );
        assert_eq!(
            p.decide("carol", "backup@example.com", MessageBind, Admin),
            Decision::Skip(SkipReason::Bypassed)
        );
        assert_eq!(
            p.decide("alice", "backup", AuditLogSearch, Admin),
            Decision::Record
        );
        assert_eq!(
            p.decide("carol", "bob", MessageBind, Delegate),
            Decision::Record
        );
    }

    #[test]
    fn bad_changes_are_refused() {
        let p = Policy::default();
        let e = p.apply(&PolicyChange::Actions {
            mailbox: None,
            logon_type: Admin,
            edit: ActionEdit::Remove([AuditPolicyChange].into()),
        });
        assert_eq!(e, Err(PolicyError::AuditSystemOperation(AuditPolicyChange)));
        assert_eq!(
            p.apply(&PolicyChange::Retention {
                mailbox: None,
                days: 0
            }),
            Err(PolicyError::Retention(0))
        );
        assert!(matches!(
            p.apply(&PolicyChange::BypassRemove {
                actor: "nobody".into()
            }),
            Err(PolicyError::NotBypassed(_))
        ));
    }

    #[test]
    fn policy_json_round_trips() {
        let p = Policy::default()
            .apply(&PolicyChange::Retention {
                mailbox: Some("alice".into()),
                days: 30,
            })
            .unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&text).unwrap(), p);
        let change: PolicyChange = serde_json::from_str(
            r#"{"change":"actions","mailbox":"alice","logon_type":"Owner","edit":{"add":["MessageBind"]}}"#,
        )
        .unwrap();
        assert!(matches!(change, PolicyChange::Actions { .. }));
    }
}
