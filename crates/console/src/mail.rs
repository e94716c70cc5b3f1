//! Mailed exports, as Exchange does with `SearchResult.xml`: the export is built when the
//! request is accepted (and recorded then), and mailed through the configured SMTP relay
//! with the search criteria in the body. An export too large to attach is not cut short:
//! the recipients get a message saying so instead.

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `host:port` of the SMTP relay (plain SMTP: a local relay or a trusted network).
    pub relay: String,
    pub from: String,
    /// Largest attachment sent, in bytes.
    pub max_attachment: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("`{0}` is not a mail address")]
    Address(String),
    #[error("SMTP relay {relay}: {message}")]
    Relay { relay: String, message: String },
    #[error("building the message: {0}")]
    Build(String),
}

pub fn parse_recipients(text: &str) -> Result<Vec<Mailbox>, MailError> {
    text.split([',', ';', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Mailbox>()
                .map_err(|_| MailError::Address(s.to_string()))
        })
        .collect()
}

pub struct Outgoing {
    pub to: Vec<Mailbox>,
    pub subject: String,
    pub body: String,
    /// File name, content type and bytes; none when the export could not be attached.
    pub attachment: Option<(String, String, Vec<u8>)>,
}

pub async fn send(config: &MailConfig, mail: Outgoing) -> Result<(), MailError> {
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|_| MailError::Address(config.from.clone()))?;
    let mut builder = Message::builder().from(from).subject(mail.subject);
    for to in mail.to {
        builder = builder.to(to);
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body);
    let message = match mail.attachment {
        Some((name, content_type, bytes)) => {
            let ct = ContentType::parse(&content_type)
                .map_err(|e| MailError::Build(format!("content type `{content_type}`: {e}")))?;
            builder.multipart(
                MultiPart::mixed()
                    .singlepart(text)
                    .singlepart(Attachment::new(name).body(bytes, ct)),
            )
        }
        None => builder.singlepart(text),
    }
    .map_err(|e| MailError::Build(e.to_string()))?;
    let relay_err = |message: String| MailError::Relay {
        relay: config.relay.clone(),
        message,
    };
    let (host, port) = config
        .relay
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| relay_err("expected host:port".into()))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .build();
    transport
        .send(message)
        .await
        .map_err(|e| relay_err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_checked_one_by_one() {
        let r = parse_recipients("a@example.com, Legal <legal@example.com>").expect("valid");
        assert_eq!(r.len(), 2);
        let e = parse_recipients("a@example.com, not-an-address").expect_err("invalid");
        assert_eq!(e.to_string(), "`not-an-address` is not a mail address");
    }
}
