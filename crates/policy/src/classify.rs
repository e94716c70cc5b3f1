//! Logon-type classification (DESIGN.md "Classification"): impersonation or an administrative
//! tool is Admin, acting on someone else's mailbox is Delegate, the owner's own access is Owner;
//! `external` when the actor's domain differs from the mailbox owner's.

use mailaudit_model::{LogonType, Observation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub logon_type: LogonType,
    pub external: bool,
}

/// The domain of an address, lower-cased; `None` for a bare login name.
pub fn domain_of(identity: &str) -> Option<String> {
    identity
        .trim()
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

fn local_part(identity: &str) -> &str {
    let t = identity.trim();
    t.rsplit_once('@').map_or(t, |(l, _)| l)
}

/// Whether two names denote the same account. Sources see logins as `alice` or
/// `alice@example.com` depending on configuration, so a bare name matches the local part.
pub fn same_identity(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    match (domain_of(a), domain_of(b)) {
        (Some(_), Some(_)) => false,
        _ => local_part(a).eq_ignore_ascii_case(local_part(b)),
    }
}

pub fn classify(obs: &Observation) -> Classification {
    let impersonating = obs
        .acting_as
        .as_deref()
        .is_some_and(|assumed| !same_identity(assumed, &obs.actor));
    let logon_type = if obs.administrative || impersonating {
        LogonType::Admin
    } else if !same_identity(&obs.actor, &obs.mailbox) {
        LogonType::Delegate
    } else {
        LogonType::Owner
    };
    let external = match (domain_of(&obs.actor), domain_of(&obs.mailbox)) {
        (Some(a), Some(m)) => a != m,
        _ => false,
    };
    Classification {
        logon_type,
        external,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailaudit_model::{Operation, Provenance, Timestamp};

    fn obs(actor: &str, acting_as: Option<&str>, admin_tool: bool, mailbox: &str) -> Observation {
        Observation {
            time: Timestamp(0),
            operation: Operation::MailboxLogin,
            result: mailaudit_model::OperationResult::Succeeded,
            reason: None,
            mailbox: mailbox.into(),
            actor: actor.into(),
            acting_as: acting_as.map(Into::into),
            administrative: admin_tool,
            folder: None,
            destination_folder: None,
            items: vec![],
            client: Default::default(),
            provenance: Provenance {
                source: "test".into(),
                ..Default::default()
            },
            parameters: vec![],
        }
    }

    #[test]
    fn classification_table() {
        use LogonType::*;
        let cases = [
            // actor, acting_as, admin tool, mailbox, logon type, external
            (
                "alice@example.com",
                None,
                false,
                "alice@example.com",
                Owner,
                false,
            ),
            (
                "Alice@Example.com",
                None,
                false,
                "alice@example.com",
                Owner,
                false,
            ),
            ("alice", None, false, "alice@example.com", Owner, false),
            (
                "bob@example.com",
                None,
                false,
                "alice@example.com",
                Delegate,
                false,
            ),
            ("bob", None, false, "alice", Delegate, false),
            (
                "eve@partner.net",
                None,
                false,
                "alice@example.com",
                Delegate,
                true,
            ),
            (
                "admin@example.com",
                Some("alice@example.com"),
                false,
                "alice@example.com",
                Admin,
                false,
            ),
            ("admin", Some("alice"), false, "alice", Admin, false),
            // Naming yourself as the authorization identity is not impersonation.
            (
                "alice@example.com",
                Some("alice"),
                false,
                "alice@example.com",
                Owner,
                false,
            ),
            ("root", None, true, "alice@example.com", Admin, false),
            (
                "admin@corp.example",
                Some("alice@example.com"),
                false,
                "alice@example.com",
                Admin,
                true,
            ),
        ];
        for (actor, acting_as, tool, mailbox, logon_type, external) in cases {
            let c = classify(&obs(actor, acting_as, tool, mailbox));
            assert_eq!(
                c,
                Classification {
                    logon_type,
                    external
                },
                "{actor} as {acting_as:?} (tool {tool}) on {mailbox}"
            );
        }
    }
}
