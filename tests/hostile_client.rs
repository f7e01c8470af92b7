//! Hostile clients on real sockets: malformed HTTP, bad paths and template values, bad
//! `Last-Event-ID`s, abrupt resets, and floods of idle and slowloris connections. Each
//! gets a clear 4xx or a close, and a streaming client on another connection keeps
//! receiving events throughout. docs/hostile-input.md lists every case with its answer.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use support::*;

/// A gateway with an exact and a template route, and a client streaming `/events`
/// whose events prove, after each hostile act, that nobody else was hurt.
struct Bystander {
    upstream: TestUpstream,
    gw: TestGateway,
    reader: SseReader,
    next_id: u32,
}

impl Bystander {
    async fn start(extra_yaml: &str) -> Self {
        let upstream = TestUpstream::start().await;
        let yaml = format!(
            "{extra_yaml}\nroutes:\n  - path: /events\n    upstream: {}\n  - path: /rooms/{{room}}\n    upstream: {}\n",
            upstream.url("/events"),
            upstream.url("/rooms/{room}"),
        );
        let gw = spawn_gateway(&yaml).await;
        let reader = SseReader::get(&gw.url("/events")).await;
        assert_eq!(reader.status, 200);
        eventually!(upstream.open_streams() == 1, "bystander's source is open");
        let mut bystander = Self {
            upstream,
            gw,
            reader,
            next_id: 0,
        };
        bystander.still_receives("at start").await;
        bystander
    }

    /// A fresh event reaches the streaming client.
    async fn still_receives(&mut self, after: &str) {
        self.next_id += 1;
        let id = format!("b{}", self.next_id);
        self.upstream.emit(&id, "still here").await;
        let seen = self
            .reader
            .next()
            .await
            .unwrap_or_else(|| panic!("bystander's stream ended {after}"));
        assert_eq!(seen.id, id, "bystander missed an event {after}");
    }

    fn clients(&self) -> f64 {
        metric(&self.gw.metrics, "sse_gateway_clients")
    }
}

/// What the gateway did with some raw bytes.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    /// The status code, if a response head arrived.
    status: Option<u16>,
    /// Whether the gateway closed (or reset) the connection afterwards.
    closed: bool,
}

/// Writes `request`, then reads until the gateway closes or `wait` passes. A `200`
/// is a stream that stays open, so it returns as soon as that head is in.
async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> Reply {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The gateway may close before reading it all; that is an answer too.
    let _ = tcp.write_all(request).await;
    if request.is_empty() {
        // Nothing to say: half-close at once.
        let _ = tcp.shutdown().await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        if status_of(&got) == Some(200) && got.windows(4).any(|w| w == b"\r\n\r\n") {
            break false;
        }
    };
    Reply {
        status: status_of(&got),
        closed,
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\r').next()?;
    let code = line.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// `GET target` with `headers`, asking the gateway to close after answering.
fn get_request(target: &[u8], headers: &[&[u8]]) -> Vec<u8> {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n");
    for header in headers {
        request.extend_from_slice(header);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

/// Runs every `(name, request, expected)` case at once and checks each reply.
async fn assert_replies(addr: SocketAddr, cases: Vec<(&'static str, Vec<u8>, Reply)>) {
    let mut set = JoinSet::new();
    for (name, request, expected) in cases {
        set.spawn(async move {
            let reply = exchange(addr, &request, Duration::from_secs(3)).await;
            (name, reply, expected)
        });
    }
    let mut wrong = Vec::new();
    while let Some(result) = set.join_next().await {
        let (name, reply, expected) = result.unwrap();
        if reply != expected {
            wrong.push(format!("{name}: got {reply:?}, expected {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
}

fn answered(status: u16) -> Reply {
    Reply {
        status: Some(status),
        closed: true,
    }
}

fn streaming() -> Reply {
    Reply {
        status: Some(200),
        closed: false,
    }
}

fn closed_silently() -> Reply {
    Reply {
        status: None,
        closed: true,
    }
}

#[tokio::test]
async fn malformed_requests_get_400_or_a_close_and_streams_go_on() {
    let mut bystander = Bystander::start("").await;
    let many_headers: Vec<u8> = (0..200)
        .flat_map(|i| format!("x-h{i}: v\r\n").into_bytes())
        .collect();
    let huge_header = [b"x-big: ".as_slice(), &vec![b'a'; 512 * 1024]].concat();
    let cases = vec![
        ("not HTTP", b"HELLO\r\n\r\n".to_vec(), answered(400)),
        ("no version", b"GET /events\r\n\r\n".to_vec(), answered(400)),
        (
            "unknown version",
            b"GET /events HTTP/1.7\r\nHost: gw\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "control byte in method",
            b"G\x01T /events HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "space in target",
            b"GET /ev ents HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "NUL in target",
            b"GET /ev\0ents HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "HTTP/1.1 without Host (RFC 9112 3.2)",
            b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "two Host headers",
            b"GET /events HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "header without colon",
            b"GET /events HTTP/1.1\r\nHost gw\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "space before colon",
            b"GET /events HTTP/1.1\r\nHost : gw\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "NUL in header value",
            b"GET /events HTTP/1.1\r\nHost: gw\r\nX-A: a\0b\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "obsolete line folding",
            b"GET /events HTTP/1.1\r\nHost: gw\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "non-token header name",
            b"GET /events HTTP/1.1\r\nHost: gw\r\n\xff\xfe: x\r\n\r\n".to_vec(),
            answered(400),
        ),
        (
            "conflicting content-length",
            b"GET /events HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
                .to_vec(),
            answered(400),
        ),
        (
            "transfer-encoding not ending in chunked",
            b"GET /events HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                .to_vec(),
            answered(400),
        ),
        (
            "200 headers",
            [
                b"GET /events HTTP/1.1\r\nHost: gw\r\n".as_slice(),
                &many_headers,
                b"\r\n",
            ]
            .concat(),
            answered(431),
        ),
        (
            "512 KiB header",
            [
                b"GET /events HTTP/1.1\r\nHost: gw\r\n".as_slice(),
                &huge_header,
                b"\r\n\r\n",
            ]
            .concat(),
            answered(431),
        ),
        (
            "TLS ClientHello on the plain port",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
            answered(400),
        ),
        (
            "HTTP/2 preface then garbage",
            [
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            ]
            .concat(),
            closed_silently(),
        ),
        ("connect then FIN", Vec::new(), closed_silently()),
    ];
    assert_replies(bystander.gw.addr, cases).await;
    bystander.still_receives("after malformed requests").await;
    assert_eq!(bystander.clients(), 1.0);
}

#[tokio::test]
async fn invalid_paths_and_template_values_get_4xx_and_streams_go_on() {
    let mut bystander = Bystander::start("").await;
    let long_value = vec![b'a'; 4 * 1024];
    let over_long_value = vec![b'a'; 16 * 1024];
    let long_path = vec![b'a'; 64 * 1024];
    let cases = vec![
        (
            "encoded slash",
            get_request(b"/rooms/a%2Fb", &[]),
            answered(400),
        ),
        (
            "encoded slash, lower case",
            get_request(b"/rooms/a%2fb", &[]),
            answered(400),
        ),
        ("encoded NUL", get_request(b"/rooms/a%00b", &[]), answered(400)),
        ("encoded LF", get_request(b"/rooms/a%0Ab", &[]), answered(400)),
        ("encoded DEL", get_request(b"/rooms/a%7Fb", &[]), answered(400)),
        ("encoded C1 NEL", get_request(b"/rooms/a%C2%85b", &[]), answered(400)),
        ("invalid UTF-8", get_request(b"/rooms/%FF", &[]), answered(400)),
        ("truncated UTF-8", get_request(b"/rooms/%C3", &[]), answered(400)),
        ("dot-dot value", get_request(b"/rooms/..", &[]), answered(400)),
        ("encoded dot-dot", get_request(b"/rooms/%2E%2e", &[]), answered(400)),
        ("dot value", get_request(b"/rooms/.", &[]), answered(400)),
        ("empty value", get_request(b"/rooms/", &[]), answered(404)),
        ("extra segment", get_request(b"/rooms/a/b", &[]), answered(404)),
        // Lenient, as nginx is: raw UTF-8 is read as if percent-encoded, and the
        // value is percent-encoded into the upstream URL.
        (
            "raw UTF-8 value",
            get_request(b"/rooms/caf\xc3\xa9", &[]),
            streaming(),
        ),
        (
            "raw invalid UTF-8 byte",
            get_request(b"/rooms/a\xffb", &[]),
            answered(400),
        ),
        ("raw DEL byte", get_request(b"/rooms/a\x7fb", &[]), answered(400)),
        (
            "4 KiB template value",
            get_request(&[b"/rooms/".as_slice(), &long_value].concat(), &[]),
            streaming(),
        ),
        // Over limits.max_header_size (16 KiB by default), which bounds the request
        // line and headers together.
        (
            "16 KiB template value",
            get_request(&[b"/rooms/".as_slice(), &over_long_value].concat(), &[]),
            answered(431),
        ),
        (
            "64 KiB path",
            get_request(&[b"/".as_slice(), &long_path].concat(), &[]),
            answered(431),
        ),
        (
            "asterisk-form target",
            b"OPTIONS * HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".to_vec(),
            answered(404),
        ),
        (
            "authority-form target",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n".to_vec(),
            answered(404),
        ),
    ];
    assert_replies(bystander.gw.addr, cases).await;
    bystander.still_receives("after invalid paths").await;
}

#[tokio::test]
async fn bad_last_event_ids_are_400_and_streams_go_on() {
    let mut bystander = Bystander::start("").await;
    let at_limit = format!("last-event-id: {}", "7".repeat(1024));
    let over_limit = format!("last-event-id: {}", "7".repeat(1025));
    let query_over = format!("/events?lastEventId={}", "7".repeat(1025));
    let cases = vec![
        (
            "1024 bytes: the limit",
            get_request(b"/events", &[at_limit.as_bytes()]),
            streaming(),
        ),
        (
            "1025 bytes",
            get_request(b"/events", &[over_limit.as_bytes()]),
            answered(400),
        ),
        (
            "1025 bytes in the query",
            get_request(query_over.as_bytes(), &[]),
            answered(400),
        ),
        (
            "tab",
            get_request(b"/events", &[b"last-event-id: a\tb"]),
            answered(400),
        ),
        (
            "escape",
            get_request(b"/events", &[b"last-event-id: a\x1b[2Jb"]),
            answered(400),
        ),
        (
            "DEL",
            get_request(b"/events", &[b"last-event-id: a\x7fb"]),
            answered(400),
        ),
        (
            "NUL",
            get_request(b"/events", &[b"last-event-id: a\0b"]),
            answered(400),
        ),
        (
            "not UTF-8",
            get_request(b"/events", &[b"last-event-id: \xff\xfe"]),
            answered(400),
        ),
        (
            "encoded NUL in the query",
            get_request(b"/events?lastEventId=a%00b", &[]),
            answered(400),
        ),
        (
            "encoded LF in the query",
            get_request(b"/events?lastEventId=a%0Ab", &[]),
            answered(400),
        ),
        (
            "encoded C1 in the query",
            get_request(b"/events?lastEventId=a%C2%9Bb", &[]),
            answered(400),
        ),
    ];
    assert_replies(bystander.gw.addr, cases).await;
    bystander.still_receives("after bad Last-Event-IDs").await;
}

/// Opens a raw HTTP/1.1 stream on `path` and waits for its `200` head.
async fn open_raw_stream(addr: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&get_request(path.as_bytes(), &[]))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(status_of(&got), Some(200));
    tcp
}

/// Drops `tcp` with SO_LINGER 0, so the peer gets a RST instead of a FIN.
fn reset(tcp: TcpStream) {
    tcp.set_zero_linger().unwrap();
    drop(tcp);
}

#[tokio::test]
async fn abrupt_resets_mid_stream_free_their_slots_and_streams_go_on() {
    let mut bystander = Bystander::start("").await;
    let addr = bystander.gw.addr;

    // HTTP/1.1: 50 streams reset by their clients mid-stream.
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(open_raw_stream(addr, "/events").await);
    }
    eventually!(bystander.clients() == 51.0, "51 streams open");
    bystander.still_receives("with 50 more streams").await;
    streams.into_iter().for_each(reset);
    // The gateway learns of a reset when it next writes: keep events flowing.
    let start = Instant::now();
    while bystander.clients() > 1.0 {
        assert!(start.elapsed() < PATIENCE, "reset streams never freed");
        bystander.still_receives("while streams were reset").await;
    }

    // Resets before a response: mid-head, and right after a complete request.
    for request in [
        b"GET /events HTTP/1.1\r\nHost: g".as_slice(),
        b"GET /events HTTP/1.1\r\nHost: gw\r\n\r\n".as_slice(),
    ] {
        for _ in 0..20 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(request).await.unwrap();
            reset(tcp);
        }
    }
    let start = Instant::now();
    while bystander.clients() > 1.0 {
        assert!(start.elapsed() < PATIENCE, "early resets left streams open");
        bystander.still_receives("after early resets").await;
    }
    bystander.still_receives("after early resets").await;

    // HTTP/2 (cleartext, prior knowledge): 10 streams on one connection; 5 are
    // cancelled (RST_STREAM), the other 5 and the bystander go on.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let request = http::Request::get(format!("http://{addr}/events"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.clone().send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    eventually!(bystander.clients() == 11.0, "10 HTTP/2 streams open");
    let kept: Vec<_> = bodies.split_off(5);
    drop(bodies);
    eventually!(bystander.clients() == 6.0, "cancelled HTTP/2 streams freed");
    bystander.still_receives("after RST_STREAM").await;
    let id = format!("b{}", bystander.next_id);
    for mut body in kept {
        let mut text = String::new();
        while !text.contains(&format!("id: {id}\n")) {
            let frame = timeout(PATIENCE, body.frame())
                .await
                .expect("a frame in time")
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

/// One connection's fate: when it was opened and, once the gateway closed it, when.
#[derive(Clone, Copy, Debug)]
struct Fate {
    opened: Instant,
    closed: Option<Instant>,
}

/// Connects from `ip` (so thousands of sockets spread over 127.0.0.x).
async fn connect_from(ip: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Waits until the gateway closes `tcp` (EOF or reset), and records when.
async fn watch_until_closed(mut tcp: TcpStream, fate: Arc<Mutex<Fate>>) {
    let mut buf = [0u8; 256];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    fate.lock().unwrap().closed = Some(Instant::now());
}

const IDLE: usize = 2000;
const SLOWLORIS: usize = 200;
/// Short enough for a fast test, long enough to check a normal client while the
/// flood is still open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_do_not_delay_others_and_are_closed_after_the_header_timeout(
) {
    let mut bystander = Bystander::start("limits:\n  header_read_timeout: 3s\n").await;
    let addr = bystander.gw.addr;
    let mut watchers = JoinSet::new();
    let mut fates = Vec::new();

    // 2,000 connections that send nothing, from 127.0.0.2..=127.0.0.9.
    let mut idle = JoinSet::new();
    for i in 0..IDLE {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8));
        idle.spawn(async move { (connect_from(ip, addr).await, Instant::now()) });
        // Bounded concurrency keeps the listen backlog from overflowing.
        if idle.len() >= 64 {
            let (tcp, opened) = idle.join_next().await.unwrap().unwrap();
            let fate = Arc::new(Mutex::new(Fate {
                opened,
                closed: None,
            }));
            fates.push(Arc::clone(&fate));
            watchers.spawn(watch_until_closed(tcp, fate));
        }
    }
    while let Some(joined) = idle.join_next().await {
        let (tcp, opened) = joined.unwrap();
        let fate = Arc::new(Mutex::new(Fate {
            opened,
            closed: None,
        }));
        fates.push(Arc::clone(&fate));
        watchers.spawn(watch_until_closed(tcp, fate));
    }

    // 200 slowloris clients: a request line and a header started, then one byte every
    // 100 ms, never finishing the head.
    let mut dribblers = JoinSet::new();
    for i in 0..SLOWLORIS {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + (i % 4) as u8));
        let tcp = connect_from(ip, addr).await;
        let fate = Arc::new(Mutex::new(Fate {
            opened: Instant::now(),
            closed: None,
        }));
        fates.push(Arc::clone(&fate));
        dribblers.spawn(async move {
            let (mut read, mut write) = tcp.into_split();
            let dribble = async {
                if write
                    .write_all(b"GET /events HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if write.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            };
            let closed = async {
                let mut buf = [0u8; 256];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            };
            tokio::select! {
                () = closed => {}
                () = async { dribble.await; std::future::pending::<()>().await } => {}
            }
            fate.lock().unwrap().closed = Some(Instant::now());
        });
    }
    let flood_ready = Instant::now();
    let first_opened = fates
        .iter()
        .map(|f| f.lock().unwrap().opened)
        .min()
        .unwrap();
    eprintln!(
        "flood of {} connections open in {:?}",
        fates.len(),
        flood_ready - first_opened
    );

    // While they are all open, a new client subscribes to a new source (a new
    // upstream connection, too) and receives its first event within 1 s.
    let start = Instant::now();
    let mut fresh = SseReader::get(&bystander.gw.url("/rooms/fresh")).await;
    assert_eq!(fresh.status, 200);
    eventually!(
        bystander.upstream.open_streams() == 2,
        "the fresh room's source is open"
    );
    bystander.upstream.emit("f1", "fresh").await;
    let first = fresh.take(1).await;
    let took = start.elapsed();
    assert_eq!(first[0].id, "f1");
    assert!(
        took < Duration::from_secs(1),
        "subscribe + first event took {took:?}"
    );
    let _ = bystander.reader.next().await; // the bystander got "f1" too
    bystander.still_receives("during the flood").await;
    let still_open = fates
        .iter()
        .filter(|f| f.lock().unwrap().closed.is_none())
        .count();
    assert!(
        Instant::now() < first_opened + HEADER_READ_TIMEOUT,
        "setup too slow to check the flood while it is open; raise the timeout"
    );
    assert_eq!(
        still_open,
        IDLE + SLOWLORIS,
        "connections closed before the header timeout"
    );

    // Then every one of them is closed by the header timeout, not before it.
    let all_closed = timeout(HEADER_READ_TIMEOUT + PATIENCE, async {
        while watchers.join_next().await.is_some() {}
        while dribblers.join_next().await.is_some() {}
    })
    .await;
    assert!(
        all_closed.is_ok(),
        "some flood connections were never closed"
    );
    for fate in &fates {
        let fate = *fate.lock().unwrap();
        let lived = fate.closed.unwrap() - fate.opened;
        assert!(
            lived >= HEADER_READ_TIMEOUT - Duration::from_millis(100),
            "closed after {lived:?}, before the header timeout"
        );
        assert!(
            lived < HEADER_READ_TIMEOUT + Duration::from_secs(2),
            "closed only after {lived:?}"
        );
    }
    bystander.still_receives("after the flood").await;
    drop(fresh);
}
