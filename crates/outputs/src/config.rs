//! The outputs configuration (`mailaudit.toml`, see docs/alerts.md): alert rules, where
//! alerts go (webhook, email, syslog), record streams for SIEMs, and per-mailbox daily files.
//! One typed struct per output, documented field by field; unknown fields are refused.

use crate::OutputError;
use mailaudit_alerts::{RuleConfig, Severity};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsConfig {
    #[serde(default)]
    pub alerts: AlertSettings,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default)]
    pub webhook: Vec<WebhookConfig>,
    #[serde(default)]
    pub email: Vec<EmailConfig>,
    #[serde(default)]
    pub syslog: Vec<SyslogConfig>,
    #[serde(default)]
    pub stream: Vec<StreamConfig>,
    #[serde(default)]
    pub daily_files: Option<DailyFilesConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// On the first start, run the records already stored through the rules without
    /// alerting, so that "never seen" rules know the IPs and clients of the past.
    #[serde(default = "yes")]
    pub learn_history: bool,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            learn_history: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Retry timing of every delivery that can fail (webhook, email, syslog over TCP/TLS): the
/// first retry after `initial_ms`, each next one twice as late, never later than `max_ms`.
/// A delivery is retried until it succeeds; later alerts wait behind it, so a receiver sees
/// them in order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "initial_ms")]
    pub initial_ms: u64,
    #[serde(default = "max_ms")]
    pub max_ms: u64,
}

fn initial_ms() -> u64 {
    1_000
}
fn max_ms() -> u64 {
    60_000
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: initial_ms(),
            max_ms: max_ms(),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failed attempts in a row (1 = after the first failure).
    pub fn delay_ms(&self, failures: u32) -> u64 {
        let shift = failures.saturating_sub(1).min(32);
        self.initial_ms
            .max(1)
            .saturating_mul(1u64 << shift)
            .min(self.max_ms.max(self.initial_ms.max(1)))
    }
}

/// Which alerts an output takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFilter {
    /// Only these rules (by name); all when empty.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only alerts at least this severe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
}

impl AlertFilter {
    pub fn takes(&self, alert: &mailaudit_alerts::Alert) -> bool {
        (self.rules.is_empty() || self.rules.contains(&alert.rule))
            && self.min_severity.is_none_or(|m| alert.severity >= m)
    }
}

/// A POST of each alert as JSON, signed: `X-Mailaudit-Signature: sha256=HEX` is the
/// HMAC-SHA256, keyed with `secret`, of `TIMESTAMP.BODY` where TIMESTAMP is the
/// `X-Mailaudit-Timestamp` header. `Idempotency-Key` is the alert id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// The HMAC key. Or `secret_file`, a file holding it (trailing whitespace ignored).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default = "timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default, flatten)]
    pub filter: AlertFilter,
}

fn timeout_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain SMTP: for a relay on this machine or a trusted network.
    #[default]
    None,
    /// STARTTLS, required.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// One mail per alert through an SMTP relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
    pub relay: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// For `starttls` and `tls`: the name the relay's certificate must carry (default:
    /// `relay`) and a PEM file of extra CAs to trust (besides the Web PKI roots).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default, flatten)]
    pub filter: AlertFilter,
}

fn smtp_port() -> u16 {
    25
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// One datagram per message (RFC 5426). Fire and forget: a lost datagram is not noticed.
    #[default]
    Udp,
    /// RFC 6587 octet counting over TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    /// RFC 5424 with the alert in structured data and its summary as the message.
    #[default]
    Rfc5424,
    /// ArcSight Common Event Format, inside an RFC 5424 frame.
    Cef,
}

/// Where syslog messages go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTarget {
    /// `host:port`.
    pub address: String,
    #[serde(default)]
    pub transport: Transport,
    /// For `tls`: the name the server's certificate must carry (default: the host part of
    /// `address`) and a PEM file of the CAs to trust (default: the Web PKI roots).
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `auth`, `authpriv`, `daemon`, `local0`…`local7`.
    #[serde(default = "facility")]
    pub facility: String,
    /// HOSTNAME in each message; the machine's name by default.
    #[serde(default)]
    pub hostname: Option<String>,
}

fn facility() -> String {
    "authpriv".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub name: String,
    #[serde(flatten)]
    pub target: SyslogTarget,
    #[serde(default)]
    pub format: AlertFormat,
    #[serde(default, flatten)]
    pub filter: AlertFilter,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// The record as the API returns it.
    #[default]
    Json,
    /// Elastic Common Schema (docs/siem.md).
    Ecs,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamTo {
    /// JSON Lines appended to `path`.
    #[default]
    File,
    Stdout,
    /// RFC 5424 messages whose MSG is the JSON (or ECS) record.
    Syslog,
}

/// Every record (not only alerts), at least once, in order; the position is persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    #[serde(default)]
    pub to: StreamTo,
    #[serde(default)]
    pub format: RecordFormat,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub syslog: Option<SyslogTarget>,
    /// Start from the first stored record (true) or from records stored from now on.
    #[serde(default)]
    pub from_start: bool,
}

/// Per-mailbox daily files, `<root>/<domain>/<mailbox>/AUDIT-YYMMDD.log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyFilesConfig {
    pub root: PathBuf,
    /// IANA name (`Europe/Berlin`); days start at its midnight. UTC by default.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// How long a day's file is kept after its day ended: `90m` (minutes), `30d` (days).
    #[serde(default = "retention")]
    pub retention: String,
    #[serde(default)]
    pub from_start: bool,
    /// How often old files are looked for.
    #[serde(default = "prune_interval")]
    pub prune_interval_secs: u64,
}

fn prune_interval() -> u64 {
    60
}

fn utc() -> String {
    "UTC".into()
}
fn retention() -> String {
    "90d".into()
}

/// `90m` or `30d` as seconds.
pub fn parse_retention(text: &str) -> Result<i64, OutputError> {
    let t = text.trim();
    let bad = || {
        OutputError::Config(format!(
            "retention `{text}`: expected minutes (`90m`) or days (`30d`)"
        ))
    };
    let (number, unit) = t.split_at(t.len().saturating_sub(1));
    let n: i64 = number.trim().parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    match unit {
        "m" => Ok(n.saturating_mul(60)),
        "d" => Ok(n.saturating_mul(86_400)),
        _ => Err(bad()),
    }
}

impl OutputsConfig {
    /// Parses TOML; errors name the line and field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, OutputError> {
        let c: OutputsConfig =
            toml::from_str(text).map_err(|e| OutputError::Config(format!("{origin}: {e}")))?;
        c.check()
            .map_err(|e| OutputError::Config(format!("{origin}: {e}")))?;
        Ok(c)
    }

    /// Everything that can be checked before starting: rules, unique output names, URLs,
    /// addresses, the time zone and the retention.
    pub fn check(&self) -> Result<(), String> {
        mailaudit_alerts::validate(self.rules.clone()).map_err(|e| e.to_string())?;
        let mut names = std::collections::BTreeSet::new();
        let outputs = self
            .webhook
            .iter()
            .map(|w| ("webhook", &w.name))
            .chain(self.email.iter().map(|e| ("email", &e.name)))
            .chain(self.syslog.iter().map(|s| ("syslog", &s.name)))
            .chain(self.stream.iter().map(|s| ("stream", &s.name)));
        for (kind, name) in outputs {
            if name.trim().is_empty() {
                return Err(format!("a [[{kind}]] has an empty `name`"));
            }
            if !names.insert(name.clone()) {
                return Err(format!("output name `{name}` is used twice"));
            }
        }
        for w in &self.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(format!(
                    "webhook `{}`: url must start with http:// or https://",
                    w.name
                ));
            }
            if w.secret.is_none() && w.secret_file.is_none() {
                return Err(format!(
                    "webhook `{}`: set `secret` or `secret_file` (alerts are always signed)",
                    w.name
                ));
            }
        }
        for e in &self.email {
            if e.to.is_empty() {
                return Err(format!("email `{}`: `to` is empty", e.name));
            }
        }
        for s in &self.stream {
            match s.to {
                StreamTo::File if s.path.is_none() => {
                    return Err(format!("stream `{}`: to = \"file\" needs `path`", s.name))
                }
                StreamTo::Syslog if s.syslog.is_none() => {
                    return Err(format!(
                        "stream `{}`: to = \"syslog\" needs a [stream.syslog] table",
                        s.name
                    ))
                }
                _ => {}
            }
        }
        for t in self
            .syslog
            .iter()
            .map(|s| &s.target)
            .chain(self.stream.iter().filter_map(|s| s.syslog.as_ref()))
        {
            crate::syslog::facility_code(&t.facility)?;
            if t.transport == Transport::Udp {
                t.address.parse::<SocketAddr>().map_err(|e| {
                    format!("syslog address `{}`: {e} (UDP needs ip:port)", t.address)
                })?;
            }
        }
        if let Some(d) = &self.daily_files {
            d.time_zone
                .parse::<chrono_tz::Tz>()
                .map_err(|e| format!("daily_files.time_zone: {e}"))?;
            parse_retention(&d.retention).map_err(|e| format!("daily_files.{e}"))?;
        }
        Ok(())
    }
}
