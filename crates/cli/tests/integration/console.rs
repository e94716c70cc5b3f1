//! The web console end to end: a real `mailaudit serve --demo` (the generator's records),
//! a real headless Chromium driven over WebDriver, and for owners a real Dovecot checking
//! their IMAP credentials. Set MAILAUDIT_SCREENSHOTS=DIR to keep screenshots of the pages.

use crate::browser::Browser;
use crate::dovecot::Dovecot;
use crate::util::{self, enc, get, init_dir, post_observations, Json, Obs, Server};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn add_user(dir: &Path, name: &str, role: &str, password: &str) {
    let mut child = Command::new(util::bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["user", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running mailaudit user add");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(format!("{password}\n").as_bytes())
        .expect("writing the password");
    let out = child.wait_with_output().expect("waiting for user add");
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn screenshot(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("MAILAUDIT_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).expect("creating the screenshot directory");
        browser.screenshot(&Path::new(&dir).join(format!("{name}.png")));
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (Howard Hinnant's days_from_civil).
fn unix_of_date(d: &str) -> i64 {
    let y: i64 = d[..4].parse().expect("year");
    let m: i64 = d[5..7].parse().expect("month");
    let day: i64 = d[8..10].parse().expect("day");
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400
}

/// The cells of the results table, row by row, as the browser shows them.
fn table_rows(browser: &Browser, css: &str) -> Vec<Vec<String>> {
    let v = browser.exec(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map(tr => Array.from(tr.cells).map(td => td.innerText))",
        serde_json::json!([css]),
    );
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("cells")
                .iter()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

fn audit_records(server: &Server, token: &str, query: &str) -> Vec<Json> {
    let r = get(
        &server.url(&format!("/api/v1/records?{query}&limit=1000")),
        token,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["records"].arr().to_vec()
}

#[test]
fn auditor_searches_non_owner_access_opens_a_record_and_downloads_csv_and_xml() {
    let dir = init_dir();
    add_user(dir.path(), "ann", "auditor", "ann's long password");
    let admin = util::token(dir.path(), "admin", "check");
    let server = Server::start(dir.path(), &["--demo", "--demo-records", "4000"]);

    // A mailbox someone other than its owner accessed, and the day it happened.
    // A past day: today's non-owner records grow with the audit system's own records of
    // the searches below (they are Admin actions on the mailbox searched).
    let today = util::unix_now() / 86_400 * 86_400;
    let first = &audit_records(
        &server,
        &admin,
        &format!("non_owner=all&to={}", enc(&util::rfc3339(today))),
    )[0];
    let mailbox = first["mailbox"].str().expect("a mailbox").to_string();
    let day = first["time"].str().expect("a time")[..10].to_string();
    let (from, to) = (
        util::rfc3339(unix_of_date(&day)),
        util::rfc3339(unix_of_date(&day) + 86_400),
    );
    let api = get(
        &server.url(&format!(
            "/api/v1/records?mailbox={}&non_owner=all&from={}&to={}&limit=1000",
            enc(&mailbox),
            enc(&from),
            enc(&to)
        )),
        &admin,
    )
    .json();
    let expected_total = api["total"].u64().expect("a total");
    assert!(expected_total >= 1);

    let browser = Browser::start();
    browser.goto(&server.url("/console/search"));
    assert!(
        browser.url().ends_with("/console/login"),
        "signed out, the console sends you to sign in: {}",
        browser.url()
    );
    screenshot(&browser, "sign-in");
    browser.sign_in(&server.base, "ann", "ann's long password");
    assert!(
        browser.url().contains("/console/search?from="),
        "{}",
        browser.url()
    );
    assert!(browser.text().contains("ann (auditor)"));

    // The search, filled in as a person would: dates, mailbox, the non-owner choice.
    browser.exec(
        "document.querySelector('input[name=from]').value = arguments[0];\
         document.querySelector('input[name=to]').value = arguments[0];",
        serde_json::json!([day]),
    );
    browser.type_into("input[name=mailbox]", &mailbox);
    let option = browser.find("select[name=non_owner] option[value=all]");
    browser.click(&option);
    let search = browser.find("form.filters button[type=submit]");
    browser.click_and_wait(&search);
    let url = browser.url();
    assert!(
        url.contains(&format!("mailbox={}", enc(&mailbox)))
            && url.contains("non_owner=all")
            && url.contains(&format!("from={day}")),
        "the filters live in the URL: {url}"
    );
    let total: u64 = browser
        .attr(&browser.find("#total"), "data-total")
        .parse()
        .expect("a total on the page");
    assert_eq!(total, expected_total, "the page counts what the API counts");
    assert!(browser
        .text()
        .contains(&format!("{expected_total} records match")));
    let rows = table_rows(&browser, "table.records");
    assert_eq!(rows.len() as u64, expected_total.min(50));
    let api_records = api["records"].arr();
    for (row, rec) in rows.iter().zip(api_records) {
        assert_eq!(
            row[3], mailbox,
            "every row is the mailbox asked for: {row:?}"
        );
        assert_ne!(
            row[5], "Owner",
            "no owner access in a non-owner search: {row:?}"
        );
        assert_eq!(row[4], rec["actor"].str().unwrap_or(""), "{row:?}");
        assert!(row[0].starts_with(&day), "{row:?}");
    }
    screenshot(&browser, "search");

    // One record's details.
    let link = browser.find("table.records tbody tr a");
    let seq = api_records[0]["seq"].u64().expect("seq");
    browser.click_and_wait(&link);
    assert!(
        browser.url().ends_with(&format!("/console/records/{seq}")),
        "{}",
        browser.url()
    );
    let text = browser.text();
    assert!(text.contains(&format!("Record {seq}")), "{text}");
    assert!(text.contains(&mailbox));
    assert!(text.contains(api_records[0]["actor"].str().unwrap_or("?")));
    let op = api_records[0]["operation"].str().expect("operation");
    assert!(
        text.contains(&format!("({op})")),
        "the operation, readable and by name: {text}"
    );
    assert!(text.contains("Download inclusion proof"));
    screenshot(&browser, "record");

    // Downloads of the same search: CSV and SearchResult.xml.
    browser.goto(&url);
    let csv_link = browser.find("a.export[data-format=csv]");
    browser.click(&csv_link);
    let (_, csv) = browser.downloaded("csv");
    let csv = util::parse_csv(&String::from_utf8(csv).expect("UTF-8 CSV"));
    assert_eq!(csv[0][8], "MailboxOwnerUPN");
    assert_eq!(
        csv.len() as u64 - 1,
        expected_total,
        "every matching record, no cap"
    );
    for row in &csv[1..] {
        assert_eq!(row[8], mailbox);
        assert!(row[6] != "Owner" || row[7] == "true", "{row:?}");
    }
    let xml_link = browser.find("a.export[data-format=exchange-xml]");
    browser.click(&xml_link);
    let (_, xml) = browser.downloaded("xml");
    let parsed =
        mailaudit_export::read_exchange_xml(&xml[..]).expect("well-formed SearchResult.xml");
    assert_eq!(parsed.len() as u64, expected_total);
    assert!(parsed
        .iter()
        .all(|r| r.mailbox == mailbox && r.is_non_owner()));

    // Each page that showed records, and each export, is in the log under ann's name.
    let searches = audit_records(
        &server,
        &admin,
        "operation=AuditLogSearch&actor=console:ann",
    );
    assert!(
        searches.iter().any(|r| r.param("view") == Some("search")
            && r.param("total") == Some(expected_total.to_string().as_str())
            && r["mailbox"].str() == Some(mailbox.as_str())),
        "the search is recorded with its total"
    );
    assert!(searches
        .iter()
        .any(|r| r.param("record") == Some(seq.to_string().as_str())));
    let exports = audit_records(
        &server,
        &admin,
        "operation=AuditLogExport&actor=console:ann",
    );
    let formats: Vec<_> = exports.iter().filter_map(|r| r.param("format")).collect();
    assert!(
        formats.contains(&"csv") && formats.contains(&"exchange-xml"),
        "{formats:?}"
    );
    assert_eq!(exports[0]["client"]["protocol"].str(), Some("http"));

    // Auditors read everything and change nothing: the policy page refuses them.
    browser.goto(&server.url("/console/policy"));
    let text = browser.text();
    assert!(
        text.contains("Not allowed") && text.contains("policy pages are for admins"),
        "{text}"
    );
    assert!(!browser.source().contains("policy-form"));

    // `serve --demo` prints a console admin's password once; it signs in and may see the policy.
    let log = server.log();
    let password = log
        .lines()
        .find_map(|l| {
            l.split("demo console sign-in (/console/): demo-admin / ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no demo console account in the log:\n{log}"))
        .trim()
        .to_string();
    browser.goto(&server.url("/console/search?from="));
    let out = browser.find("form.signout button");
    browser.click_and_wait(&out);
    browser.sign_in(&server.base, "demo-admin", &password);
    browser.goto(&server.url("/console/policy"));
    assert!(
        browser.source().contains("policy-form"),
        "{}",
        browser.text()
    );
}

#[test]
fn forms_without_csrf_are_refused_and_ten_wrong_passwords_lock_the_account() {
    let dir = init_dir();
    add_user(dir.path(), "root", "admin", "root's long password");
    let admin = util::token(dir.path(), "admin", "check");
    let server = Server::start(dir.path(), &["--demo", "--demo-records", "2000"]);
    let browser = Browser::start();
    browser.sign_in(&server.base, "root", "root's long password");
    assert!(browser.url().contains("/console/search?from="));

    // The bypass form with its CSRF token taken out is refused, and nothing changes.
    browser.goto(&server.url("/console/policy"));
    browser.exec_and_wait(
        "const f = document.querySelector('form[action=\"/console/policy/bypass\"]');\
         f.querySelector('input[name=csrf]').remove();\
         f.querySelector('input[name=actor]').value = 'mallory@example.com';\
         f.submit();",
        serde_json::json!([]),
    );
    let text = browser.text();
    assert!(text.contains("no valid CSRF token"), "{text}");
    let policy = get(&server.url("/api/v1/policy/bypass"), &admin).json();
    assert!(
        policy.arr().is_empty(),
        "the refused form changed nothing: {policy:?}"
    );

    // With the token the change goes through, is recorded, and warns on every page.
    browser.goto(&server.url("/console/policy"));
    browser.type_into(
        "form[action=\"/console/policy/bypass\"] input[name=actor]",
        "backup@example.com",
    );
    let add = browser.find("form[action=\"/console/policy/bypass\"] button[type=submit]");
    browser.click_and_wait(&add);
    assert!(browser.text().contains("Change applied and recorded"));
    let changes = audit_records(&server, &admin, "operation=AuditBypassChange");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["actor"].str(), Some("console:root"));
    for page in ["/console/search", "/console/report", "/console/policy"] {
        browser.goto(&server.url(page));
        assert!(
            browser.text().contains("Audit bypass in force"),
            "{page} warns of the bypass"
        );
    }
    screenshot(&browser, "policy");
    browser.goto(&server.url("/console/report"));
    screenshot(&browser, "non-owner-report");

    // A policy change through the mailbox form, recorded with before and after.
    browser.goto(&server.url("/console/policy"));
    browser.type_into("#policy-form input[name=mailbox]", "user00001@example.com");
    let owner = browser.find("#policy-form select[name=logon_type] option[value=Owner]");
    browser.click(&owner);
    let op = browser.find("#policy-form select[name=operation] option[value=MessageBind]");
    browser.click(&op);
    let apply = browser.find("#policy-form button[type=submit]");
    browser.click_and_wait(&apply);
    let text = browser.text();
    assert!(text.contains("Change applied and recorded"), "{text}");
    let effective = get(
        &server.url("/api/v1/policy/mailboxes/user00001@example.com"),
        &admin,
    )
    .json();
    assert!(
        effective["owner"]
            .arr()
            .iter()
            .any(|o| o.str() == Some("MessageBind")),
        "{effective:?}"
    );

    // Sign out, then ten wrong passwords lock the account: the right one is refused too.
    let out = browser.find("form.signout button");
    browser.click_and_wait(&out);
    assert!(browser.url().ends_with("/console/login"));
    for i in 1..=10 {
        browser.sign_in(&server.base, "root", &format!("wrong password {i}"));
        let text = browser.text();
        assert!(
            text.contains("Wrong name or password"),
            "attempt {i}: {text}"
        );
    }
    browser.sign_in(&server.base, "root", "root's long password");
    let text = browser.text();
    assert!(text.contains("Too many failed sign-ins"), "{text}");
    assert!(browser.url().ends_with("/console/login"));
    browser.goto(&server.url("/console/search"));
    assert!(
        browser.url().ends_with("/console/login"),
        "still signed out"
    );
}

#[test]
fn an_owner_signs_in_with_imap_credentials_and_sees_only_their_mailbox() {
    let mut dovecot = Dovecot::prepare();
    dovecot.start(None);
    let dir = init_dir();
    add_user(dir.path(), "ann", "auditor", "ann's long password");
    let admin = util::token(dir.path(), "admin", "check");
    let imap = format!("127.0.0.1:{}", dovecot.imap);
    let server = Server::start(
        dir.path(),
        &[
            "--console-imap",
            &imap,
            "--console-mail-domain",
            "example.com",
        ],
    );
    let obs = [
        Obs::new("MailboxLogin", "alice@example.com", "alice@example.com"),
        Obs::new("MessageBind", "alice@example.com", "bob@example.com").subject("Salary review"),
        Obs::new("HardDelete", "alice@example.com", "bob@example.com").subject("Old minutes"),
        Obs::new("MessageBind", "alice@example.com", "bob@example.com")
            .subject("<img src=x id=injected onerror=alert(1)>"),
        Obs::new("MessageBind", "bob@example.com", "carol@example.com").subject("Bob's secret"),
    ];
    let r = post_observations(&server, &admin, &util::ndjson(&obs));
    assert_eq!(r.status, 200, "{}", r.body);
    let bobs = audit_records(&server, &admin, "mailbox=bob@example.com");
    let bob_seq = bobs[0]["seq"].u64().expect("seq");

    let browser = Browser::start();
    browser.sign_in(&server.base, "alice", "wrong");
    assert!(
        browser.text().contains("Wrong name or password"),
        "Dovecot said no"
    );
    browser.sign_in(&server.base, "alice", "alicepw");
    assert!(
        browser.url().ends_with("/console/mine"),
        "{}",
        browser.url()
    );
    let text = browser.text();
    assert!(
        text.contains("alice (owner of alice@example.com)"),
        "{text}"
    );
    assert!(
        text.contains("Salary review") && text.contains("Old minutes"),
        "{text}"
    );
    assert!(!text.contains("Bob's secret"), "{text}");
    let others = table_rows(&browser, "#others table.records");
    assert_eq!(others.len(), 3, "{others:?}");
    // A subject is text, never markup: shown as typed, no element made of it.
    assert!(
        others
            .iter()
            .any(|r| r[8] == "<img src=x id=injected onerror=alert(1)>"),
        "{others:?}"
    );
    let injected = browser.exec(
        "return document.querySelectorAll('#injected, img').length",
        serde_json::json!([]),
    );
    assert_eq!(injected, serde_json::json!(0));
    assert!(others
        .iter()
        .all(|r| r[3] == "alice@example.com" && r[4] == "bob@example.com"));
    let deletions = table_rows(&browser, "#deletions table.records");
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0][1], "Purged messages");
    screenshot(&browser, "my-mailbox");

    // The search page holds an owner to their own mailbox, whatever the URL says.
    browser.goto(&server.url("/console/search"));
    let rows = table_rows(&browser, "table.records");
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r[3] == "alice@example.com"),
        "{rows:?}"
    );
    browser.goto(&server.url("/console/search?mailbox=bob%40example.com"));
    assert!(browser.text().contains("only your own mailbox"));
    browser.goto(&server.url(&format!("/console/records/{bob_seq}")));
    assert!(
        browser.text().contains("does not exist"),
        "another mailbox's record is not shown"
    );
    browser.goto(&server.url("/console/policy"));
    assert!(browser.text().contains("Not allowed"));
    browser.goto(&server.url("/console/report"));
    assert!(browser.text().contains("Not allowed"));

    // The owner's views are recorded like anyone's.
    let views = audit_records(
        &server,
        &admin,
        "operation=AuditLogSearch&actor=console:alice",
    );
    assert!(views.len() >= 5, "{}", views.len());
    assert!(views
        .iter()
        .all(|r| r["mailbox"].str() == Some("alice@example.com")));

    // An auditor sees alice connected now (signed in, not signed out), and the charts.
    browser.goto(&server.url("/console/mine"));
    let out = browser.find("form.signout button");
    browser.click_and_wait(&out);
    browser.sign_in(&server.base, "ann", "ann's long password");
    browser.goto(&server.url("/console/sessions"));
    let connected = browser.attr(&browser.find("#connected"), "data-count");
    assert_eq!(connected, "1");
    let rows = table_rows(&browser, "#sessions");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let cells: Vec<&str> = [0, 1, 2, 4, 5, 7, 8]
        .iter()
        .map(|i| row[*i].as_str())
        .collect();
    assert_eq!(
        cells,
        [
            "alice@example.com",
            "alice@example.com",
            "Owner",
            "192.0.2.7",
            "Thunderbird",
            "INBOX",
            "Succeeded"
        ],
        "{row:?}"
    );
    assert!(
        browser.source().contains("http-equiv=\"refresh\""),
        "the page updates itself"
    );
    screenshot(&browser, "live-sessions");
    browser.goto(&server.url("/console/charts"));
    let count = |id: &str| browser.element_text(&browser.find(id));
    assert_eq!(
        count("#non-owner-total"),
        "4",
        "bob three times in alice's mailbox, carol once in bob's"
    );
    assert_eq!(count("#login-total"), "1");
    let bars = browser.exec(
        "return document.querySelectorAll('svg.chart rect').length",
        serde_json::json!([]),
    );
    assert!(bars.as_u64().unwrap_or(0) >= 3, "bars are drawn: {bars}");
    assert!(browser
        .source()
        .contains("<title>alice@example.com Delegate: 3</title>"));
    screenshot(&browser, "charts");
}

/// A real SMTP server (Python's standard smtpd) on a free loopback port, stopped when
/// dropped.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let dir = tempfile::TempDir::new().expect("a mail directory");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/integration/smtp_sink.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the SMTP sink (python3)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout is piped")),
            &mut line,
        )
        .expect("the sink's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the sink printed {line:?}"));
        SmtpSink { child, port, dir }
    }

    fn wait_for_message(&self) -> std::path::PathBuf {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let path = self.dir.path().join("1.eml");
            if path.exists() {
                return path;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no mail reached the SMTP sink within a minute");
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_mailed_export_reaches_an_smtp_sink_with_the_xml_attached() {
    let sink = SmtpSink::start();
    let dir = init_dir();
    add_user(dir.path(), "ann", "auditor", "ann's long password");
    let admin = util::token(dir.path(), "admin", "check");
    let relay = format!("127.0.0.1:{}", sink.port);
    let server = Server::start(
        dir.path(),
        &[
            "--demo",
            "--demo-records",
            "3000",
            "--console-smtp",
            &relay,
            "--console-mail-from",
            "audit@example.com",
        ],
    );
    let first = &audit_records(&server, &admin, "non_owner=external")[0];
    let mailbox = first["mailbox"].str().expect("a mailbox").to_string();
    let expected = audit_records(
        &server,
        &admin,
        &format!("mailbox={}&non_owner=external", enc(&mailbox)),
    );

    let browser = Browser::start();
    browser.sign_in(&server.base, "ann", "ann's long password");
    browser.goto(&server.url(&format!(
        "/console/search?mailbox={}&non_owner=external",
        enc(&mailbox)
    )));
    browser.type_into(
        "form.mail input[name=recipients]",
        "legal@example.com, Counsel <counsel@example.org>",
    );
    let send = browser.find("form.mail button[type=submit]");
    browser.click_and_wait(&send);
    let text = browser.text();
    assert!(
        text.contains(&format!("The export of {} records", expected.len()))
            && text.contains("legal@example.com"),
        "{text}"
    );

    let eml = sink.wait_for_message();
    let raw = std::fs::read_to_string(&eml).expect("reading the mail");
    assert!(
        raw.starts_with("X-Sink-Rcpt: legal@example.com,counsel@example.org"),
        "{}",
        &raw[..200.min(raw.len())]
    );
    let out = util::run({
        let mut c = Command::new("python3");
        c.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/integration/extract_attachment.py"
        ))
        .arg(&eml);
        c
    })
    .ok();
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).expect("the summary");
    assert_eq!(
        summary["subject"],
        format!("mailaudit export: {} records", expected.len())
    );
    let body = summary["body"].as_str().expect("a body");
    assert!(body.contains("Requested by: console:ann"), "{body}");
    assert!(
        body.contains(&format!("mailbox: {mailbox}")),
        "the criteria are in the body: {body}"
    );
    assert!(body.contains("non_owner: external"), "{body}");
    let attachments = summary["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["name"], "SearchResult.xml");
    assert_eq!(attachments[0]["type"], "application/xml");
    let xml = attachments[0]["content"].as_str().expect("the XML");
    let records =
        mailaudit_export::read_exchange_xml(xml.as_bytes()).expect("well-formed SearchResult.xml");
    assert_eq!(records.len(), expected.len());
    for (got, want) in records.iter().zip(&expected) {
        assert_eq!(got.seq, want["seq"].u64().expect("seq"));
        assert_eq!(got.mailbox, mailbox);
        assert!(got.external);
    }
    let exports = audit_records(
        &server,
        &admin,
        "operation=AuditLogExport&actor=console:ann",
    );
    assert_eq!(exports.len(), 1);
    assert!(exports[0]
        .param("mailed_to")
        .is_some_and(|t| t.contains("counsel@example.org")));
}

/// `curl ARGS` against a server with a self-signed certificate, trusting only that
/// certificate.
fn curl(cert: &Path, args: &[&str]) -> String {
    let mut c = Command::new("curl");
    c.args(["-s", "-i", "--max-time", "60", "--cacert"])
        .arg(cert)
        .args(args);
    let out = util::run(c);
    assert_eq!(out.code, 0, "curl {args:?} failed: {}", out.stderr);
    out.stdout
}

#[test]
fn the_console_is_served_over_tls_with_secure_cookies() {
    let tmp = tempfile::TempDir::new().expect("a directory");
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let mut gen = Command::new("openssl");
    gen.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
    ])
    .args([
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
    ])
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    util::run(gen).ok();
    let dir = init_dir();
    add_user(dir.path(), "ann", "auditor", "ann's long password");
    let admin = util::token(dir.path(), "admin", "check");
    let mut child = Command::new(util::bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting mailaudit serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let _guard = Kill(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("a line");
    let base = line
        .strip_prefix("mailaudit listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let jar = tmp.path().join("jar");
    let jar = jar.to_str().expect("a UTF-8 path");

    let form = curl(&cert, &["-c", jar, &format!("{base}/console/login")]);
    assert!(form.starts_with("HTTP/1.1 200"), "{form}");
    assert!(
        form.lines().any(
            |l| l.to_lowercase().starts_with("set-cookie: mailaudit_login=")
                && l.contains("; Secure")
        ),
        "{form}"
    );
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF token");
    let signed = curl(
        &cert,
        &[
            "-b",
            jar,
            "-c",
            jar,
            "--data",
            &format!("csrf={csrf}&username=ann&password=ann%27s+long+password"),
            &format!("{base}/console/login"),
        ],
    );
    assert!(signed.starts_with("HTTP/1.1 303"), "{signed}");
    let session = signed
        .lines()
        .find(|l| {
            l.to_lowercase()
                .starts_with("set-cookie: mailaudit_console=")
        })
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    let page = curl(&cert, &["-b", jar, &format!("{base}/console/search?from=")]);
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("records match"),
        "{page}"
    );
    // Plain HTTP to the TLS port gets no page.
    let plain = util::run({
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "--max-time",
            "10",
            &base.replace("https://", "http://"),
        ]);
        c
    });
    assert!(!plain.stdout.contains("mailaudit"), "{}", plain.stdout);

    let records = curl(
        &cert,
        &[
            "-H",
            &format!("Authorization: Bearer {admin}"),
            &format!("{base}/api/v1/records?actor=console:ann"),
        ],
    );
    let body = records.split("\r\n\r\n").nth(1).expect("a body");
    let json = Json::parse(body).expect("JSON");
    let r = &json["records"][0];
    assert_eq!(r["operation"].str(), Some("AuditLogSearch"));
    assert_eq!(r["client"]["protocol"].str(), Some("https"));
    assert_eq!(r["client"]["tls"], Json::Bool(true));
}

#[test]
fn admins_edit_the_alert_rules_and_the_change_is_recorded() {
    let dir = init_dir();
    add_user(dir.path(), "root", "admin", "root's long password");
    add_user(dir.path(), "ann", "auditor", "ann's long password");
    let admin = util::token(dir.path(), "admin", "check");
    let config = dir.path().join("mailaudit.toml");
    let stream = dir.path().join("records.jsonl");
    std::fs::write(
        &config,
        format!(
            "[[rules]]\nname = \"vip\"\nkind = \"non_owner_access\"\nmailboxes = [\"ceo@example.com\"]\n\n\
             [[stream]]\nname = \"siem\"\nto = \"file\"\npath = \"{}\"\n",
            stream.display()
        ),
    )
    .expect("write the config");
    let server = Server::start(
        dir.path(),
        &[
            "--demo",
            "--demo-records",
            "200",
            "--config",
            config.to_str().expect("UTF-8"),
        ],
    );
    let browser = Browser::start();

    // Auditors change nothing: the page refuses them.
    browser.sign_in(&server.base, "ann", "ann's long password");
    browser.goto(&server.url("/console/alerts"));
    let text = browser.text();
    assert!(text.contains("alert rules pages are for admins"), "{text}");
    browser.goto(&server.url("/console/search"));
    let out = browser.find("form.signout button");
    browser.click_and_wait(&out);

    // The admin sees the file's rule.
    browser.sign_in(&server.base, "root", "root's long password");
    browser.goto(&server.url("/console/alerts"));
    let text = browser.text();
    assert!(
        text.contains("1 rule(s), from the configuration file"),
        "{text}"
    );
    let area = browser.exec(
        "return document.querySelector('#rules-form textarea[name=rules]').value;",
        serde_json::json!([]),
    );
    let shown: serde_json::Value =
        serde_json::from_str(area.as_str().unwrap_or("")).unwrap_or(serde_json::Value::Null);
    assert_eq!(shown[0]["name"], "vip", "{shown}");
    assert_eq!(shown[0]["kind"], "non_owner_access", "{shown}");

    // Broken JSON is refused with the reason, and the rules stay.
    browser.exec_and_wait(
        "const f = document.getElementById('rules-form');\
         f.querySelector('textarea').value = '[{\"name\": \"x\", ';\
         f.submit();",
        serde_json::json!([]),
    );
    let text = browser.text();
    assert!(text.contains("not valid JSON"), "{text}");
    let rules = get(&server.url("/api/v1/alerts/rules"), &admin).json();
    assert_eq!(rules["rules"].arr().len(), 1);
    assert_eq!(rules["source"].str(), Some("config"));

    // A new rule set through the form applies live and is recorded with before and after.
    browser.goto(&server.url("/console/alerts"));
    browser.exec_and_wait(
        "const f = document.getElementById('rules-form');\
         f.querySelector('textarea').value = JSON.stringify([\
           {name: 'impersonation', kind: 'admin_impersonation'},\
           {name: 'vip', kind: 'non_owner_access', mailboxes: ['cfo@example.com']}]);\
         f.submit();",
        serde_json::json!([]),
    );
    let text = browser.text();
    assert!(
        text.contains("Rules replaced; the change is record"),
        "{text}"
    );
    assert!(text.contains("2 rule(s), as last saved here"), "{text}");
    let rules = get(&server.url("/api/v1/alerts/rules"), &admin).json();
    let names: Vec<&str> = rules["rules"]
        .arr()
        .iter()
        .filter_map(|r| r["name"].str())
        .collect();
    assert_eq!(names, ["impersonation", "vip"]);
    assert_eq!(rules["source"].str(), Some("api"));
    let changes = audit_records(&server, &admin, "operation=AuditPolicyChange");
    let change = changes
        .iter()
        .find(|r| r.param("change").is_some_and(|c| c.contains("alert_rules")))
        .expect("the rules change is in the audit log");
    assert_eq!(change["actor"].str(), Some("console:root"));
    assert!(change
        .param("before")
        .is_some_and(|b| b.contains("ceo@example.com")));
    assert!(change
        .param("after")
        .is_some_and(|a| a.contains("cfo@example.com")));
}
