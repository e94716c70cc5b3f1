//! Alerts and outputs end to end: records posted to a real `mailaudit serve --config`, and
//! alerts received for real on loopback by an SMTP sink, an HTTP receiver that checks the
//! HMAC signature, and syslog listeners (UDP and TCP); a webhook receiver that is down and
//! comes back, across a restart of mailaudit; record streams; daily files in Europe/Berlin.

use crate::util::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "s3cret-for-tests";

/// What the webhook receiver got: the alert JSON, and whether its signature was right.
#[derive(Debug, Clone)]
struct Hook {
    json: Json,
    signature_ok: bool,
    idempotency_key: String,
}

/// A tiny HTTP/1.1 receiver on a fixed loopback port, that can be taken down and brought
/// back up on the same port.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Receiver {
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn new(port: u16) -> Receiver {
        Receiver {
            port,
            got: Arc::new(Mutex::new(Vec::new())),
            stop: None,
        }
    }

    fn up(&mut self) {
        let listener =
            TcpListener::bind(("127.0.0.1", self.port)).expect("rebinding the receiver's port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.stop = Some(stop.clone());
        let got = self.got.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        if let Some(h) = read_hook(s) {
                            got.lock().unwrap().push(h);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // The listener is dropped here: connections are refused from now on.
        });
    }

    fn down(&mut self) {
        if let Some(s) = self.stop.take() {
            s.store(true, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}

fn read_hook(s: TcpStream) -> Option<Hook> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(s.try_clone().ok()?);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    assert!(headers[0].starts_with("POST "), "{headers:?}");
    let header = |name: &str| {
        headers
            .iter()
            .find_map(|h| {
                let (n, v) = h.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let body = String::from_utf8(body).ok()?;
    let ts = header("x-mailaudit-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let hook = Hook {
        json: Json::parse(&body).ok()?,
        signature_ok: header("x-mailaudit-signature") == expected,
        idempotency_key: header("idempotency-key"),
    };
    let mut s = s;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(hook)
}

/// A minimal SMTP sink: accepts every message and keeps its text.
fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let keep = mails.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let _ = w.write_all(b"220 sink ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_ascii_uppercase();
                    if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        let _ = w.write_all(b"250 sink\r\n");
                    } else if cmd == "DATA" {
                        let _ = w.write_all(b"354 go on\r\n");
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            if r.read_line(&mut l).unwrap_or(0) == 0 {
                                return;
                            }
                            if l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        keep.lock().unwrap().push(data);
                        let _ = w.write_all(b"250 queued\r\n");
                    } else if cmd == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        let _ = w.write_all(b"250 ok\r\n");
                    }
                }
            });
        }
    });
    (port, mails)
}

fn syslog_udp() -> (u16, Arc<Mutex<Vec<String>>>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0; 65_536];
        while let Ok(n) = s.recv(&mut buf) {
            keep.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (port, got)
}

/// A syslog TCP listener that reads RFC 6587 octet-counted frames.
fn syslog_tcp() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                loop {
                    let mut len = Vec::new();
                    if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = String::from_utf8_lossy(&len)
                        .trim()
                        .parse()
                        .expect("an octet count");
                    let mut msg = vec![0; n];
                    if r.read_exact(&mut msg).is_err() {
                        return;
                    }
                    keep.lock().unwrap().push(String::from_utf8(msg).unwrap());
                }
            });
        }
    });
    (port, got)
}

#[track_caller]
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn obs(op: &str, mailbox: &str, actor: &str, extra: &str) -> String {
    format!(
        r#"{{"time":"{}","operation":"{op}","mailbox":"{mailbox}","actor":"{actor}","folder":"INBOX","client":{{"ip":"198.51.100.23","protocol":"imap"}},"provenance":{{"source":"test"}}{extra}}}"#,
        ago(0)
    )
}

/// Posts observations and returns the seq of each stored record, in order.
fn post(server: &Server, token: &str, lines: &[String]) -> Vec<u64> {
    let resp = post_observations(server, token, &(lines.join("\n") + "\n"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["results"]
        .arr()
        .iter()
        .map(|r| {
            r["seq"]
                .u64()
                .unwrap_or_else(|| panic!("not stored: {}", resp.body))
        })
        .collect()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("mailaudit.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn seqs(j: &Json) -> Vec<u64> {
    j["records"]
        .arr()
        .iter()
        .map(|s| s.u64().unwrap())
        .collect()
}

#[test]
fn alerts_reach_a_webhook_an_smtp_sink_and_syslog_listeners() {
    let dir = init_dir();
    let token = token(dir.path(), "admin", "t");
    let auditor = crate::util::token(dir.path(), "auditor", "legal");
    let mut hook = Receiver::new(Receiver::free_port());
    hook.up();
    let (smtp_port, mails) = smtp_sink();
    let (udp_port, udp) = syslog_udp();
    let (tcp_port, tcp) = syslog_tcp();
    let out = tempfile::TempDir::new().unwrap();
    let config = write_config(
        out.path(),
        &format!(
            r#"
[[rules]]
name = "vip"
kind = "non_owner_access"
mailboxes = ["ceo@example.com"]
suppress_secs = 2

[[rules]]
name = "cfo-grouped"
kind = "non_owner_access"
mailboxes = ["cfo@example.com"]
suppress_secs = 2
group_secs = 2

[[rules]]
name = "impersonation"
kind = "admin_impersonation"

[[rules]]
name = "brute"
kind = "failed_logins"
threshold = 3
window_secs = 60
suppress_secs = 0

[[webhook]]
name = "soc"
url = "http://127.0.0.1:{}/hook"
secret = "{SECRET}"

[[email]]
name = "mail"
relay = "127.0.0.1"
port = {smtp_port}
from = "mailaudit@example.com"
to = ["soc@example.com"]
rules = ["impersonation"]

[[syslog]]
name = "siem-udp"
address = "127.0.0.1:{udp_port}"

[[syslog]]
name = "siem-cef"
address = "127.0.0.1:{tcp_port}"
transport = "tcp"
format = "cef"
facility = "local3"
min_severity = "high"

[[stream]]
name = "all-json"
to = "file"
path = "{json}"
from_start = true

[[stream]]
name = "all-ecs"
to = "file"
format = "ecs"
path = "{ecs}"
from_start = true
"#,
            hook.port,
            json = out.path().join("records.jsonl").display(),
            ecs = out.path().join("records.ecs.jsonl").display(),
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);

    // A delegate opens the CEO's mailbox five times in a burst.
    let burst: Vec<String> = (0..5)
        .map(|_| obs("MessageBind", "ceo@example.com", "bob@example.com", ""))
        .collect();
    let vip = post(&server, &token, &burst);
    // The same burst on a rule that groups: one alert with the count, nothing after.
    let cfo_burst: Vec<String> = (0..5)
        .map(|_| obs("MessageBind", "cfo@example.com", "bob@example.com", ""))
        .collect();
    let cfo = post(&server, &token, &cfo_burst);
    // An admin impersonates alice.
    let imp = post(
        &server,
        &token,
        &[obs(
            "MailboxLogin",
            "alice@example.com",
            "root@example.com",
            r#","acting_as":"alice@example.com""#,
        )],
    );
    // Two failed logins (N-1): nothing; the third (N) fires.
    let failed = obs(
        "MailboxLogin",
        "carol@example.com",
        "carol@example.com",
        r#","result":"Failed""#,
    );
    let brute2 = post(&server, &token, &[failed.clone(), failed.clone()]);
    let brute3 = post(&server, &token, std::slice::from_ref(&failed));

    let hooks = wait_for("5 webhook alerts", 60, || {
        let h = hook.hooks();
        (h.len() >= 5).then_some(h)
    });
    for h in &hooks {
        assert!(h.signature_ok, "bad HMAC on {:?}", h.json);
        assert_eq!(h.idempotency_key, h.json["id"].str().unwrap());
    }
    let by_rule = |rule: &str| -> Vec<Json> {
        hooks
            .iter()
            .filter(|h| h.json["rule"].str() == Some(rule))
            .map(|h| h.json.clone())
            .collect()
    };
    let v = by_rule("vip");
    assert_eq!(
        v.len(),
        2,
        "one alert for the burst and one follow-up with its count: {hooks:?}"
    );
    assert_eq!(seqs(&v[0]), vec![vip[0]]);
    assert_eq!(v[0]["count"].u64(), Some(1));
    assert_eq!(v[0]["severity"].str(), Some("medium"));
    assert_eq!(
        v[0]["summary"].str(),
        Some("vip: bob@example.com (Delegate) opened message in ceo@example.com folder INBOX")
    );
    assert_eq!(v[1]["count"].u64(), Some(4));
    assert_eq!(seqs(&v[1]), vip[1..].to_vec());
    assert_eq!(v[1]["repeat_of"].str(), v[0]["id"].str());
    let g = by_rule("cfo-grouped");
    assert_eq!(g.len(), 1, "{hooks:?}");
    assert_eq!(seqs(&g[0]), cfo);
    assert_eq!(g[0]["count"].u64(), Some(5));
    assert_eq!(
        g[0]["id"].str(),
        Some(format!("cfo-grouped:{}", cfo[0]).as_str())
    );
    let i = by_rule("impersonation");
    assert_eq!(i.len(), 1);
    assert_eq!(seqs(&i[0]), imp);
    assert_eq!(i[0]["actor"].str(), Some("root@example.com"));
    assert_eq!(i[0]["mailbox"].str(), Some("alice@example.com"));
    let b = by_rule("brute");
    assert_eq!(b.len(), 1, "N-1 failures gave nothing, N gave one alert");
    assert_eq!(seqs(&b[0]), [brute2.clone(), brute3.clone()].concat());
    assert_eq!(b[0]["count"].u64(), Some(3));
    assert_eq!(
        b[0]["summary"].str(),
        Some("brute: 3 failed logins to mailbox carol@example.com within 60s")
    );

    // Email: only the impersonation rule goes to mail.
    let mail = wait_for("the alert mail", 30, || {
        mails.lock().unwrap().first().cloned()
    });
    // Unfold header lines and undo quoted-printable soft breaks.
    let (head, body) = mail.split_once("\r\n\r\n").unwrap();
    let mail = format!(
        "{}\r\n\r\n{}",
        head.replace("\r\n ", " "),
        body.replace("=\r\n", "")
    );
    assert!(mail.contains("Subject: [mailaudit high] impersonation: root@example.com impersonated alice@example.com (signed in to mailbox) in alice@example.com\r\n"), "{mail}");
    assert!(
        mail.contains(&format!("Message-ID: <impersonation_{}@mailaudit>", imp[0])),
        "{mail}"
    );
    assert!(mail.contains("To: soc@example.com"), "{mail}");
    assert!(
        mail.contains(&format!("\r\n  {}\r\n", imp[0])),
        "the record id is listed: {mail}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mails.lock().unwrap().len(), 1, "no other rule goes to mail");

    // Syslog over UDP, RFC 5424: every alert.
    let msgs = wait_for("5 syslog datagrams", 30, || {
        let m = udp.lock().unwrap().clone();
        (m.len() >= 5).then_some(m)
    });
    let imp_msg = msgs
        .iter()
        .find(|m| m.contains("rule=\"impersonation\""))
        .expect("impersonation over UDP");
    // authpriv (10) * 8 + error (3) = 83.
    assert!(imp_msg.starts_with("<83>1 "), "{imp_msg}");
    assert!(
        imp_msg.contains(&format!("records=\"{}\"", imp[0])),
        "{imp_msg}"
    );
    assert!(imp_msg.ends_with("] impersonation: root@example.com impersonated alice@example.com (signed in to mailbox) in alice@example.com"), "{imp_msg}");

    // Syslog over TCP, CEF, high severity only: the impersonation, not the medium ones.
    let cef = wait_for("the CEF message", 30, || {
        tcp.lock().unwrap().first().cloned()
    });
    // local3 (19) * 8 + 3 = 155.
    assert!(cef.starts_with("<155>1 "), "{cef}");
    assert!(cef.contains("CEF:0|mailaudit|mailaudit|"), "{cef}");
    assert!(
        cef.contains("|admin_impersonation|impersonation|8|"),
        "{cef}"
    );
    assert!(
        cef.contains("suser=root@example.com duser=alice@example.com")
            || (cef.contains("suser=root@example.com") && cef.contains("duser=alice@example.com")),
        "{cef}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        tcp.lock().unwrap().len(),
        1,
        "medium alerts are filtered out: {:?}",
        tcp.lock().unwrap()
    );

    // Record streams: every record, JSON and ECS.
    let all: Vec<u64> = [vip.clone(), imp.clone(), brute2.clone(), brute3.clone()].concat();
    let lines = wait_for("every record in the JSON stream", 30, || {
        let text = std::fs::read_to_string(out.path().join("records.jsonl")).unwrap_or_default();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| Json::parse(l).unwrap()["seq"].u64().unwrap())
            .collect();
        all.iter().all(|s| seqs.contains(s)).then_some(text)
    });
    assert!(lines.lines().all(|l| l.starts_with("{\"seq\":")));
    let ecs = wait_for("every record in the ECS stream", 30, || {
        let text =
            std::fs::read_to_string(out.path().join("records.ecs.jsonl")).unwrap_or_default();
        (text.lines().count() >= lines.lines().count()).then_some(text)
    });
    let imp_ecs = ecs
        .lines()
        .map(|l| Json::parse(l).unwrap())
        .find(|j| j["event"]["sequence"].u64() == Some(imp[0]))
        .expect("the impersonation in ECS");
    assert_eq!(imp_ecs["event"]["action"].str(), Some("MailboxLogin"));
    assert_eq!(imp_ecs["event"]["outcome"].str(), Some("success"));
    assert_eq!(imp_ecs["user"]["name"].str(), Some("root@example.com"));
    assert_eq!(
        imp_ecs["user"]["target"]["name"].str(),
        Some("alice@example.com")
    );
    assert_eq!(
        imp_ecs["user"]["effective"]["name"].str(),
        Some("alice@example.com")
    );
    assert_eq!(imp_ecs["source"]["ip"].str(), Some("198.51.100.23"));
    assert_eq!(imp_ecs["mailaudit"]["logon_type"].str(), Some("Admin"));
    assert_eq!(imp_ecs["ecs"]["version"].str(), Some("8.11.0"));

    // Rules over the API: admins only; a change is recorded and applies to the next record.
    assert_eq!(
        get(&server.url("/api/v1/alerts/rules"), &auditor).status,
        403
    );
    let rules = get(&server.url("/api/v1/alerts/rules"), &token).json();
    assert_eq!(rules["source"].str(), Some("config"));
    assert_eq!(rules["rules"].arr().len(), 4);
    let bad = request(
        "PUT",
        &server.url("/api/v1/alerts/rules"),
        Some(&token),
        Some(br#"{"rules":[{"name":"x","kind":"deletions","threshold":0,"window_secs":5}]}"#),
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.body
            .contains("rule `x`: `threshold` must be at least 1"),
        "{}",
        bad.body
    );
    let put = request(
        "PUT",
        &server.url("/api/v1/alerts/rules"),
        Some(&token),
        Some(br#"{"rules":[{"name":"sendas","kind":"send_as","suppress_secs":0}]}"#),
    );
    assert_eq!(put.status, 200, "{}", put.body);
    let changes = search_all(dir.path(), &["--operation", "AuditPolicyChange"]);
    assert!(
        changes
            .iter()
            .any(|c| c.param("change") == Some(r#"{"change":"alert_rules"}"#)),
        "the rule change is in the audit log"
    );
    let before = hook.hooks().len();
    let s = post(
        &server,
        &token,
        &[obs("SendAs", "ceo@example.com", "pa@example.com", "")],
    );
    let h = wait_for("the SendAs alert", 30, || {
        let h = hook.hooks();
        (h.len() > before).then(|| h[before].clone())
    });
    assert_eq!(h.json["rule"].str(), Some("sendas"));
    assert_eq!(seqs(&h.json), s);
    // The VIP rule is gone: another access gives nothing.
    post(
        &server,
        &token,
        &[obs("MessageBind", "ceo@example.com", "eve@example.com", "")],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.hooks().len(), before + 1, "{:?}", hook.hooks());
    let outbox = get(&server.url("/api/v1/alerts/outbox"), &token).json();
    let soc = outbox
        .arr()
        .iter()
        .find(|o| o["output"].str() == Some("soc"))
        .unwrap()
        .clone();
    assert_eq!(soc["pending"].u64(), Some(0));
    assert_eq!(soc["delivered"].u64(), Some(hook.hooks().len() as u64));
    drop(server);
}

#[test]
fn a_webhook_down_then_back_gets_every_alert_once_in_order_across_a_restart() {
    let dir = init_dir();
    let token = token(dir.path(), "admin", "t");
    let mut hook = Receiver::new(Receiver::free_port());
    // The receiver is down from the start (connections refused).
    let out = tempfile::TempDir::new().unwrap();
    let config = write_config(
        out.path(),
        &format!(
            r#"
# The real default is initial_ms = 1000, max_ms = 60000; shorter here so the test takes seconds.
[backoff]
initial_ms = 100
max_ms = 800

[[rules]]
name = "sendas"
kind = "send_as"
suppress_secs = 0

[[webhook]]
name = "soc"
url = "http://127.0.0.1:{}/hook"
secret = "{SECRET}"

[[stream]]
name = "siem"
path = "{}"
from_start = true
"#,
            hook.port,
            out.path().join("records.jsonl").display()
        ),
    );
    let mut sent = Vec::new();
    let server = Server::start(dir.path(), &["--config", &config]);
    for i in 0..6 {
        sent.extend(post(
            &server,
            &token,
            &[obs(
                "SendAs",
                &format!("m{i}@example.com"),
                "pa@example.com",
                "",
            )],
        ));
    }
    // Retries pile up against the closed port.
    wait_for("failed attempts", 30, || {
        let o = get(&server.url("/api/v1/alerts/outbox"), &token).json();
        let soc = o.arr().first().cloned()?;
        (soc["pending"].u64() == Some(6) && soc["head_attempts"].u64() >= Some(3)).then_some(())
    });
    // mailaudit dies (SIGKILL: no clean shutdown) while alerts are pending.
    server.kill();
    let server = Server::start(dir.path(), &["--config", &config]);
    for i in 6..10 {
        sent.extend(post(
            &server,
            &token,
            &[obs(
                "SendAs",
                &format!("m{i}@example.com"),
                "pa@example.com",
                "",
            )],
        ));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(hook.hooks().is_empty());
    hook.up();
    let hooks = wait_for("all 10 alerts", 60, || {
        let h = hook.hooks();
        (h.len() >= 10).then_some(h)
    });
    std::thread::sleep(Duration::from_secs(2));
    let hooks_after = hook.hooks();
    assert_eq!(
        hooks_after.len(),
        10,
        "each exactly once: {:?}",
        hooks_after
            .iter()
            .map(|h| h.json["id"].str().unwrap().to_string())
            .collect::<Vec<_>>()
    );
    let got: Vec<u64> = hooks.iter().map(|h| seqs(&h.json)[0]).collect();
    assert_eq!(got, sent, "in order");
    assert!(hooks.iter().all(|h| h.signature_ok));
    let ids: Vec<String> = hooks
        .iter()
        .map(|h| h.json["id"].str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = sent.iter().map(|s| format!("sendas:{s}")).collect();
    assert_eq!(ids, expected);

    // The record stream has every record, across the kill, each once or more (at least once).
    let text = std::fs::read_to_string(out.path().join("records.jsonl")).unwrap();
    let streamed: Vec<u64> = text
        .lines()
        .map(|l| Json::parse(l).unwrap()["seq"].u64().unwrap())
        .collect();
    for s in &sent {
        assert!(streamed.contains(s), "record {s} missing from the stream");
    }
    let mut sorted = streamed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted,
        (0..=*sent.last().unwrap()).collect::<Vec<_>>(),
        "no gap"
    );

    // Another restart sends nothing again.
    server.kill();
    let server = Server::start(dir.path(), &["--config", &config]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.hooks().len(), 10);
    drop(server);
    hook.down();
}

#[test]
fn daily_files_turn_over_at_midnight_in_berlin_and_are_pruned() {
    let dir = init_dir();
    let token = token(dir.path(), "admin", "t");
    let out = tempfile::TempDir::new().unwrap();
    let root = out.path().join("audit");
    let config = write_config(
        out.path(),
        &format!(
            r#"
[daily_files]
root = "{}"
time_zone = "Europe/Berlin"
retention = "1d"
prune_interval_secs = 1
"#,
            root.display()
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let at = |t: &str, op: &str| {
        format!(
            r#"{{"time":"{t}","operation":"{op}","mailbox":"alice@example.com","actor":"bob@example.com","folder":"INBOX","items":[{{"uid":7,"message_id":"<m7@example.com>","subject":"Plans"}}],"client":{{"ip":"192.0.2.7","protocol":"imap"}},"provenance":{{"source":"test"}}}}"#
        )
    };
    // One second before and exactly at the last midnight in Berlin, and a record three days
    // old, past the retention of one day.
    use chrono::TimeZone;
    let berlin = chrono_tz::Europe::Berlin;
    let now = chrono::Utc::now().with_timezone(&berlin);
    let midnight = berlin
        .from_local_datetime(&now.date_naive().and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&chrono::Utc);
    let before = midnight - chrono::Duration::seconds(1);
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let old = ago(3 * 86_400);
    let seqs = post(
        &server,
        &token,
        &[
            at(&fmt(before), "MessageBind"),
            at(&fmt(midnight), "FolderBind"),
            at(&old, "SoftDelete"),
        ],
    );
    let day = |t: chrono::DateTime<chrono::Utc>| {
        format!("AUDIT-{}.log", t.with_timezone(&berlin).format("%y%m%d"))
    };
    let (yesterday, today) = (day(before), day(midnight));
    assert_ne!(yesterday, today);
    let mbox = root.join("example.com").join("alice");
    let old_file = mbox.join(day(chrono::Utc::now() - chrono::Duration::days(3)));
    wait_for("both days' files", 30, || {
        (mbox.join(&yesterday).exists() && mbox.join(&today).exists()).then_some(())
    });
    wait_for("the old day's file pruned", 30, || {
        (!old_file.exists()).then_some(())
    });
    let names: Vec<String> = std::fs::read_dir(&mbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let y = std::fs::read_to_string(mbox.join(&yesterday)).unwrap();
    let t = std::fs::read_to_string(mbox.join(&today)).unwrap();
    let offset = midnight.with_timezone(&berlin).format("%z").to_string();
    assert_eq!(
        y,
        format!(
            "{} 23:59:59.000000 {offset} #{} MessageBind Succeeded Delegate bob@example.com folder=\"INBOX\" ip=192.0.2.7 proto=imap [uid=7 <m7@example.com> \"Plans\"]\n",
            before.with_timezone(&berlin).format("%Y-%m-%d"),
            seqs[0]
        )
    );
    assert_eq!(
        t,
        format!(
            "{} 00:00:00.000000 {offset} #{} FolderBind Succeeded Delegate bob@example.com folder=\"INBOX\" ip=192.0.2.7 proto=imap [uid=7 <m7@example.com> \"Plans\"]\n",
            midnight.with_timezone(&berlin).format("%Y-%m-%d"),
            seqs[1]
        )
    );
    // The removal is logged (the line may reach the log a moment after the file went).
    wait_for("the removal in the log", 30, || {
        server.log().contains("past retention").then_some(())
    });
    drop(server);
}

/// A CA and a `localhost` certificate it signed, made with the openssl command.
fn certificates(dir: &Path) {
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=mailaudit-test-ca 2>/dev/null \
        && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout leaf.key -out leaf.csr -subj /CN=localhost 2>/dev/null \
        && printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > leaf.ext \
        && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext 2>/dev/null \
        && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other.key -out other-ca.pem -days 2 -subj /CN=someone-else 2>/dev/null");
}

/// A syslog-over-TLS listener (RFC 5425 framing) in Python's standard library; prints each
/// message on a line.
struct TlsListener {
    child: std::process::Child,
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
}

impl TlsListener {
    fn start(dir: &Path) -> TlsListener {
        let script = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("leaf.pem", "leaf.key")
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
lock = threading.Lock()
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed:", e, file=sys.stderr, flush=True)
        return
    f = t.makefile("rb")
    while True:
        n = b""
        while (b := f.read(1)) not in (b" ", b""):
            n += b
        if not n:
            return
        msg = f.read(int(n)).decode()
        with lock:
            print(msg, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(l);
            }
        });
        TlsListener { child, port, got }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn syslog_over_tls_checks_the_certificate() {
    let dir = init_dir();
    let token = token(dir.path(), "admin", "t");
    let certs = tempfile::TempDir::new().unwrap();
    certificates(certs.path());
    let listener = TlsListener::start(certs.path());
    let config = write_config(
        certs.path(),
        &format!(
            r#"
[backoff]
initial_ms = 100
max_ms = 500

[[rules]]
name = "sendas"
kind = "send_as"
suppress_secs = 0

[[syslog]]
name = "tls-good"
address = "127.0.0.1:{port}"
transport = "tls"
server_name = "localhost"
ca_file = "{ca}"

[[syslog]]
name = "tls-wrong-ca"
address = "127.0.0.1:{port}"
transport = "tls"
server_name = "localhost"
ca_file = "{other}"
"#,
            port = listener.port,
            ca = certs.path().join("ca.pem").display(),
            other = certs.path().join("other-ca.pem").display(),
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let s = post(
        &server,
        &token,
        &[obs("SendAs", "ceo@example.com", "pa@example.com", "")],
    );
    let msg = wait_for("the alert over TLS", 30, || {
        listener.got.lock().unwrap().first().cloned()
    });
    assert!(msg.contains(&format!("records=\"{}\"", s[0])), "{msg}");
    assert!(
        msg.ends_with("sendas: pa@example.com sent as ceo@example.com"),
        "{msg}"
    );
    // The output that does not trust the server's CA never sends, and says why.
    let status = wait_for("the refused output's error", 30, || {
        let o = get(&server.url("/api/v1/alerts/outbox"), &token).json();
        let bad = o
            .arr()
            .iter()
            .find(|x| x["output"].str() == Some("tls-wrong-ca"))?
            .clone();
        bad["last_error"].str().is_some().then_some(bad)
    });
    assert_eq!(status["pending"].u64(), Some(1));
    let err = status["last_error"].str().unwrap();
    assert!(
        err.contains("TLS handshake") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_eq!(listener.got.lock().unwrap().len(), 1);
    drop(server);
}

#[test]
fn a_bad_configuration_stops_serve_and_says_where() {
    let dir = init_dir();
    let out = tempfile::TempDir::new().unwrap();
    let config = write_config(
        out.path(),
        "[[rules]]\nname = \"vip\"\nkind = \"non_owner_access\"\nmailbox = [\"ceo@example.com\"]\n",
    );
    let r = mailaudit(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0", "--config", &config],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("outputs configuration: {config}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("line 1"), "{}", r.stderr);
    assert!(r.stderr.contains("unknown field `mailbox`"), "{}", r.stderr);
    assert!(!r.stdout.contains("listening"), "{}", r.stdout);

    let config = write_config(
        out.path(),
        "[[rules]]\nname = \"d\"\nkind = \"deletions\"\nthreshold = 0\nwindow_secs = 60\n",
    );
    let r = mailaudit(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0", "--config", &config],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("rule `d`: `threshold` must be at least 1"),
        "{}",
        r.stderr
    );
}

/// An SMTP sink in Python's standard library that offers STARTTLS (with the test CA's
/// `localhost` certificate) and prints each message on a line, prefixed by whether it came
/// over TLS.
fn starttls_sink(dir: &Path) -> (std::process::Child, u16, Arc<Mutex<Vec<String>>>) {
    let script = r#"
import socket, ssl, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("leaf.pem", "leaf.key")
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
lock = threading.Lock()
def serve(c):
    st = {"conn": c, "tls": False}
    st["rf"] = c.makefile("rb")
    def send(x):
        st["conn"].sendall(x.encode() + b"\r\n")
    send("220 sink ESMTP")
    while True:
        line = st["rf"].readline()
        if not line:
            return
        cmd = line.decode().strip().upper()
        if cmd.startswith("EHLO"):
            if st["tls"]:
                send("250 sink")
            else:
                send("250-sink")
                send("250 STARTTLS")
        elif cmd == "STARTTLS":
            send("220 go ahead")
            st["conn"] = ctx.wrap_socket(st["conn"], server_side=True)
            st["rf"] = st["conn"].makefile("rb")
            st["tls"] = True
        elif cmd == "DATA":
            send("354 go on")
            data = b""
            while True:
                l = st["rf"].readline()
                if l in (b".\r\n", b""):
                    break
                data += l
            with lock:
                print(("TLS " if st["tls"] else "PLAIN ") + data.decode().replace("\r\n", "|"), flush=True)
            send("250 queued")
        elif cmd == "QUIT":
            send("221 bye")
            return
        else:
            send("250 ok")
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            keep.lock().unwrap().push(l);
        }
    });
    (child, port, got)
}

#[test]
fn email_alerts_go_over_starttls_to_a_relay_with_a_private_ca() {
    let dir = init_dir();
    let token = token(dir.path(), "admin", "t");
    let certs = tempfile::TempDir::new().unwrap();
    certificates(certs.path());
    let (mut sink, port, got) = starttls_sink(certs.path());
    let config = write_config(
        certs.path(),
        &format!(
            r#"
[[rules]]
name = "sendas"
kind = "send_as"

[[email]]
name = "mail"
relay = "127.0.0.1"
port = {port}
security = "starttls"
tls_server_name = "localhost"
ca_file = "{ca}"
from = "mailaudit@example.com"
to = ["soc@example.com"]
"#,
            ca = certs.path().join("ca.pem").display()
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let s = post(
        &server,
        &token,
        &[obs("SendAs", "ceo@example.com", "pa@example.com", "")],
    );
    let mail = wait_for("the mail over STARTTLS", 30, || {
        got.lock().unwrap().first().cloned()
    });
    assert!(mail.starts_with("TLS "), "sent in the clear: {mail}");
    assert!(
        mail.contains("Subject: [mailaudit medium] sendas: pa@example.com sent as ceo@example.com"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("Alert id: sendas:{}", s[0])),
        "{mail}"
    );
    drop(server);
    let _ = sink.kill();
    let _ = sink.wait();
}

#[test]
fn history_from_before_alerts_teaches_the_rules_but_raises_nothing() {
    let dir = init_dir();
    let token = token(dir.path(), "admin", "t");
    let login = |ip: &str| {
        format!(
            r#"{{"time":"{}","operation":"MailboxLogin","mailbox":"alice@example.com","actor":"alice@example.com","client":{{"ip":"{ip}","protocol":"imap"}},"provenance":{{"source":"test"}}}}"#,
            ago(0)
        )
    };
    // Before alerts are configured: alice signs in from two addresses, and a delegate reads
    // the CEO's mail.
    let server = Server::start(dir.path(), &[]);
    post(&server, &token, &[login("192.0.2.1"), login("192.0.2.2")]);
    post(
        &server,
        &token,
        &[obs("MessageBind", "ceo@example.com", "bob@example.com", "")],
    );
    drop(server);

    let mut hook = Receiver::new(Receiver::free_port());
    hook.up();
    let out = tempfile::TempDir::new().unwrap();
    let config = write_config(
        out.path(),
        &format!(
            r#"
[[rules]]
name = "new-ip"
kind = "first_seen"

[[rules]]
name = "vip"
kind = "non_owner_access"
mailboxes = ["ceo@example.com"]

[[webhook]]
name = "soc"
url = "http://127.0.0.1:{}/hook"
secret = "{SECRET}"
"#,
            hook.port
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    // Known addresses, learned from history: nothing. A new one: an alert.
    post(&server, &token, &[login("192.0.2.2"), login("192.0.2.1")]);
    let new = post(&server, &token, &[login("203.0.113.9")]);
    let h = wait_for("the new-IP alert", 30, || hook.hooks().first().cloned());
    assert_eq!(h.json["rule"].str(), Some("new-ip"));
    assert_eq!(seqs(&h.json), new);
    assert_eq!(
        h.json["summary"].str(),
        Some("new-ip: alice@example.com signed in to alice@example.com from IP 203.0.113.9, never seen for this mailbox")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hook.hooks().len(),
        1,
        "no alert for the history: {:?}",
        hook.hooks()
    );
    drop(server);
    hook.down();
}
