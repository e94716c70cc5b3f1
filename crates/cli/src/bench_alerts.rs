//! `mailaudit bench-alerts`: latency from a record's submission (`POST /api/v1/observations`
//! to a real `mailaudit serve --config`) to its alert's delivery, at a steady record rate,
//! received on loopback by a webhook receiver (checking nothing but the arrival) and a
//! syslog UDP listener. Prints p50/p90/p99/max for both against the 1 s target.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchAlertsArgs {
    /// Records submitted per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// One record in this many fires an alert (a SendAs); the rest are ordinary accesses
    /// that the rules evaluate and pass.
    #[arg(long, default_value_t = 10)]
    alert_every: u64,
    /// Records per POST (submissions every 1/(rate/batch) s).
    #[arg(long, default_value_t = 20)]
    batch: u64,
    #[arg(long, default_value = "./mailaudit-bench-alerts")]
    dir: PathBuf,
}

type Arrivals = Arc<Mutex<Vec<(u64, Instant)>>>;

/// The alert's index, from the mailbox `bench{N}@example.com` it names.
fn index_of(text: &str) -> Option<u64> {
    let at = text.find("bench")? + "bench".len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn webhook_receiver(arrivals: Arrivals) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let arrivals = arrivals.clone();
            // Keep-alive: many requests per connection.
            std::thread::spawn(move || {
                let Ok(mut w) = s.try_clone() else { return };
                let mut r = BufReader::new(s);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((n, v)) = l.split_once(':') {
                            if n.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let now = Instant::now();
                    let text = String::from_utf8_lossy(&body);
                    if let (Some(i), Ok(mut a)) = (index_of(&text), arrivals.lock()) {
                        a.push((i, now));
                    }
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn syslog_receiver(arrivals: Arrivals) -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let port = s.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = vec![0; 65_536];
        while let Ok(n) = s.recv(&mut buf) {
            let now = Instant::now();
            let text = String::from_utf8_lossy(&buf[..n]);
            if let (Some(i), Ok(mut a)) = (index_of(&text), arrivals.lock()) {
                a.push((i, now));
            }
        }
    });
    Ok(port)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, sent: &[Option<Instant>], arrivals: &Arrivals, expected: usize) -> bool {
    let got = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut ms: Vec<f64> = got
        .iter()
        .filter_map(|(i, at)| {
            let s = sent.get(*i as usize).copied().flatten()?;
            Some(at.saturating_duration_since(s).as_secs_f64() * 1000.0)
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let p99 = percentile(&ms, 99.0);
    println!(
        "{name:<8} alerts {:>6}/{expected:<6} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms   target p99 < 1000 ms: {}",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 90.0),
        p99,
        ms.last().copied().unwrap_or(f64::NAN),
        if ms.len() == expected && p99 < 1000.0 { "met" } else { "NOT met" }
    );
    ms.len() == expected && p99 < 1000.0
}

pub fn run(args: BenchAlertsArgs) -> Result<i32> {
    if args.rate == 0 || args.batch == 0 || args.alert_every == 0 {
        bail!("--rate, --batch and --alert-every must be at least 1");
    }
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let exe = std::env::current_exe().context("finding the mailaudit binary")?;
    let data = args.dir.join("data");
    let run = |a: &[&str]| -> Result<String> {
        let out = Command::new(&exe)
            .arg("--data-dir")
            .arg(&data)
            .args(a)
            .output()?;
        if !out.status.success() {
            bail!("{a:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    run(&["init", "--name", "bench"])?;
    let token = run(&["token", "create", "--role", "admin", "--name", "bench"])?;

    let hooks: Arrivals = Arc::default();
    let syslog: Arrivals = Arc::default();
    let hook_port = webhook_receiver(hooks.clone())?;
    let syslog_port = syslog_receiver(syslog.clone())?;
    let config = args.dir.join("mailaudit.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[rules]]
name = "sendas"
kind = "send_as"
suppress_secs = 0

[[rules]]
name = "vip"
kind = "non_owner_access"
mailboxes = ["ceo@example.com"]

[[rules]]
name = "mass-delete"
kind = "deletions"
threshold = 1000
window_secs = 60

[[webhook]]
name = "hook"
url = "http://127.0.0.1:{hook_port}/alerts"
secret = "bench"

[[syslog]]
name = "syslog"
address = "127.0.0.1:{syslog_port}"
"#
        ),
    )?;
    let mut child = Command::new(&exe)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mailaudit serve")?;
    let stdout = child.stdout.take().context("serve's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            bail!("mailaudit serve ended before listening");
        };
        if let Some(rest) = line.strip_prefix("mailaudit listening on ") {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let total = args.rate * args.seconds;
    let expected = (total / args.alert_every) as usize;
    let mut sent: Vec<Option<Instant>> = vec![None; total as usize];
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let url = format!("{base}/api/v1/observations");
    let interval = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    println!(
        "bench-alerts: {total} records at {} records/s ({} per POST), one in {} fires an alert ({expected} alerts) to a webhook and syslog (UDP) on loopback",
        args.rate, args.batch, args.alert_every
    );
    let start = Instant::now();
    let mut i = 0u64;
    let mut next = start;
    let mut late = Duration::ZERO;
    while i < total {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        } else {
            late = late.max(now - next);
        }
        let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut body = String::new();
        let stamp = Instant::now();
        for _ in 0..args.batch.min(total - i) {
            let (op, mailbox, actor) = if i.is_multiple_of(args.alert_every) {
                ("SendAs", format!("bench{i}@example.com"), "pa@example.com")
            } else {
                (
                    "MessageBind",
                    format!("user{}@example.com", i % 500),
                    "bob@example.com",
                )
            };
            body.push_str(&format!(
                r#"{{"time":"{t}","operation":"{op}","mailbox":"{mailbox}","actor":"{actor}","folder":"INBOX","items":[{{"uid":{i},"message_id":"<{i}@example.com>","subject":"bench"}}],"client":{{"ip":"192.0.2.7","protocol":"imap"}},"provenance":{{"source":"bench"}}}}"#
            ));
            body.push('\n');
            sent[i as usize] = Some(stamp);
            i += 1;
        }
        agent
            .post(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .send_string(&body)
            .context("posting observations")?;
        next += interval;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "submitted in {elapsed:.2} s ({:.0} records/s; worst lateness of a submission {:.1} ms)",
        total as f64 / elapsed,
        late.as_secs_f64() * 1000.0
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let h = hooks.lock().map(|a| a.len()).unwrap_or(0);
        let s = syslog.lock().map(|a| a.len()).unwrap_or(0);
        if h >= expected && s >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok_h = report("webhook", &sent, &hooks, expected);
    let ok_s = report("syslog", &sent, &syslog, expected);
    let _ = child.kill();
    let _ = child.wait();
    Ok(if ok_h && ok_s { 0 } else { 1 })
}
