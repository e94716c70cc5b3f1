//! `mailaudit bench-milter`: messages per second through a real Postfix with the
//! `mailaudit milter` in its smtpd, against the same Postfix without it, side by side in one
//! run. One Postfix instance (its own config directory, queue and log, loopback) has two
//! smtpd listeners that differ only in `smtpd_milters`; SASL goes to a Dovecot that only
//! authenticates; every message is discarded after queueing. Parallel SMTP clients submit
//! authenticated messages (one per session, as mail clients do) and count those Postfix
//! queued (`250 … queued as`). The phases alternate (with, without, with, without) so that
//! drift in the machine's load hits both sides.
//!
//! Needs root and Debian's postfix and dovecot-core packages (the end-to-end tests' too).

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchMilterArgs {
    /// Concurrent SMTP clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds per phase; there are two phases per side, alternating.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Messages per SMTP session (1 = a new connection and login for every message).
    #[arg(long, default_value_t = 1)]
    per_session: usize,
    /// Body size of each message, in bytes.
    #[arg(long, default_value_t = 2_000)]
    body_bytes: usize,
    /// How Postfix reaches the milter: a unix socket (recommended) or loopback TCP.
    #[arg(long, value_enum, default_value_t = Socket::Unix)]
    socket: Socket,
    /// Working directory (Postfix, Dovecot, the milter's data directory); emptied first.
    #[arg(long, default_value = "/tmp/mailaudit-bench-milter")]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Socket {
    Unix,
    Inet,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn uid_gid(user: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .with_context(|| {
            format!("no `{user}` system user: are postfix and dovecot-core installed?")
        })
}

/// Runs a command that starts a daemon, with its output in a file (the daemon keeps the
/// streams it was given).
fn run_daemon(cmd: &mut Command, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out)?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}): {}",
            std::fs::read_to_string(out).unwrap_or_default()
        );
    }
    Ok(())
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{what} did not listen on 127.0.0.1:{port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Everything the benchmark started, stopped when dropped (also after an error).
struct Running {
    dir: PathBuf,
    dovecot_pid: Option<u32>,
    postfix: bool,
    milter: Option<Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::mem::take(&mut self.postfix) {
            let _ = run_daemon(
                Command::new("postfix")
                    .arg("-c")
                    .arg(self.dir.join("postfix/etc"))
                    .arg("stop"),
                &self.dir.join("postfix-stop.out"),
            );
        }
        if let Some(mut m) = self.milter.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &m.id().to_string()])
                .status();
            let _ = m.wait();
        }
        if let Some(pid) = self.dovecot_pid.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

fn start_dovecot(dir: &Path, running: &mut Running) -> Result<u16> {
    let d = dir.join("dovecot");
    std::fs::create_dir_all(d.join("run"))?;
    std::fs::create_dir_all(d.join("state"))?;
    let (uid, gid) = uid_gid("dovecot")?;
    std::fs::write(
        d.join("users"),
        format!("bench:{{PLAIN}}benchpw:{uid}:{gid}::/nonexistent\n"),
    )?;
    let port = free_port()?;
    let p = d.display();
    std::fs::write(
        d.join("dovecot.conf"),
        format!(
            "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\nprotocols =\n\
             listen = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
             default_internal_user = dovecot\ndefault_internal_group = dovecot\n\
             default_login_user = dovenull\nauth_mechanisms = plain\n\
             passdb {{\n  driver = passwd-file\n  args = {p}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {p}/users\n}}\n\
             service auth {{\n  inet_listener {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
        ),
    )?;
    run_daemon(
        Command::new("dovecot")
            .arg("-c")
            .arg(d.join("dovecot.conf")),
        &d.join("start.out"),
    )?;
    wait_port(port, "Dovecot's auth service")?;
    let start = Instant::now();
    while running.dovecot_pid.is_none() {
        running.dovecot_pid = std::fs::read_to_string(d.join("run/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if start.elapsed() > Duration::from_secs(10) {
            bail!("Dovecot wrote no master.pid within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(port)
}

fn start_milter(dir: &Path, socket: Socket, running: &mut Running) -> Result<String> {
    let exe = std::env::current_exe().context("finding the mailaudit binary")?;
    let listen = match socket {
        Socket::Unix => format!("unix:{}/milter.sock", dir.display()),
        Socket::Inet => "inet:127.0.0.1:0".to_string(),
    };
    let mut child = Command::new(exe)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "milter",
            "--listen",
            &listen,
            "--socket-mode",
            "666",
            "--rate-per-hour",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("milter.log"))?)
        .spawn()
        .context("starting mailaudit milter")?;
    let stdout = child.stdout.take().context("the milter's stdout")?;
    running.milter = Some(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    match line.trim().strip_prefix("mailaudit milter listening on ") {
        Some(addr) => Ok(addr.to_string()),
        None => bail!(
            "the milter did not start: {line}{}",
            std::fs::read_to_string(dir.join("milter.log")).unwrap_or_default()
        ),
    }
}

fn start_postfix(dir: &Path, auth: u16, milter: &str, running: &mut Running) -> Result<(u16, u16)> {
    let root = dir.join("postfix");
    for d in ["etc", "queue", "data"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let (uid, _) = uid_gid("postfix")?;
    std::os::unix::fs::chown(root.join("data"), Some(uid), None)?;
    let r = root.display();
    std::fs::write(
        root.join("etc/main.cf"),
        format!(
            "compatibility_level = 3.6\nqueue_directory = {r}/queue\ndata_directory = {r}/data\n\
             maillog_file = {r}/maillog\nmaillog_file_prefixes = {r}\nmyhostname = mx.example.org\n\
             mydomain = example.org\nmydestination =\ninet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\nmynetworks = 127.0.0.0/8\nalias_maps =\nalias_database =\n\
             default_transport = discard\nlocal_transport = discard\nrelay_transport = discard\n\
             smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = inet:127.0.0.1:{auth}\nsmtpd_tls_security_level = none\n\
             smtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
             milter_default_action = tempfail\nsmtpd_client_connection_rate_limit = 0\n\
             smtpd_client_message_rate_limit = 0\nanvil_rate_time_unit = 60s\n"
        ),
    )?;
    let with = free_port()?;
    let without = free_port()?;
    std::fs::write(
        root.join("etc/master.cf"),
        format!(
            "127.0.0.1:{with} inet n - n - - smtpd -o smtpd_milters={milter}\n\
             127.0.0.1:{without} inet n - n - - smtpd -o smtpd_milters=\n\
             pickup unix n - n 60 1 pickup\ncleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\nrewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\ndefer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\nverify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\nproxymap unix - - n - - proxymap\n\
             showq unix n - n - - showq\nerror unix - - n - - error\n\
             retry unix - - n - - error\ndiscard unix - - n - - discard\n\
             anvil unix - - n - 1 anvil\nscache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        ),
    )?;
    run_daemon(
        Command::new("postfix")
            .arg("-c")
            .arg(root.join("etc"))
            .arg("start"),
        &dir.join("postfix-start.out"),
    )
    .with_context(|| {
        format!(
            "starting Postfix; its log:\n{}",
            std::fs::read_to_string(root.join("maillog")).unwrap_or_default()
        )
    })?;
    running.postfix = true;
    wait_port(with, "Postfix")?;
    wait_port(without, "Postfix")?;
    Ok((with, without))
}

/// A minimal SMTP client: one reply (its last line) per command.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Result<Smtp> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_nodelay(true)?;
        let mut c = Smtp {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        };
        c.expect("220")?;
        Ok(c)
    }

    fn reply(&mut self) -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the server closed the connection");
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line);
            }
        }
    }

    fn expect(&mut self, code: &str) -> Result<String> {
        let r = self.reply()?;
        if !r.starts_with(code) {
            bail!("expected {code}, got {}", r.trim());
        }
        Ok(r)
    }

    fn cmd(&mut self, text: &str, code: &str) -> Result<String> {
        self.writer.write_all(text.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.expect(code)
    }
}

/// One client: sessions until `stop`; counts queued messages and failures.
fn client(
    port: u16,
    per_session: usize,
    message: &str,
    stop: &AtomicBool,
    queued: &AtomicU64,
    failed: &AtomicU64,
) {
    let auth = format!(
        "AUTH PLAIN {}",
        base64::engine::general_purpose::STANDARD.encode(b"\0bench\0benchpw")
    );
    while !stop.load(Ordering::Relaxed) {
        let session = || -> Result<()> {
            let mut c = Smtp::connect(port)?;
            c.cmd("EHLO bench.example.org", "250")?;
            c.cmd(&auth, "235")?;
            for _ in 0..per_session {
                c.cmd("MAIL FROM:<bench@example.org>", "250")?;
                c.cmd("RCPT TO:<sink@example.net>", "250")?;
                c.cmd("DATA", "354")?;
                c.writer.write_all(message.as_bytes())?;
                c.cmd(".", "250")?;
                queued.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            let _ = c.cmd("QUIT", "221");
            Ok(())
        };
        if let Err(e) = session() {
            failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("session failed: {e:#}");
        }
    }
}

/// Runs the clients against `port` for `secs`; (messages queued, failed sessions, seconds).
fn phase(
    args: &BenchMilterArgs,
    seconds: u64,
    port: u16,
    message: &Arc<String>,
) -> (u64, u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..args.clients.max(1))
        .map(|_| {
            let (stop, queued, failed, message) = (
                stop.clone(),
                queued.clone(),
                failed.clone(),
                message.clone(),
            );
            let per_session = args.per_session.max(1);
            std::thread::spawn(move || client(port, per_session, &message, &stop, &queued, &failed))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds.max(1)));
    // Messages finishing after the end still count, over the time they took.
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    (
        queued.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        secs,
    )
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

fn records_in(dir: &Path) -> Result<u64> {
    use mailaudit_store::Store;
    Ok(mailaudit_store::SqliteStore::open(dir)?.size()?)
}

pub fn run(args: BenchMilterArgs) -> Result<i32> {
    if std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(true)
    {
        bail!("bench-milter must run as root: it starts its own Postfix (postfix -c DIR start)");
    }
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("emptying {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&args.dir, std::fs::Permissions::from_mode(0o755))?;
    let dir = args.dir.clone();
    let mut running = Running {
        dir: dir.clone(),
        dovecot_pid: None,
        postfix: false,
        milter: None,
    };
    let auth = start_dovecot(&dir, &mut running)?;
    let milter = start_milter(&dir, args.socket, &mut running)?;
    let (with, without) = start_postfix(&dir, auth, &milter, &mut running)?;

    let body: String = "The quarterly figures are attached as agreed. "
        .chars()
        .cycle()
        .take(args.body_bytes)
        .collect::<String>()
        .as_bytes()
        .chunks(76)
        .map(|l| format!("{}\r\n", String::from_utf8_lossy(l)))
        .collect();
    let message = Arc::new(format!(
        "From: Bench <bench@example.org>\r\nTo: sink@example.net\r\nSubject: benchmark\r\n\r\n{body}"
    ));

    println!(
        "bench-milter: {} clients, {} message(s) per session, {} s per phase, milter on {}, Postfix {}",
        args.clients,
        args.per_session,
        args.seconds,
        match args.socket {
            Socket::Unix => "a unix socket",
            Socket::Inet => "loopback TCP",
        },
        postfix_version()
    );
    // A short warm-up of each side (process pools, caches), not counted.
    phase(&args, 2, with, &message);
    phase(&args, 2, without, &message);
    let records_after_warmup = records_in(&dir.join("data"))?;
    let milter_pid = running.milter.as_ref().map(Child::id);
    let cpu_before = milter_pid.and_then(cpu_seconds);

    let mut totals = [(0u64, 0u64, 0f64); 2];
    for round in 1..=2 {
        for (side, port) in [(0, with), (1, without)] {
            let (n, f, s) = phase(&args, args.seconds, port, &message);
            println!(
                "  round {round} {:<15} {:>8.1} messages/s ({n} in {s:.1} s, {f} failed sessions)",
                if side == 0 {
                    "with milter"
                } else {
                    "without milter"
                },
                n as f64 / s
            );
            totals[side].0 += n;
            totals[side].1 += f;
            totals[side].2 += s;
        }
    }
    let rate = |t: (u64, u64, f64)| t.0 as f64 / t.2;
    let (w, wo) = (rate(totals[0]), rate(totals[1]));
    let records = records_in(&dir.join("data"))? - records_after_warmup;
    let cpu = match (cpu_before, milter_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) if totals[0].0 > 0 => format!(
            "{:.0} µs of CPU per message ({:.1} s for {} messages)",
            (b - a) * 1e6 / totals[0].0 as f64,
            b - a,
            totals[0].0
        ),
        _ => "unknown".to_string(),
    };
    println!(
        "with milter:    {w:>8.1} messages/s ({} failed sessions)",
        totals[0].1
    );
    println!(
        "without milter: {wo:>8.1} messages/s ({} failed sessions)",
        totals[1].1
    );
    println!(
        "ratio: {:.1} % of the throughput without the milter (target ≥ 90 %)",
        100.0 * w / wo
    );
    println!(
        "audit records stored during the timed phases: {records} for {} messages queued through the milter{}",
        totals[0].0,
        if records == totals[0].0 { "" } else { " — MISMATCH" }
    );
    println!("the milter process (with its durable writes) used {cpu}");
    drop(running);
    Ok(if records == totals[0].0 { 0 } else { 1 })
}

fn postfix_version() -> String {
    Command::new("postconf")
        .args(["-d", "-h", "mail_version"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "(unknown version)".into())
}
