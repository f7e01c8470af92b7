#![allow(clippy::unwrap_used)]
//! SIGTERM/SIGINT: stop accepting, hint every client, end streams, exit within
//! the deadline. Drives the built binary with real signals.

mod support;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::*;

/// A connection that asks for `path` and then never reads.
async fn non_reader(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// A client of `/big` that never reads, once the gateway has more for it than
/// loopback's socket buffers on both ends can hold (~20 MiB).
async fn stuck_client(gw: &GatewayProcess, big: &TestUpstream) -> TcpStream {
    let stuck = non_reader(gw.addr, "/big").await;
    eventually!(big.open_streams() == 1, "non-reader subscribed");
    let payload = "x".repeat(32 * 1024);
    for n in 1..=600 {
        big.emit(&n.to_string(), &payload).await;
    }
    eventually!(
        gw.metric("sse_gateway_events_received_total").await >= 600.0,
        "gateway received the big events"
    );
    stuck
}

fn config(events: &TestUpstream, big: &TestUpstream, drain: &str) -> String {
    format!(
        "drain: {drain}\nclient: {{ queue: 100000 }}\nreplay: {{ events: 100000 }}\nroutes:\n  - path: /events\n    upstream: {}\n  - path: /big\n    upstream: {}\n",
        events.url("/events"),
        big.url("/big")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hints_500_clients_within_the_jitter_window_and_exits_before_the_deadline() {
    let (events, big) = (TestUpstream::start().await, TestUpstream::start().await);
    let mut gw = GatewayProcess::start(
        &config(
            &events,
            &big,
            "{ retry: 1s, retry_jitter: 2s, deadline: 4s }",
        ),
        &[],
    );
    // One client that never reads, with its socket buffers full.
    let _stuck = stuck_client(&gw, &big).await;

    let mut readers = Vec::new();
    for i in 0..500u32 {
        let local = std::net::IpAddr::from([127, 0, 0, 2 + (i % 8) as u8]);
        readers.push(SseReader::request_from(&gw.url("/events"), &[], Some(local)).await);
    }
    eventually!(events.open_streams() == 1, "subscribed");
    events.emit_numbered(1..=3).await;
    for r in &mut readers {
        assert_eq!(ids(&r.take(3).await), ["1", "2", "3"]);
    }

    let sent = Instant::now();
    gw.signal("TERM");
    // New connects are refused within a second.
    loop {
        if std::net::TcpStream::connect(gw.addr).is_err() {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(1), "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every reading client gets a retry hint and a clean end, with nothing after it.
    let mut hints = Vec::new();
    for r in &mut readers {
        assert_eq!(r.rest().await, [], "no event after the drain started");
        let raw = r.raw();
        assert!(raw.ends_with("\n\n"), "{raw:?}");
        hints.push(last_retry(&raw).unwrap_or_else(|| panic!("no hint in {raw:?}")));
    }
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "hints took {:?}",
        sent.elapsed()
    );
    // Spread over [retry, retry + jitter).
    assert!(hints.iter().all(|h| (1000..3000).contains(h)), "{hints:?}");
    let low = hints.iter().filter(|h| **h < 1500).count();
    let high = hints.iter().filter(|h| **h >= 2500).count();
    assert!(low > 50 && high > 50, "not spread: {low} low, {high} high");

    let status = gw.wait_exit(Duration::from_secs(4 + 1));
    assert_eq!(status.code(), Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        sent.elapsed()
    );
    assert!(gw.log_text().contains("drain"), "{}", gw.log_text());
}

#[tokio::test]
async fn second_signal_during_a_drain_exits_at_once_with_a_failure_code() {
    let (events, big) = (TestUpstream::start().await, TestUpstream::start().await);
    let mut gw = GatewayProcess::start(
        &config(
            &events,
            &big,
            "{ retry: 1s, retry_jitter: 1s, deadline: 60s }",
        ),
        &[],
    );
    // A client that never reads, with its socket buffers full, holds the drain
    // open until the deadline.
    let _stuck = stuck_client(&gw, &big).await;
    let admin = gw.admin.unwrap();
    assert_eq!(
        get(&format!("http://{admin}/readyz"), "GET").await.status(),
        200
    );
    gw.signal("TERM");
    // Draining: not ready, still alive (the non-reader holds the drain open).
    eventually!(
        get(&format!("http://{admin}/readyz"), "GET").await.status() == 503,
        "readyz flips"
    );
    assert_eq!(
        get(&format!("http://{admin}/healthz"), "GET")
            .await
            .status(),
        200
    );
    assert!(gw.child.try_wait().unwrap().is_none(), "{}", gw.log_text());

    let sent = Instant::now();
    gw.signal("INT");
    let status = gw.wait_exit(Duration::from_secs(2));
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_ne!(status.code(), Some(0));
}
