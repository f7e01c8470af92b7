//! One upstream connection per source, fanned out to every client.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_receive_identical_sequences_over_one_upstream_connection() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route("/events", &upstream.url("/events"), "")).await;

    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(SseReader::get(&gw.url("/events")).await);
    }
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 200.0,
        "200 clients subscribed"
    );
    upstream.emit_numbered(1..=50).await;

    let expected: Vec<String> = (1..=50).map(|n| n.to_string()).collect();
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(async move { c.take(50).await }));
    }
    for t in tasks {
        let seen = t.await.unwrap();
        assert_eq!(ids(&seen), expected);
        assert!(seen
            .iter()
            .enumerate()
            .all(|(i, e)| e.data == format!("event {}", i + 1)));
    }
    assert_eq!(
        upstream.connections(),
        1,
        "one upstream connection for 200 clients"
    );
    assert_eq!(metric(&gw.metrics, "sse_gateway_upstream_connections"), 1.0);
    assert_eq!(
        metric(&gw.metrics, "sse_gateway_events_received_total"),
        50.0
    );
    eventually!(
        metric(&gw.metrics, "sse_gateway_events_delivered_total") == 10_000.0,
        "every delivery counted"
    );
}

#[tokio::test]
async fn two_template_values_open_exactly_two_upstream_connections() {
    let upstream = TestUpstream::start().await;
    let yaml = format!(
        "routes:\n  - path: /rooms/{{room}}\n    upstream: {}\n",
        upstream.url("/rooms/{room}")
    );
    let gw = spawn_gateway(&yaml).await;
    let mut a1 = SseReader::get(&gw.url("/rooms/a")).await;
    let mut a2 = SseReader::get(&gw.url("/rooms/a")).await;
    let mut b = SseReader::get(&gw.url("/rooms/b%20c")).await;
    eventually!(upstream.open_streams() == 2, "two upstream streams");
    upstream.emit("1", "hello").await;
    for r in [&mut a1, &mut a2, &mut b] {
        assert_eq!(r.take(1).await[0].data, "hello");
    }
    assert_eq!(upstream.connections(), 2);
    // The value is re-encoded into the upstream URL.
    assert_eq!(upstream.open_streams(), 2);
    assert_eq!(gw.hub.source_count(), 2);
}

#[tokio::test]
async fn stream_starts_with_headers_then_retry_before_any_event() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "client: { retry: 1500ms }",
    ))
    .await;
    let mut r = SseReader::get(&gw.url("/events")).await;
    // The response head arrived with no event sent yet: headers are flushed at once.
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert_eq!(r.headers["cache-control"], "no-cache");
    assert_eq!(r.headers["x-accel-buffering"], "no");
    eventually!(
        r.raw() == "retry: 1500\n\n",
        "retry first, got {:?}",
        r.raw()
    );
    upstream.emit("7", "x").await;
    r.take(1).await;
    assert_eq!(r.raw(), "retry: 1500\n\nid: 7\ndata: x\n\n");
}

#[tokio::test]
async fn unknown_path_is_404_and_other_methods_are_405_with_allow() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route("/events", &upstream.url("/events"), "")).await;
    assert_eq!(get(&gw.url("/nope"), "GET").await.status(), 404);
    assert_eq!(get(&gw.url("/events/"), "GET").await.status(), 404);
    let post = get(&gw.url("/events"), "POST").await;
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let head = get(&gw.url("/events"), "HEAD").await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "text/event-stream");
    // HEAD does not open an upstream subscription.
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn invalid_template_value_is_400_and_opens_nothing() {
    let upstream = TestUpstream::start().await;
    let yaml = format!(
        "routes:\n  - path: /rooms/{{room}}\n    upstream: {}\n",
        upstream.url("/rooms/{room}")
    );
    let gw = spawn_gateway(&yaml).await;
    assert_eq!(get(&gw.url("/rooms/a%2Fb"), "GET").await.status(), 400);
    assert_eq!(get(&gw.url("/rooms/a%00"), "GET").await.status(), 400);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test(start_paused = false)]
async fn source_lingers_after_its_last_client_then_closes_upstream() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "upstream: { linger: 300ms }",
    ))
    .await;
    let r = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "upstream opened");
    drop(r);
    // Within the linger a new client reuses the same upstream connection.
    let r = SseReader::get(&gw.url("/events")).await;
    assert_eq!(upstream.connections(), 1);
    drop(r);
    eventually!(gw.hub.source_count() == 0, "source removed after linger");
    eventually!(upstream.open_streams() == 0, "upstream connection closed");
    assert_eq!(metric(&gw.metrics, "sse_gateway_clients"), 0.0);
}
