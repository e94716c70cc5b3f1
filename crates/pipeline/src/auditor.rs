//! The synchronous core of the pipeline over one store.

use mailaudit_model::{
    AuditRecord, Client, ImportedObservation, LogonType, Observation, Operation, OperationResult,
    Parameter, Provenance, Timestamp,
};
use mailaudit_policy::{classify, Decision, Policy, PolicyChange, PolicyError, SkipReason};
use mailaudit_store::{sign_checkpoint, SignerKey, Store, StoreError, StoredCheckpoint};
use serde::Serialize;

pub const POLICY_SETTING: &str = "policy";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the stored policy is unreadable: {0}")]
    PolicyFormat(String),
    #[error("no signing key is loaded; run `mailaudit init`")]
    NoKey,
    #[error("the audit writer has stopped")]
    WriterGone,
}

/// What became of one observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum IngestOutcome {
    Stored {
        seq: u64,
    },
    /// Not recorded, by policy: `mailbox_disabled`, `bypassed` or `not_audited`.
    Skipped {
        reason: &'static str,
    },
}

/// What became of one imported record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ImportOutcome {
    Stored {
        seq: u64,
    },
    /// Not recorded, by policy (as `IngestOutcome::Skipped`).
    Skipped {
        reason: &'static str,
    },
    /// The store already holds a record with this source key.
    Duplicate,
}

/// The digest under which a source key is stored.
pub fn source_key_hash(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Who asked for an audit-system operation (a policy change, a search, an export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub client: Client,
    pub source: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub stored: u64,
    pub skipped_not_audited: u64,
    pub skipped_disabled: u64,
    pub skipped_bypass: u64,
}

impl Stats {
    /// Counts one skipped observation and names the reason as outcomes report it.
    fn count_skip(&mut self, reason: SkipReason) -> &'static str {
        match reason {
            SkipReason::MailboxDisabled => {
                self.skipped_disabled += 1;
                "mailbox_disabled"
            }
            SkipReason::Bypassed => {
                self.skipped_bypass += 1;
                "bypassed"
            }
            SkipReason::NotAudited => {
                self.skipped_not_audited += 1;
                "not_audited"
            }
        }
    }

    fn add(&mut self, stored: usize, skipped: &Stats) {
        self.stored += stored as u64;
        self.skipped_disabled += skipped.skipped_disabled;
        self.skipped_bypass += skipped.skipped_bypass;
        self.skipped_not_audited += skipped.skipped_not_audited;
    }
}

/// Per input, `None` (kept) or the skip reason; the kept records; their keys; the skips.
type Decided<K> = (Vec<Option<&'static str>>, Vec<AuditRecord>, Vec<K>, Stats);

pub struct Auditor<S: Store> {
    store: S,
    policy: Policy,
    policy_version: u64,
    key: Option<(SignerKey, String)>,
    stats: Stats,
}

/// A mailbox or actor name as records store it (trimmed, lower case): what to compare a
/// name with before looking it up among stored records or coverage.
pub fn normalise(name: &str) -> String {
    name.trim().to_lowercase()
}

impl<S: Store> Auditor<S> {
    pub fn new(store: S) -> Result<Self, PipelineError> {
        let mut a = Auditor {
            store,
            policy: Policy::default(),
            policy_version: 0,
            key: None,
            stats: Stats::default(),
        };
        a.refresh_policy()?;
        Ok(a)
    }

    /// Lets this auditor sign checkpoints under `origin`.
    pub fn with_key(mut self, key: SignerKey, origin: String) -> Self {
        self.key = Some((key, origin));
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Reloads the policy if any process changed it since it was last read.
    pub fn refresh_policy(&mut self) -> Result<&Policy, PipelineError> {
        if let Some((version, text)) = self.store.setting(POLICY_SETTING)? {
            if version != self.policy_version {
                self.policy = parse_policy(&text)?;
                self.policy_version = version;
            }
        }
        Ok(&self.policy)
    }

    /// Classifies each observation (keeping the logon type or external flag its source
    /// reported, when it did), builds its record and, with `apply_policy`, asks the policy.
    /// Per input: `None` when its record is kept (the kept records and their keys are
    /// returned in input order), `Some(reason)` when it is skipped.
    fn decide_batch<K>(
        &mut self,
        items: Vec<(Observation, Option<LogonType>, Option<bool>, K)>,
        apply_policy: bool,
    ) -> Result<Decided<K>, PipelineError> {
        self.refresh_policy()?;
        let now = Timestamp::now();
        let mut decided = Vec::with_capacity(items.len());
        let mut keep = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        let mut skipped = Stats::default();
        for (obs, logon_type, external, key) in items {
            let class = classify(&obs);
            let logon_type = logon_type.unwrap_or(class.logon_type);
            let external = external.unwrap_or(class.external);
            let record = build_record(obs, logon_type, external, now);
            let decision = if apply_policy {
                self.policy.decide(
                    &record.mailbox,
                    &record.actor,
                    record.operation,
                    record.logon_type,
                )
            } else {
                Decision::Record
            };
            match decision {
                Decision::Record => {
                    decided.push(None);
                    keys.push(key);
                    keep.push(record);
                }
                Decision::Skip(reason) => decided.push(Some(skipped.count_skip(reason))),
            }
        }
        Ok((decided, keep, keys, skipped))
    }

    /// Classifies and filters a batch, and appends what the policy keeps in one durable
    /// transaction, together with `settings` (a source's position). Outcomes are in input
    /// order.
    pub fn ingest(
        &mut self,
        observations: Vec<Observation>,
        settings: &[(&str, &str)],
    ) -> Result<(Vec<IngestOutcome>, Vec<AuditRecord>), PipelineError> {
        let items = observations
            .into_iter()
            .map(|o| (o, None, None, ()))
            .collect();
        let (decided, keep, _, skipped) = self.decide_batch(items, true)?;
        let stored = if keep.is_empty() && settings.is_empty() {
            Vec::new()
        } else {
            self.store.append(keep, settings)?
        };
        let mut seqs = stored.iter().map(|r| r.seq);
        let outcomes = decided
            .into_iter()
            .map(|d| match d {
                None => IngestOutcome::Stored {
                    seq: seqs.next().unwrap_or_default(),
                },
                Some(reason) => IngestOutcome::Skipped { reason },
            })
            .collect();
        self.stats.add(stored.len(), &skipped);
        Ok((outcomes, stored))
    }

    /// Ingests imported history: like `ingest`, but a record keeps the logon type (and
    /// external flag) its original system reported when it carried one, and is appended
    /// only if the store does not yet hold its source key (`Store::append_keyed`; the key
    /// is stored as its SHA-256). Outcomes are in input order.
    ///
    /// With `apply_policy` false every record is kept: the original system's own policy
    /// already chose what it audited, and an investigator importing that history expects all
    /// of it. With it true, today's policy filters the history as it would live events.
    pub fn ingest_imported(
        &mut self,
        imported: Vec<ImportedObservation>,
        settings: &[(&str, &str)],
        apply_policy: bool,
    ) -> Result<(Vec<ImportOutcome>, Vec<AuditRecord>), PipelineError> {
        let items = imported
            .into_iter()
            .map(|i| (i.observation, i.logon_type, i.external, i.source_key))
            .collect();
        let (decided, keep, keys, skipped) = self.decide_batch(items, apply_policy)?;
        let keys: Vec<[u8; 32]> = keys.iter().map(|k| source_key_hash(k)).collect();
        let appended = if keep.is_empty() && settings.is_empty() {
            Vec::new()
        } else {
            self.store.append_keyed(keep, &keys, settings)?
        };
        let mut results = appended.into_iter();
        let mut stored = Vec::new();
        let outcomes = decided
            .into_iter()
            .map(|d| match d {
                None => match results.next().flatten() {
                    Some(r) => {
                        let seq = r.seq;
                        stored.push(r);
                        ImportOutcome::Stored { seq }
                    }
                    None => ImportOutcome::Duplicate,
                },
                Some(reason) => ImportOutcome::Skipped { reason },
            })
            .collect();
        self.stats.add(stored.len(), &skipped);
        Ok((outcomes, stored))
    }

    /// Applies a policy change and records it (`AuditPolicyChange` or `AuditBypassChange`,
    /// with before and after) in the same transaction.
    pub fn change_policy(
        &mut self,
        actor: &Actor,
        change: &PolicyChange,
    ) -> Result<(AuditRecord, Policy), PipelineError> {
        self.refresh_policy()?;
        let next = self.policy.apply(change)?;
        let (operation, before, after) = if change.is_bypass() {
            (
                Operation::AuditBypassChange,
                json(&self.policy.bypass),
                json(&next.bypass),
            )
        } else {
            (
                Operation::AuditPolicyChange,
                json(&self.policy.effective(change.mailbox())),
                json(&next.effective(change.mailbox())),
            )
        };
        let target = match change {
            PolicyChange::BypassAdd { actor } | PolicyChange::BypassRemove { actor } => {
                normalise(actor)
            }
            _ => change.mailbox().map_or_else(|| "*".to_string(), normalise),
        };
        let obs = system_observation(
            actor,
            operation,
            &target,
            vec![
                param("change", json(change)),
                param("before", before),
                param("after", after),
            ],
        );
        let record = build_record(
            obs,
            mailaudit_model::LogonType::Admin,
            false,
            Timestamp::now(),
        );
        let text = json(&next);
        let stored = self
            .store
            .append(vec![record], &[(POLICY_SETTING, &text)])?;
        self.refresh_policy()?;
        let record = stored
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Invalid("append returned no record".into()))?;
        Ok((record, next))
    }

    /// Records a search or export of the audit log itself; always recorded, whatever the
    /// policy.
    pub fn record_audit_access(
        &mut self,
        actor: &Actor,
        operation: Operation,
        mailbox: Option<&str>,
        parameters: Vec<Parameter>,
    ) -> Result<AuditRecord, PipelineError> {
        let obs = system_observation(actor, operation, mailbox.unwrap_or("*"), parameters);
        let record = build_record(
            obs,
            mailaudit_model::LogonType::Admin,
            false,
            Timestamp::now(),
        );
        let stored = self.store.append(vec![record], &[])?;
        stored
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Invalid("append returned no record".into()).into())
    }

    pub fn checkpoint(&mut self) -> Result<StoredCheckpoint, PipelineError> {
        let (key, origin) = self.key.as_ref().ok_or(PipelineError::NoKey)?;
        Ok(sign_checkpoint(&mut self.store, key, origin)?)
    }

    /// Applies retention as the current policy sets it.
    pub fn prune(&mut self, now: Timestamp) -> Result<u64, PipelineError> {
        self.refresh_policy()?;
        let policy = self.policy.clone();
        let cutoff = move |mailbox: &str| {
            let days = policy
                .effective((mailbox != "*").then_some(mailbox))
                .retention_days;
            now.plus_secs(-(i64::from(days) * 86_400))
        };
        Ok(self.store.prune(&cutoff)?)
    }
}

fn parse_policy(text: &str) -> Result<Policy, PipelineError> {
    serde_json::from_str(text).map_err(|e| PipelineError::PolicyFormat(e.to_string()))
}

/// The policy as stored, or the defaults when none was ever changed.
pub fn load_policy(store: &dyn Store) -> Result<Policy, PipelineError> {
    match store.setting(POLICY_SETTING)? {
        Some((_, text)) => parse_policy(&text),
        None => Ok(Policy::default()),
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("\"unserialisable: {e}\""))
}

fn param(name: &str, value: String) -> Parameter {
    Parameter {
        name: name.into(),
        value,
    }
}

fn system_observation(
    actor: &Actor,
    operation: Operation,
    mailbox: &str,
    parameters: Vec<Parameter>,
) -> Observation {
    Observation {
        time: Timestamp::now(),
        operation,
        result: OperationResult::Succeeded,
        reason: None,
        mailbox: mailbox.to_string(),
        actor: actor.name.clone(),
        acting_as: None,
        administrative: true,
        folder: None,
        destination_folder: None,
        items: vec![],
        client: actor.client.clone(),
        provenance: Provenance {
            source: actor.source.clone(),
            host: None,
            reference: None,
        },
        parameters,
    }
}

/// Builds the record the log keeps. Mailbox and actor names are lower-cased so that a
/// search for `Alice@Example.com` finds every record of that mailbox.
pub(crate) fn build_record(
    obs: Observation,
    logon_type: mailaudit_model::LogonType,
    external: bool,
    now: Timestamp,
) -> AuditRecord {
    AuditRecord {
        seq: 0,
        time: obs.time,
        recorded_at: now,
        operation: obs.operation,
        result: obs.result,
        reason: obs.reason,
        logon_type,
        external,
        mailbox: normalise(&obs.mailbox),
        actor: normalise(&obs.actor),
        acting_as: obs.acting_as.as_deref().map(normalise),
        folder: obs.folder,
        destination_folder: obs.destination_folder,
        items: obs.items,
        client: obs.client,
        provenance: obs.provenance,
        parameters: obs.parameters,
    }
}
