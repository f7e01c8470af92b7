#![allow(clippy::unwrap_used)]
//! The admin listener: metrics that tell the truth, and the status data.

mod support;

use support::*;

#[tokio::test]
async fn metrics_parse_strictly_and_match_what_really_happened() {
    let upstream = TestUpstream::start().await;
    let yaml = format!(
        "routes:\n  - path: /events\n    upstream: {}\n  - path: /rooms/{{room}}\n    upstream: {}\n",
        upstream.url("/events"),
        upstream.url("/rooms/{room}")
    );
    let gw = spawn_gateway(&yaml).await;
    let mut readers = Vec::new();
    for _ in 0..5 {
        readers.push(SseReader::get(&gw.url("/events")).await);
    }
    let mut rooms = [
        SseReader::get(&gw.url("/rooms/a")).await,
        SseReader::get(&gw.url("/rooms/b")).await,
    ];
    eventually!(upstream.open_streams() == 3, "three upstream streams");

    let m = scrape(gw.admin).await;
    assert_eq!(sample(&m, "sse_gateway_clients", &[]), Some(7.0));
    assert_eq!(
        sample(&m, "sse_gateway_upstream_connections", &[]),
        Some(upstream.open_streams() as f64)
    );
    assert_eq!(sample(&m, "sse_gateway_connections", &[]), Some(7.0));
    assert_eq!(
        sample(
            &m,
            "sse_gateway_client_streams",
            &[("protocol", "http/1.1")]
        ),
        Some(7.0)
    );
    // Template values are aggregated per route, never labels of their own.
    assert_eq!(
        sample(
            &m,
            "sse_gateway_route_clients",
            &[("route", "/rooms/{room}")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "sse_gateway_sources",
            &[("route", "/rooms/{room}"), ("state", "connected")]
        ),
        Some(2.0)
    );
    assert!(!m
        .iter()
        .any(|s| s.labels.iter().any(|(_, v)| v.contains("rooms/a"))));

    upstream.emit_numbered(1..=10).await;
    for r in readers.iter_mut().chain(rooms.iter_mut()) {
        // /events gets 10 events; each room stream gets them too (same upstream).
        r.take(10).await;
    }
    let m = scrape(gw.admin).await;
    // Three upstream streams each received the 10 events; 7 clients got 10 each.
    assert_eq!(
        sample(&m, "sse_gateway_events_received_total", &[]),
        Some(30.0)
    );
    eventually!(
        sample(
            &scrape(gw.admin).await,
            "sse_gateway_events_delivered_total",
            &[]
        ) == Some(70.0),
        "deliveries counted"
    );
    let m = scrape(gw.admin).await;
    let wire = "id: 1\ndata: event 1\n\n".len() as f64;
    let bytes = sample(&m, "sse_gateway_bytes_out_total", &[]).unwrap();
    assert!(bytes >= 70.0 * wire, "{bytes}");
    let batches = sample(&m, "sse_gateway_delivery_latency_seconds_count", &[]).unwrap();
    assert!((7.0..=70.0).contains(&batches), "{batches}");
    assert_eq!(
        sample(
            &m,
            "sse_gateway_replay_buffered_events",
            &[("route", "/events")]
        ),
        Some(10.0)
    );
    assert_eq!(
        sample(&m, "sse_gateway_resume_misses_total", &[]),
        Some(0.0)
    );

    drop(readers);
    eventually!(
        sample(&scrape(gw.admin).await, "sse_gateway_clients", &[]) == Some(2.0),
        "clients gauge follows disconnects"
    );
}

#[tokio::test]
async fn status_json_shows_routes_sources_and_failures() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route(
        "/events",
        &upstream.url("/events"),
        "upstream: { backoff: { initial: 20ms, max: 50ms } }",
    ))
    .await;
    let _r = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    upstream.emit("41", "x").await;
    let status = || async {
        let resp = get(&format!("http://{}/status.json", gw.admin), "GET").await;
        serde_json::from_slice::<serde_json::Value>(resp.body()).unwrap()
    };
    eventually!(
        status().await["sources"][0]["last_event_id"] == "41",
        "last id shown"
    );
    let s = status().await;
    assert_eq!(s["ready"], true);
    assert_eq!(s["totals"]["clients"], 1);
    assert_eq!(s["routes"][0]["path"], "/events");
    assert_eq!(s["routes"][0]["clients"], 1);
    let source = &s["sources"][0];
    assert_eq!(source["key"], upstream.url("/events"));
    assert_eq!(source["state"], "connected");
    assert_eq!(source["buffered"], 1);
    assert_eq!(source["capacity"], 1024);

    upstream.set_mode(Mode::Status(503));
    upstream.stop();
    upstream.restart().await;
    eventually!(
        status().await["recent_failures"]
            .as_array()
            .is_some_and(|f| f
                .iter()
                .any(|f| f["reason"].as_str().unwrap_or("").contains("503"))),
        "the upstream's 503 is listed"
    );
    let s = status().await;
    assert_ne!(s["sources"][0]["state"], "connected");
}

#[tokio::test]
async fn status_events_stream_repeats_the_document() {
    let upstream = TestUpstream::start().await;
    let gw = spawn_gateway(&one_route("/events", &upstream.url("/events"), "")).await;
    let mut stream = SseReader::get(&format!("http://{}/status/events", gw.admin)).await;
    let first = stream.take(1).await;
    assert_eq!(first[0].event, "status");
    let doc: serde_json::Value = serde_json::from_str(&first[0].data).unwrap();
    assert_eq!(doc["totals"]["clients"], 0);
    let _client = SseReader::get(&gw.url("/events")).await;
    // The next documents see the new client without reconnecting.
    let mut seen = 0;
    for _ in 0..5 {
        let doc: serde_json::Value = serde_json::from_str(&stream.take(1).await[0].data).unwrap();
        seen = doc["totals"]["clients"].as_i64().unwrap();
        if seen == 1 {
            break;
        }
    }
    assert_eq!(seen, 1);
}

#[test]
fn the_strict_reader_rejects_malformed_expositions() {
    for bad in [
        "x 1\n# EOF\n",                      // undeclared family
        "# TYPE x gauge\nx{a=b} 1\n# EOF\n", // unquoted label
        "# TYPE x gauge\nx one\n# EOF\n",    // bad value
        "# TYPE x gauge\nx 1\n",             // no EOF
        "# TYPE x gauge\n# EOF\nx 1\n",      // after EOF
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(bad)).is_err(),
            "{bad:?}"
        );
    }
    let ok = parse_exposition("# TYPE x counter\nx_total{a=\"1,2\"} 3\n# EOF\n");
    assert_eq!(ok[0].labels, [("a".to_owned(), "1,2".to_owned())]);
}
