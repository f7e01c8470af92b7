//! A real headless Chromium driven over WebDriver (chromedriver, via fantoccini),
//! for the tests that need a browser's own EventSource and rendering. Needs the
//! Debian packages `chromium` and `chromium-driver`; `.ci/run` installs them.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// Chromium and chromedriver from the Debian packages (`CHROMIUM` and
/// `CHROMEDRIVER` override the paths). Missing: fail, loudly.
pub fn browser_binaries() -> (PathBuf, PathBuf) {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    let chromedriver =
        PathBuf::from(std::env::var("CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into()));
    for binary in [&chromium, &chromedriver] {
        assert!(
            binary.exists(),
            "{} not found: this test needs the Debian packages chromium and chromium-driver; \
             run `.ci/run`, which installs them (or `apt-get install chromium chromium-driver`)",
            binary.display(),
        );
    }
    (chromium, chromedriver)
}

/// A chromedriver on a port it picked; killed on drop.
pub struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    pub fn start(binary: &Path) -> Self {
        let mut child = Command::new(binary)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // "ChromeDriver was started successfully on port 45995."
        let port = loop {
            let line = lines
                .next()
                .expect("chromedriver exited before saying its port")
                .unwrap();
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').parse().unwrap();
            }
        };
        // Keep reading, so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, port }
    }

    pub async fn open(&self, chromium: &Path, profile: &Path) -> Client {
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    // Without these, Chromium's own connections on this closed network
                    // are refused many at a time.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let caps: Capabilities = caps;
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromedriver session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
