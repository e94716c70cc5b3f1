//! Reading the log: search, one record, its inclusion proof, the latest checkpoint. Every
//! read of records is itself recorded (`AuditLogSearch`) before the answer is sent.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::params::{pairs, parse_query_pairs};
use crate::state::State;
use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailaudit_model::{Operation, Parameter};
use mailaudit_store::{inclusion_proof, InclusionProof, Query, SearchPage};

type St = axum::extract::State<State>;

pub fn param(name: &str, value: impl Into<String>) -> Parameter {
    Parameter {
        name: name.into(),
        value: value.into(),
    }
}

/// The mailbox a search is about, when it names exactly one.
pub fn single_mailbox(q: &Query) -> Option<String> {
    match q.mailboxes.as_slice() {
        [one] => Some(one.trim().to_lowercase()),
        _ => None,
    }
}

/// What an `AuditLogSearch` record says of a search: the query, its exact total and how many
/// records were shown. The API and the console record their searches the same way.
pub fn search_parameters(q: &Query, total: Option<u64>, returned: usize) -> Vec<Parameter> {
    vec![
        param("query", q.describe()),
        param("total", total.map(|t| t.to_string()).unwrap_or_default()),
        param("returned", returned.to_string()),
    ]
}

pub async fn health(axum::extract::State(state): St) -> Result<Json<serde_json::Value>, ApiError> {
    let size = state.read(|s| Ok(s.size()?)).await?;
    Ok(Json(serde_json::json!({ "status": "ok", "records": size })))
}

pub async fn search(
    axum::extract::State(state): St,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<SearchPage>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let (q, page) = parse_query_pairs(&pairs(raw.as_deref()), &[], state.config.max_page)?;
    let query = q.clone();
    let result = state.read(move |s| Ok(s.search(&query, &page)?)).await?;
    state
        .writer
        .record_audit_access(
            caller.actor(),
            Operation::AuditLogSearch,
            single_mailbox(&q),
            search_parameters(&q, result.total, result.records.len()),
        )
        .await?;
    Ok(Json(result))
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("record id `{id}` is not a number")))
}

pub async fn get_record(
    axum::extract::State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let seq = parse_id(&id)?;
    let record = state.read(move |s| Ok(s.get(seq)?)).await?;
    let Some(record) = record else {
        return Err(ApiError::NotFound(format!(
            "record {seq} does not exist or was removed by retention"
        )));
    };
    state
        .writer
        .record_audit_access(
            caller.actor(),
            Operation::AuditLogSearch,
            Some(record.mailbox.clone()),
            vec![param("record", seq.to_string())],
        )
        .await?;
    Ok(Json(record).into_response())
}

/// The inclusion proof of record `seq` against the newest checkpoint that covers it, signing
/// one first when none does yet. The API and the console hand out proofs through this.
pub async fn prove(state: &State, seq: u64) -> Result<InclusionProof, ApiError> {
    let covering = state
        .read(move |s| Ok(s.checkpoints()?.into_iter().rev().find(|c| c.size > seq)))
        .await?;
    let checkpoint = match covering {
        Some(c) => c,
        None => state.writer.checkpoint().await?,
    };
    state
        .read(move |s| Ok(inclusion_proof(&*s, seq, &checkpoint)?))
        .await
}

pub async fn proof(
    axum::extract::State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InclusionProof>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let seq = parse_id(&id)?;
    let proof = prove(&state, seq).await?;
    state
        .writer
        .record_audit_access(
            caller.actor(),
            Operation::AuditLogSearch,
            Some(proof.record.mailbox.clone()),
            vec![param("proof", seq.to_string())],
        )
        .await?;
    Ok(Json(proof))
}

pub async fn checkpoint(
    axum::extract::State(state): St,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let latest = state.read(|s| Ok(s.checkpoints()?.pop())).await?;
    match latest {
        Some(c) => Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            c.note,
        )
            .into_response()),
        None => Err(ApiError::NotFound(
            "no checkpoint has been signed yet".into(),
        )),
    }
}
