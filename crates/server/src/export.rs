//! `GET /api/v1/export?format=csv|jsonl|exchange-xml&<filters>`: streams every matching
//! record, page by page, without holding the result in memory, and records the export.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::params::{pairs, parse_query_pairs};
use crate::records::{param, single_mailbox};
use crate::state::{ReaderPool, State};
use axum::body::Body;
use axum::extract::RawQuery;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use mailaudit_export::{ExportWriter, Format};
use mailaudit_model::{Operation, Parameter};
use mailaudit_pipeline::Actor;
use mailaudit_store::{PageRequest, Query};
use tokio::sync::mpsc;

/// An `io::Write` that hands chunks to the response body; it blocks when the client reads
/// slowly, which paces the export instead of buffering it.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

pub async fn export(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let pairs = pairs(raw.as_deref());
    let (q, _) = parse_query_pairs(&pairs, &["format"], state.config.max_page)?;
    let format: Format = pairs
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.parse())
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("parameter `format`: {e}")))?
        .unwrap_or(Format::JsonLines);
    let (q, total) = begin_export(&state, caller.actor(), q, format, Vec::new()).await?;
    Ok(stream_export(
        state.readers.clone(),
        q,
        format,
        total,
        "export",
    ))
}

/// Fixes an export to the records that exist now, exactly the ones counted (not its own
/// record, appended here, nor anything appended while it streams), and records it
/// (`AuditLogExport`, with `extra` parameters) before a byte is sent: an export that cannot
/// be audited does not happen. Returns the bounded query and its count. The API and the
/// console both start their exports with this.
pub async fn begin_export(
    state: &State,
    actor: Actor,
    mut q: Query,
    format: Format,
    extra: Vec<Parameter>,
) -> Result<(Query, u64), ApiError> {
    q.below_seq = Some(state.read(|s| Ok(s.size()?)).await?);
    let query = q.clone();
    let total = state
        .read(move |s| {
            Ok(s.search(
                &query,
                &PageRequest {
                    limit: 1,
                    cursor: None,
                    with_total: true,
                },
            )?
            .total
            .unwrap_or(0))
        })
        .await?;
    let mut params = vec![
        param("query", q.describe()),
        param("format", format.as_str()),
        param("total", total.to_string()),
    ];
    params.extend(extra);
    state
        .writer
        .record_audit_access(actor, Operation::AuditLogExport, single_mailbox(&q), params)
        .await?;
    Ok((q, total))
}

/// Writes every record of `q` (a snapshot) to `out`, page by page. Blocking: call it off the
/// async threads.
pub fn write_all<W: std::io::Write>(
    readers: &ReaderPool,
    q: &Query,
    out: &mut ExportWriter<W>,
) -> Result<(), String> {
    let mut page = PageRequest {
        limit: 1000,
        cursor: None,
        with_total: false,
    };
    loop {
        let got = readers
            .search_blocking(q, &page)
            .map_err(|e| e.to_string())?;
        for r in &got.records {
            out.write(r).map_err(|e| e.to_string())?;
        }
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// The download of every record of `q` (a snapshot whose export is already recorded) as
/// `format`, streamed as it is written; `what` names it in the log if it breaks off. The API
/// and the console both answer with this.
pub fn stream_export(
    readers: std::sync::Arc<ReaderPool>,
    q: Query,
    format: Format,
    total: u64,
    what: &'static str,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<(), String> {
            let mut out = ExportWriter::new(
                format,
                ChannelWriter {
                    tx,
                    buf: Vec::new(),
                },
            )
            .map_err(|e| e.to_string())?;
            write_all(&readers, &q, &mut out)?;
            let mut w = out.finish().map_err(|e| e.to_string())?;
            std::io::Write::flush(&mut w).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            tracing::warn!("{what} stopped: {e}");
            // The status line is gone already; failing the body makes the client see a
            // broken transfer rather than a silently short file.
            let _ = err_tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let filename = format!("mailaudit-export.{}", format.file_extension());
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                format.content_type().to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (
                axum::http::HeaderName::from_static("x-total-count"),
                total.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
