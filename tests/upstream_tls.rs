#![allow(clippy::unwrap_used)]
//! `https://` upstreams: verified against the route's `ca` (a private CA) or the
//! system roots; a verification failure is an upstream failure with backoff.

mod support;

use std::process::Command;

use support::tls::TestCa;
use support::*;

#[tokio::test]
async fn https_upstream_signed_by_the_routes_ca_streams_events() {
    let ca = TestCa::new();
    let upstream = TestUpstream::start_tls(ca.server_config()).await;
    let dir = TempDir::new("upstream-ca");
    dir.write("ca.pem", &ca.root_pem());
    let yaml = format!(
        "routes:\n  - path: /events\n    upstream: {}\n    ca: ca.pem\n",
        upstream.url("/events")
    );
    let (gw, _, _) = spawn_gateway_file(&yaml, &dir.0.join("gateway.yaml")).await;
    let mut r = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed over https");
    upstream.emit_numbered(1..=3).await;
    assert_eq!(ids(&r.take(3).await), ["1", "2", "3"]);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_an_upstream_failure_with_backoff() {
    let ca = TestCa::new();
    let upstream = TestUpstream::start_tls(ca.server_config()).await;
    // No `ca`: the system and webpki roots don't know the test CA.
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "upstream: { backoff: { initial: 20ms, max: 50ms } }",
    ))
    .await;
    let mut r = SseReader::get(&gw.url("/events")).await;
    eventually!(
        metric(&gw.metrics, "sse_gateway_upstream_reconnects_total") >= 3.0,
        "retried with backoff"
    );
    // The handshake never completed, so no request reached the upstream.
    assert_eq!(upstream.connections(), 0);
    // The client stays, and the reason is plain on the status page.
    assert!(r
        .next_within(std::time::Duration::from_millis(100))
        .await
        .is_err());
    let status = get(&format!("http://{}/status.json", gw.admin), "GET").await;
    let status: serde_json::Value = serde_json::from_slice(status.body()).unwrap();
    let error = status["sources"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("tls handshake failed") && error.contains("UnknownIssuer"),
        "{error}"
    );
}

#[test]
fn unreadable_or_misplaced_ca_is_a_config_error_naming_the_route() {
    let dir = TempDir::new("bad-ca");
    let config = dir.write(
        "gateway.yaml",
        "routes:\n  - path: /a\n    upstream: https://127.0.0.1:1/a\n    ca: missing.pem\n",
    );
    let out = Command::new(binary())
        .arg("--check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0].ca"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");

    let config = dir.write(
        "gateway.yaml",
        "routes:\n  - path: /a\n    upstream: http://127.0.0.1:1/a\n    ca: ca.pem\n",
    );
    let out = Command::new(binary())
        .args(["--check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].ca") && stderr.contains("https"),
        "{stderr}"
    );
}
