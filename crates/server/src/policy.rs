//! Policy over HTTP. Reads are open to admins and auditors; changes to admins only, and every
//! change goes through the writer, which records it (`AuditPolicyChange`,
//! `AuditBypassChange`) in the same transaction that stores it.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::State;
use axum::extract::Path;
use axum::Json;
use mailaudit_model::LogonType;
use mailaudit_pipeline::load_policy;
use mailaudit_policy::{ActionEdit, EffectivePolicy, Policy, PolicyChange};
use serde::{Deserialize, Serialize};

type St = axum::extract::State<State>;

async fn current(state: &State) -> Result<Policy, ApiError> {
    state.read(|s| Ok(load_policy(&*s)?)).await
}

pub async fn get_policy(
    axum::extract::State(state): St,
    caller: Caller,
) -> Result<Json<Policy>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    Ok(Json(current(&state).await?))
}

pub async fn get_org(
    axum::extract::State(state): St,
    caller: Caller,
) -> Result<Json<EffectivePolicy>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    Ok(Json(current(&state).await?.effective(None)))
}

pub async fn get_mailbox(
    axum::extract::State(state): St,
    caller: Caller,
    Path(mailbox): Path<String>,
) -> Result<Json<EffectivePolicy>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    Ok(Json(current(&state).await?.effective(Some(&mailbox))))
}

pub async fn get_bypass(
    axum::extract::State(state): St,
    caller: Caller,
) -> Result<Json<Vec<String>>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    Ok(Json(current(&state).await?.bypass.into_iter().collect()))
}

/// The settings a PUT may change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    enabled: Option<bool>,
    retention_days: Option<u32>,
    owner: Option<ActionEdit>,
    delegate: Option<ActionEdit>,
    admin: Option<ActionEdit>,
}

impl PolicyUpdate {
    fn changes(self, mailbox: Option<String>) -> Vec<PolicyChange> {
        let mut out = Vec::new();
        if let Some(enabled) = self.enabled {
            out.push(PolicyChange::Enabled {
                mailbox: mailbox.clone(),
                enabled,
            });
        }
        if let Some(days) = self.retention_days {
            out.push(PolicyChange::Retention {
                mailbox: mailbox.clone(),
                days,
            });
        }
        for (logon_type, edit) in [
            (LogonType::Owner, self.owner),
            (LogonType::Delegate, self.delegate),
            (LogonType::Admin, self.admin),
        ] {
            if let Some(edit) = edit {
                out.push(PolicyChange::Actions {
                    mailbox: mailbox.clone(),
                    logon_type,
                    edit,
                });
            }
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct ChangeReply {
    /// Seqs of the `AuditPolicyChange`/`AuditBypassChange` records written.
    records: Vec<u64>,
    effective: EffectivePolicy,
}

async fn apply(
    state: &State,
    caller: &Caller,
    changes: Vec<PolicyChange>,
    mailbox: Option<&str>,
) -> Result<Json<ChangeReply>, ApiError> {
    caller.require(&[Role::Admin])?;
    if changes.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give enabled, retention_days, owner, delegate or admin".into(),
        ));
    }
    let mut records = Vec::new();
    let mut last = None;
    for change in changes {
        let (record, policy) = state.writer.change_policy(caller.actor(), change).await?;
        records.push(record.seq);
        last = Some(policy);
    }
    let policy = match last {
        Some(p) => p,
        None => current(state).await?,
    };
    Ok(Json(ChangeReply {
        records,
        effective: policy.effective(mailbox),
    }))
}

fn parse_update(body: &str) -> Result<PolicyUpdate, ApiError> {
    serde_json::from_str(body).map_err(|e| ApiError::BadRequest(format!("policy update: {e}")))
}

pub async fn put_org(
    axum::extract::State(state): St,
    caller: Caller,
    body: String,
) -> Result<Json<ChangeReply>, ApiError> {
    let update = parse_update(&body)?;
    apply(&state, &caller, update.changes(None), None).await
}

pub async fn put_mailbox(
    axum::extract::State(state): St,
    caller: Caller,
    Path(mailbox): Path<String>,
    body: String,
) -> Result<Json<ChangeReply>, ApiError> {
    let update = parse_update(&body)?;
    apply(
        &state,
        &caller,
        update.changes(Some(mailbox.clone())),
        Some(&mailbox),
    )
    .await
}

pub async fn put_bypass(
    axum::extract::State(state): St,
    caller: Caller,
    Path(actor): Path<String>,
) -> Result<Json<ChangeReply>, ApiError> {
    apply(
        &state,
        &caller,
        vec![PolicyChange::BypassAdd { actor }],
        None,
    )
    .await
}

pub async fn delete_bypass(
    axum::extract::State(state): St,
    caller: Caller,
    Path(actor): Path<String>,
) -> Result<Json<ChangeReply>, ApiError> {
    apply(
        &state,
        &caller,
        vec![PolicyChange::BypassRemove { actor }],
        None,
    )
    .await
}

/// Any single `PolicyChange` as JSON, e.g.
/// `{"change":"actions","mailbox":"alice@example.com","logon_type":"Owner","edit":{"add":["MessageBind"]}}`.
pub async fn post_change(
    axum::extract::State(state): St,
    caller: Caller,
    body: String,
) -> Result<Json<ChangeReply>, ApiError> {
    let change: PolicyChange = serde_json::from_str(&body)
        .map_err(|e| ApiError::BadRequest(format!("policy change: {e}")))?;
    let mailbox = change.mailbox().map(str::to_string);
    apply(&state, &caller, vec![change], mailbox.as_deref()).await
}
