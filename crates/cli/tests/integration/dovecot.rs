//! A real Dovecot 2.3 (Debian's packages) and a real `mailaudit serve`, end to end: real
//! clients act out a mailbox story (Python's imaplib, poplib, LMTP and a ManageSieve exchange in
//! `dovecot_story.py`, and curl speaking IMAP), and the records mailaudit makes of what Dovecot
//! reports are checked field by field — through the log it follows and through the events
//! Dovecot POSTs — and for nothing unexpected. Then the log path under failure (SIGKILL and
//! restart of mailaudit while Dovecot writes, with a log rotation in between) and bad input on
//! both paths.
//!
//! Each test starts its own Dovecot on free loopback ports in a temporary directory and stops
//! it when dropped. Dovecot must be installed (`scripts/test.sh` installs it) and the tests
//! must run as root (Dovecot drops to its `dovecot` user for mail): otherwise they fail, never
//! skip.
//!
//! The policy: by default an owner's FolderBind, MessageBind, Create, Copy, Move and
//! SearchQueryInitiated are not audited (DESIGN.md), and neither are MailboxLogout, Deliver
//! and the folder operations. The story tests are about what the source makes of Dovecot's
//! reports, not about the policy, so they first set the owner's and the delegate's audited
//! actions to every mailbox operation (`policy set --audit-owner LIST --audit-delegate LIST`
//! with `ALL_MAILBOX_OPERATIONS`; admins have every operation audited by default): every
//! observation the source produces is then stored, and "nothing unexpected" is checked against
//! everything the source produced.

use crate::util::*;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const ADMIN: &str = "admin@example.com";

/// Every mailbox operation (all but the audit system's own).
pub(crate) const ALL_MAILBOX_OPERATIONS: &str = "MailboxLogin,MailboxLogout,FolderBind,MessageBind,Copy,Move,MoveToDeletedItems,SoftDelete,HardDelete,Create,Update,Send,SendAs,SendOnBehalf,UpdateFolderPermissions,UpdateCalendarDelegation,UpdateInboxRules,SearchQueryInitiated,FolderCreate,FolderDelete,FolderRename,Deliver";

/// The Dovecot events mailaudit maps (docs/dovecot.md).
const EVENT_FILTER: &str = "event=auth_request_finished OR event=imap_command_finished OR event=mail_opened OR event=mail_expunged OR event=mail_expunge_requested OR event=mail_delivery_finished OR event=pop3_command_finished OR event=managesieve_command_finished";

/// How long the records of a finished story may take to arrive before the test gives up.
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// The record count must not change for this long before it counts as settled.
const SETTLE_STABLE: Duration = Duration::from_secs(2);
/// Held observations leave the source's correlation window (5 s) by then: anything
/// unexpected that it would still emit has arrived.
const SETTLE_MIN: Duration = Duration::from_millis(6500);

fn story_script() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/dovecot_story.py"
    )
}

/// The path of a program, or a failing test that says how to get it.
pub fn require_program(name: &str, candidates: &[&str], package: &str) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return p.to_path_buf();
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`{name}` is not installed, and the Dovecot end-to-end tests need it: install the Debian \
         package(s) {package} (scripts/test.sh installs everything the tests need)"
    );
}

pub fn dovecot_bin() -> PathBuf {
    require_program(
        "dovecot",
        &["/usr/sbin/dovecot"],
        "dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-managesieved",
    )
}

fn doveadm_bin() -> PathBuf {
    require_program("doveadm", &["/usr/bin/doveadm"], "dovecot-core")
}

pub fn python() -> PathBuf {
    require_program("python3", &["/usr/bin/python3"], "python3")
}

pub(crate) fn curl_bin() -> PathBuf {
    require_program("curl", &["/usr/bin/curl"], "curl")
}

/// (uid, gid) of a system user, from /etc/passwd.
pub fn system_user(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .unwrap_or_else(|| {
            panic!("there is no `{name}` system user: is Dovecot installed (dovecot-core)?")
        })
}

pub fn require_root() {
    let mut id = Command::new("id");
    id.arg("-u");
    let out = run(id);
    assert_eq!(
        out.stdout.trim(),
        "0",
        "the Dovecot end-to-end tests must run as root: Dovecot starts as root and drops to its \
         `dovecot` user for mail (CI and scripts/test.sh run as root)"
    );
}

/// `count` distinct loopback ports that were free a moment ago (bound to port 0 together,
/// then released).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a local address").port())
        .collect()
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// A Dovecot of our own in a temporary directory: loopback only, free ports, passwd-file
/// users alice, bob and carol, the master user `admin`, the ACL plugin with a shared
/// namespace, a \Trash folder, mail_log, and the event exporter both into its log and (when
/// given a URL) to mailaudit over HTTP. Stopped when dropped.
pub struct Dovecot {
    tmp: TempDir,
    pub conf: PathBuf,
    pub log: PathBuf,
    pub imap: u16,
    pub pop3: u16,
    pub lmtp: u16,
    pub sieve: u16,
    master_pid: Option<u32>,
}

impl Dovecot {
    /// Writes everything but the configuration, so that the log's path is known (and can be
    /// given to mailaudit) before Dovecot starts writing it.
    pub fn prepare() -> Dovecot {
        dovecot_bin();
        require_root();
        let tmp = TempDir::new().expect("a temporary directory");
        let root = tmp.path();
        // Mail processes run as the `dovecot` user: they must reach the homes below.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
            .expect("opening the temporary directory to the dovecot user");
        let (uid, gid) = system_user("dovecot");
        for dir in ["home/alice", "home/bob", "home/carol", "shared", "log"] {
            std::fs::create_dir_all(root.join(dir)).expect("creating a directory");
        }
        for dir in ["home", "home/alice", "home/bob", "home/carol", "shared"] {
            std::os::unix::fs::chown(root.join(dir), Some(uid), Some(gid))
                .expect("giving a directory to the dovecot user");
        }
        let users: String = [("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")]
            .iter()
            .map(|(u, pw)| {
                format!(
                    "{u}:{{PLAIN}}{pw}:{uid}:{gid}::{}\n",
                    root.join("home").join(u).display()
                )
            })
            .collect();
        std::fs::write(root.join("users"), users).expect("writing the users file");
        std::fs::write(root.join("masters"), "admin:{PLAIN}adminpw\n")
            .expect("writing the master users file");
        // Master users are subject to ACLs too: let the admin into every mailbox.
        std::fs::write(root.join("global-acl"), "* user=admin lrwstipekxa\n")
            .expect("writing the global ACL");
        let ports = free_ports(4);
        Dovecot {
            conf: root.join("dovecot.conf"),
            log: root.join("log").join("dovecot.log"),
            tmp,
            imap: ports[0],
            pop3: ports[1],
            lmtp: ports[2],
            sieve: ports[3],
            master_pid: None,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn config(&self, http_url: Option<&str>) -> String {
        let root = self.dir().display().to_string();
        let http = http_url
            .map(|url| {
                format!(
                    r#"
# The real-time path: each event POSTed to mailaudit.
event_exporter mailaudit {{
  format = json
  format_args = time-rfc3339
  transport = http-post
  transport_args = {url}
  transport_timeout = 2sec
}}
metric mailaudit_http {{
  exporter = mailaudit
  filter = {EVENT_FILTER}
}}
"#
                )
            })
            .unwrap_or_default();
        format!(
            r#"# Written by mailaudit's end-to-end tests (crates/cli/tests/integration/dovecot.rs).
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/log/dovecot.log
protocols = imap pop3 lmtp sieve
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 0
mail_location = maildir:~/Maildir
mail_plugins = acl mail_log notify
auth_master_user_separator = *
passdb {{
  driver = passwd-file
  args = {root}/masters
  master = yes
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
  mailbox Trash {{
    special_use = \Trash
    auto = create
  }}
}}
namespace shared {{
  type = shared
  separator = /
  prefix = shared/%%u/
  location = maildir:%%h/Maildir:INDEX=~/Maildir/shared/%%u
  subscriptions = no
  list = children
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = {sieve}
  }}
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_acl
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  acl = vfile:{root}/global-acl
  acl_shared_dict = file:{root}/shared/shared-mailboxes.db
  mail_log_events = delete undelete expunge copy mailbox_delete mailbox_rename flag_change save mailbox_create
  mail_log_fields = uid box msgid size from subject flags
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}

# The lossless path: events written into the log, as JSON, for `serve --dovecot-log`.
event_exporter log {{
  format = json
  format_args = time-rfc3339
  transport = log
}}
metric mailaudit_log {{
  exporter = log
  filter = {EVENT_FILTER}
}}
{http}"#,
            imap = self.imap,
            pop3 = self.pop3,
            lmtp = self.lmtp,
            sieve = self.sieve,
        )
    }

    /// Writes the configuration and starts Dovecot; returns once it accepts IMAP connections.
    /// `http_url`: where the http-post exporter sends events (none: the log exporter only).
    pub fn start(&mut self, http_url: Option<&str>) {
        // The ports were free when chosen, but another test may have bound one since: then
        // choose again.
        for attempt in 1.. {
            let (ok, output) = self.try_start(http_url);
            if ok {
                break;
            }
            assert!(
                attempt < 3 && output.contains("Address already in use"),
                "dovecot -c {} failed:\n{output}\nlog:\n{}",
                self.conf.display(),
                self.log_text()
            );
            let ports = free_ports(4);
            (self.imap, self.pop3, self.lmtp, self.sieve) =
                (ports[0], ports[1], ports[2], ports[3]);
        }
        let pid_file = self.dir().join("run").join("master.pid");
        let start = Instant::now();
        loop {
            if self.master_pid.is_none() {
                self.master_pid = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
            }
            if self.master_pid.is_some()
                && TcpStream::connect(("127.0.0.1", self.imap)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.sieve)).is_ok()
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "Dovecot did not start listening on 127.0.0.1:{} within 20 s\nlog:\n{}",
                self.imap,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `dovecot -c CONF` once; returns whether it started, and what it said.
    fn try_start(&mut self, http_url: Option<&str>) -> (bool, String) {
        std::fs::write(&self.conf, self.config(http_url)).expect("writing dovecot.conf");
        // Dovecot forks into the background, and the daemon keeps the streams it was given:
        // give it a file, not a pipe that would never reach its end.
        let out_path = self.dir().join("dovecot-start.out");
        let out = std::fs::File::create(&out_path).expect("creating dovecot-start.out");
        let mut child = Command::new(dovecot_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("duplicating a file handle"))
            .stderr(out)
            .spawn()
            .expect("starting dovecot");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for dovecot") {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "dovecot -c {} did not return within 30 s",
                self.conf.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let said = std::fs::read_to_string(&out_path).unwrap_or_default();
        (status.success(), format!("{status}\n{said}"))
    }

    /// `doveadm -c CONF ARGS`
    pub fn doveadm(&self, args: &[&str]) -> Out {
        let mut c = Command::new(doveadm_bin());
        c.arg("-c").arg(&self.conf).args(args);
        run(c)
    }

    /// Everything Dovecot logged so far (the rotated part first), for failure messages.
    pub fn log_text(&self) -> String {
        let rotated = PathBuf::from(format!("{}.1", self.log.display()));
        let mut text = std::fs::read_to_string(&rotated).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(&self.log).unwrap_or_default());
        text
    }

    /// Runs `dovecot_story.py ARGS` and returns its output; fails the test unless every step
    /// got the reply it expected.
    pub fn client(&self, args: &[&str]) -> String {
        let mut c = Command::new(python());
        c.arg(story_script()).args(args);
        let out = run(c);
        assert!(
            out.code == 0 && out.stdout.contains("story complete"),
            "dovecot_story.py {args:?} failed (exit {}):\n{}\nDovecot's log:\n{}",
            out.code,
            out.all(),
            self.log_text()
        );
        out.stdout
    }

    /// The whole story (see `dovecot_story.py`), then curl: alice reads message 1 and flags it.
    pub fn act_out_the_story(&self) {
        let (imap, pop3, lmtp, sieve) = (
            self.imap.to_string(),
            self.pop3.to_string(),
            self.lmtp.to_string(),
            self.sieve.to_string(),
        );
        self.client(&["story", "127.0.0.1", &imap, &pop3, &lmtp, &sieve]);
        let body = self.curl_imap(&format!("imap://127.0.0.1:{imap}/INBOX;UID=1"), &[]);
        assert!(
            body.contains("Subject: Quarterly numbers"),
            "curl should fetch message 1: {body}"
        );
        let reply = self.curl_imap(
            &format!("imap://127.0.0.1:{imap}/INBOX"),
            &["-X", "UID STORE 1 +FLAGS \\Flagged"],
        );
        assert!(
            reply.contains("\\Flagged"),
            "curl's STORE should answer with the new flags: {reply}"
        );
    }

    /// curl speaking IMAP as alice.
    fn curl_imap(&self, url: &str, extra: &[&str]) -> String {
        let mut c = Command::new(curl_bin());
        c.args(["-sS", "--max-time", "30", "--user", "alice:alicepw"])
            .args(extra)
            .arg(url);
        let out = run(c);
        assert_eq!(
            out.code,
            0,
            "curl {url} failed: {}\nDovecot's log:\n{}",
            out.all(),
            self.log_text()
        );
        out.stdout
    }

    fn stop(&mut self) {
        let Some(pid) = self.master_pid.take() else {
            return;
        };
        let _ = self.doveadm(&["stop"]);
        let start = Instant::now();
        while pid_alive(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if pid_alive(pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh data directory whose owners and delegates have every mailbox operation audited
/// (see the module documentation), with an ingest token for Dovecot.
fn audit_everything_dir() -> (TempDir, String) {
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
    let ingest = token(dir.path(), "ingest", "dovecot");
    (dir, ingest)
}

/// The URL of the dovecot events endpoint, with the token as the Basic password, as
/// docs/dovecot.md tells Dovecot to use it.
fn events_url(server: &Server, token: &str) -> String {
    let host = server.base.trim_start_matches("http://");
    format!("http://dovecot:{token}@{host}/api/v1/sources/dovecot/events")
}

/// Which way a record came in, told by its `provenance.reference`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `dovecot.log#GENERATION:LINE`
    Log,
    /// `http:REQUEST`
    Http,
}

fn path_of(record: &Json) -> Option<Via> {
    let reference = record["provenance"]["reference"].str()?;
    if reference.starts_with("dovecot.log#") {
        Some(Via::Log)
    } else if reference.starts_with("http:") {
        Some(Via::Http)
    } else {
        None
    }
}

fn is_dovecot(record: &Json) -> bool {
    record["provenance"]["source"]
        .str()
        .is_some_and(|s| s.starts_with("dovecot"))
}

/// Every record from the Dovecot source, oldest first.
fn dovecot_records(dir: &Path) -> Vec<Json> {
    let mut records: Vec<Json> = search_all(dir, &[])
        .into_iter()
        .filter(is_dovecot)
        .collect();
    records.reverse();
    records
}

/// Polls until `done` holds of the Dovecot records, their number has not changed for
/// `SETTLE_STABLE`, and `SETTLE_MIN` has passed since `since`; gives up after `SETTLE_MAX`
/// and returns what there is (the assertions then say what is missing). Also returns how
/// long after `since` `done` first held.
fn settle(
    dir: &Path,
    since: Instant,
    done: impl Fn(&[Json]) -> bool,
) -> (Vec<Json>, Option<Duration>) {
    let mut last_count = usize::MAX;
    let mut stable_since = Instant::now();
    let mut done_at = None;
    loop {
        let records = dovecot_records(dir);
        if records.len() != last_count {
            last_count = records.len();
            stable_since = Instant::now();
        }
        let finished = done(&records);
        if finished && done_at.is_none() {
            done_at = Some(since.elapsed());
        }
        if (finished && stable_since.elapsed() >= SETTLE_STABLE && since.elapsed() >= SETTLE_MIN)
            || since.elapsed() > SETTLE_MAX
        {
            return (records, done_at);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A record in one line, for failure messages.
fn brief(r: &Json) -> String {
    let items: Vec<String> = r["items"]
        .arr()
        .iter()
        .map(|i| {
            format!(
                "{{uid {:?} msgid {:?} subject {:?} unresolved {:?}}}",
                i["uid"].u64(),
                i["message_id"].str(),
                i["subject"].str(),
                i["unresolved"].str()
            )
        })
        .collect();
    let params: Vec<String> = r["parameters"]
        .arr()
        .iter()
        .map(|p| format!("{}={:?}", p["name"].str().unwrap_or("?"), p["value"].str()))
        .collect();
    format!(
        "{} {} actor={} acting_as={:?} mailbox={} logon={} external={:?} folder={:?} dest={:?} items=[{}] params=[{}] client={:?}/{:?} result={} reason={:?} ref={:?} time={:?}",
        r["seq"].u64().unwrap_or(0),
        r["operation"].str().unwrap_or("?"),
        r["actor"].str().unwrap_or("?"),
        r["acting_as"].str(),
        r["mailbox"].str().unwrap_or("?"),
        r["logon_type"].str().unwrap_or("?"),
        r["external"],
        r["folder"].str(),
        r["destination_folder"].str(),
        items.join(", "),
        params.join(", "),
        r["client"]["ip"].str(),
        r["client"]["protocol"].str(),
        r["result"].str().unwrap_or("?"),
        r["reason"].str(),
        r["provenance"]["reference"].str(),
        r["time"].str(),
    )
}

/// Whether an item must name its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// A `mail_log` line (or the event) gives Message-ID and subject: they must be there.
    Must,
    /// Nothing Dovecot reported names it: either correct values, or `unresolved` says why.
    May,
}

#[derive(Debug, Clone)]
struct ItemExp {
    uid: u64,
    /// The uid must be there (else: when it is there, it must be right).
    uid_required: bool,
    message_id: &'static str,
    subject: &'static str,
    named: Named,
}

/// One expected record. `actor: None` accepts any actor (Deliver: docs/dovecot.md does not
/// say who delivers).
#[derive(Debug, Clone)]
struct Exp {
    what: String,
    operation: &'static str,
    actor: Option<&'static str>,
    mailbox: &'static str,
    logon_type: Option<&'static str>,
    acting_as: Option<&'static str>,
    folder: Option<&'static str>,
    destination: Option<&'static str>,
    protocols: &'static [&'static str],
    failed: bool,
    items: Option<Vec<ItemExp>>,
    /// Texts each found in some parameter's value.
    params: Vec<&'static str>,
    /// POP3's retrieval: one message, told by an item or a parameter.
    one_message: bool,
    /// docs/dovecot.md does not settle whether this record is made: at most one may exist.
    optional: bool,
}

fn exp(what: &str, operation: &'static str, actor: &'static str, mailbox: &'static str) -> Exp {
    let logon_type = if actor == mailbox {
        "Owner"
    } else {
        "Delegate"
    };
    Exp {
        what: what.to_string(),
        operation,
        actor: Some(actor),
        mailbox,
        logon_type: Some(logon_type),
        acting_as: None,
        folder: None,
        destination: None,
        protocols: &["imap"],
        failed: false,
        items: None,
        params: Vec::new(),
        one_message: false,
        optional: false,
    }
}

impl Exp {
    fn any_actor(mut self) -> Exp {
        self.actor = None;
        self.logon_type = None;
        self
    }
    fn admin(mut self, acting_as: &'static str) -> Exp {
        self.acting_as = Some(acting_as);
        self.logon_type = Some("Admin");
        self
    }
    fn folder(mut self, f: &'static str) -> Exp {
        self.folder = Some(f);
        self
    }
    fn destination(mut self, f: &'static str) -> Exp {
        self.destination = Some(f);
        self
    }
    fn protocols(mut self, p: &'static [&'static str]) -> Exp {
        self.protocols = p;
        self
    }
    fn failed(mut self) -> Exp {
        self.failed = true;
        self
    }
    fn item(mut self, item: ItemExp) -> Exp {
        self.items.get_or_insert_with(Vec::new).push(item);
        self
    }
    fn param(mut self, text: &'static str) -> Exp {
        self.params.push(text);
        self
    }
    fn one_message(mut self) -> Exp {
        self.one_message = true;
        self
    }
    fn optional(mut self) -> Exp {
        self.optional = true;
        self
    }

    /// (operation, actor, mailbox), the actor `*` when any is accepted.
    fn key(&self) -> (String, String, String) {
        (
            self.operation.to_string(),
            self.actor.unwrap_or("*").to_string(),
            self.mailbox.to_string(),
        )
    }

    fn key_matches(&self, r: &Json) -> bool {
        r["operation"].str() == Some(self.operation)
            && r["mailbox"].str() == Some(self.mailbox)
            && self.actor.is_none_or(|a| r["actor"].str() == Some(a))
    }

    /// What is wrong with `r` as this record; empty when it is right.
    fn mismatches(&self, r: &Json, window: (&str, &str)) -> Vec<String> {
        let mut bad = Vec::new();
        let mut want = |ok: bool, what: String| {
            if !ok {
                bad.push(what);
            }
        };
        want(
            r["provenance"]["source"].str() == Some("dovecot"),
            format!(
                "provenance.source {:?}, expected \"dovecot\"",
                r["provenance"]["source"].str()
            ),
        );
        if let Some(l) = self.logon_type {
            want(
                r["logon_type"].str() == Some(l),
                format!("logon_type {:?}, expected {l}", r["logon_type"].str()),
            );
        }
        if self.actor.is_some() {
            want(
                r["external"] == Json::Bool(false),
                format!("external {:?}, expected false", r["external"]),
            );
        }
        want(
            r["acting_as"].str() == self.acting_as,
            format!(
                "acting_as {:?}, expected {:?}",
                r["acting_as"].str(),
                self.acting_as
            ),
        );
        if let Some(f) = self.folder {
            want(
                r["folder"].str() == Some(f),
                format!("folder {:?}, expected {f:?}", r["folder"].str()),
            );
        }
        if let Some(f) = self.destination {
            want(
                r["destination_folder"].str() == Some(f),
                format!(
                    "destination_folder {:?}, expected {f:?}",
                    r["destination_folder"].str()
                ),
            );
        }
        want(
            r["client"]["ip"].str() == Some("127.0.0.1"),
            format!(
                "client.ip {:?}, expected 127.0.0.1",
                r["client"]["ip"].str()
            ),
        );
        let protocol = r["client"]["protocol"].str().unwrap_or("");
        want(
            self.protocols.contains(&protocol),
            format!(
                "client.protocol {protocol:?}, expected one of {:?}",
                self.protocols
            ),
        );
        let result = r["result"].str().unwrap_or("");
        if self.failed {
            want(
                result == "Failed",
                format!("result {result:?}, expected Failed"),
            );
            want(
                r["reason"].str().is_some_and(|s| !s.trim().is_empty()),
                format!(
                    "reason {:?}, expected Dovecot's reason for the failure",
                    r["reason"].str()
                ),
            );
        } else {
            want(
                result == "Succeeded",
                format!("result {result:?}, expected Succeeded"),
            );
        }
        let time = r["time"].str().unwrap_or("");
        let second = time.get(..19).unwrap_or("");
        want(
            second >= window.0 && second <= window.1,
            format!(
                "time {time:?}, expected between {} and {}",
                window.0, window.1
            ),
        );
        let values: Vec<&str> = r["parameters"]
            .arr()
            .iter()
            .filter_map(|p| p["value"].str())
            .collect();
        for text in &self.params {
            want(
                values.iter().any(|v| v.contains(text)),
                format!("no parameter value contains {text:?}"),
            );
        }
        let items = r["items"].arr();
        if self.one_message {
            let one = items.len() == 1
                || values
                    .iter()
                    .any(|v| v.trim() == "1" || v.starts_with("1/"));
            want(
                one,
                "neither one item nor a parameter saying 1 message".into(),
            );
        }
        if let Some(expected) = &self.items {
            if items.len() != expected.len() {
                bad.push(format!(
                    "{} items, expected {} (uids {:?})",
                    items.len(),
                    expected.len(),
                    expected.iter().map(|e| e.uid).collect::<Vec<_>>()
                ));
            } else {
                for (i, (got, e)) in items.iter().zip(expected).enumerate() {
                    bad.extend(
                        item_mismatches(got, e)
                            .into_iter()
                            .map(|m| format!("items[{i}]: {m}")),
                    );
                }
            }
        }
        bad
    }
}

fn item_mismatches(got: &Json, e: &ItemExp) -> Vec<String> {
    let mut bad = Vec::new();
    match got["uid"].u64() {
        Some(uid) if uid != e.uid => bad.push(format!("uid {uid}, expected {}", e.uid)),
        None if e.uid_required => bad.push(format!("no uid, expected {}", e.uid)),
        _ => {}
    }
    let (msgid, subject) = (got["message_id"].str(), got["subject"].str());
    let unresolved = got["unresolved"].str().filter(|s| !s.trim().is_empty());
    match e.named {
        Named::Must => {
            if msgid != Some(e.message_id) {
                bad.push(format!(
                    "message_id {msgid:?}, expected {:?} (unresolved: {unresolved:?})",
                    e.message_id
                ));
            }
            if subject != Some(e.subject) {
                bad.push(format!("subject {subject:?}, expected {:?}", e.subject));
            }
        }
        Named::May => match msgid {
            Some(m) if m != e.message_id => {
                bad.push(format!("message_id {m:?}, expected {:?}", e.message_id))
            }
            Some(_) if subject.is_some_and(|s| s != e.subject) => {
                bad.push(format!("subject {subject:?}, expected {:?}", e.subject))
            }
            Some(_) => {}
            None if unresolved.is_none() => bad
                .push("neither a Message-ID nor `unresolved` saying why it is missing".to_string()),
            None => {}
        },
    }
    bad
}

fn item(uid: u64, message_id: &'static str, subject: &'static str, named: Named) -> ItemExp {
    ItemExp {
        uid,
        uid_required: true,
        message_id,
        subject,
        named,
    }
}

/// An item whose uid the path may not know (a delivery's, an APPEND's over HTTP).
fn item_uid_if_known(
    uid: u64,
    message_id: &'static str,
    subject: &'static str,
    named: Named,
) -> ItemExp {
    ItemExp {
        uid_required: false,
        ..item(uid, message_id, subject, named)
    }
}

const Q1: (&str, &str) = ("<q1@example.org>", "Quarterly numbers");
const INVOICE: (&str, &str) = ("<inv-2211@example.org>", "Invoice 2211");
const NEWS: (&str, &str) = ("<news-9@example.org>", "Old newsletter");
const OFFSITE: (&str, &str) = ("<offsite-3@example.org>", "Team offsite");
const DRAFT: (&str, &str) = ("<draft-1@example.com>", "Draft reply");

/// Every record the story must produce through `path`, and nothing else.
/// The users' Sieve directories in the generated config (`sieve = file:~/sieve`).
fn sieve_dir(dovecot: &Dovecot) -> String {
    format!("{}/home/%n/sieve", dovecot.dir().display())
}

fn story_expectations(path: Via) -> Vec<Exp> {
    let log = path == Via::Log;
    // A message named by a mail_log line of the same session: the log path must name it;
    // the HTTP path sees no mail_log lines.
    let logged = if log { Named::Must } else { Named::May };
    let sieve: &[&str] = &["sieve", "managesieve"];
    let login = |what: &str, who: &'static str| exp(what, "MailboxLogin", who, who);
    let logout = |what: &str, who: &'static str| exp(what, "MailboxLogout", who, who);
    let deliver = |to: &'static str, uid: u64, (id, subject): (&'static str, &'static str)| {
        exp(&format!("LMTP delivery of {id}"), "Deliver", to, to)
            .any_actor()
            .folder("INBOX")
            .protocols(&["lmtp"])
            .item(item_uid_if_known(uid, id, subject, Named::Must))
    };
    let mut all = vec![
        deliver(ALICE, 1, Q1),
        deliver(ALICE, 2, INVOICE),
        deliver(ALICE, 3, NEWS),
        deliver(BOB, 1, OFFSITE),
        // alice, the owner, over IMAP.
        login("alice's LOGIN", ALICE),
        exp(
            "alice's SETACL INBOX bob lrs",
            "UpdateFolderPermissions",
            ALICE,
            ALICE,
        )
        .folder("INBOX")
        .param("bob")
        .param("lrs"),
        exp("alice's SELECT INBOX", "FolderBind", ALICE, ALICE).folder("INBOX"),
        exp("alice's FETCH 1 (BODY[])", "MessageBind", ALICE, ALICE)
            .folder("INBOX")
            .item(item(1, Q1.0, Q1.1, logged)),
        exp(
            "alice's SEARCH SUBJECT",
            "SearchQueryInitiated",
            ALICE,
            ALICE,
        )
        .folder("INBOX")
        .param("Quarterly"),
        exp("alice's APPEND", "Create", ALICE, ALICE)
            .folder("INBOX")
            .item(if log {
                item(4, DRAFT.0, DRAFT.1, Named::Must)
            } else {
                item_uid_if_known(4, DRAFT.0, DRAFT.1, Named::May)
            }),
        exp(
            "alice's UID MOVE 2 Trash",
            "MoveToDeletedItems",
            ALICE,
            ALICE,
        )
        .folder("INBOX")
        .destination("Trash")
        .item(item(2, INVOICE.0, INVOICE.1, logged)),
        exp(
            "alice's UID STORE 3 +FLAGS \\Deleted",
            "SoftDelete",
            ALICE,
            ALICE,
        )
        .folder("INBOX")
        .item(item(3, NEWS.0, NEWS.1, logged)),
        exp("alice's EXPUNGE", "HardDelete", ALICE, ALICE)
            .folder("INBOX")
            .item(item(3, NEWS.0, NEWS.1, logged)),
        logout("alice's LOGOUT", ALICE),
        // A wrong password for alice.
        login("the wrong password for alice", ALICE).failed(),
        // bob, her delegate, through the shared namespace.
        login("bob's LOGIN", BOB),
        exp("bob's SELECT shared/alice/INBOX", "FolderBind", BOB, ALICE).folder("INBOX"),
        exp(
            "bob's FETCH 1 (BODY[]) in alice's INBOX",
            "MessageBind",
            BOB,
            ALICE,
        )
        .folder("INBOX")
        .item(item(1, Q1.0, Q1.1, Named::May)),
        logout("bob's LOGOUT", BOB),
        // The master user admin as alice.
        exp("admin's LOGIN alice*admin", "MailboxLogin", ADMIN, ALICE).admin(ALICE),
        exp("admin's SELECT Trash", "FolderBind", ADMIN, ALICE)
            .admin(ALICE)
            .folder("Trash"),
        exp(
            "admin's FETCH 1 (BODY[]) in Trash",
            "MessageBind",
            ADMIN,
            ALICE,
        )
        .admin(ALICE)
        .folder("Trash")
        .item(item(1, INVOICE.0, INVOICE.1, logged)),
        exp("admin's LOGOUT", "MailboxLogout", ADMIN, ALICE).admin(ALICE),
        // alice's Sieve script over ManageSieve.
        login("alice's ManageSieve login", ALICE).protocols(sieve),
        exp(
            "alice's PUTSCRIPT forward",
            "UpdateInboxRules",
            ALICE,
            ALICE,
        )
        .protocols(sieve)
        .param("forward")
        // The script's text, read from alice's sieve directory, and its redirect named as
        // forwarding.
        .param("redirect :copy")
        .param("exfil@evil.example"),
        exp(
            "alice's SETACTIVE forward",
            "UpdateInboxRules",
            ALICE,
            ALICE,
        )
        .protocols(sieve)
        .param("forward"),
        // bob over POP3.
        login("bob's POP3 login", BOB).protocols(&["pop3"]),
        // curl as alice: fetches message 1, then flags it.
        login("curl's login (fetch)", ALICE),
        exp("curl's SELECT INBOX (fetch)", "FolderBind", ALICE, ALICE).folder("INBOX"),
        exp("curl's UID FETCH 1 BODY[]", "MessageBind", ALICE, ALICE)
            .folder("INBOX")
            .item(item(1, Q1.0, Q1.1, Named::May)),
        logout("curl's LOGOUT (fetch)", ALICE),
        login("curl's login (store)", ALICE),
        exp("curl's SELECT INBOX (store)", "FolderBind", ALICE, ALICE).folder("INBOX"),
        exp(
            "curl's UID STORE 1 +FLAGS \\Flagged",
            "Update",
            ALICE,
            ALICE,
        )
        .folder("INBOX")
        .item(item(1, Q1.0, Q1.1, logged)),
        logout("curl's LOGOUT (store)", ALICE),
    ];
    if log {
        all.extend([
            // Dovecot 2.3.19 reports a POP3 session's retrievals in its summary line.
            exp("bob's POP3 RETR 1", "MessageBind", BOB, BOB)
                .protocols(&["pop3"])
                .one_message(),
            logout("bob's POP3 QUIT", BOB).protocols(&["pop3"]),
            // The session's end is in the log ("Disconnected: Logged out"), but the docs
            // name LOGOUT only for IMAP and POP3.
            logout("alice's ManageSieve LOGOUT", ALICE)
                .protocols(sieve)
                .optional(),
        ]);
    } else {
        // Dovecot does export a mail_opened event with reason_code pop3:cmd_retr (and the
        // uid) for RETR: a source may make a MessageBind of it.
        all.push(
            exp("bob's POP3 RETR 1", "MessageBind", BOB, BOB)
                .protocols(&["pop3"])
                .one_message()
                .optional(),
        );
    }
    all
}

/// Checks `records` against `expected`: first that the multiset of (operation, actor,
/// mailbox) is exactly the expected one, then each record field by field. Panics with every
/// problem found at once.
fn check_story(records: &[Json], expected: &[Exp], window: (&str, &str), context: &str) {
    // Shown with --nocapture, to see what a passing run recorded.
    eprintln!(
        "{} records:\n  {}",
        records.len(),
        records.iter().map(brief).collect::<Vec<_>>().join("\n  ")
    );
    let mut problems = Vec::new();

    // Nothing missing, nothing unexpected: (operation, actor, mailbox), with multiplicity.
    let key_of = |r: &Json| -> (String, String, String) {
        let op = r["operation"].str().unwrap_or("?").to_string();
        let actor = if expected
            .iter()
            .any(|e| e.actor.is_none() && e.operation == op)
        {
            "*".to_string()
        } else {
            r["actor"].str().unwrap_or("?").to_string()
        };
        (op, actor, r["mailbox"].str().unwrap_or("?").to_string())
    };
    let mut want: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    for e in expected {
        let entry = want.entry(e.key()).or_default();
        if e.optional {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    let mut got: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for r in records {
        *got.entry(key_of(r)).or_default() += 1;
    }
    for (key, (required, optional)) in &want {
        let n = got.get(key).copied().unwrap_or(0);
        if n < *required || n > required + optional {
            problems.push(format!(
                "{key:?}: {n} record(s), expected {required}{}",
                if *optional > 0 {
                    format!(" to {}", required + optional)
                } else {
                    String::new()
                }
            ));
        }
    }
    for (key, n) in &got {
        if !want.contains_key(key) {
            problems.push(format!("{key:?}: {n} unexpected record(s)"));
        }
    }

    // Field by field: each expectation takes the first record that satisfies it; when none
    // does, the closest one is shown with what is wrong with it.
    let mut taken = vec![false; records.len()];
    let mut order: Vec<&Exp> = expected.iter().collect();
    // The most specific first, so that a lenient expectation does not take a record a
    // stricter one needs.
    order.sort_by_key(|e| {
        std::cmp::Reverse(
            e.items.as_ref().map_or(0, Vec::len) * 4
                + e.params.len() * 2
                + usize::from(e.failed) * 8
                + usize::from(e.protocols != ["imap"]) * 4
                + usize::from(e.folder.is_some())
                + usize::from(e.one_message),
        )
    });
    for e in order {
        let mut best: Option<(usize, Vec<String>)> = None;
        let mut found = false;
        for (i, r) in records.iter().enumerate() {
            if taken[i] || !e.key_matches(r) {
                continue;
            }
            let bad = e.mismatches(r, window);
            if bad.is_empty() {
                taken[i] = true;
                found = true;
                break;
            }
            if best.as_ref().is_none_or(|(_, b)| bad.len() < b.len()) {
                best = Some((i, bad));
            }
        }
        if found {
            continue;
        }
        match best {
            Some((i, bad)) => {
                taken[i] = true;
                if !e.optional {
                    problems.push(format!(
                        "{} ({} {} on {}): the closest record is wrong:\n      {}\n      record: {}",
                        e.what,
                        e.operation,
                        e.actor.unwrap_or("*"),
                        e.mailbox,
                        bad.join("\n      "),
                        brief(&records[i])
                    ));
                } else {
                    problems.push(format!(
                        "{} (optional, but when made it must be right): {}\n      record: {}",
                        e.what,
                        bad.join("; "),
                        brief(&records[i])
                    ));
                }
            }
            None if !e.optional => problems.push(format!(
                "{} ({} {} on {}): no record",
                e.what,
                e.operation,
                e.actor.unwrap_or("*"),
                e.mailbox
            )),
            None => {}
        }
    }
    if !problems.is_empty() {
        let all: Vec<String> = records.iter().map(brief).collect();
        panic!(
            "{context}: {} problem(s):\n  - {}\n\nall {} records:\n  {}",
            problems.len(),
            problems.join("\n  - "),
            records.len(),
            all.join("\n  ")
        );
    }
}

/// The story's time window, to the second, with a margin (RFC 3339 prefixes).
fn window(start_unix: i64) -> (String, String) {
    (
        rfc3339(start_unix - 2)[..19].to_string(),
        rfc3339(unix_now() + 2)[..19].to_string(),
    )
}

/// Whether every required (operation, actor, mailbox) of `expected` is among `records`.
fn all_present(records: &[Json], expected: &[Exp]) -> bool {
    let mut used = vec![false; records.len()];
    expected.iter().filter(|e| !e.optional).all(|e| {
        let hit = records
            .iter()
            .enumerate()
            .find(|(i, r)| !used[*i] && e.key_matches(r));
        match hit {
            Some((i, _)) => {
                used[i] = true;
                true
            }
            None => false,
        }
    })
}

#[test]
fn dovecot_log_path_records_the_story_field_by_field() {
    let (data, ingest) = audit_everything_dir();
    let mut dovecot = Dovecot::prepare();
    let log = dovecot.log.display().to_string();
    // mailaudit follows the log before Dovecot has written it, and Dovecot also POSTs its
    // events (the recommended setup: both ways in; told apart by provenance.reference).
    let sieve_dir = sieve_dir(&dovecot);
    let server = Server::start(
        data.path(),
        &[
            "--dovecot-log",
            &log,
            "--dovecot-domain",
            "example.com",
            "--dovecot-sieve-dir",
            &sieve_dir,
        ],
    );
    dovecot.start(Some(&events_url(&server, &ingest)));
    let start_unix = unix_now();
    dovecot.act_out_the_story();
    let acted = Instant::now();
    let expected = story_expectations(Via::Log);
    let (records, _) = settle(data.path(), acted, |r| {
        let log: Vec<Json> = r
            .iter()
            .filter(|r| path_of(r) == Some(Via::Log))
            .cloned()
            .collect();
        all_present(&log, &expected)
    });
    let (from, to) = window(start_unix);
    let strays: Vec<String> = records
        .iter()
        .filter(|r| path_of(r).is_none())
        .map(brief)
        .collect();
    assert!(
        strays.is_empty(),
        "Dovecot records whose reference is neither `dovecot.log#G:N` nor `http:N`:\n  {}",
        strays.join("\n  ")
    );
    let from_log: Vec<Json> = records
        .into_iter()
        .filter(|r| path_of(r) == Some(Via::Log))
        .collect();
    assert_unique_references(&from_log, "the log path");
    check_story(
        &from_log,
        &expected,
        (&from, &to),
        &format!(
            "the records made from Dovecot's log (server log:\n{}\n)",
            server.log()
        ),
    );
}

#[test]
fn dovecot_http_path_records_the_story() {
    let (data, ingest) = audit_everything_dir();
    let mut dovecot = Dovecot::prepare();
    // Only the HTTP path: mailaudit does not follow the log.
    let sieve_dir = sieve_dir(&dovecot);
    let server = Server::start(
        data.path(),
        &[
            "--dovecot-domain",
            "example.com",
            "--dovecot-sieve-dir",
            &sieve_dir,
        ],
    );
    dovecot.start(Some(&events_url(&server, &ingest)));
    let start_unix = unix_now();
    dovecot.act_out_the_story();
    let acted = Instant::now();
    let expected = story_expectations(Via::Http);
    let (records, done_after) = settle(data.path(), acted, |r| all_present(r, &expected));
    let (from, to) = window(start_unix);
    let not_http: Vec<String> = records
        .iter()
        .filter(|r| path_of(r) != Some(Via::Http))
        .map(brief)
        .collect();
    assert!(
        not_http.is_empty(),
        "without --dovecot-log every Dovecot record comes over HTTP (`http:N`):\n  {}",
        not_http.join("\n  ")
    );
    assert_unique_references(&records, "the HTTP path");
    check_story(
        &records,
        &expected,
        (&from, &to),
        &format!(
            "the records made from the events Dovecot POSTed (server log:\n{}\n)",
            server.log()
        ),
    );
    // The real-time path: at once, plus the correlation window (5 s at most).
    let done_after = done_after.expect("checked above: every expected record is there");
    assert!(
        done_after <= Duration::from_secs(10),
        "the HTTP path took {done_after:?} after the story to record it (docs: at once, plus \
         the correlation window of 5 s at most)"
    );
}

/// A record's identity for duplicate detection: its `provenance.reference` (the line or
/// event) and its operation. One line may make several records (POP3's summary line: the
/// retrievals and the logout), but never two of the same operation.
fn identity(r: &Json) -> String {
    format!(
        "{} {}",
        r["provenance"]["reference"].str().unwrap_or("(none)"),
        r["operation"].str().unwrap_or("?")
    )
}

/// How many records share each identity (see `identity`).
fn identities(records: &[Json]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for r in records {
        *ids.entry(identity(r)).or_insert(0) += 1;
    }
    ids
}

/// Each line or event is recorded once: no two records of one operation share a reference.
fn assert_unique_references(records: &[Json], context: &str) {
    let ids = identities(records);
    let repeated: Vec<String> = records
        .iter()
        .filter(|r| ids.get(&identity(r)).copied().unwrap_or(0) > 1)
        .map(brief)
        .collect();
    assert!(
        repeated.is_empty(),
        "{context}: records of one operation from the same line or event (recorded twice):\n  {}\n\nall records:\n  {}",
        repeated.join("\n  "),
        records.iter().map(brief).collect::<Vec<_>>().join("\n  ")
    );
}

/// The folders carol's marker sessions created, by marker (FolderCreate records).
fn created_folders(records: &[Json]) -> BTreeMap<String, usize> {
    let mut folders = BTreeMap::new();
    for r in records {
        if r["operation"].str() == Some("FolderCreate") {
            let f = r["folder"].str().unwrap_or("(none)").to_string();
            *folders.entry(f).or_insert(0) += 1;
        }
    }
    folders
}

/// How many records of `operation` carol made.
fn carol_count(records: &[Json], operation: &str) -> usize {
    records
        .iter()
        .filter(|r| {
            r["operation"].str() == Some(operation)
                && r["actor"].str() == Some(CAROL)
                && r["mailbox"].str() == Some(CAROL)
        })
        .count()
}

#[test]
fn dovecot_log_path_survives_kill_restart_and_rotation_exactly_once() {
    let (data, _) = audit_everything_dir();
    let mut dovecot = Dovecot::prepare();
    let log = dovecot.log.display().to_string();
    let args = ["--dovecot-log", &log, "--dovecot-domain", "example.com"];
    let first = Server::start(data.path(), &args);
    // The log exporter only: this test is about the log path.
    dovecot.start(None);
    let imap = dovecot.imap.to_string();
    let lmtp = dovecot.lmtp.to_string();
    dovecot.client(&[
        "deliver",
        "127.0.0.1",
        &lmtp,
        "carol",
        "Status report",
        "<status-1@example.org>",
    ]);
    let session = |marker: &str| {
        dovecot.client(&["session", "127.0.0.1", &imap, "carol", "carolpw", marker]);
    };
    session("before-1");
    session("before-2");
    // Wait until the first server has stored the "before" sessions.
    let start = Instant::now();
    loop {
        let folders = created_folders(&dovecot_records(data.path()));
        if folders.contains_key("before-2") {
            break;
        }
        assert!(
            start.elapsed() < SETTLE_MAX,
            "the sessions before the crash were not recorded: {folders:?}\nserver log:\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Dovecot keeps writing (a client in a loop) while mailaudit is killed, the log is
    // rotated, and mailaudit comes back.
    let stop = dovecot.dir().join("stop-the-loop");
    let looping = Command::new(python())
        .arg(story_script())
        .args([
            "loop",
            "127.0.0.1",
            &imap,
            "carol",
            "carolpw",
            "during",
            &stop.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the client loop");
    std::thread::sleep(Duration::from_millis(800));
    let first_log = first.log();
    let killed_at = unix_now_f();
    first.kill();
    std::thread::sleep(Duration::from_millis(600));
    let rotated = PathBuf::from(format!("{log}.1"));
    std::fs::rename(&dovecot.log, &rotated).expect("rotating the log (rename)");
    std::thread::sleep(Duration::from_millis(300));
    dovecot.doveadm(&["log", "reopen"]).ok();
    std::thread::sleep(Duration::from_millis(600));
    let restarted_at = unix_now_f();
    let second = Server::start(data.path(), &args);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(&stop, "").expect("stopping the loop");
    let out = looping.wait_with_output().expect("waiting for the loop");
    let loop_out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && loop_out.contains("story complete"),
        "the client loop failed:\n{loop_out}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "done MARKER UNIX-TIME" per session.
    let during: Vec<(String, f64)> = loop_out
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("done ")?.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    assert!(
        during
            .iter()
            .any(|(_, t)| *t > killed_at && *t < restarted_at),
        "no session ended while mailaudit was down ({killed_at}..{restarted_at}): {during:?}"
    );
    session("after-1");
    session("after-2");
    let acted = Instant::now();

    let mut markers: Vec<String> = ["before-1", "before-2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    markers.extend(during.iter().map(|(m, _)| m.clone()));
    markers.extend(["after-1".to_string(), "after-2".to_string()]);
    let (records, _) = settle(data.path(), acted, |r| {
        let folders = created_folders(r);
        markers.iter().all(|m| folders.contains_key(m))
    });
    let context = format!(
        "{} sessions ({} of them during the crash and rotation)\nfirst server's log:\n{first_log}\nsecond server's log:\n{}",
        markers.len(),
        during.len(),
        second.log()
    );
    // Every problem at once: which sessions lost or repeated records says what went wrong.
    let mut problems = Vec::new();
    let ids = identities(&records);
    let repeated: Vec<String> = records
        .iter()
        .filter(|r| ids.get(&identity(r)).copied().unwrap_or(0) > 1)
        .map(brief)
        .collect();
    if !repeated.is_empty() {
        problems.push(format!(
            "records of one operation from the same line (recorded twice):\n    {}",
            repeated.join("\n    ")
        ));
    }
    let folders = created_folders(&records);
    let down: Vec<&str> = during
        .iter()
        .filter(|(_, t)| *t > killed_at && *t < restarted_at)
        .map(|(m, _)| m.as_str())
        .collect();
    for m in &markers {
        let n = folders.get(m).copied().unwrap_or(0);
        if n != 1 {
            let when = if down.contains(&m.as_str()) {
                " (ended while mailaudit was down)"
            } else {
                ""
            };
            problems.push(format!(
                "session {m}{when}: its CREATE recorded {n} times, expected once"
            ));
        }
    }
    for f in folders.keys().filter(|f| !markers.contains(f)) {
        problems.push(format!("a FolderCreate of {f:?}, which no session created"));
    }
    let n = markers.len();
    for op in ["MailboxLogin", "FolderBind", "MessageBind", "MailboxLogout"] {
        let got = carol_count(&records, op);
        if got != n {
            problems.push(format!(
                "{op}: {got} records of carol's, expected one per session ({n})"
            ));
        }
    }
    let delivered = records
        .iter()
        .filter(|r| r["operation"].str() == Some("Deliver"))
        .count();
    if delivered != 1 {
        problems.push(format!("{delivered} Deliver records, expected 1"));
    }
    if records.len() != 1 + 5 * n {
        problems.push(format!(
            "{} records, expected a delivery and five per session: {}",
            records.len(),
            1 + 5 * n
        ));
    }
    let not_log: Vec<String> = records
        .iter()
        .filter(|r| path_of(r) != Some(Via::Log))
        .map(brief)
        .collect();
    if !not_log.is_empty() {
        problems.push(format!(
            "records not from the log:\n    {}",
            not_log.join("\n    ")
        ));
    }
    let refs: Vec<&str> = records
        .iter()
        .filter_map(|r| r["provenance"]["reference"].str())
        .collect();
    if !(refs.iter().any(|r| r.starts_with("dovecot.log#0:"))
        && refs.iter().any(|r| r.starts_with("dovecot.log#1:")))
    {
        problems.push(
            "no records from both the log before (dovecot.log#0:N) and after (#1) the rotation"
                .into(),
        );
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  - {}\n\n{context}\nrecords:\n  {}",
        problems.len(),
        problems.join("\n  - "),
        records.iter().map(brief).collect::<Vec<_>>().join("\n  ")
    );
}

fn unix_now_f() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// `NAME{source="SOURCE"} VALUE` from the Prometheus text, 0 when absent.
fn metric(text: &str, name: &str, source: &str) -> u64 {
    let prefix = format!("{name}{{source=\"{source}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn metrics(server: &Server, token: &str) -> String {
    let resp = request("GET", &server.url("/api/v1/metrics"), Some(token), None);
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
}

/// POSTs a body to the Dovecot endpoint the way Dovecot does (the token as the Basic
/// password in the URL), with curl; returns (status, body).
fn post_event(url: &str, body: &[u8], file: &Path) -> (u16, String) {
    std::fs::write(file, body).expect("writing the body");
    let mut c = Command::new(curl_bin());
    c.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(url);
    let out = run(c);
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .expect("curl prints the status after the body");
    (
        code.trim().parse().expect("an HTTP status"),
        body.to_string(),
    )
}

#[test]
fn dovecot_bad_input_is_refused_and_counted_and_the_good_events_around_it_are_kept() {
    let (data, ingest) = audit_everything_dir();
    let reader = token(data.path(), "auditor", "metrics-reader");
    let mut dovecot = Dovecot::prepare();
    let log = dovecot.log.display().to_string();
    let server = Server::start(
        data.path(),
        &["--dovecot-log", &log, "--dovecot-domain", "example.com"],
    );
    let url = events_url(&server, &ingest);
    dovecot.start(Some(&url));
    let imap = dovecot.imap.to_string();
    let log_source = format!("dovecot-log:{log}");

    // A real event to spoil: the first one Dovecot wrote into its log.
    dovecot.client(&["login", "127.0.0.1", &imap, "carol", "carolpw"]);
    let start = Instant::now();
    let real = loop {
        let text = std::fs::read_to_string(&dovecot.log).unwrap_or_default();
        if let Some(json) = text
            .lines()
            .find(|l| l.contains("\"event\":\"auth_request_finished\""))
            .and_then(|l| l.find('{').map(|i| l[i..].to_string()))
        {
            break json;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "Dovecot wrote no auth_request_finished event into its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let the first login's own events arrive, so that the counters below move only by
    // what this test sends.
    settle_metrics(&server, &reader);
    let before = metrics(&server, &reader);

    // Every problem is collected, so that one run shows all of them.
    let mut problems: Vec<String> = Vec::new();
    let delta = |after: &str, before: &str, name: &str, source: &str| {
        metric(after, name, source).saturating_sub(metric(before, name, source))
    };

    // Over HTTP, the way Dovecot sends: truncated JSON, an unknown event, JSON that is no
    // event, garbage, bytes that are not UTF-8. What cannot be parsed is refused (400, naming
    // the problem) and counted as malformed; a well-formed event of a kind the source does
    // not map is accepted and counted as ignored (a broad metric filter in dovecot.conf must
    // not make Dovecot log an error per event).
    let file = dovecot.dir().join("body.json");
    let truncated = &real[..real.len() / 2];
    let unknown = real.replacen("auth_request_finished", "frobnicate_finished", 1);
    assert_ne!(unknown, real);
    let cases: [(&str, &[u8], &[&str], bool); 5] = [
        (
            "truncated JSON",
            truncated.as_bytes(),
            &["eof", "truncated", "end of"],
            true,
        ),
        (
            "an unknown event",
            unknown.as_bytes(),
            &["frobnicate_finished"],
            false,
        ),
        (
            "JSON that is no event",
            br#"{"fields":{"user":"carol"}}"#,
            &["event"],
            true,
        ),
        (
            "garbage",
            b"this is not an event\n",
            &["json", "expected"],
            true,
        ),
        (
            "bytes that are not UTF-8",
            b"\xff\xfe{\"event\":\x00\x01",
            &["json", "expected", "utf-8"],
            true,
        ),
    ];
    let mut last = before.clone();
    for (what, body, words, malformed) in cases {
        let (status, reply) = post_event(&url, body, &file);
        if !malformed {
            if !(200..300).contains(&status) {
                problems.push(format!(
                    "HTTP: {what} answered {status} {reply:?}, expected 2xx (accepted, counted as ignored)"
                ));
            }
        } else if status != 400 {
            problems.push(format!(
                "HTTP: {what} answered {status} {reply:?}, expected 400 with a reason"
            ));
        } else {
            let lower = reply.to_lowercase();
            if !words.iter().any(|w| lower.contains(w)) {
                problems.push(format!(
                    "HTTP: the reason for refusing {what} should name the problem (one of \
                     {words:?}): {reply}"
                ));
            }
        }
        let now = metrics(&server, &reader);
        let m = delta(
            &now,
            &last,
            "mailaudit_source_malformed_total",
            "dovecot-http",
        );
        let i = delta(
            &now,
            &last,
            "mailaudit_source_ignored_total",
            "dovecot-http",
        );
        let (want, counter) = if malformed {
            ((1, 0), "malformed")
        } else {
            ((0, 1), "ignored")
        };
        if (m, i) != want {
            problems.push(format!(
                "HTTP: {what} should count 1 in mailaudit_source_{counter}_total{{source=\"dovecot-http\"}}: \
                 malformed +{m}, ignored +{i}"
            ));
        }
        last = now;
    }

    // Into the log: garbage lines between Dovecot's own (Dovecot is idle meanwhile).
    let before_log = metrics(&server, &reader);
    let lines_before = std::fs::read_to_string(&dovecot.log)
        .expect("reading the log")
        .lines()
        .count();
    let spoiled_line = format!("Nov 24 23:45:01 stats: Info: {truncated}");
    let garbage: Vec<Vec<u8>> = vec![
        b"this line is not Dovecot's".to_vec(),
        spoiled_line.into_bytes(),
        b"\xff\xfe\x00\x01 binary".to_vec(),
    ];
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&dovecot.log)
            .expect("opening the log to append");
        for g in &garbage {
            f.write_all(g)
                .and_then(|_| f.write_all(b"\n"))
                .expect("appending to the log");
        }
    }
    let spoiled_number = lines_before + 2;
    let lines_total = |text: &str| metric(text, "mailaudit_source_log_lines_total", &log_source);
    let start = Instant::now();
    let after_garbage = loop {
        let now = metrics(&server, &reader);
        if lines_total(&now) >= lines_total(&before_log) + garbage.len() as u64 {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the follower did not read the garbage lines within 15 s:\n{now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = delta(
        &after_garbage,
        &before_log,
        "mailaudit_source_log_lines_total",
        &log_source,
    );
    let m = delta(
        &after_garbage,
        &before_log,
        "mailaudit_source_malformed_total",
        &log_source,
    );
    let i = delta(
        &after_garbage,
        &before_log,
        "mailaudit_source_ignored_total",
        &log_source,
    );
    if read != 3 || m < 1 || m + i != 3 {
        problems.push(format!(
            "log: of the 3 garbage lines ({read} read) the spoiled event is malformed and the \
             others malformed or ignored, each counted once: malformed +{m}, ignored +{i} for \
             {log_source}"
        ));
    }

    // The good events after the bad input, on both paths: a delivery to carol, and a session
    // of hers.
    let acted = Instant::now();
    let lmtp = dovecot.lmtp.to_string();
    dovecot.client(&[
        "deliver",
        "127.0.0.1",
        &lmtp,
        "carol",
        "After",
        "<after-1@example.org>",
    ]);
    dovecot.client(&[
        "session",
        "127.0.0.1",
        &imap,
        "carol",
        "carolpw",
        "after-bad-input",
    ]);
    let (records, _) = settle(data.path(), acted, |r| {
        let made = |p: Via| {
            r.iter().any(|r| {
                path_of(r) == Some(p)
                    && r["operation"].str() == Some("FolderCreate")
                    && r["folder"].str() == Some("after-bad-input")
            })
        };
        made(Via::Log) && made(Via::Http)
    });
    for p in [Via::Log, Via::Http] {
        for (op, folder) in [
            ("Deliver", Some("INBOX")),
            ("MailboxLogin", None),
            ("FolderCreate", Some("after-bad-input")),
            ("FolderBind", Some("INBOX")),
            ("MessageBind", Some("INBOX")),
            ("MailboxLogout", None),
        ] {
            let found = records.iter().any(|r| {
                path_of(r) == Some(p)
                    && r["operation"].str() == Some(op)
                    && r["mailbox"].str() == Some(CAROL)
                    && (op == "Deliver" || r["actor"].str() == Some(CAROL))
                    && folder.is_none_or(|f| r["folder"].str() == Some(f))
                    && r["time"].str() >= Some(&rfc3339(unix_now() - 60)[..19])
            });
            if !found {
                problems.push(format!(
                    "{p:?} path: a good event after the bad input was not recorded: no {op} of \
                     carol's"
                ));
            }
        }
    }

    // Malformed input is logged with its place.
    let server_log = server.log();
    let places = [
        format!("dovecot.log#0:{spoiled_number}"),
        format!("dovecot.log:{spoiled_number}"),
    ];
    if !places.iter().any(|p| server_log.contains(p.as_str())) {
        problems.push(format!(
            "log: the spoiled line should be logged with its place (one of {places:?})"
        ));
    }
    if !server_log.contains("http:") {
        problems.push(
            "HTTP: the refused events should be logged with their request number (http:N)".into(),
        );
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  - {}\n\nrecords:\n  {}\n\nmetrics at the end:\n{}\nserver log:\n{server_log}",
        problems.len(),
        problems.join("\n  - "),
        records.iter().map(brief).collect::<Vec<_>>().join("\n  "),
        metrics(&server, &reader)
            .lines()
            .filter(|l| l.starts_with("mailaudit_source_"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

/// Waits until the source counters stop moving (the events of what came before arrived).
fn settle_metrics(server: &Server, token: &str) {
    let start = Instant::now();
    let mut last = String::new();
    let mut stable_since = Instant::now();
    loop {
        let text: String = metrics(server, token)
            .lines()
            .filter(|l| l.starts_with("mailaudit_source_"))
            .collect::<Vec<_>>()
            .join("\n");
        if text != last {
            last = text;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(1500) {
            return;
        }
        if start.elapsed() > Duration::from_secs(15) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
