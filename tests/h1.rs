//! HTTP/1.1 as clients speak it on one connection: kept-alive and pipelined
//! requests before a stream, `Connection: close`, HTTP/1.0 and HEAD, and a stream
//! whose client stops reading for a while and then takes everything, byte-exact.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use support::*;

async fn gateway(extra: &str) -> (TestUpstream, TestGateway) {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route("/events", &upstream.url("/events"), extra)).await;
    (upstream, gw)
}

/// Reads from `tcp` until `done` holds for what came, or panics after PATIENCE.
async fn read_until(tcp: &mut TcpStream, got: &mut Vec<u8>, done: impl Fn(&str) -> bool) {
    let mut buf = [0u8; 16 * 1024];
    let reading = async {
        while !done(&String::from_utf8_lossy(got)) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..n]);
        }
    };
    if timeout(PATIENCE, reading).await.is_err() {
        panic!("not in time; got {:?}", String::from_utf8_lossy(got));
    }
}

#[tokio::test]
async fn a_kept_alive_connection_gets_a_404_then_a_stream() {
    let (upstream, gw) = gateway("").await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = |path: &str| {
        Request::get(path)
            .header("host", "gw")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let missing = sender.send_request(request("/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-length"], "10");
    assert!(missing.headers().contains_key("date"));
    let body = missing.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"not found\n");

    // The same connection, now a stream.
    sender.ready().await.unwrap();
    let stream = sender.send_request(request("/events")).await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut reader = SseReader::from_response(stream, Vec::new());
    eventually!(upstream.open_streams() == 1, "upstream opened");
    upstream.emit_numbered(1..=3).await;
    assert_eq!(ids(&reader.take(3).await), ["1", "2", "3"]);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_up_to_the_stream() {
    let (upstream, gw) = gateway("").await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(
        b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: gw\r\n\r\n\
          GET /events HTTP/1.1\r\nHost: gw\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut tcp, &mut got, |s| s.contains("retry: ")).await;
    eventually!(upstream.open_streams() == 1, "upstream opened");
    upstream.emit("7", "seven").await;
    read_until(&mut tcp, &mut got, |s| s.contains("data: seven\n\n")).await;
    let text = String::from_utf8_lossy(&got);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    // The request after the stream is never answered: the stream doesn't end.
    assert_eq!(statuses, ["404", "404", "200"], "{text:?}");
    assert!(text.contains("transfer-encoding: chunked"));
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let (_upstream, gw) = gateway("").await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /nope HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    timeout(PATIENCE, tcp.read_to_end(&mut got))
        .await
        .expect("connection not closed")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nnot found\n"), "{text:?}");
}

#[tokio::test]
async fn http_1_0_and_head_are_still_answered() {
    let (upstream, gw) = gateway("").await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /events HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut tcp, &mut got, |s| s.contains("retry: ")).await;
    eventually!(upstream.open_streams() == 1, "upstream opened");
    upstream.emit("1", "one").await;
    // HTTP/1.0 has no chunks: the body is the events themselves, until close.
    read_until(&mut tcp, &mut got, |s| s.contains("id: 1\ndata: one\n\n")).await;
    assert!(String::from_utf8_lossy(&got).contains(" 200 OK\r\n"));

    let head = get(&gw.url("/events"), "HEAD").await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "text/event-stream");
    assert!(head.body().is_empty());
}

/// 16 KiB events, far more than the socket buffers hold, while the client reads
/// nothing: the gateway's writes block part-way through chunks. When the client
/// reads again it gets every event in order, and a strict HTTP/1.1 client finds
/// every chunk well formed.
#[tokio::test]
async fn a_client_that_pauses_gets_every_byte_when_it_reads_again() {
    const EVENTS: u32 = 800;
    let (upstream, gw) = gateway("client: { queue: 2000 }\nreplay: { events: 2000 }").await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/events")
        .header("host", "gw")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    eventually!(upstream.open_streams() == 1, "upstream opened");
    let payload = "x".repeat(16 * 1024);
    upstream.emit_numbered_with(1..=EVENTS, &payload).await;
    // The body is not read for a while: hyper stops reading the socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut body = response.into_body();
    let mut raw = Vec::new();
    let want = format!("id: {EVENTS}\n");
    let reading = async {
        while !String::from_utf8_lossy(&raw[raw.len().saturating_sub(20 * 1024)..]).contains(&want)
        {
            let frame = body.frame().await.expect("stream ended").unwrap();
            if let Ok(data) = frame.into_data() {
                raw.extend_from_slice(&data);
            }
        }
    };
    timeout(PATIENCE, reading)
        .await
        .expect("not every event came");
    let text = String::from_utf8(raw).unwrap();
    let seen: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(seen, (1..=EVENTS).collect::<Vec<_>>());
    assert_eq!(
        text.matches(&format!("data: {payload}\n\n")).count(),
        EVENTS as usize
    );
    assert_eq!(metric(&gw.metrics, "sse_gateway_clients"), 1.0);
}

/// When the drain starts, an idle connection closes at once, and a request whose head
/// is already on its way is read to the end and answered with the drain's retry hint.
#[tokio::test]
async fn at_the_drain_idle_connections_close_and_a_half_sent_head_is_answered() {
    let (_upstream, gw) = gateway("drain: { retry: 3s, retry_jitter: 0ms }").await;
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    let mut half = TcpStream::connect(gw.addr).await.unwrap();
    half.write_all(b"GET /events HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    // Both connections are in, and the half-sent head has been read by the gateway
    // (a head still unread in the socket counts as nothing received, as in hyper).
    eventually!(
        metric(&gw.metrics, "sse_gateway_connections") == 2.0,
        "both accepted"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.drain.start(Duration::from_secs(5));

    let mut got = Vec::new();
    timeout(PATIENCE, idle.read_to_end(&mut got))
        .await
        .expect("idle connection not closed")
        .unwrap();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    half.write_all(b"\r\n").await.unwrap();
    let mut got = Vec::new();
    timeout(PATIENCE, half.read_to_end(&mut got))
        .await
        .expect("answered connection not closed")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.contains("content-type: text/event-stream"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nretry: 3000\n\n"), "{text:?}");
}
