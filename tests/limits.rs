//! Client limits (total, per route, per IP), how an over-limit subscriber is answered,
//! the connection timeouts and header size cap, and per-route CORS.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::IpAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

fn two_routes(upstream: &TestUpstream, extra: &str, b_extra: &str) -> String {
    format!(
        "{extra}\nroutes:\n  - path: /a\n    upstream: {}\n  - path: /b\n    upstream: {}\n{b_extra}",
        upstream.url("/a"),
        upstream.url("/b")
    )
}

/// The subscriber was told to come back: 200, an event stream holding only the
/// retry hint, and the end.
async fn assert_retry_and_end(mut r: SseReader, retry_ms: u64) {
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert_eq!(r.rest().await, []);
    assert!(r.ended());
    assert_eq!(r.raw(), format!("retry: {retry_ms}\n\n"));
}

/// Every reader receives one fresh event.
async fn all_receive(upstream: &TestUpstream, readers: &mut [&mut SseReader], id: &str) {
    upstream.emit(id, "live").await;
    for r in readers.iter_mut() {
        assert_eq!(r.take(1).await[0].id, id);
    }
}

#[tokio::test]
async fn over_max_clients_the_next_subscriber_is_told_to_retry_and_comes_back_once_a_slot_frees() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/a",
        &upstream.url("/a"),
        "limits: { max_clients: 2 }\nclient: { retry: 1500ms }",
    ))
    .await;
    let mut first = SseReader::get(&gw.url("/a")).await;
    let second = SseReader::get(&gw.url("/a")).await;
    assert_retry_and_end(SseReader::get(&gw.url("/a")).await, 1500).await;
    assert_eq!(
        metric(&gw.metrics, "sse_gateway_limit_rejections_total"),
        1.0
    );
    eventually!(upstream.open_streams() == 1, "upstream opened");
    let mut second = second;
    all_receive(&upstream, &mut [&mut first, &mut second], "1").await;

    // A slot frees; the client that was turned away comes back, as EventSource
    // would after the retry hint, and is served.
    drop(second);
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 1.0,
        "slot given back"
    );
    let mut back = SseReader::get(&gw.url("/a")).await;
    assert_eq!(back.status, 200);
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 2.0,
        "came back"
    );
    all_receive(&upstream, &mut [&mut first, &mut back], "2").await;
}

#[tokio::test]
async fn over_max_clients_per_route_only_that_route_turns_subscribers_away() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&two_routes(
        &upstream,
        "limits: { max_clients_per_route: 1 }",
        "",
    ))
    .await;
    let mut a = SseReader::get(&gw.url("/a")).await;
    assert_retry_and_end(SseReader::get(&gw.url("/a")).await, 2000).await;
    let mut b = SseReader::get(&gw.url("/b")).await;
    assert_eq!(b.status, 200);
    eventually!(upstream.open_streams() == 2, "both upstreams opened");
    all_receive(&upstream, &mut [&mut a, &mut b], "1").await;
    assert_eq!(
        metric(&gw.metrics, "sse_gateway_limit_rejections_total"),
        1.0
    );
    // The breakdown names the cap.
    let m = scrape(gw.admin).await;
    let by_reason = "sse_gateway_limit_rejections_by_reason_total";
    assert_eq!(
        sample(&m, by_reason, &[("reason", "max_clients_per_route")]),
        Some(1.0)
    );
    assert_eq!(sample(&m, by_reason, &[("reason", "max_clients")]), None);
}

#[tokio::test]
async fn over_max_clients_per_ip_that_address_is_turned_away_and_others_are_not() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/a",
        &upstream.url("/a"),
        "limits: { max_clients_per_ip: 2 }",
    ))
    .await;
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let there: IpAddr = "127.0.0.2".parse().unwrap();
    let url = gw.url("/a");
    let mut one = SseReader::request_from(&url, &[], Some(here)).await;
    let mut two = SseReader::request_from(&url, &[], Some(here)).await;
    assert_retry_and_end(SseReader::request_from(&url, &[], Some(here)).await, 2000).await;
    let mut other = SseReader::request_from(&url, &[], Some(there)).await;
    assert_eq!(other.status, 200);
    eventually!(upstream.open_streams() == 1, "upstream opened");
    all_receive(&upstream, &mut [&mut one, &mut two, &mut other], "1").await;
}

#[tokio::test]
async fn over_limit_503_answers_with_retry_after_and_a_route_may_choose_retry() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&two_routes(
        &upstream,
        "limits: { max_clients_per_route: 1, over_limit: 503 }\nclient: { retry: 3s }",
        "    over_limit: retry\n",
    ))
    .await;
    let mut a = SseReader::get(&gw.url("/a")).await;
    let refused = get(&gw.url("/a"), "GET").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "3");
    let mut b = SseReader::get(&gw.url("/b")).await;
    assert_retry_and_end(SseReader::get(&gw.url("/b")).await, 3000).await;
    eventually!(upstream.open_streams() == 2, "both upstreams opened");
    all_receive(&upstream, &mut [&mut a, &mut b], "1").await;
    assert_eq!(
        metric(&gw.metrics, "sse_gateway_limit_rejections_total"),
        2.0
    );
}

/// Reads until the peer closes; returns what came. Panics if it stays open.
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection not closed; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

#[tokio::test]
async fn a_request_head_that_dribbles_is_closed_after_the_header_read_timeout() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/a",
        &upstream.url("/a"),
        "limits: { header_read_timeout: 200ms }",
    ))
    .await;
    let mut streaming = SseReader::get(&gw.url("/a")).await;
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    read_to_close(&mut slow).await;
    assert!(started.elapsed() < PATIENCE / 2);
    eventually!(upstream.open_streams() == 1, "upstream opened");
    all_receive(&upstream, &mut [&mut streaming], "1").await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/a",
        &upstream.url("/a"),
        "limits: { max_header_size: 8KiB }",
    ))
    .await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let big = "x".repeat(10 * 1024);
    tcp.write_all(format!("GET /a HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    // A normal head is still fine.
    assert_eq!(SseReader::get(&gw.url("/a")).await.status, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_stream_is_not() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/a",
        &upstream.url("/a"),
        "limits: { idle_timeout: 300ms }",
    ))
    .await;
    let mut streaming = SseReader::get(&gw.url("/a")).await;
    // An HTTP/1.1 request that ends, then nothing on the kept-alive connection.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
    // An idle HTTP/2 connection gets GOAWAY and is closed too.
    let h2 = H2Client::connect(gw.addr).await;
    let resp = h2.get("/nope", &[]).await;
    assert_eq!(resp.status(), 404);
    drop(resp);
    eventually!(h2.is_closed(), "idle h2 connection closed");
    // The stream, open all along, outlived both.
    eventually!(upstream.open_streams() == 1, "upstream opened");
    all_receive(&upstream, &mut [&mut streaming], "1").await;
}

// === CORS ===

/// A request with `headers`, answered in full.
async fn request(url: &str, method: &str, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let uri: http::Uri = url.parse().unwrap();
    let tcp = TcpStream::connect(uri.authority().unwrap().as_str())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(uri.path())
        .header("host", "x");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    // An event stream would not end: take what came with the head only.
    let body = if parts
        .headers
        .get("content-type")
        .is_some_and(|v| v == "text/event-stream")
    {
        Bytes::new()
    } else {
        body.collect().await.unwrap().to_bytes()
    };
    http::Response::from_parts(parts, body)
}

const APP: &str = "https://app.example.com";

async fn cors_gateway(upstream: &TestUpstream) -> TestGateway {
    spawn_gateway(&format!(
        "routes:\n  - path: /a\n    upstream: {}\n    cors: {{ origins: [\"{APP}\"], credentials: true }}\n  - path: /any\n    upstream: {}\n    cors: {{ origins: [\"*\"] }}\n  - path: /none\n    upstream: {}\n",
        upstream.url("/a"),
        upstream.url("/any"),
        upstream.url("/none"),
    ))
    .await
}

#[tokio::test]
async fn a_cors_preflight_from_an_allowed_origin_gets_204_with_the_allowances() {
    let upstream = TestUpstream::start().await;
    let gw = cors_gateway(&upstream).await;
    let preflight = [
        ("origin", APP),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "last-event-id"),
    ];
    let r = request(&gw.url("/a"), "OPTIONS", &preflight).await;
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, HEAD");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("last-event-id"),
        "{h:?}"
    );
    assert!(h.contains_key("access-control-max-age"));
    assert_eq!(h["vary"], "origin");
    assert_eq!(
        upstream.connections(),
        0,
        "a preflight subscribes to nothing"
    );

    // An origin not on the list gets no CORS headers at all.
    let r = request(
        &gw.url("/a"),
        "OPTIONS",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert!(
        !r.headers()
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")),
        "{:?}",
        r.headers()
    );
}

#[tokio::test]
async fn a_cross_origin_stream_carries_cors_headers_only_for_allowed_origins() {
    let upstream = TestUpstream::start().await;
    let gw = cors_gateway(&upstream).await;
    let r = request(&gw.url("/a"), "GET", &[("origin", APP)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["vary"], "origin");

    let r = request(&gw.url("/a"), "GET", &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // `*`: any origin, answered with `*` and no credentials.
    let r = request(&gw.url("/any"), "GET", &[("origin", "https://x.example")]).await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));
}

#[tokio::test]
async fn options_on_a_route_without_cors_stays_405() {
    let upstream = TestUpstream::start().await;
    let gw = cors_gateway(&upstream).await;
    let r = request(
        &gw.url("/none"),
        "OPTIONS",
        &[("origin", APP), ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = request(&gw.url("/none"), "GET", &[("origin", APP)]).await;
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}
