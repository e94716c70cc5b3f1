//! The network half: accepts clients (plain or implicit TLS), connects to the upstream (plain,
//! TLS or STARTTLS, certificates verified), and pumps bytes both ways unchanged while a copy
//! feeds the [`Session`]. A recordable command is held until its intent is durable through
//! the [`AuditSink`]; when that fails the client gets `NO [UNAVAILABLE]` and the upstream never
//! sees the command (unless the operator chose `AuditFailure::Pass`). It never writes to the
//! store itself.

use crate::config::ProxyConfig;
use crate::frame::{FrameEvent, FrameLimits, Framer};
use crate::names;
use crate::session::{ConnInfo, HeadAction, Session};
use mailaudit_model::{Observation, Timestamp};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;

/// Identifies one held command between its intent and its record.
pub type IntentId = u64;

/// Where records go. Implemented by the cli with the pipeline's writer.
pub trait AuditSink: Send + Sync + 'static {
    /// Makes `intent` durable (the record as known before the server replies). The command
    /// is forwarded only after this returns `Ok`.
    fn begin(
        &self,
        id: IntentId,
        intent: Observation,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// The server replied: replaces the intent by `record` (none: the command reported
    /// nothing, drop the intent).
    fn finish(&self, id: IntentId, record: Option<Observation>) -> impl Future<Output = ()> + Send;
}

/// What to do when a command's intent cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFailure {
    /// Refuse the command (`NO [UNAVAILABLE]`); the default.
    Refuse,
    /// Forward it anyway and log the failure.
    Pass,
}

/// Per-connection and global limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub frame: FrameLimits,
    /// A client silent for this long is disconnected (IDLE clients re-issue within 29 min).
    pub idle_timeout: Duration,
    /// Most concurrent client connections.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame: FrameLimits::default(),
            idle_timeout: Duration::from_secs(31 * 60),
            max_connections: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamSecurity {
    Plain,
    Tls,
    StartTls,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port`
    pub addr: String,
    pub security: UpstreamSecurity,
    /// Name checked against the upstream's certificate (the host of `addr` by default).
    pub server_name: String,
    /// PEM file of trusted CAs; the system bundle by default.
    pub ca_file: Option<PathBuf>,
    /// Send the client's address to the upstream with ID `x-originating-ip` (Dovecot honours
    /// it from `login_trusted_networks`).
    pub forward_client_ip: bool,
}

/// Certificate and key (PEM) for TLS towards clients (implicit TLS, port 993 style).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Counters over all connections.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub refused_connections: AtomicU64,
    pub cut_off: AtomicU64,
    pub commands: AtomicU64,
    pub unparsed_commands: AtomicU64,
    pub unparsed_responses: AtomicU64,
    pub observations: AtomicU64,
    pub audit_failures: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("reading {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("upstream {addr}: {reason}")]
    Upstream { addr: String, reason: String },
}

/// The proxy: configuration shared by every connection.
pub struct ProxyServer<S: AuditSink> {
    pub config: Arc<ProxyConfig>,
    pub limits: Limits,
    pub upstream: Upstream,
    pub on_failure: AuditFailure,
    pub sink: Arc<S>,
    pub stats: Arc<ProxyStats>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    connector: Option<tokio_rustls::TlsConnector>,
    next_intent: AtomicU64,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|source| NetError::File {
        path: path.display().to_string(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl<S: AuditSink> ProxyServer<S> {
    pub fn new(
        config: ProxyConfig,
        limits: Limits,
        upstream: Upstream,
        on_failure: AuditFailure,
        tls: Option<TlsFiles>,
        sink: Arc<S>,
    ) -> Result<Self, NetError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let acceptor = match tls {
            Some(files) => {
                let pem = |p: &std::path::Path, e: rustls::pki_types::pem::Error| NetError::Pem {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                };
                let cert_bytes = read_file(&files.cert)?;
                let certs = CertificateDer::pem_slice_iter(&cert_bytes)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| pem(&files.cert, e))?;
                let key_bytes = read_file(&files.key)?;
                let key =
                    PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| pem(&files.key, e))?;
                let cfg = rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()?
                    .with_no_client_auth()
                    .with_single_cert(certs, key)?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
            }
            None => None,
        };
        let connector = match upstream.security {
            UpstreamSecurity::Plain => None,
            UpstreamSecurity::Tls | UpstreamSecurity::StartTls => {
                let path = upstream
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
                let bytes = read_file(&path)?;
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&bytes) {
                    let c = c.map_err(|e| NetError::Pem {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    roots.add(c)?;
                }
                let cfg = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
            }
        };
        Ok(ProxyServer {
            config: Arc::new(config),
            limits,
            upstream,
            on_failure,
            sink,
            stats: Arc::new(ProxyStats::default()),
            acceptor,
            connector,
            next_intent: AtomicU64::new(1),
        })
    }

    /// Accepts connections until the listener fails.
    pub async fn run(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let mut conn_no: u64 = 0;
        loop {
            let (tcp, peer) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            conn_no += 1;
            let id = format!("p{}-{conn_no}", std::process::id());
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                self.stats
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "refusing connection {id} from {peer}: {} connections are open (the limit)",
                    self.limits.max_connections
                );
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let _ = tcp
                        .write_all(b"* BYE [UNAVAILABLE] too many connections, try again later\r\n")
                        .await;
                });
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.stats.connections.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = me.clone().connection(tcp, peer, id.clone()).await {
                    tracing::warn!("connection {id} from {peer}: {e}");
                }
                drop(permit);
            });
        }
    }

    async fn connect_upstream(&self) -> Result<(Box<dyn Io>, Vec<u8>), String> {
        let addr = &self.upstream.addr;
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.upstream.server_name.clone())
            .map_err(|e| format!("bad server name: {e}"))?;
        match (self.upstream.security, &self.connector) {
            (UpstreamSecurity::Tls, Some(c)) => {
                let mut tls = c
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                let greeting = read_line(&mut tls).await?;
                Ok((Box::new(tls), greeting))
            }
            (UpstreamSecurity::StartTls, Some(c)) => {
                let mut tcp = tcp;
                let greeting = read_line(&mut tcp).await?;
                tcp.write_all(b"mailaudit-starttls STARTTLS\r\n")
                    .await
                    .map_err(|e| e.to_string())?;
                loop {
                    let line = read_line(&mut tcp).await?;
                    if line.starts_with(b"mailaudit-starttls ") {
                        if !line[19..].to_ascii_uppercase().starts_with(b"OK") {
                            return Err(format!(
                                "STARTTLS refused: {}",
                                names::printable(&line, 200)
                            ));
                        }
                        break;
                    }
                }
                let tls = c
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Ok((Box::new(tls), greeting))
            }
            _ => {
                let mut tcp = tcp;
                let greeting = read_line(&mut tcp).await?;
                Ok((Box::new(tcp), greeting))
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        id: String,
    ) -> Result<(), String> {
        let tls = self.acceptor.is_some();
        let client: Box<dyn Io> = match &self.acceptor {
            Some(a) => {
                let hs = tokio::time::timeout(Duration::from_secs(30), a.accept(tcp)).await;
                match hs {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => return Err(format!("TLS handshake with the client failed: {e}")),
                    Err(_) => return Err("TLS handshake with the client timed out".into()),
                }
            }
            None => Box::new(tcp),
        };
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut upstream, greeting) = match self.connect_upstream().await {
            Ok(u) => u,
            Err(e) => {
                let _ = client_w
                    .write_all(b"* BYE [UNAVAILABLE] the mail server cannot be reached\r\n")
                    .await;
                return Err(format!("upstream {}: {e}", self.upstream.addr));
            }
        };
        if self.upstream.forward_client_ip {
            forward_ip(&mut upstream, peer).await?;
        }
        client_w
            .write_all(&greeting)
            .await
            .map_err(|e| e.to_string())?;
        let (up_r, mut up_w) = tokio::io::split(upstream);
        let session = Arc::new(Mutex::new(
            Session::new(
                self.config.clone(),
                ConnInfo {
                    ip: Some(peer.ip()),
                    port: Some(peer.port()),
                    tls,
                    id: id.clone(),
                },
            )
            .with_compression(),
        ));
        let intents: Arc<Mutex<HashMap<String, IntentId>>> = Arc::default();
        let (inject_tx, inject_rx) = mpsc::unbounded_channel::<Inject>();
        let compressed = Arc::new(AtomicBool::new(false));
        let s2c = tokio::spawn(server_to_client(
            self.clone(),
            up_r,
            client_w,
            session.clone(),
            intents.clone(),
            inject_rx,
            compressed.clone(),
        ));
        let c2s = self
            .client_to_server(
                &mut client_r,
                &mut up_w,
                &session,
                &intents,
                &inject_tx,
                &compressed,
                &id,
                peer,
            )
            .await;
        match c2s {
            Ok(()) => {
                let _ = up_w.shutdown().await;
            }
            Err(reason) => {
                self.stats.cut_off.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("cutting off client {peer} (connection {id}): {reason}");
                let _ = inject_tx.send(Inject::Close(format!("* BYE {reason}\r\n").into_bytes()));
                let _ = up_w.shutdown().await;
            }
        }
        drop(inject_tx);
        let _ = tokio::time::timeout(Duration::from_secs(30), s2c).await;
        let (completions, stats) = {
            let mut s = lock(&session);
            (s.close(), s.stats())
        };
        for c in completions {
            let held = lock(&intents).remove(&c.tag);
            if let Some(id) = held {
                self.sink.finish(id, c.observation).await;
            }
        }
        self.stats
            .commands
            .fetch_add(stats.commands, Ordering::Relaxed);
        self.stats
            .unparsed_commands
            .fetch_add(stats.unparsed_commands, Ordering::Relaxed);
        self.stats
            .unparsed_responses
            .fetch_add(stats.unparsed_responses, Ordering::Relaxed);
        self.stats
            .observations
            .fetch_add(stats.observations, Ordering::Relaxed);
        tracing::debug!(
            "connection {id} from {peer} closed: {} commands ({} unparsed), {} responses ({} unparsed), {} records",
            stats.commands,
            stats.unparsed_commands,
            stats.responses,
            stats.unparsed_responses,
            stats.observations
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn client_to_server(
        &self,
        client: &mut (impl AsyncRead + Unpin),
        up: &mut (impl AsyncWrite + Unpin),
        session: &Mutex<Session>,
        intents: &Mutex<HashMap<String, IntentId>>,
        inject: &mpsc::UnboundedSender<Inject>,
        compressed: &AtomicBool,
        conn: &str,
        peer: SocketAddr,
    ) -> Result<(), String> {
        let mut framer = Framer::new(self.limits.frame);
        let mut buf = vec![0u8; 64 * 1024];
        let mut events = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut discard = false;
        let mut inflater: Option<Inflater> = None;
        loop {
            let n =
                match tokio::time::timeout(self.limits.idle_timeout, client.read(&mut buf)).await {
                    Err(_) => {
                        return Err(format!(
                            "idle for {} s (the idle timeout)",
                            self.limits.idle_timeout.as_secs()
                        ))
                    }
                    Ok(Err(e)) => return Err(format!("reading from the client: {e}")),
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => n,
                };
            let chunk = &buf[..n];
            if inflater.is_none() && compressed.load(Ordering::Acquire) {
                inflater = Some(Inflater::new());
            }
            if let Some(z) = inflater.as_mut() {
                // Compressed: the raw chunk is forwarded whole once every command that
                // ends in it is cleared (a server acts on a command only once its line is
                // complete, so earlier parts of it may already have passed).
                let mut input = chunk;
                while let Some(plain) = z.next(&mut input).map_err(|e| {
                    format!("the client's compressed stream is not valid deflate data ({e})")
                })? {
                    events.clear();
                    framer.push(plain, &mut events).map_err(|e| e.to_string())?;
                    for ev in events.drain(..) {
                        match ev {
                            FrameEvent::Head { line, .. } => {
                                let action = lock(session).client_head(&line, Timestamp::now());
                                match action {
                                    HeadAction::Forward => {}
                                    HeadAction::Refuse { tag, .. } => {
                                        return Err(format!("refusing command {tag}; a compressed connection cannot be answered, so it is closed"));
                                    }
                                    HeadAction::Hold { tag, intent } => {
                                        let id = self.next_intent.fetch_add(1, Ordering::Relaxed);
                                        match self.sink.begin(id, *intent).await {
                                            Ok(()) => {
                                                lock(intents).insert(tag, id);
                                            }
                                            Err(e) => {
                                                self.stats
                                                    .audit_failures
                                                    .fetch_add(1, Ordering::Relaxed);
                                                if self.on_failure == AuditFailure::Pass {
                                                    tracing::error!("connection {conn} ({peer}): the audit log cannot record command {tag} ({e}); forwarding it anyway (--on-audit-failure=pass)");
                                                } else {
                                                    return Err(format!("refusing command {tag}: the audit log cannot record it ({e}); a compressed connection cannot be answered, so it is closed"));
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            FrameEvent::Message {
                                copy,
                                literal_bytes,
                                ..
                            } => {
                                lock(session).client_message(
                                    &copy,
                                    literal_bytes,
                                    Timestamp::now(),
                                );
                            }
                        }
                    }
                }
                up.write_all(chunk)
                    .await
                    .map_err(|e| format!("writing to the server: {e}"))?;
                continue;
            }
            events.clear();
            if let Err(e) = framer.push(chunk, &mut events) {
                return Err(e.to_string());
            }
            let mut pos = 0;
            for ev in events.drain(..) {
                match ev {
                    FrameEvent::Head { end, line } => {
                        let mut head = std::mem::take(&mut held);
                        head.extend_from_slice(&chunk[pos..end]);
                        pos = end;
                        let action = lock(session).client_head(&line, Timestamp::now());
                        match action {
                            HeadAction::Forward => out.extend_from_slice(&head),
                            HeadAction::Hold { tag, intent } => {
                                if !out.is_empty() {
                                    up.write_all(&out).await.map_err(|e| e.to_string())?;
                                    out.clear();
                                }
                                let id = self.next_intent.fetch_add(1, Ordering::Relaxed);
                                match self.sink.begin(id, *intent).await {
                                    Ok(()) => {
                                        lock(intents).insert(tag, id);
                                        out.extend_from_slice(&head);
                                    }
                                    Err(e) => {
                                        self.stats.audit_failures.fetch_add(1, Ordering::Relaxed);
                                        if self.on_failure == AuditFailure::Pass {
                                            tracing::error!("connection {conn} ({peer}): the audit log cannot record command {tag} ({e}); forwarding it anyway (--on-audit-failure=pass)");
                                            out.extend_from_slice(&head);
                                        } else {
                                            tracing::error!("connection {conn} ({peer}): refusing command {tag}: the audit log cannot record it: {e}");
                                            discard = refuse(&mut framer, &line);
                                            let _ = inject.send(Inject::Reply(format!(
                                                "{tag} NO [UNAVAILABLE] the audit log cannot record this command; it was not carried out\r\n"
                                            ).into_bytes()));
                                        }
                                    }
                                }
                            }
                            HeadAction::Refuse { reply, .. } => {
                                discard = refuse(&mut framer, &line);
                                let _ = inject.send(Inject::Reply(reply.into_bytes()));
                            }
                        }
                    }
                    FrameEvent::Message {
                        end,
                        copy,
                        literal_bytes,
                        ..
                    } => {
                        if discard {
                            discard = false;
                        } else {
                            out.extend_from_slice(&chunk[pos..end]);
                            lock(session).client_message(&copy, literal_bytes, Timestamp::now());
                        }
                        pos = end;
                    }
                }
            }
            let rest = &chunk[pos..];
            if framer.in_head() {
                held.extend_from_slice(rest);
            } else if !discard {
                out.extend_from_slice(rest);
            }
            if !out.is_empty() {
                up.write_all(&out)
                    .await
                    .map_err(|e| format!("writing to the server: {e}"))?;
                out.clear();
            }
        }
    }
}

/// A refused command: with a synchronising literal the client waits for a go-ahead that
/// never comes, so the framer forgets the message; otherwise the rest of the message (a
/// LITERAL+ literal) is discarded until its end. Returns whether to discard.
fn refuse(framer: &mut Framer, line: &[u8]) -> bool {
    if sync_literal(line) {
        framer.skip_message();
        false
    } else {
        true
    }
}

fn sync_literal(line: &[u8]) -> bool {
    let t = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    t.ends_with(b"}") && !t.ends_with(b"+}")
}

enum Inject {
    /// Bytes for the client at the next message boundary.
    Reply(Vec<u8>),
    /// Last bytes for the client, then close.
    Close(Vec<u8>),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn server_to_client<S: AuditSink>(
    proxy: Arc<ProxyServer<S>>,
    mut up: impl AsyncRead + Unpin,
    mut client: impl AsyncWrite + Unpin,
    session: Arc<Mutex<Session>>,
    intents: Arc<Mutex<HashMap<String, IntentId>>>,
    mut inject: mpsc::UnboundedReceiver<Inject>,
    compressed: Arc<AtomicBool>,
) {
    // Server replies may be large (a whole message); the copy keeps a bounded part.
    let limits = FrameLimits {
        max_line: proxy.limits.frame.max_line.max(1 << 20),
        max_literal: u64::MAX,
        ..proxy.limits.frame
    };
    let mut framer = Framer::new(limits);
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = Vec::new();
    let mut queued: Vec<Vec<u8>> = Vec::new();
    let mut inject_open = true;
    let mut parse = true;
    let mut inflater: Option<Inflater> = None;
    let complete = |completions: Vec<crate::session::Completion>| {
        let mut starts = false;
        for c in completions {
            starts |= c.starts_compression;
            let held = lock(&intents).remove(&c.tag);
            let id = match (held, &c.observation) {
                (Some(id), _) => id,
                // Recordable only once parsed whole (rare): no intent was held.
                (None, Some(_)) => proxy.next_intent.fetch_add(1, Ordering::Relaxed),
                (None, None) => continue,
            };
            let sink = proxy.sink.clone();
            tokio::spawn(async move { sink.finish(id, c.observation).await });
        }
        starts
    };
    loop {
        tokio::select! {
            // The proxy's own replies first: a refusal precedes the replies to commands
            // the client sent after the refused one.
            biased;
            msg = inject.recv(), if inject_open => match msg {
                Some(Inject::Reply(bytes)) => {
                    if inflater.is_some() {
                        // Nothing plain can be written into a compressed stream.
                        continue;
                    }
                    if framer.at_boundary() {
                        if client.write_all(&bytes).await.is_err() { return; }
                    } else {
                        queued.push(bytes);
                    }
                }
                Some(Inject::Close(bytes)) => {
                    if framer.at_boundary() && inflater.is_none() {
                        let _ = client.write_all(&bytes).await;
                    }
                    let _ = client.shutdown().await;
                    return;
                }
                None => inject_open = false,
            },
            r = up.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => {
                        let _ = client.shutdown().await;
                        return;
                    }
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                let mut pos = 0;
                let mut compressed_from = None;
                if inflater.is_none() {
                    events.clear();
                    if parse {
                        if let Err(e) = framer.push(chunk, &mut events) {
                            // The server's bytes still pass; only the audit of them stops.
                            tracing::error!("the server's reply cannot be framed ({e}); no further commands of this connection are audited");
                            parse = false;
                        }
                    }
                    for ev in events.drain(..) {
                        let FrameEvent::Message { end, copy, .. } = ev else { continue };
                        let completions = lock(&session).server_message(&copy, Timestamp::now());
                        let starts = complete(completions);
                        if !queued.is_empty() {
                            if client.write_all(&chunk[pos..end]).await.is_err() { return; }
                            pos = end;
                            for q in queued.drain(..) {
                                if client.write_all(&q).await.is_err() { return; }
                            }
                        }
                        if starts {
                            // Set before the OK reaches the client: its next bytes are
                            // compressed, and so is the rest of this chunk.
                            compressed.store(true, Ordering::Release);
                            compressed_from = Some(end);
                            inflater = Some(Inflater::new());
                            framer = Framer::new(limits);
                            queued.clear();
                            break;
                        }
                    }
                }
                if let (Some(z), true) = (inflater.as_mut(), parse) {
                    let mut input = &chunk[compressed_from.unwrap_or(0)..];
                    loop {
                        let plain = match z.next(&mut input) {
                            Ok(Some(p)) => p,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::error!("the server's compressed stream cannot be inflated ({e}); no further commands of this connection are audited");
                                parse = false;
                                break;
                            }
                        };
                        events.clear();
                        if let Err(e) = framer.push(plain, &mut events) {
                            tracing::error!("the server's reply cannot be framed ({e}); no further commands of this connection are audited");
                            parse = false;
                        }
                        for ev in events.drain(..) {
                            let FrameEvent::Message { copy, .. } = ev else { continue };
                            let completions = lock(&session).server_message(&copy, Timestamp::now());
                            complete(completions);
                        }
                    }
                }
                if client.write_all(&chunk[pos..]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Raw deflate (RFC 4978 COMPRESS=DEFLATE), inflated a bounded piece at a time so that a
/// small input cannot make the proxy hold a huge output.
struct Inflater {
    z: flate2::Decompress,
    out: Vec<u8>,
}

impl Inflater {
    const PIECE: usize = 64 * 1024;

    fn new() -> Self {
        Inflater {
            z: flate2::Decompress::new(false),
            out: Vec::with_capacity(Self::PIECE),
        }
    }

    /// The next piece of output from `input` (advanced past what was consumed); none when
    /// `input` is used up and nothing is pending.
    fn next(&mut self, input: &mut &[u8]) -> Result<Option<&[u8]>, flate2::DecompressError> {
        self.out.clear();
        let before = self.z.total_in();
        self.z
            .decompress_vec(input, &mut self.out, flate2::FlushDecompress::Sync)?;
        let used = usize::try_from(self.z.total_in() - before).unwrap_or(input.len());
        *input = input.get(used..).unwrap_or_default();
        if self.out.is_empty() {
            return Ok(None);
        }
        Ok(Some(&self.out))
    }
}

async fn read_line(io: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, String> {
    // Byte by byte: nothing after the line may be consumed (TLS may start right after it).
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), io.read(&mut b))
            .await
            .map_err(|_| "no greeting within 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed the connection".into());
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            return Ok(line);
        }
        if line.len() > 64 * 1024 {
            return Err("a line longer than 64 KiB".into());
        }
    }
}

/// Tells the upstream the client's address (Dovecot: `x-originating-ip`), consuming the reply
/// so the client never sees it.
async fn forward_ip(
    up: &mut (impl AsyncRead + AsyncWrite + Unpin),
    peer: SocketAddr,
) -> Result<(), String> {
    let cmd = format!(
        "mailaudit-id ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\")\r\n",
        peer.ip(),
        peer.port()
    );
    up.write_all(cmd.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(up);
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(30), r.read_until(b'\n', &mut line))
            .await
            .map_err(|_| "no reply to ID within 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection after ID".into());
        }
        if line.starts_with(b"mailaudit-id ") {
            return Ok(());
        }
    }
}
