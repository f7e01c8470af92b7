#![allow(clippy::unwrap_used)]
//! A browser's own `EventSource` against a full route: it is told to come back
//! (`200`, `retry:`, end of stream) rather than refused, so it never gives up, and
//! it gets in by itself once a slot frees. Needs Debian's `chromium` and
//! `chromium-driver`, so it is `#[ignore]`d for a plain `cargo test`; `.ci/run`
//! installs them and runs it.

mod support;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use fantoccini::Client;
use futures_util::FutureExt;
use serde_json::Value;

use support::browser::{browser_binaries, Chromedriver};
use support::*;

#[tokio::test]
#[ignore = "needs chromium; run by .ci/run"]
async fn browser_eventsource_comes_back_by_itself_once_a_slot_frees() {
    let (chromium, chromedriver) = browser_binaries();
    let upstream = TestUpstream::start().await;
    let yaml = format!(
        "limits: {{ max_clients_per_route: 1 }}\nclient: {{ retry: 300ms }}\nroutes:\n  - path: /events\n    upstream: {}\n",
        upstream.url("/events")
    );
    let gw = GatewayProcess::start(&yaml, &[]);
    // The one slot is taken.
    let holder = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "holder subscribed");

    let driver = Chromedriver::start(&chromedriver);
    let profile = TempDir::new("chromium-profile");
    let browser = driver.open(&chromium, &profile.0).await;
    let outcome = AssertUnwindSafe(check(&browser, &gw, &upstream, holder))
        .catch_unwind()
        .await;
    let _ = browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check(browser: &Client, gw: &GatewayProcess, upstream: &TestUpstream, holder: SseReader) {
    // Any page of the gateway's origin will do: the stream is same-origin then.
    browser.goto(&gw.url("/not-a-route")).await.unwrap();
    browser
        .execute(
            "window.seen = []; window.opens = 0; window.gaveUp = false;
             const es = new EventSource('/events');
             es.onopen = () => { window.opens += 1; };
             es.onmessage = (e) => { window.seen.push(e.data); };
             es.onerror = () => { if (es.readyState === EventSource.CLOSED) window.gaveUp = true; };",
            vec![],
        )
        .await
        .unwrap();
    let state = || async {
        browser
            .execute("return [window.opens, window.seen, window.gaveUp];", vec![])
            .await
            .unwrap()
    };
    // Turned away, again and again, yet it keeps coming back.
    eventually!(
        gw.metric("sse_gateway_limit_rejections_total").await >= 3.0,
        "the browser retried while the route was full: {:?}",
        state().await
    );
    let s: Value = state().await;
    assert_eq!(s[2], false, "EventSource gave up: {s:?}");
    assert_eq!(s[1].as_array().unwrap().len(), 0);

    // A slot frees; the browser takes it by itself and gets events.
    drop(holder);
    eventually!(
        gw.metric("sse_gateway_clients").await == 1.0,
        "the browser holds the slot now"
    );
    let emitted = async {
        for n in 1..=50u32 {
            upstream.emit_numbered(n..=n).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((), ()) = tokio::join!(emitted, async {
        eventually!(
            state().await[1]
                .as_array()
                .is_some_and(|seen| !seen.is_empty()),
            "events reach the browser"
        );
    });
    let s: Value = state().await;
    assert_eq!(s[2], false);
    assert!(s[0].as_u64().unwrap() >= 2, "reconnected by itself: {s:?}");
}
