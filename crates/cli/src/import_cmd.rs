//! `mailaudit import <format> FILE...` for other systems' audit history (Exchange, Microsoft
//! 365, OWA/IIS): reads each file with its streaming importer, hands the records to the
//! pipeline in batches (`Auditor::ingest_imported`, which stores each source key once), and
//! prints what became of every record: imported, already present, skipped (with the reason,
//! counted), rejected (each one named by file:line on stderr). Afterwards the time range
//! each file covers, per mailbox, is stored for `mailaudit coverage`.

use crate::datadir;
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mailaudit_model::{ImportedObservation, Timestamp};
use mailaudit_pipeline::{Auditor, ImportOutcome};
use mailaudit_source_import::{
    mailaudit_key_seq, mailaudit_record_key, open, parse_timezone, Context, Format, Parsed,
};
use mailaudit_store::{CoverageEntry, SqliteStore, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum FormatCommand {
    /// `Search-MailboxAuditLog -ShowDetails | Export-Csv` output (local times: see --timezone).
    ExchangeCsv(ImportArgs),
    /// Exchange's SearchResult.xml, or mailaudit's own `export --format exchange-xml`.
    ExchangeXml(ImportArgs),
    /// The Microsoft 365 audit log search CSV (CreationDate, UserIds, Operations, AuditData).
    M365Csv(ImportArgs),
    /// JSON Lines of Microsoft 365 AuditData records (Search-UnifiedAuditLog, Management API).
    M365Jsonl(ImportArgs),
    /// IIS W3C logs of OWA (Outlook Web Access / Outlook on the web).
    Iis(ImportArgs),
    /// Windows event logs (.evtx): Exchange 1016 and 2007 SP2 auditing, AD permission changes.
    Evtx(ImportArgs),
    /// Windows events exported with `wevtutil qe <log> /f:xml` (or /f:RenderedXml).
    WevtutilXml(ImportArgs),
    /// Cyrus IMAP logs with `auditlog: yes` (auditlog lines joined to login lines).
    Cyrus(ImportArgs),
    /// Zimbra mailbox.log and audit.log (local times: see --timezone).
    Zimbra(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The zone times without one were written in (Exchange CSV's LastAccessed is the
    /// exporting machine's local time): an IANA name such as `Europe/Berlin`, which follows
    /// daylight saving, or `UTC`, `+02:00`, `-0500`. Without it such times are rejected,
    /// never guessed.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Domain for bare account names (`DOMAIN\meera` or `meera` become `meera@<domain>`).
    /// Without it names are kept as the file has them.
    #[arg(long)]
    pub domain: Option<String>,
    /// The year of syslog lines written without one (`Oct 12 23:27:49`, Cyrus).
    #[arg(long)]
    pub year: Option<i32>,
    /// Filter the history through today's audit policy, as live events are. By default every
    /// record is kept: the original system already chose what it audited.
    #[arg(long)]
    pub apply_policy: bool,
}

impl FormatCommand {
    fn split(self) -> (Format, ImportArgs) {
        match self {
            FormatCommand::ExchangeCsv(a) => (Format::ExchangeCsv, a),
            FormatCommand::ExchangeXml(a) => (Format::ExchangeXml, a),
            FormatCommand::M365Csv(a) => (Format::M365Csv, a),
            FormatCommand::M365Jsonl(a) => (Format::M365Jsonl, a),
            FormatCommand::Iis(a) => (Format::Iis, a),
            FormatCommand::Evtx(a) => (Format::Evtx, a),
            FormatCommand::WevtutilXml(a) => (Format::WevtutilXml, a),
            FormatCommand::Cyrus(a) => (Format::Cyrus, a),
            FormatCommand::Zimbra(a) => (Format::Zimbra, a),
        }
    }
}

/// Records handed to the pipeline per commit.
const BATCH: usize = 5_000;

#[derive(Default)]
struct Tally {
    imported: u64,
    duplicates: u64,
    skipped: BTreeMap<String, u64>,
    rejected: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.imported += other.imported;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        for (k, v) in &other.skipped {
            *self.skipped.entry(k.clone()).or_default() += v;
        }
    }

    fn print(&self, what: &str) {
        let skipped: u64 = self.skipped.values().sum();
        println!(
            "{what}: {} imported, {} already present, {skipped} skipped, {} rejected",
            self.imported, self.duplicates, self.rejected
        );
        for (reason, n) in &self.skipped {
            println!("  skipped {n}: {reason}");
        }
    }
}

pub fn run(dir: &Path, cmd: FormatCommand) -> Result<i32> {
    let (format, args) = cmd.split();
    let timezone = args.timezone.as_deref().map(parse_timezone).transpose()?;
    let mut auditor = datadir::open_auditor(dir)?;
    let total_bytes: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "importing {msg} [{bar:40}] {bytes}/{total_bytes} ({eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut total = Tally::default();
    let mut done_bytes = 0u64;
    for file in &args.files {
        let name = file.display().to_string();
        bar.set_message(name.clone());
        let ctx = Context {
            file: name.clone(),
            timezone,
            domain: args.domain.clone(),
            year: args.year,
        };
        let tally = import_file(
            &mut auditor,
            format,
            file,
            ctx,
            args.apply_policy,
            &bar,
            done_bytes,
        )?;
        done_bytes += std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        bar.set_position(done_bytes);
        bar.suspend(|| tally.print(&format!("{name} ({format})")));
        total.add(&tally);
    }
    bar.finish_and_clear();
    if args.files.len() > 1 {
        total.print(&format!("{} files", args.files.len()));
    }
    Ok(if total.rejected > 0 { 1 } else { 0 })
}

fn import_file(
    auditor: &mut Auditor<SqliteStore>,
    format: Format,
    file: &Path,
    ctx: Context,
    apply_policy: bool,
    bar: &ProgressBar,
    offset: u64,
) -> Result<Tally> {
    let input = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let mut importer = open(format, input, ctx);
    let mut tally = Tally::default();
    let mut coverage: HashMap<String, (Timestamp, Timestamp, u64)> = HashMap::new();
    let mut batch: Vec<ImportedObservation> = Vec::with_capacity(BATCH);
    let commit = |auditor: &mut Auditor<SqliteStore>,
                  batch: &mut Vec<ImportedObservation>,
                  tally: &mut Tally|
     -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (outcomes, _) = auditor.ingest_imported(std::mem::take(batch), &[], apply_policy)?;
        for o in outcomes {
            match o {
                ImportOutcome::Stored { .. } => tally.imported += 1,
                ImportOutcome::Duplicate => tally.duplicates += 1,
                ImportOutcome::Skipped { reason } => {
                    *tally
                        .skipped
                        .entry(format!("not audited by policy ({reason})"))
                        .or_default() += 1
                }
            }
        }
        Ok(())
    };
    let mut n = 0u64;
    while let Some(parsed) = importer.next() {
        match parsed {
            Parsed::Record(r) => {
                if already_in_this_log(auditor.store(), &r)? {
                    tally.duplicates += 1;
                    continue;
                }
                let o = &r.observation;
                let entry = coverage
                    .entry(mailaudit_pipeline::normalise(&o.mailbox))
                    .or_insert((o.time, o.time, 0));
                entry.0 = entry.0.min(o.time);
                entry.1 = entry.1.max(o.time);
                entry.2 += 1;
                batch.push(*r);
                if batch.len() >= BATCH {
                    commit(auditor, &mut batch, &mut tally)?;
                }
            }
            Parsed::Skipped { reason, .. } => *tally.skipped.entry(reason).or_default() += 1,
            Parsed::Rejected { reference, reason } => {
                tally.rejected += 1;
                bar.suspend(|| eprintln!("rejected {reference}: {reason}"));
            }
        }
        n += 1;
        if n.is_multiple_of(4096) {
            bar.set_position(offset + importer.bytes_read());
        }
    }
    commit(auditor, &mut batch, &mut tally)?;
    let now = Timestamp::now();
    let mut entries: Vec<CoverageEntry> = coverage
        .into_iter()
        .map(|(mailbox, (first, last, records))| CoverageEntry {
            source: format.source(),
            file: file.display().to_string(),
            mailbox,
            first,
            last,
            records,
            imported_at: now,
        })
        .collect();
    entries.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
    auditor.store_mut().add_coverage(&entries)?;
    Ok(tally)
}

/// A record of mailaudit's own export imported into the log it was exported from: that log
/// holds it at its original seq without a source key. Without this check it would be added
/// a second time.
fn already_in_this_log(store: &SqliteStore, r: &ImportedObservation) -> Result<bool> {
    let Some(seq) = mailaudit_key_seq(&r.source_key) else {
        return Ok(false);
    };
    Ok(store
        .get(seq)?
        .is_some_and(|stored| mailaudit_record_key(&stored) == r.source_key))
}

/// `mailaudit coverage`: per source and mailbox, the time ranges imported files cover, and
/// the gaps between them.
pub fn coverage(dir: &Path, mailbox: Option<&str>) -> Result<i32> {
    let store = datadir::open_store(dir)?;
    let mut entries = store.coverage()?;
    if let Some(m) = mailbox {
        let m = mailaudit_pipeline::normalise(m);
        entries.retain(|e| e.mailbox == m);
    }
    if entries.is_empty() {
        println!("no imported history recorded");
        return Ok(0);
    }
    for group in mailaudit_store::coverage_ranges(&entries) {
        println!("{} {}", group.source, group.mailbox);
        let mut previous: Option<Timestamp> = None;
        for r in &group.ranges {
            if let Some(end) = previous {
                if r.first > end {
                    println!("  gap      {end} .. {}", r.first);
                }
            }
            println!(
                "  covered  {} .. {}  ({} records from {} file(s))",
                r.first, r.last, r.records, r.files
            );
            previous = Some(previous.map_or(r.last, |p| p.max(r.last)));
        }
    }
    Ok(0)
}
