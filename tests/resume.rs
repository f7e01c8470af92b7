//! Last-Event-ID resumption: exactly the missed events, no gap, no duplicate.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

async fn gateway_with(upstream: &TestUpstream, extra: &str) -> TestGateway {
    spawn_gateway(&one_route("/events", &upstream.url("/events"), extra)).await
}

/// Events 1..=n, received by the gateway (so kept in its ring), with one client
/// keeping the source open. Drop the returned reader to leave.
async fn with_history(gw: &TestGateway, upstream: &TestUpstream, n: u32) -> SseReader {
    let keep = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    upstream.emit_numbered(1..=n).await;
    eventually!(
        metric(&gw.metrics, "sse_gateway_events_received_total") == f64::from(n),
        "received"
    );
    keep
}

/// A route whose misses are not backfilled from the upstream.
async fn gateway_without_backfill(upstream: &TestUpstream, extra: &str) -> TestGateway {
    let yaml = format!(
        "{extra}\nroutes:\n  - path: /events\n    upstream: {}\n    backfill: false\n",
        upstream.url("/events")
    );
    spawn_gateway(&yaml).await
}

#[tokio::test]
async fn resumes_after_last_event_id_header_with_no_gap_or_duplicate() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with(&upstream, "").await;

    let mut first = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    upstream.emit_numbered(1..=5).await;
    let seen = first.take(5).await;
    drop(first);

    upstream.emit_numbered(6..=8).await;
    let mut again = SseReader::resume(&gw.url("/events"), &seen[2].id).await;
    let got = again.take(5).await;
    assert_eq!(ids(&got), ["4", "5", "6", "7", "8"]);
    upstream.emit_numbered(9..=9).await;
    assert_eq!(ids(&again.take(1).await), ["9"]);
    assert!(!again.raw().contains("event: gap"));
    assert_eq!(upstream.connections(), 1);
    assert_eq!(metric(&gw.metrics, "sse_gateway_resume_misses_total"), 0.0);
}

#[tokio::test]
async fn resumes_from_the_last_event_id_query_parameter() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with(&upstream, "").await;
    let keep = with_history(&gw, &upstream, 4).await;

    let mut r = SseReader::get(&gw.url("/events?lastEventId=2")).await;
    assert_eq!(ids(&r.take(2).await), ["3", "4"]);
    drop(keep);
}

#[tokio::test]
async fn unknown_id_gets_the_gap_event_then_the_whole_buffer_then_live() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_without_backfill(&upstream, "replay: { events: 3 }").await;
    let keep = with_history(&gw, &upstream, 5).await;

    // "1" has been evicted (the buffer keeps 3, 4, 5).
    let mut r = SseReader::resume(&gw.url("/events"), "1").await;
    let got = r.take(4).await;
    assert_eq!(got[0].event, "gap");
    let gap: serde_json::Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(
        gap,
        serde_json::json!({"last_event_id": "1", "resumed_from": "3"})
    );
    assert_eq!(ids(&got[1..]), ["3", "4", "5"]);
    upstream.emit_numbered(6..=6).await;
    assert_eq!(ids(&r.take(1).await), ["6"]);
    assert_eq!(metric(&gw.metrics, "sse_gateway_resume_misses_total"), 1.0);
    drop(keep);
}

#[tokio::test]
async fn gap_event_name_is_configurable_and_can_be_disabled() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_without_backfill(&upstream, "replay: { gap_event: \"\" }").await;
    let keep = with_history(&gw, &upstream, 2).await;
    let mut r = SseReader::resume(&gw.url("/events"), "nope").await;
    assert_eq!(ids(&r.take(2).await), ["1", "2"]);
    assert!(!r.raw().contains("gap"));
    assert_eq!(metric(&gw.metrics, "sse_gateway_resume_misses_total"), 1.0);
    drop(keep);
}

#[tokio::test]
async fn assign_ids_stamps_increasing_ids_that_clients_can_resume_from() {
    let upstream = TestUpstream::start().await;
    let yaml = format!(
        "routes:\n  - path: /events\n    upstream: {}\n    assign_ids: true\n",
        upstream.url("/events")
    );
    let gw = spawn_gateway(&yaml).await;
    let mut r = SseReader::get(&gw.url("/events")).await;
    eventually!(upstream.open_streams() == 1, "subscribed");
    for n in 1..=4 {
        upstream
            .send_raw(format!("data: n{n}\n\n").as_bytes())
            .await;
    }
    let got = r.take(4).await;
    let stamped = ids(&got);
    assert!(stamped
        .iter()
        .all(|id| !id.is_empty() && id.len() < 64 && id.is_ascii()));
    let mut unique = stamped.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{stamped:?}");

    let mut again = SseReader::resume(&gw.url("/events"), stamped[1]).await;
    let resumed = again.take(2).await;
    assert_eq!(
        resumed.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["n3", "n4"]
    );
    assert_eq!(ids(&resumed), &stamped[2..]);
}

#[tokio::test]
async fn missing_events_are_backfilled_from_the_upstream_with_no_gap() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with(&upstream, "replay: { events: 3 }").await;
    let keep = with_history(&gw, &upstream, 8).await;

    // The buffer keeps 6, 7, 8; 3, 4, 5 come from the upstream, which honours
    // Last-Event-ID: 2.
    let mut r = SseReader::resume(&gw.url("/events"), "2").await;
    assert_eq!(ids(&r.take(6).await), ["3", "4", "5", "6", "7", "8"]);
    upstream.emit_numbered(9..=9).await;
    assert_eq!(ids(&r.take(1).await), ["9"]);
    assert!(!r.raw().contains("gap"));
    assert_eq!(metric(&gw.metrics, "sse_gateway_resume_misses_total"), 0.0);
    assert_eq!(metric(&gw.metrics, "sse_gateway_backfills_total"), 1.0);
    assert_eq!(
        upstream.last_event_ids().last(),
        Some(&Some("2".to_owned()))
    );
    // The temporary connection is gone; the source's own one remains.
    eventually!(upstream.open_streams() == 1, "backfill connection closed");
    drop(keep);
}

#[tokio::test]
async fn clients_resuming_from_the_same_id_share_one_backfill() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with(&upstream, "replay: { events: 2 }").await;
    let keep = with_history(&gw, &upstream, 6).await;
    // Hold the upstream's answer back so both resumers find the backfill running.
    upstream.hold(true);
    let mut a = SseReader::resume(&gw.url("/events"), "1").await;
    let mut b = SseReader::resume(&gw.url("/events"), "1").await;
    eventually!(
        metric(&gw.metrics, "sse_gateway_clients") == 3.0,
        "both resumers in"
    );
    upstream.hold(false);
    for r in [&mut a, &mut b] {
        assert_eq!(ids(&r.take(5).await), ["2", "3", "4", "5", "6"]);
    }
    assert_eq!(upstream.connections(), 2, "one shared backfill connection");
    assert_eq!(metric(&gw.metrics, "sse_gateway_backfills_total"), 2.0);
    assert_eq!(metric(&gw.metrics, "sse_gateway_resume_misses_total"), 0.0);
    drop(keep);
}

#[tokio::test]
async fn upstream_that_ignores_last_event_id_falls_back_to_the_gap() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with(&upstream, "replay: { events: 3 }").await;
    let keep = with_history(&gw, &upstream, 5).await;
    upstream.set_mode(Mode::LiveOnly);
    let mut r = SseReader::resume(&gw.url("/events"), "1").await;
    eventually!(upstream.connections() == 2, "backfill tried");
    // Live events reach the backfill and the ring at their newest end only.
    let feeder = async {
        for n in 6..=30 {
            upstream.emit_numbered(n..=n).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (_, first) = tokio::join!(feeder, r.take(1));
    assert_eq!(first[0].event, "gap");
    assert_eq!(metric(&gw.metrics, "sse_gateway_resume_misses_total"), 1.0);
    drop(keep);
}
