//! Broken upstreams are upstream failures: back off, retry, and never take down
//! the gateway or other routes.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

const FAST_BACKOFF: &str = "upstream: { backoff: { initial: 20ms, max: 100ms }, max_line: 1KiB }\n";

async fn gateway(bad: &TestUpstream, good: &TestUpstream) -> TestGateway {
    let yaml = format!(
        "{FAST_BACKOFF}routes:\n  - path: /bad\n    upstream: {}\n  - path: /good\n    upstream: {}\n",
        bad.url("/bad"),
        good.url("/good")
    );
    spawn_gateway(&yaml).await
}

async fn good_route_still_works(gw: &TestGateway, good: &TestUpstream, id: &str) {
    let mut r = SseReader::get(&gw.url("/good")).await;
    eventually!(good.open_streams() >= 1, "good upstream subscribed");
    good.emit(id, "fine").await;
    let got = r.take(1).await;
    assert_eq!(got[0].id, id);
}

async fn assert_bad_upstream_is_retried(mode: Mode) {
    let (bad, good) = (TestUpstream::start().await, TestUpstream::start().await);
    bad.set_mode(mode.clone());
    let gw = gateway(&bad, &good).await;
    let mut client = SseReader::get(&gw.url("/bad")).await;
    assert_eq!(client.status, 200);
    eventually!(bad.connections() >= 3, "{mode:?}: retried with backoff");
    assert!(metric(&gw.metrics, "sse_gateway_upstream_reconnects_total") >= 2.0);
    // The bad route's client is still connected, waiting for a healthy upstream.
    assert!(client
        .next_within(std::time::Duration::from_millis(100))
        .await
        .is_err());
    good_route_still_works(&gw, &good, "g1").await;
    // Once the upstream behaves, the waiting client gets events.
    bad.set_mode(Mode::Normal);
    let start = tokio::time::Instant::now();
    let got = loop {
        bad.emit("ok", "recovered").await;
        if let Ok(Some(got)) = client
            .next_within(std::time::Duration::from_millis(200))
            .await
        {
            break got;
        }
        assert!(start.elapsed() < PATIENCE, "{mode:?}: never recovered");
    };
    assert_eq!(got.data, "recovered");
}

#[tokio::test]
async fn status_500_is_retried_with_backoff() {
    assert_bad_upstream_is_retried(Mode::Status(500)).await;
}

#[tokio::test]
async fn wrong_content_type_is_retried_with_backoff() {
    assert_bad_upstream_is_retried(Mode::ContentType("text/html")).await;
}

#[tokio::test]
async fn over_long_line_is_an_upstream_error_not_growth() {
    let mut line = b"data: ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 64 * 1024));
    assert_bad_upstream_is_retried(Mode::Raw(line)).await;
}

#[tokio::test]
async fn garbage_bytes_produce_no_events_and_hurt_no_one() {
    let (bad, good) = (TestUpstream::start().await, TestUpstream::start().await);
    bad.set_mode(Mode::Raw(
        b"\x00\x01\xff garbage: \r\r\n::::\x7f\n".to_vec(),
    ));
    let gw = gateway(&bad, &good).await;
    let mut client = SseReader::get(&gw.url("/bad")).await;
    eventually!(bad.open_streams() == 1, "bad upstream subscribed");
    good_route_still_works(&gw, &good, "g1").await;
    assert!(client
        .next_within(std::time::Duration::from_millis(200))
        .await
        .is_err());
    assert_eq!(
        metric(&gw.metrics, "sse_gateway_events_received_total"),
        1.0
    );
}

#[tokio::test]
async fn invalid_utf8_is_replaced_not_forwarded_raw() {
    let (bad, good) = (TestUpstream::start().await, TestUpstream::start().await);
    bad.set_mode(Mode::Raw(b"id: 1\ndata: a\xff\xfeb\n\n".to_vec()));
    let gw = gateway(&bad, &good).await;
    let mut client = SseReader::get(&gw.url("/bad")).await;
    let got = client.take(1).await;
    assert_eq!(got[0].data, "a\u{fffd}\u{fffd}b");
    assert!(client.raw().is_char_boundary(0));
    good_route_still_works(&gw, &good, "g1").await;
}

#[tokio::test]
async fn unreachable_upstream_keeps_clients_waiting_and_others_working() {
    let good = TestUpstream::start().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "{FAST_BACKOFF}routes:\n  - path: /bad\n    upstream: http://{closed}/x\n  - path: /good\n    upstream: {}\n",
        good.url("/good")
    );
    let gw = spawn_gateway(&yaml).await;
    let mut client = SseReader::get(&gw.url("/bad")).await;
    eventually!(
        metric(&gw.metrics, "sse_gateway_upstream_reconnects_total") >= 3.0,
        "reconnect attempts counted"
    );
    assert!(client
        .next_within(std::time::Duration::from_millis(100))
        .await
        .is_err());
    good_route_still_works(&gw, &good, "g1").await;
}
