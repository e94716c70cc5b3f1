use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("record {seq}: stored data is unreadable ({what})")]
    Corrupt { seq: u64, what: String },
    #[error("the log has no leaf {0}: it is missing")]
    Missing(u64),
    #[error("stored Merkle state is unreadable: {0}")]
    Frontier(String),
    #[error("{0}")]
    Invalid(String),
    #[error("this store was written by a newer mailaudit (schema {found}, this build reads {supported})")]
    Schema { found: i64, supported: i64 },
}
