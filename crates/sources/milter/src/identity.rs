//! Comparing names of people and mailboxes the way the pipeline's classification does.

/// Lower case, without surrounding space or angle brackets.
pub fn normalise_address(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_lowercase()
}

/// Whether two names denote the same account: the pipeline's own rule, so the milter and
/// the classification of its records never disagree.
pub use mailaudit_policy::same_identity;

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
