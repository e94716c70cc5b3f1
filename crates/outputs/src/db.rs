//! `outputs.sqlite` in the data directory: the alert outbox and every output's position.
//!
//! An alert is inserted once under its id (a replay after a restart regenerates the same ids
//! and inserts nothing), with one outbox row per output that takes it, in the same
//! transaction as the rule engine's position and state. Each output delivers its rows in
//! insertion order and marks each delivered, so a pending alert survives a restart and a
//! receiver sees every alert once, in order.

use crate::OutputError;
use mailaudit_alerts::Alert;
use mailaudit_model::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

pub const FILE: &str = "outputs.sqlite";

// WAL with synchronous=NORMAL: a commit survives the process being killed (the case a
// restart must handle); only a power loss can undo the last commits, and then the outbox
// and the rule position roll back together, so alerts are regenerated with the same ids and
// at worst re-sent with the same Idempotency-Key, never lost.

pub struct OutputsDb {
    conn: Connection,
}

/// An alert waiting for one output.
#[derive(Debug, Clone)]
pub struct Pending {
    pub n: i64,
    pub alert: Alert,
    pub body: String,
    pub attempts: u32,
}

/// One output's queue, for `GET /api/v1/alerts/outbox`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStatus {
    pub output: String,
    pub pending: u64,
    pub delivered: u64,
    pub head_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn db_err(e: rusqlite::Error) -> OutputError {
    OutputError::Db(e.to_string())
}

impl OutputsDb {
    pub fn open(data_dir: &Path) -> Result<Self, OutputError> {
        let path = data_dir.join(FILE);
        let conn = Connection::open(&path)
            .map_err(|e| OutputError::Db(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS alerts (
                 n INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 body TEXT NOT NULL,
                 created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS outbox (
                 output TEXT NOT NULL,
                 n INTEGER NOT NULL REFERENCES alerts(n),
                 attempts INTEGER NOT NULL DEFAULT 0,
                 last_error TEXT,
                 delivered_at INTEGER,
                 PRIMARY KEY (output, n));
             CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (output, delivered_at, n);",
        )
        .map_err(db_err)?;
        Ok(OutputsDb { conn })
    }

    pub fn get(&self, key: &str) -> Result<Option<String>, OutputError> {
        self.conn
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)
    }

    pub fn put(&self, key: &str, value: &str) -> Result<(), OutputError> {
        self.conn
            .execute(
                "INSERT INTO state (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<(), OutputError> {
        self.conn
            .execute("DELETE FROM state WHERE key = ?1", [key])
            .map_err(db_err)?;
        Ok(())
    }

    /// Inserts new alerts with their outbox rows (`outputs_for(alert)` names the outputs that
    /// take it) and the state entries, in one transaction. Returns how many alerts were new.
    pub fn enqueue(
        &mut self,
        alerts: &[Alert],
        outputs_for: &dyn Fn(&Alert) -> Vec<String>,
        state: &[(&str, &str)],
    ) -> Result<usize, OutputError> {
        let tx = self.conn.transaction().map_err(db_err)?;
        let mut new = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alerts (id, body, created) VALUES (?1, ?2, ?3)",
                )
                .map_err(db_err)?;
            let mut outbox = tx
                .prepare_cached("INSERT OR IGNORE INTO outbox (output, n) VALUES (?1, ?2)")
                .map_err(db_err)?;
            for a in alerts {
                let body = serde_json::to_string(a).map_err(|e| OutputError::Db(e.to_string()))?;
                if insert
                    .execute(params![a.id, body, Timestamp::now().micros()])
                    .map_err(db_err)?
                    == 0
                {
                    continue;
                }
                new += 1;
                let n = tx.last_insert_rowid();
                for o in outputs_for(a) {
                    outbox.execute(params![o, n]).map_err(db_err)?;
                }
            }
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO state (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )
                .map_err(db_err)?;
            for (k, v) in state {
                put.execute(params![k, v]).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(new)
    }

    /// The oldest alert not yet delivered to `output`.
    pub fn head(&self, output: &str) -> Result<Option<Pending>, OutputError> {
        let row = self
            .conn
            .query_row(
                "SELECT o.n, a.body, o.attempts FROM outbox o JOIN alerts a ON a.n = o.n
                 WHERE o.output = ?1 AND o.delivered_at IS NULL ORDER BY o.n LIMIT 1",
                [output],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(db_err)?;
        let Some((n, body, attempts)) = row else {
            return Ok(None);
        };
        let alert = serde_json::from_str(&body)
            .map_err(|e| OutputError::Db(format!("stored alert {n} is unreadable: {e}")))?;
        Ok(Some(Pending {
            n,
            alert,
            body,
            attempts,
        }))
    }

    pub fn delivered(&self, output: &str, n: i64) -> Result<(), OutputError> {
        self.conn
            .execute(
                "UPDATE outbox SET delivered_at = ?3, last_error = NULL WHERE output = ?1 AND n = ?2",
                params![output, n, Timestamp::now().micros()],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn failed(&self, output: &str, n: i64, error: &str) -> Result<u32, OutputError> {
        self.conn
            .query_row(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?3
                 WHERE output = ?1 AND n = ?2 RETURNING attempts",
                params![output, n, error],
                |r| r.get(0),
            )
            .map_err(db_err)
    }

    pub fn status(&self) -> Result<Vec<OutboxStatus>, OutputError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT output,
                        SUM(delivered_at IS NULL), SUM(delivered_at IS NOT NULL),
                        (SELECT attempts FROM outbox h WHERE h.output = o.output AND h.delivered_at IS NULL ORDER BY n LIMIT 1),
                        (SELECT last_error FROM outbox h WHERE h.output = o.output AND h.delivered_at IS NULL ORDER BY n LIMIT 1)
                 FROM outbox o GROUP BY output ORDER BY output",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(OutboxStatus {
                    output: r.get(0)?,
                    pending: r.get::<_, i64>(1)? as u64,
                    delivered: r.get::<_, i64>(2)? as u64,
                    head_attempts: r.get::<_, Option<u32>>(3)?.unwrap_or(0),
                    last_error: r.get(4)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }
}
