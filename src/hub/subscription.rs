//! One client's cursor into a source's ring.
//!
//! A subscription that resumes from an id the ring does not hold may first wait for
//! a backfill; it then hands out the backfilled events before reading the ring.
//! Dropping a `Subscription` is how a client leaves: its waiter slot is released and
//! the source's client count goes down (which starts the linger timer at zero).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::backfill::{Outcome, Waiter};
use super::replay::{Cursor, Delivery, Position, Read};
use super::source::Source;
use super::{SourceKey, SubscribeOptions};
use crate::metrics::Metrics;
use crate::sse::Event;

type Pending = Pin<Box<dyn Future<Output = Arc<Outcome>> + Send>>;

pub(crate) struct Subscription {
    source: Arc<Source>,
    cursor: Cursor,
    /// What a resumption hands out before the ring; boxed, since most clients
    /// never need it and every idle client would pay for it inline.
    resume: Option<Box<Resume>>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Resume {
    /// The `gap` event, first.
    preamble: Option<Bytes>,
    /// Waiting for a backfill; the cursor is placed when it ends.
    backfill: Option<(Pending, String, String)>,
    /// Backfilled events not yet handed out.
    fetched: Option<(Arc<[Bytes]>, usize)>,
}

/// Lets a connection check a stream's lag while its body is not being polled
/// (hyper stops polling a body whose socket is full).
#[derive(Clone)]
pub(crate) struct LagProbe {
    source: Arc<Source>,
    /// The reader's live position and limit: the limit drops from a resumption's
    /// backlog to `client.queue` once the reader has caught up.
    position: Arc<Position>,
}

impl LagProbe {
    pub(crate) fn is_lagged(&self) -> bool {
        match self.source.ring.lag_of(self.position.next()) {
            Some(lag) => lag > self.position.limit(),
            None => true,
        }
    }
}

impl Subscription {
    pub(super) fn new(
        source: Arc<Source>,
        options: SubscribeOptions<'_>,
        backfill: Option<Waiter>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let start = source.ring.start(options.last_event_id);
        let cursor = source.ring.cursor(start.next, options.queue);
        metrics.clients.inc();
        let mut sub = Self {
            source,
            cursor,
            resume: None,
            metrics: Arc::clone(metrics),
        };
        let last_id = options.last_event_id.unwrap_or_default();
        match (start.missed, backfill) {
            (false, _) => {}
            (true, Some(mut waiter)) => {
                metrics.backfills.inc();
                let wait: Pending = Box::pin(async move {
                    match waiter.wait_for(Option::is_some).await {
                        Ok(outcome) => outcome.clone().unwrap_or(Arc::new(Outcome::Failed)),
                        Err(_) => Arc::new(Outcome::Failed),
                    }
                });
                sub.resume = Some(Box::new(Resume {
                    backfill: Some((wait, last_id.to_owned(), options.gap_event.to_owned())),
                    ..Resume::default()
                }));
            }
            (true, None) => {
                let preamble = sub.missed(last_id, options.gap_event);
                sub.resume = Some(Box::new(Resume {
                    preamble,
                    ..Resume::default()
                }));
            }
        }
        sub
    }

    /// The resume id is gone for good: count it, and start from the oldest entry
    /// after the `gap` event (if one is configured), which is returned.
    fn missed(&mut self, last_id: &str, gap_event: &str) -> Option<Bytes> {
        self.metrics.resume_misses.inc();
        let first = self.source.ring.first();
        self.source.ring.reposition(&mut self.cursor, first);
        if gap_event.is_empty() {
            return None;
        }
        let resumed_from = self
            .source
            .ring
            .oldest_id()
            .filter(|(seq, _)| *seq == first);
        Some(gap_event_frame(
            gap_event,
            last_id,
            resumed_from.as_ref().map(|(_, id)| id.as_str()),
        ))
    }

    pub(crate) fn key(&self) -> &SourceKey {
        &self.source.key
    }

    /// The next wire frame (a `gap` event, a backfilled event or a ring entry),
    /// `Lagged`, or `Closed` once the source is closed and everything queued has
    /// been read.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        if self.resume.is_some() {
            if let Some(read) = std::task::ready!(self.poll_resume(cx)) {
                return Poll::Ready(read);
            }
        }
        self.source.ring.poll_read(&mut self.cursor, cx)
    }

    /// The resumption's own frames, in order; `Ready(None)` (and the resumption
    /// freed) once there are no more and the ring is next.
    fn poll_resume(&mut self, cx: &mut Context<'_>) -> Poll<Option<Read>> {
        let Some(resume) = self.resume.as_mut() else {
            return Poll::Ready(None);
        };
        let backfilled = match &mut resume.backfill {
            Some((wait, _, _)) => Some(std::task::ready!(wait.as_mut().poll(cx))),
            None => None,
        };
        if let (Some(outcome), Some((_, last_id, gap_event))) = (backfilled, resume.backfill.take())
        {
            match &*outcome {
                Outcome::Joined { events, at } => {
                    self.source.ring.reposition(&mut self.cursor, *at);
                    resume.fetched = Some((Arc::clone(events), 0));
                }
                Outcome::Failed => {
                    let preamble = self.missed(&last_id, &gap_event);
                    if let Some(resume) = self.resume.as_mut() {
                        resume.preamble = preamble;
                    }
                }
            }
        }
        let Some(resume) = self.resume.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(gap) = resume.preamble.take() {
            return Poll::Ready(Some(Read::Entry(Delivery::made_here(gap))));
        }
        if let Some((events, next)) = &mut resume.fetched {
            if let Some(wire) = events.get(*next) {
                *next += 1;
                return Poll::Ready(Some(Read::Entry(Delivery::made_here(wire.clone()))));
            }
        }
        self.resume = None;
        Poll::Ready(None)
    }

    pub(crate) fn probe(&self) -> LagProbe {
        LagProbe {
            source: Arc::clone(&self.source),
            position: self.cursor.position(),
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
fn gap_event_frame(name: &str, last_event_id: &str, resumed_from: Option<&str>) -> Bytes {
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
        let wire = gap_event_frame("gap", "7\"x", Some("12"));
        assert_eq!(
            &wire[..],
            b"event: gap\ndata: {\"last_event_id\":\"7\\\"x\",\"resumed_from\":\"12\"}\n\n"
        );
        let wire = gap_event_frame("gap", "7", None);
        assert_eq!(
            &wire[..],
            b"event: gap\ndata: {\"last_event_id\":\"7\",\"resumed_from\":null}\n\n"
        );
    }
}
