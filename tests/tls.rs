//! TLS listeners: ALPN picks HTTP/2 or HTTP/1.1, events flow over both, certificates
//! are checked at start (exit 2 naming the key) and re-read on reload, and a client
//! that breaks off its handshake disturbs nobody.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::tls::{alpn, peer_cert, TestCa};
use support::*;

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

/// A gateway with one TLS listener and one route to `upstream`.
async fn tls_gateway(
    upstream: &TestUpstream,
    ca: &TestCa,
) -> (TestGateway, TempDir, sse_gateway::server::TlsReload) {
    let dir = TempDir::new("tls");
    ca.write_leaf(&dir, "server");
    let yaml = format!(
        "listen:\n  - addr: 127.0.0.1:0\n    tls: {{ cert: server.pem, key: server-key.pem }}\n{}",
        one_route("/events", &upstream.url("/events"), "")
    );
    let (gw, _, reload) = spawn_gateway_file(&yaml, &dir.0.join("gateway.yaml")).await;
    (gw, dir, reload)
}

/// An HTTP/1.1 event stream over an established TLS connection.
async fn h1_sse<IO>(io: IO, path: &str) -> SseReader
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    SseReader::from_response(resp, vec![conn.abort_handle()])
}

#[tokio::test]
async fn alpn_chooses_h2_when_offered_and_events_flow_over_it() {
    let upstream = TestUpstream::start().await;
    let ca = TestCa::new();
    let (gw, _dir, _) = tls_gateway(&upstream, &ca).await;

    let tls = ca.connect(gw.addr, &[H2, H1]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(H2));
    let client = H2Client::handshake(tls, "localhost".into()).await;
    let mut a = client.sse("/events").await;
    let mut b = client.sse("/events").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    eventually!(upstream.open_streams() == 1, "upstream opened");
    upstream.emit_numbered(1..=3).await;
    assert_eq!(ids(&a.take(3).await), ["1", "2", "3"]);
    assert_eq!(ids(&b.take(3).await), ["1", "2", "3"]);
    // One TLS connection, two HTTP/2 streams on it.
    assert_eq!(metric(&gw.metrics, "sse_gateway_tls_connections"), 1.0);
    assert_eq!(metric(&gw.metrics, "sse_gateway_connections"), 1.0);
    let m = scrape(gw.admin).await;
    assert_eq!(
        sample(&m, "sse_gateway_client_streams", &[("protocol", "h2")]),
        Some(2.0)
    );
}

#[tokio::test]
async fn alpn_chooses_http11_when_h2_is_not_offered_and_events_flow_over_it() {
    let upstream = TestUpstream::start().await;
    let ca = TestCa::new();
    let (gw, _dir, _) = tls_gateway(&upstream, &ca).await;

    let tls = ca.connect(gw.addr, &[H1]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(H1));
    let mut with_alpn = h1_sse(tls, "/events").await;
    // A client that offers no ALPN at all gets HTTP/1.1 too.
    let tls = ca.connect(gw.addr, &[]).await;
    assert_eq!(alpn(&tls), None);
    let mut without_alpn = h1_sse(tls, "/events").await;

    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 2.0,
        "both subscribed"
    );
    upstream.emit("1", "hello").await;
    for r in [&mut with_alpn, &mut without_alpn] {
        assert_eq!(r.status, 200);
        assert_eq!(r.take(1).await[0].data, "hello");
    }
}

#[tokio::test]
async fn tls_1_2_clients_are_served() {
    let upstream = TestUpstream::start().await;
    let ca = TestCa::new();
    let (gw, _dir, _) = tls_gateway(&upstream, &ca).await;

    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(ca_roots(&ca))
        .with_no_client_auth();
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut r = h1_sse(tls, "/events").await;
    eventually!(upstream.open_streams() == 1, "upstream opened");
    upstream.emit("1", "over tls 1.2").await;
    assert_eq!(r.take(1).await[0].data, "over tls 1.2");
}

fn ca_roots(ca: &TestCa) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.root()).unwrap();
    roots
}

#[tokio::test]
async fn h2c_prior_knowledge_streams_events_on_a_plain_listener() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route("/events", &upstream.url("/events"), "")).await;
    let client = H2Client::connect(gw.addr).await;
    let mut r = client.sse("/events").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    eventually!(upstream.open_streams() == 1, "upstream opened");
    upstream.emit_numbered(1..=2).await;
    assert_eq!(ids(&r.take(2).await), ["1", "2"]);
    assert!(r.raw().starts_with("retry: 2000\n\n"), "{}", r.raw());
}

#[tokio::test]
async fn an_abrupt_reset_mid_handshake_does_not_disturb_a_streaming_client() {
    let upstream = TestUpstream::start().await;
    let ca = TestCa::new();
    let (gw, _dir, _) = tls_gateway(&upstream, &ca).await;
    let client = H2Client::handshake(ca.connect(gw.addr, &[H2]).await, "localhost".into()).await;
    let mut streaming = client.sse("/events").await;
    eventually!(upstream.open_streams() == 1, "upstream opened");

    for _ in 0..20 {
        // The first bytes of a ClientHello, then RST (linger 0) instead of the rest.
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.set_zero_linger().unwrap();
        let mut tcp = tcp;
        tcp.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
        drop(tcp);
        // Garbage instead of a handshake.
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(tcp);
    }

    upstream.emit("1", "still here").await;
    assert_eq!(streaming.take(1).await[0].data, "still here");
    // And the listener still completes handshakes.
    let tls = ca.connect(gw.addr, &[H1]).await;
    let mut fresh = h1_sse(tls, "/events").await;
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 2.0,
        "new client subscribed"
    );
    upstream.emit("2", "and again").await;
    assert_eq!(fresh.take(1).await[0].data, "and again");
    assert_eq!(streaming.take(1).await[0].data, "and again");
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn reload_switches_new_handshakes_to_new_certificates_without_dropping_streams() {
    let upstream = TestUpstream::start().await;
    let ca = TestCa::new();
    let (gw, dir, reload) = tls_gateway(&upstream, &ca).await;
    let before = ca.connect(gw.addr, &[H1]).await;
    let old_cert = peer_cert(&before);
    let mut streaming = h1_sse(before, "/events").await;
    eventually!(upstream.open_streams() == 1, "upstream opened");

    // Rotate the files in place, as certbot would, and reload.
    ca.write_leaf(&dir, "server");
    let config = sse_gateway::config::Config::parse(
        &format!(
            "listen:\n  - addr: 127.0.0.1:0\n    tls: {{ cert: server.pem, key: server-key.pem }}\n{}",
            one_route("/events", &upstream.url("/events"), "")
        ),
        &dir.0.join("gateway.yaml"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(reload.reload_tls(&config.listen).unwrap(), 1);
    let after = ca.connect(gw.addr, &[H1]).await;
    let new_cert = peer_cert(&after);
    assert_ne!(new_cert, old_cert, "new handshakes use the new certificate");

    // A broken file is refused, naming its key, and the running certificate stays.
    dir.write("server-key.pem", "not a key\n");
    let err = reload.reload_tls(&config.listen).unwrap_err();
    assert!(err.to_string().starts_with("listen[0].tls.key: "), "{err}");
    assert_eq!(peer_cert(&ca.connect(gw.addr, &[H1]).await), new_cert);

    upstream.emit("1", "through the rotation").await;
    assert_eq!(streaming.take(1).await[0].data, "through the rotation");
}

fn run_binary(yaml: &str, dir: &TempDir, args: &[&str]) -> (Option<i32>, String) {
    let config = dir.write("gateway.yaml", yaml);
    let out = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["--admin", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_certificate_exits_2_naming_its_key_at_check_and_at_start() {
    let dir = TempDir::new("tls-missing");
    let yaml = "listen:\n  - addr: 127.0.0.1:0\n    tls: { cert: nope.pem, key: nope-key.pem }\nroutes:\n  - path: /e\n    upstream: builtin:clock\n";
    for args in [&["--check"][..], &[][..]] {
        let (code, stderr) = run_binary(yaml, &dir, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("gateway.yaml: listen[0].tls.cert: cannot read certificates from")
                && stderr.contains("nope.pem"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_file_without_a_key_exits_2_naming_the_key() {
    let dir = TempDir::new("tls-badkey");
    let ca = TestCa::new();
    ca.write_leaf(&dir, "server");
    dir.write(
        "server-key.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let yaml = "listen:\n  - addr: 127.0.0.1:0\n  - addr: 127.0.0.1:0\n    tls: { cert: server.pem, key: server-key.pem }\nroutes:\n  - path: /e\n    upstream: builtin:clock\n";
    let (code, stderr) = run_binary(yaml, &dir, &["--check"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("listen[1].tls.key: ") && stderr.contains("holds no PEM private key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sighup_makes_the_running_binary_use_rotated_certificates() {
    let ca = TestCa::new();
    let dir = TempDir::new("tls-sighup");
    ca.write_leaf(&dir, "server");
    let config = dir.write(
        "gateway.yaml",
        "listen:\n  - addr: 127.0.0.1:0\n    tls: { cert: server.pem, key: server-key.pem }\nroutes:\n  - path: /demo\n    upstream: builtin:clock\n",
    );
    let gw = GatewayProcess::start_with(&config, &["--admin", "127.0.0.1:0"], &[]);
    let before = peer_cert(&ca.connect(gw.addr, &[H1]).await);

    ca.write_leaf(&dir, "server");
    gw.signal("HUP");
    eventually!(
        peer_cert(&ca.connect(gw.addr, &[H1]).await) != before,
        "new handshakes use the rotated certificate; log: {}",
        gw.log_text()
    );
    // The log line is read from the child's stderr by another thread: wait for it.
    eventually!(
        gw.log_text().contains("configuration reloaded")
            && gw.log_text().contains("tls_listeners=1"),
        "{}",
        gw.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_stops_reading_is_cut_loose_like_a_plain_one() {
    let upstream = TestUpstream::start().await;
    let ca = TestCa::new();
    let dir = TempDir::new("tls-slow");
    ca.write_leaf(&dir, "server");
    let yaml = format!(
        "listen:\n  - addr: 127.0.0.1:0\n    tls: {{ cert: server.pem, key: server-key.pem }}\n{}",
        one_route(
            "/events",
            &upstream.url("/events"),
            "client: { queue: 64 }\nreplay: { events: 128 }"
        )
    );
    let (gw, _, _) = spawn_gateway_file(&yaml, &dir.0.join("gateway.yaml")).await;

    // Sends its request over TLS, then never reads again.
    let mut stalled = ca.connect(gw.addr, &[H1]).await;
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reader = h1_sse(ca.connect(gw.addr, &[H1]).await, "/events").await;
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 2.0,
        "both subscribed"
    );

    // 16 KiB events: a few MiB overflow the stalled client's socket buffers.
    let payload = "x".repeat(16 * 1024);
    let total = 600usize;
    let reading = tokio::spawn(async move {
        let seen = reader.take(total).await.len();
        (seen, reader)
    });
    for n in 1..=total {
        upstream.emit(&n.to_string(), &payload).await;
        if n % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let (seen, _reader) = reading.await.unwrap();
    assert_eq!(seen, total, "the reading client gets every event");
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients_lagged_total") == 1.0,
        "stalled tls client counted"
    );
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 1.0,
        "stalled tls client's stream gone"
    );
    drop(stalled);
}
