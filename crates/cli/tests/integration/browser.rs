//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), with a small client speaking the W3C protocol's JSON over HTTP.
//! Each `Browser` has its own chromedriver, a fresh profile and a downloads directory, and
//! stops both processes when dropped.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn program(candidates: &[&str], package: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{} not found; install Debian's `{package}` package (scripts/test.sh does)",
                candidates[0]
            )
        })
}

fn parse(r: ureq::Response) -> Value {
    let text = r.into_string().expect("a WebDriver answer");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("WebDriver answered non-JSON ({e}): {text}"))
}

pub struct Browser {
    driver: Child,
    endpoint: String,
    session: String,
    _profile: TempDir,
    pub downloads: TempDir,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

impl Browser {
    pub fn start() -> Browser {
        let chromium = program(
            &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
            "chromium",
        );
        let driver_bin = program(&["/usr/bin/chromedriver"], "chromium-driver");
        let profile = TempDir::new().expect("a profile directory");
        let downloads = TempDir::new().expect("a downloads directory");
        // chromedriver picks no port of its own: try free ones until one binds.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut driver = Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver");
            let endpoint = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(r) = agent().get(&format!("{endpoint}/status")).call() {
                    if let Ok(v) = r
                        .into_string()
                        .map(|t| serde_json::from_str::<Value>(&t).unwrap_or(Value::Null))
                    {
                        if v["value"]["ready"] == json!(true) {
                            ready = true;
                            break;
                        }
                    }
                }
                if let Ok(Some(_)) = driver.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ready {
                let _ = driver.kill();
                let _ = driver.wait();
                continue;
            }
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                    "prefs": {
                        "download.default_directory": downloads.path(),
                        "download.prompt_for_download": false,
                        "download.directory_upgrade": true,
                        "safebrowsing.enabled": false,
                    },
                },
            }}});
            let resp = agent()
                .post(&format!("{endpoint}/session"))
                .set("Content-Type", "application/json")
                .send_string(&caps.to_string());
            let v: Value = match resp {
                Ok(r) => parse(r),
                Err(ureq::Error::Status(_, r)) => {
                    let text = r.into_string().unwrap_or_default();
                    let _ = driver.kill();
                    let _ = driver.wait();
                    panic!("chromedriver refused to start Chromium: {text}");
                }
                Err(e) => panic!("talking to chromedriver: {e}"),
            };
            let session = v["value"]["sessionId"]
                .as_str()
                .expect("a session id")
                .to_string();
            let b = Browser {
                driver,
                endpoint,
                session,
                _profile: profile,
                downloads,
            };
            // Headless Chromium saves downloads only when told where.
            b.cdp(
                "Browser.setDownloadBehavior",
                json!({
                    "behavior": "allow",
                    "downloadPath": b.downloads.path(),
                }),
            );
            return b;
        }
        panic!("chromedriver did not start on any of five free ports");
    }

    #[track_caller]
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.endpoint, self.session);
        let req = agent().request(method, &url);
        let resp = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        match resp {
            Ok(r) => parse(r)["value"].clone(),
            Err(ureq::Error::Status(code, r)) => {
                panic!(
                    "WebDriver {method} {path}: {code} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The text of the whole page as a person reads it.
    pub fn text(&self) -> String {
        self.exec("return document.body.innerText", json!([]))
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    #[track_caller]
    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        match v[ELEMENT].as_str() {
            Some(e) => e.to_string(),
            None => panic!(
                "no element `{css}` on {} ({v}); the page says:\n{}",
                self.url(),
                self.source()
            ),
        }
    }

    pub fn click(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Clicks something that loads a new page, and waits until the new page has loaded.
    pub fn click_and_wait(&self, element: &str) {
        self.exec("window.__mailaudit_stale = true;", json!([]));
        self.click(element);
        self.wait_for_new_page();
    }

    /// Runs a script that loads a new page (a form's submit()), and waits for it.
    pub fn exec_and_wait(&self, script: &str, args: Value) {
        self.exec("window.__mailaudit_stale = true;", json!([]));
        self.exec(script, args);
        self.wait_for_new_page();
    }

    #[track_caller]
    fn wait_for_new_page(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let done = self.exec(
                "return window.__mailaudit_stale === undefined && document.readyState === 'complete';",
                json!([]),
            );
            if done == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no new page loaded within a minute (at {})", self.url());
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn element_text(&self, element: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn attr(&self, element: &str, name: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/attribute/{name}"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Signs in through the form, as a person would.
    pub fn sign_in(&self, base: &str, name: &str, password: &str) {
        self.goto(&format!("{base}/console/login"));
        self.type_into("input[name=username]", name);
        self.type_into("input[name=password]", password);
        let b = self.find("form.login button[type=submit]");
        self.click_and_wait(&b);
    }

    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a screenshot"))
            .expect("base64 PNG");
        std::fs::write(path, png).expect("writing a screenshot");
    }

    /// Waits for a finished download with this extension and returns its contents.
    #[track_caller]
    pub fn downloaded(&self, extension: &str) -> (PathBuf, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        // Chromium reserves the final name with an empty file while it still writes to a
        // `.crdownload` beside it: the download is done when that one is gone and the file
        // has stopped changing.
        let mut last: Option<(PathBuf, u64, Instant)> = None;
        while Instant::now() < deadline {
            let paths: Vec<PathBuf> = std::fs::read_dir(self.downloads.path())
                .expect("reading downloads")
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .collect();
            let busy = paths
                .iter()
                .any(|p| p.extension().is_some_and(|x| x == "crdownload"));
            let found = paths
                .into_iter()
                .find(|p| p.extension().is_some_and(|x| x == extension));
            match (found, busy) {
                (Some(p), false) => {
                    let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                    match &last {
                        Some((q, n, since))
                            if *q == p
                                && *n == len
                                && (len > 0 || since.elapsed() > Duration::from_secs(2)) =>
                        {
                            let bytes = std::fs::read(&p).expect("reading a download");
                            return (p, bytes);
                        }
                        Some((q, n, _)) if *q == p && *n == len => {}
                        _ => last = Some((p, len, Instant::now())),
                    }
                }
                _ => last = None,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no .{extension} download appeared in {}",
            self.downloads.path().display()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.endpoint, self.session);
        let _ = agent().delete(&url).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
