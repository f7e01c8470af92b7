//! One client's cursor into a source's ring.
//!
//! Dropping a `Subscription` is how a client leaves: its waiter slot is released and
//! the source's client count goes down (which starts the linger timer at zero).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::replay::{Cursor, Read};
use super::source::Source;
use super::{SourceKey, SubscribeOptions};
use crate::metrics::Metrics;
use crate::sse::Event;

pub(crate) struct Subscription {
    source: Arc<Source>,
    cursor: Cursor,
    preamble: Option<Bytes>,
    metrics: Arc<Metrics>,
}

/// Lets a connection check a stream's lag while its body is not being polled
/// (hyper stops polling a body whose socket is full).
#[derive(Clone)]
pub(crate) struct LagProbe {
    source: Arc<Source>,
    next: Arc<AtomicU64>,
    limit: u64,
}

impl LagProbe {
    pub(crate) fn is_lagged(&self) -> bool {
        match self.source.ring.lag_of(self.next.load(Ordering::Relaxed)) {
            Some(lag) => lag > self.limit,
            None => true,
        }
    }
}

impl Subscription {
    pub(super) fn new(
        source: Arc<Source>,
        options: SubscribeOptions<'_>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let start = source.ring.start(options.last_event_id);
        let mut preamble = None;
        if start.missed {
            metrics.resume_misses.inc();
            if !options.gap_event.is_empty() {
                preamble = Some(gap_event(
                    options.gap_event,
                    options.last_event_id.unwrap_or_default(),
                    start.first_id.as_ref().map(|id| id.as_str()),
                ));
            }
        }
        let cursor = source.ring.cursor(start.next, options.queue);
        metrics.clients.inc();
        Self {
            source,
            cursor,
            preamble,
            metrics: Arc::clone(metrics),
        }
    }

    pub(crate) fn key(&self) -> &SourceKey {
        &self.source.key
    }

    /// The `gap` event, if this resumption missed; sent before anything else.
    pub(crate) fn take_preamble(&mut self) -> Option<Bytes> {
        self.preamble.take()
    }

    /// The next entry's wire bytes, `Lagged`, or `Closed` once the source is closed
    /// and everything queued has been read.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        self.source.ring.poll_read(&mut self.cursor, cx)
    }

    pub(crate) fn probe(&self) -> LagProbe {
        LagProbe {
            source: Arc::clone(&self.source),
            next: self.cursor.next_shared(),
            limit: self.cursor.limit(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.source.ring.forget(&mut self.cursor);
        self.source.release();
        self.metrics.clients.dec();
    }
}

/// `event: gap` with `{"last_event_id": X, "resumed_from": id or null}`.
fn gap_event(name: &str, last_event_id: &str, resumed_from: Option<&str>) -> Bytes {
    let data = serde_json::json!({
        "last_event_id": last_event_id,
        "resumed_from": resumed_from,
    });
    Event {
        event: Some(name.to_owned()),
        data: data.to_string(),
        id: None,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_event_carries_json_with_both_ids() {
        let wire = gap_event("gap", "7\"x", Some("12"));
        assert_eq!(
            &wire[..],
            b"event: gap\ndata: {\"last_event_id\":\"7\\\"x\",\"resumed_from\":\"12\"}\n\n"
        );
        let wire = gap_event("gap", "7", None);
        assert_eq!(
            &wire[..],
            b"event: gap\ndata: {\"last_event_id\":\"7\",\"resumed_from\":null}\n\n"
        );
    }
}
