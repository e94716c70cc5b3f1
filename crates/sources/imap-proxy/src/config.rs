//! How the proxied server names things, and the proxy's limits. One typed struct, read from
//! the `[audit]` and `[limits]` tables of `proxy.toml`; defaults are safe.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a record needs to know about the upstream's naming.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Separator of a master-user login (`carol*admin` = admin acting as carol), Dovecot's
    /// `auth_master_user_separator`. Empty: none.
    pub master_user_separator: Option<String>,
    /// Domain appended to bare logins (`carol` -> `carol@example.com`).
    pub default_domain: Option<String>,
    /// Prefixes of other users' namespaces used until the server's NAMESPACE reply names
    /// them (`shared/carol/INBOX` is carol's INBOX).
    pub other_users_prefixes: Vec<String>,
    /// Hierarchy separator used with `other_users_prefixes`.
    pub separator: Option<char>,
    /// Folder-name prefix -> owning mailbox, for folders NAMESPACE cannot attribute (public
    /// folders, a team mailbox). The longest matching prefix wins.
    pub owners: BTreeMap<String, String>,
    /// Owner of folders in a shared (public) namespace not named in `owners`.
    pub public_folders_owner: String,
    /// Folders that are \Trash: a COPY/MOVE there is `MoveToDeletedItems`.
    pub trash_folders: Vec<String>,
    /// The upstream's name, in every record's `provenance.host`.
    pub upstream_name: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            master_user_separator: Some("*".to_string()),
            default_domain: None,
            other_users_prefixes: vec!["shared/".to_string(), "Other Users/".to_string()],
            separator: Some('/'),
            owners: BTreeMap::new(),
            public_folders_owner: "public-folders".to_string(),
            trash_folders: vec![
                "Trash".to_string(),
                "Deleted Items".to_string(),
                "Deleted Messages".to_string(),
            ],
            upstream_name: None,
        }
    }
}

impl ProxyConfig {
    /// A login as records name it: trimmed, lower-cased, `@default_domain` added to a bare one.
    pub fn identity(&self, raw: &str) -> String {
        let name = raw.trim().to_lowercase();
        match self.default_domain.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() && !name.contains('@') && !name.is_empty() => {
                format!("{name}@{}", d.to_lowercase())
            }
            _ => name,
        }
    }

    pub fn is_trash(&self, folder: &str) -> bool {
        let sep = self.separator.unwrap_or('/');
        let under_inbox = folder
            .strip_prefix("INBOX")
            .and_then(|f| f.strip_prefix(sep));
        self.trash_folders.iter().any(|t| {
            folder.eq_ignore_ascii_case(t) || under_inbox.is_some_and(|f| f.eq_ignore_ascii_case(t))
        })
    }
}
