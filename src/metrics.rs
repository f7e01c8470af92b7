//! The gateway's Prometheus series, as one struct passed to whoever updates them.
//!
//! Never global: tests build their own. Every series is an atomic, so updating one
//! takes no lock; the fan-out path counts per batch, not per event.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The named series of the contract. Counters are registered without `_total`;
/// the exposition adds it.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) clients: Gauge,
    pub(crate) upstream_connections: Gauge,
    pub(crate) events_received: Counter,
    pub(crate) events_delivered: Counter,
    pub(crate) clients_lagged: Counter,
    pub(crate) resume_misses: Counter,
    pub(crate) upstream_reconnects: Counter,
    pub(crate) limit_rejections: Counter,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let clients = Gauge::default();
        let upstream_connections = Gauge::default();
        let events_received = Counter::default();
        let events_delivered = Counter::default();
        let clients_lagged = Counter::default();
        let resume_misses = Counter::default();
        let upstream_reconnects = Counter::default();
        let limit_rejections = Counter::default();

        let mut registry = Registry::with_prefix("sse_gateway");
        registry.register("clients", "Client streams open now", clients.clone());
        registry.register(
            "upstream_connections",
            "Upstream connections open now",
            upstream_connections.clone(),
        );
        registry.register(
            "events_received",
            "Events received from upstreams",
            events_received.clone(),
        );
        registry.register(
            "events_delivered",
            "Event deliveries written to clients",
            events_delivered.clone(),
        );
        registry.register(
            "clients_lagged",
            "Clients disconnected for falling behind",
            clients_lagged.clone(),
        );
        registry.register(
            "resume_misses",
            "Resumptions whose Last-Event-ID was not kept",
            resume_misses.clone(),
        );
        registry.register(
            "upstream_reconnects",
            "Upstream reconnect attempts",
            upstream_reconnects.clone(),
        );
        registry.register(
            "limit_rejections",
            "Subscribers turned away by a client limit",
            limit_rejections.clone(),
        );
        Self {
            clients,
            upstream_connections,
            events_received,
            events_delivered,
            clients_lagged,
            resume_misses,
            upstream_reconnects,
            limit_rejections,
            registry,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String never fails");
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
    }
}
