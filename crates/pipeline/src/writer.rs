//! The single writer thread. Concurrent requests queue here; each turn of the loop takes
//! every ingest job waiting (up to `max_batch` observations) and commits them in one durable
//! transaction (group commit), then answers every request. A request is only answered once
//! its records are on disk.

use crate::auditor::{Actor, Auditor, IngestOutcome, PipelineError, Stats};
use mailaudit_model::{AuditRecord, Observation, Operation, Parameter, Timestamp};
use mailaudit_policy::{Policy, PolicyChange};
use mailaudit_store::{Store, StoreError, StoredCheckpoint};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most observations merged into one commit.
    pub max_batch: usize,
    /// Requests that may wait for the writer before senders are slowed down.
    pub queue: usize,
    /// Records a slow subscriber may fall behind before it misses some (it is told how many).
    pub subscriber_buffer: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch: 50_000,
            queue: 1024,
            subscriber_buffer: 65_536,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, PipelineError>>;

enum Job {
    /// Observations and settings (a source's position) to commit with them.
    Ingest(
        Vec<Observation>,
        Vec<(String, String)>,
        Reply<Vec<IngestOutcome>>,
    ),
    Policy(Actor, PolicyChange, Reply<(AuditRecord, Policy)>),
    AuditAccess(
        Actor,
        Operation,
        Option<String>,
        Vec<Parameter>,
        Reply<AuditRecord>,
    ),
    Checkpoint(Reply<StoredCheckpoint>),
    Prune(Timestamp, Reply<u64>),
    Stats(Reply<Stats>),
}

/// A cheap, cloneable handle to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
    records: broadcast::Sender<Arc<AuditRecord>>,
}

impl WriterHandle {
    /// Starts the writer thread owning `auditor`. The thread ends when every handle is gone.
    pub fn spawn<S: Store + 'static>(auditor: Auditor<S>, config: WriterConfig) -> Self {
        let (jobs, rx) = mpsc::channel(config.queue.max(1));
        let (records, _) = broadcast::channel(config.subscriber_buffer.max(1));
        let fanout = records.clone();
        let max_batch = config.max_batch.max(1);
        std::thread::Builder::new()
            .name("mailaudit-writer".into())
            .spawn(move || run(auditor, rx, fanout, max_batch))
            .map_err(|e| tracing::error!("cannot start the writer thread: {e}"))
            .ok();
        WriterHandle { jobs, records }
    }

    /// Every record appended from now on, as it is committed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditRecord>> {
        self.records.subscribe()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, PipelineError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(make(tx))
            .await
            .map_err(|_| PipelineError::WriterGone)?;
        rx.await.map_err(|_| PipelineError::WriterGone)?
    }

    /// Resolves once the records are durable.
    pub async fn ingest(
        &self,
        observations: Vec<Observation>,
    ) -> Result<Vec<IngestOutcome>, PipelineError> {
        self.call(|r| Job::Ingest(observations, Vec::new(), r))
            .await
    }

    /// Like `ingest`, and writes `settings` (a source's position and state) in the same
    /// transaction, so that a restarted source neither repeats nor skips what it read.
    pub async fn ingest_with_settings(
        &self,
        observations: Vec<Observation>,
        settings: Vec<(String, String)>,
    ) -> Result<Vec<IngestOutcome>, PipelineError> {
        self.call(|r| Job::Ingest(observations, settings, r)).await
    }

    pub async fn change_policy(
        &self,
        actor: Actor,
        change: PolicyChange,
    ) -> Result<(AuditRecord, Policy), PipelineError> {
        self.call(|r| Job::Policy(actor, change, r)).await
    }

    pub async fn record_audit_access(
        &self,
        actor: Actor,
        operation: Operation,
        mailbox: Option<String>,
        parameters: Vec<Parameter>,
    ) -> Result<AuditRecord, PipelineError> {
        self.call(|r| Job::AuditAccess(actor, operation, mailbox, parameters, r))
            .await
    }

    pub async fn checkpoint(&self) -> Result<StoredCheckpoint, PipelineError> {
        self.call(Job::Checkpoint).await
    }

    pub async fn prune(&self, now: Timestamp) -> Result<u64, PipelineError> {
        self.call(|r| Job::Prune(now, r)).await
    }

    pub async fn stats(&self) -> Result<Stats, PipelineError> {
        self.call(Job::Stats).await
    }
}

fn publish(fanout: &broadcast::Sender<Arc<AuditRecord>>, records: &[AuditRecord]) {
    // Without a subscriber a send only drops its message: skip copying every record.
    if fanout.receiver_count() == 0 {
        return;
    }
    for r in records {
        // No subscriber is not an error: records are on disk either way.
        let _ = fanout.send(Arc::new(r.clone()));
    }
}

fn run<S: Store>(
    mut auditor: Auditor<S>,
    mut rx: mpsc::Receiver<Job>,
    fanout: broadcast::Sender<Arc<AuditRecord>>,
    max_batch: usize,
) {
    let mut held: Option<Job> = None;
    loop {
        let Some(job) = held.take().or_else(|| rx.blocking_recv()) else {
            return;
        };
        match job {
            Job::Ingest(first, mut settings, reply) => {
                let mut waiting = vec![(first.len(), reply)];
                let mut batch = first;
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(Job::Ingest(more, more_settings, reply)) => {
                            waiting.push((more.len(), reply));
                            batch.extend(more);
                            // A later position of the same source replaces an earlier one.
                            settings.retain(|(k, _)| !more_settings.iter().any(|(m, _)| m == k));
                            settings.extend(more_settings);
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let settings: Vec<(&str, &str)> = settings
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                match auditor.ingest(batch, &settings) {
                    Ok((outcomes, stored)) => {
                        let mut rest = outcomes.into_iter();
                        for (n, reply) in waiting {
                            let _ = reply.send(Ok(rest.by_ref().take(n).collect()));
                        }
                        publish(&fanout, &stored);
                    }
                    Err(e) => {
                        tracing::error!("append failed: {e}");
                        let msg = e.to_string();
                        for (_, reply) in waiting {
                            let _ = reply.send(Err(StoreError::Invalid(msg.clone()).into()));
                        }
                    }
                }
            }
            Job::Policy(actor, change, reply) => {
                let r = auditor.change_policy(&actor, &change);
                if let Ok((rec, _)) = &r {
                    publish(&fanout, std::slice::from_ref(rec));
                }
                let _ = reply.send(r);
            }
            Job::AuditAccess(actor, op, mailbox, params, reply) => {
                let r = auditor.record_audit_access(&actor, op, mailbox.as_deref(), params);
                if let Ok(rec) = &r {
                    publish(&fanout, std::slice::from_ref(rec));
                }
                let _ = reply.send(r);
            }
            Job::Checkpoint(reply) => {
                let _ = reply.send(auditor.checkpoint());
            }
            Job::Prune(now, reply) => {
                let _ = reply.send(auditor.prune(now));
            }
            Job::Stats(reply) => {
                let _ = reply.send(Ok(auditor.stats()));
            }
        }
    }
}
