//! The status data behind the admin status page: one JSON document with the
//! gateway's totals, routes, sources and recent upstream failures, served whole
//! (`/status.json`) or as an event stream that repeats it every second
//! (`/status/events`, event name `status`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::Full;
use serde::Serialize;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::drain::DrainWatch;
use crate::hub::{Hub, Snapshot};
use crate::metrics::{Metrics, RouteLabel, RouteStateLabel, StateSeries};
use crate::sse::Event;

/// How often `/status/events` sends a fresh document.
const PERIOD: Duration = Duration::from_secs(1);

/// What the status endpoints read.
pub(super) struct View {
    metrics: Arc<Metrics>,
    drain: DrainWatch,
    hub: Hub,
    started: Instant,
    started_at: SystemTime,
}

#[derive(Serialize)]
struct Document<'a> {
    version: &'static str,
    started_at: String,
    uptime_seconds: f64,
    ready: bool,
    totals: Totals,
    #[serde(flatten)]
    hub: &'a Snapshot,
}

/// The contract's series, as numbers.
#[derive(Serialize)]
struct Totals {
    clients: i64,
    upstream_connections: i64,
    events_received: u64,
    events_delivered: u64,
    clients_lagged: u64,
    resume_misses: u64,
    upstream_reconnects: u64,
    backfills: u64,
}

impl View {
    pub(super) fn new(metrics: Arc<Metrics>, drain: DrainWatch, hub: Hub) -> Self {
        Self {
            metrics,
            drain,
            hub,
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    pub(super) fn is_serving(&self) -> bool {
        self.drain.is_serving()
    }

    /// `/metrics`: the series, plus those derived from the hub's state now.
    pub(super) fn metrics_text(&self) -> String {
        let snapshot = self.hub.snapshot();
        let state = StateSeries::default();
        for source in &snapshot.sources {
            let route = RouteLabel {
                route: source.route.clone(),
            };
            state
                .sources
                .get_or_create(&RouteStateLabel {
                    route: source.route.clone(),
                    state: source.state.as_str().to_owned(),
                })
                .inc();
            state
                .replay_buffered
                .get_or_create(&route)
                .inc_by(source.buffered as i64);
            state
                .replay_capacity
                .get_or_create(&route)
                .inc_by(source.capacity as i64);
        }
        for route in &snapshot.routes {
            state
                .route_clients
                .get_or_create(&RouteLabel {
                    route: route.path.clone(),
                })
                .set(route.clients as i64);
        }
        self.metrics.encode_with(&state)
    }

    pub(super) fn json(&self) -> String {
        let m = &self.metrics;
        let snapshot = self.hub.snapshot();
        let document = Document {
            version: env!("CARGO_PKG_VERSION"),
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ready: self.drain.is_serving(),
            totals: Totals {
                clients: m.clients.get(),
                upstream_connections: m.upstream_connections.get(),
                events_received: m.events_received.get(),
                events_delivered: m.events_delivered.get(),
                clients_lagged: m.clients_lagged.get(),
                resume_misses: m.resume_misses.get(),
                upstream_reconnects: m.upstream_reconnects.get(),
                backfills: m.backfills.get(),
            },
            hub: &snapshot,
        };
        serde_json::to_string(&document).expect("the status document always serializes")
    }
}

/// `/status/events`: the document now, then every `PERIOD`.
pub(super) struct StatusStream {
    view: Arc<View>,
    ticks: Interval,
}

impl StatusStream {
    pub(super) fn new(view: Arc<View>) -> Self {
        let mut ticks = tokio::time::interval(PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { view, ticks }
    }
}

impl Body for StatusStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.ticks.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                let event = Event {
                    event: Some("status".to_owned()),
                    data: this.view.json(),
                    id: None,
                };
                Poll::Ready(Some(Ok(Frame::data(event.encode()))))
            }
        }
    }
}

/// Every admin response body.
pub(super) enum AdminBody {
    Full(Full<Bytes>),
    Stream(StatusStream),
}

impl Body for AdminBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            AdminBody::Full(full) => Pin::new(full).poll_frame(cx),
            AdminBody::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AdminBody::Full(full) => full.is_end_stream(),
            AdminBody::Stream(_) => false,
        }
    }
}
