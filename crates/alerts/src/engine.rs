//! The rule engine: records in, alerts out. Windows and suppression run on the records' own
//! times (`AuditRecord::time`), and the only other clock is the `now` passed to `tick`, so a
//! replay of the same records gives the same alerts with the same ids. Its whole state is
//! serialisable, so a restart carries on where it stopped.

use crate::rules::{
    FailedBy, NonOwnerLogon, RuleConfig, RuleError, RuleKind, SeenWhat, Severity, Weakening,
};
use mailaudit_model::{AuditRecord, LogonType, Operation, OperationResult, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One alert. `id` is derived from the rule and the first record that fired it, so the same
/// alert generated twice (a replay after a restart) has the same id and is delivered once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub kind: String,
    pub severity: Severity,
    /// The time of the last record it covers.
    pub time: Timestamp,
    /// The records (their `seq`, which `GET /api/v1/records/{id}/proof` proves) that fired it.
    pub records: Vec<u64>,
    /// How many events it stands for: matches folded into it, or deleted items / failed
    /// logins counted towards a threshold.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub summary: String,
    /// For a follow-up that folds repeats: the id of the alert it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_of: Option<String>,
}

/// An alert fired for a key, and the matches folded into it since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Suppression {
    alert_id: String,
    /// Event time the alert fired at; folding lasts `suppress_secs` from here.
    start: Timestamp,
    folded: Vec<u64>,
    folded_count: u64,
    last_time: Timestamp,
    mailbox: Option<String>,
    actor: Option<String>,
    ip: Option<String>,
    what: String,
    /// With `group_secs`: the alert, held back while matches within that time join it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held: Option<Alert>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RuleState {
    /// Per key: (time, seq, weight) of recent matches of a threshold rule.
    #[serde(default)]
    windows: BTreeMap<String, VecDeque<(Timestamp, u64, u64)>>,
    /// Per mailbox: the IPs or clients seen.
    #[serde(default)]
    seen: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    suppressed: BTreeMap<String, Suppression>,
}

/// The engine's state, by rule name; `Engine::state` and `Engine::with_state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineState {
    rules: BTreeMap<String, RuleState>,
}

pub struct Engine {
    rules: Vec<RuleConfig>,
    state: EngineState,
}

/// What a matching rule says about one record, before suppression.
struct Hit {
    key: String,
    records: Vec<u64>,
    count: u64,
    mailbox: Option<String>,
    actor: Option<String>,
    ip: Option<String>,
    /// Short: what happened, for the summary ("bob (Delegate) accessed ceo@…").
    what: String,
    severity: Option<Severity>,
}

const DELETIONS: [Operation; 3] = [
    Operation::SoftDelete,
    Operation::HardDelete,
    Operation::MoveToDeletedItems,
];

/// Parameter names (any case) that carry a forwarding target: Dovecot's Sieve `redirect`
/// (`forwards_to`), Exchange's New-InboxRule parameters.
const FORWARD_PARAMS: [&str; 7] = [
    "forwards_to",
    "forward_to",
    "forwardto",
    "redirect_to",
    "redirectto",
    "forwardasattachmentto",
    "forwardingsmtpaddress",
];

fn domain(address: &str) -> Option<String> {
    let a = address
        .trim()
        .trim_matches(|c| c == '<' || c == '>' || c == '"');
    let a = a.strip_prefix("smtp:").unwrap_or(a);
    a.rsplit_once('@').map(|(_, d)| d.to_lowercase())
}

fn listed(list: &BTreeSet<String>, mailbox: &str) -> bool {
    list.is_empty() || list.contains(mailbox)
}

fn ip_of(r: &AuditRecord) -> Option<String> {
    r.client.ip.map(|ip| ip.to_string())
}

impl Engine {
    pub fn new(rules: Vec<RuleConfig>) -> Result<Self, RuleError> {
        Ok(Engine {
            rules: crate::rules::validate(rules)?,
            state: EngineState::default(),
        })
    }

    /// Carries on from a saved state. State of rules that no longer exist is dropped; a rule
    /// whose definition changed keeps what it learned (seen IPs) and its windows.
    pub fn with_state(mut self, state: EngineState) -> Self {
        let names: BTreeSet<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        self.state.rules = state
            .rules
            .into_iter()
            .filter(|(n, _)| names.contains(n.as_str()))
            .collect();
        self
    }

    /// Replaces the rules, keeping the state of rules whose name stays.
    pub fn set_rules(&mut self, rules: Vec<RuleConfig>) -> Result<(), RuleError> {
        let rules = crate::rules::validate(rules)?;
        let names: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        self.state.rules.retain(|n, _| names.contains(n.as_str()));
        self.rules = rules;
        Ok(())
    }

    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    pub fn into_state(self) -> EngineState {
        self.state
    }

    /// Evaluates every enabled rule on one record, in rule order.
    pub fn observe(&mut self, record: &AuditRecord) -> Vec<Alert> {
        let mut out = Vec::new();
        for rule in &self.rules {
            if !rule.enabled {
                continue;
            }
            let state = self.state.rules.entry(rule.name.clone()).or_default();
            for hit in evaluate(rule, state, record) {
                fire(rule, state, hit, record.time, &mut out);
            }
        }
        out
    }

    /// Ends folding windows that closed before `now`, giving one follow-up alert for each
    /// that folded anything, and forgets windows and matches too old to matter.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Alert> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let Some(state) = self.state.rules.get_mut(&rule.name) else {
                continue;
            };
            for s in state.suppressed.values_mut() {
                if now >= window_end(s.start, rule.group_secs) {
                    out.extend(s.held.take());
                }
            }
            let closed: Vec<String> = state
                .suppressed
                .iter()
                .filter(|(_, s)| now >= window_end(s.start, rule.suppress_secs))
                .map(|(k, _)| k.clone())
                .collect();
            for key in closed {
                if let Some(s) = state.suppressed.remove(&key) {
                    out.extend(follow_up(rule, s));
                }
            }
            if let RuleKind::Deletions { window_secs, .. }
            | RuleKind::FailedLogins { window_secs, .. } = rule.kind
            {
                let oldest = now.plus_secs(-(window_secs as i64));
                state.windows.retain(|_, w| {
                    w.retain(|(t, _, _)| *t >= oldest);
                    !w.is_empty()
                });
            }
        }
        out
    }
}

/// Whether a match at `time` folds into an alert fired at `start`: within `secs` after it,
/// or (a record that arrived out of order) within `secs` before it.
fn folds(start: Timestamp, secs: u64, time: Timestamp) -> bool {
    time < window_end(start, secs) && time > start.plus_secs(-(secs as i64))
}

fn window_end(start: Timestamp, secs: u64) -> Timestamp {
    start.plus_secs(secs as i64)
}

fn follow_up(rule: &RuleConfig, s: Suppression) -> Option<Alert> {
    if s.folded_count == 0 {
        return None;
    }
    Some(Alert {
        id: format!("{}:repeat", s.alert_id),
        rule: rule.name.clone(),
        kind: kind_name(&rule.kind).to_string(),
        severity: rule.severity(),
        time: s.last_time,
        summary: format!(
            "{}: {} more time{} within {}s of alert {}: {}",
            rule.name,
            s.folded_count,
            if s.folded_count == 1 { "" } else { "s" },
            rule.suppress_secs,
            s.alert_id,
            s.what
        ),
        records: s.folded,
        count: s.folded_count,
        mailbox: s.mailbox,
        actor: s.actor,
        ip: s.ip,
        repeat_of: Some(s.alert_id),
    })
}

/// Emits a hit as an alert, or folds it into the alert already fired for its key.
fn fire(rule: &RuleConfig, state: &mut RuleState, hit: Hit, time: Timestamp, out: &mut Vec<Alert>) {
    if let Some(s) = state.suppressed.get_mut(&hit.key) {
        if let Some(held) = s.held.as_mut() {
            if folds(s.start, rule.group_secs, time) {
                held.records.extend(&hit.records);
                held.count += hit.count;
                held.time = held.time.max(time);
                return;
            }
        }
        if folds(s.start, rule.suppress_secs, time) {
            s.folded.extend(&hit.records);
            s.folded_count += hit.count;
            s.last_time = s.last_time.max(time);
            return;
        }
        if let Some(mut s) = state.suppressed.remove(&hit.key) {
            out.extend(s.held.take());
            out.extend(follow_up(rule, s));
        }
    }
    let first = hit.records.first().copied().unwrap_or_default();
    let id = format!("{}:{}", rule.name, first);
    let summary = format!("{}: {}", rule.name, hit.what);
    let alert = Alert {
        id: id.clone(),
        rule: rule.name.clone(),
        kind: kind_name(&rule.kind).to_string(),
        severity: hit.severity.unwrap_or_else(|| rule.severity()),
        time,
        records: hit.records,
        count: hit.count,
        mailbox: hit.mailbox.clone(),
        actor: hit.actor.clone(),
        ip: hit.ip.clone(),
        summary,
        repeat_of: None,
    };
    let held = rule.group_secs > 0;
    if rule.suppress_secs > 0 || held {
        state.suppressed.insert(
            hit.key,
            Suppression {
                alert_id: id.clone(),
                start: time,
                folded: Vec::new(),
                folded_count: 0,
                last_time: time,
                mailbox: hit.mailbox.clone(),
                actor: hit.actor.clone(),
                ip: hit.ip,
                what: hit.what,
                held: held.then(|| alert.clone()),
            },
        );
    }
    if !held {
        out.push(alert);
    }
}

pub fn kind_name(kind: &RuleKind) -> &'static str {
    match kind {
        RuleKind::NonOwnerAccess { .. } => "non_owner_access",
        RuleKind::AdminImpersonation { .. } => "admin_impersonation",
        RuleKind::InboxRuleForwarding { .. } => "inbox_rule_forwarding",
        RuleKind::AuditWeakened { .. } => "audit_weakened",
        RuleKind::Deletions { .. } => "deletions",
        RuleKind::FailedLogins { .. } => "failed_logins",
        RuleKind::FirstSeen { .. } => "first_seen",
        RuleKind::SendAs { .. } => "send_as",
    }
}

fn simple(r: &AuditRecord, key: String, what: String) -> Hit {
    Hit {
        key,
        records: vec![r.seq],
        count: 1,
        mailbox: Some(r.mailbox.clone()),
        actor: Some(r.actor.clone()),
        ip: ip_of(r),
        what,
        severity: None,
    }
}

fn evaluate(rule: &RuleConfig, state: &mut RuleState, r: &AuditRecord) -> Vec<Hit> {
    match &rule.kind {
        RuleKind::NonOwnerAccess { logon, mailboxes } => {
            if r.operation.is_audit_system() || !listed(mailboxes, &r.mailbox) {
                return vec![];
            }
            let matches = match logon {
                NonOwnerLogon::Any => r.is_non_owner(),
                NonOwnerLogon::Delegate => r.logon_type == LogonType::Delegate,
                NonOwnerLogon::Admin => r.logon_type == LogonType::Admin,
            };
            if !matches {
                return vec![];
            }
            let what = format!(
                "{} ({}{}) {} in {}{}",
                r.actor,
                r.logon_type,
                if r.external { ", external" } else { "" },
                r.operation.readable().to_lowercase(),
                r.mailbox,
                r.folder
                    .as_deref()
                    .map(|f| format!(" folder {f}"))
                    .unwrap_or_default()
            );
            vec![simple(r, format!("{}|{}", r.actor, r.mailbox), what)]
        }
        RuleKind::AdminImpersonation { mailboxes } => {
            let Some(as_who) = r.acting_as.as_deref() else {
                return vec![];
            };
            if r.operation.is_audit_system()
                || r.logon_type != LogonType::Admin
                || !listed(mailboxes, &r.mailbox)
            {
                return vec![];
            }
            let what = format!(
                "{} impersonated {} ({}) in {}",
                r.actor,
                as_who,
                r.operation.readable().to_lowercase(),
                r.mailbox
            );
            vec![simple(r, format!("{}|{}", r.actor, r.mailbox), what)]
        }
        RuleKind::InboxRuleForwarding {
            internal_domains,
            external_only,
        } => {
            if r.operation != Operation::UpdateInboxRules || r.result == OperationResult::Failed {
                return vec![];
            }
            let own = domain(&r.mailbox);
            let targets: Vec<&str> = r
                .parameters
                .iter()
                .filter(|p| {
                    FORWARD_PARAMS
                        .iter()
                        .any(|n| p.name.eq_ignore_ascii_case(n))
                })
                .flat_map(|p| p.value.split([',', ';']))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            if targets.is_empty() {
                return vec![];
            }
            let outside: Vec<&str> = targets
                .iter()
                .copied()
                .filter(|t| match domain(t) {
                    Some(d) => own.as_deref() != Some(d.as_str()) && !internal_domains.contains(&d),
                    None => false,
                })
                .collect();
            if *external_only && outside.is_empty() {
                return vec![];
            }
            let what = if outside.is_empty() {
                format!(
                    "{} set an inbox rule in {} forwarding to {}",
                    r.actor,
                    r.mailbox,
                    targets.join(", ")
                )
            } else {
                format!(
                    "{} set an inbox rule in {} forwarding OUTSIDE the domain to {}",
                    r.actor,
                    r.mailbox,
                    outside.join(", ")
                )
            };
            let mut hit = simple(r, format!("{}|{}", r.mailbox, targets.join(",")), what);
            if !outside.is_empty() {
                hit.severity = Some(Severity::Critical);
            }
            vec![hit]
        }
        RuleKind::AuditWeakened { events } => weakened(events, r)
            .into_iter()
            .map(|(w, what)| simple(r, format!("{:?}|{}", w, r.mailbox), what))
            .collect(),
        RuleKind::Deletions {
            threshold,
            window_secs,
        } => {
            if !DELETIONS.contains(&r.operation) || r.result == OperationResult::Failed {
                return vec![];
            }
            let weight = (r.items.len() as u64).max(1);
            threshold_hit(
                rule,
                state,
                r,
                r.actor.clone(),
                weight,
                *threshold,
                *window_secs,
                |n, secs| format!("{} deleted {n} items within {secs}s", r.actor),
            )
        }
        RuleKind::FailedLogins {
            threshold,
            window_secs,
            by,
        } => {
            if r.operation != Operation::MailboxLogin || r.result != OperationResult::Failed {
                return vec![];
            }
            let key = match by {
                FailedBy::Mailbox => r.mailbox.clone(),
                FailedBy::Ip => match ip_of(r) {
                    Some(ip) => ip,
                    None => return vec![],
                },
            };
            let label = match by {
                FailedBy::Mailbox => format!("to mailbox {}", r.mailbox),
                FailedBy::Ip => format!("from {key}"),
            };
            threshold_hit(
                rule,
                state,
                r,
                key,
                1,
                *threshold,
                *window_secs,
                |n, secs| format!("{n} failed logins {label} within {secs}s"),
            )
        }
        RuleKind::FirstSeen {
            what,
            alert_on_first_login,
        } => {
            if r.operation != Operation::MailboxLogin || r.result != OperationResult::Succeeded {
                return vec![];
            }
            let value = match what {
                SeenWhat::Ip => ip_of(r),
                SeenWhat::Client => r.client.name.clone(),
            };
            let Some(value) = value else { return vec![] };
            let seen = state.seen.entry(r.mailbox.clone()).or_default();
            let first_ever = seen.is_empty();
            if !seen.insert(value.clone()) || (first_ever && !alert_on_first_login) {
                return vec![];
            }
            let label = match what {
                SeenWhat::Ip => "IP",
                SeenWhat::Client => "client",
            };
            let text = format!(
                "{} signed in to {} from {label} {value}, never seen for this mailbox",
                r.actor, r.mailbox
            );
            vec![simple(r, format!("{}|{}", r.mailbox, value), text)]
        }
        RuleKind::SendAs { mailboxes } => {
            if !matches!(r.operation, Operation::SendAs | Operation::SendOnBehalf)
                || !listed(mailboxes, &r.mailbox)
            {
                return vec![];
            }
            let what = format!(
                "{} {} {}",
                r.actor,
                if r.operation == Operation::SendAs {
                    "sent as"
                } else {
                    "sent on behalf of"
                },
                r.mailbox
            );
            vec![simple(r, format!("{}|{}", r.actor, r.mailbox), what)]
        }
    }
}

/// Counts `weight` for `key` in a sliding window of `window_secs` (events at most that far
/// apart count together) and hits when the count reaches `threshold`. While an alert for
/// the key is being folded, matches go straight to it instead of starting a new count.
#[allow(clippy::too_many_arguments)]
fn threshold_hit(
    rule: &RuleConfig,
    state: &mut RuleState,
    r: &AuditRecord,
    key: String,
    weight: u64,
    threshold: u64,
    window_secs: u64,
    what: impl Fn(u64, u64) -> String,
) -> Vec<Hit> {
    let folding = state
        .suppressed
        .get(&key)
        .is_some_and(|s| folds(s.start, rule.suppress_secs, r.time));
    if folding {
        return vec![Hit {
            key,
            records: vec![r.seq],
            count: weight,
            mailbox: Some(r.mailbox.clone()),
            actor: Some(r.actor.clone()),
            ip: ip_of(r),
            what: String::new(),
            severity: None,
        }];
    }
    let window = state.windows.entry(key.clone()).or_default();
    window.push_back((r.time, r.seq, weight));
    let oldest = r.time.plus_secs(-(window_secs as i64));
    window.retain(|(t, _, _)| *t >= oldest);
    let total: u64 = window.iter().map(|(_, _, w)| w).sum();
    if total < threshold {
        return vec![];
    }
    let records: Vec<u64> = window.iter().map(|(_, s, _)| *s).collect();
    state.windows.remove(&key);
    vec![Hit {
        key,
        records,
        count: total,
        mailbox: Some(r.mailbox.clone()),
        actor: Some(r.actor.clone()),
        ip: ip_of(r),
        what: what(total, window_secs),
        severity: None,
    }]
}

fn param<'a>(r: &'a AuditRecord, name: &str) -> Option<&'a str> {
    r.parameters
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

/// The parts of a policy before/after that a weakening compares (the pipeline records the
/// effective policy of the mailbox changed, or the organisation's).
#[derive(Deserialize)]
struct PolicyView {
    enabled: Option<bool>,
    retention_days: Option<u32>,
    #[serde(default)]
    owner: BTreeSet<Operation>,
    #[serde(default)]
    delegate: BTreeSet<Operation>,
    #[serde(default)]
    admin: BTreeSet<Operation>,
}

fn weakened(events: &BTreeSet<Weakening>, r: &AuditRecord) -> Vec<(Weakening, String)> {
    let mut out = Vec::new();
    if r.result == OperationResult::Failed {
        return out;
    }
    match r.operation {
        Operation::UpdateFolderPermissions if events.contains(&Weakening::FolderPermission) => {
            let detail: Vec<String> = r
                .parameters
                .iter()
                .map(|p| format!("{}={}", p.name, p.value))
                .collect();
            out.push((
                Weakening::FolderPermission,
                format!(
                    "{} changed permissions of {}{}{}",
                    r.actor,
                    r.mailbox,
                    r.folder
                        .as_deref()
                        .map(|f| format!(" folder {f}"))
                        .unwrap_or_default(),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", detail.join(", "))
                    }
                ),
            ));
        }
        Operation::AuditBypassChange if events.contains(&Weakening::BypassAdded) => {
            let change = param(r, "change").unwrap_or_default();
            if change.contains("\"bypass_add\"") {
                out.push((
                    Weakening::BypassAdded,
                    format!(
                        "{} added an audit bypass for {}: their mailbox access is no longer recorded",
                        r.actor, r.mailbox
                    ),
                ));
            }
        }
        Operation::AuditPolicyChange => {
            let parse =
                |name| param(r, name).and_then(|t| serde_json::from_str::<PolicyView>(t).ok());
            let (Some(before), Some(after)) = (parse("before"), parse("after")) else {
                return out;
            };
            let scope = if r.mailbox == "*" {
                "the organisation default".to_string()
            } else {
                r.mailbox.clone()
            };
            if events.contains(&Weakening::AuditDisabled)
                && before.enabled == Some(true)
                && after.enabled == Some(false)
            {
                out.push((
                    Weakening::AuditDisabled,
                    format!("{} disabled auditing for {scope}", r.actor),
                ));
            }
            if events.contains(&Weakening::ActionsNarrowed) {
                let mut removed = Vec::new();
                for (label, b, a) in [
                    ("admin", &before.admin, &after.admin),
                    ("delegate", &before.delegate, &after.delegate),
                    ("owner", &before.owner, &after.owner),
                ] {
                    let gone: Vec<&str> = b.difference(a).map(|o| o.as_str()).collect();
                    if !gone.is_empty() {
                        removed.push(format!("{label} -{}", gone.join(" -")));
                    }
                }
                if !removed.is_empty() {
                    out.push((
                        Weakening::ActionsNarrowed,
                        format!(
                            "{} narrowed the audited actions of {scope}: {}",
                            r.actor,
                            removed.join("; ")
                        ),
                    ));
                }
            }
            if events.contains(&Weakening::RetentionShortened) {
                if let (Some(b), Some(a)) = (before.retention_days, after.retention_days) {
                    if a < b {
                        out.push((
                            Weakening::RetentionShortened,
                            format!(
                                "{} shortened the retention of {scope} from {b} to {a} days",
                                r.actor
                            ),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    out
}
