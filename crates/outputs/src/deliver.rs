//! One attempt to deliver one alert: a signed webhook POST, a mail through an SMTP relay, or
//! a syslog message. Retrying, ordering and persistence are the runner's.

use crate::config::{AlertFormat, EmailConfig, SmtpSecurity, SyslogConfig, WebhookConfig};
use crate::syslog::SyslogSender;
use crate::{format, OutputError};
use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use mailaudit_alerts::Alert;
use sha2::Sha256;
use std::time::Duration;

pub const SIGNATURE_HEADER: &str = "X-Mailaudit-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Mailaudit-Timestamp";

/// `sha256=HEX(HMAC-SHA256(secret, "TIMESTAMP.BODY"))`: what a receiver recomputes.
pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub trait Deliver: Send {
    fn name(&self) -> &str;
    fn deliver(&mut self, alert: &Alert, body: &str) -> Result<(), OutputError>;
}

pub struct Webhook {
    config: WebhookConfig,
    secret: Vec<u8>,
    agent: ureq::Agent,
}

impl Webhook {
    pub fn new(config: WebhookConfig) -> Result<Self, OutputError> {
        let secret = match (&config.secret, &config.secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    OutputError::Config(format!(
                        "webhook `{}`: secret_file {}: {e}",
                        config.name,
                        path.display()
                    ))
                })?
                .trim_end()
                .to_string(),
            (None, None) => {
                return Err(OutputError::Config(format!(
                    "webhook `{}`: no secret",
                    config.name
                )))
            }
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build();
        Ok(Webhook {
            config,
            secret: secret.into_bytes(),
            agent,
        })
    }
}

impl Deliver for Webhook {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn deliver(&mut self, alert: &Alert, body: &str) -> Result<(), OutputError> {
        let ts = chrono::Utc::now().timestamp();
        let sig = sign(&self.secret, ts, body);
        let result = self
            .agent
            .post(&self.config.url)
            .set("Content-Type", "application/json")
            .set(
                "User-Agent",
                concat!("mailaudit/", env!("CARGO_PKG_VERSION")),
            )
            .set(TIMESTAMP_HEADER, &ts.to_string())
            .set(SIGNATURE_HEADER, &sig)
            .set("Idempotency-Key", &alert.id)
            .send_string(body);
        match result {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => {
                let text: String = resp
                    .into_string()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                Err(OutputError::Delivery(format!(
                    "webhook {}: HTTP {code} {text}",
                    self.config.url
                )))
            }
            Err(e) => Err(OutputError::Delivery(format!(
                "webhook {}: {e}",
                self.config.url
            ))),
        }
    }
}

pub struct Email {
    config: EmailConfig,
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    pub fn new(config: EmailConfig) -> Result<Self, OutputError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            OutputError::Config(format!("email `{}`: {what}: {e}", config.name))
        };
        let from: Mailbox = config.from.parse().map_err(|e| bad("from", &e))?;
        let to = config
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>().map_err(|e| bad("to", &e)))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = || -> Result<TlsParameters, OutputError> {
            let name = config
                .tls_server_name
                .clone()
                .unwrap_or_else(|| config.relay.clone());
            let mut params = TlsParameters::builder(name);
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| bad("ca_file", &format!("{}: {e}", path.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| bad("ca_file", &format!("{}: {e}", path.display())))?;
                params = params.add_root_certificate(cert);
            }
            params.build_rustls().map_err(|e| bad("TLS", &e))
        };
        let plain = SmtpTransport::builder_dangerous(&config.relay);
        let mut builder = match config.security {
            SmtpSecurity::None => plain,
            SmtpSecurity::Starttls => plain.tls(Tls::Required(tls()?)),
            SmtpSecurity::Tls => plain.tls(Tls::Wrapper(tls()?)),
        }
        .port(config.port)
        .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(Email {
            transport: builder.build(),
            config,
            from,
            to,
        })
    }
}

/// The mail's text: the summary, the records with where to get their proofs, the alert.
pub fn email_text(alert: &Alert, body: &str) -> String {
    let mut text = format!(
        "{}\n\nRule: {} ({})\nSeverity: {}\nTime: {}\nCount: {}\n",
        alert.summary,
        alert.rule,
        alert.kind,
        alert.severity.as_str(),
        alert.time,
        alert.count
    );
    for (label, v) in [
        ("Mailbox", &alert.mailbox),
        ("Actor", &alert.actor),
        ("IP", &alert.ip),
    ] {
        if let Some(v) = v {
            text.push_str(&format!("{label}: {v}\n"));
        }
    }
    text.push_str(
        "\nRecords (each provable with `mailaudit proof ID` or GET /api/v1/records/ID/proof):\n",
    );
    for s in &alert.records {
        text.push_str(&format!("  {s}\n"));
    }
    text.push_str(&format!("\nAlert id: {}\n\n{body}\n", alert.id));
    text
}

impl Deliver for Email {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn deliver(&mut self, alert: &Alert, body: &str) -> Result<(), OutputError> {
        let subject: String = format!("[mailaudit {}] {}", alert.severity.as_str(), alert.summary)
            .chars()
            .take(200)
            .collect();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            // The same alert sent twice has the same Message-ID, so mail systems can tell.
            .message_id(Some(format!(
                "<{}@mailaudit>",
                alert
                    .id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '_'
                    })
                    .collect::<String>()
            )))
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            builder = builder.to(t.clone());
        }
        let message = builder
            .body(email_text(alert, body))
            .map_err(|e| OutputError::Delivery(format!("email `{}`: {e}", self.config.name)))?;
        self.transport.send(&message).map(|_| ()).map_err(|e| {
            OutputError::Delivery(format!(
                "email `{}` via {}:{}: {e}",
                self.config.name, self.config.relay, self.config.port
            ))
        })
    }
}

pub struct SyslogAlerts {
    name: String,
    format: AlertFormat,
    sender: SyslogSender,
}

impl SyslogAlerts {
    pub fn new(config: SyslogConfig) -> Result<Self, OutputError> {
        Ok(SyslogAlerts {
            name: config.name,
            format: config.format,
            sender: SyslogSender::new(config.target)?,
        })
    }
}

impl Deliver for SyslogAlerts {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, alert: &Alert, _body: &str) -> Result<(), OutputError> {
        let msg = format::alert_syslog(
            alert,
            self.sender.facility,
            &self.sender.hostname.clone(),
            self.format == AlertFormat::Cef,
        );
        self.sender.send_all(&[msg])
    }
}
