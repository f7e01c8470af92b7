//! One upstream subscription: its ring, its client count and its upstream task.
//!
//! The task dials the upstream, parses what it sends, encodes each event once and
//! pushes it into the ring; on EOF or error it backs off and reconnects with the
//! last event id it saw, while clients stay connected. A 204 ends the source.
//! Clients never touch the task: they only read the ring.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, trace, warn, Instrument};

use super::backfill::Backfills;
use super::replay::{Entry, ReplayRing};
use super::{CloseReason, EventId, HubInner, SourceKey, SourceSpec, UpstreamSettings};
use crate::metrics::Metrics;
use crate::sse::Event;
use crate::telemetry::error_chain;
use crate::upstream::{self, Backoff, UpstreamError};

/// Upstream reads parsed into one ring push, at most.
const MAX_READ_BATCH: usize = 16;

/// Where a source's upstream connection is, for the status page and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamState {
    Connecting,
    Connected,
    Backoff,
    Ended,
}

/// A source's running counters, written by its upstream task, read by the
/// status page. Plain atomics: nothing here is on the client path.
#[derive(Default)]
pub(super) struct Status {
    state: AtomicU8,
    pub(super) received: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
}

impl UpstreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamState::Connecting => "connecting",
            UpstreamState::Connected => "connected",
            UpstreamState::Backoff => "backoff",
            UpstreamState::Ended => "ended",
        }
    }
}

impl Status {
    fn set(&self, state: UpstreamState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub(super) fn state(&self) -> UpstreamState {
        match self.state.load(Ordering::Relaxed) {
            0 => UpstreamState::Connecting,
            1 => UpstreamState::Connected,
            2 => UpstreamState::Backoff,
            _ => UpstreamState::Ended,
        }
    }

    fn failed(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

pub(crate) struct Source {
    pub(super) key: SourceKey,
    pub(super) status: Status,
    pub(super) ring: ReplayRing,
    /// What the source was started from; reload compares it with the new routes.
    pub(super) spec: SourceSpec,
    pub(super) backfills: Backfills,
    clients: AtomicUsize,
    cancel: CancellationToken,
    hub: Weak<HubInner>,
    linger: Duration,
}

impl Source {
    /// Creates the source and starts its upstream task.
    pub(super) fn spawn(spec: SourceSpec, hub: &Arc<HubInner>) -> Arc<Self> {
        let settings = hub.settings();
        let source = Arc::new(Self {
            key: spec.key.clone(),
            ring: ReplayRing::new(spec.replay_events),
            spec: spec.clone(),
            status: Status::default(),
            backfills: Backfills::default(),
            clients: AtomicUsize::new(0),
            cancel: CancellationToken::new(),
            hub: Arc::downgrade(hub),
            linger: settings.linger,
        });
        let task = UpstreamTask {
            source: Arc::clone(&source),
            spec,
            settings,
            metrics: Arc::clone(&hub.metrics),
        };
        let span = info_span!(parent: None, "source", source.key = %source.key);
        let cancel = source.cancel.clone();
        tokio::spawn(
            async move {
                info!("source opened");
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = task.run() => {}
                }
                info!("source closed");
            }
            .instrument(span),
        );
        source
    }

    pub(super) fn acquire(&self) {
        self.clients.fetch_add(1, Ordering::SeqCst);
    }

    /// A client left. The last one out starts the linger timer; if nobody has come
    /// back when it fires, the source is removed and its upstream closed.
    pub(super) fn release(self: &Arc<Self>) {
        if self.clients.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let source = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(source.linger).await;
            let Some(hub) = source.hub.upgrade() else {
                return;
            };
            if hub.remove_if_idle(&source) {
                debug!(source.key = %source.key, "source idle past linger");
                source.close(CloseReason::Ended);
            }
        });
    }

    pub(super) fn is_idle(&self) -> bool {
        self.clients.load(Ordering::SeqCst) == 0
    }

    pub(super) fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Stops the upstream task and closes the ring with `reason`.
    pub(super) fn close(&self, reason: CloseReason) {
        self.cancel.cancel();
        self.ring.close(reason);
    }
}

/// The source's upstream side, run as one task.
struct UpstreamTask {
    source: Arc<Source>,
    spec: SourceSpec,
    settings: UpstreamSettings,
    metrics: Arc<Metrics>,
}

impl UpstreamTask {
    async fn run(self) {
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        let mut stamper = self.spec.assign_ids.then(IdStamper::new);
        // The upstream's own last event id, sent back as Last-Event-ID on reconnect
        // (even with assign_ids, the upstream only understands its own ids).
        let mut last_id = String::new();
        let mut events = Vec::new();
        let mut spare = Vec::new();
        let mut attempt: u64 = 0;
        let status = &self.source.status;
        loop {
            if attempt > 0 {
                self.metrics.upstream_reconnects.inc();
                status.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            status.set(UpstreamState::Connecting);
            let connect = match &self.spec.ca {
                None => Ok(self.settings.connect.clone()),
                Some(_) => match self.source.hub.upgrade() {
                    Some(hub) => hub.connect_settings(&self.spec),
                    None => return,
                },
            };
            let connected = match connect {
                Ok(connect) => {
                    upstream::connect(&self.spec.target, &self.spec.headers, &last_id, &connect)
                        .await
                }
                Err(error) => Err(UpstreamError::Ca(error)),
            };
            let mut upstream = match connected {
                Ok(upstream) => upstream,
                Err(UpstreamError::NoContent) => {
                    info!("upstream answered 204; source ended");
                    status.set(UpstreamState::Ended);
                    self.source.ring.close(CloseReason::Ended);
                    return;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    let error = error_chain(&error);
                    warn!(error = %error, attempt, backoff = ?delay, "upstream connect failed");
                    self.note_failure(error);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            // The gauge goes down when this guard drops, even if the task is
            // cancelled mid-stream (source closed by reload, drain or linger).
            let _connected = ConnectedGuard::new(&self.metrics);
            status.set(UpstreamState::Connected);
            info!(last_event_id = %last_id, "upstream connected");
            let mut received = 0u64;
            // Everything received goes into the ring in one push, but never more
            // than a quarter of the ring at once: a push evicts for clients still behind.
            let batch = (self.spec.replay_events / 4).clamp(1, MAX_READ_BATCH);
            let ended = loop {
                match upstream.next(&mut events, batch).await {
                    Ok(true) => {}
                    Ok(false) => break None,
                    Err(error) => break Some(error),
                }
                if let Some(retry) = upstream.retry() {
                    backoff.set_base(retry);
                }
                if last_id != upstream.last_event_id() {
                    upstream.last_event_id().clone_into(&mut last_id);
                }
                received += events.len() as u64;
                self.metrics.events_received.inc_by(events.len() as u64);
                status
                    .received
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                let entries = events.drain(..).map(|event| {
                    let entry = encode(event, stamper.as_mut());
                    trace!(event.id = ?entry.id, "event received");
                    entry
                });
                self.source.ring.push_all(entries, &mut spare);
                // The clients just woken write before more is read, so a busy
                // upstream's next events reach them as one batch, not one at a
                // time behind the whole queue.
                tokio::task::yield_now().await;
            };
            drop(_connected);
            if received > 0 {
                // A connection that delivered is a healthy upstream: start over.
                backoff.reset();
            }
            let delay = backoff.next_delay();
            match ended {
                None => {
                    info!(received, backoff = ?delay, "upstream ended the stream");
                    self.note_failure("upstream ended the stream".to_owned());
                }
                Some(error) => {
                    let error = error_chain(&error);
                    warn!(error = %error, received, backoff = ?delay, "upstream disconnected");
                    self.note_failure(error);
                }
            }
            tokio::time::sleep(delay).await;
        }
    }
}

impl UpstreamTask {
    /// Records why the upstream is down: for the status page's recent reconnects.
    fn note_failure(&self, reason: String) {
        self.source.status.set(UpstreamState::Backoff);
        if let Some(hub) = self.source.hub.upgrade() {
            hub.record_failure(&self.source.key, &reason);
        }
        self.source.status.failed(reason);
    }
}

/// Counts one open upstream connection for as long as it lives.
struct ConnectedGuard<'a>(&'a Metrics);

impl<'a> ConnectedGuard<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.upstream_connections.inc();
        Self(metrics)
    }
}

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        self.0.upstream_connections.dec();
    }
}

/// Encodes an event once for every client, stamping our own id if asked.
fn encode(mut event: Event, stamper: Option<&mut IdStamper>) -> Entry {
    if let Some(stamper) = stamper {
        event.id = Some(stamper.next());
    }
    Entry {
        id: event.id.as_deref().map(EventId::from),
        wire: event.encode(),
        received: tokio::time::Instant::now(),
    }
}

/// `assign_ids`: short, increasing, ASCII ids. The prefix is the source's start
/// time, so ids from an earlier run of the gateway never match this one's.
struct IdStamper {
    prefix: String,
    next: u64,
}

impl IdStamper {
    fn new() -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Self {
            prefix: format!("{started:x}"),
            next: 1,
        }
    }

    fn next(&mut self) -> String {
        let id = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_ids_are_short_ascii_and_distinct() {
        let mut s = IdStamper::new();
        let a = s.next();
        let b = s.next();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert!(id.len() < 32 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        }
        assert!(b.ends_with("-2"));
    }
}
