//! Exchange mailbox audit events (`Search-MailboxAuditLog -ShowDetails`, `SearchResult.xml`)
//! mapped to observations. Shared by the CSV and XML importers, so that one event exported
//! both ways gets the same source key and is stored once.

use crate::time::parse_time;
use crate::{account, digest, ip_port, original, param, Context, Fields, Occurrences, Parsed};
use mailaudit_model::{
    Client, ImportedObservation, Item, LogonType, Observation, Operation, OperationResult,
    Parameter, Provenance,
};

/// Exchange's operation names that mailaudit names differently or folds together.
pub(crate) fn operation(name: &str) -> Option<Operation> {
    match name {
        "MailItemsAccessed" => Some(Operation::MessageBind),
        "AddFolderPermissions" | "ModifyFolderPermissions" | "RemoveFolderPermissions" => {
            Some(Operation::UpdateFolderPermissions)
        }
        "SearchQueryInitiatedExchange" => Some(Operation::SearchQueryInitiated),
        other => other.parse().ok(),
    }
}

/// Exchange's logon type names (`LogonType`, `InternalLogonType`): mailaudit keeps three.
/// System access (transport, system service, delegated admin) is administrative; `BestAccess`
/// says nothing about who acted, so it is left to classification.
pub(crate) fn logon_type(name: &str) -> Option<LogonType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "owner" => Some(LogonType::Owner),
        "delegate" | "delegated" => Some(LogonType::Delegate),
        "admin" | "systemservice" | "transport" | "delegatedadmin" => Some(LogonType::Admin),
        _ => None,
    }
}

pub(crate) fn result(text: &str) -> Option<OperationResult> {
    match text.trim().to_ascii_lowercase().as_str() {
        "succeeded" | "success" | "true" => Some(OperationResult::Succeeded),
        "failed" | "failure" | "false" => Some(OperationResult::Failed),
        "partiallysucceeded" => Some(OperationResult::PartiallySucceeded),
        _ => None,
    }
}

/// Folder paths as Exchange writes them (`\Inbox\Projects`), without the leading separator.
pub(crate) fn folder(path: &str) -> String {
    path.trim().trim_start_matches('\\').to_string()
}

/// One Exchange event. `items` come from `<SourceItems>` (XML) or the item columns (CSV).
pub(crate) struct Event<'a> {
    pub fields: Fields<'a>,
    pub items: Vec<Item>,
    pub reference: String,
    pub raw: &'a str,
    pub extra: Vec<Parameter>,
}

pub(crate) fn map(
    e: Event<'_>,
    source: &str,
    ctx: &Context,
    occurrences: &mut Occurrences,
) -> Parsed {
    match build(
        e.fields,
        e.items,
        &e.reference,
        e.raw,
        e.extra,
        source,
        ctx,
        occurrences,
    ) {
        Ok(p) => p,
        Err(reason) => Parsed::rejected(e.reference, reason),
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    f: Fields<'_>,
    items: Vec<Item>,
    reference: &str,
    raw: &str,
    extra: Vec<Parameter>,
    source: &str,
    ctx: &Context,
    occurrences: &mut Occurrences,
) -> Result<Parsed, String> {
    let op_name = f
        .get(&["Operation", "Operations"])
        .ok_or("Operation: missing")?;
    let Some(op) = operation(op_name) else {
        return Ok(Parsed::skipped(
            reference,
            format!("Exchange operation {op_name} has no mailaudit equivalent"),
        ));
    };
    let time_text = f
        .get(&["LastAccessed", "CreationTime", "RunDate"])
        .ok_or("LastAccessed: missing")?;
    let time = parse_time(time_text, ctx.timezone).map_err(|e| format!("LastAccessed: {e}"))?;
    let mailbox_raw = f
        .get(&[
            "MailboxOwnerUPN",
            "MailboxOwnerUpn",
            "MailboxResolvedOwnerName",
            "Owner",
        ])
        .ok_or("MailboxOwnerUPN: missing (and no MailboxResolvedOwnerName or Owner)")?;
    let actor_raw = f
        .get(&[
            "LogonUserDisplayName",
            "LogonUserDisplayname",
            "LogonUserUPN",
            "LogonUserSid",
        ])
        .ok_or("LogonUserDisplayName: missing (and no LogonUserSid)")?;
    let mut parameters = vec![param("exchange_operation", op_name)];
    let mut unknown = Vec::new();
    let result = match f.get(&["OperationResult", "ResultStatus", "Succeeded"]) {
        Some(text) => result(text).ok_or_else(|| {
            format!("OperationResult: `{text}` is not Succeeded, Failed or PartiallySucceeded")
        })?,
        None => {
            unknown.push("result");
            OperationResult::Succeeded
        }
    };
    let reported = f.get(&["LogonType"]);
    let logon = reported.and_then(logon_type);
    if let Some(l) = reported {
        parameters.push(param("source_logon_type", l));
    }
    if let Some(l) = f.get(&["InternalLogonType"]) {
        parameters.push(param("source_internal_logon_type", l));
    }
    let external = match f.get(&["ExternalAccess"]) {
        Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
        Some(v) => return Err(format!("ExternalAccess: `{v}` is not True or False")),
        None => None,
    };
    let ip_text = f.get(&["ClientIPAddress", "ClientIpAddress", "ClientIP"]);
    let addr = match ip_text {
        Some(t) => ip_port(t).map_err(|e| format!("ClientIPAddress: {e}"))?,
        None => None,
    };
    for (name, aliases) in [
        ("logon_user_sid", &["LogonUserSid"][..]),
        ("mailbox_owner_sid", &["MailboxOwnerSid"]),
        ("mailbox_guid", &["MailboxGuid"]),
        ("client_process", &["ClientProcessName"]),
        ("client_version", &["ClientVersion"]),
        ("client_machine", &["ClientMachineName"]),
        ("folder_id", &["FolderId"]),
        ("dest_mailbox", &["DestMailboxOwnerUPN"]),
    ] {
        if let Some(v) = f.get(aliases) {
            parameters.push(param(name, v));
        }
    }
    parameters.extend(extra);
    if !unknown.is_empty() {
        parameters.push(param("unknown", unknown.join(",")));
    }
    let mailbox = account(mailbox_raw, ctx.domain.as_deref());
    let actor = account(actor_raw, ctx.domain.as_deref());
    let folder_path = f.get(&["FolderPathName"]).map(folder);
    let key = occurrences.key(
        time,
        format!(
            "exchange:{}",
            digest(&[
                &mailbox.to_lowercase(),
                &time.micros().to_string(),
                op_name,
                result.as_str(),
                &actor.to_lowercase(),
                folder_path.as_deref().unwrap_or(""),
                ip_text.unwrap_or(""),
            ])
        ),
    );
    parameters.extend(original(raw));
    let observation = Observation {
        time,
        operation: op,
        result,
        reason: None,
        mailbox,
        actor,
        acting_as: None,
        administrative: false,
        folder: folder_path,
        destination_folder: f.get(&["DestFolderPathName"]).map(folder),
        items,
        client: Client {
            ip: addr.map(|(ip, _)| ip),
            port: addr.and_then(|(_, p)| p),
            protocol: None,
            name: f.get(&["ClientInfoString"]).map(str::to_string),
            session: None,
            tls: None,
        },
        provenance: Provenance {
            source: source.to_string(),
            host: f.get(&["OriginatingServer"]).map(str::to_string),
            reference: Some(reference.to_string()),
        },
        parameters,
    };
    Ok(Parsed::Record(Box::new(ImportedObservation {
        observation,
        source_key: key,
        logon_type: logon,
        external,
    })))
}
