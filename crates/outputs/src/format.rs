//! How records and alerts are written for others: the Elastic Common Schema mapping
//! (documented in docs/siem.md), one readable line per record for the daily files, and
//! alerts as RFC 5424 structured data or CEF.

use crate::syslog::{rfc5424, sd_escape, SD_ID};
use mailaudit_alerts::{Alert, Severity};
use mailaudit_model::{AuditRecord, OperationResult};
use serde_json::{json, Map, Value};

pub const ECS_VERSION: &str = "8.11.0";

/// A record in Elastic Common Schema. Fields ECS has are mapped to them; the rest (logon type,
/// folders, items, parameters, provenance) go under `mailaudit.*`.
pub fn ecs(r: &AuditRecord) -> Value {
    let outcome = match r.result {
        OperationResult::Succeeded => "success",
        OperationResult::Failed => "failure",
        OperationResult::PartiallySucceeded => "unknown",
    };
    let category: &[&str] = match r.operation {
        mailaudit_model::Operation::MailboxLogin | mailaudit_model::Operation::MailboxLogout => {
            &["authentication", "email"]
        }
        op if op.is_audit_system() => &["configuration", "iam"],
        _ => &["email"],
    };
    let mut event = Map::new();
    event.insert("kind".into(), json!("event"));
    event.insert("category".into(), json!(category));
    event.insert("action".into(), json!(r.operation.as_str()));
    event.insert("outcome".into(), json!(outcome));
    event.insert("dataset".into(), json!("mailaudit.audit"));
    event.insert("module".into(), json!("mailaudit"));
    event.insert("provider".into(), json!(r.provenance.source));
    event.insert("sequence".into(), json!(r.seq));
    event.insert("id".into(), json!(r.seq.to_string()));
    event.insert("created".into(), json!(r.recorded_at));
    if let Some(reason) = &r.reason {
        event.insert("reason".into(), json!(reason));
    }
    let mut user = Map::new();
    user.insert("name".into(), json!(r.actor));
    if let Some(d) = r.actor.rsplit_once('@').map(|(_, d)| d) {
        user.insert("domain".into(), json!(d));
    }
    user.insert("target".into(), json!({ "name": r.mailbox }));
    if let Some(a) = &r.acting_as {
        user.insert("effective".into(), json!({ "name": a }));
    }
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(r.time));
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    doc.insert("event".into(), Value::Object(event));
    doc.insert("user".into(), Value::Object(user));
    doc.insert(
        "observer".into(),
        json!({ "vendor": "mailaudit", "product": "mailaudit", "type": "audit" }),
    );
    if let Some(h) = &r.provenance.host {
        doc.insert("host".into(), json!({ "name": h }));
    }
    let mut source = Map::new();
    if let Some(ip) = r.client.ip {
        source.insert("ip".into(), json!(ip.to_string()));
    }
    if let Some(p) = r.client.port {
        source.insert("port".into(), json!(p));
    }
    if !source.is_empty() {
        doc.insert("source".into(), Value::Object(source));
    }
    if let Some(p) = &r.client.protocol {
        doc.insert("network".into(), json!({ "protocol": p }));
    }
    if let Some(n) = &r.client.name {
        doc.insert("user_agent".into(), json!({ "original": n }));
    }
    if let Some(first) = r.items.first() {
        let mut email = Map::new();
        if let Some(m) = &first.message_id {
            email.insert("message_id".into(), json!(m));
        }
        if let Some(s) = &first.subject {
            email.insert("subject".into(), json!(s));
        }
        if !email.is_empty() {
            doc.insert("email".into(), Value::Object(email));
        }
    }
    let mut related_users: Vec<&str> = Vec::new();
    for u in [
        Some(r.actor.as_str()),
        Some(r.mailbox.as_str()),
        r.acting_as.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        if !related_users.contains(&u) {
            related_users.push(u);
        }
    }
    let mut related = json!({ "user": related_users });
    if let Some(ip) = r.client.ip {
        related["ip"] = json!([ip.to_string()]);
    }
    doc.insert("related".into(), related);
    let mut ma = Map::new();
    ma.insert("seq".into(), json!(r.seq));
    ma.insert("logon_type".into(), json!(r.logon_type));
    ma.insert("external".into(), json!(r.external));
    ma.insert("result".into(), json!(r.result));
    if let Some(f) = &r.folder {
        ma.insert("folder".into(), json!(f));
    }
    if let Some(f) = &r.destination_folder {
        ma.insert("destination_folder".into(), json!(f));
    }
    if !r.items.is_empty() {
        ma.insert("items".into(), json!(r.items));
    }
    if !r.parameters.is_empty() {
        ma.insert("parameters".into(), json!(r.parameters));
    }
    if let Some(s) = &r.client.session {
        ma.insert("session".into(), json!(s));
    }
    if let Some(t) = r.client.tls {
        ma.insert("tls".into(), json!(t));
    }
    ma.insert("provenance".into(), json!(r.provenance));
    doc.insert("mailaudit".into(), Value::Object(ma));
    Value::Object(doc)
}

/// Control characters become spaces: one record must stay one line.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One readable line per record, for the daily files (the time is local to the files'
/// time zone).
pub fn daily_line(r: &AuditRecord, local_time: &str) -> String {
    let mut line = format!(
        "{local_time} #{} {} {} {} {}",
        r.seq,
        r.operation,
        r.result,
        r.logon_type,
        clean(&r.actor)
    );
    if let Some(a) = &r.acting_as {
        line.push_str(&format!(" as {}", clean(a)));
    }
    if r.external {
        line.push_str(" external");
    }
    if let Some(f) = &r.folder {
        line.push_str(&format!(" folder=\"{}\"", clean(f)));
    }
    if let Some(f) = &r.destination_folder {
        line.push_str(&format!(" to=\"{}\"", clean(f)));
    }
    if let Some(ip) = r.client.ip {
        line.push_str(&format!(" ip={ip}"));
    }
    if let Some(p) = &r.client.protocol {
        line.push_str(&format!(" proto={}", clean(p)));
    }
    if let Some(n) = &r.client.name {
        line.push_str(&format!(" client=\"{}\"", clean(n)));
    }
    if let Some(reason) = &r.reason {
        line.push_str(&format!(" reason=\"{}\"", clean(reason)));
    }
    for item in &r.items {
        let mut parts = Vec::new();
        if let Some(u) = item.uid {
            parts.push(format!("uid={u}"));
        }
        if let Some(m) = &item.message_id {
            parts.push(clean(m));
        }
        if let Some(s) = &item.subject {
            parts.push(format!("\"{}\"", clean(s)));
        }
        if let Some(u) = &item.unresolved {
            parts.push(format!("unresolved=\"{}\"", clean(u)));
        }
        line.push_str(&format!(" [{}]", parts.join(" ")));
    }
    for p in &r.parameters {
        line.push_str(&format!(" {}=\"{}\"", clean(&p.name), clean(&p.value)));
    }
    line
}

/// Syslog severity of an alert.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Low => 5,      // notice
        Severity::Medium => 4,   // warning
        Severity::High => 3,     // error
        Severity::Critical => 2, // critical
    }
}

fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_ext(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// An alert in ArcSight CEF.
pub fn cef(a: &Alert) -> String {
    let records: Vec<String> = a.records.iter().map(|s| s.to_string()).collect();
    let mut ext = vec![
        format!("rt={}", a.time.micros() / 1000),
        format!("externalId={}", cef_ext(&a.id)),
        format!("msg={}", cef_ext(&a.summary)),
        format!("cnt={}", a.count),
        format!("cs1Label=rule cs1={}", cef_ext(&a.rule)),
        format!("cs2Label=records cs2={}", records.join(",")),
    ];
    if let Some(u) = &a.actor {
        ext.push(format!("suser={}", cef_ext(u)));
    }
    if let Some(m) = &a.mailbox {
        ext.push(format!("duser={}", cef_ext(m)));
    }
    if let Some(ip) = &a.ip {
        ext.push(format!("src={}", cef_ext(ip)));
    }
    format!(
        "CEF:0|mailaudit|mailaudit|{}|{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&a.kind),
        cef_header(&a.rule),
        cef_severity(a.severity),
        ext.join(" ")
    )
}

/// An alert as an RFC 5424 message: its fields as structured data, its summary (or its CEF
/// form) as the message.
pub fn alert_syslog(a: &Alert, facility: u8, hostname: &str, as_cef: bool) -> String {
    let records: Vec<String> = a.records.iter().map(|s| s.to_string()).collect();
    let mut sd = format!(
        "[{SD_ID} id=\"{}\" rule=\"{}\" kind=\"{}\" severity=\"{}\" count=\"{}\" records=\"{}\"",
        sd_escape(&a.id),
        sd_escape(&a.rule),
        sd_escape(&a.kind),
        a.severity.as_str(),
        a.count,
        records.join(",")
    );
    for (k, v) in [("mailbox", &a.mailbox), ("actor", &a.actor), ("ip", &a.ip)] {
        if let Some(v) = v {
            sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
        }
    }
    sd.push(']');
    let msg = if as_cef { cef(a) } else { a.summary.clone() };
    rfc5424(
        facility,
        syslog_severity(a.severity),
        a.time,
        hostname,
        "alert",
        &sd,
        &msg,
    )
}

/// A record as an RFC 5424 message whose MSG is its JSON (or ECS JSON).
pub fn record_syslog(r: &AuditRecord, facility: u8, hostname: &str, body: &str) -> String {
    let sd = format!(
        "[{SD_ID} seq=\"{}\" operation=\"{}\" mailbox=\"{}\"]",
        r.seq,
        r.operation,
        sd_escape(&r.mailbox)
    );
    rfc5424(facility, 6, r.time, hostname, "record", &sd, body)
}
