//! Shared server state: the writer handle (all appends), a pool of read connections (all
//! queries, run off the async threads), and the configuration.

use crate::error::ApiError;
use mailaudit_pipeline::WriterHandle;
use mailaudit_store::Store;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// How often a checkpoint is signed, also when nothing happened.
    pub checkpoint_interval: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Most records one page of `GET /api/v1/records` returns (paging reaches the rest).
    pub max_page: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 16 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(60),
            retention_interval: Duration::from_secs(3600),
            max_page: 1000,
        }
    }
}

type Opener = dyn Fn() -> Result<Box<dyn Store>, mailaudit_store::StoreError> + Send + Sync;

/// Read connections, opened on demand and reused.
pub struct ReaderPool {
    open: Box<Opener>,
    idle: Mutex<Vec<Box<dyn Store>>>,
}

impl ReaderPool {
    pub fn new(
        open: impl Fn() -> Result<Box<dyn Store>, mailaudit_store::StoreError> + Send + Sync + 'static,
    ) -> Self {
        ReaderPool {
            open: Box::new(open),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<Box<dyn Store>, ApiError> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        match idle {
            Some(s) => Ok(s),
            None => Ok((self.open)()?),
        }
    }

    fn give_back(&self, store: Box<dyn Store>) {
        if let Ok(mut v) = self.idle.lock() {
            if v.len() < 16 {
                v.push(store);
            }
        }
    }
}

#[derive(Clone)]
pub struct State {
    pub writer: WriterHandle,
    pub readers: Arc<ReaderPool>,
    pub config: Arc<ServerConfig>,
    pub dovecot: Arc<crate::DovecotIntake>,
    pub sources: Arc<crate::SourceRegistry>,
}

impl State {
    /// The whole request body, or 413 naming the limit (`serve --max-body-bytes`).
    pub async fn body(&self, body: axum::body::Body) -> Result<bytes::Bytes, ApiError> {
        let limit = self.config.max_body_bytes;
        axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::TooLarge(format!(
                "the request body exceeds the limit of {limit} bytes (serve --max-body-bytes); send smaller batches"
            ))
        })
    }

    /// Runs a read on a pooled connection on the blocking thread pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = readers.take()?;
            let r = f(&mut *store);
            readers.give_back(store);
            r
        })
        .await
        .map_err(|e| ApiError::Internal(format!("reader task failed: {e}")))?
    }
}

impl ReaderPool {
    /// A search on a pooled connection, for code already off the async threads.
    pub fn search_blocking(
        &self,
        q: &mailaudit_store::Query,
        page: &mailaudit_store::PageRequest,
    ) -> Result<mailaudit_store::SearchPage, ApiError> {
        let store = self.take()?;
        let r = store.search(q, page);
        self.give_back(store);
        Ok(r?)
    }
}
