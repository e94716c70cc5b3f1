//! `mailaudit proxy`: the auditing IMAP proxy, wired to the pipeline's writer.
//!
//! Fail closed: the proxy holds each recordable command until its *intent* is durable. The
//! intents of all connections live in one journal (`JournalSink`), written as a store setting
//! in the same transaction as the finished records, so that every commit both proves the
//! store writable and keeps what is in flight. A restarted proxy turns intents left in the
//! journal into records whose reason says the outcome is unknown: nothing forwarded is lost.

use crate::datadir;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mailaudit_model::{Observation, OperationResult};
use mailaudit_pipeline::{load_policy, WriterConfig, WriterHandle};
use mailaudit_policy::{classify, Decision, Policy};
use mailaudit_source_imap_proxy::{
    AuditFailure, AuditSink, FrameLimits, IntentId, Limits, ProxyConfig, ProxyServer, TlsFiles,
    Upstream, UpstreamSecurity,
};
use mailaudit_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnAuditFailure {
    /// Refuse the command with `NO [UNAVAILABLE]`; the server never sees it.
    Refuse,
    /// Forward the command anyway (an explicit opt-out of failing closed).
    Pass,
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:1143")]
    listen: SocketAddr,
    /// The IMAP server, `host:port`.
    #[arg(long)]
    upstream: String,
    /// Certificate chain (PEM) for implicit TLS towards clients; with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Implicit TLS to the upstream (the default).
    #[arg(long, conflicts_with_all = ["upstream_starttls", "upstream_plain"])]
    upstream_tls: bool,
    /// STARTTLS to the upstream.
    #[arg(long, conflicts_with = "upstream_plain")]
    upstream_starttls: bool,
    /// No encryption to the upstream (loopback or a trusted network only).
    #[arg(long)]
    upstream_plain: bool,
    /// CA certificates (PEM) to verify the upstream with; the system bundle by default.
    #[arg(long)]
    upstream_ca: Option<PathBuf>,
    /// Name to verify the upstream's certificate against; the host of --upstream by default.
    #[arg(long)]
    upstream_name: Option<String>,
    /// TOML file: `[audit]` (naming: master-user separator, domain, namespaces, owners,
    /// trash folders) and `[limits]`. See docs/imap-proxy.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// What to do when a command cannot be recorded.
    #[arg(long, value_enum, default_value = "refuse")]
    on_audit_failure: OnAuditFailure,
    /// Do not send the client's address to the upstream with ID x-originating-ip.
    #[arg(long)]
    no_forward_client_ip: bool,
    /// Name of this proxy's journal of commands in flight (one per proxy instance sharing a
    /// data directory).
    #[arg(long, default_value = "default")]
    journal: String,
}

/// `proxy.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    audit: ProxyConfig,
    limits: LimitsConfig,
}

/// `[limits]` of `proxy.toml`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LimitsConfig {
    /// Longest command line, in bytes.
    max_line_bytes: usize,
    /// Largest literal a client may send (an APPENDed message), in bytes.
    max_literal_bytes: u64,
    /// Seconds a client may stay silent.
    idle_timeout_secs: u64,
    /// Most concurrent client connections.
    max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            max_line_bytes: l.frame.max_line,
            max_literal_bytes: l.frame.max_literal,
            idle_timeout_secs: l.idle_timeout.as_secs(),
            max_connections: l.max_connections,
        }
    }
}

pub fn run(dir: &Path, args: ProxyArgs) -> Result<i32> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let security = match (
        args.upstream_tls,
        args.upstream_starttls,
        args.upstream_plain,
    ) {
        (_, true, _) => UpstreamSecurity::StartTls,
        (_, _, true) => UpstreamSecurity::Plain,
        _ => UpstreamSecurity::Tls,
    };
    let host = match args.upstream.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h.trim_matches(['[', ']']).to_string(),
        _ => bail!("--upstream {}: expected host:port", args.upstream),
    };
    let mut audit = file.audit;
    if audit.upstream_name.is_none() {
        audit.upstream_name = Some(args.upstream.clone());
    }
    let limits = Limits {
        frame: FrameLimits {
            max_line: file.limits.max_line_bytes.max(1024),
            max_literal: file.limits.max_literal_bytes,
            ..FrameLimits::default()
        },
        idle_timeout: Duration::from_secs(file.limits.idle_timeout_secs.max(1)),
        max_connections: file.limits.max_connections.max(1),
    };
    let upstream = Upstream {
        addr: args.upstream.clone(),
        security,
        server_name: args.upstream_name.clone().unwrap_or(host),
        ca_file: args.upstream_ca.clone(),
        forward_client_ip: !args.no_forward_client_ip,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let on_failure = match args.on_audit_failure {
        OnAuditFailure::Refuse => AuditFailure::Refuse,
        OnAuditFailure::Pass => AuditFailure::Pass,
    };
    datadir::ensure_initialised(dir)?;
    let auditor = datadir::open_auditor(dir)?;
    let key = format!("source:imap-proxy:journal:{}", args.journal);
    let left = auditor
        .store()
        .setting(&key)?
        .map(|(_, text)| text)
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let writer = WriterHandle::spawn(auditor, WriterConfig::default());
        let journal = Journal::recover(&left);
        let recovered = journal.entries.len();
        let sink = Arc::new(JournalSink::start(writer, key, journal).with_policy(dir)?);
        if recovered > 0 {
            if let Err(e) = sink.flush().await {
                bail!("recording the commands a previous run left in flight: {e}");
            }
            eprintln!(
                "recorded {recovered} command(s) a previous run left in flight (outcome unknown)"
            );
        }
        let server = Arc::new(
            ProxyServer::new(audit, limits, upstream, on_failure, tls, sink)
                .context("setting up the proxy")?,
        );
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let local = listener.local_addr()?;
        // Tests and scripts wait for this line.
        println!(
            "mailaudit proxy listening on {local} (upstream {})",
            args.upstream
        );
        tracing::info!("IMAP proxy on {local} for {}", args.upstream);
        tokio::select! {
            r = server.clone().run(listener) => r.context("accepting connections")?,
            _ = crate::serve::shutdown() => {}
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

/// One command in flight (or finished but not yet stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    observation: Observation,
    /// The server replied: `observation` is the record itself.
    done: bool,
}

/// The commands in flight, as kept in the store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Journal {
    entries: BTreeMap<String, Entry>,
}

impl Journal {
    /// What a previous run left: finished records are kept as they are; intents become
    /// records of unknown outcome.
    fn recover(text: &str) -> Journal {
        let mut j: Journal = match serde_json::from_str(text) {
            Ok(j) => j,
            Err(e) if !text.trim().is_empty() => {
                tracing::error!("the proxy journal left by a previous run is unreadable ({e}); its commands cannot be recorded");
                Journal::default()
            }
            Err(_) => Journal::default(),
        };
        for e in j.entries.values_mut() {
            if !e.done {
                e.observation.result = OperationResult::Failed;
                e.done = true;
            }
        }
        // Keys of a new run must not collide with these.
        j.entries = j
            .entries
            .into_values()
            .enumerate()
            .map(|(i, e)| (format!("recovered-{i}"), e))
            .collect();
        j
    }
}

enum Msg {
    Begin(IntentId, Observation, oneshot::Sender<Result<(), String>>),
    Finish(IntentId, Option<Observation>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The `AuditSink` of the proxy: one task owns the journal and commits it, with the finished
/// records, in one durable transaction per batch of requests (group commit).
pub struct JournalSink {
    tx: mpsc::Sender<Msg>,
    /// The audit policy, re-read every second: a command whose record the policy would not
    /// keep is not held (its record still goes to the pipeline, which decides again).
    policy: Option<Arc<std::sync::RwLock<Policy>>>,
}

/// How often the sink re-reads the policy. A change applies to holding within this time; the
/// records themselves always follow the policy the pipeline reads.
const POLICY_REFRESH: Duration = Duration::from_secs(1);

impl JournalSink {
    pub(crate) fn start(writer: WriterHandle, key: String, journal: Journal) -> JournalSink {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(journal_task(writer, key, journal, rx));
        JournalSink { tx, policy: None }
    }

    /// Holds only commands the policy (read from `dir`'s store) would record.
    pub(crate) fn with_policy(mut self, dir: &Path) -> Result<JournalSink> {
        let store = datadir::open_store(dir)?;
        let policy = Arc::new(std::sync::RwLock::new(load_policy(&store)?));
        let shared = policy.clone();
        let store = Arc::new(std::sync::Mutex::new(store));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLICY_REFRESH);
            loop {
                tick.tick().await;
                let store = store.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let s = store
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    load_policy(&*s)
                })
                .await;
                match read {
                    Ok(Ok(p)) => {
                        *shared
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = p;
                    }
                    Ok(Err(e)) => tracing::error!("re-reading the audit policy: {e}"),
                    Err(e) => tracing::error!("re-reading the audit policy: {e}"),
                }
            }
        });
        self.policy = Some(policy);
        Ok(self)
    }

    fn would_record(&self, obs: &Observation) -> bool {
        let Some(policy) = &self.policy else {
            return true;
        };
        let class = classify(obs);
        let policy = policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!(
            policy.decide(&obs.mailbox, &obs.actor, obs.operation, class.logon_type),
            Decision::Record
        )
    }

    async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| "the journal has stopped".to_string())?;
        rx.await
            .map_err(|_| "the journal has stopped".to_string())?
    }
}

impl AuditSink for JournalSink {
    async fn begin(&self, id: IntentId, intent: Observation) -> Result<(), String> {
        if !self.would_record(&intent) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Begin(id, intent, tx))
            .await
            .map_err(|_| "the journal has stopped".to_string())?;
        rx.await
            .map_err(|_| "the journal has stopped".to_string())?
    }

    async fn finish(&self, id: IntentId, record: Option<Observation>) {
        if self.tx.send(Msg::Finish(id, record)).await.is_err() {
            tracing::error!(
                "the proxy journal has stopped; the record of intent {id} stays in the journal"
            );
        }
    }
}

async fn journal_task(
    writer: WriterHandle,
    key: String,
    mut journal: Journal,
    mut rx: mpsc::Receiver<Msg>,
) {
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => batch.push(m),
                None => return,
            },
            // Finished records whose commit failed are retried.
            _ = retry.tick(), if journal.entries.values().any(|e| e.done) => {}
        }
        while batch.len() < 10_000 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut begun = Vec::new();
        let mut waiting = Vec::new();
        for m in batch {
            match m {
                Msg::Begin(id, obs, reply) => {
                    journal.entries.insert(
                        id.to_string(),
                        Entry {
                            observation: obs,
                            done: false,
                        },
                    );
                    begun.push(id.to_string());
                    waiting.push(reply);
                }
                Msg::Finish(id, Some(obs)) => {
                    journal.entries.insert(
                        id.to_string(),
                        Entry {
                            observation: obs,
                            done: true,
                        },
                    );
                }
                Msg::Finish(id, None) => {
                    journal.entries.remove(&id.to_string());
                }
                Msg::Flush(reply) => waiting.push(reply),
            }
        }
        let done: Vec<String> = journal
            .entries
            .iter()
            .filter(|(_, e)| e.done)
            .map(|(k, _)| k.clone())
            .collect();
        let records: Vec<Observation> = done
            .iter()
            .filter_map(|k| journal.entries.get(k).map(|e| e.observation.clone()))
            .collect();
        let in_flight = Journal {
            entries: journal
                .entries
                .iter()
                .filter(|(_, e)| !e.done)
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
        };
        let text = serde_json::to_string(&in_flight).unwrap_or_default();
        match writer
            .ingest_with_settings(records, vec![(key.clone(), text)])
            .await
        {
            Ok(_) => {
                for k in &done {
                    journal.entries.remove(k);
                }
                for w in waiting {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!("the audit log cannot be written: {e}");
                // Refused commands are never forwarded: forget their intents.
                for k in &begun {
                    journal.entries.remove(k);
                }
                for w in waiting {
                    let _ = w.send(Err(e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(op: &str, result: &str) -> Observation {
        let text = format!(
            r#"{{"time":"2026-11-24T10:00:00Z","operation":"{op}","result":"{result}","reason":"outcome unknown: the proxy stopped before the server replied to this command","mailbox":"alice","actor":"alice","provenance":{{"source":"imap-proxy"}}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_journal_left_behind_becomes_records_of_unknown_outcome() {
        let mut left = Journal::default();
        let mut done = obs("MessageBind", "Succeeded");
        done.reason = None;
        left.entries.insert(
            "7".into(),
            Entry {
                observation: obs("Create", "Failed"),
                done: false,
            },
        );
        left.entries.insert(
            "8".into(),
            Entry {
                observation: done.clone(),
                done: true,
            },
        );
        let text = serde_json::to_string(&left).unwrap();
        let j = Journal::recover(&text);
        let got: Vec<&Entry> = j.entries.values().collect();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.done));
        let create = got
            .iter()
            .find(|e| e.observation.operation.as_str() == "Create")
            .unwrap();
        assert_eq!(create.observation.result, OperationResult::Failed);
        assert!(create
            .observation
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("outcome unknown")));
        // A finished record is kept as it was.
        assert!(got.iter().any(|e| e.observation == done));
        assert!(j.entries.keys().all(|k| k.starts_with("recovered-")));
        assert!(Journal::recover("").entries.is_empty());
        assert!(Journal::recover("{not json").entries.is_empty());
    }
}
