//! `mailaudit bench-dovecot`: the cost of the Dovecot source, side by side with the core's raw
//! ingest of the very same observations, for the file path (log lines through the source into
//! durable batches) and the HTTP path (one event per request, as Dovecot's exporter sends
//! them, against one observation per request to the raw API).

use anyhow::{bail, Context, Result};
use clap::Args;
use mailaudit_model::{Observation, Timestamp};
use mailaudit_pipeline::{Auditor, WriterConfig, WriterHandle};
use mailaudit_server::{
    create_token, DovecotIntake, ReaderPool, Role, ServerConfig, SourceRegistry, State,
};
use mailaudit_source_dovecot::{DovecotConfig, DovecotSource};
use mailaudit_store::{SqliteStore, Store};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchDovecotArgs {
    /// Replays of the captured Dovecot story (about 60 log lines each).
    #[arg(long, default_value_t = 5_000)]
    copies: usize,
    /// Observations per durable commit on the file path.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events sent over HTTP (each path), from the start of the replayed log.
    #[arg(long, default_value_t = 20_000)]
    http_events: usize,
    #[arg(long, default_value = "./mailaudit-bench-dovecot")]
    dir: PathBuf,
}

fn fresh_auditor(dir: &Path) -> Result<Auditor<SqliteStore>> {
    std::fs::create_dir_all(dir)?;
    let mut a = Auditor::new(SqliteStore::open(dir)?)?;
    crate::bench::audit_everything(&mut a)?;
    Ok(a)
}

/// The observations the source makes of `lines` (untimed: the raw path ingests them).
fn observations_of(lines: &[String]) -> Vec<Observation> {
    let cfg = DovecotConfig::default();
    let mut source = DovecotSource::new();
    let mut all = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Ok(o) = source.push_log_line(&cfg, line, &format!("bench.log:{}", i + 1)) {
            all.extend(o);
        }
    }
    all.extend(source.flush_all(&cfg));
    all
}

/// Lines through the source into durable batches, as `serve --dovecot-log` does; seconds.
fn file_path(lines: &[String], dir: &Path, batch: usize) -> Result<f64> {
    let cfg = DovecotConfig::default();
    let mut auditor = fresh_auditor(dir)?;
    let mut source = DovecotSource::new();
    let mut pending = Vec::new();
    let mut reference = String::with_capacity(32);
    let start = Instant::now();
    for (i, line) in lines.iter().enumerate() {
        reference.clear();
        let _ = write!(reference, "bench.log:{}", i + 1);
        if let Ok(o) = source.push_log_line(&cfg, line, &reference) {
            pending.extend(o);
        }
        if pending.len() >= batch {
            auditor.ingest(std::mem::take(&mut pending), &[])?;
        }
    }
    pending.extend(source.flush_all(&cfg));
    auditor.ingest(pending, &[])?;
    Ok(start.elapsed().as_secs_f64())
}

fn raw_path(observations: &[Observation], dir: &Path, batch: usize) -> Result<f64> {
    let mut auditor = fresh_auditor(dir)?;
    let start = Instant::now();
    for chunk in observations.chunks(batch) {
        auditor.ingest(chunk.to_vec(), &[])?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Starts an in-process server on a fresh data directory; returns its address and a token.
fn start_server(runtime: &tokio::runtime::Runtime, dir: &Path) -> Result<(SocketAddr, String)> {
    let mut auditor = fresh_auditor(dir)?;
    let token = create_token(auditor.store_mut(), "bench", Role::Admin)?;
    let writer = WriterHandle::spawn(auditor, WriterConfig::default());
    let data_dir = dir.to_path_buf();
    let state = State {
        writer,
        readers: Arc::new(ReaderPool::new(move || {
            Ok(Box::new(SqliteStore::open(&data_dir)?) as Box<dyn Store>)
        })),
        config: Arc::new(ServerConfig::default()),
        dovecot: Arc::new(DovecotIntake::new(DovecotConfig::default(), None)),
        sources: Arc::new(SourceRegistry::default()),
    };
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = mailaudit_server::router(state);
    runtime.spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok((addr, token))
}

/// Sends `bodies` to `url` from `clients` threads, one request each; returns requests/s.
fn post_all(url: &str, token: &str, bodies: Vec<String>, clients: usize) -> Result<f64> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (bodies, next) = (bodies.clone(), next.clone());
            let (url, auth) = (url.to_string(), format!("Bearer {token}"));
            std::thread::spawn(move || -> Result<()> {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok(());
                    };
                    match agent
                        .post(&url)
                        .set("Authorization", &auth)
                        .send_string(body)
                    {
                        Ok(_) => {}
                        // A malformed or unmapped event is answered 400 and counted; it is
                        // part of the load all the same.
                        Err(ureq::Error::Status(400, _)) => {}
                        Err(e) => bail!("POST {url}: {e}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok(bodies.len() as f64 / start.elapsed().as_secs_f64())
}

pub fn run(args: BenchDovecotArgs) -> Result<i32> {
    if args.dir.exists() {
        bail!(
            "{} exists; the benchmark needs a fresh directory",
            args.dir.display()
        );
    }
    let lines = mailaudit_synth::dovecot_log_lines(args.copies);
    eprintln!(
        "file path: {} log lines through the Dovecot source…",
        lines.len()
    );
    let observations = observations_of(&lines);
    let file_secs = file_path(&lines, &args.dir.join("file"), args.batch)?;
    eprintln!(
        "raw: the same {} observations straight into the pipeline…",
        observations.len()
    );
    let raw_secs = raw_path(&observations, &args.dir.join("raw"), args.batch)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let events: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            l.split_once(": Info: {")
                .map(|(_, rest)| format!("{{{rest}"))
        })
        .take(args.http_events)
        .collect();
    let (addr, token) = start_server(&runtime, &args.dir.join("http-dovecot"))?;
    eprintln!("HTTP: {} Dovecot events, one per request…", events.len());
    let dovecot_rps = post_all(
        &format!("http://{addr}/api/v1/sources/dovecot/events"),
        &token,
        events.clone(),
        args.clients,
    )?;
    let (addr, token) = start_server(&runtime, &args.dir.join("http-raw"))?;
    let raw_bodies: Vec<String> = observations
        .iter()
        .take(events.len())
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()
        .context("serialising observations")?;
    eprintln!("HTTP: {} observations, one per request…", raw_bodies.len());
    let raw_rps = post_all(
        &format!("http://{addr}/api/v1/observations"),
        &token,
        raw_bodies,
        args.clients,
    )?;

    let n = observations.len() as f64;
    println!(
        "mailaudit bench-dovecot: {} log lines ({} copies of the captured story) -> {} observations; {} HTTP events; {}",
        lines.len(),
        args.copies,
        observations.len(),
        events.len(),
        Timestamp::now()
    );
    println!();
    println!(
        "| path | Dovecot source | raw ingest of the same observations | cost of the source |"
    );
    println!("|---|---|---|---|");
    println!(
        "| file (log lines, durable batches of {}) | {:.0} observations/s ({:.0} lines/s) | {:.0} observations/s | {:+.0}% time |",
        args.batch,
        n / file_secs,
        lines.len() as f64 / file_secs,
        n / raw_secs,
        (file_secs / raw_secs - 1.0) * 100.0
    );
    println!(
        "| HTTP (one request each, {} clients) | {:.0} events/s | {:.0} observations/s | {:+.0}% time per request |",
        args.clients,
        dovecot_rps,
        raw_rps,
        (raw_rps / dovecot_rps - 1.0) * 100.0
    );
    Ok(0)
}
