//! Comparing names of people and mailboxes the way the pipeline's classification does.

/// Lower case, without surrounding space or angle brackets.
pub fn normalise_address(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_lowercase()
}

fn domain_of(identity: &str) -> Option<&str> {
    identity
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

fn local_part(identity: &str) -> &str {
    identity.rsplit_once('@').map_or(identity, |(l, _)| l)
}

/// Whether two names denote the same account: equal, or one is a bare login matching the
/// other's local part (the rule `mailaudit_policy::same_identity` applies to records).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        assert!(same_identity("alice", "Alice@example.org"));
        assert!(same_identity("alice@example.org", "ALICE@example.org"));
        assert!(!same_identity("alice@example.org", "alice@example.net"));
        assert!(!same_identity("bob", "alice@example.org"));
        assert_eq!(normalise_address(" <Bob@X.org> "), "bob@x.org");
    }
}
