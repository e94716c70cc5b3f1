//! `mailaudit bench`: ingests synthetic records durably, then answers two incident questions
//! both from the store and with grep over the same records as JSON lines, side by side in
//! one run. Both must give the same counts; the figures go to docs/performance.md.

use anyhow::{bail, Context, Result};
use clap::Args;
use mailaudit_model::{LogonType, Operation, Timestamp};
use mailaudit_pipeline::Auditor;
use mailaudit_policy::{ActionEdit, PolicyChange};
use mailaudit_store::{NonOwner, PageRequest, Query, SqliteStore, Store};
use mailaudit_synth::{Config as SynthConfig, Generator};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Records to ingest.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Mailboxes in the synthetic organisation.
    #[arg(long, default_value_t = 5000)]
    mailboxes: u32,
    /// Observations per durable commit.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Store queries per question (for p50/p99).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// grep runs per question (each reads every line).
    #[arg(long, default_value_t = 3)]
    grep_runs: usize,
    /// Where to put the store and the JSON lines; a fresh directory is required.
    #[arg(long, default_value = "./mailaudit-bench")]
    dir: PathBuf,
}

const DAY: i64 = 86_400;

/// Audits every operation for every logon type, so that every generated observation
/// becomes a stored record and the figures are per stored record.
pub(crate) fn audit_everything(auditor: &mut Auditor<SqliteStore>) -> Result<()> {
    let actor = crate::datadir::local_actor();
    for logon_type in [LogonType::Owner, LogonType::Delegate] {
        let all = Operation::ALL
            .iter()
            .copied()
            .filter(|o| !o.is_audit_system())
            .collect();
        auditor.change_policy(
            &actor,
            &PolicyChange::Actions {
                mailbox: None,
                logon_type,
                edit: ActionEdit::Replace(all),
            },
        )?;
    }
    Ok(())
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A regex alternation of the UTC dates in [from, to), both at midnight.
fn date_alternation(from: Timestamp, days: i64) -> String {
    (0..days)
        .map(|d| from.plus_secs(d * DAY).to_rfc3339()[..10].to_string())
        .collect::<Vec<_>>()
        .join("|")
}

pub(crate) fn grep_count(file: &std::path::Path, regex: &str) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let out = Command::new("grep")
        .env("LC_ALL", "C")
        .args(["-c", "-E", regex])
        .arg(file)
        .output()
        .context("running grep")?;
    let elapsed = start.elapsed();
    // grep exits 1 when nothing matched, which is an answer, not an error.
    if !out.status.success() && out.status.code() != Some(1) {
        bail!("grep failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let n = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((n, elapsed))
}

fn dir_bytes(dir: &std::path::Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("mailaudit.db") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

pub fn run(args: BenchArgs) -> Result<i32> {
    if args.dir.exists() {
        bail!(
            "{} exists; the benchmark needs a fresh directory (remove it or pass --dir)",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.dir)?;
    let store = SqliteStore::open(&args.dir)?;
    let mut auditor = Auditor::new(store)?;
    audit_everything(&mut auditor)?;
    let span_days: u32 = 90;
    let start = Timestamp::from_secs(1_780_000_000 / DAY * DAY);
    let config = SynthConfig {
        mailboxes: args.mailboxes,
        start,
        span_days,
        total: args.records,
        ..Default::default()
    };
    let mut generator = Generator::new(config);
    let jsonl_path = args.dir.join("records.jsonl");
    let mut jsonl = std::io::BufWriter::new(std::fs::File::create(&jsonl_path)?);
    eprintln!(
        "ingesting {} records in durable batches of {}…",
        args.records, args.batch
    );
    let mut ingest_time = Duration::ZERO;
    let mut left = args.records;
    let mut stored_total = 0u64;
    while left > 0 {
        let n = left.min(args.batch as u64);
        let batch: Vec<_> = generator.by_ref().take(n as usize).collect();
        let t = Instant::now();
        let (_, stored) = auditor.ingest(batch, &[])?;
        ingest_time += t.elapsed();
        stored_total += stored.len() as u64;
        for r in &stored {
            serde_json::to_writer(&mut jsonl, r)?;
            jsonl.write_all(b"\n")?;
        }
        left -= n;
    }
    jsonl.flush()?;
    drop(jsonl);
    let ingest_rate = stored_total as f64 / ingest_time.as_secs_f64();
    auditor
        .store()
        .connection()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    let db_bytes = dir_bytes(&args.dir)?;
    let json_bytes = std::fs::metadata(&jsonl_path)?.len();

    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut q1 = Vec::new();
    let mut q2 = Vec::new();
    let mut q1_matches = 0u64;
    let mut q2_matches = 0u64;
    let mut q1_cases = Vec::new();
    let mut q2_cases = Vec::new();
    let mailbox = |i: u32| format!("user{i:05}@example.com");
    for i in 0..args.queries {
        let m = mailbox(rng.gen_range(0..args.mailboxes));
        let from = start.plus_secs(rng.gen_range(0..(span_days as i64 - 15)) * DAY);
        let q = Query {
            mailboxes: vec![m.clone()],
            non_owner: Some(NonOwner::All),
            from: Some(from),
            to: Some(from.plus_secs(15 * DAY)),
            ..Default::default()
        };
        let t = Instant::now();
        let page = auditor.store().search(&q, &PageRequest::default())?;
        q1.push(t.elapsed());
        let total = page.total.unwrap_or(0);
        q1_matches += total;
        if i < args.grep_runs {
            q1_cases.push((m, from, total));
        }

        let a = mailbox(rng.gen_range(0..args.mailboxes));
        let from = start.plus_secs(rng.gen_range(0..(span_days as i64 - 30)) * DAY);
        let q = Query {
            actors: vec![a.clone()],
            from: Some(from),
            to: Some(from.plus_secs(30 * DAY)),
            ..Default::default()
        };
        let t = Instant::now();
        let page = auditor.store().search(&q, &PageRequest::default())?;
        q2.push(t.elapsed());
        let total = page.total.unwrap_or(0);
        q2_matches += total;
        if i < args.grep_runs {
            q2_cases.push((a, from, total));
        }
    }
    q1.sort();
    q2.sort();

    let mut g1 = Vec::new();
    for (m, from, expected) in &q1_cases {
        let re = format!(
            "\"time\":\"({})T[^\"]*\",.*\"logon_type\":\"(Delegate|Admin)\",\"external\":(true|false),\"mailbox\":\"{}\"",
            date_alternation(*from, 15),
            m.replace('.', "\\.")
        );
        let (n, d) = grep_count(&jsonl_path, &re)?;
        if n != *expected {
            bail!("grep found {n} non-owner accesses to {m} but the store {expected}");
        }
        g1.push(d);
    }
    let mut g2 = Vec::new();
    for (a, from, expected) in &q2_cases {
        let re = format!(
            "\"time\":\"({})T[^\"]*\",.*\"actor\":\"{}\"",
            date_alternation(*from, 30),
            a.replace('.', "\\.")
        );
        let (n, d) = grep_count(&jsonl_path, &re)?;
        if n != *expected {
            bail!("grep found {n} records by {a} but the store {expected}");
        }
        g2.push(d);
    }
    g1.sort();
    g2.sort();

    let n = stored_total as f64;
    println!(
        "mailaudit bench: {stored_total} records, {} mailboxes, batches of {}",
        args.mailboxes, args.batch
    );
    println!();
    println!("| measure | mailaudit store | grep over JSON lines |");
    println!("|---|---|---|");
    println!(
        "| durable ingest | {:.0} records/s ({:.1} s) | - |",
        ingest_rate,
        ingest_time.as_secs_f64()
    );
    println!(
        "| non-owner access to one mailbox, 15 days: p50 / p99 | {:.2} ms / {:.2} ms ({} queries, {:.1} matches avg) | {:.0} ms / {:.0} ms ({} runs, same counts) |",
        ms(percentile(&q1, 0.5)),
        ms(percentile(&q1, 0.99)),
        q1.len(),
        q1_matches as f64 / q1.len().max(1) as f64,
        ms(percentile(&g1, 0.5)),
        ms(percentile(&g1, 0.99)),
        g1.len()
    );
    println!(
        "| everything one actor did, 30 days: p50 / p99 | {:.2} ms / {:.2} ms ({} queries, {:.1} matches avg) | {:.0} ms / {:.0} ms ({} runs, same counts) |",
        ms(percentile(&q2, 0.5)),
        ms(percentile(&q2, 0.99)),
        q2.len(),
        q2_matches as f64 / q2.len().max(1) as f64,
        ms(percentile(&g2, 0.5)),
        ms(percentile(&g2, 0.99)),
        g2.len()
    );
    println!(
        "| bytes on disk per record | {:.1} (incl. indexes, {} MB) | {:.1} ({} MB, no index) |",
        db_bytes as f64 / n,
        db_bytes / 1_000_000,
        json_bytes as f64 / n,
        json_bytes / 1_000_000
    );
    Ok(0)
}
