//! What a search asks for. Every filter is optional; lists mean "any of". Shared by every
//! backend, the CLI and the HTTP API so a filter means the same thing everywhere.

use ipnet::IpNet;
use mailaudit_model::{AuditRecord, LogonType, Operation, OperationResult, Timestamp};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::str::FromStr;

/// Exchange's four "search for access by" choices of its non-owner access export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonOwner {
    /// Anyone but the owner: delegates, admins and external users.
    All,
    /// Actors from another domain than the mailbox's.
    External,
    /// Admins and delegates of the owner's own organisation.
    AdminsAndDelegates,
    Admins,
}

impl NonOwner {
    pub fn matches(self, r: &AuditRecord) -> bool {
        match self {
            NonOwner::All => r.is_non_owner(),
            NonOwner::External => r.external,
            NonOwner::AdminsAndDelegates => r.logon_type != LogonType::Owner && !r.external,
            NonOwner::Admins => r.logon_type == LogonType::Admin,
        }
    }
}

impl FromStr for NonOwner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(NonOwner::All),
            "external" => Ok(NonOwner::External),
            "admins-and-delegates" => Ok(NonOwner::AdminsAndDelegates),
            "admins" => Ok(NonOwner::Admins),
            _ => Err(format!(
                "unknown non-owner access type `{s}`; expected all, external, admins-and-delegates or admins"
            )),
        }
    }
}

/// A client address filter: one address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFilter {
    Addr(IpAddr),
    Net(IpNet),
}

impl IpFilter {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match self {
            IpFilter::Addr(a) => a == ip,
            IpFilter::Net(n) => n.contains(ip),
        }
    }
}

impl FromStr for IpFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('/') {
            s.parse::<IpNet>()
                .map(IpFilter::Net)
                .map_err(|e| format!("`{s}` is not a CIDR block ({e})"))
        } else {
            s.parse::<IpAddr>()
                .map(IpFilter::Addr)
                .map_err(|e| format!("`{s}` is not an IP address ({e})"))
        }
    }
}

impl std::fmt::Display for IpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpFilter::Addr(a) => write!(f, "{a}"),
            IpFilter::Net(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Inclusive.
    pub from: Option<Timestamp>,
    /// Exclusive.
    pub to: Option<Timestamp>,
    pub mailboxes: Vec<String>,
    pub actors: Vec<String>,
    pub operations: Vec<Operation>,
    pub logon_types: Vec<LogonType>,
    pub non_owner: Option<NonOwner>,
    pub results: Vec<OperationResult>,
    pub ips: Vec<IpFilter>,
    pub protocols: Vec<String>,
    /// Matches the record's folder or destination folder.
    pub folders: Vec<String>,
    /// Case-insensitive substring of an item's subject or Message-ID.
    pub text: Option<String>,
    /// Only records below this log size: a snapshot, so that an export or a paged search
    /// streams exactly the records it counted, whatever is appended meanwhile.
    pub below_seq: Option<u64>,
}

impl Query {
    /// The same filter applied to one record in memory: the conformance suite checks every
    /// backend's search against it.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let any_eq = |list: &[String], v: &str| {
            list.is_empty() || list.iter().any(|x| x.eq_ignore_ascii_case(v))
        };
        self.from.is_none_or(|f| r.time >= f)
            && self.to.is_none_or(|t| r.time < t)
            && any_eq(&self.mailboxes, &r.mailbox)
            && any_eq(&self.actors, &r.actor)
            && (self.operations.is_empty() || self.operations.contains(&r.operation))
            && (self.logon_types.is_empty() || self.logon_types.contains(&r.logon_type))
            && self.non_owner.is_none_or(|n| n.matches(r))
            && (self.results.is_empty() || self.results.contains(&r.result))
            && (self.ips.is_empty()
                || r.client
                    .ip
                    .is_some_and(|ip| self.ips.iter().any(|f| f.contains(&ip))))
            && (self.protocols.is_empty()
                || r.client
                    .protocol
                    .as_deref()
                    .is_some_and(|p| any_eq(&self.protocols, p)))
            && (self.folders.is_empty()
                || [&r.folder, &r.destination_folder].iter().any(|f| {
                    f.as_deref()
                        .is_some_and(|f| self.folders.iter().any(|x| x == f))
                }))
            && self.text.as_deref().is_none_or(|t| items_contain(r, t))
            && self.below_seq.is_none_or(|n| r.seq < n)
    }

    /// A short description for the `AuditLogSearch` record of a search.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = self.from {
            parts.push(format!("from={f}"));
        }
        if let Some(t) = self.to {
            parts.push(format!("to={t}"));
        }
        let mut list = |name: &str, v: Vec<String>| {
            if !v.is_empty() {
                parts.push(format!("{name}={}", v.join(",")));
            }
        };
        list("mailbox", self.mailboxes.clone());
        list("actor", self.actors.clone());
        list(
            "operation",
            self.operations.iter().map(|o| o.to_string()).collect(),
        );
        list(
            "logon_type",
            self.logon_types.iter().map(|o| o.to_string()).collect(),
        );
        list(
            "result",
            self.results.iter().map(|o| o.to_string()).collect(),
        );
        list("ip", self.ips.iter().map(|o| o.to_string()).collect());
        list("protocol", self.protocols.clone());
        list("folder", self.folders.clone());
        if let Some(n) = self.non_owner {
            parts.push(format!("non_owner={n:?}"));
        }
        if let Some(t) = &self.text {
            parts.push(format!("text={t}"));
        }
        parts.join(" ")
    }
}

pub(crate) fn items_contain(r: &AuditRecord, text: &str) -> bool {
    let needle = text.to_lowercase();
    r.items.iter().any(|i| {
        [&i.subject, &i.message_id].iter().any(|v| {
            v.as_deref()
                .is_some_and(|v| v.to_lowercase().contains(&needle))
        })
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Records on this page. Not a cap: `SearchPage::next_cursor` leads to the rest.
    pub limit: usize,
    pub cursor: Option<String>,
    /// Whether to count every match (exactly). Exports that only stream can skip it.
    pub with_total: bool,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: 100,
            cursor: None,
            with_total: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    /// Exact number of matching records, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub records: Vec<AuditRecord>,
    /// Present while more records match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Newest-first position: after (time, seq).
pub(crate) fn encode_cursor(r: &AuditRecord) -> String {
    format!("{}.{}", r.time.micros(), r.seq)
}

pub(crate) fn decode_cursor(c: &str) -> Result<(i64, u64), crate::StoreError> {
    let bad = || crate::StoreError::Invalid(format!("cursor `{c}` is not one this server issued"));
    let (t, s) = c.split_once('.').ok_or_else(bad)?;
    Ok((t.parse().map_err(|_| bad())?, s.parse().map_err(|_| bad())?))
}
