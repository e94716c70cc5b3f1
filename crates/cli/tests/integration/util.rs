//! Helpers shared by the end-to-end tests: running the `mailaudit` binary, starting and
//! always stopping `mailaudit serve`, HTTP requests, observation JSON, and small readers for
//! the JSON and CSV the binary writes (the test crate has no JSON or CSV dependency).

use std::io::{BufRead, BufReader, Read};
use std::ops::Index;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// How long any one CLI command or server start may take before the test gives up. Generous:
/// the suite must pass on a loaded two-core machine with a debug build.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailaudit")
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Out {
    /// The exit code; -1 when the process was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics with both streams unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "expected exit 0\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Both streams, for assertion messages and for checks that do not care which one.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs a command to completion (killing it after `PROCESS_TIMEOUT`).
pub fn run(mut cmd: Command) -> Out {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if start.elapsed() > PROCESS_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    }
}

/// `mailaudit --data-dir DIR ARGS...`
pub fn mailaudit(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(bin());
    cmd.arg("--data-dir").arg(dir).args(args);
    run(cmd)
}

/// A fresh, initialised data directory.
pub fn init_dir() -> TempDir {
    let dir = TempDir::new().expect("a temporary directory");
    mailaudit(dir.path(), &["init", "--name", "test"]).ok();
    dir
}

/// Creates a bearer token with `mailaudit token create` and returns it.
pub fn token(dir: &Path, role: &str, name: &str) -> String {
    let out = mailaudit(dir, &["token", "create", "--role", role, "--name", name]).ok();
    let token = out.stdout.trim().to_string();
    assert!(
        token.starts_with("mat_") && !token.contains(char::is_whitespace),
        "`token create` should print only the token on stdout, got {:?}",
        out.stdout
    );
    token
}

/// What a started `mailaudit` process says: its stderr, collected in the returned log by a
/// reader thread, and the rest of the first stdout line that starts with `ready` (the address
/// it listens on). Stdout is read to its end, so the process never blocks on a full pipe.
pub fn watch_output(
    child: &mut Child,
    ready: &'static str,
) -> (
    Arc<Mutex<String>>,
    std::thread::JoinHandle<()>,
    mpsc::Receiver<String>,
) {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = sink.lock() {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(ready) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.to_string());
                }
            }
        }
    });
    (log, reader, rx)
}

/// A running `mailaudit serve`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `mailaudit serve --listen 127.0.0.1:0 EXTRA...` and waits for its
    /// "mailaudit listening on http://ADDR" line.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(bin())
            .arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mailaudit serve");
        let (log, _, rx) = watch_output(&mut child, "mailaudit listening on http://");
        let mut server = Server {
            child,
            base: String::new(),
            log,
        };
        match rx.recv_timeout(PROCESS_TIMEOUT) {
            Ok(rest) => {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                assert!(
                    addr.parse::<std::net::SocketAddr>().is_ok(),
                    "the listening line should carry an address, got {addr:?}"
                );
                server.base = format!("http://{addr}");
                server
            }
            Err(e) => {
                let _ = server.child.kill();
                let status = server.child.wait();
                // Give the stderr reader a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "mailaudit serve did not print its address ({e}; exit {status:?})\nstderr:\n{}",
                    server.log()
                );
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (no graceful shutdown, no final checkpoint) and waits.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub fn json(&self) -> Json {
        Json::parse(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// Sends a request; `Err` only when no HTTP response came back at all.
pub fn try_request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let mut req = agent().request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_string();
            (n, v)
        })
        .collect();
    let body = resp
        .into_string()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    Ok(Resp {
        status,
        body,
        headers,
    })
}

#[track_caller]
pub fn request(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>) -> Resp {
    try_request(method, url, token, body).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
pub fn get(url: &str, token: &str) -> Resp {
    request("GET", url, Some(token), None)
}

/// POSTs observations (one JSON object or NDJSON) to the server.
#[track_caller]
pub fn post_observations(server: &Server, token: &str, body: &str) -> Resp {
    request(
        "POST",
        &server.url("/api/v1/observations"),
        Some(token),
        Some(body.as_bytes()),
    )
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// RFC 3339 UTC (`2026-11-24T10:00:00Z`) for Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The time `secs` seconds ago, RFC 3339.
pub fn ago(secs: i64) -> String {
    rfc3339(unix_now() - secs)
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An observation as a source would post it, as JSON.
#[derive(Debug, Clone)]
pub struct Obs {
    pub time: String,
    pub operation: String,
    pub mailbox: String,
    pub actor: String,
    pub acting_as: Option<String>,
    pub subject: Option<String>,
    pub reference: Option<String>,
}

impl Obs {
    /// `actor` did `operation` on `mailbox` a minute ago, on one message in INBOX.
    pub fn new(operation: &str, mailbox: &str, actor: &str) -> Obs {
        Obs {
            time: ago(60),
            operation: operation.into(),
            mailbox: mailbox.into(),
            actor: actor.into(),
            acting_as: None,
            subject: None,
            reference: None,
        }
    }

    pub fn time(mut self, t: impl Into<String>) -> Obs {
        self.time = t.into();
        self
    }

    pub fn acting_as(mut self, who: &str) -> Obs {
        self.acting_as = Some(who.into());
        self
    }

    pub fn subject(mut self, s: &str) -> Obs {
        self.subject = Some(s.into());
        self
    }

    /// A unique `provenance.reference`, to find the record again.
    pub fn reference(mut self, r: impl Into<String>) -> Obs {
        self.reference = Some(r.into());
        self
    }

    pub fn json(&self) -> String {
        let mut fields = vec![
            format!("\"time\":{}", json_str(&self.time)),
            format!("\"operation\":{}", json_str(&self.operation)),
            format!("\"mailbox\":{}", json_str(&self.mailbox)),
            format!("\"actor\":{}", json_str(&self.actor)),
        ];
        if let Some(a) = &self.acting_as {
            fields.push(format!("\"acting_as\":{}", json_str(a)));
        }
        fields.push("\"folder\":\"INBOX\"".into());
        let subject = self
            .subject
            .as_deref()
            .map(|s| format!(",\"subject\":{}", json_str(s)))
            .unwrap_or_default();
        fields.push(format!(
            "\"items\":[{{\"uid\":7,\"message_id\":\"<m7@example.com>\"{subject}}}]"
        ));
        fields.push(
            "\"client\":{\"ip\":\"192.0.2.7\",\"protocol\":\"imap\",\"name\":\"Thunderbird\"}"
                .into(),
        );
        let reference = self
            .reference
            .as_deref()
            .map(|r| format!(",\"reference\":{}", json_str(r)))
            .unwrap_or_default();
        fields.push(format!("\"provenance\":{{\"source\":\"test\"{reference}}}"));
        format!("{{{}}}", fields.join(","))
    }
}

/// Observations as NDJSON.
pub fn ndjson(obs: &[Obs]) -> String {
    obs.iter().map(|o| o.json() + "\n").collect()
}

/// `mailaudit search ARGS --all --json`: every matching record, newest first.
pub fn search_all(dir: &Path, args: &[&str]) -> Vec<Json> {
    let mut full = vec!["search"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--all", "--json"]);
    let out = mailaudit(dir, &full).ok();
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Json::parse(l).unwrap_or_else(|e| panic!("search line is not JSON ({e}): {l}")))
        .collect()
}

/// Copies a data directory (the database with its -wal and -shm, the key files).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the copy");
    for entry in std::fs::read_dir(from).expect("reading the data directory") {
        let entry = entry.expect("a directory entry");
        if entry.file_type().expect("a file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copying a file");
        }
    }
}

/// Opens the store's database directly, as an attacker with file access would.
pub fn open_db(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("mailaudit.db")).expect("opening the database");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("setting a busy timeout");
    conn
}

/// A parsed JSON value. Missing keys and indices index to `Null`.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's text, so that integers are exact.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Json {
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        p.ws();
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing characters at byte {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }

    /// The value of the parameter `name` of a record (`parameters: [{name, value}]`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self["parameters"]
            .arr()
            .iter()
            .find(|p| p["name"].str() == Some(name))
            .and_then(|p| p["value"].str())
    }
}

impl Index<&str> for Json {
    type Output = Json;
    fn index(&self, key: &str) -> &Json {
        self.get(key).unwrap_or(&NULL)
    }
}

impl Index<usize> for Json {
    type Output = Json;
    fn index(&self, i: usize) -> &Json {
        self.arr().get(i).unwrap_or(&NULL)
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", b as char, self.i))
        }
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("unexpected input at byte {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    let v = self.value()?;
                    fields.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("expected `,` or `}}` at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected `,` or `]` at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let text =
                    std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                text.parse::<f64>()
                    .map_err(|e| format!("bad number `{text}`: {e}"))?;
                Ok(Json::Num(text.to_string()))
            }
            _ => Err(format!("unexpected input at byte {}", self.i)),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at byte {}", self.i))?;
        self.i += 4;
        Ok(h)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = self
                .peek()
                .ok_or_else(|| "unterminated string".to_string())?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self
                        .peek()
                        .ok_or_else(|| "unterminated escape".to_string())?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                self.expect(b'\\')?;
                                self.expect(b'u')?;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                            } else {
                                hi
                            };
                            char::from_u32(code)
                                .ok_or_else(|| format!("bad code point {code:x}"))?
                        }
                        _ => return Err(format!("bad escape at byte {}", self.i)),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// Parses CSV (RFC 4180: quoted fields may hold commas, quotes and newlines) into rows.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            c => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}
