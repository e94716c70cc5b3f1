//! Syslog: RFC 5424 messages, sent over UDP (RFC 5426), TCP with octet counting (RFC 6587)
//! or TLS (RFC 5425). A connection is opened on first use and again after an error.

use crate::config::{SyslogTarget, Transport};
use crate::OutputError;
use mailaudit_model::Timestamp;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// RFC 5424 facility numbers by name.
pub fn facility_code(name: &str) -> Result<u8, String> {
    Ok(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        other => {
            return Err(format!(
                "syslog facility `{other}`: expected auth, authpriv, daemon, mail, user or local0…local7"
            ))
        }
    })
}

/// Escapes a structured-data parameter value (RFC 5424 §6.3.3: `"`, `\` and `]`).
pub fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The structured-data id of mailaudit's parameters. 32473 is the enterprise number that
/// RFC 5612 reserves for documentation and examples; mailaudit has none of its own.
pub const SD_ID: &str = "mailaudit@32473";

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`.
pub fn rfc5424(
    facility: u8,
    severity: u8,
    time: Timestamp,
    hostname: &str,
    msgid: &str,
    structured: &str,
    msg: &str,
) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity.min(7));
    let field = |s: &str| -> String {
        let s: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        if s.is_empty() {
            "-".into()
        } else {
            s
        }
    };
    format!(
        "<{pri}>1 {} {} mailaudit {} {} {} {}",
        time.to_rfc3339(),
        field(hostname),
        std::process::id(),
        field(msgid),
        if structured.is_empty() {
            "-"
        } else {
            structured
        },
        msg.replace(['\n', '\r'], " ")
    )
}

pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".into())
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A syslog destination, connected lazily.
pub struct SyslogSender {
    target: SyslogTarget,
    conn: Option<Conn>,
    pub facility: u8,
    pub hostname: String,
}

impl SyslogSender {
    pub fn new(target: SyslogTarget) -> Result<Self, OutputError> {
        let facility = facility_code(&target.facility).map_err(OutputError::Config)?;
        let hostname = target.hostname.clone().unwrap_or_else(local_hostname);
        Ok(SyslogSender {
            target,
            conn: None,
            facility,
            hostname,
        })
    }

    fn connect(&self) -> Result<Conn, OutputError> {
        let addr = &self.target.address;
        let io = |e: std::io::Error| OutputError::Io(format!("syslog {addr}: {e}"));
        let resolved = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| OutputError::Io(format!("syslog {addr}: no address")))?;
        match self.target.transport {
            Transport::Udp => {
                let bind = if resolved.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = UdpSocket::bind(bind).map_err(io)?;
                s.connect(resolved).map_err(io)?;
                Ok(Conn::Udp(s))
            }
            Transport::Tcp => {
                let s =
                    TcpStream::connect_timeout(&resolved, Duration::from_secs(10)).map_err(io)?;
                s.set_write_timeout(Some(Duration::from_secs(10)))
                    .map_err(io)?;
                Ok(Conn::Tcp(s))
            }
            Transport::Tls => {
                let config = tls_config(self.target.ca_file.as_deref())?;
                let name = self.target.server_name.clone().unwrap_or_else(|| {
                    addr.rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                        .unwrap_or_else(|| addr.clone())
                });
                let server_name =
                    rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                        OutputError::Config(format!("syslog TLS server name `{name}`: {e}"))
                    })?;
                let conn = rustls::ClientConnection::new(Arc::new(config), server_name)
                    .map_err(|e| OutputError::Io(format!("syslog {addr}: TLS: {e}")))?;
                let s =
                    TcpStream::connect_timeout(&resolved, Duration::from_secs(10)).map_err(io)?;
                s.set_write_timeout(Some(Duration::from_secs(10)))
                    .map_err(io)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(io)?;
                let mut tls = rustls::StreamOwned::new(conn, s);
                // Finish the handshake now, so a bad certificate is reported as such.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                        OutputError::Io(format!("syslog {addr}: TLS handshake: {e}"))
                    })?;
                }
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }

    /// Sends messages in order; on error the connection is dropped (the next call
    /// reconnects) and the error says how many were sent before it.
    pub fn send_all(&mut self, messages: &[String]) -> Result<(), OutputError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let addr = self.target.address.clone();
        let result = (|| -> std::io::Result<()> {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            match conn {
                Conn::Udp(s) => {
                    for m in messages {
                        s.send(m.as_bytes())?;
                    }
                }
                Conn::Tcp(s) => {
                    let mut buf = Vec::new();
                    for m in messages {
                        write!(buf, "{} {m}", m.len())?;
                    }
                    s.write_all(&buf)?;
                    s.flush()?;
                }
                Conn::Tls(s) => {
                    let mut buf = Vec::new();
                    for m in messages {
                        write!(buf, "{} {m}", m.len())?;
                    }
                    s.write_all(&buf)?;
                    s.flush()?;
                }
            }
            Ok(())
        })();
        result.map_err(|e| {
            self.conn = None;
            OutputError::Io(format!("syslog {addr}: {e}"))
        })
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, OutputError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| OutputError::Config(format!("{}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| OutputError::Config(format!("{}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| OutputError::Config(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OutputError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
