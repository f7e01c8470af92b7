//! A client that stops reading is cut loose; nobody else waits for it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_loose_without_delaying_others() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "client: { queue: 64 }\nreplay: { events: 128 }",
    ))
    .await;

    // A client that sends its request and then never reads.
    let mut stalled = TcpStream::connect(gw.addr).await.unwrap();
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut readers: Vec<_> = Vec::new();
    for _ in 0..3 {
        readers.push(SseReader::get(&gw.url("/events")).await);
    }
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 4.0,
        "all subscribed"
    );

    // 16 KiB events: a few MiB overflow the stalled client's socket buffers.
    let payload = "x".repeat(16 * 1024);
    let total = 600u32;
    let readers_done = tokio::spawn(async move {
        let mut readers = readers;
        let mut all = Vec::new();
        for r in &mut readers {
            all.push(
                ids(&r.take(total as usize).await)
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
        }
        (all, readers)
    });
    for n in 1..=total {
        upstream.emit(&n.to_string(), &payload).await;
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let expected: Vec<String> = (1..=total).map(|n| n.to_string()).collect();
    let (seen_by_each, _readers) = readers_done.await.unwrap();
    for seen in seen_by_each {
        assert_eq!(seen, expected, "reading clients get every event");
    }
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients_lagged_total") == 1.0,
        "stalled client counted"
    );
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 3.0,
        "stalled client's stream gone: {}",
        gw.metrics.encode()
    );

    // Its connection was closed: draining what was buffered ends in EOF, well short
    // of everything that was sent (the queue bound held).
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0usize;
    loop {
        match tokio::time::timeout(PATIENCE, stalled.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("stalled connection not closed"),
        }
    }
    assert!(
        received < (total as usize) * payload.len() / 2,
        "received {received} bytes"
    );
    assert_eq!(upstream.connections(), 1);
}

/// A client that resumed from far back may be that far behind while it catches up;
/// once it has, `client.queue` is its bound again, for the connection's stall check
/// too. So when it then stops reading it is cut after `queue` events, not after its
/// old backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_resumer_that_stops_reading_is_cut_at_its_queue() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "client: { queue: 16 }\nreplay: { events: 2000 }",
    ))
    .await;
    let mut bystander = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    upstream.emit_numbered(1..=500).await;
    bystander.take(500).await;

    // Resumes 499 events back, reads until caught up, then reads no more.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\nlast-event-id: 1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !String::from_utf8_lossy(&got).contains("id: 500\n") {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("backlog not delivered")
            .unwrap();
        assert!(n > 0, "closed while catching up");
        got.extend_from_slice(&buf[..n]);
    }

    // 400 events of 16 KiB: the socket fills well before 400, and the lag passes
    // 16 long before the 499 it was allowed while resuming.
    let payload = "x".repeat(16 * 1024);
    let reading = tokio::spawn(async move {
        bystander.take(400).await;
        bystander
    });
    upstream.emit_numbered_with(501..=900, &payload).await;
    let _bystander = reading.await.unwrap();
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients_lagged_total") == 1.0,
        "the stalled resumer is cut"
    );
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 1.0,
        "only the bystander is left"
    );
}
