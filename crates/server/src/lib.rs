//! The HTTP API of `mailaudit serve`, versioned under `/api/v1`.
//!
//! Handlers are thin: they authenticate, parse, hand work to the pipeline's writer (for
//! anything that appends) or to a pooled read-only store (for queries), and record every
//! search and export of the audit log before answering. A search that cannot be recorded
//! is not answered. This crate holds no audit logic of its own.

mod auth;
mod coverage;
mod error;
mod export;
mod ingest;
mod params;
mod policy;
mod records;
pub mod sieve;
mod sources;
mod state;

pub use auth::{create_token, Caller, Role};
pub use error::ApiError;
pub use export::{begin_export, stream_export, write_all};
pub use params::parse_query_pairs;
pub use records::{param, prove, search_parameters, single_mailbox};
pub use sources::{DovecotIntake, SourceRegistry};
pub use state::{ReaderPool, ServerConfig, State};

use axum::routing::{get, post, put};
use axum::Router;

pub fn router(state: State) -> Router {
    Router::new()
        .route("/api/v1/health", get(records::health))
        .route("/api/v1/observations", post(ingest::post_observations))
        .route("/api/v1/records", get(records::search))
        .route("/api/v1/records/{id}", get(records::get_record))
        .route("/api/v1/records/{id}/proof", get(records::proof))
        .route("/api/v1/export", get(export::export))
        .route("/api/v1/checkpoint", get(records::checkpoint))
        .route("/api/v1/policy", get(policy::get_policy))
        .route(
            "/api/v1/policy/org",
            get(policy::get_org).put(policy::put_org),
        )
        .route(
            "/api/v1/policy/mailboxes/{mailbox}",
            get(policy::get_mailbox).put(policy::put_mailbox),
        )
        .route("/api/v1/policy/bypass", get(policy::get_bypass))
        .route(
            "/api/v1/policy/bypass/{actor}",
            put(policy::put_bypass).delete(policy::delete_bypass),
        )
        .route("/api/v1/policy/changes", post(policy::post_change))
        .route(
            "/api/v1/sources/dovecot/events",
            post(sources::post_dovecot_event),
        )
        .route("/api/v1/metrics", get(sources::metrics))
        .route("/api/v1/coverage", get(coverage::coverage))
        .with_state(state)
}
