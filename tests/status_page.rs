//! The admin status page (`GET /` on the admin listener).
//!
//! `status_page_is_served_as_html_with_a_strict_content_security_policy` runs with
//! every `cargo test`. The browser test loads the page in a real headless Chromium
//! driven over WebDriver (chromedriver, via fantoccini) against the real gateway
//! binary. It needs the Debian packages `chromium` and `chromium-driver`, so it is
//! `#[ignore]`d for a plain `cargo test`; `.ci/run` installs both and runs it with
//! `cargo test --locked -- --ignored status_page`. Run without them, it fails and
//! says so. It leaves a screenshot of the page in `target/status-page.png` (the CI
//! artifact; `CARGO_TARGET_DIR` moves it).

#![allow(clippy::unwrap_used)]

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, Locator};
use futures_util::FutureExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use support::browser::{browser_binaries, Chromedriver};
use support::*;

#[tokio::test]
async fn status_page_is_served_as_html_with_a_strict_content_security_policy() {
    let gw = GatewayProcess::start(&one_route("/demo", "builtin:clock", ""), &[]);
    let admin = gw.admin.unwrap();

    let page = get(&format!("http://{admin}/"), "GET").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    for allowed in [
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(allowed), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = String::from_utf8_lossy(page.body());
    // No inline script or style, which the policy would block anyway.
    assert!(html.contains(r#"<script src="/status.js""#), "{html}");
    assert!(
        !html.contains("<script>") && !html.contains("<style"),
        "{html}"
    );
    assert!(html.contains("<noscript>") && html.contains("/status.json"));
    assert!(html.contains(r#"id="total-clients""#));

    for (path, content_type, needle) in [
        (
            "/status.js",
            "text/javascript; charset=utf-8",
            "/status/events",
        ),
        (
            "/status.css",
            "text/css; charset=utf-8",
            "prefers-color-scheme",
        ),
        ("/status.svg", "image/svg+xml", "<svg"),
    ] {
        let asset = get(&format!("http://{admin}{path}"), "GET").await;
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], content_type, "{path}");
        assert!(asset.headers().contains_key("content-security-policy"));
        assert!(
            String::from_utf8_lossy(asset.body()).contains(needle),
            "{path}"
        );
    }

    // The page is the admin listener's alone.
    assert_eq!(get(&gw.url("/"), "GET").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium; run by .ci/run"]
async fn status_page_shows_live_client_count_and_sources_in_a_real_browser() {
    let (chromium, chromedriver) = browser_binaries();
    let upstream = TestUpstream::start().await;
    // An upstream that always fails: its source stays in backoff, with failures to show.
    let failing = TestUpstream::start().await;
    failing.set_mode(Mode::Status(503));
    let down_key = failing.url("/down");
    let yaml = format!(
        "drain: {{ deadline: 3s }}\nroutes:\n  - path: /events\n    upstream: {}\n  - path: /down\n    upstream: {down_key}\n",
        upstream.url("/events")
    );
    let gw = GatewayProcess::start(&yaml, &[]);
    let admin = gw.admin.unwrap();

    let driver = Chromedriver::start(&chromedriver);
    let profile = TempDir::new("chromium-profile");
    let browser = driver.open(&chromium, &profile.0).await;
    // Whatever happens, end the session so Chromium exits with the test.
    let outcome = AssertUnwindSafe(check_page(
        &browser,
        &gw,
        &upstream,
        &admin.to_string(),
        &down_key,
    ))
    .catch_unwind()
    .await;
    let _ = browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check_page(
    browser: &Client,
    gw: &GatewayProcess,
    upstream: &TestUpstream,
    admin: &str,
    down_key: &str,
) {
    browser.goto(&format!("http://{admin}/")).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "sse-gateway status");

    // Connected to /status/events and showing no clients yet.
    eventually!(
        page(browser).await["connection"] == "live",
        "page never connected to /status/events: {}",
        page(browser).await
    );
    eventually!(
        text(browser, "#total-clients").await == "0",
        "total clients: {}",
        text(browser, "#total-clients").await
    );
    let shown = page(browser).await;
    assert_eq!(shown["ready"], "ready", "{shown}");
    assert_eq!(shown["routes"].as_array().unwrap().len(), 2, "{shown}");
    // In configuration order.
    assert_eq!(shown["routes"][0]["path"], "/events", "{shown}");
    assert_eq!(shown["routes"][1]["path"], "/down", "{shown}");
    assert_no_console_errors(browser, "after loading").await;

    // Three clients connect; the page follows without being reloaded.
    browser
        .execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
    let _clients = [
        SseReader::get(&gw.url("/events")).await,
        SseReader::get(&gw.url("/events")).await,
        SseReader::get(&gw.url("/events")).await,
    ];
    eventually!(
        text(browser, "#total-clients").await == "3",
        "total clients: {}",
        text(browser, "#total-clients").await
    );
    let events_key = upstream.url("/events");
    eventually!(
        source(browser, &events_key).await["state"] == "connected",
        "no connected source row for {events_key}: {}",
        page(browser).await
    );
    let row = source(browser, &events_key).await;
    assert_eq!(row["route"], "/events", "{row}");
    assert_eq!(row["clients"], "3", "{row}");
    assert_eq!(
        browser
            .execute("return window.notReloaded === true;", vec![])
            .await
            .unwrap(),
        true,
        "the page was reloaded"
    );

    // Events show as the last event id and buffer fill.
    upstream.emit_numbered(1..=5).await;
    eventually!(
        source(browser, &events_key).await["last_event_id"] == "5",
        "last event id: {}",
        source(browser, &events_key).await
    );
    let row = source(browser, &events_key).await;
    assert_eq!(row["buffer"], "5 / 1,024", "{row}");
    assert_eq!(row["buffer_meter"], 5.0, "{row}");

    // A client of an upstream that fails: its source backs off and the failure is
    // listed with its reason.
    let _down = SseReader::get(&gw.url("/down")).await;
    eventually!(
        source(browser, down_key).await["state"] == "backoff",
        "no backoff row for {down_key}: {}",
        page(browser).await
    );
    assert!(
        source(browser, down_key).await["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{}",
        source(browser, down_key).await
    );
    eventually!(
        page(browser).await["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["source"] == down_key),
        "no failure listed for {down_key}: {}",
        page(browser).await
    );
    assert_eq!(text(browser, "#total-clients").await, "4");

    // Traffic for a few seconds, so the rates (from consecutive totals) move.
    let emitting = async {
        for n in 6.. {
            upstream.emit(&n.to_string(), "tick").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let rates_move = async {
        eventually!(
            rate(browser, "#rate-received").await > 0.0
                && rate(browser, "#rate-delivered").await > 0.0,
            "rates: {} received, {} delivered",
            text(browser, "#rate-received").await,
            text(browser, "#rate-delivered").await
        );
    };
    tokio::select! {
        () = emitting => unreachable!(),
        () = rates_move => {}
    }

    let png = browser.screenshot().await.unwrap();
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    eprintln!("status page screenshot: {}", path.display());

    assert_no_console_errors(browser, "after live updates").await;

    // A drain: the page shows it at once. A half-sent request head keeps the
    // gateway draining until drain.deadline (3 s here), long enough to be seen.
    let mut half_open = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    half_open
        .write_all(b"GET /events HTTP/1.1\r\nhost: gateway\r\n")
        .await
        .unwrap();
    gw.signal("TERM");
    eventually!(
        page(browser).await["ready"] == "draining",
        "readiness: {}",
        page(browser).await
    );

    // The gateway goes away: the page says so (and keeps retrying). The browser
    // logs the refused reconnects, so the console is not checked past here.
    eventually!(
        page(browser).await["disconnected_notice"] == true,
        "no disconnected notice: {}",
        page(browser).await
    );
    assert_eq!(
        text(browser, "#connection").await,
        "disconnected — retrying"
    );
}

// === what the page shows ===

/// The rendered text of one element, as the user reads it.
async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn rate(browser: &Client, css: &str) -> f64 {
    text(browser, css).await.parse().unwrap_or(0.0)
}

/// The page's state as its elements hold it.
async fn page(browser: &Client) -> Value {
    browser
        .execute(
            r#"
            const text = (el, field) => el.querySelector(`[data-field="${field}"]`).textContent;
            const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)];
            return {
              connection: document.getElementById("connection").dataset.connection,
              disconnected_notice: !document.getElementById("disconnected").hidden,
              ready: document.getElementById("readiness").textContent,
              routes: rows("routes").map((tr) => ({
                path: text(tr, "path"), upstream: text(tr, "upstream"), clients: text(tr, "clients"),
              })),
              sources: rows("sources").map((tr) => ({
                key: text(tr, "key"),
                route: text(tr, "route"),
                state: text(tr, "state"),
                clients: text(tr, "clients"),
                last_event_id: text(tr, "last-event-id"),
                buffer: tr.querySelector('[data-field="buffer"] span').textContent,
                buffer_meter: tr.querySelector('[data-field="buffer"] meter').value,
                last_error: text(tr, "last-error"),
              })),
              failures: rows("failures").map((tr) => ({
                at: text(tr, "at"), source: text(tr, "source"), reason: text(tr, "reason"),
              })),
            };
            "#,
            vec![],
        )
        .await
        .unwrap()
}

/// The source row whose upstream is `key`, or `null`.
async fn source(browser: &Client, key: &str) -> Value {
    page(browser).await["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .cloned()
        .unwrap_or(Value::Null)
}

/// SEVERE entries in the browser's log (console.error, uncaught exceptions,
/// failed loads, content-security-policy violations) since the last call.
async fn assert_no_console_errors(browser: &Client, when: &str) {
    let log = browser.issue_cmd(BrowserLog).await.unwrap();
    let entries = log.as_array().cloned().unwrap_or_default();
    let errors: Vec<&Value> = entries.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(
        errors.is_empty(),
        "console errors {when}: {errors:#?}\nwhole log: {entries:#?}"
    );
}

/// chromedriver's log endpoint (`goog:loggingPrefs` turns it on).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

fn screenshot_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| manifest.join("target"), |dir| manifest.join(dir));
    target.join("status-page.png")
}
