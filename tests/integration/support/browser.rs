//! A real headless Chromium driven over WebDriver (`fantoccini`): one
//! `chromedriver` for the whole test binary, one browser at a time (the
//! machine has 2 cores). Each test opens a session, and closing it checks
//! the console for script errors and saves a screenshot under
//! `target/tmp/web-screenshots/`.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::wait_until;

/// Where chromedriver listens, and the process (its stdin held open: when
/// the test binary exits, the pipe closes and the wrapper kills it).
static DRIVER: OnceLock<(String, Mutex<Child>)> = OnceLock::new();

/// One browser at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn driver() -> &'static str {
    &DRIVER
        .get_or_init(|| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "\"$0\" --port={port} >/dev/null 2>&1 & driver=$!; read _; kill $driver"
                ))
                // $0 of the script: the chromedriver build.rs found.
                .arg(option_env!("HOLDQ_TEST_CHROMEDRIVER").unwrap_or("chromedriver"))
                .stdin(Stdio::piped())
                .spawn()
                .expect("chromedriver starts");
            (format!("http://127.0.0.1:{port}"), Mutex::new(child))
        })
        .0
}

/// An open browser session for one test.
pub struct Browser {
    pub client: Client,
    name: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Opens a headless Chromium; `name` names its screenshot.
    pub async fn open(name: &str) -> Self {
        let turn = TURN.lock().await;
        let url = driver();
        let status = format!("{url}/status");
        let ready = wait_until(
            async || {
                reqwest::get(&status)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .is_some()
            },
            Duration::from_secs(30),
        )
        .await;
        assert!(ready.is_some(), "chromedriver did not answer on {url}");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": option_env!("HOLDQ_TEST_CHROMIUM").unwrap_or("chromium"),
                // As root Chromium needs --no-sandbox.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(url)
            .await
            .expect("a Chromium session");
        Self {
            client,
            name: name.to_owned(),
            _turn: turn,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// The text of the first element matching `css`, if there is one now.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Waits (bounded) until the element `css` contains `wanted`, while
    /// the page refreshes itself; returns its text.
    pub async fn wait_for_text(&self, css: &str, wanted: &str, timeout: Duration) -> String {
        let found = wait_until(
            async || self.text(css).await.filter(|t| t.contains(wanted)),
            timeout,
        )
        .await;
        match found {
            Some(text) => text,
            None => {
                self.screenshot("timeout").await;
                panic!(
                    "{css} never said {wanted:?}; it says {:?}",
                    self.text(css).await
                )
            }
        }
    }

    /// Types into the field `css`.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .expect("the field");
        field.send_keys(value).await.expect("typing");
    }

    pub async fn click(&self, css: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .expect("the element");
        element.click().await.expect("a click");
    }

    /// Signs in through the sign-in form.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/signin")).await;
        self.fill("#signin input[name=token]", token).await;
        self.click("#signin button[type=submit]").await;
        self.wait_for_text("nav", "Sign out", Duration::from_secs(20))
            .await;
    }

    /// Saves a screenshot as `target/tmp/web-screenshots/NAME[-suffix].png`.
    pub async fn screenshot(&self, suffix: &str) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let name = if suffix.is_empty() {
            format!("{}.png", self.name)
        } else {
            format!("{}-{suffix}.png", self.name)
        };
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(name), png).unwrap();
    }

    /// The browser console's entries since the last call.
    async fn console(&self) -> Vec<Value> {
        let id = self.client.session_id().await.unwrap().expect("a session");
        let resp = reqwest::Client::new()
            .post(format!("{}/session/{id}/se/log", driver()))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .expect("chromedriver answers");
        let body: Value = resp.json().await.unwrap();
        body["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no console log from chromedriver: {body}"))
            .clone()
    }

    /// Saves the screenshot, asserts the console shows no script error,
    /// and ends the session.
    pub async fn close(self) {
        self.screenshot("").await;
        let errors: Vec<Value> = self
            .console()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .collect();
        self.client.clone().close().await.expect("the session ends");
        assert!(errors.is_empty(), "errors in the console: {errors:#?}");
    }
}
