//! search, export, verify, proof, verify-proof and token.

use crate::datadir::{self, local_actor};
use crate::filters::FilterArgs;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mailaudit_export::{ExportWriter, Format};
use mailaudit_model::{AuditRecord, Operation, Parameter};
use mailaudit_server::{create_token, Role};
use mailaudit_store::{inclusion_proof, verify as verify_log, InclusionProof, PageRequest, Store};
use std::io::Write;
use std::path::Path;

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    filters: FilterArgs,
    /// Records per page.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue after this cursor (printed at the end of a page).
    #[arg(long)]
    cursor: Option<String>,
    /// Print every match, all pages.
    #[arg(long)]
    all: bool,
    /// Print JSON (one page object, or JSON lines with --all) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    filters: FilterArgs,
    /// csv, jsonl or exchange-xml.
    #[arg(long, default_value = "jsonl")]
    format: Format,
    /// Output file; standard output by default.
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Creates a bearer token; it is printed once.
    Create {
        #[arg(long)]
        role: Role,
        /// A name to tell tokens apart; it is the actor of what the token does.
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

fn param(name: &str, value: impl Into<String>) -> Parameter {
    Parameter {
        name: name.into(),
        value: value.into(),
    }
}

fn single_mailbox(f: &FilterArgs) -> Option<&str> {
    match f.mailbox.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    }
}

fn table_row(r: &AuditRecord) -> String {
    let items = match r.items.as_slice() {
        [] => String::new(),
        [one] => one
            .subject
            .clone()
            .or_else(|| one.message_id.clone())
            .unwrap_or_default(),
        many => format!("{} items", many.len()),
    };
    format!(
        "{:<8} {:<27} {:<22} {:<8} {:<28} {:<28} {:<9} {:<16} {}",
        r.seq,
        r.time.to_rfc3339(),
        r.operation.as_str(),
        r.logon_type.as_str(),
        r.mailbox,
        r.actor,
        r.result.as_str(),
        r.client.ip.map(|i| i.to_string()).unwrap_or_default(),
        [r.folder.clone().unwrap_or_default(), items]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("  ")
    )
}

pub fn search(dir: &Path, args: SearchArgs) -> Result<i32> {
    let q = args.filters.to_query()?;
    let mut auditor = datadir::open_auditor(dir)?;
    let mut page = PageRequest {
        limit: args.limit.max(1),
        cursor: args.cursor.clone(),
        with_total: true,
    };
    let first = auditor.store().search(&q, &page)?;
    let total = first.total.unwrap_or(0);
    auditor.record_audit_access(
        &local_actor(),
        Operation::AuditLogSearch,
        single_mailbox(&args.filters),
        vec![
            param("query", q.describe()),
            param("total", total.to_string()),
        ],
    )?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if args.json && !args.all {
        serde_json::to_writer_pretty(&mut out, &first)?;
        writeln!(out)?;
        return Ok(0);
    }
    if !args.json {
        writeln!(
            out,
            "{:<8} {:<27} {:<22} {:<8} {:<28} {:<28} {:<9} {:<16} FOLDER / ITEMS",
            "ID", "TIME", "OPERATION", "LOGON", "MAILBOX", "ACTOR", "RESULT", "CLIENT IP"
        )?;
    }
    let mut shown = 0usize;
    let mut current = first;
    loop {
        for r in &current.records {
            if args.json {
                serde_json::to_writer(&mut out, r)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", table_row(r))?;
            }
        }
        shown += current.records.len();
        match (&current.next_cursor, args.all) {
            (Some(c), true) => {
                page.cursor = Some(c.clone());
                page.with_total = false;
                current = auditor.store().search(&q, &page)?;
            }
            (Some(c), false) => {
                if !args.json {
                    writeln!(
                        out,
                        "-- {shown} of {total} shown; next page: --cursor {c}  (or --all)"
                    )?;
                }
                break;
            }
            (None, _) => {
                if !args.json {
                    writeln!(out, "-- {shown} of {total} records")?;
                }
                break;
            }
        }
    }
    Ok(0)
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    // indicatif draws only on a terminal; in a pipe or CI it stays silent.
    bar
}

pub fn export(dir: &Path, args: ExportArgs) -> Result<i32> {
    let mut q = args.filters.to_query()?;
    let mut auditor = datadir::open_auditor(dir)?;
    // A snapshot: exactly the records counted below, whatever is appended while it runs.
    q.below_seq = Some(auditor.store().size()?);
    let mut page = PageRequest {
        limit: 1000,
        cursor: None,
        with_total: true,
    };
    let first = auditor.store().search(&q, &page)?;
    let total = first.total.unwrap_or(0);
    auditor.record_audit_access(
        &local_actor(),
        Operation::AuditLogExport,
        single_mailbox(&args.filters),
        vec![
            param("query", q.describe()),
            param("format", args.format.as_str()),
            param("total", total.to_string()),
        ],
    )?;
    let sink: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = ExportWriter::new(args.format, std::io::BufWriter::new(sink))?;
    let bar = progress(total, "exporting");
    let mut current = first;
    loop {
        for r in &current.records {
            writer.write(r)?;
        }
        bar.inc(current.records.len() as u64);
        match current.next_cursor.take() {
            Some(c) => {
                page.cursor = Some(c);
                page.with_total = false;
                current = auditor.store().search(&q, &page)?;
            }
            None => break,
        }
    }
    let count = writer.count();
    writer.finish()?.flush()?;
    bar.finish_and_clear();
    if let Some(p) = &args.output {
        eprintln!("exported {count} records to {}", p.display());
    }
    Ok(0)
}

pub fn verify(dir: &Path, key: Option<&str>) -> Result<i32> {
    let store = datadir::open_store(dir)?;
    let key = datadir::verifier(dir, key)?;
    let bar = progress(store.size()?, "verifying");
    match verify_log(&store, &key, &mut |p| bar.set_position(p.done)) {
        Ok(report) => {
            bar.finish_and_clear();
            println!(
                "OK: {} leaves ({} records, {} pruned by retention) re-derive root {}; {} checkpoints verified (latest covers {} leaves)",
                report.leaves,
                report.records,
                report.pruned,
                report.root,
                report.checkpoints,
                report.latest_checkpoint_size.map_or("none".into(), |s| s.to_string())
            );
            Ok(0)
        }
        Err(e) => {
            bar.finish_and_clear();
            println!("FAILED: {e}");
            Ok(1)
        }
    }
}

pub fn proof(dir: &Path, id: u64, output: Option<&Path>) -> Result<i32> {
    let mut auditor = datadir::open_auditor(dir)?;
    let covering = auditor
        .store()
        .checkpoints()?
        .into_iter()
        .rev()
        .find(|c| c.size > id);
    let checkpoint = match covering {
        Some(c) => c,
        None => auditor.checkpoint()?,
    };
    let proof = inclusion_proof(auditor.store(), id, &checkpoint)?;
    auditor.record_audit_access(
        &local_actor(),
        Operation::AuditLogSearch,
        Some(&proof.record.mailbox),
        vec![param("proof", id.to_string())],
    )?;
    let text = serde_json::to_string_pretty(&proof)?;
    match output {
        Some(p) => {
            std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote the inclusion proof of record {id} in a tree of {} leaves to {}",
                proof.tree_size,
                p.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(0)
}

pub fn verify_proof(file: &Path, key: &str) -> Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let proof: InclusionProof = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an inclusion proof", file.display()))?;
    let key = datadir::verifier(Path::new("."), Some(key))?;
    match proof.verify(&key) {
        Ok(cp) => {
            println!(
                "OK: record {} ({} on {} by {} at {}) is leaf {} of the tree of {} leaves signed by {} for {}",
                proof.record.seq,
                proof.record.operation,
                proof.record.mailbox,
                proof.record.actor,
                proof.record.time,
                proof.leaf_index,
                cp.size,
                key.name(),
                cp.origin
            );
            Ok(0)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(1)
        }
    }
}

pub fn token(dir: &Path, cmd: TokenCommand) -> Result<i32> {
    let mut store = datadir::open_store(dir)?;
    match cmd {
        TokenCommand::Create { role, name } => {
            let name = match name {
                Some(n) => n,
                None => {
                    let mut b = [0u8; 3];
                    getrandom::getrandom(&mut b)?;
                    format!("{}-{}", role.as_str(), hex::encode(b))
                }
            };
            let token = create_token(&mut store, &name, role)?;
            eprintln!(
                "created {} token `{name}`; it is shown only now:",
                role.as_str()
            );
            println!("{token}");
        }
        TokenCommand::List => {
            for t in store.tokens()? {
                println!(
                    "{:<24} {:<8} created {}{}",
                    t.name,
                    t.role,
                    t.created,
                    if t.revoked { "  REVOKED" } else { "" }
                );
            }
        }
        TokenCommand::Revoke { name } => {
            if store.revoke_token(&name)? {
                println!("revoked `{name}`");
            } else {
                anyhow::bail!("no token named `{name}`");
            }
        }
    }
    Ok(0)
}
