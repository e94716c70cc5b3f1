//! A real Postfix (Debian's package) with SASL through a real Dovecot's auth service, the real
//! `mailaudit milter` in its `smtpd_milters`, and real submissions with swaks (and Python's
//! smtplib and a raw socket for what swaks cannot send: undecodable bytes, a client that
//! goes away in the middle of DATA). Every record is read back through `mailaudit search` and
//! checked field by field; the milter's counters (its last log line) account for everything
//! it did not record.
//!
//! The first test reaches the milter through a unix socket, the second over loopback TCP
//! (the milter negotiates differently for each).
//!
//! Each test starts its own Dovecot (authentication only), milter and Postfix instance
//! (`postfix -c DIR`, its own queue, loopback, free ports, every message discarded so
//! nothing leaves) in a temporary directory, and stops all three when dropped, also when
//! the test fails. Postfix, swaks and Dovecot must be installed (scripts/test.sh installs
//! them) and the tests must run as root (Postfix starts as root): otherwise they fail,
//! never skip.

use crate::dovecot::{
    dovecot_bin, free_ports, pid_alive, python, require_program, require_root, system_user,
};
use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

fn postfix_bin() -> PathBuf {
    require_program("postfix", &["/usr/sbin/postfix"], "postfix")
}

fn swaks_bin() -> PathBuf {
    require_program("swaks", &["/usr/bin/swaks"], "swaks")
}

/// Runs a command that starts a daemon: the daemon keeps the streams it was given, so give
/// it a file rather than a pipe that would never reach its end. Returns (success, output).
fn run_daemon_command(mut cmd: Command, out_path: &Path) -> (bool, String) {
    let out = std::fs::File::create(out_path).expect("creating an output file");
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("duplicating a file handle"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{shown} did not return within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(out_path).unwrap_or_default();
    (status.success(), format!("{status}\n{said}"))
}

fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A Dovecot that only authenticates: Postfix's `smtpd_sasl_type = dovecot` talks to its
/// auth service over a loopback TCP listener. Users alice, bob and carol.
struct AuthDovecot {
    conf: PathBuf,
    port: u16,
    pid: Option<u32>,
}

impl AuthDovecot {
    fn start(root: &Path) -> AuthDovecot {
        let dir = root.join("dovecot");
        for d in ["run", "state"] {
            std::fs::create_dir_all(dir.join(d)).expect("creating Dovecot's directories");
        }
        let (uid, gid) = system_user("dovecot");
        let users: String = [("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")]
            .iter()
            .map(|(u, pw)| format!("{u}:{{PLAIN}}{pw}:{uid}:{gid}::/nonexistent\n"))
            .collect();
        std::fs::write(dir.join("users"), users).expect("writing the users file");
        let conf = dir.join("dovecot.conf");
        for attempt in 1.. {
            let port = free_ports(1)[0];
            let d = dir.display();
            std::fs::write(
                &conf,
                format!(
                    "# Written by mailaudit's milter tests: authentication only.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"
                ),
            )
            .expect("writing dovecot.conf");
            let mut cmd = Command::new(dovecot_bin());
            cmd.arg("-c").arg(&conf);
            let (ok, said) = run_daemon_command(cmd, &dir.join("start.out"));
            if ok {
                let mut d = AuthDovecot {
                    conf,
                    port,
                    pid: None,
                };
                d.wait_listening(&dir);
                return d;
            }
            assert!(
                attempt < 3 && said.contains("Address already in use"),
                "dovecot -c {} failed: {said}",
                conf.display()
            );
        }
        unreachable!("the loop returns or panics")
    }

    fn wait_listening(&mut self, dir: &Path) {
        let start = Instant::now();
        loop {
            self.pid = std::fs::read_to_string(dir.join("run").join("master.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            if self.pid.is_some() && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "Dovecot's auth service did not listen on 127.0.0.1:{} within 20 s: {}",
                self.port,
                std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AuthDovecot {
    fn drop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        kill("-TERM", pid);
        let start = Instant::now();
        while pid_alive(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if pid_alive(pid) {
            kill("-KILL", pid);
        }
        let _ = &self.conf;
    }
}

/// A running `mailaudit milter`.
struct Milter {
    child: Child,
    /// `inet:127.0.0.1:PORT`, as Postfix's smtpd_milters wants it.
    addr: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Milter {
    fn start(data: &Path, listen: &str, extra: &[&str]) -> Milter {
        let mut child = Command::new(bin())
            .arg("--data-dir")
            .arg(data)
            .args(["milter", "--listen", listen])
            .args(extra)
            .env("RUST_LOG", "mailaudit=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mailaudit milter");
        let (log, reader, rx) = watch_output(&mut child, "mailaudit milter listening on ");
        let mut milter = Milter {
            child,
            addr: String::new(),
            log,
            reader: Some(reader),
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(rest) => {
                let addr = rest.trim().to_string();
                let expected = listen.strip_suffix(":0").unwrap_or(listen);
                assert!(addr.starts_with(expected), "{addr} for {listen}");
                milter.addr = addr;
                milter
            }
            Err(e) => {
                let _ = milter.child.kill();
                let _ = milter.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "mailaudit milter did not print its address ({e})\nstderr:\n{}",
                    milter.log()
                );
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops it with SIGTERM, as a service manager would, and returns its whole log.
    fn stop(mut self) -> String {
        kill("-TERM", self.child.id());
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "the milter exited with {status}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the milter did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log()
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Postfix instance: its own config directory, queue and log file; smtpd on a
/// free loopback port with SASL through Dovecot and the milter; every message discarded.
struct Postfix {
    etc: PathBuf,
    root: PathBuf,
    port: u16,
    running: bool,
}

impl Postfix {
    fn start(root: &Path, auth_port: u16, milter: &str) -> Postfix {
        postfix_bin();
        let root = root.join("postfix");
        let etc = root.join("etc");
        for d in ["etc", "queue", "data"] {
            std::fs::create_dir_all(root.join(d)).expect("creating Postfix's directories");
        }
        let (uid, _) = system_user("postfix");
        std::os::unix::fs::chown(root.join("data"), Some(uid), None)
            .expect("giving the data directory to postfix");
        let r = root.display();
        std::fs::write(
            etc.join("main.cf"),
            format!(
                "# Written by mailaudit's milter tests (crates/cli/tests/integration/milter.rs).
compatibility_level = 3.6
queue_directory = {r}/queue
data_directory = {r}/data
maillog_file = {r}/maillog
maillog_file_prefixes = {r}
myhostname = mx.example.org
mydomain = example.org
myorigin = example.org
mydestination = example.org
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
# Nothing leaves: every message is delivered to the discard transport.
default_transport = discard
local_transport = discard
relay_transport = discard
# Submissions as a remote client makes them: Postfix adds no missing header.
local_header_rewrite_clients =
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth_port}
smtpd_tls_security_level = none
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
# docs/postfix.md
smtpd_milters = {milter}
non_smtpd_milters = {milter}
milter_default_action = tempfail
"
            ),
        )
        .expect("writing main.cf");
        for attempt in 1.. {
            let port = free_ports(1)[0];
            std::fs::write(etc.join("master.cf"), master_cf(port)).expect("writing master.cf");
            let mut cmd = Command::new(postfix_bin());
            cmd.arg("-c").arg(&etc).arg("start");
            let (ok, said) = run_daemon_command(cmd, &root.join("start.out"));
            let mut pf = Postfix {
                etc: etc.clone(),
                root: root.clone(),
                port,
                running: ok,
            };
            assert!(
                ok,
                "postfix -c {} start failed: {said}\nmaillog:\n{}",
                etc.display(),
                pf.maillog()
            );
            if pf.wait_listening() {
                return pf;
            }
            assert!(
                attempt < 3,
                "Postfix did not listen on 127.0.0.1:{port} within 30 s\nmaillog:\n{}",
                pf.maillog()
            );
            pf.stop();
        }
        unreachable!("the loop returns or panics")
    }

    fn wait_listening(&self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.root.join("maillog")).unwrap_or_default()
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.root.join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let pid = self.master_pid();
        let mut cmd = Command::new(postfix_bin());
        cmd.arg("-c").arg(&self.etc).arg("stop");
        let _ = run_daemon_command(cmd, &self.root.join("stop.out"));
        if let Some(pid) = pid {
            let start = Instant::now();
            while pid_alive(pid) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_alive(pid) {
                kill("-KILL", pid);
            }
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

fn master_cf(port: u16) -> String {
    format!(
        "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

/// Dovecot, the milter and Postfix, stopped in reverse order when dropped.
struct Stack {
    postfix: Postfix,
    milter: Option<Milter>,
    _dovecot: AuthDovecot,
    data: TempDir,
    tmp: TempDir,
}

impl Stack {
    /// `unix`: Postfix reaches the milter through a unix socket (as docs/postfix.md
    /// recommends, and with the no-reply protocol flags), else over loopback TCP.
    fn start(milter_config: &str, milter_args: &[&str], unix: bool) -> Stack {
        require_root();
        swaks_bin();
        let tmp = TempDir::new().expect("a temporary directory");
        // Postfix's and Dovecot's unprivileged processes must reach their directories.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("opening the temporary directory");
        let data = init_dir();
        let config = tmp.path().join("milter.toml");
        std::fs::write(&config, milter_config).expect("writing milter.toml");
        let dovecot = AuthDovecot::start(tmp.path());
        let config_arg = config.display().to_string();
        let mut args = vec!["--config", config_arg.as_str()];
        args.extend_from_slice(milter_args);
        let listen = if unix {
            // Postfix's smtpd runs as the postfix user: the socket (mode 660 by default) is
            // given to its group, as docs/postfix.md says.
            args.extend_from_slice(&["--socket-group", "postfix"]);
            format!("unix:{}", tmp.path().join("milter.sock").display())
        } else {
            "inet:127.0.0.1:0".to_string()
        };
        let milter = Milter::start(data.path(), &listen, &args);
        let postfix = Postfix::start(tmp.path(), dovecot.port, &milter.addr);
        Stack {
            postfix,
            milter: Some(milter),
            _dovecot: dovecot,
            data,
            tmp,
        }
    }

    fn context(&self) -> String {
        format!(
            "\nmilter log:\n{}\nPostfix maillog:\n{}",
            self.milter.as_ref().map(Milter::log).unwrap_or_default(),
            self.postfix.maillog()
        )
    }

    /// swaks against our Postfix; returns its transcript and exit code.
    fn swaks(&self, args: &[&str]) -> Out {
        let mut c = Command::new(swaks_bin());
        c.args(["--server", &format!("127.0.0.1:{}", self.postfix.port)])
            .args(["--helo", "laptop.example.org", "--timeout", "60"])
            .args(args);
        run(c)
    }

    /// An authenticated submission that Postfix must accept; returns its queue id.
    #[track_caller]
    fn submit(&self, login: &str, password: &str, args: &[&str]) -> String {
        let mut all = vec![
            "--auth",
            "PLAIN",
            "--auth-user",
            login,
            "--auth-password",
            password,
        ];
        all.extend_from_slice(args);
        let out = self.swaks(&all);
        queue_id(&out.stdout).unwrap_or_else(|| {
            panic!(
                "Postfix did not queue the message (exit {}):\n{}{}",
                out.code,
                out.all(),
                self.context()
            )
        })
    }

    /// Runs a Python script with the SMTP port as its argument.
    fn python(&self, script: &str) -> Out {
        let path = self.tmp.path().join("client.py");
        std::fs::write(&path, script).expect("writing the client script");
        let mut c = Command::new(python());
        c.arg(&path).arg(self.postfix.port.to_string());
        run(c)
    }

    /// Stops the milter (SIGTERM) and returns its log.
    fn stop_milter(&mut self) -> String {
        self.milter.take().map(Milter::stop).unwrap_or_default()
    }

    /// Every record the milter made, by Message-ID.
    fn records(&self) -> Vec<Json> {
        search_all(self.data.path(), &["--protocol", "smtp"])
    }
}

fn queue_id(transcript: &str) -> Option<String> {
    transcript
        .lines()
        .find_map(|l| l.split("Ok: queued as ").nth(1))
        .map(|q| q.trim().to_string())
}

fn by_message_id<'a>(records: &'a [Json], id: &str) -> Vec<&'a Json> {
    records
        .iter()
        .filter(|r| r["items"][0]["message_id"].str() == Some(id))
        .collect()
}

fn params(r: &Json, name: &str) -> Vec<String> {
    r["parameters"]
        .arr()
        .iter()
        .filter(|p| p["name"].str() == Some(name))
        .filter_map(|p| p["value"].str().map(str::to_string))
        .collect()
}

/// What one record must say.
struct Expect<'a> {
    message_id: &'a str,
    operation: &'a str,
    result: &'a str,
    reason: Option<&'a str>,
    logon_type: &'a str,
    mailbox: &'a str,
    actor: &'a str,
    login: &'a str,
    subject: &'a str,
    queue_id: Option<&'a str>,
    from: Option<&'a str>,
    sender: Option<&'a str>,
    envelope_from: &'a str,
    recipients: &'a str,
}

#[track_caller]
fn check(records: &[Json], e: &Expect, context: &str) -> Json {
    let found = by_message_id(records, e.message_id);
    assert_eq!(
        found.len(),
        1,
        "expected one record of {}, found {}: {found:?}{context}",
        e.message_id,
        found.len()
    );
    let r = found[0];
    let what = format!("record of {}: {r:?}", e.message_id);
    assert_eq!(r["operation"].str(), Some(e.operation), "{what}");
    assert_eq!(r["result"].str(), Some(e.result), "{what}");
    assert_eq!(r["reason"].str(), e.reason, "{what}");
    assert_eq!(r["logon_type"].str(), Some(e.logon_type), "{what}");
    assert_eq!(r["external"], Json::Bool(false), "{what}");
    assert_eq!(r["mailbox"].str(), Some(e.mailbox), "{what}");
    assert_eq!(r["actor"].str(), Some(e.actor), "{what}");
    assert_eq!(r["acting_as"], Json::Null, "{what}");
    assert_eq!(r["items"].arr().len(), 1, "{what}");
    assert_eq!(r["items"][0]["subject"].str(), Some(e.subject), "{what}");
    // The size as the milter received the message (headers and body, before Postfix adds
    // its Received: line); unit tests check the arithmetic.
    assert!(
        r["items"][0]["size"].u64().is_some_and(|s| s > 50),
        "{what}"
    );
    assert_eq!(r["client"]["ip"].str(), Some("127.0.0.1"), "{what}");
    assert!(r["client"]["port"].u64().is_some(), "{what}");
    assert_eq!(r["client"]["protocol"].str(), Some("smtp"), "{what}");
    assert_eq!(
        r["client"]["name"].str(),
        Some("laptop.example.org"),
        "{what}"
    );
    assert_eq!(r["provenance"]["source"].str(), Some("milter"), "{what}");
    assert_eq!(
        r["provenance"]["host"].str(),
        Some("mx.example.org"),
        "{what}"
    );
    if let Some(q) = e.queue_id {
        assert_eq!(
            r["provenance"]["reference"].str(),
            Some(format!("queue id {q}").as_str()),
            "{what}"
        );
    }
    assert_eq!(params(r, "mechanism"), ["PLAIN"], "{what}");
    assert_eq!(params(r, "login"), [e.login], "{what}");
    assert_eq!(
        params(r, "from"),
        e.from.into_iter().collect::<Vec<_>>(),
        "{what}"
    );
    assert_eq!(
        params(r, "sender"),
        e.sender.into_iter().collect::<Vec<_>>(),
        "{what}"
    );
    assert_eq!(params(r, "envelope_from"), [e.envelope_from], "{what}");
    assert_eq!(params(r, "recipients"), [e.recipients], "{what}");
    r.clone()
}

fn counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("milter counters:"))
        .unwrap_or_else(|| panic!("no counters line in the milter's log:\n{log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

const CONFIG: &str = r#"
domain = "example.org"
[rate]
default_per_hour = 100
per_login = { "carol" = 2 }
"#;

const MALFORMED: &str = r#"
import smtplib, sys
port = int(sys.argv[1])
messages = [
    # No From: at all.
    b"To: dave@example.net\r\nSubject: no from\r\nMessage-ID: <nofrom@test>\r\n\r\nhi\r\n",
    # Two From: headers, the second someone else's.
    b"From: bob@example.org\r\nFrom: alice@example.org\r\nTo: dave@example.net\r\nSubject: two from\r\nMessage-ID: <twofrom@test>\r\n\r\nhi\r\n",
    # Bytes that are no encoding at all where the address should be.
    b"From: \xff\xfe <\xff\xfe@example.org>\r\nTo: dave@example.net\r\nSubject: garbage \xff\r\nMessage-ID: <garbage@test>\r\n\r\nhi\r\n",
]
s = smtplib.SMTP("127.0.0.1", port, local_hostname="laptop.example.org")
s.login("bob", "bobpw")
for m in messages:
    refused = s.sendmail("bob@example.org", ["dave@example.net"], m)
    assert not refused, refused
s.quit()
print("sent", len(messages))
"#;

/// Authenticates, starts DATA, sends half a header, and goes away.
const DROP_MID_DATA: &str = r#"
import base64, socket, sys
port = int(sys.argv[1])
c = socket.create_connection(("127.0.0.1", port), timeout=30)
f = c.makefile("rb")
def reply():
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("connection closed early")
        if line[3:4] != b"-":
            return line
def cmd(text, want):
    c.sendall(text + b"\r\n")
    line = reply()
    assert line.startswith(want), (text, line)
reply()
cmd(b"EHLO laptop.example.org", b"250")
cmd(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0bobpw"), b"235")
cmd(b"MAIL FROM:<bob@example.org>", b"250")
cmd(b"RCPT TO:<dave@example.net>", b"250")
cmd(b"DATA", b"354")
c.sendall(b"From: alice@example.org\r\nSubject: never fini")
c.close()
print("dropped")
"#;

#[test]
fn milter_records_sends_through_a_real_postfix_field_by_field() {
    let mut stack = Stack::start(CONFIG, &[], true);
    let rcpt = ["--to", "dave@example.net"];

    // alice as herself.
    let q_send = stack.submit(
        "alice",
        "alicepw",
        &[
            &rcpt[..],
            &[
                "--from",
                ALICE,
                "--header",
                "From: Alice <alice@example.org>",
                "--header",
                "Subject: Quarterly numbers",
                "--header",
                "Message-Id: <send@test>",
            ],
        ]
        .concat(),
    );
    // bob as alice: From alice, no Sender; encoded words in the name and the subject.
    let q_as = stack.submit(
        "bob",
        "bobpw",
        &[
            &rcpt[..],
            &[
                "--from",
                BOB,
                "--header",
                "From: =?UTF-8?Q?Alice_M=C3=BCller?= <alice@example.org>",
                "--header",
                "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from alice",
                "--header",
                "Message-Id: <sendas@test>",
            ],
        ]
        .concat(),
    );
    // bob on behalf of alice: From alice, Sender bob.
    let q_behalf = stack.submit(
        "bob",
        "bobpw",
        &[
            &rcpt[..],
            &[
                "--from",
                BOB,
                "--header",
                "From: alice@example.org",
                "--header",
                "Sender: Bob <bob@example.org>",
                "--header",
                "Subject: Minutes",
                "--header",
                "Message-Id: <behalf@test>",
            ],
        ]
        .concat(),
    );
    // An unauthenticated relay attempt: Postfix refuses it, the milter records nothing.
    let relay = stack.swaks(&[
        "--from",
        "mallory@example.net",
        "--to",
        "victim@example.net",
        "--header",
        "Message-Id: <relay@test>",
    ]);
    assert!(
        relay.stdout.contains("Relay access denied"),
        "the relay attempt should be refused:\n{}",
        relay.all()
    );
    // Unauthenticated mail to a local address: accepted, but not mailbox activity.
    let inbound = stack.swaks(&[
        "--from",
        "friend@example.net",
        "--to",
        ALICE,
        "--header",
        "Message-Id: <inbound@test>",
    ]);
    assert!(
        queue_id(&inbound.stdout).is_some(),
        "inbound mail should be accepted:\n{}",
        inbound.all()
    );
    // carol's burst over her limit of 2 an hour: all accepted (not enforced), the last two
    // recorded as Failed "rate exceeded".
    let burst: Vec<String> = (1..=4)
        .map(|i| {
            stack.submit(
                "carol",
                "carolpw",
                &[
                    &rcpt[..],
                    &[
                        "--from",
                        CAROL,
                        "--header",
                        &format!("Subject: burst {i}"),
                        "--header",
                        &format!("Message-Id: <burst{i}@test>"),
                    ],
                ]
                .concat(),
            )
        })
        .collect();
    let malformed = stack.python(MALFORMED);
    assert_eq!(malformed.code, 0, "{}{}", malformed.all(), stack.context());
    let dropped = stack.python(DROP_MID_DATA);
    assert_eq!(dropped.code, 0, "{}{}", dropped.all(), stack.context());

    // Every record was committed before Postfix was answered: they are all there now.
    let records = stack.records();
    let context = stack.context();
    let base = Expect {
        message_id: "",
        operation: "Send",
        result: "Succeeded",
        reason: None,
        logon_type: "Owner",
        mailbox: ALICE,
        actor: ALICE,
        login: "alice",
        subject: "",
        queue_id: None,
        from: None,
        sender: None,
        envelope_from: ALICE,
        recipients: "dave@example.net",
    };
    let send = check(
        &records,
        &Expect {
            message_id: "<send@test>",
            subject: "Quarterly numbers",
            queue_id: Some(&q_send),
            from: Some(ALICE),
            ..base
        },
        &context,
    );
    assert_eq!(params(&send, "recipient_count"), ["1"]);
    assert_eq!(params(&send, "anomaly"), Vec::<String>::new());
    let bob_base = Expect {
        actor: BOB,
        login: "bob",
        logon_type: "Delegate",
        envelope_from: BOB,
        from: Some(ALICE),
        ..base
    };
    check(
        &records,
        &Expect {
            message_id: "<sendas@test>",
            operation: "SendAs",
            subject: "Grüße from alice",
            queue_id: Some(&q_as),
            ..bob_base
        },
        &context,
    );
    check(
        &records,
        &Expect {
            message_id: "<behalf@test>",
            operation: "SendOnBehalf",
            subject: "Minutes",
            queue_id: Some(&q_behalf),
            sender: Some(BOB),
            ..bob_base
        },
        &context,
    );
    assert!(by_message_id(&records, "<relay@test>").is_empty());
    assert!(by_message_id(&records, "<inbound@test>").is_empty());
    for (i, q) in burst.iter().enumerate() {
        let over = i >= 2;
        let id = format!("<burst{}@test>", i + 1);
        let subject = format!("burst {}", i + 1);
        let r = check(
            &records,
            &Expect {
                message_id: &id,
                result: if over { "Failed" } else { "Succeeded" },
                reason: over.then_some("rate exceeded"),
                mailbox: CAROL,
                actor: CAROL,
                login: "carol",
                subject: &subject,
                queue_id: Some(q),
                from: Some(CAROL),
                envelope_from: CAROL,
                ..base
            },
            &context,
        );
        if over {
            assert_eq!(params(&r, "rate_action"), ["accepted"], "{r:?}");
            assert_eq!(
                params(&r, "rate"),
                [format!("{} messages in the last hour; limit 2", i + 1)],
                "{r:?}"
            );
        } else {
            assert!(params(&r, "rate").is_empty(), "{r:?}");
        }
    }
    // Malformed headers: clear records, each naming what was wrong.
    let malformed_base = Expect {
        actor: BOB,
        login: "bob",
        mailbox: BOB,
        envelope_from: BOB,
        ..base
    };
    let r = check(
        &records,
        &Expect {
            message_id: "<nofrom@test>",
            subject: "no from",
            ..malformed_base
        },
        &context,
    );
    assert_eq!(
        params(&r, "anomaly"),
        ["no From: header; classified by the envelope sender"]
    );
    let r = check(
        &records,
        &Expect {
            message_id: "<twofrom@test>",
            operation: "SendAs",
            logon_type: "Delegate",
            mailbox: ALICE,
            subject: "two from",
            from: Some("bob@example.org, alice@example.org"),
            ..malformed_base
        },
        &context,
    );
    assert_eq!(params(&r, "anomaly"), ["2 From: headers"]);
    let r = check(
        &records,
        &Expect {
            message_id: "<garbage@test>",
            subject: "garbage \u{fffd}",
            ..malformed_base
        },
        &context,
    );
    let anomaly = params(&r, "anomaly");
    assert!(
        anomaly.len() == 1 && anomaly[0].starts_with("From: header without an address ("),
        "{anomaly:?}"
    );
    // Nothing else: 3 sends, 4 of the burst, 3 malformed; none for the dropped message.
    assert_eq!(records.len(), 10, "{records:?}");
    assert!(by_message_id(&records, "").is_empty());

    let log = stack.stop_milter();
    assert_eq!(counter(&log, "messages"), 11, "{log}");
    assert_eq!(counter(&log, "recorded"), 10, "{log}");
    assert_eq!(counter(&log, "ignored_unauthenticated"), 2, "{log}");
    assert_eq!(counter(&log, "malformed_headers"), 3, "{log}");
    assert_eq!(counter(&log, "over_rate"), 2, "{log}");
    assert_eq!(counter(&log, "deferred_by_rate"), 0, "{log}");
    assert_eq!(counter(&log, "aborted"), 1, "{log}");
    assert_eq!(counter(&log, "store_failures"), 0, "{log}");
    assert_eq!(counter(&log, "protocol_errors"), 0, "{log}");
    assert!(
        log.contains("the transaction ended before the end of the message"),
        "{log}"
    );
}

#[test]
fn enforced_rate_a_store_failure_and_a_stopped_milter_all_defer_the_message() {
    let mut stack = Stack::start("", &["--enforce-rate", "--rate-per-hour", "2"], false);
    let send = |stack: &Stack, i: u32| {
        stack.swaks(&[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "alicepw",
            "--from",
            ALICE,
            "--to",
            "dave@example.net",
            "--header",
            &format!("Subject: enforced {i}"),
            "--header",
            &format!("Message-Id: <enforced{i}@test>"),
        ])
    };
    for i in 1..=2 {
        let out = send(&stack, i);
        assert!(
            queue_id(&out.stdout).is_some(),
            "message {i} should be accepted:\n{}{}",
            out.all(),
            stack.context()
        );
    }
    let third = send(&stack, 3);
    assert!(
        queue_id(&third.stdout).is_none()
            && third.stdout.contains(
                "451 4.7.1 Too many messages from this login in the last hour; try again later"
            ),
        "the third message should be deferred by the milter:\n{}",
        third.all()
    );
    let records = stack.records();
    let context = stack.context();
    for i in 1..=3 {
        let id = format!("<enforced{i}@test>");
        let found = by_message_id(&records, &id);
        assert_eq!(found.len(), 1, "{id}: {records:?}{context}");
        let r = found[0];
        assert_eq!(r["operation"].str(), Some("Send"), "{r:?}");
        assert_eq!(r["mailbox"].str(), Some(ALICE), "{r:?}");
        assert_eq!(r["actor"].str(), Some(ALICE), "{r:?}");
        assert_eq!(r["logon_type"].str(), Some("Owner"), "{r:?}");
        if i < 3 {
            assert_eq!(r["result"].str(), Some("Succeeded"), "{r:?}");
            assert_eq!(r["reason"], Json::Null, "{r:?}");
        } else {
            assert_eq!(r["result"].str(), Some("Failed"), "{r:?}");
            assert_eq!(r["reason"].str(), Some("rate exceeded"), "{r:?}");
            assert_eq!(params(r, "rate_action"), ["deferred"], "{r:?}");
            assert_eq!(
                params(r, "rate"),
                ["2 messages in the last hour; limit 2"],
                "{r:?}"
            );
        }
    }
    assert_eq!(records.len(), 3, "{records:?}");

    // The store cannot take the record (another process holds the write lock past the
    // store's 30 s busy timeout): the default --on-store-failure tempfail defers the message
    // rather than let it go unaudited. Once the store is back, bob's next message is recorded.
    let bob = |stack: &Stack, id: &str| {
        stack.swaks(&[
            "--auth",
            "PLAIN",
            "--auth-user",
            "bob",
            "--auth-password",
            "bobpw",
            "--from",
            BOB,
            "--to",
            "dave@example.net",
            "--header",
            &format!("Message-Id: <{id}@test>"),
        ])
    };
    let lock = open_db(stack.data.path());
    lock.execute_batch("BEGIN EXCLUSIVE")
        .expect("taking the write lock");
    let refused = bob(&stack, "locked");
    lock.execute_batch("ROLLBACK").expect("releasing the lock");
    drop(lock);
    assert!(
        queue_id(&refused.stdout).is_none()
            && refused
                .stdout
                .contains("451 4.3.0 The audit log cannot record this message now"),
        "a message whose record cannot be stored should be deferred:\n{}{}",
        refused.all(),
        stack.context()
    );
    let after = bob(&stack, "unlocked");
    assert!(queue_id(&after.stdout).is_some(), "{}", after.all());
    let records = stack.records();
    assert!(by_message_id(&records, "<locked@test>").is_empty());
    assert_eq!(by_message_id(&records, "<unlocked@test>").len(), 1);
    assert_eq!(records.len(), 4, "{records:?}");

    let log = stack.stop_milter();
    assert_eq!(counter(&log, "deferred_by_rate"), 1, "{log}");
    assert_eq!(counter(&log, "over_rate"), 1, "{log}");
    assert_eq!(counter(&log, "store_failures"), 1, "{log}");
    assert!(
        log.contains("the audit record could not be stored"),
        "{log}"
    );

    // The milter is down: Postfix applies milter_default_action = tempfail. The mail waits
    // (the client is told to retry); it is neither sent unaudited nor recorded.
    let down = send(&stack, 4);
    assert!(
        queue_id(&down.stdout).is_none() && down.stdout.lines().any(|l| l.starts_with("<** 4")),
        "with the milter down the message should be deferred:\n{}",
        down.all()
    );
    assert!(
        stack.postfix.maillog().contains(
            "milter-reject: CONNECT from localhost[127.0.0.1]: 451 4.7.1 Service unavailable"
        ),
        "Postfix should apply milter_default_action = tempfail:\n{}",
        stack.postfix.maillog()
    );
    assert_eq!(stack.records().len(), 4);
}

#[test]
fn a_bad_milter_configuration_is_refused_naming_the_file_and_line() {
    let data = init_dir();
    let tmp = TempDir::new().expect("a temporary directory");
    let config = tmp.path().join("milter.toml");
    std::fs::write(&config, "domain = \"example.org\"\n[rate]\nper_hour = 5\n")
        .expect("writing milter.toml");
    let config_arg = config.display().to_string();
    let out = mailaudit(data.path(), &["milter", "--config", &config_arg]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains(&format!("in {config_arg}"))
            && out.stderr.contains("line 3")
            && out.stderr.contains("unknown field `per_hour`"),
        "{}",
        out.stderr
    );
    let out = mailaudit(data.path(), &["milter", "--listen", "inet:localhost"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("--listen inet:localhost: expected inet:HOST:PORT or unix:/path"),
        "{}",
        out.stderr
    );
}
