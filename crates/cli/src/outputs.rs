//! `serve --config mailaudit.toml`: starts the alert rules and outputs (mailaudit-outputs)
//! next to the writer, wakes them from the writer's broadcast, and serves the rules over
//! the API (`GET`/`PUT /api/v1/alerts/rules`, `GET /api/v1/alerts/outbox`, admins only).

use anyhow::{Context, Result};
use axum::extract::State as AxState;
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use mailaudit_alerts::RuleConfig;
use mailaudit_model::Operation;
use mailaudit_outputs::{Outputs, OutputsConfig, RulesSource, Shared};
use mailaudit_pipeline::WriterHandle;
use mailaudit_server::{ApiError, Caller, Role, State};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug, Default)]
pub struct OutputsArgs {
    /// Alert rules and outputs (webhook, email, syslog, record streams, daily files); see
    /// docs/alerts.md.
    #[arg(long, value_name = "mailaudit.toml")]
    pub config: Option<PathBuf>,
}

pub fn load(path: &Path) -> Result<OutputsConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(OutputsConfig::from_toml(
        &text,
        &path.display().to_string(),
    )?)
}

/// The outputs of a running `serve`, if configured.
pub struct Running {
    outputs: Option<Outputs>,
}

impl Running {
    pub fn start(dir: &Path, args: &OutputsArgs) -> Result<Self> {
        let Some(path) = &args.config else {
            return Ok(Running { outputs: None });
        };
        let config = load(path)?;
        let outputs = Outputs::start(dir, config)?;
        eprintln!("outputs: started from {}", path.display());
        Ok(Running {
            outputs: Some(outputs),
        })
    }

    /// Wakes the outputs whenever the writer commits. A lagging receiver only means the
    /// outputs read more at once from the store: the broadcast carries no data they need.
    pub fn listen(&self, writer: &WriterHandle) {
        let Some(o) = &self.outputs else { return };
        let shared = o.shared();
        let mut rx = writer.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => shared.records.notify(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Adds the alert routes to the API.
    pub fn router(&self, app: Router, state: State) -> Router {
        let shared = self.outputs.as_ref().map(|o| o.shared());
        let routes = Router::new()
            .route("/api/v1/alerts/rules", get(get_rules).put(put_rules))
            .route("/api/v1/alerts/outbox", get(get_outbox))
            .with_state(AlertsState { api: state, shared });
        app.merge(routes)
    }

    /// The running rules and outputs, for the console's alert page.
    pub fn shared(&self) -> Option<Arc<Shared>> {
        self.outputs.as_ref().map(|o| o.shared())
    }

    pub fn stop(self) {
        if let Some(o) = self.outputs {
            o.stop();
        }
    }
}

#[derive(Clone)]
struct AlertsState {
    api: State,
    shared: Option<Arc<Shared>>,
}

/// The alert routes authenticate exactly as the rest of the API does.
impl axum::extract::FromRequestParts<AlertsState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AlertsState,
    ) -> Result<Self, Self::Rejection> {
        <Caller as axum::extract::FromRequestParts<State>>::from_request_parts(parts, &s.api).await
    }
}

fn configured(s: &AlertsState) -> Result<&Arc<Shared>, ApiError> {
    s.shared.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "alerts are not configured: start `mailaudit serve --config mailaudit.toml`".into(),
        )
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RulesBody {
    #[serde(default, skip_deserializing)]
    source: Option<RulesSource>,
    rules: Vec<RuleConfig>,
}

async fn get_rules(
    AxState(s): AxState<AlertsState>,
    caller: Caller,
) -> Result<Json<RulesBody>, ApiError> {
    caller.require(&[Role::Admin])?;
    let (rules, source) = configured(&s)?.rules();
    Ok(Json(RulesBody {
        source: Some(source),
        rules,
    }))
}

/// Replaces every rule. The change is itself recorded (`AuditPolicyChange` with the rules
/// before and after) before it applies: switching an alert off must leave a trace.
async fn put_rules(
    AxState(s): AxState<AlertsState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<RulesBody>, ApiError> {
    caller.require(&[Role::Admin])?;
    let shared = configured(&s)?.clone();
    let new: RulesBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("rules: {e}")))?;
    let rules =
        mailaudit_alerts::validate(new.rules).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (before, _) = shared.rules();
    s.api
        .writer
        .record_audit_access(
            caller.actor(),
            Operation::AuditPolicyChange,
            None,
            mailaudit_outputs::rules_change_parameters(&before, &rules),
        )
        .await?;
    let rules = tokio::task::spawn_blocking(move || shared.set_rules(rules))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(RulesBody {
        source: Some(RulesSource::Api),
        rules,
    }))
}

async fn get_outbox(
    AxState(s): AxState<AlertsState>,
    caller: Caller,
) -> Result<Json<Vec<mailaudit_outputs::db::OutboxStatus>>, ApiError> {
    caller.require(&[Role::Admin])?;
    let shared = configured(&s)?.clone();
    let status = tokio::task::spawn_blocking(move || shared.outbox())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(status))
}
