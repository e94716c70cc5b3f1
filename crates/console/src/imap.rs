//! Checks a mailbox owner's credentials with one IMAP LOGIN against the mail server, then
//! logs out. Strings are sent as IMAP quoted strings, or as literals when they hold
//! characters a quoted string cannot carry, so no password can inject a command. Over
//! implicit TLS (IMAPS) when configured, verifying the server against the given CAs.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Where owners' passwords are checked.
#[derive(Clone)]
pub struct ImapServer {
    /// `host:port`.
    pub address: String,
    /// Implicit TLS (IMAPS), with the CAs that may vouch for the server.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ImapServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            self.address,
            if self.tls.is_some() {
                "IMAPS"
            } else {
                "plain IMAP"
            }
        )
    }
}

impl ImapServer {
    /// Plain IMAP: for loopback or a trusted network only.
    pub fn plain(address: impl Into<String>) -> Self {
        ImapServer {
            address: address.into(),
            tls: None,
        }
    }

    /// IMAPS, trusting the CA certificates in the PEM file `ca` (the system bundle,
    /// `/etc/ssl/certs/ca-certificates.crt`, or a private CA).
    pub fn tls(address: impl Into<String>, ca: &Path) -> Result<Self, ImapError> {
        let address = address.into();
        let err = |message: String| ImapError::Server {
            server: address.clone(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca).map_err(|e| {
            err(format!(
                "reading CA certificates from {}: {e}",
                ca.display()
            ))
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| err(format!("{}: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| err(format!("{}: unusable CA certificate: {e}", ca.display())))?;
        }
        if roots.is_empty() {
            return Err(err(format!("{} holds no CA certificate", ca.display())));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("choosing TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(ImapServer {
            address,
            tls: Some(Arc::new(config)),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("IMAP server {server}: {message}")]
    Server { server: String, message: String },
}

/// The outcome of a credentials check.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    Accepted,
    Refused(String),
}

const TIMEOUT: Duration = Duration::from_secs(15);

/// `LOGIN user password` against `server`.
pub async fn check_login(
    server: &ImapServer,
    user: &str,
    password: &str,
) -> Result<Login, ImapError> {
    let err = |message: String| ImapError::Server {
        server: server.address.clone(),
        message,
    };
    match tokio::time::timeout(TIMEOUT, exchange(server, user, password)).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(err(format!(
            "no answer within {} seconds",
            TIMEOUT.as_secs()
        ))),
    }
}

fn astring_parts(s: &str) -> Result<Vec<Part>, String> {
    if s.contains(['\0']) {
        return Err("a NUL byte cannot be sent over IMAP".into());
    }
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        Ok(vec![Part::Text(q)])
    } else {
        Ok(vec![
            Part::Text(format!("{{{}}}\r\n", s.len())),
            Part::Literal(s.as_bytes().to_vec()),
        ])
    }
}

enum Part {
    Text(String),
    /// Sent after the server's continuation request.
    Literal(Vec<u8>),
}

async fn exchange(server: &ImapServer, user: &str, password: &str) -> Result<Login, String> {
    let tcp = TcpStream::connect(&server.address)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    match &server.tls {
        None => converse(tcp, user, password).await,
        Some(config) => {
            let host = server
                .address
                .rsplit_once(':')
                .map_or(server.address.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            converse(tls, user, password).await
        }
    }
}

async fn converse(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    user: &str,
    password: &str,
) -> Result<Login, String> {
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read_line(&mut read, &mut line).await?;
    if !line.starts_with("* OK") {
        return Err(format!("unexpected greeting `{}`", line.trim_end()));
    }
    let mut parts = vec![Part::Text("A1 LOGIN ".into())];
    parts.extend(astring_parts(user)?);
    parts.push(Part::Text(" ".into()));
    parts.extend(astring_parts(password)?);
    parts.push(Part::Text("\r\n".into()));
    let mut pending = Vec::new();
    for part in parts {
        match part {
            Part::Text(t) => pending.extend_from_slice(t.as_bytes()),
            Part::Literal(bytes) => {
                write
                    .write_all(&pending)
                    .await
                    .map_err(|e| format!("sending: {e}"))?;
                pending.clear();
                loop {
                    read_line(&mut read, &mut line).await?;
                    if line.starts_with('+') {
                        break;
                    }
                    if line.starts_with("A1 ") {
                        return Ok(Login::Refused(tagged_text(&line)));
                    }
                }
                pending.extend_from_slice(&bytes);
            }
        }
    }
    write
        .write_all(&pending)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    loop {
        read_line(&mut read, &mut line).await?;
        if let Some(rest) = line.strip_prefix("A1 ") {
            let outcome = if rest.starts_with("OK") {
                Login::Accepted
            } else {
                Login::Refused(tagged_text(&line))
            };
            // A polite goodbye; the answer does not matter.
            let _ = write.write_all(b"A2 LOGOUT\r\n").await;
            return Ok(outcome);
        }
    }
}

fn tagged_text(line: &str) -> String {
    line.trim_end().chars().skip(3).take(200).collect()
}

async fn read_line(
    read: &mut (impl AsyncBufRead + Unpin),
    line: &mut String,
) -> Result<(), String> {
    line.clear();
    let n = read
        .read_line(line)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    if line.len() > 64 * 1024 {
        return Err("an answer line longer than 64 KiB".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn text(parts: Vec<Part>) -> String {
        parts
            .into_iter()
            .map(|p| match p {
                Part::Text(t) => t,
                Part::Literal(b) => format!("<{}>", String::from_utf8_lossy(&b)),
            })
            .collect()
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(
            text(astring_parts(r#"a"b\c"#).expect("quotable")),
            r#""a\"b\\c""#
        );
        assert_eq!(
            text(astring_parts("pässword").expect("literal")),
            "{9}\r\n<pässword>"
        );
        assert_eq!(
            text(astring_parts("x\r\nA2 DELETE INBOX").expect("literal")),
            "{18}\r\n<x\r\nA2 DELETE INBOX>"
        );
        assert!(astring_parts("a\0b").is_err());
    }

    /// A scripted server: checks the exact bytes of the LOGIN and answers as told.
    async fn fake_server(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"* OK ready\r\n").await.expect("greet");
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.ends_with(b"\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer.as_bytes()).await.expect("answer");
            String::from_utf8_lossy(&got).into_owned()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn ok_and_no_are_told_apart() {
        let (addr, task) = fake_server("A1 OK Logged in\r\n").await;
        assert_eq!(
            check_login(&ImapServer::plain(addr), "alice", "pw\"1")
                .await
                .expect("answer"),
            Login::Accepted
        );
        assert_eq!(
            task.await.expect("server"),
            "A1 LOGIN \"alice\" \"pw\\\"1\"\r\n"
        );
        let (addr, _task) =
            fake_server("A1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").await;
        assert_eq!(
            check_login(&ImapServer::plain(addr), "alice", "nope")
                .await
                .expect("answer"),
            Login::Refused("NO [AUTHENTICATIONFAILED] Authentication failed.".into())
        );
    }

    #[tokio::test]
    async fn a_dead_server_is_an_error_naming_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let e = check_login(&ImapServer::plain(addr.clone()), "a", "b")
            .await
            .expect_err("nothing listens");
        assert!(e.to_string().contains(&addr), "{e}");
    }

    /// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
    fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("running openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat());
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext",
            "-out",
            "leaf.pem",
        ]);
        (
            dir.join("ca.pem"),
            dir.join("leaf.pem"),
            dir.join("leaf.key"),
        )
    }

    #[tokio::test]
    async fn imaps_verifies_the_server_and_logs_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = certificates(dir.path());
        let certs = CertificateDer::pem_file_iter(&cert)
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.expect("accept");
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    got.push(String::from("handshake refused"));
                    continue;
                };
                s.write_all(b"* OK ready\r\n").await.expect("greet");
                let mut line = Vec::new();
                let mut buf = [0u8; 256];
                while !line.ends_with(b"\r\n") {
                    let n = s.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    line.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"A1 OK Logged in\r\n").await.expect("answer");
                got.push(String::from_utf8_lossy(&line).into_owned());
            }
            got
        });
        let trusted = ImapServer::tls(addr.clone(), &ca).expect("CA file");
        assert_eq!(
            check_login(&trusted, "alice", "secret")
                .await
                .expect("answer"),
            Login::Accepted
        );
        // A server certificate from a CA we were not told to trust is refused before any
        // password is sent.
        let other = tempfile::tempdir().expect("tempdir");
        let (other_ca, _, _) = certificates(other.path());
        let untrusted = ImapServer::tls(addr.clone(), &other_ca).expect("CA file");
        let e = check_login(&untrusted, "alice", "secret")
            .await
            .expect_err("untrusted");
        assert!(
            e.to_string().contains("TLS") && e.to_string().contains(&addr),
            "{e}"
        );
        let got = server.await.expect("server");
        assert_eq!(got[0], "A1 LOGIN \"alice\" \"secret\"\r\n");
        assert_eq!(got[1], "handshake refused");
    }
}
