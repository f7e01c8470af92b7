//! The replay ring of one source: its last `replay.events` entries, in upstream order.
//!
//! Live delivery and resumption both read from here, so a resuming client sees every
//! entry exactly once. The ring never waits for a reader: a reader that falls more
//! than its limit behind (or whose next entry was already evicted) gets `Lagged`.
//!
//! Waiting readers park their task's `Waker` in a slot; a push swaps the whole slot
//! list out under the lock and wakes it after unlocking. Slots are reused, so an idle
//! source with churning clients does not grow the list, and nothing allocates per
//! event per client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::time::Instant;

use super::{CloseReason, EventId, Seq};

/// One event as every client will receive it: encoded once, shared by all.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) id: Option<EventId>,
    pub(crate) wire: Bytes,
    /// When the upstream task received it, for the delivery latency histogram.
    pub(crate) received: Instant,
}

/// One frame for a client, with what the metrics want to know about it.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) wire: Bytes,
    /// When the event reached the gateway (`None` for frames it made itself).
    pub(crate) received: Option<Instant>,
    /// Entries still waiting after this one.
    pub(crate) behind: u64,
}

impl Delivery {
    pub(crate) fn made_here(wire: Bytes) -> Self {
        Self {
            wire,
            received: None,
            behind: 0,
        }
    }
}

/// What a reader gets from the ring.
#[derive(Debug)]
pub(crate) enum Read {
    Entry(Delivery),
    Lagged,
    Closed(CloseReason),
}

/// Where a new reader starts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Start {
    pub(crate) next: Seq,
    /// The resume id was given but is not among the kept entries.
    pub(crate) missed: bool,
    /// The id of the first entry the reader will get, if it has one.
    pub(crate) first_id: Option<EventId>,
}

/// A reader's position. `next` is shared so a connection can check the lag of a
/// stream whose body is not being polled (its socket is full).
#[derive(Debug)]
pub(crate) struct Cursor {
    /// Where the reader is and how far behind it may be, also read by its
    /// connection's lag probe while the reader isn't polled.
    shared: Arc<Position>,
    queue: u64,
    slot: Option<(u64, usize)>,
}

/// A reader's position, shared with its lag probe.
#[derive(Debug)]
pub(crate) struct Position {
    next: AtomicU64,
    /// How far behind the head this reader may be. Starts at the larger of the
    /// queue and the initial backlog, so resuming from far back is not an instant
    /// lag; drops to `queue` once the reader has caught up.
    limit: AtomicU64,
}

impl Position {
    pub(crate) fn next(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }
}

impl Cursor {
    pub(crate) fn position(&self) -> Arc<Position> {
        Arc::clone(&self.shared)
    }

    #[cfg(test)]
    pub(crate) fn limit(&self) -> u64 {
        self.shared.limit()
    }
}

#[derive(Debug)]
pub(crate) struct ReplayRing {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Debug)]
struct State {
    entries: VecDeque<Entry>,
    /// Seq of `entries[0]`; the head (next seq to be pushed) is `first + len`.
    first: u64,
    closed: Option<CloseReason>,
    waiters: Vec<Option<Waker>>,
    free: Vec<usize>,
    /// Bumped whenever `waiters` is handed out, so a stale slot index is never used.
    generation: u64,
}

impl State {
    fn head(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

impl ReplayRing {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Mutex::new(State {
                entries: VecDeque::with_capacity(capacity.min(64)),
                first: 0,
                closed: None,
                waiters: Vec::new(),
                free: Vec::new(),
                generation: 0,
            }),
            capacity,
        }
    }

    // std Mutex: never held across an `.await`, and every critical section is a few
    // field updates. A poisoned lock means a panic mid-update of plain data that is
    // still consistent, so keep going.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry, evicting the oldest when full, and wakes every waiting
    /// reader. `spare` is the caller's reusable list, so waking allocates nothing.
    #[cfg(test)]
    pub(crate) fn push(&self, entry: Entry, spare: &mut Vec<Option<Waker>>) {
        self.push_all(std::iter::once(entry), spare);
    }

    /// Appends every entry of one upstream read under one lock, then wakes the
    /// readers once: a reader woken mid-batch would write the batch in pieces.
    pub(crate) fn push_all(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        spare: &mut Vec<Option<Waker>>,
    ) {
        {
            let mut state = self.lock();
            let before = state.head();
            for entry in entries {
                if state.entries.len() == self.capacity {
                    state.entries.pop_front();
                    state.first += 1;
                }
                state.entries.push_back(entry);
            }
            if state.head() == before {
                return;
            }
            std::mem::swap(&mut state.waiters, spare);
            state.free.clear();
            state.generation += 1;
        }
        for waker in spare.drain(..).flatten() {
            waker.wake();
        }
    }

    /// Ends the ring: readers get what is queued, then `Closed(reason)`. The first
    /// reason wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        let waiters = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(reason);
            }
            state.free.clear();
            state.generation += 1;
            std::mem::take(&mut state.waiters)
        };
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }

    pub(crate) fn closed(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    #[cfg(test)]
    fn head(&self) -> Seq {
        Seq(self.lock().head())
    }

    /// Where a reader resuming after `last_event_id` starts, at most `queue` entries
    /// behind the head... unless resuming from further back, which is allowed.
    /// With no id it starts at the head (live only).
    pub(crate) fn start(&self, last_event_id: Option<&str>) -> Start {
        let state = self.lock();
        let head = state.head();
        let Some(wanted) = last_event_id else {
            return Start {
                next: Seq(head),
                missed: false,
                first_id: None,
            };
        };
        // Search from the newest: if an upstream repeats an id, the latest one is
        // the event the client saw last.
        let found = state
            .entries
            .iter()
            .rposition(|e| e.id.as_ref().is_some_and(|id| id.as_str() == wanted));
        match found {
            Some(i) => Start {
                next: Seq(state.first + i as u64 + 1),
                missed: false,
                first_id: state.entries.get(i + 1).and_then(|e| e.id.clone()),
            },
            None => Start {
                next: Seq(state.first),
                missed: true,
                first_id: state.entries.front().and_then(|e| e.id.clone()),
            },
        }
    }

    pub(crate) fn cursor(&self, start: Seq, queue: usize) -> Cursor {
        let queue = queue.max(1) as u64;
        let mut cursor = Cursor {
            shared: Arc::new(Position {
                next: AtomicU64::new(start.0),
                limit: AtomicU64::new(queue),
            }),
            queue,
            slot: None,
        };
        self.reposition(&mut cursor, start);
        cursor
    }

    /// Moves a reader to `at`, allowing it to be as far behind as that is.
    pub(crate) fn reposition(&self, cursor: &mut Cursor, at: Seq) {
        let head = self.lock().head();
        cursor.shared.next.store(at.0, Ordering::Relaxed);
        let limit = cursor.queue.max(head.saturating_sub(at.0));
        cursor.shared.limit.store(limit, Ordering::Relaxed);
    }

    /// The oldest kept entry that has an id, with its seq.
    pub(crate) fn oldest_id(&self) -> Option<(Seq, EventId)> {
        self.first_id_from(Seq(0))
    }

    /// The first kept entry at or after `from` that has an id, with its seq.
    pub(crate) fn first_id_from(&self, from: Seq) -> Option<(Seq, EventId)> {
        let state = self.lock();
        let skip = from.0.saturating_sub(state.first) as usize;
        state
            .entries
            .iter()
            .enumerate()
            .skip(skip)
            .find_map(|(i, e)| Some((Seq(state.first + i as u64), e.id.clone()?)))
    }

    /// Seq of the newest kept entry with this id.
    pub(crate) fn seq_of(&self, id: &EventId) -> Option<Seq> {
        let state = self.lock();
        let i = state
            .entries
            .iter()
            .rposition(|e| e.id.as_ref() == Some(id))?;
        Some(Seq(state.first + i as u64))
    }

    /// Seq of the oldest kept entry.
    pub(crate) fn first(&self) -> Seq {
        Seq(self.lock().first)
    }

    /// The next entry for `cursor`, or `Pending` with the task's waker parked.
    pub(crate) fn poll_read(&self, cursor: &mut Cursor, cx: &mut Context<'_>) -> Poll<Read> {
        let mut state = self.lock();
        let next = cursor.shared.next();
        let head = state.head();
        // A reader being polled is taking what it is given, so a burst that puts it
        // more than its limit behind is not lag: only an entry it can no longer
        // have is. A reader too slow to keep up stops being polled (its socket or
        // stream window is full), and its connection's watch cuts it through a
        // `LagProbe`, which does apply the limit.
        if next < state.first {
            return Poll::Ready(Read::Lagged);
        }
        if next < head {
            let entry = &state.entries[(next - state.first) as usize];
            let delivery = Delivery {
                wire: entry.wire.clone(),
                received: Some(entry.received),
                behind: head - next - 1,
            };
            cursor.shared.next.store(next + 1, Ordering::Relaxed);
            return Poll::Ready(Read::Entry(delivery));
        }
        if cursor.shared.limit() != cursor.queue {
            cursor.shared.limit.store(cursor.queue, Ordering::Relaxed);
        }
        if let Some(reason) = state.closed {
            return Poll::Ready(Read::Closed(reason));
        }
        // Park: reuse this cursor's slot if it is still current, else take a free one.
        let generation = state.generation;
        match cursor.slot {
            Some((g, i)) if g == generation => {
                let slot = &mut state.waiters[i];
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
            }
            _ => {
                let i = match state.free.pop() {
                    Some(i) => {
                        state.waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        state.waiters.push(Some(cx.waker().clone()));
                        state.waiters.len() - 1
                    }
                };
                cursor.slot = Some((generation, i));
            }
        }
        Poll::Pending
    }

    /// Entries kept now, and how many can be.
    pub(crate) fn fill(&self) -> (usize, usize) {
        (self.lock().entries.len(), self.capacity)
    }

    /// The newest kept id: what a client at the head would resume from.
    pub(crate) fn newest_id(&self) -> Option<EventId> {
        self.lock().entries.iter().rev().find_map(|e| e.id.clone())
    }

    /// Whether an entry with this id is kept.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.lock()
            .entries
            .iter()
            .any(|e| e.id.as_ref().is_some_and(|e| e.as_str() == id))
    }

    /// Lag of a reader from outside its task: entries between it and the head, or
    /// `None` if its next entry was already evicted.
    pub(crate) fn lag_of(&self, next: u64) -> Option<u64> {
        let state = self.lock();
        (next >= state.first).then(|| state.head().saturating_sub(next))
    }

    /// Releases a departing reader's slot so the list stays as long as the number
    /// of readers, not the number that ever came.
    pub(crate) fn forget(&self, cursor: &mut Cursor) {
        if let Some((g, i)) = cursor.slot.take() {
            let mut state = self.lock();
            if g == state.generation {
                state.waiters[i] = None;
                state.free.push(i);
            }
        }
    }

    #[cfg(test)]
    fn parked(&self) -> usize {
        self.lock().waiters.iter().filter(|w| w.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: Some(EventId::from(id)),
            wire: Bytes::from(format!("id: {id}\ndata: x\n\n")),
            received: Instant::now(),
        }
    }

    fn read_all(ring: &ReplayRing, cursor: &mut Cursor) -> Vec<String> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Read::Entry(d)) = ring.poll_read(cursor, &mut cx) {
            out.push(String::from_utf8(d.wire.to_vec()).unwrap());
        }
        out
    }

    fn push_ids(ring: &ReplayRing, ids: impl IntoIterator<Item = u32>) {
        let mut spare = Vec::new();
        for i in ids {
            ring.push(entry(&i.to_string()), &mut spare);
        }
    }

    #[test]
    fn resumes_exactly_after_a_kept_id() {
        let ring = ReplayRing::new(10);
        push_ids(&ring, 1..=5);
        let start = ring.start(Some("3"));
        assert!(!start.missed);
        assert_eq!(start.first_id.as_ref().map(EventId::as_str), Some("4"));
        let mut c = ring.cursor(start.next, 10);
        let got = read_all(&ring, &mut c);
        assert_eq!(got, ["id: 4\ndata: x\n\n", "id: 5\ndata: x\n\n"]);
    }

    #[test]
    fn unknown_id_starts_at_the_oldest_kept_entry_and_says_so() {
        let ring = ReplayRing::new(3);
        push_ids(&ring, 1..=5);
        let start = ring.start(Some("1"));
        assert!(start.missed);
        assert_eq!(start.first_id.as_ref().map(EventId::as_str), Some("3"));
        let mut c = ring.cursor(start.next, 10);
        assert_eq!(read_all(&ring, &mut c).len(), 3);
    }

    #[test]
    fn no_id_means_live_only() {
        let ring = ReplayRing::new(10);
        push_ids(&ring, 1..=5);
        let start = ring.start(None);
        let mut c = ring.cursor(start.next, 10);
        assert!(read_all(&ring, &mut c).is_empty());
        push_ids(&ring, 6..=6);
        assert_eq!(read_all(&ring, &mut c), ["id: 6\ndata: x\n\n"]);
    }

    #[test]
    fn a_polled_reader_takes_a_burst_larger_than_its_queue() {
        let ring = ReplayRing::new(100);
        let mut c = ring.cursor(ring.head(), 3);
        push_ids(&ring, 1..=10);
        assert_eq!(read_all(&ring, &mut c).len(), 10);
    }

    #[test]
    fn a_reader_more_than_queue_behind_is_lagged_to_its_connection() {
        let ring = ReplayRing::new(100);
        let c = ring.cursor(ring.head(), 3);
        let position = c.position();
        push_ids(&ring, 1..=3);
        assert_eq!(ring.lag_of(position.next()), Some(3));
        push_ids(&ring, 4..=4);
        let lag = ring.lag_of(position.next()).unwrap();
        assert!(lag > c.limit(), "{lag} > {}", c.limit());
    }

    #[test]
    fn reader_at_the_queue_bound_is_not_lagged() {
        let ring = ReplayRing::new(100);
        let mut c = ring.cursor(ring.head(), 3);
        push_ids(&ring, 1..=3);
        assert_eq!(read_all(&ring, &mut c).len(), 3);
    }

    #[test]
    fn resuming_from_far_back_is_allowed_until_caught_up() {
        let ring = ReplayRing::new(100);
        push_ids(&ring, 1..=50);
        let start = ring.start(Some("10"));
        let mut c = ring.cursor(start.next, 5);
        // 40 behind with a queue of 5: not lag yet, it is catching up.
        assert_eq!(c.limit(), 40);
        assert_eq!(read_all(&ring, &mut c).len(), 40);
        // Caught up: from now on the queue is the limit, for the probe too.
        assert_eq!(c.limit(), 5);
        assert_eq!(c.position().limit(), 5);
    }

    #[test]
    fn evicted_position_is_lagged() {
        let ring = ReplayRing::new(2);
        let mut c = ring.cursor(ring.head(), 100);
        push_ids(&ring, 1..=3);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            ring.poll_read(&mut c, &mut cx),
            Poll::Ready(Read::Lagged)
        ));
    }

    #[test]
    fn close_delivers_queued_entries_first() {
        let ring = ReplayRing::new(10);
        let mut c = ring.cursor(ring.head(), 10);
        push_ids(&ring, 1..=2);
        ring.close(CloseReason::Ended);
        assert_eq!(read_all(&ring, &mut c).len(), 2);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            ring.poll_read(&mut c, &mut cx),
            Poll::Ready(Read::Closed(CloseReason::Ended))
        ));
    }

    #[test]
    fn one_upstream_read_wakes_each_reader_once() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ring = ReplayRing::new(10);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut c = ring.cursor(ring.head(), 10);
        assert!(ring.poll_read(&mut c, &mut cx).is_pending());
        let mut spare = Vec::new();
        ring.push_all((1..=3).map(|i| entry(&i.to_string())), &mut spare);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // All three are ready together, for one write.
        assert_eq!(read_all(&ring, &mut c).len(), 3);
        // An empty read wakes no one.
        assert!(ring.poll_read(&mut c, &mut cx).is_pending());
        ring.push_all(std::iter::empty(), &mut spare);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn parked_slots_are_reused_not_accumulated() {
        let ring = ReplayRing::new(10);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..100 {
            let mut c = ring.cursor(ring.head(), 10);
            assert!(ring.poll_read(&mut c, &mut cx).is_pending());
            assert!(ring.poll_read(&mut c, &mut cx).is_pending());
            ring.forget(&mut c);
        }
        assert_eq!(ring.parked(), 0);
        assert!(ring.lock().waiters.len() <= 1);
    }
}
