//! `GET /api/v1/coverage[?mailbox=…]`: per source and mailbox, the time ranges imported
//! files cover, merged, with every file's own span, so that a gap in imported history is
//! visible instead of read as "nothing happened". Admins and auditors only: it names
//! mailboxes, though it holds no record.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::State;
use axum::extract::Query;
use axum::Json;
use mailaudit_store::{coverage_ranges, CoverageEntry, CoverageGroup};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct CoverageQuery {
    mailbox: Option<String>,
}

#[derive(Serialize)]
pub struct CoverageAnswer {
    /// Merged ranges per source and mailbox; a gap lies between two ranges.
    groups: Vec<CoverageGroup>,
    /// Each imported file's span per mailbox.
    files: Vec<CoverageEntry>,
}

pub async fn coverage(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Query(q): Query<CoverageQuery>,
) -> Result<Json<CoverageAnswer>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let mut files = state.read(|s| Ok(s.coverage()?)).await?;
    if let Some(m) = q.mailbox {
        let m = m.trim().to_lowercase();
        files.retain(|e| e.mailbox == m);
    }
    Ok(Json(CoverageAnswer {
        groups: coverage_ranges(&files),
        files,
    }))
}
