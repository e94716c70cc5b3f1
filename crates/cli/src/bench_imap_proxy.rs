//! `mailaudit bench-imap-proxy`: an IMAP server reached directly and through the auditing
//! proxy (in this process, recording into a fresh data directory), side by side in one run:
//! throughput of fetching a whole mailbox, and the latency of small commands.

use crate::bench::percentile;
use crate::datadir;
use crate::proxy::JournalSink;
use anyhow::{bail, Context, Result};
use clap::Args;
use mailaudit_pipeline::{WriterConfig, WriterHandle};
use mailaudit_source_imap_proxy::{
    AuditFailure, Limits, ProxyConfig, ProxyServer, Upstream, UpstreamSecurity,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchImapProxyArgs {
    /// The IMAP server (plain), `host:port`.
    #[arg(long)]
    upstream: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    /// Folder to fill and fetch (created when missing).
    #[arg(long, default_value = "bench")]
    folder: String,
    /// Messages in the folder (appended until there are this many).
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Size of each appended message, in bytes.
    #[arg(long, default_value_t = 100_000)]
    size: usize,
    /// Small commands timed per kind and path.
    #[arg(long, default_value_t = 2_000)]
    commands: usize,
    /// Whole-folder fetches per path (the best is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also time mbsync (Debian package isync) pulling the whole folder into a fresh Maildir,
    /// directly and through the proxy.
    #[arg(long)]
    mbsync: bool,
    /// Hold every recordable command until its intent is durable, even those the policy
    /// would not keep (by default, as `mailaudit proxy` does, only those it would keep).
    #[arg(long)]
    hold_all: bool,
    /// Where the proxy's records go (created fresh).
    #[arg(long, default_value = "./mailaudit-bench-imap-proxy")]
    dir: PathBuf,
}

/// A minimal synchronous IMAP client: enough to time commands.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u64,
}

impl Client {
    fn connect(addr: &str) -> Result<Client> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        let mut c = Client {
            r: BufReader::with_capacity(1 << 20, s.try_clone()?),
            w: s,
            n: 0,
        };
        let mut greeting = Vec::new();
        c.r.read_until(b'\n', &mut greeting)?;
        Ok(c)
    }

    /// Sends `cmd` (and `literal` after the server's go-ahead); returns the bytes received.
    fn cmd(&mut self, cmd: &str, literal: Option<&[u8]>) -> Result<u64> {
        self.n += 1;
        let tag = format!("b{}", self.n);
        self.w.write_all(format!("{tag} {cmd}\r\n").as_bytes())?;
        let mut total = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let got = self.r.read_until(b'\n', &mut line)?;
            if got == 0 {
                bail!("the server closed the connection during {cmd}");
            }
            total += got as u64;
            if line.starts_with(b"+") {
                if let Some(lit) = literal {
                    self.w.write_all(lit)?;
                    self.w.write_all(b"\r\n")?;
                }
                continue;
            }
            if let Some(size) = literal_size(&line) {
                let mut left = size;
                let mut buf = [0u8; 64 * 1024];
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.r.read(&mut buf[..want])?;
                    if n == 0 {
                        bail!("the server closed the connection in a literal");
                    }
                    left -= n as u64;
                }
                total += size;
                continue;
            }
            if line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ') {
                if !line[tag.len() + 1..].starts_with(b"OK") {
                    bail!("{cmd}: {}", String::from_utf8_lossy(&line).trim_end());
                }
                return Ok(total);
            }
        }
    }
}

fn literal_size(line: &[u8]) -> Option<u64> {
    let t = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = t.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&t[open + 1..])
        .ok()?
        .trim_end_matches('+')
        .parse()
        .ok()
}

fn message(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Bench <bench@example.org>\r\nSubject: Bench message {i}\r\nMessage-ID: <bench{i}@example.org>\r\n\r\n"
    )
    .into_bytes();
    while m.len() + 78 <= size {
        m.extend_from_slice(&[b'x'; 76]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn login(addr: &str, args: &BenchImapProxyArgs) -> Result<Client> {
    let mut c = Client::connect(addr)?;
    c.cmd(
        &format!("LOGIN \"{}\" \"{}\"", args.user, args.password),
        None,
    )?;
    Ok(c)
}

pub fn run(args: BenchImapProxyArgs) -> Result<i32> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("removing {}", args.dir.display()))?;
    }
    datadir::init(&args.dir, Some("bench-imap-proxy"))?;
    let auditor = datadir::open_auditor(&args.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let proxy_addr = runtime.block_on(async {
        let writer = WriterHandle::spawn(auditor, WriterConfig::default());
        let sink = JournalSink::start(
            writer,
            "source:imap-proxy:journal:bench".into(),
            Default::default(),
        );
        // --hold-all: every recordable command waits for its intent, whatever the policy.
        let sink = Arc::new(if args.hold_all {
            sink
        } else {
            sink.with_policy(&args.dir)?
        });
        let server = Arc::new(ProxyServer::new(
            ProxyConfig::default(),
            Limits::default(),
            Upstream {
                addr: args.upstream.clone(),
                security: UpstreamSecurity::Plain,
                server_name: "localhost".into(),
                ca_file: None,
                forward_client_ip: true,
            },
            AuditFailure::Refuse,
            None,
            sink,
        )?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(server.run(listener));
        Ok::<_, anyhow::Error>(addr.to_string())
    })?;

    // Fill the folder directly.
    let mut c = login(&args.upstream, &args)?;
    let _ = c.cmd(&format!("CREATE \"{}\"", args.folder), None);
    let have = {
        c.cmd(&format!("SELECT \"{}\"", args.folder), None)?;
        let mut s = Client::connect(&args.upstream)?;
        s.cmd(
            &format!("LOGIN \"{}\" \"{}\"", args.user, args.password),
            None,
        )?;
        let mut line = Vec::new();
        s.n += 1;
        s.w.write_all(format!("b{} STATUS \"{}\" (MESSAGES)\r\n", s.n, args.folder).as_bytes())?;
        s.r.read_until(b'\n', &mut line)?;
        let text = String::from_utf8_lossy(&line);
        text.split("MESSAGES ")
            .nth(1)
            .and_then(|r| {
                r.trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0)
    };
    if have < args.messages {
        eprintln!(
            "appending {} messages of {} bytes…",
            args.messages - have,
            args.size
        );
        for i in have..args.messages {
            let m = message(i, args.size);
            c.cmd(
                &format!("APPEND \"{}\" {{{}}}", args.folder, m.len()),
                Some(&m),
            )?;
        }
    }
    c.cmd("LOGOUT", None).ok();

    println!(
        "mailaudit bench-imap-proxy: {} messages of {} bytes in {}",
        args.messages, args.size, args.folder
    );
    println!(
        "upstream {} | proxy {} recording into {}",
        args.upstream,
        proxy_addr,
        args.dir.display()
    );
    // Throughput: one whole-folder body fetch per round, alternating paths.
    let mut best = [0f64; 2];
    for _ in 0..args.rounds.max(1) {
        for (i, addr) in [&args.upstream, &proxy_addr].into_iter().enumerate() {
            let mut c = login(addr, &args)?;
            c.cmd(&format!("EXAMINE \"{}\"", args.folder), None)?;
            let start = Instant::now();
            let bytes = c.cmd("UID FETCH 1:* (UID BODY.PEEK[])", None)?;
            let secs = start.elapsed().as_secs_f64();
            best[i] = best[i].max(bytes as f64 / secs / 1e6);
            c.cmd("LOGOUT", None).ok();
        }
    }
    println!(
        "whole-folder fetch   direct {:8.1} MB/s   proxy {:8.1} MB/s   ratio {:5.1}%",
        best[0],
        best[1],
        100.0 * best[1] / best[0]
    );
    if args.mbsync {
        let mut best = [f64::MAX; 2];
        for _ in 0..args.rounds.max(1) {
            for (i, addr) in [&args.upstream, &proxy_addr].into_iter().enumerate() {
                best[i] = best[i].min(mbsync_pull(addr, &args)?);
            }
        }
        let mb = (args.messages * args.size) as f64 / 1e6;
        println!(
            "mbsync pull          direct {:8.1} MB/s   proxy {:8.1} MB/s   ratio {:5.1}%   ({:.1} s vs {:.1} s)",
            mb / best[0],
            mb / best[1],
            100.0 * best[0] / best[1],
            best[0],
            best[1]
        );
    }
    // Latency of small commands.
    // SELECT is an owner's FolderBind (not audited by default, so not held unless
    // --hold-all); STORE +FLAGS is an Update (audited by default: held until its intent is
    // durable).
    let kinds = [
        ("NOOP", "NOOP".to_string()),
        ("FETCH 1 (FLAGS)", "FETCH 1 (FLAGS)".to_string()),
        ("SELECT", format!("SELECT \"{}\"", args.folder)),
        (
            "STORE (held)",
            "UID STORE 1 +FLAGS.SILENT (\\Flagged)".to_string(),
        ),
    ];
    for (name, cmd) in kinds {
        let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        let mut clients = [login(&args.upstream, &args)?, login(&proxy_addr, &args)?];
        for c in clients.iter_mut() {
            c.cmd(&format!("SELECT \"{}\"", args.folder), None)?;
        }
        for _ in 0..args.commands {
            for (i, c) in clients.iter_mut().enumerate() {
                let start = Instant::now();
                c.cmd(&cmd, None)?;
                times[i].push(start.elapsed());
            }
        }
        for t in times.iter_mut() {
            t.sort_unstable();
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let (d50, d99) = (percentile(&times[0], 0.5), percentile(&times[0], 0.99));
        let (p50, p99) = (percentile(&times[1], 0.5), percentile(&times[1], 0.99));
        println!(
            "{name:<20} direct p50 {:7.0} µs p99 {:7.0} µs | proxy p50 {:7.0} µs p99 {:7.0} µs | added p50 {:7.0} µs p99 {:7.0} µs",
            us(d50),
            us(d99),
            us(p50),
            us(p99),
            us(p50) - us(d50),
            us(p99) - us(d99)
        );
    }
    Ok(0)
}

/// Seconds mbsync takes to pull the whole folder into a fresh Maildir.
fn mbsync_pull(addr: &str, args: &BenchImapProxyArgs) -> Result<f64> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr}: expected host:port"))?;
    let dir = std::env::temp_dir().join(format!("mailaudit-bench-mbsync-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(dir.join("mail"))?;
    let conf = dir.join("mbsyncrc");
    std::fs::write(
        &conf,
        format!(
            "IMAPAccount bench\nHost {host}\nPort {port}\nUser {}\nPass {}\nSSLType None\nAuthMechs LOGIN\nPipelineDepth 50\n\n\
             IMAPStore remote\nAccount bench\n\n\
             MaildirStore local\nPath {d}/mail/\nInbox {d}/mail/INBOX\n\n\
             Channel bench\nFar :remote:{}\nNear :local:bench\nSyncState *\nCreate Near\nSync Pull\nExpunge None\n",
            args.user,
            args.password,
            args.folder,
            d = dir.display()
        ),
    )?;
    let start = Instant::now();
    let out = std::process::Command::new("mbsync")
        .arg("-q")
        .arg("-c")
        .arg(&conf)
        .arg("-a")
        .output()
        .context("running mbsync (Debian package isync)")?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("mbsync failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(secs)
}
