//! Dovecot wiring: following Dovecot's log inside `serve` (the lossless path), and
//! `mailaudit import dovecot` for history. The follower commits its file position and the
//! Dovecot source's correlation state in the same transaction as the records those lines
//! produced, so a restart neither repeats nor skips a line.

use crate::datadir;
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mailaudit_model::{Observation, Timestamp};
use mailaudit_pipeline::WriterHandle;
use mailaudit_server::SourceRegistry;
use mailaudit_source_dovecot::{DovecotConfig, DovecotSource};
use mailaudit_store::{SqliteStore, Store};
use mailaudit_tail::{Follower, Position, TailError};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct DovecotArgs {
    /// Prefix of Dovecot's shared namespace (a delegate's access to another's folder).
    #[arg(long = "dovecot-shared-prefix", default_value = "shared/")]
    pub shared_prefix: String,
    /// Domain to append to bare Dovecot logins (`carol` -> `carol@example.com`).
    #[arg(long = "dovecot-domain")]
    pub domain: Option<String>,
    /// Folders that are the \Trash special-use folder (comma-separated).
    #[arg(
        long = "dovecot-trash",
        value_delimiter = ',',
        default_value = "Trash,Deleted Items,Deleted Messages"
    )]
    pub trash: Vec<String>,
    /// Where a user's Sieve scripts are (`%u` user, `%n` its local part, `%d` its domain),
    /// so that an uploaded rule's text and its redirects are kept in the record. Dovecot's
    /// `sieve = file:~/sieve` with homes in /var/vmail/DOMAIN/USER is
    /// `/var/vmail/%d/%n/sieve`.
    #[arg(long = "dovecot-sieve-dir")]
    pub sieve_dir: Option<String>,
}

impl DovecotArgs {
    pub fn config(&self) -> DovecotConfig {
        DovecotConfig {
            shared_prefix: self.shared_prefix.clone(),
            trash_folders: self.trash.clone(),
            default_domain: self.domain.clone(),
            ..DovecotConfig::default()
        }
    }
}

/// What the follower commits with every batch of records.
#[derive(Serialize, Deserialize)]
struct Saved {
    position: Option<Position>,
    source: DovecotSource,
}

fn setting_key(path: &Path) -> String {
    format!("source:dovecot-log:{}", path.display())
}

/// Follows `path` until the process ends; after an error it starts again from the last
/// committed position.
pub async fn follow(
    path: PathBuf,
    config: DovecotConfig,
    sieve_dir: Option<String>,
    writer: WriterHandle,
    data_dir: PathBuf,
    registry: Arc<SourceRegistry>,
) {
    loop {
        if let Err(e) = follow_from_saved(
            &path,
            &config,
            sieve_dir.as_deref(),
            &writer,
            &data_dir,
            &registry,
        )
        .await
        {
            tracing::error!(
                "following {}: {e:#}; starting again from the last committed position in 5 s",
                path.display()
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

async fn follow_from_saved(
    path: &Path,
    config: &DovecotConfig,
    sieve_dir: Option<&str>,
    writer: &WriterHandle,
    data_dir: &Path,
    registry: &SourceRegistry,
) -> Result<()> {
    let key = setting_key(path);
    let saved: Option<Saved> = SqliteStore::open(data_dir)?
        .setting(&key)?
        .map(|(_, text)| serde_json::from_str(&text))
        .transpose()
        .context("the saved position of the Dovecot log is unreadable")?;
    let (position, mut source) = match saved {
        Some(s) => (s.position, s.source),
        None => (None, DovecotSource::new()),
    };
    let mut follower = match Follower::open(path, position) {
        Ok(f) => f,
        Err(e @ TailError::Lost { .. }) => {
            tracing::error!("{e}; reading {} from its start", path.display());
            Follower::open(path, None)?
        }
        Err(e) => return Err(e.into()),
    };
    let name = path.file_name().map_or_else(
        || "dovecot.log".to_string(),
        |n| n.to_string_lossy().to_string(),
    );
    let stats_name = format!("dovecot-log:{}", path.display());
    tracing::info!(
        "following {} from {:?}",
        path.display(),
        follower.position()
    );
    loop {
        let (back, lines) = tokio::task::spawn_blocking(move || {
            let lines = follower.read_lines(5000);
            (follower, lines)
        })
        .await?;
        follower = back;
        let lines = lines?;
        let mut observations: Vec<Observation> = Vec::new();
        for line in &lines {
            let reference = format!("{name}#{}:{}", line.generation, line.number);
            match source.push_log_line(config, &line.text, &reference) {
                Ok(o) => observations.extend(o),
                Err(e) => tracing::warn!("{}: {reference}: {e}", path.display()),
            }
        }
        observations.extend(source.flush_due(config, Timestamp::now()));
        if let Some(dir) = sieve_dir {
            mailaudit_server::sieve::attach_scripts(&mut observations, dir);
        }
        registry.report(&stats_name, source.stats());
        if !lines.is_empty() || !observations.is_empty() {
            let saved = serde_json::to_string(&Saved {
                position: follower.position(),
                source: source.clone(),
            })?;
            writer
                .ingest_with_settings(observations, vec![(key.clone(), saved)])
                .await?;
        }
        if lines.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `mailaudit import dovecot FILE...`: the same mapping over existing log files.
pub fn import(dir: &Path, files: &[PathBuf], args: &DovecotArgs) -> Result<i32> {
    let config = args.config();
    let mut auditor = datadir::open_auditor(dir)?;
    let mut source = DovecotSource::new();
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("importing [{bar:40}] {bytes}/{total_bytes} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (mut stored, mut skipped, mut malformed_lines) = (0u64, 0u64, 0u64);
    let mut pending: Vec<Observation> = Vec::new();
    let mut commit = |auditor: &mut mailaudit_pipeline::Auditor<SqliteStore>,
                      batch: &mut Vec<Observation>|
     -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut observations = std::mem::take(batch);
        if let Some(dir) = &args.sieve_dir {
            mailaudit_server::sieve::attach_scripts(&mut observations, dir);
        }
        let (outcomes, records) = auditor.ingest(observations, &[])?;
        stored += records.len() as u64;
        skipped += (outcomes.len() - records.len()) as u64;
        Ok(())
    };
    for file in files {
        let reader = std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        );
        let name = file.display().to_string();
        for (i, raw) in reader.split(b'\n').enumerate() {
            let raw = raw.with_context(|| format!("reading {name}"))?;
            bar.inc(raw.len() as u64 + 1);
            let text =
                String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(&raw)).into_owned();
            let reference = format!("{name}:{}", i + 1);
            match source.push_log_line(&config, &text, &reference) {
                Ok(o) => pending.extend(o),
                Err(e) => {
                    malformed_lines += 1;
                    eprintln!("{reference}: {e}");
                }
            }
            if pending.len() >= 10_000 {
                commit(&mut auditor, &mut pending)?;
            }
        }
    }
    pending.extend(source.flush_all(&config));
    commit(&mut auditor, &mut pending)?;
    bar.finish_and_clear();
    let s = source.stats();
    println!(
        "imported {} lines from {} file(s): {} observations, {stored} records stored, {skipped} not audited by policy, {} lines not about mailbox access, {malformed_lines} malformed",
        s.log_lines,
        files.len(),
        s.observations,
        s.ignored
    );
    Ok(0)
}
