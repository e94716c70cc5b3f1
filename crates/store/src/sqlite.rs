//! The embedded backend: one SQLite database in the data directory (WAL, synchronous=FULL,
//! so a committed append survives a crash or power loss).
//!
//! Strings that repeat (mailboxes, actors, folders, addresses, clients, sessions, and the
//! enum names) are stored once in `strings` and referenced by id. Each record row keeps the
//! first 8 bytes of its leaf hash so that `verify` can name an edited index; the tree itself
//! lives in `meta.frontier` (the compact range) and `tiles` (every 256-leaf subtree), both
//! written in the same transaction as the rows. The Merkle state is re-read inside every
//! write transaction, so several processes (a running server and a CLI) can append safely.

use crate::blob;
use crate::query::{decode_cursor, encode_cursor, items_contain};
use crate::{
    Leaf, PageRequest, Query, SearchPage, Store, StoreError, StoredCheckpoint, TokenInfo,
    TILE_LEVEL,
};
use mailaudit_merkle::{leaf_hash, Frontier, Hash};
use mailaudit_model::{
    encode_canonical, AuditRecord, Client, LogonType, Operation, OperationResult, Provenance,
    Timestamp,
};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SCHEMA_VERSION: i64 = 1;
pub const DB_FILE: &str = "mailaudit.db";

/// Kinds of interned strings. Mailboxes and actors share one kind: they are the same
/// addresses, and a search by name resolves to one id for both columns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
enum Kind {
    Identity = 1,
    Folder = 2,
    Ip = 3,
    Protocol = 4,
    Client = 5,
    Session = 6,
    Source = 7,
    Name = 8,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS strings(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, value TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS strings_kind_value ON strings(kind, value);
CREATE TABLE IF NOT EXISTS records(
  seq INTEGER PRIMARY KEY,
  time INTEGER NOT NULL,
  recorded_at INTEGER NOT NULL,
  operation INTEGER NOT NULL,
  result INTEGER NOT NULL,
  logon INTEGER NOT NULL,
  external INTEGER NOT NULL,
  mailbox INTEGER NOT NULL,
  actor INTEGER NOT NULL,
  acting_as INTEGER,
  folder INTEGER,
  dest_folder INTEGER,
  ip INTEGER,
  port INTEGER,
  protocol INTEGER,
  client_name INTEGER,
  session INTEGER,
  tls INTEGER,
  source INTEGER NOT NULL,
  host INTEGER,
  reference TEXT,
  reason TEXT,
  items BLOB,
  parameters BLOB,
  leaf INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_mailbox_time ON records(mailbox, time);
CREATE INDEX IF NOT EXISTS records_actor_time ON records(actor, time);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
CREATE TABLE IF NOT EXISTS pruned(seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tiles(idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(id INTEGER PRIMARY KEY, size INTEGER NOT NULL, created INTEGER NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, version INTEGER NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(hash BLOB PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, created INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
";

const RECORD_COLUMNS: &str = "seq, time, recorded_at, operation, result, logon, external, mailbox, actor, acting_as, folder, dest_folder, ip, port, protocol, client_name, session, tls, source, host, reference, reason, items, parameters, leaf";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    ids: HashMap<(Kind, String), i64>,
    names: RefCell<HashMap<i64, String>>,
}

fn leaf_prefix(h: &Hash) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;",
        )
        .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let found: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match found {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Schema {
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
        }
        register_functions(&conn)?;
        Ok(SqliteStore {
            conn,
            path,
            ids: HashMap::new(),
            names: RefCell::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Direct access for tests that tamper with the database as an attacker would.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn name(&self, id: i64) -> Result<String, StoreError> {
        if let Some(n) = self.names.borrow().get(&id) {
            return Ok(n.clone());
        }
        let n: String = self
            .conn
            .prepare_cached("SELECT value FROM strings WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::Invalid(format!("string {id} is referenced but missing")))?;
        self.names.borrow_mut().insert(id, n.clone());
        Ok(n)
    }

    fn opt_name(&self, id: Option<i64>) -> Result<Option<String>, StoreError> {
        id.map(|i| self.name(i)).transpose()
    }

    /// Ids of stored strings equal to any of `values` (case-insensitively where `nocase`).
    fn lookup_ids(
        &self,
        kind: Kind,
        values: &[String],
        nocase: bool,
    ) -> Result<Vec<i64>, StoreError> {
        let sql = if nocase {
            "SELECT id FROM strings WHERE kind = ?1 AND value = ?2 COLLATE NOCASE"
        } else {
            "SELECT id FROM strings WHERE kind = ?1 AND value = ?2"
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut out = Vec::new();
        for v in values {
            let rows = stmt.query_map(params![kind as u8, v.trim()], |r| r.get::<_, i64>(0))?;
            for id in rows {
                out.push(id?);
            }
        }
        Ok(out)
    }

    fn read_record(&self, row: &rusqlite::Row<'_>) -> Result<(AuditRecord, [u8; 8]), StoreError> {
        let seq: i64 = row.get(0)?;
        let seq = seq as u64;
        let corrupt = |what: String| StoreError::Corrupt { seq, what };
        let enum_name = |col: usize| -> Result<String, StoreError> { self.name(row.get(col)?) };
        let operation: Operation = enum_name(3)?.parse().map_err(|e| corrupt(format!("{e}")))?;
        let result: OperationResult = enum_name(4)?.parse().map_err(|e| corrupt(format!("{e}")))?;
        let logon_type: LogonType = enum_name(5)?.parse().map_err(|e| corrupt(format!("{e}")))?;
        let ip = self
            .opt_name(row.get(12)?)?
            .map(|s| s.parse().map_err(|_| corrupt(format!("client ip `{s}`"))))
            .transpose()?;
        let port: Option<i64> = row.get(13)?;
        let port = port
            .map(|p| u16::try_from(p).map_err(|_| corrupt(format!("port {p}"))))
            .transpose()?;
        let items: Option<Vec<u8>> = row.get(22)?;
        let parameters: Option<Vec<u8>> = row.get(23)?;
        let leaf: i64 = row.get(24)?;
        let record = AuditRecord {
            seq,
            time: Timestamp(row.get(1)?),
            recorded_at: Timestamp(row.get(2)?),
            operation,
            result,
            reason: row.get(21)?,
            logon_type,
            external: row.get(6)?,
            mailbox: self.name(row.get(7)?)?,
            actor: self.name(row.get(8)?)?,
            acting_as: self.opt_name(row.get(9)?)?,
            folder: self.opt_name(row.get(10)?)?,
            destination_folder: self.opt_name(row.get(11)?)?,
            items: blob::decode_items(items.as_deref())
                .map_err(|e| corrupt(format!("items: {e}")))?,
            client: Client {
                ip,
                port,
                protocol: self.opt_name(row.get(14)?)?,
                name: self.opt_name(row.get(15)?)?,
                session: self.opt_name(row.get(16)?)?,
                tls: row.get(17)?,
            },
            provenance: Provenance {
                source: self.name(row.get(18)?)?,
                host: self.opt_name(row.get(19)?)?,
                reference: row.get(20)?,
            },
            parameters: blob::decode_parameters(parameters.as_deref())
                .map_err(|e| corrupt(format!("parameters: {e}")))?,
        };
        Ok((record, leaf.to_be_bytes()))
    }
}

fn register_functions(conn: &Connection) -> Result<(), StoreError> {
    conn.create_scalar_function(
        "ma_items_contain",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let bytes = ctx.get_raw(0).as_blob_or_null().ok().flatten();
            let needle: String = ctx.get(1)?;
            // A record whose items no longer decode matches nothing; `verify` reports it.
            let Ok(items) = blob::decode_items(bytes) else {
                return Ok(false);
            };
            let probe = AuditRecord {
                items,
                ..placeholder_record()
            };
            Ok(items_contain(&probe, &needle))
        },
    )?;
    Ok(())
}

fn placeholder_record() -> AuditRecord {
    AuditRecord {
        seq: 0,
        time: Timestamp(0),
        recorded_at: Timestamp(0),
        operation: Operation::MailboxLogin,
        result: OperationResult::Succeeded,
        reason: None,
        logon_type: LogonType::Owner,
        external: false,
        mailbox: String::new(),
        actor: String::new(),
        acting_as: None,
        folder: None,
        destination_folder: None,
        items: vec![],
        client: Client::default(),
        provenance: Provenance::default(),
        parameters: vec![],
    }
}

/// Interns strings inside a write transaction. New ids only reach the shared cache after
/// the transaction commits, so a rolled-back append cannot leave dangling ids behind.
struct Interner<'a> {
    cache: &'a HashMap<(Kind, String), i64>,
    fresh: HashMap<(Kind, String), i64>,
}

impl Interner<'_> {
    fn id(&mut self, tx: &Connection, kind: Kind, value: &str) -> Result<i64, StoreError> {
        let key = (kind, value.to_string());
        if let Some(id) = self.cache.get(&key).or_else(|| self.fresh.get(&key)) {
            return Ok(*id);
        }
        let existing: Option<i64> = tx
            .prepare_cached("SELECT id FROM strings WHERE kind = ?1 AND value = ?2")?
            .query_row(params![kind as u8, value], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO strings(kind, value) VALUES(?1, ?2)")?
                    .execute(params![kind as u8, value])?;
                tx.last_insert_rowid()
            }
        };
        self.fresh.insert(key, id);
        Ok(id)
    }

    fn opt(
        &mut self,
        tx: &Connection,
        kind: Kind,
        v: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        v.map(|v| self.id(tx, kind, v)).transpose()
    }
}

fn read_frontier(conn: &Connection) -> Result<Frontier, StoreError> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'frontier'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    match bytes {
        None => Ok(Frontier::new()),
        Some(b) => Frontier::from_bytes(&b).map_err(|e| StoreError::Frontier(e.to_string())),
    }
}

impl Store for SqliteStore {
    fn append(
        &mut self,
        records: Vec<AuditRecord>,
        setting: Option<(&str, &str)>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut frontier = read_frontier(&tx)?;
        let mut interner = Interner {
            cache: &self.ids,
            fresh: HashMap::new(),
        };
        let mut stored = Vec::with_capacity(records.len());
        let mut tiles: Vec<(u64, Hash)> = Vec::new();
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO records({RECORD_COLUMNS}) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)"
            ))?;
            for mut r in records {
                r.seq = frontier.size();
                let leaf = leaf_hash(&encode_canonical(&r));
                let ip = r.client.ip.map(|ip| ip.to_string());
                let row: [Value; 25] = [
                    Value::Integer(r.seq as i64),
                    Value::Integer(r.time.micros()),
                    Value::Integer(r.recorded_at.micros()),
                    Value::Integer(interner.id(&tx, Kind::Name, r.operation.as_str())?),
                    Value::Integer(interner.id(&tx, Kind::Name, r.result.as_str())?),
                    Value::Integer(interner.id(&tx, Kind::Name, r.logon_type.as_str())?),
                    Value::Integer(i64::from(r.external)),
                    Value::Integer(interner.id(&tx, Kind::Identity, &r.mailbox)?),
                    Value::Integer(interner.id(&tx, Kind::Identity, &r.actor)?),
                    interner
                        .opt(&tx, Kind::Identity, r.acting_as.as_deref())?
                        .into(),
                    interner.opt(&tx, Kind::Folder, r.folder.as_deref())?.into(),
                    interner
                        .opt(&tx, Kind::Folder, r.destination_folder.as_deref())?
                        .into(),
                    interner.opt(&tx, Kind::Ip, ip.as_deref())?.into(),
                    r.client.port.map(i64::from).into(),
                    interner
                        .opt(&tx, Kind::Protocol, r.client.protocol.as_deref())?
                        .into(),
                    interner
                        .opt(&tx, Kind::Client, r.client.name.as_deref())?
                        .into(),
                    interner
                        .opt(&tx, Kind::Session, r.client.session.as_deref())?
                        .into(),
                    r.client.tls.map(i64::from).into(),
                    Value::Integer(interner.id(&tx, Kind::Source, &r.provenance.source)?),
                    interner
                        .opt(&tx, Kind::Source, r.provenance.host.as_deref())?
                        .into(),
                    r.provenance.reference.clone().into(),
                    r.reason.clone().into(),
                    blob::encode_items(&r.items).into(),
                    blob::encode_parameters(&r.parameters).into(),
                    Value::Integer(leaf_prefix(&leaf)),
                ];
                insert.execute(params_from_iter(row))?;
                frontier.push(leaf, |level, index, hash| {
                    if level == TILE_LEVEL {
                        tiles.push((index, *hash));
                    }
                });
                stored.push(r);
            }
            let mut tile = tx.prepare_cached("INSERT INTO tiles(idx, hash) VALUES(?1, ?2)")?;
            for (idx, hash) in &tiles {
                tile.execute(params![*idx as i64, &hash[..]])?;
            }
        }
        tx.execute(
            "INSERT INTO meta(key, value) VALUES('frontier', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [frontier.to_bytes()],
        )?;
        if let Some((key, value)) = setting {
            tx.execute(
                "INSERT INTO settings(key, version, value) VALUES(?1, 1, ?2) ON CONFLICT(key) DO UPDATE SET version = version + 1, value = excluded.value",
                params![key, value],
            )?;
        }
        let fresh = interner.fresh;
        tx.commit()?;
        for ((kind, value), id) in fresh {
            self.names.borrow_mut().insert(id, value.clone());
            self.ids.insert((kind, value), id);
        }
        Ok(stored)
    }

    fn get(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE seq = ?1"
        ))?;
        let mut rows = stmt.query([seq as i64])?;
        match rows.next()? {
            Some(row) => Ok(Some(self.read_record(row)?.0)),
            None => Ok(None),
        }
    }

    fn search(&self, q: &Query, page: &PageRequest) -> Result<SearchPage, StoreError> {
        let empty = || SearchPage {
            total: page.with_total.then_some(0),
            records: vec![],
            next_cursor: None,
        };
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        let mut push = |clauses: &mut Vec<String>, sql: String, vals: Vec<Value>| {
            clauses.push(sql);
            args.extend(vals);
        };
        if let Some(f) = q.from {
            push(&mut clauses, "time >= ?".into(), vec![f.micros().into()]);
        }
        if let Some(t) = q.to {
            push(&mut clauses, "time < ?".into(), vec![t.micros().into()]);
        }
        let in_list = |col: &str, ids: &[i64]| {
            let marks = vec!["?"; ids.len()].join(",");
            (
                format!("{col} IN ({marks})"),
                ids.iter().map(|i| Value::Integer(*i)).collect::<Vec<_>>(),
            )
        };
        let names = |v: Vec<&'static str>| v.into_iter().map(String::from).collect::<Vec<_>>();
        let filters: Vec<(&str, Kind, Vec<String>, bool)> = vec![
            ("mailbox", Kind::Identity, q.mailboxes.clone(), true),
            ("actor", Kind::Identity, q.actors.clone(), true),
            (
                "operation",
                Kind::Name,
                names(q.operations.iter().map(|o| o.as_str()).collect()),
                false,
            ),
            (
                "logon",
                Kind::Name,
                names(q.logon_types.iter().map(|o| o.as_str()).collect()),
                false,
            ),
            (
                "result",
                Kind::Name,
                names(q.results.iter().map(|o| o.as_str()).collect()),
                false,
            ),
            ("protocol", Kind::Protocol, q.protocols.clone(), true),
        ];
        for (col, kind, values, nocase) in filters {
            if values.is_empty() {
                continue;
            }
            let ids = self.lookup_ids(kind, &values, nocase)?;
            if ids.is_empty() {
                return Ok(empty());
            }
            let (sql, vals) = in_list(col, &ids);
            push(&mut clauses, sql, vals);
        }
        if !q.folders.is_empty() {
            let ids = self.lookup_ids(Kind::Folder, &q.folders, false)?;
            if ids.is_empty() {
                return Ok(empty());
            }
            let (a, va) = in_list("folder", &ids);
            let (b, vb) = in_list("dest_folder", &ids);
            push(&mut clauses, format!("({a} OR {b})"), [va, vb].concat());
        }
        if !q.ips.is_empty() {
            let mut ids = Vec::new();
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, value FROM strings WHERE kind = ?1")?;
            let rows = stmt.query_map([Kind::Ip as u8], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (id, text) = row?;
                if let Ok(ip) = text.parse() {
                    if q.ips.iter().any(|f| f.contains(&ip)) {
                        ids.push(id);
                    }
                }
            }
            if ids.is_empty() {
                return Ok(empty());
            }
            let (sql, vals) = in_list("ip", &ids);
            push(&mut clauses, sql, vals);
        }
        if let Some(n) = q.non_owner {
            let id_of = |name: &str| -> Result<i64, StoreError> {
                Ok(self
                    .lookup_ids(Kind::Name, &[name.to_string()], false)?
                    .first()
                    .copied()
                    .unwrap_or(-1))
            };
            let owner = id_of(LogonType::Owner.as_str())?;
            let admin = id_of(LogonType::Admin.as_str())?;
            let (sql, vals) = match n {
                crate::NonOwner::All => ("(logon != ? OR external = 1)", vec![owner]),
                crate::NonOwner::External => ("external = 1", vec![]),
                crate::NonOwner::AdminsAndDelegates => {
                    ("(logon != ? AND external = 0)", vec![owner])
                }
                crate::NonOwner::Admins => ("logon = ?", vec![admin]),
            };
            push(
                &mut clauses,
                sql.into(),
                vals.into_iter().map(Value::Integer).collect(),
            );
        }
        if let Some(text) = &q.text {
            push(
                &mut clauses,
                "ma_items_contain(items, ?)".into(),
                vec![Value::Text(text.clone())],
            );
        }
        let filter_sql = if clauses.is_empty() {
            "1".to_string()
        } else {
            clauses.join(" AND ")
        };
        let total = if page.with_total {
            let n: i64 = self.conn.query_row(
                &format!("SELECT count(*) FROM records WHERE {filter_sql}"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            Some(n as u64)
        } else {
            None
        };
        let mut page_sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE {filter_sql}");
        let mut page_args = args.clone();
        if let Some(c) = &page.cursor {
            let (t, s) = decode_cursor(c)?;
            page_sql.push_str(" AND (time < ? OR (time = ? AND seq < ?))");
            page_args.extend([
                Value::Integer(t),
                Value::Integer(t),
                Value::Integer(s as i64),
            ]);
        }
        let limit = page.limit.max(1);
        page_sql.push_str(" ORDER BY time DESC, seq DESC LIMIT ?");
        page_args.push(Value::Integer(limit as i64 + 1));
        let mut stmt = self.conn.prepare(&page_sql)?;
        let mut rows = stmt.query(params_from_iter(page_args.iter()))?;
        let mut records = Vec::new();
        while let Some(row) = rows.next()? {
            records.push(self.read_record(row)?.0);
        }
        let next_cursor = if records.len() > limit {
            records.truncate(limit);
            records.last().map(encode_cursor)
        } else {
            None
        };
        Ok(SearchPage {
            total,
            records,
            next_cursor,
        })
    }

    fn size(&self) -> Result<u64, StoreError> {
        Ok(read_frontier(&self.conn)?.size())
    }

    fn scan(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(u64, Leaf) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut rec_stmt = self.conn.prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE seq >= ?1 AND seq < ?2 ORDER BY seq"
        ))?;
        let mut pruned_stmt = self
            .conn
            .prepare("SELECT seq, leaf FROM pruned WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")?;
        let bounds = params![from as i64, to.min(i64::MAX as u64) as i64];
        let mut recs = rec_stmt.query(bounds)?;
        let mut pruned = pruned_stmt.query(bounds)?;
        let mut next_rec = recs.next()?;
        let mut next_pruned = pruned.next()?;
        let mut expect = from;
        loop {
            let rec_seq: Option<i64> = next_rec.map(|r| r.get(0)).transpose()?;
            let pr_seq: Option<i64> = next_pruned.map(|r| r.get(0)).transpose()?;
            let (seq, leaf) = match (rec_seq, pr_seq) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {
                    return Err(StoreError::Corrupt {
                        seq: a as u64,
                        what: "stored both as a record and as a pruned leaf".into(),
                    })
                }
                (Some(a), b) if b.is_none_or(|b| a < b) => {
                    let row = next_rec.ok_or(StoreError::Missing(a as u64))?;
                    let (record, prefix) = self.read_record(row)?;
                    next_rec = recs.next()?;
                    (
                        a as u64,
                        Leaf::Record {
                            record: Box::new(record),
                            stored_prefix: prefix,
                        },
                    )
                }
                (_, Some(b)) => {
                    let row = next_pruned.ok_or(StoreError::Missing(b as u64))?;
                    let bytes: Vec<u8> = row.get(1)?;
                    let hash: Hash =
                        bytes
                            .as_slice()
                            .try_into()
                            .map_err(|_| StoreError::Corrupt {
                                seq: b as u64,
                                what: format!("pruned leaf hash has {} bytes, not 32", bytes.len()),
                            })?;
                    next_pruned = pruned.next()?;
                    (b as u64, Leaf::Pruned(hash))
                }
                (Some(a), None) => return Err(StoreError::Missing(a as u64)),
            };
            if seq != expect {
                return Err(StoreError::Missing(expect));
            }
            f(seq, leaf)?;
            expect += 1;
        }
        if expect < to && to != u64::MAX {
            return Err(StoreError::Missing(expect));
        }
        Ok(())
    }

    fn tile(&self, index: u64) -> Result<Option<Hash>, StoreError> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM tiles WHERE idx = ?1")?
            .query_row([index as i64], |r| r.get(0))
            .optional()?;
        bytes
            .map(|b| {
                b.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Invalid(format!("tile {index} hash is not 32 bytes")))
            })
            .transpose()
    }

    fn frontier(&self) -> Result<Frontier, StoreError> {
        read_frontier(&self.conn)
    }

    fn add_checkpoint(
        &mut self,
        sign: &mut dyn FnMut(u64, Hash) -> Result<String, StoreError>,
    ) -> Result<StoredCheckpoint, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let frontier = read_frontier(&tx)?;
        let note = sign(frontier.size(), frontier.root())?;
        tx.execute(
            "INSERT INTO checkpoints(size, created, note) VALUES(?1, ?2, ?3)",
            params![frontier.size() as i64, Timestamp::now().micros(), note],
        )?;
        let id = tx.last_insert_rowid() as u64;
        tx.commit()?;
        Ok(StoredCheckpoint {
            id,
            size: frontier.size(),
            note,
        })
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, size, note FROM checkpoints ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredCheckpoint {
                id: r.get::<_, i64>(0)? as u64,
                size: r.get::<_, i64>(1)? as u64,
                note: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn setting(&self, key: &str) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT version, value FROM settings WHERE key = ?1")?
            .query_row([key], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()?)
    }

    fn prune(&mut self, cutoff_for: &dyn Fn(&str) -> Timestamp) -> Result<u64, StoreError> {
        // Candidates are older than the latest cutoff of any mailbox; each is then held to
        // its own mailbox's cutoff.
        let mut latest = Timestamp(i64::MIN);
        let mailboxes: Vec<(i64, String)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT DISTINCT s.id, s.value FROM strings s WHERE s.kind = ?1")?;
            let rows = stmt.query_map([Kind::Identity as u8], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let cutoffs: HashMap<i64, Timestamp> = mailboxes
            .into_iter()
            .map(|(id, name)| {
                let c = cutoff_for(&name);
                latest = latest.max(c);
                (id, c)
            })
            .collect();
        let candidates: Vec<AuditRecord> = {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE time < ?1 ORDER BY seq"
            ))?;
            let mut rows = stmt.query([latest.micros()])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let mailbox_id: i64 = row.get(7)?;
                let time: i64 = row.get(1)?;
                if cutoffs.get(&mailbox_id).is_some_and(|c| time < c.micros()) {
                    let (record, prefix) = self.read_record(row)?;
                    let leaf = leaf_hash(&encode_canonical(&record));
                    if leaf[..8] != prefix {
                        return Err(StoreError::Corrupt {
                            seq: record.seq,
                            what: "its contents no longer match its leaf hash; refusing to prune it (run `mailaudit verify`)".into(),
                        });
                    }
                    out.push(record);
                }
            }
            out
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut keep = tx.prepare("INSERT INTO pruned(seq, leaf) VALUES(?1, ?2)")?;
            let mut delete = tx.prepare("DELETE FROM records WHERE seq = ?1")?;
            for r in &candidates {
                let leaf = leaf_hash(&encode_canonical(r));
                keep.execute(params![r.seq as i64, &leaf[..]])?;
                delete.execute([r.seq as i64])?;
            }
        }
        tx.commit()?;
        Ok(candidates.len() as u64)
    }

    fn put_token(&mut self, hash: &Hash, info: &TokenInfo) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens(hash, name, role, created, revoked) VALUES(?1, ?2, ?3, ?4, ?5)",
                params![
                    &hash[..],
                    info.name,
                    info.role,
                    info.created.micros(),
                    info.revoked
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::Invalid(format!("a token named `{}` exists already", info.name))
                }
                other => other.into(),
            })?;
        Ok(())
    }

    fn token(&self, hash: &Hash) -> Result<Option<TokenInfo>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT name, role, created, revoked FROM tokens WHERE hash = ?1")?
            .query_row([&hash[..]], token_row)
            .optional()?)
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role, created, revoked FROM tokens ORDER BY created")?;
        let rows = stmt.query_map([], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_token(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("UPDATE tokens SET revoked = 1 WHERE name = ?1", [name])?
            > 0)
    }
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        name: r.get(0)?,
        role: r.get(1)?,
        created: Timestamp(r.get(2)?),
        revoked: r.get(3)?,
    })
}
