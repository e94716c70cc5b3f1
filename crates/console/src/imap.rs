//! Checks a mailbox owner's credentials with one IMAP LOGIN against the mail server, then
//! logs out. Strings are sent as IMAP quoted strings, or as literals when they hold
//! characters a quoted string cannot carry, so no password can inject a command.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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

/// `LOGIN user password` against `server` (`host:port`, plain IMAP: use it on loopback or a
/// trusted network).
pub async fn check_login(server: &str, user: &str, password: &str) -> Result<Login, ImapError> {
    let err = |message: String| ImapError::Server {
        server: server.to_string(),
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

async fn exchange(server: &str, user: &str, password: &str) -> Result<Login, String> {
    let stream = TcpStream::connect(server)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (read, mut write) = stream.into_split();
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
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
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
            check_login(&addr, "alice", "pw\"1").await.expect("answer"),
            Login::Accepted
        );
        assert_eq!(
            task.await.expect("server"),
            "A1 LOGIN \"alice\" \"pw\\\"1\"\r\n"
        );
        let (addr, _task) =
            fake_server("A1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").await;
        assert_eq!(
            check_login(&addr, "alice", "nope").await.expect("answer"),
            Login::Refused("NO [AUTHENTICATIONFAILED] Authentication failed.".into())
        );
    }

    #[tokio::test]
    async fn a_dead_server_is_an_error_naming_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let e = check_login(&addr, "a", "b")
            .await
            .expect_err("nothing listens");
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
