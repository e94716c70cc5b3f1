//! Live sessions, Exchange's "Mailbox Resources" done right: who is connected to which
//! mailbox now, from where, with which client, in which folder, and whether the sign-in
//! worked. Built from the sign-in and sign-out records of the last hours; the page reloads
//! itself every 30 seconds (no JavaScript needed).

use crate::html::esc;
use crate::report::{all_records, record_view};
use crate::search::{logon_label, short_time};
use crate::{render_with, ConsoleError, Ctx, Signed};
use axum::extract::{Query as UrlQuery, State};
use axum::response::Response;
use mailaudit_model::{AuditRecord, Operation, OperationResult, Timestamp};
use mailaudit_store::{PageRequest, Query};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// What identifies one connection: the source's session id, else who, where and from where.
fn key(r: &AuditRecord) -> String {
    match &r.client.session {
        Some(s) => format!("s:{s}"),
        None => format!(
            "c:{}|{}|{}|{}",
            r.actor,
            r.mailbox,
            r.client.ip.map(|i| i.to_string()).unwrap_or_default(),
            r.client.port.unwrap_or(0)
        ),
    }
}

/// Who is connected (signed in, not yet signed out) and the failed sign-ins, both from
/// records ordered oldest first.
pub(crate) fn open_sessions(records: &[AuditRecord]) -> (Vec<AuditRecord>, Vec<AuditRecord>) {
    let mut open: BTreeMap<String, AuditRecord> = BTreeMap::new();
    let mut failed = Vec::new();
    for r in records {
        match (r.operation, r.result) {
            (Operation::MailboxLogin, OperationResult::Failed) => failed.push(r.clone()),
            (Operation::MailboxLogin, _) => {
                open.insert(key(r), r.clone());
            }
            (Operation::MailboxLogout, _) => {
                open.remove(&key(r));
            }
            _ => {}
        }
    }
    let mut open: Vec<_> = open.into_values().collect();
    open.sort_by_key(|r| std::cmp::Reverse(r.time));
    failed.reverse();
    (open, failed)
}

pub async fn show(
    State(ctx): State<Ctx>,
    user: Signed,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    user.require_reads_all()?;
    let hours: i64 = match params
        .get("hours")
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
    {
        None => 8,
        Some(h) => h
            .parse()
            .ok()
            .filter(|h| (1..=168).contains(h))
            .ok_or_else(|| ConsoleError::BadRequest(format!("`hours`: `{h}` is not 1 to 168")))?,
    };
    let q = Query {
        operations: vec![Operation::MailboxLogin, Operation::MailboxLogout],
        from: Some(Timestamp::now().plus_secs(-hours * 3600)),
        ..Default::default()
    };
    let mut records = all_records(&ctx, &q).await?;
    records.reverse();
    let (open, failed) = open_sessions(&records);
    // The folder each open connection is in: its newest record that names one. All the
    // lookups go in one read, on one pooled connection.
    let lookups: Vec<(Query, Option<String>)> = open
        .iter()
        .map(|s| {
            let q = Query {
                mailboxes: vec![s.mailbox.clone()],
                actors: vec![s.actor.clone()],
                from: Some(s.time),
                ..Default::default()
            };
            (q, s.client.session.clone())
        })
        .collect();
    let folders: Vec<Option<String>> = ctx
        .api
        .read(move |st| {
            let page = PageRequest {
                limit: 50,
                cursor: None,
                with_total: false,
            };
            let mut folders = Vec::with_capacity(lookups.len());
            for (q, session) in &lookups {
                let found = st
                    .search(q, &page)?
                    .records
                    .into_iter()
                    .filter(|r| session.is_none() || r.client.session == *session)
                    .find_map(|r| r.folder);
                folders.push(found);
            }
            Ok(folders)
        })
        .await?;
    record_view(&ctx, &user, &q, "sessions", records.len()).await?;
    let mut b = String::new();
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/console/sessions\"><label>Sign-ins of the last <input type=\"number\" name=\"hours\" min=\"1\" max=\"168\" value=\"{hours}\"> hours</label>\
         <div class=\"actions\"><button type=\"submit\">Show</button></div></form>\
         <p class=\"summary\" id=\"connected\" data-count=\"{}\"><strong>{}</strong> connections open now; this page reloads every 30 seconds.</p>",
        open.len(),
        open.len()
    );
    b.push_str("<div class=\"scroll\"><table class=\"records\" id=\"sessions\"><thead><tr><th>Mailbox</th><th>Who</th><th>As</th><th>Since (UTC)</th><th>From</th><th>Client</th><th>Protocol</th><th>Folder now</th><th>Sign-in</th></tr></thead><tbody>");
    for (s, folder) in open.iter().zip(&folders) {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/console/records/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"result-{}\">{}</td></tr>",
            esc(&s.mailbox),
            esc(&s.actor),
            esc(&logon_label(s)),
            s.seq,
            esc(&short_time(s.time)),
            esc(&s.client.ip.map(|i| i.to_string()).unwrap_or_default()),
            esc(s.client.name.as_deref().unwrap_or("")),
            esc(s.client.protocol.as_deref().unwrap_or("")),
            esc(folder.as_deref().unwrap_or("")),
            esc(s.result.as_str()),
            esc(s.result.readable()),
        );
    }
    b.push_str("</tbody></table></div>");
    let _ = write!(
        b,
        "<h2>Failed sign-ins <span class=\"count\">{}</span></h2>",
        failed.len()
    );
    crate::search::records_table(&mut b, &failed, &|_| Vec::new());
    render_with(&ctx, Some(&user.session), "Live sessions", &b, Some(30)).await
}
