//! The non-owner mailbox access report (per mailbox, who other than the owner accessed it,
//! how, when and what) and an account's timeline for an incident. Both read every matching
//! record, page by page, so their figures are exact; both are recorded as searches.

use crate::html::{esc, options, query_string};
use crate::search::{parse_search, records_table, short_time, single_mailbox, viewed};
use crate::{render, ConsoleError, Ctx, Signed};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use mailaudit_model::{AuditRecord, Operation, Timestamp};
use mailaudit_store::{PageRequest, Query};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;

/// Every record of `q`, newest first.
pub(crate) async fn all_records(ctx: &Ctx, q: &Query) -> Result<Vec<AuditRecord>, ConsoleError> {
    let readers = ctx.api.readers.clone();
    let q = q.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut page = PageRequest {
            limit: 1000,
            cursor: None,
            with_total: false,
        };
        loop {
            let got = readers.search_blocking(&q, &page)?;
            out.extend(got.records);
            match got.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok::<_, mailaudit_server::ApiError>(out),
            }
        }
    })
    .await
    .map_err(|e| ConsoleError::Internal(format!("report task failed: {e}")))?
    .map_err(ConsoleError::from)
}

pub(crate) async fn record_view(
    ctx: &Ctx,
    user: &Signed,
    q: &Query,
    view: &str,
    total: usize,
) -> Result<(), ConsoleError> {
    ctx.api
        .writer
        .record_audit_access(
            user.actor(),
            Operation::AuditLogSearch,
            single_mailbox(q),
            viewed(q, Some(total as u64), total, view),
        )
        .await?;
    Ok(())
}

/// A week back from today, at midnight UTC, as the picker's date.
fn week_ago() -> String {
    let t = Timestamp::now().plus_secs(-7 * 86_400).to_rfc3339();
    t.get(..10).unwrap_or("").to_string()
}

fn date_fields(b: &mut String, from: &str, to: &str) {
    let _ = write!(
        b,
        "<label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To (inclusive) <input type=\"date\" name=\"to\" value=\"{}\"></label>",
        esc(from),
        esc(to)
    );
}

struct Row {
    mailbox: String,
    actor: String,
    how: String,
    count: u64,
    first: Timestamp,
    last: Timestamp,
    operations: BTreeMap<&'static str, u64>,
}

pub async fn show(
    State(ctx): State<Ctx>,
    user: Signed,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    user.require_reads_all()?;
    let mut raw = raw.unwrap_or_default();
    if !raw
        .split('&')
        .any(|p| p.starts_with("from=") && p.len() > 5)
    {
        // Without a start the report would read the whole history; a week is the default
        // view, and the form shows it so the choice is visible and changeable.
        raw = format!("{raw}&from={}", week_ago());
    }
    if !raw
        .split('&')
        .any(|p| p.starts_with("non_owner=") && p.len() > 10)
    {
        raw.push_str("&non_owner=all");
    }
    let mut s = parse_search(&user, Some(&raw), 1000, &["sort"])?;
    if s.query.operations.is_empty() {
        s.query.operations = crate::search::mailbox_operations();
    }
    let records = all_records(&ctx, &s.query).await?;
    record_view(&ctx, &user, &s.query, "non-owner-report", records.len()).await?;
    let mut groups: BTreeMap<(String, String, String), Row> = BTreeMap::new();
    for r in &records {
        let how = crate::search::logon_label(r);
        let key = (r.mailbox.clone(), r.actor.clone(), how.clone());
        let row = groups.entry(key).or_insert_with(|| Row {
            mailbox: r.mailbox.clone(),
            actor: r.actor.clone(),
            how,
            count: 0,
            first: r.time,
            last: r.time,
            operations: BTreeMap::new(),
        });
        row.count += 1;
        row.first = row.first.min(r.time);
        row.last = row.last.max(r.time);
        *row.operations.entry(r.operation.readable()).or_default() += 1;
    }
    let mut rows: Vec<Row> = groups.into_values().collect();
    let sort = s.value("sort");
    match sort.as_str() {
        "actor" => rows.sort_by(|a, b| a.actor.cmp(&b.actor).then(a.mailbox.cmp(&b.mailbox))),
        "count" => rows.sort_by_key(|r| std::cmp::Reverse(r.count)),
        "last" => rows.sort_by_key(|r| std::cmp::Reverse(r.last)),
        _ => {}
    }
    let mut b = String::new();
    b.push_str("<form class=\"filters\" method=\"get\" action=\"/console/report\">");
    date_fields(&mut b, &s.value("from"), &s.value("to"));
    let _ = write!(
        b,
        "<label>Mailboxes <input name=\"mailbox\" value=\"{}\"></label><label>Access by <select name=\"non_owner\">",
        esc(&s.values("mailbox").join(","))
    );
    options(
        &mut b,
        &[
            ("all", "All non-owners"),
            ("external", "External users"),
            ("admins-and-delegates", "Administrators and delegated users"),
            ("admins", "Administrators"),
        ],
        &s.values("non_owner"),
    );
    b.push_str("</select></label><div class=\"actions\"><button type=\"submit\">Run report</button></div></form>");
    let _ = write!(
        b,
        "<p class=\"summary\"><strong>{}</strong> non-owner accesses by <strong>{}</strong> actor–mailbox pairs. Export every record: ",
        records.len(),
        rows.len()
    );
    for (f, label) in [
        ("csv", "CSV"),
        ("jsonl", "JSON Lines"),
        ("exchange-xml", "SearchResult.xml"),
    ] {
        let _ = write!(
            b,
            "<a href=\"{}\">{label}</a> ",
            esc(&s.link_without("/console/export", &["sort"], &[("format", f)]))
        );
    }
    b.push_str("</p>");
    let sort_link = |key: &str, label: &str| {
        let pairs: Vec<(&str, &str)> = s
            .filters
            .iter()
            .filter(|(k, _)| k != "sort")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("sort", key)])
            .collect();
        format!(
            "<a href=\"/console/report?{}\">{label}</a>",
            esc(&query_string(pairs))
        )
    };
    let _ = write!(
        b,
        "<div class=\"scroll\"><table class=\"records\" id=\"report\"><thead><tr><th>{}</th><th>{}</th><th>How</th><th>{}</th><th>First</th><th>{}</th><th>What</th></tr></thead><tbody>",
        sort_link("mailbox", "Mailbox"),
        sort_link("actor", "Actor"),
        sort_link("count", "Accesses"),
        sort_link("last", "Last"),
    );
    for r in &rows {
        let what = r
            .operations
            .iter()
            .map(|(o, n)| format!("{o} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let link = query_string(
            [("mailbox", r.mailbox.as_str()), ("actor", r.actor.as_str())]
                .into_iter()
                .chain(
                    s.filters
                        .iter()
                        .filter(|(k, _)| k == "from" || k == "to" || k == "non_owner")
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                ),
        );
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/console/search?{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.mailbox),
            esc(&r.actor),
            esc(&r.how),
            esc(&link),
            r.count,
            esc(&short_time(r.first)),
            esc(&short_time(r.last)),
            esc(&what)
        );
    }
    b.push_str("</tbody></table></div>");
    render(&ctx, Some(&user.session), "Non-owner mailbox access", &b).await
}

const FLAGGED: [Operation; 5] = [
    Operation::UpdateInboxRules,
    Operation::UpdateFolderPermissions,
    Operation::UpdateCalendarDelegation,
    Operation::SendAs,
    Operation::SendOnBehalf,
];

pub async fn timeline(
    State(ctx): State<Ctx>,
    user: Signed,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    user.require_reads_all()?;
    let s = parse_search(&user, raw.as_deref(), 1000, &[])?;
    let mut b = String::new();
    b.push_str("<form class=\"filters\" method=\"get\" action=\"/console/timeline\">");
    let _ = write!(
        b,
        "<label>Actor <input name=\"actor\" required value=\"{}\"></label>",
        esc(&s.value("actor"))
    );
    date_fields(&mut b, &s.value("from"), &s.value("to"));
    b.push_str(
        "<div class=\"actions\"><button type=\"submit\">Show timeline</button></div></form>",
    );
    if s.query.actors.is_empty() {
        b.push_str(
            "<p>Name an account to see everything it did, across every mailbox, oldest first.</p>",
        );
        return render(&ctx, Some(&user.session), "Account timeline", &b).await;
    }
    let mut records = all_records(&ctx, &s.query).await?;
    record_view(&ctx, &user, &s.query, "timeline", records.len()).await?;
    records.reverse();
    let mut ips = HashSet::new();
    let mut clients = HashSet::new();
    let mut first_ip = BTreeSet::new();
    let mut first_client = BTreeSet::new();
    for r in &records {
        if let Some(ip) = r.client.ip {
            if ips.insert(ip) {
                first_ip.insert(r.seq);
            }
        }
        if let Some(c) = &r.client.name {
            if clients.insert(c.clone()) {
                first_client.insert(r.seq);
            }
        }
    }
    let flagged = records
        .iter()
        .filter(|r| FLAGGED.contains(&r.operation))
        .count();
    let _ = write!(
        b,
        "<p class=\"summary\"><strong>{}</strong> records, oldest first; <strong>{}</strong> client addresses and <strong>{}</strong> client programs, each highlighted where first seen; <strong>{flagged}</strong> rule, permission or send-as changes flagged.</p>\
         <p class=\"legend\"><span class=\"first-seen\">first-seen address or client</span> <span class=\"flagged\">rule, permission or send-as change</span></p>",
        records.len(),
        ips.len(),
        clients.len()
    );
    records_table(&mut b, &records, &|r| {
        let mut c = Vec::new();
        if first_ip.contains(&r.seq) || first_client.contains(&r.seq) {
            c.push("first-seen");
        }
        if FLAGGED.contains(&r.operation) {
            c.push("flagged");
        }
        c
    });
    render(&ctx, Some(&user.session), "Account timeline", &b).await
}
