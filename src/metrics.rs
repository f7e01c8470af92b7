//! The gateway's Prometheus series, as one struct passed to whoever updates them.
//!
//! Never global: tests build their own. Every series is an atomic, so updating one
//! takes no lock; the fan-out path counts per batch of writes, not per event.
//! Series about the hub's current state (sources by state, buffer fill, clients per
//! route) are computed at scrape time from a snapshot and passed to
//! [`Metrics::encode_with`], so they cost nothing between scrapes.

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The named series. Counters are registered without `_total`; the exposition
/// adds it.
#[derive(Debug)]
pub struct Metrics {
    // The contract's seven.
    pub(crate) clients: Gauge,
    pub(crate) upstream_connections: Gauge,
    pub(crate) events_received: Counter,
    pub(crate) events_delivered: Counter,
    pub(crate) clients_lagged: Counter,
    pub(crate) resume_misses: Counter,
    pub(crate) upstream_reconnects: Counter,
    // More for operators.
    pub(crate) backfills: Counter,
    pub(crate) bytes_out: Counter,
    /// Upstream receive → handed to the client's connection, for the oldest event
    /// of each write batch (the batch's worst case).
    pub(crate) delivery_latency: Histogram,
    /// Events waiting for a client when it starts a write batch.
    pub(crate) client_lag: Histogram,
    pub(crate) connections: Gauge,
    pub(crate) streams_h1: Gauge,
    pub(crate) streams_h2: Gauge,
    pub(crate) draining: Gauge,
    pub(crate) limit_rejections: Counter,
    limit_rejections_by_reason: Family<ReasonLabel, Counter>,
    pub(crate) tls_connections: Gauge,
    reloads: Family<ResultLabel, Counter>,
    registry: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStateLabel {
    pub route: String,
    pub state: String,
}

/// Series about the hub's state at scrape time.
#[derive(Default)]
pub struct StateSeries {
    pub sources: Family<RouteStateLabel, Gauge>,
    pub route_clients: Family<RouteLabel, Gauge>,
    pub replay_buffered: Family<RouteLabel, Gauge>,
    pub replay_capacity: Family<RouteLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sse_gateway");
        let clients = Gauge::default();
        registry.register("clients", "Client streams open now", clients.clone());
        let upstream_connections = Gauge::default();
        registry.register(
            "upstream_connections",
            "Upstream connections open now",
            upstream_connections.clone(),
        );
        let events_received = Counter::default();
        registry.register(
            "events_received",
            "Events received from upstreams",
            events_received.clone(),
        );
        let events_delivered = Counter::default();
        registry.register(
            "events_delivered",
            "Event deliveries written to clients",
            events_delivered.clone(),
        );
        let clients_lagged = Counter::default();
        registry.register(
            "clients_lagged",
            "Clients disconnected for falling behind",
            clients_lagged.clone(),
        );
        let resume_misses = Counter::default();
        registry.register(
            "resume_misses",
            "Resumptions whose Last-Event-ID was not kept",
            resume_misses.clone(),
        );
        let upstream_reconnects = Counter::default();
        registry.register(
            "upstream_reconnects",
            "Upstream reconnect attempts",
            upstream_reconnects.clone(),
        );
        let backfills = Counter::default();
        registry.register(
            "backfills",
            "Resumptions that fetched missing events from the upstream",
            backfills.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "bytes_out",
            "Bytes of event streams handed to client connections",
            bytes_out.clone(),
        );
        // 0.5 ms .. ~16 s
        let delivery_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "delivery_latency_seconds",
            "Upstream receive to client write, oldest event of each write batch",
            delivery_latency.clone(),
        );
        // 1 .. 4096 events
        let client_lag = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "client_lag_events",
            "Events waiting for a client at the start of each write batch",
            client_lag.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Public connections open now",
            connections.clone(),
        );
        let streams = Family::<ProtocolLabel, Gauge>::default();
        registry.register(
            "client_streams",
            "Client streams open now, by HTTP version",
            streams.clone(),
        );
        let streams_h1 = streams
            .get_or_create(&ProtocolLabel {
                protocol: "http/1.1",
            })
            .clone();
        let streams_h2 = streams
            .get_or_create(&ProtocolLabel { protocol: "h2" })
            .clone();
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 from the first moment of a drain",
            draining.clone(),
        );
        let limit_rejections = Counter::default();
        registry.register(
            "limit_rejections",
            "Subscribers turned away by a limits cap",
            limit_rejections.clone(),
        );
        let limit_rejections_by_reason = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "limit_rejections_by_reason",
            "Subscribers turned away, by the cap they ran into",
            limit_rejections_by_reason.clone(),
        );
        let tls_connections = Gauge::default();
        registry.register(
            "tls_connections",
            "Public connections open now that came in over TLS",
            tls_connections.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result",
            reloads.clone(),
        );
        // Both results exist at 0 from the start, so a rate() over them works
        // before the first reload.
        for result in ["applied", "rejected"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        Self {
            clients,
            upstream_connections,
            events_received,
            events_delivered,
            clients_lagged,
            resume_misses,
            upstream_reconnects,
            backfills,
            bytes_out,
            delivery_latency,
            client_lag,
            connections,
            streams_h1,
            streams_h2,
            draining,
            limit_rejections,
            limit_rejections_by_reason,
            tls_connections,
            reloads,
            registry,
        }
    }

    /// Counts a configuration reload.
    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a subscriber turned away by the cap named `reason`.
    pub(crate) fn limit_rejected(&self, reason: &'static str) {
        self.limit_rejections.inc();
        self.limit_rejections_by_reason
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Marks the start of a drain.
    pub fn set_draining(&self) {
        self.draining.set(1);
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        self.encode_with(&StateSeries::default())
    }

    /// The exposition, with series computed at scrape time added.
    pub fn encode_with(&self, state: &StateSeries) -> String {
        let mut extra = Registry::with_prefix("sse_gateway");
        extra.register(
            "sources",
            "Upstream sources by route and state",
            state.sources.clone(),
        );
        extra.register(
            "route_clients",
            "Client streams open now, by route",
            state.route_clients.clone(),
        );
        extra.register(
            "replay_buffered_events",
            "Events kept for resumption, by route",
            state.replay_buffered.clone(),
        );
        extra.register(
            "replay_capacity_events",
            "Events that can be kept for resumption, by route",
            state.replay_capacity.clone(),
        );
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String never fails");
        encode_registry(&mut out, &extra).expect("writing to a String never fails");
        encode_eof(&mut out).expect("writing to a String never fails");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_contract_series() {
        let m = Metrics::new();
        m.events_received.inc_by(3);
        m.clients.set(2);
        let text = m.encode();
        assert!(
            text.contains("sse_gateway_events_received_total 3"),
            "{text}"
        );
        assert!(text.contains("sse_gateway_clients 2"), "{text}");
        for name in [
            "sse_gateway_upstream_connections",
            "sse_gateway_events_delivered_total",
            "sse_gateway_clients_lagged_total",
            "sse_gateway_resume_misses_total",
            "sse_gateway_upstream_reconnects_total",
            "sse_gateway_limit_rejections_total",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn state_series_carry_route_labels() {
        let m = Metrics::new();
        let state = StateSeries::default();
        state
            .route_clients
            .get_or_create(&RouteLabel {
                route: "/rooms/{room}".into(),
            })
            .set(4);
        let text = m.encode_with(&state);
        assert!(
            text.contains("sse_gateway_route_clients{route=\"/rooms/{room}\"} 4"),
            "{text}"
        );
    }
}
