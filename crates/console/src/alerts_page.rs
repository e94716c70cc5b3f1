//! The alert rules page (admins only): the rules `serve --config` runs, editable as JSON, and
//! each output's queue. A change is recorded (`AuditPolicyChange` with the rules before and
//! after) before it applies, exactly as over `PUT /api/v1/alerts/rules`: switching an alert
//! off must leave a trace.

use crate::html::{csrf_field, esc};
use crate::login::check_csrf;
use crate::policy_page::require_admin;
use crate::{render, ConsoleError, Ctx, Signed};
use axum::extract::{Query as UrlQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use mailaudit_alerts::RuleConfig;
use mailaudit_model::Operation;
use mailaudit_outputs::RulesSource;
use std::collections::HashMap;
use std::fmt::Write;

fn not_configured() -> &'static str {
    "<p>Alerts are not configured. Start <code>mailaudit serve --config mailaudit.toml</code> \
     with rules and outputs (see docs/alerts.md); they can then be edited here.</p>"
}

pub async fn show(
    State(ctx): State<Ctx>,
    user: Signed,
    UrlQuery(q): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    require_admin(&user, "alert rules")?;
    let Some(shared) = ctx.alerts() else {
        return render(&ctx, Some(&user.session), "Alert rules", not_configured()).await;
    };
    let (rules, source) = shared.rules();
    let outbox = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || shared.outbox())
            .await
            .map_err(|e| ConsoleError::Internal(e.to_string()))?
            .map_err(|e| ConsoleError::Internal(format!("reading the outbox: {e}")))?
    };
    let mut b = String::new();
    if let Some(done) = q.get("recorded") {
        let _ = write!(
            b,
            "<p class=\"notice\" role=\"status\">Rules replaced; the change is record {}.</p>",
            esc(done)
        );
    }
    let _ = write!(
        b,
        "<p>{} rule(s), {}.</p>",
        rules.len(),
        match source {
            RulesSource::Config => "from the configuration file",
            RulesSource::Api =>
                "as last saved here or over the API (they take precedence over the file)",
        }
    );
    b.push_str(
        "<h2>Deliveries</h2><div class=\"scroll\"><table class=\"records\" id=\"outbox\"><thead><tr>\
         <th>Output</th><th>Pending</th><th>Delivered</th><th>Attempts at the head</th><th>Last error</th>\
         </tr></thead><tbody>",
    );
    for o in &outbox {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&o.output),
            o.pending,
            o.delivered,
            o.head_attempts,
            esc(o.last_error.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</tbody></table></div>");
    let text = serde_json::to_string_pretty(&rules)
        .map_err(|e| ConsoleError::Internal(format!("encoding the rules: {e}")))?;
    let _ = write!(
        b,
        "<h2>Rules</h2><form id=\"rules-form\" method=\"post\" action=\"/console/alerts\">{}\
         <label>Rules (JSON, as in <code>PUT /api/v1/alerts/rules</code>; the kinds and fields are in docs/alerts.md)\
         <textarea name=\"rules\" rows=\"24\" spellcheck=\"false\">{}</textarea></label>\
         <div class=\"actions\"><button type=\"submit\">Replace the rules</button></div></form>",
        csrf_field(&user.session.csrf),
        esc(&text)
    );
    render(&ctx, Some(&user.session), "Alert rules", &b).await
}

pub async fn update(
    State(ctx): State<Ctx>,
    user: Signed,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    check_csrf(&user, &f)?;
    require_admin(&user, "alert rules")?;
    let Some(shared) = ctx.alerts() else {
        return Err(ConsoleError::BadRequest(
            "alerts are not configured: start `mailaudit serve --config mailaudit.toml`".into(),
        ));
    };
    let text = f.get("rules").map(String::as_str).unwrap_or("");
    let rules: Vec<RuleConfig> = serde_json::from_str(text)
        .map_err(|e| ConsoleError::BadRequest(format!("the rules are not valid JSON: {e}")))?;
    let rules =
        mailaudit_alerts::validate(rules).map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    let (before, _) = shared.rules();
    let record = ctx
        .api
        .writer
        .record_audit_access(
            user.actor(),
            Operation::AuditPolicyChange,
            None,
            mailaudit_outputs::rules_change_parameters(&before, &rules),
        )
        .await?;
    tokio::task::spawn_blocking(move || shared.set_rules(rules))
        .await
        .map_err(|e| ConsoleError::Internal(e.to_string()))?
        .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    Ok((
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            format!("/console/alerts?recorded={}", record.seq),
        )],
    )
        .into_response())
}
