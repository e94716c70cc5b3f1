//! The auditing IMAP proxy against a real Dovecot (Debian's packages, started by
//! `dovecot::Dovecot`) with real clients: Python's imaplib (`imap_proxy_story.py`) and curl.
//! Every record is checked field by field, every byte a client received is compared with what
//! the same client receives from Dovecot directly, and with the store made unwritable a
//! command is refused and never reaches Dovecot.

use crate::dovecot::{curl_bin, python, Dovecot, ALL_MAILBOX_OPERATIONS};
use crate::util::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

fn script() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/imap_proxy_story.py"
    )
}

/// A running `mailaudit proxy`, killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Proxy {
    fn start(dir: &Path, upstream_port: u16, extra: &[&str]) -> Proxy {
        Proxy::start_with(dir, upstream_port, "", extra)
    }

    /// `toml` is appended to the test's proxy.toml.
    fn start_with(dir: &Path, upstream_port: u16, toml: &str, extra: &[&str]) -> Proxy {
        let config = dir.join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "[audit]\ndefault_domain = \"example.com\"\nmaster_user_separator = \"*\"\n{toml}"
            ),
        )
        .expect("writing proxy.toml");
        let mut child = Command::new(bin())
            .arg("--data-dir")
            .arg(dir)
            .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
            .arg(format!("127.0.0.1:{upstream_port}"))
            .arg("--config")
            .arg(&config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mailaudit proxy");
        let (log, _, rx) = watch_output(&mut child, "mailaudit proxy listening on ");
        let mut proxy = Proxy {
            child,
            port: 0,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(rest) => {
                proxy.port = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .parse::<std::net::SocketAddr>()
                    .expect("the listening line carries an address")
                    .port();
                proxy
            }
            Err(e) => {
                let _ = proxy.child.kill();
                let _ = proxy.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("mailaudit proxy did not start ({e}):\n{}", proxy.log());
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn audit_everything() -> TempDir {
    let dir = init_dir();
    mailaudit(
        dir.path(),
        &[
            "policy",
            "set",
            "--audit-owner",
            ALL_MAILBOX_OPERATIONS,
            "--audit-delegate",
            ALL_MAILBOX_OPERATIONS,
        ],
    )
    .ok();
    dir
}

fn started_dovecot() -> Dovecot {
    let mut d = Dovecot::prepare();
    d.start(None);
    d
}

/// Runs the story script; returns (transcripts by session, the whole output).
fn run_story(args: &[&str]) -> (Vec<(String, String)>, String) {
    let mut c = Command::new(python());
    c.arg(script()).args(args);
    let out = run(c);
    assert!(
        out.code == 0,
        "imap_proxy_story.py {args:?} failed (exit {}):\n{}",
        out.code,
        out.all()
    );
    let transcripts = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let j = Json::parse(l).expect("a JSON line");
            (
                j["session"].str().unwrap_or_default().to_string(),
                j["transcript"].str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (transcripts, out.stdout)
}

/// The proxy's records, oldest first, waiting until `n` are there (records of a command are
/// written just after its reply is forwarded).
fn proxy_records(dir: &Path, n: usize) -> Vec<Json> {
    let mut records = Vec::new();
    for _ in 0..200 {
        records = search_all(dir, &[])
            .into_iter()
            .filter(|r| r["provenance"]["source"].str() == Some("imap-proxy"))
            .collect();
        if records.len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    records.reverse();
    records
}

fn brief(r: &Json) -> String {
    format!(
        "{} {} {} actor={} as={} mailbox={} folder={} dest={} items={}",
        r["operation"].str().unwrap_or("?"),
        r["result"].str().unwrap_or("?"),
        r["logon_type"].str().unwrap_or("?"),
        r["actor"].str().unwrap_or("-"),
        r["acting_as"].str().unwrap_or("-"),
        r["mailbox"].str().unwrap_or("-"),
        r["folder"].str().unwrap_or("-"),
        r["destination_folder"].str().unwrap_or("-"),
        r["items"].arr().len()
    )
}

#[track_caller]
fn field(r: &Json, path: &[&str], want: Option<&str>) {
    let mut v = r;
    for p in path {
        v = &v[*p];
    }
    let got = match v {
        Json::Str(s) => Some(s.clone()),
        Json::Num(n) => Some(n.clone()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    assert_eq!(
        got.as_deref(),
        want,
        "{} of record {}",
        path.join("."),
        brief(r)
    );
}

#[track_caller]
fn item(r: &Json, i: usize, uid: u64, message_id: Option<&str>, subject: Option<&str>) {
    let it = &r["items"].arr()[i];
    assert_eq!(it["uid"].u64(), Some(uid), "items[{i}].uid of {}", brief(r));
    assert_eq!(
        it["message_id"].str(),
        message_id,
        "items[{i}].message_id of {}",
        brief(r)
    );
    assert_eq!(
        it["subject"].str(),
        subject,
        "items[{i}].subject of {}",
        brief(r)
    );
}

#[test]
fn imap_proxy_records_the_story_field_by_field_and_changes_no_byte() {
    let direct = started_dovecot();
    let proxied = started_dovecot();
    let data = audit_everything();
    let proxy = Proxy::start(data.path(), proxied.imap, &["--upstream-plain"]);

    let (want, _) = run_story(&["story", "127.0.0.1", &direct.imap.to_string()]);
    let (got, out) = run_story(&["story", "127.0.0.1", &proxy.port.to_string()]);
    assert!(out.contains("story complete"), "{out}\n{}", proxy.log());
    assert_eq!(want.len(), 4, "four sessions: {want:?}");
    for ((ws, wt), (gs, gt)) in want.iter().zip(&got) {
        assert_eq!(ws, gs);
        assert_eq!(
            wt, gt,
            "session {ws}: the client received different bytes through the proxy"
        );
    }

    let records = proxy_records(data.path(), 19);
    let shown: Vec<String> = records.iter().map(brief).collect();
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].str().unwrap_or("?"))
        .collect();
    assert_eq!(
        ops,
        [
            "MailboxLogin",
            "MailboxLogin",
            "Create",
            "Create",
            "Create",
            "FolderBind",
            "MessageBind",
            "MoveToDeletedItems",
            "SoftDelete",
            "HardDelete",
            "UpdateFolderPermissions",
            "MailboxLogout",
            "MailboxLogin",
            "FolderBind",
            "MessageBind",
            "MailboxLogout",
            "MailboxLogin",
            "FolderBind",
            "MailboxLogout",
        ],
        "records:\n{}",
        shown.join("\n")
    );
    const ALICE: &str = "alice@example.com";
    let r = &records;
    for rec in r {
        field(rec, &["provenance", "source"], Some("imap-proxy"));
        field(rec, &["client", "protocol"], Some("imap"));
        field(rec, &["client", "ip"], Some("127.0.0.1"));
        field(rec, &["client", "tls"], Some("false"));
    }
    // Wrong password: a failed login, the server's reply as the reason.
    field(&r[0], &["result"], Some("Failed"));
    field(&r[0], &["actor"], Some(ALICE));
    field(&r[0], &["mailbox"], Some(ALICE));
    field(&r[0], &["logon_type"], Some("Owner"));
    assert!(
        r[0]["reason"]
            .str()
            .is_some_and(|s| s.contains("AUTHENTICATIONFAILED")),
        "{:?}",
        r[0]["reason"]
    );
    assert_eq!(r[0].param("mechanism"), Some("LOGIN"));
    field(&r[1], &["result"], Some("Succeeded"));
    field(&r[1], &["logon_type"], Some("Owner"));
    field(&r[1], &["client", "name"], None);
    // After ID, records carry the client's name.
    for (i, (subject, msgid)) in [
        ("Quarterly numbers", "<q1@example.org>"),
        ("Lunch", "<l2@example.org>"),
        ("Board minutes", "<b3@example.org>"),
    ]
    .iter()
    .enumerate()
    {
        let c = &r[2 + i];
        field(c, &["folder"], Some("INBOX"));
        field(c, &["mailbox"], Some(ALICE));
        field(c, &["client", "name"], Some("story-client 1.0"));
        item(c, 0, i as u64 + 1, Some(msgid), Some(subject));
    }
    field(&r[5], &["folder"], Some("INBOX"));
    field(&r[6], &["folder"], Some("INBOX"));
    item(
        &r[6],
        0,
        1,
        Some("<q1@example.org>"),
        Some("Quarterly numbers"),
    );
    assert_eq!(r[6]["items"].arr().len(), 1);
    field(&r[7], &["folder"], Some("INBOX"));
    field(&r[7], &["destination_folder"], Some("Trash"));
    assert_eq!(r[7]["items"].arr()[0]["uid"].u64(), Some(2));
    assert_eq!(r[7].param("destination_uids"), Some("1"));
    assert_eq!(r[8]["items"].arr()[0]["uid"].u64(), Some(1));
    assert_eq!(r[8].param("flags"), Some("+FLAGS (\\Deleted)"));
    field(&r[9], &["folder"], Some("INBOX"));
    assert_eq!(r[9].param("expunged"), Some("1"));
    field(&r[10], &["folder"], Some("INBOX"));
    assert_eq!(r[10].param("identifier"), Some("bob"));
    assert_eq!(r[10].param("rights"), Some("lr"));
    field(&r[11], &["mailbox"], Some(ALICE));
    // The delegate: bob in alice's shared INBOX.
    field(&r[12], &["actor"], Some("bob@example.com"));
    field(&r[12], &["mailbox"], Some("bob@example.com"));
    for d in &r[13..15] {
        field(d, &["actor"], Some("bob@example.com"));
        field(d, &["mailbox"], Some(ALICE));
        field(d, &["folder"], Some("INBOX"));
        field(d, &["logon_type"], Some("Delegate"));
    }
    item(
        &r[14],
        0,
        3,
        Some("<b3@example.org>"),
        Some("Board minutes"),
    );
    // The admin: AUTHENTICATE PLAIN with authzid carol.
    for a in &r[16..19] {
        field(a, &["actor"], Some("admin@example.com"));
        field(a, &["acting_as"], Some("carol@example.com"));
        field(a, &["mailbox"], Some("carol@example.com"));
        field(a, &["logon_type"], Some("Admin"));
        field(a, &["result"], Some("Succeeded"));
    }
    assert_eq!(r[16].param("mechanism"), Some("PLAIN"));
    field(&r[17], &["folder"], Some("INBOX"));
    // Nothing else.
    assert_eq!(records.len(), 19, "records:\n{}", shown.join("\n"));
}

/// Makes the store's database and write-ahead log immutable (root ignores permissions; the
/// kernel does not ignore this flag) until dropped. Not the `-shm` file: SQLite maps it into
/// memory, and a write to a mapped immutable file kills the process (SIGBUS) rather than
/// failing a write.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn new(dir: &Path) -> Immutable {
        let files: Vec<_> = std::fs::read_dir(dir)
            .expect("reading the data directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n == "mailaudit.db" || n == "mailaudit.db-wal")
            })
            .collect();
        for f in &files {
            let out = run({
                let mut c = Command::new("chattr");
                c.arg("+i").arg(f);
                c
            });
            assert_eq!(
                out.code,
                0,
                "chattr +i {} failed (the fail-closed test needs a filesystem with the immutable flag, e.g. ext4): {}",
                f.display(),
                out.all()
            );
        }
        Immutable(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

fn append(port: u16, subject: &str, size: usize) -> Json {
    let mut c = Command::new(python());
    c.arg(script())
        .args(["append", "127.0.0.1", &port.to_string(), subject])
        .arg(size.to_string());
    let out = run(c).ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no reply line: {}", out.all()));
    Json::parse(line).expect("JSON")
}

/// How many messages with `subject` alice's INBOX holds, asked of Dovecot itself.
fn count_in_dovecot(d: &Dovecot, subject: &str) -> usize {
    let out = d
        .doveadm(&[
            "search", "-u", "alice", "mailbox", "INBOX", "subject", subject,
        ])
        .ok();
    out.stdout.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn imap_proxy_fails_closed_when_the_store_cannot_be_written() {
    let dovecot = started_dovecot();
    let data = audit_everything();
    let proxy = Proxy::start(data.path(), dovecot.imap, &["--upstream-plain"]);

    let ok = append(proxy.port, "Before the outage", 100);
    assert_eq!(ok["reply"].str(), Some("OK"), "{ok:?}\n{}", proxy.log());
    assert_eq!(count_in_dovecot(&dovecot, "Before the outage"), 1);

    let refused = {
        let _frozen = Immutable::new(data.path());
        // The login is refused too (it would create a record): the whole session is.
        let mut c = Command::new(python());
        c.arg(script()).args([
            "append",
            "127.0.0.1",
            &proxy.port.to_string(),
            "During the outage",
            "100",
        ]);
        run(c)
    };
    assert_ne!(
        refused.code,
        0,
        "the login should be refused: {}",
        refused.all()
    );
    assert!(
        refused.all().contains("UNAVAILABLE"),
        "the client should be told NO [UNAVAILABLE]: {}\nproxy:\n{}",
        refused.all(),
        proxy.log()
    );
    assert_eq!(
        count_in_dovecot(&dovecot, "During the outage"),
        0,
        "nothing may reach Dovecot while the audit log cannot be written"
    );
    assert!(
        proxy.log().contains("the audit log cannot record it"),
        "the proxy should log why: {}",
        proxy.log()
    );

    // The explicit opt-out forwards what it cannot record, and says so.
    let pass_data = audit_everything();
    let pass = Proxy::start(
        pass_data.path(),
        dovecot.imap,
        &["--upstream-plain", "--on-audit-failure", "pass"],
    );
    {
        let _frozen = Immutable::new(pass_data.path());
        let r = append(pass.port, "Passed unrecorded", 100);
        assert_eq!(r["reply"].str(), Some("OK"), "{r:?}\n{}", pass.log());
    }
    assert_eq!(count_in_dovecot(&dovecot, "Passed unrecorded"), 1);
    assert!(
        pass.log()
            .contains("forwarding it anyway (--on-audit-failure=pass)"),
        "{}",
        pass.log()
    );
    // Its finished records were kept in memory and are written once the store is back.
    let late = proxy_records(pass_data.path(), 3);
    assert!(
        late.iter().any(|r| r["operation"].str() == Some("Create")
            && r["items"].arr().first().and_then(|i| i["subject"].str())
                == Some("Passed unrecorded")),
        "{:#?}",
        late.iter().map(brief).collect::<Vec<_>>()
    );

    // Writable again: commands pass and are recorded.
    let ok = append(proxy.port, "After the outage", 100);
    assert_eq!(ok["reply"].str(), Some("OK"), "{ok:?}\n{}", proxy.log());
    assert_eq!(count_in_dovecot(&dovecot, "After the outage"), 1);
    let records = proxy_records(data.path(), 6);
    let subjects: Vec<&str> = records
        .iter()
        .filter(|r| r["operation"].str() == Some("Create"))
        .filter_map(|r| r["items"].arr().first().and_then(|i| i["subject"].str()))
        .collect();
    assert_eq!(subjects, ["Before the outage", "After the outage"]);
}

#[test]
fn imap_proxy_passes_curl_and_idle_and_a_20_mb_append() {
    let dovecot = started_dovecot();
    let data = audit_everything();
    let proxy = Proxy::start(data.path(), dovecot.imap, &["--upstream-plain"]);

    let big = append(proxy.port, "Twenty megabytes", 20 * 1024 * 1024);
    assert_eq!(big["reply"].str(), Some("OK"), "{big:?}\n{}", proxy.log());
    assert_eq!(count_in_dovecot(&dovecot, "Twenty megabytes"), 1);

    let mut c = Command::new(curl_bin());
    c.args(["-sS", "--max-time", "60", "--user", "alice:alicepw"])
        .arg(format!("imap://127.0.0.1:{}/INBOX;UID=1", proxy.port));
    let out = run(c).ok();
    assert!(
        out.stdout.contains("Subject: Twenty megabytes") && out.stdout.len() > 20 * 1024 * 1024,
        "curl should fetch the whole message through the proxy ({} bytes)",
        out.stdout.len()
    );

    let mut c = Command::new(python());
    c.arg(script())
        .args(["idle", "127.0.0.1", &proxy.port.to_string()]);
    let out = run(c);
    assert!(
        out.stdout.contains("idle complete"),
        "{}\n{}",
        out.all(),
        proxy.log()
    );

    let records = proxy_records(data.path(), 11);
    let create = records
        .iter()
        .find(|r| r["operation"].str() == Some("Create"))
        .expect("a Create record");
    item(
        create,
        0,
        1,
        Some("<big@example.org>"),
        Some("Twenty megabytes"),
    );
    let size = create["items"].arr()[0]["size"].u64().unwrap_or(0);
    assert!(size > 20 * 1024 * 1024, "size {size}");
    let read = records
        .iter()
        .find(|r| r["operation"].str() == Some("MessageBind"))
        .unwrap_or_else(|| {
            panic!(
                "curl's read: {:?}",
                records.iter().map(brief).collect::<Vec<_>>()
            )
        });
    item(
        read,
        0,
        1,
        Some("<big@example.org>"),
        Some("Twenty megabytes"),
    );
    let during_idle = records.iter().any(|r| {
        r["operation"].str() == Some("Create")
            && r["items"].arr().first().and_then(|i| i["subject"].str()) == Some("During idle")
    });
    assert!(
        during_idle,
        "{:?}",
        records.iter().map(brief).collect::<Vec<_>>()
    );
}

/// A CA and a certificate for `localhost`/127.0.0.1 signed by it, made with the openssl tool.
/// Returns (directory, ca.pem, cert.pem, key.pem).
fn certificates() -> (TempDir, String, String, String) {
    let dir = TempDir::new().expect("a temporary directory");
    let p = |f: &str| dir.path().join(f).display().to_string();
    let openssl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.args(args);
        let out = run(c);
        assert_eq!(out.code, 0, "openssl {args:?}: {}", out.all());
    };
    std::fs::write(
        p("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("writing leaf.ext");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p("key.pem"),
        "-out",
        &p("leaf.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("leaf.ext"),
        "-out",
        &p("cert.pem"),
    ]);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    (dir, ca, cert, key)
}

#[test]
fn imap_proxy_speaks_tls_to_clients_and_upstream_and_verifies_certificates() {
    let dovecot = started_dovecot();
    let (_certs, ca, cert, key) = certificates();
    // front: TLS towards clients, plain to Dovecot.
    let front_dir = audit_everything();
    let front = Proxy::start(
        front_dir.path(),
        dovecot.imap,
        &["--upstream-plain", "--tls-cert", &cert, "--tls-key", &key],
    );
    let mut c = Command::new(python());
    c.arg(script())
        .args(["tls", "127.0.0.1", &front.port.to_string(), &ca]);
    let out = run(c);
    assert!(
        out.stdout.contains("tls complete"),
        "{}\n{}",
        out.all(),
        front.log()
    );

    // back: a plain client, TLS towards `front` verified with the test CA.
    let back_dir = audit_everything();
    let back = Proxy::start(
        back_dir.path(),
        front.port,
        &[
            "--upstream-tls",
            "--upstream-ca",
            &ca,
            "--upstream-name",
            "localhost",
        ],
    );
    let ok = append(back.port, "Through two proxies", 100);
    assert_eq!(
        ok["reply"].str(),
        Some("OK"),
        "{ok:?}\n{}\n{}",
        back.log(),
        front.log()
    );
    assert_eq!(count_in_dovecot(&dovecot, "Through two proxies"), 1);

    let front_records = proxy_records(front_dir.path(), 6);
    let shown: Vec<String> = front_records.iter().map(brief).collect();
    assert_eq!(front_records.len(), 6, "{shown:#?}");
    for r in &front_records {
        field(r, &["client", "tls"], Some("true"));
    }
    let back_records = proxy_records(back_dir.path(), 3);
    assert_eq!(
        back_records.len(),
        3,
        "{:#?}",
        back_records.iter().map(brief).collect::<Vec<_>>()
    );
    for r in &back_records {
        field(r, &["client", "tls"], Some("false"));
    }
    item(
        &back_records[1],
        0,
        1,
        Some("<big@example.org>"),
        Some("Through two proxies"),
    );

    // Verification is on by default: the system CAs do not know the test CA.
    let strict_dir = audit_everything();
    let strict = Proxy::start(
        strict_dir.path(),
        front.port,
        &["--upstream-tls", "--upstream-name", "localhost"],
    );
    let mut c = Command::new(python());
    c.arg(script()).args([
        "append",
        "127.0.0.1",
        &strict.port.to_string(),
        "Never",
        "10",
    ]);
    let out = run(c);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.all().contains("UNAVAILABLE"), "{}", out.all());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        strict.log().contains("certificate"),
        "the proxy should say the upstream's certificate was refused: {}",
        strict.log()
    );
}

#[test]
fn imap_proxy_syncs_a_mailbox_with_mbsync_byte_for_byte() {
    let mbsync = ["/usr/bin/mbsync"]
        .iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| {
            panic!(
                "mbsync is not installed: install the Debian package isync (scripts/test.sh does)"
            )
        });
    let dovecot = started_dovecot();
    for i in 0..5 {
        let r = append(dovecot.imap, &format!("Sync me {i}"), 3000 * (i + 1));
        assert_eq!(r["reply"].str(), Some("OK"));
    }
    let data = audit_everything();
    let proxy = Proxy::start(data.path(), dovecot.imap, &["--upstream-plain"]);
    let sync = |port: u16| -> Vec<Vec<u8>> {
        let dir = TempDir::new().expect("a temporary directory");
        let conf = dir.path().join("mbsyncrc");
        std::fs::create_dir_all(dir.path().join("mail")).expect("creating the local store");
        std::fs::write(
            &conf,
            format!(
                "IMAPAccount test\nHost 127.0.0.1\nPort {port}\nUser alice\nPass alicepw\nSSLType None\nAuthMechs LOGIN\n\n\
                 IMAPStore remote\nAccount test\n\n\
                 MaildirStore local\nPath {dir}/mail/\nInbox {dir}/mail/INBOX\n\n\
                 Channel inbox\nFar :remote:INBOX\nNear :local:INBOX\nSyncState *\nCreate Near\nSync Pull\nExpunge None\n",
                dir = dir.path().display()
            ),
        )
        .expect("writing mbsyncrc");
        let mut c = Command::new(mbsync);
        c.arg("-c").arg(&conf).arg("-a");
        let out = run(c);
        assert_eq!(out.code, 0, "mbsync through port {port}: {}", out.all());
        let mut files: Vec<Vec<u8>> = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(dir.path().join("mail/INBOX").join(sub)) {
                for e in rd.flatten() {
                    let text = std::fs::read(e.path()).expect("reading a synced message");
                    // mbsync marks each message it stores with a random X-TUID line of its
                    // own; everything else must be what the server sent.
                    let kept: Vec<u8> = text
                        .split_inclusive(|&b| b == b'\n')
                        .filter(|l| !l.starts_with(b"X-TUID: "))
                        .flatten()
                        .copied()
                        .collect();
                    assert!(kept.len() < text.len(), "mbsync added no X-TUID line");
                    files.push(kept);
                }
            }
        }
        files.sort();
        files
    };
    let direct = sync(dovecot.imap);
    let proxied = sync(proxy.port);
    assert_eq!(direct.len(), 5);
    assert_eq!(proxied.len(), direct.len());
    for (d, p) in direct.iter().zip(&proxied) {
        assert!(
            d == p,
            "mbsync stored a different message through the proxy:\n{}\n---\n{}",
            String::from_utf8_lossy(&d[..d.len().min(600)]),
            String::from_utf8_lossy(&p[..p.len().min(600)])
        );
    }

    // A record is appended in the commit after the server's reply, so the last fetch's
    // record may land just after mbsync exits: wait for it rather than race it.
    let message_uids = |records: &[Json]| {
        let mut uids: Vec<u64> = records
            .iter()
            .filter(|r| r["operation"].str() == Some("MessageBind"))
            .flat_map(|r| r["items"].arr().iter().filter_map(|i| i["uid"].u64()))
            .collect();
        uids.sort_unstable();
        uids
    };
    let mut records = proxy_records(data.path(), 1);
    for _ in 0..50 {
        if message_uids(&records) == [1, 2, 3, 4, 5] {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        records = proxy_records(data.path(), 1);
    }
    let reads: Vec<&Json> = records
        .iter()
        .filter(|r| r["operation"].str() == Some("MessageBind"))
        .collect();
    assert_eq!(
        message_uids(&records),
        [1, 2, 3, 4, 5],
        "{:#?}",
        records.iter().map(brief).collect::<Vec<_>>()
    );
    for r in &reads {
        field(r, &["actor"], Some("alice@example.com"));
        field(r, &["folder"], Some("INBOX"));
        for it in r["items"].arr() {
            assert!(
                it["subject"]
                    .str()
                    .is_some_and(|s| s.starts_with("Sync me ")),
                "{}",
                brief(r)
            );
        }
    }
}

#[test]
fn imap_proxy_cuts_off_an_abusive_client_and_caps_connections() {
    use std::io::{Read, Write};
    let dovecot = started_dovecot();
    let data = audit_everything();
    let proxy = Proxy::start_with(
        data.path(),
        dovecot.imap,
        "[limits]\nmax_line_bytes = 2048\nmax_literal_bytes = 1000\nmax_connections = 2\n",
        &["--upstream-plain"],
    );
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).expect("connecting");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a timeout");
        s
    };
    let read_all = |s: &mut std::net::TcpStream| {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    // A line that never ends.
    let mut a = connect();
    a.write_all(&[b'x'; 4096]).expect("writing");
    let said = read_all(&mut a);
    assert!(
        said.contains("* BYE a line longer than 2048 bytes"),
        "{said}"
    );
    // A literal over the limit.
    let mut b = connect();
    b.write_all(b"a1 APPEND INBOX {5000}\r\n").expect("writing");
    let said = read_all(&mut b);
    assert!(
        said.contains("* BYE a literal of 5000 bytes; at most 1000"),
        "{said}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = proxy.log();
    assert!(log.contains("cutting off client 127.0.0.1:"), "{log}");
    assert!(log.contains("a line longer than 2048 bytes"), "{log}");
    // Two connections are allowed; the third is turned away, and the proxy still works.
    let mut held = [connect(), connect()];
    for h in held.iter_mut() {
        let mut greeting = [0u8; 16];
        h.read_exact(&mut greeting).expect("a greeting");
        assert_eq!(&greeting[..4], b"* OK");
    }
    let mut third = connect();
    let said = read_all(&mut third);
    assert!(
        said.starts_with("* BYE [UNAVAILABLE] too many connections"),
        "{said}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let ok = append(proxy.port, "Still serving", 10);
    assert_eq!(ok["reply"].str(), Some("OK"), "{ok:?}");
}

#[test]
fn imap_proxy_reads_a_compressed_session_and_passes_it_unchanged() {
    let dovecot = started_dovecot();
    // COMPRESS=DEFLATE needs Dovecot's imap_zlib plugin.
    let mut conf = std::fs::read_to_string(&dovecot.conf).expect("reading dovecot.conf");
    conf.push_str(
        "\nimap_id_log = *\nprotocol imap {\n  mail_plugins = acl mail_log notify imap_acl zlib imap_zlib\n}\n",
    );
    std::fs::write(&dovecot.conf, conf).expect("writing dovecot.conf");
    dovecot.doveadm(&["reload"]).ok();
    std::thread::sleep(Duration::from_millis(500));
    let r = append(dovecot.imap, "Squeezed", 5000);
    assert_eq!(r["reply"].str(), Some("OK"));
    let data = audit_everything();
    let proxy = Proxy::start(data.path(), dovecot.imap, &["--upstream-plain"]);

    let (want, _) = run_story(&["compress", "127.0.0.1", &dovecot.imap.to_string()]);
    let (got, out) = run_story(&["compress", "127.0.0.1", &proxy.port.to_string()]);
    assert!(out.contains("compress complete"), "{out}\n{}", proxy.log());
    assert_eq!(want.len(), 1);
    assert!(want[0].1.contains("COMPRESS") && want[0].1.contains("Subject: Squeezed"));
    assert_eq!(
        want, got,
        "the client received different bytes through the proxy"
    );

    let records = proxy_records(data.path(), 4);
    let shown: Vec<String> = records.iter().map(brief).collect();
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].str().unwrap_or("?"))
        .collect();
    assert_eq!(
        ops,
        ["MailboxLogin", "FolderBind", "MessageBind", "MailboxLogout"],
        "{shown:#?}"
    );
    field(&records[1], &["folder"], Some("INBOX"));
    item(
        &records[2],
        0,
        1,
        Some("<big@example.org>"),
        Some("Squeezed"),
    );
    // The proxy told Dovecot the client's address and port (ID x-originating-ip), and the
    // client never saw that exchange (the transcripts above are identical).
    let port = records[0]["client"]["port"]
        .u64()
        .expect("the client's port");
    let log = dovecot.log_text();
    assert!(
        log.contains(&format!(
            "x-originating-ip=127.0.0.1, x-originating-port={port}"
        )),
        "{log}"
    );
}

/// Where Cyrus's imapd is: installed (cyrus-imapd), or unpacked from its Debian package into
/// /opt/cyrus-imapd, since cyrus-imapd and dovecot-imapd conflict in Debian (both provide
/// `imap-server`) and these tests need both (scripts/test.sh unpacks it).
fn cyrus_imapd() -> std::path::PathBuf {
    for p in [
        "/usr/lib/cyrus/bin/imapd",
        "/opt/cyrus-imapd/usr/lib/cyrus/bin/imapd",
    ] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!(
        "Cyrus's imapd is not available: install cyrus-common and sasl2-bin, and unpack \
         cyrus-imapd (`apt-get download cyrus-imapd && dpkg -x cyrus-imapd_*.deb \
         /opt/cyrus-imapd`; it conflicts with dovecot-imapd); scripts/test.sh does this"
    );
}

/// A Cyrus IMAP 3 of our own (Debian's packages) in a temporary directory, on a free
/// loopback port, with the SASL user alice (password alicepw) whose INBOX and Trash are
/// created at her first login. Stopped when dropped.
struct Cyrus {
    tmp: TempDir,
    port: u16,
}

impl Cyrus {
    fn start() -> Cyrus {
        let imapd = cyrus_imapd();
        let tmp = TempDir::new().expect("a temporary directory");
        let root = tmp.path();
        let p = |s: &str| root.join(s).display().to_string();
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("opening the directory to the cyrus user");
        for d in ["conf", "spool", "run"] {
            std::fs::create_dir_all(root.join(d)).expect("creating a directory");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::write(
            root.join("imapd.conf"),
            format!(
                "configdirectory: {conf}\npartition-default: {spool}\nadmins: cyrusadmin\n\
                 allowplaintext: yes\nsasl_pwcheck_method: auxprop\nsasl_auxprop_plugin: sasldb\n\
                 sasl_sasldb_path: {db}\nsasl_mech_list: PLAIN LOGIN\nautocreate_quota: 0\n\
                 autocreate_inbox_folders: Trash\nautocreate_post: 1\nunixhierarchysep: yes\n\
                 servername: localhost\nidlesocket: {run}/idle\nnotifysocket: {run}/notify\n\
                 lmtpsocket: {run}/lmtp\nsyslog_prefix: mailaudit-test-cyrus\n",
                conf = p("conf"),
                spool = p("spool"),
                db = p("sasldb2"),
                run = p("run"),
            ),
        )
        .expect("writing imapd.conf");
        std::fs::write(
            root.join("cyrus.conf"),
            format!(
                "START {{\n  recover cmd=\"ctl_cyrusdb -r -C {conf}\"\n}}\nSERVICES {{\n  imap cmd=\"{imapd} -C {conf}\" listen=\"127.0.0.1:{port}\" prefork=0\n}}\nEVENTS {{\n}}\n",
                conf = p("imapd.conf"),
                imapd = imapd.display(),
            ),
        )
        .expect("writing cyrus.conf");
        let mut pw = Command::new("sh");
        pw.arg("-c").arg(format!(
            "echo alicepw | saslpasswd2 -p -c -f {} -u localhost alice",
            p("sasldb2")
        ));
        run(pw).ok();
        let mut own = Command::new("chown");
        own.args([
            "-R",
            "cyrus:mail",
            &p("conf"),
            &p("spool"),
            &p("run"),
            &p("sasldb2"),
        ]);
        run(own).ok();
        let mut master = Command::new("/usr/sbin/cyrmaster");
        master.args([
            "-C",
            &p("imapd.conf"),
            "-M",
            &p("cyrus.conf"),
            "-p",
            &p("run/master.pid"),
            "-d",
        ]);
        run(master).ok();
        let cyrus = Cyrus { tmp, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return cyrus;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Cyrus did not start listening on 127.0.0.1:{port}");
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        let pid =
            std::fs::read_to_string(self.tmp.path().join("run/master.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<u32>() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn imap_proxy_audits_cyrus_too() {
    let direct = Cyrus::start();
    let proxied = Cyrus::start();
    let data = audit_everything();
    let proxy = Proxy::start(data.path(), proxied.port, &["--upstream-plain"]);
    let (want, _) = run_story(&["cyrus", "127.0.0.1", &direct.port.to_string()]);
    let (got, out) = run_story(&["cyrus", "127.0.0.1", &proxy.port.to_string()]);
    assert!(out.contains("cyrus complete"), "{out}\n{}", proxy.log());
    assert_eq!(want.len(), 1);
    assert!(want[0].1.contains("Cyrus IMAP"), "{}", want[0].1);
    assert_eq!(
        want, got,
        "the client received different bytes through the proxy"
    );

    let records = proxy_records(data.path(), 8);
    let shown: Vec<String> = records.iter().map(brief).collect();
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].str().unwrap_or("?"))
        .collect();
    assert_eq!(
        ops,
        [
            "MailboxLogin",
            "Create",
            "Create",
            "FolderBind",
            "MessageBind",
            "MoveToDeletedItems",
            "SoftDelete",
            "HardDelete",
            "MailboxLogout"
        ],
        "{shown:#?}"
    );
    for r in &records {
        field(r, &["actor"], Some("alice@example.com"));
        field(r, &["mailbox"], Some("alice@example.com"));
        field(r, &["logon_type"], Some("Owner"));
        field(r, &["result"], Some("Succeeded"));
    }
    item(
        &records[1],
        0,
        1,
        Some("<q1@example.org>"),
        Some("Quarterly numbers"),
    );
    item(
        &records[4],
        0,
        1,
        Some("<q1@example.org>"),
        Some("Quarterly numbers"),
    );
    field(&records[5], &["folder"], Some("INBOX"));
    field(&records[5], &["destination_folder"], Some("Trash"));
    assert_eq!(records[5]["items"].arr()[0]["uid"].u64(), Some(2));
    assert_eq!(records[7].param("expunged"), Some("1"));
}

#[test]
fn imap_proxy_holds_only_what_the_policy_records() {
    let dovecot = started_dovecot();
    let r = append(dovecot.imap, "Keep me", 100);
    assert_eq!(r["reply"].str(), Some("OK"));
    // The default policy: an owner's FolderBind is not audited, a SoftDelete is.
    let data = init_dir();
    let proxy = Proxy::start(data.path(), dovecot.imap, &["--upstream-plain"]);
    let signals = TempDir::new().expect("a temporary directory");
    let mut c = Command::new(python());
    c.arg(script())
        .args(["frozen", "127.0.0.1", &proxy.port.to_string()])
        .arg(signals.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("starting the client");
    let ready = signals.path().join("ready");
    for _ in 0..600 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready.exists(), "the client did not log in: {}", proxy.log());
    let out = {
        let _frozen = Immutable::new(data.path());
        std::fs::write(signals.path().join("frozen"), "").expect("signalling the client");
        child.wait_with_output().expect("the client's output")
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| Json::parse(l).expect("JSON"))
        .unwrap_or_else(|| {
            panic!(
                "no replies: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(
        replies["select"].str(),
        Some("OK"),
        "{replies:?}\n{}",
        proxy.log()
    );
    assert!(
        replies["store"]
            .str()
            .is_some_and(|s| s.contains("UNAVAILABLE")),
        "{replies:?}"
    );
    // Dovecot never saw the STORE: the message is not marked \Deleted.
    let flags = dovecot
        .doveadm(&[
            "fetch", "-u", "alice", "flags", "mailbox", "INBOX", "uid", "1",
        ])
        .ok();
    assert!(!flags.stdout.contains("\\Deleted"), "{}", flags.stdout);
}

/// Reads from `s` until a line starting with `tag ` has arrived; returns everything read.
fn read_until_tag(s: &mut std::net::TcpStream, tag: &str) -> String {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.lines().any(|l| l.starts_with(&format!("{tag} "))) {
            return text;
        }
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "connection closed before {tag}'s reply: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn imap_proxy_refuses_one_pipelined_command_and_passes_the_others() {
    use std::io::Write;
    let dovecot = started_dovecot();
    let data = audit_everything();
    let proxy = Proxy::start(data.path(), dovecot.imap, &["--upstream-plain"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a timeout");
    read_until_tag(&mut s, "*");
    s.write_all(b"a0 LOGIN alice alicepw\r\n").expect("writing");
    assert!(read_until_tag(&mut s, "a0").contains("a0 OK"));
    let replies = {
        let _frozen = Immutable::new(data.path());
        // NOOP is not recorded; the APPEND (a LITERAL+ literal, sent without waiting) is.
        s.write_all(
            b"a1 NOOP\r\na2 APPEND INBOX {27+}\r\nSubject: Pipelined\r\n\r\nhello\r\na3 NOOP\r\n",
        )
        .expect("writing");
        let mut replies = read_until_tag(&mut s, "a3");
        if !replies.contains("a2 ") {
            replies.push_str(&read_until_tag(&mut s, "a2"));
        }
        replies
    };
    assert!(replies.contains("a1 OK"), "{replies}");
    assert!(
        replies.contains("a2 NO [UNAVAILABLE] the audit log cannot record this command"),
        "{replies}"
    );
    assert!(replies.contains("a3 OK"), "{replies}");
    assert_eq!(count_in_dovecot(&dovecot, "Pipelined"), 0);
    // Not confused by the discarded literal: the session goes on, and is audited.
    s.write_all(b"a4 SELECT INBOX\r\n").expect("writing");
    assert!(read_until_tag(&mut s, "a4").contains("a4 OK"));
    let records = proxy_records(data.path(), 2);
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].str().unwrap_or("?"))
        .collect();
    assert_eq!(
        ops,
        ["MailboxLogin", "FolderBind"],
        "{:#?}",
        records.iter().map(brief).collect::<Vec<_>>()
    );
}
