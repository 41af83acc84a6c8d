//! A real browser for the UI tests: Debian's `chromedriver` on a free 127.0.0.1 port driving a
//! headless Chromium through WebDriver ([`fantoccini`]), behind a blocking API for `#[test]`
//! functions. Both processes end when the [`Browser`] is dropped, also when the test panics.
//!
//! Only loopback is reached: chromedriver listens on loopback, [`Browser::goto`] refuses other
//! hosts, and Chromium's proxy, for all but loopback, is a closed port on 127.0.0.1.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Browser::text`], [`Browser::click`] and the like wait for their element.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Debian's Chromium itself: `/usr/bin/chromium` is a shell wrapper that adds flags of its own.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// The window a [`Browser`] starts with.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Viewport width in CSS pixels (`window.innerWidth`).
    pub width: u32,
    /// Viewport height in CSS pixels (`window.innerHeight`).
    pub height: u32,
    /// `prefers-color-scheme: dark` when true, `light` when false.
    pub dark: bool,
}

impl Default for Options {
    /// A desktop window, light.
    fn default() -> Self {
        Self {
            width: 1280,
            height: 800,
            dark: false,
        }
    }
}

impl Options {
    /// A phone: a viewport 375 CSS pixels wide (an iPhone's), light.
    pub fn phone() -> Self {
        Self {
            width: 375,
            height: 812,
            dark: false,
        }
    }
}

/// Where [`Browser::screenshot`] writes: `$HERMES_SCREENSHOTS`, or `screenshots` in Cargo's
/// temporary directory for integration tests (`target/tmp`). Created when missing.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("HERMES_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("screenshot directory {}: {e}", dir.display()));
    dir
}

/// A headless Chromium session of a test's own.
pub struct Browser {
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
    driver: Driver,
    /// Chromium's profile (`--user-data-dir`) and chromedriver's log; removed after both ended.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, with `opts`' viewport and
    /// colour scheme. Panics when either does not start within 30 s.
    pub fn start(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("browser tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let driver = Driver::start(&dir.path().join("chromedriver.log"));
        let profile = dir.path().join("profile");
        let args = vec![
            "--headless=new".to_owned(),
            // Root in a container: no user namespaces for the sandbox, a small /dev/shm, no GPU.
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", opts.width, opts.height),
            // Overlay scrollbars, as on a phone: `innerWidth` is the width the page lays out in.
            "--hide-scrollbars".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-pings".to_owned(),
            "--lang=en-US".to_owned(),
            // Everything but loopback (which bypasses proxies) goes to a closed local port:
            // Debian's Chromium 156 still reaches for its search engine, update and account
            // servers at start (seen through a listening proxy), background networking off or not.
            "--proxy-server=http://127.0.0.1:9".to_owned(),
        ];
        let mut chrome = json!({ "args": args });
        if let Some(binary) = std::env::var_os("HERMES_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| {
                Path::new(CHROMIUM)
                    .exists()
                    .then(|| PathBuf::from(CHROMIUM))
            })
        {
            chrome["binary"] = json!(binary.display().to_string());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), chrome);
        let url = driver.url();
        let connect = async {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url)
                .await
        };
        let client =
            match rt.block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, connect).await }) {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => panic!("no Chromium session: {e}\n{}", driver.log()),
                Err(_) => panic!(
                    "no Chromium session within {COMMAND_TIMEOUT:?}\n{}",
                    driver.log()
                ),
            };
        let browser = Self {
            client: Some(client),
            rt,
            driver,
            dir,
        };
        browser.block(
            "set timeouts",
            browser.client().update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            )),
        );
        browser.set_size(opts.width, opts.height);
        browser.set_dark(opts.dark);
        browser
    }

    /// The WebDriver client, for [`Browser::run`].
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser is running")
    }

    /// Loads `url` and waits for its `load` event. Only loopback hosts (`127.0.0.0/8`,
    /// `localhost`, `[::1]`) and `about:` / `data:` URLs are allowed.
    pub fn goto(&self, url: &str) {
        assert!(is_local(url), "the browser only visits loopback, not {url}");
        self.block(&format!("go to {url}"), self.client().goto(url));
    }

    /// The URL of the current page.
    pub fn url(&self) -> String {
        self.block("read the URL", self.client().current_url())
            .to_string()
    }

    /// Waits, polling, at most `within`, until an element matching `css` is present and
    /// displayed, and returns the first.
    pub fn wait_for(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            match self.rt.block_on(async {
                let e = self.client().find(Locator::Css(css)).await?;
                let shown = e.is_displayed().await?;
                Ok::<_, CmdError>(shown.then_some(e))
            }) {
                Ok(Some(e)) => return e,
                Ok(None) => {}
                Err(e) if e.is_no_such_element() || e.is_stale_element_reference() => {}
                Err(e) => panic!("looking for {css:?} on {}: {e}", self.page()),
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {css:?} to be displayed on {}",
                self.page()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits, polling, at most `within`, until the JavaScript expression `js` is truthy.
    pub fn wait_until(&self, js: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let script = format!("return !!({js});");
        while self.eval(&script, vec![]) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for `{js}` on {}",
                self.page()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The rendered (visible) text of the first element matching `css`, once it is displayed
    /// (waiting at most 10 s).
    pub fn text(&self, css: &str) -> String {
        let e = self.wait_for(css, FIND_TIMEOUT);
        self.block(&format!("read the text of {css:?}"), e.text())
    }

    /// The rendered text of every element matching `css`, now (none: empty).
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.block(&format!("read the texts of {css:?}"), async {
            let mut texts = Vec::new();
            for e in self.client().find_all(Locator::Css(css)).await? {
                texts.push(e.text().await?);
            }
            Ok(texts)
        })
    }

    /// Clicks the first element matching `css`, once it is displayed (waiting at most 10 s).
    pub fn click(&self, css: &str) {
        let e = self.wait_for(css, FIND_TIMEOUT);
        self.block(&format!("click {css:?}"), e.click());
    }

    /// Runs `js` as the body of a function (so `return` gives the result) with `args` as
    /// `arguments`, and returns its result as JSON.
    pub fn eval(&self, js: &str, args: Vec<Value>) -> Value {
        self.block("run a script", self.client().execute(js, args))
    }

    /// A PNG of the viewport, written to `name` (`.png` added when missing) in
    /// [`screenshot_dir`]; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.block("take a screenshot", self.client().screenshot());
        let file = if name.ends_with(".png") {
            name.to_owned()
        } else {
            format!("{name}.png")
        };
        let path = screenshot_dir().join(file);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Makes the viewport `width` x `height` CSS pixels (`innerWidth` x `innerHeight`), at a
    /// device pixel ratio of 1. The window alone cannot: headless Chromium 156 makes no window
    /// narrower than 500 pixels, and keeps 143 of its height for the browser's (unseen) bars. So
    /// the window is sized and the viewport set exactly by `Emulation.setDeviceMetricsOverride`
    /// (not `mobile`: a page without a viewport meta tag is not laid out 980 pixels wide).
    pub fn set_size(&self, width: u32, height: u32) {
        self.block(
            "size the window",
            self.client().set_window_size(width, height),
        );
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// Emulates `prefers-color-scheme: dark` (or `light`) for this page and the next, with
    /// `Emulation.setEmulatedMedia`: media queries, `matchMedia` and the CSS they select follow.
    pub fn set_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
    }

    /// Sends the Chrome DevTools Protocol command `cmd` through chromedriver
    /// (`POST /session/{id}/goog/cdp/execute`) and returns its result.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        let session = self
            .block("read the session id", self.client().session_id())
            .expect("a session");
        let r = reqwest::blocking::Client::new()
            .post(format!(
                "{}session/{session}/goog/cdp/execute",
                self.driver.url()
            ))
            .json(&json!({ "cmd": cmd, "params": params }))
            .timeout(COMMAND_TIMEOUT)
            .send()
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"));
        let status = r.status();
        let body: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "CDP {cmd}: {status} {body}");
        body["value"].clone()
    }

    /// Runs `f` with the WebDriver client on the browser's runtime: anything the API above lacks.
    pub fn run<'a, F, T>(&'a self, f: impl FnOnce(&'a Client) -> F) -> T
    where
        F: Future<Output = T>,
    {
        self.rt.block_on(f(self.client()))
    }

    /// `document.documentElement.scrollWidth` and `innerWidth` when the page is wider than the
    /// viewport (it scrolls sideways), `None` when it fits.
    pub fn horizontal_overflow(&self) -> Option<(u64, u64)> {
        let v = self.eval(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        );
        let (scroll, inner) = (
            v[0].as_u64().expect("scrollWidth"),
            v[1].as_u64().expect("innerWidth"),
        );
        (scroll > inner).then_some((scroll, inner))
    }

    /// Panics, naming the page, when it is wider than the viewport.
    pub fn assert_fits_width(&self) {
        if let Some((scroll, inner)) = self.horizontal_overflow() {
            panic!(
                "{} overflows horizontally: scrollWidth {scroll} > innerWidth {inner}",
                self.page()
            );
        }
    }

    /// Chromium's profile directory and chromedriver's log live here until the drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Awaits a command, at most [`COMMAND_TIMEOUT`], panicking with `what` and the page's URL.
    fn block<T>(&self, what: &str, f: impl Future<Output = Result<T, CmdError>>) -> T {
        match self
            .rt
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, f).await })
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("browser: {what} on {}: {e}", self.page()),
            Err(_) => panic!(
                "browser: {what} on {}: no answer within {COMMAND_TIMEOUT:?}",
                self.page()
            ),
        }
    }

    /// The current page's URL for messages, or why it is unknown.
    fn page(&self) -> String {
        let url = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), self.client().current_url()).await
        });
        match url {
            Ok(Ok(u)) => format!("page {u}"),
            Ok(Err(e)) => format!("page (URL unknown: {e})"),
            Err(_) => "page (URL unknown: no answer)".to_owned(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session, which quits Chromium; the driver's process group is killed next
        // (Driver's drop) in case it did not.
        if let Some(c) = self.client.take() {
            let close = async { tokio::time::timeout(Duration::from_secs(10), c.close()).await };
            self.rt.block_on(close).ok();
        }
    }
}

/// `chromedriver` on a free loopback port, in a process group of its own that the drop kills,
/// Chromium and its helpers included.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Driver {
    fn start(log: &Path) -> Self {
        let mut last = String::new();
        // A free port can be taken between its lookup and chromedriver's bind: try again.
        for _ in 0..3 {
            let port = super::free_port();
            let child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect(
                    "chromedriver is missing: install Debian's chromium-driver (scripts/test does)",
                );
            let mut driver = Self {
                child,
                port,
                log: log.to_owned(),
            };
            if driver.ready(Duration::from_secs(30)) {
                return driver;
            }
            last = driver.log();
        }
        panic!("chromedriver did not start:\n{last}");
    }

    /// Waits until `GET /status` says ready; false when chromedriver exited or never was.
    fn ready(&mut self, within: Duration) -> bool {
        let status = format!("{}status", self.url());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let ready = reqwest::blocking::get(&status)
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The end of chromedriver's log.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("chromedriver log (end):\n{}", &text[start..])
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .ok();
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// True for loopback `http(s)` URLs and for `about:` and `data:` ones.
fn is_local(url: &str) -> bool {
    if url.starts_with("about:") || url.starts_with("data:") {
        return true;
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}
