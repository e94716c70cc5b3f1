//! Search filters as command-line flags, the same set the HTTP API takes.

use anyhow::Result;
use clap::Args;
use mailaudit_model::{LogonType, Operation, OperationResult, Timestamp};
use mailaudit_store::{NonOwner, Query};

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Oldest time, inclusive (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    pub from: Option<Timestamp>,
    /// Newest time, exclusive.
    #[arg(long)]
    pub to: Option<Timestamp>,
    /// Mailbox (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub mailbox: Vec<String>,
    /// Actor: who acted (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub actor: Vec<String>,
    /// Operation, e.g. MessageBind, HardDelete, SendAs.
    #[arg(long, value_delimiter = ',')]
    pub operation: Vec<Operation>,
    /// Owner, Delegate or Admin.
    #[arg(long, value_delimiter = ',')]
    pub logon_type: Vec<LogonType>,
    /// Non-owner access: all, external, admins-and-delegates, admins.
    #[arg(long)]
    pub non_owner: Option<NonOwner>,
    /// Succeeded, Failed or PartiallySucceeded.
    #[arg(long, value_delimiter = ',')]
    pub result: Vec<OperationResult>,
    /// Client IP address or CIDR block.
    #[arg(long, value_delimiter = ',')]
    pub ip: Vec<String>,
    /// Client protocol: imap, pop3, smtp, http…
    #[arg(long, value_delimiter = ',')]
    pub protocol: Vec<String>,
    /// Folder (matches source or destination folder).
    #[arg(long)]
    pub folder: Vec<String>,
    /// Text in a message's subject or Message-ID.
    #[arg(long)]
    pub text: Option<String>,
}

impl FilterArgs {
    pub fn to_query(&self) -> Result<Query> {
        Ok(Query {
            from: self.from,
            to: self.to,
            mailboxes: self.mailbox.clone(),
            actors: self.actor.clone(),
            operations: self.operation.clone(),
            logon_types: self.logon_type.clone(),
            non_owner: self.non_owner,
            results: self.result.clone(),
            ips: self
                .ip
                .iter()
                .map(|s| s.parse().map_err(|e: String| anyhow::anyhow!("--ip: {e}")))
                .collect::<Result<_>>()?,
            protocols: self.protocol.clone(),
            folders: self.folder.clone(),
            text: self.text.clone(),
            below_seq: None,
        })
    }
}
