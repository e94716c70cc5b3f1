//! `mailaudit milter`: the Sendmail/Postfix milter protocol in front of the milter source's
//! classifier. Packets are parsed and written by miltr-common; the connection loop is ours
//! because miltr-server 0.1 either answers SMFIC_ABORT (which the protocol forbids) or closes
//! the connection on it, and Postfix then fails the next message of the same SMTP session. It observes and never modifies mail; it answers "continue"
//! unless the rate rule is enforced or the audit record cannot be stored.
//!
//! Durability: a message's record is committed through the pipeline's writer before the
//! milter answers the end of the message, so a message Postfix accepted after this milter
//! said "continue" is in the audit log. When the store refuses the record, the answer is
//! `--on-store-failure` (tempfail by default: the client retries, nothing goes unaudited).

use crate::datadir;
use anyhow::{bail, Context, Result};
use bytes::{BufMut, BytesMut};
use clap::{Args, ValueEnum};
use mailaudit_model::Timestamp;
use mailaudit_pipeline::{WriterConfig, WriterHandle};
use mailaudit_source_milter::{
    AddressBook, Answer, Classifier, Counters, MilterConfig, Submission, Verdict,
};
use miltr_common::{
    actions::{Continue, Replycode},
    decoding::ClientCommand,
    encoding::{ServerMessage, Writable},
    modifications::ModificationResponse,
    optneg::{Capability, MacroStage, OptNeg, Protocol},
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Args, Debug)]
pub struct MilterArgs {
    /// Where Postfix connects: `inet:HOST:PORT` or `unix:/path/to/socket`. Loopback by
    /// default; anyone who can connect can submit what looks like a submission, so keep it
    /// reachable by the MTA only.
    #[arg(long, default_value = "inet:127.0.0.1:8891")]
    listen: String,
    /// The milter's configuration (address book, rate limits); see docs/postfix.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Answer a temporary failure (451 4.7.1) to messages over a login's hourly limit, so
    /// that Postfix defers them. Without it they are accepted and recorded as Failed.
    #[arg(long)]
    enforce_rate: bool,
    /// Messages one login may send per hour before the rate rule applies (overrides the
    /// configuration's `rate.default_per_hour`; 0 turns the rule off).
    #[arg(long)]
    rate_per_hour: Option<u32>,
    /// What to answer when the audit record cannot be stored: `tempfail` (the message waits
    /// and is retried; nothing is sent unaudited) or `accept` (mail flows; that send is not
    /// in the audit log, and is counted and logged).
    #[arg(long, value_enum, default_value_t = OnStoreFailure::Tempfail)]
    on_store_failure: OnStoreFailure,
    /// Permissions of a `unix:` socket (octal). Postfix's smtpd must be able to write it.
    #[arg(long, default_value = "660")]
    socket_mode: String,
    /// Group to give a `unix:` socket (e.g. `postfix`), so that mode 660 lets Postfix in.
    #[arg(long)]
    socket_group: Option<String>,
    /// Seconds between the counters lines in the log (also written at exit).
    #[arg(long, default_value_t = 300)]
    counters_interval: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnStoreFailure {
    Tempfail,
    Accept,
}

/// What every connection shares.
struct Shared {
    classifier: Mutex<Classifier>,
    writer: WriterHandle,
    on_store_failure: OnStoreFailure,
    connections: AtomicU64,
    /// Listening on a unix socket (no Nagle): the no-reply protocol flags are safe.
    unix_socket: bool,
}

impl Shared {
    fn counters(&self) -> Counters {
        self.classifier
            .lock()
            .map(|c| c.counters)
            .unwrap_or_default()
    }

    fn with_counters(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut c) = self.classifier.lock() {
            f(&mut c.counters);
        }
    }
}

fn counters_line(c: &Counters) -> String {
    format!(
        "milter counters: messages={} recorded={} ignored_unauthenticated={} malformed_headers={} over_rate={} deferred_by_rate={} aborted={} store_failures={} protocol_errors={}",
        c.messages,
        c.recorded,
        c.ignored_unauthenticated,
        c.malformed_headers,
        c.over_rate,
        c.deferred_by_rate,
        c.aborted,
        c.store_failures,
        c.protocol_errors
    )
}

/// One milter connection (Postfix opens one per SMTP session).
struct AuditMilter {
    shared: Arc<Shared>,
    sub: Submission,
    /// A transaction is open: MAIL was seen and its end of message not yet.
    in_transaction: bool,
    /// The commands negotiated to need no reply.
    no_reply: Protocol,
}

impl AuditMilter {
    fn describe(&self) -> String {
        format!(
            "{} from {}{}",
            self.sub.session.as_deref().unwrap_or("milter connection"),
            self.sub
                .client_ip
                .map_or_else(|| "an unknown client".to_string(), |ip| ip.to_string()),
            self.sub
                .macro_value("i")
                .map(|q| format!(", queue id {q}"))
                .unwrap_or_default()
        )
    }

    fn end_transaction(&mut self) {
        if self.in_transaction && self.sub.macro_value("auth_authen").is_none() {
            // Not mailbox activity (a relay attempt Postfix refused, inbound mail cut off).
            self.in_transaction = false;
            tracing::debug!("{}: unauthenticated transaction ended", self.describe());
            self.shared
                .with_counters(|c| c.ignored_unauthenticated += 1);
        } else if self.in_transaction {
            self.in_transaction = false;
            tracing::info!(
                "{}: the transaction ended before the end of the message; nothing was sent, nothing recorded",
                self.describe()
            );
            self.shared.with_counters(|c| c.aborted += 1);
        }
        self.sub.reset_message();
    }
}

fn rate_reply() -> Replycode {
    Replycode::new(
        [4, 5, 1],
        [4, 7, 1],
        "Too many messages from this login in the last hour; try again later",
    )
}

fn store_failure_reply() -> Replycode {
    Replycode::new(
        [4, 5, 1],
        [4, 3, 0],
        "The audit log cannot record this message now; try again later",
    )
}

/// Commands the MTA need not wait for an answer to (SMFIP_NR_*): this milter decides at the
/// end of the message only, so every earlier round trip would only slow the MTA down.
/// Asked for (with `SKIP`) on unix sockets only: over TCP, Postfix then writes packet after
/// packet with no reply between them, Nagle's algorithm holds each until the previous one is
/// acknowledged, and delayed ACKs made every message wait tens of milliseconds (measured with
/// `bench-milter --socket inet`: 280–300 instead of 550 messages/s, with either set).
const NO_REPLY: Protocol = Protocol::NR_CONNECT
    .union(Protocol::NR_HELO)
    .union(Protocol::NR_MAIL)
    .union(Protocol::NR_RECIPIENT)
    .union(Protocol::NR_DATA)
    .union(Protocol::NR_UNKNOWN)
    .union(Protocol::NR_END_OF_HEADER)
    .union(Protocol::NR_HEADER)
    .union(Protocol::NR_BODY);

/// Commands this milter has no use for: not sent at all.
const SKIP: Protocol = Protocol::NO_DATA
    .union(Protocol::NO_END_OF_HEADER)
    .union(Protocol::NO_UNKNOWN);

/// Largest milter packet accepted (Postfix sends body chunks of at most 64 KiB).
const MAX_PACKET: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] miltr_common::ProtocolError),
    #[error("a packet of {0} bytes (at most {MAX_PACKET})")]
    TooLarge(usize),
}

impl AuditMilter {
    fn negotiate(&mut self, theirs: &OptNeg) -> OptNeg {
        let mut ours = OptNeg {
            version: theirs.version.min(6),
            // Observe only: never ask to change a message.
            capabilities: Capability::empty(),
            protocol: if self.shared.unix_socket {
                theirs.protocol.intersection(SKIP | NO_REPLY)
            } else {
                Protocol::empty()
            },
            ..OptNeg::default()
        };
        self.no_reply = ours.protocol;
        // Ask for the macros the classification needs, whatever main.cf's milter_*_macros
        // say (Postfix ≥ 2.6 honours the request).
        ours.macro_stages
            .with_stage(MacroStage::Connect, &["j", "{daemon_name}"]);
        ours.macro_stages.with_stage(
            MacroStage::MailFrom,
            &["{auth_authen}", "{auth_type}", "{auth_author}", "i"],
        );
        ours.macro_stages
            .with_stage(MacroStage::EndOfBody, &["i", "{tls_version}"]);
        ours
    }

    /// A reply to a command the MTA waits for, unless negotiated away.
    fn proceed(&self, flag: Protocol) -> Vec<ServerMessage> {
        if self.no_reply.contains(flag) {
            Vec::new()
        } else {
            vec![ServerMessage::Action(Continue.into())]
        }
    }

    async fn end_of_message(&mut self) -> ModificationResponse {
        self.in_transaction = false;
        let verdict = match self.shared.classifier.lock() {
            Ok(mut c) => c.classify(&self.sub, Timestamp::now()),
            // Another connection panicked while classifying: never guess, keep mail safe.
            Err(_) => {
                tracing::error!("{}: the classifier is unusable", self.describe());
                self.sub.reset_message();
                return ModificationResponse::builder().build(store_failure_reply());
            }
        };
        let response = match verdict {
            Verdict::Ignore(why) => {
                tracing::debug!("{}: not recorded ({why})", self.describe());
                ModificationResponse::empty_continue()
            }
            Verdict::Record {
                observation,
                answer,
            } => {
                let what = format!(
                    "{} {} by {}",
                    observation.operation, observation.mailbox, observation.actor
                );
                match self.shared.writer.ingest(vec![*observation]).await {
                    Ok(_) if answer == Answer::Tempfail => {
                        tracing::info!(
                            "{}: {what}: over the hourly limit, deferred",
                            self.describe()
                        );
                        ModificationResponse::builder().build(rate_reply())
                    }
                    Ok(_) => ModificationResponse::empty_continue(),
                    Err(e) => {
                        self.shared.with_counters(|c| c.store_failures += 1);
                        let action = self.shared.on_store_failure;
                        tracing::error!(
                            "{}: {what}: the audit record could not be stored ({e}); answering {}",
                            self.describe(),
                            match action {
                                OnStoreFailure::Tempfail => "tempfail (the client will retry)",
                                OnStoreFailure::Accept => "accept (this send is NOT audited)",
                            }
                        );
                        match action {
                            OnStoreFailure::Tempfail => {
                                ModificationResponse::builder().build(store_failure_reply())
                            }
                            OnStoreFailure::Accept => ModificationResponse::empty_continue(),
                        }
                    }
                }
            }
        };
        self.sub.reset_message();
        response
    }

    /// Acts on one command; returns the replies to send, and whether the connection ends.
    async fn command(&mut self, command: ClientCommand) -> (Vec<ServerMessage>, bool) {
        let replies = match command {
            ClientCommand::OptNeg(theirs) => {
                vec![ServerMessage::Optneg(self.negotiate(&theirs))]
            }
            ClientCommand::Macro(m) => {
                for (name, value) in m.macros() {
                    self.sub.set_macro(
                        &String::from_utf8_lossy(name),
                        &String::from_utf8_lossy(value),
                    );
                }
                Vec::new()
            }
            ClientCommand::Connect(info) => {
                self.sub.client_ip = info.address().trim().parse().ok();
                self.sub.client_port = info.port.filter(|p| *p != 0);
                self.proceed(Protocol::NR_CONNECT)
            }
            ClientCommand::Helo(helo) => {
                self.sub.helo = Some(helo.helo().trim().to_string()).filter(|h| !h.is_empty());
                self.proceed(Protocol::NR_HELO)
            }
            ClientCommand::Mail(mail) => {
                self.in_transaction = true;
                self.sub.envelope_from = Some(mail.sender().to_string());
                self.proceed(Protocol::NR_MAIL)
            }
            ClientCommand::Recipient(rcpt) => {
                self.sub.recipients.push(rcpt.recipient().to_string());
                self.proceed(Protocol::NR_RECIPIENT)
            }
            ClientCommand::Data(_) => self.proceed(Protocol::NR_DATA),
            ClientCommand::Header(header) => {
                self.sub
                    .headers
                    .push((header.name().to_string(), header.value().to_string()));
                self.proceed(Protocol::NR_HEADER)
            }
            ClientCommand::EndOfHeader(_) => self.proceed(Protocol::NR_END_OF_HEADER),
            ClientCommand::Body(body) => {
                self.sub.body_bytes += body.as_bytes().len() as u64;
                self.proceed(Protocol::NR_BODY)
            }
            ClientCommand::Unknown(_) => self.proceed(Protocol::NR_UNKNOWN),
            ClientCommand::EndOfBody(_) => self.end_of_message().await.into(),
            // The end of a transaction (RSET, a rejected or broken one, or after a message):
            // no reply, and the connection stays for the next transaction.
            ClientCommand::Abort(_) => {
                self.end_transaction();
                Vec::new()
            }
            ClientCommand::Quit(_) => {
                self.end_transaction();
                return (Vec::new(), true);
            }
            ClientCommand::QuitNc(_) => {
                self.end_transaction();
                self.sub = Submission {
                    session: self.sub.session.take(),
                    ..Submission::default()
                };
                Vec::new()
            }
        };
        (replies, false)
    }
}

/// The milter protocol's framing: a 4-byte big-endian length, then the packet.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
    milter: &mut AuditMilter,
) -> Result<(), ConnectionError> {
    let (read, write) = tokio::io::split(socket);
    let mut read = tokio::io::BufReader::new(read);
    let mut write = tokio::io::BufWriter::new(write);
    let mut out = BytesMut::new();
    loop {
        let mut len = [0u8; 4];
        match read.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_PACKET {
            return Err(ConnectionError::TooLarge(len));
        }
        let mut packet = BytesMut::zeroed(len);
        read.read_exact(&mut packet).await?;
        let command = ClientCommand::parse(packet)?;
        let (replies, done) = milter.command(command).await;
        for reply in &replies {
            out.clear();
            out.extend_from_slice(&((reply.len() + 1) as u32).to_be_bytes());
            out.put_u8(reply.code());
            reply.write(&mut out);
            write.write_all(&out).await?;
        }
        if !replies.is_empty() {
            write.flush().await?;
        }
        if done {
            return Ok(());
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send>(shared: Arc<Shared>, socket: S) {
    let n = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let mut milter = AuditMilter {
        shared: shared.clone(),
        sub: Submission {
            session: Some(format!("milter#{n}")),
            ..Submission::default()
        },
        in_transaction: false,
        no_reply: Protocol::empty(),
    };
    if let Err(e) = serve(socket, &mut milter).await {
        tracing::warn!("{}: milter protocol error: {e}", milter.describe());
        shared.with_counters(|c| c.protocol_errors += 1);
    }
    // The MTA went away mid-transaction: that message was not sent.
    milter.end_transaction();
}

enum Listen {
    Inet(String),
    Unix(PathBuf),
}

fn parse_listen(s: &str) -> Result<Listen> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            bail!("--listen {s}: no socket path after `unix:`");
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    let addr = s.strip_prefix("inet:").unwrap_or(s);
    // Postfix writes inet:host:port; a bare port means loopback.
    let addr = if addr.parse::<u16>().is_ok() {
        format!("127.0.0.1:{addr}")
    } else {
        addr.to_string()
    };
    if addr
        .rsplit_once(':')
        .is_none_or(|(_, p)| p.parse::<u16>().is_err())
    {
        bail!("--listen {s}: expected inet:HOST:PORT or unix:/path");
    }
    Ok(Listen::Inet(addr))
}

fn load_config(args: &MilterArgs) -> Result<MilterConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            MilterConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => MilterConfig::default(),
    };
    if let Some(n) = args.rate_per_hour {
        config.rate.default_per_hour = n;
    }
    Ok(config)
}

pub fn run(dir: &Path, args: MilterArgs) -> Result<i32> {
    let config = load_config(&args)?;
    let listen = parse_listen(&args.listen)?;
    let mode = u32::from_str_radix(args.socket_mode.trim_start_matches("0o"), 8)
        .with_context(|| format!("--socket-mode {}: not an octal mode", args.socket_mode))?;
    let socket_gid = args.socket_group.as_deref().map(group_id).transpose()?;
    datadir::ensure_initialised(dir)?;
    let auditor = datadir::open_auditor(dir)?;
    // Mailboxes the audit policy names are known mailboxes: a bare login matching one of
    // them by local part acts as it.
    let mut book = AddressBook::new(&config);
    let policy = mailaudit_pipeline::load_policy(auditor.store())?;
    book.learn_mailboxes(policy.mailboxes.keys().map(String::as_str));
    let writer = WriterHandle::spawn(auditor, WriterConfig::default());
    let classifier = Classifier::new(book, config.rate.clone(), args.enforce_rate);
    let shared = Arc::new(Shared {
        classifier: Mutex::new(classifier),
        writer,
        on_store_failure: args.on_store_failure,
        connections: AtomicU64::new(0),
        unix_socket: matches!(listen, Listen::Unix(_)),
    });
    // One thread is plenty: per message the milter parses a few packets and waits for the
    // writer thread's durable commit; a multi-threaded runtime only added wake-ups (measured:
    // a fifth more CPU per message).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let interval = Duration::from_secs(args.counters_interval.max(1));
    runtime.block_on(async move {
        let stop = crate::serve::shutdown();
        tokio::spawn(log_counters(shared.clone(), interval));
        match listen {
            Listen::Inet(addr) => {
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("listening on {addr}"))?;
                let local = listener.local_addr()?;
                announce(&format!("inet:{local}"));
                tokio::select! {
                    r = accept_tcp(listener, shared.clone()) => r?,
                    _ = stop => {}
                }
            }
            Listen::Unix(path) => {
                remove_stale_socket(&path)?;
                let listener = tokio::net::UnixListener::bind(&path)
                    .with_context(|| format!("listening on {}", path.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("setting the mode of {}", path.display()))?;
                if let Some(gid) = socket_gid {
                    std::os::unix::fs::chown(&path, None, Some(gid))
                        .with_context(|| format!("giving {} to its group", path.display()))?;
                }
                announce(&format!("unix:{}", path.display()));
                tokio::select! {
                    r = accept_unix(listener, shared.clone()) => r?,
                    _ = stop => {}
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        tracing::info!("{}", counters_line(&shared.counters()));
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// A group's id from /etc/group.
fn group_id(name: &str) -> Result<u32> {
    let groups = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .with_context(|| format!("--socket-group {name}: no such group in /etc/group"))
}

fn announce(addr: &str) {
    use std::io::Write;
    println!("mailaudit milter listening on {addr}");
    let _ = std::io::stdout().flush();
}

fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("removing the old socket {}", path.display())),
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => Ok(()),
    }
}

async fn accept_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> Result<()> {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let _ = socket.set_nodelay(true);
                tokio::spawn(handle(shared.clone(), socket));
            }
            Err(e) => {
                tracing::warn!("accepting a milter connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) -> Result<()> {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(handle(shared.clone(), socket));
            }
            Err(e) => {
                tracing::warn!("accepting a milter connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn log_counters(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = Counters::default();
    loop {
        tick.tick().await;
        let now = shared.counters();
        if now != last {
            tracing::info!("{}", counters_line(&now));
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert!(
            matches!(parse_listen("inet:127.0.0.1:8891").unwrap(), Listen::Inet(a) if a == "127.0.0.1:8891")
        );
        assert!(matches!(parse_listen("8891").unwrap(), Listen::Inet(a) if a == "127.0.0.1:8891"));
        assert!(
            matches!(parse_listen("unix:/run/m.sock").unwrap(), Listen::Unix(p) if p == Path::new("/run/m.sock"))
        );
        for bad in ["unix:", "inet:localhost", "inet:host:port"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }
}
