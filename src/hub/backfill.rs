//! Backfill: fetching a resumption's missing events from the upstream.
//!
//! A client resuming from an id the ring no longer holds (a fresh instance after a
//! restart, or a client away longer than the buffer) would otherwise get a `gap`.
//! Instead a temporary upstream request carrying that `Last-Event-ID` is read until
//! it reaches the ring's oldest entry; the events before that point go to the client
//! first, then it continues from the ring. Clients resuming from the same id share
//! one backfill. It is bounded in time, events and concurrent backfills per source;
//! when the upstream cannot resume (it fails, never reaches the ring, or ignores the
//! id and starts live) the client falls back to the `gap` event and the whole
//! buffer, and the miss is counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, info_span, Instrument};

use super::replay::ReplayRing;
use super::source::Source;
use super::{EventId, Seq, SourceSpec};
use crate::upstream::{self, ConnectSettings};

/// How long one backfill may take, connect included.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// Most events one backfill fetches before giving up.
pub(crate) const MAX_EVENTS: usize = 10_000;
/// Most backfills running at once for one source; more resumers get the gap.
pub(crate) const MAX_CONCURRENT: usize = 8;
/// Upstream reads parsed per call.
const READ_BATCH: usize = 32;

/// How a backfill ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `events` are the ones between the client's id and the ring; the client
    /// continues from the ring at `at`.
    Joined {
        events: Arc<[Bytes]>,
        at: Seq,
    },
    Failed,
}

pub(crate) type Waiter = watch::Receiver<Option<Arc<Outcome>>>;

/// Running backfills of one source, by the id they resume from.
#[derive(Default)]
pub(crate) struct Backfills {
    running: std::sync::Mutex<HashMap<String, Waiter>>,
}

impl Backfills {
    /// Joins the backfill from `last_id`, starting it if needed. `None` when too
    /// many are running.
    pub(super) fn join(
        &self,
        source: &Arc<Source>,
        spec: &SourceSpec,
        last_id: &str,
        connect: &ConnectSettings,
    ) -> Option<Waiter> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiter) = running.get(last_id) {
            return Some(waiter.clone());
        }
        if running.len() >= MAX_CONCURRENT {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        running.insert(last_id.to_owned(), rx.clone());
        let task = Fetch {
            source: Arc::clone(source),
            target: spec.target.clone(),
            headers: Arc::clone(&spec.headers),
            last_id: last_id.to_owned(),
            connect: connect.clone(),
        };
        let span =
            info_span!(parent: None, "backfill", source.key = %spec.key, last_event_id = %last_id);
        tokio::spawn(
            async move {
                let outcome = tokio::time::timeout(TIMEOUT, task.run())
                    .await
                    .unwrap_or_else(|_| {
                        debug!("backfill timed out");
                        Outcome::Failed
                    });
                debug!(
                    joined = matches!(outcome, Outcome::Joined { .. }),
                    "backfill finished"
                );
                // Remove first, then publish: a resumer arriving in between starts a
                // fresh backfill rather than joining a finished one.
                task.source.backfills.finish(&task.last_id);
                let _ = tx.send(Some(Arc::new(outcome)));
            }
            .instrument(span),
        );
        Some(rx)
    }

    fn finish(&self, last_id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(last_id);
    }
}

/// One backfill's upstream read.
struct Fetch {
    source: Arc<Source>,
    target: upstream::Target,
    headers: Arc<[(http::HeaderName, http::HeaderValue)]>,
    last_id: String,
    connect: ConnectSettings,
}

impl Fetch {
    async fn run(&self) -> Outcome {
        let mut upstream = match upstream::connect(
            &self.target,
            &self.headers,
            &self.last_id,
            &self.connect,
        )
        .await
        {
            Ok(upstream) => upstream,
            Err(error) => {
                debug!(error = %error, "backfill connect failed");
                return Outcome::Failed;
            }
        };
        let mut joiner = Joiner::new(self.source.ring.first());
        let mut events = Vec::new();
        loop {
            match upstream.next(&mut events, READ_BATCH).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return Outcome::Failed,
            }
            for event in events.drain(..) {
                let id = event.id.as_deref().map(EventId::from);
                if let Some(outcome) = joiner.push(id, event.encode(), &self.source.ring) {
                    return outcome;
                }
            }
            if joiner.len() > MAX_EVENTS {
                debug!(fetched = joiner.len(), "backfill never reached the buffer");
                return Outcome::Failed;
            }
        }
    }
}

/// The stop condition: the fetched stream has passed through the ring's oldest
/// entry as it was when the backfill started (the anchor) and reached the ring's
/// oldest entry now.
///
/// The anchor is what tells an upstream that resumed from one that ignored the id
/// and started live: the latter sends new events, which the ring holds past the
/// anchor. Joining at whatever the ring's oldest entry is *now* would not do, since
/// a busy ring evicts toward the live end while the backfill runs.
struct Joiner {
    fetched: Vec<Bytes>,
    /// Position in `fetched` of each id, so each check is one lookup.
    index: HashMap<EventId, usize>,
    /// The ring's oldest seq when the backfill started (its head, if it was empty).
    start: Seq,
    anchor: Option<(Seq, EventId)>,
}

impl Joiner {
    fn new(start: Seq) -> Self {
        Self {
            fetched: Vec::new(),
            index: HashMap::new(),
            start,
            anchor: None,
        }
    }

    fn len(&self) -> usize {
        self.fetched.len()
    }

    /// Adds one fetched event; `Some` once the backfill is decided.
    fn push(&mut self, id: Option<EventId>, wire: Bytes, ring: &ReplayRing) -> Option<Outcome> {
        if let Some(id) = &id {
            self.index.entry(id.clone()).or_insert(self.fetched.len());
        }
        self.fetched.push(wire);
        // A fresh ring learns its anchor once the source's own connection pushes.
        if self.anchor.is_none() {
            self.anchor = ring.first_id_from(self.start);
        }
        let (anchor_seq, anchor) = self.anchor.as_ref()?;
        if !self.index.contains_key(anchor) {
            // An event the ring holds past the anchor, without the anchor: the
            // upstream skipped what the client is missing.
            let skipped = id
                .and_then(|id| ring.seq_of(&id))
                .is_some_and(|s| s > *anchor_seq);
            return skipped.then_some(Outcome::Failed);
        }
        let (at, oldest) = ring.oldest_id()?;
        let &k = self.index.get(&oldest)?;
        Some(Outcome::Joined {
            events: self.fetched[..k].iter().cloned().collect(),
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::replay::Entry;

    fn ring_with(ids: &[&str]) -> ReplayRing {
        let ring = ReplayRing::new(16);
        let mut spare = Vec::new();
        for id in ids {
            ring.push(
                Entry {
                    id: Some(EventId::from(*id)),
                    wire: Bytes::from(format!("id: {id}\n\n")),
                    received: tokio::time::Instant::now(),
                },
                &mut spare,
            );
        }
        ring
    }

    fn push(j: &mut Joiner, id: &str, ring: &ReplayRing) -> Option<Outcome> {
        j.push(Some(EventId::from(id)), Bytes::from(id.to_owned()), ring)
    }

    #[test]
    fn stops_at_the_rings_oldest_entry_with_what_came_before() {
        let ring = ring_with(&["5", "6", "7"]);
        let mut j = Joiner::new(ring.first());
        assert!(push(&mut j, "3", &ring).is_none());
        assert!(push(&mut j, "4", &ring).is_none());
        match push(&mut j, "5", &ring) {
            Some(Outcome::Joined { events, at }) => {
                assert_eq!(events.to_vec(), [Bytes::from("3"), Bytes::from("4")]);
                assert_eq!(at, Seq(0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_live_only_upstream_fails_at_once() {
        // The upstream ignored Last-Event-ID and sent the newest events, which the
        // ring holds at its end, not its start: joining there would skip 5 and 6.
        let ring = ring_with(&["5", "6", "7"]);
        let mut j = Joiner::new(ring.first());
        assert!(matches!(push(&mut j, "7", &ring), Some(Outcome::Failed)));
    }

    #[test]
    fn eviction_during_the_backfill_does_not_fake_a_join() {
        // Live-only again, but the ring moves on as the backfill reads: its oldest
        // entry becomes one the backfill has seen. The anchor (5) was never fetched.
        let ring = ReplayRing::new(3);
        let mut spare = Vec::new();
        let entry = |id: &str| Entry {
            id: Some(EventId::from(id)),
            wire: Bytes::from(id.to_owned()),
            received: tokio::time::Instant::now(),
        };
        for id in ["5", "6", "7"] {
            ring.push(entry(id), &mut spare);
        }
        let mut j = Joiner::new(ring.first());
        for id in ["8", "9", "10"] {
            ring.push(entry(id), &mut spare);
            let outcome = push(&mut j, id, &ring);
            assert!(!matches!(outcome, Some(Outcome::Joined { .. })), "{id}");
        }
    }

    #[test]
    fn a_busy_ring_joins_past_the_anchor_once_the_anchor_was_fetched() {
        let ring = ReplayRing::new(2);
        let mut spare = Vec::new();
        let entry = |id: &str| Entry {
            id: Some(EventId::from(id)),
            wire: Bytes::from(id.to_owned()),
            received: tokio::time::Instant::now(),
        };
        for id in ["5", "6"] {
            ring.push(entry(id), &mut spare);
        }
        let mut j = Joiner::new(ring.first());
        assert!(push(&mut j, "4", &ring).is_none());
        ring.push(entry("7"), &mut spare); // evicts 5, the anchor
        assert!(push(&mut j, "5", &ring).is_none());
        match push(&mut j, "6", &ring) {
            Some(Outcome::Joined { events, at }) => {
                assert_eq!(events.to_vec(), [Bytes::from("4"), Bytes::from("5")]);
                assert_eq!(at, Seq(1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_ring_waits_then_joins_where_the_live_stream_began() {
        // A fresh instance: the backfill read past the point where the source's own
        // connection began before that connection pushed anything.
        let ring = ring_with(&[]);
        let mut j = Joiner::new(ring.first());
        assert!(push(&mut j, "2", &ring).is_none());
        assert!(push(&mut j, "3", &ring).is_none());
        let mut spare = Vec::new();
        for id in ["3", "4"] {
            ring.push(
                Entry {
                    id: Some(EventId::from(id)),
                    wire: Bytes::from(id),
                    received: tokio::time::Instant::now(),
                },
                &mut spare,
            );
        }
        match push(&mut j, "4", &ring) {
            Some(Outcome::Joined { events, at }) => {
                assert_eq!(events.to_vec(), [Bytes::from("2")]);
                assert_eq!(at, Seq(0));
            }
            other => panic!("{other:?}"),
        }
    }
}
