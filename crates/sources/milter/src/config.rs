//! The milter's configuration (a TOML file) and the address book it builds: which mailbox
//! owns which address, and which mailbox a SASL login acts as.

use crate::identity::{normalise_address, same_identity};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// `milter.toml`. Every field is optional; an empty file is a working configuration.
///
/// ```toml
/// # Bare SASL logins (`alice`) are taken as alice@example.org.
/// domain = "example.org"
///
/// [rate]
/// default_per_hour = 200          # more than this from one login in an hour is flagged
/// per_login = { "newsletter@example.org" = 5000 }
///
/// # Addresses that belong to a mailbox other than the one they name (aliases, role
/// # addresses). An address not listed here belongs to the mailbox of the same name.
/// [addresses]
/// "sales@example.org" = "alice@example.org"
///
/// # Logins that act as a mailbox of a different name.
/// [logins]
/// "asmith" = "alice@example.org"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MilterConfig {
    /// Domain appended to bare logins (`carol` → `carol@example.org`).
    pub domain: Option<String>,
    pub rate: RateConfig,
    /// Address → owning mailbox, for addresses that do not name their mailbox.
    pub addresses: BTreeMap<String, String>,
    /// SASL login → the mailbox it acts as, when the names differ.
    pub logins: BTreeMap<String, String>,
}

/// The hourly rate rule (MailEnable's "users who send too many messages").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Messages one login may send in any 60 minutes before the rest are flagged.
    /// 0 turns the rule off.
    pub default_per_hour: u32,
    /// Per-login limits (by login or by the mailbox it acts as), overriding the default.
    pub per_login: BTreeMap<String, u32>,
}

/// Generous enough that no ordinary person reaches it, low enough to catch a hijacked
/// account sending spam.
pub const DEFAULT_RATE_PER_HOUR: u32 = 500;

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            default_per_hour: DEFAULT_RATE_PER_HOUR,
            per_login: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML parser's message names the line and column.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("[addresses] `{0}`: not an e-mail address")]
    BadAddress(String),
}

impl MilterConfig {
    pub fn from_toml(text: &str) -> Result<MilterConfig, ConfigError> {
        let config: MilterConfig = toml::from_str(text)?;
        for (address, mailbox) in &config.addresses {
            for a in [address, mailbox] {
                if !a.contains('@') {
                    return Err(ConfigError::BadAddress(a.clone()));
                }
            }
        }
        Ok(config)
    }
}

/// Who owns which address, and which mailbox a login acts as.
#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    domain: Option<String>,
    addresses: BTreeMap<String, String>,
    logins: BTreeMap<String, String>,
    /// Mailboxes mailaudit knows (from the configuration and the audit policy): a bare login
    /// matching exactly one of them by local part acts as it.
    known: BTreeSet<String>,
}

impl AddressBook {
    pub fn new(config: &MilterConfig) -> AddressBook {
        let lower = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(k, v)| (normalise_address(k), normalise_address(v)))
                .collect()
        };
        let addresses = lower(&config.addresses);
        let logins = lower(&config.logins);
        let known = addresses
            .values()
            .chain(logins.values())
            .filter(|m| m.contains('@'))
            .cloned()
            .collect();
        AddressBook {
            domain: config
                .domain
                .as_deref()
                .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                .filter(|d| !d.is_empty()),
            addresses,
            logins,
            known,
        }
    }

    /// Adds mailboxes mailaudit already knows of (e.g. those named in the audit policy).
    pub fn learn_mailboxes<'a>(&mut self, mailboxes: impl IntoIterator<Item = &'a str>) {
        for m in mailboxes {
            let m = normalise_address(m);
            if m.contains('@') {
                self.known.insert(m);
            }
        }
    }

    /// The mailbox that owns `address`: the configured owner, else the mailbox of that name.
    pub fn owner_of(&self, address: &str) -> String {
        let a = normalise_address(address);
        self.addresses.get(&a).cloned().unwrap_or(a)
    }

    /// The mailbox a SASL login acts as.
    pub fn mailbox_of_login(&self, login: &str) -> String {
        let l = normalise_address(login);
        if let Some(m) = self.logins.get(&l) {
            return m.clone();
        }
        if l.contains('@') {
            return l;
        }
        if let Some(d) = &self.domain {
            return format!("{l}@{d}");
        }
        let mut matching = self.known.iter().filter(|m| same_identity(&l, m));
        match (matching.next(), matching.next()) {
            (Some(only), None) => only.clone(),
            _ => l,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_a_working_configuration() {
        let c = MilterConfig::from_toml("").unwrap();
        assert_eq!(c.rate.default_per_hour, DEFAULT_RATE_PER_HOUR);
        assert!(c.addresses.is_empty());
    }

    #[test]
    fn errors_name_the_line_or_the_entry() {
        let e = MilterConfig::from_toml("domain = \"x\"\n[rate]\ndefault_per_hour = \"ten\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = MilterConfig::from_toml("[adresses]\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = MilterConfig::from_toml("[addresses]\n\"sales\" = \"alice@example.org\"\n")
            .unwrap_err();
        assert_eq!(e.to_string(), "[addresses] `sales`: not an e-mail address");
    }

    #[test]
    fn owners_and_logins() {
        let c = MilterConfig::from_toml(
            "[addresses]\n\"Sales@Example.org\" = \"alice@example.org\"\n[logins]\nasmith = \"alice@example.org\"\n",
        )
        .unwrap();
        let mut book = AddressBook::new(&c);
        assert_eq!(book.owner_of("sales@example.org"), "alice@example.org");
        assert_eq!(book.owner_of("Bob@Example.org"), "bob@example.org");
        assert_eq!(book.mailbox_of_login("asmith"), "alice@example.org");
        assert_eq!(book.mailbox_of_login("alice"), "alice@example.org");
        // Not known, no domain: stays bare (the pipeline still matches it by local part).
        assert_eq!(book.mailbox_of_login("carol"), "carol");
        book.learn_mailboxes(["carol@example.net"]);
        assert_eq!(book.mailbox_of_login("carol"), "carol@example.net");
        // Two known mailboxes with that local part: no guess.
        book.learn_mailboxes(["carol@example.com"]);
        assert_eq!(book.mailbox_of_login("carol"), "carol");
        let with_domain = AddressBook::new(&MilterConfig {
            domain: Some("example.org".into()),
            ..Default::default()
        });
        assert_eq!(with_domain.mailbox_of_login("Carol"), "carol@example.org");
    }
}
