//! Sources that arrive over HTTP (Dovecot's event exporter) and the statistics every source
//! reports, served as Prometheus metrics. A source's bad input is counted and answered with
//! an error naming it; it never stops the good events around it.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::State;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailaudit_model::{Observation, Timestamp};
use mailaudit_source_dovecot::{DovecotConfig, DovecotSource, SourceStats};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What each source has seen, by name (`dovecot-http`, `dovecot-log:/var/log/dovecot.log`).
#[derive(Default)]
pub struct SourceRegistry {
    stats: Mutex<BTreeMap<String, SourceStats>>,
}

impl SourceRegistry {
    pub fn report(&self, name: &str, stats: SourceStats) {
        if let Ok(mut m) = self.stats.lock() {
            m.insert(name.to_string(), stats);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, SourceStats> {
        self.stats.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Dovecot's `http-post` exporter: one event per request, correlated per session.
pub struct DovecotIntake {
    config: DovecotConfig,
    /// Where users' Sieve scripts are, to keep the text of uploaded rules.
    sieve_dir: Option<String>,
    source: Mutex<DovecotSource>,
    requests: AtomicU64,
    /// When this process started taking events: with the request number, a reference that
    /// stays unique across restarts (`http:1795560000.17`).
    started: u64,
}

impl DovecotIntake {
    pub fn new(config: DovecotConfig, sieve_dir: Option<String>) -> Self {
        DovecotIntake {
            config,
            sieve_dir,
            source: Mutex::new(DovecotSource::new()),
            requests: AtomicU64::new(0),
            started: u64::try_from(Timestamp::now().micros() / 1_000_000).unwrap_or(0),
        }
    }

    fn with_source<T>(
        &self,
        f: impl FnOnce(&mut DovecotSource, &DovecotConfig) -> T,
    ) -> Result<T, ApiError> {
        let mut source = self
            .source
            .lock()
            .map_err(|_| ApiError::Internal("the Dovecot source state is poisoned".into()))?;
        Ok(f(&mut source, &self.config))
    }

    /// Observations whose correlation window has passed; the server calls this every second.
    pub fn due(&self, now: Timestamp) -> Result<(Vec<Observation>, SourceStats), ApiError> {
        let (mut due, stats) = self.with_source(|s, cfg| (s.flush_due(cfg, now), s.stats()))?;
        self.enrich(&mut due);
        Ok((due, stats))
    }

    /// What the events do not carry: the text of uploaded Sieve scripts.
    pub fn enrich(&self, observations: &mut [Observation]) {
        if let Some(dir) = &self.sieve_dir {
            crate::sieve::attach_scripts(observations, dir);
        }
    }
}

pub async fn post_dovecot_event(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Ingest, Role::Admin])?;
    let bytes = state.body(body).await?;
    let intake = &state.dovecot;
    let n = intake.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let reference = format!("http:{}.{n}", intake.started);
    let (parsed, stats) = intake.with_source(|s, cfg| {
        // A stray non-UTF-8 byte (a subject in a legacy charset) must not cost the whole
        // event: it becomes U+FFFD, and anything that is then not JSON is counted as such.
        let text = String::from_utf8_lossy(&bytes);
        let parsed = s
            .push_event_json(cfg, &text, &reference)
            .map_err(|e| e.to_string());
        (parsed, s.stats())
    })?;
    state.sources.report("dovecot-http", stats);
    let mut observations = parsed.map_err(|e| {
        tracing::warn!("dovecot event {reference} from {}: {e}", caller.name);
        ApiError::BadRequest(format!("dovecot event {reference}: {e}"))
    })?;
    if !observations.is_empty() {
        intake.enrich(&mut observations);
        state.writer.ingest(observations).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Prometheus text exposition of the pipeline's and every source's counters.
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<State>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let stats = state.writer.stats().await?;
    let size = state.read(|s| Ok(s.size()?)).await?;
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    metric(
        "mailaudit_log_leaves",
        "Leaves in the Merkle log.",
        vec![(String::new(), size)],
    );
    metric(
        "mailaudit_records_stored_total",
        "Records stored since start.",
        vec![(String::new(), stats.stored)],
    );
    metric(
        "mailaudit_observations_skipped_total",
        "Observations the policy did not record, by reason.",
        vec![
            ("{reason=\"not_audited\"}".into(), stats.skipped_not_audited),
            (
                "{reason=\"mailbox_disabled\"}".into(),
                stats.skipped_disabled,
            ),
            ("{reason=\"bypassed\"}".into(), stats.skipped_bypass),
        ],
    );
    let sources = state.sources.snapshot();
    let per = |f: fn(&SourceStats) -> u64| -> Vec<(String, u64)> {
        sources
            .iter()
            .map(|(name, s)| (format!("{{source=\"{}\"}}", name.replace('"', "'")), f(s)))
            .collect()
    };
    metric(
        "mailaudit_source_events_total",
        "Events a source received.",
        per(|s| s.events),
    );
    metric(
        "mailaudit_source_log_lines_total",
        "Log lines a source read.",
        per(|s| s.log_lines),
    );
    metric(
        "mailaudit_source_observations_total",
        "Observations a source produced.",
        per(|s| s.observations),
    );
    metric(
        "mailaudit_source_ignored_total",
        "Input a source does not map (unknown events, other lines).",
        per(|s| s.ignored),
    );
    metric(
        "mailaudit_source_malformed_total",
        "Input a source could not parse.",
        per(|s| s.malformed),
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}
