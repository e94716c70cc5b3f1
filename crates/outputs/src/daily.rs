//! Per-mailbox daily audit files, as MailEnable keeps them:
//! `<root>/<domain>/<mailbox>/AUDIT-YYMMDD.log`, one readable line per record. A record goes
//! to the file of the day its time falls on in the configured time zone, so files turn over
//! at that zone's midnight; a file is removed once its day ended longer ago than the
//! retention.

use crate::format::daily_line;
use crate::OutputError;
use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use mailaudit_model::{AuditRecord, Timestamp};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

fn component(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => "_".into(),
        _ if s.starts_with('.') => format!("_{s}"),
        _ => s,
    }
}

/// `(domain, mailbox)` directories of a record's mailbox. Records of the audit system about no
/// one mailbox (`*`) go to `_system/_all`.
pub fn dirs(mailbox: &str) -> (String, String) {
    if mailbox == "*" {
        return ("_system".into(), "_all".into());
    }
    match mailbox.rsplit_once('@') {
        Some((local, domain)) => (component(domain), component(local)),
        None => ("_local".into(), component(mailbox)),
    }
}

pub fn local_time(tz: Tz, t: Timestamp) -> Option<chrono::DateTime<Tz>> {
    t.to_datetime().map(|dt| dt.with_timezone(&tz))
}

pub fn file_for(root: &Path, tz: Tz, r: &AuditRecord) -> Option<PathBuf> {
    let local = local_time(tz, r.time)?;
    let (domain, mailbox) = dirs(&r.mailbox);
    Some(
        root.join(domain)
            .join(mailbox)
            .join(format!("AUDIT-{}.log", local.format("%y%m%d"))),
    )
}

/// Appends records to their files; returns how many lines were written.
pub fn write(root: &Path, tz: Tz, records: &[AuditRecord]) -> Result<usize, OutputError> {
    let mut by_file: BTreeMap<PathBuf, String> = BTreeMap::new();
    for r in records {
        let (Some(path), Some(local)) = (file_for(root, tz, r), local_time(tz, r.time)) else {
            tracing::warn!(
                "daily files: record {} has a time out of range; not written",
                r.seq
            );
            continue;
        };
        let stamp = local.format("%Y-%m-%d %H:%M:%S%.6f %z").to_string();
        let text = by_file.entry(path).or_default();
        text.push_str(&daily_line(r, &stamp));
        text.push('\n');
    }
    let mut n = 0;
    for (path, text) in by_file {
        let io = |e: std::io::Error| OutputError::Io(format!("{}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)?;
        n += text.lines().count();
    }
    Ok(n)
}

/// When a file's day ends: the next midnight in `tz`, as a timestamp.
pub fn day_end(tz: Tz, date: NaiveDate) -> Option<Timestamp> {
    let next = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
    let end = tz.from_local_datetime(&next).earliest()?;
    Some(Timestamp::from_micros(end.timestamp_micros()))
}

/// Removes every `AUDIT-YYMMDD.log` under `root` whose day ended `retention_secs` or more
/// before `now`. Returns the files removed.
pub fn prune(
    root: &Path,
    tz: Tz,
    retention_secs: i64,
    now: Timestamp,
) -> Result<Vec<PathBuf>, OutputError> {
    let mut removed = Vec::new();
    let io = |p: &Path, e: std::io::Error| OutputError::Io(format!("{}: {e}", p.display()));
    let Ok(domains) = std::fs::read_dir(root) else {
        return Ok(removed);
    };
    for d in domains {
        let d = d.map_err(|e| io(root, e))?.path();
        let Ok(mailboxes) = std::fs::read_dir(&d) else {
            continue;
        };
        for m in mailboxes {
            let m = m.map_err(|e| io(&d, e))?.path();
            let Ok(files) = std::fs::read_dir(&m) else {
                continue;
            };
            for f in files {
                let f = f.map_err(|e| io(&m, e))?.path();
                let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(digits) = name
                    .strip_prefix("AUDIT-")
                    .and_then(|n| n.strip_suffix(".log"))
                else {
                    continue;
                };
                let Ok(date) = NaiveDate::parse_from_str(&format!("20{digits}"), "%Y%m%d") else {
                    continue;
                };
                let Some(end) = day_end(tz, date) else {
                    continue;
                };
                if now.micros() - end.micros() >= retention_secs.saturating_mul(1_000_000) {
                    std::fs::remove_file(&f).map_err(|e| io(&f, e))?;
                    removed.push(f);
                }
            }
        }
    }
    Ok(removed)
}
