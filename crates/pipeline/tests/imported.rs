//! Imported history through the auditor: the original logon type is kept, a source key is
//! stored once, and policy still applies.

use mailaudit_model::{
    ImportedObservation, LogonType, Observation, Operation, OperationResult, Provenance, Timestamp,
};
use mailaudit_pipeline::{Auditor, ImportOutcome};
use mailaudit_store::{SqliteStore, Store};

fn imported(
    key: &str,
    actor: &str,
    op: Operation,
    logon: Option<LogonType>,
) -> ImportedObservation {
    ImportedObservation {
        observation: Observation {
            time: Timestamp::from_secs(1_700_000_000),
            operation: op,
            result: OperationResult::Succeeded,
            reason: None,
            mailbox: "Alice@Example.com".into(),
            actor: actor.into(),
            acting_as: None,
            administrative: false,
            folder: Some("Inbox".into()),
            destination_folder: None,
            items: vec![],
            client: Default::default(),
            provenance: Provenance {
                source: "import:test".into(),
                host: None,
                reference: Some(format!("test.csv:{key}")),
            },
            parameters: vec![],
        },
        source_key: key.into(),
        logon_type: logon,
        external: None,
    }
}

#[test]
fn keeps_reported_logon_type_and_adds_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut auditor = Auditor::new(SqliteStore::open(dir.path()).unwrap()).unwrap();
    let batch = || {
        vec![
            // Exchange said Admin although actor and mailbox look like the owner's.
            imported(
                "k1",
                "alice@example.com",
                Operation::HardDelete,
                Some(LogonType::Admin),
            ),
            // No logon type reported: classified as a live source would be.
            imported("k2", "bob@example.com", Operation::MessageBind, None),
            // The default policy does not audit an owner's FolderBind: skipped, not stored.
            imported(
                "k3",
                "alice@example.com",
                Operation::FolderBind,
                Some(LogonType::Owner),
            ),
            // The same key twice in one batch.
            imported(
                "k1",
                "alice@example.com",
                Operation::HardDelete,
                Some(LogonType::Admin),
            ),
        ]
    };
    let (outcomes, stored) = auditor.ingest_imported(batch(), &[], true).unwrap();
    assert_eq!(
        outcomes,
        vec![
            ImportOutcome::Stored { seq: 0 },
            ImportOutcome::Stored { seq: 1 },
            ImportOutcome::Skipped {
                reason: "not_audited"
            },
            ImportOutcome::Duplicate,
        ]
    );
    assert_eq!(stored[0].logon_type, LogonType::Admin);
    assert_eq!(stored[0].mailbox, "alice@example.com");
    assert_eq!(stored[1].logon_type, LogonType::Delegate);
    let (again, stored) = auditor.ingest_imported(batch(), &[], true).unwrap();
    assert!(stored.is_empty());
    assert_eq!(
        again,
        vec![
            ImportOutcome::Duplicate,
            ImportOutcome::Duplicate,
            ImportOutcome::Skipped {
                reason: "not_audited"
            },
            ImportOutcome::Duplicate,
        ]
    );
    assert_eq!(auditor.store().size().unwrap(), 2);
    // Without the policy filter the owner's folder open the source audited is kept too,
    // and what is already stored still is not stored twice.
    let (all, stored) = auditor.ingest_imported(batch(), &[], false).unwrap();
    assert_eq!(
        all,
        vec![
            ImportOutcome::Duplicate,
            ImportOutcome::Duplicate,
            ImportOutcome::Stored { seq: 2 },
            ImportOutcome::Duplicate,
        ]
    );
    assert_eq!(stored[0].operation, Operation::FolderBind);
    assert_eq!(stored[0].logon_type, LogonType::Owner);
    assert_eq!(auditor.store().size().unwrap(), 3);
}
