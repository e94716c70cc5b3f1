//! `POST /api/v1/observations`: one JSON object, or NDJSON. Each line is checked on its own;
//! bad lines are reported with their line number and field while the good lines of the same
//! body are stored. The answer comes only once the stored lines are durable.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::State;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailaudit_model::{parse_observation_json, Timestamp};
use mailaudit_pipeline::IngestOutcome;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct LineError {
    line: usize,
    field: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct LineResult {
    line: usize,
    #[serde(flatten)]
    outcome: IngestOutcome,
}

#[derive(Debug, Serialize)]
struct IngestReply {
    /// Lines that were valid and were stored or deliberately skipped by policy.
    accepted: usize,
    stored: usize,
    skipped: usize,
    rejected: usize,
    results: Vec<LineResult>,
    errors: Vec<LineError>,
}

pub async fn post_observations(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Ingest, Role::Admin])?;
    let bytes = state.body(body).await?;
    let now = Timestamp::now();
    let mut observations = Vec::new();
    let mut lines_of = Vec::new();
    let mut errors = Vec::new();
    for (line, text) in split_documents(&bytes) {
        let parsed = std::str::from_utf8(text)
            .map_err(|e| (".".to_string(), format!("not UTF-8: {e}")))
            .and_then(|t| parse_observation_json(t, now).map_err(|e| (e.field, e.reason)));
        match parsed {
            Ok(obs) => {
                observations.push(obs);
                lines_of.push(line);
            }
            Err((field, reason)) => errors.push(LineError {
                line,
                field,
                reason,
            }),
        }
    }
    if observations.is_empty() && errors.is_empty() {
        return Err(ApiError::BadRequest(
            "the body holds no observation; send one JSON object or NDJSON lines".into(),
        ));
    }
    let outcomes = if observations.is_empty() {
        Vec::new()
    } else {
        state.writer.ingest(observations).await?
    };
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, IngestOutcome::Stored { .. }))
        .count();
    let reply = IngestReply {
        accepted: outcomes.len(),
        stored,
        skipped: outcomes.len() - stored,
        rejected: errors.len(),
        results: lines_of
            .into_iter()
            .zip(outcomes)
            .map(|(line, outcome)| LineResult { line, outcome })
            .collect(),
        errors,
    };
    let status = if reply.rejected == 0 {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(reply)).into_response())
}

/// Splits a body into (line number, document). A body that is one JSON object spread over
/// several lines is one document; anything else is NDJSON, one document per non-blank line.
fn split_documents(body: &[u8]) -> Vec<(usize, &[u8])> {
    let trimmed = body.trim_ascii();
    let multi_line = trimmed.contains(&b'\n');
    if multi_line
        && trimmed.first() == Some(&b'{')
        && serde_json::from_slice::<serde_json::Value>(trimmed).is_ok_and(|v| v.is_object())
    {
        let first_line = body.len() - body.trim_ascii_start().len();
        let line = body[..first_line].iter().filter(|b| **b == b'\n').count() + 1;
        return vec![(line, trimmed)];
    }
    body.split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_ascii()))
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::split_documents;

    #[test]
    fn splits_ndjson_and_keeps_a_pretty_object_whole() {
        let nd = b"{\"a\":1}\n\n{\"b\":2}\r\n  \n{broken\n";
        let docs = split_documents(nd);
        assert_eq!(
            docs.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            vec![1, 3, 5]
        );
        assert_eq!(docs[2].1, b"{broken");
        let pretty = b"\n{\n  \"a\": 1\n}\n";
        let docs = split_documents(pretty);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].0, 2);
    }
}
