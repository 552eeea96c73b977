//! Headless Chromium through chromedriver, started on an ephemeral 127.0.0.1 port and stopped
//! with the test; screenshots saved under the test's temporary directory (and copied to
//! PHASEBOX_SCREENSHOT_DIR when it is set).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what a test waits for: generous, as a slow CI machine
/// needs; the tests assert what appears, never how fast.
const PATIENCE: Duration = Duration::from_secs(60);

/// A browser session and the chromedriver serving it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

/// Starts a browser; `None` (the test is skipped) when Chromium is not installed, unless
/// PHASEBOX_REQUIRE_BROWSER=1.
pub async fn start(shots: &Path) -> Option<Browser> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("PHASEBOX_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "PHASEBOX_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} is not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                     format!("--user-data-dir={}", profile.path().display())],
        },
    });
    let caps = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let mut driver = Some(driver);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let client = loop {
        match ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&url).await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                if let Some(mut d) = driver.take() {
                    let _ = d.kill();
                }
                panic!("no WebDriver session from chromedriver on port {port}: {e}");
            }
        }
    };
    std::fs::create_dir_all(shots).unwrap();
    Some(Browser { client, driver: driver.take().unwrap(), shots: shots.to_owned(), _profile: profile })
}

impl Browser {
    /// Opens `url` and returns the page's HTML.
    pub async fn open(&self, url: &str) -> String {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
        self.client.source().await.unwrap()
    }

    /// Saves a screenshot as `<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let file = self.shots.join(format!("{name}.png"));
        std::fs::write(&file, &png).unwrap();
        if let Ok(dir) = std::env::var("PHASEBOX_SCREENSHOT_DIR")
            && !dir.is_empty()
        {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(&file, Path::new(&dir).join(format!("{name}.png"))).unwrap();
        }
    }

    /// Text of the first element matching `css`, or `None`.
    pub async fn text(&self, css: &str) -> Option<String> {
        // Not found, or gone as the page changed under it: no text yet.
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Waits until the element `css` contains `needle` (panics after [`PATIENCE`]).
    pub async fn wait_for_text(&self, css: &str, needle: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if self.text(css).await.is_some_and(|t| t.contains(needle)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} never showed {needle:?}: {:?}",
                self.text(css).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Logs in through the login form.
    pub async fn log_in(&self, base: &str, client_id: &str, secret: &str) {
        self.client.goto(&format!("{base}/login")).await.unwrap();
        let form = self.client.form(Locator::Css("form.login")).await.unwrap();
        form.set_by_name("client_id", client_id).await.unwrap();
        form.set_by_name("client_secret", secret).await.unwrap();
        form.submit().await.unwrap();
        self.wait_for_text("header .who", client_id).await;
    }

    /// Ends the session (Chromium quits); chromedriver stops when the browser is dropped.
    pub async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
