//! `mailaudit bench-console`: times the web console's pages over HTTP against a store of
//! generator records (built once, then reused), each page signed in as an auditor and
//! recorded in the log as it is in production. Prints p50 and p99 per view beside the
//! target.

use crate::bench::audit_everything;
use anyhow::{bail, Context, Result};
use clap::Args;
use mailaudit_console::{ConsoleConfig, Ctx, LocalRole, Users};
use mailaudit_model::Timestamp;
use mailaudit_pipeline::{WriterConfig, WriterHandle};
use mailaudit_server::{DovecotIntake, ReaderPool, ServerConfig, SourceRegistry, State};
use mailaudit_store::{SqliteStore, Store};
use mailaudit_synth::{Config as SynthConfig, Generator};
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchConsoleArgs {
    /// Records in the store (generated once; a store that has them is reused).
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Mailboxes in the synthetic organisation.
    #[arg(long, default_value_t = 5000)]
    mailboxes: u32,
    /// Renders per view.
    #[arg(long, default_value_t = 50)]
    renders: usize,
    /// The data directory to build or reuse.
    #[arg(long, default_value = "./mailaudit-bench-console")]
    dir: PathBuf,
}

const DAY: i64 = 86_400;
const SPAN_DAYS: u32 = 90;
const TARGET_MS: f64 = 150.0;

fn start_time() -> Timestamp {
    Timestamp::from_secs(1_780_000_000 / DAY * DAY)
}

fn build(args: &BenchConsoleArgs) -> Result<()> {
    if crate::datadir::is_initialised(&args.dir) {
        let size = crate::datadir::open_store(&args.dir)?.size()?;
        if size >= args.records {
            eprintln!("reusing {} ({size} records)", args.dir.display());
            return Ok(());
        }
        bail!(
            "{} holds {size} records, fewer than --records {}; remove it or pass another --dir",
            args.dir.display(),
            args.records
        );
    }
    crate::datadir::init(&args.dir, Some("bench-console"))?;
    let mut auditor = crate::datadir::open_auditor(&args.dir)?;
    audit_everything(&mut auditor)?;
    let mut generator = Generator::new(SynthConfig {
        mailboxes: args.mailboxes,
        start: start_time(),
        span_days: SPAN_DAYS,
        total: args.records,
        ..Default::default()
    });
    eprintln!("generating and storing {} records…", args.records);
    let t = Instant::now();
    let mut left = args.records;
    while left > 0 {
        let n = left.min(10_000);
        let batch: Vec<_> = generator.by_ref().take(n as usize).collect();
        auditor.ingest(batch, &[])?;
        left -= n;
    }
    auditor.checkpoint()?;
    eprintln!("stored in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// The `p` quantile of sorted times, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    crate::bench::percentile(sorted, p).as_secs_f64() * 1000.0
}

fn date(t: Timestamp) -> String {
    t.to_rfc3339().get(..10).unwrap_or("").to_string()
}

struct Client {
    agent: ureq::Agent,
    base: String,
    cookie: String,
}

impl Client {
    fn sign_in(base: &str, name: &str, password: &str) -> Result<Client> {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(300))
            .build();
        let form = agent.get(&format!("{base}/console/login")).call()?;
        let login_cookie = form
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .context("the sign-in page set no cookie")?
            .to_string();
        let page = form.into_string()?;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .context("the sign-in page has no CSRF token")?
            .to_string();
        let resp = agent
            .post(&format!("{base}/console/login"))
            .set("Cookie", &login_cookie)
            .send_form(&[("csrf", &csrf), ("username", name), ("password", password)]);
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.into()),
        };
        if resp.status() != 303 {
            bail!("signing in failed with status {}", resp.status());
        }
        let cookie = resp
            .all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("mailaudit_console="))
            .and_then(|c| c.split(';').next())
            .context("no session cookie")?
            .to_string();
        Ok(Client {
            agent,
            base: base.to_string(),
            cookie,
        })
    }

    /// One page, read to the end; returns the time and the body length.
    fn render(&self, path: &str) -> Result<(Duration, usize)> {
        let t = Instant::now();
        let resp = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Cookie", &self.cookie)
            .call()
            .with_context(|| format!("GET {path}"))?;
        let body = resp.into_string()?;
        Ok((t.elapsed(), body.len()))
    }
}

pub fn run(args: BenchConsoleArgs) -> Result<i32> {
    build(&args)?;
    let dir = args.dir.clone();
    let mut password = [0u8; 16];
    getrandom::getrandom(&mut password).context("reading randomness")?;
    let password = hex::encode(password);
    Users::open(&dir)?.set("bench", LocalRole::Auditor, &password)?;
    let size = crate::datadir::open_store(&dir)?.size()?;

    let writer = WriterHandle::spawn(crate::datadir::open_auditor(&dir)?, WriterConfig::default());
    let reader_dir = dir.clone();
    let state = State {
        writer,
        readers: Arc::new(ReaderPool::new(move || {
            Ok(Box::new(SqliteStore::open(&reader_dir)?) as Box<dyn Store>)
        })),
        config: Arc::new(ServerConfig::default()),
        dovecot: Arc::new(DovecotIntake::new(Default::default(), None)),
        sources: Arc::new(SourceRegistry::default()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = mailaudit_console::router(Ctx::new(state, ConsoleConfig::new(dir.clone())));
    runtime.spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let client = Client::sign_in(&format!("http://{addr}"), "bench", &password)?;

    let end = start_time().plus_secs(SPAN_DAYS as i64 * DAY);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let mailboxes = args.mailboxes;
    let mailbox = move |rng: &mut rand::rngs::SmallRng| {
        format!("user{:05}%40example.com", rng.gen_range(0..mailboxes))
    };
    type View = (
        &'static str,
        Box<dyn Fn(&mut rand::rngs::SmallRng) -> String>,
    );
    let last_week = date(end.plus_secs(-7 * DAY));
    let views: Vec<View> = vec![
        (
            "search, default view (the last 7 days)",
            Box::new(move |_| format!("/console/search?from={last_week}")),
        ),
        (
            "search, everything (date cleared)",
            Box::new(|_| "/console/search?from=".to_string()),
        ),
        (
            "search, non-owner access to one mailbox, 30 days",
            Box::new(move |rng| {
                let from = start_time().plus_secs(rng.gen_range(0..SPAN_DAYS as i64 - 30) * DAY);
                format!(
                    "/console/search?mailbox={}&non_owner=all&from={}&to={}",
                    mailbox(rng),
                    date(from),
                    date(from.plus_secs(29 * DAY))
                )
            }),
        ),
        (
            "search, one actor, 30 days",
            Box::new(move |rng| {
                let from = start_time().plus_secs(rng.gen_range(0..SPAN_DAYS as i64 - 30) * DAY);
                format!(
                    "/console/search?actor={}&from={}&to={}",
                    mailbox(rng),
                    date(from),
                    date(from.plus_secs(29 * DAY))
                )
            }),
        ),
        (
            "record details",
            Box::new(move |rng| format!("/console/records/{}", rng.gen_range(0..size))),
        ),
        (
            "non-owner report, one mailbox, 30 days",
            Box::new(move |rng| {
                let from = start_time().plus_secs(rng.gen_range(0..SPAN_DAYS as i64 - 30) * DAY);
                format!(
                    "/console/report?mailbox={}&from={}&to={}",
                    mailbox(rng),
                    date(from),
                    date(from.plus_secs(29 * DAY))
                )
            }),
        ),
        (
            "account timeline, one actor, 7 days",
            Box::new(move |rng| {
                let from = start_time().plus_secs(rng.gen_range(0..SPAN_DAYS as i64 - 7) * DAY);
                format!(
                    "/console/timeline?actor={}&from={}&to={}",
                    mailbox(rng),
                    date(from),
                    date(from.plus_secs(6 * DAY))
                )
            }),
        ),
    ];
    println!(
        "mailaudit bench-console: {size} records in the log, {} mailboxes, {} renders per view, over HTTP on loopback, each render recorded (AuditLogSearch)",
        args.mailboxes, args.renders
    );
    println!();
    println!("| view | p50 | p99 | mean page size | target p50 |");
    println!("|---|---|---|---|---|");
    let mut all_met = true;
    for (name, url) in &views {
        // One render first so the page cache holds the indexes, as on a running server.
        client.render(&url(&mut rng))?;
        let mut times = Vec::with_capacity(args.renders);
        let mut bytes = 0usize;
        for _ in 0..args.renders {
            let (d, n) = client.render(&url(&mut rng))?;
            times.push(d);
            bytes += n;
        }
        times.sort();
        let p50 = percentile(&times, 0.5);
        let met = p50 <= TARGET_MS;
        all_met &= met;
        println!(
            "| {name} | {p50:.1} ms | {:.1} ms | {} KB | ≤ {TARGET_MS:.0} ms {} |",
            percentile(&times, 0.99),
            bytes / args.renders.max(1) / 1000,
            if met { "(met)" } else { "(missed)" }
        );
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(if all_met { 0 } else { 1 })
}
