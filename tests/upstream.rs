//! Upstream outages, reconnects with Last-Event-ID, heartbeats and 204.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn clients_stay_connected_through_an_upstream_restart_and_see_a_continuous_sequence() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "upstream: { backoff: { initial: 50ms, max: 200ms } }\nheartbeat: 100ms",
    ))
    .await;
    let mut a = SseReader::get(&gw.url("/events")).await;
    let mut b = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    upstream.emit_numbered(1..=3).await;
    assert_eq!(ids(&a.take(3).await), ["1", "2", "3"]);

    upstream.stop();
    // The upstream is down; these are kept by it and must arrive after the restart.
    upstream.emit_numbered(4..=6).await;
    eventually!(
        metric(&gw.metrics, "sse_gateway_upstream_connections") == 0.0,
        "upstream loss noticed"
    );
    // Clients are still connected and get heartbeats while the upstream is down.
    let before = a.raw().matches(": heartbeat").count();
    eventually!(
        a.raw().matches(": heartbeat").count() > before,
        "heartbeat during outage"
    );
    assert!(!a.ended());

    upstream.restart().await;
    upstream.emit_numbered(7..=8).await;
    assert_eq!(ids(&a.take(5).await), ["4", "5", "6", "7", "8"]);
    let all_b = b.take(8).await;
    assert_eq!(ids(&all_b), ["1", "2", "3", "4", "5", "6", "7", "8"]);

    let resumed_with = upstream.last_event_ids();
    assert_eq!(resumed_with.first(), Some(&None));
    assert!(
        resumed_with.contains(&Some("3".to_owned())),
        "reconnect carried Last-Event-ID 3: {resumed_with:?}"
    );
    assert!(metric(&gw.metrics, "sse_gateway_upstream_reconnects_total") >= 1.0);
}

#[tokio::test]
async fn idle_stream_gets_heartbeat_comments() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "heartbeat: 100ms",
    ))
    .await;
    let r = SseReader::get(&gw.url("/events")).await;
    eventually!(
        r.raw().matches(": heartbeat\n\n").count() >= 3,
        "heartbeats: {:?}",
        r.raw()
    );
}

#[tokio::test]
async fn heartbeat_waits_for_silence() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "heartbeat: 400ms",
    ))
    .await;
    let mut r = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    // Events every 100 ms keep the stream busy: no heartbeat in between.
    for n in 1..=8 {
        upstream.emit(&n.to_string(), "busy").await;
        r.take(1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!r.raw().contains("heartbeat"), "{}", r.raw());
    // Then silence: the heartbeats come back, and keep coming.
    eventually!(
        r.raw().matches(": heartbeat\n\n").count() >= 2,
        "heartbeats after the events stopped: {:?}",
        r.raw()
    );
}

#[tokio::test]
async fn upstream_204_ends_client_streams_and_new_subscribers_get_204() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "upstream: { backoff: { initial: 20ms, max: 50ms } }",
    ))
    .await;
    let mut r = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    upstream.set_mode(Mode::Status(204));
    upstream.stop();
    upstream.restart().await;
    // The stream ends cleanly (no error, no hang).
    assert_eq!(r.rest().await, []);
    assert_eq!(get(&gw.url("/events"), "GET").await.status(), 204);
}
