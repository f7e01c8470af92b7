//! HTTP/2: many event streams share one connection, each with its own cursor, and a
//! stream whose client stops reading is reset without disturbing its siblings.

#![allow(clippy::unwrap_used)]

mod support;

use http_body_util::BodyExt;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_on_one_connection_each_receive_every_event() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route("/events", &upstream.url("/events"), "")).await;
    let client = H2Client::connect(gw.addr).await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        streams.push(client.sse("/events").await);
    }
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 100.0,
        "100 streams subscribed"
    );
    upstream.emit_numbered(1..=20).await;
    let expected: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { ids(&s.take(20).await).join(",") }))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), expected.join(","));
    }
    assert_eq!(upstream.connections(), 1);
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_reset_while_its_siblings_keep_streaming() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        // The ring holds the whole burst: the siblings, read through 64 KiB stream
        // windows, may fall behind it for a moment and must not be evicted, while the
        // stalled stream is cut for being more than `client.queue` behind.
        "client: { queue: 16 }\nreplay: { events: 256 }",
    ))
    .await;
    let client = H2Client::connect(gw.addr).await;
    // Its body is never polled, so its 64 KiB stream window is never released.
    let stalled = client.get("/events", &[]).await;
    assert_eq!(stalled.status(), 200);
    let mut siblings = Vec::new();
    for _ in 0..3 {
        siblings.push(client.sse("/events").await);
    }
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 4.0,
        "all subscribed"
    );

    // 8 KiB events: eight fill the stalled stream's window, then it falls behind.
    let payload = "x".repeat(8 * 1024);
    let readers = tokio::spawn(async move {
        let mut seen = Vec::new();
        for s in &mut siblings {
            seen.push(ids(&s.take(100).await).join(","));
        }
        (seen, siblings)
    });
    upstream.emit_numbered_with(1..=100, &payload).await;
    let expected: Vec<String> = (1..=100).map(|n| n.to_string()).collect();
    let (seen, mut siblings) = readers.await.unwrap();
    for ids in seen {
        assert_eq!(ids, expected.join(","), "siblings get every event");
    }

    eventually!(
        metric(&gw.metrics, "sse_gateway_clients_lagged_total") == 1.0,
        "the stalled stream is cut and counted once"
    );
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 3.0,
        "its subscription is released"
    );
    // The stalled stream was reset: reading it now ends in an error after what was
    // already in flight, well short of everything sent.
    let mut body = stalled.into_body();
    let mut received = 0;
    let reset = loop {
        match tokio::time::timeout(PATIENCE, body.frame()).await.unwrap() {
            Some(Ok(frame)) => received += frame.into_data().map_or(0, |d| d.len()),
            Some(Err(error)) => break Some(error),
            None => break None,
        }
    };
    assert!(reset.is_some(), "stream reset, not ended");
    assert!(
        received < 100 * payload.len() / 2,
        "received {received} bytes"
    );

    // The connection and the siblings live on.
    upstream.emit("101", "after").await;
    for s in &mut siblings {
        assert_eq!(s.take(1).await[0].data, "after");
    }
    assert!(!client.is_closed());
    assert_eq!(upstream.connections(), 1);
}
