//! The audit log search page (Exchange's audit log search and `Search-MailboxAuditLog` in
//! one), a record's details, its inclusion proof, and exports of any search. Filters are
//! the API's parameters, in the URL, so a search can be bookmarked and shared. Owners are
//! held to their own mailbox here, whatever the URL says.

use crate::html::{esc, options, query_string};
use crate::{render, ConsoleError, Ctx, Signed};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mailaudit_export::{ExportWriter, Format};
use mailaudit_model::{AuditRecord, LogonType, Operation, OperationResult, Parameter, Timestamp};
use mailaudit_store::{PageRequest, Query};
use std::fmt::Write;

pub(crate) use mailaudit_server::{param, single_mailbox};

/// A search as the page sees it: the URL's pairs (cleaned) and what they mean.
pub(crate) struct Search {
    /// Non-empty filter pairs, without paging: what links and exports repeat.
    pub filters: Vec<(String, String)>,
    pub query: Query,
    pub page: PageRequest,
    /// 1-based page number, for the "records a–b" line.
    pub page_no: u64,
}

impl Search {
    pub fn values(&self, name: &str) -> Vec<String> {
        self.filters
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn value(&self, name: &str) -> String {
        self.values(name).into_iter().next().unwrap_or_default()
    }

    pub fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        self.link_without(path, &[], extra)
    }

    /// A link with these filters, less the `skip` ones (page-only settings), plus `extra`.
    pub fn link_without(&self, path: &str, skip: &[&str], extra: &[(&str, &str)]) -> String {
        let pairs = self
            .filters
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied());
        let q = query_string(pairs);
        if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{q}")
        }
    }
}

/// A date from a date picker (`2026-11-24`) or a local date-time (`2026-11-24T10:00`) as
/// RFC 3339 UTC; `end` makes a bare date mean the end of that day (the picker's "to" is
/// inclusive, the store's is exclusive).
fn time_value(v: &str, end: bool, name: &str) -> Result<String, ConsoleError> {
    let v = v.trim();
    let bad = |e: String| ConsoleError::BadRequest(format!("`{name}`: `{v}` is not a date ({e})"));
    if v.len() == 10 {
        let t: Timestamp = format!("{v}T00:00:00Z")
            .parse()
            .map_err(|e: mailaudit_model::TimestampError| bad(e.to_string()))?;
        return Ok(if end { t.plus_secs(86_400) } else { t }.to_rfc3339());
    }
    if v.len() == 16 && v.as_bytes().get(10) == Some(&b'T') {
        return Ok(format!("{v}:00Z"));
    }
    Ok(v.to_string())
}

/// Parses a search from the URL. `max_limit` bounds the rows per page.
pub(crate) fn parse_search(
    user: &Signed,
    raw: Option<&str>,
    default_limit: usize,
    extra: &[&str],
) -> Result<Search, ConsoleError> {
    let all: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let mut page_no = 1;
    let mut filters = Vec::new();
    let mut api = Vec::new();
    let mut has_limit = false;
    for (k, v) in &all {
        match k.as_str() {
            "page" => {
                page_no = v.parse().map_err(|_| {
                    ConsoleError::BadRequest(format!("`page`: `{v}` is not a number"))
                })?
            }
            "cursor" => api.push((k.clone(), v.clone())),
            "limit" => {
                has_limit = true;
                filters.push((k.clone(), v.clone()));
                api.push((k.clone(), v.clone()));
            }
            "from" | "to" => {
                filters.push((k.clone(), v.clone()));
                api.push((k.clone(), time_value(v, k == "to", k)?));
            }
            other if extra.contains(&other) => filters.push((k.clone(), v.clone())),
            _ => {
                filters.push((k.clone(), v.clone()));
                api.push((k.clone(), v.clone()));
            }
        }
    }
    if !has_limit {
        api.push(("limit".into(), default_limit.to_string()));
    }
    let (mut query, page) = mailaudit_server::parse_query_pairs(&api, extra, 1000)?;
    if let Some(own) = user.session.role.own_mailbox() {
        if query.mailboxes.iter().any(|m| !m.eq_ignore_ascii_case(own)) {
            return Err(ConsoleError::Forbidden(format!(
                "you may search only your own mailbox, {own}"
            )));
        }
        query.mailboxes = vec![own.to_string()];
    }
    Ok(Search {
        filters,
        query,
        page,
        page_no,
    })
}

/// The `AuditLogSearch` parameters of a console view: the API's, and which page showed it.
pub(crate) fn viewed(q: &Query, total: Option<u64>, returned: usize, view: &str) -> Vec<Parameter> {
    let mut params = mailaudit_server::search_parameters(q, total, returned);
    params.push(param("view", view));
    params
}

/// Runs a search and records it (`AuditLogSearch`) before anything is shown.
pub(crate) async fn run_search(
    ctx: &Ctx,
    user: &Signed,
    q: &Query,
    page: &PageRequest,
    view: &str,
) -> Result<mailaudit_store::SearchPage, ConsoleError> {
    let (query, p) = (q.clone(), page.clone());
    let result = ctx.api.read(move |s| Ok(s.search(&query, &p)?)).await?;
    ctx.api
        .writer
        .record_audit_access(
            user.actor(),
            Operation::AuditLogSearch,
            single_mailbox(q),
            viewed(q, result.total, result.records.len(), view),
        )
        .await?;
    Ok(result)
}

/// Every operation on a mailbox, leaving out the audit system's own (searches, exports,
/// policy changes), which are recorded as Admin actions and would otherwise count as
/// non-owner access to the mailbox searched.
pub(crate) fn mailbox_operations() -> Vec<Operation> {
    Operation::ALL
        .iter()
        .copied()
        .filter(|o| !o.is_audit_system())
        .collect()
}

pub(crate) fn short_time(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    // 2026-11-24T10:00:00.000000Z → 2026-11-24 10:00:00
    match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}"),
        _ => s,
    }
}

pub(crate) fn logon_label(r: &AuditRecord) -> String {
    let mut s = r.logon_type.readable().to_string();
    if r.external {
        s.push_str(" · external");
    }
    s
}

pub(crate) fn items_summary(r: &AuditRecord) -> String {
    let first = r
        .items
        .iter()
        .find_map(|i| i.subject.clone().or_else(|| i.message_id.clone()));
    match (first, r.items.len()) {
        (_, 0) => String::new(),
        (Some(s), 1) => s,
        (Some(s), n) => format!("{s} (+{} more)", n - 1),
        (None, n) => format!("{n} item(s)"),
    }
}

/// The results table; rows link to the record page.
pub(crate) fn records_table(
    out: &mut String,
    records: &[AuditRecord],
    highlight: &dyn Fn(&AuditRecord) -> Vec<&'static str>,
) {
    out.push_str(
        "<div class=\"scroll\"><table class=\"records\"><thead><tr><th>Time (UTC)</th><th>Operation</th><th>Result</th>\
         <th>Mailbox</th><th>Actor</th><th>Logon type</th><th>Folder</th><th>Client</th><th>Items</th></tr></thead><tbody>",
    );
    for r in records {
        let classes = highlight(r);
        let class = if classes.is_empty() {
            String::new()
        } else {
            format!(" class=\"{}\"", classes.join(" "))
        };
        let client = [
            r.client.ip.map(|i| i.to_string()),
            r.client.protocol.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ");
        let folder = match (&r.folder, &r.destination_folder) {
            (Some(f), Some(d)) => format!("{f} → {d}"),
            (Some(f), None) => f.clone(),
            (None, Some(d)) => format!("→ {d}"),
            (None, None) => String::new(),
        };
        let _ = write!(
            out,
            "<tr{class}><td><a href=\"/console/records/{seq}\">{time}</a></td><td title=\"{op}\">{opr}</td>\
             <td class=\"result-{res}\">{resr}</td><td>{mb}</td><td>{actor}</td><td>{logon}</td><td>{folder}</td>\
             <td>{client}</td><td>{items}</td></tr>",
            seq = r.seq,
            time = esc(&short_time(r.time)),
            op = esc(r.operation.as_str()),
            opr = esc(r.operation.readable()),
            res = esc(r.result.as_str()),
            resr = esc(r.result.readable()),
            mb = esc(&r.mailbox),
            actor = esc(&r.actor),
            logon = esc(&logon_label(r)),
            folder = esc(&folder),
            client = esc(&client),
            items = esc(&items_summary(r)),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn filter_form(out: &mut String, s: &Search, owner: Option<&str>) {
    out.push_str("<form class=\"filters\" method=\"get\" action=\"/console/search\">");
    let text = |out: &mut String, name: &str, label: &str, kind: &str, value: &str| {
        let _ = write!(
            out,
            "<label>{label} <input type=\"{kind}\" name=\"{name}\" value=\"{}\"></label>",
            esc(value)
        );
    };
    text(out, "from", "From", "date", &s.value("from"));
    text(out, "to", "To (inclusive)", "date", &s.value("to"));
    match owner {
        Some(own) => {
            let _ = write!(
                out,
                "<label>Mailbox <input type=\"text\" value=\"{}\" disabled></label>",
                esc(own)
            );
        }
        None => text(
            out,
            "mailbox",
            "Mailboxes (comma-separated)",
            "text",
            &s.values("mailbox").join(","),
        ),
    }
    text(out, "actor", "Actors", "text", &s.values("actor").join(","));
    let ops: Vec<(&str, &str)> = Operation::ALL
        .iter()
        .map(|o| (o.as_str(), o.readable()))
        .collect();
    out.push_str("<label>Operations <select name=\"operation\" multiple size=\"6\">");
    options(out, &ops, &s.values("operation"));
    out.push_str("</select></label>");
    let logons: Vec<(&str, &str)> = LogonType::ALL
        .iter()
        .map(|o| (o.as_str(), o.readable()))
        .collect();
    out.push_str("<label>Logon types <select name=\"logon_type\" multiple size=\"3\">");
    options(out, &logons, &s.values("logon_type"));
    out.push_str("</select></label>");
    out.push_str(
        "<label>Non-owner access <select name=\"non_owner\"><option value=\"\">Any access</option>",
    );
    options(
        out,
        &[
            ("all", "All non-owners"),
            ("external", "External users"),
            ("admins-and-delegates", "Administrators and delegated users"),
            ("admins", "Administrators"),
        ],
        &s.values("non_owner"),
    );
    out.push_str("</select></label>");
    out.push_str("<label>Result <select name=\"result\"><option value=\"\">Any</option>");
    let results: Vec<(&str, &str)> = OperationResult::ALL
        .iter()
        .map(|o| (o.as_str(), o.readable()))
        .collect();
    options(out, &results, &s.values("result"));
    out.push_str("</select></label>");
    text(
        out,
        "ip",
        "Client IP or CIDR",
        "text",
        &s.values("ip").join(","),
    );
    text(
        out,
        "protocol",
        "Protocol",
        "text",
        &s.values("protocol").join(","),
    );
    text(out, "folder", "Folder", "text", &s.value("folder"));
    text(
        out,
        "text",
        "Subject or Message-ID contains",
        "search",
        &s.value("text"),
    );
    out.push_str("<div class=\"actions\"><button type=\"submit\">Search</button> <a href=\"/console/search\">Reset</a></div></form>");
}

pub async fn search(
    State(ctx): State<Ctx>,
    user: Signed,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    if raw.as_deref().unwrap_or("").is_empty() && user.session.role.reads_all() {
        // The default view, as in Exchange's audit log search: the last seven days, put in
        // the URL so the range is visible. Clearing the date searches everything.
        let from = Timestamp::now().plus_secs(-7 * 86_400).to_rfc3339();
        let day = from.get(..10).unwrap_or("");
        return Ok(
            axum::response::Redirect::to(&format!("/console/search?from={day}")).into_response(),
        );
    }
    let s = parse_search(&user, raw.as_deref(), ctx.config().page_size, &[])?;
    let result = run_search(&ctx, &user, &s.query, &s.page, "search").await?;
    let own = user.session.role.own_mailbox();
    let mut body = String::new();
    filter_form(&mut body, &s, own);
    let total = result.total.unwrap_or(0);
    let first = (s.page_no - 1) * s.page.limit as u64 + 1;
    let last = first + result.records.len() as u64 - 1;
    if result.records.is_empty() {
        let _ = write!(body, "<p class=\"summary\" id=\"total\" data-total=\"{total}\"><strong>{total}</strong> records match.</p>");
    } else {
        let _ = write!(
            body,
            "<p class=\"summary\" id=\"total\" data-total=\"{total}\"><strong>{total}</strong> records match; showing {first}–{last}, newest first.</p>"
        );
    }
    body.push_str("<p class=\"exports\">Export this search: ");
    for f in Format::ALL {
        let label = match f {
            Format::Csv => "CSV",
            Format::JsonLines => "JSON Lines",
            Format::ExchangeXml => "SearchResult.xml",
        };
        let _ = write!(
            body,
            "<a class=\"export\" data-format=\"{}\" href=\"{}\">{label}</a> ",
            f.as_str(),
            esc(&s.link("/console/export", &[("format", f.as_str())]))
        );
    }
    body.push_str("</p>");
    if ctx.config().mail.is_some() {
        mail_form(&mut body, &s, &user.session.csrf);
    }
    records_table(&mut body, &result.records, &|_| Vec::new());
    body.push_str("<nav class=\"pager\">");
    if s.page_no > 1 {
        let _ = write!(
            body,
            "<a href=\"{}\">First page</a> ",
            esc(&s.link("/console/search", &[]))
        );
    }
    if let Some(c) = &result.next_cursor {
        let next = (s.page_no + 1).to_string();
        let _ = write!(
            body,
            "<a rel=\"next\" href=\"{}\">Next page</a>",
            esc(&s.link("/console/search", &[("cursor", c), ("page", &next)]))
        );
    }
    body.push_str("</nav>");
    let title = if own.is_some() {
        "My mailbox's audit log"
    } else {
        "Audit log search"
    };
    render(&ctx, Some(&user.session), title, &body).await
}

fn parse_id(id: &str) -> Result<u64, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound(format!("record id `{id}` is not a number")))
}

/// One record, if this user may see it.
async fn visible_record(ctx: &Ctx, user: &Signed, seq: u64) -> Result<AuditRecord, ConsoleError> {
    let record = ctx.api.read(move |s| Ok(s.get(seq)?)).await?;
    let missing = || {
        ConsoleError::NotFound(format!(
            "record {seq} does not exist or was removed by retention"
        ))
    };
    let record = record.ok_or_else(missing)?;
    if let Some(own) = user.session.role.own_mailbox() {
        if !record.mailbox.eq_ignore_ascii_case(own) {
            // Same answer as a missing record: an owner learns nothing of other mailboxes.
            return Err(missing());
        }
    }
    Ok(record)
}

pub async fn record(
    State(ctx): State<Ctx>,
    user: Signed,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let seq = parse_id(&id)?;
    let r = visible_record(&ctx, &user, seq).await?;
    ctx.api
        .writer
        .record_audit_access(
            user.actor(),
            Operation::AuditLogSearch,
            Some(r.mailbox.clone()),
            vec![param("record", seq.to_string()), param("view", "record")],
        )
        .await?;
    let mut b = String::new();
    let row = |b: &mut String, k: &str, v: &str| {
        if !v.is_empty() {
            let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
        }
    };
    b.push_str("<table class=\"detail\" id=\"record\">");
    row(&mut b, "Record", &r.seq.to_string());
    row(&mut b, "Time", &r.time.to_rfc3339());
    row(&mut b, "Recorded", &r.recorded_at.to_rfc3339());
    row(
        &mut b,
        "Operation",
        &format!("{} ({})", r.operation.readable(), r.operation.as_str()),
    );
    row(&mut b, "Result", r.result.readable());
    row(&mut b, "Reason", r.reason.as_deref().unwrap_or(""));
    row(&mut b, "Logon type", &logon_label(&r));
    row(&mut b, "Mailbox", &r.mailbox);
    row(&mut b, "Actor", &r.actor);
    row(&mut b, "Acting as", r.acting_as.as_deref().unwrap_or(""));
    row(&mut b, "Folder", r.folder.as_deref().unwrap_or(""));
    row(
        &mut b,
        "Destination folder",
        r.destination_folder.as_deref().unwrap_or(""),
    );
    row(
        &mut b,
        "Client IP",
        &r.client.ip.map(|i| i.to_string()).unwrap_or_default(),
    );
    row(
        &mut b,
        "Client port",
        &r.client.port.map(|i| i.to_string()).unwrap_or_default(),
    );
    row(
        &mut b,
        "Protocol",
        r.client.protocol.as_deref().unwrap_or(""),
    );
    row(&mut b, "Client", r.client.name.as_deref().unwrap_or(""));
    row(&mut b, "Session", r.client.session.as_deref().unwrap_or(""));
    row(
        &mut b,
        "TLS",
        &r.client
            .tls
            .map(|t| if t { "yes" } else { "no" }.to_string())
            .unwrap_or_default(),
    );
    row(&mut b, "Source", &r.provenance.source);
    row(
        &mut b,
        "Source host",
        r.provenance.host.as_deref().unwrap_or(""),
    );
    row(
        &mut b,
        "Original line or event",
        r.provenance.reference.as_deref().unwrap_or(""),
    );
    b.push_str("</table>");
    if !r.items.is_empty() {
        let _ = write!(b, "<h2>Items ({})</h2><div class=\"scroll\"><table class=\"items\"><thead><tr><th>UID</th><th>Message-ID</th><th>Subject</th><th>Size</th><th>Folder</th><th>Note</th></tr></thead><tbody>", r.items.len());
        for i in &r.items {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i.uid.map(|u| u.to_string()).unwrap_or_default(),
                esc(i.message_id.as_deref().unwrap_or("")),
                esc(i.subject.as_deref().unwrap_or("")),
                i.size.map(|u| u.to_string()).unwrap_or_default(),
                esc(i.folder.as_deref().unwrap_or("")),
                esc(i.unresolved.as_deref().unwrap_or("")),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    if !r.parameters.is_empty() {
        b.push_str("<h2>Parameters</h2><table class=\"detail\">");
        for p in &r.parameters {
            row(&mut b, &p.name, &p.value);
        }
        b.push_str("</table>");
    }
    let _ = write!(
        b,
        "<p><a class=\"proof\" href=\"/console/records/{seq}/proof\" download>Download inclusion proof</a> \
         (check it offline with <code>mailaudit verify-proof FILE --key KEY</code>)</p>"
    );
    render(&ctx, Some(&user.session), &format!("Record {seq}"), &b).await
}

pub async fn proof(
    State(ctx): State<Ctx>,
    user: Signed,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let seq = parse_id(&id)?;
    let r = visible_record(&ctx, &user, seq).await?;
    let proof = mailaudit_server::prove(&ctx.api, seq).await?;
    ctx.api
        .writer
        .record_audit_access(
            user.actor(),
            Operation::AuditLogSearch,
            Some(r.mailbox.clone()),
            vec![param("proof", seq.to_string()), param("view", "proof")],
        )
        .await?;
    let text = serde_json::to_string_pretty(&proof)
        .map_err(|e| ConsoleError::Internal(format!("encoding the proof: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mailaudit-proof-{seq}.json\""),
            ),
        ],
        text,
    )
        .into_response())
}

pub(crate) fn parse_format(raw: &str) -> Result<Format, ConsoleError> {
    raw.parse()
        .map_err(|e| ConsoleError::BadRequest(format!("`format`: {e}")))
}

/// Counts a search snapshot and records its export (`AuditLogExport`); returns the query
/// bound to the snapshot and the count.
pub(crate) async fn prepare_export(
    ctx: &Ctx,
    user: &Signed,
    q: Query,
    format: Format,
    extra: Vec<Parameter>,
) -> Result<(Query, u64), ConsoleError> {
    Ok(mailaudit_server::begin_export(&ctx.api, user.actor(), q, format, extra).await?)
}

pub async fn export(
    State(ctx): State<Ctx>,
    user: Signed,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let s = parse_search(&user, raw.as_deref(), 1000, &["format"])?;
    let format = parse_format(&s.value("format"))?;
    let (q, total) = prepare_export(&ctx, &user, s.query.clone(), format, vec![]).await?;
    Ok(mailaudit_server::stream_export(
        ctx.api.readers.clone(),
        q,
        format,
        total,
        "console export",
    ))
}

fn mail_form(out: &mut String, s: &Search, csrf: &str) {
    out.push_str("<form class=\"filters mail\" method=\"post\" action=\"/console/export/mail\">");
    out.push_str(&crate::html::csrf_field(csrf));
    for (k, v) in &s.filters {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        );
    }
    out.push_str(
        "<label>Mail this export to <input name=\"recipients\" type=\"text\" placeholder=\"legal@example.com, …\" required></label>\
         <label>As <select name=\"format\"><option value=\"exchange-xml\">SearchResult.xml</option>\
         <option value=\"csv\">CSV</option><option value=\"jsonl\">JSON Lines</option></select></label>\
         <div class=\"actions\"><button type=\"submit\">Mail export</button></div></form>",
    );
}

/// `POST /console/export/mail`: records the export, answers at once, and mails the file
/// when it is ready.
pub async fn mail_export(
    State(ctx): State<Ctx>,
    user: Signed,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let single: std::collections::HashMap<String, String> =
        [("csrf".to_string(), get("csrf"))].into_iter().collect();
    crate::login::check_csrf(&user, &single)?;
    let Some(mail) = ctx.config().mail.clone() else {
        return Err(ConsoleError::BadRequest(
            "mailed exports are not configured (serve --console-smtp)".into(),
        ));
    };
    let recipients = crate::mail::parse_recipients(&get("recipients"))
        .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    if recipients.is_empty() {
        return Err(ConsoleError::BadRequest(
            "name at least one recipient".into(),
        ));
    }
    let filters = query_string(
        pairs
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "csrf" | "recipients"))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let s = parse_search(&user, Some(&filters), 1000, &["format"])?;
    let format = parse_format(&s.value("format"))?;
    let to_text = recipients
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (q, total) = prepare_export(
        &ctx,
        &user,
        s.query.clone(),
        format,
        vec![param("mailed_to", to_text.clone())],
    )
    .await?;
    let mut criteria = String::new();
    for (k, v) in s.filters.iter().filter(|(k, _)| k != "format") {
        let _ = writeln!(criteria, "  {k}: {v}");
    }
    if criteria.is_empty() {
        criteria.push_str("  (none: every record)\n");
    }
    if let Some(own) = user.session.role.own_mailbox() {
        let _ = writeln!(criteria, "  limited to the mailbox of {own}");
    }
    let requester = user.actor().name;
    let readers = ctx.api.readers.clone();
    tokio::spawn(async move {
        let built = tokio::task::spawn_blocking(move || {
            let mut out = ExportWriter::new(format, Vec::new()).map_err(|e| e.to_string())?;
            mailaudit_server::write_all(&readers, &q, &mut out)?;
            out.finish().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let name = if format == Format::ExchangeXml {
            "SearchResult.xml".to_string()
        } else {
            format!("mailaudit-export.{}", format.file_extension())
        };
        let intro = format!(
            "mailaudit audit log export\n\nRequested by: {requester}\nRecords: {total}\nFormat: {}\nSearch criteria:\n{criteria}",
            format.as_str()
        );
        let (body, attachment) = match built {
            Ok(bytes) if bytes.len() <= mail.max_attachment => (
                format!("{intro}\nThe export is attached as {name}.\n"),
                Some((name, format.content_type().to_string(), bytes)),
            ),
            Ok(bytes) => (
                format!(
                    "{intro}\nThe export is {} bytes, more than the {} bytes this server attaches; \
                     it was not sent. Narrow the search or download it from the console.\n",
                    bytes.len(),
                    mail.max_attachment
                ),
                None,
            ),
            Err(e) => (format!("{intro}\nThe export failed: {e}\n"), None),
        };
        let outgoing = crate::mail::Outgoing {
            to: recipients,
            subject: format!("mailaudit export: {total} records"),
            body,
            attachment,
        };
        if let Err(e) = crate::mail::send(&mail, outgoing).await {
            tracing::error!("mailing an export of {total} records failed: {e}");
        }
    });
    let msg = format!(
        "<p class=\"notice\" role=\"status\" id=\"mailed\">The export of {total} records ({}) will be mailed to {} when it is ready.</p>\
         <p><a href=\"{}\">Back to the search</a></p>",
        esc(format.as_str()),
        esc(&to_text),
        esc(&s.link_without("/console/search", &["format"], &[]))
    );
    render(&ctx, Some(&user.session), "Export mailed", &msg).await
}
