//! Verbosity presets, as MailEnable's logging levels and Exchange 2007's diagnostic levels
//! offer them: one name sets the three action sets at once.

use crate::policy::default_actions;
use mailaudit_model::{LogonType, Operation};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Admin access only.
    Minimal,
    /// Every non-owner access: admins and delegates, every operation.
    CrossMailbox,
    /// DESIGN.md's default table.
    Standard,
    /// Everything, including owners' reads.
    Full,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Minimal,
        Preset::CrossMailbox,
        Preset::Standard,
        Preset::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Minimal => "minimal",
            Preset::CrossMailbox => "cross-mailbox",
            Preset::Standard => "standard",
            Preset::Full => "full",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Preset::Minimal => "admin access only",
            Preset::CrossMailbox => {
                "every non-owner access (admins and delegates, every operation)"
            }
            Preset::Standard => "the default table (Exchange's defaults)",
            Preset::Full => "everything, including owners' reads",
        }
    }

    pub fn parse(name: &str) -> Result<Preset, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown preset `{name}`; expected one of: minimal, cross-mailbox, standard, full"
                )
            })
    }

    /// The action set the preset gives a logon type.
    pub fn actions(self, logon: LogonType) -> BTreeSet<Operation> {
        let every: BTreeSet<Operation> = Operation::ALL
            .iter()
            .copied()
            .filter(|o| !o.is_audit_system())
            .collect();
        match (self, logon) {
            (Preset::Standard, l) => default_actions(l),
            (Preset::Full, _) => every,
            (_, LogonType::Admin) => every,
            (Preset::CrossMailbox, LogonType::Delegate) => every,
            (Preset::Minimal, LogonType::Delegate) | (_, LogonType::Owner) => BTreeSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, Policy, PolicyChange, SkipReason};
    use Operation::*;

    fn apply(p: Preset, mailbox: Option<&str>) -> Policy {
        Policy::default()
            .apply(&PolicyChange::ActionSets {
                mailbox: mailbox.map(str::to_string),
                preset: Some(p.name().into()),
                owner: p.actions(LogonType::Owner),
                delegate: p.actions(LogonType::Delegate),
                admin: p.actions(LogonType::Admin),
            })
            .unwrap()
    }

    #[test]
    fn each_preset_switches_on_what_it_says() {
        let cases = [
            // (preset, owner MessageBind, delegate MessageBind, admin FolderBind, owner MailboxLogin, delegate SearchQueryInitiated)
            (Preset::Minimal, false, false, true, false, false),
            (Preset::CrossMailbox, false, true, true, false, true),
            (Preset::Standard, false, true, true, true, false),
            (Preset::Full, true, true, true, true, true),
        ];
        for (p, owner_read, delegate_read, admin_bind, owner_login, delegate_search) in cases {
            let policy = apply(p, Some("alice@example.com"));
            let d =
                |op, logon| policy.decide("alice@example.com", "x", op, logon) == Decision::Record;
            assert_eq!(d(MessageBind, LogonType::Owner), owner_read, "{p:?}");
            assert_eq!(d(MessageBind, LogonType::Delegate), delegate_read, "{p:?}");
            assert_eq!(d(FolderBind, LogonType::Admin), admin_bind, "{p:?}");
            assert_eq!(d(MailboxLogin, LogonType::Owner), owner_login, "{p:?}");
            assert_eq!(
                d(SearchQueryInitiated, LogonType::Delegate),
                delegate_search,
                "{p:?}"
            );
            // Other mailboxes keep the defaults.
            assert_eq!(
                policy.decide("bob@example.com", "x", MessageBind, LogonType::Delegate),
                Decision::Record
            );
            // The audit system's own operations are recorded under every preset.
            assert_eq!(
                policy.decide(
                    "alice@example.com",
                    "x",
                    AuditPolicyChange,
                    LogonType::Owner
                ),
                Decision::Record
            );
        }
        let org = apply(Preset::Minimal, None);
        assert_eq!(
            org.decide("bob@example.com", "x", MessageBind, LogonType::Delegate),
            Decision::Skip(SkipReason::NotAudited)
        );
        assert_eq!(Preset::parse("Cross-Mailbox"), Ok(Preset::CrossMailbox));
        assert!(Preset::parse("verbose")
            .unwrap_err()
            .contains("minimal, cross-mailbox"));
    }
}
