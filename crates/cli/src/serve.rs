//! `mailaudit serve`: the writer thread, the HTTP API, checkpoints on a fixed cadence (also
//! when idle), retention, and a final checkpoint on shutdown.

use crate::datadir;
use anyhow::{Context, Result};
use clap::Args;
use mailaudit_model::Timestamp;
use mailaudit_pipeline::{WriterConfig, WriterHandle};
use mailaudit_server::{
    create_token, DovecotIntake, ReaderPool, Role, ServerConfig, SourceRegistry, State,
};
use mailaudit_store::{SqliteStore, Store};
use mailaudit_synth::{Config as SynthConfig, Generator};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default: expose it deliberately.
    #[arg(long, default_value = "127.0.0.1:8400")]
    listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds between signed checkpoints (signed also when nothing happened).
    #[arg(long, default_value_t = 60)]
    checkpoint_interval: u64,
    /// Fill a fresh data directory with synthetic records to look at, and print an admin token.
    #[arg(long)]
    demo: bool,
    /// How many synthetic records --demo generates.
    #[arg(long, default_value_t = 100_000)]
    demo_records: u64,
    /// Follow this Dovecot log file (the lossless way in; see docs/dovecot.md).
    #[arg(long)]
    dovecot_log: Option<PathBuf>,
    #[command(flatten)]
    dovecot: crate::dovecot::DovecotArgs,
    #[command(flatten)]
    outputs: crate::outputs::OutputsArgs,
    #[command(flatten)]
    console: crate::console_cmd::ConsoleArgs,
}

fn fill_demo(dir: &Path, records: u64) -> Result<()> {
    let mut auditor = datadir::open_auditor(dir)?;
    if auditor.store().size()? > 1 {
        eprintln!("demo: the data directory has records already; adding none");
        return Ok(());
    }
    let span_days = 30;
    let config = SynthConfig {
        mailboxes: 500,
        start: Timestamp::now().plus_secs(-(span_days as i64) * 86_400),
        span_days,
        total: records,
        ..Default::default()
    };
    eprintln!("demo: generating {records} records of 30 days' activity in 500 mailboxes…");
    let mut generator = Generator::new(config);
    let mut left = records;
    while left > 0 {
        let n = left.min(20_000);
        let batch: Vec<_> = generator.by_ref().take(n as usize).collect();
        auditor.ingest(batch, &[])?;
        left -= n;
    }
    auditor.checkpoint()?;
    Ok(())
}

pub fn run(dir: &Path, args: ServeArgs) -> Result<i32> {
    datadir::ensure_initialised(dir)?;
    if args.demo {
        fill_demo(dir, args.demo_records)?;
        let mut store = datadir::open_store(dir)?;
        let token = create_token(
            &mut store,
            &format!("demo-admin-{}", std::process::id()),
            Role::Admin,
        )?;
        eprintln!("demo admin token (shown once): {token}");
        crate::console_cmd::demo_account(dir)?;
    }
    let auditor = datadir::open_auditor(dir)?;
    let writer = WriterHandle::spawn(auditor, WriterConfig::default());
    let outputs = crate::outputs::Running::start(dir, &args.outputs)?;
    let data_dir = dir.to_path_buf();
    let readers =
        ReaderPool::new(move || Ok(Box::new(SqliteStore::open(&data_dir)?) as Box<dyn Store>));
    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        checkpoint_interval: Duration::from_secs(args.checkpoint_interval.max(1)),
        ..Default::default()
    };
    let registry = Arc::new(SourceRegistry::default());
    let intake = Arc::new(DovecotIntake::new(
        args.dovecot.config(),
        args.dovecot.sieve_dir.clone(),
    ));
    let state = State {
        writer: writer.clone(),
        readers: Arc::new(readers),
        config: Arc::new(config.clone()),
        dovecot: intake.clone(),
        sources: registry.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            let local = listener.local_addr()?;
            tokio::spawn(checkpoints(writer.clone(), config.checkpoint_interval));
            tokio::spawn(retention(writer.clone(), config.retention_interval));
            tokio::spawn(dovecot_http_due(writer.clone(), intake, registry.clone()));
            if let Some(path) = args.dovecot_log.clone() {
                tokio::spawn(crate::dovecot::follow(
                    path,
                    args.dovecot.config(),
                    args.dovecot.sieve_dir.clone(),
                    writer.clone(),
                    dir.to_path_buf(),
                    registry.clone(),
                ));
            }
            let tls = match (&args.console.tls_cert, &args.console.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
                _ => None,
            };
            // Tests and scripts wait for this line.
            println!(
                "mailaudit listening on {}://{local} (data dir {})",
                if tls.is_some() { "https" } else { "http" },
                dir.display()
            );
            tracing::info!("listening on {local}");
            outputs.listen(&writer);
            let console = mailaudit_console::Ctx::new(state.clone(), args.console.config(dir)?)
                .with_alerts(outputs.shared());
            let app = outputs.router(mailaudit_server::router(state.clone()), state);
            let app = app.merge(mailaudit_console::router(console));
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            match tls {
                Some(acceptor) => {
                    let listener = crate::tls::TlsListener::new(listener, acceptor)?;
                    // The no-op tap is what gives a custom listener axum's
                    // `ConnectInfo<SocketAddr>`, which the login rate limit needs.
                    axum::serve(axum::serve::ListenerExt::tap_io(listener, |_| {}), app)
                        .with_graceful_shutdown(shutdown())
                        .await
                }
                None => {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown())
                        .await
                }
            }
            .context("serving HTTP")?;
            match writer.checkpoint().await {
                Ok(cp) => tracing::info!("final checkpoint at size {}", cp.size),
                Err(e) => tracing::error!("final checkpoint failed: {e}"),
            }
            Ok::<_, anyhow::Error>(outputs)
        })?
        .stop();
    Ok(0)
}

async fn checkpoints(writer: WriterHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = writer.checkpoint().await {
            tracing::error!("signing a checkpoint failed: {e}");
        }
    }
}

/// Emits what the Dovecot HTTP intake held back for correlation once its window passed.
async fn dovecot_http_due(
    writer: WriterHandle,
    intake: Arc<DovecotIntake>,
    registry: Arc<SourceRegistry>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match intake.due(Timestamp::now()) {
            Ok((observations, stats)) => {
                registry.report("dovecot-http", stats);
                if !observations.is_empty() {
                    if let Err(e) = writer.ingest(observations).await {
                        tracing::error!("storing Dovecot observations failed: {e}");
                    }
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
}

async fn retention(writer: WriterHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match writer.prune(Timestamp::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("retention removed the contents of {n} records (hashes kept)"),
            Err(e) => tracing::error!("retention failed: {e}"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM: how `serve`, `proxy` and `milter` are asked to stop.
pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
