//! The policy pages (admins only; auditors change nothing, so they are refused): audit on
//! or off and action sets per mailbox and per logon type, retention, bypass associations.
//! Every change goes through the pipeline's `change_policy`, which records it.

use crate::html::{csrf_field, esc, options};
use crate::login::check_csrf;
use crate::{render, ConsoleError, ConsoleRole, Ctx, Signed};
use axum::extract::{Query as UrlQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use mailaudit_model::{LogonType, Operation};
use mailaudit_policy::{ActionEdit, PolicyChange};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

pub(crate) fn require_admin(user: &Signed, pages: &str) -> Result<(), ConsoleError> {
    if user.session.role == ConsoleRole::Admin {
        Ok(())
    } else {
        Err(ConsoleError::Forbidden(format!(
            "the {pages} pages are for admins; your role ({}) reads and exports records but changes nothing",
            user.session.role.describe()
        )))
    }
}

fn names(set: &BTreeSet<Operation>) -> String {
    set.iter()
        .map(|o| o.readable())
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn show(
    State(ctx): State<Ctx>,
    user: Signed,
    UrlQuery(q): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    require_admin(&user, "policy")?;
    let policy = ctx
        .api
        .read(|s| Ok(mailaudit_pipeline::load_policy(&*s)?))
        .await?;
    let mut b = String::new();
    if let Some(done) = q.get("recorded") {
        let _ = write!(
            b,
            "<p class=\"notice\" role=\"status\">Change applied and recorded (record {}).</p>",
            esc(done)
        );
    }
    let org = policy.effective(None);
    b.push_str("<h2>Organisation defaults</h2><table class=\"detail\" id=\"org\">");
    let _ = write!(
        b,
        "<tr><th>Auditing</th><td>{}</td></tr><tr><th>Retention</th><td>{} days</td></tr>\
         <tr><th>Owner actions</th><td>{}</td></tr><tr><th>Delegate actions</th><td>{}</td></tr>\
         <tr><th>Admin actions</th><td>{}</td></tr></table>",
        if org.enabled { "on" } else { "off" },
        org.retention_days,
        esc(&names(&org.owner)),
        esc(&names(&org.delegate)),
        esc(&names(&org.admin)),
    );
    b.push_str("<h2>Mailboxes with their own settings</h2>");
    if policy.mailboxes.is_empty() {
        b.push_str("<p>None: every mailbox follows the organisation defaults.</p>");
    } else {
        b.push_str("<div class=\"scroll\"><table class=\"records\" id=\"mailboxes\"><thead><tr><th>Mailbox</th><th>Auditing</th><th>Retention</th><th>Owner</th><th>Delegate</th><th>Admin</th></tr></thead><tbody>");
        for mailbox in policy.mailboxes.keys() {
            let e = policy.effective(Some(mailbox));
            let mark = |t: LogonType, set: &BTreeSet<Operation>| {
                if e.default_audit_set.contains(&t) {
                    "(default)".to_string()
                } else {
                    names(set)
                }
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{} days</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(mailbox),
                if e.enabled { "on" } else { "off" },
                e.retention_days,
                esc(&mark(LogonType::Owner, &e.owner)),
                esc(&mark(LogonType::Delegate, &e.delegate)),
                esc(&mark(LogonType::Admin, &e.admin)),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    let csrf = csrf_field(&user.session.csrf);
    b.push_str("<h2>Change a mailbox or the organisation</h2>");
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"post\" action=\"/console/policy/mailbox\" id=\"policy-form\">{csrf}\
         <label>Mailbox (empty: organisation) <input name=\"mailbox\" type=\"text\"></label>\
         <label>Auditing <select name=\"enabled\"><option value=\"\">unchanged</option><option value=\"on\">on</option><option value=\"off\">off</option></select></label>\
         <label>Retention (days) <input name=\"retention_days\" type=\"number\" min=\"1\"></label>\
         <label>Logon type <select name=\"logon_type\"><option value=\"\">—</option>"
    );
    let logons: Vec<(&str, &str)> = LogonType::ALL
        .iter()
        .map(|o| (o.as_str(), o.readable()))
        .collect();
    options(&mut b, &logons, &[]);
    b.push_str("</select></label><label>Edit <select name=\"edit\"><option value=\"add\">audit also</option><option value=\"remove\">stop auditing</option><option value=\"default\">back to default</option></select></label><label>Operations <select name=\"operation\" multiple size=\"6\">");
    let ops: Vec<(&str, &str)> = Operation::ALL
        .iter()
        .filter(|o| !o.is_audit_system())
        .map(|o| (o.as_str(), o.readable()))
        .collect();
    options(&mut b, &ops, &[]);
    b.push_str("</select></label><div class=\"actions\"><button type=\"submit\">Apply</button></div></form>");
    b.push_str("<h2>Bypass associations</h2>");
    if policy.bypass.is_empty() {
        b.push_str("<p>None: every actor's mailbox access is audited.</p>");
    } else {
        b.push_str("<ul class=\"bypass-list\">");
        for a in &policy.bypass {
            let _ = write!(
                b,
                "<li>{} <form class=\"inline\" method=\"post\" action=\"/console/policy/bypass\">{csrf}\
                 <input type=\"hidden\" name=\"actor\" value=\"{}\"><input type=\"hidden\" name=\"action\" value=\"remove\">\
                 <button type=\"submit\">Remove</button></form></li>",
                esc(a),
                esc(a)
            );
        }
        b.push_str("</ul>");
    }
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"post\" action=\"/console/policy/bypass\">{csrf}\
         <input type=\"hidden\" name=\"action\" value=\"add\">\
         <label>Actor to exempt from auditing <input name=\"actor\" type=\"text\" required></label>\
         <div class=\"actions\"><button type=\"submit\">Add bypass</button></div></form>\
         <p class=\"hint\">A bypass stops recording that actor's mailbox access. It is itself recorded and shown on every page while it exists.</p>"
    );
    render(&ctx, Some(&user.session), "Audit policy", &b).await
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.trim().to_string()))
        .collect()
}

async fn apply(
    ctx: &Ctx,
    user: &Signed,
    changes: Vec<PolicyChange>,
) -> Result<Response, ConsoleError> {
    if changes.is_empty() {
        return Err(ConsoleError::BadRequest("the form changed nothing".into()));
    }
    let mut last = 0;
    for change in changes {
        let (record, _) = ctx.api.writer.change_policy(user.actor(), change).await?;
        last = record.seq;
    }
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/console/policy?recorded={last}"))],
    )
        .into_response())
}

pub async fn post_mailbox(
    State(ctx): State<Ctx>,
    user: Signed,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let pairs = form_pairs(&body);
    let single: HashMap<String, String> = pairs.iter().cloned().collect();
    check_csrf(&user, &single)?;
    require_admin(&user, "policy")?;
    let get = |k: &str| single.get(k).map(String::as_str).unwrap_or("");
    let mailbox = Some(get("mailbox").to_lowercase()).filter(|m| !m.is_empty());
    let mut changes = Vec::new();
    match get("enabled") {
        "" => {}
        "on" | "off" => changes.push(PolicyChange::Enabled {
            mailbox: mailbox.clone(),
            enabled: get("enabled") == "on",
        }),
        other => {
            return Err(ConsoleError::BadRequest(format!(
                "`enabled`: `{other}` is not on or off"
            )))
        }
    }
    if !get("retention_days").is_empty() {
        let days: u32 = get("retention_days").parse().map_err(|_| {
            ConsoleError::BadRequest(format!(
                "`retention_days`: `{}` is not a number of days",
                get("retention_days")
            ))
        })?;
        changes.push(PolicyChange::Retention {
            mailbox: mailbox.clone(),
            days,
        });
    }
    if !get("logon_type").is_empty() {
        let logon_type: LogonType =
            get("logon_type")
                .parse()
                .map_err(|e: mailaudit_model::ParseEnumError| {
                    ConsoleError::BadRequest(format!("`logon_type`: {e}"))
                })?;
        let ops = pairs
            .iter()
            .filter(|(k, _)| k == "operation")
            .map(|(_, v)| v.parse::<Operation>())
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| ConsoleError::BadRequest(format!("`operation`: {e}")))?;
        let edit = match get("edit") {
            "default" => ActionEdit::Default,
            "add" | "remove" if ops.is_empty() => {
                return Err(ConsoleError::BadRequest(
                    "choose at least one operation to add or remove".into(),
                ))
            }
            "add" => ActionEdit::Add(ops),
            "remove" => ActionEdit::Remove(ops),
            other => {
                return Err(ConsoleError::BadRequest(format!(
                    "`edit`: `{other}` is not add, remove or default"
                )))
            }
        };
        changes.push(PolicyChange::Actions {
            mailbox: mailbox.clone(),
            logon_type,
            edit,
        });
    }
    apply(&ctx, &user, changes).await
}

pub async fn post_bypass(
    State(ctx): State<Ctx>,
    user: Signed,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    check_csrf(&user, &f)?;
    require_admin(&user, "policy")?;
    let actor = f
        .get("actor")
        .map(|a| a.trim().to_string())
        .unwrap_or_default();
    if actor.is_empty() {
        return Err(ConsoleError::BadRequest("name the actor".into()));
    }
    let change = match f.get("action").map(String::as_str) {
        Some("add") => PolicyChange::BypassAdd { actor },
        Some("remove") => PolicyChange::BypassRemove { actor },
        _ => {
            return Err(ConsoleError::BadRequest(
                "`action` must be add or remove".into(),
            ))
        }
    };
    apply(&ctx, &user, vec![change]).await
}
