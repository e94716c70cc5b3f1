//! The threads that drive the outputs from the store. Each follows the log by `seq` from a
//! persisted position, so nothing is lost when the live broadcast lags or the process
//! restarts: the broadcast only wakes them (`Shared::records`).
//!
//! - the alert thread runs the rules and puts new alerts in the outbox, with its position
//!   and the engine's state, in one transaction;
//! - one delivery thread per alert output sends its outbox in order, retrying the head with
//!   backoff until it succeeds;
//! - one thread per record stream, and one for the daily files, write records and then
//!   persist their position (at least once).

use crate::config::{OutputsConfig, RecordFormat, StreamConfig, StreamTo};
use crate::db::{OutboxStatus, OutputsDb};
use crate::deliver::{Deliver, Email, SyslogAlerts, Webhook};
use crate::syslog::SyslogSender;
use crate::{daily, format, OutputError};
use mailaudit_alerts::{Alert, Engine, EngineState, RuleConfig};
use mailaudit_model::{AuditRecord, Timestamp};
use mailaudit_store::{Leaf, SqliteStore, Store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CHUNK: u64 = 5_000;
const RULES_KEY: &str = "alerts.rules";

/// A counter that threads wait on to be told something new is there.
#[derive(Default)]
pub struct Wake {
    count: Mutex<u64>,
    cv: Condvar,
}

impl Wake {
    pub fn notify(&self) {
        if let Ok(mut c) = self.count.lock() {
            *c += 1;
        }
        self.cv.notify_all();
    }

    /// Waits until the count differs from `seen` or `timeout` passes; returns the count.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let Ok(guard) = self.count.lock() else {
            return seen;
        };
        match self.cv.wait_timeout_while(guard, timeout, |c| *c == seen) {
            Ok((c, _)) => *c,
            Err(_) => seen,
        }
    }

    pub fn current(&self) -> u64 {
        self.count.lock().map(|c| *c).unwrap_or_default()
    }
}

/// Where the rules in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RulesSource {
    Config,
    Api,
}

struct Rules {
    rules: Vec<RuleConfig>,
    source: RulesSource,
    version: u64,
}

pub struct Shared {
    /// Notified when records were appended.
    pub records: Wake,
    alerts: Wake,
    stop: AtomicBool,
    rules: Mutex<Rules>,
    data_dir: PathBuf,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps, waking early when stopping.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let seen = self.alerts.current();
            self.alerts.wait(seen, left.min(Duration::from_millis(200)));
        }
    }
}

/// The running outputs; `stop` ends every thread.
pub struct Outputs {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn open_store(dir: &Path) -> Result<SqliteStore, OutputError> {
    SqliteStore::open(dir).map_err(|e| OutputError::Store(e.to_string()))
}

/// Reads the records in `[from, to)`, skipping leaves whose contents retention removed.
fn read(store: &SqliteStore, from: u64, to: u64) -> Result<Vec<AuditRecord>, OutputError> {
    let mut out = Vec::with_capacity((to - from) as usize);
    store
        .scan(from, to, &mut |_, leaf| {
            if let Leaf::Record { record, .. } = leaf {
                out.push(*record);
            }
            Ok(())
        })
        .map_err(|e| OutputError::Store(e.to_string()))?;
    Ok(out)
}

fn size(store: &SqliteStore) -> Result<u64, OutputError> {
    store.size().map_err(|e| OutputError::Store(e.to_string()))
}

impl Outputs {
    /// Checks the configuration, opens `outputs.sqlite` in `data_dir` and starts the threads.
    pub fn start(data_dir: &Path, config: OutputsConfig) -> Result<Self, OutputError> {
        config.check().map_err(OutputError::Config)?;
        let db = OutputsDb::open(data_dir)?;
        let (rules, source) = match db.get(RULES_KEY)? {
            Some(text) => (
                serde_json::from_str(&text).map_err(|e| {
                    OutputError::Db(format!(
                        "the rules saved through the API are unreadable: {e}"
                    ))
                })?,
                RulesSource::Api,
            ),
            None => (config.rules.clone(), RulesSource::Config),
        };
        let rules =
            mailaudit_alerts::validate(rules).map_err(|e| OutputError::Config(e.to_string()))?;
        if source == RulesSource::Api {
            tracing::info!("alert rules: {} edited through the API are in force (they override the config file's)", rules.len());
        }
        // Where each follower starts, fixed now rather than when its thread gets going: a
        // record stored after `start` returns must never count as history.
        let end = size(&open_store(data_dir)?)?;
        let first = |key: &str, value: u64| -> Result<(), OutputError> {
            if db.get(key)?.is_none() {
                db.put(key, &value.to_string())?;
            }
            Ok(())
        };
        if db.get("alerts.position")?.is_none() {
            let learn = if config.alerts.learn_history { end } else { 0 };
            db.put("alerts.learn_to", &learn.to_string())?;
            if learn > 0 {
                tracing::info!("alert rules: learning from the {learn} records already stored (no alerts for them)");
            }
            db.put(
                "alerts.position",
                &if config.alerts.learn_history { 0 } else { end }.to_string(),
            )?;
        }
        first("alerts.learn_to", 0)?;
        for s in &config.stream {
            first(
                &format!("stream.{}.position", s.name),
                if s.from_start { 0 } else { end },
            )?;
        }
        if let Some(d) = &config.daily_files {
            first("daily.position", if d.from_start { 0 } else { end })?;
        }
        let shared = Arc::new(Shared {
            records: Wake::default(),
            alerts: Wake::default(),
            stop: AtomicBool::new(false),
            rules: Mutex::new(Rules {
                rules,
                source,
                version: 0,
            }),
            data_dir: data_dir.to_path_buf(),
        });
        let mut deliverers: Vec<(Box<dyn Deliver>, crate::config::AlertFilter)> = Vec::new();
        for w in &config.webhook {
            deliverers.push((Box::new(Webhook::new(w.clone())?), w.filter.clone()));
        }
        for e in &config.email {
            deliverers.push((Box::new(Email::new(e.clone())?), e.filter.clone()));
        }
        for s in &config.syslog {
            deliverers.push((Box::new(SyslogAlerts::new(s.clone())?), s.filter.clone()));
        }
        let filters: Vec<(String, crate::config::AlertFilter)> = deliverers
            .iter()
            .map(|(d, f)| (d.name().to_string(), f.clone()))
            .collect();
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(f)
                .map_err(|e| OutputError::Io(format!("starting thread {name}: {e}")))
        };
        {
            let shared = shared.clone();
            threads.push(spawn(
                "mailaudit-alerts".into(),
                Box::new(move || {
                    if let Err(e) = alert_loop(&shared, filters) {
                        tracing::error!("the alert rules stopped: {e}");
                    }
                }),
            )?);
        }
        let backoff = config.backoff;
        for (d, _) in deliverers {
            let shared = shared.clone();
            threads.push(spawn(
                format!("mailaudit-out-{}", d.name()),
                Box::new(move || deliver_loop(&shared, d, backoff)),
            )?);
        }
        for s in config.stream.clone() {
            let shared = shared.clone();
            threads.push(spawn(
                format!("mailaudit-stream-{}", s.name),
                Box::new(move || {
                    follow_loop(
                        &shared,
                        &format!("stream.{}", s.name),
                        backoff,
                        Sink::new(s),
                    )
                }),
            )?);
        }
        if let Some(d) = config.daily_files.clone() {
            let shared = shared.clone();
            let tz: chrono_tz::Tz = d
                .time_zone
                .parse()
                .map_err(|e| OutputError::Config(format!("daily_files.time_zone: {e}")))?;
            let retention = crate::config::parse_retention(&d.retention)?;
            let sink = Sink::Daily {
                root: d.root.clone(),
                tz,
                retention,
                prune_every: Duration::from_secs(d.prune_interval_secs.max(1)),
                last_prune: None,
            };
            threads.push(spawn(
                "mailaudit-daily".into(),
                Box::new(move || follow_loop(&shared, "daily", backoff, Ok(sink))),
            )?);
        }
        Ok(Outputs { shared, threads })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Ends every thread after its current step; what is pending stays in the outbox.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.records.notify();
        self.shared.alerts.notify();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

impl Shared {
    pub fn rules(&self) -> (Vec<RuleConfig>, RulesSource) {
        match self.rules.lock() {
            Ok(r) => (r.rules.clone(), r.source),
            Err(_) => (Vec::new(), RulesSource::Config),
        }
    }

    /// Replaces the rules in force, persists them, and applies them from the next record on.
    pub fn set_rules(&self, rules: Vec<RuleConfig>) -> Result<Vec<RuleConfig>, OutputError> {
        let rules =
            mailaudit_alerts::validate(rules).map_err(|e| OutputError::Config(e.to_string()))?;
        let text = serde_json::to_string(&rules).map_err(|e| OutputError::Db(e.to_string()))?;
        OutputsDb::open(&self.data_dir)?.put(RULES_KEY, &text)?;
        let mut r = self
            .rules
            .lock()
            .map_err(|_| OutputError::Db("rules lock poisoned".into()))?;
        r.rules = rules.clone();
        r.source = RulesSource::Api;
        r.version += 1;
        drop(r);
        self.records.notify();
        Ok(rules)
    }

    pub fn outbox(&self) -> Result<Vec<OutboxStatus>, OutputError> {
        OutputsDb::open(&self.data_dir)?.status()
    }
}

fn alert_loop(
    shared: &Shared,
    filters: Vec<(String, crate::config::AlertFilter)>,
) -> Result<(), OutputError> {
    let store = open_store(&shared.data_dir)?;
    let mut db = OutputsDb::open(&shared.data_dir)?;
    let state: EngineState = match db.get("alerts.engine")? {
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| OutputError::Db(format!("saved rule state is unreadable: {e}")))?,
        None => EngineState::default(),
    };
    let (rules, mut version) = {
        let r = shared
            .rules
            .lock()
            .map_err(|_| OutputError::Db("rules lock poisoned".into()))?;
        (r.rules.clone(), r.version)
    };
    let mut engine = Engine::new(rules)
        .map_err(|e| OutputError::Config(e.to_string()))?
        .with_state(state);
    let outputs_for = |a: &Alert| -> Vec<String> {
        filters
            .iter()
            .filter(|(_, f)| f.takes(a))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let parse = |key: &str| -> Result<u64, OutputError> {
        let text = db
            .get(key)?
            .ok_or_else(|| OutputError::Db(format!("{key} was not set at start")))?;
        text.parse::<u64>()
            .map_err(|e| OutputError::Db(format!("{key} `{text}`: {e}")))
    };
    let mut pos = parse("alerts.position")?;
    // Records before this were stored before alerts were first switched on: they teach the
    // rules (IPs seen) but raise no alert.
    let learn_to = parse("alerts.learn_to")?;
    let mut seen = shared.records.current();
    while !shared.stopped() {
        if let Ok(r) = shared.rules.lock() {
            if r.version != version {
                version = r.version;
                match engine.set_rules(r.rules.clone()) {
                    Ok(()) => {
                        tracing::info!("alert rules replaced: {} in force", engine.rules().len())
                    }
                    Err(e) => tracing::error!("alert rules not replaced: {e}"),
                }
            }
        }
        let end = size(&store)?;
        let mut alerts = Vec::new();
        let mut to = pos;
        if pos < end {
            to = (pos + CHUNK).min(end);
            for r in read(&store, pos, to)? {
                alerts.extend(engine.observe(&r));
            }
        }
        alerts.extend(engine.tick(Timestamp::now()));
        alerts.retain(|a| a.records.iter().any(|s| *s >= learn_to));
        if to != pos || !alerts.is_empty() {
            let state = json(engine.state())?;
            let new = db.enqueue(
                &alerts,
                &outputs_for,
                &[
                    ("alerts.position", &to.to_string()),
                    ("alerts.engine", &state),
                ],
            )?;
            pos = to;
            if new > 0 {
                shared.alerts.notify();
            }
        }
        if pos >= end {
            seen = shared.records.wait(seen, Duration::from_secs(1));
        }
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, OutputError> {
    serde_json::to_string(v).map_err(|e| OutputError::Db(e.to_string()))
}

fn deliver_loop(shared: &Shared, mut d: Box<dyn Deliver>, backoff: crate::config::Backoff) {
    let name = d.name().to_string();
    let db = match OutputsDb::open(&shared.data_dir) {
        Ok(db) => db,
        Err(e) => {
            tracing::error!("output {name}: {e}");
            return;
        }
    };
    let mut seen = shared.alerts.current();
    while !shared.stopped() {
        match db.head(&name) {
            Ok(Some(p)) => match d.deliver(&p.alert, &p.body) {
                Ok(()) => {
                    if let Err(e) = db.delivered(&name, p.n) {
                        tracing::error!(
                            "output {name}: alert {} sent but not marked: {e}",
                            p.alert.id
                        );
                        shared.sleep(Duration::from_millis(backoff.delay_ms(1)));
                    }
                }
                Err(e) => {
                    let failures = db
                        .failed(&name, p.n, &e.to_string())
                        .unwrap_or(p.attempts + 1);
                    let wait = backoff.delay_ms(failures);
                    tracing::warn!("output {name}: alert {} not delivered (attempt {failures}), retrying in {wait} ms: {e}", p.alert.id);
                    shared.sleep(Duration::from_millis(wait));
                }
            },
            Ok(None) => seen = shared.alerts.wait(seen, Duration::from_secs(1)),
            Err(e) => {
                tracing::error!("output {name}: {e}");
                shared.sleep(Duration::from_millis(backoff.delay_ms(1)));
            }
        }
    }
}

/// Where a followed record goes.
enum Sink {
    File {
        path: PathBuf,
        format: RecordFormat,
    },
    Stdout {
        format: RecordFormat,
    },
    Syslog {
        sender: SyslogSender,
        format: RecordFormat,
    },
    Daily {
        root: PathBuf,
        tz: chrono_tz::Tz,
        retention: i64,
        prune_every: Duration,
        last_prune: Option<Instant>,
    },
}

impl Sink {
    fn new(s: StreamConfig) -> Result<Sink, OutputError> {
        Ok(match s.to {
            StreamTo::File => Sink::File {
                path: s.path.ok_or_else(|| {
                    OutputError::Config(format!("stream `{}` needs a path", s.name))
                })?,
                format: s.format,
            },
            StreamTo::Stdout => Sink::Stdout { format: s.format },
            StreamTo::Syslog => Sink::Syslog {
                sender: SyslogSender::new(s.syslog.ok_or_else(|| {
                    OutputError::Config(format!("stream `{}` needs [stream.syslog]", s.name))
                })?)?,
                format: s.format,
            },
        })
    }

    fn json(format: RecordFormat, r: &AuditRecord) -> Result<String, OutputError> {
        match format {
            RecordFormat::Json => json(r),
            RecordFormat::Ecs => json(&format::ecs(r)),
        }
    }

    fn write(&mut self, records: &[AuditRecord]) -> Result<(), OutputError> {
        match self {
            Sink::File { path, format } => {
                let mut text = String::new();
                for r in records {
                    text.push_str(&Self::json(*format, r)?);
                    text.push('\n');
                }
                let io = |e: std::io::Error| OutputError::Io(format!("{}: {e}", path.display()));
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*path)
                    .map_err(io)?;
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_data().map_err(io)
            }
            Sink::Stdout { format } => {
                let mut out = std::io::stdout().lock();
                for r in records {
                    writeln!(out, "{}", Self::json(*format, r)?)
                        .map_err(|e| OutputError::Io(format!("stdout: {e}")))?;
                }
                out.flush()
                    .map_err(|e| OutputError::Io(format!("stdout: {e}")))
            }
            Sink::Syslog { sender, format } => {
                let mut messages = Vec::with_capacity(records.len());
                for r in records {
                    messages.push(format::record_syslog(
                        r,
                        sender.facility,
                        &sender.hostname,
                        &Self::json(*format, r)?,
                    ));
                }
                sender.send_all(&messages)
            }
            Sink::Daily { root, tz, .. } => daily::write(root, *tz, records).map(|_| ()),
        }
    }

    fn housekeeping(&mut self) {
        if let Sink::Daily {
            root,
            tz,
            retention,
            prune_every,
            last_prune,
        } = self
        {
            if last_prune.is_some_and(|t| t.elapsed() < *prune_every) {
                return;
            }
            *last_prune = Some(Instant::now());
            match daily::prune(root, *tz, *retention, Timestamp::now()) {
                Ok(removed) => {
                    for f in removed {
                        tracing::info!("daily files: removed {} (past retention)", f.display());
                    }
                }
                Err(e) => tracing::error!("daily files: pruning: {e}"),
            }
        }
    }
}

/// Follows the log from a persisted position into a sink: write, then persist the position.
/// A failed write is retried from the same position (at least once).
fn follow_loop(
    shared: &Shared,
    key: &str,
    backoff: crate::config::Backoff,
    sink: Result<Sink, OutputError>,
) {
    let run = || -> Result<(), OutputError> {
        let mut sink = sink?;
        let store = open_store(&shared.data_dir)?;
        let db = OutputsDb::open(&shared.data_dir)?;
        let pos_key = format!("{key}.position");
        let text = db
            .get(&pos_key)?
            .ok_or_else(|| OutputError::Db(format!("{pos_key} was not set at start")))?;
        let mut pos = text
            .parse::<u64>()
            .map_err(|e| OutputError::Db(format!("{pos_key} `{text}`: {e}")))?;
        let mut seen = shared.records.current();
        let mut failures = 0u32;
        while !shared.stopped() {
            sink.housekeeping();
            let end = size(&store)?;
            if pos >= end {
                seen = shared.records.wait(seen, Duration::from_secs(1));
                continue;
            }
            let to = (pos + CHUNK).min(end);
            let records = read(&store, pos, to)?;
            match sink.write(&records) {
                Ok(()) => {
                    failures = 0;
                    db.put(&pos_key, &to.to_string())?;
                    pos = to;
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff.delay_ms(failures);
                    tracing::warn!(
                        "{key}: records {pos}..{to} not written, retrying in {wait} ms: {e}"
                    );
                    shared.sleep(Duration::from_millis(wait));
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        tracing::error!("{key} stopped: {e}");
    }
}
