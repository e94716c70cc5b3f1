//! The audit record: what the log keeps, one per command.

use crate::{LogonType, Operation, OperationResult, Timestamp};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One message an operation touched. `message_id` and `subject` answer "which message?";
/// when the source could not learn them, `unresolved` says why instead of leaving a silent gap.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The folder the item is in, when it differs from the record's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

/// The client the actor used.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `imap`, `pop3`, `smtp`, `lmtp`, `http`, `cli`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// What the client calls itself (IMAP ID, User-Agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

/// Where the record came from, so that it can be traced back to the original line or event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `api`, `dovecot`, `imap-proxy`, `milter`, `import:exchange-xml`, `mailaudit`…
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The original line or event: `dovecot.log:1234`, an event id, a file offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A named value the operation carried: for a policy change `before` and `after`, for a
/// search its query. Order is kept as given and is part of the canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    pub value: String,
}

/// A stored audit record. `seq` is its index in the Merkle log and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    /// When it happened, as the source saw it.
    pub time: Timestamp,
    /// When mailaudit stored it.
    pub recorded_at: Timestamp,
    pub operation: Operation,
    pub result: OperationResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub logon_type: LogonType,
    /// The actor's domain differs from the mailbox owner's.
    pub external: bool,
    /// The mailbox acted on, named by its owner's address or login.
    pub mailbox: String,
    /// Who acted: the identity that authenticated and is accountable.
    pub actor: String,
    /// The identity the actor assumed by impersonation (master user, SASL authzid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// The target folder of a Copy, Move or FolderRename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_folder: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
    #[serde(default)]
    pub client: Client,
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
}

impl AuditRecord {
    /// True when someone other than the owner acted, the question behind Exchange's
    /// non-owner access report.
    pub fn is_non_owner(&self) -> bool {
        self.logon_type != LogonType::Owner || self.external
    }
}
