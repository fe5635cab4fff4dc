//! Headless Chromium driven over WebDriver (ChromeDriver), for the browser
//! tests: a window is a WebDriver session; each test saves screenshots
//! under `target/screenshots/`.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver process.
pub struct Driver {
    _child: Child,
    pub url: String,
    _profiles: tempfile::TempDir,
}

impl Driver {
    pub async fn start() -> Driver {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "the browser tests need Debian's chromium and chromium-driver: `cargo xtask test` installs them"
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("{url}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Driver {
                    _child: child,
                    url,
                    _profiles: tempfile::tempdir().expect("temp dir"),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not start");
    }

    /// A new browser window (its own profile, so its own storage).
    pub async fn window(&self) -> Window {
        // Two TLS back ends are linked into the tests; pick one explicitly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let profile = self._profiles.path().join(uuid::Uuid::now_v7().to_string());
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--no-first-run",
                    "--disable-sync", "--window-size=1280,860",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session");
        Window { client }
    }
}

pub struct Window {
    pub client: Client,
}

pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

impl Window {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing screenshot");
        path
    }

    /// Runs JavaScript in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Polls `script` until it returns true; panics with `what` after 20 s.
    pub async fn until(&self, what: &str, script: &str) {
        for _ in 0..400 {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self
            .screenshot(&format!("failed-{}", what.replace(' ', "-")))
            .await;
        panic!("never saw: {what}");
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("url")
            .path()
            .to_string()
    }

    /// Types into the message box and presses Enter.
    pub async fn send_message(&self, text: &str) {
        self.until(
            "an enabled message box",
            "const t = document.querySelector('#composer-input'); return !!t && !t.disabled;",
        )
        .await;
        let input = self
            .client
            .find(Locator::Css("#composer-input"))
            .await
            .expect("message box");
        input.send_keys(text).await.expect("typing");
        input.send_keys("\u{E007}").await.expect("enter");
    }

    /// Puts `text` in the message box at once (as a paste would, newlines
    /// and all) and presses Enter.
    pub async fn paste_and_send(&self, text: &str) {
        self.until(
            "an enabled message box",
            "const t = document.querySelector('#composer-input'); return !!t && !t.disabled;",
        )
        .await;
        self.js(&format!(
            "const t = document.querySelector('#composer-input'); t.value = {}; t.dispatchEvent(new Event('input', {{ bubbles: true }})); return null;",
            serde_json::to_string(text).expect("a string")
        ))
        .await;
        self.client
            .find(Locator::Css("#composer-input"))
            .await
            .expect("message box")
            .send_keys("\u{E007}")
            .await
            .expect("enter");
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|_| panic!("no {css}"))
            .click()
            .await
            .expect("click");
    }

    /// Runs `script` in every document this window loads from now on,
    /// before the page's own scripts (Chromium's DevTools protocol, through
    /// ChromeDriver).
    pub async fn on_new_document(&self, script: &str) {
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": script }),
        )
        .await;
    }

    /// Sends one command of Chromium's DevTools protocol and returns its
    /// result.
    pub async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// A DevTools protocol command sent through ChromeDriver's
/// `goog/cdp/execute` endpoint.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}
